/* cuda_ref.h - the whole-model reference of the kernel lab (cuda-check) and of cuda-agree: the
 * CPU backend's forward pass step for step, single-threaded, that can also round to bf16
 * wherever the CUDA backend keeps bf16, and that records (or is told) each token's experts.
 *
 * It is cpu_forward step for step (the same cpu_ops calls in the same order, so with bf16 =
 * false its logits are the CPU backend's, which the lab checks), with two additions:
 * with bf16 = true it rounds to bf16 wherever the CUDA backend stores bf16 (the normed rows
 * that feed every GEMM, K and V in the cache, the attention output, the SwiGLU activations),
 * and it records every token's experts per layer.
 *
 * Why both: the CUDA backend keeps those tensors in bf16 by design, the CPU backend in float32.
 * That rounding alone moves the logits by ~5e-3, and now and then it moves a router logit past
 * its neighbour: the token then takes another expert and its logits move by several percent.
 * Which step that hits depends only on the data, so a comparison with the float32 backend fails
 * on a seemingly random step, which looks like a race but is not one.
 *
 * Even two bf16 pipelines that differ only in fp32 summation order drift apart: a last-bit
 * difference flips the bf16 rounding of an element now and then, that element then differs by
 * a bf16 step and the next GEMM spreads it over every output, so after four layers the logits
 * differ by ~2e-3 and, at a near-tie, a router picks another expert. So the bf16 reference takes
 * the GPU's expert choices (cuda_backend_routes) and the lab checks those apart: each one that
 * differs from the reference's own must be a near-tie of the reference's router logits. What is
 * left to compare is continuous, and held to 1e-2; the float32 pair says how far the rounding
 * alone goes and how many routing decisions it flipped.
 *
 * Ownership: the reference keeps m (not owned); the backend form owns its model and reference.
 * Thread rule: one thread per reference. */
#ifndef MG_CUDA_REF_H
#define MG_CUDA_REF_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "model.h"
#include "status.h"

typedef struct cuda_ref {
    const mg_model *m;
    bool bf16;
    int H, Q, KV, D, E, TK, I, V, L, bs, max_tokens, max_ctx;
    int num_blocks, window_blocks; /* window_blocks 0: no window pool */
    float *kc, *vc;                /* every layer's slots, layer after layer */
    /* layer l's (num_blocks * bs, KV), or (window_blocks * bs, KV) for a sliding layer when
     * window_blocks > 0: then addressed through the batch's window_table (backend.h) */
    float *kl[MG_MAX_LAYERS], *vl[MG_MAX_LAYERS];
    float inv_freq[512], conc;
    float *x, *xn, *q, *k, *v, *att, *tmp, *rlog, *h, *act, *y, *lx, *wrow, *sc, *top_w;
    int32_t *top_e; /* (T * TK) */
    int32_t *route; /* (L, T * TK): the experts each token took, per layer */
    /* With forced routing (ref_forward's force): the decisions where it differed from the
     * reference's own top-k, and the largest amount by which a forced set is not the top-k of
     * the reference's router logits (0 when it is). */
    int n_forced;
    float worst_gap;
} cuda_ref;

/* NULL when out of memory. KV for num_blocks blocks of bs positions; steps of at most
 * max_tokens tokens and contexts of at most max_ctx. */
cuda_ref *cuda_ref_create(const mg_model *m, bool bf16, int num_blocks, int bs, int max_tokens,
                          int max_ctx);
/* The same with the sliding layers in a window pool of window_blocks blocks (0: none, as
 * cuda_ref_create); its batches then carry window_table. */
cuda_ref *cuda_ref_create_window(const mg_model *m, bool bf16, int num_blocks, int window_blocks,
                                 int bs, int max_tokens, int max_ctx);
void cuda_ref_destroy(cuda_ref *r);
/* One step; logits (n_logits, V). The caller checks the batch (the backends do the same).
 * force: NULL, or the experts to take, (L, n_tokens * TK) as cuda_backend_routes gives them;
 * the routing weights are still the softmax of the reference's own logits of those experts. */
void cuda_ref_forward(cuda_ref *r, const mg_batch *bt, const int32_t *force, float *logits);
/* Routing decisions (token, layer) of the last step whose expert sets differ between a and b;
 * *on_rows: how many of them are on the rows that want logits. */
int cuda_ref_route_diff(const cuda_ref *a, const cuda_ref *b, const mg_batch *bt, int *on_rows);

/* The reference as an mg_backend (forward only; its own routing), loading the checkpoint in
 * dir: for measuring what bf16 rounding alone does to a model (cuda-agree --b ref16).
 * window_blocks > 0 (and a model with sliding layers): they keep their KV in a window pool of
 * that many blocks (backend.h); 0: one pool. */
mg_status cuda_ref_backend_open(const char *dir, bool bf16, int num_blocks, int window_blocks,
                                int block_size, int max_tokens, int max_ctx, mg_backend **out);

#endif
