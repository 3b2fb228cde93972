/* model.h - a gpt-oss checkpoint folder in the Hugging Face layout, loaded for a backend.
 *
 * model_load reads config.json, model.safetensors.index.json (or a lone model.safetensors),
 * maps every shard (safetensors.h) and binds each tensor the forward pass needs, checking its
 * dtype and shape against the config. Weights stay where they are in the mapping: bf16 as raw
 * uint16_t, MXFP4 expert blocks and scales as bytes (DESIGN.md §3); backends convert them.
 * Any mismatch is one error naming the file and the tensor.
 *
 * Ownership: mg_model owns the mappings; every pointer in it lives until model_destroy.
 * Read-only after loading: any thread may read it. */
#ifndef MG_MODEL_H
#define MG_MODEL_H

#include <stdint.h>

#include "model_config.h"
#include "safetensors.h"
#include "status.h"

/* One decoder layer. Shapes in config terms: H hidden, Q = n_heads*head_dim,
 * KV = n_kv_heads*head_dim, E experts, I intermediate. bf16 unless said otherwise. */
typedef struct mg_layer {
    const uint16_t *attn_norm;     /* (H) input_layernorm */
    const uint16_t *q_w, *q_b;     /* (Q, H), (Q) */
    const uint16_t *k_w, *k_b;     /* (KV, H), (KV) */
    const uint16_t *v_w, *v_b;     /* (KV, H), (KV) */
    const uint16_t *o_w, *o_b;     /* (H, Q), (H) */
    const uint16_t *sinks;         /* (n_heads) */
    const uint16_t *mlp_norm;      /* (H) post_attention_layernorm */
    const uint16_t *router_w;      /* (E, H) */
    const uint16_t *router_b;      /* (E) */
    const uint8_t *gate_up_blocks; /* (E, 2I, H/32, 16) u8: e2m1 pairs, low nibble first */
    const uint8_t *gate_up_scales; /* (E, 2I, H/32) u8: E8M0 */
    const uint16_t *gate_up_bias;  /* (E, 2I): rows alternate gate, up */
    const uint8_t *down_blocks;    /* (E, H, I/32, 16) u8 */
    const uint8_t *down_scales;    /* (E, H, I/32) u8 */
    const uint16_t *down_bias;     /* (E, H) */
} mg_layer;

typedef struct mg_model {
    mg_model_config cfg;
    const uint16_t *embed;      /* (vocab, H) */
    const uint16_t *final_norm; /* (H) */
    const uint16_t *lm_head;    /* (vocab, H) */
    mg_layer *layers;           /* (n_layers) */
    /* private */
    st_file **shards;
    int n_shards;
} mg_model;

mg_status model_load(const char *dir, mg_model **out);
void model_destroy(mg_model *m);

/* bf16 → float32: the bf16 bits are the high half of the float's. */
static inline float bf16_to_f32(uint16_t h) {
    union {
        uint32_t u;
        float f;
    } v = {.u = (uint32_t)h << 16};
    return v.f;
}

#endif
