/* attention.cuh - q/k/v bias + YaRN RoPE + KV-cache write (one kernel), and attention with sinks
 * over the paged KV cache for decode and chunked prefill alike.
 * CPU twins: ops_rope and att_task in worker/cpu. */
#pragma once

#include "common.cuh"

/* ---- kernels ---- */

/* One CTA per token. Work items: q rotation pairs (n_heads * D/2), k pairs (n_kv * D/2), then v
 * elements (n_kv * D). The token's D/2 angles and their cos/sin are computed once, as the CPU
 * does (float angle = pos * inv_freq, accurate cosf/sinf: this file is built without fast math),
 * into shared memory for every head. */
enum { ROPE_MAX_HALF = 128 };

/* The rotation of a pair (cos c and sin sn with the concentration in them), its roundings
 * spelled out (no fused multiply-add) so that every kernel that applies it gives the same bits
 * (qkv7_kernel in small.cuh). */
__device__ __forceinline__ void rope_rotate(float x1, float x2, float c, float sn, float &y1,
                                            float &y2) {
    y1 = __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, sn));
    y2 = __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, sn));
}

__global__ void qkv_rope_kernel(float *q, uint16_t *kcache, uint16_t *vcache, const float *qkv,
                                const uint16_t *bias, const int32_t *positions,
                                const int32_t *slots, const float *inv_freq, float conc,
                                int n_heads, int n_kv, int D, int bs) {
    pdl_trigger();
    __shared__ float cs[2 * ROPE_MAX_HALF];
    int t = blockIdx.x, half = D / 2, Q = n_heads * D, KV = n_kv * D;
    const float *row = qkv + (size_t)t * (Q + 2 * KV);
    /* positions and slots are the step's uploaded indices, which no kernel writes: the angles
     * are worked out while the q/k/v GEMM still runs, before the wait for its output */
    int pos = positions[t], slot = slots[t], blk = slot / bs, off = slot % bs;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float angle = (float)pos * inv_freq[i];
        cs[i] = cosf(angle) * conc;
        cs[ROPE_MAX_HALF + i] = sinf(angle) * conc;
    }
    __syncthreads();
    pdl_wait();
    int n_rot = (n_heads + n_kv) * half, n_all = n_rot + KV;
#pragma unroll 4
    for (int w = threadIdx.x; w < n_all; w += blockDim.x) {
        if (w < n_rot) {
            int head = w / half, i = w % half;
            bool is_q = head < n_heads;
            int col = is_q ? head * D : Q + (head - n_heads) * D;
            float x1 = row[col + i] + bf16f(bias[col + i]);
            float x2 = row[col + i + half] + bf16f(bias[col + i + half]);
            float y1, y2;
            rope_rotate(x1, x2, cs[i], cs[ROPE_MAX_HALF + i], y1, y2);
            if (is_q) {
                q[(size_t)t * Q + col + i] = y1;
                q[(size_t)t * Q + col + i + half] = y2;
            } else {
                int kh = head - n_heads;
                uint16_t *dst = kcache + ((size_t)(blk * n_kv + kh) * bs + off) * D;
                dst[i] = f2bf16(y1);
                dst[i + half] = f2bf16(y2);
            }
        } else {
            int e = w - n_rot, kh = e / D, d = e % D, col = Q + KV + e;
            vcache[((size_t)(blk * n_kv + kh) * bs + off) * D + d] =
                f2bf16(row[col] + bf16f(bias[col]));
        }
    }
}

/* Key tiles of attention: 32 keys whose K and V rows (128 bytes each) the whole CTA copies into
 * shared memory with cp.async, two tiles in flight, so that every K/V byte crosses L1 once per
 * CTA in whole 128-byte lines; the warps (one per query head of the kv group) then read the
 * tile from shared memory. Rows are padded to 144 bytes: lane j reading row j hits distinct
 * banks. */
enum { ATT_TILE = 32, ATT_ROW = 72 /* bf16 per padded row */ };

struct att_smem {
    uint16_t k[2][ATT_TILE * ATT_ROW], v[2][ATT_TILE * ATT_ROW];
};

/* The CTA copies keys [j0, min(j0 + 32, je + 1)) of kv head g into buffer buf. */
__device__ __forceinline__ void att_issue(att_smem *sm, int buf, const uint16_t *kc,
                                          const uint16_t *vc, const int32_t *brow, int g, int n_kv,
                                          int bs, int j0, int je) {
    for (int i = threadIdx.x; i < ATT_TILE * 8; i += blockDim.x) {
        int r = i >> 3, c = i & 7, j = j0 + r;
        if (j <= je) {
            size_t base = ((size_t)(brow[j / bs] * n_kv + g) * bs + j % bs) * 64 + c * 8;
            cp_async16(sm->k[buf] + r * ATT_ROW + c * 8, kc + base);
            cp_async16(sm->v[buf] + r * ATT_ROW + c * 8, vc + base);
        }
    }
    cp_async_commit();
}

/* Keys [j_begin, j_end] of the sequence whose block table row is brow, for the warp's query
 * head (q scaled, in qs); every warp of the CTA must call it with the same range (it
 * synchronizes the CTA). Lane l scores key j0 + l of a tile, the warp keeps the online-softmax
 * state (m, l). For P·V the lanes split as 4 key slots × 8 dimension groups: lane (kq, d8) reads
 * 16 bytes (dimensions 8 d8 .. 8 d8 + 7) of the V rows of keys 4 i + kq and keeps 8 partial
 * sums; the four key slots are summed once at the end. On return every lane has acc0, acc1 =
 * output dimensions 2 lane, 2 lane + 1. An empty range leaves m = -inf, l = 0, acc = 0. pre: the
 * first tiles (0, 1 or 2) the caller has already issued, each its own group, into buffers 0
 * and 1. */
__device__ __forceinline__ void attend_range(att_smem *sm, const float *qs, const uint16_t *kc,
                                             const uint16_t *vc, const int32_t *brow, int g,
                                             int n_kv, int bs, int j_begin, int j_end, float &m,
                                             float &l, float &acc0, float &acc1, int pre = 0) {
    int lane = threadIdx.x & 31, kq = lane >> 3, d8 = lane & 7;
    float acc[8];
#pragma unroll
    for (int i = 0; i < 8; i++) acc[i] = 0.0f;
    m = -INFINITY, l = 0.0f;
    int ntiles = j_end >= j_begin ? (j_end - j_begin) / ATT_TILE + 1 : 0;
    if (ntiles > 0 && pre < 1) att_issue(sm, 0, kc, vc, brow, g, n_kv, bs, j_begin, j_end);
    for (int tile = 0; tile < ntiles; tile++) {
        int buf = tile & 1, j0 = j_begin + tile * ATT_TILE;
        if (tile + 1 < ntiles && tile + 1 >= pre)
            att_issue(sm, buf ^ 1, kc, vc, brow, g, n_kv, bs, j0 + ATT_TILE, j_end);
        else
            cp_async_commit(); /* an empty group keeps wait_group 1 meaning "this tile" */
        cp_async_wait1();
        __syncthreads();
        int nvalid = min(ATT_TILE, j_end - j0 + 1);
        float sc = -INFINITY;
        if (lane < nvalid) {
            const uint4 *kr = reinterpret_cast<const uint4 *>(sm->k[buf] + lane * ATT_ROW);
            float d = 0.0f;
#pragma unroll
            for (int c = 0; c < 8; c++) {
                uint4 u = kr[c];
                uint32_t w4[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    d += __uint_as_float(w4[e] << 16) * qs[c * 8 + 2 * e];
                    d += __uint_as_float(w4[e] & 0xffff0000u) * qs[c * 8 + 2 * e + 1];
                }
            }
            sc = d;
        }
        float mn = fmaxf(m, warp_max(sc)); /* finite: lane 0's key is always in range */
        float alpha = expf(m - mn);
        float p = lane < nvalid ? expf(sc - mn) : 0.0f;
        l = l * alpha + warp_sum(p);
#pragma unroll
        for (int i = 0; i < 8; i++) acc[i] *= alpha;
#pragma unroll
        for (int i = 0; i < ATT_TILE; i += 4) {
            if (i >= nvalid) break;
            int jj = i + kq;
            float pj = __shfl_sync(0xffffffffu, p, jj);
            if (jj < nvalid) {
                uint4 v = *reinterpret_cast<const uint4 *>(sm->v[buf] + jj * ATT_ROW + 8 * d8);
                uint32_t w4[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    acc[2 * e] += pj * __uint_as_float(w4[e] << 16);
                    acc[2 * e + 1] += pj * __uint_as_float(w4[e] & 0xffff0000u);
                }
            }
        }
        m = mn;
        __syncthreads(); /* buffer buf is refilled by the next iteration's issue */
    }
    /* sum the four key slots, then hand lane x dimensions 2x, 2x + 1 (held by group x / 4) */
#pragma unroll
    for (int i = 0; i < 8; i++) {
        acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], 8);
        acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], 16);
    }
    int src = lane >> 2, k0 = 2 * (lane & 3);
    acc0 = 0.0f, acc1 = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        float v = __shfl_sync(0xffffffffu, acc[i], src);
        if (i == k0) acc0 = v;
        if (i == k0 + 1) acc1 = v;
    }
}

/* Load the warp's query head, scaled: 1/sqrt(64) = 1/8 is a power of two, so scaling q first
 * rounds exactly as scaling the dot product does. */
__device__ __forceinline__ void load_q(float *qs, const float *q, int t, int n_heads, int h) {
    int lane = threadIdx.x & 31;
    const float *qr = q + ((size_t)t * n_heads + h) * 64;
    qs[lane] = qr[lane] * 0.125f;
    qs[lane + 32] = qr[lane + 32] * 0.125f;
    __syncwarp();
}

/* Grid (T, n_kv); one warp per query head of the kv group, so the group's K/V rows are read
 * once from memory into shared memory (attend_range's tiles) for all its heads. The sink joins at
 * the end: one more logit in the denominator, none in the numerator. */
__global__ void attention_kernel(uint16_t *out, const float *q, const uint16_t *kc,
                                 const uint16_t *vc, const uint16_t *sinks,
                                 const int32_t *block_table, int max_blocks,
                                 const int32_t *token_seq, const int32_t *positions, int n_heads,
                                 int n_kv, int bs, int window) {
    pdl_trigger();
    pdl_wait();
    __shared__ __align__(16) float qs[32][64];
    __shared__ __align__(16) att_smem sm;
    int t = blockIdx.x, g = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int h = g * (n_heads / n_kv) + warp;
    load_q(qs[warp], q, t, n_heads, h);
    int pos = positions[t], lo = window > 0 ? max(0, pos - window + 1) : 0;
    const int32_t *brow = block_table + (size_t)token_seq[t] * max_blocks;
    float m, l, acc0, acc1;
    attend_range(&sm, qs[warp], kc, vc, brow, g, n_kv, bs, lo, pos, m, l, acc0, acc1);
    float sk = bf16f(sinks[h]), mf = fmaxf(m, sk), a = expf(m - mf);
    l = l * a + expf(sk - mf);
    uint16_t *o = out + ((size_t)t * n_heads + h) * 64;
    o[2 * lane] = f2bf16(acc0 * a / l);
    o[2 * lane + 1] = f2bf16(acc1 * a / l);
}

/* Head h of token t from its splits' partial states (pp = part at (t, h, 0)): out = Σ acc_sp
 * e^(m_sp − M) / (e^(sink − M) + Σ l_sp e^(m_sp − M)), M the largest of the sink and the m_sp.
 * One warp; the states are read from L2 (other CTAs wrote them). */
__device__ __forceinline__ void attention_combine_head(uint16_t *out, const float *pp,
                                                       const uint16_t *sinks, int t, int h,
                                                       int n_heads, int splits) {
    static_assert(CUDA_ATT_MAX_SPLITS <= 32, "a lane per split");
    int lane = threadIdx.x & 31;
    /* Every split's (m, l) at once, a lane each, and the accumulators 8 splits at a time: a
     * round trip to L2 per load in a loop over the splits had made the merge ~9 us of a
     * batch-1 layer. The sums run over the splits in order as before. */
    float ml = lane < splits ? __ldcg(pp + lane * 66) : -INFINITY;
    float ll = lane < splits ? __ldcg(pp + lane * 66 + 1) : 0.0f;
    float sk = bf16f(sinks[h]), M = fmaxf(sk, warp_max(ml));
    float wl = expf(ml - M); /* an empty split has m = -inf: weight 0 */
    /* The empty splits (a short context in a graph sized for the longest) are the last ones;
     * their terms are exact zeros, so the sums stop before them. */
    splits = 32 - __clz(__ballot_sync(0xffffffffu, ml > -INFINITY));
    float L = expf(sk - M), a0 = 0.0f, a1 = 0.0f;
    for (int sp = 0; sp < splits; sp++)
        L += __shfl_sync(0xffffffffu, ll, sp) * __shfl_sync(0xffffffffu, wl, sp);
    for (int s0 = 0; s0 < splits; s0 += 8) {
        float v0[8], v1[8];
#pragma unroll
        for (int k = 0; k < 8; k++) {
            bool in = s0 + k < splits;
            v0[k] = in ? __ldcg(pp + (s0 + k) * 66 + 2 + 2 * lane) : 0.0f;
            v1[k] = in ? __ldcg(pp + (s0 + k) * 66 + 3 + 2 * lane) : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < 8; k++) {
            float w = __shfl_sync(0xffffffffu, wl, (s0 + k) & 31);
            if (s0 + k < splits) a0 += v0[k] * w, a1 += v1[k] * w;
        }
    }
    uint16_t *o = out + ((size_t)t * n_heads + h) * 64;
    o[2 * lane] = f2bf16(a0 / L);
    o[2 * lane + 1] = f2bf16(a1 / L);
}

/* Split-KV decode (flash-decoding): grid (T, n_kv, splits). CTA (t, g, sp) takes keys
 * [lo + sp*chunk, lo + (sp+1)*chunk) ∩ [lo, pos] (chunk <= 0: token t's own span [lo, pos]
 * over the splits, so that a graph, whose split count comes from the longest context it may
 * see, still spreads a short context over all of its CTAs) and writes each head's partial state
 * part[(t, h, sp)] = (m, l, acc[64]); with counters, the last of the group's CTAs to finish
 * (count[(t, g)], a ticket counter it sets back to zero) merges the splits and the sink, a warp
 * per head, which saves a launch per layer where the step is all latency; without,
 * attention_combine_kernel does. For small batches, where (T, n_kv) alone would leave most SMs
 * idle. */
template <bool BULK = false> /* the group's query heads by a bulk copy (cuda_small_bulk bit 16) */
__global__ void
attention_split_kernel(uint16_t *out, float *part, int *count, const float *q, const uint16_t *kc,
                       const uint16_t *vc, const uint16_t *sinks, const int32_t *block_table,
                       int max_blocks, const int32_t *token_seq, const int32_t *positions,
                       int n_heads, int n_kv, int bs, int window, int chunk) {
    TL_MARK(CUDA_TL_ATT, 0);
    pdl_trigger();
    __shared__ __align__(16) float qs[32][64];
    __shared__ __align__(16) att_smem sm;
    int t = blockIdx.x, g = blockIdx.y, sp = blockIdx.z, splits = gridDim.z;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int h = g * (n_heads / n_kv) + warp;
    int pos = positions[t], lo = window > 0 ? max(0, pos - window + 1) : 0;
    if (chunk <= 0) /* this token's own keys over the splits, whole 32-key tiles */
        chunk = ((pos - lo + 1 + splits - 1) / splits + 31) / 32 * 32;
    int jb = lo + sp * chunk, je = min(pos, jb + chunk - 1);
    const int32_t *brow = block_table + (size_t)token_seq[t] * max_blocks;
    /* Keys at or below pos - T are final before this step (its tokens of one sequence are at
     * most T, ending at pos): at one or two tokens the first tiles that hold only such keys load
     * before the wait, while the q/k/v kernel ends (batch 1 3.28 against 3.34 ms on an H100). At
     * four the CTAs' 8 MB of early loads slowed the q/k/v kernel more than attention gained
     * (6.99 against 6.86 ms). */
    int fin = pos - (int)gridDim.x, pre = 0;
    if (gridDim.x <= 2 && je >= jb && min(jb + ATT_TILE - 1, je) <= fin) {
        att_issue(&sm, 0, kc, vc, brow, g, n_kv, bs, jb, je);
        pre = 1;
        if (jb + ATT_TILE <= je && min(jb + 2 * ATT_TILE - 1, je) <= fin) {
            att_issue(&sm, 1, kc, vc, brow, g, n_kv, bs, jb + ATT_TILE, je);
            pre = 2;
        }
    }
    if (lane == 0) prefetch_l1(sinks + h); /* the merge's, in the last CTA */
    __shared__ __align__(8) uint64_t qbar;
    if (BULK) mbar_init(&qbar), __syncthreads();
    pdl_wait();
    TL_MARK(CUDA_TL_ATT, 1);
    if (BULK) { /* the group's heads are contiguous in q: one copy, then each warp scales its own */
        int group = n_heads / n_kv;
        bulk_one(qs[0], q + ((size_t)t * n_heads + g * group) * 64, group * 256, &qbar);
        mbar_wait0(&qbar);
        qs[warp][lane] *= 0.125f, qs[warp][lane + 32] *= 0.125f; /* as load_q */
        __syncwarp();
    } else {
        load_q(qs[warp], q, t, n_heads, h);
    }
    float m, l, acc0, acc1;
    attend_range(&sm, qs[warp], kc, vc, brow, g, n_kv, bs, jb, je, m, l, acc0, acc1, pre);
    TL_MARK(CUDA_TL_ATT, 3);
    float *pp = part + ((size_t)t * n_heads + h) * splits * 66;
    if (lane == 0) pp[sp * 66] = m, pp[sp * 66 + 1] = l;
    pp[sp * 66 + 2 + 2 * lane] = acc0;
    pp[sp * 66 + 3 + 2 * lane] = acc1;
    if (!count || !last_cta(&count[t * n_kv + g], splits)) {
        TL_MARK(CUDA_TL_ATT, 2);
        return;
    }
    TL_MARK(CUDA_TL_ATT, 4);
    attention_combine_head(out, pp, sinks, t, h, n_heads, splits);
    if (threadIdx.x == 0) count[t * n_kv + g] = 0;
    TL_MARK(CUDA_TL_ATT, 2);
}

/* The merge as a kernel of its own (attention_split_kernel without counters): grid (T, n_heads),
 * one warp. */
__global__ void attention_combine_kernel(uint16_t *out, const float *part, const uint16_t *sinks,
                                         int n_heads, int splits) {
    pdl_trigger();
    pdl_wait();
    int t = blockIdx.x, h = blockIdx.y;
    attention_combine_head(out, part + ((size_t)t * n_heads + h) * splits * 66, sinks, t, h,
                           n_heads, splits);
}

/* ---- attention on the tensor cores (kernel version 5) ----
 *
 * The kernels above spend ~330 instructions per warp and 32-key tile on each query head (bf16
 * unpacking, shared-memory q reads, FFMA dot products), so at batch 256 they issue far more than
 * the K/V bytes need. Here one warp serves all 8 query heads of a kv group with m16n8k16 MMAs:
 * S = Q K^T with the heads as the M rows (rows 8..15 zero) and the tile's keys as N; the S
 * fragments are already the A fragments of P·V (P = the online softmax's weights in bf16), and
 * ldmatrix.trans turns the [key][dim] V tile into B fragments. q is split into a bf16 high part
 * and a bf16 remainder (two MMAs), so the scores keep about 16 bits of q; P in bf16 is the one
 * rounding the float kernels do not have (relative 2^-9 per weight). */
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    return (uint32_t)f2bf16(lo) | (uint32_t)f2bf16(hi) << 16;
}

/* K/V tiles of the tensor-core kernel: 16 keys, three in flight, rows of 128 bytes whose
 * 16-byte chunk c sits at chunk c ^ (row & 7), so that both the B-fragment word reads of K and
 * the ldmatrix.trans row reads of V hit distinct banks without padding. 12 KB per warp: 17
 * warps (CTAs) fit an SM, so that a batch-256 step's 2,048 (token, kv head) CTAs run as one
 * wave (with 32-key tiles in two padded stages, 18 KB, 12 fit and the step ran as 1.3 waves:
 * the second wave left most of each SM idle). */
enum { ATT_MT = 16, ATT_MST = 3 };

struct att_mma_smem {
    uint16_t k[ATT_MST][ATT_MT * 64], v[ATT_MST][ATT_MT * 64];
};

__device__ __forceinline__ int att_swz(int r, int c) {
    return r * 64 + ((c ^ (r & 7)) << 3);
}

/* The warp copies keys [j0, min(j0 + 16, je + 1)) of kv head g into stage st (one group). */
__device__ __forceinline__ void att_mma_issue(att_mma_smem *sm, int st, const uint16_t *kc,
                                              const uint16_t *vc, const int32_t *brow, int g,
                                              int n_kv, int bs, int j0, int je) {
    int lane = threadIdx.x;
#pragma unroll
    for (int i = 0; i < ATT_MT * 8 / 32; i++) {
        int e = lane + 32 * i, r = e >> 3, c = e & 7, j = j0 + r;
        if (j <= je) {
            size_t base = ((size_t)(brow[j / bs] * n_kv + g) * bs + j % bs) * 64 + c * 8;
            cp_async16(sm->k[st] + att_swz(r, c), kc + base);
            cp_async16(sm->v[st] + att_swz(r, c), vc + base);
        }
    }
    cp_async_commit();
}

/* Grid (T, n_kv), one warp; the kv group has 8 query heads (gpt-oss), D = 64. Lane (g, t) owns
 * head g of the group: its scores at keys 8n + 2t, 8n + 2t + 1 of each 8-key half n of a tile,
 * its output at dims 8d + 2t, 8d + 2t + 1. */
__global__ void __launch_bounds__(32, 17)
    attention_mma_kernel(uint16_t *out, const float *q, const uint16_t *kc, const uint16_t *vc,
                         const uint16_t *sinks, const int32_t *block_table, int max_blocks,
                         const int32_t *token_seq, const int32_t *positions, int n_heads, int n_kv,
                         int bs, int window) {
    pdl_trigger();
    pdl_wait();
    __shared__ __align__(128) att_mma_smem sm;
    int t = blockIdx.x, g = blockIdx.y, lane = threadIdx.x, gq = lane >> 2, tq = lane & 3;
    int h = g * 8 + gq;
    int pos = positions[t], lo = window > 0 ? max(0, pos - window + 1) : 0;
    const int32_t *brow = block_table + (size_t)token_seq[t] * max_blocks;
    int ntiles = (pos - lo) / ATT_MT + 1;
    /* the first stages' copies go out before q is read */
#pragma unroll
    for (int i = 0; i < ATT_MST - 1; i++) {
        if (i < ntiles)
            att_mma_issue(&sm, i, kc, vc, brow, g, n_kv, bs, lo + i * ATT_MT, pos);
        else
            cp_async_commit();
    }
    /* Q fragments, scaled by 1/8 (exact), high and low bf16 parts: k-step ks covers dims
     * 16ks .. 16ks + 15; a0 = dims 16ks + 2t, +1; a2 = dims 16ks + 8 + 2t, +1. */
    uint32_t qh[4][2], ql[4][2];
    const float *qr = q + ((size_t)t * n_heads + h) * 64;
#pragma unroll
    for (int ks = 0; ks < 4; ks++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float2 v = *reinterpret_cast<const float2 *>(qr + 16 * ks + 8 * r + 2 * tq);
            float x0 = v.x * 0.125f, x1 = v.y * 0.125f;
            float h0 = bf16f(f2bf16(x0)), h1 = bf16f(f2bf16(x1));
            qh[ks][r] = pack_bf16(h0, h1);
            ql[ks][r] = pack_bf16(x0 - h0, x1 - h1);
        }
    float m = -INFINITY, l = 0.0f, o[8][2];
#pragma unroll
    for (int d = 0; d < 8; d++) o[d][0] = o[d][1] = 0.0f;
    for (int tile = 0; tile < ntiles; tile++) {
        int st = tile % ATT_MST, j0 = lo + tile * ATT_MT, nx = tile + ATT_MST - 1;
        if (nx < ntiles)
            att_mma_issue(&sm, nx % ATT_MST, kc, vc, brow, g, n_kv, bs, lo + nx * ATT_MT, pos);
        else
            cp_async_commit();
        cp_async_wait<ATT_MST - 1>();
        __syncwarp();
        int nvalid = min(ATT_MT, pos - j0 + 1);
        const uint16_t *ks_ = sm.k[st], *vs_ = sm.v[st];
        if (nvalid < ATT_MT) { /* P is 0 there, but 0 times a stale NaN is not */
            if (lane >= nvalid && lane < ATT_MT)
#pragma unroll
                for (int c = 0; c < 8; c++)
                    *reinterpret_cast<uint4 *>(sm.v[st] + lane * 64 + 8 * c) =
                        make_uint4(0, 0, 0, 0);
            __syncwarp();
        }
        /* S = Q K^T: B fragment of key half n = K row 8n + g, dims (k-step) 2t, 2t + 8 */
        float sc[2][4];
#pragma unroll
        for (int n = 0; n < 2; n++) {
            sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.0f;
            int r = 8 * n + gq;
            const uint16_t *kr = ks_ + r * 64 + 2 * tq;
#pragma unroll
            for (int k = 0; k < 4; k++) {
                uint32_t b0 = *reinterpret_cast<const uint32_t *>(kr + (((2 * k) ^ gq) << 3));
                uint32_t b1 = *reinterpret_cast<const uint32_t *>(kr + (((2 * k + 1) ^ gq) << 3));
                mma_bf16(sc[n], qh[k][0], 0u, qh[k][1], 0u, b0, b1);
                mma_bf16(sc[n], ql[k][0], 0u, ql[k][1], 0u, b0, b1);
            }
        }
        /* online softmax over the tile, per head: row g's values sit in the quad of lanes */
        float mt = -INFINITY;
#pragma unroll
        for (int n = 0; n < 2; n++)
#pragma unroll
            for (int c = 0; c < 2; c++) {
                if (8 * n + 2 * tq + c >= nvalid) sc[n][c] = -INFINITY;
                mt = fmaxf(mt, sc[n][c]);
            }
        mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
        mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 2));
        float mn = fmaxf(m, mt), alpha = expf(m - mn), ps = 0.0f;
        uint32_t pa[2];
#pragma unroll
        for (int n = 0; n < 2; n++) {
            float p0 = expf(sc[n][0] - mn), p1 = expf(sc[n][1] - mn);
            ps += p0 + p1;
            pa[n] = pack_bf16(p0, p1);
        }
        ps += __shfl_xor_sync(0xffffffffu, ps, 1);
        ps += __shfl_xor_sync(0xffffffffu, ps, 2);
        l = l * alpha + ps;
        m = mn;
        /* O = O alpha + P V: one k-step (a0 = keys 0..7, a2 = keys 8..15); B of dims 8d .. 8d + 7
         * from ldmatrix.trans of V rows lane & 15, dims 8(d + lane/16) */
#pragma unroll
        for (int d = 0; d < 8; d++) o[d][0] *= alpha, o[d][1] *= alpha;
        int vr = lane & 15;
#pragma unroll
        for (int d = 0; d < 8; d += 2) {
            const uint16_t *vp = vs_ + att_swz(vr, d + (lane >> 4));
            uint32_t a = (uint32_t)__cvta_generic_to_shared(vp), b0, b1, b2, b3;
            asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                         : "=r"(b0), "=r"(b1), "=r"(b2), "=r"(b3)
                         : "r"(a));
            float c0[4] = {o[d][0], o[d][1], 0.0f, 0.0f};
            float c1[4] = {o[d + 1][0], o[d + 1][1], 0.0f, 0.0f};
            mma_bf16(c0, pa[0], 0u, pa[1], 0u, b0, b1);
            mma_bf16(c1, pa[0], 0u, pa[1], 0u, b2, b3);
            o[d][0] = c0[0], o[d][1] = c0[1], o[d + 1][0] = c1[0], o[d + 1][1] = c1[1];
        }
        __syncwarp(); /* stage st is refilled by a later iteration's issue */
    }
    cp_async_wait0();
    float sk = bf16f(sinks[h]), mf = fmaxf(m, sk), a = expf(m - mf);
    l = l * a + expf(sk - mf);
    float f = a / l;
    uint16_t *op = out + ((size_t)t * n_heads + h) * 64;
#pragma unroll
    for (int d = 0; d < 8; d++)
        *reinterpret_cast<uint32_t *>(op + 8 * d + 2 * tq) = pack_bf16(o[d][0] * f, o[d][1] * f);
}

/* ---- launchers ---- */

extern "C" int cuda_qkv_rope(float *q, uint16_t *kcache, uint16_t *vcache, const float *qkv,
                             const uint16_t *bias, const int32_t *positions, const int32_t *slots,
                             const float *inv_freq, float concentration, int T, int n_heads,
                             int n_kv_heads, int D, int block_size, cudaStream_t s) {
    if (T <= 0) return 0;
    if (D < 2 || D % 2 || D / 2 > ROPE_MAX_HALF) return (int)cudaErrorInvalidValue;
    return pdl_launch(qkv_rope_kernel, T, 512, 0, s, q, kcache, vcache, qkv, bias, positions, slots,
                      inv_freq, concentration, n_heads, n_kv_heads, D, block_size);
}

extern "C" int cuda_attention(uint16_t *out, const float *q, const uint16_t *kcache,
                              const uint16_t *vcache, const uint16_t *sinks,
                              const int32_t *block_table, int max_blocks, const int32_t *token_seq,
                              const int32_t *positions, int T, int n_heads, int n_kv_heads, int D,
                              int block_size, int window, cudaStream_t s) {
    if (T <= 0) return 0;
    int group = n_heads / n_kv_heads;
    if (D != 64 || group < 1 || group > 32 || group * n_kv_heads != n_heads)
        return (int)cudaErrorInvalidValue;
    dim3 grid(T, n_kv_heads);
    return pdl_launch(attention_kernel, grid, 32 * group, 0, s, out, q, kcache, vcache, sinks,
                      block_table, max_blocks, token_seq, positions, n_heads, n_kv_heads,
                      block_size, window);
}

extern "C" int cuda_attention_mma(uint16_t *out, const float *q, const uint16_t *kcache,
                                  const uint16_t *vcache, const uint16_t *sinks,
                                  const int32_t *block_table, int max_blocks,
                                  const int32_t *token_seq, const int32_t *positions, int T,
                                  int n_heads, int n_kv_heads, int D, int block_size, int window,
                                  cudaStream_t s) {
    if (T <= 0) return 0;
    if (D != 64 || n_heads != 8 * n_kv_heads)
        return cuda_attention(out, q, kcache, vcache, sinks, block_table, max_blocks, token_seq,
                              positions, T, n_heads, n_kv_heads, D, block_size, window, s);
    dim3 grid(T, n_kv_heads);
    return pdl_launch(attention_mma_kernel, grid, 32, 0, s, out, q, kcache, vcache, sinks,
                      block_table, max_blocks, token_seq, positions, n_heads, n_kv_heads,
                      block_size, window);
}

extern "C" int cuda_attention_split(uint16_t *out, float *part, int *count, const float *q,
                                    const uint16_t *kcache, const uint16_t *vcache,
                                    const uint16_t *sinks, const int32_t *block_table,
                                    int max_blocks, const int32_t *token_seq,
                                    const int32_t *positions, int T, int n_heads, int n_kv_heads,
                                    int D, int block_size, int window, int max_ctx, int splits,
                                    int per_token, cudaStream_t s) {
    if (T <= 0) return 0;
    int group = n_heads / n_kv_heads;
    if (D != 64 || group < 1 || group > 32 || group * n_kv_heads != n_heads || splits < 1 ||
        splits > CUDA_ATT_MAX_SPLITS || max_ctx < 1)
        return (int)cudaErrorInvalidValue;
    int span = window > 0 && window < max_ctx ? window : max_ctx;
    int chunk = (span + splits - 1) / splits;
    chunk = (chunk + 31) / 32 * 32;
    splits = (span + chunk - 1) / chunk; /* no split left empty for the longest context */
    dim3 grid(T, n_kv_heads, splits);
    int e = pdl_launch((small_bulk & 16) && T == 1 && aligned16(q) ? attention_split_kernel<true>
                                                                   : attention_split_kernel<false>,
                       grid, 32 * group, 0, s, out, part, count, q, kcache, vcache, sinks,
                       block_table, max_blocks, token_seq, positions, n_heads, n_kv_heads,
                       block_size, window, per_token ? 0 : chunk);
    if (e || count) return e;
    return pdl_launch(attention_combine_kernel, dim3(T, n_heads), 32, 0, s, out, part, sinks,
                      n_heads, splits);
}
