/* moe.cuh - router top-k + softmax + grouping by expert (one kernel), and the two MXFP4 expert
 * GEMMs. CPU twins: route, ex_task, ops_mxfp4_row, ops_swiglu in worker/cpu.
 *
 * The expert GEMMs run on the bf16 tensor cores (mma.sync m16n8k16; H100 has no FP4 ones): each
 * warp owns 16 weight rows of one expert and walks K one MXFP4 block (32 inputs) at a time, the
 * codes and scale read straight from memory into registers and decoded there into the A
 * fragment, so weights cross memory once per step per expert in their 4.25-bit form. The
 * expert's tokens (16 or 8 at a time) sit in shared memory as the B operand; a chunk of tokens
 * re-reads the warp's weights from L2, not from memory. The grid is (row tiles, experts) and
 * experts without tokens exit at once, so nothing needs the routing on the host and the step
 * can be captured in a graph. */
#pragma once

#include <type_traits>

#include "common.cuh"
#include "gemv.cuh"

/* Tile versions (the `version` argument of the launchers), both checked by cuda-check:
 *   1: 4 warps (64 rows) per CTA, 16 tokens per chunk: 92 KB of shared memory, 2 CTAs per SM;
 *   2: 8 warps (128 rows), 8 tokens: 46 KB and 57-64 registers, so 3-4 CTAs per SM: three to
 *      four times the warps (and weight loads in flight) per SM, and each staged token row
 *      serves twice the weight rows. */
enum { MOE_V1_WARPS = 4, MOE_V1_TOK = 16, MOE_V2_WARPS = 8, MOE_V2_TOK = 8 };

/* ---- kernels ---- */

/* Router, in two kernels: a warp per token picks its top_k experts and their softmax weights
 * (many CTAs), then one CTA groups the slots by expert. Lanes hold experts e = lane + 32 c
 * (the first ROUTER_REG * 32 of them in registers);
 * each of the top_k rounds is a warp arg-max with ties to the lower index (the CPU scans
 * upwards with a strict >). */
enum { ROUTER_WARPS = 8, ROUTER_REG = 8 };

/* Token t's top K experts and weights, by one warp. The logits are read from L2: in
 * router_gemv_kernel other CTAs of the same grid wrote them. */
template <bool SMEM = false> /* logits in this CTA's shared memory (plain loads), else __ldcg */
__device__ __forceinline__ void router_topk_token(int32_t *top_e, float *top_w, const float *logits,
                                                  const uint16_t *bias, int t, int E, int K) {
    int lane = threadIdx.x & 31;
    const float *lg = logits + (size_t)t * E;
    /* experts below ROUTER_REG * 32 stay in registers across the rounds */
    float lv[ROUTER_REG];
#pragma unroll
    for (int c = 0; c < ROUTER_REG; c++) {
        int e = lane + 32 * c;
        lv[c] = e < E ? (SMEM ? lg[e] : __ldcg(lg + e)) + bf16f(bias[e]) : 0.0f;
    }
    uint32_t taken = 0;
    float val[8];
    int idx[8];
#pragma unroll
    for (int k = 0; k < 8; k++) {
        if (k >= K) break;
        float bv = -INFINITY;
        int bi = 0x7fffffff;
#pragma unroll
        for (int c = 0; c < ROUTER_REG; c++) {
            int e = lane + 32 * c;
            if (e >= E || (taken >> c & 1)) continue;
            if (bi == 0x7fffffff || lv[c] > bv) bv = lv[c], bi = e;
        }
        for (int e = lane + 32 * ROUTER_REG, c = ROUTER_REG; e < E; e += 32, c++) {
            if (taken >> c & 1) continue;
            float v = (SMEM ? lg[e] : __ldcg(lg + e)) + bf16f(bias[e]);
            if (bi == 0x7fffffff || v > bv) bv = v, bi = e;
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (oi != 0x7fffffff && (bi == 0x7fffffff || ov > bv || (ov == bv && oi < bi)))
                bv = ov, bi = oi;
        }
        if ((bi & 31) == lane) taken |= 1u << (bi >> 5);
        val[k] = bv, idx[k] = bi;
    }
    if (lane == 0) {
        float mx = val[0], sum = 0.0f, w[8];
#pragma unroll
        for (int k = 0; k < 8; k++)
            if (k < K) sum += (w[k] = expf(val[k] - mx));
#pragma unroll
        for (int k = 0; k < 8; k++)
            if (k < K) {
                top_e[(size_t)t * K + k] = idx[k];
                top_w[(size_t)t * K + k] = w[k] / sum;
            }
    }
}

/* Whether router_topk_rank counts each expert's rank with four threads, each over a quarter of
 * the values (by 2, where the CTA has 4E threads and E is a multiple of 16), or with one (by 1);
 * and the expert whose rank this thread counts. */
__device__ __forceinline__ bool rank_four(int E, int by) {
    return by == 2 && (int)blockDim.x >= 4 * E && E % 16 == 0;
}
__device__ __forceinline__ int rank_expert(int E, int by) {
    return rank_four(E, by) ? (int)threadIdx.x >> 2 : (int)threadIdx.x;
}

/* router_topk_token's choices and weights for one token by every thread of the CTA at once,
 * expert e < E (E <= blockDim.x, a multiple of 4, E <= 256) on thread rank_expert(E, by), be its
 * router bias (read by the caller before its wait: a weight): its rank is the number of experts
 * ahead of it, a larger value or the same value at a lower index, the order in which
 * router_topk_token's rounds pick them, so that the K first are the same experts in the same
 * slots (for values that are not NaN); their weights are formed as there. logits in shared
 * memory. One pass over E values (or a quarter of them a thread, the four counts added) instead
 * of K rounds of warp reductions in a row. Every thread of the CTA calls it. */
__device__ __forceinline__ void router_topk_rank(int32_t *top_e, float *top_w, const float *lg,
                                                 float be, int E, int K, int by) {
    __shared__ __align__(16) float vs[256];
    __shared__ float kv[8];
    bool four = rank_four(E, by);
    int e = rank_expert(E, by), span = four ? E / 4 : E,
        j0 = four ? ((int)threadIdx.x & 3) * span : 0;
    bool lead = !four || (threadIdx.x & 3) == 0; /* the thread that stores e's results */
    float v = e < E ? lg[e] + be : 0.0f;
    if (e < E && lead) vs[e] = v;
    __syncthreads();
    int rank = 0;
    if (e < E)
        for (int j = j0; j < j0 + span; j += 4) {
            float4 u = *reinterpret_cast<const float4 *>(vs + j);
            rank += (u.x > v || (u.x == v && j < e)) + (u.y > v || (u.y == v && j + 1 < e)) +
                    (u.z > v || (u.z == v && j + 2 < e)) + (u.w > v || (u.w == v && j + 3 < e));
        }
    if (four) { /* the four quarters' counts; every lane of the warp takes part */
        rank += __shfl_xor_sync(0xffffffffu, rank, 1);
        rank += __shfl_xor_sync(0xffffffffu, rank, 2);
    }
    bool mine = e < E && lead && rank < K;
    if (mine) kv[rank] = v;
    __syncthreads();
    if (mine) {
        float mx = kv[0], sum = 0.0f, w = 0.0f;
        for (int k = 0; k < K; k++) {
            float wk = expf(kv[k] - mx);
            sum += wk;
            if (k == rank) w = wk;
        }
        top_e[rank] = e;
        top_w[rank] = w / sum;
    }
}

__global__ void __launch_bounds__(32 * ROUTER_WARPS)
    router_topk_kernel(int32_t *top_e, float *top_w, const float *logits, const uint16_t *bias,
                       int T, int E, int K) {
    pdl_trigger();
    pdl_wait();
    int t = blockIdx.x * ROUTER_WARPS + (threadIdx.x >> 5);
    if (t < T) router_topk_token(top_e, top_w, logits, bias, t, E, K);
}

/* One CTA: e_start (E + 1) = where each expert's slots begin in e_slots, e_slots = the T * K
 * slots grouped by expert (in no particular order within an expert: each slot's result does
 * not depend on its neighbours). */
__device__ __forceinline__ void router_group(int32_t *e_start, int32_t *e_slots,
                                             const int32_t *top_e, int S, int E) {
    extern __shared__ int rsm[]; /* count (E), cursor (E), warp totals (32) */
    int *count = rsm, *cursor = rsm + E, *wsum = rsm + 2 * E;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int i = threadIdx.x; i < E; i += blockDim.x) count[i] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < S; i += blockDim.x) atomicAdd(&count[top_e[i]], 1);
    __syncthreads();
    /* exclusive scan of count (E <= blockDim.x): within warps, then over the warp totals */
    int c = threadIdx.x < E ? count[threadIdx.x] : 0, run = c;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int u = __shfl_up_sync(0xffffffffu, run, o);
        if (lane >= o) run += u;
    }
    if (lane == 31) wsum[warp] = run;
    __syncthreads();
    if (warp == 0) {
        int nw = (blockDim.x + 31) >> 5, w = lane < nw ? wsum[lane] : 0;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            int u = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += u;
        }
        if (lane < nw) wsum[lane] = w; /* inclusive over warps */
    }
    __syncthreads();
    int excl = run - c + (warp ? wsum[warp - 1] : 0);
    if (threadIdx.x < E) e_start[threadIdx.x] = excl, cursor[threadIdx.x] = excl;
    if (threadIdx.x == E - 1) e_start[E] = excl + c;
    __syncthreads();
    for (int i = threadIdx.x; i < S; i += blockDim.x) {
        int p = atomicAdd(&cursor[top_e[i]], 1);
        e_slots[p] = i;
    }
}

__global__ void router_group_kernel(int32_t *e_start, int32_t *e_slots, const int32_t *top_e, int S,
                                    int E) {
    pdl_trigger();
    pdl_wait();
    router_group(e_start, e_slots, top_e, S, E);
}

/* Both in one CTA for a step of at most 32 tokens (a warp per token, then the grouping): one
 * kernel less per layer where the step is all latency. */
__global__ void __launch_bounds__(1024)
    router_small_kernel(int32_t *top_e, float *top_w, int32_t *e_start, int32_t *e_slots,
                        const float *logits, const uint16_t *bias, int T, int E, int K) {
    pdl_trigger();
    pdl_wait();
    for (int t = threadIdx.x >> 5; t < T; t += blockDim.x >> 5)
        router_topk_token(top_e, top_w, logits, bias, t, E, K);
    __syncthreads(); /* the CTA's writes of top_e are visible to all of it */
    router_group(e_start, e_slots, top_e, T * K, E);
}

/* The router of a step of up to GEMV_MAX_T tokens in one kernel: the logits (T, E) by
 * gemv_rows, a warp per expert, then the last CTA to finish (last_cta on *count) picks each
 * token's experts, a warp per token, and groups the slots (router_group; E <= the CTA's
 * threads). Same results as cuda_matmul_bf16 then cuda_router, one launch less per layer. */
template <int T>
__global__ void __launch_bounds__(32 * GEMV_WARPS)
    router_gemv_kernel(float *logits, int *count, const uint16_t *x, const uint16_t *w,
                       const uint16_t *bias, int32_t *top_e, float *top_w, int32_t *e_start,
                       int32_t *e_slots, int E, int K, int top_k) {
    gemv_rows<T>(logits, x, w, E, K);
    if (!last_cta(count, gridDim.x)) return;
    for (int t = threadIdx.x >> 5; t < T; t += GEMV_WARPS)
        router_topk_token(top_e, top_w, logits, bias, t, E, top_k);
    __syncthreads(); /* the CTA's writes of top_e are visible to all of it */
    router_group(e_start, e_slots, top_e, T * top_k, E);
    if (threadIdx.x == 0) *count = 0;
}

/* E8M0 → float: 2^(s-127); s = 0 is the subnormal 2^-127, s = 255 becomes inf (the CPU's ldexpf
 * gives the same). */
__device__ __forceinline__ float e8m0(uint32_t s) {
    return s ? __uint_as_float(s << 23) : __uint_as_float(0x00400000u);
}

/* One code byte (two e2m1 values, low nibble = lower k) → a bf16 pair, lower k in the low half. */
__device__ __forceinline__ uint32_t dq2(uint32_t byte, float scale, const float *lut) {
    __nv_bfloat162 p = __floats2bfloat162_rn(lut[byte & 15] * scale, lut[(byte >> 4) & 15] * scale);
    return *reinterpret_cast<uint32_t *>(&p);
}

/* The expert of this CTA's grid row, its first slot and slot count. A grid of E rows gives row
 * y expert y; a smaller one (a step of T tokens touches at most T * top_k experts) gives row y
 * the y-th expert that holds slots, so that no CTA is spent on the untouched ones (at batch 1,
 * 124 of 128 experts). Every thread of the CTA calls it; false: no work for this row. */
__device__ __forceinline__ bool moe_expert(const int32_t *e_start, int E, int &e, int &beg,
                                           int &cnt) {
    if ((int)gridDim.y >= E) {
        e = blockIdx.y, beg = e_start[e], cnt = e_start[e + 1] - beg;
        return cnt > 0;
    }
    __shared__ int pick[3];
    if (threadIdx.x < 32) {
        int lane = threadIdx.x, want = blockIdx.y;
        if (lane == 0) pick[0] = -1;
        __syncwarp();
#pragma unroll 4
        for (int c = 0; c < E; c += 32) {
            int i = c + lane, s0 = 0, s1 = 0;
            if (i < E) s0 = e_start[i], s1 = e_start[i + 1];
            unsigned m = __ballot_sync(0xffffffffu, s1 > s0);
            if (s1 > s0 && __popc(m & ((1u << lane) - 1u)) == want)
                pick[0] = i, pick[1] = s0, pick[2] = s1 - s0;
            want -= __popc(m);
        }
    }
    __syncthreads();
    e = pick[0], beg = pick[1], cnt = pick[2];
    return e >= 0;
}

/* The epilogue of every version: v = the accumulator fragment + bias, c0, c1 row ra at tokens
 * j0, j0 + 1 of the chunk, c2, c3 row rb (slots: the chunk's e_slots, n tokens). DOWN: y[slot]
 * = top_w[slot] * v (float). Else rows alternate gate (even) and up (odd), row r + 1 4 lanes
 * up: act[slot] = bf16 of the clamped SwiGLU. Every lane of the warp must call it. */
template <bool DOWN>
__device__ __forceinline__ void moe_store(void *outp, const float *v, int ra, int rb, int j0, int n,
                                          int N, const int32_t *slots, const float *top_w,
                                          float limit, int gq) {
    if constexpr (DOWN) {
        float *y = static_cast<float *>(outp);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int j = j0 + (i & 1), row = i < 2 ? ra : rb;
            if (j < n && row < N) {
                int slot = slots[j];
                y[(size_t)slot * N + row] = top_w[slot] * v[i];
            }
        }
    } else {
        float u[4];
#pragma unroll
        for (int i = 0; i < 4; i++) u[i] = __shfl_down_sync(0xffffffffu, v[i], 4);
        if (gq & 1) return;
        uint16_t *act = static_cast<uint16_t *>(outp);
        int I = N / 2;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int j = j0 + (i & 1), row = i < 2 ? ra : rb;
            if (j < n && row < N) {
                int slot = slots[j];
                float gate = fminf(v[i], limit);
                float up = fminf(fmaxf(u[i], -limit), limit);
                float glu = gate / (1.0f + expf(-1.702f * gate));
                act[(size_t)slot * I + row / 2] = f2bf16(glu * (up + 1.0f));
            }
        }
    }
}

/* N weight rows of K inputs per expert. DOWN = false: in = xn (T, K) read at slot / top_k, out =
 * act (S, N/2) bf16 after bias + clamped SwiGLU; DOWN = true: in = act (S, K) read at slot, out
 * = y (S, N) float = top_w * (acc + bias). */
template <bool DOWN, int WARPS, int TOK>
__global__ void __launch_bounds__(32 * WARPS)
    moe_kernel(void *outp, const uint16_t *in, const uint8_t *blocks, const uint8_t *scales,
               const uint16_t *bias, const int32_t *e_start, const int32_t *e_slots,
               const float *top_w, int top_k, int E, int N, int K, float limit) {
    pdl_trigger();
    pdl_wait();
    constexpr int ROWS = 16 * WARPS, NT = TOK / 8;
    extern __shared__ __align__(16) uint16_t xs[]; /* (TOK, K + 8): +8 spreads the banks */
    __shared__ float lut[16];
    int e, beg, cnt;
    if (!moe_expert(e_start, E, e, beg, cnt)) return;
    if (threadIdx.x < 16) {
        const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
        lut[threadIdx.x] = threadIdx.x & 8 ? -mag[threadIdx.x & 7] : mag[threadIdx.x & 7];
    }
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    int ra = blockIdx.x * ROWS + warp * 16 + gq, rb = ra + 8;
    bool va = ra < N, vb = rb < N;
    int nb = K / 32, ld = K + 8;
    const uint4 *wa_p =
        reinterpret_cast<const uint4 *>(blocks) + ((size_t)e * N + (va ? ra : 0)) * nb;
    const uint4 *wb_p =
        reinterpret_cast<const uint4 *>(blocks) + ((size_t)e * N + (vb ? rb : 0)) * nb;
    const uint8_t *sa_p = scales + ((size_t)e * N + (va ? ra : 0)) * nb;
    const uint8_t *sb_p = scales + ((size_t)e * N + (vb ? rb : 0)) * nb;
    float bias_a = va ? bf16f(bias[(size_t)e * N + ra]) : 0.0f;
    float bias_b = vb ? bf16f(bias[(size_t)e * N + rb]) : 0.0f;
    const uint4 zero4 = make_uint4(0, 0, 0, 0);

    for (int c0 = 0; c0 < cnt; c0 += TOK) {
        int n = min(TOK, cnt - c0), ntile = (n + 7) / 8, vec = K / 8;
        __syncthreads(); /* the previous chunk's B reads are done; lut is visible */
        for (int i = threadIdx.x; i < ntile * 8 * vec; i += blockDim.x) {
            int j = i / vec, c = i % vec;
            uint4 v = zero4;
            if (j < n) {
                int slot = e_slots[beg + c0 + j], src = DOWN ? slot : slot / top_k;
                v = reinterpret_cast<const uint4 *>(in + (size_t)src * K)[c];
            }
            *reinterpret_cast<uint4 *>(xs + j * ld + c * 8) = v;
        }
        __syncthreads();
        float acc[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
        /* One block ahead in flight: its 2 × 16 code bytes and 2 scales load while this one's
         * decode and MMAs run. */
        uint4 wa = va ? __ldg(wa_p) : zero4, wb = vb ? __ldg(wb_p) : zero4;
        uint32_t sa = __ldg(sa_p), sb = __ldg(sb_p);
        for (int kb = 0; kb < nb; kb++) {
            uint4 nwa = zero4, nwb = zero4;
            uint32_t nsa = 0, nsb = 0;
            if (kb + 1 < nb) {
                if (va) nwa = __ldg(wa_p + kb + 1);
                if (vb) nwb = __ldg(wb_p + kb + 1);
                nsa = __ldg(sa_p + kb + 1), nsb = __ldg(sb_p + kb + 1);
            }
            float fa = e8m0(sa), fb = e8m0(sb);
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                uint32_t alo = hh ? wa.z : wa.x, ahi = hh ? wa.w : wa.y;
                uint32_t blo = hh ? wb.z : wb.x, bhi = hh ? wb.w : wb.y;
                uint32_t a0 = dq2(alo >> (8 * tq), fa, lut), a2 = dq2(ahi >> (8 * tq), fa, lut);
                uint32_t a1 = dq2(blo >> (8 * tq), fb, lut), a3 = dq2(bhi >> (8 * tq), fb, lut);
                int k = kb * 32 + hh * 16 + 2 * tq;
#pragma unroll
                for (int nt = 0; nt < NT; nt++) {
                    if (nt >= ntile) break;
                    const uint16_t *xr = xs + (nt * 8 + gq) * ld + k;
                    uint32_t b0 = *reinterpret_cast<const uint32_t *>(xr);
                    uint32_t b1 = *reinterpret_cast<const uint32_t *>(xr + 8);
                    mma_bf16(acc[nt], a0, a1, a2, a3, b0, b1);
                }
            }
            wa = nwa, wb = nwb, sa = nsa, sb = nsb;
        }
        /* Epilogue: c0, c1 are row ra at tokens 2tq, 2tq+1 of the n-tile; c2, c3 row rb. */
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            if (nt >= ntile) break;
            float v[4] = {acc[nt][0] + bias_a, acc[nt][1] + bias_a, acc[nt][2] + bias_b,
                          acc[nt][3] + bias_b};
            moe_store<DOWN>(outp, v, ra, rb, nt * 8 + 2 * tq, n, N, e_slots + beg + c0, top_w,
                            limit, gq);
        }
    }
}

/* ---- version 3: weights streamed in their MXFP4 form, one distinct 16-byte block per lane ----
 *
 * Versions 1 and 2 give lane (g, t) of a warp the MXFP4 bytes at 2t.. of each 32-input block,
 * so the four lanes of a row each load the same 16 bytes and one block of loads is in flight.
 * Version 3 uses the freedom of the k order inside an MMA: the sum over k does not care which
 * physical input a fragment slot holds, as long as the A (weights) and B (tokens) fragments
 * agree. So lane t takes a whole block, block 4c + t of "super-chunk" c (128 inputs), for rows
 * g and g + 8 of each 16-row tile: one 16-byte load per row, four lanes cover 64 contiguous
 * bytes of a row, nothing is loaded twice, and STAGES super-chunks are in flight per lane.
 *
 * Within a block the lane consumes its 32 inputs as 8 MMA k-steps of 4 slots. The codes decode
 * two at a time with bit operations (dq_word): the three magnitude bits go to bf16 bits 6..8,
 * the sign to bit 15, which is the e2m1 value times 2^-126 (code 1 lands on a bf16 subnormal,
 * exact); one bf16x2 multiply by 2^(s-1) then gives value * 2^(s-127) exactly. The tiled code
 * words hold their 32 bits in the order that makes this cheapest and gives the pairs in input
 * order, so that one 16-byte shared load of a token row gives the B fragments of two k-steps
 * as they are; the 8-input groups of the staged rows are XOR-swizzled by bit 1 of the block
 * index so that the four lanes t of a row hit distinct banks.
 *
 * The weights are stored "tiled" (cuda_mxfp4_tile, once at load): for each expert, 16-row tile
 * and super-chunk, the 64 blocks that a warp's lanes take (rows g and g + 8, block 4c + t) lie
 * in lane order, 1024 contiguous bytes, and their 64 scales likewise; the bits of each code
 * word in dq_word's order. A warp's load is then 512
 * contiguous bytes and a tile's weights one contiguous stream; with the checkpoint's row-major
 * layout every load touched 8 rows 1440 bytes apart, 64 bytes each, and DRAM delivered about a
 * third of its bandwidth. */

/* The bit order of a tiled code word (cuda_mxfp4_tile): bit p holds bit TILE_SRC[p] % 4 of the
 * e2m1 code of input TILE_SRC[p] / 4 of the word's 8. It is chosen so that dq_word makes the four
 * bf16 pairs (input 2i, input 2i + 1) with 6 logic operations, 1 right shift and 4 left shifts
 * (which the compiler can issue as multiplies, off the integer pipe that the logic operations
 * saturate), where the checkpoint's order (nibble i is input i) needs 8 logic operations and 7
 * shifts, then a byte permutation of the tokens. Pair i is the word shifted by a_i and masked
 * to the magnitude bits (6..8, 22..24), with the sign bits (15, 31) from the word shifted by b_i:
 * (a_i) = (-6, 0, 3, 6), (b_i) = (4, 0, 5, 6) (left shifts; negative: right). */
__constant__ uint8_t TILE_SRC[32] = {24, 25, 26, 16, 17, 18, 8,  9,  10, 27, 19, 3, 0, 1, 2, 11,
                                     28, 29, 30, 20, 21, 22, 12, 13, 14, 31, 23, 7, 4, 5, 6, 15};

__device__ __forceinline__ uint32_t tile_word(uint32_t x) {
    uint32_t y = 0;
#pragma unroll
    for (int p = 0; p < 32; p++) y |= (x >> TILE_SRC[p] & 1u) << p;
    return y;
}

/* Tiled code word y → 4 bf16 pairs (input 2i, input 2i + 1) of e2m1 value * 2^-126: the three
 * magnitude bits land on bf16 bits 6..8 (code 1 a subnormal, exact), the sign on bit 15. */
__device__ __forceinline__ void dq_word(uint32_t *r, uint32_t y) {
    const uint32_t M = 0x01C001C0u, S = 0x80008000u;
    r[0] = ((y >> 6) & M) | ((y * 16u) & S);
    r[1] = y & (M | S);
    r[2] = ((y * 8u) & M) | ((y * 32u) & S);
    r[3] = (y * 64u) & (M | S);
}

/* Tiled layout: unit u = ((e * (N/16) + tile) * nc + c) * 64 + h * 32 + lane holds row
 * tile * 16 + h * 8 + lane / 4, block 4c + lane % 4 (zeros past the row's last block). */
__global__ void mxfp4_tile_kernel(uint4 *bt, uint8_t *st, const uint8_t *blocks,
                                  const uint8_t *scales, int N, int nb, int nc, size_t units) {
    for (size_t u = (size_t)blockIdx.x * blockDim.x + threadIdx.x; u < units;
         u += (size_t)gridDim.x * blockDim.x) {
        int lane = (int)(u & 31), h = (int)(u >> 5) & 1;
        size_t q = u >> 6;
        int c = (int)(q % nc);
        size_t et = q / nc; /* e * (N/16) + tile */
        size_t e = et / (N / 16), tile = et % (N / 16);
        size_t row = tile * 16 + h * 8 + (lane >> 2);
        int kb = 4 * c + (lane & 3);
        uint4 v = make_uint4(0, 0, 0, 0);
        uint8_t sc = 0;
        if (kb < nb) {
            size_t src = (e * N + row) * nb + kb;
            v = reinterpret_cast<const uint4 *>(blocks)[src];
            v = make_uint4(tile_word(v.x), tile_word(v.y), tile_word(v.z), tile_word(v.w));
            sc = scales[src];
        }
        bt[u] = v, st[u] = sc;
    }
}

__device__ __forceinline__ uint32_t bmul2(uint32_t a, uint32_t b) {
    __nv_bfloat162 r =
        __hmul2(*reinterpret_cast<__nv_bfloat162 *>(&a), *reinterpret_cast<__nv_bfloat162 *>(&b));
    return *reinterpret_cast<uint32_t *>(&r);
}

/* One super-chunk of versions 3 and 4: the lane's blocks wv[mt][h] (block kb of rows g and g + 8
 * of row tile mt) with their E8M0 scales sv[mt][h], against ntile of the NT staged token tiles:
 * xrow is staged token row g at block kb (bytes), ntstride the bytes from one 8-token tile to the
 * next, swz the lane's word swizzle (moe3_swz). Past a row's last block the codes are zeros and
 * so are the staged tokens, never a NaN. */
template <int MT, int NT>
__device__ __forceinline__ void moe3_superchunk(float (&acc)[MT][NT][4], const uint4 (&wv)[MT][2],
                                                const uint32_t (&sv)[MT][2], const char *xrow,
                                                int ntstride, int swz, int ntile) {
    const uint4 zero4 = make_uint4(0, 0, 0, 0);
    /* bf16x2 2^(min(s,128)-1): (min(s,128) + 126) << 7 in both halves, one multiply-add. Scales
     * above 128 (2^1) are rare: when any lane of the warp has one, a second multiply by
     * 2^(s-128) (1 for the others) finishes them, as a branch the whole warp takes. */
    uint32_t mul[MT][2], mul2[MT][2], smax = 0;
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            uint32_t s = sv[mt][h];
            mul[mt][h] = min(s, 128u) * 0x00800080u + 0x3F003F00u;
            smax = max(smax, s);
        }
    bool big = __any_sync(0xffffffffu, smax > 128u);
    if (big) {
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                uint32_t s = sv[mt][h];
                uint32_t m2 = s > 128u ? (s - 1u) << 7 : (127u << 7);
                mul2[mt][h] = m2 | (m2 << 16);
            }
    }
    /* The word loop twice, with and without the second multiply, so that no test is left in it. */
    auto words = [&](auto bigc) {
        constexpr bool BIG = decltype(bigc)::value;
#pragma unroll
        for (int w = 0; w < 4; w++) {
            /* B fragments of this word of the lane's block, every token tile */
            uint4 bx[NT];
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                bx[nt] = zero4;
                if (nt < ntile)
                    bx[nt] =
                        *reinterpret_cast<const uint4 *>(xrow + nt * ntstride + ((w * 16) ^ swz));
            }
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                uint32_t ag[4], ah[4];
                const uint4 &wg = wv[mt][0], &wh = wv[mt][1];
                dq_word(ag, w == 0 ? wg.x : w == 1 ? wg.y : w == 2 ? wg.z : wg.w);
                dq_word(ah, w == 0 ? wh.x : w == 1 ? wh.y : w == 2 ? wh.z : wh.w);
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    ag[i] = bmul2(ag[i], mul[mt][0]);
                    ah[i] = bmul2(ah[i], mul[mt][1]);
                    if (BIG) { /* scales above 2^1: the rest of 2^(s-1) */
                        ag[i] = bmul2(ag[i], mul2[mt][0]);
                        ah[i] = bmul2(ah[i], mul2[mt][1]);
                    }
                }
#pragma unroll
                for (int nt = 0; nt < NT; nt++) {
                    if (nt >= ntile) break;
                    mma_bf16(acc[mt][nt], ag[0], ah[0], ag[1], ah[1], bx[nt].x, bx[nt].y);
                    mma_bf16(acc[mt][nt], ag[2], ah[2], ag[3], ah[3], bx[nt].z, bx[nt].w);
                }
            }
        }
    };
    if (big)
        words(std::true_type{});
    else
        words(std::false_type{});
}

/* The byte XOR that moe3_stage_tokens applies to the 16-byte words of block kb: bit 1 of the
 * block index. Lane t reads block 4c + t, so it is the lane's constant (t >> 1) & 1. */
__device__ __forceinline__ int moe3_swz(int tq) {
    return ((tq >> 1) & 1) * 16;
}

/* Where moe3_stage_tokens puts the 16-byte unit q (inputs 8q..8q + 7) of a token row, in
 * elements from the row's start: block q / 4's 32 inputs in order, its words XOR-swizzled by
 * bit 1 of the block index (moe3_swz reads them there). */
__device__ __forceinline__ int moe3_unit_at(int q) {
    int kb = q >> 2, w = (q & 3) ^ ((kb >> 1) & 1);
    return kb * 32 + w * 8;
}

/* K rounded up to whole super-chunks (4 blocks, 128 inputs): the staged token rows' width. */
__host__ __device__ __forceinline__ int moe3_kpad(int K) {
    return (K / 32 + 3) / 4 * 128;
}

/* Versions 3 and 4: the chunk's n token rows (slots[0..n), rows past n zeros, ntile * 8 rows in
 * all) into xs (row pitch ld) with cp.async, committed as one group, each 8-input group at its
 * swizzled place, and zeros from K up to whole super-chunks (moe3_kpad). Every thread of the
 * CTA calls it after a barrier; the caller waits for the group and syncs before reading xs. */
template <bool DOWN>
__device__ __forceinline__ void moe3_stage_tokens(uint16_t *xs, int *slot_s, const uint16_t *in,
                                                  const int32_t *slots, int n, int ntile, int top_k,
                                                  int K, int ld) {
    if (threadIdx.x < ntile * 8) {
        int j = threadIdx.x, src = -1;
        if (j < n) src = DOWN ? slots[j] : slots[j] / top_k;
        slot_s[j] = src;
    }
    __syncthreads();
    for (int j = 0, vec = moe3_kpad(K) / 8; j < ntile * 8; j++) {
        int src = slot_s[j];
        for (int q = threadIdx.x; q < vec; q += blockDim.x) {
            uint16_t *dst = xs + j * ld + moe3_unit_at(q);
            if (src >= 0 && q < K / 8)
                cp_async16(dst, in + (size_t)src * K + q * 8);
            else
                *reinterpret_cast<uint4 *>(dst) = make_uint4(0, 0, 0, 0);
        }
    }
    cp_async_commit();
}

/* Versions 3 and 4: where this warp's row tiles start in the tiled layout (mxfp4_tile_kernel).
 * Tile mt of the warp is tile (bx * ROWS/16 + warp * MT + mt) of expert e, bx the CTA's index
 * (blockIdx.x unless given); tv[mt] says whether it lies inside the N rows (a tile past them
 * reads tile 0 and is never stored). wp[mt] = its blocks at super-chunk 0, plus w_off 16-byte
 * units; sp[mt] its scales plus s_off bytes. */
template <int MT, int ROWS>
__device__ __forceinline__ void moe3_tiles(const uint4 *(&wp)[MT], const uint8_t *(&sp)[MT],
                                           bool (&tv)[MT], const uint8_t *blocks,
                                           const uint8_t *scales, int e, int N, int nc, int warp,
                                           int w_off, int s_off, int bx = -1) {
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        int tile = (bx < 0 ? (int)blockIdx.x : bx) * (ROWS / 16) + warp * MT + mt;
        tv[mt] = tile * 16 < N;
        size_t base = ((size_t)e * (N / 16) + (tv[mt] ? tile : 0)) * nc * 64;
        wp[mt] = reinterpret_cast<const uint4 *>(blocks) + base + w_off;
        sp[mt] = scales + base + s_off;
    }
}

template <int MT, int NT> __device__ __forceinline__ void moe3_zero(float (&acc)[MT][NT][4]) {
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
            acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;
}

/* Versions 3 and 4: the chunk's results through moe_store, bias added. Row tile mt of the warp
 * has rows row0 + 16 mt (lane's c0, c1) and + 8 (c2, c3); ntile token tiles of the chunk's n
 * tokens (slots). Every lane of the warp calls it. */
template <bool DOWN, int MT, int NT>
__device__ __forceinline__ void moe3_epilogue(void *outp, const float (&acc)[MT][NT][4],
                                              const uint16_t *bias, int e, int N, int row0,
                                              int ntile, int n, const int32_t *slots,
                                              const float *top_w, float limit, int gq, int tq) {
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        int ra = row0 + mt * 16, rb = ra + 8;
        float bias_a = ra < N ? bf16f(bias[(size_t)e * N + ra]) : 0.0f;
        float bias_b = rb < N ? bf16f(bias[(size_t)e * N + rb]) : 0.0f;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            if (nt >= ntile) break;
            float v[4] = {acc[mt][nt][0] + bias_a, acc[mt][nt][1] + bias_a, acc[mt][nt][2] + bias_b,
                          acc[mt][nt][3] + bias_b};
            moe_store<DOWN>(outp, v, ra, rb, nt * 8 + 2 * tq, n, N, slots, top_w, limit, gq);
        }
    }
}

/* Tile configurations of version 3 (chosen by the launcher from the step's token count):
 *   small: 4 warps × 1 row tile (64 rows), 8 tokens, STAGES 4 (3 super-chunks of loads ahead):
 *          many CTAs when few experts are touched (batch 1: 4 experts × 90 tiles);
 *   large: 6 warps × 2 row tiles (192 rows, which divides 5760 and 2880), 16 tokens, STAGES 3:
 *          each staged token row serves 192 weight rows, each decoded weight serves 16 tokens. */
template <bool DOWN, int WARPS, int MT, int NT, int STAGES>
__global__ void __launch_bounds__(32 * WARPS)
    moe3_kernel(void *outp, const uint16_t *in, const uint8_t *blocks, const uint8_t *scales,
                const uint16_t *bias, const int32_t *e_start, const int32_t *e_slots,
                const float *top_w, int top_k, int E, int N, int K, float limit) {
    pdl_wait();
    constexpr int ROWS = 16 * MT * WARPS, TOK = 8 * NT;
    extern __shared__ __align__(16) uint16_t xs[]; /* (TOK, moe3_kpad(K) + 16), swizzled */
    int e, beg, cnt;
    if (!moe_expert(e_start, E, e, beg, cnt)) return;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    int nb = K / 32, nc = (nb + 3) / 4, ld = moe3_kpad(K) + 16;
    const char *xrow0 = reinterpret_cast<const char *>(xs + gq * ld) + tq * 64;
    int swz = moe3_swz(tq);
    int row0 = blockIdx.x * ROWS + warp * 16 * MT + gq;
    /* tiled weights: this lane's unit of each super-chunk, per row tile */
    const uint4 *wp[MT];
    const uint8_t *sp[MT];
    bool tv[MT];
    moe3_tiles<MT, ROWS>(wp, sp, tv, blocks, scales, e, N, nc, warp, lane, lane);
    const uint4 zero4 = make_uint4(0, 0, 0, 0);
    __shared__ int slot_s[TOK];

    for (int c0 = 0; c0 < cnt; c0 += TOK) {
        int n = min(TOK, cnt - c0), ntile = (n + 7) / 8;
        uint4 wr[STAGES][MT][2];
        uint32_t sr[STAGES][MT][2];
        auto load = [&](uint4(&w)[MT][2], uint32_t(&sc)[MT][2], int c) {
            bool ok = c < nc && 4 * c + tq < nb;
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    bool v = ok && tv[mt];
                    w[mt][h] = v ? ld_stream(wp[mt] + c * 64 + h * 32) : zero4;
                    sc[mt][h] = v ? __ldg(sp[mt] + c * 64 + h * 32) : 0u;
                }
        };
        /* The first super-chunks' weights do not depend on the tokens: in flight before staging. */
#pragma unroll
        for (int st = 0; st < STAGES - 1; st++) load(wr[st], sr[st], st);
        __syncthreads(); /* the previous chunk's B reads are done */
        moe3_stage_tokens<DOWN>(xs, slot_s, in, e_slots + beg + c0, n, ntile, top_k, K, ld);
        cp_async_wait0();
        __syncthreads();

        float acc[MT][NT][4];
        moe3_zero<MT, NT>(acc);

        for (int cb = 0; cb < nc; cb += STAGES) {
#pragma unroll
            for (int st = 0; st < STAGES; st++) {
                int c = cb + st;
                if (c >= nc) break;
                /* the slot consumed one super-chunk ago takes the one STAGES - 1 ahead */
                load(wr[(st + STAGES - 1) % STAGES], sr[(st + STAGES - 1) % STAGES],
                     c + STAGES - 1);
                moe3_superchunk<MT, NT>(acc, wr[st], sr[st], xrow0 + c * 256, 16 * ld, swz, ntile);
            }
        }

        pdl_trigger(); /* the next kernel's set-up overlaps the stores (gemv_bf16_kernel) */
        /* Epilogue, as versions 1 and 2 (moe_store). */
        moe3_epilogue<DOWN, MT, NT>(outp, acc, bias, e, N, row0, ntile, n, e_slots + beg + c0,
                                    top_w, limit, gq, tq);
    }
}

/* ---- version 4: version 3's tiles and math, the weights streamed through shared memory ----
 *
 * Version 3 keeps its loads in flight in registers (STAGES × MT × 2 × 16 bytes per lane), which
 * with the decode's registers makes 168 per thread: 12 warps per SM, and Nsight Compute shows the
 * schedulers idle 43 % of the time with 55 % of issue slots busy and DRAM at 37 %. Version 4 has
 * each lane copy its own 16-byte units with cp.async into its warp's ring of STAGES super-chunks
 * in shared memory (the scales: 16 bytes per lane of the first 4 × MT lanes), so the bytes in
 * flight no longer hold registers: a CTA of up to 15 warps per SM with STAGES - 1 super-chunks
 * in flight each. Each warp's ring is its own: a warp syncs with itself only (__syncwarp), the
 * CTA only around the token staging. The chunk's token count picks a specialised loop (one or
 * two 8-token tiles), so the MMA count carries no run-time test. Version 4 is this kernel for the
 * large tile (15 warps × 2 row tiles: 480 rows, which divides 5760 and 2880; 16 tokens) and
 * version 3's small tile below 4 tokens per expert, where the CTAs are short and many. */
template <bool DOWN, int WARPS, int MT, int NT, int STAGES, int MINB>
__global__ void __launch_bounds__(32 * WARPS, MINB)
    moe4_kernel(void *outp, const uint16_t *in, const uint8_t *blocks, const uint8_t *scales,
                const uint16_t *bias, const int32_t *e_start, const int32_t *e_slots,
                const float *top_w, int top_k, int E, int N, int K, float limit) {
    static_assert(NT == 1 || NT == 2, "one or two token tiles");
    constexpr int ROWS = 16 * MT * WARPS, TOK = 8 * NT;
    constexpr int WU = MT * 2 * 32; /* 16-byte units of one warp's super-chunk */
    extern __shared__ __align__(16) uint4 sm4[];
    int e = blockIdx.y, beg = e_start[e], cnt = e_start[e + 1] - beg; /* a grid of E rows */
    if (cnt == 0) return;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    int nb = K / 32, nc = (nb + 3) / 4, ld = moe3_kpad(K) + 16;
    int row0 = blockIdx.x * ROWS + warp * 16 * MT + gq;
    /* shared memory: tokens (TOK, ld) bf16, then the warps' weight rings, then their scale rings */
    uint16_t *xs = reinterpret_cast<uint16_t *>(sm4);
    uint4 *wring = sm4 + TOK * ld / 8 + warp * STAGES * WU;
    uint8_t *sring = reinterpret_cast<uint8_t *>(sm4 + TOK * ld / 8 + WARPS * STAGES * WU) +
                     warp * STAGES * MT * 64;
    const char *xrow0 = reinterpret_cast<const char *>(xs + gq * ld) + tq * 64;
    int swz = moe3_swz(tq);
    /* tiled weights: this lane's unit of each super-chunk; the scales 16 bytes per lane of 4 */
    const uint4 *wp[MT];
    const uint8_t *sp[MT];
    bool tv[MT];
    moe3_tiles<MT, ROWS>(wp, sp, tv, blocks, scales, e, N, nc, warp, lane, (lane & 3) * 16);
    /* Super-chunk c into ring slot sl: every lane its own 2 × MT units, lanes 4mt..4mt+3 the
     * 64 scales of tile mt. Always one commit, so that the group count stays in step. */
    auto issue = [&](int c, int sl) {
        if (c < nc) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                if (!tv[mt]) continue;
#pragma unroll
                for (int h = 0; h < 2; h++)
                    cp_async16(wring + sl * WU + (mt * 2 + h) * 32 + lane,
                               wp[mt] + c * 64 + h * 32);
                if ((lane >> 2) == mt)
                    cp_async16(sring + (sl * MT + mt) * 64 + (lane & 3) * 16, sp[mt] + c * 64);
            }
        }
        cp_async_commit();
    };
    __shared__ int slot_s[TOK];

    for (int c0 = 0; c0 < cnt; c0 += TOK) {
        int n = min(TOK, cnt - c0), ntile = (n + 7) / 8;
        __syncthreads(); /* the previous chunk's reads of xs and of the rings are done */
        /* The first super-chunks' weights do not depend on the tokens: in flight before staging. */
#pragma unroll
        for (int st = 0; st < STAGES - 1; st++) issue(st, st);
        moe3_stage_tokens<DOWN>(xs, slot_s, in, e_slots + beg + c0, n, ntile, top_k, K, ld);
        cp_async_wait0();
        __syncthreads();

        float acc[MT][NT][4];
        moe3_zero<MT, NT>(acc);

        auto run = [&](auto ntv) {
            constexpr int NTV = decltype(ntv)::value;
            for (int c = 0, sl = 0, fill = STAGES - 1; c < nc; c++) {
                __syncwarp(); /* every lane is done with the slot that takes c + STAGES - 1 */
                issue(c + STAGES - 1, fill);
                cp_async_wait<STAGES - 1>(); /* this lane's copies of super-chunk c landed */
                __syncwarp();                /* ... and every lane's (the scales are shared) */
                uint4 wv[MT][2];
                uint32_t sv[MT][2];
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        wv[mt][h] = wring[sl * WU + (mt * 2 + h) * 32 + lane];
                        sv[mt][h] = sring[(sl * MT + mt) * 64 + h * 32 + lane];
                    }
                moe3_superchunk<MT, NT>(acc, wv, sv, xrow0 + c * 256, 16 * ld, swz, NTV);
                sl = sl + 1 == STAGES ? 0 : sl + 1;
                fill = fill + 1 == STAGES ? 0 : fill + 1;
            }
        };
        if (NT == 2 && ntile == 1)
            run(std::integral_constant<int, 1>{});
        else
            run(std::integral_constant<int, NT>{});
        cp_async_wait0(); /* the empty tail groups */

        moe3_epilogue<DOWN, MT, NT>(outp, acc, bias, e, N, row0, ntile, n, e_slots + beg + c0,
                                    top_w, limit, gq, tq);
    }
}

/* ---- version 4, many tokens per expert (prefill, batch 512): tokens staged per super-chunk ----
 *
 * The kernels above stage a chunk's tokens for the whole of K (16 tokens: 95 KB), so an expert
 * with more tokens reads its weights once per 16 (a prefill step of 8192 tokens: 16 times).
 * This one stages, per super-chunk, the weights (each warp its own units, as above) and a
 * 128-input slice of up to 64 tokens (gathered rows, 256 bytes each, rows 288 bytes apart so
 * that 8 token rows hit distinct banks) into one CTA-wide stage, STAGES of them in flight; one
 * barrier per super-chunk frees the oldest stage. A chunk's tiles run as 2, 4 or 8 8-token tiles
 * (the count rounded up: the extra columns hold stale shared memory, finite or not, and are
 * never stored); slices past K are zeros, so the padded super-chunk never meets a NaN. */
template <bool DOWN, int WARPS, int MT, int NT, int STAGES>
__global__ void __launch_bounds__(32 * WARPS, 1)
    moe5_kernel(void *outp, const uint16_t *in, const uint8_t *blocks, const uint8_t *scales,
                const uint16_t *bias, const int32_t *e_start, const int32_t *e_slots,
                const float *top_w, int top_k, int E, int N, int K, float limit) {
    static_assert(NT == 8, "2, 4 or 8 token tiles");
    constexpr int ROWS = 16 * MT * WARPS, TOK = 8 * NT, TP = 288;
    constexpr int WU = MT * 2 * 32; /* 16-byte weight units of one warp's stage */
    constexpr int WSTAGE = WARPS * WU * 16, SSTAGE = WARPS * MT * 64, TSTAGE = TOK * TP;
    constexpr int STAGE = WSTAGE + SSTAGE + TSTAGE;
    extern __shared__ __align__(16) uint8_t sm5[];
    __shared__ int src_s[TOK];
    int e = blockIdx.y, beg = e_start[e], cnt = e_start[e + 1] - beg; /* a grid of E rows */
    if (cnt == 0) return;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    int nb = K / 32, nc = (nb + 3) / 4, swz = moe3_swz(tq);
    int row0 = blockIdx.x * ROWS + warp * 16 * MT + gq;
    const uint4 *wp[MT];
    const uint8_t *sp[MT];
    bool tv[MT];
    moe3_tiles<MT, ROWS>(wp, sp, tv, blocks, scales, e, N, nc, warp, lane, (lane & 3) * 16);
    /* Super-chunk c into stage sl: the warp's weight units and scales, then the n tokens'
     * slices (every thread a share; zeros past K). One commit per thread, always. */
    auto issue = [&](int c, int sl, int n) {
        if (c < nc) {
            uint8_t *st = sm5 + sl * STAGE;
            uint4 *wr = reinterpret_cast<uint4 *>(st) + warp * WU;
            uint8_t *sr = st + WSTAGE + warp * MT * 64;
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                if (!tv[mt]) continue;
#pragma unroll
                for (int h = 0; h < 2; h++)
                    cp_async16(wr + (mt * 2 + h) * 32 + lane, wp[mt] + c * 64 + h * 32);
                if ((lane >> 2) == mt) cp_async16(sr + mt * 64 + (lane & 3) * 16, sp[mt] + c * 64);
            }
            uint8_t *tk = st + WSTAGE + SSTAGE;
            for (int q = threadIdx.x; q < n * 16; q += blockDim.x) {
                int j = q >> 4, part = q & 15, blk = part >> 2;
                uint8_t *dst = tk + j * TP + blk * 64 + (((part & 3) * 16) ^ ((blk >> 1 & 1) * 16));
                int k8 = c * 16 + part; /* the 8-input group */
                if (k8 < K / 8)
                    cp_async16(dst, in + (size_t)src_s[j] * K + k8 * 8);
                else
                    *reinterpret_cast<uint4 *>(dst) = make_uint4(0, 0, 0, 0);
            }
        }
        cp_async_commit();
    };

    for (int c0 = 0; c0 < cnt; c0 += TOK) {
        int n = min(TOK, cnt - c0), ntile = (n + 7) / 8;
        __syncthreads(); /* the previous chunk is done with src_s and every stage */
        if (threadIdx.x < n) {
            int slot = e_slots[beg + c0 + threadIdx.x];
            src_s[threadIdx.x] = DOWN ? slot : slot / top_k;
        }
        __syncthreads();
#pragma unroll
        for (int st = 0; st < STAGES - 1; st++) issue(st, st, n);

        float acc[MT][NT][4];
        moe3_zero<MT, NT>(acc);

        auto run = [&](auto ntv) {
            constexpr int NTV = decltype(ntv)::value;
            for (int c = 0, sl = 0, fill = STAGES - 1; c < nc; c++) {
                cp_async_wait<STAGES - 2>(); /* this thread's copies of super-chunk c landed */
                __syncthreads(); /* ... everyone's; and stage fill (c - 1) is read by all */
                issue(c + STAGES - 1, fill, n);
                const uint8_t *st = sm5 + sl * STAGE;
                const uint4 *wr = reinterpret_cast<const uint4 *>(st) + warp * WU;
                const uint8_t *sr = st + WSTAGE + warp * MT * 64;
                uint4 wv[MT][2];
                uint32_t sv[MT][2];
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        wv[mt][h] = wr[(mt * 2 + h) * 32 + lane];
                        sv[mt][h] = sr[mt * 64 + h * 32 + lane];
                    }
                const char *xrow =
                    reinterpret_cast<const char *>(st + WSTAGE + SSTAGE) + gq * TP + tq * 64;
                moe3_superchunk<MT, NT>(acc, wv, sv, xrow, 8 * TP, swz, NTV);
                sl = sl + 1 == STAGES ? 0 : sl + 1;
                fill = fill + 1 == STAGES ? 0 : fill + 1;
            }
        };
        if (ntile <= 2)
            run(std::integral_constant<int, 2>{});
        else if (ntile <= 4)
            run(std::integral_constant<int, 4>{});
        else
            run(std::integral_constant<int, 8>{});
        cp_async_wait0(); /* the empty tail groups */

        moe3_epilogue<DOWN, MT, NT>(outp, acc, bias, e, N, row0, ntile, n, e_slots + beg + c0,
                                    top_w, limit, gq, tq);
    }
}

/* ---- launchers ---- */

extern "C" int cuda_router(int32_t *top_e, float *top_w, int32_t *e_start, int32_t *e_slots,
                           const float *logits, const uint16_t *bias, int T, int E, int top_k,
                           cudaStream_t s) {
    if (E < 1 || E > 1024 || top_k < 1 || top_k > 8 || top_k > E) return (int)cudaErrorInvalidValue;
    if (T > 0 && T <= 32)
        return pdl_launch(router_small_kernel, 1, 1024, (2 * E + 32) * sizeof(int), s, top_e, top_w,
                          e_start, e_slots, logits, bias, T, E, top_k);
    if (T > 0) {
        int e = pdl_launch(router_topk_kernel, (T + ROUTER_WARPS - 1) / ROUTER_WARPS,
                           32 * ROUTER_WARPS, 0, s, top_e, top_w, logits, bias, T, E, top_k);
        if (e) return e;
    }
    return pdl_launch(router_group_kernel, 1, 1024, (2 * E + 32) * sizeof(int), s, e_start, e_slots,
                      top_e, T * top_k, E);
}

extern "C" int cuda_router_gemv(float *logits, int *count, const uint16_t *x, const uint16_t *w,
                                const uint16_t *bias, int32_t *top_e, float *top_w,
                                int32_t *e_start, int32_t *e_slots, int T, int E, int K, int top_k,
                                cudaStream_t s) {
    if (T < 1 || T > GEMV_MAX_T || E < 1 || E > 32 * GEMV_WARPS || K < 8 || K % 8 || top_k < 1 ||
        top_k > 8 || top_k > E)
        return (int)cudaErrorInvalidValue;
    static_assert(GEMV_MAX_T == 4, "one instantiation per token count");
    static void (*const k[GEMV_MAX_T])(float *, int *, const uint16_t *, const uint16_t *,
                                       const uint16_t *, int32_t *, float *, int32_t *, int32_t *,
                                       int, int, int) = {
        router_gemv_kernel<1>, router_gemv_kernel<2>, router_gemv_kernel<3>, router_gemv_kernel<4>};
    return pdl_launch(k[T - 1], (E + GEMV_WARPS - 1) / GEMV_WARPS, 32 * GEMV_WARPS,
                      (2 * E + 32) * sizeof(int), s, logits, count, x, w, bias, top_e, top_w,
                      e_start, e_slots, E, K, top_k);
}

/* Every MoE GEMM kernel takes the same arguments; a grid of N / rows CTAs of `threads` by
 * min(E, S) rows for S slots when the kernel picks its expert with moe_expert (and waits with
 * pdl_wait), by E rows, expert y in row y, when it does not (the large tiles). */
typedef void (*moe_kernel_fn)(void *, const uint16_t *, const uint8_t *, const uint8_t *,
                              const uint16_t *, const int32_t *, const int32_t *, const float *,
                              int, int, int, int, float);

/* Launch kernel k with smem bytes of dynamic shared memory, raising its limit first
 * (smem_limit; *smem_set: the kernel's). picks: k calls moe_expert and pdl_wait (see
 * moe_kernel_fn); otherwise a plain launch of E rows. */
static int moe_run(moe_kernel_fn k, bool picks, size_t *smem_set, size_t smem, int rows,
                   int threads, void *out, const uint16_t *in, const uint8_t *blocks,
                   const uint8_t *scales, const uint16_t *bias, const int32_t *e_start,
                   const int32_t *e_slots, const float *top_w, int top_k, int E, int S, int N,
                   int K, float limit, cudaStream_t s) {
    int err = smem_limit(k, smem, smem_set);
    if (err) return err;
    if (S <= 0) return 0;
    if (!picks) {
        dim3 grid((N + rows - 1) / rows, E);
        k<<<grid, threads, smem, s>>>(out, in, blocks, scales, bias, e_start, e_slots, top_w, top_k,
                                      E, N, K, limit);
        return launch_status();
    }
    dim3 grid((N + rows - 1) / rows, S < E ? S : E);
    return pdl_launch(k, grid, threads, smem, s, out, in, blocks, scales, bias, e_start, e_slots,
                      top_w, top_k, E, N, K, limit);
}

#define MOE_ARGS out, in, blocks, scales, bias, e_start, e_slots, top_w, top_k, E, S, N, K, limit, s
#define MOE_PARAMS                                                                                 \
    void *out, const uint16_t *in, const uint8_t *blocks, const uint8_t *scales,                   \
        const uint16_t *bias, const int32_t *e_start, const int32_t *e_slots, const float *top_w,  \
        int top_k, int E, int S, int N, int K, float limit, cudaStream_t s

template <bool DOWN, int WARPS, int TOK> static int moe_launch(MOE_PARAMS) {
    if (K % 32 || N % 2 || K > 8192) return (int)cudaErrorInvalidValue;
    static size_t smem_set = 0; /* per instantiation */
    return moe_run(moe_kernel<DOWN, WARPS, TOK>, true, &smem_set, (size_t)TOK * (K + 8) * 2,
                   16 * WARPS, 32 * WARPS, MOE_ARGS);
}

template <bool DOWN, int WARPS, int MT, int NT, int STAGES> static int moe3_launch(MOE_PARAMS) {
    if (K % 32 || N % 16 || K > 8192) return (int)cudaErrorInvalidValue;
    static size_t smem_set = 0;
    return moe_run(moe3_kernel<DOWN, WARPS, MT, NT, STAGES>, true, &smem_set,
                   (size_t)8 * NT * (moe3_kpad(K) + 16) * 2, 16 * MT * WARPS, 32 * WARPS, MOE_ARGS);
}

/* Shared memory of version 4's large kernel: the staged tokens, then the warps' rings. */
template <int WARPS, int MT, int NT, int STAGES> static size_t moe4_smem(int K) {
    return (size_t)8 * NT * (moe3_kpad(K) + 16) * 2 +
           (size_t)WARPS * STAGES * (MT * 2 * 32 * 16 + MT * 64);
}

template <bool DOWN, int WARPS, int MT, int NT, int STAGES, int MINB>
static int moe4_launch(MOE_PARAMS) {
    if (K % 32 || N % 16) return (int)cudaErrorInvalidValue;
    static size_t smem_set = 0;
    return moe_run(moe4_kernel<DOWN, WARPS, MT, NT, STAGES, MINB>, false, &smem_set,
                   moe4_smem<WARPS, MT, NT, STAGES>(K), 16 * MT * WARPS, 32 * WARPS, MOE_ARGS);
}

template <bool DOWN, int WARPS, int MT, int NT, int STAGES> static int moe5_launch(MOE_PARAMS) {
    if (K % 32 || N % 16) return (int)cudaErrorInvalidValue;
    static size_t smem_set = 0;
    return moe_run(moe5_kernel<DOWN, WARPS, MT, NT, STAGES>, false, &smem_set,
                   (size_t)STAGES * (WARPS * MT * 2 * 32 * 16 + WARPS * MT * 64 + 8 * NT * 288),
                   16 * MT * WARPS, 32 * WARPS, MOE_ARGS);
}

#undef MOE_ARGS
#undef MOE_PARAMS

/* The MoE tile of versions 3 and 4 for a step of T tokens: 1 the small one, 2 the large one
 * once experts hold 4+ tokens on average (T * top_k / E > 4: above batch 128 on 120b), 3 (version
 * 4) the many-token one above 12 on average (batch 512, prefill); unless a benchmark forced one
 * (cuda_moe3_force_tile: 0 by the rule). */
static int moe3_forced_tile = 0;

extern "C" void cuda_moe3_force_tile(int tile) {
    moe3_forced_tile = tile;
}

/* The small tile's ring depth: super-chunks of weights in flight per warp, minus one (8, or 4). */
static int moe3_small_stages = 8;

extern "C" void cuda_moe3_small_stages(int stages) {
    moe3_small_stages = stages == 8 ? 8 : 4;
}

/* Whether version 4's large tile (15 warps, 16 tokens, 4 stages) fits the 227 KB of shared
 * memory for K inputs (up to K = 3072); wider ones take version 3's large tile. */
static inline bool moe4_fits(int K) {
    return moe4_smem<15, 2, 2, 4>(K) <= 227 * 1024;
}

static inline int moe3_tile(int T, int top_k, int E, int version) {
    int t = moe3_forced_tile            ? moe3_forced_tile
            : (long)T * top_k > 12L * E ? 3
            : (long)T * top_k > 4L * E  ? 2
                                        : 1;
    return version == 3 && t == 3 ? 2 : t;
}

extern "C" int cuda_mxfp4_tile(uint8_t *blocks_t, uint8_t *scales_t, const uint8_t *blocks,
                               const uint8_t *scales, int E, int N, int K, cudaStream_t s) {
    if (K % 32 || N % 16 || E < 1) return (int)cudaErrorInvalidValue;
    int nb = K / 32, nc = (nb + 3) / 4;
    size_t units = (size_t)E * (N / 16) * nc * 64;
    size_t grid = (units + 255) / 256;
    if (grid > 65536) grid = 65536;
    mxfp4_tile_kernel<<<(unsigned)grid, 256, 0, s>>>(reinterpret_cast<uint4 *>(blocks_t), scales_t,
                                                     blocks, scales, N, nb, nc, units);
    return launch_status();
}

extern "C" int cuda_moe_gate_up(uint16_t *act, const uint16_t *xn, const uint8_t *blocks,
                                const uint8_t *scales, const uint16_t *bias, const int32_t *e_start,
                                const int32_t *e_slots, int T, int top_k, int E, int I, int H,
                                float limit, int version, cudaStream_t s) {
    int tile = version >= 3 ? moe3_tile(T, top_k, E, version) : 0;
    if (version >= 4 && tile == 3)
        return moe5_launch<false, 10, 2, 8, 4>(act, xn, blocks, scales, bias, e_start, e_slots,
                                               NULL, top_k, E, T * top_k, 2 * I, H, limit, s);
    if (version >= 4 && tile == 2 && moe4_fits(H))
        return moe4_launch<false, 15, 2, 2, 4, 1>(act, xn, blocks, scales, bias, e_start, e_slots,
                                                  NULL, top_k, E, T * top_k, 2 * I, H, limit, s);
    if (version >= 3) {
        if (tile == 2)
            return moe3_launch<false, 6, 2, 2, 3>(act, xn, blocks, scales, bias, e_start, e_slots,
                                                  NULL, top_k, E, T * top_k, 2 * I, H, limit, s);
        if (moe3_small_stages == 8)
            return moe3_launch<false, 4, 1, 1, 8>(act, xn, blocks, scales, bias, e_start, e_slots,
                                                  NULL, top_k, E, T * top_k, 2 * I, H, limit, s);
        return moe3_launch<false, 4, 1, 1, 4>(act, xn, blocks, scales, bias, e_start, e_slots, NULL,
                                              top_k, E, T * top_k, 2 * I, H, limit, s);
    }
    if (version == 2)
        return moe_launch<false, MOE_V2_WARPS, MOE_V2_TOK>(act, xn, blocks, scales, bias, e_start,
                                                           e_slots, NULL, top_k, E, T * top_k,
                                                           2 * I, H, limit, s);
    return moe_launch<false, MOE_V1_WARPS, MOE_V1_TOK>(act, xn, blocks, scales, bias, e_start,
                                                       e_slots, NULL, top_k, E, T * top_k, 2 * I, H,
                                                       limit, s);
}

extern "C" int cuda_moe_down(float *y, const uint16_t *act, const uint8_t *blocks,
                             const uint8_t *scales, const uint16_t *bias, const int32_t *e_start,
                             const int32_t *e_slots, const float *top_w, int T, int top_k, int E,
                             int H, int I, int version, cudaStream_t s) {
    int tile = version >= 3 ? moe3_tile(T, top_k, E, version) : 0;
    if (version >= 4 && tile == 3)
        return moe5_launch<true, 10, 2, 8, 4>(y, act, blocks, scales, bias, e_start, e_slots, top_w,
                                              1, E, T * top_k, H, I, 0.0f, s);
    if (version >= 4 && tile == 2 && moe4_fits(I))
        return moe4_launch<true, 15, 2, 2, 4, 1>(y, act, blocks, scales, bias, e_start, e_slots,
                                                 top_w, 1, E, T * top_k, H, I, 0.0f, s);
    if (version >= 3) {
        if (tile == 2)
            return moe3_launch<true, 6, 2, 2, 3>(y, act, blocks, scales, bias, e_start, e_slots,
                                                 top_w, 1, E, T * top_k, H, I, 0.0f, s);
        if (moe3_small_stages == 8)
            return moe3_launch<true, 4, 1, 1, 8>(y, act, blocks, scales, bias, e_start, e_slots,
                                                 top_w, 1, E, T * top_k, H, I, 0.0f, s);
        return moe3_launch<true, 4, 1, 1, 4>(y, act, blocks, scales, bias, e_start, e_slots, top_w,
                                             1, E, T * top_k, H, I, 0.0f, s);
    }
    if (version == 2)
        return moe_launch<true, MOE_V2_WARPS, MOE_V2_TOK>(
            y, act, blocks, scales, bias, e_start, e_slots, top_w, 1, E, T * top_k, H, I, 0.0f, s);
    return moe_launch<true, MOE_V1_WARPS, MOE_V1_TOK>(
        y, act, blocks, scales, bias, e_start, e_slots, top_w, 1, E, T * top_k, H, I, 0.0f, s);
}
