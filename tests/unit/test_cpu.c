/* test_cpu.c - the CPU backend's kernels and its contract with the scheduler: MXFP4 decoding,
 * YaRN frequencies, the clamped SwiGLU, RMSNorm, bad batches rejected with an error, the empty
 * step, copy_block, and results that do not depend on the thread count or on how the prompt is
 * split. (Agreement with the HF reference is test_cpu_golden.) The checkpoint is a small one
 * made by mg-mkckpt (MG_MKCKPT) into MG_CKPT_DIR. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "check.h"
#include "cpu_backend.h"
#include "cpu_ops.h"

static void test_mxfp4(void) {
    uint8_t blocks[32], scales[2] = {127, 129};
    for (int j = 0; j < 16; j++) blocks[j] = (uint8_t)(j | ((15 - j) << 4));
    memset(blocks + 16, 0x9F, 16); /* low nibble 0xF = -6, high 0x9 = -0.5 */
    float out[64];
    ops_mxfp4_row(out, blocks, scales, 64);
    static const float fp4[16] = {0,    .5f,  1,  1.5f,  2,  3,  4,  6,
                                  -0.f, -.5f, -1, -1.5f, -2, -3, -4, -6};
    for (int j = 0; j < 16; j++) {
        CHECK_NEAR(out[2 * j], fp4[j], 0);          /* low nibble first */
        CHECK_NEAR(out[2 * j + 1], fp4[15 - j], 0); /* then high */
    }
    CHECK_NEAR(out[32], -6 * 4.0, 0); /* scale 129 = 2^2 */
    CHECK_NEAR(out[33], -0.5 * 4.0, 0);
}

static void test_yarn(void) {
    float f[32];
    float conc = ops_yarn_inv_freq(f, 64, 150000.0, 32.0, 32.0, 1.0, 4096, 0);
    CHECK_NEAR(conc, 0.1 * log(32.0) + 1.0, 1e-6); /* 1.346574 */
    /* Below the ramp (i <= 8): the original frequency; above (i >= 18): divided by 32. */
    for (int i = 0; i < 32; i++) {
        double base = 1.0 / pow(150000.0, 2.0 * i / 64);
        if (i <= 8) CHECK_NEAR(f[i], base, base * 1e-5);
        if (i >= 18) CHECK_NEAR(f[i], base / 32, base / 32 * 1e-5);
        if (i > 8 && i < 18) CHECK(f[i] < base && f[i] > base / 32);
    }
    float g[32];
    CHECK_NEAR(ops_yarn_inv_freq(g, 64, 10000.0, 1.0, 32, 1, 4096, 0), 1.0, 0);
    CHECK_NEAR(g[1], 1.0 / pow(10000.0, 2.0 / 64), 1e-7);
    /* RoPE at position 0 only scales by the concentration. */
    float x[64];
    for (int i = 0; i < 64; i++) x[i] = (float)i;
    ops_rope(x, 1, 64, 0, f, conc);
    CHECK_NEAR(x[5], 5 * conc, 1e-5);
    /* Rotation keeps the norm (times the concentration) at any position. */
    float y[64], n0 = 0, n1 = 0;
    for (int i = 0; i < 64; i++) y[i] = sinf((float)i), n0 += y[i] * y[i];
    ops_rope(y, 1, 64, 1234, f, 1.0f);
    for (int i = 0; i < 64; i++) n1 += y[i] * y[i];
    CHECK_NEAR(n1, n0, 1e-3);
}

static void test_swiglu_rmsnorm(void) {
    float h[6] = {10, -10, -1, 0.5f, 2, 100}, a[3];
    ops_swiglu(a, h, 3, 7.0f);
    CHECK_NEAR(a[0], 7 / (1 + exp(-1.702 * 7)) * (-7 + 1), 1e-4); /* both clamped */
    CHECK_NEAR(a[1], -1 / (1 + exp(1.702)) * 1.5, 1e-6);
    CHECK_NEAR(a[2], 2 / (1 + exp(-3.404)) * 8, 1e-4); /* up clamped to 7 */
    float x[32], o[32];
    uint16_t g[32];
    for (int i = 0; i < 32; i++) x[i] = (float)(i - 16), g[i] = 0x4000; /* bf16 2.0 */
    ops_rmsnorm(o, x, g, 32, 1e-5f);
    double ms = 0;
    for (int i = 0; i < 32; i++) ms += x[i] * x[i];
    ms /= 32;
    CHECK_NEAR(o[3], 2 * (3 - 16) / sqrt(ms + 1e-5), 1e-5);
    float v[13], w[13];
    for (int i = 0; i < 13; i++) v[i] = (float)i, w[i] = 1;
    CHECK_NEAR(ops_dot(v, w, 13), 78, 0);
}

/* One sequence of n tokens in blocks blk[], logits for the last token. */
static mg_status run_seq(mg_backend *b, const int32_t *toks, int n, int start, const int32_t *blk,
                         int nblk, float *logits) {
    int32_t pos[300], ts[300], row = n - 1, zero = 0, len = n, ctx = start + n;
    for (int i = 0; i < n; i++) pos[i] = start + i, ts[i] = 0;
    mg_batch bt = {.n_tokens = n,
                   .n_seqs = 1,
                   .n_decode = n == 1,
                   .n_prefill_tokens = n > 1 ? n : 0,
                   .tokens = toks,
                   .positions = pos,
                   .token_seq = ts,
                   .seq_start = &zero,
                   .seq_len = &len,
                   .seq_ctx = &ctx,
                   .block_table = blk,
                   .max_blocks = nblk,
                   .n_logits = 1,
                   .logits_rows = &row,
                   .logits_seq = &zero};
    return b->ops->forward(b, &bt, logits);
}

static void test_backend(const char *dir) {
    mg_model *m;
    CHECK_OK(model_load(dir, &m));
    if (!m) return;
    cpu_backend_opts o = {.num_blocks = 32, .block_size = 16, .max_tokens = 256, .threads = 2};
    mg_backend *b1, *b2;
    CHECK_OK(cpu_backend_create(m, &o, &b2));
    o.threads = 1;
    CHECK_OK(cpu_backend_create(m, &o, &b1));
    CHECK(cpu_backend_block_bytes(&m->cfg, 16) == 2u * 2 * 16 * 2 * 64 * 4);
    int V = b1->vocab;
    CHECK_EQ_INT(V, 4096);
    CHECK_EQ_INT(b1->max_ctx, 32 * 16);
    float *l1 = malloc(sizeof(float) * V), *l2 = malloc(sizeof(float) * V),
          *l3 = malloc(sizeof(float) * V);
    int32_t toks[200], blk[16], blk2[16];
    for (int i = 0; i < 200; i++) toks[i] = (i * 37 + 5) % V;
    for (int k = 0; k < 16; k++) blk[k] = 31 - k, blk2[k] = k;

    /* Thread count does not change a single bit. */
    CHECK_OK(run_seq(b1, toks, 150, 0, blk, 16, l1));
    CHECK_OK(run_seq(b2, toks, 150, 0, blk, 16, l2));
    CHECK(memcmp(l1, l2, sizeof(float) * V) == 0);
    /* A prompt split in two steps (the second reading the first's KV) gives the same logits
     * within rounding; the same tokens again give the same bits. */
    CHECK_OK(run_seq(b2, toks, 100, 0, blk2, 16, l3));
    CHECK_OK(run_seq(b2, toks + 100, 50, 100, blk2, 16, l3));
    double d = 0;
    for (int v = 0; v < V; v++) d = fmax(d, fabs(l3[v] - l1[v]));
    CHECK_MSG(d < 1e-4, "split prompt differs by %g", d);

    /* copy_block: copy the blocks of blk into fresh ones and decode from the copy. */
    int32_t blk3[16];
    for (int k = 0; k < 10; k++) {
        blk3[k] = k; /* blocks of blk2, free again */
        CHECK_OK(b2->ops->copy_block(b2, blk3[k], blk[k]));
    }
    CHECK_OK(run_seq(b2, toks + 150, 1, 150, blk, 16, l1));
    CHECK_OK(run_seq(b2, toks + 150, 1, 150, blk3, 16, l2));
    CHECK(memcmp(l1, l2, sizeof(float) * V) == 0);
    CHECK_EQ_INT(b2->ops->copy_block(b2, 32, 0), MG_EINVAL);

    /* Bad batches: an error naming the problem, never a crash or a write out of bounds. */
    int32_t bad_tok = V;
    CHECK_EQ_INT(run_seq(b2, &bad_tok, 1, 0, blk, 16, l1), MG_EINVAL);
    CHECK(strstr(mg_err_msg(), "vocabulary") != NULL);
    int32_t bad_blk[16];
    memcpy(bad_blk, blk, sizeof(bad_blk));
    bad_blk[0] = 32;
    CHECK_EQ_INT(run_seq(b2, toks, 4, 0, bad_blk, 16, l1), MG_EINVAL);
    bad_blk[0] = -1;
    CHECK_EQ_INT(run_seq(b2, toks, 4, 0, bad_blk, 16, l1), MG_EINVAL);
    CHECK_EQ_INT(run_seq(b2, toks, 4, 0, blk, 0, l1), MG_EINVAL);
    CHECK_EQ_INT(run_seq(b2, toks, 1, 16 * 16, blk, 16, l1), MG_EINVAL); /* past its blocks */
    int32_t many[300] = {0};
    CHECK_EQ_INT(run_seq(b2, many, 257, 0, blk, 16, l1), MG_EINVAL); /* over max_tokens */
    int32_t pos = 0, ts = 0, zero = 0, one = 1, row = 3, ctx = 1;
    mg_batch bt = {.n_tokens = 1,
                   .n_seqs = 1,
                   .tokens = toks,
                   .positions = &pos,
                   .token_seq = &ts,
                   .seq_start = &zero,
                   .seq_len = &one,
                   .seq_ctx = &ctx,
                   .block_table = blk,
                   .max_blocks = 16,
                   .n_logits = 1,
                   .logits_rows = &row,
                   .logits_seq = &zero};
    CHECK_EQ_INT(b2->ops->forward(b2, &bt, l1), MG_EINVAL); /* logits row outside the batch */
    pos = 5;
    row = 0;
    CHECK_EQ_INT(b2->ops->forward(b2, &bt, l1), MG_EINVAL); /* position past seq_ctx */
    pos = 0;
    int32_t rows[300] = {0}; /* more logits rows than tokens (and than max_tokens) */
    bt.logits_rows = rows;
    bt.n_logits = 300;
    CHECK_EQ_INT(b2->ops->forward(b2, &bt, l1), MG_EINVAL);
    bt.n_logits = 1;
    bt.logits_rows = &row;
    /* The empty step (an idle rank in a lockstep group) does nothing and succeeds. */
    mg_batch empty = {0};
    CHECK_OK(b2->ops->forward(b2, &empty, l1));

    cpu_backend_opts bad = {.num_blocks = 0, .block_size = 16, .max_tokens = 8};
    mg_backend *nb = NULL;
    CHECK_EQ_INT(cpu_backend_create(m, &bad, &nb), MG_EINVAL);
    CHECK(nb == NULL);

    free(l1);
    free(l2);
    free(l3);
    b1->ops->destroy(b1);
    b2->ops->destroy(b2);
    model_destroy(m);

    /* cpu_backend_open owns its model. */
    mg_backend *ob;
    CHECK_OK(cpu_backend_open(dir, &o, &ob));
    if (ob) ob->ops->destroy(ob);
    CHECK(cpu_backend_open("/nonexistent-magneto", &o, &ob) == MG_ENOTFOUND);
}

int main(void) {
    test_mxfp4();
    test_yarn();
    test_swiglu_rmsnorm();
    const char *maker = getenv("MG_MKCKPT"), *dir = getenv("MG_CKPT_DIR");
    CHECK(maker && dir);
    if (maker && dir) {
        char cmd[4096];
        snprintf(cmd, sizeof(cmd),
                 "rm -rf '%s' && '%s' --preset tiny --vocab 4096 --layers 2 --out '%s' 2>/dev/null",
                 dir, maker, dir);
        int rc = system(cmd);
        CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
        test_backend(dir);
    }
    return check_done();
}
