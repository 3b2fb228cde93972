/* engine_config.c - defaults, the settings rows and their validation. */
#include "engine_config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* gpt-oss stops on <|return|> and <|call|>, never on <|end|> (DESIGN.md section 3). */
static const int32_t gptoss_stops[] = {200002, 200012};

void engine_config_defaults(mg_engine_config *c) {
    memset(c, 0, sizeof(*c));
    /* TensorRT-LLM's defaults, except max_seq_len which is gpt-oss's context length. */
    c->max_batch_size = 2048;
    c->max_num_tokens = 8192;
    c->max_seq_len = 131072;
    c->free_gpu_memory_fraction = 0.9;
    c->kv_max_tokens = 0;
    c->kv_block_size = 32;
    c->enable_block_reuse = true;
    c->sliding_window_pool = true;
    c->tensor_parallel_size = 1;
    c->moe_expert_parallel_size = 1;
    c->enable_attention_dp = false;
    c->stream_interval = 1;
    c->eos_token_ids = NULL;
}

int engine_config_opts(mg_engine_config *c, mg_cfg_opt *r) {
    int n = 0;
    r[n++] = (mg_cfg_opt){"max-batch-size",
                          MG_CFG_INT,
                          &c->max_batch_size,
                          "2048",
                          1,
                          1 << 20,
                          "sequences running at once per rank",
                          NULL};
    r[n++] = (mg_cfg_opt){"max-num-tokens",
                          MG_CFG_INT,
                          &c->max_num_tokens,
                          "8192",
                          1,
                          1 << 24,
                          "tokens per step per rank; longer prompts are chunked",
                          NULL};
    r[n++] = (mg_cfg_opt){"max-seq-len",
                          MG_CFG_INT,
                          &c->max_seq_len,
                          "131072",
                          2,
                          1 << 24,
                          "longest sequence (prompt + output)",
                          NULL};
    r[n++] = (mg_cfg_opt){"free-gpu-memory-fraction",
                          MG_CFG_DOUBLE,
                          &c->free_gpu_memory_fraction,
                          "0.9",
                          0.01,
                          1.0,
                          "share of the memory free after loading used for KV",
                          "kv_cache_config.free_gpu_memory_fraction"};
    r[n++] = (mg_cfg_opt){"kv-max-tokens",
                          MG_CFG_INT,
                          &c->kv_max_tokens,
                          "0",
                          0,
                          1e12,
                          "cap on KV cache tokens (0: none)",
                          "kv_cache_config.max_tokens"};
    r[n++] = (mg_cfg_opt){"kv-block-size",
                          MG_CFG_INT,
                          &c->kv_block_size,
                          "32",
                          1,
                          4096,
                          "tokens per KV block",
                          "kv_cache_config.tokens_per_block"};
    r[n++] = (mg_cfg_opt){"enable-block-reuse",
                          MG_CFG_BOOL,
                          &c->enable_block_reuse,
                          "true",
                          1,
                          0,
                          "reuse cached KV blocks of equal prefixes",
                          "kv_cache_config.enable_block_reuse"};
    r[n++] = (mg_cfg_opt){"sliding-window-pool",
                          MG_CFG_BOOL,
                          &c->sliding_window_pool,
                          "true",
                          1,
                          0,
                          "sliding-window layers keep only their window's KV blocks, in a pool "
                          "of their own",
                          "kv_cache_config.sliding_window_pool"};
    r[n++] = (mg_cfg_opt){"tensor-parallel-size",
                          MG_CFG_INT,
                          &c->tensor_parallel_size,
                          "1",
                          1,
                          1024,
                          "ranks of a group (attention DP ranks when enabled)",
                          NULL};
    r[n++] = (mg_cfg_opt){"expert-parallel-size",
                          MG_CFG_INT,
                          &c->moe_expert_parallel_size,
                          "1",
                          1,
                          1024,
                          "ranks the MoE experts are split over",
                          "moe_expert_parallel_size"};
    r[n++] = (mg_cfg_opt){"enable-attention-dp",
                          MG_CFG_BOOL,
                          &c->enable_attention_dp,
                          "false",
                          1,
                          0,
                          "each rank runs attention on its own batch",
                          NULL};
    r[n++] = (mg_cfg_opt){"stream-interval",
                          MG_CFG_INT,
                          &c->stream_interval,
                          "1",
                          1,
                          1 << 20,
                          "hand out tokens every N steps (the first at once)",
                          NULL};
    r[n++] = (mg_cfg_opt){"eos-token-ids",
                          MG_CFG_STR,
                          &c->eos_token_ids,
                          "200002,200012",
                          1,
                          0,
                          "default stop token ids (gpt-oss: <|return|>, <|call|>)",
                          NULL};
    return n;
}

/* "1,2", "[1, 2]" or "1 2" into ids. */
static mg_status parse_ids(const char *text, int32_t *ids, int *n) {
    *n = 0;
    const char *p = text;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '[' || *p == ']' || *p == '\t') p++;
        if (!*p) return MG_OK;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX)
            return MG_ERRF(MG_EINVAL, "eos_token_ids: '%s' is not a list of token ids", text);
        if (*n == MG_ENGINE_MAX_STOP_IDS)
            return MG_ERRF(MG_EINVAL, "eos_token_ids: more than %d ids", MG_ENGINE_MAX_STOP_IDS);
        ids[(*n)++] = (int32_t)v;
        p = end;
    }
}

mg_status engine_config_check(mg_engine_config *c) {
    if (c->max_batch_size < 1)
        return MG_ERRF(MG_EINVAL, "max_batch_size %lld must be >= 1", (long long)c->max_batch_size);
    if (c->max_num_tokens < 1)
        return MG_ERRF(MG_EINVAL, "max_num_tokens %lld must be >= 1", (long long)c->max_num_tokens);
    if (c->max_seq_len < 2)
        return MG_ERRF(MG_EINVAL, "max_seq_len %lld must be >= 2", (long long)c->max_seq_len);
    if (c->kv_block_size < 1)
        return MG_ERRF(MG_EINVAL, "kv_cache_config.tokens_per_block %lld must be >= 1",
                       (long long)c->kv_block_size);
    if (!(c->free_gpu_memory_fraction > 0 && c->free_gpu_memory_fraction <= 1))
        return MG_ERRF(MG_EINVAL, "kv_cache_config.free_gpu_memory_fraction %g outside (0, 1]",
                       c->free_gpu_memory_fraction);
    if (c->stream_interval < 1)
        return MG_ERRF(MG_EINVAL, "stream_interval %lld must be >= 1",
                       (long long)c->stream_interval);
    if (c->tensor_parallel_size < 1 || c->moe_expert_parallel_size < 1)
        return MG_ERRF(MG_EINVAL, "tensor_parallel_size and moe_expert_parallel_size must be >= 1");
    if (c->eos_token_ids) {
        mg_status s = parse_ids(c->eos_token_ids, c->stop_ids, &c->n_stop_ids);
        if (s) return s;
    } else {
        c->n_stop_ids = 2;
        memcpy(c->stop_ids, gptoss_stops, sizeof(gptoss_stops));
    }
    return MG_OK;
}

int64_t engine_config_kv_blocks(const mg_engine_config *c, uint64_t free_bytes,
                                uint64_t bytes_per_block) {
    if (!bytes_per_block || c->kv_block_size < 1) return 0;
    int64_t n = (int64_t)((double)free_bytes * c->free_gpu_memory_fraction / bytes_per_block);
    if (c->kv_max_tokens > 0) {
        int64_t cap = c->kv_max_tokens / c->kv_block_size;
        if (cap < n) n = cap;
    }
    return n;
}
