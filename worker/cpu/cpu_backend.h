/* cpu_backend.h - the CPU backend: the readable float32 reference of the gpt-oss forward pass
 * (DESIGN.md §3) behind mg_backend_ops (worker/engine/backend.h).
 *
 * Weights stay as the checkpoint stores them (bf16 and MXFP4, memory-mapped) and are converted
 * row by row during the matmuls: the 120b shape would need 4× the memory as float32, and the
 * conversion costs less than reading float32 would. KV is float32 (matching the float32
 * reference): per layer num_blocks × block_size slots of (n_kv_heads, head_dim) for K and V.
 * With window_pool the sliding layers have window_blocks × block_size slots instead, addressed
 * through the batch's window_table (backend.h).
 * Matmul rows, attention heads and experts are split over a small thread pool.
 *
 * Ownership: cpu_backend_create borrows the model (it must outlive the backend);
 * cpu_backend_open loads one and owns it. The backend owns its KV and scratch buffers, all
 * allocated at creation: forward allocates nothing.
 * Thread rule: the engine thread calls everything; the pool threads are internal. */
#ifndef MG_CPU_BACKEND_H
#define MG_CPU_BACKEND_H

#include "backend.h"
#include "model.h"
#include "status.h"

typedef struct cpu_backend_opts {
    /* KV blocks per layer; with window_pool, the budget (num_blocks blocks of every layer) that
     * the two pools share */
    int num_blocks;
    int block_size; /* positions per block */
    int max_tokens; /* most tokens in one forward (prefill chunk + decodes) */
    int max_ctx;    /* longest sequence; 0: num_blocks * block_size */
    int threads;    /* worker threads including the caller; 0: all online CPUs */
    /* The sliding layers in a window pool of their own (kv_window_split over the budget, for
     * max_seqs running sequences): kv_cache_config.sliding_window_pool. Without sliding layers,
     * or when the budget is too small for the split to pay, one pool as when false. */
    bool window_pool;
    int max_seqs; /* sequences running at once (max_batch_size); needed with window_pool */
} cpu_backend_opts;

mg_status cpu_backend_create(const mg_model *m, const cpu_backend_opts *o, mg_backend **out);
/* Load the checkpoint folder dir and create a backend that owns it. */
mg_status cpu_backend_open(const char *dir, const cpu_backend_opts *o, mg_backend **out);

/* Bytes of KV storage per block (all layers, K and V): for sizing num_blocks from memory (the
 * budget num_blocks stands for, with or without window_pool). */
size_t cpu_backend_block_bytes(const mg_model_config *c, int block_size);

#endif
