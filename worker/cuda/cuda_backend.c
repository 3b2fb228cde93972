/* cuda_backend.c - the forward pass on the GPU (see cuda_backend.h).
 *
 * One step, all on one stream: upload the step's index arrays (one copy), embed, RMSNorm, then
 * per layer: fused q/k/v GEMM → bias + RoPE + KV write → attention with sinks over the paged KV
 * → o_proj GEMM → residual + o bias + RMSNorm (one kernel) → router GEMM → top-k + softmax +
 * grouping by expert (one kernel) → MXFP4 gate_up GEMM with bias and SwiGLU → MXFP4 down GEMM
 * with bias and routing weight → residual (fixed-order sum of the top_k rows) + the next
 * RMSNorm; finally the rows that want logits, lm_head, and the logits or the greedy tokens
 * back to the host. Mirrors cpu_forward step for step. */
#include "cuda_backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "cpu_ops.h"
#include "cuda_gemm.h"
#include "cuda_ops.h"
#include "cuda_plan.h"
#include "kv.h"
#include "log.h"
#include "sampling.h"

typedef struct dev_layer {
    uint16_t *attn_norm;            /* (H) */
    uint16_t *qkv_w, *qkv_b;        /* (Q + 2KV, H), (Q + 2KV): q, k, v rows stacked */
    uint16_t *o_w, *o_b;            /* (H, Q), (H) */
    uint16_t *sinks;                /* (n_heads) */
    uint16_t *mlp_norm;             /* (H) */
    uint16_t *router_w, *router_b;  /* (E, H), (E) */
    uint8_t *gu_blocks, *gu_scales; /* (E, 2I, H/32, 16), (E, 2I, H/32); tiled in version 3 */
    uint16_t *gu_bias;              /* (E, 2I) */
    uint8_t *dn_blocks, *dn_scales; /* (E, H, I/32, 16), (E, H, I/32); tiled in version 3 */
    uint16_t *dn_bias;              /* (E, H) */
} dev_layer;

static const char *prof_names[CUDA_PROF_OPS] = {
    "embed+norm",  "qkv_gemm",    "qkv_rope",    "attention", "o_gemm",  "residual_norm",
    "router_gemm", "router_topk", "moe_gate_up", "moe_down",  "lm_head", "sample+copy"};
enum { P_EMBED, P_QKV, P_ROPE, P_ATT, P_O, P_NORM, P_RGEMM, P_ROUTER, P_GU, P_DN, P_LM, P_SAMPLE };
enum { PROF_EVENTS = 1024 };
/* Banned ids a step carries to the device, on average per row (the stop ids of requests under
 * min_tokens: a handful); a row whose ids do not fit is sampled on the host. */
enum { BANS_PER_ROW = 32 };

typedef struct cuda {
    mg_backend base;
    mg_model_config c;
    int H, Q, KV, D, E, TK, I, V, L;
    int dev, max_tokens, max_seqs, max_blocks_cap, version;
    bool graphs;                               /* decode steps through CUDA graphs */
    cudaGraphExec_t graph[CUDA_GRAPH_BUCKETS]; /* per bucket, captured on first use */
    int scratch_block;                         /* KV block past num_blocks for padding tokens */
    int wscratch_block;                        /* the same past window_blocks, in the window pool */
    cudaStream_t stream;
    cuda_gemm *gemm;
    void *weights; /* the one allocation the tensors are carved from */
    size_t weight_bytes;
    uint16_t *embed, *final_norm, *lm_head; /* (V, H), (H), (V, H) */
    dev_layer *layers;
    uint16_t *kv;    /* K of every layer, then V of every layer */
    size_t kv_elems; /* of K (and of V), all layers */
    /* layer l's K and V: (num_blocks + 1, n_kv, block_size, D), or (window_blocks + 1, ...) for
     * a sliding layer when there is a window pool (the extra block is the scratch block) */
    uint16_t *kl[MG_MAX_LAYERS], *vl[MG_MAX_LAYERS];
    float *inv_freq; /* (D/2) */
    float *att_part; /* (CUDA_ATT_SPLIT_MAX_T, n_heads, CUDA_ATT_MAX_SPLITS, 66) split-KV state */
    /* ticket counters of the kernels whose last CTA finishes the op (zero between launches):
     * TICKET_ROUTER (one int), from TICKET_SAMPLE cuda_sample_split's (2 *
     * CUDA_SAMPLE_SPLIT_ROWS), then from TICKET_ATT the split-KV attention's
     * (CUDA_ATT_SPLIT_MAX_T, n_kv) */
    int *tickets;
    int pdl_max_tokens; /* cuda_backend_opts */
    float concentration;
    /* scratch: T = max_tokens, S = T * top_k, R = max_seqs */
    float *x, *qkv, *q, *tmp, *rlog, *top_w, *y, *logits; /* (T,H) (T,Q+2KV) (T,Q) (T,H) (T,E)
                                                              (S) (S,H) (R,V) */
    uint16_t *xn, *att, *act, *lx;                        /* (T,H) (T,Q) (S,I) (R,H) */
    int32_t *top_e, *e_start, *e_slots, *tok_out;         /* (S) (E+1) (S) (R) */
    int32_t *meta_d, *meta_h; /* the step's index arrays, device and pinned host */
    size_t meta_cap;          /* int32 entries */
    int32_t *tok_h;           /* (R) pinned */
    float *row_h;             /* (V) pinned: one logits row for host sampling */
    mg_sampler *sampler;
    bool host_sampling;      /* every sampling row through sampling_pick on the host */
    bool sample_split;       /* cuda_backend_opts */
    void *samp_scratch;      /* cuda_sample_split's, when sample_split */
    cuda_sample_row *srow_h; /* (R) pinned: each logits row's sampling parameters */
    int32_t *ban_h;          /* (R * BANS_PER_ROW) pinned: the banned ids of a step */
    cuda_sample_row *srow_d; /* (R) */
    int32_t *ban_d;          /* (R * BANS_PER_ROW) */
    int32_t *route_d;        /* (L, max_tokens * TK) each layer's top_e, or NULL: not tracing */
    bool trace;
    unsigned omit; /* cuda_backend_omit: profile ops left out of every step (a bench aid) */
    /* profiling */
    bool prof;
    cudaEvent_t ev[PROF_EVENTS];
    int ev_op[PROF_EVENTS / 2], n_ev;
    double prof_ms[CUDA_PROF_OPS];
    int prof_calls[CUDA_PROF_OPS];
} cuda;

static mg_status cuda_fail(int err, const char *what) {
    return MG_ERRF(MG_ECUDA, "cuda backend: %s: %s", what, cudaGetErrorString((cudaError_t)err));
}

#define CK(call, what)                                                                             \
    do {                                                                                           \
        int e_ = (int)(call);                                                                      \
        if (e_) return cuda_fail(e_, what);                                                        \
    } while (0)

/* ---- profiling: an event pair around each launch group ---- */

static void prof_begin(cuda *b, int op) {
    if (!b->prof || b->n_ev + 2 > PROF_EVENTS) return;
    b->ev_op[b->n_ev / 2] = op;
    cudaEventRecord(b->ev[b->n_ev++], b->stream);
}

static void prof_end(cuda *b) {
    if (!b->prof || b->n_ev % 2 == 0) return;
    cudaEventRecord(b->ev[b->n_ev++], b->stream);
}

static void prof_collect(cuda *b) {
    if (!b->prof) return;
    cudaStreamSynchronize(b->stream);
    for (int i = 0; i + 1 < b->n_ev; i += 2) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, b->ev[i], b->ev[i + 1]) == cudaSuccess) {
            b->prof_ms[b->ev_op[i / 2]] += ms;
            b->prof_calls[b->ev_op[i / 2]]++;
        }
    }
    b->n_ev = 0;
}

void cuda_backend_set_profile(mg_backend *base, bool on) {
    cuda *b = (cuda *)base;
    b->prof = on;
    b->n_ev = 0;
}

/* The decode graphs captured so far, destroyed: the next step of each bucket captures again
 * (after a setting the graphs bake in changed). */
static void drop_graphs(cuda *b) {
    for (int i = 0; i < CUDA_GRAPH_BUCKETS; i++)
        if (b->graph[i]) cudaGraphExecDestroy(b->graph[i]), b->graph[i] = NULL;
}

void cuda_backend_omit(mg_backend *base, unsigned ops) {
    cuda *b = (cuda *)base;
    if (b->omit != ops) drop_graphs(b);
    b->omit = ops;
}

int cuda_backend_profile_read(mg_backend *base, const char **names, double *ms, int *calls) {
    cuda *b = (cuda *)base;
    for (int i = 0; i < CUDA_PROF_OPS; i++) {
        names[i] = prof_names[i];
        ms[i] = b->prof_ms[i];
        calls[i] = b->prof_calls[i];
        b->prof_ms[i] = 0;
        b->prof_calls[i] = 0;
    }
    return CUDA_PROF_OPS;
}

/* ---- the step ---- */

enum { TICKET_ROUTER, TICKET_SAMPLE, TICKET_ATT = TICKET_SAMPLE + 2 * CUDA_SAMPLE_SPLIT_ROWS };

static mg_status check_batch(const cuda *b, const mg_batch *bt) {
    if (bt->n_tokens > b->max_tokens || bt->n_seqs > b->max_seqs || bt->n_logits > b->max_seqs)
        return MG_ERRF(MG_EINVAL,
                       "cuda forward: %d tokens, %d sequences, %d logits rows exceed "
                       "max_tokens %d / max_seqs %d",
                       bt->n_tokens, bt->n_seqs, bt->n_logits, b->max_tokens, b->max_seqs);
    if ((size_t)bt->n_seqs * bt->max_blocks > (size_t)b->max_seqs * b->max_blocks_cap)
        return MG_ERRF(MG_EINVAL, "cuda forward: %d sequences, %d blocks per row", bt->n_seqs,
                       bt->max_blocks);
    return mg_batch_check(bt, &b->base, b->max_tokens, "cuda forward");
}

/* The shape of one enqueued step: T tokens (padded for a graph bucket), nl logits rows, the
 * block-table row stride and the longest context (it sets the split-KV chunk). */
typedef struct step_shape {
    int T, nl, stride, max_ctx;
} step_shape;

/* Where the window pool's arrays start in the staged index arrays: after tokens, positions,
 * token_seq, slots (T each), logits_rows (nl) and the block table (n_rows * stride) come the
 * window slots (T), then the window table (n_rows * stride). */
static size_t window_meta_off(const step_shape *sh, int n_rows) {
    return 4 * (size_t)sh->T + sh->nl + (size_t)n_rows * sh->stride;
}

/* The window pool's slots and table (window_table with -1, the blocks already given back,
 * replaced by the scratch block, which the kernels never read there anyway: they stay within
 * each query's window). Padding rows and tokens use the scratch block, as in stage_meta. */
static void stage_window(cuda *b, const mg_batch *bt, const step_shape *sh, int n_rows) {
    int T = sh->T, bs = b->base.block_size, stride = sh->stride;
    int32_t *ws = b->meta_h + window_meta_off(sh, n_rows), *wt = ws + T;
    for (int t = 0; t < T; t++) {
        bool real = t < bt->n_tokens;
        int s = real ? bt->token_seq[t] : 0, pos = real ? bt->positions[t] : 0;
        ws[t] = real ? bt->window_table[(size_t)s * bt->max_blocks + pos / bs] * bs + pos % bs
                     : b->wscratch_block * bs;
    }
    for (int r = 0; r < n_rows; r++)
        for (int k = 0; k < stride; k++) {
            int32_t id = r < bt->n_seqs && k < bt->max_blocks
                             ? bt->window_table[(size_t)r * bt->max_blocks + k]
                             : -1;
            wt[(size_t)r * stride + k] = id >= 0 ? id : b->wscratch_block;
        }
}

/* Pack the step's index arrays into the pinned buffer: tokens, positions, token_seq, slots,
 * logits_rows, block_table (stride sh->stride), and with a window pool stage_window's arrays.
 * Rows past the batch (padding up to sh->T, a graph bucket) are dummy decode tokens at position
 * 0 of their own row, every block of which is the scratch block: they write and read only
 * there. */
static void stage_meta(cuda *b, const mg_batch *bt, const step_shape *sh) {
    int T = sh->T, nl = sh->nl, bs = b->base.block_size, stride = sh->stride;
    int32_t *mh = b->meta_h, *tb = mh + 4 * T + nl;
    for (int t = 0; t < T; t++) {
        bool real = t < bt->n_tokens;
        int s = real ? bt->token_seq[t] : t, pos = real ? bt->positions[t] : 0;
        mh[t] = real ? bt->tokens[t] : 0;
        mh[T + t] = pos;
        mh[2 * T + t] = s;
        mh[3 * T + t] = real
                            ? bt->block_table[(size_t)s * bt->max_blocks + pos / bs] * bs + pos % bs
                            : b->scratch_block * bs;
    }
    for (int i = 0; i < nl; i++) mh[4 * T + i] = i < bt->n_logits ? bt->logits_rows[i] : i;
    if (stride == bt->max_blocks) {
        memcpy(tb, bt->block_table, sizeof(int32_t) * (size_t)bt->n_seqs * stride);
    } else {
        for (int r = 0; r < bt->n_seqs; r++) {
            memcpy(tb + (size_t)r * stride, bt->block_table + (size_t)r * bt->max_blocks,
                   sizeof(int32_t) * bt->max_blocks);
            for (int k = bt->max_blocks; k < stride; k++)
                tb[(size_t)r * stride + k] = b->scratch_block;
        }
    }
    /* Padding exists only in graph steps, where n_seqs = n_tokens: pad token t uses row t. */
    int rows = bt->n_seqs + (T - bt->n_tokens);
    for (int r = bt->n_seqs; r < rows; r++)
        for (int k = 0; k < stride; k++) tb[(size_t)r * stride + k] = b->scratch_block;
    if (b->base.window_blocks > 0) stage_window(b, bt, sh, rows);
}

static size_t meta_len(const cuda *b, const step_shape *sh, int n_rows) {
    size_t n = window_meta_off(sh, n_rows);
    return b->base.window_blocks > 0 ? n + sh->T + (size_t)n_rows * sh->stride : n;
}

/* Whether op (a profile op index) is left out of the step: cuda_backend_omit. */
#define OMIT(op) (b->omit >> (op)&1u)

/* Everything up to the logits (sh->nl, V) in b->logits, on the stream, unsynchronized: the
 * index upload from the pinned buffer, then the kernels. Also what a graph captures. */
static mg_status enqueue_kernels(cuda *b, const step_shape *sh, int n_rows) {
    const mg_model_config *c = &b->c;
    int T = sh->T, H = b->H, bs = b->base.block_size, nl = sh->nl, max_ctx = sh->max_ctx;
    mg_status st;
    CK(cudaMemcpyAsync(b->meta_d, b->meta_h, sizeof(int32_t) * meta_len(b, sh, n_rows),
                       cudaMemcpyHostToDevice, b->stream),
       "index upload");
    const int32_t *d_tok = b->meta_d, *d_pos = b->meta_d + T, *d_seq = b->meta_d + 2 * T;
    const int32_t *d_slot = b->meta_d + 3 * T, *d_rows = b->meta_d + 4 * T;
    const int32_t *d_bt = b->meta_d + 4 * T + nl;
    /* the sliding layers' slots and table: the window pool's when there is one */
    const int32_t *d_wslot = d_slot, *d_wbt = d_bt;
    if (b->base.window_blocks > 0) {
        d_wslot = b->meta_d + window_meta_off(sh, n_rows);
        d_wbt = d_wslot + T;
    }
    cudaStream_t s = b->stream;
    bool split = b->version >= 2 && T <= CUDA_ATT_SPLIT_MAX_T;
    bool router_gemv =
        b->version >= 6 && cuda_gemm_gemv(b->gemm) && T <= CUDA_GEMV_MAX_T && b->E <= 256;
    /* version 7 (small.cuh): the norms folded into the kernels after them, the residual adds
     * into the kernels before them; down_res takes a warp per slot, up to 16 */
    bool v7 = router_gemv && b->version >= 7 && T * b->TK <= 16 && H % 16 == 0 && H <= 3072 &&
              b->I % 32 == 0;
    /* version 7 at one token in the split form needs no grouping of the router's choices */
    bool group = !(v7 && cuda_small_topk_only(T, b->TK, H, b->I));

    prof_begin(b, P_EMBED);
    CK(cuda_embed(b->x, b->embed, d_tok, T, H, s), "embed");
    if (!v7) /* version 7's q/k/v kernel norms x itself */
        CK(cuda_rmsnorm(b->xn, b->x, NULL, 0, NULL, b->layers[0].attn_norm, T, H, c->rms_eps, s),
           "rmsnorm");
    prof_end(b);
    for (int l = 0; l < b->L; l++) {
        const dev_layer *L = &b->layers[l];
        uint16_t *kc = b->kl[l], *vc = b->vl[l];
        const int32_t *l_slot = c->sliding[l] ? d_wslot : d_slot;
        const int32_t *l_bt = c->sliding[l] ? d_wbt : d_bt;
        prof_begin(b, P_QKV);
        if (OMIT(P_QKV)) {
        } else if (v7) { /* the attention norm, q/k/v, bias, RoPE and the KV write */
            CK(cuda_qkv7(b->q, kc, vc, b->x, L->attn_norm, L->qkv_w, L->qkv_b, d_pos, l_slot,
                         b->inv_freq, b->concentration, T, H, c->n_heads, c->n_kv_heads, b->D, bs,
                         c->rms_eps, s),
               "qkv7");
        } else {
            st = cuda_matmul_bf16(b->gemm, b->qkv, b->xn, L->qkv_w, T, b->Q + 2 * b->KV, H, s);
            if (st) return st;
        }
        prof_end(b);
        if (!v7) {
            prof_begin(b, P_ROPE);
            CK(OMIT(P_ROPE)
                   ? 0
                   : cuda_qkv_rope(b->q, kc, vc, b->qkv, L->qkv_b, d_pos, l_slot, b->inv_freq,
                                   b->concentration, T, c->n_heads, c->n_kv_heads, b->D, bs, s),
               "qkv_rope");
            prof_end(b);
        }
        prof_begin(b, P_ATT);
        int window = c->sliding[l] ? c->sliding_window : 0;
        if (OMIT(P_ATT)) {
        } else if (split) {
            /* about 64 keys per CTA: enough CTAs to fill the GPU at batch 1 */
            int span = window > 0 && window < max_ctx ? window : max_ctx;
            int splits = (span + 63) / 64;
            if (splits > CUDA_ATT_MAX_SPLITS) splits = CUDA_ATT_MAX_SPLITS;
            CK(cuda_attention_split(
                   b->att, b->att_part, b->version >= 6 ? b->tickets + TICKET_ATT : NULL, b->q, kc,
                   vc, L->sinks, l_bt, sh->stride, d_seq, d_pos, T, c->n_heads, c->n_kv_heads, b->D,
                   bs, window, max_ctx, splits, b->version >= 6, s),
               "attention (split)");
        } else {
            CK((b->version >= 5 ? cuda_attention_mma : cuda_attention)(
                   b->att, b->q, kc, vc, L->sinks, l_bt, sh->stride, d_seq, d_pos, T, c->n_heads,
                   c->n_kv_heads, b->D, bs, window, s),
               "attention");
        }
        prof_end(b);
        prof_begin(b, P_O);
        if (OMIT(P_O)) {
        } else if (v7) { /* o_proj + bias added into x; the MLP norm is the router kernel's */
            CK(cuda_gemv_res(b->x, b->att, L->o_w, L->o_b, T, H, b->Q, s), "o_proj residual");
        } else {
            st = cuda_matmul_bf16(b->gemm, b->tmp, b->att, L->o_w, T, H, b->Q, s);
            if (st) return st;
        }
        prof_end(b);
        if (!v7) {
            prof_begin(b, P_NORM);
            CK(OMIT(P_NORM)
                   ? 0
                   : cuda_rmsnorm(b->xn, b->x, b->tmp, 1, L->o_b, L->mlp_norm, T, H, c->rms_eps, s),
               "residual rmsnorm");
            prof_end(b);
        }
        if (OMIT(P_ROUTER)) {
            prof_begin(b, P_ROUTER);
        } else if (v7) { /* the MLP norm (xn for the experts), router GEMV, top-k */
            prof_begin(b, P_ROUTER);
            CK(cuda_router7(b->rlog, b->tickets + TICKET_ROUTER, b->xn, b->x, L->mlp_norm,
                            L->router_w, L->router_b, b->top_e, b->top_w, group ? b->e_start : NULL,
                            b->e_slots, T, b->E, H, c->rms_eps, b->TK, s),
               "router");
        } else if (router_gemv) { /* version 6, a few tokens: top-k in the GEMV's last CTA */
            prof_begin(b, P_ROUTER);
            CK(cuda_router_gemv(b->rlog, b->tickets + TICKET_ROUTER, b->xn, L->router_w,
                                L->router_b, b->top_e, b->top_w, b->e_start, b->e_slots, T, b->E, H,
                                b->TK, s),
               "router");
        } else {
            prof_begin(b, P_RGEMM);
            st = cuda_matmul_bf16(b->gemm, b->rlog, b->xn, L->router_w, T, b->E, H, s);
            if (st) return st;
            prof_end(b);
            prof_begin(b, P_ROUTER);
            CK(cuda_router(b->top_e, b->top_w, b->e_start, b->e_slots, b->rlog, L->router_b, T,
                           b->E, b->TK, s),
               "router");
        }
        if (b->trace)
            CK(cudaMemcpyAsync(b->route_d + (size_t)l * b->max_tokens * b->TK, b->top_e,
                               sizeof(int32_t) * T * b->TK, cudaMemcpyDeviceToDevice, s),
               "route trace");
        prof_end(b);
        prof_begin(b, P_GU);
        if (OMIT(P_GU)) {
        } else if (v7) {
            CK(cuda_moe_gate_up_small(b->act, b->xn, L->gu_blocks, L->gu_scales, L->gu_bias,
                                      b->top_e, b->e_start, b->e_slots, T, b->TK, b->E, b->I, H,
                                      c->swiglu_limit, s),
               "moe gate_up");
        } else {
            CK(cuda_moe_gate_up(b->act, b->xn, L->gu_blocks, L->gu_scales, L->gu_bias, b->e_start,
                                b->e_slots, T, b->TK, b->E, b->I, H, c->swiglu_limit, b->version,
                                s),
               "moe gate_up");
        }
        prof_end(b);
        prof_begin(b, P_DN);
        if (OMIT(P_DN)) {
        } else if (v7) { /* the slots' rows weighted and added into x in slot order */
            CK(cuda_moe_down_res(b->x, b->act, L->dn_blocks, L->dn_scales, L->dn_bias, b->top_e,
                                 b->top_w, T, b->TK, H, b->I, s),
               "moe down residual");
        } else {
            CK(cuda_moe_down(b->y, b->act, L->dn_blocks, L->dn_scales, L->dn_bias, b->e_start,
                             b->e_slots, b->top_w, T, b->TK, b->E, H, b->I, b->version, s),
               "moe down");
        }
        prof_end(b);
        prof_begin(b, P_NORM);
        const uint16_t *next = l + 1 < b->L ? b->layers[l + 1].attn_norm : b->final_norm;
        if (!v7) /* the residual add and the next norm (or the final one) */
            CK(OMIT(P_NORM)
                   ? 0
                   : cuda_rmsnorm(b->xn, b->x, b->y, b->TK, NULL, next, T, H, c->rms_eps, s),
               "residual rmsnorm");
        else if (l + 1 == b->L) /* the residual is complete: the final norm for lm_head */
            CK(cuda_rmsnorm(b->xn, b->x, NULL, 0, NULL, b->final_norm, T, H, c->rms_eps, s),
               "final rmsnorm");
        prof_end(b);
    }
    prof_begin(b, P_LM);
    CK(cuda_gather_rows(b->lx, b->xn, d_rows, nl, H, s), "gather");
    st = cuda_matmul_bf16(b->gemm, b->logits, b->lx, b->lm_head, nl, b->V, H, s);
    if (st) return st;
    prof_end(b);
    return MG_OK;
}

/* enqueue_kernels with programmatic dependent launch for steps of up to pdl_max_tokens tokens
 * (a graph step's T is its bucket's): at batch 1 the kernels are short and latency-bound, and
 * letting each start while the one before it finishes pays; at 64 tokens and more it costs
 * (NOTES.md). The choice ends with the step. */
static mg_status enqueue_step(cuda *b, const step_shape *sh, int n_rows) {
    cuda_pdl_step(sh->T <= b->pdl_max_tokens);
    mg_status st = enqueue_kernels(b, sh, n_rows);
    cuda_pdl_step(0);
    return st;
}

/* Decode steps with up to this many tokens are padded to the next bucket and replayed from a
 * CUDA graph captured on the bucket's first step (one graph launch instead of ~400 kernel
 * launches). */
static const int graph_buckets[CUDA_GRAPH_BUCKETS] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};

/* The first step of bucket gi, whose index arrays are staged for shape sh: run it as it is
 * (creating the cuBLASLt plans and kernel attributes outside the capture), then capture the same
 * work as the bucket's graph for the next steps. */
static mg_status capture_bucket(cuda *b, int gi, const step_shape *sh) {
    mg_status st = enqueue_step(b, sh, sh->T);
    if (st) return st;
    CK(cudaStreamSynchronize(b->stream), "forward"); /* capture from an idle stream */
    cudaGraph_t g = NULL;
    CK(cudaStreamBeginCapture(b->stream, cudaStreamCaptureModeThreadLocal), "graph capture");
    st = enqueue_step(b, sh, sh->T);
    cudaError_t e = cudaStreamEndCapture(b->stream, &g);
    if (st || e != cudaSuccess) {
        if (g) cudaGraphDestroy(g);
        return st ? st : cuda_fail((int)e, "graph capture");
    }
    e = cudaGraphInstantiate(&b->graph[gi], g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        b->graph[gi] = NULL;
        return cuda_fail((int)e, "graph instantiate");
    }
    MG_DEBUG("cuda backend: decode graph for %d tokens captured", sh->T);
    return MG_OK;
}

/* The largest bucket a step can fill: max_tokens and max_seqs both bound a decode step. */
static int graph_cap(const cuda *b) {
    return b->max_tokens < b->max_seqs ? b->max_tokens : b->max_seqs;
}

/* Everything up to the logits in b->logits, on the stream, unsynchronized. */
static mg_status run_step(cuda *b, const mg_batch *bt) {
    mg_status st = check_batch(b, bt);
    if (st) return st;
    int T = bt->n_tokens, max_ctx = 1;
    for (int i = 0; i < bt->n_seqs; i++)
        if (bt->seq_ctx[i] > max_ctx) max_ctx = bt->seq_ctx[i];
    /* A graph serves pure decode steps whose logits rows are the tokens in order. */
    bool pure = b->graphs && !b->prof && bt->n_decode == T && bt->n_seqs == T &&
                bt->n_logits == T && bt->max_blocks <= b->max_blocks_cap;
    for (int i = 0; pure && i < T; i++) pure = bt->logits_rows[i] == i;
    int gi = -1, cap = graph_cap(b);
    for (int i = 0; pure && i < CUDA_GRAPH_BUCKETS && gi < 0; i++)
        if (graph_buckets[i] >= T && graph_buckets[i] <= cap) gi = i;
    if (gi < 0) {
        step_shape sh = {T, bt->n_logits, bt->max_blocks, max_ctx};
        stage_meta(b, bt, &sh);
        return enqueue_step(b, &sh, bt->n_seqs);
    }
    /* The graph bakes every shape: the bucket's token count, the fixed block-table stride and the
     * longest context the backend takes (it sets the split-KV chunk). */
    int P = graph_buckets[gi];
    step_shape sh = {P, P, b->max_blocks_cap, b->base.max_ctx};
    stage_meta(b, bt, &sh);
    if (b->graph[gi]) {
        CK(cudaGraphLaunch(b->graph[gi], b->stream), "graph launch");
        return MG_OK;
    }
    return capture_bucket(b, gi, &sh);
}

mg_status cuda_backend_capture_graphs(mg_backend *base) {
    cuda *b = (cuda *)base;
    if (!b->graphs) return MG_OK;
    CK(cudaSetDevice(b->dev), "set device");
    const mg_batch none = {0}; /* every row a padding token: they touch only the scratch block */
    int n = 0, P = 0;
    for (int gi = 0; gi < CUDA_GRAPH_BUCKETS && graph_buckets[gi] <= graph_cap(b); gi++) {
        if (b->graph[gi]) continue;
        P = graph_buckets[gi];
        step_shape sh = {P, P, b->max_blocks_cap, b->base.max_ctx};
        stage_meta(b, &none, &sh);
        mg_status st = capture_bucket(b, gi, &sh);
        if (st) return st;
        n++;
    }
    CK(cudaStreamSynchronize(b->stream), "graph warm-up");
    if (n) MG_INFO("cuda backend: decode graphs captured for %d batch sizes up to %d", n, P);
    return MG_OK;
}

static mg_status cuda_forward(mg_backend *base, const mg_batch *bt, float *logits) {
    cuda *b = (cuda *)base;
    if (bt->n_tokens == 0) return MG_OK;
    CK(cudaSetDevice(b->dev), "set device");
    mg_status st = run_step(b, bt);
    if (st) return st;
    prof_begin(b, P_SAMPLE);
    CK(cudaMemcpyAsync(logits, b->logits, sizeof(float) * bt->n_logits * b->V,
                       cudaMemcpyDeviceToHost, b->stream),
       "logits copy");
    prof_end(b);
    CK(cudaStreamSynchronize(b->stream), "forward");
    prof_collect(b);
    return MG_OK;
}

/* The row's logits to the host, its banned ids set to -inf there, and sampling_pick: the path
 * of rows the device does not take. */
static mg_status host_pick(cuda *b, int i, const mg_sample_req *rq, int32_t *tok) {
    CK(cudaMemcpy(b->row_h, b->logits + (size_t)i * b->V, sizeof(float) * b->V,
                  cudaMemcpyDeviceToHost),
       "logits row copy");
    for (int k = 0; k < rq->n_banned; k++)
        if (rq->banned[k] >= 0 && rq->banned[k] < b->V) b->row_h[rq->banned[k]] = -INFINITY;
    *tok = sampling_pick(b->sampler, b->row_h, &rq->params, rq->counter);
    return MG_OK;
}

/* The step's sampling parameters into the pinned staging buffers and up to the device. */
static mg_status stage_sampling(cuda *b, const mg_sample_req *reqs, int nl) {
    int cap = b->max_seqs * BANS_PER_ROW, used = 0;
    for (int i = 0; i < nl; i++) {
        const mg_sample_req *rq = &reqs[i];
        const mg_sampling *p = &rq->params;
        bool greedy = p->temperature <= 0.0f || p->top_k == 1;
        bool dev = greedy || p->top_k <= CUDA_SAMPLE_MAX_TOP_K || p->top_k >= b->V;
        int nb = rq->banned ? rq->n_banned : 0;
        if (nb > cap - used) dev = false, nb = 0;
        if (dev && nb) memcpy(b->ban_h + used, rq->banned, sizeof(int32_t) * nb);
        b->srow_h[i] = (cuda_sample_row){
            p->temperature, p->top_p,     p->top_k, dev ? CUDA_SAMPLE_DEVICE : CUDA_SAMPLE_HOST,
            used,           dev ? nb : 0, p->seed,  rq->counter};
        if (dev) used += nb;
    }
    CK(cudaMemcpyAsync(b->srow_d, b->srow_h, sizeof(cuda_sample_row) * nl, cudaMemcpyHostToDevice,
                       b->stream),
       "sampling parameters upload");
    if (used)
        CK(cudaMemcpyAsync(b->ban_d, b->ban_h, sizeof(int32_t) * used, cudaMemcpyHostToDevice,
                           b->stream),
           "banned ids upload");
    return MG_OK;
}

static mg_status cuda_forward_sampled(mg_backend *base, const mg_batch *bt,
                                      const mg_sample_req *reqs, int32_t *out_tokens) {
    cuda *b = (cuda *)base;
    if (bt->n_tokens == 0) return MG_OK;
    CK(cudaSetDevice(b->dev), "set device");
    mg_status st = run_step(b, bt);
    if (st) return st;
    int nl = bt->n_logits;
    prof_begin(b, P_SAMPLE);
    bool split = b->sample_split && nl <= CUDA_SAMPLE_SPLIT_ROWS;
    if (b->host_sampling) {
        CK(split ? cuda_sample_split(b->tok_out, b->logits, NULL, NULL, nl, b->V, 0,
                                     b->samp_scratch, b->tickets + TICKET_SAMPLE, b->stream)
                 : cuda_argmax(b->tok_out, b->logits, nl, b->V, b->stream),
           "argmax");
    } else {
        /* Every row on the device (cuda_sample follows sampling_pick to the bit); only rows it
         * answers with -1 (parameters it does not take) come to the host below. A few rows of
         * the kinds cuda_sample_split takes go through it instead (the same tokens). */
        if ((st = stage_sampling(b, reqs, nl))) return st;
        int plain = 0;
        for (int i = 0; split && i < nl; i++) {
            int k = cuda_sample_kind(&b->srow_h[i], b->V);
            split = k != 2;
            plain |= k == 1;
        }
        CK(split ? cuda_sample_split(b->tok_out, b->logits, b->srow_d, b->ban_d, nl, b->V, plain,
                                     b->samp_scratch, b->tickets + TICKET_SAMPLE, b->stream)
                 : cuda_sample(b->tok_out, b->logits, b->srow_d, b->ban_d, nl, b->V, b->stream),
           "sample");
    }
    CK(cudaMemcpyAsync(b->tok_h, b->tok_out, sizeof(int32_t) * nl, cudaMemcpyDeviceToHost,
                       b->stream),
       "token copy");
    prof_end(b);
    CK(cudaStreamSynchronize(b->stream), "forward");
    prof_collect(b);
    for (int i = 0; i < nl; i++) {
        const mg_sample_req *rq = &reqs[i];
        const mg_sampling *p = &rq->params;
        if (!b->host_sampling) {
            if (b->tok_h[i] >= 0) {
                out_tokens[i] = b->tok_h[i];
                continue;
            }
        } else if ((p->temperature <= 0.0f || p->top_k == 1) && rq->n_banned == 0) {
            /* greedy: the device's arg-max (sampling_pick's rule) */
            out_tokens[i] = b->tok_h[i];
            continue;
        }
        if ((st = host_pick(b, i, rq, &out_tokens[i]))) return st;
    }
    return MG_OK;
}

mg_status cuda_backend_trace_routes(mg_backend *base, bool on) {
    cuda *b = (cuda *)base;
    CK(cudaSetDevice(b->dev), "set device");
    if (on && !b->route_d) {
        size_t bytes = sizeof(int32_t) * (size_t)b->L * b->max_tokens * b->TK;
        cudaError_t e = cudaMalloc((void **)&b->route_d, bytes);
        if (e != cudaSuccess) {
            b->route_d = NULL;
            return MG_ERRF(MG_ENOMEM, "cuda backend: route trace (%zu bytes): %s", bytes,
                           cudaGetErrorString(e));
        }
    }
    if (b->trace != on) drop_graphs(b); /* graphs captured before carry the old setting */
    b->trace = on;
    return MG_OK;
}

mg_status cuda_backend_routes(mg_backend *base, int n_tokens, int32_t *out) {
    cuda *b = (cuda *)base;
    if (!b->route_d || n_tokens < 0 || n_tokens > b->max_tokens)
        return MG_ERRF(MG_EINVAL, "cuda backend: no route trace for %d tokens", n_tokens);
    CK(cudaSetDevice(b->dev), "set device");
    CK(cudaStreamSynchronize(b->stream), "route trace");
    size_t n = (size_t)n_tokens * b->TK;
    for (int l = 0; l < b->L; l++)
        CK(cudaMemcpy(out + l * n, b->route_d + (size_t)l * b->max_tokens * b->TK,
                      sizeof(int32_t) * n, cudaMemcpyDeviceToHost),
           "route trace");
    return MG_OK;
}

static void cuda_destroy(mg_backend *base) {
    cuda *b = (cuda *)base;
    if (!b) return;
    cudaSetDevice(b->dev);
    if (b->stream) cudaStreamSynchronize(b->stream);
    void *dev_bufs[] = {b->tickets, b->att_part,    b->weights, b->kv,     b->inv_freq, b->x,
                        b->qkv,     b->q,           b->tmp,     b->rlog,   b->top_w,    b->y,
                        b->logits,  b->xn,          b->att,     b->act,    b->lx,       b->top_e,
                        b->e_start, b->e_slots,     b->tok_out, b->meta_d, b->route_d,  b->srow_d,
                        b->ban_d,   b->samp_scratch};
    for (size_t i = 0; i < sizeof(dev_bufs) / sizeof(dev_bufs[0]); i++)
        if (dev_bufs[i]) cudaFree(dev_bufs[i]);
    if (b->meta_h) cudaFreeHost(b->meta_h);
    if (b->tok_h) cudaFreeHost(b->tok_h);
    if (b->row_h) cudaFreeHost(b->row_h);
    if (b->srow_h) cudaFreeHost(b->srow_h);
    if (b->ban_h) cudaFreeHost(b->ban_h);
    for (int i = 0; i < PROF_EVENTS; i++)
        if (b->ev[i]) cudaEventDestroy(b->ev[i]);
    drop_graphs(b);
    cuda_gemm_destroy(b->gemm);
    if (b->stream) cudaStreamDestroy(b->stream);
    sampler_destroy(b->sampler);
    free(b->layers);
    free(b);
}

static const mg_backend_ops cuda_backend_ops = {
    .name = "cuda",
    .forward = cuda_forward,
    .forward_sampled = cuda_forward_sampled,
    .destroy = cuda_destroy,
};

/* ---- creation ---- */

/* The weight tensors in carving order; size in bytes from the config. */
typedef struct carve {
    char *base;
    size_t off;
} carve;

static void *take(carve *cv, size_t bytes) {
    void *p = cv->base ? cv->base + cv->off : NULL;
    cv->off += (bytes + 255) & ~(size_t)255; /* 256-byte aligned: 16-byte loads everywhere */
    return p;
}

/* Lay the tensors out over cv (a NULL base only measures). */
static void carve_weights(cuda *b, carve *cv) {
    size_t H = b->H, Q = b->Q, KV = b->KV, E = b->E, I = b->I, V = b->V;
    b->embed = take(cv, 2 * V * H);
    b->final_norm = take(cv, 2 * H);
    b->lm_head = take(cv, 2 * V * H);
    for (int l = 0; l < b->L; l++) {
        dev_layer *L = &b->layers[l];
        L->attn_norm = take(cv, 2 * H);
        L->qkv_w = take(cv, 2 * (Q + 2 * KV) * H);
        L->qkv_b = take(cv, 2 * (Q + 2 * KV));
        L->o_w = take(cv, 2 * H * Q);
        L->o_b = take(cv, 2 * H);
        L->sinks = take(cv, 2 * (size_t)b->c.n_heads);
        L->mlp_norm = take(cv, 2 * H);
        L->router_w = take(cv, 2 * E * H);
        L->router_b = take(cv, 2 * E);
        if (b->version >= 3) { /* the tiled layout of cuda_mxfp4_tile */
            L->gu_blocks = take(cv, cuda_mxfp4_tiled_blocks_bytes(b->E, 2 * b->I, b->H));
            L->gu_scales = take(cv, cuda_mxfp4_tiled_scales_bytes(b->E, 2 * b->I, b->H));
        } else {
            L->gu_blocks = take(cv, E * 2 * I * H / 2);
            L->gu_scales = take(cv, E * 2 * I * H / 32);
        }
        L->gu_bias = take(cv, 2 * E * 2 * I);
        if (b->version >= 3) {
            L->dn_blocks = take(cv, cuda_mxfp4_tiled_blocks_bytes(b->E, b->H, b->I));
            L->dn_scales = take(cv, cuda_mxfp4_tiled_scales_bytes(b->E, b->H, b->I));
        } else {
            L->dn_blocks = take(cv, E * H * I / 2);
            L->dn_scales = take(cv, E * H * I / 32);
        }
        L->dn_bias = take(cv, 2 * E * H);
    }
}

/* An expert tensor in the checkpoint's layout (E, N, K/32, 16) + (E, N, K/32) to the device:
 * straight, or through scratch and cuda_mxfp4_tile for version 3. */
static mg_status upload_experts(cuda *b, uint8_t *blocks_d, uint8_t *scales_d,
                                const uint8_t *blocks, const uint8_t *scales, int N, int K,
                                uint8_t *scratch) {
    size_t nblk = (size_t)b->E * N * K / 2, nsc = (size_t)b->E * N * K / 32;
    if (b->version < 3) {
        CK(cudaMemcpy(blocks_d, blocks, nblk, cudaMemcpyHostToDevice), "weight upload");
        CK(cudaMemcpy(scales_d, scales, nsc, cudaMemcpyHostToDevice), "weight upload");
        return MG_OK;
    }
    CK(cudaMemcpy(scratch, blocks, nblk, cudaMemcpyHostToDevice), "weight upload");
    CK(cudaMemcpy(scratch + nblk, scales, nsc, cudaMemcpyHostToDevice), "weight upload");
    CK(cuda_mxfp4_tile(blocks_d, scales_d, scratch, scratch + nblk, b->E, N, K, 0),
       "weight tiling");
    CK(cudaDeviceSynchronize(), "weight tiling"); /* scratch is reused by the next tensor */
    return MG_OK;
}

static mg_status upload_weights(cuda *b, const mg_model *m) {
    size_t H = b->H, Q = b->Q, KV = b->KV, E = b->E, I = b->I, V = b->V;
    uint8_t *scratch = NULL; /* version 3: one checkpoint-layout gate_up tensor (the larger) */
    if (b->version >= 3 &&
        cudaMalloc((void **)&scratch, E * 2 * I * H / 2 + E * 2 * I * H / 32) != cudaSuccess)
        return MG_ERRF(MG_ENOMEM,
                       "cuda backend: no device memory for weight tiling scratch "
                       "(%zu bytes)",
                       E * 2 * I * H / 2 + E * 2 * I * H / 32);
    mg_status st = MG_OK;
#define UP(dst, src, bytes)                                                                        \
    do {                                                                                           \
        cudaError_t e_ = cudaMemcpy((char *)(dst), (src), (bytes), cudaMemcpyHostToDevice);        \
        if (e_ != cudaSuccess) {                                                                   \
            st = MG_ERRF(MG_ECUDA, "cuda backend: weight upload: %s", cudaGetErrorString(e_));     \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)
    UP(b->embed, m->embed, 2 * V * H);
    UP(b->final_norm, m->final_norm, 2 * H);
    UP(b->lm_head, m->lm_head, 2 * V * H);
    for (int l = 0; l < b->L; l++) {
        dev_layer *L = &b->layers[l];
        const mg_layer *S = &m->layers[l];
        UP(L->attn_norm, S->attn_norm, 2 * H);
        UP(L->qkv_w, S->q_w, 2 * Q * H);
        UP(L->qkv_w + Q * H, S->k_w, 2 * KV * H);
        UP(L->qkv_w + (Q + KV) * H, S->v_w, 2 * KV * H);
        UP(L->qkv_b, S->q_b, 2 * Q);
        UP(L->qkv_b + Q, S->k_b, 2 * KV);
        UP(L->qkv_b + Q + KV, S->v_b, 2 * KV);
        UP(L->o_w, S->o_w, 2 * H * Q);
        UP(L->o_b, S->o_b, 2 * H);
        UP(L->sinks, S->sinks, 2 * (size_t)b->c.n_heads);
        UP(L->mlp_norm, S->mlp_norm, 2 * H);
        UP(L->router_w, S->router_w, 2 * E * H);
        UP(L->router_b, S->router_b, 2 * E);
        if ((st = upload_experts(b, L->gu_blocks, L->gu_scales, S->gate_up_blocks,
                                 S->gate_up_scales, 2 * b->I, b->H, scratch)))
            goto done;
        UP(L->gu_bias, S->gate_up_bias, 2 * E * 2 * I);
        if ((st = upload_experts(b, L->dn_blocks, L->dn_scales, S->down_blocks, S->down_scales,
                                 b->H, b->I, scratch)))
            goto done;
        UP(L->dn_bias, S->down_bias, 2 * E * H);
    }
#undef UP
done:
    cudaFree(scratch);
    return st;
}

/* E8M0 scale whose decoded MXFP4 values have deviation about 1/sqrt(fan_in) (random e2m1 codes
 * have RMS 2.93), as tools/mkckpt chooses them. */
static int mxfp4_scale(int fan_in) {
    return 127 + (int)lrint(log2(1.0 / (2.93 * sqrt((double)fan_in))));
}

static mg_status random_weights(cuda *b, uint64_t seed) {
    size_t H = b->H, Q = b->Q, KV = b->KV, E = b->E, I = b->I, V = b->V;
    cudaStream_t s = b->stream;
    uint64_t k = seed * 0x9E3779B97F4A7C15ull;
#define BF(p, n, mean, std)                                                                        \
    CK(cuda_fill_bf16((uint16_t *)(p), (n), ++k, (mean), (std), s), "random weights")
#define U8(p, n, lo, hi) CK(cuda_fill_u8((p), (n), ++k, (lo), (hi), s), "random weights")
    BF(b->embed, V * H, 0.0f, 1.0f);
    BF(b->final_norm, H, 1.0f, 0.1f);
    BF(b->lm_head, V * H, 0.0f, 1.0f / sqrtf((float)H));
    int su = mxfp4_scale((int)H), sd = mxfp4_scale((int)I);
    for (int l = 0; l < b->L; l++) {
        dev_layer *L = &b->layers[l];
        BF(L->attn_norm, H, 1.0f, 0.1f);
        BF(L->qkv_w, (Q + 2 * KV) * H, 0.0f, 1.0f / sqrtf((float)H));
        BF(L->qkv_b, Q + 2 * KV, 0.0f, 0.02f);
        BF(L->o_w, H * Q, 0.0f, 1.0f / sqrtf((float)Q));
        BF(L->o_b, H, 0.0f, 0.02f);
        BF(L->sinks, (size_t)b->c.n_heads, 0.0f, 1.0f);
        BF(L->mlp_norm, H, 1.0f, 0.1f);
        BF(L->router_w, E * H, 0.0f, 1.0f / sqrtf((float)H));
        BF(L->router_b, E, 0.0f, 0.02f);
        /* random bytes are random in either layout (the tiled padding is never read) */
        bool tiled = b->version >= 3;
        int E_ = (int)E, H_ = (int)H, I_ = (int)I;
        U8(L->gu_blocks, tiled ? cuda_mxfp4_tiled_blocks_bytes(E_, 2 * I_, H_) : E * 2 * I * H / 2,
           0, 255);
        U8(L->gu_scales, tiled ? cuda_mxfp4_tiled_scales_bytes(E_, 2 * I_, H_) : E * 2 * I * H / 32,
           su - 1, su + 1);
        BF(L->gu_bias, E * 2 * I, 0.0f, 0.02f);
        U8(L->dn_blocks, tiled ? cuda_mxfp4_tiled_blocks_bytes(E_, H_, I_) : E * H * I / 2, 0, 255);
        U8(L->dn_scales, tiled ? cuda_mxfp4_tiled_scales_bytes(E_, H_, I_) : E * H * I / 32, sd - 1,
           sd + 1);
        BF(L->dn_bias, E * H, 0.0f, 0.02f);
    }
#undef BF
#undef U8
    CK(cudaStreamSynchronize(s), "random weights");
    return MG_OK;
}

mg_status cuda_backend_fill_kv(mg_backend *base, uint64_t seed) {
    cuda *b = (cuda *)base;
    CK(cudaSetDevice(b->dev), "set device");
    CK(cuda_fill_bf16(b->kv, 2 * b->kv_elems, seed, 0.0f, 1.0f, b->stream), "KV fill");
    CK(cudaStreamSynchronize(b->stream), "KV fill");
    return MG_OK;
}

static mg_status dmalloc(void *pp, size_t bytes, const char *what) {
    cudaError_t e = cudaMalloc((void **)pp, bytes ? bytes : 1);
    if (e != cudaSuccess)
        return MG_ERRF(MG_ENOMEM, "cuda backend: %s (%zu MiB): %s", what, bytes >> 20,
                       cudaGetErrorString(e));
    return MG_OK;
}

/* Checks, stream, GEMM, weights carved and filled (from m, or random from seed when m is NULL),
 * scratch, KV. */
static mg_status create_common(const mg_model_config *c, const cuda_backend_opts *o,
                               const mg_model *m, uint64_t seed, cuda **out) {
    *out = NULL;
    if (o->block_size < 1 || o->max_tokens < 1 || o->max_seqs < 1 || o->num_blocks < 0)
        return MG_ERRF(MG_EINVAL,
                       "cuda backend: block_size %d, max_tokens %d, max_seqs %d must be "
                       "positive, num_blocks %d not negative",
                       o->block_size, o->max_tokens, o->max_seqs, o->num_blocks);
    if (c->head_dim != 64 || c->n_heads % c->n_kv_heads || c->n_heads / c->n_kv_heads > 32 ||
        c->n_experts > 1024 || c->top_k > 8 || c->hidden % 32 || c->intermediate % 32 ||
        c->head_dim / 2 > 512)
        return MG_ERRF(MG_EUNSUPPORTED,
                       "cuda backend: head_dim %d (must be 64), %d heads over %d kv heads, %d "
                       "experts top-%d, hidden %d, intermediate %d: outside what the kernels take",
                       c->head_dim, c->n_heads, c->n_kv_heads, c->n_experts, c->top_k, c->hidden,
                       c->intermediate);
    CK(cudaSetDevice(o->device), "set device");
    cuda *b = calloc(1, sizeof(*b));
    if (!b) return MG_ERRF(MG_ENOMEM, "out of memory");
    b->dev = o->device;
    b->base.ops = &cuda_backend_ops;
    b->base.vocab = c->vocab;
    b->base.block_size = o->block_size;
    b->c = *c;
    b->H = c->hidden, b->Q = c->n_heads * c->head_dim, b->KV = c->n_kv_heads * c->head_dim;
    b->D = c->head_dim, b->E = c->n_experts, b->TK = c->top_k, b->I = c->intermediate;
    b->V = c->vocab, b->L = c->n_layers;
    b->max_tokens = o->max_tokens, b->max_seqs = o->max_seqs;
    b->version = o->kernel_version >= 2 && o->kernel_version <= 7 ? o->kernel_version : 1;
    b->graphs = o->cuda_graphs;
    b->host_sampling = o->host_sampling || c->vocab > CUDA_SAMPLE_MAX_VOCAB;
    b->sample_split = o->sample_split && c->vocab <= CUDA_SAMPLE_MAX_VOCAB;
    mg_status st = MG_OK;
#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((st = (x))) goto fail;                                                                 \
    } while (0)
    b->layers = calloc(b->L, sizeof(dev_layer));
    if (!b->layers) TRY(MG_ERRF(MG_ENOMEM, "out of memory"));
    if (cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking) != cudaSuccess)
        TRY(MG_ERRF(MG_ECUDA, "cuda backend: stream creation failed"));
    b->pdl_max_tokens = o->pdl_max_tokens;
    TRY(cuda_gemm_create((size_t)32 << 20, &b->gemm));
    cuda_gemm_set_autotune(b->gemm, o->gemm_autotune);
    cuda_gemm_set_gemv(b->gemm, !o->gemm_no_gemv);
    TRY(sampler_create(c->vocab, &b->sampler));
    for (int i = 0; i < PROF_EVENTS; i++)
        if (cudaEventCreate(&b->ev[i]) != cudaSuccess)
            TRY(MG_ERRF(MG_ECUDA, "cuda backend: event creation failed"));
    /* weights: measure, allocate once, carve */
    carve cv = {NULL, 0};
    carve_weights(b, &cv);
    b->weight_bytes = cv.off;
    TRY(dmalloc(&b->weights, cv.off, "weights"));
    cv.base = b->weights, cv.off = 0;
    carve_weights(b, &cv);
    /* rope table */
    float inv_freq[512];
    b->concentration =
        ops_yarn_inv_freq(inv_freq, b->D, c->rope_theta, c->rope_factor, c->beta_fast, c->beta_slow,
                          c->rope_orig_ctx, c->rope_truncate);
    TRY(dmalloc(&b->inv_freq, sizeof(float) * b->D / 2, "rope table"));
    if (cudaMemcpy(b->inv_freq, inv_freq, sizeof(float) * b->D / 2, cudaMemcpyHostToDevice))
        TRY(MG_ERRF(MG_ECUDA, "cuda backend: rope table upload failed"));
    /* scratch */
    size_t T = o->max_tokens, S = T * b->TK, R = o->max_seqs;
    size_t H = b->H, Q = b->Q, KV = b->KV;
    TRY(dmalloc(&b->x, 4 * T * H, "scratch"));
    TRY(dmalloc(&b->qkv, 4 * T * (Q + 2 * KV), "scratch"));
    TRY(dmalloc(&b->q, 4 * T * Q, "scratch"));
    TRY(dmalloc(&b->tmp, 4 * T * H, "scratch"));
    TRY(dmalloc(&b->rlog, 4 * T * b->E, "scratch"));
    TRY(dmalloc(&b->top_w, 4 * S, "scratch"));
    TRY(dmalloc(&b->y, 4 * S * H, "scratch"));
    TRY(dmalloc(&b->logits, 4 * R * b->V, "logits"));
    TRY(dmalloc(&b->xn, 2 * T * H, "scratch"));
    TRY(dmalloc(&b->att, 2 * T * Q, "scratch"));
    TRY(dmalloc(&b->act, 2 * S * b->I, "scratch"));
    TRY(dmalloc(&b->lx, 2 * R * H, "scratch"));
    TRY(dmalloc(&b->top_e, 4 * S, "scratch"));
    TRY(dmalloc(&b->e_start, 4 * (size_t)(b->E + 1), "scratch"));
    TRY(dmalloc(&b->e_slots, 4 * S, "scratch"));
    TRY(dmalloc(&b->tok_out, 4 * R, "scratch"));
    TRY(dmalloc(&b->srow_d, sizeof(cuda_sample_row) * R, "sampling parameters"));
    TRY(dmalloc(&b->ban_d, 4 * R * BANS_PER_ROW, "banned ids"));
    if (b->sample_split)
        TRY(dmalloc(&b->samp_scratch, cuda_sample_split_scratch(), "sampling scratch"));
    TRY(dmalloc(&b->att_part,
                4 * (size_t)CUDA_ATT_SPLIT_MAX_T * c->n_heads * CUDA_ATT_MAX_SPLITS * 66,
                "split-KV scratch"));
    size_t n_tickets = TICKET_ATT + (size_t)CUDA_ATT_SPLIT_MAX_T * c->n_kv_heads;
    TRY(dmalloc(&b->tickets, sizeof(int) * n_tickets, "ticket counters"));
    if (cudaMemset(b->tickets, 0, sizeof(int) * n_tickets))
        TRY(MG_ERRF(MG_ECUDA, "cuda backend: ticket counter clear failed"));
    /* KV pool: given, or a share of what is free now */
    size_t block_bytes = cuda_plan_block_bytes(c, o->block_size);
    int max_ctx_req = o->max_ctx > 0 ? o->max_ctx : c->max_pos;
    b->max_blocks_cap = (max_ctx_req + o->block_size - 1) / o->block_size;
    /* room for the window pool's slots and table too (stage_window) */
    b->meta_cap = 5 * T + R + 2 * R * (size_t)b->max_blocks_cap;
    TRY(dmalloc(&b->meta_d, 4 * b->meta_cap, "index arrays"));
    if (cudaMallocHost((void **)&b->meta_h, 4 * b->meta_cap) ||
        cudaMallocHost((void **)&b->tok_h, 4 * R) ||
        cudaMallocHost((void **)&b->row_h, 4 * (size_t)b->V) ||
        cudaMallocHost((void **)&b->srow_h, sizeof(cuda_sample_row) * R) ||
        cudaMallocHost((void **)&b->ban_h, 4 * R * BANS_PER_ROW))
        TRY(MG_ERRF(MG_ENOMEM, "cuda backend: pinned host buffers"));
    /* The weights go in before the pool is sized: version 3's upload holds a scratch copy of
     * one expert tensor (1.1 GB at 120b) until it is tiled, and a pool that took its share of
     * free memory first would leave too little for it at fractions above ~0.93 (120b, H100). */
    TRY(m ? upload_weights(b, m) : random_weights(b, seed));
    int nblocks = o->num_blocks;
    if (nblocks == 0) {
        size_t free_b = 0, total_b = 0;
        if (cudaMemGetInfo(&free_b, &total_b))
            TRY(MG_ERRF(MG_ECUDA, "cuda backend: cudaMemGetInfo failed"));
        double frac = o->free_gpu_memory_fraction > 0 ? o->free_gpu_memory_fraction : 0.9;
        TRY(cuda_plan_kv_blocks(free_b, frac, block_bytes, &nblocks));
        if (nblocks > 1) nblocks--; /* room for the scratch block */
    }
    /* The window pool: the sliding layers' share of the same budget (nblocks blocks of every
     * layer), sized for max_seqs windows and a max_tokens step; the full layers get the rest. */
    int n_sliding = 0, nwin = 0, nfull = nblocks;
    for (int l = 0; l < b->L; l++) n_sliding += c->sliding[l];
    size_t layer_block = block_bytes / b->L;
    if (o->window_pool && n_sliding > 0 && n_sliding < b->L &&
        kv_window_split((uint64_t)nblocks * block_bytes, (uint64_t)(b->L - n_sliding) * layer_block,
                        (uint64_t)n_sliding * layer_block, c->sliding_window, o->block_size,
                        o->max_seqs, o->max_tokens, &nfull, &nwin)) {
        b->base.window_blocks = nwin;
        b->base.window = c->sliding_window;
    }
    nblocks = nfull;
    /* One block more than the scheduler sees in each pool: padding tokens of graph buckets
     * write there. */
    b->base.num_blocks = nblocks;
    b->scratch_block = nblocks;
    b->wscratch_block = nwin;
    size_t blk_elems = (size_t)c->n_kv_heads * o->block_size * b->D, off = 0;
    for (int l = 0; l < b->L; l++) {
        bool win = c->sliding[l] && nwin > 0;
        off += (size_t)((win ? nwin : nblocks) + 1) * blk_elems;
    }
    b->kv_elems = off;
    TRY(dmalloc(&b->kv, 2 * 2 * b->kv_elems, "KV cache"));
    off = 0;
    for (int l = 0; l < b->L; l++) {
        bool win = c->sliding[l] && nwin > 0;
        b->kl[l] = b->kv + off;
        b->vl[l] = b->kv + b->kv_elems + off;
        off += (size_t)((win ? nwin : nblocks) + 1) * blk_elems;
    }
    /* Zeroed KV: a block read before it is written gives zeros, never stale garbage. */
    if (cudaMemset(b->kv, 0, 2 * 2 * b->kv_elems))
        TRY(MG_ERRF(MG_ECUDA, "cuda backend: KV clear failed"));
    /* cudaMemset and cudaMemcpy run on the legacy default stream, which b->stream (non-blocking)
     * does not wait for, and both may return before the device is done: without this the clear
     * could land on KV that the first steps (or cuda_backend_fill_kv) already wrote. */
    if (cudaDeviceSynchronize()) TRY(MG_ERRF(MG_ECUDA, "cuda backend: KV clear failed"));
    long cap = (long)nblocks * o->block_size;
    long mc = o->max_ctx > 0 && o->max_ctx < cap ? o->max_ctx : cap;
    if (mc > (long)b->max_blocks_cap * o->block_size) mc = (long)b->max_blocks_cap * o->block_size;
    b->base.max_ctx = (int)mc;
    if (nwin > 0)
        MG_INFO("cuda backend: weights %.2f GiB, KV %.2f GiB: %d blocks of %d for the %d "
                "full-attention layers, a window pool of %d blocks for the %d sliding layers "
                "(window %d), max_ctx %d",
                b->weight_bytes / 1073741824.0, 4.0 * b->kv_elems / 1073741824.0, nblocks,
                o->block_size, b->L - n_sliding, nwin, n_sliding, c->sliding_window,
                b->base.max_ctx);
    else
        MG_INFO("cuda backend: weights %.2f GiB, KV %d blocks of %d (%.2f GiB), max_ctx %d",
                b->weight_bytes / 1073741824.0, nblocks, o->block_size,
                (double)nblocks * block_bytes / 1073741824.0, b->base.max_ctx);
    *out = b;
    return MG_OK;
fail:
    cuda_destroy(&b->base);
    return st;
#undef TRY
}

mg_status cuda_backend_create(const mg_model *m, const cuda_backend_opts *o, mg_backend **out) {
    *out = NULL;
    cuda *b;
    mg_status st = create_common(&m->cfg, o, m, 0, &b);
    if (st) return st;
    /* A copy from pageable memory may return before its DMA ends, and the first step runs on a
     * non-blocking stream that does not wait for the legacy one: wait for the weights here. */
    cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        cuda_destroy(&b->base);
        return cuda_fail((int)e, "weight upload");
    }
    *out = &b->base;
    return MG_OK;
}

mg_status cuda_backend_open(const char *dir, const cuda_backend_opts *o, mg_backend **out) {
    mg_model *m;
    mg_status st = model_load(dir, &m);
    if (st) return st;
    st = cuda_backend_create(m, o, out);
    model_destroy(m); /* the weights are on the device now */
    return st;
}

mg_status cuda_backend_create_random(const mg_model_config *c, uint64_t seed,
                                     const cuda_backend_opts *o, mg_backend **out) {
    *out = NULL;
    cuda *b;
    mg_status st = create_common(c, o, NULL, seed, &b);
    if (st) return st;
    *out = &b->base;
    return MG_OK;
}
