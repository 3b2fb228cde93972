/* sample.cuh - greedy token choice on the device, and the fills behind --random-weights.
 * CPU twin of the arg-max: sampling_argmax in worker/engine/sampling.c. */
#pragma once

#include "common.cuh"

/* ---- kernels ---- */

/* One CTA per row; (value, index) pairs reduced with "greater, or equal and lower index"; NaN
 * compares false everywhere so it never wins. */
__global__ void argmax_kernel(int32_t *out, const float *logits, int V) {
    __shared__ float sv[32];
    __shared__ int si[32];
    const float *l = logits + (size_t)blockIdx.x * V;
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float v = l[i];
        if (v > bv) bv = v, bi = i; /* ascending i: the first of equals stays */
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
    }
    if (lane == 0) sv[warp] = bv, si[warp] = bi;
    __syncthreads();
    if (warp == 0) {
        int nw = blockDim.x >> 5;
        bv = lane < nw ? sv[lane] : -INFINITY;
        bi = lane < nw ? si[lane] : 0x7fffffff;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
        }
        if (lane == 0) out[blockIdx.x] = bv == -INFINITY ? 0 : bi;
    }
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__global__ void fill_bf16_kernel(uint16_t *p, size_t n, uint64_t seed, float mean, float std) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float u =
            (float)(mix64(seed + 0x9E3779B97F4A7C15ull * (i + 1)) >> 40) * (1.0f / 16777216.0f);
        p[i] = f2bf16(mean + std * (2.0f * u - 1.0f) * 1.7320508f);
    }
}

__global__ void fill_u8_kernel(uint8_t *p, size_t n, uint64_t seed, int lo, int span) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        p[i] =
            (uint8_t)(lo + (int)(mix64(seed + 0x9E3779B97F4A7C15ull * (i + 1)) % (uint64_t)span));
}

/* ---- launchers ---- */

extern "C" int cuda_argmax(int32_t *out, const float *logits, int n, int V, cudaStream_t s) {
    if (n <= 0) return 0;
    argmax_kernel<<<n, 1024, 0, s>>>(out, logits, V);
    return launch_status();
}

extern "C" int cuda_fill_bf16(uint16_t *p, size_t n, uint64_t seed, float mean, float std,
                              cudaStream_t s) {
    if (n == 0) return 0;
    fill_bf16_kernel<<<4096, 256, 0, s>>>(p, n, seed, mean, std);
    return launch_status();
}

extern "C" int cuda_fill_u8(uint8_t *p, size_t n, uint64_t seed, int lo, int hi, cudaStream_t s) {
    if (n == 0) return 0;
    if (hi < lo) return (int)cudaErrorInvalidValue;
    fill_u8_kernel<<<4096, 256, 0, s>>>(p, n, seed, lo, hi - lo + 1);
    return launch_status();
}
