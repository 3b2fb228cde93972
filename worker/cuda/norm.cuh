/* norm.cuh - embedding, the residual add fused with RMSNorm, and the row gather before lm_head.
 * CPU twins: ops_bf16_row (embedding), ops_rmsnorm and the residual loops of cpu_forward. */
#pragma once

#include "common.cuh"

/* ---- kernels ---- */

__global__ void embed_kernel(float *x, const uint16_t *embed, const int32_t *tokens, int H) {
    pdl_trigger();
    pdl_wait();
    int t = blockIdx.x;
    const uint16_t *row = embed + (size_t)tokens[t] * H;
    for (int i = threadIdx.x; i < H; i += blockDim.x) x[(size_t)t * H + i] = bf16f(row[i]);
}

/* One CTA per row: x += deltas (in slot order) + bias; sum of squares; out = bf16 normed row.
 * Thread j holds elements j, j + nt, ..., PER of them (nt = blockDim.x), in registers between
 * the two passes, and issues all of a pass's loads before it adds: a row costs a few memory
 * latencies, not one per element (at batch 1 the step is 72 of these in a row). Two layouts:
 * PER 8 with nt fitted to H (2880: 384 threads), and for steps of up to CUDA_GEMV_MAX_T tokens
 * PER 12 on a fixed RMSNORM_THREADS, so that the kernels of version 7 that fold the norm in
 * (small.cuh) sum the squares in the same order and get the same bits. (The fixed layout for
 * every step put batch 64's norms at 0.778 ms a step against 0.662 before, on two H100s: 12
 * loads a thread where 8 were.) */
enum { RMSNORM_PER = 12, RMSNORM_THREADS = 256, RMSNORM_WIDE_PER = 8 };

template <int PER>
__global__ void rmsnorm_kernel(uint16_t *out, float *x, const float *delta, int n_delta,
                               const uint16_t *bias, const uint16_t *g, int H, float eps) {
    pdl_trigger();
    __shared__ float red[32];
    int t = blockIdx.x, nt = blockDim.x;
    float *xr = x + (size_t)t * H;
    float v[PER], gv[PER];
#pragma unroll
    for (int k = 0; k < PER; k++) { /* the gains are weights: before the wait */
        int i = threadIdx.x + k * nt;
        gv[k] = i < H ? bf16f(g[i]) : 0.0f;
    }
    pdl_wait();
#pragma unroll
    for (int k = 0; k < PER; k++) {
        int i = threadIdx.x + k * nt;
        v[k] = i < H ? xr[i] : 0.0f;
    }
    if (n_delta > 0) {
        const float *dr = delta + (size_t)t * n_delta * H;
#pragma unroll 4
        for (int d = 0; d < n_delta; d++)
#pragma unroll
            for (int k = 0; k < PER; k++) {
                int i = threadIdx.x + k * nt;
                if (i < H) v[k] += dr[(size_t)d * H + i];
            }
    }
    float ss = 0.0f; /* summed over k in order: norm_rows in small.cuh repeats it */
#pragma unroll
    for (int k = 0; k < PER; k++) {
        int i = threadIdx.x + k * nt;
        if (i >= H) continue;
        if (bias) v[k] += bf16f(bias[i]);
        if (n_delta > 0 || bias) xr[i] = v[k];
        ss = fmaf(v[k], v[k], ss);
    }
    ss = block_sum(ss, red);
    float inv = 1.0f / sqrtf(ss / (float)H + eps);
#pragma unroll
    for (int k = 0; k < PER; k++) {
        int i = threadIdx.x + k * nt;
        if (i < H) out[(size_t)t * H + i] = f2bf16(gv[k] * (v[k] * inv));
    }
}

__global__ void gather_rows_kernel(uint16_t *out, const uint16_t *x, const int32_t *rows, int H) {
    pdl_trigger();
    pdl_wait();
    int i = blockIdx.x;
    const uint16_t *src = x + (size_t)rows[i] * H;
    for (int j = threadIdx.x; j < H; j += blockDim.x) out[(size_t)i * H + j] = src[j];
}

/* ---- launchers ---- */

extern "C" int cuda_embed(float *x, const uint16_t *embed, const int32_t *tokens, int T, int H,
                          cudaStream_t s) {
    if (T <= 0) return 0;
    return pdl_launch(embed_kernel, T, 256, 0, s, x, embed, tokens, H);
}

extern "C" int cuda_rmsnorm(uint16_t *out, float *x, const float *delta, int n_delta,
                            const uint16_t *bias, const uint16_t *g, int T, int H, float eps,
                            cudaStream_t s) {
    if (T <= 0) return 0;
    if (H < 1 || n_delta < 0) return (int)cudaErrorInvalidValue;
    if (T <= CUDA_GEMV_MAX_T && H <= RMSNORM_PER * RMSNORM_THREADS) /* version 7's layout */
        return pdl_launch(rmsnorm_kernel<RMSNORM_PER>, T, RMSNORM_THREADS, 0, s, out, x, delta,
                          n_delta, bias, g, H, eps);
    /* RMSNORM_WIDE_PER elements per thread, at most 512 threads: every gpt-oss width fits */
    if (H > RMSNORM_WIDE_PER * 512) return (int)cudaErrorInvalidValue;
    int nt = ((H + RMSNORM_WIDE_PER - 1) / RMSNORM_WIDE_PER + 31) / 32 * 32;
    return pdl_launch(rmsnorm_kernel<RMSNORM_WIDE_PER>, T, nt, 0, s, out, x, delta, n_delta, bias,
                      g, H, eps);
}

extern "C" int cuda_gather_rows(uint16_t *out, const uint16_t *x, const int32_t *rows, int n, int H,
                                cudaStream_t s) {
    if (n <= 0) return 0;
    return pdl_launch(gather_rows_kernel, n, 256, 0, s, out, x, rows, H);
}
