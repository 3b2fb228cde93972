/* cuda_check.c - the kernel lab: every CUDA kernel group against its CPU twin (cpu_ops.h and the
 * logic of cpu_backend.c) on fresh random inputs at the 120b shapes, and the whole model's
 * logits on a checkpoint (the tiny preset) against a reference forward of the GPU's own bf16
 * roundings, and against the float32 CPU backend (see "whole model" below).
 *
 * Every output buffer is poisoned (all bits set: NaN in float and bf16) before the kernel runs,
 * so an element the kernel never wrote shows as NaN and fails; the KV-cache write also checks
 * that nothing outside its slots changed. Errors are ‖gpu − cpu‖ / ‖cpu‖ over each output;
 * bf16 outputs and bf16-rounded operands pass under 1e-2, float32 ones under 1e-4. Each kernel
 * is also timed (median of 20 launches, device events).
 *
 *   cuda-check [--seed N] [--model DIR]     exit status 1 when any check fails
 *              [--only GROUP,...]          (kernel groups; MG_CHECK_KERNELS=1 runs them
 *                                           beside --model)
 *              [--versions V,...]          (the kernel versions of the whole-model checks)
 *              [--split 0|1]               (the whole-model checks with version 7's expert
 *                                           kernels in their split form or not; default:
 *                                           the backend's, split)
 *              [--persist MASK] [--trigger MASK] [--rows MASK] [--bulk MASK]
 *                                          (the one-token forms of the whole-model checks:
 *                                           cuda_small_persist, cuda_small_trigger,
 *                                           cuda_small_rows, cuda_small_bulk) */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>

#include "cpu_backend.h"
#include "cpu_ops.h"
#include "cuda_backend.h"
#include "cuda_gemm.h"
#include "cuda_ops.h"
#include "cuda_plan.h"
#include "cuda_ref.h"
#include "model.h"
#include "sampling.h"

static int n_fail, n_pass;
static uint64_t rng_state;

static uint64_t rnd(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static float frand(void) { /* uniform [-1, 1) */
    return (float)(rnd() >> 40) * (2.0f / 16777216.0f) - 1.0f;
}
static uint16_t f2bf(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return 0x7fc0;
    u += 0x7FFF + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

#define CU(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (cudaError_t)(call);                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of host memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}
static void *dev_from(const void *h, size_t n) {
    void *d;
    CU(cudaMalloc(&d, n ? n : 1));
    if (n) CU(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice));
    return d;
}
static void *dev_poisoned(size_t n) {
    void *d;
    CU(cudaMalloc(&d, n ? n : 1));
    CU(cudaMemset(d, 0xFF, n));
    return d;
}
static void *host_from(const void *d, size_t n) {
    void *h = xmalloc(n);
    CU(cudaDeviceSynchronize());
    CU(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost));
    return h;
}
static uint16_t *rand_bf16(size_t n, float scale) {
    uint16_t *p = xmalloc(2 * n);
    for (size_t i = 0; i < n; i++) p[i] = f2bf(scale * frand());
    return p;
}
static float *bf16_to_float(const uint16_t *p, size_t n) {
    float *f = xmalloc(4 * n);
    for (size_t i = 0; i < n; i++) f[i] = bf16_to_f32(p[i]);
    return f;
}

/* ‖a − b‖ / ‖b‖ over n values; unwritten (NaN in a) counted apart. */
static void compare(const char *name, const float *gpu, const float *cpu, size_t n, double tol,
                    double us) {
    double num = 0, den = 0;
    size_t nan = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(gpu[i])) {
            nan++;
            continue;
        }
        double d = (double)gpu[i] - cpu[i];
        num += d * d, den += (double)cpu[i] * cpu[i];
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    bool ok = nan == 0 && rel <= tol && isfinite(rel);
    ok ? n_pass++ : n_fail++;
    printf("%-34s rel_err %.3e (tol %.0e)  unwritten %zu/%zu  %8.1f us  %s\n", name, rel, tol, nan,
           n, us, ok ? "PASS" : "FAIL");
}
static void compare_bf16(const char *name, const uint16_t *gpu, const float *cpu, size_t n,
                         double tol, double us) {
    float *g = bf16_to_float(gpu, n);
    compare(name, g, cpu, n, tol, us);
    free(g);
}
static void verdict(const char *name, bool ok, const char *detail) {
    ok ? n_pass++ : n_fail++;
    printf("%-34s %s  %s\n", name, detail, ok ? "PASS" : "FAIL");
}

/* Ticket counters for the fused kernels: zeros, checked to be zero again after the launches. */
static int *tickets_new(int n) {
    int *d;
    CU(cudaMalloc((void **)&d, 4 * (size_t)n));
    CU(cudaMemset(d, 0, 4 * (size_t)n));
    return d;
}
static void tickets_done(const char *name, int *d, int n) {
    int32_t *h = host_from(d, 4 * (size_t)n), left = 0;
    for (int i = 0; i < n; i++) left += h[i] != 0;
    char what[64];
    snprintf(what, sizeof what, "%d of %d counters left nonzero", left, n);
    verdict(name, left == 0, what);
    free(h);
    cudaFree(d);
}

/* Median microseconds of reps launches of the statement (after one warm-up). */
#define TIME_US(out, stmt)                                                                         \
    do {                                                                                           \
        cudaEvent_t a_, b_;                                                                        \
        float ts_[20];                                                                             \
        CU(cudaEventCreate(&a_));                                                                  \
        CU(cudaEventCreate(&b_));                                                                  \
        stmt;                                                                                      \
        for (int r_ = 0; r_ < 20; r_++) {                                                          \
            CU(cudaEventRecord(a_, 0));                                                            \
            stmt;                                                                                  \
            CU(cudaEventRecord(b_, 0));                                                            \
            CU(cudaEventSynchronize(b_));                                                          \
            CU(cudaEventElapsedTime(&ts_[r_], a_, b_));                                            \
        }                                                                                          \
        for (int i_ = 1; i_ < 20; i_++)                                                            \
            for (int j_ = i_; j_ > 0 && ts_[j_] < ts_[j_ - 1]; j_--) {                             \
                float t_ = ts_[j_];                                                                \
                ts_[j_] = ts_[j_ - 1], ts_[j_ - 1] = t_;                                           \
            }                                                                                      \
        (out) = ts_[10] * 1000.0;                                                                  \
        cudaEventDestroy(a_);                                                                      \
        cudaEventDestroy(b_);                                                                      \
    } while (0)

static mg_model_config C; /* the 120b shapes */

/* ---- embedding + RMSNorm (plain and fused with the residual) ---- */

static void check_norm(const uint16_t *table_h, const uint16_t *table_d) {
    int T = 64, H = C.hidden, V = C.vocab, ND = 4;
    int32_t tok[64];
    for (int t = 0; t < T; t++) tok[t] = (int32_t)(rnd() % V);
    int32_t *tok_d = dev_from(tok, sizeof(tok));
    float *x_d = dev_poisoned(4 * (size_t)T * H);
    double us;
    TIME_US(us, CU(cuda_embed(x_d, table_d, tok_d, T, H, 0)));
    float *x = host_from(x_d, 4 * (size_t)T * H), *ref = xmalloc(4 * (size_t)T * H);
    for (int t = 0; t < T; t++) ops_bf16_row(ref + (size_t)t * H, table_h + (size_t)tok[t] * H, H);
    compare("embed (64 tokens)", x, ref, (size_t)T * H, 0, us);

    uint16_t *g = rand_bf16(H, 1.0f), *bias = rand_bf16(H, 0.1f);
    float *delta = xmalloc(4 * (size_t)T * ND * H), *x0 = xmalloc(4 * (size_t)T * H);
    for (size_t i = 0; i < (size_t)T * ND * H; i++) delta[i] = frand();
    for (size_t i = 0; i < (size_t)T * H; i++) x0[i] = 3.0f * frand();
    uint16_t *g_d = dev_from(g, 2 * H), *bias_d = dev_from(bias, 2 * H);
    float *delta_d = dev_from(delta, 4 * (size_t)T * ND * H);
    uint16_t *out_d = dev_poisoned(2 * (size_t)T * H);
    float *xref = xmalloc(4 * (size_t)T * H), *oref = xmalloc(4 * (size_t)T * H);
    for (int pass = 0; pass < 2; pass++) {
        int nd = pass ? ND : 0;
        const uint16_t *bb = pass ? bias : NULL;
        CU(cudaMemcpy(x_d, x0, 4 * (size_t)T * H, cudaMemcpyHostToDevice));
        CU(cudaMemset(out_d, 0xFF, 2 * (size_t)T * H));
        CU(cuda_rmsnorm(out_d, x_d, pass ? delta_d : NULL, nd, pass ? bias_d : NULL, g_d, T, H,
                        C.rms_eps, 0));
        float *xg = host_from(x_d, 4 * (size_t)T * H);
        uint16_t *og = host_from(out_d, 2 * (size_t)T * H);
        for (int t = 0; t < T; t++) {
            float *xr = xref + (size_t)t * H;
            memcpy(xr, x0 + (size_t)t * H, 4 * (size_t)H);
            for (int k = 0; k < nd; k++)
                for (int i = 0; i < H; i++) xr[i] += delta[((size_t)t * nd + k) * H + i];
            if (bb)
                for (int i = 0; i < H; i++) xr[i] += bf16_to_f32(bb[i]);
            ops_rmsnorm(oref + (size_t)t * H, xr, g, H, C.rms_eps);
        }
        if (pass) {
            /* time the fused form on a copy of x so the checked values stay as they were */
            TIME_US(us, CU(cuda_rmsnorm(out_d, x_d, delta_d, nd, bias_d, g_d, T, H, C.rms_eps, 0)));
            compare("residual (4 rows + bias) x", xg, xref, (size_t)T * H, 1e-6, us);
            compare_bf16("residual + rmsnorm out", og, oref, (size_t)T * H, 1e-2, us);
        } else {
            TIME_US(us, CU(cuda_rmsnorm(out_d, x_d, NULL, 0, NULL, g_d, T, H, C.rms_eps, 0)));
            compare_bf16("rmsnorm (64 x 2880)", og, oref, (size_t)T * H, 1e-2, us);
        }
        free(xg), free(og);
    }
    cudaFree(tok_d), cudaFree(x_d), cudaFree(g_d), cudaFree(bias_d), cudaFree(delta_d);
    cudaFree(out_d);
    free(x), free(ref), free(g), free(bias), free(delta), free(x0), free(xref), free(oref);
}

/* ---- cuBLASLt GEMMs at the model's shapes ---- */

static void check_gemm(cuda_gemm *gm, const char *name, int T, int N, int K, const uint16_t *w_h,
                       const uint16_t *w_d) {
    uint16_t *x = rand_bf16((size_t)T * K, 1.0f);
    float *xf = bf16_to_float(x, (size_t)T * K);
    uint16_t *x_d = dev_from(x, 2 * (size_t)T * K);
    float *out_d = dev_poisoned(4 * (size_t)T * N);
    mg_status st = cuda_matmul_bf16(gm, out_d, x_d, w_d, T, N, K, 0);
    if (st) {
        verdict(name, false, mg_err_msg());
        cudaFree(x_d), cudaFree(out_d);
        free(x), free(xf);
        return;
    }
    float *out = host_from(out_d, 4 * (size_t)T * N), *ref = xmalloc(4 * (size_t)T * N);
    float *row = xmalloc(4 * (size_t)OPS_ROW_TILE * K); /* cpu_ops.h's scratch contract */
    ops_matmul_bf16(ref, xf, w_h, NULL, T, N, K, 0, N, row);
    double us;
    TIME_US(us, cuda_matmul_bf16(gm, out_d, x_d, w_d, T, N, K, 0));
    char label[96];
    snprintf(label, sizeof(label), "%s gemm (%d x %d x %d)", name, T, N, K);
    compare(label, out, ref, (size_t)T * N, 1e-4, us);
    cudaFree(x_d), cudaFree(out_d);
    free(x), free(xf), free(out), free(ref), free(row);
}

/* ---- q/k/v bias + RoPE + KV write ---- */

static void check_rope(void) {
    int T = 64, nh = C.n_heads, nkv = C.n_kv_heads, D = C.head_dim, bs = 16, nblocks = 64;
    int Q = nh * D, KV = nkv * D, W = Q + 2 * KV;
    float inv_freq[256];
    float conc = ops_yarn_inv_freq(inv_freq, D, C.rope_theta, C.rope_factor, C.beta_fast,
                                   C.beta_slow, C.rope_orig_ctx, C.rope_truncate);
    int32_t pos[64], slot[64];
    int perm[1024];
    for (int i = 0; i < nblocks * bs; i++) perm[i] = i;
    for (int i = nblocks * bs - 1; i > 0; i--) {
        int j = (int)(rnd() % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int t = 0; t < T; t++) pos[t] = (int32_t)(rnd() % 131072), slot[t] = perm[t];
    float *qkv = xmalloc(4 * (size_t)T * W);
    for (size_t i = 0; i < (size_t)T * W; i++) qkv[i] = frand();
    uint16_t *bias = rand_bf16(W, 0.1f);
    float *qkv_d = dev_from(qkv, 4 * (size_t)T * W), *inv_d = dev_from(inv_freq, 4 * D / 2);
    uint16_t *bias_d = dev_from(bias, 2 * W);
    int32_t *pos_d = dev_from(pos, sizeof(pos)), *slot_d = dev_from(slot, sizeof(slot));
    size_t cache = (size_t)nblocks * bs * KV;
    float *q_d = dev_poisoned(4 * (size_t)T * Q);
    uint16_t *k_d = dev_poisoned(2 * cache), *v_d = dev_poisoned(2 * cache);
    CU(cuda_qkv_rope(q_d, k_d, v_d, qkv_d, bias_d, pos_d, slot_d, inv_d, conc, T, nh, nkv, D, bs,
                     0));
    float *q = host_from(q_d, 4 * (size_t)T * Q);
    uint16_t *kc = host_from(k_d, 2 * cache), *vc = host_from(v_d, 2 * cache);
    float *qref = xmalloc(4 * (size_t)T * Q), *kref = xmalloc(4 * (size_t)T * KV);
    float *vref = xmalloc(4 * (size_t)T * KV), *kg = xmalloc(4 * (size_t)T * KV);
    float *vg = xmalloc(4 * (size_t)T * KV);
    for (int t = 0; t < T; t++) {
        const float *r = qkv + (size_t)t * W;
        for (int i = 0; i < Q; i++) qref[(size_t)t * Q + i] = r[i] + bf16_to_f32(bias[i]);
        for (int i = 0; i < KV; i++) {
            kref[(size_t)t * KV + i] = r[Q + i] + bf16_to_f32(bias[Q + i]);
            vref[(size_t)t * KV + i] = r[Q + KV + i] + bf16_to_f32(bias[Q + KV + i]);
        }
        ops_rope(qref + (size_t)t * Q, nh, D, pos[t], inv_freq, conc);
        ops_rope(kref + (size_t)t * KV, nkv, D, pos[t], inv_freq, conc);
        int blk = slot[t] / bs, off = slot[t] % bs;
        for (int h = 0; h < nkv; h++)
            for (int d = 0; d < D; d++) {
                size_t a = ((size_t)(blk * nkv + h) * bs + off) * D + d;
                kg[(size_t)t * KV + h * D + d] = bf16_to_f32(kc[a]);
                vg[(size_t)t * KV + h * D + d] = bf16_to_f32(vc[a]);
                kc[a] = vc[a] = 0xFFFF; /* consumed: what is left must still be poison */
            }
    }
    size_t stray = 0;
    for (size_t i = 0; i < cache; i++) stray += (kc[i] != 0xFFFF) + (vc[i] != 0xFFFF);
    double us;
    TIME_US(us, CU(cuda_qkv_rope(q_d, k_d, v_d, qkv_d, bias_d, pos_d, slot_d, inv_d, conc, T, nh,
                                 nkv, D, bs, 0)));
    compare("qkv bias + rope: q", q, qref, (size_t)T * Q, 1e-4, us);
    compare("qkv bias + rope: k in cache", kg, kref, (size_t)T * KV, 1e-2, us);
    compare("v bias: v in cache", vg, vref, (size_t)T * KV, 1e-2, us);
    char d[64];
    snprintf(d, sizeof(d), "%zu cache values written outside the slots", stray);
    verdict("kv write: no stray writes", stray == 0, d);
    cudaFree(qkv_d), cudaFree(inv_d), cudaFree(bias_d), cudaFree(pos_d), cudaFree(slot_d);
    cudaFree(q_d), cudaFree(k_d), cudaFree(v_d);
    free(qkv), free(bias), free(q), free(kc), free(vc), free(qref), free(kref), free(vref);
    free(kg), free(vg);
}

/* ---- attention with sinks over paged KV ---- */

/* Split-KV cases as version 6 runs them (the merge by the last CTA, each token's keys over the
 * splits by its own context) or as before (the merge by its own kernel, one chunk length). */
static bool att_merge_in_kernel;

static void same_bits(const char *name, const void *a_d, const void *b_d, size_t n, int elem,
                      double us);

/* One batch: n_dec decode sequences (random contexts up to max_ctx) and, when pf_len > 0, one
 * prefill chunk of pf_len tokens ending at position pf_end - 1. splits > 0: the split-KV
 * kernels; -1: the tensor-core kernel (version 5); 0: the plain one. */
static void check_attention_case(const char *name, int n_dec, int max_ctx, int pf_len, int pf_end,
                                 int window, int splits) {
    int nh = C.n_heads, nkv = C.n_kv_heads, D = C.head_dim, bs = 16, Q = nh * D, KV = nkv * D;
    int n_seqs = n_dec + (pf_len > 0), maxb = (max_ctx > pf_end ? max_ctx : pf_end) / bs + 1;
    int nblocks = n_seqs * maxb;
    size_t cache = (size_t)nblocks * bs * KV;
    uint16_t *kc = rand_bf16(cache, 1.0f), *vc = rand_bf16(cache, 1.0f);
    uint16_t *sinks = rand_bf16(nh, 2.0f);
    int32_t *bt = xmalloc(4 * (size_t)n_seqs * maxb), *perm = xmalloc(4 * (size_t)nblocks);
    for (int i = 0; i < nblocks; i++) perm[i] = i;
    for (int i = nblocks - 1; i > 0; i--) {
        int j = (int)(rnd() % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int i = 0; i < n_seqs * maxb; i++) bt[i] = perm[i];
    int T = n_dec + pf_len;
    int32_t *seq = xmalloc(4 * (size_t)T), *pos = xmalloc(4 * (size_t)T);
    for (int s = 0; s < n_dec; s++) seq[s] = s, pos[s] = (int32_t)(rnd() % (uint64_t)max_ctx);
    for (int i = 0; i < pf_len; i++) seq[n_dec + i] = n_dec, pos[n_dec + i] = pf_end - pf_len + i;
    float *q = xmalloc(4 * (size_t)T * Q);
    for (size_t i = 0; i < (size_t)T * Q; i++) q[i] = 2.0f * frand();
    uint16_t *k_d = dev_from(kc, 2 * cache), *v_d = dev_from(vc, 2 * cache);
    uint16_t *s_d = dev_from(sinks, 2 * nh);
    int32_t *bt_d = dev_from(bt, 4 * (size_t)n_seqs * maxb), *seq_d = dev_from(seq, 4 * (size_t)T);
    int32_t *pos_d = dev_from(pos, 4 * (size_t)T);
    float *q_d = dev_from(q, 4 * (size_t)T * Q);
    uint16_t *o_d = dev_poisoned(2 * (size_t)T * Q);
    int ctx_max = 1;
    for (int t = 0; t < T; t++)
        if (pos[t] + 1 > ctx_max) ctx_max = pos[t] + 1;
    float *part_d = splits > 0 ? dev_poisoned(4 * (size_t)T * nh * CUDA_ATT_MAX_SPLITS * 66) : NULL;
    int *count_d = splits > 0 && att_merge_in_kernel ? tickets_new(T * nkv) : NULL;
#define ATT_RUN()                                                                                  \
    (splits > 0   ? cuda_attention_split(o_d, part_d, count_d, q_d, k_d, v_d, s_d, bt_d, maxb,     \
                                         seq_d, pos_d, T, nh, nkv, D, bs, window, ctx_max, splits, \
                                         att_merge_in_kernel, 0)                                   \
     : splits < 0 ? cuda_attention_mma(o_d, q_d, k_d, v_d, s_d, bt_d, maxb, seq_d, pos_d, T, nh,   \
                                       nkv, D, bs, window, 0)                                      \
                  : cuda_attention(o_d, q_d, k_d, v_d, s_d, bt_d, maxb, seq_d, pos_d, T, nh, nkv,  \
                                   D, bs, window, 0))
    CU(ATT_RUN());
    uint16_t *o = host_from(o_d, 2 * (size_t)T * Q);
    float *ref = xmalloc(4 * (size_t)T * Q), *sc = xmalloc(4 * (size_t)(max_ctx + pf_end + 1));
    float kr[64], vr[64];
    for (int t = 0; t < T; t++)
        for (int h = 0; h < nh; h++) { /* att_task of cpu_backend.c */
            int g = h / (nh / nkv), p = pos[t], lo = window > 0 ? p - window + 1 : 0;
            if (lo < 0) lo = 0;
            const float *qr = q + (size_t)t * Q + (size_t)h * D;
            float sink = bf16_to_f32(sinks[h]), m = sink;
            for (int j = lo; j <= p; j++) {
                int sl = bt[(size_t)seq[t] * maxb + j / bs] * bs + j % bs;
                size_t a = ((size_t)(sl / bs * nkv + g) * bs + sl % bs) * D;
                ops_bf16_row(kr, kc + a, D);
                float z = ops_dot(qr, kr, D) * (1.0f / sqrtf((float)D));
                sc[j - lo] = z;
                if (z > m) m = z;
            }
            float den = expf(sink - m);
            for (int j = lo; j <= p; j++) den += (sc[j - lo] = expf(sc[j - lo] - m));
            float *out = ref + (size_t)t * Q + (size_t)h * D;
            memset(out, 0, 4 * (size_t)D);
            for (int j = lo; j <= p; j++) {
                int sl = bt[(size_t)seq[t] * maxb + j / bs] * bs + j % bs;
                ops_bf16_row(vr, vc + ((size_t)(sl / bs * nkv + g) * bs + sl % bs) * D, D);
                for (int d = 0; d < D; d++) out[d] += sc[j - lo] / den * vr[d];
            }
        }
    double us;
    TIME_US(us, CU(ATT_RUN()));
    compare_bf16(name, o, ref, (size_t)T * Q, 1e-2, us);
    if (splits > 0 && T == 1) { /* the query heads by a bulk copy (cuda_small_bulk 16) */
        int b_was = cuda_small_bulk(16);
        uint16_t *o_b = o_d;
        o_d = dev_poisoned(2 * (size_t)Q);
        CU(ATT_RUN());
        TIME_US(us, CU(ATT_RUN()));
        char bn[160];
        snprintf(bn, sizeof(bn), "%s, q by bulk copy", name);
        same_bits(bn, o_b, o_d, 2 * (size_t)Q, 2, us);
        cudaFree(o_b);
        cuda_small_bulk(b_was);
    }
#undef ATT_RUN
    if (count_d) tickets_done("  split-KV counters reset", count_d, T * nkv);
    if (part_d) cudaFree(part_d);
    cudaFree(k_d), cudaFree(v_d), cudaFree(s_d), cudaFree(bt_d), cudaFree(seq_d), cudaFree(pos_d);
    cudaFree(q_d), cudaFree(o_d);
    free(kc), free(vc), free(sinks), free(bt), free(perm), free(seq), free(pos), free(q), free(o);
    free(ref), free(sc);
}

/* ---- router ---- */

/* fused: the logits from x (T, H) and router weights by cuda_router_gemv (compared with the
 * CPU's matmul), the choices then checked against the GPU's own logits. */
static void check_router(int T, bool fused) {
    int E = C.n_experts, K = C.top_k, H = C.hidden;
    float *lg = xmalloc(4 * (size_t)T * E);
    for (size_t i = 0; i < (size_t)T * E; i++) lg[i] = 3.0f * frand();
    uint16_t *bias = rand_bf16(E, 0.5f);
    float *lg_d = dev_from(lg, 4 * (size_t)T * E);
    uint16_t *bias_d = dev_from(bias, 2 * E);
    int32_t *te_d = dev_poisoned(4 * (size_t)T * K), *es_d = dev_poisoned(4 * (size_t)(E + 1));
    int32_t *sl_d = dev_poisoned(4 * (size_t)T * K);
    float *tw_d = dev_poisoned(4 * (size_t)T * K);
    uint16_t *x = NULL, *w = NULL, *x_d = NULL, *w_d = NULL;
    int *tk_d = NULL;
#define ROUTER_RUN()                                                                               \
    (fused ? cuda_router_gemv(lg_d, tk_d, x_d, w_d, bias_d, te_d, tw_d, es_d, sl_d, T, E, H, K, 0) \
           : cuda_router(te_d, tw_d, es_d, sl_d, lg_d, bias_d, T, E, K, 0))
    if (fused) {
        x = rand_bf16((size_t)T * H, 1.0f), w = rand_bf16((size_t)E * H, 0.05f);
        x_d = dev_from(x, 2 * (size_t)T * H), w_d = dev_from(w, 2 * (size_t)E * H);
        tk_d = tickets_new(1);
        CU(cudaMemset(lg_d, 0xFF, 4 * (size_t)T * E));
        float *xf = bf16_to_float(x, (size_t)T * H), *row = xmalloc(4 * (size_t)OPS_ROW_TILE * H);
        ops_matmul_bf16(lg, xf, w, NULL, T, E, H, 0, E, row);
        free(xf), free(row);
    }
    CU(ROUTER_RUN());
    if (fused) {
        float *g = host_from(lg_d, 4 * (size_t)T * E);
        char label[64];
        snprintf(label, sizeof(label), "router gemv logits (%d tokens)", T);
        compare(label, g, lg, (size_t)T * E, 1e-4, 0);
        memcpy(lg, g, 4 * (size_t)T * E); /* the choices follow the GPU's logits */
        free(g);
    }
    int32_t *te = host_from(te_d, 4 * (size_t)T * K), *es = host_from(es_d, 4 * (size_t)(E + 1));
    int32_t *sl = host_from(sl_d, 4 * (size_t)T * K);
    float *tw = host_from(tw_d, 4 * (size_t)T * K), *wref = xmalloc(4 * (size_t)T * K);
    int mism = 0;
    for (int t = 0; t < T; t++) { /* route() of cpu_backend.c */
        float l[1024];
        for (int e = 0; e < E; e++) l[e] = lg[(size_t)t * E + e] + bf16_to_f32(bias[e]);
        int ch[8];
        float v[8];
        for (int k = 0; k < K; k++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                bool taken = false;
                for (int j = 0; j < k; j++) taken |= ch[j] == e;
                if (!taken && (best < 0 || l[e] > l[best])) best = e;
            }
            ch[k] = best, v[k] = l[best];
        }
        float mx = v[0], sum = 0;
        for (int k = 0; k < K; k++) sum += (v[k] = expf(v[k] - mx));
        for (int k = 0; k < K; k++) {
            wref[t * K + k] = v[k] / sum;
            mism += te[t * K + k] != ch[k];
        }
    }
    /* grouping: offsets ascend to T*K, each slot once, in its expert's range */
    bool group_ok = es[0] == 0 && es[E] == T * K;
    int *seen = calloc((size_t)T * K, sizeof(int));
    for (int e = 0; e < E && group_ok; e++) {
        group_ok &= es[e + 1] >= es[e];
        for (int i = es[e]; i < es[e + 1] && group_ok; i++) {
            int s = sl[i];
            group_ok &= s >= 0 && s < T * K && te[s] == e && !seen[s];
            if (group_ok) seen[s] = 1;
        }
    }
    double us;
    TIME_US(us, CU(ROUTER_RUN()));
#undef ROUTER_RUN
    char d[96];
    snprintf(d, sizeof(d), "%d of %d expert choices differ", mism, T * K);
    char l1[80], l2[80], l3[80];
    const char *how = fused ? ", fused gemv" : "";
    snprintf(l1, sizeof(l1), "router top-%d (%d tokens%s)", K, T, how);
    snprintf(l2, sizeof(l2), "router softmax weights (%d tokens%s)", T, how);
    snprintf(l3, sizeof(l3), "router grouping by expert (%d tokens%s)", T, how);
    verdict(l1, mism == 0, d);
    compare(l2, tw, wref, (size_t)T * K, 1e-5, us);
    verdict(l3, group_ok, "each slot once, in its expert's range");
    if (fused) tickets_done("  router gemv counter reset", tk_d, 1);
    cudaFree(lg_d), cudaFree(bias_d), cudaFree(te_d), cudaFree(es_d), cudaFree(sl_d);
    cudaFree(tw_d), cudaFree(x_d), cudaFree(w_d);
    free(lg), free(bias), free(te), free(es), free(sl), free(tw), free(wref), free(seen);
    free(x), free(w);
}

/* ---- MXFP4 experts ---- */

typedef struct experts {
    uint8_t *gu_b, *gu_s, *dn_b, *dn_s; /* host */
    uint16_t *gu_bias, *dn_bias;
    uint8_t *gu_b_d, *gu_s_d, *dn_b_d, *dn_s_d;
    uint8_t *gu_bt_d, *gu_st_d, *dn_bt_d, *dn_st_d; /* version 3's tiled layout */
    uint16_t *gu_bias_d, *dn_bias_d;
} experts;

static void experts_make(experts *x) {
    size_t E = C.n_experts, H = C.hidden, I = C.intermediate;
    size_t gb = E * 2 * I * H / 2, gs = E * 2 * I * H / 32, db = E * H * I / 2, ds = E * H * I / 32;
    x->gu_b = xmalloc(gb), x->gu_s = xmalloc(gs), x->dn_b = xmalloc(db), x->dn_s = xmalloc(ds);
    for (size_t i = 0; i < gb; i += 8) {
        uint64_t r = rnd();
        memcpy(x->gu_b + i, &r, gb - i < 8 ? gb - i : 8);
    }
    for (size_t i = 0; i < db; i += 8) {
        uint64_t r = rnd();
        memcpy(x->dn_b + i, &r, db - i < 8 ? db - i : 8);
    }
    /* scales near 1/(2.93√2880), and one block in 256 above 2^1 (E8M0 129, 130): version 3
     * decodes those with a second multiply */
    for (size_t i = 0; i < gs; i++)
        x->gu_s[i] = (uint8_t)(rnd() % 256 ? 119 + rnd() % 3 : 129 + rnd() % 2);
    for (size_t i = 0; i < ds; i++)
        x->dn_s[i] = (uint8_t)(rnd() % 256 ? 119 + rnd() % 3 : 129 + rnd() % 2);
    x->gu_bias = rand_bf16(E * 2 * I, 0.05f), x->dn_bias = rand_bf16(E * H, 0.05f);
    x->gu_b_d = dev_from(x->gu_b, gb), x->gu_s_d = dev_from(x->gu_s, gs);
    x->dn_b_d = dev_from(x->dn_b, db), x->dn_s_d = dev_from(x->dn_s, ds);
    x->gu_bias_d = dev_from(x->gu_bias, 2 * E * 2 * I),
    x->dn_bias_d = dev_from(x->dn_bias, 2 * E * H);
    int e = (int)E, h = (int)H, in = (int)I;
    x->gu_bt_d = dev_poisoned(cuda_mxfp4_tiled_blocks_bytes(e, 2 * in, h));
    x->gu_st_d = dev_poisoned(cuda_mxfp4_tiled_scales_bytes(e, 2 * in, h));
    x->dn_bt_d = dev_poisoned(cuda_mxfp4_tiled_blocks_bytes(e, h, in));
    x->dn_st_d = dev_poisoned(cuda_mxfp4_tiled_scales_bytes(e, h, in));
    CU(cuda_mxfp4_tile(x->gu_bt_d, x->gu_st_d, x->gu_b_d, x->gu_s_d, e, 2 * in, h, 0));
    CU(cuda_mxfp4_tile(x->dn_bt_d, x->dn_st_d, x->dn_b_d, x->dn_s_d, e, h, in, 0));
    CU(cudaDeviceSynchronize());
}

static void experts_free(experts *x) {
    free(x->gu_b), free(x->gu_s), free(x->dn_b), free(x->dn_s), free(x->gu_bias);
    free(x->dn_bias);
    cudaFree(x->gu_b_d), cudaFree(x->gu_s_d), cudaFree(x->dn_b_d), cudaFree(x->dn_s_d);
    cudaFree(x->gu_bias_d), cudaFree(x->dn_bias_d);
    cudaFree(x->gu_bt_d), cudaFree(x->gu_st_d), cudaFree(x->dn_bt_d), cudaFree(x->dn_st_d);
}

/* T tokens, each choosing top_k distinct experts among the first n_pick (n_pick small: many
 * tokens per expert, several 16-token chunks and partial tiles). */
static void check_moe_case(const experts *x, int T, int n_pick, int ver) {
    int E = C.n_experts, K = C.top_k, H = C.hidden, I = C.intermediate, S = T * K;
    int32_t *te = xmalloc(4 * (size_t)S), *es = xmalloc(4 * (size_t)(E + 1));
    int32_t *sl = xmalloc(4 * (size_t)S), *cnt = calloc(E, sizeof(int32_t));
    float *tw = xmalloc(4 * (size_t)S);
    for (int t = 0; t < T; t++) {
        float sum = 0;
        for (int k = 0; k < K; k++) {
            int e;
            bool dup;
            do {
                e = (int)(rnd() % (uint64_t)n_pick);
                dup = false;
                for (int j = 0; j < k; j++) dup |= te[t * K + j] == e;
            } while (dup);
            te[t * K + k] = e;
            sum += (tw[t * K + k] = 0.1f + (frand() + 1.0f));
        }
        for (int k = 0; k < K; k++) tw[t * K + k] /= sum;
    }
    for (int i = 0; i < S; i++) cnt[te[i]]++;
    es[0] = 0;
    for (int e = 0; e < E; e++) es[e + 1] = es[e] + cnt[e], cnt[e] = 0;
    for (int i = 0; i < S; i++) sl[es[te[i]] + cnt[te[i]]++] = i;
    uint16_t *xn = rand_bf16((size_t)T * H, 1.7f);
    float *xf = bf16_to_float(xn, (size_t)T * H);
    uint16_t *xn_d = dev_from(xn, 2 * (size_t)T * H);
    int32_t *es_d = dev_from(es, 4 * (size_t)(E + 1)), *sl_d = dev_from(sl, 4 * (size_t)S);
    float *tw_d = dev_from(tw, 4 * (size_t)S);
    uint16_t *act_d = dev_poisoned(2 * (size_t)S * I);
    float *y_d = dev_poisoned(4 * (size_t)S * H);
    const uint8_t *gub = ver >= 3 ? x->gu_bt_d : x->gu_b_d,
                  *gus = ver >= 3 ? x->gu_st_d : x->gu_s_d;
    const uint8_t *dnb = ver >= 3 ? x->dn_bt_d : x->dn_b_d,
                  *dns = ver >= 3 ? x->dn_st_d : x->dn_s_d;
    CU(cuda_moe_gate_up(act_d, xn_d, gub, gus, x->gu_bias_d, es_d, sl_d, T, K, E, I, H,
                        C.swiglu_limit, ver, 0));
    CU(cuda_moe_down(y_d, act_d, dnb, dns, x->dn_bias_d, es_d, sl_d, tw_d, T, K, E, H, I, ver, 0));
    uint16_t *act = host_from(act_d, 2 * (size_t)S * I);
    float *y = host_from(y_d, 4 * (size_t)S * H);
    /* CPU twin, expert by expert as ex_task: decode a row once, dot it with the expert's slots. */
    float *h = xmalloc(4 * (size_t)S * 2 * I), *aref = xmalloc(4 * (size_t)S * I);
    float *abf = xmalloc(4 * (size_t)S * I), *yref = xmalloc(4 * (size_t)S * H);
    float *row = xmalloc(4 * (size_t)(H > I ? H : I));
    for (int e = 0; e < E; e++)
        for (int r = 0; r < 2 * I && es[e + 1] > es[e]; r++) {
            size_t rr = (size_t)e * 2 * I + r;
            ops_mxfp4_row(row, x->gu_b + rr * (H / 32) * 16, x->gu_s + rr * (H / 32), H);
            for (int i = es[e]; i < es[e + 1]; i++)
                h[(size_t)sl[i] * 2 * I + r] =
                    ops_dot(row, xf + (size_t)(sl[i] / K) * H, H) + bf16_to_f32(x->gu_bias[rr]);
        }
    for (int s = 0; s < S; s++) {
        ops_swiglu(aref + (size_t)s * I, h + (size_t)s * 2 * I, I, C.swiglu_limit);
        for (int i = 0; i < I; i++) /* the GPU keeps act in bf16 between the GEMMs */
            abf[(size_t)s * I + i] = bf16_to_f32(f2bf(aref[(size_t)s * I + i]));
    }
    for (int e = 0; e < E; e++)
        for (int r = 0; r < H && es[e + 1] > es[e]; r++) {
            size_t rr = (size_t)e * H + r;
            ops_mxfp4_row(row, x->dn_b + rr * (I / 32) * 16, x->dn_s + rr * (I / 32), I);
            for (int i = es[e]; i < es[e + 1]; i++)
                yref[(size_t)sl[i] * H + r] =
                    tw[sl[i]] *
                    (ops_dot(row, abf + (size_t)sl[i] * I, I) + bf16_to_f32(x->dn_bias[rr]));
        }
    double us1, us2;
    TIME_US(us1, CU(cuda_moe_gate_up(act_d, xn_d, gub, gus, x->gu_bias_d, es_d, sl_d, T, K, E, I, H,
                                     C.swiglu_limit, ver, 0)));
    TIME_US(us2, CU(cuda_moe_down(y_d, act_d, dnb, dns, x->dn_bias_d, es_d, sl_d, tw_d, T, K, E, H,
                                  I, ver, 0)));
    int touched = 0;
    for (int e = 0; e < E; e++) touched += es[e + 1] > es[e];
    double gb1 = touched * (2.0 * I * H * 17 / 32) / (us1 * 1e3);
    double gb2 = touched * ((double)H * I * 17 / 32) / (us2 * 1e3);
    char l1[96], l2[96];
    snprintf(l1, sizeof(l1), "moe v%d gate_up+swiglu T=%d (%d exp)", ver, T, touched);
    snprintf(l2, sizeof(l2), "moe v%d down+weight T=%d", ver, T);
    compare_bf16(l1, act, aref, (size_t)S * I, 1e-2, us1);
    compare(l2, y, yref, (size_t)S * H, 1e-2, us2);
    printf("%-34s %.0f GB/s gate_up, %.0f GB/s down (MXFP4 weight bytes / time)\n", "", gb1, gb2);
    cudaFree(xn_d), cudaFree(es_d), cudaFree(sl_d), cudaFree(tw_d), cudaFree(act_d), cudaFree(y_d);
    free(te), free(es), free(sl), free(cnt), free(tw), free(xn), free(xf), free(act), free(y);
    free(h), free(aref), free(abf), free(yref), free(row);
}

/* ---- version 7 (small.cuh) against the version-6 kernels it replaces, bit for bit ---- */

/* Whether n bytes at two device addresses are the same bits, and, where every element must be
 * written (elem 2 or 4: its size), that none of the second's is still poison (all ones). */
static void same_bits(const char *name, const void *a_d, const void *b_d, size_t n, int elem,
                      double us) {
    uint8_t *a = host_from(a_d, n), *b = host_from(b_d, n);
    size_t diff = 0, unwritten = 0;
    for (size_t i = 0; i < n; i++) diff += a[i] != b[i];
    for (size_t i = 0; elem && i + elem <= n; i += elem) {
        bool ones = true;
        for (int k = 0; k < elem; k++) ones &= b[i + k] == 0xFF;
        unwritten += ones;
    }
    char d[112];
    snprintf(d, sizeof(d), "%zu of %zu bytes differ from version 6's, %zu unwritten  %8.1f us",
             diff, n, unwritten, us);
    verdict(name, diff == 0 && unwritten == 0, d);
    free(a), free(b);
}

/* Each expert's slots of e_slots in ascending order (router_group leaves them in no order). */
static void sort_slots(int32_t *sl, const int32_t *es, int E) {
    for (int e = 0; e < E; e++)
        for (int i = es[e] + 1; i < es[e + 1]; i++)
            for (int j = i; j > es[e] && sl[j] < sl[j - 1]; j--) {
                int32_t t = sl[j];
                sl[j] = sl[j - 1], sl[j - 1] = t;
            }
}

static void check_small(const uint16_t *table_d, const experts *xp, int T) {
    int H = C.hidden, nh = C.n_heads, nkv = C.n_kv_heads, D = C.head_dim, E = C.n_experts;
    int TK = C.top_k, I = C.intermediate, S = T * TK, bs = 16, nblocks = 64;
    int Q = nh * D, KV = nkv * D, N = Q + 2 * KV;
    float eps = C.rms_eps, inv_freq[256];
    float conc = ops_yarn_inv_freq(inv_freq, D, C.rope_theta, C.rope_factor, C.beta_fast,
                                   C.beta_slow, C.rope_orig_ctx, C.rope_truncate);
    int32_t pos[4], slot[4];
    for (int t = 0; t < T; t++) pos[t] = (int32_t)(rnd() % 131072), slot[t] = t * 37 + 5;
    float *x = xmalloc(4 * (size_t)T * H);
    for (size_t i = 0; i < (size_t)T * H; i++) x[i] = 3.0f * frand();
    uint16_t *g = rand_bf16(H, 1.0f), *qb = rand_bf16(N, 0.1f), *ob = rand_bf16(H, 0.1f);
    uint16_t *rb = rand_bf16(E, 0.5f), *att = rand_bf16((size_t)T * Q, 1.0f);
    uint16_t *act = rand_bf16((size_t)S * I, 1.0f);
    float *x_d = dev_from(x, 4 * (size_t)T * H), *inv_d = dev_from(inv_freq, 4 * D / 2);
    float *xa_d = dev_poisoned(4 * (size_t)T * H), *xb_d = dev_poisoned(4 * (size_t)T * H);
    uint16_t *g_d = dev_from(g, 2 * H), *qb_d = dev_from(qb, 2 * N), *ob_d = dev_from(ob, 2 * H);
    uint16_t *rb_d = dev_from(rb, 2 * E), *att_d = dev_from(att, 2 * (size_t)T * Q);
    uint16_t *act_d = dev_from(act, 2 * (size_t)S * I);
    int32_t *pos_d = dev_from(pos, 4 * T), *slot_d = dev_from(slot, 4 * T);
    uint16_t *xn_a = dev_poisoned(2 * (size_t)T * H), *xn_b = dev_poisoned(2 * (size_t)T * H);
    float *tmp_d = dev_poisoned(4 * (size_t)S * H);
    size_t cache = (size_t)nblocks * bs * KV, xbytes = 4 * (size_t)T * H;
    char name[80];
    double us;
    int split_was = cuda_small_split(0); /* the unsplit kernels first, bit for bit */
    int p_was = cuda_small_persist(0);   /* and q/k/v in waves */
#define RESET(dst) CU(cudaMemcpy(dst, x_d, xbytes, cudaMemcpyDeviceToDevice))

    /* q/k/v: norm, GEMV (the table's first rows), bias, RoPE, KV write */
    float *q_a = dev_poisoned(4 * (size_t)T * Q), *q_b = dev_poisoned(4 * (size_t)T * Q);
    uint16_t *k_a = dev_poisoned(2 * cache), *v_a = dev_poisoned(2 * cache);
    uint16_t *k_b = dev_poisoned(2 * cache), *v_b = dev_poisoned(2 * cache);
    RESET(xa_d);
    CU(cuda_rmsnorm(xn_a, xa_d, NULL, 0, NULL, g_d, T, H, eps, 0));
    CU(cuda_gemv_bf16(tmp_d, xn_a, table_d, T, N, H, 0));
    CU(cuda_qkv_rope(q_a, k_a, v_a, tmp_d, qb_d, pos_d, slot_d, inv_d, conc, T, nh, nkv, D, bs, 0));
#define QKV7()                                                                                     \
    cuda_qkv7(q_b, k_b, v_b, x_d, g_d, table_d, qb_d, pos_d, slot_d, inv_d, conc, T, H, nh, nkv,   \
              D, bs, eps, 0)
    CU(QKV7());
    TIME_US(us, CU(QKV7()));
    snprintf(name, sizeof(name), "v7 qkv7 T=%d: q", T);
    same_bits(name, q_a, q_b, 4 * (size_t)T * Q, 4, us);
    snprintf(name, sizeof(name), "v7 qkv7 T=%d: K and V caches", T);
    same_bits(name, k_a, k_b, 2 * cache, 0, 0);
    same_bits(name, v_a, v_b, 2 * cache, 0, 0);
    /* at one token on a grid that fits at once, looping (cuda_small_persist 2) or a pair a warp
     * with part of each row in shared memory (16): the same bits */
    for (int m = 2; T == 1 && m <= 17; m += m == 2 ? 14 : 1) { /* 17: 16 with x by bulk copy */
        int was = cuda_small_persist(m & ~1), b_was = cuda_small_bulk(m & 1);
        float *q_c = dev_poisoned(4 * (size_t)T * Q);
        uint16_t *k_c = dev_poisoned(2 * cache), *v_c = dev_poisoned(2 * cache);
#define QKV7C()                                                                                    \
    cuda_qkv7(q_c, k_c, v_c, x_d, g_d, table_d, qb_d, pos_d, slot_d, inv_d, conc, T, H, nh, nkv,   \
              D, bs, eps, 0)
        CU(QKV7C());
        TIME_US(us, CU(QKV7C()));
#undef QKV7C
        const char *form = m == 2    ? "resident grid"
                           : m == 16 ? "a pair a warp"
                                     : "a pair a warp, x by bulk copy";
        snprintf(name, sizeof(name), "v7 qkv7 T=1, %s: q", form);
        same_bits(name, q_b, q_c, 4 * (size_t)T * Q, 4, us);
        snprintf(name, sizeof(name), "v7 qkv7 T=1, %s: K and V caches", form);
        same_bits(name, k_b, k_c, 2 * cache, 0, 0);
        same_bits(name, v_b, v_c, 2 * cache, 0, 0);
        cudaFree(q_c), cudaFree(k_c), cudaFree(v_c);
        cuda_small_persist(was), cuda_small_bulk(b_was);
    }
    cudaFree(q_a), cudaFree(q_b), cudaFree(k_a), cudaFree(v_a), cudaFree(k_b), cudaFree(v_b);

    /* o_proj into the residual */
    RESET(xa_d);
    CU(cuda_gemv_bf16(tmp_d, att_d, table_d, T, H, Q, 0));
    CU(cuda_rmsnorm(xn_a, xa_d, tmp_d, 1, ob_d, g_d, T, H, eps, 0));
    RESET(xb_d);
    CU(cuda_gemv_res(xb_d, att_d, table_d, ob_d, T, H, Q, 0));
    TIME_US(us, CU(cuda_gemv_res(tmp_d, att_d, table_d, ob_d, T, H, Q, 0)));
    snprintf(name, sizeof(name), "v7 o_proj residual T=%d: x", T);
    same_bits(name, xa_d, xb_d, xbytes, 4, us);
    if (T == 1) { /* the split form: version 6's x to float rounding, each warp count */
        static const int ks[] = {2, 4, 8};
        cuda_small_split(1);
        int o_was = cuda_small_o_split(1);
        float *oa = host_from(xa_d, xbytes);
        for (int i = 0; i < 3; i++) {
            cuda_small_o_split(ks[i]);
            RESET(xb_d);
            CU(cuda_gemv_res(xb_d, att_d, table_d, ob_d, T, H, Q, 0));
            TIME_US(us, CU(cuda_gemv_res(tmp_d, att_d, table_d, ob_d, T, H, Q, 0)));
            float *ob = host_from(xb_d, xbytes);
            snprintf(name, sizeof(name), "v7 split o_proj residual T=1 (%d warps a row): x", ks[i]);
            compare(name, ob, oa, (size_t)H, 1e-5, us);
            free(ob);
            if (ks[i] == 4) { /* its input row by a bulk copy (cuda_small_bulk 8): the same bits */
                int b_was = cuda_small_bulk(8);
                float *xc_d = dev_poisoned(xbytes);
                RESET(xc_d);
                CU(cuda_gemv_res(xc_d, att_d, table_d, ob_d, T, H, Q, 0));
                TIME_US(us, CU(cuda_gemv_res(tmp_d, att_d, table_d, ob_d, T, H, Q, 0)));
                same_bits("v7 split o_proj residual T=1 (4 warps a row), in by bulk copy: x", xb_d,
                          xc_d, xbytes, 4, us);
                cudaFree(xc_d);
                cuda_small_bulk(b_was);
            }
        }
        free(oa);
        cuda_small_o_split(o_was);
        cuda_small_split(0);
    }

    /* router: norm, GEMV, top-k, grouping */
    float *lg_a = dev_poisoned(4 * (size_t)T * E), *lg_b = dev_poisoned(4 * (size_t)T * E);
    int32_t *te_a = dev_poisoned(4 * (size_t)S), *te_b = dev_poisoned(4 * (size_t)S);
    float *tw_a = dev_poisoned(4 * (size_t)S), *tw_b = dev_poisoned(4 * (size_t)S);
    int32_t *es_a = dev_poisoned(4 * (size_t)(E + 1)), *es_b = dev_poisoned(4 * (size_t)(E + 1));
    int32_t *sl_a = dev_poisoned(4 * (size_t)S), *sl_b = dev_poisoned(4 * (size_t)S);
    int *tk_d = tickets_new(1);
    const uint16_t *rw_d = table_d + (size_t)N * H; /* the table rows after q/k/v's */
    RESET(xa_d);
    CU(cuda_rmsnorm(xn_a, xa_d, NULL, 0, NULL, g_d, T, H, eps, 0));
    CU(cuda_router_gemv(lg_a, tk_d, xn_a, rw_d, rb_d, te_a, tw_a, es_a, sl_a, T, E, H, TK, 0));
#define ROUTER7()                                                                                  \
    cuda_router7(lg_b, tk_d, xn_b, x_d, g_d, rw_d, rb_d, te_b, tw_b, es_b, sl_b, T, E, H, eps, TK, \
                 0)
    CU(ROUTER7());
    TIME_US(us, CU(ROUTER7()));
    snprintf(name, sizeof(name), "v7 router7 T=%d: xn, logits", T);
    same_bits(name, xn_a, xn_b, 2 * (size_t)T * H, 2, us);
    same_bits(name, lg_a, lg_b, 4 * (size_t)T * E, 4, 0);
    snprintf(name, sizeof(name), "v7 router7 T=%d: choices", T);
    same_bits(name, te_a, te_b, 4 * (size_t)S, 4, 0);
    same_bits(name, tw_a, tw_b, 4 * (size_t)S, 4, 0);
    same_bits(name, es_a, es_b, 4 * (size_t)(E + 1), 4, 0);
    int32_t *es = host_from(es_b, 4 * (size_t)(E + 1)), *sa = host_from(sl_a, 4 * (size_t)S);
    int32_t *sb = host_from(sl_b, 4 * (size_t)S);
    sort_slots(sa, es, E), sort_slots(sb, es, E);
    snprintf(name, sizeof(name), "v7 router7 T=%d: grouping", T);
    verdict(name, !memcmp(sa, sb, 4 * (size_t)S), "each expert's slots as version 6's");
    /* on a cluster (cuda_small_trigger 2; no grouping at one token), its top-k in rounds or by
     * rank, a thread an expert (18) or four (50): the same bits */
    static const int rmask[] = {2, 18, 50, 19}; /* the last with x by bulk copy */
    for (int ri = 0; T == 1 && ri < 4; ri++) {
        int m = rmask[ri], was = cuda_small_trigger(m & ~1),
            b_was = cuda_small_bulk(ri == 3 ? 2 : 0);
        float *lg_c = dev_poisoned(4 * (size_t)E), *tw_c = dev_poisoned(4 * (size_t)S);
        int32_t *te_c = dev_poisoned(4 * (size_t)S);
        uint16_t *xn_c = dev_poisoned(2 * (size_t)H);
#define ROUTER7C()                                                                                 \
    cuda_router7(lg_c, tk_d, xn_c, x_d, g_d, rw_d, rb_d, te_c, tw_c, NULL, NULL, T, E, H, eps, TK, \
                 0)
        CU(ROUTER7C());
        TIME_US(us, CU(ROUTER7C()));
#undef ROUTER7C
        const char *form = m == 2    ? "cluster"
                           : m == 18 ? "cluster, top-k by rank"
                           : m == 50 ? "cluster, top-k by rank four threads an expert"
                                     : "cluster, top-k by rank, x by bulk copy";
        snprintf(name, sizeof(name), "v7 router7 T=1, %s: xn, logits", form);
        same_bits(name, xn_a, xn_c, 2 * (size_t)H, 2, us);
        same_bits(name, lg_a, lg_c, 4 * (size_t)E, 4, 0);
        snprintf(name, sizeof(name), "v7 router7 T=1, %s: choices", form);
        same_bits(name, te_a, te_c, 4 * (size_t)S, 4, 0);
        same_bits(name, tw_a, tw_c, 4 * (size_t)S, 4, 0);
        cudaFree(lg_c), cudaFree(tw_c), cudaFree(te_c), cudaFree(xn_c);
        cuda_small_trigger(was), cuda_small_bulk(b_was);
    }
    tickets_done("  router7 counter reset", tk_d, 1);

    /* down projection of the chosen experts into the residual */
    float *y_d = dev_poisoned(4 * (size_t)S * H);
    RESET(xa_d);
    CU(cuda_moe_down(y_d, act_d, xp->dn_bt_d, xp->dn_st_d, xp->dn_bias_d, es_b, sl_b, tw_b, T, TK,
                     E, H, I, 6, 0));
    CU(cuda_rmsnorm(xn_a, xa_d, y_d, TK, NULL, g_d, T, H, eps, 0));
#define DOWN7(dst)                                                                                 \
    cuda_moe_down_res(dst, act_d, xp->dn_bt_d, xp->dn_st_d, xp->dn_bias_d, te_b, tw_b, T, TK, H,   \
                      I, 0)
    RESET(xb_d);
    CU(DOWN7(xb_d));
    TIME_US(us, CU(DOWN7(tmp_d)));
    snprintf(name, sizeof(name), "v7 moe down residual T=%d: x", T);
    same_bits(name, xa_d, xb_d, xbytes, 4, us);
    /* act staged by each warp for itself (cuda_small_rows 4): the same bits, split or not */
    for (int sp = 0; sp <= 1; sp++) {
        int sp_was = cuda_small_split(sp), r_was = cuda_small_rows(1);
        float *xc_d = dev_poisoned(xbytes);
        RESET(xb_d);
        CU(DOWN7(xb_d));
        cuda_small_rows(5);
        RESET(xc_d);
        CU(DOWN7(xc_d));
        TIME_US(us, CU(DOWN7(tmp_d)));
        snprintf(name, sizeof(name), "v7 %sdown residual T=%d, rows a warp's own: x",
                 sp ? "split " : "", T);
        same_bits(name, xb_d, xc_d, xbytes, 4, us);
        if (sp && T == 1) { /* act rows by bulk copies (cuda_small_bulk 4); 8 rows a CTA
                             * (cuda_small_rows bit 16), alone and with them: the same bits */
            static const int bk[] = {4, 0, 4}, rw[] = {1, 17, 17};
            static const char *const what[] = {"act by bulk copy", "8 rows a CTA",
                                               "8 rows a CTA, act by bulk copy"};
            for (int f = 0; f < 3; f++) {
                int b_was = cuda_small_bulk(bk[f]);
                cuda_small_rows(rw[f]);
                RESET(xc_d);
                CU(DOWN7(xc_d));
                TIME_US(us, CU(DOWN7(tmp_d)));
                snprintf(name, sizeof(name), "v7 split down residual T=1, %s: x", what[f]);
                same_bits(name, xb_d, xc_d, xbytes, 4, us);
                cuda_small_bulk(b_was);
            }
        }
        cudaFree(xc_d);
        cuda_small_rows(r_was), cuda_small_split(sp_was);
    }

    /* the split form of the expert kernels (cuda_small_split): version 6's results to float
     * rounding (only the order of the parts' sums differs) */
    cuda_small_split(1);
    RESET(xb_d);
    CU(DOWN7(xb_d));
    TIME_US(us, CU(DOWN7(tmp_d)));
    float *xa = host_from(xa_d, xbytes), *xb = host_from(xb_d, xbytes);
    snprintf(name, sizeof(name), "v7 split down residual T=%d: x", T);
    compare(name, xb, xa, (size_t)T * H, 1e-5, us);
    free(xa), free(xb);
    uint16_t *ua_d = dev_poisoned(2 * (size_t)S * I), *ub_d = dev_poisoned(2 * (size_t)S * I);
    CU(cuda_moe_gate_up(ua_d, xn_b, xp->gu_bt_d, xp->gu_st_d, xp->gu_bias_d, es_b, sl_b, T, TK, E,
                        I, H, C.swiglu_limit, 6, 0));
#define GATE7(dst)                                                                                 \
    cuda_moe_gate_up_small(dst, xn_b, xp->gu_bt_d, xp->gu_st_d, xp->gu_bias_d, te_b, es_b, sl_b,   \
                           T, TK, E, I, H, C.swiglu_limit, 0)
    CU(GATE7(ub_d));
    uint16_t *ua = host_from(ua_d, 2 * (size_t)S * I), *ub = host_from(ub_d, 2 * (size_t)S * I);
    TIME_US(us, CU(GATE7(ua_d)));
    float *uaf = bf16_to_float(ua, (size_t)S * I);
    snprintf(name, sizeof(name), "v7 split gate_up T=%d: act", T);
    compare_bf16(name, ub, uaf, (size_t)S * I, 1e-2, us);
    /* its token rows from L2 instead of through L1 (cuda_small_rows 0): the same bits */
    int l1_was = cuda_small_rows(0);
    uint16_t *uc_d = dev_poisoned(2 * (size_t)S * I);
    CU(GATE7(uc_d));
    TIME_US(us, CU(GATE7(ua_d)));
    snprintf(name, sizeof(name), "v7 split gate_up T=%d, rows from L2: act", T);
    same_bits(name, ub_d, uc_d, 2 * (size_t)S * I, 2, us);
    cuda_small_rows(l1_was);
    if (T == 1) { /* its token row by a bulk copy (cuda_small_bulk 32): the same bits */
        int b_was = cuda_small_bulk(32);
        CU(cudaMemset(uc_d, 0xFF, 2 * (size_t)S * I));
        CU(GATE7(uc_d));
        TIME_US(us, CU(GATE7(ua_d)));
        same_bits("v7 split gate_up T=1, row by bulk copy: act", ub_d, uc_d, 2 * (size_t)S * I, 2,
                  us);
        cuda_small_bulk(b_was);
    }
    cudaFree(uc_d);
    cuda_small_split(split_was);
    cuda_small_persist(p_was);
    cudaFree(ua_d), cudaFree(ub_d), free(ua), free(ub), free(uaf);
#undef GATE7
#undef RESET
#undef QKV7
#undef ROUTER7
#undef DOWN7
    cudaFree(lg_a), cudaFree(lg_b), cudaFree(te_a), cudaFree(te_b), cudaFree(tw_a);
    cudaFree(tw_b), cudaFree(es_a), cudaFree(es_b), cudaFree(sl_a), cudaFree(sl_b);
    cudaFree(y_d), cudaFree(x_d), cudaFree(inv_d), cudaFree(xa_d);
    cudaFree(xb_d), cudaFree(g_d), cudaFree(qb_d), cudaFree(ob_d), cudaFree(rb_d);
    cudaFree(att_d), cudaFree(act_d), cudaFree(pos_d), cudaFree(slot_d), cudaFree(xn_a);
    cudaFree(xn_b), cudaFree(tmp_d);
    free(x), free(g), free(qb), free(ob), free(rb), free(att), free(act), free(es), free(sa);
    free(sb);
}

/* ---- arg-max ---- */

static void check_argmax(void) {
    int n = 6, V = C.vocab;
    float *l = xmalloc(4 * (size_t)n * V);
    for (size_t i = 0; i < (size_t)n * V; i++) l[i] = 10.0f * frand();
    l[(size_t)1 * V + 777] = 50.0f, l[(size_t)1 * V + 5] = 50.0f;       /* tie: lower id wins */
    for (int i = 0; i < V; i++) l[(size_t)2 * V + i] = -INFINITY;       /* all -inf: 0 */
    l[(size_t)3 * V + 0] = NAN, l[(size_t)3 * V + V - 1] = 60.0f;       /* NaN never wins */
    l[(size_t)4 * V + 100000] = 70.0f, l[(size_t)4 * V + 3000] = 70.0f; /* tie across blocks */
    for (int i = 0; i < V; i++) l[(size_t)5 * V + i] = -1.0f - frand(); /* the max is a zero: */
    l[(size_t)5 * V + 2500] = 0.0f, l[(size_t)5 * V + 1200] = -0.0f;    /* -0 first, the same */
    float *l_d = dev_from(l, 4 * (size_t)n * V);
    int32_t *o_d = dev_poisoned(4 * (size_t)n);
    CU(cuda_argmax(o_d, l_d, n, V, 0));
    int32_t *o = host_from(o_d, 4 * (size_t)n);
    int bad = 0;
    for (int r = 0; r < n; r++) bad += o[r] != sampling_argmax(l + (size_t)r * V, V);
    double us;
    TIME_US(us, CU(cuda_argmax(o_d, l_d, n, V, 0)));
    char d[96];
    snprintf(d, sizeof(d), "%d of %d rows differ from sampling_argmax  %.1f us", bad, n, us);
    verdict("argmax (ties, -inf, NaN)", bad == 0, d);

    /* the same rows through cuda_sample_split's arg-max (rows NULL), every row over its CTAs */
    void *scr_d;
    CU(cudaMalloc(&scr_d, cuda_sample_split_scratch()));
    int *cnt_d = tickets_new(2 * CUDA_SAMPLE_SPLIT_ROWS);
    int32_t *o2_d = dev_poisoned(4 * (size_t)n);
    CU(cuda_sample_split(o2_d, l_d, NULL, NULL, n, V, 0, scr_d, cnt_d, 0));
    int32_t *o2 = host_from(o2_d, 4 * (size_t)n);
    bad = 0;
    for (int r = 0; r < n; r++) bad += o2[r] != sampling_argmax(l + (size_t)r * V, V);
    double us1;
    TIME_US(us1, CU(cuda_sample_split(o2_d, l_d, NULL, NULL, 1, V, 0, scr_d, cnt_d, 0)));
    TIME_US(us, CU(cuda_argmax(o2_d, l_d, 1, V, 0)));
    snprintf(d, sizeof(d), "%d of %d rows differ  one row %.1f us (a CTA a row %.1f)", bad, n, us1,
             us);
    verdict("argmax split over CTAs", bad == 0, d);
    tickets_done("argmax split: counters", cnt_d, 2 * CUDA_SAMPLE_SPLIT_ROWS);
    cudaFree(l_d), cudaFree(o_d), cudaFree(o2_d), cudaFree(scr_d);
    free(l), free(o), free(o2);
}

/* ---- sampling on the device (cuda_sample) against sampling_pick ---- */

/* One logits row of the given kind: 0 flat (uniform, scale 10), 1 a few strong tokens over a
 * bell-shaped tail, 2 a wide bell (scale 8: a small nucleus from the tail itself), 3 integers
 * in [-4, 4] (large groups of equal logits: ties broken by id). NaN and -inf sprinkled in. */
static void sample_row(float *l, int V, int kind) {
    for (int i = 0; i < V; i++) {
        float g = frand() + frand() + frand();
        switch (kind) {
        case 0:
            l[i] = 10.0f * frand();
            break;
        case 1:
            l[i] = 2.5f * g;
            break;
        case 2:
            l[i] = 8.0f * g;
            break;
        default:
            l[i] = (float)(int)lrintf(4.0f * frand());
            break;
        }
    }
    if (kind == 1)
        for (int j = 0; j < 20; j++) l[rnd() % (uint64_t)V] = 20.0f + frand();
    for (int j = 0; j < 50; j++) l[rnd() % (uint64_t)V] = NAN;
    for (int j = 0; j < 50; j++) l[rnd() % (uint64_t)V] = -INFINITY;
}

static void check_sampling(void) {
    int V = C.vocab, n = 256;
    size_t bytes = 4 * (size_t)n * V;
    float *l = xmalloc(bytes), *lb = xmalloc(bytes);
    cuda_sample_row *rows = xmalloc(sizeof(cuda_sample_row) * n);
    int32_t *bans = xmalloc(4 * (size_t)n * 4);
    mg_sampler *sm;
    if (sampler_create(V, &sm)) exit(2);
    float *l_d;
    cuda_sample_row *rows_d;
    int32_t *bans_d, *o_d;
    CU(cudaMalloc((void **)&l_d, bytes));
    CU(cudaMalloc((void **)&rows_d, sizeof(cuda_sample_row) * n));
    CU(cudaMalloc((void **)&bans_d, 4 * (size_t)n * 4));
    o_d = dev_poisoned(4 * (size_t)n);
    static const float temps[4] = {0.0f, 0.7f, 1.0f, 1.3f}, tps[3] = {1.0f, 0.9f, 0.5f};
    static const int ks[5] = {0, 1, 50, 1000, 2048};
    int total = 0, same = 0, host = 0, bad_host = 0, mism = 0;
    int by_path[4] = {0}, by_path_n[4] = {0}; /* greedy, plain, top_k, top_p alone */
    /* cuda_sample_split on the same rows, CUDA_SAMPLE_SPLIT_ROWS at a time: the same tokens for
     * greedy and plain rows, -1 for the others */
    void *scr_d;
    CU(cudaMalloc(&scr_d, cuda_sample_split_scratch()));
    int *cnt_d = tickets_new(2 * CUDA_SAMPLE_SPLIT_ROWS);
    int32_t *o2_d = dev_poisoned(4 * (size_t)n);
    int sp_same = 0, sp_taken = 0, sp_back = 0, sp_bad = 0;
    for (int round = 0; round < 3; round++) {
        int nb = 0;
        for (int r = 0; r < n; r++) {
            int c = r + round * n;
            float *row = l + (size_t)r * V;
            sample_row(row, V, c % 4);
            if (c == 5) /* every entry -inf but one NaN */
                for (int i = 0; i < V; i++) row[i] = i == 7 ? NAN : -INFINITY;
            if (c == 9) /* every entry -inf */
                for (int i = 0; i < V; i++) row[i] = -INFINITY;
            cuda_sample_row p = {temps[(c / 4) % 4],
                                 tps[(c / 16) % 3],
                                 ks[(c / 48) % 5],
                                 CUDA_SAMPLE_DEVICE,
                                 nb,
                                 0,
                                 rnd(),
                                 rnd() % 100000};
            if (c % 7 == 0) p.temperature = 1.0f, p.top_p = 1.0f, p.top_k = 0; /* the default */
            if (c == 13) /* 1 / T overflows: every weight 0, so the arg-max */
                p.temperature = 1e-39f, p.top_p = 1.0f, p.top_k = 0;
            if (c == 11) p.mode = CUDA_SAMPLE_HOST; /* -1 from both */
            if (c % 5 == 0) {                       /* banned: the row's best id and three others */
                bans[nb++] = sampling_argmax(row, V);
                for (int j = 0; j < 3; j++) bans[nb++] = (int32_t)(rnd() % (uint64_t)V);
                p.n_banned = 4;
            }
            rows[r] = p;
        }
        memcpy(lb, l, bytes);
        for (int r = 0; r < n; r++)
            for (int j = 0; j < rows[r].n_banned; j++)
                lb[(size_t)r * V + bans[rows[r].ban_off + j]] = -INFINITY;
        CU(cudaMemcpy(l_d, l, bytes, cudaMemcpyHostToDevice));
        CU(cudaMemcpy(rows_d, rows, sizeof(cuda_sample_row) * n, cudaMemcpyHostToDevice));
        CU(cudaMemcpy(bans_d, bans, 4 * (size_t)(nb ? nb : 1), cudaMemcpyHostToDevice));
        CU(cudaMemset(o_d, 0xFF, 4 * (size_t)n));
        CU(cuda_sample(o_d, l_d, rows_d, bans_d, n, V, 0));
        int32_t *o = host_from(o_d, 4 * (size_t)n);
        CU(cudaMemcpy(l_d, l, bytes, cudaMemcpyHostToDevice)); /* before cuda_sample's bans */
        CU(cudaMemset(o2_d, 0x7F, 4 * (size_t)n)); /* an unwritten row: neither a token nor -1 */
        for (int r = 0; r < n; r += CUDA_SAMPLE_SPLIT_ROWS) {
            int k = n - r < CUDA_SAMPLE_SPLIT_ROWS ? n - r : CUDA_SAMPLE_SPLIT_ROWS, plain = 0;
            for (int i = 0; i < k; i++) plain |= cuda_sample_kind(&rows[r + i], V) == 1;
            CU(cuda_sample_split(o2_d + r, l_d + (size_t)r * V, rows_d + r, bans_d, k, V, plain,
                                 scr_d, cnt_d, 0));
        }
        int32_t *o2 = host_from(o2_d, 4 * (size_t)n);
        for (int r = 0; r < n; r++) {
            const cuda_sample_row *p = &rows[r];
            mg_sampling sp = {p->temperature, p->top_p, p->top_k, p->seed};
            int32_t want = sampling_pick(sm, lb + (size_t)r * V, &sp, p->counter);
            bool greedy = sp.temperature <= 0.0f || sp.top_k == 1;
            int path = greedy ? 0 : sp.top_k > 0 ? 2 : (sp.top_p > 0 && sp.top_p < 1) ? 3 : 1;
            total++;
            by_path_n[path]++;
            if (cuda_sample_kind(p, V) <= 1) {
                sp_taken++;
                if (o2[r] == want) {
                    sp_same++;
                } else if (sp_bad++ < 8) {
                    printf("  split sampling mismatch: T %.2f bans %d: gpu %d host %d\n",
                           sp.temperature, p->n_banned, o2[r], want);
                }
            } else {
                sp_back += o2[r] == -1;
                sp_bad += o2[r] != -1;
            }
            if (o[r] == -1) {
                host++;
                /* only a nucleus over 2048 entries (or a row for the host) may go back */
                bad_host += path != 3 && p->mode == CUDA_SAMPLE_DEVICE;
            } else if (o[r] == want) {
                same++;
                by_path[path]++;
            } else {
                if (mism++ < 8)
                    printf("  sampling mismatch: kind %d T %.2f top_k %d top_p %.2f bans %d: "
                           "gpu %d host %d\n",
                           (r + round * n) % 4, sp.temperature, sp.top_k, sp.top_p, p->n_banned,
                           o[r], want);
            }
        }
        free(o), free(o2);
    }
    char d[200];
    snprintf(d, sizeof(d), "%d greedy or plain rows: %d identical; %d of %d others to host",
             sp_taken, sp_same, sp_back, total - sp_taken);
    verdict("sampling split over CTAs", sp_bad == 0 && sp_same == sp_taken, d);
    tickets_done("sampling split: counters", cnt_d, 2 * CUDA_SAMPLE_SPLIT_ROWS);
    snprintf(d, sizeof(d),
             "%d rows: %d identical (greedy %d/%d, plain %d/%d, top_k %d/%d, top_p %d/%d), "
             "%d differ, %d to host",
             total, same, by_path[0], by_path_n[0], by_path[1], by_path_n[1], by_path[2],
             by_path_n[2], by_path[3], by_path_n[3], mism, host);
    verdict("sampling vs sampling_pick", mism == 0 && bad_host == 0, d);

    /* time at 256 rows, one parameter set at a time, on bell-shaped rows (kind 2) */
    for (int r = 0; r < n; r++) sample_row(l + (size_t)r * V, V, 2);
    CU(cudaMemcpy(l_d, l, bytes, cudaMemcpyHostToDevice));
    static const struct {
        const char *name;
        float t, tp;
        int k;
    } sets[] = {{"greedy", 0.0f, 1.0f, 0},
                {"T 1.0", 1.0f, 1.0f, 0},
                {"T 1.0 top_k 50", 1.0f, 1.0f, 50},
                {"T 1.0 top_p 0.9", 1.0f, 0.9f, 0},
                {"T 0.7 top_k 1000 top_p 0.5", 0.7f, 0.5f, 1000}};
    for (size_t si = 0; si < sizeof(sets) / sizeof(sets[0]); si++) {
        for (int r = 0; r < n; r++)
            rows[r] = (cuda_sample_row){sets[si].t, sets[si].tp, sets[si].k, CUDA_SAMPLE_DEVICE,
                                        0,          0,           rnd(),      (uint64_t)r};
        CU(cudaMemcpy(rows_d, rows, sizeof(cuda_sample_row) * n, cudaMemcpyHostToDevice));
        double us;
        TIME_US(us, CU(cuda_sample(o_d, l_d, rows_d, bans_d, n, V, 0)));
        int32_t *o = host_from(o_d, 4 * (size_t)n);
        int back = 0;
        for (int r = 0; r < n; r++) back += o[r] == -1;
        /* the host's cost for the same rows: copy every row back, then sampling_pick */
        double h0 = (double)clock() / CLOCKS_PER_SEC;
        CU(cudaMemcpy(lb, l_d, bytes, cudaMemcpyDeviceToHost));
        for (int r = 0; r < n; r++) {
            mg_sampling sp = {rows[r].temperature, rows[r].top_p, rows[r].top_k, rows[r].seed};
            sampling_pick(sm, lb + (size_t)r * V, &sp, rows[r].counter);
        }
        double hms = ((double)clock() / CLOCKS_PER_SEC - h0) * 1000.0;
        printf("sampling 256 rows x %d, %-27s %8.3f ms on the GPU (%d to host); host copy + "
               "sampling_pick %.1f ms\n",
               V, sets[si].name, us / 1000.0, back, hms);
        free(o);
        if (si < 2) { /* one row, as a single sequence's step: a CTA, then split over CTAs */
            int *c1 = tickets_new(2 * CUDA_SAMPLE_SPLIT_ROWS);
            double u1, u2;
            TIME_US(u1, CU(cuda_sample(o_d, l_d, rows_d, bans_d, 1, V, 0)));
            TIME_US(u2,
                    CU(cuda_sample_split(o_d, l_d, rows_d, bans_d, 1, V, si == 1, scr_d, c1, 0)));
            printf("sampling 1 row, %-27s %8.1f us a CTA a row, %8.1f us split over CTAs\n",
                   sets[si].name, u1, u2);
            cudaFree(c1);
        }
    }
    sampler_destroy(sm);
    cudaFree(l_d), cudaFree(rows_d), cudaFree(bans_d), cudaFree(o_d), cudaFree(o2_d);
    cudaFree(scr_d);
    free(l), free(lb), free(rows), free(bans);
}

/* ---- whole model: a reference forward in either precision ---- */

static double rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d, den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* ---- whole model against the references and the CPU backend ---- */

typedef struct seq {
    int ctx;
    int32_t blocks[64];
    int32_t toks[1024];
    int n_toks;
} seq;

typedef struct model_run {
    mg_backend *cpu, *gpu;
    mg_backend *gw; /* the same GPU backend with the sliding layers in a window pool, or NULL */
    cuda_ref *r32, *r16;
    int agree16, agree32, total, flips, near_tie;
} model_run;

/* A step over the listed (sequence, new tokens) pairs; decode pairs (1 token, generation) must
 * come first. The GPU step runs twice on the same batch (it rewrites the same KV slots with the
 * same values): the two must give the same bits, or something in the step races. Its logits
 * are then held to the bf16 reference (tight), the float32 reference to the CPU backend (the
 * reference's own check), and the GPU's distance from the CPU backend to what bf16 rounding
 * alone gives. */
static void model_step(model_run *mr, seq *sq, const int *which, const int *n_new, int n,
                       int n_decode, const char *label) {
    int T = 0;
    for (int i = 0; i < n; i++) T += n_new[i];
    int32_t *tok = xmalloc(4 * (size_t)T), *pos = xmalloc(4 * (size_t)T),
            *tseq = xmalloc(4 * (size_t)T);
    int32_t st[16], sl[16], sc[16], bt[16 * 64], rows[16], lseq[16];
    int t = 0;
    for (int i = 0; i < n; i++) {
        seq *s = &sq[which[i]];
        st[i] = t, sl[i] = n_new[i], sc[i] = s->ctx + n_new[i];
        memcpy(bt + i * 64, s->blocks, sizeof(s->blocks));
        for (int j = 0; j < n_new[i]; j++, t++)
            tok[t] = s->toks[s->ctx + j], pos[t] = s->ctx + j, tseq[t] = i;
        rows[i] = t - 1, lseq[i] = i;
    }
    mg_batch b = {.n_tokens = T,
                  .n_seqs = n,
                  .n_decode = n_decode,
                  .n_prefill_tokens = T - n_decode,
                  .tokens = tok,
                  .positions = pos,
                  .token_seq = tseq,
                  .seq_start = st,
                  .seq_len = sl,
                  .seq_ctx = sc,
                  .block_table = bt,
                  .max_blocks = 64,
                  .n_logits = n,
                  .logits_rows = rows,
                  .logits_seq = lseq};
    int V = mr->cpu->vocab;
    size_t nv = (size_t)n * V;
    float *lc = xmalloc(4 * nv), *lg = xmalloc(4 * nv), *lg2 = xmalloc(4 * nv);
    float *l32 = xmalloc(4 * nv), *l16 = xmalloc(4 * nv);
    for (size_t i = 0; i < nv; i++) lg[i] = lg2[i] = NAN;
    mg_status e1 = mr->cpu->ops->forward(mr->cpu, &b, lc);
    mg_status e2 = e1 ? e1 : mr->gpu->ops->forward(mr->gpu, &b, lg);
    mg_status e3 = e2 ? e2 : mr->gpu->ops->forward(mr->gpu, &b, lg2);
    /* With a window pool: the sliding layers' blocks (fixed ids seq * 64 + k) only from the
     * step's window on, -1 below it; the logits must be the single pool's, bit for bit. */
    float *lw = NULL;
    int32_t wt[16 * 64];
    mg_status ew = MG_OK;
    if (!e3 && mr->gw) {
        int W = mr->r16->m->cfg.sliding_window, bs = 16;
        for (int i = 0; i < n; i++) {
            int lo = sq[which[i]].ctx - W + 1;
            for (int k = 0; k < 64; k++)
                wt[i * 64 + k] = (k + 1) * bs - 1 >= lo && k * bs < sc[i] ? which[i] * 64 + k : -1;
        }
        mg_batch bw = b;
        bw.window_table = wt;
        lw = xmalloc(4 * nv);
        for (size_t i = 0; i < nv; i++) lw[i] = NAN;
        ew = mr->gw->ops->forward(mr->gw, &bw, lw);
    }
    const mg_model_config *c = &mr->r16->m->cfg;
    int32_t *routes = xmalloc(sizeof(int32_t) * c->n_layers * T * c->top_k);
    mg_status e4 = e3 ? e3 : cuda_backend_routes(mr->gpu, T, routes);
    if (e1 || e2 || e3 || e4) {
        verdict(label, false, mg_err_msg());
    } else {
        cuda_ref_forward(mr->r32, &b, NULL, l32);
        cuda_ref_forward(mr->r16, &b, routes, l16);
        /* the GPU against the reference of its own precision, on the GPU's expert choices */
        compare(label, lg, l16, nv, 1e-2, 0);
        char d[200];
        snprintf(d, sizeof(d),
                 "%d of %d differ from the reference's own, by at most %.2e in router logit "
                 "(tol 5e-02)",
                 mr->r16->n_forced, c->n_layers * T, mr->r16->worst_gap);
        verdict("  gpu's expert choices", mr->r16->worst_gap <= 5e-2f, d);
        size_t diff = 0;
        for (size_t i = 0; i < nv; i++) diff += memcmp(&lg[i], &lg2[i], 4) != 0;
        if (mr->gw) {
            size_t wdiff = 0;
            for (size_t i = 0; !ew && i < nv; i++) wdiff += memcmp(&lg[i], &lw[i], 4) != 0;
            snprintf(d, sizeof(d), "%s%zu of %zu logits differ from the single pool's",
                     ew ? mg_err_msg() : "", wdiff, nv);
            verdict("  sliding layers in a window pool, same bits", !ew && wdiff == 0, d);
        }
        int on_rows, flips = cuda_ref_route_diff(mr->r32, mr->r16, &b, &on_rows);
        mr->flips += flips;
        double e_ref = rel_err(l32, lc, nv), e_bf = rel_err(l16, lc, nv),
               e_gpu = rel_err(lg, lc, nv);
        snprintf(d, sizeof(d), "%zu of %zu logits differ between two runs of the step", diff, nv);
        verdict("  same step again, same bits", diff == 0, d);
        snprintf(d, sizeof(d), "rel_err %.3e (tol 1e-05)", e_ref);
        verdict("  float32 reference vs cpu backend", e_ref <= 1e-5, d);
        /* bf16 rounding alone (the bf16 reference) may move the logits this far from float32;
         * a GPU that is right sits as close, up to its own small distance from that reference */
        double lim = e_bf * 1.5 + 5e-3;
        if (lim < 2e-2) lim = 2e-2;
        snprintf(d, sizeof(d),
                 "rel_err %.3e, bf16 rounding alone %.3e (limit %.1e); it flipped %d routing "
                 "choices, %d on logits rows",
                 e_gpu, e_bf, lim, flips, on_rows);
        verdict("  gpu vs float32 cpu backend", e_gpu <= lim, d);
        for (int i = 0; i < n; i++) {
            const float *r16 = l16 + (size_t)i * V;
            int a = sampling_argmax(lc + (size_t)i * V, V),
                g = sampling_argmax(lg + (size_t)i * V, V), h = sampling_argmax(r16, V);
            /* a different greedy token is fine at a near-tie of the reference's logits */
            mr->agree32 += a == g, mr->total++;
            mr->agree16 += h == g, mr->near_tie += h != g && r16[g] >= r16[h] - 2e-2f;
            seq *s = &sq[which[i]];
            if (s->ctx + n_new[i] == s->n_toks) s->toks[s->n_toks++] = a; /* CPU's greedy token */
        }
    }
    for (int i = 0; i < n; i++) sq[which[i]].ctx += n_new[i];
    free(tok), free(pos), free(tseq), free(lc), free(lg), free(lg2), free(l32), free(l16);
    free(routes), free(lw);
}

/* pdl_max_tokens of the plain backend in check_model (the worker's per-step choice); the
 * window-pool backend keeps 0, and the two must still agree bit for bit. */
static int model_pdl_max_tokens;

/* --split: cuda_small_split for the whole-model checks, -1 the backend's default (on);
 * check_small tries both forms itself. */
static int model_split = -1;

/* The same prompts for every call with the same seed, so that the kernel versions and the
 * graph path see the same data and their results line up step by step. */
static void check_model(const char *dir, int version, bool graphs, uint64_t seed) {
    cpu_backend_opts co = {.num_blocks = 256, .block_size = 16, .max_tokens = 512, .threads = 0};
    cuda_backend_opts go = {.num_blocks = 256,
                            .block_size = 16,
                            .max_tokens = 512,
                            .max_seqs = 16,
                            .max_ctx = 1024,
                            .kernel_version = version,
                            .cuda_graphs = graphs,
                            .pdl_max_tokens = model_pdl_max_tokens};
    model_run mr = {0};
    mg_model *m = NULL;
    if (model_split >= 0) cuda_small_split(model_split);
    mg_status st = cpu_backend_open(dir, &co, &mr.cpu);
    if (!st) st = cuda_backend_open(dir, &go, &mr.gpu);
    if (!st && version >= 3) { /* the window pool: 3 sequences' blocks at fixed ids */
        cuda_backend_opts wo = go;
        wo.window_pool = true;
        wo.pdl_max_tokens = 0;
        st = cuda_backend_open(dir, &wo, &mr.gw);
        if (!st && mr.gw->window_blocks < 3 * 64)
            st = MG_ERRF(MG_EINVAL, "window pool of %d blocks, the check needs %d",
                         mr.gw->window_blocks, 3 * 64);
    }
    /* the window-pool backend's graphs captured up front (as the worker does), mr.gpu's on
     * each bucket's first step: their logits must still agree bit for bit */
    if (!st && mr.gw) st = cuda_backend_capture_graphs(mr.gw);
    if (!st) st = model_load(dir, &m);
    if (!st) st = cuda_backend_trace_routes(mr.gpu, true);
    if (st) {
        verdict("model: open", false, mg_err_msg());
        if (mr.cpu) mr.cpu->ops->destroy(mr.cpu);
        if (mr.gpu) mr.gpu->ops->destroy(mr.gpu);
        if (mr.gw) mr.gw->ops->destroy(mr.gw);
        if (m) model_destroy(m);
        return;
    }
    mr.r32 = cuda_ref_create(m, false, 256, 16, 512, 1024);
    mr.r16 = cuda_ref_create(m, true, 256, 16, 512, 1024);
    if (!mr.r32 || !mr.r16) exit(2);
    uint64_t saved = rng_state;
    rng_state = seed;
    static seq sq[3];
    int perm[256];
    for (int i = 0; i < 256; i++) perm[i] = i;
    for (int i = 255; i > 0; i--) {
        int j = (int)(rnd() % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    int plen[3] = {150, 20, 300};
    for (int s = 0; s < 3; s++) {
        sq[s].ctx = 0, sq[s].n_toks = plen[s];
        for (int k = 0; k < 64; k++) sq[s].blocks[k] = perm[s * 64 + k];
        for (int i = 0; i < plen[s]; i++)
            sq[s].toks[i] = (int32_t)(rnd() % (uint64_t)mr.cpu->vocab);
    }
    rng_state = saved;
    { /* two prefill chunks */
        int w[] = {0, 1}, nn[] = {100, 20};
        model_step(&mr, sq, w, nn, 2, 0, "model: prefill chunks 100 + 20");
    }
    { /* a decode, then the rest of a prompt and a third prompt's first chunk */
        int w[] = {1, 0, 2}, nn[] = {1, 50, 200};
        model_step(&mr, sq, w, nn, 3, 1, "model: 1 decode + chunks 50, 200");
    }
    { /* the third prompt's last chunk beside two decodes */
        int w[] = {0, 1, 2}, nn[] = {1, 1, 100};
        model_step(&mr, sq, w, nn, 3, 2, "model: 2 decodes + chunk 100");
    }
    for (int step = 0; step < 6; step++) {
        int w[] = {0, 1, 2}, nn[] = {1, 1, 1};
        char label[64];
        snprintf(label, sizeof(label), "model: decode step %d (3 seqs)", step);
        model_step(&mr, sq, w, nn, 3, 3, label);
    }
    for (int step = 0; step < 2; step++) { /* single-stream decode: one token in the step */
        int w[] = {2}, nn[] = {1};
        char label[64];
        snprintf(label, sizeof(label), "model: decode step %d (1 seq)", step);
        model_step(&mr, sq, w, nn, 1, 1, label);
    }
    char d[200];
    snprintf(d, sizeof(d),
             "greedy tokens agree with the bf16 reference on %d of %d rows, %d more at a "
             "near-tie (with float32: %d; bf16 rounding flipped %d routing choices in all)",
             mr.agree16, mr.total, mr.near_tie, mr.agree32, mr.flips);
    verdict("model: greedy agreement", mr.agree16 + mr.near_tie == mr.total, d);
    cuda_ref_destroy(mr.r32);
    cuda_ref_destroy(mr.r16);
    model_destroy(m);
    mr.cpu->ops->destroy(mr.cpu);
    mr.gpu->ops->destroy(mr.gpu);
    if (mr.gw) mr.gw->ops->destroy(mr.gw);
}

/* check_model for the versions --versions asks for (the title printed before it all the same). */
#define mcheck(v, dir, graphs, seed)                                                               \
    do {                                                                                           \
        if (want_version(v)) check_model(dir, v, graphs, seed);                                    \
    } while (0)

/* --only: the kernel groups to run (comma-separated), for a quick rerun of one group or a
 * profiler session on it (worker/cuda/profile-moe.sh); NULL runs them all. */
static const char *only;

/* --versions: the kernel versions of the whole-model checks (comma-separated); NULL: all. */
static const char *versions;

static bool want_version(int v) {
    if (!versions) return true;
    for (const char *p = versions; *p;) {
        if (atoi(p) == v) return true;
        p += strcspn(p, ",");
        if (*p) p++;
    }
    return false;
}

static bool want(const char *group) {
    if (!only) return true;
    size_t n = strlen(group);
    for (const char *p = only; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, group, n)) return true;
        if (!e) break;
        p = e + 1;
    }
    return false;
}

int main(int argc, char **argv) {
    const char *model = NULL;
    uint64_t seed = (uint64_t)time(NULL);
    static const char *groups[] = {"norm", "gemm",  "rope",   "attention", "router",
                                   "moe",  "small", "argmax", "sampling"};
    char err[320];
    const char *sw[8][2];
    int n_sw = 0;
    for (int i = 1; i < argc; i++) {
        /* --persist, --trigger, --rows, --bulk: the one-token forms of the whole-model checks */
        if (!strcmp(argv[i], "--no-math")) {
            fprintf(stderr, "cuda-check: --no-math is cuda-bench's (measurements only): the "
                            "results it gives would fail every check\n");
            return 2;
        }
        int r = i + 1 < argc ? cuda_small_option(argv[i], argv[i + 1], err, sizeof(err)) : 1;
        if (r < 0) {
            fprintf(stderr, "cuda-check: %s\n", err);
            return 2;
        }
        if (r == 0) { /* applied again before the whole-model checks */
            if (n_sw == 8) {
                fprintf(stderr, "cuda-check: more than 8 switch options\n");
                return 2;
            }
            sw[n_sw][0] = argv[i], sw[n_sw++][1] = argv[i + 1];
            i++;
            continue;
        }
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model = argv[++i];
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--versions") && i + 1 < argc)
            versions = argv[++i];
        else if (!strcmp(argv[i], "--split") && i + 1 < argc)
            model_split = atoi(argv[++i]);
        else {
            fprintf(stderr,
                    "usage: cuda-check [--seed N] [--model DIR] [--only GROUP,...] "
                    "[--versions V,...] [--split 0|1] [--persist MASK]\n"
                    "       [--trigger MASK] [--rows MASK] [--bulk MASK]\n"
                    "  groups: norm gemm rope attention router moe small argmax sampling\n");
            return 2;
        }
    }
    if (only) { /* a misspelt group would silently check nothing */
        char buf[256];
        snprintf(buf, sizeof(buf), "%s", only);
        for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
            bool known = false;
            for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++)
                known |= !strcmp(tok, groups[g]);
            if (!known) {
                fprintf(stderr, "cuda-check: --only %s: unknown group %s\n", only, tok);
                return 2;
            }
        }
    }
    rng_state = seed;
    setvbuf(stdout, NULL, _IOLBF, 0); /* a log that ends where a crash happened */
    struct cudaDeviceProp prop;
    CU(cudaGetDeviceProperties(&prop, 0));
    printf("cuda-check: %s, %d SMs, seed %llu\n", prop.name, prop.multiProcessorCount,
           (unsigned long long)seed);
    if (cuda_plan_preset("120b", &C)) return 2;
    cuda_small_defaults(); /* the kernel groups hold each form to the defaults' results */
    if (n_sw > 0 && !model)
        fprintf(stderr,
                "cuda-check: %s and the other switch options apply to the whole-model "
                "checks (--model) only\n",
                sw[0][0]);
    if (!model || getenv("MG_CHECK_KERNELS")) {
        int H = C.hidden, V = C.vocab, Q = C.n_heads * C.head_dim, KV = C.n_kv_heads * C.head_dim;
        if (want("norm") || want("gemm")) {
            uint16_t *table = rand_bf16((size_t)V * H, 1.0f / sqrtf((float)H));
            uint16_t *table_d = dev_from(table, 2 * (size_t)V * H);
            if (want("norm")) check_norm(table, table_d);
            if (want("gemm")) {
                cuda_gemm *gm;
                if (cuda_gemm_create((size_t)32 << 20, &gm)) return 2;
                /* the weights of each GEMM are a slice of the random table (bf16 at 1/√H) */
                check_gemm(gm, "qkv", 64, Q + 2 * KV, H, table, table_d);
                check_gemm(gm, "o_proj", 64, H, Q, table, table_d);
                check_gemm(gm, "router", 64, C.n_experts, H, table, table_d);
                check_gemm(gm, "lm_head", 4, V, H, table, table_d); /* the GEMV */
                /* few tokens: the GEMV (the default) at every width, then cuBLASLt for them */
                check_gemm(gm, "gemv qkv", 1, Q + 2 * KV, H, table, table_d);
                check_gemm(gm, "gemv o_proj", 3, H, Q, table, table_d);
                check_gemm(gm, "gemv router", 2, C.n_experts, H, table, table_d);
                check_gemm(gm, "gemv lm_head", 1, V, H, table, table_d);
                cuda_gemm_set_gemv(gm, false);
                check_gemm(gm, "cublas lm_head", 4, V, H, table, table_d);
                check_gemm(gm, "cublas qkv", 1, Q + 2 * KV, H, table, table_d);
                /* autotuned (--cuda-gemm-autotune): whichever candidate won, at decode shapes */
                cuda_gemm_set_autotune(gm, true);
                check_gemm(gm, "tuned qkv", 256, Q + 2 * KV, H, table, table_d);
                check_gemm(gm, "tuned o_proj", 256, H, Q, table, table_d);
                check_gemm(gm, "tuned router", 256, C.n_experts, H, table, table_d);
                check_gemm(gm, "tuned qkv", 1, Q + 2 * KV, H, table, table_d);
                check_gemm(gm, "tuned o_proj", 1, H, Q, table, table_d);
                cuda_gemm_destroy(gm);
            }
            cudaFree(table_d);
            free(table);
        }
        if (want("rope")) check_rope();
        int W = C.sliding_window;
        if (want("attention")) {
            check_attention_case("attention decode 64 seqs, full", 64, 2000, 0, 0, 0, 0);
            check_attention_case("attention decode 64 seqs, window", 64, 2000, 0, 0, W, 0);
            check_attention_case("attention prefill 256 + 8 decodes", 8, 700, 256, 556, 0, 0);
            check_attention_case("attention prefill 256, window", 8, 700, 256, 556, W, 0);
            for (int merged = 0; merged < 2; merged++) {
                att_merge_in_kernel = merged;
                check_attention_case(merged ? "split-KV decode 1 seq, full, merged"
                                            : "split-KV decode 1 seq, full",
                                     1, 3000, 0, 0, 0, 32);
                check_attention_case(merged ? "split-KV decode 8 seqs, full, merged"
                                            : "split-KV decode 8 seqs, full",
                                     8, 3000, 0, 0, 0, 16);
                check_attention_case(merged ? "split-KV decode 8 seqs, window, merged"
                                            : "split-KV decode 8 seqs, window",
                                     8, 3000, 0, 0, W, 2);
                check_attention_case(merged ? "split-KV 3 decodes + chunk 24, merged"
                                            : "split-KV 3 decodes + chunk 24",
                                     3, 900, 24, 400, 0, 7);
            }
            check_attention_case("mma decode 64 seqs, full", 64, 2000, 0, 0, 0, -1);
            check_attention_case("mma decode 64 seqs, window", 64, 2000, 0, 0, W, -1);
            check_attention_case("mma prefill 256 + 8 decodes", 8, 700, 256, 556, 0, -1);
            check_attention_case("mma prefill 256, window", 8, 700, 256, 556, W, -1);
            check_attention_case("mma decode 256 seqs, full", 256, 1100, 0, 0, 0, -1);
            check_attention_case("plain decode 256 seqs, full", 256, 1100, 0, 0, 0, 0);
        }
        if (want("router")) {
            check_router(256, false); /* a warp per token over many CTAs, then the grouping */
            check_router(32, false);  /* one CTA for both (steps of up to 32 tokens) */
            check_router(1, false);
            check_router(1, true); /* with the GEMV, the choices in its last CTA */
            check_router(4, true);
        }
        if (want("moe")) {
            experts x;
            experts_make(&x);
            for (int ver = 1; ver <= 4; ver++) {
                check_moe_case(&x, 64, 8, ver);   /* ~32 tokens per expert: chunks, partial tiles */
                check_moe_case(&x, 16, 128, ver); /* spread: mostly one token per expert */
                check_moe_case(&x, 1, 128, ver);  /* single-stream decode */
                if (ver >= 3) { /* the small tile's shallower ring (8 is the default) */
                    cuda_moe3_small_stages(4);
                    check_moe_case(&x, 1, 128, ver);
                    check_moe_case(&x, 16, 128, ver);
                    cuda_moe3_small_stages(8);
                }
                /* version 3's large tile: 2-3 chunks of 16 tokens; then the seed's batch 256 */
                check_moe_case(&x, 160, 16, ver);
                check_moe_case(&x, 256, 128, ver);
                if (ver == 4) { /* the many-token tile, forced: the rule picks it from 1,536
                                 * slots on 120b (batch 512), more than the CPU twin can check */
                    cuda_moe3_force_tile(3);
                    check_moe_case(&x, 160, 4, ver);  /* 160 per expert: chunks 64, 64, 32 */
                    check_moe_case(&x, 160, 16, ver); /* 40 per expert: 5 of 8 token tiles */
                    check_moe_case(&x, 16, 128, ver); /* mostly 1 per expert: 2 token tiles */
                    cuda_moe3_force_tile(0);
                }
            }
            experts_free(&x);
        }
        if (want("small")) { /* version 7 at 1 to 4 tokens */
            uint16_t *table = rand_bf16((size_t)V * H, 1.0f / sqrtf((float)H));
            uint16_t *table_d = dev_from(table, 2 * (size_t)V * H);
            experts x;
            experts_make(&x);
            for (int T = 1; T <= 4; T++) check_small(table_d, &x, T);
            experts_free(&x);
            cudaFree(table_d);
            free(table);
        }
        if (want("argmax")) check_argmax();
        if (want("sampling")) check_sampling();
    }
    if (model) {
        for (int k = 0; k < n_sw; k++) cuda_small_option(sw[k][0], sw[k][1], err, sizeof(err));
        printf("whole model, kernel version 1\n");
        uint64_t mseed = rnd();
        mcheck(1, model, false, mseed);
        printf("whole model, kernel version 2 (MoE 8x8 tiles, split-KV attention)\n");
        mcheck(2, model, false, mseed);
        printf("whole model, kernel version 2, decode steps through CUDA graphs (3 -> bucket 4)\n");
        mcheck(2, model, true, mseed);
        printf("whole model, kernel version 3 (MXFP4 streamed one block per lane)\n");
        mcheck(3, model, false, mseed);
        printf("whole model, kernel version 3, decode steps through CUDA graphs\n");
        mcheck(3, model, true, mseed);
        printf("whole model, kernel version 4 (version 3 streamed through shared memory)\n");
        mcheck(4, model, false, mseed);
        printf("whole model, kernel version 4, decode steps through CUDA graphs\n");
        mcheck(4, model, true, mseed);
        printf("whole model, kernel version 5 (4 with attention on the tensor cores)\n");
        mcheck(5, model, false, mseed);
        printf("whole model, kernel version 5, decode steps through CUDA graphs\n");
        mcheck(5, model, true, mseed);
        printf(
            "whole model, kernel version 6 (5 with the split-KV merge and router top-k fused)\n");
        mcheck(6, model, false, mseed);
        printf("whole model, kernel version 6, decode steps through CUDA graphs\n");
        mcheck(6, model, true, mseed);
        printf("whole model, kernel version 6, graphs, programmatic dependent launch\n");
        cuda_set_pdl(1);
        mcheck(6, model, true, mseed);
        cuda_set_pdl(0);
        printf("whole model, kernel version 6, graphs, PDL for steps of up to 4 tokens\n");
        model_pdl_max_tokens = 4;
        mcheck(6, model, true, mseed);
        model_pdl_max_tokens = 0;
        printf("whole model, kernel version 7 (6 with the norms and residual adds of steps of "
               "up to 4 tokens folded into the kernels beside them)\n");
        mcheck(7, model, false, mseed);
        printf("whole model, kernel version 7, graphs, PDL for steps of up to 4 tokens\n");
        model_pdl_max_tokens = 4;
        mcheck(7, model, true, mseed);
        model_pdl_max_tokens = 0;
    }
    printf("cuda-check: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
