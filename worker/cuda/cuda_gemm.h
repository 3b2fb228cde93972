/* cuda_gemm.h - the dense bf16 GEMMs of the forward pass (fused q/k/v, o_proj, router, lm_head)
 * through cuBLASLt: bf16 operands, float32 accumulation and output. Biases are added by the next
 * kernel (cuda_qkv_rope, cuda_rmsnorm, cuda_router), which reads the output anyway.
 *
 * A plan (descriptors and the heuristic's algorithm) is cached per shape, so a step asks the
 * heuristic only for shapes it has not seen. Ownership: the gemm owns its handle, workspace and
 * plans. Thread rule: one thread (the engine thread) uses a gemm. */
#ifndef MG_CUDA_GEMM_H
#define MG_CUDA_GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "status.h"

typedef struct cuda_gemm cuda_gemm;

mg_status cuda_gemm_create(size_t workspace_bytes, cuda_gemm **out);
void cuda_gemm_destroy(cuda_gemm *g);

/* On: a new plan for a decode-step shape (T a power of two up to 512) times the heuristic's
 * first 8 algorithms on its first call (outside graph capture) and keeps the fastest; off (the
 * default): the heuristic's first. Different algorithms may round differently, so two gemms
 * that tune may disagree in the last bits. */
void cuda_gemm_set_autotune(cuda_gemm *g, bool on);

/* On (the default): steps of up to CUDA_GEMV_MAX_T tokens (single-stream decode) take
 * cuda_gemv_bf16, a warp per weight row, instead of cuBLASLt; off: cuBLASLt for every shape. */
void cuda_gemm_set_gemv(cuda_gemm *g, bool on);
bool cuda_gemm_gemv(const cuda_gemm *g);

/* out (T, N) float = x (T, K) bf16 · W^T, W (N, K) bf16 row-major (the checkpoint's layout).
 * The CPU twin is ops_matmul_bf16 without the bias. */
mg_status cuda_matmul_bf16(cuda_gemm *g, float *out, const uint16_t *x, const uint16_t *w, int T,
                           int N, int K, cudaStream_t s);

#endif
