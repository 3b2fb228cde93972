/* model.c - bind a checkpoint folder's tensors to mg_model (see model.h). */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mjson.h"

/* A shard file name from the index must be a plain name inside the folder. */
static bool plain_name(const char *s) {
    return *s && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

typedef struct loader {
    mg_model *m;
    const char *dir;
    const mjson *weight_map; /* NULL for a single model.safetensors */
    char index_path[4096];
    int bound; /* tensors bound so far */
} loader;

static mg_status open_shard(loader *L, const char *file, st_file **out) {
    for (int i = 0; i < L->m->n_shards; i++) {
        const char *p = L->m->shards[i]->path, *slash = strrchr(p, '/');
        if (strcmp(slash ? slash + 1 : p, file) == 0) {
            *out = L->m->shards[i];
            return MG_OK;
        }
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", L->dir, file);
    st_file **grown = realloc(L->m->shards, sizeof(*grown) * (L->m->n_shards + 1));
    if (!grown) return MG_ERRF(MG_ENOMEM, "out of memory");
    L->m->shards = grown;
    mg_status st = st_open(path, out);
    if (st) return st;
    L->m->shards[L->m->n_shards++] = *out;
    return MG_OK;
}

/* Find tensor `name`, check dtype and shape, return its data. */
static mg_status bind(loader *L, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                      const void **out) {
    const char *file = "model.safetensors";
    if (L->weight_map) {
        const mjson *f = mjson_get(L->weight_map, name);
        if (!f)
            return MG_ERRF(MG_ENOTFOUND, "%s: tensor %s is missing from weight_map", L->index_path,
                           name);
        if (f->type != MJSON_STR || !plain_name(f->str))
            return MG_ERRF(MG_EFORMAT, "%s: tensor %s: shard is not a plain file name",
                           L->index_path, name);
        file = f->str;
    }
    st_file *sf;
    mg_status st = open_shard(L, file, &sf);
    if (st) return st;
    const st_tensor *t = st_find(sf, name);
    if (!t) return MG_ERRF(MG_ENOTFOUND, "%s: tensor %s is missing", sf->path, name);
    if (t->dtype != dtype)
        return MG_ERRF(MG_EFORMAT, "%s: tensor %s has dtype %s, expected %s", sf->path, name,
                       st_dtype_name(t->dtype), st_dtype_name(dtype));
    bool same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char got[160], want[160];
        return MG_ERRF(MG_EFORMAT, "%s: tensor %s has shape %s, config.json implies %s", sf->path,
                       name, st_shape_str(t->shape, t->ndim, got, sizeof(got)),
                       st_shape_str(shape, ndim, want, sizeof(want)));
    }
    *out = t->data;
    L->bound++;
    return MG_OK;
}

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__}), (int)(sizeof((int64_t[]){__VA_ARGS__}) / 8)

static mg_status bind_bf16(loader *L, const char *name, const int64_t *shape, int ndim,
                           const uint16_t **out) {
    return bind(L, name, ST_BF16, ndim, shape, (const void **)out);
}
static mg_status bind_u8(loader *L, const char *name, const int64_t *shape, int ndim,
                         const uint8_t **out) {
    return bind(L, name, ST_U8, ndim, shape, (const void **)out);
}

static mg_status bind_layer(loader *L, int i) {
    const mg_model_config *c = &L->m->cfg;
    mg_layer *w = &L->m->layers[i];
    int64_t H = c->hidden, Q = (int64_t)c->n_heads * c->head_dim,
            KV = (int64_t)c->n_kv_heads * c->head_dim, E = c->n_experts, I = c->intermediate;
    char n[256];
    mg_status st;
#define B16(field, suffix, ...)                                                                    \
    snprintf(n, sizeof(n), "model.layers.%d.%s", i, suffix);                                       \
    if ((st = bind_bf16(L, n, SHAPE(__VA_ARGS__), &w->field))) return st
#define BU8(field, suffix, ...)                                                                    \
    snprintf(n, sizeof(n), "model.layers.%d.%s", i, suffix);                                       \
    if ((st = bind_u8(L, n, SHAPE(__VA_ARGS__), &w->field))) return st
    B16(attn_norm, "input_layernorm.weight", H);
    B16(q_w, "self_attn.q_proj.weight", Q, H);
    B16(q_b, "self_attn.q_proj.bias", Q);
    B16(k_w, "self_attn.k_proj.weight", KV, H);
    B16(k_b, "self_attn.k_proj.bias", KV);
    B16(v_w, "self_attn.v_proj.weight", KV, H);
    B16(v_b, "self_attn.v_proj.bias", KV);
    B16(o_w, "self_attn.o_proj.weight", H, Q);
    B16(o_b, "self_attn.o_proj.bias", H);
    B16(sinks, "self_attn.sinks", c->n_heads);
    B16(mlp_norm, "post_attention_layernorm.weight", H);
    B16(router_w, "mlp.router.weight", E, H);
    B16(router_b, "mlp.router.bias", E);
    BU8(gate_up_blocks, "mlp.experts.gate_up_proj_blocks", E, 2 * I, H / 32, 16);
    BU8(gate_up_scales, "mlp.experts.gate_up_proj_scales", E, 2 * I, H / 32);
    B16(gate_up_bias, "mlp.experts.gate_up_proj_bias", E, 2 * I);
    BU8(down_blocks, "mlp.experts.down_proj_blocks", E, H, I / 32, 16);
    BU8(down_scales, "mlp.experts.down_proj_scales", E, H, I / 32);
    B16(down_bias, "mlp.experts.down_proj_bias", E, H);
#undef B16
#undef BU8
    return MG_OK;
}

static mg_status load(loader *L) {
    mg_model *m = L->m;
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", L->dir);
    mg_status st = model_config_load(path, &m->cfg);
    if (st) return st;
    m->layers = calloc(m->cfg.n_layers, sizeof(mg_layer));
    if (!m->layers) return MG_ERRF(MG_ENOMEM, "out of memory");

    snprintf(L->index_path, sizeof(L->index_path), "%s/model.safetensors.index.json", L->dir);
    char *text = NULL;
    size_t len;
    mjson_doc *doc = NULL;
    st = model_read_file(L->index_path, &text, &len);
    if (st == MG_ENOTFOUND) {
        st = MG_OK; /* a single-file checkpoint */
    } else if (!st) {
        st = mjson_parse(text, len, L->index_path, &doc);
        if (!st) {
            L->weight_map = mjson_get(mjson_root(doc), "weight_map");
            if (!L->weight_map || L->weight_map->type != MJSON_OBJ)
                st = MG_ERRF(MG_EFORMAT, "%s: weight_map is missing or not an object",
                             L->index_path);
        }
    }
    free(text);
    const mg_model_config *c = &m->cfg;
    if (!st) st = bind_bf16(L, "model.embed_tokens.weight", SHAPE(c->vocab, c->hidden), &m->embed);
    for (int i = 0; !st && i < c->n_layers; i++) st = bind_layer(L, i);
    if (!st) st = bind_bf16(L, "model.norm.weight", SHAPE(c->hidden), &m->final_norm);
    if (!st) st = bind_bf16(L, "lm_head.weight", SHAPE(c->vocab, c->hidden), &m->lm_head);
    if (!st) {
        int total = 0;
        for (int i = 0; i < m->n_shards; i++) total += m->shards[i]->n_tensors;
        if (total > L->bound)
            MG_WARN("%s: %d tensors in the shards are not used by the forward pass", L->dir,
                    total - L->bound);
    }
    mjson_free(doc);
    return st;
}

mg_status model_load(const char *dir, mg_model **out) {
    *out = NULL;
    mg_model *m = calloc(1, sizeof(*m));
    if (!m) return MG_ERRF(MG_ENOMEM, "out of memory");
    loader L = {.m = m, .dir = dir};
    mg_status st = load(&L);
    if (st) {
        model_destroy(m);
        return st;
    }
    MG_INFO("loaded %s: %d layers, hidden %d, %d experts, vocab %d, %d shards", dir,
            m->cfg.n_layers, m->cfg.hidden, m->cfg.n_experts, m->cfg.vocab, m->n_shards);
    *out = m;
    return MG_OK;
}

void model_destroy(mg_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_shards; i++) st_close(m->shards[i]);
    free(m->shards);
    free(m->layers);
    free(m);
}
