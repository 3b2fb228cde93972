/* layer.cuh - kernel version 9: a whole layer of a one-token step (single-stream decode) in one
 * kernel, a CTA per SM, its phases separated by grid-wide barriers:
 *
 *   q/k/v    attention RMSNorm (each CTA for itself) + GEMV + bias + RoPE + KV write (qkv8's)
 *   attention split-KV, a (kv head, split) item a CTA, the last of a head group's merging
 *   o_proj   GEMV + bias added into x (o8's)
 *   router   MLP RMSNorm (each CTA for itself), the expert logits, a CTA's share of the rows
 *   experts  each CTA picks the token's experts from the logits itself, then the gate_up tiles
 *            and the down tiles stream through one ring (gate8's and down8's)
 *
 * At batch 1 each of version 8's six kernels costs several microseconds of launch, drain and
 * first-byte latency whatever it moves. Here one kernel boundary is left a layer, and weights
 * that no phase decides are requested before the phases that need them: at the start, the
 * CTA's first q/k/v pairs, its first o_proj rows (which then arrive during q/k/v and attention)
 * and its router rows; the down projection's tiles as soon as the gate_up tiles leave slots
 * free. The arithmetic is version 8's, in its order: the results are version 6's bit for bit.
 *
 * Data that another CTA of the same launch wrote (x, q, the KV rows, att, the logits, act, the
 * down rows) is read through L2 (__ldcg, cp.async.cg): L1 is not coherent within a launch. */
#pragma once

#include "stream.cuh"

/* Ring slots a phase: one a warp. */
enum { L9_WARPS = RMSNORM_THREADS / 32, L9_ROUTER_ROWS = 2 };

typedef cuda_layer9_args layer9_args; /* cuda_ops.h */

/* Every CTA of the grid (all resident: one a SM) gets here before any goes on. target: this
 * CTA's count of arrivals so far (thread 0's). */
__device__ __forceinline__ void grid_sync(unsigned *gbar, unsigned &target) {
    __syncthreads();
    if (threadIdx.x == 0) {
        target += gridDim.x;
        __threadfence();
        atomicAdd(gbar, 1u);
        unsigned v;
        do {
            asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(gbar) : "memory");
        } while (v < target);
        __threadfence();
    }
    __syncthreads();
}

/* Shared memory of layer9_kernel: xs (12 KB: a normed row, the attention row, the swizzled token
 * row, two act rows), then the rings: q/k/v (L9_WARPS pairs of rows), o_proj (L9_WARPS rows), the
 * router rows; the expert ring (L9_WARPS tiles) over all three once they are consumed; the
 * attention's scratch over the q/k/v ring. */
struct layer9_smem {
    size_t xs, qkv, o, router, moe, end;
};
__host__ __device__ __forceinline__ layer9_smem layer9_layout(int H, int Q, int I) {
    size_t ld = (size_t)moe3_kpad(H > I ? H : I) + 16, row = (size_t)(H > Q ? H : Q) * 2;
    size_t xs = 2 * ld * 2 > row ? 2 * ld * 2 : row;
    xs = (xs + 127) / 128 * 128;
    layer9_smem m;
    m.xs = 0;
    m.qkv = xs;
    m.o = m.qkv + (size_t)L9_WARPS * 2 * H * 2;
    m.router = m.o + (size_t)L9_WARPS * Q * 2;
    size_t rings = m.router + (size_t)L9_ROUTER_ROWS * H * 2;
    int nc = ((H > I ? H : I) / 32 + 3) / 4;
    m.moe = xs;
    size_t moe_end = m.moe + (size_t)L9_WARPS * nc * 1088;
    size_t att_end = m.qkv + sizeof(float) * 32 * 64 + sizeof(att_smem);
    m.end = rings > moe_end ? rings : moe_end;
    if (att_end > m.end) m.end = att_end;
    return m;
}

__global__ void __launch_bounds__(RMSNORM_THREADS, 1) layer9_kernel(layer9_args a) {
    constexpr int NW = L9_WARPS;
    extern __shared__ __align__(128) uint8_t sm9[];
    __shared__ uint64_t bq[NW], bo[NW], bm[NW], br[1];
    __shared__ float red[32], topw_s[8];
    __shared__ int top_s[8], slot_id[8];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    int H = a.H, Q = a.Q, D = a.D, half = D / 2, ku = H / 8, kq = Q / 8;
    unsigned target = 0;
    layer9_smem L = layer9_layout(H, Q, a.I);
    uint16_t *xs = reinterpret_cast<uint16_t *>(sm9 + L.xs);
    uint4 *qring = reinterpret_cast<uint4 *>(sm9 + L.qkv),
          *oring = reinterpret_cast<uint4 *>(sm9 + L.o);
    uint4 *rrows = reinterpret_cast<uint4 *>(sm9 + L.router);
    uint8_t *mring = sm9 + L.moe;

    /* shares: q/k/v pairs, o_proj rows, router rows */
    int p0, nq, n0, no, r0, nr;
    cta_share((a.n_heads + 2 * a.n_kv) * half, p0, nq);
    cta_share(H, n0, no);
    cta_share(a.E, r0, nr);
    auto issue_q = [&](int j) {
        int p = p0 + j, r1 = p / half * D + p % half;
        uint4 *dst = qring + (size_t)(j % NW) * 2 * ku;
        uint64_t *b = bq + j % NW;
        mbar_expect(b, 4u * H);
        bulk_load(dst, a.qkv_w + (size_t)r1 * H, 2u * H, b);
        bulk_load(dst + ku, a.qkv_w + (size_t)(r1 + half) * H, 2u * H, b);
    };
    auto issue_o = [&](int j) {
        uint64_t *b = bo + j % NW;
        mbar_expect(b, 2u * Q);
        bulk_load(oring + (size_t)(j % NW) * kq, a.o_w + (size_t)(n0 + j) * Q, 2u * Q, b);
    };
    if (lane == 0) {
        mbar_init(bq + warp, 1);
        mbar_init(bo + warp, 1);
        mbar_init(bm + warp, 1);
        if (warp == 0) mbar_init(br, 1);
        mbar_init_fence();
        if (warp < nq) issue_q(warp);
        if (warp < no) issue_o(warp);
        if (warp == 0 && nr > 0) {
            int rows = nr < L9_ROUTER_ROWS ? nr : L9_ROUTER_ROWS;
            mbar_expect(br, 2u * H * rows);
            bulk_load(rrows, a.router_w + (size_t)r0 * H, 2u * H * rows, br);
        }
    }
    if (threadIdx.x < 8) slot_id[threadIdx.x] = threadIdx.x;
    pdl_wait();

    /* ---- q/k/v (qkv8) ---- */
    norm_rows<1, true>(xs, a.x, a.attn_norm, H, a.eps, red);
    const uint4 *xv = reinterpret_cast<const uint4 *>(xs);
    for (int j = warp; j < nq; j += NW) {
        int p = p0 + j;
        float c = 0.0f, sn = 0.0f;
        if (lane == 0) {
            float angle = (float)a.positions[0] * a.inv_freq[p % half];
            c = cosf(angle) * a.conc, sn = sinf(angle) * a.conc;
        }
        mbar_wait(bq + j % NW, (uint32_t)(j / NW) & 1u);
        const uint4 *wa = qring + (size_t)(j % NW) * 2 * ku, *wb = wa + ku;
        float acc[2][1] = {{0.0f}, {0.0f}};
        for (int u = lane; u < ku; u += 32) {
            uint4 xt = xv[u];
            acc[0][0] = dot8(acc[0][0], wa[u], xt);
            acc[1][0] = dot8(acc[1][0], wb[u], xt);
        }
        __syncwarp();
        if (lane == 0 && j + NW < nq) issue_q(j + NW);
        acc[0][0] = warp_sum(acc[0][0]), acc[1][0] = warp_sum(acc[1][0]);
        qkv_pair_store<1>(acc, c, sn, p, a.q, a.kcache, a.vcache, a.qkv_b, a.slots, a.n_heads,
                          a.n_kv, D, a.bs, lane);
    }
    grid_sync(a.gbar, target);

    /* ---- attention (attention_split_kernel's item, per-token chunks) ---- */
    {
        float(*qs)[64] = reinterpret_cast<float(*)[64]>(sm9 + L.qkv);
        att_smem *asm_ = reinterpret_cast<att_smem *>(sm9 + L.qkv + sizeof(float) * 32 * 64);
        int group = a.n_heads / a.n_kv, splits = a.splits;
        int pos = a.positions[0], lo = a.window > 0 ? max(0, pos - a.window + 1) : 0;
        int chunk = ((pos - lo + 1 + splits - 1) / splits + 31) / 32 * 32;
        const int32_t *brow = a.block_table + (size_t)a.token_seq[0] * a.max_blocks;
        for (int item = blockIdx.x; item < a.n_kv * splits; item += gridDim.x) {
            int g = item / splits, sp = item % splits, h = g * group + warp % group;
            load_q(qs[warp], a.q, 0, a.n_heads, h);
            int jb = lo + sp * chunk, je = min(pos, jb + chunk - 1);
            float m, l, acc0, acc1;
            attend_range(asm_, qs[warp], a.kcache, a.vcache, brow, g, a.n_kv, a.bs, jb, je, m, l,
                         acc0, acc1);
            float *pp = a.att_part + (size_t)h * splits * 66;
            if (warp < group) {
                if (lane == 0) pp[sp * 66] = m, pp[sp * 66 + 1] = l;
                pp[sp * 66 + 2 + 2 * lane] = acc0;
                pp[sp * 66 + 3 + 2 * lane] = acc1;
            }
            if (!last_cta(&a.att_count[g], splits)) continue;
            if (warp < group) attention_combine_head(a.att, pp, a.sinks, 0, h, a.n_heads, splits);
            if (threadIdx.x == 0) a.att_count[g] = 0;
        }
    }
    grid_sync(a.gbar, target);

    /* ---- o_proj into x (o8) ---- */
    for (int i = threadIdx.x; i < kq; i += blockDim.x)
        cp_async16(reinterpret_cast<uint4 *>(xs) + i, reinterpret_cast<const uint4 *>(a.att) + i);
    cp_async_commit();
    cp_async_wait0();
    __syncthreads();
    for (int j = warp; j < no; j += NW) {
        mbar_wait(bo + j % NW, (uint32_t)(j / NW) & 1u);
        const uint4 *wr = oring + (size_t)(j % NW) * kq;
        float acc = 0.0f;
        for (int u = lane; u < kq; u += 32)
            acc = dot8(acc, wr[u], reinterpret_cast<const uint4 *>(xs)[u]);
        __syncwarp();
        if (lane == 0 && j + NW < no) issue_o(j + NW);
        acc = warp_sum(acc);
        if (lane == 0) {
            float *xp = a.x + n0 + j;
            *xp = (__ldcg(xp) + acc) + bf16f(a.o_b[n0 + j]);
        }
    }
    grid_sync(a.gbar, target);

    /* ---- router logits (router7's rows) ---- */
    norm_rows<1, true>(xs, a.x, a.mlp_norm, H, a.eps, red);
    if (nr > 0) mbar_wait(br, 0);
    for (int r = warp; r < nr && r < L9_ROUTER_ROWS; r += NW) {
        const uint4 *wr = rrows + (size_t)r * ku;
        float acc = 0.0f;
        for (int u = lane; u < ku; u += 32) acc = dot8(acc, wr[u], xv[u]);
        acc = warp_sum(acc);
        if (lane == 0) a.logits[r0 + r] = acc;
    }
    grid_sync(a.gbar, target);

    /* ---- the experts: top-k here, then gate_up and down through one ring ---- */
    int K = a.top_k, I = a.I, N = 2 * I, tiles_g = N / 16, tiles_d = H / 16;
    if (warp == 0) router_topk_token(top_s, topw_s, a.logits, a.router_b, 0, a.E, K);
    /* the normed row, swizzled and padded as moe3_stage_tokens lays a token row out, after the
     * un-swizzled one */
    int ldg = moe3_kpad(H) + 16;
    uint16_t *xg = xs + (size_t)ldg; /* behind xs's first row (H <= ldg) */
    for (int qv = threadIdx.x, vec = moe3_kpad(H) / 8; qv < vec; qv += blockDim.x) {
        int kb = qv >> 2, w = (qv & 3) ^ ((kb >> 1) & 1);
        uint4 v = qv < H / 8 ? xv[qv] : make_uint4(0, 0, 0, 0);
        *reinterpret_cast<uint4 *>(xg + kb * 32 + w * 8) = v;
    }
    __syncthreads(); /* top_s, the swizzled row */
    if (blockIdx.x == 0 && threadIdx.x < K) {
        a.top_e[threadIdx.x] = top_s[threadIdx.x];
        a.top_w[threadIdx.x] = topw_s[threadIdx.x];
    }
    int nc_g = (H / 32 + 3) / 4, nc_d = (I / 32 + 3) / 4, g0, ng, d0, nd;
    size_t tb = (size_t)(nc_g > nc_d ? nc_g : nc_d) * 1088; /* a slot */
    cta_share(K * tiles_g, g0, ng);
    cta_share(K * tiles_d, d0, nd);
    auto issue_m = [&](int j) { /* stream unit j: gate_up tiles, then down tiles */
                                uint8_t *slot = mring + (size_t)(j % NW) * tb;
                                if (j < ng) {
                                    int u = g0 + j;
                                    tile8_issue(slot, bm + j % NW, a.gu_blocks, a.gu_scales,
                                                top_s[u / tiles_g], tiles_g, u % tiles_g, nc_g);
                                } else {
                                    int u = d0 + j - ng;
                                    tile8_issue(slot, bm + j % NW, a.dn_blocks, a.dn_scales,
                                                top_s[u / tiles_d], tiles_d, u % tiles_d, nc_d);
                                }
    };
    if (lane == 0 && warp < ng + nd) issue_m(warp);
    const char *xrow_g = reinterpret_cast<const char *>(xg) + tq * 64;
    int j = warp;
    for (; j < ng; j += NW) {
        int u = g0 + j, k = u / tiles_g, tile = u % tiles_g, e = top_s[k];
        mbar_wait(bm + warp, (uint32_t)(j / NW) & 1u);
        float acc[1][1][4];
        tile8_run(acc, mring + (size_t)warp * tb, xrow_g, ldg, nc_g, lane, tq);
        __syncwarp();
        if (lane == 0 && j + NW < ng + nd) issue_m(j + NW);
        moe3_epilogue<false, 1, 1>(a.act, acc, a.gu_bias, e, N, tile * 16 + gq, 1, 1, slot_id + k,
                                   NULL, a.limit, gq, tq);
    }
    grid_sync(a.gbar, target);
    /* the act rows of the CTA's down tiles' slots (at most two) */
    int ldd = moe3_kpad(I) + 16, s0 = d0 / tiles_d;
    int rows = nd > 0 ? (d0 + nd - 1) / tiles_d - s0 + 1 : 0;
    __shared__ int src_s[2];
    if (threadIdx.x < rows) src_s[threadIdx.x] = s0 + threadIdx.x;
    __syncthreads();
    stage_rows(xs, a.act, src_s, rows, I, ldd);
    cp_async_wait0();
    __syncthreads();
    for (; j < ng + nd; j += NW) {
        int u = d0 + j - ng, s = u / tiles_d, tile = u % tiles_d, e = top_s[s];
        const char *xrow = reinterpret_cast<const char *>(xs + (size_t)(s - s0) * ldd) + tq * 64;
        mbar_wait(bm + warp, (uint32_t)(j / NW) & 1u);
        float acc[1][1][4];
        tile8_run(acc, mring + (size_t)warp * tb, xrow, ldd, nc_d, lane, tq);
        __syncwarp();
        if (lane == 0 && j + NW < ng + nd) issue_m(j + NW);
        int r = tile * 16 + gq;
        if (tq == 0) {
            float tw = topw_s[s];
            a.ys[(size_t)s * H + r] = tw * (acc[0][0][0] + bf16f(a.dn_bias[(size_t)e * H + r]));
            a.ys[(size_t)s * H + r + 8] =
                tw * (acc[0][0][2] + bf16f(a.dn_bias[(size_t)e * H + r + 8]));
        }
        __threadfence();
        __syncwarp();
        int last = 0;
        if (lane == 0) last = atomicAdd(a.down_tick + tile, 1) == K - 1;
        if (!__shfl_sync(0xffffffffu, last, 0)) continue;
        __threadfence();
        if (lane < 16) {
            int rr = tile * 16 + lane;
            float v = __ldcg(a.x + rr);
            for (int d = 0; d < K; d++) v += __ldcg(a.ys + (size_t)d * H + rr);
            a.x[rr] = v;
        }
        if (lane == 0) a.down_tick[tile] = 0;
    }
    /* the last CTA out clears the barrier for the next launch (every CTA is past its spins) */
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        if (atomicAdd(a.gbar + 1, 1u) == gridDim.x - 1) {
            a.gbar[0] = 0;
            a.gbar[1] = 0;
        }
    }
}

/* Whether version 9 can take a step of T tokens of this shape (a single token, the heads of a kv
 * group at most a CTA's warps, the rings in a CTA's shared memory). */
extern "C" int cuda_layer9_fits(int T, int H, int n_heads, int n_kv, int D, int E, int top_k,
                                int I) {
    if (T != 1 || D != 64 || n_kv < 1 || n_heads % n_kv || n_heads / n_kv > L9_WARPS || H % 32 ||
        H > RMSNORM_PER * RMSNORM_THREADS || I % 32 || top_k < 1 || top_k > 8 ||
        E > L9_ROUTER_ROWS * sm_count())
        return 0;
    return smem_fits(layer9_layout(H, n_heads * D, I).end) ? 1 : 0;
}

extern "C" int cuda_layer9(const cuda_layer9_args *p, cudaStream_t s) {
    layer9_args a = *p;
    size_t smem = layer9_layout(a.H, a.Q, a.I).end;
    static size_t set;
    int e = smem_limit(layer9_kernel, smem, &set);
    if (e) return e;
    return pdl_launch(layer9_kernel, sm_count(), RMSNORM_THREADS, smem, s, a);
}
