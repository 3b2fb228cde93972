/* cpu_backend.c - the float32 forward pass over a batch with paged KV (see cpu_backend.h).
 *
 * One step: embed every token, then per layer attention (RMSNorm, q/k/v, RoPE-YaRN, KV write,
 * attention with sinks over the paged KV, sliding window on sliding layers, o_proj, residual)
 * and MoE (RMSNorm, router, top-k then softmax, MXFP4 experts with the clamped SwiGLU, weighted
 * sum, residual), then the final RMSNorm and lm_head for the rows that want logits.
 * Tokens routed to an expert are gathered so that each expert row is decoded once per step. */
#include "cpu_backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_ops.h"
#include "kv.h"
#include "log.h"
#include "pool.h"

enum { EXPERT_ROWS = 32 }; /* expert rows per task */

typedef struct cpu {
    mg_backend base;
    const mg_model *m;
    mg_model *owned;
    mg_model_config c;
    int H, Q, KV, D, E, TK, I, V; /* hidden, q width, kv width, head_dim, experts, top-k, ... */
    int max_tokens;
    pool *pool;
    int nth;
    float *kc, *vc; /* every layer's K (and V) slots, layer after layer */
    /* layer l's K and V: (num_blocks * block_size, KV), or (window_blocks * block_size, KV) for a
     * sliding layer when the backend has a window pool */
    float *kl[MG_MAX_LAYERS], *vl[MG_MAX_LAYERS];
    float inv_freq[512];
    float concentration;
    /* scratch, max_tokens rows; slots are (token, k) pairs: slot = t * TK + k */
    float *x, *xn, *q, *k, *v, *att, *tmp; /* (T,H) (T,H) (T,Q) (T,KV) (T,KV) (T,Q) (T,H) */
    float *rlog;                           /* (T,E) router logits */
    int32_t *kv_slot;                      /* (T) KV slot each token writes */
    int32_t *kv_wslot;                     /* (T) the same in the window pool (sliding layers) */
    int32_t *top_e;                        /* (T*TK) expert of each slot */
    float *top_w;                          /* (T*TK) routing weight of each slot */
    int32_t *e_count, *e_start, *e_slots;  /* (E) (E+1) (T*TK): slots grouped by expert */
    int32_t *tasks;                        /* (E * row chunks, 2) expert tasks */
    float *h, *act, *y;                    /* (T*TK, 2I) (T*TK, I) (T*TK, H) */
    float *lx;                             /* (T,H) final-normed rows for lm_head */
    int rowmax;
    float *thr_row;    /* (nth, OPS_ROW_TILE * rowmax) weight rows per thread */
    float *thr_scores; /* (nth, max_ctx) attention scores per thread */
} cpu;

/* ---- parallel matmul ---- */

typedef struct mm_ctx {
    cpu *b;
    float *out;
    const float *x;
    const uint16_t *w, *bias;
    int T, N, K, chunk;
} mm_ctx;

static void mm_task(void *p, int task, int thread) {
    mm_ctx *c = p;
    int r0 = task * c->chunk, r1 = r0 + c->chunk < c->N ? r0 + c->chunk : c->N;
    ops_matmul_bf16(c->out, c->x, c->w, c->bias, c->T, c->N, c->K, r0, r1,
                    c->b->thr_row + (size_t)thread * OPS_ROW_TILE * c->b->rowmax);
}

/* out (T,N) = x (T,K) · W^T + bias, rows split over the pool when the work is worth it. */
static void matmul(cpu *b, float *out, const float *x, const uint16_t *w, const uint16_t *bias,
                   int T, int N, int K) {
    mm_ctx c = {b, out, x, w, bias, T, N, K, N};
    int tasks = 1;
    if ((double)T * N * K > 65536 && b->nth > 1) {
        tasks = b->nth * 8 < N ? b->nth * 8 : N;
        c.chunk = (N + tasks - 1) / tasks;
        tasks = (N + c.chunk - 1) / c.chunk;
    }
    pool_run(b->pool, mm_task, &c, tasks);
}

/* ---- attention ---- */

typedef struct att_ctx {
    cpu *b;
    const mg_batch *batch;
    int layer;
} att_ctx;

static int32_t slot_of(const cpu *b, const int32_t *table, const mg_batch *bt, int s, int pos) {
    int bs = b->base.block_size;
    return table[(size_t)s * bt->max_blocks + pos / bs] * bs + pos % bs;
}

/* The block table layer l reads: the window pool's for a sliding layer when there is one. */
static const int32_t *table_of(const cpu *b, const mg_batch *bt, int l) {
    return b->c.sliding[l] && bt->window_table ? bt->window_table : bt->block_table;
}

/* One (token, head): softmax over the scores plus the head's sink logit, which adds to the
 * denominator only; keys in the window [pos - W + 1, pos] on sliding layers, [0, pos] else. */
static void att_task(void *p, int task, int thread) {
    att_ctx *a = p;
    cpu *b = a->b;
    const mg_batch *bt = a->batch;
    const mg_layer *L = &b->m->layers[a->layer];
    int D = b->D, nh = b->c.n_heads, t = task / nh, h = task % nh;
    int g = h / (nh / b->c.n_kv_heads);
    int s = bt->token_seq[t], pos = bt->positions[t];
    int lo = b->c.sliding[a->layer] ? pos - b->c.sliding_window + 1 : 0;
    if (lo < 0) lo = 0;
    const float *q = b->q + (size_t)t * b->Q + (size_t)h * D;
    const float *kc = b->kl[a->layer], *vc = b->vl[a->layer];
    const int32_t *table = table_of(b, bt, a->layer);
    float *sc = b->thr_scores + (size_t)thread * b->base.max_ctx;
    float scale = 1.0f / sqrtf((float)D), sink = bf16_to_f32(L->sinks[h]), m = sink;
    for (int j = lo; j <= pos; j++) {
        const float *kr = kc + (size_t)slot_of(b, table, bt, s, j) * b->KV + (size_t)g * D;
        float z = ops_dot(q, kr, D) * scale;
        sc[j - lo] = z;
        if (z > m) m = z;
    }
    float denom = expf(sink - m);
    for (int j = lo; j <= pos; j++) denom += (sc[j - lo] = expf(sc[j - lo] - m));
    float *out = b->att + (size_t)t * b->Q + (size_t)h * D;
    memset(out, 0, sizeof(float) * D);
    for (int j = lo; j <= pos; j++) {
        const float *vr = vc + (size_t)slot_of(b, table, bt, s, j) * b->KV + (size_t)g * D;
        float pj = sc[j - lo] / denom;
        for (int d = 0; d < D; d++) out[d] += pj * vr[d];
    }
}

/* ---- experts ---- */

typedef struct ex_ctx {
    cpu *b;
    const mg_layer *L;
    bool down; /* stage 2: act → y with down_proj; else xn → h with gate_up_proj */
} ex_ctx;

static void ex_task(void *p, int task, int thread) {
    ex_ctx *c = p;
    cpu *b = c->b;
    int e = b->tasks[2 * task], r0 = b->tasks[2 * task + 1];
    int rows = c->down ? b->H : 2 * b->I, in = c->down ? b->I : b->H;
    int r1 = r0 + EXPERT_ROWS < rows ? r0 + EXPERT_ROWS : rows;
    const uint8_t *blocks = c->down ? c->L->down_blocks : c->L->gate_up_blocks;
    const uint8_t *scales = c->down ? c->L->down_scales : c->L->gate_up_scales;
    const uint16_t *bias = c->down ? c->L->down_bias : c->L->gate_up_bias;
    float *wrow = b->thr_row + (size_t)thread * OPS_ROW_TILE * b->rowmax;
    const int32_t *slots = b->e_slots + b->e_start[e];
    int n = b->e_count[e], nb = in / 32;
    for (int r = r0; r < r1; r++) {
        size_t row = (size_t)e * rows + r;
        ops_mxfp4_row(wrow, blocks + row * nb * 16, scales + row * nb, in);
        float bv = bf16_to_f32(bias[row]);
        for (int i = 0; i < n; i++) {
            int slot = slots[i];
            if (c->down)
                b->y[(size_t)slot * b->H + r] =
                    ops_dot(wrow, b->act + (size_t)slot * b->I, in) + bv;
            else
                b->h[(size_t)slot * 2 * b->I + r] =
                    ops_dot(wrow, b->xn + (size_t)(slot / b->TK) * b->H, in) + bv;
        }
    }
}

static void experts(cpu *b, const mg_layer *L, int T, bool down) {
    int rows = down ? b->H : 2 * b->I, n = 0;
    for (int e = 0; e < b->E; e++) {
        if (!b->e_count[e]) continue;
        for (int r = 0; r < rows; r += EXPERT_ROWS)
            b->tasks[2 * n] = e, b->tasks[2 * n + 1] = r, n++;
    }
    ex_ctx c = {b, L, down};
    pool_run(b->pool, ex_task, &c, n);
}

/* Router: top-k experts by logit (ties to the lower index), softmax over those k logits. */
static void route(cpu *b, int T) {
    int TK = b->TK;
    for (int t = 0; t < T; t++) {
        const float *lg = b->rlog + (size_t)t * b->E;
        int32_t *te = b->top_e + (size_t)t * TK;
        float *tw = b->top_w + (size_t)t * TK;
        for (int k = 0; k < TK; k++) {
            int best = -1;
            for (int e = 0; e < b->E; e++) {
                bool taken = false;
                for (int j = 0; j < k; j++) taken |= te[j] == e;
                if (!taken && (best < 0 || lg[e] > lg[best])) best = e;
            }
            te[k] = best;
            tw[k] = lg[best];
        }
        float mx = tw[0], sum = 0; /* tw[0] is the largest */
        for (int k = 0; k < TK; k++) sum += (tw[k] = expf(tw[k] - mx));
        for (int k = 0; k < TK; k++) tw[k] /= sum;
    }
    /* Group slots by expert (counting sort keeps slot order within an expert). */
    memset(b->e_count, 0, sizeof(int32_t) * b->E);
    for (int i = 0; i < T * TK; i++) b->e_count[b->top_e[i]]++;
    b->e_start[0] = 0;
    for (int e = 0; e < b->E; e++) b->e_start[e + 1] = b->e_start[e] + b->e_count[e];
    for (int e = 0; e < b->E; e++) b->e_count[e] = 0;
    for (int i = 0; i < T * TK; i++) {
        int e = b->top_e[i];
        b->e_slots[b->e_start[e] + b->e_count[e]++] = i;
    }
}

/* ---- the step ---- */

static mg_status cpu_forward(mg_backend *base, const mg_batch *bt, float *logits) {
    cpu *b = (cpu *)base;
    if (bt->n_tokens == 0) return MG_OK; /* a rank with nothing to do still steps */
    mg_status st = mg_batch_check(bt, &b->base, b->max_tokens, "cpu forward");
    if (st) return st;
    const mg_model *m = b->m;
    const mg_model_config *c = &b->c;
    int T = bt->n_tokens, H = b->H, KV = b->KV, TK = b->TK;
    for (int t = 0; t < T; t++) {
        ops_bf16_row(b->x + (size_t)t * H, m->embed + (size_t)bt->tokens[t] * H, H);
        b->kv_slot[t] = slot_of(b, bt->block_table, bt, bt->token_seq[t], bt->positions[t]);
        b->kv_wslot[t] = bt->window_table
                             ? slot_of(b, bt->window_table, bt, bt->token_seq[t], bt->positions[t])
                             : b->kv_slot[t];
    }
    for (int l = 0; l < c->n_layers; l++) {
        const mg_layer *L = &m->layers[l];
        /* attention block */
        for (int t = 0; t < T; t++)
            ops_rmsnorm(b->xn + (size_t)t * H, b->x + (size_t)t * H, L->attn_norm, H, c->rms_eps);
        matmul(b, b->q, b->xn, L->q_w, L->q_b, T, b->Q, H);
        matmul(b, b->k, b->xn, L->k_w, L->k_b, T, KV, H);
        matmul(b, b->v, b->xn, L->v_w, L->v_b, T, KV, H);
        float *kc = b->kl[l], *vc = b->vl[l];
        const int32_t *slot = c->sliding[l] ? b->kv_wslot : b->kv_slot;
        for (int t = 0; t < T; t++) {
            ops_rope(b->q + (size_t)t * b->Q, c->n_heads, b->D, bt->positions[t], b->inv_freq,
                     b->concentration);
            ops_rope(b->k + (size_t)t * KV, c->n_kv_heads, b->D, bt->positions[t], b->inv_freq,
                     b->concentration);
            memcpy(kc + (size_t)slot[t] * KV, b->k + (size_t)t * KV, sizeof(float) * KV);
            memcpy(vc + (size_t)slot[t] * KV, b->v + (size_t)t * KV, sizeof(float) * KV);
        }
        att_ctx ac = {b, bt, l};
        pool_run(b->pool, att_task, &ac, T * c->n_heads);
        matmul(b, b->tmp, b->att, L->o_w, L->o_b, T, H, b->Q);
        for (size_t i = 0; i < (size_t)T * H; i++) b->x[i] += b->tmp[i];

        /* MoE block */
        for (int t = 0; t < T; t++)
            ops_rmsnorm(b->xn + (size_t)t * H, b->x + (size_t)t * H, L->mlp_norm, H, c->rms_eps);
        matmul(b, b->rlog, b->xn, L->router_w, L->router_b, T, b->E, H);
        route(b, T);
        experts(b, L, T, false);
        for (int i = 0; i < T * TK; i++)
            ops_swiglu(b->act + (size_t)i * b->I, b->h + (size_t)i * 2 * b->I, b->I,
                       c->swiglu_limit);
        experts(b, L, T, true);
        for (int t = 0; t < T; t++) {
            float *x = b->x + (size_t)t * H;
            for (int k = 0; k < TK; k++) {
                const float *y = b->y + (size_t)(t * TK + k) * H;
                float w = b->top_w[t * TK + k];
                for (int i = 0; i < H; i++) x[i] += w * y[i];
            }
        }
    }
    for (int i = 0; i < bt->n_logits; i++)
        ops_rmsnorm(b->lx + (size_t)i * H, b->x + (size_t)bt->logits_rows[i] * H, m->final_norm, H,
                    c->rms_eps);
    matmul(b, logits, b->lx, m->lm_head, NULL, bt->n_logits, b->V, H);
    return MG_OK;
}

/* Copies block src to dst in every layer that lives in the full pool (all of them without a
 * window pool; window blocks have ids of their own, which this interface does not carry). */
static mg_status cpu_copy_block(mg_backend *base, int32_t dst, int32_t src) {
    cpu *b = (cpu *)base;
    if (dst < 0 || src < 0 || dst >= base->num_blocks || src >= base->num_blocks)
        return MG_ERRF(MG_EINVAL, "cpu copy_block: %d → %d outside [0, %d)", src, dst,
                       base->num_blocks);
    if (dst == src) return MG_OK;
    size_t n = (size_t)base->block_size * b->KV;
    for (int l = 0; l < b->c.n_layers; l++) {
        if (b->c.sliding[l] && base->window_blocks > 0) continue;
        memcpy(b->kl[l] + dst * n, b->kl[l] + src * n, n * sizeof(float));
        memcpy(b->vl[l] + dst * n, b->vl[l] + src * n, n * sizeof(float));
    }
    return MG_OK;
}

static void cpu_destroy(mg_backend *base) {
    cpu *b = (cpu *)base;
    if (!b) return;
    pool_destroy(b->pool);
    void *bufs[] = {b->kc,    b->vc,    b->x,       b->xn,      b->q,       b->k,
                    b->v,     b->att,   b->tmp,     b->rlog,    b->kv_slot, b->kv_wslot,
                    b->top_e, b->top_w, b->e_count, b->e_start, b->e_slots, b->tasks,
                    b->h,     b->act,   b->y,       b->lx,      b->thr_row, b->thr_scores};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) free(bufs[i]);
    model_destroy(b->owned);
    free(b);
}

static const mg_backend_ops cpu_ops = {
    .name = "cpu",
    .forward = cpu_forward,
    .copy_block = cpu_copy_block,
    .destroy = cpu_destroy,
};

size_t cpu_backend_block_bytes(const mg_model_config *c, int block_size) {
    return (size_t)2 * c->n_layers * block_size * c->n_kv_heads * c->head_dim * sizeof(float);
}

mg_status cpu_backend_create(const mg_model *m, const cpu_backend_opts *o, mg_backend **out) {
    *out = NULL;
    const mg_model_config *c = &m->cfg;
    if (o->num_blocks < 1 || o->block_size < 1 || o->max_tokens < 1)
        return MG_ERRF(MG_EINVAL,
                       "cpu backend: num_blocks %d, block_size %d, max_tokens %d must "
                       "be positive",
                       o->num_blocks, o->block_size, o->max_tokens);
    if (o->window_pool && o->max_seqs < 1)
        return MG_ERRF(MG_EINVAL, "cpu backend: window_pool needs max_seqs >= 1 (it is %d)",
                       o->max_seqs);
    if (c->head_dim / 2 > (int)(sizeof(((cpu *)0)->inv_freq) / sizeof(float)))
        return MG_ERRF(MG_EUNSUPPORTED, "cpu backend: head_dim %d too large", c->head_dim);
    cpu *b = calloc(1, sizeof(*b));
    if (!b) return MG_ERRF(MG_ENOMEM, "out of memory");
    b->base.ops = &cpu_ops;
    b->base.vocab = c->vocab;
    b->base.num_blocks = o->num_blocks;
    b->base.block_size = o->block_size;
    /* The window pool: the sliding layers' share of the budget, sized for max_seqs windows. */
    int n_sliding = 0;
    for (int l = 0; l < c->n_layers; l++) n_sliding += c->sliding[l];
    size_t layer_block = cpu_backend_block_bytes(c, o->block_size) / c->n_layers;
    int nfull, nwin;
    if (o->window_pool && n_sliding > 0 && n_sliding < c->n_layers &&
        kv_window_split((uint64_t)o->num_blocks * c->n_layers * layer_block,
                        (uint64_t)(c->n_layers - n_sliding) * layer_block,
                        (uint64_t)n_sliding * layer_block, c->sliding_window, o->block_size,
                        o->max_seqs, o->max_tokens, &nfull, &nwin)) {
        b->base.num_blocks = nfull;
        b->base.window_blocks = nwin;
        b->base.window = c->sliding_window;
    }
    long cap = (long)b->base.num_blocks * o->block_size;
    b->base.max_ctx =
        o->max_ctx > 0 && o->max_ctx < cap ? o->max_ctx : (int)(cap < (1 << 30) ? cap : (1 << 30));
    b->m = m;
    b->c = *c;
    b->H = c->hidden, b->Q = c->n_heads * c->head_dim, b->KV = c->n_kv_heads * c->head_dim;
    b->D = c->head_dim, b->E = c->n_experts, b->TK = c->top_k, b->I = c->intermediate;
    b->V = c->vocab;
    b->max_tokens = o->max_tokens;
    int nth = o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (nth < 1) nth = 1;
    if (nth > 64) nth = 64;
    mg_status st = pool_create(nth, &b->pool);
    if (st) {
        free(b);
        return st;
    }
    b->nth = nth;
    b->concentration =
        ops_yarn_inv_freq(b->inv_freq, b->D, c->rope_theta, c->rope_factor, c->beta_fast,
                          c->beta_slow, c->rope_orig_ctx, c->rope_truncate);
    size_t T = (size_t)o->max_tokens, S = T * b->TK;
    b->rowmax = b->H > b->Q ? b->H : b->Q;
    if (b->I > b->rowmax) b->rowmax = b->I;
    size_t kv_elems = 0;
    for (int l = 0; l < c->n_layers; l++) {
        bool win = c->sliding[l] && b->base.window_blocks > 0;
        kv_elems +=
            (size_t)(win ? b->base.window_blocks : b->base.num_blocks) * o->block_size * b->KV;
    }
    size_t kv_bytes = kv_elems * sizeof(float);
    int chunks = (2 * b->I > b->H ? 2 * b->I : b->H) / EXPERT_ROWS + 1;
    bool ok =
        (b->kc = malloc(kv_bytes)) && (b->vc = malloc(kv_bytes)) &&
        (b->x = malloc(sizeof(float) * T * b->H)) && (b->xn = malloc(sizeof(float) * T * b->H)) &&
        (b->q = malloc(sizeof(float) * T * b->Q)) && (b->k = malloc(sizeof(float) * T * b->KV)) &&
        (b->v = malloc(sizeof(float) * T * b->KV)) && (b->att = malloc(sizeof(float) * T * b->Q)) &&
        (b->tmp = malloc(sizeof(float) * T * b->H)) &&
        (b->rlog = malloc(sizeof(float) * T * b->E)) &&
        (b->kv_slot = malloc(sizeof(int32_t) * T)) && (b->kv_wslot = malloc(sizeof(int32_t) * T)) &&
        (b->top_e = malloc(sizeof(int32_t) * S)) && (b->top_w = malloc(sizeof(float) * S)) &&
        (b->e_count = malloc(sizeof(int32_t) * b->E)) &&
        (b->e_start = malloc(sizeof(int32_t) * (b->E + 1))) &&
        (b->e_slots = malloc(sizeof(int32_t) * S)) &&
        (b->tasks = malloc(sizeof(int32_t) * 2 * (size_t)b->E * chunks)) &&
        (b->h = malloc(sizeof(float) * S * 2 * b->I)) &&
        (b->act = malloc(sizeof(float) * S * b->I)) && (b->y = malloc(sizeof(float) * S * b->H)) &&
        (b->lx = malloc(sizeof(float) * T * b->H)) &&
        (b->thr_row = malloc(sizeof(float) * (size_t)nth * OPS_ROW_TILE * b->rowmax)) &&
        (b->thr_scores = malloc(sizeof(float) * (size_t)nth * b->base.max_ctx));
    if (!ok) {
        cpu_destroy(&b->base);
        return MG_ERRF(MG_ENOMEM, "cpu backend: out of memory (KV %zu MiB per K and V)",
                       kv_bytes >> 20);
    }
    /* Zeroed KV: a block read before it is written gives zeros, never stale garbage. */
    memset(b->kc, 0, kv_bytes);
    memset(b->vc, 0, kv_bytes);
    size_t off = 0;
    for (int l = 0; l < c->n_layers; l++) {
        b->kl[l] = b->kc + off;
        b->vl[l] = b->vc + off;
        bool win = c->sliding[l] && b->base.window_blocks > 0;
        off += (size_t)(win ? b->base.window_blocks : b->base.num_blocks) * o->block_size * b->KV;
    }
    *out = &b->base;
    return MG_OK;
}

mg_status cpu_backend_open(const char *dir, const cpu_backend_opts *o, mg_backend **out) {
    mg_model *m;
    mg_status st = model_load(dir, &m);
    if (st) return st;
    st = cpu_backend_create(m, o, out);
    if (st) {
        model_destroy(m);
        return st;
    }
    ((cpu *)*out)->owned = m;
    return MG_OK;
}
