/* model_config.c - config.json → mg_model_config, with the checks the forward pass relies on. */
#include "model_config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mjson.h"

mg_status model_read_file(const char *path, char **out, size_t *len) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return MG_ERRF(MG_ENOTFOUND, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return MG_ERRF(MG_EIO, "%s: cannot seek", path);
    }
    long n = ftell(f);
    if (n < 0 || n > (64L << 20)) {
        fclose(f);
        return MG_ERRF(MG_EFORMAT, "%s: size %ld is not that of a metadata file", path, n);
    }
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    if (!buf) {
        fclose(f);
        return MG_ERRF(MG_ENOMEM, "%s: out of memory", path);
    }
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) {
        free(buf);
        return MG_ERRF(MG_EIO, "%s: short read", path);
    }
    buf[n] = 0;
    *out = buf;
    *len = (size_t)n;
    return MG_OK;
}

static mg_status get_int(const char *name, const mjson *o, const char *key, int *out, int lo,
                         int hi, bool required, int def) {
    const mjson *v = mjson_get(o, key);
    int64_t i;
    if (!v) {
        if (required) return MG_ERRF(MG_EFORMAT, "%s: key %s is missing", name, key);
        *out = def;
        return MG_OK;
    }
    if (!mjson_int(v, &i)) return MG_ERRF(MG_EFORMAT, "%s: key %s is not an integer", name, key);
    if (i < lo || i > hi)
        return MG_ERRF(MG_EFORMAT, "%s: key %s = %lld is outside [%d, %d]", name, key, (long long)i,
                       lo, hi);
    *out = (int)i;
    return MG_OK;
}

static mg_status get_num(const char *name, const mjson *o, const char *key, double *out, double lo,
                         double hi, bool required, double def) {
    const mjson *v = mjson_get(o, key);
    if (!v) {
        if (required) return MG_ERRF(MG_EFORMAT, "%s: key %s is missing", name, key);
        *out = def;
        return MG_OK;
    }
    if (!mjson_double(v, out)) return MG_ERRF(MG_EFORMAT, "%s: key %s is not a number", name, key);
    if (!(*out >= lo && *out <= hi))
        return MG_ERRF(MG_EFORMAT, "%s: key %s = %g is outside [%g, %g]", name, key, *out, lo, hi);
    return MG_OK;
}

static bool str_is(const mjson *v, const char *s) {
    return v && v->type == MJSON_STR && strcmp(v->str, s) == 0;
}

static mg_status parse_root(const mjson *o, const char *name, mg_model_config *c) {
    mg_status st;
    if (!o || o->type != MJSON_OBJ) return MG_ERRF(MG_EFORMAT, "%s: not a JSON object", name);
    const mjson *mt = mjson_get(o, "model_type");
    if (!str_is(mt, "gpt_oss"))
        return MG_ERRF(MG_EUNSUPPORTED, "%s: model_type is not \"gpt_oss\"", name);
    const int big = 1 << 24;
    if ((st = get_int(name, o, "hidden_size", &c->hidden, 32, 65536, true, 0)) ||
        (st = get_int(name, o, "num_hidden_layers", &c->n_layers, 1, MG_MAX_LAYERS, true, 0)) ||
        (st = get_int(name, o, "num_attention_heads", &c->n_heads, 1, 1024, true, 0)) ||
        (st = get_int(name, o, "num_key_value_heads", &c->n_kv_heads, 1, 1024, true, 0)) ||
        (st = get_int(name, o, "head_dim", &c->head_dim, 2, 1024, true, 0)) ||
        (st = get_int(name, o, "num_local_experts", &c->n_experts, 1, 4096, true, 0)) ||
        (st = get_int(name, o, "num_experts_per_tok", &c->top_k, 1, 64, true, 0)) ||
        (st = get_int(name, o, "intermediate_size", &c->intermediate, 32, big, true, 0)) ||
        (st = get_int(name, o, "vocab_size", &c->vocab, 1, big, true, 0)) ||
        (st = get_int(name, o, "sliding_window", &c->sliding_window, 1, big, true, 0)) ||
        (st = get_int(name, o, "max_position_embeddings", &c->max_pos, 1, big, false, 131072)))
        return st;
    double eps, limit;
    if ((st = get_num(name, o, "rms_norm_eps", &eps, 0, 1, false, 1e-5)) ||
        (st = get_num(name, o, "swiglu_limit", &limit, 0, 1e9, false, 7.0)) ||
        (st = get_num(name, o, "rope_theta", &c->rope_theta, 1, 1e12, false, 150000.0)))
        return st;
    c->rms_eps = (float)eps;
    c->swiglu_limit = (float)limit;
    if (c->hidden % 32)
        return MG_ERRF(MG_EFORMAT, "%s: hidden_size %d is not a multiple of 32 (MXFP4 block)", name,
                       c->hidden);
    if (c->intermediate % 32)
        return MG_ERRF(MG_EFORMAT, "%s: intermediate_size %d is not a multiple of 32", name,
                       c->intermediate);
    if (c->n_heads % c->n_kv_heads)
        return MG_ERRF(MG_EFORMAT,
                       "%s: num_attention_heads %d is not a multiple of "
                       "num_key_value_heads %d",
                       name, c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2) return MG_ERRF(MG_EFORMAT, "%s: head_dim %d is odd", name, c->head_dim);
    if (c->top_k > c->n_experts)
        return MG_ERRF(MG_EFORMAT, "%s: num_experts_per_tok %d exceeds num_local_experts %d", name,
                       c->top_k, c->n_experts);
    bool tied = false;
    if (mjson_bool(mjson_get(o, "tie_word_embeddings"), &tied) && tied)
        return MG_ERRF(MG_EUNSUPPORTED, "%s: tie_word_embeddings true (gpt-oss is untied)", name);

    /* rope_scaling: YaRN as gpt-oss uses it; absent means plain RoPE (factor 1). */
    const mjson *rs = mjson_get(o, "rope_scaling");
    c->rope_factor = 1, c->beta_fast = 32, c->beta_slow = 1, c->rope_orig_ctx = c->max_pos;
    c->rope_truncate = true;
    if (rs && rs->type == MJSON_OBJ) {
        const mjson *t = mjson_get(rs, "rope_type");
        if (!t) t = mjson_get(rs, "type");
        if (!str_is(t, "yarn"))
            return MG_ERRF(MG_EUNSUPPORTED, "%s: rope_scaling.rope_type is not \"yarn\"", name);
        if ((st = get_num(name, rs, "factor", &c->rope_factor, 1, 1e6, true, 0)) ||
            (st = get_num(name, rs, "beta_fast", &c->beta_fast, 0, 1e6, false, 32)) ||
            (st = get_num(name, rs, "beta_slow", &c->beta_slow, 0, 1e6, false, 1)) ||
            (st = get_int(name, rs, "original_max_position_embeddings", &c->rope_orig_ctx, 1, big,
                          false, c->max_pos)))
            return st;
        bool tr = true;
        if (mjson_get(rs, "truncate") && !mjson_bool(mjson_get(rs, "truncate"), &tr))
            return MG_ERRF(MG_EFORMAT, "%s: rope_scaling.truncate is not a boolean", name);
        c->rope_truncate = tr;
        /* YaRN divides by log(rope_theta) and takes log(orig_ctx / beta): zero betas or a theta
         * of 1 made every frequency NaN or inf, a model that silently emits garbage. */
        if (c->rope_factor > 1 &&
            (!(c->beta_fast > 0) || !(c->beta_slow > 0) || c->rope_theta <= 1))
            return MG_ERRF(MG_EFORMAT,
                           "%s: rope_scaling.beta_fast %g and beta_slow %g must be > 0 and "
                           "rope_theta %g > 1",
                           name, c->beta_fast, c->beta_slow, c->rope_theta);
    } else if (rs && rs->type != MJSON_NULL) {
        return MG_ERRF(MG_EFORMAT, "%s: rope_scaling is not an object", name);
    }

    /* layer_types: absent means the gpt-oss pattern, sliding on even layers. */
    const mjson *lt = mjson_get(o, "layer_types");
    if (lt) {
        if (lt->type != MJSON_ARR || (int)lt->len != c->n_layers)
            return MG_ERRF(MG_EFORMAT, "%s: layer_types is not a list of %d entries", name,
                           c->n_layers);
        int i = 0;
        for (const mjson *e = lt->kid; e; e = e->next, i++) {
            if (str_is(e, "sliding_attention"))
                c->sliding[i] = true;
            else if (str_is(e, "full_attention"))
                c->sliding[i] = false;
            else
                return MG_ERRF(MG_EFORMAT,
                               "%s: layer_types[%d] is neither sliding_attention "
                               "nor full_attention",
                               name, i);
        }
    } else {
        for (int i = 0; i < c->n_layers; i++) c->sliding[i] = i % 2 == 0;
    }

    const mjson *qc = mjson_get(o, "quantization_config");
    if (!qc || !str_is(mjson_get(qc, "quant_method"), "mxfp4"))
        return MG_ERRF(MG_EUNSUPPORTED,
                       "%s: quantization_config.quant_method is not \"mxfp4\" (only MXFP4 "
                       "expert weights are read)",
                       name);

    c->eos_token_id = -1;
    const mjson *eos = mjson_get(o, "eos_token_id");
    if (eos && eos->type == MJSON_ARR) eos = eos->kid;
    int64_t e;
    if (eos && mjson_int(eos, &e) && e >= 0 && e < c->vocab) c->eos_token_id = (int)e;
    return MG_OK;
}

mg_status model_config_parse(const char *text, size_t len, const char *name, mg_model_config *out) {
    memset(out, 0, sizeof(*out));
    mjson_doc *doc;
    mg_status st = mjson_parse(text, len, name, &doc);
    if (st) return st;
    st = parse_root(mjson_root(doc), name, out);
    mjson_free(doc);
    return st;
}

mg_status model_config_load(const char *path, mg_model_config *out) {
    char *text;
    size_t len;
    mg_status st = model_read_file(path, &text, &len);
    if (st) return st;
    st = model_config_parse(text, len, path, out);
    free(text);
    return st;
}
