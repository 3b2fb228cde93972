/* common.cuh - helpers shared by the kernels of cuda_ops.cu: bf16 bits <-> float, warp and
 * block reductions, the launch-error return every launcher ends with. */
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

/* bf16 bits → float: the high half of the float's bits (exact). */
__device__ __forceinline__ float bf16f(uint16_t h) {
    return __uint_as_float((uint32_t)h << 16);
}

/* float → bf16 bits, round to nearest even (NaN stays NaN). */
__device__ __forceinline__ uint16_t f2bf16(float f) {
    __nv_bfloat16 b = __float2bfloat16_rn(f);
    return *reinterpret_cast<uint16_t *>(&b);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the CTA (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
 * red: 32 floats of shared memory. */
__device__ __forceinline__ float block_sum(float v, float *red) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* red may still be read by an earlier call */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    return warp_sum(v);
}

/* Whether this CTA is the last of n to get here (n CTAs share the ticket counter *count): then
 * every global write those CTAs made before the call is visible to it (read them with __ldcg:
 * they never passed through this SM's L1). The last CTA must set *count back to zero for the
 * next launch. Every thread of the CTA calls it. */
__device__ __forceinline__ bool last_cta(int *count, int n) {
    __shared__ int last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(count, 1) == n - 1;
    __syncthreads();
    if (last) __threadfence();
    return last;
}

/* cp.async: 16 bytes global → shared without a register round trip; groups committed and
 * waited for in order (wait1: all but the newest group have landed). From L2 (.cg), or with L1
 * through this SM's L1 (.ca: for rows many CTAs of an SM read, once the kernel is past its wait,
 * the writer's grid then done). */
template <bool L1 = false>
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(smem);
    if (L1)
        asm volatile("cp.async.ca.shared.global [%0], [%1], 16;\n" ::"r"(a), "l"(gmem));
    else
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(a), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::);
}
__device__ __forceinline__ void cp_async_wait1() {
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");
}
__device__ __forceinline__ void cp_async_wait0() {
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}
/* Weights, streamed once per step: no L1 allocation, so L1 keeps what is read again (scales,
 * token rows). */
__device__ __forceinline__ uint4 ld_stream(const uint4 *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

/* Asks this SM's L1 (and so L2) for the 128-byte line that holds p. For the small weight
 * vectors (norm gains, biases, sinks) that a kernel reads only after its pdl_wait: asked for
 * before it, the read there hits instead of waiting for DRAM on the step's critical path. */
__device__ __forceinline__ void prefetch_l1(const void *p) {
    asm volatile("prefetch.global.L1 [%0];\n" ::"l"(p));
}

/* Every line of the n bytes at p, a line a thread of the CTA. */
__device__ __forceinline__ void prefetch_span(const void *p, size_t n) {
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)127, end = (uintptr_t)p + n;
    for (a += (uintptr_t)threadIdx.x * 128; a < end; a += (uintptr_t)blockDim.x * 128)
        prefetch_l1(reinterpret_cast<const void *>(a));
}

/* ---- bulk copies: global → shared by the SM's copy engine, completion counted in bytes on an
 * mbarrier (Hopper) ----
 *
 * For a small row that a kernel reads right after its wait (x, act): issued by one thread, it
 * is not queued behind the weight loads that the CTA's threads have in flight. A barrier here is
 * used once a launch: it expects one arrival (mbar_expect, which also announces the bytes on
 * their way) and completes phase 0 when they have landed. */
__device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}
/* Thread 0 readies bar for one arrival; the caller syncs the CTA before anyone names it. */
__device__ __forceinline__ void mbar_init(uint64_t *bar) {
    if (threadIdx.x == 0) {
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(smem_u32(bar)) : "memory");
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
}
/* bytes (a multiple of 16; both addresses 16-byte aligned) from src to dst, counted on bar. */
__device__ __forceinline__ void bulk_load(void *dst, const void *src, uint32_t bytes,
                                          uint64_t *bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], "
                 "%2, [%3];\n" ::"r"(smem_u32(dst)),
                 "l"(src), "r"(bytes), "r"(smem_u32(bar))
                 : "memory");
}
/* Thread 0: announce the bytes that bulk_load calls after this will bring. */
__device__ __forceinline__ void mbar_expect(uint64_t *bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)),
                 "r"(bytes)
                 : "memory");
}
/* Thread 0 of the CTA: the one copy that bar waits for (mbar_expect, then bulk_load). */
__device__ __forceinline__ void bulk_one(void *dst, const void *src, uint32_t bytes,
                                         uint64_t *bar) {
    if (threadIdx.x == 0) mbar_expect(bar, bytes), bulk_load(dst, src, bytes, bar);
}
/* Until phase 0 of bar has completed: the bytes are in shared memory. */
__device__ __forceinline__ void mbar_wait0(uint64_t *bar) {
    uint32_t done;
    do {
        asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], 0;\n"
                     " selp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(smem_u32(bar))
                     : "memory");
    } while (!done);
}

/* Small rows read right after the wait by one bulk copy (cuda_small_bulk), a mask: bit 1, x
 * for q/k/v's norm (qkv7_res_kernel); bit 2, x for the cluster router's norm; bit 4, the down
 * projection's act rows at one token; bit 8, o_proj's input row (o_res_split_kernel at four
 * warps a row); bit 16, attention's query heads at one token (attention_split_kernel); bit 32,
 * gate_up's token row at one token. Results are unchanged, bit for bit. */
__attribute__((unused)) static int small_bulk = 0; /* set by cuda_small_bulk (small.cuh) */

/* A bulk copy's source must be 16-byte aligned (the launchers take the threads' loads where
 * it is not). */
__attribute__((unused)) static bool aligned16(const void *p) {
    return ((uintptr_t)p & 15) == 0;
}

/* At most N of this thread's groups still in flight. */
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* c += A B on the bf16 tensor cores, m16n8k16 with float accumulators: A fragment a0..a3 (rows g
 * and g + 8, k 2t.. and 2t + 8..), B fragment b0, b1, c0..c3 (rows g, g + 8; columns 2t, 2t + 1)
 * for lane (g, t) = (lane / 4, lane % 4). */
__device__ __forceinline__ void mma_bf16(float *c, uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

static inline int launch_status(void) {
    return (int)cudaGetLastError();
}

/* Raise kernel k's dynamic shared memory limit to smem where above 48 KB and above what was set
 * (*set: its limit so far, one per kernel; the engine thread is the only caller). */
template <typename K> static int smem_limit(K k, size_t smem, size_t *set) {
    if (smem <= 48 * 1024 || smem <= *set) return 0;
    cudaError_t e = cudaFuncSetAttribute(reinterpret_cast<const void *>(k),
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return (int)e;
    *set = smem;
    return 0;
}

/* ---- a timeline of the one-token kernels (built with MG_CUDA_TIMELINE only) ----
 *
 * Thread 0 of each CTA stamps %globaltimer (ns) when the CTA starts (phase 0), when it is past
 * its pdl_wait (1), at up to two points of its work (3, 4: where its TL_MARK calls stand)
 * and when it ends (2), into tl_stamps[kernel][cta][phase]; every layer writes the same
 * places, so after a step they hold the last layer's. cuda-bench --timeline reads them
 * (cuda_timeline, cuda_ops.cu). */
#ifdef MG_TIMELINE
#include "cuda_ops.h" /* CUDA_TL_* */
__device__ unsigned long long tl_stamps[CUDA_TL_KERNELS][CUDA_TL_CTAS][CUDA_TL_PHASES];
#define TL_MARK(k, ph)                                                                             \
    do {                                                                                           \
        if (threadIdx.x == 0) {                                                                    \
            unsigned c_ = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);          \
            unsigned long long t_;                                                                 \
            asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t_));                                 \
            if (c_ < CUDA_TL_CTAS) tl_stamps[k][c_][ph] = t_;                                      \
        }                                                                                          \
    } while (0)
#else
#define TL_MARK(k, ph)                                                                             \
    do {                                                                                           \
    } while (0)
#endif

/* ---- programmatic dependent launch (Hopper) ----
 *
 * A kernel launched with pdl_launch may be scheduled while the kernel before it in the stream
 * is still running, once every CTA of that one has called pdl_trigger (or exited): its CTAs
 * then wait in pdl_wait until the earlier grid has finished and its writes are visible. So the
 * launch, the CTAs' set-up and any reads of data no earlier kernel writes (weights) overlap the
 * previous kernel's tail, which at batch 1 is most of a kernel's time. The rule for every kernel
 * launched this way: pdl_wait before the first read of anything an earlier kernel of the step
 * wrote and before the first write of anything it reads; weights and the step's uploaded
 * indices (the copy before the step's first kernel) may be read before it. Both are no-ops in a
 * kernel launched without it. CUDA graphs keep the relation (captured as programmatic edges). */
__device__ __forceinline__ void pdl_wait() {
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
}
__device__ __forceinline__ void pdl_trigger() {
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}

/* Whether the forward kernels go through pdl_launch's attribute: for every step (cuda_set_pdl),
 * or for the step being enqueued (cuda_pdl_step). */
static bool pdl_on = false, pdl_step = false;

extern "C" void cuda_set_pdl(int on) {
    pdl_on = on != 0;
}

extern "C" void cuda_pdl_step(int on) {
    pdl_step = on != 0;
}

/* k<<<grid, block, smem, s>>>(args...) with programmatic stream serialization when pdl_on or
 * pdl_step. */
template <typename... KArgs, typename... Args>
static int pdl_launch(void (*k)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                      Args... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = pdl_on || pdl_step ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx(&cfg, k, static_cast<KArgs>(args)...);
    return e != cudaSuccess ? (int)e : launch_status();
}
