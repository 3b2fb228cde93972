/* model_config.h - the gpt-oss hyper-parameters, read from a Hugging Face config.json.
 *
 * First step of loading a checkpoint: model_config_load reads and checks config.json; the
 * loader (model.h) then checks every tensor's shape against it. Names follow the HF keys
 * (DESIGN.md §3, reference/gptoss.md §1). Caller-owned struct; no thread rules. */
#ifndef MG_MODEL_CONFIG_H
#define MG_MODEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define MG_MAX_LAYERS 256

typedef struct mg_model_config {
    int hidden;         /* hidden_size (multiple of 32: MXFP4 blocks run along it) */
    int n_layers;       /* num_hidden_layers */
    int n_heads;        /* num_attention_heads */
    int n_kv_heads;     /* num_key_value_heads (divides n_heads) */
    int head_dim;       /* head_dim (even: RoPE rotates halves) */
    int n_experts;      /* num_local_experts */
    int top_k;          /* num_experts_per_tok */
    int intermediate;   /* intermediate_size: each expert's width (multiple of 32) */
    int vocab;          /* vocab_size */
    int sliding_window; /* sliding_window: keys within the last this-many positions */
    int max_pos;        /* max_position_embeddings */
    float rms_eps;      /* rms_norm_eps */
    float swiglu_limit; /* swiglu_limit */
    double rope_theta;  /* rope_theta */
    /* rope_scaling (YaRN): factor, beta_fast, beta_slow, original_max_position_embeddings. */
    double rope_factor, beta_fast, beta_slow;
    int rope_orig_ctx;
    bool rope_truncate;
    bool sliding[MG_MAX_LAYERS]; /* layer_types[i] == "sliding_attention" */
    int eos_token_id;            /* first of eos_token_id (-1 when absent) */
} mg_model_config;

/* Read path (a config.json). Errors name the file and the key. Requires model_type gpt_oss and
 * quantization_config.quant_method mxfp4 (the expert layout this engine reads). */
mg_status model_config_load(const char *path, mg_model_config *out);
/* Parse config text (name is used in errors). */
mg_status model_config_parse(const char *text, size_t len, const char *name, mg_model_config *out);

/* Read a whole file into a NUL-terminated heap buffer (caller frees). */
mg_status model_read_file(const char *path, char **out, size_t *len);

#endif
