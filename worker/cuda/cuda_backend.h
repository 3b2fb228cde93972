/* cuda_backend.h - the CUDA backend: the gpt-oss forward pass on one GPU behind mg_backend_ops
 * (worker/engine/backend.h), the same scheduler and paged KV as the CPU backend.
 *
 * Weights live in one device allocation carved into tensors in the checkpoint's layout (bf16,
 * MXFP4 codes + E8M0 scales; q, k and v concatenated for one GEMM), copied from the model's
 * mapping or, for benchmarks at shapes whose files would not fit, initialised on the device
 * from a seed (cuda_backend_create_random). KV is bf16, (num_blocks, n_kv_heads, block_size,
 * head_dim) per layer, sized from free_gpu_memory_fraction of the memory free once weights and
 * scratch are allocated. With window_pool the sliding layers have (window_blocks, ...) of their
 * own instead, addressed through the batch's window_table (backend.h), and the full-attention
 * layers get the rest of the budget (kv_window_split). The step's kernels are in cuda_ops.h, the
 * GEMMs in cuda_gemm.h; forward_sampled picks every token on the device (cuda_sample: sampling.h's
 * rules, the same tokens as sampling_pick) and copies back only rows whose parameters it does not
 * take.
 *
 * Ownership: cuda_backend_create copies the weights and does not keep the model;
 * cuda_backend_open loads, copies and unloads. The backend owns every device buffer; forward
 * allocates nothing. Thread rule: the engine thread makes every call; the backend binds its
 * device on each call (cudaSetDevice is per thread). */
#ifndef MG_CUDA_BACKEND_H
#define MG_CUDA_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "model.h"
#include "status.h"

typedef struct cuda_backend_opts {
    int device; /* CUDA device ordinal */
    /* KV blocks (of every layer; with window_pool the budget the two pools share); 0: from
     * free_gpu_memory_fraction */
    int num_blocks;
    double free_gpu_memory_fraction; /* share of free memory after loading (0: 0.9) */
    int block_size;                  /* positions per block */
    int max_tokens;                  /* most tokens in one forward */
    int max_seqs;                    /* most sequences (and logits rows) in one forward */
    int max_ctx;                     /* longest sequence; 0: num_blocks * block_size */
    /* Kernel versions: 0 or 1 the first ones; 2 the MoE tile of 8 warps × 8 tokens and split-KV
     * attention for batches of up to CUDA_ATT_SPLIT_MAX_T tokens; 3 MXFP4 streamed one block per
     * lane from the tiled layout; 4 the large and many-token MoE tiles through shared memory; 5
     * attention on the tensor cores above CUDA_ATT_SPLIT_MAX_T tokens (moe.cuh, attention.cuh);
     * 6 fewer launches for small steps: the split-KV merge in the attention kernel, each token's
     * keys over the splits by its own context (up to CUDA_ATT_SPLIT_MAX_T tokens), and the
     * router's top-k in its GEMV (up to CUDA_GEMV_MAX_T tokens; cuda_ops.h); 7 six kernels a
     * layer instead of nine for steps of up to CUDA_GEMV_MAX_T tokens: the residual norms
     * folded into the kernels that read them, the residual adds into those that make them
     * (small.cuh; the same bits as version 6).
     * The same function up to bf16 rounding (version 5 rounds the softmax weights to bf16). */
    int kernel_version;
    /* Pure decode steps of up to min(max_tokens, max_seqs, 512) tokens padded to a bucket
     * (1, 2, 4, ..., 512) and replayed from a CUDA graph captured on the bucket's first step. */
    bool cuda_graphs;
    /* forward_sampled draws every row that samples on the host (its logits row copied back,
     * sampling_pick), as before cuda_sample existed; false: on the device (cuda_ops.h). */
    bool host_sampling;
    /* Steps of up to CUDA_SAMPLE_SPLIT_ROWS logits rows choose their tokens with each row over
     * many CTAs (cuda_sample_split: the same tokens; greedy and plain temperature rows, and the
     * arg-max of host_sampling; the worker's default); false: a CTA a row (cuda_sample,
     * cuda_argmax). */
    bool sample_split;
    /* The sliding layers' KV in a window pool sized for max_seqs windows and a max_tokens step
     * (kv_cache_config.sliding_window_pool); one pool when the model has no sliding layers or
     * the budget is too small for the split to pay. */
    bool window_pool;
    /* Time cuBLASLt's candidates for each decode-step GEMM shape on first use and keep the
     * fastest (cuda_gemm_set_autotune); false: the heuristic's first choice. */
    bool gemm_autotune;
    /* true: every dense GEMM through cuBLASLt, also for steps of a few tokens, which otherwise
     * take the GEMV kernel (cuda_gemm_set_gemv); for benchmarks. */
    bool gemm_no_gemv;
    /* Steps of up to this many tokens (a graph step: its bucket's size) launch their kernels
     * with programmatic dependent launch (each may start while the one before it finishes;
     * cuda_pdl_step); 0: none. The worker uses CUDA_PDL_MAX_TOKENS. */
    int pdl_max_tokens;
} cuda_backend_opts;

/* pdl_max_tokens where it measured faster: single-sequence steps (H100, NOTES.md). */
enum { CUDA_PDL_MAX_TOKENS = 4 };

enum { CUDA_ATT_SPLIT_MAX_T = 32, CUDA_GRAPH_BUCKETS = 10 };

mg_status cuda_backend_create(const mg_model *m, const cuda_backend_opts *o, mg_backend **out);
mg_status cuda_backend_open(const char *dir, const cuda_backend_opts *o, mg_backend **out);
/* Weights of config c drawn on the device from seed (scales as tools/mkckpt's: unit-RMS
 * activations through the layers). For benchmarks; logits mean nothing. */
mg_status cuda_backend_create_random(const mg_model_config *c, uint64_t seed,
                                     const cuda_backend_opts *o, mg_backend **out);

/* Benchmarks: fill the whole KV pool with random bf16 values (contexts that no prefill wrote). */
mg_status cuda_backend_fill_kv(mg_backend *b, uint64_t seed);

/* Per-op timing with device events around each launch group while on (it adds a sync per
 * step). cuda_backend_profile_read gives the op names and milliseconds summed since the last
 * read (or since profiling began) and resets them; returns the number of ops. */
enum { CUDA_PROF_OPS = 12 };
void cuda_backend_set_profile(mg_backend *b, bool on);
int cuda_backend_profile_read(mg_backend *b, const char **names, double *ms, int *calls);

/* A bench aid: leave the ops whose bits are set (bit i: the i-th profile op name) out of every
 * step from now on, so that a step's time without them shows what they cost inside a graph.
 * The step's results are meaningless then. Captured graphs are dropped. */
void cuda_backend_omit(mg_backend *b, unsigned ops);

/* With cuda_graphs: run and capture now the decode graph of every batch bucket a step can fill
 * (up to max_tokens and max_seqs), so that no step pays for a capture while serving; otherwise
 * each bucket is captured on its first step. The warm-up steps are padding rows that touch only
 * the scratch KV block. */
mg_status cuda_backend_capture_graphs(mg_backend *b);

/* The kernel lab's view of the routing: while on, every step also copies each layer's experts
 * (top_e, token t's k-th choice at t * top_k + k) into a trace buffer (allocated on the first
 * call with on = true, kept until destroy; graphs captured meanwhile include the copies), and
 * cuda_backend_routes gives the last step's: out (n_layers, n_tokens * top_k), n_tokens that
 * step's token count. A reference then follows the GPU's choice where a near-tie made rounding
 * decide it. */
mg_status cuda_backend_trace_routes(mg_backend *b, bool on);
mg_status cuda_backend_routes(mg_backend *b, int n_tokens, int32_t *out);

#endif
