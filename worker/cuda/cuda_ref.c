/* cuda_ref.c - the kernel lab's whole-model reference: a single-threaded forward pass, with or
 * without the CUDA backend's bf16 roundings (cuda_ref.h). Host code only: it runs, and can be
 * studied, on a machine without a GPU. */
#include "cuda_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"

static uint16_t f2bf(float f) { /* round to nearest even, NaN kept */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return 0x7fc0;
    u += 0x7FFF + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static float rbf(float f) {
    return bf16_to_f32(f2bf(f));
}

cuda_ref *cuda_ref_create(const mg_model *m, bool bf16, int num_blocks, int bs, int max_tokens,
                          int max_ctx) {
    return cuda_ref_create_window(m, bf16, num_blocks, 0, bs, max_tokens, max_ctx);
}

cuda_ref *cuda_ref_create_window(const mg_model *m, bool bf16, int num_blocks, int window_blocks,
                                 int bs, int max_tokens, int max_ctx) {
    const mg_model_config *c = &m->cfg;
    cuda_ref *r = calloc(1, sizeof(*r));
    if (!r) return NULL;
    r->m = m, r->bf16 = bf16;
    r->H = c->hidden, r->Q = c->n_heads * c->head_dim, r->KV = c->n_kv_heads * c->head_dim;
    r->D = c->head_dim, r->E = c->n_experts, r->TK = c->top_k, r->I = c->intermediate;
    r->V = c->vocab, r->L = c->n_layers, r->bs = bs, r->max_tokens = max_tokens;
    r->max_ctx = max_ctx;
    r->conc = ops_yarn_inv_freq(r->inv_freq, r->D, c->rope_theta, c->rope_factor, c->beta_fast,
                                c->beta_slow, c->rope_orig_ctx, c->rope_truncate);
    size_t T = max_tokens, S = T * r->TK, H = r->H, Q = r->Q, KV = r->KV, I = r->I;
    r->num_blocks = num_blocks, r->window_blocks = window_blocks;
    size_t kv_elems = 0, off[MG_MAX_LAYERS];
    for (int l = 0; l < r->L; l++) {
        off[l] = kv_elems;
        bool win = c->sliding[l] && window_blocks > 0;
        kv_elems += (size_t)(win ? window_blocks : num_blocks) * bs * KV;
    }
    r->kc = calloc(kv_elems, 4), r->vc = calloc(kv_elems, 4);
    r->x = malloc(4 * T * H), r->xn = malloc(4 * T * H), r->q = malloc(4 * T * Q);
    r->k = malloc(4 * T * KV), r->v = malloc(4 * T * KV), r->att = malloc(4 * T * Q);
    r->tmp = malloc(4 * T * H), r->rlog = malloc(4 * T * r->E), r->h = malloc(4 * 2 * I);
    r->act = malloc(4 * S * I), r->y = malloc(4 * S * H), r->lx = malloc(4 * T * H);
    size_t kmax = H > Q ? H : Q;
    if (I > kmax) kmax = I;
    r->wrow = malloc(4 * OPS_ROW_TILE * kmax), r->sc = malloc(4 * (size_t)max_ctx);
    r->top_w = malloc(4 * S), r->top_e = malloc(4 * S);
    r->route = malloc(4 * (size_t)r->L * S);
    if (!r->kc || !r->vc || !r->x || !r->xn || !r->q || !r->k || !r->v || !r->att || !r->tmp ||
        !r->rlog || !r->h || !r->act || !r->y || !r->lx || !r->wrow || !r->sc || !r->top_w ||
        !r->top_e || !r->route) {
        cuda_ref_destroy(r);
        return NULL;
    }
    for (int l = 0; l < r->L; l++) r->kl[l] = r->kc + off[l], r->vl[l] = r->vc + off[l];
    return r;
}

void cuda_ref_destroy(cuda_ref *r) {
    if (!r) return;
    float *f[] = {r->kc,   r->vc, r->x,   r->xn, r->q,  r->k,    r->v,  r->att,  r->tmp,
                  r->rlog, r->h,  r->act, r->y,  r->lx, r->wrow, r->sc, r->top_w};
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) free(f[i]);
    free(r->top_e), free(r->route), free(r);
}

static void ref_round(const cuda_ref *r, float *p, size_t n) {
    if (r->bf16)
        for (size_t i = 0; i < n; i++) p[i] = rbf(p[i]);
}

static void ref_mm(cuda_ref *r, float *out, const float *x, const uint16_t *w, const uint16_t *b,
                   int T, int N, int K) {
    ops_matmul_bf16(out, x, w, b, T, N, K, 0, N, r->wrow);
}

/* One step; logits (n_logits, V). The caller checks the batch (the backends do the same).
 * force: NULL, or the experts to take, (L, n_tokens * TK) as cuda_backend_routes gives them;
 * the routing weights are still the softmax of the reference's own logits of those experts. */
void cuda_ref_forward(cuda_ref *r, const mg_batch *bt, const int32_t *force, float *logits) {
    const mg_model *m = r->m;
    const mg_model_config *c = &m->cfg;
    int T = bt->n_tokens, H = r->H, Q = r->Q, KV = r->KV, D = r->D, TK = r->TK, I = r->I;
    int nh = c->n_heads, bs = r->bs;
    r->n_forced = 0, r->worst_gap = 0.0f;
    for (int t = 0; t < T; t++)
        ops_bf16_row(r->x + (size_t)t * H, m->embed + (size_t)bt->tokens[t] * H, H);
    for (int l = 0; l < r->L; l++) {
        const mg_layer *L = &m->layers[l];
        for (int t = 0; t < T; t++)
            ops_rmsnorm(r->xn + (size_t)t * H, r->x + (size_t)t * H, L->attn_norm, H, c->rms_eps);
        ref_round(r, r->xn, (size_t)T * H);
        ref_mm(r, r->q, r->xn, L->q_w, L->q_b, T, Q, H);
        ref_mm(r, r->k, r->xn, L->k_w, L->k_b, T, KV, H);
        ref_mm(r, r->v, r->xn, L->v_w, L->v_b, T, KV, H);
        float *kc = r->kl[l], *vc = r->vl[l];
        /* a sliding layer's blocks are the window pool's when the batch has a window table */
        const int32_t *table =
            c->sliding[l] && bt->window_table ? bt->window_table : bt->block_table;
        for (int t = 0; t < T; t++) {
            int s = bt->token_seq[t], pos = bt->positions[t];
            size_t slot = (size_t)table[(size_t)s * bt->max_blocks + pos / bs] * bs + pos % bs;
            ops_rope(r->q + (size_t)t * Q, nh, D, pos, r->inv_freq, r->conc);
            ops_rope(r->k + (size_t)t * KV, c->n_kv_heads, D, pos, r->inv_freq, r->conc);
            memcpy(kc + slot * KV, r->k + (size_t)t * KV, sizeof(float) * KV);
            memcpy(vc + slot * KV, r->v + (size_t)t * KV, sizeof(float) * KV);
            ref_round(r, kc + slot * KV, KV);
            ref_round(r, vc + slot * KV, KV);
        }
        for (int t = 0; t < T; t++) /* att_task of cpu_backend.c */
            for (int h = 0; h < nh; h++) {
                int g = h / (nh / c->n_kv_heads), s = bt->token_seq[t], pos = bt->positions[t];
                int lo = c->sliding[l] ? pos - c->sliding_window + 1 : 0;
                if (lo < 0) lo = 0;
                const int32_t *brow = table + (size_t)s * bt->max_blocks;
                const float *q = r->q + (size_t)t * Q + (size_t)h * D;
                float scale = 1.0f / sqrtf((float)D), sink = bf16_to_f32(L->sinks[h]), mx = sink;
                for (int j = lo; j <= pos; j++) {
                    size_t slot = (size_t)brow[j / bs] * bs + j % bs;
                    float z = ops_dot(q, kc + slot * KV + (size_t)g * D, D) * scale;
                    r->sc[j - lo] = z;
                    if (z > mx) mx = z;
                }
                float denom = expf(sink - mx);
                for (int j = lo; j <= pos; j++) denom += (r->sc[j - lo] = expf(r->sc[j - lo] - mx));
                float *out = r->att + (size_t)t * Q + (size_t)h * D;
                memset(out, 0, sizeof(float) * D);
                for (int j = lo; j <= pos; j++) {
                    size_t slot = (size_t)brow[j / bs] * bs + j % bs;
                    const float *vr = vc + slot * KV + (size_t)g * D;
                    float pj = r->sc[j - lo] / denom;
                    for (int d = 0; d < D; d++) out[d] += pj * vr[d];
                }
            }
        ref_round(r, r->att, (size_t)T * Q);
        ref_mm(r, r->tmp, r->att, L->o_w, L->o_b, T, H, Q);
        for (size_t i = 0; i < (size_t)T * H; i++) r->x[i] += r->tmp[i];
        for (int t = 0; t < T; t++)
            ops_rmsnorm(r->xn + (size_t)t * H, r->x + (size_t)t * H, L->mlp_norm, H, c->rms_eps);
        ref_round(r, r->xn, (size_t)T * H);
        ref_mm(r, r->rlog, r->xn, L->router_w, L->router_b, T, r->E, H);
        for (int t = 0; t < T; t++) { /* route() of cpu_backend.c */
            const float *lg = r->rlog + (size_t)t * r->E;
            int32_t *te = r->top_e + (size_t)t * TK;
            float *tw = r->top_w + (size_t)t * TK;
            for (int k = 0; k < TK; k++) {
                int best = -1;
                for (int e = 0; e < r->E; e++) {
                    bool taken = false;
                    for (int j = 0; j < k; j++) taken |= te[j] == e;
                    if (!taken && (best < 0 || lg[e] > lg[best])) best = e;
                }
                te[k] = best, tw[k] = lg[best];
            }
            if (force) {
                const int32_t *fe = force + ((size_t)l * T + t) * TK;
                bool same = true;
                for (int k = 0; k < TK; k++) {
                    bool in = false;
                    for (int j = 0; j < TK; j++) in |= fe[k] == te[j];
                    same &= in;
                }
                if (!same) {
                    /* how far the forced set is from being a top-k of these logits */
                    float lo = INFINITY, hi = -INFINITY;
                    for (int e = 0; e < r->E; e++) {
                        bool in = false;
                        for (int k = 0; k < TK; k++) in |= fe[k] == e;
                        if (in && lg[e] < lo) lo = lg[e];
                        if (!in && lg[e] > hi) hi = lg[e];
                    }
                    r->n_forced++;
                    if (!(hi - lo <= r->worst_gap)) r->worst_gap = hi - lo; /* NaN sticks */
                }
                for (int k = 0; k < TK; k++) {
                    bool ok = fe[k] >= 0 && fe[k] < r->E;
                    te[k] = ok ? fe[k] : 0, tw[k] = ok ? lg[fe[k]] : NAN;
                    if (!ok) r->n_forced++, r->worst_gap = NAN;
                }
            }
            float mx = tw[0], sum = 0;
            for (int k = 1; k < TK; k++) mx = tw[k] > mx ? tw[k] : mx;
            for (int k = 0; k < TK; k++) sum += (tw[k] = expf(tw[k] - mx));
            for (int k = 0; k < TK; k++) tw[k] /= sum;
        }
        memcpy(r->route + (size_t)l * r->max_tokens * TK, r->top_e, sizeof(int32_t) * T * TK);
        int nb_u = H / 32, nb_d = I / 32;
        for (int i = 0; i < T * TK; i++) { /* ex_task of cpu_backend.c, one slot at a time */
            int e = r->top_e[i];
            for (int row = 0; row < 2 * I; row++) {
                size_t w = (size_t)e * 2 * I + row;
                ops_mxfp4_row(r->wrow, L->gate_up_blocks + w * nb_u * 16,
                              L->gate_up_scales + w * nb_u, H);
                r->h[row] = ops_dot(r->wrow, r->xn + (size_t)(i / TK) * H, H) +
                            bf16_to_f32(L->gate_up_bias[w]);
            }
            ops_swiglu(r->act + (size_t)i * I, r->h, I, c->swiglu_limit);
            ref_round(r, r->act + (size_t)i * I, I);
            for (int row = 0; row < H; row++) {
                size_t w = (size_t)e * H + row;
                ops_mxfp4_row(r->wrow, L->down_blocks + w * nb_d * 16, L->down_scales + w * nb_d,
                              I);
                r->y[(size_t)i * H + row] =
                    ops_dot(r->wrow, r->act + (size_t)i * I, I) + bf16_to_f32(L->down_bias[w]);
            }
        }
        for (int t = 0; t < T; t++) {
            float *x = r->x + (size_t)t * H;
            for (int k = 0; k < TK; k++) {
                const float *y = r->y + (size_t)(t * TK + k) * H;
                float w = r->top_w[t * TK + k];
                for (int i = 0; i < H; i++) x[i] += w * y[i];
            }
        }
    }
    for (int i = 0; i < bt->n_logits; i++)
        ops_rmsnorm(r->lx + (size_t)i * H, r->x + (size_t)bt->logits_rows[i] * H, m->final_norm, H,
                    c->rms_eps);
    ref_round(r, r->lx, (size_t)bt->n_logits * H);
    ref_mm(r, logits, r->lx, m->lm_head, NULL, bt->n_logits, r->V, H);
}

/* Routing decisions (token, layer) of the last step whose expert sets differ between a and b;
 * *on_rows: how many of them are on the rows that want logits. */
int cuda_ref_route_diff(const cuda_ref *a, const cuda_ref *b, const mg_batch *bt, int *on_rows) {
    int TK = a->TK, n = 0;
    *on_rows = 0;
    for (int l = 0; l < a->L; l++)
        for (int t = 0; t < bt->n_tokens; t++) {
            const int32_t *ea = a->route + ((size_t)l * a->max_tokens + t) * TK;
            const int32_t *eb = b->route + ((size_t)l * b->max_tokens + t) * TK;
            bool same = true;
            for (int k = 0; k < TK && same; k++) {
                bool found = false;
                for (int j = 0; j < TK; j++) found |= ea[k] == eb[j];
                same = found;
            }
            if (same) continue;
            n++;
            for (int i = 0; i < bt->n_logits; i++) *on_rows += bt->logits_rows[i] == t;
        }
    return n;
}

/* ---- as a backend ---- */

typedef struct ref_backend {
    mg_backend base;
    mg_model *m;
    cuda_ref *r;
} ref_backend;

static mg_status ref_backend_forward(mg_backend *b, const mg_batch *batch, float *logits) {
    ref_backend *rb = (ref_backend *)b;
    /* cuda_ref_forward indexes its KV, score and row arrays with the batch unchecked */
    mg_status st = mg_batch_check(batch, b, rb->r->max_tokens, "reference backend");
    if (st) return st;
    cuda_ref_forward(rb->r, batch, NULL, logits);
    return MG_OK;
}

static void ref_backend_destroy(mg_backend *b) {
    ref_backend *rb = (ref_backend *)b;
    if (!rb) return;
    cuda_ref_destroy(rb->r);
    model_destroy(rb->m);
    free(rb);
}

static const mg_backend_ops ref_backend_ops = {
    .name = "ref",
    .forward = ref_backend_forward,
    .destroy = ref_backend_destroy,
};

mg_status cuda_ref_backend_open(const char *dir, bool bf16, int num_blocks, int window_blocks,
                                int block_size, int max_tokens, int max_ctx, mg_backend **out) {
    *out = NULL;
    if (num_blocks < 1 || block_size < 1 || max_tokens < 1 || max_ctx < 1 || window_blocks < 0)
        return MG_ERRF(MG_EINVAL,
                       "reference backend: num_blocks %d, block_size %d, max_tokens %d, max_ctx "
                       "%d must be positive, window_blocks %d not negative",
                       num_blocks, block_size, max_tokens, max_ctx, window_blocks);
    ref_backend *rb = calloc(1, sizeof(*rb));
    if (!rb) return MG_ERRF(MG_ENOMEM, "out of memory");
    mg_status st = model_load(dir, &rb->m);
    if (st) {
        free(rb);
        return st;
    }
    bool sliding = false;
    for (int l = 0; l < rb->m->cfg.n_layers; l++) sliding |= rb->m->cfg.sliding[l];
    if (!sliding || rb->m->cfg.sliding_window < 1) window_blocks = 0;
    rb->r = cuda_ref_create_window(rb->m, bf16, num_blocks, window_blocks, block_size, max_tokens,
                                   max_ctx);
    if (!rb->r) {
        model_destroy(rb->m);
        free(rb);
        return MG_ERRF(MG_ENOMEM, "reference backend: out of memory");
    }
    rb->base.ops = &ref_backend_ops;
    rb->base.vocab = rb->m->cfg.vocab;
    rb->base.block_size = block_size;
    rb->base.num_blocks = num_blocks;
    rb->base.max_ctx = max_ctx;
    rb->base.window_blocks = window_blocks;
    rb->base.window = window_blocks > 0 ? rb->m->cfg.sliding_window : 0;
    *out = &rb->base;
    return MG_OK;
}
