/* test_cpu_window.c - the CPU backend with its sliding layers in a window pool (backend.h)
 * against the same backend without one, through the scheduler, on the tiny preset (4 layers,
 * 2 of them sliding with a window of 128; vocabulary cut to 4,096 so it stays quick under the
 * sanitizers), written by mg-mkckpt at test time.
 *
 * Shows: over a multi-step run (prompts of up to 200 tokens prefilled in chunks of 48 across the
 * window boundary, decode to 330 positions: well past twice the window) the logits are
 * bit-identical with the window pool on and off, step for step, and the tokens too; the window
 * pool holds only the windows meanwhile; under preemption from a small pool and with prompts
 * taken from the prefix cache the tokens stay the same; bad window tables are refused.
 *
 * Built with MG_TEST_CUDA_REF (test_cuda_ref_window, where worker/cuda is built), the same
 * on/off comparison also runs on cuda_ref's backend form, float32 and with the CUDA backend's
 * bf16 roundings: the host twin of the CUDA backend's window pool.
 *
 * Environment: MG_MKCKPT (maker binary), MG_CKPT_DIR (scratch folder). */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "check.h"
#include "cpu_backend.h"
#include "log.h"
#include "scheduler.h"
#ifdef MG_TEST_CUDA_REF
#include "cuda_ref.h"
#endif

#define NREQ   3
#define MAXOUT 200
#define BS     16

#include "sched_out.h" /* res, on_out, res_same: after MAXOUT */

/* ---- a backend that records every logits row of the CPU backend it wraps ---- */

typedef struct rec {
    mg_backend base;
    mg_backend *inner;
    float *logits; /* every step's rows, one after the other */
    size_t n, cap;
    int steps, window_steps, max_window_active;
    mg_sched *sched; /* for the window pool's figures between steps */
} rec;

static mg_status rec_forward(mg_backend *be, const mg_batch *b, float *logits) {
    rec *r = (rec *)be;
    mg_status st = r->inner->ops->forward(r->inner, b, logits);
    if (st) return st;
    size_t n = (size_t)b->n_logits * be->vocab;
    if (r->n + n > r->cap) {
        size_t cap = r->cap * 2 > r->n + n ? r->cap * 2 : r->n + n;
        float *p = realloc(r->logits, sizeof(float) * cap);
        if (!p) return MG_ERRF(MG_ENOMEM, "rec: out of memory");
        r->logits = p;
        r->cap = cap;
    }
    if (n) memcpy(r->logits + r->n, logits, sizeof(float) * n);
    r->n += n;
    r->steps++;
    r->window_steps += b->window_table != NULL;
    if (r->sched && sched_window_kv(r->sched)) {
        int a = kv_stats(sched_window_kv(r->sched)).active_blocks;
        if (a > r->max_window_active) r->max_window_active = a;
    }
    return MG_OK;
}

static void rec_destroy(mg_backend *be) {
    rec *r = (rec *)be;
    r->inner->ops->destroy(r->inner);
    free(r->logits);
    free(r);
}

static const mg_backend_ops rec_ops = {
    .name = "rec", .forward = rec_forward, .destroy = rec_destroy};

/* ---- requests ---- */

static const char *ckpt;
static int32_t prompts[NREQ][200];
static const int plen[NREQ] = {150, 200, 60};
static const int maxtok[NREQ] = {180, 130, 100}; /* 330 positions at most */
static mg_request reqs[NREQ];

static mg_engine_config cfg(int max_batch, int max_tokens) {
    mg_engine_config c;
    engine_config_defaults(&c);
    c.kv_block_size = BS;
    c.max_seq_len = 512;
    c.max_batch_size = max_batch;
    c.max_num_tokens = max_tokens;
    CHECK_OK(engine_config_check(&c));
    return c;
}

typedef struct run_out {
    rec *r; /* destroyed by the caller */
    int window_blocks, num_blocks, preemptions;
} run_out;

enum { CPU = 0, REF32 = 1, REF16 = 2 };

/* Requests [0, n) through a fresh scheduler over a recording backend (the CPU backend, or
 * cuda_ref's in float32 or bf16) (twice: the second round's prompts come from the prefix
 * cache); both pools must end all free. */
static void run_on(int kind, mg_engine_config c, int num_blocks, bool window, int n, bool twice,
                   res *out, run_out *ro) {
    cpu_backend_opts o = {.num_blocks = num_blocks,
                          .block_size = BS,
                          .max_tokens = (int)c.max_num_tokens,
                          .max_ctx = 512,
                          .threads = 2,
                          .window_pool = window,
                          .max_seqs = (int)c.max_batch_size};
    memset(ro, 0, sizeof(*ro));
    mg_backend *inner = NULL;
    if (kind == CPU) {
        CHECK_OK(cpu_backend_open(ckpt, &o, &inner));
    } else {
#ifdef MG_TEST_CUDA_REF
        /* the reference takes its pools' sizes as they are: the CPU backend's split of 80 */
        CHECK_OK(cuda_ref_backend_open(ckpt, kind == REF16, window ? 111 : num_blocks,
                                       window ? 49 : 0, BS, (int)c.max_num_tokens, 512, &inner));
#endif
    }
    if (!inner) return;
    rec *r = calloc(1, sizeof(*r));
    r->base = *inner;
    r->base.ops = &rec_ops;
    r->inner = inner;
    ro->r = r;
    ro->window_blocks = inner->window_blocks;
    ro->num_blocks = inner->num_blocks;
    mg_sched *s;
    CHECK_OK(sched_create(&c, &r->base, &s));
    if (!s) return;
    r->sched = s;
    for (int round = 0; round < (twice ? 2 : 1); round++) {
        for (int i = 0; i < n; i++) {
            memset(&out[i], 0, sizeof(res));
            mg_request q = reqs[i];
            q.cb = on_out;
            q.ud = &out[i];
            CHECK_OK(sched_add(s, &q));
        }
        int guard = 0;
        while (sched_has_work(s) && guard++ < 20000) CHECK_OK(sched_step(s, NULL));
    }
    mg_kv_pool *pools[2] = {sched_kv(s), sched_window_kv(s)};
    for (int p = 0; p < 2; p++) {
        if (!pools[p]) continue;
        mg_kv_stats st = kv_stats(pools[p]);
        CHECK_EQ_INT(st.active_blocks, 0);
        CHECK_EQ_INT(st.free_blocks, st.total_blocks);
    }
    ro->preemptions = (int)sched_load(s).preemptions;
    r->sched = NULL;
    sched_destroy(s);
}

static void run(mg_engine_config c, int num_blocks, bool window, int n, bool twice, res *out,
                run_out *ro) {
    run_on(CPU, c, num_blocks, window, n, twice, out, ro);
}

static int mismatches(const res *a, const res *b, int n) {
    int m = 0;
    for (int i = 0; i < n; i++)
        if (a[i].n != b[i].n || a[i].n_final != 1 ||
            memcmp(a[i].toks, b[i].toks, sizeof(int32_t) * a[i].n) != 0)
            m++;
    return m;
}

/* Bad window tables: refused with the field named. */
static void test_bad_tables(void) {
    cpu_backend_opts o = {.num_blocks = 200,
                          .block_size = BS,
                          .max_tokens = 64,
                          .threads = 1,
                          .window_pool = true,
                          .max_seqs = 2};
    mg_backend *b = NULL;
    CHECK_OK(cpu_backend_open(ckpt, &o, &b));
    if (!b) return;
    CHECK(b->window_blocks > 0 && b->window == 128);
    CHECK(b->num_blocks > 200); /* the full pool got more than the single pool would have */
    float *logits = malloc(sizeof(float) * b->vocab);
    int32_t tok[2] = {5, 6}, pos[2] = {200, 201}, ts[2] = {0, 0}, start = 0, len = 2, ctx = 202,
            row = 1, zero = 0;
    int32_t table[16], wtable[16];
    for (int k = 0; k < 16; k++) table[k] = k, wtable[k] = -1;
    /* the window of position 200 starts at 73: blocks 4.. */
    for (int k = 4; k < 13; k++) wtable[k] = k;
    mg_batch bt = {.n_tokens = 2,
                   .n_seqs = 1,
                   .n_prefill_tokens = 2,
                   .tokens = tok,
                   .positions = pos,
                   .token_seq = ts,
                   .seq_start = &start,
                   .seq_len = &len,
                   .seq_ctx = &ctx,
                   .block_table = table,
                   .max_blocks = 16,
                   .window_table = wtable,
                   .n_logits = 1,
                   .logits_rows = &row,
                   .logits_seq = &zero};
    CHECK_OK(b->ops->forward(b, &bt, logits));
    wtable[4] = -1; /* a block the window needs, given back */
    CHECK_EQ_INT(b->ops->forward(b, &bt, logits), MG_EINVAL);
    CHECK(strstr(mg_err_msg(), "window_table") != NULL);
    wtable[4] = b->window_blocks; /* past the window pool */
    CHECK_EQ_INT(b->ops->forward(b, &bt, logits), MG_EINVAL);
    wtable[4] = 4;
    bt.window_table = NULL; /* this backend needs one */
    CHECK_EQ_INT(b->ops->forward(b, &bt, logits), MG_EINVAL);
    CHECK(strstr(mg_err_msg(), "window_table") != NULL);
    b->ops->destroy(b);
    /* without the window pool a window table is refused too */
    o.window_pool = false;
    CHECK_OK(cpu_backend_open(ckpt, &o, &b));
    if (b) {
        CHECK_EQ_INT(b->window_blocks, 0);
        CHECK_EQ_INT(b->num_blocks, 200);
        bt.window_table = wtable;
        CHECK_EQ_INT(b->ops->forward(b, &bt, logits), MG_EINVAL);
        bt.window_table = NULL;
        CHECK_OK(b->ops->forward(b, &bt, logits));
        b->ops->destroy(b);
    }
    /* window_pool needs max_seqs */
    o.window_pool = true;
    o.max_seqs = 0;
    CHECK_EQ_INT(cpu_backend_open(ckpt, &o, &b), MG_EINVAL);
    free(logits);
}

int main(void) {
    mg_log_set_level(MG_LOG_WARN);
    const char *maker = getenv("MG_MKCKPT"), *dir = getenv("MG_CKPT_DIR");
    if (!maker || !dir) {
        fprintf(stderr, "set MG_MKCKPT and MG_CKPT_DIR\n");
        return 1;
    }
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "'%s' --preset tiny --vocab 4096 --out '%s' 2>/dev/null", maker,
             dir);
    int rc = system(cmd);
    CHECK_MSG(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "mg-mkckpt failed: %d", rc);
    ckpt = dir;

    unsigned seed = 11;
    for (int i = 0; i < NREQ; i++) {
        for (int k = 0; k < plen[i]; k++) prompts[i][k] = rand_r(&seed) % 4000;
        reqs[i] = (mg_request){.id = i == 0   ? "a"
                                     : i == 1 ? "b"
                                              : "c",
                               .prompt = prompts[i],
                               .n_prompt = plen[i],
                               .max_tokens = maxtok[i],
                               .ignore_eos = true};
        if (i == 1) {
            reqs[i].sampling = (mg_sampling){0.8f, 0.95f, 50, 77};
            reqs[i].has_seed = true;
        }
    }
    test_bad_tables();

    /* The same schedule with the window pool off and on (both pools roomy: no preemption), so
     * the steps line up and every logits row can be compared bit for bit. */
    res off[NREQ], on[NREQ];
    run_out ro_off, ro_on;
    mg_engine_config c = cfg(4, 48);
    run(c, 80, false, NREQ, false, off, &ro_off);
    run(c, 80, true, NREQ, false, on, &ro_on);
    CHECK_EQ_INT(ro_off.window_blocks, 0);
    CHECK(ro_on.window_blocks > 0);
    CHECK(ro_on.num_blocks > 80);
    CHECK_EQ_INT(ro_off.preemptions, 0);
    CHECK_EQ_INT(ro_on.preemptions, 0);
    for (int i = 0; i < NREQ; i++) CHECK_EQ_INT(off[i].n, maxtok[i]);
    CHECK_EQ_INT(mismatches(on, off, NREQ), 0);
    if (ro_off.r && ro_on.r) {
        CHECK(ro_off.r->steps > 150);
        CHECK_EQ_INT(ro_on.r->steps, ro_off.r->steps);
        CHECK_EQ_INT(ro_on.r->window_steps, ro_on.r->steps);
        CHECK_EQ_INT(ro_off.r->window_steps, 0);
        CHECK(ro_on.r->n == ro_off.r->n && ro_on.r->n > 0);
        CHECK_MSG(ro_on.r->n == ro_off.r->n &&
                      memcmp(ro_on.r->logits, ro_off.r->logits, sizeof(float) * ro_on.r->n) == 0,
                  "logits differ with the window pool");
        /* three sequences hold at most their windows (8 blocks of 16 and the one being filled)
         * and a 48-token chunk's blocks, not their whole 330 positions (21 blocks each) */
        CHECK_MSG(ro_on.r->max_window_active <= 3 * 9 + 4, "window pool held %d blocks",
                  ro_on.r->max_window_active);
    }
    /* Preemption from a small pool: a budget of 39 blocks of every layer at 3 sequences gives a
     * window pool of 38 and a full pool of 40, and the two long requests need 42 at the end. */
    res pre[NREQ], twice[NREQ];
    run_out ro_pre, ro_twice;
    run(cfg(3, 48), 39, true, NREQ, false, pre, &ro_pre);
    CHECK_EQ_INT(ro_pre.window_blocks, 38);
    CHECK_EQ_INT(ro_pre.num_blocks, 40);
    CHECK_MSG(ro_pre.preemptions > 0, "no preemption with %d full blocks", ro_pre.num_blocks);
    CHECK_EQ_INT(mismatches(pre, off, NREQ), 0);
    /* The 150-token prompt twice: the second time 9 blocks (144 tokens) come from the cache,
     * which needs the window pool's blocks of positions 17..143 still cached. */
    run(cfg(4, 128), 120, true, 1, true, twice, &ro_twice);
    CHECK(ro_twice.window_blocks > 0);
    CHECK_EQ_INT(mismatches(twice, off, 1), 0);
    CHECK_EQ_INT(twice[0].usage.cached_tokens, 144);
    run_out *all[] = {&ro_off, &ro_on, &ro_pre, &ro_twice};
    for (int i = 0; i < 4; i++)
        if (all[i]->r) rec_destroy(&all[i]->r->base);
#ifdef MG_TEST_CUDA_REF
    /* cuda_ref's backend form: the same schedule with and without its window pool, logits
     * bit-identical, in float32 (tokens as the CPU backend's) and with bf16 roundings */
    for (int kind = REF32; kind <= REF16; kind++) {
        res roff[NREQ], ron[NREQ];
        run_out a, b;
        run_on(kind, c, 80, false, NREQ, false, roff, &a);
        run_on(kind, c, 80, true, NREQ, false, ron, &b);
        CHECK_EQ_INT(a.window_blocks, 0);
        CHECK_EQ_INT(b.window_blocks, 49);
        CHECK_EQ_INT(mismatches(ron, roff, NREQ), 0);
        if (kind == REF32) CHECK_EQ_INT(mismatches(roff, off, NREQ), 0);
        if (a.r && b.r) {
            CHECK_EQ_INT(b.r->window_steps, b.r->steps);
            CHECK_MSG(a.r->n == b.r->n && a.r->n > 0 &&
                          memcmp(a.r->logits, b.r->logits, sizeof(float) * a.r->n) == 0,
                      "reference %d: logits differ with the window pool", kind);
            rec_destroy(&a.r->base);
            rec_destroy(&b.r->base);
        }
    }
#endif
    return check_done();
}
