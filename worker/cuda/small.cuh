/* small.cuh - kernel version 7: a layer of a step of at most GEMV_MAX_T tokens (single-stream
 * decode) in six kernels instead of nine. At batch 1 every kernel is a few microseconds of
 * launch and latency whatever it computes, so the residual RMSNorms go into the kernels that
 * read their output and the residual adds into the kernels that make them:
 *
 *   qkv7:     attention RMSNorm of x (each CTA for itself) + q/k/v GEMV + bias + RoPE + KV write
 *   attention (version 6's split-KV kernel)
 *   o_res:    o_proj GEMV + bias, added into x
 *   router7:  MLP RMSNorm of x (xn for the experts) + router GEMV + top-k (version 6's)
 *   gate_up   (version 3's small tile from xn, or its split form)
 *   down_res: the token's experts' down projections, weighted, added into x in slot order
 *
 * Each keeps the arithmetic of the version-6 kernels it replaces, in the same order (the norm
 * in rmsnorm_kernel's order, the dot products as gemv_row, RoPE through rope_rotate, the expert
 * tiles through moe3_superchunk), so that version 7's logits are version 6's bit for bit:
 * cuda-check holds them to that. The exceptions are the split forms of the expert kernels and of
 * o_res at one token (both on by default), whose sums over parts of K agree with version 6's to
 * float rounding. CPU twins: those of the kernels replaced. */
#pragma once

#include "attention.cuh"
#include "gemv.cuh"
#include "moe.cuh"
#include "norm.cuh"

#include <cooperative_groups.h>
namespace cg = cooperative_groups;

/* Token rows t < T of the residual x (T, H) normalized with gains g into xs (T, H) bf16 as
 * rmsnorm_kernel's out at T <= GEMV_MAX_T (the RMSNORM_PER layout), its squares summed in its
 * order; the CTA has NT threads, RMSNORM_THREADS or more (the first RMSNORM_THREADS sum; NT a
 * constant, so that the second pass unrolls). Unlike rmsnorm_kernel it keeps no row in registers
 * (they hold the weights in flight): the second pass reads x and g again, from L1. Ends with a
 * barrier: xs is the CTA's to read. */
template <int T, int NT = RMSNORM_THREADS>
__device__ __forceinline__ void norm_rows(uint16_t *xs, const float *x, const uint16_t *g, int H,
                                          float eps, float *red) {
    static_assert(NT >= RMSNORM_THREADS, "the sum's layout needs RMSNORM_THREADS threads");
#pragma unroll
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * H;
        float ss = 0.0f;
#pragma unroll
        for (int k = 0; k < RMSNORM_PER; k++) {
            int i = threadIdx.x + k * RMSNORM_THREADS;
            float v =
                (NT == RMSNORM_THREADS || threadIdx.x < RMSNORM_THREADS) && i < H ? xr[i] : 0.0f;
            ss = fmaf(v, v, ss);
        }
        ss = block_sum(ss, red); /* more warps than RMSNORM_THREADS' add zeros: the same bits */
        float inv = 1.0f / sqrtf(ss / (float)H + eps);
        for (int i = threadIdx.x; i < H; i += NT)
            xs[(size_t)t * H + i] = f2bf16(bf16f(g[i]) * (xr[i] * inv));
    }
    __syncthreads();
}

/* Units u0 + 32 j + lane (j < UNITS) of R weight rows (wr[r]: 16-byte units, ku a row), zeros
 * past the row or where !live: the kernels below load the first pass before pdl_wait. */
template <int R, int UNITS>
__device__ __forceinline__ void rows_load(uint4 (&wv)[R][UNITS], const uint4 *const (&wr)[R],
                                          int u0, int ku, bool live, int lane) {
#pragma unroll
    for (int j = 0; j < UNITS; j++)
#pragma unroll
        for (int r = 0; r < R; r++) {
            int u = u0 + j * 32 + lane;
            wv[r][j] = live && u < ku ? ld_stream(wr[r] + u) : make_uint4(0, 0, 0, 0);
        }
}

/* acc[r][t] = row r of W · token t's row of xs (T rows of ku units in shared memory), summed in
 * gemv_row's order, then over the warp (every lane gets them); wv holds the first pass
 * (rows_load), later passes load here. */
template <int T, int R, int UNITS>
__device__ __forceinline__ void rows_dot(float (&acc)[R][T], uint4 (&wv)[R][UNITS],
                                         const uint4 *const (&wr)[R], const uint4 *xs, int ku,
                                         int lane) {
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < T; t++) acc[r][t] = 0.0f;
    for (int u0 = 0; u0 < ku; u0 += 32 * UNITS) {
        if (u0 > 0) rows_load<R, UNITS>(wv, wr, u0, ku, true, lane);
#pragma unroll
        for (int j = 0; j < UNITS; j++) {
            int u = u0 + j * 32 + lane;
            if (u >= ku) break;
#pragma unroll
            for (int t = 0; t < T; t++) {
                uint4 xv = xs[(size_t)t * ku + u];
#pragma unroll
                for (int r = 0; r < R; r++) acc[r][t] = dot8(acc[r][t], wv[r][j], xv);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < T; t++) acc[r][t] = warp_sum(acc[r][t]);
}

/* Token t's sums of RoPE pair (head, i) with their biases, x1 and x2: rotated by (c, sn) into q
 * (float) or the token's K slot, or into its V slot as they are (bf16). */
__device__ __forceinline__ void qkv_store(float *q, uint16_t *kcache, uint16_t *vcache, float x1,
                                          float x2, float c, float sn, int t, int slot, int head,
                                          int i, int n_heads, int n_kv, int D, int bs) {
    int half = D / 2, r1 = head * D + i, blk = slot / bs, off = slot % bs;
    if (head < n_heads + n_kv) {
        float y1, y2;
        rope_rotate(x1, x2, c, sn, y1, y2);
        if (head < n_heads) {
            q[(size_t)t * n_heads * D + r1] = y1;
            q[(size_t)t * n_heads * D + r1 + half] = y2;
        } else {
            uint16_t *dst = kcache + ((size_t)(blk * n_kv + head - n_heads) * bs + off) * D;
            dst[i] = f2bf16(y1);
            dst[i + half] = f2bf16(y2);
        }
    } else {
        uint16_t *dst = vcache + ((size_t)(blk * n_kv + head - n_heads - n_kv) * bs + off) * D;
        dst[i] = f2bf16(x1);
        dst[i + half] = f2bf16(x2);
    }
}

/* qkv7: a warp per RoPE pair, rows i and i + D/2 of one head of W (q heads, then k, then v: row
 * head * D + i), both against every token's normed row. The rows' first units load before the
 * wait; the norm of x runs while they arrive. Lane t < T then adds the bias, rotates (q and k
 * heads; the angle as qkv_rope_kernel) and writes q (float) or the token's K/V slot (bf16). On a
 * grid smaller than a warp a pair (cuda_small_persist), a warp then takes the pair a grid's
 * warps further on, its loads after this one's stores: the CTA's normed x serves both. */
/* Units per row and lane in flight: a 2880-wide row in one pass for one token; two passes for
 * more, whose sums take registers of their own (the order of the sums is the same). */
template <int T> __host__ __device__ constexpr int qkv7_units() {
    return T == 1 ? 12 : 6;
}

template <int T>
__global__ void __launch_bounds__(RMSNORM_THREADS, 2)
    qkv7_kernel(float *q, uint16_t *kcache, uint16_t *vcache, const float *x, const uint16_t *g,
                const uint16_t *w, const uint16_t *bias, const int32_t *positions,
                const int32_t *slots, const float *inv_freq, float conc, int H, int n_heads,
                int n_kv, int D, int bs, float eps) {
    extern __shared__ __align__(16) uint16_t xs[]; /* (T, H) */
    __shared__ float red[32];
    TL_MARK(CUDA_TL_QKV, 0);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, half = D / 2;
    int n_pairs = (n_heads + 2 * n_kv) * half, ku = H / 8;
    /* pairs p, p + stride, ...: one each unless the grid is smaller (cuda_small_persist) */
    int p = blockIdx.x * (RMSNORM_THREADS / 32) + warp, stride = gridDim.x * (RMSNORM_THREADS / 32);
    constexpr int U = qkv7_units<T>();
    uint4 wv[2][U];
    int head, i, r1, r2;
    const uint4 *wr[2];
    float c, sn; /* token `lane`'s angle (the step's uploaded positions) */
    /* pair p's rows, their first pass of loads, the angle */
    auto pair = [&](int p) {
        bool live = p < n_pairs;
        head = live ? p / half : 0, i = p % half, r1 = head * D + i, r2 = r1 + half;
        wr[0] = reinterpret_cast<const uint4 *>(w + (size_t)r1 * H);
        wr[1] = reinterpret_cast<const uint4 *>(w + (size_t)r2 * H);
        rows_load<2, U>(wv, wr, 0, ku, live, lane);
        if (live && lane == 0) prefetch_l1(bias + r1), prefetch_l1(bias + r2);
        c = 0.0f, sn = 0.0f;
        if (lane < T) {
            float angle = (float)positions[lane] * inv_freq[i];
            c = cosf(angle) * conc, sn = sinf(angle) * conc;
        }
    };
    pair(p);
    prefetch_span(g, (size_t)H * 2);
    if (threadIdx.x == 0) prefetch_l1(slots);
    pdl_wait();
    TL_MARK(CUDA_TL_QKV, 1);
    pdl_trigger();
    norm_rows<T>(xs, x, g, H, eps, red);
    for (bool first = true; p < n_pairs; p += stride, first = false) {
        if (!first) pair(p);
        float acc[2][T];
        rows_dot<T, 2, U>(acc, wv, wr, reinterpret_cast<const uint4 *>(xs), ku, lane);
        float v1 = 0.0f, v2 = 0.0f; /* token `lane`'s two sums */
#pragma unroll
        for (int t = 0; t < T; t++)
            if (lane == t) v1 = acc[0][t], v2 = acc[1][t];
        if (lane >= T) continue;
        qkv_store(q, kcache, vcache, v1 + bf16f(bias[r1]), v2 + bf16f(bias[r2]), c, sn, lane,
                  slots[lane], head, i, n_heads, n_kv, D, bs);
    }
    TL_MARK(CUDA_TL_QKV, 2);
}

/* qkv7 at one token with every RoPE pair a warp's only one (cuda_small_persist bit 16): 320
 * CTAs of 8 warps, three an SM (at most 80 registers a thread), so that at 132 SMs every pair
 * has its warp at once and no warp takes a second pair after its first (qkv7_kernel's tail). A
 * whole pair (two 2880-wide rows, 90 registers a lane) does not fit that budget, so each lane
 * holds the first QKV_RES_REG units of its rows in registers and copies the rest into the
 * warp's part of shared memory (cp.async), all before the wait. The dot runs over the units in
 * rows_dot's order (registers, then shared memory): the same bits as qkv7_kernel<1>. */
enum { QKV_RES_REG = 6 };

__host__ __device__ constexpr size_t qkv_res_smem(int H) {
    /* xs (H bf16), then per warp and row the units past the registers' 32 * QKV_RES_REG */
    return (size_t)H * 2 + (size_t)(RMSNORM_THREADS / 32) * 2 * (H / 8 - 32 * QKV_RES_REG) * 16;
}

template <bool BULK = false> /* x by a bulk copy (cuda_small_bulk bit 1), after qkv_res_smem(H) */
__global__ void __launch_bounds__(RMSNORM_THREADS, 3)
    qkv7_res_kernel(float *q, uint16_t *kcache, uint16_t *vcache, const float *x, const uint16_t *g,
                    const uint16_t *w, const uint16_t *bias, const int32_t *positions,
                    const int32_t *slots, const float *inv_freq, float conc, int H, int n_heads,
                    int n_kv, int D, int bs, float eps) {
    extern __shared__ __align__(16) uint16_t xs[]; /* qkv_res_smem's layout */
    __shared__ float red[32];
    TL_MARK(CUDA_TL_QKV, 0);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, half = D / 2;
    int n_pairs = (n_heads + 2 * n_kv) * half, ku = H / 8, kr = ku - 32 * QKV_RES_REG;
    int p = blockIdx.x * (RMSNORM_THREADS / 32) + warp;
    bool live = p < n_pairs;
    int head = live ? p / half : 0, i = p % half, r1 = head * D + i, r2 = r1 + half;
    const uint4 *wr[2] = {reinterpret_cast<const uint4 *>(w + (size_t)r1 * H),
                          reinterpret_cast<const uint4 *>(w + (size_t)r2 * H)};
    uint4 *ws = reinterpret_cast<uint4 *>(xs + H) + (size_t)warp * 2 * kr; /* (2, kr) units */
    uint4 wv[2][QKV_RES_REG];
    rows_load<2, QKV_RES_REG>(wv, wr, 0, ku, live, lane);
    if (live)
        for (int u = lane; u < kr; u += 32)
#pragma unroll
            for (int r = 0; r < 2; r++) cp_async16(ws + r * kr + u, wr[r] + 32 * QKV_RES_REG + u);
    cp_async_commit();
    if (live && lane == 0) prefetch_l1(bias + r1), prefetch_l1(bias + r2);
    float c = 0.0f, sn = 0.0f; /* the token's angle (the step's uploaded position) */
    if (lane == 0) {
        float angle = (float)positions[0] * inv_freq[i];
        c = cosf(angle) * conc, sn = sinf(angle) * conc;
    }
    prefetch_span(g, (size_t)H * 2);
    if (threadIdx.x == 0) prefetch_l1(slots);
    __shared__ __align__(8) uint64_t xbar;
    float *xf = reinterpret_cast<float *>(reinterpret_cast<char *>(xs) + qkv_res_smem(H));
    if (BULK) mbar_init(&xbar), __syncthreads();
    pdl_wait();
    TL_MARK(CUDA_TL_QKV, 1);
    if (BULK) bulk_one(xf, x, H * 4, &xbar);
    pdl_trigger();
    if (BULK) mbar_wait0(&xbar);
    norm_rows<1>(xs, BULK ? xf : x, g, H, eps, red);
    TL_MARK(CUDA_TL_QKV, 3);
    cp_async_wait0(); /* each lane reads back only the units it copied */
    if (!live) return;
    const uint4 *xv = reinterpret_cast<const uint4 *>(xs);
    float acc[2] = {0.0f, 0.0f};
#pragma unroll
    for (int j = 0; j < QKV_RES_REG; j++) {
        uint4 xu = xv[j * 32 + lane];
#pragma unroll
        for (int r = 0; r < 2; r++) acc[r] = dot8(acc[r], wv[r][j], xu);
    }
    for (int u = lane; u < kr; u += 32) {
        uint4 xu = xv[32 * QKV_RES_REG + u];
#pragma unroll
        for (int r = 0; r < 2; r++) acc[r] = dot8(acc[r], ws[r * kr + u], xu);
    }
    float v1 = warp_sum(acc[0]), v2 = warp_sum(acc[1]);
    if (lane > 0) return;
    TL_MARK(CUDA_TL_QKV, 4);
    qkv_store(q, kcache, vcache, v1 + bf16f(bias[r1]), v2 + bf16f(bias[r2]), c, sn, 0, slots[0],
              head, i, n_heads, n_kv, D, bs);
    TL_MARK(CUDA_TL_QKV, 2);
}

/* o_res: x (T, N) += in (T, K) · W^T + bias, each element (x + sum) + bias as rmsnorm_kernel adds
 * a delta and a bias; a warp per row of W (gemv_row). The lane's x element and bias load before
 * the wait, as the row's first pass does: x's last writer is the down projection of the layer
 * before (or the embedding), done before q/k/v passed its wait; q/k/v passes its trigger only
 * after that, and this kernel is launched only once attention, launched after that trigger, has
 * started. */
template <int T>
__global__ void __launch_bounds__(32 * GEMV_WARPS)
    gemv_res_kernel(float *x, const uint16_t *in, const uint16_t *w, const uint16_t *bias, int N,
                    int K) {
    int n = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (n >= N) {
        pdl_wait();
        return;
    }
    float xo = 0.0f, bn = 0.0f;
    if (lane < T) xo = __ldcg(x + (size_t)lane * N + n), bn = bf16f(bias[n]);
    float acc[T];
    gemv_row<T>(acc, in, w, n, K); /* waits after the first pass's loads */
    pdl_trigger();
    if (lane < T) {
        float s = 0.0f;
#pragma unroll
        for (int t = 0; t < T; t++)
            if (lane == t) s = acc[t];
        x[(size_t)lane * N + n] = (xo + s) + bn;
    }
}

/* The split form of o_res at one token (cuda_small_o_split): KS warps a row, each over a KS-th of
 * it in one pass of 16 / KS units a lane (a 4096-wide row in one pass for KS of 2 to 8), where
 * gemv_row takes a warp through two passes of 12 units a lane. The parts' sums go through shared
 * memory to the row's first warp, which adds them in part order: x to float rounding as version
 * 6's. The lane's x element and bias load before the wait, as in gemv_res_kernel. */
template <int KS, bool BULK = false> /* BULK: in by a bulk copy (cuda_small_bulk bit 8) */
__global__ void __launch_bounds__(32 * GEMV_WARPS)
    o_res_split_kernel(float *x, const uint16_t *in, const uint16_t *w, const uint16_t *bias, int N,
                       int K, int early) {
    extern __shared__ __align__(16) uint4 ins[]; /* BULK: in (K bf16) */
    __shared__ __align__(8) uint64_t ibar;
    static_assert(GEMV_WARPS % KS == 0, "whole rows a CTA");
    __shared__ float psum[GEMV_WARPS];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, kp = warp % KS;
    int n = blockIdx.x * (GEMV_WARPS / KS) + warp / KS;
    bool live = n < N;
    int ku = K / 8, span = (ku + KS - 1) / KS, k0 = min(ku, kp * span);
    int kn = live ? min(span, ku - k0) : 0;
    const uint4 *wr = reinterpret_cast<const uint4 *>(w + (size_t)(live ? n : 0) * K) + k0;
    const uint4 *xr = reinterpret_cast<const uint4 *>(in) + k0;
    constexpr int U = 16 / KS;
    float xo = 0.0f, bn = 0.0f, acc = 0.0f;
    TL_MARK(CUDA_TL_O, 0);
    if (early) pdl_trigger(); /* the router's CTAs as soon as the last of these has started */
    if (live && kp == 0 && lane == 0) xo = __ldcg(x + n), bn = bf16f(bias[n]);
    if (BULK) mbar_init(&ibar), __syncthreads();
    for (int u0 = 0; u0 < max(kn, 1); u0 += 32 * U) { /* once at least: every warp waits */
        uint4 wv[U];
#pragma unroll
        for (int j = 0; j < U; j++) {
            int u = u0 + j * 32 + lane;
            wv[j] = u < kn ? ld_stream(wr + u) : make_uint4(0, 0, 0, 0);
        }
        if (u0 == 0) {
            pdl_wait();
            TL_MARK(CUDA_TL_O, 1);
            if (BULK) bulk_one(ins, in, K * 2, &ibar);
            if (BULK) mbar_wait0(&ibar);
        }
#pragma unroll
        for (int j = 0; j < U; j++) {
            int u = u0 + j * 32 + lane;
            if (u >= kn) break;
            acc = dot8(acc, wv[j], BULK ? ins[k0 + u] : __ldg(xr + u));
        }
    }
    TL_MARK(CUDA_TL_O, 3);
    acc = warp_sum(acc);
    if (!early) pdl_trigger();
    if (lane == 0) psum[warp] = acc;
    __syncthreads();
    TL_MARK(CUDA_TL_O, 2);
    if (!live || kp > 0 || lane > 0) return;
    for (int p = 1; p < KS; p++) acc += psum[warp + p];
    x[n] = (xo + acc) + bn;
}

/* The router's first steps before its wait: expert row n's weights (wr, their first pass in wv;
 * zeros past E) and the norm gains and router bias asked into L1. */
__device__ __forceinline__ void router_rows_begin(uint4 (&wv)[1][GEMV_UNITS], const uint4 *(&wr)[1],
                                                  const uint16_t *w, const uint16_t *g,
                                                  const uint16_t *bias, int n, int E, int H,
                                                  int lane) {
    wr[0] = reinterpret_cast<const uint4 *>(w + (size_t)(n < E ? n : 0) * H);
    rows_load<1, GEMV_UNITS>(wv, wr, 0, H / 8, n < E, lane);
    prefetch_span(g, (size_t)H * 2);
    prefetch_span(bias, (size_t)E * 2);
}

/* router7: every CTA norms x for itself (CTA 0 also writes xn, the experts' input), a warp per
 * expert row against it, then the last CTA picks each token's experts (router_gemv_kernel's
 * ending). */
template <int T>
__global__ void __launch_bounds__(RMSNORM_THREADS)
    router7_kernel(float *logits, int *count, uint16_t *xn, const float *x, const uint16_t *g,
                   const uint16_t *w, const uint16_t *bias, int32_t *top_e, float *top_w,
                   int32_t *e_start, int32_t *e_slots, int E, int H, float eps, int top_k) {
    static_assert(RMSNORM_THREADS == 32 * GEMV_WARPS, "a warp per expert row, GEMV_WARPS a CTA");
    extern __shared__ __align__(16) int rsm7[]; /* router_group's (2E + 32 ints), then (T, H) */
    uint16_t *xs = reinterpret_cast<uint16_t *>(rsm7 + ((2 * E + 32 + 3) & ~3));
    __shared__ float red[32];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, ku = H / 8;
    int n = blockIdx.x * GEMV_WARPS + warp;
    bool live = n < E;
    const uint4 *wr[1];
    uint4 wv[1][GEMV_UNITS];
    TL_MARK(CUDA_TL_ROUTER, 0);
    router_rows_begin(wv, wr, w, g, bias, n, E, H, lane);
    pdl_wait();
    TL_MARK(CUDA_TL_ROUTER, 1);
    pdl_trigger();
    norm_rows<T>(xs, x, g, H, eps, red);
    if (blockIdx.x == 0)
        for (int i = threadIdx.x; i < T * ku; i += blockDim.x)
            reinterpret_cast<uint4 *>(xn)[i] = reinterpret_cast<const uint4 *>(xs)[i];
    if (live) {
        float acc[1][T];
        rows_dot<T, 1, GEMV_UNITS>(acc, wv, wr, reinterpret_cast<const uint4 *>(xs), ku, lane);
        if (lane == 0)
#pragma unroll
            for (int t = 0; t < T; t++) logits[(size_t)t * E + n] = acc[0][t];
    }
    if (!last_cta(count, gridDim.x)) {
        TL_MARK(CUDA_TL_ROUTER, 2);
        return;
    }
    for (int t = warp; t < T; t += GEMV_WARPS)
        router_topk_token(top_e, top_w, logits, bias, t, E, top_k);
    if (e_start) {       /* the grouping, unless nothing of the step reads it */
        __syncthreads(); /* the CTA's writes of top_e are visible to all of it */
        router_group(e_start, e_slots, top_e, T * top_k, E);
    }
    if (threadIdx.x == 0) *count = 0;
    TL_MARK(CUDA_TL_ROUTER, 2);
}

/* router7 at one token on a cluster of ROUTER_CL CTAs of 16 warps (cuda_small_trigger bit 2): a
 * warp per expert row as router7_kernel, but the logits go to CTA 0's shared memory as well
 * (distributed shared memory) and a cluster barrier replaces the ticket: no fence, no atomic,
 * no round trip to L2 before CTA 0 takes the top-k. The same bits as router7_kernel<1>. */
enum { ROUTER_CL = 8, ROUTER_CL_WARPS = 16 };

template <bool BULK = false> /* x by a bulk copy (cuda_small_bulk bit 2), after xs7 */
__global__ void __cluster_dims__(ROUTER_CL, 1, 1) __launch_bounds__(32 * ROUTER_CL_WARPS)
    router7c_kernel(float *logits, uint16_t *xn, const float *x, const uint16_t *g,
                    const uint16_t *w, const uint16_t *bias, int32_t *top_e, float *top_w, int E,
                    int H, float eps, int top_k, int by_rank) {
    extern __shared__ __align__(16) uint16_t xs7[]; /* (H) */
    __shared__ float red[32];
    __shared__ float lg[ROUTER_CL * ROUTER_CL_WARPS];
    cg::cluster_group cl = cg::this_cluster();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, ku = H / 8;
    int n = blockIdx.x * ROUTER_CL_WARPS + warp;
    bool live = n < E;
    const uint4 *wr[1];
    uint4 wv[1][GEMV_UNITS];
    TL_MARK(CUDA_TL_ROUTER, 0);
    router_rows_begin(wv, wr, w, g, bias, n, E, H, lane);
    /* the top-k by rank: the bias of this thread's expert now (a weight), not after the barrier */
    float be = 0.0f;
    if (by_rank && cl.block_rank() == 0 && rank_expert(E, by_rank) < E)
        be = bf16f(bias[rank_expert(E, by_rank)]);
    float *lg0 = cl.map_shared_rank(lg, 0);
    __shared__ __align__(8) uint64_t xbar;
    float *xf = reinterpret_cast<float *>(xs7 + H);
    if (BULK) mbar_init(&xbar), __syncthreads();
    /* CTA 0's shared memory may be written only once it runs: arrive now, wait before the write */
    asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
    pdl_wait();
    TL_MARK(CUDA_TL_ROUTER, 1);
    if (BULK) bulk_one(xf, x, H * 4, &xbar);
    pdl_trigger();
    if (BULK) mbar_wait0(&xbar);
    norm_rows<1, 32 * ROUTER_CL_WARPS>(xs7, BULK ? xf : x, g, H, eps, red);
    TL_MARK(CUDA_TL_ROUTER, 3);
    if (blockIdx.x == 0)
        for (int i = threadIdx.x; i < ku; i += blockDim.x)
            reinterpret_cast<uint4 *>(xn)[i] = reinterpret_cast<const uint4 *>(xs7)[i];
    float acc[1][1];
    if (live)
        rows_dot<1, 1, GEMV_UNITS>(acc, wv, wr, reinterpret_cast<const uint4 *>(xs7), ku, lane);
    asm volatile("barrier.cluster.wait.aligned;\n" ::: "memory");
    if (live && lane == 0) logits[n] = acc[0][0], lg0[n] = acc[0][0];
    cl.sync(); /* every CTA's logits are in CTA 0's lg */
    TL_MARK(CUDA_TL_ROUTER, 4);
    if (cl.block_rank() == 0) {
        if (by_rank) /* every expert's rank at once (cuda_small_trigger bit 16) */
            router_topk_rank(top_e, top_w, lg, be, E, top_k, by_rank);
        else if (warp == 0)
            router_topk_token<true>(top_e, top_w, lg, bias, 0, E, top_k);
    }
    TL_MARK(CUDA_TL_ROUTER, 2);
}

/* ---- the down projection into the residual ---- */

/* The end of down_res: the S slot warps' ROWS rows of the CTA's tile from row0 (lane (gq, 0)
 * holds column 0 of rows gq and, at 16 rows, gq + 8), weighted as moe_store's y, then added into
 * x token by token in slot order, as rmsnorm_kernel adds the deltas; xo: thread (t, r)'s element
 * of x, read before. Every thread of the CTA calls it; warps from S on (the other parts of a
 * split K) only wait. */
template <int ROWS = 16>
__device__ __forceinline__ void down_res_add(float *x, float xo, const float (&acc)[1][1][4],
                                             const uint16_t *bias, const float *top_w, int e,
                                             int top_k, int N, int S, int row0) {
    __shared__ float ys[16][ROWS];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2;
    if (warp < S && (lane & 3) == 0) {
        float tw = top_w[warp];
        ys[warp][gq] = tw * (acc[0][0][0] + bf16f(bias[(size_t)e * N + row0 + gq]));
        if (ROWS == 16)
            ys[warp][gq + 8] = tw * (acc[0][0][2] + bf16f(bias[(size_t)e * N + row0 + gq + 8]));
    }
    __syncthreads();
    int T = S / top_k;
    if (threadIdx.x < T * ROWS) {
        int t = threadIdx.x / ROWS, r = threadIdx.x % ROWS;
        float v = xo;
        for (int d = 0; d < top_k; d++) v += ys[t * top_k + d][r];
        x[(size_t)t * N + row0 + r] = v;
    }
}

/* cuda_small_nomath's stand-in for a super-chunk's arithmetic: a value that depends on every
 * word of the weights and scales and on the staged token row, so that no load is dropped. */
__device__ __forceinline__ float nomath_fold(const uint4 (&w)[2], const uint32_t (&sc)[2],
                                             const char *xrow) {
    uint32_t f = w[0].x ^ w[0].y ^ w[0].z ^ w[0].w ^ w[1].x ^ w[1].y ^ w[1].z ^ w[1].w ^ sc[0] ^
                 sc[1] ^ *reinterpret_cast<const uint32_t *>(xrow);
    return (float)(f & 1u);
}

/* down_res: a CTA per 16-row tile of the output, a warp per slot of the step (S = T * top_k of
 * them, slot s = token s / top_k's choice s % top_k) and part of K (KS parts of whole
 * super-chunks; KS > 1 is the split form, cuda_small_split) on version 3's small tile: the ring
 * of 8 super-chunks in registers, 7 of them loaded before the wait (top_e is complete: the router
 * ran two kernels back, and gate_up passes its trigger only after its own wait), each act row
 * staged as a B column of its own 8-row tile (by the whole CTA, or with own_rows by each warp,
 * only the slice of its slot's row that it reads: cuda_small_rows bit 4); the parts' sums added
 * in part order, then down_res_add. */
template <int KS, bool NOMATH = false, bool BULK = false, bool HALF = false>
__global__ void __launch_bounds__(HALF ? 256 : 512, HALF ? 3 : 0) /* HALF: one token only */
    down_res_kernel(float *x, const uint16_t *act, const uint8_t *blocks, const uint8_t *scales,
                    const uint16_t *bias, const int32_t *top_e, const float *top_w, int top_k,
                    int N, int K, int own_rows) {
    /* BULK: cuda_small_bulk bit 4. HALF (cuda_small_rows bit 16): a CTA per 8 rows, half of a
     * 16-row tile (its rows in the MMA's rows g, the others zeros), so that the grid of the
     * 120b shape is 360 CTAs, about as many on each SM, instead of 180 on 132 SMs; each row's
     * sums are the 16-row form's. */
    constexpr int ROWS = HALF ? 8 : 16;
    constexpr int STAGES = 8;
    /* (S rounded up to 8, moe3_kpad(K) + 16), then with KS > 1 the parts' sums (4, 32, 4) */
    extern __shared__ __align__(16) uint16_t xs8[];
    __shared__ int slot_s[16];
    int S = (blockDim.x >> 5) / KS, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int slot = warp % S, kp = warp / S, tq = lane & 3;
    int nb = K / 32, nc = (nb + 3) / 4, ld = moe3_kpad(K) + 16;
    int per = (nc + KS - 1) / KS, cb = kp * per, ce = min(nc, cb + per);
    TL_MARK(CUDA_TL_DOWN, 0);
    int e = __ldcg(top_e + slot); /* complete: see above */
    const uint4 *wp[1];
    const uint8_t *sp[1];
    bool tv[1];
    int hoff = HALF ? (blockIdx.x & 1) * 32 : 0; /* HALF: rows g + 8 are units 32.. of a block */
    moe3_tiles<1, 16>(wp, sp, tv, blocks, scales, e, N, nc, 0, lane + hoff, lane + hoff,
                      HALF ? (int)blockIdx.x >> 1 : -1);
    const uint4 zero4 = make_uint4(0, 0, 0, 0);
    uint4 wr[STAGES][1][2];
    uint32_t sr[STAGES][1][2];
    auto load = [&](uint4(&wq)[1][2], uint32_t(&sc)[1][2], int c) {
        bool ok = c < ce && 4 * c + tq < nb && tv[0];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            wq[0][h] = ok && (!HALF || h == 0) ? ld_stream(wp[0] + c * 64 + h * 32) : zero4;
            sc[0][h] = ok && (!HALF || h == 0) ? __ldg(sp[0] + c * 64 + h * 32) : 0u;
        }
    };
#pragma unroll
    for (int st = 0; st < STAGES - 1; st++) load(wr[st], sr[st], cb + st);
    /* x too: its last writer, o_res, was done before the router passed its wait, which came
     * before its trigger, and gate_up's, which launched this kernel, came after gate_up's wait */
    float xo = 0.0f;
    if (threadIdx.x < S / top_k * ROWS)
        xo = __ldcg(x + (size_t)(threadIdx.x / ROWS) * N + blockIdx.x * ROWS + threadIdx.x % ROWS);
    if (kp == 0 && lane == 0) prefetch_l1(bias + (size_t)e * N + blockIdx.x * ROWS);
    if (threadIdx.x == 0) prefetch_l1(top_w);
    __shared__ __align__(8) uint64_t abar;
    if (BULK) { /* each slot's act row whole and unswizzled by bulk copies; zeros past K now */
        for (int i = threadIdx.x; i < S * (ld - 16 - K); i += blockDim.x)
            xs8[(i / (ld - 16 - K)) * ld + K + i % (ld - 16 - K)] = 0;
        mbar_init(&abar);
        __syncthreads();
    }
    pdl_wait();
    TL_MARK(CUDA_TL_DOWN, 1);
    pdl_trigger();
    if (BULK) {
        if (threadIdx.x == 0) {
            mbar_expect(&abar, S * K * 2);
            for (int r = 0; r < S; r++) bulk_load(xs8 + r * ld, act + (size_t)r * K, K * 2, &abar);
        }
        mbar_wait0(&abar);
    } else if (own_rows) { /* the warp's slice of its slot's row, at moe3_stage_tokens' places */
        uint16_t *row = xs8 + slot * ld;
        for (int q = cb * 16 + lane; q < ce * 16; q += 32) {
            uint16_t *d = row + moe3_unit_at(q);
            if (q < K / 8)
                cp_async16(d, act + (size_t)slot * K + q * 8);
            else
                *reinterpret_cast<uint4 *>(d) = zero4;
        }
        cp_async_commit();
        cp_async_wait0();
        __syncwarp();
    } else {
        if (threadIdx.x < 16) slot_s[threadIdx.x] = threadIdx.x < S ? (int)threadIdx.x : -1;
        __syncthreads();
        moe3_stage_tokens<true>(xs8, slot_s, act, slot_s, S, (S + 7) / 8, 1, K, ld);
        cp_async_wait0();
        __syncthreads();
    }
    TL_MARK(CUDA_TL_DOWN, 3);
    const char *xrow = reinterpret_cast<const char *>(xs8 + slot * ld) + tq * 64;
    float acc[1][1][4];
    moe3_zero<1, 1>(acc);
    for (int c0 = cb; c0 < ce; c0 += STAGES) {
#pragma unroll
        for (int st = 0; st < STAGES; st++) {
            int c = c0 + st;
            if (c >= ce) break;
            load(wr[(st + STAGES - 1) % STAGES], sr[(st + STAGES - 1) % STAGES], c + STAGES - 1);
            if (NOMATH) /* cuda_small_nomath: the loads kept, the arithmetic a fold */
                acc[0][0][0] += nomath_fold(wr[st][0], sr[st][0], xrow + c * 256);
            else
                moe3_superchunk<1, 1>(acc, wr[st], sr[st], xrow + c * 256, 16 * ld,
                                      BULK ? 0 : moe3_swz(tq), 1);
        }
    }
    TL_MARK(CUDA_TL_DOWN, 4);
    if (KS > 1) { /* the later parts' sums onto part 0's, in part order */
        auto part = reinterpret_cast<float(*)[32][4]>(xs8 + (S + 7) / 8 * 8 * ld);
        if (kp > 0)
#pragma unroll
            for (int i = 0; i < 4; i++) part[(kp - 1) * S + slot][lane][i] = acc[0][0][i];
        __syncthreads();
        if (kp == 0)
            for (int p = 1; p < KS; p++)
#pragma unroll
                for (int i = 0; i < 4; i++) acc[0][0][i] += part[(p - 1) * S + slot][lane][i];
    }
    down_res_add<ROWS>(x, xo, acc, bias, top_w, e, top_k, N, S, blockIdx.x * ROWS);
    TL_MARK(CUDA_TL_DOWN, 2);
}

/* ---- the split form of the expert kernels for steps of a few tokens (cuda_small_split) ----
 *
 * Version 3's small tile gives each warp a 16-row tile over the whole of K: at one token a
 * layer's gate_up is 1440 warps of 23 super-chunks each, about 11 an SM, and Nsight Compute
 * finds them waiting on their own arithmetic as much as on memory (a chain of 8 dependent MMAs
 * per super-chunk, 1.5 TB/s). The split form gives a tile's K to SPLIT_KS warps of a CTA, each
 * loading all of its SPLIT_CH super-chunks at once (no ring), staging only its own slice of the
 * token rows (no CTA barrier before the math), and adding the parts in part order at the end:
 * more, shorter warps, in about three waves. One token takes 8 parts of 3 super-chunks, more
 * tokens 4 of 6 (each part stages every token of its expert; worker/cuda/NOTES.md has the
 * shapes measured). down_res takes two parts at one token. The arithmetic of each super-chunk
 * is moe3_superchunk's; only the order of the parts' sums differs from version 3's, so the
 * results agree to float rounding, not bit for bit. */
/* Token rows staged at a time; super-chunks of K a CTA covers (both shapes: 8 x 3 and 4 x 6). */
enum { SPLIT_TOK = 4, SPLIT_MAX_SC = 24 };

/* gate_up_split_kernel's shared memory: a zero slice of CH super-chunks, then each of the KS
 * warps' SPLIT_TOK row slices of split_ldw(CH) elements (64 bytes of pad against bank
 * conflicts). */
__host__ __device__ constexpr int split_ldw(int ch) {
    return ch * 128 + 32;
}
__host__ __device__ constexpr size_t split_smem(int ks, int ch) {
    return (size_t)(ch * 128 + ks * SPLIT_TOK * split_ldw(ch)) * 2;
}

/* An empty asm volatile that "changes" a super-chunk's weights and scales: nothing computed from
 * them moves above the asm volatile statements (the MMAs) before it. */
__device__ __forceinline__ void fence_regs(uint4 (&w)[2], uint32_t (&sc)[2]) {
    asm volatile(""
                 : "+r"(w[0].x), "+r"(w[0].y), "+r"(w[0].z), "+r"(w[0].w), "+r"(w[1].x),
                   "+r"(w[1].y), "+r"(w[1].z), "+r"(w[1].w), "+r"(sc[0]), "+r"(sc[1]));
}

/* The defaults of the mask switches below (each measured in worker/cuda/NOTES.md). */
enum { SMALL_TRIGGER_DEFAULT = 19, SMALL_PERSIST_DEFAULT = 18, SMALL_ROWS_DEFAULT = 1 };

/* The switches below: set *sw to mask, return what it was. */
static int swap_mask(int *sw, int mask) {
    int was = *sw;
    *sw = mask;
    return was;
}

extern "C" int cuda_small_bulk(int mask) { /* small_bulk's switch (common.cuh) */
    return swap_mask(&small_bulk, mask & 63);
}

/* Measurement only (cuda_small_nomath): bit 1, gate_up at one token without its arithmetic;
 * bit 2, down likewise (the loads, stores and barriers stay; the results are meaningless); bit 4,
 * gate_up at one token with half of its first wave 1 us late (the results are right). */
static int small_nomath = 0;

extern "C" int cuda_small_nomath(int mask) {
    return swap_mask(&small_nomath, mask & 7);
}

/* Whether the split form serves steps of a few tokens (cuda_small_split; on by default). */
static bool small_split = true;

extern "C" int cuda_small_split(int on) {
    int was = small_split;
    small_split = on != 0;
    return was;
}

/* Warps a row of o_res's split form (cuda_small_o_split); 1 is gemv_res_kernel. Four, the
 * default, measured fastest at one token (worker/cuda/NOTES.md). */
static int o_split = 4;

extern "C" int cuda_small_o_split(int ks) {
    int was = o_split;
    if (ks == 1 || ks == 2 || ks == 4 || ks == 8) o_split = ks;
    return was;
}

/* Latency switches of the one-token kernels (cuda_small_trigger): bit 1, o_proj's split form
 * lets the next kernel launch from its start instead of after its math (the router's rows then
 * load during o_proj's last wave); bit 2, the router on a cluster (router7c_kernel); bit 16, the
 * cluster router's top-k by rank (router_topk_rank) instead of in rounds. All three on by
 * default (19): measured faster and checked bit for bit on a GPU (worker/cuda/NOTES.md). Bit 32:
 * each expert's rank counted by four threads, over a quarter of the logits each, instead of
 * one. */
static int small_trigger = SMALL_TRIGGER_DEFAULT;

extern "C" int cuda_small_trigger(int mask) {
    return swap_mask(&small_trigger, mask);
}

/* Which one-token kernels run with their CTAs all resident (cuda_small_persist): bit 2, q/k/v
 * looping over its pairs (qkv7_kernel on a grid that fits at once); bit 16, q/k/v with a pair a
 * warp, three CTAs an SM and part of each row in shared memory (qkv7_res_kernel; over bit 2
 * where both are set and H allows it). Both on by default (18), each measured in
 * worker/cuda/NOTES.md. The looping forms of gate_up (also with the next item's weights in shared
 * memory) and o_proj (its second row loaded after the first's math, or before the wait through
 * shared memory) measured slower and are gone. */
static int small_persist = SMALL_PERSIST_DEFAULT;

extern "C" int cuda_small_persist(int mask) {
    return swap_mask(&small_persist, mask);
}

/* How the expert kernels at a few tokens stage their token rows (cuda_small_rows): bit 1,
 * gate_up's through L1 (on by default, measured faster: worker/cuda/NOTES.md), else from L2;
 * bit 4, down's act rows by each warp for itself, with no CTA barrier; bit 16, down at one
 * token a CTA per 8 rows instead of 16 (down_res_kernel's HALF). */
static int small_rows = SMALL_ROWS_DEFAULT;

extern "C" int cuda_small_rows(int mask) {
    return swap_mask(&small_rows, mask & 21);
}

/* The one-token switches by their command-line names (cuda-bench, cuda-check): each value a
 * decimal mask of the bits its switch knows. */
extern "C" int cuda_small_option(const char *name, const char *value, char *err, size_t n) {
    static const struct {
        const char *name;
        int bits;
        int (*set)(int);
        const char *what;
    } opts[] = {
        {"--persist", 18, cuda_small_persist,
         "2 (q/k/v looping) and 16 (q/k/v a pair a warp, rows partly in shared memory)"},
        {"--trigger", 51, cuda_small_trigger,
         "1 (o_proj lets the router launch from its start), 2 (the router on a cluster), 16 (the "
         "cluster router's top-k by rank) and 32 (its ranks four threads an expert)"},
        {"--rows", 21, cuda_small_rows,
         "1 (gate_up's token row through L1), 4 (down's act rows a warp's own) and 16 (down 8 "
         "rows a CTA)"},
        {"--bulk", 63, cuda_small_bulk,
         "1 (q/k/v's x), 2 (the router's x), 4 (down's act rows), 8 (o_proj's input row), 16 "
         "(attention's q) and 32 (gate_up's token row), by bulk copies"},
        {"--no-math", 7, cuda_small_nomath,
         "1 (gate_up) and 2 (down) without their arithmetic, 4 (gate_up's first wave half "
         "late)"},
    };
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        if (strcmp(name, opts[i].name)) continue;
        char *end;
        long m = strtol(value, &end, 10);
        if (end == value || *end || m < 0 || (m & ~(long)opts[i].bits)) {
            snprintf(err, n, "%s %s: a mask of %s", name, value, opts[i].what);
            return -1;
        }
        opts[i].set((int)m);
        return 0;
    }
    return 1;
}

/* Every switch that cuda_small_option sets back to its default. */
extern "C" void cuda_small_defaults(void) {
    small_trigger = SMALL_TRIGGER_DEFAULT, small_persist = SMALL_PERSIST_DEFAULT;
    small_rows = SMALL_ROWS_DEFAULT, small_bulk = 0, small_nomath = 0;
}

/* CTAs of kernel k (block threads, smem bytes) that fit the GPU at once; the engine thread is
 * the only caller. */
template <typename K> static int resident_ctas(K k, int block, size_t smem) {
    int dev = 0, sms = 0, per = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, k, block, smem) != cudaSuccess)
        return 0;
    return sms * per;
}

/* Whether gate_up runs in the split form at this shape (cuda_moe_gate_up_small): K of up to
 * SPLIT_MAX_SC super-chunks (H <= 3072). */
static bool split_serves(int T, int top_k, int H, int I) {
    return small_split && H % 32 == 0 && (H / 32 + 3) / 4 <= SPLIT_MAX_SC && I % 8 == 0 &&
           T * top_k <= 16;
}

extern "C" int cuda_small_topk_only(int T, int top_k, int H, int I) {
    return T == 1 && split_serves(T, top_k, H, I);
}

/* gate_up, split: grid (N / 16 tiles, min(S, E) experts), SPLIT_KS warps. One token (S ==
 * top_k): CTA y serves slot y and its expert top_e[y] (no grouping needed); more: the y-th
 * touched expert (moe_expert), its tokens SPLIT_TOK at a time. K at most SPLIT_KS * SPLIT_CH
 * super-chunks. Each super-chunk's weights are fenced (fence_regs) so that the compiler decodes
 * one at a time: unfenced, it decoded them all ahead of the MMA chain and spilled. */
template <int SPLIT_KS, int SPLIT_CH, int MINB, int LAB = 0, bool BULK = false>
__global__ void __launch_bounds__(32 * SPLIT_KS, MINB)
    gate_up_split_kernel(uint16_t *act, const uint16_t *xn, const uint8_t *blocks,
                         const uint8_t *scales, const uint16_t *bias, const int32_t *top_e,
                         const int32_t *e_start, const int32_t *e_slots, int S, int top_k, int E,
                         int N, int K, float limit, int rows) {
    constexpr int CH = SPLIT_CH, LDW = split_ldw(CH);
    extern __shared__ __align__(16) uint16_t sxs[]; /* split_smem's layout */
    __shared__ float part[SPLIT_KS - 1][32][4];
    __shared__ int slot_s[SPLIT_TOK];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    int nb = K / 32, nc = (nb + 3) / 4, cb = warp * CH, ce = min(nc, cb + CH);
    uint16_t *zrow = sxs, *xw = sxs + CH * 128 + warp * SPLIT_TOK * LDW;
    const uint4 zero4 = make_uint4(0, 0, 0, 0);
    TL_MARK(CUDA_TL_GATE_UP, 0);
    for (int i = threadIdx.x; i < CH * 16; i += blockDim.x)
        reinterpret_cast<uint4 *>(zrow)[i] = zero4;
    /* BULK (one token only, cuda_small_bulk bit 32): the token row whole and unswizzled after the
     * zero row, by one bulk copy right after the wait; zeros past K now */
    __shared__ __align__(8) uint64_t rbar;
    uint16_t *rowb = sxs + CH * 128;
    if (BULK) {
        for (int i = K + threadIdx.x; i < SPLIT_KS * CH * 128; i += blockDim.x) rowb[i] = 0;
        mbar_init(&rbar);
    }
    __syncthreads(); /* the zero row is read by every warp's lanes past the tokens */
    pdl_wait();
    TL_MARK(CUDA_TL_GATE_UP, 1);
    if (BULK) bulk_one(rowb, xn, K * 2, &rbar);
    /* cuda_small_nomath bit 4 (measurement): every other CTA of the first expert's row, most of
     * the first wave, asks for its weights 1 us late, so that the SMs' CTAs no longer load and
     * compute in step */
    if (LAB == 2 && blockIdx.y == 0 && (blockIdx.x & 1)) __nanosleep(1000);
    int e, beg, cnt;
    bool one = S == top_k;
    if (one) {
        e = top_e[blockIdx.y], beg = 0, cnt = 1;
    } else if (!moe_expert(e_start, E, e, beg, cnt)) {
        return;
    }
    const uint4 *wp[1];
    const uint8_t *sp[1];
    bool tv[1];
    moe3_tiles<1, 16>(wp, sp, tv, blocks, scales, e, N, nc, 0, lane, lane);
    if (threadIdx.x == 0) prefetch_l1(bias + (size_t)e * N + blockIdx.x * 16); /* the epilogue's */
    uint4 wv[CH][1][2];
    uint32_t sv[CH][1][2];
#pragma unroll
    for (int j = 0; j < CH; j++) {
        int c = cb + j;
        bool ok = c < ce && 4 * c + tq < nb && tv[0];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            wv[j][0][h] = ok ? ld_stream(wp[0] + c * 64 + h * 32) : zero4;
            sv[j][0][h] = ok ? __ldg(sp[0] + c * 64 + h * 32) : 0u;
        }
    }
    for (int c0 = 0; c0 < cnt; c0 += SPLIT_TOK) {
        int n = min(SPLIT_TOK, cnt - c0);
        int myslot = lane < n ? (one ? (int)blockIdx.y : e_slots[beg + c0 + lane]) : 0;
        if (warp == 0 && lane < n) slot_s[lane] = myslot;
        __syncwarp();
        /* this warp's slice of each token row, each unit at moe3_stage_tokens' place */
        for (int r = 0; !BULK && r < n; r++) {
            int src = __shfl_sync(0xffffffffu, myslot, r) / top_k;
            for (int q = lane; q < CH * 16; q += 32) {
                int gu = cb * 16 + q; /* the unit in the whole row; the slice starts at cb */
                uint16_t *dst = xw + r * LDW + moe3_unit_at(gu) - cb * 128;
                if (gu >= K / 8)
                    *reinterpret_cast<uint4 *>(dst) = zero4;
                else if (rows & 1) /* every CTA of the SM reads the same rows (cuda_small_rows) */
                    cp_async16<true>(dst, xn + (size_t)src * K + gu * 8);
                else
                    cp_async16(dst, xn + (size_t)src * K + gu * 8);
            }
        }
        if (BULK) {
            mbar_wait0(&rbar);
        } else {
            cp_async_commit();
            cp_async_wait0();
            __syncwarp();
        }
        TL_MARK(CUDA_TL_GATE_UP, 3);
        const uint16_t *xr0 = BULK ? rowb + cb * 128 : xw;
        const char *xrow = reinterpret_cast<const char *>(gq < n ? xr0 + gq * LDW : zrow) + tq * 64;
        float acc[1][1][4];
        moe3_zero<1, 1>(acc);
#pragma unroll
        for (int j = 0; j < CH; j++) {
            /* one super-chunk decoded at a time: the compiler would otherwise decode them all
             * ahead of the MMA chain, into registers the weights need (ordered after the MMAs
             * before it, as every asm volatile) */
            fence_regs(wv[j][0], sv[j][0]);
            if (LAB == 1) /* cuda_small_nomath: the loads kept, the arithmetic a fold */
                acc[0][0][0] += nomath_fold(wv[j][0], sv[j][0], xrow + j * 256);
            else if (cb + j < ce)
                moe3_superchunk<1, 1>(acc, wv[j], sv[j], xrow + j * 256, 0, BULK ? 0 : moe3_swz(tq),
                                      1);
        }
        pdl_trigger(); /* the down projection's CTAs now, beside this one's sums and stores */
        TL_MARK(CUDA_TL_GATE_UP, 4);
        if (warp > 0)
#pragma unroll
            for (int i = 0; i < 4; i++) part[warp - 1][lane][i] = acc[0][0][i];
        __syncthreads();
        if (warp == 0) {
            for (int p = 1; p < SPLIT_KS; p++)
#pragma unroll
                for (int i = 0; i < 4; i++) acc[0][0][i] += part[p - 1][lane][i];
            moe3_epilogue<false, 1, 1>(act, acc, bias, e, N, blockIdx.x * 16 + gq, 1, n, slot_s,
                                       NULL, limit, gq, tq);
        }
        __syncthreads(); /* part and slot_s are free again; the rows are each warp's own */
    }
    TL_MARK(CUDA_TL_GATE_UP, 2);
}

/* ---- launchers ---- */

extern "C" int cuda_qkv7(float *q, uint16_t *kcache, uint16_t *vcache, const float *x,
                         const uint16_t *g, const uint16_t *w, const uint16_t *bias,
                         const int32_t *positions, const int32_t *slots, const float *inv_freq,
                         float concentration, int T, int H, int n_heads, int n_kv_heads, int D,
                         int block_size, float eps, cudaStream_t s) {
    if (T < 1 || T > GEMV_MAX_T || H < 8 || H % 8 || H > RMSNORM_PER * RMSNORM_THREADS || D < 2 ||
        D % 2 || D / 2 > ROPE_MAX_HALF)
        return (int)cudaErrorInvalidValue;
    static_assert(GEMV_MAX_T == 4, "one instantiation per token count");
    static void (*const k[GEMV_MAX_T])(
        float *, uint16_t *, uint16_t *, const float *, const uint16_t *, const uint16_t *,
        const uint16_t *, const int32_t *, const int32_t *, const float *, float, int, int, int,
        int, int, float) = {qkv7_kernel<1>, qkv7_kernel<2>, qkv7_kernel<3>, qkv7_kernel<4>};
    int pairs = (n_heads + 2 * n_kv_heads) * (D / 2), per = RMSNORM_THREADS / 32;
    int grid = (pairs + per - 1) / per;
    if (T == 1 && (small_persist & 16) && H / 8 > 32 * QKV_RES_REG) { /* a pair a warp, at once */
        static size_t set, setb;
        bool bulk = (small_bulk & 1) && aligned16(x);
        size_t smem = qkv_res_smem(H) + (bulk ? (size_t)H * 4 : 0);
        int e = bulk ? smem_limit(qkv7_res_kernel<true>, smem, &setb)
                     : smem_limit(qkv7_res_kernel<false>, smem, &set);
        if (e) return e;
        return pdl_launch(bulk ? qkv7_res_kernel<true> : qkv7_res_kernel<false>, grid,
                          RMSNORM_THREADS, smem, s, q, kcache, vcache, x, g, w, bias, positions,
                          slots, inv_freq, concentration, H, n_heads, n_kv_heads, D, block_size,
                          eps);
    }
    if (T == 1 && (small_persist & 2)) { /* the CTAs that fit at once, looping over the pairs */
        static int fit; /* bound by the kernel's registers (2 CTAs an SM), not by H's smem */
        if (!fit) fit = resident_ctas(k[0], RMSNORM_THREADS, (size_t)H * 2);
        if (fit > 0 && fit < grid) grid = fit;
    }
    return pdl_launch(k[T - 1], grid, RMSNORM_THREADS, (size_t)T * H * 2, s, q, kcache, vcache, x,
                      g, w, bias, positions, slots, inv_freq, concentration, H, n_heads, n_kv_heads,
                      D, block_size, eps);
}

extern "C" int cuda_gemv_res(float *x, const uint16_t *in, const uint16_t *w, const uint16_t *bias,
                             int T, int N, int K, cudaStream_t s) {
    if (T < 1 || T > GEMV_MAX_T || N < 1 || K < 8 || K % 8) return (int)cudaErrorInvalidValue;
    static void (*const k[GEMV_MAX_T])(float *, const uint16_t *, const uint16_t *,
                                       const uint16_t *, int, int) = {
        gemv_res_kernel<1>, gemv_res_kernel<2>, gemv_res_kernel<3>, gemv_res_kernel<4>};
    if (small_split && T == 1 && o_split > 1) {
        bool bulk = (small_bulk & 8) && o_split == 4 && K <= 16384 && aligned16(in); /* K % 8 */
        void (*ks)(float *, const uint16_t *, const uint16_t *, const uint16_t *, int, int, int) =
            bulk           ? o_res_split_kernel<4, true>
            : o_split == 2 ? o_res_split_kernel<2>
                           : (o_split == 4 ? o_res_split_kernel<4> : o_res_split_kernel<8>);
        int rows = GEMV_WARPS / o_split;
        return pdl_launch(ks, (N + rows - 1) / rows, 32 * GEMV_WARPS, bulk ? (size_t)K * 2 : 0, s,
                          x, in, w, bias, N, K, small_trigger & 1);
    }
    return pdl_launch(k[T - 1], (N + GEMV_WARPS - 1) / GEMV_WARPS, 32 * GEMV_WARPS, 0, s, x, in, w,
                      bias, N, K);
}

extern "C" int cuda_router7(float *logits, int *count, uint16_t *xn, const float *x,
                            const uint16_t *g, const uint16_t *w, const uint16_t *bias,
                            int32_t *top_e, float *top_w, int32_t *e_start, int32_t *e_slots, int T,
                            int E, int H, float eps, int top_k, cudaStream_t s) {
    if (T < 1 || T > GEMV_MAX_T || E < 1 || E > RMSNORM_THREADS || H < 8 || H % 8 ||
        H > RMSNORM_PER * RMSNORM_THREADS || top_k < 1 || top_k > 8 || top_k > E)
        return (int)cudaErrorInvalidValue;
    static void (*const k[GEMV_MAX_T])(float *, int *, uint16_t *, const float *, const uint16_t *,
                                       const uint16_t *, const uint16_t *, int32_t *, float *,
                                       int32_t *, int32_t *, int, int, float, int) = {
        router7_kernel<1>, router7_kernel<2>, router7_kernel<3>, router7_kernel<4>};
    if (T == 1 && !e_start && (small_trigger & 2) && E <= ROUTER_CL * ROUTER_CL_WARPS) {
        bool bulk = (small_bulk & 2) && aligned16(x);
        return pdl_launch(bulk ? router7c_kernel<true> : router7c_kernel<false>, ROUTER_CL,
                          32 * ROUTER_CL_WARPS, (size_t)H * (bulk ? 6 : 2), s, logits, xn, x, g, w,
                          bias, top_e, top_w, E, H, eps, top_k,
                          (small_trigger & 16) && E % 4 == 0 ? (small_trigger & 32 ? 2 : 1) : 0);
    }
    size_t smem = (size_t)((2 * E + 32 + 3) & ~3) * sizeof(int) + (size_t)T * H * 2;
    return pdl_launch(k[T - 1], (E + GEMV_WARPS - 1) / GEMV_WARPS, RMSNORM_THREADS, smem, s, logits,
                      count, xn, x, g, w, bias, top_e, top_w, e_start, e_slots, E, H, eps, top_k);
}

extern "C" int cuda_moe_down_res(float *x, const uint16_t *act, const uint8_t *blocks,
                                 const uint8_t *scales, const uint16_t *bias, const int32_t *top_e,
                                 const float *top_w, int T, int top_k, int H, int I,
                                 cudaStream_t s) {
    int S = T * top_k;
    if (T < 1 || S > 16 || I % 32 || H % 16 || I > 8192) return (int)cudaErrorInvalidValue;
    size_t smem = (size_t)(S + 7) / 8 * 8 * (moe3_kpad(I) + 16) * 2;
    if (small_split && S <= 4) {                    /* two parts of K: 8 warps a CTA at one token */
        smem += (size_t)S * 32 * 4 * sizeof(float); /* part 1's sums, (S, 32 lanes, 4) */
        bool nm = T == 1 && (small_nomath & 2), bulk = T == 1 && (small_bulk & 4) && aligned16(act);
        bool half = T == 1 && (small_rows & 16) && !nm; /* nm: the 16-row kernel */
        typedef void (*down_k)(float *, const uint16_t *, const uint8_t *, const uint8_t *,
                               const uint16_t *, const int32_t *, const float *, int, int, int,
                               int);
        static const down_k ks[5] = {down_res_kernel<2>, down_res_kernel<2, false, false, true>,
                                     down_res_kernel<2, false, true>,
                                     down_res_kernel<2, false, true, true>,
                                     down_res_kernel<2, true>};
        static size_t set2[5]; /* each kernel's shared-memory limit, as set */
        int v = nm ? 4 : (bulk ? 2 : 0) + (half ? 1 : 0);
        int e = smem_limit(ks[v], smem, &set2[v]);
        if (e) return e;
        return pdl_launch(ks[v], H / (half ? 8 : 16), 32 * S * 2, smem, s, x, act, blocks, scales,
                          bias, top_e, top_w, top_k, H, I, (small_rows & 4) ? 1 : 0);
    }
    static size_t set;
    int e = smem_limit(down_res_kernel<1>, smem, &set);
    if (e) return e;
    return pdl_launch(down_res_kernel<1>, H / 16, 32 * S, smem, s, x, act, blocks, scales, bias,
                      top_e, top_w, top_k, H, I, (small_rows & 4) ? 1 : 0);
}

template <int KS, int CH, int MINB>
static int gate_up_split_launch(uint16_t *act, const uint16_t *xn, const uint8_t *blocks,
                                const uint8_t *scales, const uint16_t *bias, const int32_t *top_e,
                                const int32_t *e_start, const int32_t *e_slots, int S, int top_k,
                                int E, int N, int H, float limit, cudaStream_t s) {
    static_assert(KS * CH == SPLIT_MAX_SC, "split_serves' bound on K");
    dim3 grid(N / 16, S < E ? S : E);
    static_assert(KS * CH * 128 <= SPLIT_TOK * KS * split_ldw(CH), "BULK's row in the slices");
    bool one = S == top_k, bulk = one && (small_bulk & 32) && aligned16(xn); /* H % 32 too */
    return pdl_launch(one && (small_nomath & 1)   ? gate_up_split_kernel<KS, CH, MINB, 1>
                      : one && (small_nomath & 4) ? gate_up_split_kernel<KS, CH, MINB, 2>
                      : bulk                      ? gate_up_split_kernel<KS, CH, MINB, 0, true>
                                                  : gate_up_split_kernel<KS, CH, MINB>,
                      grid, 32 * KS, split_smem(KS, CH), s, act, xn, blocks, scales, bias, top_e,
                      e_start, e_slots, S, top_k, E, N, H, limit, small_rows);
}

extern "C" int cuda_moe_gate_up_small(uint16_t *act, const uint16_t *xn, const uint8_t *blocks,
                                      const uint8_t *scales, const uint16_t *bias,
                                      const int32_t *top_e, const int32_t *e_start,
                                      const int32_t *e_slots, int T, int top_k, int E, int I, int H,
                                      float limit, cudaStream_t s) {
    if (!split_serves(T, top_k, H, I))
        return cuda_moe_gate_up(act, xn, blocks, scales, bias, e_start, e_slots, T, top_k, E, I, H,
                                limit, 7, s);
    /* one token: 8 parts of 3 super-chunks; more (each expert's tokens staged by every part): 4
     * of 6 (worker/cuda/NOTES.md) */
    if (T == 1)
        return gate_up_split_launch<8, 3, 3>(act, xn, blocks, scales, bias, top_e, e_start, e_slots,
                                             top_k, top_k, E, 2 * I, H, limit, s);
    return gate_up_split_launch<4, 6, 5>(act, xn, blocks, scales, bias, top_e, e_start, e_slots,
                                         T * top_k, top_k, E, 2 * I, H, limit, s);
}
