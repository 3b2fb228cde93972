/* engine_config.h - the engine's settings, named as in TensorRT-LLM's engine config.
 *
 * A TensorRT-LLM `--extra-engine-args engine.yaml` file carries over as is: the YAML keys are
 * TensorRT-LLM's (max_batch_size, max_num_tokens, max_seq_len, kv_cache_config.* ,
 * tensor_parallel_size, moe_expert_parallel_size, enable_attention_dp, stream_interval); keys we
 * do not use (cuda_graph_config, moe_config ...) are logged and skipped by config.c. Flags are
 * the same names with '-' (--max-batch-size, --free-gpu-memory-fraction ...), except
 * --expert-parallel-size (Dynamo's spelling) and --kv-block-size / --kv-max-tokens /
 * --enable-block-reuse / --sliding-window-pool for the kv_cache_config keys.
 *
 * The worker executable appends these rows to its own table (engine_config_opts) and parses once;
 * tests fill the struct with engine_config_defaults and set fields directly. */
#ifndef MG_ENGINE_CONFIG_H
#define MG_ENGINE_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "status.h"

#define MG_ENGINE_MAX_STOP_IDS 16

typedef struct mg_engine_config {
    int64_t max_batch_size;          /* max_batch_size: sequences running per rank */
    int64_t max_num_tokens;          /* max_num_tokens: tokens per step (prompts are chunked) */
    int64_t max_seq_len;             /* max_seq_len: prompt + output, per sequence */
    double free_gpu_memory_fraction; /* kv_cache_config.free_gpu_memory_fraction */
    int64_t kv_max_tokens;           /* kv_cache_config.max_tokens; 0: no cap */
    int64_t kv_block_size;           /* kv_cache_config.tokens_per_block (DESIGN: 32) */
    bool enable_block_reuse;         /* kv_cache_config.enable_block_reuse (prefix reuse) */
    /* kv_cache_config.sliding_window_pool: sliding-window layers keep only the blocks of their
     * window, in a pool of their own (backend.h); the backend sizes it. */
    bool sliding_window_pool;
    int64_t tensor_parallel_size;     /* tensor_parallel_size */
    int64_t moe_expert_parallel_size; /* moe_expert_parallel_size */
    bool enable_attention_dp;         /* enable_attention_dp */
    int64_t stream_interval;          /* stream_interval: output callback every N tokens */
    char *eos_token_ids;              /* default stop ids, "200002,200012"; owned by the table */
    /* Parsed from eos_token_ids by engine_config_check: */
    int n_stop_ids;
    int32_t stop_ids[MG_ENGINE_MAX_STOP_IDS];
} mg_engine_config;

/* Number of rows engine_config_opts writes. */
#define MG_ENGINE_CONFIG_NOPTS 13

/* Defaults without parsing anything (eos_token_ids stays NULL: the gpt-oss stops apply). */
void engine_config_defaults(mg_engine_config *c);
/* Write the rows for c into rows[0..MG_ENGINE_CONFIG_NOPTS); returns that count. c must outlive
 * the rows; strings set through them are owned by the table (mg_cfg_free). */
int engine_config_opts(mg_engine_config *c, mg_cfg_opt *rows);
/* Validate and derive (stop ids). MG_EINVAL naming the field on a bad value. */
mg_status engine_config_check(mg_engine_config *c);
/* KV blocks from memory: min(fraction * free_bytes / bytes_per_block, kv_max_tokens / block);
 * for backends that size their cache after loading the weights. */
int64_t engine_config_kv_blocks(const mg_engine_config *c, uint64_t free_bytes,
                                uint64_t bytes_per_block);

#endif
