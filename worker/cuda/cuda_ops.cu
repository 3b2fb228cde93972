/* cuda_ops.cu - the one translation unit of device code: every kernel group of the CUDA forward
 * pass (kernels and launchers in the .cuh files, declared for C in cuda_ops.h). One unit keeps
 * the build to a single nvcc run per architecture. */
#include "cuda_ops.h"

#include "gemv.cuh"
#include "attention.cuh"
#include "moe.cuh"
#include "norm.cuh"
#include "sample.cuh"
#include "small.cuh"

extern "C" int cuda_timeline(unsigned long long *out, int clear) {
#ifdef MG_TIMELINE
    size_t n = sizeof(unsigned long long) * CUDA_TL_KERNELS * CUDA_TL_CTAS * CUDA_TL_PHASES;
    if (clear) {
        void *p = NULL;
        cudaError_t e = cudaGetSymbolAddress(&p, tl_stamps);
        if (e == cudaSuccess) e = cudaMemset(p, 0, n);
        return (int)e;
    }
    return (int)cudaMemcpyFromSymbol(out, tl_stamps, n);
#else
    (void)out, (void)clear;
    return (int)cudaErrorNotSupported;
#endif
}
