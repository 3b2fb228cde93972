/* cuda_gemm.c - cuBLASLt bf16 GEMMs with a per-shape plan cache (see cuda_gemm.h).
 *
 * cuBLASLt is column-major. Row-major out (T, N) = x (T, K) · W^T is the column-major
 * D (N, T) = op(A) · B with A = W read as a (K, N) column-major matrix and transposed, and
 * B = x read as (K, T) column-major: cuBLAS's "TN" case, leading dimensions K, K and N. */
#include "cuda_gemm.h"

#include <stdbool.h>
#include <stdlib.h>

#include <cublasLt.h>

#include "cuda_ops.h"

/* Autotuning (cuda_gemm_set_autotune) times the heuristic's first TUNE_ALGOS candidates for
 * the decode steps' shapes only: T a power of two up to TUNE_MAX_T (the graph buckets); other
 * shapes (prefill chunks of any length) take the heuristic's first. */
enum { PLANS = 64, TUNE_ALGOS = 8, TUNE_RUNS = 3, TUNE_MAX_T = 512 };

typedef struct plan {
    int T, N, K;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
} plan;

struct cuda_gemm {
    cublasLtHandle_t lt;
    void *ws;
    size_t ws_bytes;
    plan plans[PLANS];
    int n_plans, next_evict;
    bool autotune;
    bool gemv; /* steps of up to CUDA_GEMV_MAX_T tokens through cuda_gemv_bf16 */
};

static void plan_free(plan *p) {
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
    if (p->a) cublasLtMatrixLayoutDestroy(p->a);
    if (p->b) cublasLtMatrixLayoutDestroy(p->b);
    if (p->d) cublasLtMatrixLayoutDestroy(p->d);
    p->desc = NULL, p->a = p->b = p->d = NULL;
}

mg_status cuda_gemm_create(size_t workspace_bytes, cuda_gemm **out) {
    *out = NULL;
    cuda_gemm *g = calloc(1, sizeof(*g));
    if (!g) return MG_ERRF(MG_ENOMEM, "out of memory");
    g->gemv = true;
    cublasStatus_t st = cublasLtCreate(&g->lt);
    if (st != CUBLAS_STATUS_SUCCESS) {
        free(g);
        return MG_ERRF(MG_ECUDA, "cublasLtCreate: status %d", (int)st);
    }
    if (workspace_bytes) {
        cudaError_t e = cudaMalloc(&g->ws, workspace_bytes);
        if (e != cudaSuccess) {
            cuda_gemm_destroy(g);
            return MG_ERRF(MG_ECUDA, "cuBLASLt workspace of %zu bytes: %s", workspace_bytes,
                           cudaGetErrorString(e));
        }
        g->ws_bytes = workspace_bytes;
    }
    *out = g;
    return MG_OK;
}

void cuda_gemm_destroy(cuda_gemm *g) {
    if (!g) return;
    for (int i = 0; i < g->n_plans; i++) plan_free(&g->plans[i]);
    cudaFree(g->ws);
    if (g->lt) cublasLtDestroy(g->lt);
    free(g);
}

static mg_status plan_make(cuda_gemm *g, plan *p, int T, int N, int K, cublasLtMatmulAlgo_t *algos,
                           int *n_algo) {
    p->T = T, p->N = N, p->K = K;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res[TUNE_ALGOS];
    int found = 0;
    cublasStatus_t st;
    if ((st = cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F)) ||
        (st = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta,
                                             sizeof(ta))) ||
        (st = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb,
                                             sizeof(tb))) ||
        (st = cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, K, N, K)) ||
        (st = cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, K, T, K)) ||
        (st = cublasLtMatrixLayoutCreate(&p->d, CUDA_R_32F, N, T, N)) ||
        (st = cublasLtMatmulPreferenceCreate(&pref)) ||
        (st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                   &g->ws_bytes, sizeof(g->ws_bytes))) ||
        (st = cublasLtMatmulAlgoGetHeuristic(g->lt, p->desc, p->a, p->b, p->d, p->d, pref, *n_algo,
                                             res, &found))) {
        if (pref) cublasLtMatmulPreferenceDestroy(pref);
        plan_free(p);
        return MG_ERRF(MG_ECUDA, "cuBLASLt plan for (%d×%d)·(%d×%d)^T: status %d", T, K, N, K,
                       (int)st);
    }
    cublasLtMatmulPreferenceDestroy(pref);
    if (!found) {
        plan_free(p);
        return MG_ERRF(MG_EUNSUPPORTED, "cuBLASLt: no algorithm for (%d×%d)·(%d×%d)^T bf16", T, K,
                       N, K);
    }
    for (int i = 0; i < found; i++) algos[i] = res[i].algo;
    *n_algo = found;
    p->algo = res[0].algo;
    return MG_OK;
}

static bool pow2_upto(int T, int max) {
    return T >= 1 && T <= max && (T & (T - 1)) == 0;
}

/* The fastest of the heuristic's n candidates on these operands (out is overwritten), timed
 * with events; the heuristic's first when no candidate runs or the timing fails. */
static cublasLtMatmulAlgo_t plan_tune(cuda_gemm *g, plan *p, const cublasLtMatmulAlgo_t *algos,
                                      int n, float *out, const uint16_t *x, const uint16_t *w,
                                      cudaStream_t s) {
    const float alpha = 1.0f, beta = 0.0f;
    cudaEvent_t e0 = NULL, e1 = NULL;
    int best = -1; /* none has run yet */
    float best_ms = 0.0f;
    if (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess) goto done;
    for (int i = 0; i < n; i++) {
        bool ok = cublasLtMatmul(g->lt, p->desc, &alpha, w, p->a, x, p->b, &beta, out, p->d, out,
                                 p->d, &algos[i], g->ws, g->ws_bytes, s) == CUBLAS_STATUS_SUCCESS;
        ok = ok && cudaEventRecord(e0, s) == cudaSuccess;
        for (int r = 0; ok && r < TUNE_RUNS; r++)
            ok = cublasLtMatmul(g->lt, p->desc, &alpha, w, p->a, x, p->b, &beta, out, p->d, out,
                                p->d, &algos[i], g->ws, g->ws_bytes, s) == CUBLAS_STATUS_SUCCESS;
        float ms = 0.0f;
        ok = ok && cudaEventRecord(e1, s) == cudaSuccess &&
             cudaEventSynchronize(e1) == cudaSuccess &&
             cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess;
        if (ok && (best < 0 || ms < best_ms)) best = i, best_ms = ms;
    }
done:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    (void)cudaGetLastError(); /* a candidate that failed to launch leaves no sticky error */
    return algos[best < 0 ? 0 : best];
}

void cuda_gemm_set_autotune(cuda_gemm *g, bool on) {
    g->autotune = on;
}

void cuda_gemm_set_gemv(cuda_gemm *g, bool on) {
    g->gemv = on;
}

bool cuda_gemm_gemv(const cuda_gemm *g) {
    return g->gemv;
}

mg_status cuda_matmul_bf16(cuda_gemm *g, float *out, const uint16_t *x, const uint16_t *w, int T,
                           int N, int K, cudaStream_t s) {
    if (T <= 0) return MG_OK;
    if (g->gemv && T <= CUDA_GEMV_MAX_T && K % 8 == 0) {
        int e = cuda_gemv_bf16(out, x, w, T, N, K, s);
        if (e)
            return MG_ERRF(MG_ECUDA, "gemv (%d×%d)·(%d×%d)^T: %s", T, K, N, K,
                           cudaGetErrorString((cudaError_t)e));
        return MG_OK;
    }
    plan *p = NULL;
    for (int i = 0; i < g->n_plans && !p; i++)
        if (g->plans[i].T == T && g->plans[i].N == N && g->plans[i].K == K) p = &g->plans[i];
    if (!p) {
        if (g->n_plans < PLANS) {
            p = &g->plans[g->n_plans++];
        } else { /* evict round-robin: shapes are few (4 GEMMs × batch sizes) */
            p = &g->plans[g->next_evict];
            g->next_evict = (g->next_evict + 1) % PLANS;
            plan_free(p);
        }
        cublasLtMatmulAlgo_t algos[TUNE_ALGOS];
        enum cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
        bool tune = g->autotune && pow2_upto(T, TUNE_MAX_T) &&
                    cudaStreamIsCapturing(s, &cap) == cudaSuccess &&
                    cap == cudaStreamCaptureStatusNone;
        int n_algo = tune ? TUNE_ALGOS : 1;
        mg_status st = plan_make(g, p, T, N, K, algos, &n_algo);
        if (st) {
            p->T = p->N = p->K = -1; /* an empty slot: T > 0 never matches it */
            return st;
        }
        if (tune && n_algo > 1) p->algo = plan_tune(g, p, algos, n_algo, out, x, w, s);
    }
    const float alpha = 1.0f, beta = 0.0f;
    cublasStatus_t st = cublasLtMatmul(g->lt, p->desc, &alpha, w, p->a, x, p->b, &beta, out, p->d,
                                       out, p->d, &p->algo, g->ws, g->ws_bytes, s);
    if (st != CUBLAS_STATUS_SUCCESS)
        return MG_ERRF(MG_ECUDA, "cublasLtMatmul (%d×%d)·(%d×%d)^T: status %d", T, K, N, K,
                       (int)st);
    return MG_OK;
}
