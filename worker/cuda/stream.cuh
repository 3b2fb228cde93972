/* stream.cuh - kernel version 8: version 7's weight kernels with their weights streamed into
 * shared memory by the copy engine (bulk copies counted on mbarriers, common.cuh).
 *
 * At batch 1 a layer's weight GEMVs read 24-35 MB each, 180-270 KB per SM of an H100. The
 * kernels of version 7 keep what is in flight in registers: a few tens of KB per SM, issued by
 * every lane, and where the grid is larger than one wave of CTAs (q/k/v: 320 CTAs for 264
 * places) a second round trip to DRAM. Here each SM runs one CTA that owns a contiguous share of
 * the weight rows (or expert tiles) and has almost all of it in flight at once: a ring of slots
 * in shared memory, slot j % NS filled by lane 0 of warp j % NW and consumed by that warp, which
 * refills it with unit j + NS when done. Weights that no earlier kernel decides (q/k/v, o_proj,
 * the down projection's tiles: the routing is complete two kernels back) are requested before
 * pdl_wait, so that they arrive while the previous kernel ends.
 *
 * The arithmetic is version 7's, in its order (the dot products as gemv_row, the expert tiles
 * through moe3_superchunk, the down projection's slots added in slot order): the results are
 * version 6's bit for bit, and cuda-check holds them to that. */
#pragma once

#include "small.cuh"

/* Slots of the rings: q/k/v (a RoPE pair of rows a slot), o_proj (a row: 11 warps of 2, the 22
 * rows of a CTA's share at H = 2880 on 132 SMs, in 176 KB, so that a CTA fits beside the
 * attention kernel's and streams its weights while attention runs), and the warps of the
 * expert kernels (a 16-row tile a slot, one slot a warp). */
enum { QKV8_SLOTS = 16, O8_WARPS = 11, O8_SLOTS = 22, MOE8_WARPS = 8 };

/* The rings' slots in use (at most the above; q/k/v a multiple of 8, o_proj of 11), set by
 * cuda_stream_slots for benchmarks: fewer leave room for the next kernel's CTA beside this
 * one's, which can then load its weights while this one runs. */
static int qkv8_slots = QKV8_SLOTS, o8_slots = O8_SLOTS, gate8_warps = MOE8_WARPS,
           down8_warps = MOE8_WARPS;

extern "C" void cuda_stream_slots(int qkv, int o, int gate, int down) {
    qkv8_slots = qkv >= 8 && qkv <= QKV8_SLOTS && qkv % 8 == 0 ? qkv : QKV8_SLOTS;
    o8_slots = o >= O8_WARPS && o <= O8_SLOTS && o % O8_WARPS == 0 ? o : O8_SLOTS;
    gate8_warps = gate >= 1 && gate <= MOE8_WARPS ? gate : MOE8_WARPS;
    down8_warps = down >= 1 && down <= MOE8_WARPS ? down : MOE8_WARPS;
}

/* This CTA's share [u0, u0 + n) of n_units units, the shares differing by at most one. */
__device__ __forceinline__ void cta_share(int n_units, int &u0, int &n) {
    u0 = (int)((long long)blockIdx.x * n_units / gridDim.x);
    n = (int)((long long)(blockIdx.x + 1) * n_units / gridDim.x) - u0;
}

/* Lane 0 of each warp initialises the barriers of its slots (slot s: warp s % nw). */
__device__ __forceinline__ void ring_init(uint64_t *bar, int ns, int nw, int warp, int lane) {
    if (lane) return;
    for (int s = warp; s < ns; s += nw) mbar_init(bar + s, 1);
    mbar_init_fence();
}

/* qkv8: qkv7 with a CTA per SM, a unit a RoPE pair (rows r1 and r1 + D/2, 2H bf16 a slot). */
template <int T>
__global__ void __launch_bounds__(RMSNORM_THREADS)
    qkv8_kernel(float *q, uint16_t *kcache, uint16_t *vcache, const float *x, const uint16_t *g,
                const uint16_t *w, const uint16_t *bias, const int32_t *positions,
                const int32_t *slots, const float *inv_freq, float conc, int H, int n_heads,
                int n_kv, int D, int bs, float eps, int NS) {
    constexpr int NW = RMSNORM_THREADS / 32;      /* NS: a multiple of NW, at most QKV8_SLOTS */
    extern __shared__ __align__(128) uint4 sm8[]; /* NS slots (2 rows each), then (T, H) */
    __shared__ uint64_t bar[QKV8_SLOTS];
    __shared__ float red[32];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, half = D / 2, ku = H / 8, p0, n;
    cta_share((n_heads + 2 * n_kv) * half, p0, n);
    uint4 *ring = sm8;
    uint16_t *xs = reinterpret_cast<uint16_t *>(sm8 + (size_t)NS * 2 * ku);
    uint32_t row_bytes = (uint32_t)H * 2;
    auto issue = [&](int j) {
        int p = p0 + j, r1 = p / half * D + p % half;
        uint4 *dst = ring + (size_t)(j % NS) * 2 * ku;
        uint64_t *b = bar + j % NS;
        mbar_expect(b, 2 * row_bytes);
        bulk_load(dst, w + (size_t)r1 * H, row_bytes, b);
        bulk_load(dst + ku, w + (size_t)(r1 + half) * H, row_bytes, b);
    };
    ring_init(bar, NS, NW, warp, lane);
    if (lane == 0)
        for (int j = warp; j < NS && j < n; j += NW) issue(j);
    pdl_wait();
    pdl_trigger();
    norm_rows<T>(xs, x, g, H, eps, red); /* ends with a barrier: the slots' barriers too */
    const uint4 *xv = reinterpret_cast<const uint4 *>(xs);
    for (int j = warp; j < n; j += NW) {
        int p = p0 + j;
        float c = 0.0f, sn = 0.0f;
        if (lane < T) {
            float angle = (float)positions[lane] * inv_freq[p % half];
            c = cosf(angle) * conc, sn = sinf(angle) * conc;
        }
        mbar_wait(bar + j % NS, (uint32_t)(j / NS) & 1u);
        const uint4 *wa = ring + (size_t)(j % NS) * 2 * ku, *wb = wa + ku;
        float acc[2][T];
#pragma unroll
        for (int t = 0; t < T; t++) acc[0][t] = acc[1][t] = 0.0f;
        for (int u = lane; u < ku; u += 32) {
            uint4 a = wa[u], b = wb[u];
#pragma unroll
            for (int t = 0; t < T; t++) {
                uint4 xt = xv[(size_t)t * ku + u];
                acc[0][t] = dot8(acc[0][t], a, xt);
                acc[1][t] = dot8(acc[1][t], b, xt);
            }
        }
        __syncwarp(); /* the slot is read: it takes unit j + NS */
        if (lane == 0 && j + NS < n) issue(j + NS);
#pragma unroll
        for (int t = 0; t < T; t++)
            acc[0][t] = warp_sum(acc[0][t]), acc[1][t] = warp_sum(acc[1][t]);
        qkv_pair_store<T>(acc, c, sn, p, q, kcache, vcache, bias, slots, n_heads, n_kv, D, bs,
                          lane);
    }
}

/* o8: gemv_res with a CTA per SM, a unit a row of W (K bf16 a slot); in's T rows staged. */
template <int T>
__global__ void __launch_bounds__(32 * O8_WARPS)
    gemv_res8_kernel(float *x, const uint16_t *in, const uint16_t *w, const uint16_t *bias, int N,
                     int K, int NS) {
    constexpr int NW = O8_WARPS;                  /* NS: a multiple of NW, at most O8_SLOTS */
    extern __shared__ __align__(128) uint4 sm8[]; /* NS slots, then (T, K) */
    __shared__ uint64_t bar[O8_SLOTS];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, ku = K / 8, n0, n;
    cta_share(N, n0, n);
    uint4 *ring = sm8, *xs = sm8 + (size_t)NS * ku;
    auto issue = [&](int j) {
        uint64_t *b = bar + j % NS;
        mbar_expect(b, (uint32_t)K * 2);
        bulk_load(ring + (size_t)(j % NS) * ku, w + (size_t)(n0 + j) * K, (uint32_t)K * 2, b);
    };
    ring_init(bar, NS, NW, warp, lane);
    if (lane == 0)
        for (int j = warp; j < NS && j < n; j += NW) issue(j);
    pdl_wait();
    pdl_trigger();
    for (int i = threadIdx.x; i < T * ku; i += blockDim.x)
        cp_async16(xs + i, reinterpret_cast<const uint4 *>(in) + i);
    cp_async_commit();
    cp_async_wait0();
    __syncthreads();
    for (int j = warp; j < n; j += NW) {
        mbar_wait(bar + j % NS, (uint32_t)(j / NS) & 1u);
        const uint4 *wr = ring + (size_t)(j % NS) * ku;
        float acc[T];
#pragma unroll
        for (int t = 0; t < T; t++) acc[t] = 0.0f;
        for (int u = lane; u < ku; u += 32) {
            uint4 a = wr[u];
#pragma unroll
            for (int t = 0; t < T; t++) acc[t] = dot8(acc[t], a, xs[(size_t)t * ku + u]);
        }
        __syncwarp();
        if (lane == 0 && j + NS < n) issue(j + NS);
        float s = 0.0f;
#pragma unroll
        for (int t = 0; t < T; t++) {
            acc[t] = warp_sum(acc[t]);
            if (lane == t) s = acc[t];
        }
        if (lane < T) {
            float *xp = x + (size_t)lane * N + n0 + j;
            *xp = (*xp + s) + bf16f(bias[n0 + j]);
        }
    }
}

/* One 16-row tile of an expert (version 3's tiled layout: nc super-chunks of 1 KB of codes,
 * then their 64-byte scale groups) from slot q of the ring into acc, against token rows xrow
 * (moe3_superchunk's B columns). */
__device__ __forceinline__ void tile8_run(float (&acc)[1][1][4], const uint8_t *slot,
                                          const char *xrow, int ld, int nc, int lane, int tq) {
    const uint4 *wq = reinterpret_cast<const uint4 *>(slot);
    const uint8_t *sq = slot + (size_t)nc * 1024;
    moe3_zero<1, 1>(acc);
    for (int c = 0; c < nc; c++) {
        uint4 wv[1][2];
        uint32_t sv[1][2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            wv[0][h] = wq[c * 64 + h * 32 + lane];
            sv[0][h] = sq[c * 64 + h * 32 + lane];
        }
        moe3_superchunk<1, 1>(acc, wv, sv, xrow + c * 256, 16 * ld, moe3_swz(tq), 1);
    }
}

/* Lane 0: tile `tile` of expert e (nc super-chunks) into a slot, counted on bar. */
__device__ __forceinline__ void tile8_issue(uint8_t *slot, uint64_t *bar, const uint8_t *blocks,
                                            const uint8_t *scales, int e, int tiles, int tile,
                                            int nc) {
    size_t base = ((size_t)e * tiles + tile) * nc * 64;
    mbar_expect(bar, (uint32_t)nc * 1088);
    bulk_load(slot, blocks + base * 16, (uint32_t)nc * 1024, bar);
    bulk_load(slot + (size_t)nc * 1024, scales + base, (uint32_t)nc * 64, bar);
}

/* gate8: the touched experts' 16-row tiles (expert by expert, ascending) shared out over the
 * grid, a warp a tile; every token's row of xn staged, each lane's B column the expert's slot
 * of it (the last slot's past the expert's count, as gate7: never stored). */
__global__ void __launch_bounds__(32 * MOE8_WARPS)
    gate8_kernel(uint16_t *act, const uint16_t *xn, const uint8_t *blocks, const uint8_t *scales,
                 const uint16_t *bias, const int32_t *e_start, const int32_t *e_slots, int top_k,
                 int E, int N, int K, int T, float limit) {
    int NW = blockDim.x >> 5;                     /* a slot a warp, at most MOE8_WARPS */
    extern __shared__ __align__(128) uint4 sm8[]; /* NW slots, then (T, moe3_kpad(K) + 16) */
    __shared__ uint64_t bar[MOE8_WARPS];
    __shared__ int ex[17], src_s[GEMV_MAX_T]; /* touched experts, their count at ex[16] */
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    int nc = (K / 32 + 3) / 4, ld = moe3_kpad(K) + 16, tiles = N / 16;
    size_t bytes = (size_t)nc * 1088;
    uint8_t *ring = reinterpret_cast<uint8_t *>(sm8);
    uint16_t *xs = reinterpret_cast<uint16_t *>(ring + NW * bytes);
    ring_init(bar, NW, NW, warp, lane);
    pdl_wait();
    pdl_trigger();
    if (warp == 0) {
        int k = 0;
        for (int c = 0; c < E; c += 32) {
            int i = c + lane;
            bool hit = i < E && e_start[i + 1] > e_start[i];
            unsigned m = __ballot_sync(0xffffffffu, hit);
            int at = k + __popc(m & ((1u << lane) - 1u));
            if (hit && at < 16) ex[at] = i;
            k += __popc(m);
        }
        if (lane == 0) ex[16] = min(k, 16);
    }
    if (threadIdx.x < T) src_s[threadIdx.x] = threadIdx.x;
    __syncthreads();
    int u0, n;
    cta_share(ex[16] * tiles, u0, n);
    if (lane == 0 && warp < n)
        tile8_issue(ring + warp * bytes, bar + warp, blocks, scales, ex[(u0 + warp) / tiles], tiles,
                    (u0 + warp) % tiles, nc);
    stage_rows(xs, xn, src_s, T, K, ld);
    cp_async_wait0();
    __syncthreads();
    for (int j = warp; j < n; j += NW) {
        int unit = u0 + j, e = ex[unit / tiles], tile = unit % tiles;
        int beg = e_start[e], cnt = e_start[e + 1] - beg;
        int tok = e_slots[beg + min(gq, cnt - 1)] / top_k;
        const char *xrow = reinterpret_cast<const char *>(xs + (size_t)tok * ld) + tq * 64;
        mbar_wait(bar + warp, (uint32_t)(j / NW) & 1u);
        float acc[1][1][4];
        tile8_run(acc, ring + warp * bytes, xrow, ld, nc, lane, tq);
        __syncwarp();
        if (lane == 0 && j + NW < n) {
            int u = unit + NW;
            tile8_issue(ring + warp * bytes, bar + warp, blocks, scales, ex[u / tiles], tiles,
                        u % tiles, nc);
        }
        moe3_epilogue<false, 1, 1>(act, acc, bias, e, N, tile * 16 + gq, 1, cnt, e_slots + beg,
                                   NULL, limit, gq, tq);
    }
}

/* down8: units (slot s, 16-row output tile) slot by slot shared out over the grid (a CTA's share
 * spans at most two slots when the grid has at least S CTAs), a warp a unit. The weighted rows
 * go to ys (S, N); the last of a tile's S units to finish (a ticket per tile) adds them into x
 * token by token in slot order, as down_res, and clears the ticket. */
__global__ void __launch_bounds__(32 * MOE8_WARPS)
    down8_kernel(float *x, float *ys, int *tick, const uint16_t *act, const uint8_t *blocks,
                 const uint8_t *scales, const uint16_t *bias, const int32_t *top_e,
                 const float *top_w, int top_k, int S, int N, int K) {
    int NW = blockDim.x >> 5;
    extern __shared__ __align__(128) uint4 sm8[]; /* NW slots, then 2 act rows */
    __shared__ uint64_t bar[MOE8_WARPS];
    __shared__ int src_s[2];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    int nc = (K / 32 + 3) / 4, ld = moe3_kpad(K) + 16, tiles = N / 16, u0, n;
    size_t bytes = (size_t)nc * 1088;
    uint8_t *ring = reinterpret_cast<uint8_t *>(sm8);
    uint16_t *xs = reinterpret_cast<uint16_t *>(ring + NW * bytes);
    cta_share(S * tiles, u0, n);
    ring_init(bar, NW, NW, warp, lane);
    /* top_e is complete: the router ran two kernels back, and gate8 passes its trigger only
     * after its own wait */
    if (lane == 0 && warp < n)
        tile8_issue(ring + warp * bytes, bar + warp, blocks, scales,
                    __ldcg(top_e + (u0 + warp) / tiles), tiles, (u0 + warp) % tiles, nc);
    pdl_wait();
    pdl_trigger();
    int s0 = u0 / tiles, rows = n > 0 ? (u0 + n - 1) / tiles - s0 + 1 : 0;
    if (threadIdx.x < rows) src_s[threadIdx.x] = s0 + threadIdx.x;
    __syncthreads();
    stage_rows(xs, act, src_s, rows, K, ld);
    cp_async_wait0();
    __syncthreads();
    for (int j = warp; j < n; j += NW) {
        int unit = u0 + j, s = unit / tiles, tile = unit % tiles, e = __ldcg(top_e + s);
        const char *xrow = reinterpret_cast<const char *>(xs + (size_t)(s - s0) * ld) + tq * 64;
        mbar_wait(bar + warp, (uint32_t)(j / NW) & 1u);
        float acc[1][1][4];
        tile8_run(acc, ring + warp * bytes, xrow, ld, nc, lane, tq);
        __syncwarp();
        if (lane == 0 && j + NW < n) {
            int u = unit + NW;
            tile8_issue(ring + warp * bytes, bar + warp, blocks, scales, __ldcg(top_e + u / tiles),
                        tiles, u % tiles, nc);
        }
        int r = tile * 16 + gq;
        if (tq == 0) {
            float tw = top_w[s];
            ys[(size_t)s * N + r] = tw * (acc[0][0][0] + bf16f(bias[(size_t)e * N + r]));
            ys[(size_t)s * N + r + 8] = tw * (acc[0][0][2] + bf16f(bias[(size_t)e * N + r + 8]));
        }
        __threadfence();
        __syncwarp();
        int last = 0;
        if (lane == 0) last = atomicAdd(tick + tile, 1) == S - 1;
        if (!__shfl_sync(0xffffffffu, last, 0)) continue;
        __threadfence();
        for (int i = lane; i < S / top_k * 16; i += 32) {
            int t = i >> 4, rr = tile * 16 + (i & 15);
            float *xp = x + (size_t)t * N + rr;
            float v = *xp;
            for (int d = 0; d < top_k; d++) v += __ldcg(ys + (size_t)(t * top_k + d) * N + rr);
            *xp = v;
        }
        if (lane == 0) tick[tile] = 0;
    }
}

/* ---- launchers: version 7's where a ring would not fit a CTA's shared memory ---- */

static int sm_count(void) {
    static int n = 0;
    if (n == 0) {
        int d = 0;
        if (cudaGetDevice(&d) || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, d))
            n = 0;
    }
    return n > 0 ? n : 1;
}

/* Whether smem bytes of dynamic shared memory (and 1 KB of static) fit a CTA. */
static bool smem_fits(size_t smem) {
    static int optin = 0;
    if (optin == 0) {
        int d = 0;
        if (cudaGetDevice(&d) ||
            cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, d))
            optin = 48 * 1024;
    }
    return smem + 1024 <= (size_t)optin;
}

extern "C" int cuda_qkv8(float *q, uint16_t *kcache, uint16_t *vcache, const float *x,
                         const uint16_t *g, const uint16_t *w, const uint16_t *bias,
                         const int32_t *positions, const int32_t *slots, const float *inv_freq,
                         float concentration, int T, int H, int n_heads, int n_kv_heads, int D,
                         int block_size, float eps, cudaStream_t s) {
    size_t smem = ((size_t)qkv8_slots * 2 + T) * H * 2;
    if (T < 1 || T > GEMV_MAX_T || H < 8 || H % 8 || H > RMSNORM_PER * RMSNORM_THREADS || D < 2 ||
        D % 2 || D / 2 > ROPE_MAX_HALF || !smem_fits(smem))
        return cuda_qkv7(q, kcache, vcache, x, g, w, bias, positions, slots, inv_freq,
                         concentration, T, H, n_heads, n_kv_heads, D, block_size, eps, s);
    static void (*const k[GEMV_MAX_T])(
        float *, uint16_t *, uint16_t *, const float *, const uint16_t *, const uint16_t *,
        const uint16_t *, const int32_t *, const int32_t *, const float *, float, int, int, int,
        int, int, float, int) = {qkv8_kernel<1>, qkv8_kernel<2>, qkv8_kernel<3>, qkv8_kernel<4>};
    static size_t set[GEMV_MAX_T];
    int e = smem_limit(k[T - 1], smem, &set[T - 1]);
    if (e) return e;
    int pairs = (n_heads + 2 * n_kv_heads) * (D / 2), grid = sm_count();
    return pdl_launch(k[T - 1], grid < pairs ? grid : pairs, RMSNORM_THREADS, smem, s, q, kcache,
                      vcache, x, g, w, bias, positions, slots, inv_freq, concentration, H, n_heads,
                      n_kv_heads, D, block_size, eps, qkv8_slots);
}

extern "C" int cuda_gemv_res8(float *x, const uint16_t *in, const uint16_t *w, const uint16_t *bias,
                              int T, int N, int K, cudaStream_t s) {
    size_t smem = ((size_t)o8_slots + T) * K * 2;
    if (T < 1 || T > GEMV_MAX_T || N < 1 || K < 8 || K % 8 || !smem_fits(smem))
        return cuda_gemv_res(x, in, w, bias, T, N, K, s);
    static void (*const k[GEMV_MAX_T])(float *, const uint16_t *, const uint16_t *,
                                       const uint16_t *, int, int, int) = {
        gemv_res8_kernel<1>, gemv_res8_kernel<2>, gemv_res8_kernel<3>, gemv_res8_kernel<4>};
    static size_t set[GEMV_MAX_T];
    int e = smem_limit(k[T - 1], smem, &set[T - 1]);
    if (e) return e;
    int grid = sm_count();
    return pdl_launch(k[T - 1], grid < N ? grid : N, 32 * O8_WARPS, smem, s, x, in, w, bias, N, K,
                      o8_slots);
}

extern "C" int cuda_moe_gate8(uint16_t *act, const uint16_t *xn, const uint8_t *blocks,
                              const uint8_t *scales, const uint16_t *bias, const int32_t *e_start,
                              const int32_t *e_slots, int T, int top_k, int E, int I, int H,
                              float limit, cudaStream_t s) {
    int N = 2 * I, nc = (H / 32 + 3) / 4;
    size_t smem = (size_t)gate8_warps * nc * 1088 + (size_t)T * (moe3_kpad(H) + 16) * 2;
    if (T < 1 || T > GEMV_MAX_T || T * top_k > 16 || H % 32 || N % 64 || !smem_fits(smem))
        return cuda_moe_gate7(act, xn, blocks, scales, bias, e_start, e_slots, T, top_k, E, I, H,
                              limit, s);
    static size_t set;
    int e = smem_limit(gate8_kernel, smem, &set);
    if (e) return e;
    return pdl_launch(gate8_kernel, sm_count(), 32 * gate8_warps, smem, s, act, xn, blocks, scales,
                      bias, e_start, e_slots, top_k, E, N, H, T, limit);
}

extern "C" int cuda_moe_down8(float *x, float *y, int *tickets, const uint16_t *act,
                              const uint8_t *blocks, const uint8_t *scales, const uint16_t *bias,
                              const int32_t *top_e, const float *top_w, int T, int top_k, int H,
                              int I, cudaStream_t s) {
    int S = T * top_k, nc = (I / 32 + 3) / 4, grid = sm_count();
    size_t smem = (size_t)down8_warps * nc * 1088 + 2 * (size_t)(moe3_kpad(I) + 16) * 2;
    if (T < 1 || S > 16 || I % 32 || H % 16 || !smem_fits(smem))
        return cuda_moe_down_res(x, act, blocks, scales, bias, top_e, top_w, T, top_k, H, I, s);
    static size_t set;
    int e = smem_limit(down8_kernel, smem, &set);
    if (e) return e;
    return pdl_launch(down8_kernel, grid > S ? grid : S, 32 * down8_warps, smem, s, x, y, tickets,
                      act, blocks, scales, bias, top_e, top_w, top_k, S, H, I);
}
