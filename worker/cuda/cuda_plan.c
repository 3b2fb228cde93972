/* cuda_plan.c - host-side arithmetic of the CUDA backend (see cuda_plan.h). */
#include "cuda_plan.h"

#include <math.h>
#include <string.h>

mg_status cuda_plan_preset(const char *name, mg_model_config *out) {
    memset(out, 0, sizeof(*out));
    int layers, experts, hidden, heads, kv_heads, inter;
    if (strcmp(name, "120b") == 0)
        layers = 36, experts = 128, hidden = 2880, heads = 64, kv_heads = 8, inter = 2880;
    else if (strcmp(name, "20b") == 0)
        layers = 24, experts = 32, hidden = 2880, heads = 64, kv_heads = 8, inter = 2880;
    else if (strcmp(name, "tiny") == 0)
        layers = 4, experts = 8, hidden = 64, heads = 4, kv_heads = 2, inter = 64;
    else
        return MG_ERRF(MG_ENOTFOUND, "preset %s: unknown (120b, 20b, tiny)", name);
    out->hidden = hidden, out->n_layers = layers, out->n_heads = heads;
    out->n_kv_heads = kv_heads, out->head_dim = 64, out->n_experts = experts, out->top_k = 4;
    out->intermediate = inter, out->vocab = 201088, out->sliding_window = 128;
    out->max_pos = 131072, out->rms_eps = 1e-5f, out->swiglu_limit = 7.0f;
    out->rope_theta = 150000.0, out->rope_factor = 32.0, out->beta_fast = 32.0;
    out->beta_slow = 1.0, out->rope_orig_ctx = 4096, out->rope_truncate = false;
    for (int l = 0; l < layers; l++) out->sliding[l] = l % 2 == 0;
    out->eos_token_id = 200002;
    return MG_OK;
}

/* MXFP4 bytes of a (rows, cols) matrix: 16 code bytes + 1 scale per 32 inputs. */
static double mxfp4_bytes(double rows, double cols) {
    return rows * cols / 32.0 * 17.0;
}

static double expert_bytes(const mg_model_config *c) {
    double H = c->hidden, I = c->intermediate;
    return mxfp4_bytes(2 * I, H) + mxfp4_bytes(H, I) + 2.0 * (2 * I + H);
}

static double attn_bytes(const mg_model_config *c) {
    double H = c->hidden, Q = (double)c->n_heads * c->head_dim;
    double KV = (double)c->n_kv_heads * c->head_dim;
    return 2.0 * ((Q + 2 * KV) * H + (Q + 2 * KV) + H * Q + H + c->n_heads + 2 * H);
}

size_t cuda_plan_weight_bytes(const mg_model_config *c) {
    double H = c->hidden, E = c->n_experts, V = c->vocab;
    double layer = attn_bytes(c) + 2.0 * (E * H + E) + E * expert_bytes(c);
    return (size_t)(c->n_layers * layer + 2.0 * (2 * V * H + H));
}

size_t cuda_plan_block_bytes(const mg_model_config *c, int block_size) {
    return (size_t)2 * c->n_layers * block_size * c->n_kv_heads * c->head_dim * 2;
}

mg_status cuda_plan_kv_blocks(size_t free_bytes, double fraction, size_t block_bytes, int *out) {
    *out = 0;
    if (!(fraction > 0.0 && fraction <= 1.0))
        return MG_ERRF(MG_EINVAL, "free_gpu_memory_fraction %g: outside (0, 1]", fraction);
    if (block_bytes == 0) return MG_ERRF(MG_EINVAL, "KV block of 0 bytes");
    double n = floor((double)free_bytes * fraction / (double)block_bytes);
    if (n < 1)
        return MG_ERRF(MG_ENOMEM, "KV cache: %.0f MiB free × %g holds no %zu-byte block",
                       (double)free_bytes / 1048576.0, fraction, block_bytes);
    *out = n > 1e9 ? 1000000000 : (int)n;
    return MG_OK;
}

cuda_step_limit cuda_plan_decode_limit(const mg_model_config *c, int B, int ctx, double bytes_per_s,
                                       double flops_per_s) {
    cuda_step_limit r = {0};
    double H = c->hidden, I = c->intermediate, E = c->n_experts, V = c->vocab;
    double Q = (double)c->n_heads * c->head_dim, KV = (double)c->n_kv_heads * c->head_dim;
    /* Each token picks top_k distinct experts; an expert is missed by one token with probability
     * 1 - k/E, by all B tokens with that to the B-th power. */
    r.experts_touched = E * (1.0 - pow(1.0 - (double)c->top_k / E, B));
    double kv_rows = 0; /* positions read per sequence, summed over layers */
    for (int l = 0; l < c->n_layers; l++)
        kv_rows += c->sliding[l] && ctx > c->sliding_window ? c->sliding_window : ctx;
    double layer_w = attn_bytes(c) + 2.0 * (E * H + E) + r.experts_touched * expert_bytes(c);
    r.bytes = c->n_layers * layer_w + 2.0 * V * H + (double)B * kv_rows * 2 * KV * 2;
    double active = (Q + 2 * KV) * H + H * Q + E * H + c->top_k * (2 * I * H + H * I);
    r.flops = 2.0 * B * (c->n_layers * active + V * H) + (double)B * kv_rows * 4.0 * Q;
    r.ms_bytes = r.bytes / bytes_per_s * 1e3;
    r.ms_flops = r.flops / flops_per_s * 1e3;
    r.ms = r.ms_bytes > r.ms_flops ? r.ms_bytes : r.ms_flops;
    return r;
}
