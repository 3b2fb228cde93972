/* cuda_agree.c - the CUDA backend's correctness report against the float32 CPU engine and
 * against Hugging Face transformers, on a whole checkpoint (tools/oracle/run_agree.sh runs it
 * on the tiny preset and on a 20b-shape checkpoint).
 *
 * Greedy agreement (always, unless --prompts 0): N deterministic prompts of random token ids go
 * through both backends the way the scheduler would run them (prefill chunks under a token
 * budget, decodes first, all sequences in one batch per step), each backend following its own
 * argmax for --tokens greedy tokens. While a prompt's two continuations are still identical the
 * two backends saw the same input, so their logits rows are compared (max |b - cpu| over the
 * row relative to the row's max |logit|). At the first step where the argmaxes differ, the CPU's
 * top-1/top-2 gap (relative the same way) says whether that was a near-tie that bf16 rounding may
 * decide (gap below --bound), which is allowed, or a real disagreement, which fails.
 *
 * Golden (--golden FILE, written by tools/oracle/hf_golden.py): the checkpoint files' SHA-256
 * must equal the golden's; each golden prompt then runs as one prefill on both backends, the
 * logged rows (top 16 + 64 fixed samples) compared with HF's values; the golden's greedy prompts
 * run greedily on both backends (batched), and each continuation is compared with HF's, a
 * divergence allowed only where HF's own step margin (the golden's "margins" record) is below
 * twice the pair's logits tolerance (a logit off by at most tol each way can swap two that
 * are less than 2 tol apart).
 *
 * Backend B is the CUDA backend, or with --b cpu a second CPU backend (the tool's logic on a
 * machine without a GPU; tests/cuda.cmake runs it so), or with --b ref16 the kernel lab's
 * reference rounding to bf16 wherever the CUDA backend keeps bf16 (cuda_ref.h; ref32 without
 * the rounding): how far that rounding alone takes a model, measured on any machine. KV blocks are
 * handed out scrambled, and differently for the two backends, so that paging is part of what is
 * compared.
 *
 *   cuda-agree --model DIR [--golden FILE] [--tokens 128] [--prompts 4] [--lengths a,b,...]
 *              [--b cuda|cpu|ref16|ref32] [--kernel-version 3] [--graphs 0|1] [--bound 2e-2]
 *              [--tol 0.2] [--hf-tol 3e-2] [--chunk 256] [--seed N] [--perturb STEP]
 *
 * Exit status 0 when every check passes; 1 when one fails (a backend that cannot open or a
 * forward that fails counts as a failed check); 2 on bad usage or an unreadable golden file.
 * The last line is "cuda-agree: N passed, M failed". */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu_backend.h"
#include "cuda_backend.h"
#include "cuda_ref.h"
#include "golden.h"
#include "model.h"
#include "sampling.h"
#include "sha256.h"

static int n_pass, n_fail;

static void verdict(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void verdict(bool ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "PASS" : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    ok ? n_pass++ : n_fail++;
}

static void *xcalloc(size_t n, size_t sz) {
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) {
        fprintf(stderr, "cuda-agree: out of host memory (%zu x %zu bytes)\n", n, sz);
        exit(2);
    }
    return p;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng_state;
static uint64_t rnd(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ---- options ---- */

/* --bound: a greedy divergence is a near-tie when the CPU's top-1/top-2 gap is below this share
 * of the row's max |logit|. The CUDA backend keeps activations, K/V and weights in bf16 (8-bit
 * mantissa, relative rounding 2^-9 ≈ 2e-3 per value); through the layers that puts its logits
 * ~4e-3 (relative to the row's largest) from the float32 CPU's, up to ~1e-2 on a row
 * (worker/cuda/NOTES.md, "Whole-model check"). Two logits each off by up to 1e-2 can swap when
 * they are less than 2e-2 apart, hence 2e-2.
 * --tol: logits error allowed on a row while the two continuations are still identical. A
 * routing near-tie decided differently by bf16 rounding sends a token to another expert and moves
 * its row by several percent (7e-2 seen, NOTES.md), a legitimate difference; so this is a gross
 * error check (a wrong kernel moves rows by O(1)), and the report prints the median and the max
 * for a reader to judge the rest.
 * --hf-tol: rows against HF when B (or HF) ran in bf16: HF's own bf16 rounding is ~1e-2 of the
 * row max, the backend's adds ~4e-3. The float32 CPU engine against float32 HF is held to 1e-3
 * (summation order only), as tests/unit/test_cpu_golden.c holds it. */
typedef struct opts {
    const char *model, *golden, *b;
    const char *label; /* B in the report: "cuda", or "cpu#2" for a second cpu backend */
    int tokens, prompts, chunk, kernel_version, perturb;
    int lengths[64], n_lengths;
    bool graphs;
    double bound, tol, hf_tol;
    uint64_t seed;
} opts;

/* ---- backends ---- */

typedef struct pair {
    mg_backend *cpu, *b;
    int V, num_blocks, bs, max_blocks, max_tokens, max_seqs;
    double t_cpu, t_b; /* seconds in forward, summed */
    double t_dec[2];   /* of which in pure decode steps (cpu, B) */
    int n_dec_steps;
} pair;

static mg_status pair_open(pair *p, const opts *o, int max_ctx, int max_seqs, int max_tokens) {
    p->bs = 16;
    p->max_blocks = (max_ctx + p->bs - 1) / p->bs;
    p->num_blocks = p->max_blocks * max_seqs + 7; /* a few never used: ids are not a tight range */
    p->max_tokens = max_tokens, p->max_seqs = max_seqs;
    cpu_backend_opts co = {.num_blocks = p->num_blocks,
                           .block_size = p->bs,
                           .max_tokens = max_tokens,
                           .max_ctx = p->max_blocks * p->bs,
                           .threads = 0};
    mg_status st = cpu_backend_open(o->model, &co, &p->cpu);
    if (st) return st;
    if (!strcmp(o->b, "cpu")) {
        st = cpu_backend_open(o->model, &co, &p->b);
    } else if (!strncmp(o->b, "ref", 3)) { /* ref16: bf16 roundings alone, on the CPU */
        st = cuda_ref_backend_open(o->model, !strcmp(o->b, "ref16"), p->num_blocks, 0, p->bs,
                                   max_tokens, p->max_blocks * p->bs, &p->b);
    } else {
        cuda_backend_opts go = {.device = 0,
                                .num_blocks = p->num_blocks,
                                .block_size = p->bs,
                                .max_tokens = max_tokens,
                                .max_seqs = max_seqs,
                                .max_ctx = p->max_blocks * p->bs,
                                .kernel_version = o->kernel_version,
                                .cuda_graphs = o->graphs};
        st = cuda_backend_open(o->model, &go, &p->b);
    }
    if (st) return st;
    p->V = p->cpu->vocab;
    if (p->b->vocab != p->V) return MG_ERRF(MG_EINVAL, "vocab %d vs %d", p->b->vocab, p->V);
    return MG_OK;
}

static void pair_close(pair *p) {
    if (p->cpu) p->cpu->ops->destroy(p->cpu);
    if (p->b) p->b->ops->destroy(p->b);
    memset(p, 0, sizeof(*p));
}

/* ---- one greedy run of several sequences on both backends ---- */

typedef struct gseq {
    int plen, n_gen;    /* prompt tokens; greedy tokens to generate */
    int ctx;            /* positions both backends have written */
    int32_t *toks[2];   /* prompt then generated tokens, per backend (0: cpu, 1: B) */
    int n_toks;         /* prompt + generated so far (the same count for both) */
    int32_t *blocks[2]; /* max_blocks physical ids per backend */
    bool diverged;      /* the two continuations differ from here on */
    int agree;          /* greedy tokens identical before the first divergence */
    double div_gap;     /* the CPU's relative top-2 gap at the divergence step */
    double div_err;     /* B's logits error at that step (same input on both) */
    double max_err;     /* largest logits error while identical */
    double min_gap;     /* the CPU's smallest relative gap while identical */
    double err_first;   /* error of the prefill's row (the first greedy token) */
} gseq;

typedef struct greedy {
    int n;
    gseq *s;
    double *errs; /* every row's error while identical, for the median */
    int n_errs;
} greedy;

/* The batch arrays of one step, sized for the pair's limits. */
typedef struct stepbuf {
    int32_t *tok, *pos, *tseq, *st, *sl, *sc, *bt, *rows, *lseq, *which;
    float *lg[2];
} stepbuf;

static void stepbuf_init(stepbuf *sb, const pair *p) {
    size_t T = (size_t)p->max_tokens, S = (size_t)p->max_seqs;
    sb->tok = xcalloc(T, 4), sb->pos = xcalloc(T, 4), sb->tseq = xcalloc(T, 4);
    sb->st = xcalloc(S, 4), sb->sl = xcalloc(S, 4), sb->sc = xcalloc(S, 4);
    sb->bt = xcalloc(S * p->max_blocks, 4), sb->rows = xcalloc(S, 4), sb->lseq = xcalloc(S, 4);
    sb->which = xcalloc(S, 4);
    sb->lg[0] = xcalloc(S * p->V, 4), sb->lg[1] = xcalloc(S * p->V, 4);
}

static void stepbuf_free(stepbuf *sb) {
    free(sb->tok), free(sb->pos), free(sb->tseq), free(sb->st), free(sb->sl), free(sb->sc);
    free(sb->bt), free(sb->rows), free(sb->lseq), free(sb->which), free(sb->lg[0]);
    free(sb->lg[1]);
}

/* One forward on be of the batch staged in sb (T tokens of n sequences, the first n_dec of them
 * decodes, nl logits rows) into out, which is poisoned with NaN first so that a row the backend
 * leaves unwritten shows; *dt: the seconds it took. */
static mg_status sb_forward(stepbuf *sb, const pair *p, mg_backend *be, int T, int n, int n_dec,
                            int nl, float *out, double *dt) {
    mg_batch b = {.n_tokens = T,
                  .n_seqs = n,
                  .n_decode = n_dec,
                  .n_prefill_tokens = T - n_dec,
                  .tokens = sb->tok,
                  .positions = sb->pos,
                  .token_seq = sb->tseq,
                  .seq_start = sb->st,
                  .seq_len = sb->sl,
                  .seq_ctx = sb->sc,
                  .block_table = sb->bt,
                  .max_blocks = p->max_blocks,
                  .n_logits = nl,
                  .logits_rows = sb->rows,
                  .logits_seq = sb->lseq};
    for (size_t i = 0; i < (size_t)nl * p->V; i++) out[i] = NAN;
    double t0 = now_s();
    mg_status st = be->ops->forward(be, &b, out);
    *dt = now_s() - t0;
    return st;
}

static void top2(const float *row, int n, int *i1, double *gap, double *maxabs) {
    int a = 0, b = -1;
    double m = fabs(row[0]);
    for (int i = 1; i < n; i++) {
        if (fabs(row[i]) > m) m = fabs(row[i]);
        if (row[i] > row[a])
            b = a, a = i;
        else if (b < 0 || row[i] > row[b])
            b = i;
    }
    *i1 = a, *maxabs = m;
    *gap = (b < 0 ? 0 : (double)row[a] - row[b]) / (m > 1e-30 ? m : 1e-30);
}

/* max |b - a| / max |a| over the row; NaN when b has a NaN or an infinity. */
static double row_err(const float *a, const float *b, int n) {
    double e = 0, m = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(b[i])) return NAN;
        double d = fabs((double)b[i] - a[i]);
        if (d > e) e = d;
        if (fabs(a[i]) > m) m = fabs(a[i]);
    }
    return e / (m > 1e-30 ? m : 1e-30);
}

/* *m = max(*m, e), where a NaN (a backend wrote garbage) sticks once seen. */
static void keep_max(double *m, double e) {
    if (!isnan(*m) && !(e <= *m)) *m = e;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Blocks: a random permutation of the pool per backend, max_blocks per sequence. */
static void greedy_init(greedy *g, const pair *p, int n, const int *plen, int32_t *const *prompt,
                        int n_gen) {
    memset(g, 0, sizeof(*g));
    g->n = n;
    g->s = xcalloc((size_t)n, sizeof(gseq));
    g->errs = xcalloc((size_t)n * (n_gen + 1), sizeof(double));
    int32_t *perm = xcalloc((size_t)p->num_blocks, 4);
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < p->num_blocks; i++) perm[i] = i;
        for (int i = p->num_blocks - 1; i > 0; i--) {
            int j = (int)(rnd() % (uint64_t)(i + 1)), t = perm[i];
            perm[i] = perm[j], perm[j] = t;
        }
        for (int s = 0; s < n; s++) {
            gseq *q = &g->s[s];
            q->blocks[k] = xcalloc((size_t)p->max_blocks, 4);
            memcpy(q->blocks[k], perm + (size_t)s * p->max_blocks, 4 * (size_t)p->max_blocks);
            q->toks[k] = xcalloc((size_t)plen[s] + n_gen, 4);
            memcpy(q->toks[k], prompt[s], 4 * (size_t)plen[s]);
        }
    }
    for (int s = 0; s < n; s++)
        g->s[s].plen = g->s[s].n_toks = plen[s], g->s[s].n_gen = n_gen, g->s[s].min_gap = INFINITY;
    free(perm);
}

static void greedy_free(greedy *g) {
    for (int s = 0; s < g->n; s++)
        for (int k = 0; k < 2; k++) free(g->s[s].toks[k]), free(g->s[s].blocks[k]);
    free(g->s), free(g->errs);
}

/* Run every sequence to its n_gen greedy tokens, the scheduler's way: each step takes the
 * sequences in generation (one token each) first, then prefill chunks in sequence order until
 * the token budget (the pair's max_tokens) is spent. The step is the same on both backends but
 * for the tokens (each its own continuation) and the block ids. perturb >= 0 lowers B's top
 * logit by half the row's max |logit| at that greedy token (a fault for proving the FAIL path). */
static mg_status greedy_run(greedy *g, pair *p, stepbuf *sb, int perturb) {
    int V = p->V;
    for (;;) {
        int T = 0, n = 0, n_dec = 0;
        for (int pass = 0; pass < 2; pass++)
            for (int s = 0; s < g->n && n < p->max_seqs; s++) {
                gseq *q = &g->s[s];
                bool dec = q->ctx >= q->plen;
                if (dec != (pass == 0) || q->n_toks >= q->plen + q->n_gen) continue;
                int len = dec ? 1 : q->plen - q->ctx;
                if (len > p->max_tokens - T) len = p->max_tokens - T;
                if (len < 1) continue;
                sb->which[n] = s, sb->st[n] = T, sb->sl[n] = len, sb->sc[n] = q->ctx + len;
                for (int j = 0; j < len; j++) sb->pos[T + j] = q->ctx + j, sb->tseq[T + j] = n;
                T += len, n++, n_dec += dec;
            }
        if (n == 0) return MG_OK;
        int nl = 0;
        for (int i = 0; i < n; i++)
            if (sb->sc[i] == g->s[sb->which[i]].n_toks) /* the last known token: a new one next */
                sb->rows[nl] = sb->st[i] + sb->sl[i] - 1, sb->lseq[nl++] = i;
        for (int k = 0; k < 2; k++) {
            for (int i = 0; i < n; i++) {
                gseq *q = &g->s[sb->which[i]];
                memcpy(sb->tok + sb->st[i], q->toks[k] + q->ctx, 4 * (size_t)sb->sl[i]);
                memcpy(sb->bt + (size_t)i * p->max_blocks, q->blocks[k], 4 * (size_t)p->max_blocks);
            }
            mg_backend *be = k ? p->b : p->cpu;
            double dt;
            mg_status st = sb_forward(sb, p, be, T, n, n_dec, nl, sb->lg[k], &dt);
            *(k ? &p->t_b : &p->t_cpu) += dt;
            if (n_dec == n) p->t_dec[k] += dt;
            if (st) return st;
        }
        p->n_dec_steps += n_dec == n;
        for (int i = 0; i < n; i++) g->s[sb->which[i]].ctx = sb->sc[i];
        for (int r = 0; r < nl; r++) {
            gseq *q = &g->s[sb->which[sb->lseq[r]]];
            const float *a = sb->lg[0] + (size_t)r * V;
            float *bl = sb->lg[1] + (size_t)r * V;
            int step = q->n_toks - q->plen; /* index of the greedy token this row chooses */
            if (step == perturb) {
                int t;
                double gap, m;
                top2(bl, V, &t, &gap, &m);
                bl[t] -= (float)(0.5 * m);
            }
            int ta, tb;
            double gap, m, gb, mb;
            top2(a, V, &ta, &gap, &m);
            top2(bl, V, &tb, &gb, &mb);
            if (!q->diverged) {
                double e = row_err(a, bl, V);
                if (step == 0) q->err_first = e;
                keep_max(&q->max_err, e);
                if (!isnan(e)) g->errs[g->n_errs++] = e; /* the median of the finite ones */
                if (ta != tb) {
                    q->diverged = true, q->div_gap = gap, q->div_err = e;
                } else {
                    q->agree++;
                    if (gap < q->min_gap) q->min_gap = gap;
                }
            }
            q->toks[0][q->n_toks] = ta, q->toks[1][q->n_toks] = tb, q->n_toks++;
        }
    }
}

static double median_err(greedy *g) {
    if (!g->n_errs) return 0;
    qsort(g->errs, (size_t)g->n_errs, sizeof(double), cmp_double);
    return g->errs[g->n_errs / 2];
}

/* The B-vs-CPU verdicts of a greedy run, one line per sequence. */
static void greedy_report(greedy *g, const opts *o, const char *what) {
    double worst = 0;
    int agree = 0, total = 0;
    bool nan = false;
    for (int s = 0; s < g->n; s++) {
        gseq *q = &g->s[s];
        agree += q->agree, total += q->n_gen;
        nan |= isnan(q->max_err);
        if (q->max_err > worst) worst = q->max_err;
        bool tie_ok = !q->diverged || q->div_gap < o->bound;
        bool err_ok = q->max_err <= o->tol;
        char d[160] = "";
        if (q->diverged)
            snprintf(d, sizeof(d),
                     "; diverged at token %d: cpu top-2 gap %.2e %s bound %.0e "
                     "(logits error there %.2e)",
                     q->agree, q->div_gap, q->div_gap < o->bound ? "<" : ">=", o->bound,
                     q->div_err);
        verdict(tie_ok && err_ok,
                "%s %d (%d prompt tokens): %d of %d greedy tokens agree%s; logits error up to "
                "divergence max %.2e (tol %.0e), first row %.2e, smallest cpu gap %.2e",
                what, s, q->plen, q->agree, q->n_gen, d, q->max_err, o->tol, q->err_first,
                q->min_gap);
    }
    printf("  %s: %d of %d greedy tokens agree before divergence; logits error median %.2e, "
           "max %.2e%s over %d rows\n",
           what, agree, total, median_err(g), worst, nan ? " (NaN seen)" : "", g->n_errs);
}

/* ---- golden files (tools/oracle/hf_golden.py, read by worker/model/golden.c) ---- */

/* Largest |ours - HF| over the row's recorded logits, relative to HF's row max |logit|. */
static double golden_err(const golden_row *r, const float *logits, int V) {
    double e = 0;
    for (int i = 0; i < r->n; i++) {
        if (r->id[i] < 0 || r->id[i] >= V || !isfinite(logits[r->id[i]])) return NAN;
        double d = fabs((double)logits[r->id[i]] - r->val[i]);
        if (d > e) e = d;
    }
    return e / (r->maxabs > 1e-6 ? r->maxabs : 1e-6);
}

/* Each golden prompt as one prefill on backend be, logits at the recorded positions; the
 * worst error over that prompt's rows. */
static mg_status golden_prefill(const golden *g, int p, pair *pr, mg_backend *be, stepbuf *sb,
                                const int32_t *blocks, double *worst) {
    int n = g->plen[p], nl = 0;
    for (int i = 0; i < n; i++) sb->tok[i] = g->prompt[p][i], sb->pos[i] = i, sb->tseq[i] = 0;
    for (int r = 0; r < g->n_rows && nl < pr->max_seqs; r++)
        if (g->rows[r].prompt == p) sb->rows[nl] = g->rows[r].pos, sb->lseq[nl++] = 0;
    /* rows ascending, as the golden lists them (hf_golden.py writes sorted positions) */
    for (int i = 1; i < nl; i++)
        if (sb->rows[i] <= sb->rows[i - 1])
            return MG_ERRF(MG_EINVAL, "golden prompt %d: rows not in position order", p);
    sb->st[0] = 0, sb->sl[0] = n, sb->sc[0] = n;
    memcpy(sb->bt, blocks, 4 * (size_t)pr->max_blocks);
    double dt;
    mg_status st = sb_forward(sb, pr, be, n, 1, 0, nl, sb->lg[0], &dt);
    *(be == pr->cpu ? &pr->t_cpu : &pr->t_b) += dt;
    if (st) return st;
    *worst = 0;
    int j = 0;
    for (int r = 0; r < g->n_rows; r++) {
        if (g->rows[r].prompt != p) continue;
        double e = golden_err(&g->rows[r], sb->lg[0] + (size_t)j++ * pr->V, pr->V);
        keep_max(worst, e);
    }
    return MG_OK;
}

/* How many of HF's greedy tokens the continuation matches, and whether its first difference
 * falls on a step where HF's own margin is below lim. */
static void greedy_vs_hf(const golden *g, int k, const int32_t *mine, const char *who, double lim) {
    int n = g->glen[k], same = 0;
    while (same < n && mine[same] == g->gtok[k][same]) same++;
    if (same == n) {
        verdict(true, "golden greedy prompt %d: %s = HF on all %d tokens", g->gprompt[k], who, n);
        return;
    }
    if (!g->margins[k]) {
        verdict(false,
                "golden greedy prompt %d: %s = HF on %d of %d tokens; the golden has no per-step "
                "margins (regenerate it with tools/oracle/hf_golden.py) to tell a near-tie",
                g->gprompt[k], who, same, n);
        return;
    }
    double m = g->margins[k][same];
    verdict(m < lim,
            "golden greedy prompt %d: %s = HF on %d of %d tokens; HF's top-2 gap at the "
            "divergence %.2e %s near-tie limit %.1e",
            g->gprompt[k], who, same, n, m, m < lim ? "<" : ">=", lim);
}

/* One thread per file: the 20b shape's shards are 4 GB each, and one core hashes ~300 MB/s. */
typedef struct hash_job {
    char path[4096], hex[65], err[256];
    mg_status st;
    pthread_t th;
    bool started;
} hash_job;

static void *hash_main(void *arg) {
    hash_job *j = arg;
    j->st = sha256_file(j->path, j->hex);
    if (j->st) snprintf(j->err, sizeof(j->err), "%s", mg_err_msg()); /* the detail is per thread */
    return NULL;
}

static bool sha_ok(const golden *g, const char *dir) {
    hash_job *jobs = xcalloc((size_t)g->n_files, sizeof(hash_job));
    for (int i = 0; i < g->n_files; i++) {
        snprintf(jobs[i].path, sizeof(jobs[i].path), "%s/%s", dir, g->file[i]);
        jobs[i].started = pthread_create(&jobs[i].th, NULL, hash_main, &jobs[i]) == 0;
        if (!jobs[i].started) hash_main(&jobs[i]);
    }
    bool ok = true;
    for (int i = 0; i < g->n_files; i++) {
        hash_job *j = &jobs[i];
        if (j->started) pthread_join(j->th, NULL);
        if (j->st) {
            printf("  %s: %s\n", j->path, j->err);
            ok = false;
        } else if (strcmp(j->hex, g->sha[i])) {
            printf("  %s: sha256 %s, golden %s\n", g->file[i], j->hex, g->sha[i]);
            ok = false;
        }
    }
    free(jobs);
    return ok;
}

static void print_times(const pair *p, const opts *o, const char *what) {
    int nd = p->n_dec_steps ? p->n_dec_steps : 1;
    printf("  %s: forward time cpu %.1f s, %s %.1f s; %d pure decode steps: cpu %.1f ms, %s %.1f "
           "ms per step\n",
           what, p->t_cpu, o->label, p->t_b, p->n_dec_steps, 1e3 * p->t_dec[0] / nd, o->label,
           1e3 * p->t_dec[1] / nd);
}

static void run_golden(const opts *o, const golden *g) {
    bool f32 = !strcmp(g->dtype, "float32");
    double cpu_tol = f32 ? 1e-3 : o->hf_tol;
    /* a second cpu backend (the tool's own test) is held to the cpu's bound */
    double b_tol = strcmp(o->b, "cpu") ? o->hf_tol : cpu_tol;
    printf("golden %s: HF ran in %s on %s (maker args \"%s\"); %d prompts, %d rows, %d greedy\n",
           o->golden, g->dtype, g->device, g->maker_args, g->n_prompts, g->n_rows, g->n_greedy);
    bool sha = sha_ok(g, o->model);
    verdict(sha, "golden: SHA-256 of the %d checkpoint files against the golden's", g->n_files);
    if (!sha) return; /* another checkpoint: nothing below would mean anything */
    int maxlen = 0, maxgen = 0, nrows_max = 0;
    for (int p = 0; p < g->n_prompts; p++) {
        int nr = 0;
        for (int r = 0; r < g->n_rows; r++) nr += g->rows[r].prompt == p;
        if (nr > nrows_max) nrows_max = nr;
        if (g->plen[p] > maxlen) maxlen = g->plen[p];
    }
    for (int k = 0; k < g->n_greedy; k++)
        if (g->glen[k] > maxgen) maxgen = g->glen[k];
    int seqs = g->n_greedy > nrows_max ? g->n_greedy : nrows_max;
    pair pr = {0};
    mg_status st = pair_open(&pr, o, maxlen + maxgen, seqs < 1 ? 1 : seqs,
                             maxlen < o->chunk ? o->chunk : maxlen);
    if (!st && pr.V != g->vocab)
        st = MG_ERRF(MG_EINVAL, "golden vocab %d, checkpoint %d", g->vocab, pr.V);
    if (st) {
        verdict(false, "golden: open backends: %s", mg_err_msg());
        pair_close(&pr);
        return;
    }
    stepbuf sb;
    stepbuf_init(&sb, &pr);
    int32_t *blocks = xcalloc((size_t)pr.max_blocks, 4);
    for (int i = 0; i < pr.max_blocks; i++) blocks[i] = (i * 7 + 3) % pr.num_blocks;
    for (int p = 0; p < g->n_prompts; p++) {
        double eb = NAN, ec = NAN;
        int nr = 0;
        for (int r = 0; r < g->n_rows; r++) nr += g->rows[r].prompt == p;
        if (!nr) { /* nothing logged to compare (a prompt kept for its greedy run) */
            printf("  golden prompt %d: no logged rows\n", p);
            continue;
        }
        mg_status s1 = golden_prefill(g, p, &pr, pr.b, &sb, blocks, &eb);
        mg_status s2 = s1 ? s1 : golden_prefill(g, p, &pr, pr.cpu, &sb, blocks, &ec);
        if (s1 || s2) {
            verdict(false, "golden prompt %d: forward: %s", p, mg_err_msg());
            continue;
        }
        verdict(eb <= b_tol && ec <= cpu_tol,
                "golden prompt %d (%d tokens, %d rows): %s vs HF %.2e (tol %.0e), cpu vs HF %.2e "
                "(tol %.0e)",
                p, g->plen[p], nr, o->label, eb, b_tol, ec, cpu_tol);
    }
    if (g->n_greedy) {
        int plen[GOLDEN_MAX_PROMPTS], n_gen = maxgen;
        int32_t *prompts[GOLDEN_MAX_PROMPTS];
        for (int k = 0; k < g->n_greedy; k++)
            plen[k] = g->plen[g->gprompt[k]], prompts[k] = g->prompt[g->gprompt[k]];
        greedy gr;
        greedy_init(&gr, &pr, g->n_greedy, plen, prompts, n_gen);
        st = greedy_run(&gr, &pr, &sb, -1);
        if (st) {
            verdict(false, "golden greedy: forward: %s", mg_err_msg());
        } else {
            char who[32];
            snprintf(who, sizeof(who), "%s", o->label);
            for (int k = 0; k < g->n_greedy; k++) {
                /* either side bf16: 2 x the bf16 tolerance; float32 pair: 2 x 1e-3 */
                greedy_vs_hf(g, k, gr.s[k].toks[1] + gr.s[k].plen, who, 2 * b_tol);
                greedy_vs_hf(g, k, gr.s[k].toks[0] + gr.s[k].plen, "cpu", 2 * cpu_tol);
            }
            greedy_report(&gr, o, "golden greedy run");
        }
        greedy_free(&gr);
    }
    print_times(&pr, o, "golden");
    free(blocks);
    stepbuf_free(&sb);
    pair_close(&pr);
}

static void run_random(const opts *o) {
    int n = o->n_lengths ? o->n_lengths : o->prompts;
    int *plen = xcalloc((size_t)n, sizeof(int)), maxlen = 0;
    int32_t **prompts = xcalloc((size_t)n, sizeof(int32_t *));
    for (int i = 0; i < n; i++) {
        plen[i] = o->n_lengths ? o->lengths[i] : 20 + (int)(rnd() % 281); /* 20..300 */
        if (plen[i] > maxlen) maxlen = plen[i];
    }
    pair pr = {0};
    mg_status st = pair_open(&pr, o, maxlen + o->tokens, n, o->chunk);
    if (st) {
        verdict(false, "greedy: open backends: %s", mg_err_msg());
        pair_close(&pr);
        free(plen), free(prompts);
        return;
    }
    printf("greedy agreement: %d prompts (lengths", n);
    for (int i = 0; i < n; i++) {
        prompts[i] = xcalloc((size_t)plen[i], 4);
        for (int j = 0; j < plen[i]; j++) prompts[i][j] = (int32_t)(rnd() % (uint64_t)pr.V);
        printf(" %d", plen[i]);
    }
    printf("), %d greedy tokens each, prefill chunks of up to %d tokens per step\n", o->tokens,
           o->chunk);
    stepbuf sb;
    stepbuf_init(&sb, &pr);
    greedy gr;
    greedy_init(&gr, &pr, n, plen, prompts, o->tokens);
    st = greedy_run(&gr, &pr, &sb, o->perturb);
    if (st)
        verdict(false, "greedy: forward: %s", mg_err_msg());
    else
        greedy_report(&gr, o, "prompt");
    print_times(&pr, o, "greedy");
    greedy_free(&gr);
    stepbuf_free(&sb);
    pair_close(&pr);
    for (int i = 0; i < n; i++) free(prompts[i]);
    free(plen), free(prompts);
}

static int usage(void) {
    fprintf(
        stderr,
        "usage: cuda-agree --model DIR [--golden FILE] [--tokens 128] [--prompts 4]\n"
        "                  [--lengths a,b,...] [--b cuda|cpu|ref16|ref32] [--kernel-version 3]\n"
        "                  [--graphs 0|1] [--bound 2e-2] [--tol 0.2] [--hf-tol 3e-2]\n"
        "                  [--chunk 256] [--seed N] [--perturb STEP]\n");
    return 2;
}

static bool parse_num(const char *s, double lo, double hi, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi)) return false;
    *out = v;
    return true;
}

int main(int argc, char **argv) {
    opts o = {.b = "cuda",
              .tokens = 128,
              .prompts = 4,
              .chunk = 256,
              .kernel_version = 3, /* what the recorded runs used */
              .perturb = -1,
              .bound = 2e-2,
              .tol = 0.2,
              .hf_tol = 3e-2,
              .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x = 0;
        bool ok = v != NULL;
        if (!strcmp(f, "--model") && v)
            o.model = v;
        else if (!strcmp(f, "--golden") && v)
            o.golden = v;
        else if (!strcmp(f, "--b") && v)
            o.b = v, ok = !strcmp(v, "cuda") || !strcmp(v, "cpu") || !strcmp(v, "ref16") ||
                          !strcmp(v, "ref32");
        else if (!strcmp(f, "--tokens") && v)
            ok = parse_num(v, 1, 4096, &x), o.tokens = (int)x;
        else if (!strcmp(f, "--prompts") && v)
            ok = parse_num(v, 0, 64, &x), o.prompts = (int)x;
        else if (!strcmp(f, "--chunk") && v)
            ok = parse_num(v, 1, 8192, &x), o.chunk = (int)x;
        else if (!strcmp(f, "--kernel-version") && v)
            /* the sets cuda_backend.c knows; it takes any other number as 1 */
            ok = parse_num(v, 1, 7, &x), o.kernel_version = (int)x;
        else if (!strcmp(f, "--graphs") && v)
            ok = parse_num(v, 0, 1, &x), o.graphs = x != 0;
        else if (!strcmp(f, "--perturb") && v)
            ok = parse_num(v, 0, 4096, &x), o.perturb = (int)x;
        else if (!strcmp(f, "--bound") && v)
            ok = parse_num(v, 0, 10, &o.bound);
        else if (!strcmp(f, "--tol") && v)
            ok = parse_num(v, 0, 10, &o.tol);
        else if (!strcmp(f, "--hf-tol") && v)
            ok = parse_num(v, 0, 10, &o.hf_tol);
        else if (!strcmp(f, "--seed") && v)
            ok = parse_num(v, 0, 1e15, &x), o.seed = (uint64_t)x;
        else if (!strcmp(f, "--lengths") && v) {
            char buf[512], *save = NULL;
            snprintf(buf, sizeof(buf), "%s", v);
            o.n_lengths = 0;
            for (char *t = strtok_r(buf, ",", &save); t && ok; t = strtok_r(NULL, ",", &save)) {
                ok = o.n_lengths < 64 && parse_num(t, 1, 100000, &x);
                if (ok) o.lengths[o.n_lengths++] = (int)x;
            }
            ok = ok && o.n_lengths > 0;
        } else
            ok = false;
        if (!ok) {
            fprintf(stderr, "cuda-agree: bad or unknown option %s%s%s\n", f, v ? " " : "",
                    v ? v : "");
            return usage();
        }
        i++;
    }
    if (!o.model || (!o.golden && !o.prompts && !o.n_lengths)) return usage();
    o.label = !strcmp(o.b, "cpu") ? "cpu#2" : !strncmp(o.b, "ref", 3) ? o.b : "cuda";
    setvbuf(stdout, NULL, _IOLBF, 0); /* a log that ends where a crash happened */
    rng_state = o.seed;
    printf("cuda-agree: %s vs the float32 cpu backend on %s; bound %.1e, tol %.1e, hf-tol %.1e",
           o.label, o.model, o.bound, o.tol, o.hf_tol);
    if (!strcmp(o.b, "cuda"))
        printf(", kernel version %d%s", o.kernel_version, o.graphs ? ", graphs" : "");
    printf("\n");
    golden *g = NULL;
    if (o.golden) {
        g = xcalloc(1, sizeof(golden));
        if (golden_load(o.golden, g)) {
            fprintf(stderr, "cuda-agree: %s\n", mg_err_msg());
            golden_free(g), free(g);
            return 2;
        }
    }
    if (o.prompts > 0 || o.n_lengths) run_random(&o);
    if (g) run_golden(&o, g);
    if (g) golden_free(g), free(g);
    printf("cuda-agree: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
