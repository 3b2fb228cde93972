/* test_cpu_golden.c - the CPU engine against Hugging Face transformers' GptOssForCausalLM.
 *
 * The golden file (tests/golden/model/NAME.golden, written by tools/oracle/hf_golden.py) holds
 * the maker arguments, the SHA-256 of every checkpoint file HF loaded, prompts, reference logits
 * at chosen positions (top 16 and 64 fixed samples) and 256-token greedy continuations. This test
 * regenerates the checkpoint with mg-mkckpt, proves it byte-identical by the hashes, then checks
 * the engine several ways against the same reference:
 *   - each prompt as one prefill, logits within relative error 1e-3 (of the row's largest |logit|)
 *   - each prompt token by token (the decode path), same bound, and close to the prefill
 *   - all prompts in one mixed batch, and the longest prompt in 64-token chunks
 *   - greedy continuations token-identical, the sequences batched together.
 * KV blocks are handed out in a scrambled order so that paging is exercised.
 *
 * Environment: MG_MKCKPT (maker binary), MG_GOLDEN (golden file), MG_CKPT_DIR (scratch folder). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "cpu_backend.h"
#include "golden.h"
#include "model.h"
#include "sha256.h"

/* The maker reads MAGNETO_<OPTION> from the environment too; a deployment's MAGNETO_SEED (say)
 * must not change the checkpoint this test expects. */
static void clear_maker_env(void) {
    static const char *names[] = {"PRESET",         "OUT",      "SEED",           "HIDDEN",
                                  "LAYERS",         "HEADS",    "KV_HEADS",       "HEAD_DIM",
                                  "EXPERTS",        "TOP_K",    "INTERMEDIATE",   "VOCAB",
                                  "SLIDING_WINDOW", "SHARD_MB", "TOKENIZER_FROM", "TOKENIZER_TOOL"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char n[64];
        snprintf(n, sizeof(n), "MAGNETO_%s", names[i]);
        unsetenv(n);
    }
}

static int run_maker(const char *maker, const char *args, const char *out) {
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "'%s' %s --out '%s' 2>/dev/null", maker, args, out);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* ---- a tiny driver: sequences with their own KV blocks ---- */

#define BS                 16
#define MAX_BLOCKS_PER_SEQ 40

typedef struct seq {
    int32_t blocks[MAX_BLOCKS_PER_SEQ];
    int ctx; /* tokens written so far */
} seq;

/* Blocks handed out in a scrambled order (7 is coprime with the pool size). */
static int next_block;
static void seq_init(seq *s, int num_blocks) {
    memset(s, 0, sizeof(*s));
    for (int k = 0; k < MAX_BLOCKS_PER_SEQ; k++) s->blocks[k] = (next_block++ * 7) % num_blocks;
}

typedef struct step {
    int32_t tokens[1024], positions[1024], token_seq[1024];
    int32_t seq_start[8], seq_len[8], seq_ctx[8], table[8 * MAX_BLOCKS_PER_SEQ];
    int32_t rows[1024], rows_seq[1024];
    mg_batch b;
} step;

static void step_begin(step *st) {
    memset(&st->b, 0, sizeof(st->b));
    st->b.tokens = st->tokens, st->b.positions = st->positions, st->b.token_seq = st->token_seq;
    st->b.seq_start = st->seq_start, st->b.seq_len = st->seq_len, st->b.seq_ctx = st->seq_ctx;
    st->b.block_table = st->table, st->b.max_blocks = MAX_BLOCKS_PER_SEQ;
    st->b.logits_rows = st->rows, st->b.logits_seq = st->rows_seq;
}

/* Add n tokens of sequence s. Logits are wanted for the last token (last_only) or for the
 * positions the golden file records for prompt gp (gp >= 0). */
static const golden *G;
static bool wanted(int gp, int pos) {
    for (int k = 0; gp >= 0 && k < G->n_rows; k++)
        if (G->rows[k].prompt == gp && G->rows[k].pos == pos) return true;
    return false;
}

static void step_add(step *st, seq *s, const int32_t *toks, int n, int gp, bool last_only) {
    mg_batch *b = &st->b;
    int si = b->n_seqs++;
    st->seq_start[si] = b->n_tokens, st->seq_len[si] = n, st->seq_ctx[si] = s->ctx + n;
    memcpy(st->table + si * MAX_BLOCKS_PER_SEQ, s->blocks, sizeof(s->blocks));
    for (int i = 0; i < n; i++) {
        int t = b->n_tokens++;
        st->tokens[t] = toks[i], st->positions[t] = s->ctx + i, st->token_seq[t] = si;
        if (last_only ? i == n - 1 : wanted(gp, s->ctx + i))
            st->rows[b->n_logits] = t, st->rows_seq[b->n_logits++] = si;
    }
    s->ctx += n;
    if (n == 1)
        b->n_decode++;
    else
        b->n_prefill_tokens += n;
}

/* ---- comparisons ---- */

/* Largest |ours - ref| over the row's recorded logits, relative to the row's largest |logit|. */
static double rel_err(const golden_row *r, const float *logits) {
    double e = 0;
    for (int i = 0; i < r->n; i++) {
        double d = fabs((double)logits[r->id[i]] - r->val[i]);
        if (d > e) e = d;
    }
    return e / (r->maxabs > 1e-6 ? r->maxabs : 1e-6);
}

static double worst_prefill, worst_decode;

/* Check every golden row of prompt p against logits: one row per recorded position, in
 * position order (as the golden file lists them). */
static void check_prompt_rows(const golden *g, int p, const float *all, int vocab, double *worst,
                              const char *what) {
    int j = 0;
    for (int k = 0; k < g->n_rows; k++) {
        const golden_row *r = &g->rows[k];
        if (r->prompt != p) continue;
        double e = rel_err(r, all + (size_t)j++ * vocab);
        if (e > *worst) *worst = e;
        CHECK_MSG(e <= 1e-3, "%s: prompt %d position %d: relative error %.3g", what, p, r->pos, e);
    }
}

static int argmax(const float *row, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (row[i] > row[best]) best = i;
    return best;
}

int main(void) {
    const char *maker = getenv("MG_MKCKPT"), *gpath = getenv("MG_GOLDEN"),
               *dir = getenv("MG_CKPT_DIR");
    if (!maker || !gpath || !dir) {
        fprintf(stderr, "set MG_MKCKPT, MG_GOLDEN and MG_CKPT_DIR\n");
        return 2;
    }
    static golden g;
    G = &g;
    CHECK_MSG(golden_load(gpath, &g) == MG_OK, "%s", mg_err_msg());
    CHECK(g.n_rows > 0);
    if (!g.n_files) return check_done();
    /* the bounds below (1e-3, identical greedy tokens) hold against a float32 oracle only */
    CHECK_MSG(strcmp(g.dtype, "float32") == 0, "%s: oracle ran in %s, not float32", gpath, g.dtype);

    /* 1. Same checkpoint bytes as the reference loaded. */
    clear_maker_env();
    mkdir(dir, 0755);
    CHECK_EQ_INT(run_maker(maker, g.maker_args, dir), 0);
    for (int i = 0; i < g.n_files; i++) {
        char path[4096], hex[65] = "";
        snprintf(path, sizeof(path), "%s/%s", dir, g.file[i]);
        CHECK_OK(sha256_file(path, hex));
        CHECK_MSG(strcmp(hex, g.sha[i]) == 0, "%s: sha256 %s, golden %s", g.file[i], hex, g.sha[i]);
    }

    mg_model *m = NULL;
    CHECK_OK(model_load(dir, &m));
    if (!m) return check_done();
    CHECK_EQ_INT(m->cfg.vocab, g.vocab);
    int num_blocks = 8 * MAX_BLOCKS_PER_SEQ + 3;
    cpu_backend_opts o = {
        .num_blocks = num_blocks, .block_size = BS, .max_tokens = 1024, .threads = 2};
    mg_backend *be = NULL;
    CHECK_OK(cpu_backend_create(m, &o, &be));
    if (!be) return check_done();
    int V = be->vocab, maxlen = 0;
    for (int p = 0; p < g.n_prompts; p++) maxlen = g.plen[p] > maxlen ? g.plen[p] : maxlen;
    CHECK(maxlen + 256 <= BS * MAX_BLOCKS_PER_SEQ);
    float *pre = malloc(sizeof(float) * (size_t)GOLDEN_MAX_ROWS * V);
    float *dec = malloc(sizeof(float) * (size_t)GOLDEN_MAX_ROWS * V);
    float *mix = malloc(sizeof(float) * (size_t)GOLDEN_MAX_PROMPTS * V);
    static step st;

    /* 2. Each prompt as one prefill, then token by token; both against the reference. */
    for (int p = 0; p < g.n_prompts; p++) {
        int n = g.plen[p];
        seq s;
        seq_init(&s, num_blocks);
        step_begin(&st);
        step_add(&st, &s, g.prompt[p], n, p, false);
        int nrows = st.b.n_logits;
        CHECK_OK(be->ops->forward(be, &st.b, pre));
        check_prompt_rows(&g, p, pre, V, &worst_prefill, "prefill");

        seq_init(&s, num_blocks);
        float *row = dec;
        for (int i = 0; i < n; i++) {
            step_begin(&st);
            step_add(&st, &s, g.prompt[p] + i, 1, p, false);
            CHECK_OK(be->ops->forward(be, &st.b, row));
            row += (size_t)st.b.n_logits * V;
        }
        check_prompt_rows(&g, p, dec, V, &worst_decode, "decode");
        double d = 0;
        for (size_t i = 0; i < (size_t)nrows * V; i++) d = fmax(d, fabs(pre[i] - dec[i]));
        CHECK_MSG(d <= 1e-4, "prompt %d: prefill and decode logits differ by %.3g", p, d);
    }

    /* 3. All prompts in one batch: a decode-style single token first, then prefills. */
    {
        seq s[GOLDEN_MAX_PROMPTS];
        step_begin(&st);
        int order[GOLDEN_MAX_PROMPTS], n = 0;
        for (int p = 0; p < g.n_prompts; p++)
            if (g.plen[p] == 1) order[n++] = p;
        for (int p = 0; p < g.n_prompts; p++)
            if (g.plen[p] != 1) order[n++] = p;
        float *lg = malloc(sizeof(float) * (size_t)GOLDEN_MAX_ROWS * V);
        int first[GOLDEN_MAX_PROMPTS];
        for (int i = 0; i < n; i++) {
            seq_init(&s[i], num_blocks);
            first[i] = st.b.n_logits;
            step_add(&st, &s[i], g.prompt[order[i]], g.plen[order[i]], order[i], false);
        }
        CHECK_OK(be->ops->forward(be, &st.b, lg));
        for (int i = 0; i < n; i++) {
            double w = 0;
            check_prompt_rows(&g, order[i], lg + (size_t)first[i] * V, V, &w, "batch");
        }
        free(lg);
    }

    /* 4. The longest prompt in chunks of 64, logits of the last token of each chunk. */
    {
        int p = 0;
        for (int i = 1; i < g.n_prompts; i++)
            if (g.plen[i] > g.plen[p]) p = i;
        seq s;
        seq_init(&s, num_blocks);
        for (int at = 0; at < g.plen[p]; at += 64) {
            int n = g.plen[p] - at < 64 ? g.plen[p] - at : 64;
            step_begin(&st);
            step_add(&st, &s, g.prompt[p] + at, n, -1, true);
            CHECK_OK(be->ops->forward(be, &st.b, mix));
            for (int k = 0; k < g.n_rows; k++)
                if (g.rows[k].prompt == p && g.rows[k].pos == at + n - 1) {
                    double e = rel_err(&g.rows[k], mix);
                    CHECK_MSG(e <= 1e-3, "chunked: position %d: relative error %.3g", at + n - 1,
                              e);
                }
        }
    }

    /* 5. Greedy continuations, all greedy prompts batched together (decode steps of several
     * sequences at once; the decode path alone is checked above). */
    {
        int cnt = g.n_greedy;
        seq s[GOLDEN_MAX_PROMPTS];
        int32_t *out[GOLDEN_MAX_PROMPTS], last[GOLDEN_MAX_PROMPTS];
        step_begin(&st);
        for (int j = 0; j < cnt; j++) {
            int p = g.gprompt[j];
            seq_init(&s[j], num_blocks);
            out[j] = calloc(g.glen[j], sizeof(int32_t));
            step_add(&st, &s[j], g.prompt[p], g.plen[p], -1, true);
        }
        CHECK_OK(be->ops->forward(be, &st.b, mix));
        for (int j = 0; j < cnt; j++) last[j] = out[j][0] = argmax(mix + (size_t)j * V, V);
        for (int i = 1; cnt && i < g.glen[0]; i++) {
            step_begin(&st);
            for (int j = 0; j < cnt; j++) step_add(&st, &s[j], &last[j], 1, -1, true);
            if (be->ops->forward(be, &st.b, mix) != MG_OK) break;
            for (int j = 0; j < cnt; j++) last[j] = out[j][i] = argmax(mix + (size_t)j * V, V);
        }
        for (int j = 0; j < cnt; j++) {
            int same = 0;
            while (same < g.glen[j] && out[j][same] == g.gtok[j][same]) same++;
            CHECK_MSG(same == g.glen[j], "greedy prompt %d: first difference at token %d of %d",
                      g.gprompt[j], same, g.glen[j]);
            free(out[j]);
        }
    }
    printf("worst relative error: prefill %.3g, decode %.3g\n", worst_prefill, worst_decode);

    free(pre);
    free(dec);
    free(mix);
    be->ops->destroy(be);
    model_destroy(m);
    golden_free(&g);
    return check_done();
}
