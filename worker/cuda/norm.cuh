/* norm.cuh - embedding, the residual add fused with RMSNorm, and the row gather before lm_head.
 * CPU twins: ops_bf16_row (embedding), ops_rmsnorm and the residual loops of cpu_forward. */
#pragma once

#include "common.cuh"

/* ---- kernels ---- */

__global__ void embed_kernel(float *x, const uint16_t *embed, const int32_t *tokens, int H) {
    int t = blockIdx.x;
    const uint16_t *row = embed + (size_t)tokens[t] * H;
    for (int i = threadIdx.x; i < H; i += blockDim.x) x[(size_t)t * H + i] = bf16f(row[i]);
}

/* One CTA per row: x += deltas (in slot order) + bias; sum of squares; out = bf16 normed row.
 * Each thread re-reads only the x elements it wrote itself, so no barrier is needed between
 * the two passes beyond the reduction's. */
__global__ void rmsnorm_kernel(uint16_t *out, float *x, const float *delta, int n_delta,
                               const uint16_t *bias, const uint16_t *g, int H, float eps) {
    __shared__ float red[32];
    int t = blockIdx.x;
    float *xr = x + (size_t)t * H;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < H; i += blockDim.x) {
        float v = xr[i];
        for (int k = 0; k < n_delta; k++) v += delta[((size_t)t * n_delta + k) * H + i];
        if (bias) v += bf16f(bias[i]);
        if (n_delta > 0 || bias) xr[i] = v;
        ss += v * v;
    }
    ss = block_sum(ss, red);
    float inv = 1.0f / sqrtf(ss / (float)H + eps);
    for (int i = threadIdx.x; i < H; i += blockDim.x)
        out[(size_t)t * H + i] = f2bf16(bf16f(g[i]) * (xr[i] * inv));
}

__global__ void gather_rows_kernel(uint16_t *out, const uint16_t *x, const int32_t *rows, int H) {
    int i = blockIdx.x;
    const uint16_t *src = x + (size_t)rows[i] * H;
    for (int j = threadIdx.x; j < H; j += blockDim.x) out[(size_t)i * H + j] = src[j];
}

/* ---- launchers ---- */

extern "C" int cuda_embed(float *x, const uint16_t *embed, const int32_t *tokens, int T, int H,
                          cudaStream_t s) {
    if (T <= 0) return 0;
    embed_kernel<<<T, 256, 0, s>>>(x, embed, tokens, H);
    return launch_status();
}

extern "C" int cuda_rmsnorm(uint16_t *out, float *x, const float *delta, int n_delta,
                            const uint16_t *bias, const uint16_t *g, int T, int H, float eps,
                            cudaStream_t s) {
    if (T <= 0) return 0;
    rmsnorm_kernel<<<T, 256, 0, s>>>(out, x, delta, n_delta, bias, g, H, eps);
    return launch_status();
}

extern "C" int cuda_gather_rows(uint16_t *out, const uint16_t *x, const int32_t *rows, int n, int H,
                                cudaStream_t s) {
    if (n <= 0) return 0;
    gather_rows_kernel<<<n, 256, 0, s>>>(out, x, rows, H);
    return launch_status();
}
