/* gemv.cuh - the dense bf16 GEMMs of steps with a few tokens (single-stream decode), where
 * cuBLASLt's tiles leave most of the bandwidth unused: one warp per weight row, the row's
 * 16-byte units loaded all at once (up to GEMV_UNITS per lane in flight), float accumulation.
 * CPU twin: ops_matmul_bf16 without the bias (cuda_gemm.h's contract). */
#pragma once

#include "common.cuh"

/* Tokens a GEMV serves (each lane keeps one sum per token), the 16-byte units of a row a lane
 * loads before it multiplies, and the warps of a CTA. */
enum { GEMV_MAX_T = CUDA_GEMV_MAX_T, GEMV_UNITS = 12, GEMV_WARPS = 8 };

/* A bf16 pair (low half first) as two floats. */
__device__ __forceinline__ void bf16x2_f(uint32_t w, float &lo, float &hi) {
    lo = __uint_as_float(w << 16);
    hi = __uint_as_float(w & 0xffff0000u);
}

/* acc + w · x over one 16-byte unit of each (8 bf16), the products added in order: the sums of
 * gemv_row and of version 7's kernels (small.cuh). */
__device__ __forceinline__ float dot8(float acc, const uint4 &w, const uint4 &x) {
    float wf[8], xf[8];
    bf16x2_f(w.x, wf[0], wf[1]);
    bf16x2_f(w.y, wf[2], wf[3]);
    bf16x2_f(w.z, wf[4], wf[5]);
    bf16x2_f(w.w, wf[6], wf[7]);
    bf16x2_f(x.x, xf[0], xf[1]);
    bf16x2_f(x.y, xf[2], xf[3]);
    bf16x2_f(x.z, xf[4], xf[5]);
    bf16x2_f(x.w, xf[6], xf[7]);
#pragma unroll
    for (int i = 0; i < 8; i++) acc = fmaf(wf[i], xf[i], acc);
    return acc;
}

/* Row n of W (K inputs) against the T token rows of x: the warp's sums, in every lane. The
 * first pass's weight loads are issued before pdl_wait (the weights are no earlier kernel's
 * output), so under programmatic dependent launch they overlap the previous kernel. */
template <int T>
__device__ __forceinline__ void gemv_row(float (&acc)[T], const uint16_t *x, const uint16_t *w,
                                         int n, int K) {
    int lane = threadIdx.x & 31;
    const uint4 *wr = reinterpret_cast<const uint4 *>(w + (size_t)n * K);
    const uint4 *xr = reinterpret_cast<const uint4 *>(x);
    int ku = K / 8; /* 16-byte units of a row */
#pragma unroll
    for (int t = 0; t < T; t++) acc[t] = 0.0f;
    for (int u0 = 0; u0 < ku; u0 += 32 * GEMV_UNITS) {
        uint4 wv[GEMV_UNITS];
#pragma unroll
        for (int j = 0; j < GEMV_UNITS; j++) {
            int u = u0 + j * 32 + lane;
            wv[j] = u < ku ? ld_stream(wr + u) : make_uint4(0, 0, 0, 0);
        }
        if (u0 == 0) pdl_wait();
#pragma unroll
        for (int j = 0; j < GEMV_UNITS; j++) {
            int u = u0 + j * 32 + lane;
            if (u >= ku) break;
#pragma unroll
            for (int t = 0; t < T; t++)
                acc[t] = dot8(acc[t], wv[j], __ldg(xr + (size_t)t * ku + u));
        }
    }
#pragma unroll
    for (int t = 0; t < T; t++) acc[t] = warp_sum(acc[t]);
}

/* out (T, N) = x · W^T, the warp's row of it. A warp past N has nothing to do but waits for the
 * earlier grid all the same. The next kernel launches once every CTA has passed the trigger (or
 * exited): its set-up overlaps this one's tail, and no further, so that the step's kernels do
 * not pile up waiting. */
template <int T>
__device__ __forceinline__ void gemv_rows(float *out, const uint16_t *x, const uint16_t *w, int N,
                                          int K) {
    int n = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (n < N) {
        float acc[T];
        gemv_row<T>(acc, x, w, n, K);
        pdl_trigger();
        if (lane == 0)
#pragma unroll
            for (int t = 0; t < T; t++) out[(size_t)t * N + n] = acc[t];
    } else {
        pdl_wait();
    }
}

template <int T>
__global__ void __launch_bounds__(32 * GEMV_WARPS)
    gemv_bf16_kernel(float *out, const uint16_t *x, const uint16_t *w, int N, int K) {
    gemv_rows<T>(out, x, w, N, K);
}

/* ---- launcher ---- */

extern "C" int cuda_gemv_bf16(float *out, const uint16_t *x, const uint16_t *w, int T, int N, int K,
                              cudaStream_t s) {
    if (T < 1 || T > GEMV_MAX_T || N < 1 || K < 8 || K % 8) return (int)cudaErrorInvalidValue;
    unsigned grid = (unsigned)((N + GEMV_WARPS - 1) / GEMV_WARPS);
    static_assert(GEMV_MAX_T == 4, "one instantiation per token count");
    static void (*const k[GEMV_MAX_T])(float *, const uint16_t *, const uint16_t *, int, int) = {
        gemv_bf16_kernel<1>, gemv_bf16_kernel<2>, gemv_bf16_kernel<3>, gemv_bf16_kernel<4>};
    return pdl_launch(k[T - 1], grid, 32 * GEMV_WARPS, 0, s, out, x, w, N, K);
}
