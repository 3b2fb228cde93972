/* cuda_plan.h - the host-side arithmetic of the CUDA backend, kept free of CUDA so that it is
 * tested on machines without a GPU: configs of the released shapes (for --random-weights),
 * device bytes of the weights and of a KV block, the KV pool size from the memory left after
 * loading, and the bytes-and-FLOPs limit of a decode step (DESIGN.md §8).
 * Pure functions; no allocation; any thread. */
#ifndef MG_CUDA_PLAN_H
#define MG_CUDA_PLAN_H

#include <stddef.h>

#include "model_config.h"
#include "status.h"

/* The config of a released shape: "120b" or "20b" (DESIGN.md §3), or "tiny" (tools/mkckpt's
 * preset). MG_ENOTFOUND naming the preset otherwise. */
mg_status cuda_plan_preset(const char *name, mg_model_config *out);

/* Device bytes of every weight as the CUDA backend stores it (bf16 and MXFP4 as in the
 * checkpoint; q, k and v concatenated, which changes nothing in size). */
size_t cuda_plan_weight_bytes(const mg_model_config *c);

/* Bytes of one KV block: K and V, every layer, block_size positions, bf16. */
size_t cuda_plan_block_bytes(const mg_model_config *c, int block_size);

/* KV blocks that fit in fraction (0, 1] of free_bytes; MG_EINVAL naming the field when the
 * fraction is out of range, MG_ENOMEM when not even one block fits. */
mg_status cuda_plan_kv_blocks(size_t free_bytes, double fraction, size_t block_bytes, int *out);

/* The floor of one decode step at batch B and context ctx per sequence: bytes that must cross
 * memory (attention, router and lm_head weights, the experts that B tokens touch on average,
 * the KV rows read, sliding layers reading at most their window) and FLOPs (2 per weight per
 * token of the active parameters, plus q·k and p·v). ms = max(bytes / bw, flops / peak). */
typedef struct cuda_step_limit {
    double bytes, flops;
    double experts_touched; /* expected distinct experts per layer */
    double ms_bytes, ms_flops, ms;
} cuda_step_limit;

cuda_step_limit cuda_plan_decode_limit(const mg_model_config *c, int B, int ctx, double bytes_per_s,
                                       double flops_per_s);

#endif
