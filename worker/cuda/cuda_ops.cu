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
