/* scheduler.c - continuous batching: schedule -> run -> postprocess.
 *
 * Invariants of a sequence q:
 *   tokens[0..n_tokens)     prompt then output; n_tokens = n_prompt + n_out;
 *   n_computed              positions whose KV the backend has written (<= n_tokens - 1 between
 *                           steps while running: the last token is the next input);
 *   blocks[0..n_blocks)     held blocks, n_blocks = ceil(n_computed / bs) between steps;
 *   n_committed             leading blocks registered with the pool or taken from it (full);
 *   hashes[0..n_hashed)     sequence hashes of full token blocks (tokens only grow, so they stay
 *                           valid across preemption);
 *   wblocks[0..n_blocks)    with a window pool (backend.h): the sliding layers' blocks, -1 for
 *                           k < w_lo, held for w_lo <= k < n_blocks. Between steps w_lo is
 *                           (n_computed - window + 1) / bs (at least the admission's), so the
 *                           next query, at n_computed, finds its whole window held.
 * A running sequence only writes positions >= n_computed, which lie in blocks it allocated fresh
 * (in both pools), so no write ever reaches a block another sequence holds.
 *
 * The window pool mirrors the full pool's reuse without events: a full window block is
 * registered under the same sequence hash as its full-pool twin, stays cached when it leaves
 * the window, and a prefix hit of m blocks is taken only when the window pool still holds the
 * blocks under the first recomputed position's window (window_match). */
#include "scheduler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockhash.h"
#include "log.h"

enum { SEQ_WAITING = 0, SEQ_RUNNING = 1 };

struct mg_seq {
    char *id;
    int32_t *tokens;
    int n_tokens, cap_tokens, n_prompt;
    int32_t *blocks;
    int n_blocks, cap_blocks;
    int32_t *wblocks; /* (cap_blocks) window pool ids, -1 below w_lo */
    int w_lo;
    uint64_t *hashes, *locals; /* (cap_blocks) */
    int n_hashed, n_committed, n_computed;
    int n_out, max_out, n_cached;
    int n_emitted; /* output tokens already handed to the callback */
    bool admitted;
    mg_sampling sp;
    int32_t min_tokens;
    bool ignore_eos;
    int n_stop;
    int32_t stop[MG_REQUEST_MAX_STOP_IDS + MG_ENGINE_MAX_STOP_IDS];
    mg_output_cb cb;
    void *ud;
    int state;
    int sched_n;         /* tokens scheduled in the current step (0: not in the batch) */
    bool done;           /* finished during postprocess */
    mg_seq *prev, *next; /* waiting queue links */
};

struct mg_sched {
    mg_engine_config cfg;
    mg_backend *be;
    mg_kv_pool *kv;
    mg_kv_pool *wkv; /* the sliding layers' pool, NULL without one */
    int window;      /* positions a sliding layer sees (with wkv) */
    mg_sampler *sampler;
    int bs, max_len, max_blocks_seq, max_batch, max_tokens_step, vocab, stream_interval;
    /* running sequences in admission order: the last is the newest (first to be preempted) */
    mg_seq **running;
    int n_running;
    mg_seq *wait_head, *wait_tail;
    int n_waiting;
    /* the step under construction (all preallocated) */
    mg_seq **batch;
    int n_batch;
    int32_t *tokens, *positions, *token_seq;     /* (max_num_tokens) */
    int32_t *seq_start, *seq_len, *seq_ctx;      /* (max_batch) */
    int32_t *logits_rows, *logits_seq, *out_tok; /* (max_batch) */
    int32_t *block_table;                        /* (max_batch, max_blocks_seq) */
    int32_t *window_table;                       /* (max_batch, max_blocks_seq), with wkv */
    mg_sample_req *reqs;                         /* (max_batch) */
    float *logits;                               /* (max_batch, vocab), forward path only */
    uint64_t steps, preemptions, tokens_out;
};

const char *mg_finish_str(mg_finish f) {
    switch (f) {
    case MG_FINISH_STOP:
        return "stop";
    case MG_FINISH_LENGTH:
        return "length";
    case MG_FINISH_CANCELLED:
        return "cancelled";
    case MG_FINISH_ERROR:
        return "error";
    default:
        return NULL;
    }
}

/* --- sequences --- */

static uint64_t id_seed(const char *id) {
    /* FNV-1a: a stable seed per request id, so a request without a seed still repeats. */
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    return h;
}

void sched_seq_destroy(mg_seq *q) {
    if (!q) return;
    free(q->id);
    free(q->tokens);
    free(q->blocks);
    free(q->wblocks);
    free(q->hashes);
    free(q->locals);
    free(q);
}

/* Room for at least n tokens (and their blocks). Grows geometrically, so appends made in the
 * step allocate O(log n) times over a sequence's life. */
static bool seq_reserve(mg_seq *q, int n, int bs) {
    if (n > q->cap_tokens) {
        int cap = q->cap_tokens * 2 > n ? q->cap_tokens * 2 : n;
        int32_t *t = realloc(q->tokens, sizeof(int32_t) * cap);
        if (!t) return false;
        q->tokens = t;
        q->cap_tokens = cap;
    }
    int nb = (n + bs - 1) / bs;
    if (nb > q->cap_blocks) {
        int cap = q->cap_blocks * 2 > nb ? q->cap_blocks * 2 : nb;
        int32_t *b = realloc(q->blocks, sizeof(int32_t) * cap);
        if (b) q->blocks = b;
        int32_t *w = realloc(q->wblocks, sizeof(int32_t) * cap);
        if (w) q->wblocks = w;
        uint64_t *h = realloc(q->hashes, sizeof(uint64_t) * cap);
        if (h) q->hashes = h;
        uint64_t *l = realloc(q->locals, sizeof(uint64_t) * cap);
        if (l) q->locals = l;
        if (!b || !w || !h || !l) return false;
        q->cap_blocks = cap;
    }
    return true;
}

mg_status sched_seq_create(const mg_sched *s, const mg_request *r, mg_seq **out) {
    *out = NULL;
    if (!r->id || !r->id[0] || strlen(r->id) >= 256)
        return MG_ERRF(MG_EINVAL, "request: id must be 1..255 bytes");
    if (r->n_prompt < 1 || !r->prompt)
        return MG_ERRF(MG_EINVAL, "request %s: prompt is empty", r->id);
    if (r->n_prompt >= s->max_len)
        return MG_ERRF(MG_EINVAL,
                       "request %s: prompt of %d tokens leaves no room under the limit of %d "
                       "(max_seq_len, model context, KV capacity)",
                       r->id, r->n_prompt, s->max_len);
    for (int i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= s->vocab)
            return MG_ERRF(MG_EINVAL, "request %s: prompt token %d (at %d) outside [0, %d)", r->id,
                           r->prompt[i], i, s->vocab);
    if (r->max_tokens < 0 || r->min_tokens < 0)
        return MG_ERRF(MG_EINVAL, "request %s: max_tokens %d and min_tokens %d must be >= 0", r->id,
                       r->max_tokens, r->min_tokens);
    if (r->n_stop_ids < 0 || r->n_stop_ids > MG_REQUEST_MAX_STOP_IDS ||
        (r->n_stop_ids && !r->stop_ids))
        return MG_ERRF(MG_EINVAL, "request %s: %d stop ids (at most %d)", r->id, r->n_stop_ids,
                       MG_REQUEST_MAX_STOP_IDS);
    if (sampling_check(&r->sampling)) {
        char why[256]; /* the detail buffer is about to be rewritten */
        snprintf(why, sizeof(why), "%s", mg_err_msg());
        return MG_ERRF(MG_EINVAL, "request %s: %s", r->id, why);
    }

    mg_seq *q = calloc(1, sizeof(*q));
    if (!q) return MG_ERRF(MG_ENOMEM, "request %s: out of memory", r->id);
    q->id = strdup(r->id);
    q->n_prompt = q->n_tokens = r->n_prompt;
    int room = s->max_len - r->n_prompt;
    q->max_out = (r->max_tokens > 0 && r->max_tokens < room) ? r->max_tokens : room;
    /* Room for the whole output up front when it is bounded (the usual max_tokens), so the step
     * never reallocates; an open-ended request starts with 4,096 and grows geometrically. */
    int first = r->n_prompt + (q->max_out < 16384 ? q->max_out : 4096);
    if (!q->id || !seq_reserve(q, first, s->bs)) {
        sched_seq_destroy(q);
        return MG_ERRF(MG_ENOMEM, "request %s: out of memory", r->id);
    }
    memcpy(q->tokens, r->prompt, sizeof(int32_t) * r->n_prompt);
    q->sp = r->sampling;
    if (!r->has_seed) q->sp.seed = id_seed(r->id);
    q->min_tokens = r->min_tokens;
    q->ignore_eos = r->ignore_eos;
    for (int i = 0; i < s->cfg.n_stop_ids; i++) q->stop[q->n_stop++] = s->cfg.stop_ids[i];
    for (int i = 0; i < r->n_stop_ids; i++) q->stop[q->n_stop++] = r->stop_ids[i];
    q->cb = r->cb;
    q->ud = r->ud;
    *out = q;
    return MG_OK;
}

static mg_usage seq_usage(const mg_seq *q) {
    return (mg_usage){q->n_prompt, q->n_out, q->n_cached};
}

/* Hand the output tokens not yet emitted to the callback, with finish f. */
static void seq_emit(mg_seq *q, mg_finish f) {
    const int32_t *toks = q->tokens + q->n_prompt + q->n_emitted;
    int n = q->n_out - q->n_emitted;
    q->n_emitted = q->n_out;
    if (!q->cb) return;
    mg_output o = {q->id, n ? toks : NULL, n, f, seq_usage(q)};
    q->cb(q->ud, &o);
}

/* Sequence hashes for the full blocks of tokens[0..n_full * bs). */
static void seq_hash_upto(mg_seq *q, int n_full, int bs) {
    for (int b = q->n_hashed; b < n_full; b++) {
        uint64_t loc = mg_block_local_hash((const uint32_t *)q->tokens + (size_t)b * bs, bs);
        q->locals[b] = loc;
        q->hashes[b] = mg_block_seq_hash(b ? q->hashes[b - 1] : 0, b > 0, loc);
    }
    if (n_full > q->n_hashed) q->n_hashed = n_full;
}

/* --- queues --- */

static void wait_push_back(mg_sched *s, mg_seq *q) {
    q->state = SEQ_WAITING;
    q->next = NULL;
    q->prev = s->wait_tail;
    if (s->wait_tail)
        s->wait_tail->next = q;
    else
        s->wait_head = q;
    s->wait_tail = q;
    s->n_waiting++;
}

static void wait_push_front(mg_sched *s, mg_seq *q) {
    q->state = SEQ_WAITING;
    q->prev = NULL;
    q->next = s->wait_head;
    if (s->wait_head)
        s->wait_head->prev = q;
    else
        s->wait_tail = q;
    s->wait_head = q;
    s->n_waiting++;
}

static void wait_unlink(mg_sched *s, mg_seq *q) {
    if (q->prev)
        q->prev->next = q->next;
    else
        s->wait_head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        s->wait_tail = q->prev;
    q->prev = q->next = NULL;
    s->n_waiting--;
}

static void running_remove(mg_sched *s, mg_seq *q) {
    for (int i = 0; i < s->n_running; i++) {
        if (s->running[i] != q) continue;
        memmove(&s->running[i], &s->running[i + 1], sizeof(mg_seq *) * (s->n_running - i - 1));
        s->n_running--;
        return;
    }
}

static void batch_remove(mg_sched *s, mg_seq *q) {
    for (int i = 0; i < s->n_batch; i++) {
        if (s->batch[i] != q) continue;
        memmove(&s->batch[i], &s->batch[i + 1], sizeof(mg_seq *) * (s->n_batch - i - 1));
        s->n_batch--;
        return;
    }
}

static void seq_free_blocks(mg_sched *s, mg_seq *q) {
    kv_release(s->kv, q->blocks, q->n_blocks);
    if (s->wkv) kv_release(s->wkv, q->wblocks + q->w_lo, q->n_blocks - q->w_lo);
    q->w_lo = 0;
    q->n_blocks = 0;
    q->n_committed = 0;
    q->n_computed = 0;
}

/* Finish q wherever it is: callback, blocks back, memory freed. */
static void seq_finish(mg_sched *s, mg_seq *q, mg_finish f) {
    if (q->state == SEQ_RUNNING) {
        seq_free_blocks(s, q);
        running_remove(s, q);
    } else {
        wait_unlink(s, q);
    }
    seq_emit(q, f);
    sched_seq_destroy(q);
}

/* --- create / destroy --- */

mg_status sched_create(const mg_engine_config *cfg, mg_backend *be, mg_sched **out) {
    *out = NULL;
    if (!be || !be->ops || (!be->ops->forward && !be->ops->forward_sampled))
        return MG_ERRF(MG_EINVAL, "sched: backend has neither forward nor forward_sampled");
    if (be->block_size != cfg->kv_block_size)
        return MG_ERRF(MG_EINVAL,
                       "sched: backend block_size %d != kv_cache_config.tokens_per_block %lld",
                       be->block_size, (long long)cfg->kv_block_size);
    if (be->num_blocks < 1 || be->vocab < 1)
        return MG_ERRF(MG_EINVAL, "sched: backend has %d KV blocks and vocab %d", be->num_blocks,
                       be->vocab);
    if (cfg->n_stop_ids < 0 || cfg->max_batch_size < 1 || cfg->max_num_tokens < 1)
        return MG_ERRF(MG_EINVAL, "sched: engine config not checked (engine_config_check)");
    mg_sched *s = calloc(1, sizeof(*s));
    if (!s) return MG_ERRF(MG_ENOMEM, "sched: out of memory");
    s->cfg = *cfg;
    s->cfg.eos_token_ids = NULL; /* not ours; stop_ids already parsed */
    s->be = be;
    s->bs = be->block_size;
    s->vocab = be->vocab;
    int64_t len = cfg->max_seq_len;
    if (be->max_ctx > 0 && be->max_ctx < len) len = be->max_ctx;
    if ((int64_t)be->num_blocks * s->bs < len) len = (int64_t)be->num_blocks * s->bs;
    s->max_len = (int)len;
    s->max_blocks_seq = (s->max_len + s->bs - 1) / s->bs;
    s->max_batch = (int)cfg->max_batch_size;
    s->max_tokens_step = (int)cfg->max_num_tokens;
    s->stream_interval = cfg->stream_interval > 0 ? (int)cfg->stream_interval : 1;
    mg_status st = kv_pool_create(be->num_blocks, s->bs, cfg->enable_block_reuse, &s->kv);
    if (st) {
        free(s);
        return st;
    }
    if (be->window_blocks > 0) {
        /* One sequence alone must always be able to step: its window and a whole chunk. */
        int64_t chunk = s->max_tokens_step < s->max_len ? s->max_tokens_step : s->max_len;
        int64_t one = (be->window - 1 + chunk + s->bs - 1) / s->bs + 1;
        if (be->window < 1 || be->window_blocks < one) {
            sched_destroy(s);
            return MG_ERRF(MG_EINVAL,
                           "sched: window pool of %d blocks (window %d) holds less than one "
                           "sequence's step needs: %lld blocks for a chunk of %lld tokens "
                           "(max_num_tokens and max_seq_len, the smaller)",
                           be->window_blocks, be->window, (long long)one, (long long)chunk);
        }
        s->window = be->window;
        st = kv_pool_create(be->window_blocks, s->bs, cfg->enable_block_reuse, &s->wkv);
        if (st) {
            sched_destroy(s);
            return st;
        }
    }
    st = sampler_create(s->vocab, &s->sampler);
    if (st) {
        sched_destroy(s);
        return st;
    }
    size_t mb = (size_t)s->max_batch, mt = (size_t)s->max_tokens_step;
    s->running = malloc(sizeof(mg_seq *) * mb);
    s->batch = malloc(sizeof(mg_seq *) * mb);
    s->tokens = malloc(sizeof(int32_t) * mt);
    s->positions = malloc(sizeof(int32_t) * mt);
    s->token_seq = malloc(sizeof(int32_t) * mt);
    s->seq_start = malloc(sizeof(int32_t) * mb);
    s->seq_len = malloc(sizeof(int32_t) * mb);
    s->seq_ctx = malloc(sizeof(int32_t) * mb);
    s->logits_rows = malloc(sizeof(int32_t) * mb);
    s->logits_seq = malloc(sizeof(int32_t) * mb);
    s->out_tok = malloc(sizeof(int32_t) * mb);
    s->block_table = malloc(sizeof(int32_t) * mb * s->max_blocks_seq);
    if (s->wkv) s->window_table = malloc(sizeof(int32_t) * mb * s->max_blocks_seq);
    s->reqs = malloc(sizeof(mg_sample_req) * mb);
    /* The logits buffer is only touched up to the rows of a step, so the pages of a large
     * max_batch_size * vocab reservation stay unbacked until a batch that large runs. */
    if (!be->ops->forward_sampled) s->logits = malloc(sizeof(float) * mb * s->vocab);
    if (!s->running || !s->batch || !s->tokens || !s->positions || !s->token_seq || !s->seq_start ||
        !s->seq_len || !s->seq_ctx || !s->logits_rows || !s->logits_seq || !s->out_tok ||
        !s->block_table || !s->reqs || (!be->ops->forward_sampled && !s->logits) ||
        (s->wkv && !s->window_table)) {
        sched_destroy(s);
        return MG_ERRF(MG_ENOMEM, "sched: out of memory for the step arrays");
    }
    *out = s;
    return MG_OK;
}

void sched_destroy(mg_sched *s) {
    if (!s) return;
    for (int i = 0; i < s->n_running; i++) sched_seq_destroy(s->running[i]);
    for (mg_seq *q = s->wait_head, *n; q; q = n) {
        n = q->next;
        sched_seq_destroy(q);
    }
    kv_pool_destroy(s->kv);
    kv_pool_destroy(s->wkv);
    sampler_destroy(s->sampler);
    free(s->running);
    free(s->batch);
    free(s->tokens);
    free(s->positions);
    free(s->token_seq);
    free(s->seq_start);
    free(s->seq_len);
    free(s->seq_ctx);
    free(s->logits_rows);
    free(s->logits_seq);
    free(s->out_tok);
    free(s->block_table);
    free(s->window_table);
    free(s->reqs);
    free(s->logits);
    free(s);
}

int sched_max_len(const mg_sched *s) {
    return s->max_len;
}

void sched_enqueue(mg_sched *s, mg_seq *q) {
    wait_push_back(s, q);
}

mg_status sched_add(mg_sched *s, const mg_request *r) {
    mg_seq *q;
    mg_status st = sched_seq_create(s, r, &q);
    if (st) return st;
    sched_enqueue(s, q);
    return MG_OK;
}

bool sched_cancel(mg_sched *s, const char *id) {
    for (int i = 0; i < s->n_running; i++) {
        if (strcmp(s->running[i]->id, id) == 0) {
            seq_finish(s, s->running[i], MG_FINISH_CANCELLED);
            return true;
        }
    }
    for (mg_seq *q = s->wait_head; q; q = q->next) {
        if (strcmp(q->id, id) == 0) {
            seq_finish(s, q, MG_FINISH_CANCELLED);
            return true;
        }
    }
    return false;
}

void sched_abort_all(mg_sched *s, mg_finish reason) {
    while (s->n_running) seq_finish(s, s->running[s->n_running - 1], reason);
    while (s->wait_head) seq_finish(s, s->wait_head, reason);
}

bool sched_has_work(const mg_sched *s) {
    return s->n_running > 0 || s->n_waiting > 0;
}

mg_sched_load sched_load(const mg_sched *s) {
    return (mg_sched_load){.running = s->n_running,
                           .max_running = s->max_batch,
                           .waiting = s->n_waiting,
                           .kv = kv_stats(s->kv),
                           .window_kv = s->wkv ? kv_stats(s->wkv) : (mg_kv_stats){0},
                           .steps = s->steps,
                           .preemptions = s->preemptions,
                           .tokens_out = s->tokens_out};
}

mg_kv_pool *sched_kv(mg_sched *s) {
    return s->kv;
}

mg_kv_pool *sched_window_kv(mg_sched *s) {
    return s->wkv;
}

void sched_kv_clear(mg_sched *s) {
    kv_clear(s->kv);
    if (s->wkv) kv_clear(s->wkv);
}

/* --- schedule --- */

/* The newest running sequence gives its blocks back and waits at the head of the queue. */
static void preempt(mg_sched *s, mg_seq *v, int *budget) {
    if (v->sched_n) {
        *budget += v->sched_n;
        v->sched_n = 0;
        batch_remove(s, v);
    }
    seq_free_blocks(s, v);
    running_remove(s, v);
    wait_push_front(s, v);
    s->preemptions++;
    MG_LOGR(MG_LOG_DEBUG, v->id, "preempted at %d tokens (%d output)", v->n_tokens, v->n_out);
}

/* Blocks q must add to hold n_computed + n positions. */
static int blocks_needed(const mg_sched *s, const mg_seq *q, int n) {
    int want = (q->n_computed + n + s->bs - 1) / s->bs;
    return want > q->n_blocks ? want - q->n_blocks : 0;
}

/* Whether nb fresh blocks can be taken in both pools (the window pool's count is the same: its
 * table has the full table's logical length). */
static bool can_grow(const mg_sched *s, int nb) {
    return kv_can_allocate(s->kv, 0, nb) && (!s->wkv || kv_can_allocate(s->wkv, 0, nb));
}

/* Take nb fresh blocks in both pools for q's next positions (can_grow said yes). */
static void grow(mg_sched *s, mg_seq *q, int nb) {
    if (kv_allocate(s->kv, nb, q->blocks + q->n_blocks) != MG_OK) abort();
    if (s->wkv && kv_allocate(s->wkv, nb, q->wblocks + q->n_blocks) != MG_OK) abort();
    q->n_blocks += nb;
}

/* First block a sliding layer still reads once positions [0, pos) are computed: the next query
 * sits at pos and sees pos - window + 1 on. */
static int window_lo_block(const mg_sched *s, int pos) {
    int lo = pos - s->window + 1;
    return lo > 0 ? lo / s->bs : 0;
}

/* The longest prefix hit m <= p (full-pool blocks) whose first recomputed position m * bs still
 * finds its window in the window pool: the blocks [window_lo_block(m * bs), m) cached there.
 * *lo and *idle receive that range's start and how many of its blocks are idle. */
static int window_match(const mg_sched *s, const mg_seq *q, int p, int *lo, int *idle) {
    for (int m = p; m > 0;) {
        int l = window_lo_block(s, m * s->bs);
        int got = kv_match(s->wkv, q->hashes + l, m - l, idle);
        if (got == m - l) {
            *lo = l;
            return m;
        }
        /* Block l + got is missing: no hit that needs it can be taken, so the next candidate
         * stops right below it. */
        m = l + got;
    }
    *lo = 0;
    *idle = 0;
    return 0;
}

static void schedule_running(mg_sched *s, bool decode_pass, int *budget, int *n_preempted) {
    for (int i = 0; i < s->n_running; i++) {
        if (*budget <= 0) break;
        mg_seq *q = s->running[i];
        if (q->sched_n) continue;
        int need = q->n_tokens - q->n_computed;
        if ((need == 1) != decode_pass) continue;
        int n = need < *budget ? need : *budget;
        int nb = blocks_needed(s, q, n);
        while (!can_grow(s, nb)) {
            mg_seq *v = s->running[s->n_running - 1];
            preempt(s, v, budget);
            (*n_preempted)++;
            if (v == q) break;
        }
        if (q->state != SEQ_RUNNING) {
            /* q itself was the newest: it waits, and later sequences were preempted already. */
            break;
        }
        grow(s, q, nb);
        q->sched_n = n;
        *budget -= n;
        s->batch[s->n_batch++] = q;
    }
}

static void schedule_waiting(mg_sched *s, int *budget) {
    while (s->wait_head && *budget > 0) {
        if (s->n_running >= s->max_batch) break;
        mg_seq *q = s->wait_head;
        int total = q->n_tokens;
        seq_hash_upto(q, total / s->bs, s->bs);
        /* Leave at least the last token to compute, so the step yields its logits. */
        int max_hit = (total - 1) / s->bs;
        int idle = 0, widle = 0, wlo = 0;
        int hit = kv_match(s->kv, q->hashes, max_hit, &idle);
        if (s->wkv && hit > 0) {
            int m = window_match(s, q, hit, &wlo, &widle);
            if (m < hit) kv_match(s->kv, q->hashes, m, &idle); /* idle among the m kept */
            hit = m;
        }
        int n = total - hit * s->bs;
        if (n > *budget) n = *budget;
        int nb = (hit * s->bs + n + s->bs - 1) / s->bs - hit;
        /* first come, first served: no skipping */
        if (!kv_can_allocate(s->kv, idle, nb)) break;
        if (s->wkv && !kv_can_allocate(s->wkv, widle, nb)) break;
        kv_acquire(s->kv, q->hashes, hit, q->blocks);
        if (kv_allocate(s->kv, nb, q->blocks + hit) != MG_OK) abort();
        if (s->wkv) {
            for (int k = 0; k < wlo; k++) q->wblocks[k] = -1;
            kv_acquire(s->wkv, q->hashes + wlo, hit - wlo, q->wblocks + wlo);
            if (kv_allocate(s->wkv, nb, q->wblocks + hit) != MG_OK) abort();
            q->w_lo = wlo;
        }
        q->n_blocks = hit + nb;
        q->n_committed = hit;
        q->n_computed = hit * s->bs;
        if (!q->admitted) {
            q->admitted = true;
            q->n_cached = hit * s->bs;
            int prompt_blocks = q->n_prompt / s->bs;
            kv_note_lookup(s->kv, prompt_blocks, hit < prompt_blocks ? hit : prompt_blocks);
        }
        wait_unlink(s, q);
        q->state = SEQ_RUNNING;
        s->running[s->n_running++] = q;
        q->sched_n = n;
        *budget -= n;
        s->batch[s->n_batch++] = q;
    }
}

/* min_tokens: until then the stop ids cannot be drawn (as vLLM does; with ignore_eos they are
 * ordinary tokens and stay drawable). */
static bool seq_bans_stops(const mg_seq *q) {
    return q->n_out < q->min_tokens && !q->ignore_eos && q->n_stop > 0;
}

/* Lay the scheduled sequences out as an mg_batch, decode sequences first. */
static void build_batch(mg_sched *s, mg_batch *b) {
    /* Decode sequences were scheduled in the first pass, but a waiting sequence admitted with a
     * single token left sits later; a stable partition keeps the documented order. */
    int nd = 0;
    for (int i = 0; i < s->n_batch; i++) {
        mg_seq *q = s->batch[i];
        bool dec = q->sched_n == 1 && q->n_computed + 1 == q->n_tokens;
        if (!dec) continue;
        memmove(&s->batch[nd + 1], &s->batch[nd], sizeof(mg_seq *) * (i - nd));
        s->batch[nd++] = q;
    }
    int max_blocks = 1;
    for (int i = 0; i < s->n_batch; i++)
        if (s->batch[i]->n_blocks > max_blocks) max_blocks = s->batch[i]->n_blocks;
    int t = 0, nl = 0;
    for (int i = 0; i < s->n_batch; i++) {
        mg_seq *q = s->batch[i];
        s->seq_start[i] = t;
        s->seq_len[i] = q->sched_n;
        s->seq_ctx[i] = q->n_computed + q->sched_n;
        for (int k = 0; k < q->sched_n; k++, t++) {
            s->tokens[t] = q->tokens[q->n_computed + k];
            s->positions[t] = q->n_computed + k;
            s->token_seq[t] = i;
        }
        int32_t *row = s->block_table + (size_t)i * max_blocks;
        memcpy(row, q->blocks, sizeof(int32_t) * q->n_blocks);
        for (int k = q->n_blocks; k < max_blocks; k++) row[k] = -1;
        if (s->wkv) {
            int32_t *wrow = s->window_table + (size_t)i * max_blocks;
            memcpy(wrow, q->wblocks, sizeof(int32_t) * q->n_blocks);
            for (int k = q->n_blocks; k < max_blocks; k++) wrow[k] = -1;
        }
        if (s->seq_ctx[i] == q->n_tokens) {
            /* This chunk reaches the end of what is known: the next token is due. */
            s->logits_rows[nl] = t - 1;
            s->logits_seq[nl] = i;
            s->reqs[nl] = (mg_sample_req){q->sp, (uint64_t)q->n_out, NULL, 0};
            if (seq_bans_stops(q)) s->reqs[nl].banned = q->stop, s->reqs[nl].n_banned = q->n_stop;
            nl++;
        }
    }
    *b = (mg_batch){.n_tokens = t,
                    .n_seqs = s->n_batch,
                    .n_decode = nd,
                    .n_prefill_tokens = t - nd,
                    .tokens = s->tokens,
                    .positions = s->positions,
                    .token_seq = s->token_seq,
                    .seq_start = s->seq_start,
                    .seq_len = s->seq_len,
                    .seq_ctx = s->seq_ctx,
                    .block_table = s->block_table,
                    .max_blocks = max_blocks,
                    .window_table = s->wkv ? s->window_table : NULL,
                    .n_logits = nl,
                    .logits_rows = s->logits_rows,
                    .logits_seq = s->logits_seq};
}

static bool is_stop(const mg_seq *q, int32_t t) {
    for (int i = 0; i < q->n_stop; i++)
        if (q->stop[i] == t) return true;
    return false;
}

/* --- run --- */

static mg_status run_batch(mg_sched *s, const mg_batch *b) {
    mg_backend *be = s->be;
    if (be->ops->forward_sampled) return be->ops->forward_sampled(be, b, s->reqs, s->out_tok);
    mg_status st = be->ops->forward(be, b, s->logits);
    if (st) return st;
    for (int i = 0; i < b->n_logits; i++) {
        mg_seq *q = s->batch[b->logits_seq[i]];
        float *row = s->logits + (size_t)i * s->vocab;
        const mg_sample_req *rq = &s->reqs[i];
        for (int k = 0; k < rq->n_banned; k++)
            if (rq->banned[k] >= 0 && rq->banned[k] < s->vocab) row[rq->banned[k]] = -INFINITY;
        s->out_tok[i] = sampling_pick(s->sampler, row, &q->sp, (uint64_t)q->n_out);
    }
    return MG_OK;
}

/* --- postprocess --- */

static void commit_full_blocks(mg_sched *s, mg_seq *q) {
    int full = q->n_computed / s->bs;
    if (full <= q->n_committed) return;
    seq_hash_upto(q, full, s->bs);
    int c = q->n_committed;
    kv_commit(s->kv, q->blocks + c, q->hashes + c, q->locals + c, full - c, c > 0,
              c > 0 ? q->hashes[c - 1] : 0);
    /* The window twins of these blocks are held still (w_lo <= n_committed between steps), and
     * register under the same hashes; the window pool has no event callback. */
    if (s->wkv)
        kv_commit(s->wkv, q->wblocks + c, q->hashes + c, q->locals + c, full - c, c > 0,
                  c > 0 ? q->hashes[c - 1] : 0);
    q->n_committed = full;
}

/* Give back the window blocks no later query of q can read; they stay cached under their hash
 * when they have one. */
static void trim_window(mg_sched *s, mg_seq *q) {
    int lo = window_lo_block(s, q->n_computed);
    if (lo <= q->w_lo) return;
    kv_release(s->wkv, q->wblocks + q->w_lo, lo - q->w_lo);
    for (int k = q->w_lo; k < lo; k++) q->wblocks[k] = -1;
    q->w_lo = lo;
}

static int postprocess(mg_sched *s, const mg_batch *b) {
    int n_finished = 0;
    for (int i = 0; i < s->n_batch; i++) {
        mg_seq *q = s->batch[i];
        q->n_computed += q->sched_n;
        q->sched_n = 0;
        commit_full_blocks(s, q);
        if (s->wkv) trim_window(s, q);
    }
    for (int i = 0; i < b->n_logits; i++) {
        mg_seq *q = s->batch[b->logits_seq[i]];
        int32_t t = s->out_tok[i];
        mg_finish f = MG_FINISH_NONE;
        if (t < 0 || t >= s->vocab) {
            MG_LOGR(MG_LOG_ERROR, q->id, "backend returned token %d outside [0, %d)", t, s->vocab);
            f = MG_FINISH_ERROR;
        } else if (!seq_reserve(q, q->n_tokens + 1, s->bs)) {
            MG_LOGR(MG_LOG_ERROR, q->id, "out of memory growing to %d tokens", q->n_tokens + 1);
            f = MG_FINISH_ERROR;
        } else {
            q->tokens[q->n_tokens++] = t;
            q->n_out++;
            s->tokens_out++;
            if (!q->ignore_eos && q->n_out > q->min_tokens && is_stop(q, t))
                f = MG_FINISH_STOP;
            else if (q->n_out >= q->max_out)
                f = MG_FINISH_LENGTH;
        }
        /* stream_interval: the first token at once (time to first token), then every
         * interval tokens, and whatever is left with the finish. */
        if (f != MG_FINISH_NONE || q->n_emitted == 0 ||
            q->n_out - q->n_emitted >= s->stream_interval)
            seq_emit(q, f);
        if (f != MG_FINISH_NONE) {
            q->done = true;
            n_finished++;
        }
    }
    if (n_finished) {
        /* Free finished sequences and close the gaps in running, keeping admission order. */
        int w = 0;
        for (int r = 0; r < s->n_running; r++) {
            mg_seq *q = s->running[r];
            if (q->done) {
                seq_free_blocks(s, q);
                sched_seq_destroy(q);
            } else {
                s->running[w++] = q;
            }
        }
        s->n_running = w;
    }
    s->n_batch = 0;
    return n_finished;
}

static mg_status step(mg_sched *s, mg_step_info *info, bool always_run);

mg_status sched_step(mg_sched *s, mg_step_info *info) {
    return step(s, info, false);
}

mg_status sched_step_lockstep(mg_sched *s, mg_step_info *info) {
    return step(s, info, true);
}

static mg_status step(mg_sched *s, mg_step_info *info, bool always_run) {
    mg_step_info inf = {0};
    int budget = s->max_tokens_step;
    s->n_batch = 0;
    int preempted = 0;
    schedule_running(s, true, &budget, &preempted);
    schedule_running(s, false, &budget, &preempted);
    /* While blocks are short enough to preempt, admitting new work would only thrash. */
    if (!preempted) schedule_waiting(s, &budget);
    inf.n_preempted = preempted;
    if (s->n_batch == 0 && !always_run) {
        if (info) *info = inf;
        return MG_OK;
    }
    mg_batch b;
    build_batch(s, &b);
    inf.n_seqs = b.n_seqs;
    inf.n_tokens = b.n_tokens;
    inf.n_decode = b.n_decode;
    inf.n_prefill_tokens = b.n_prefill_tokens;
    if (s->n_batch) s->steps++; /* lockstep empty steps are not counted */
    mg_status st = run_batch(s, &b);
    if (st) {
        /* The KV of every sequence in the batch is suspect: end them all with an error. */
        MG_LOG_ERR("backend step failed");
        for (int i = 0; i < s->n_batch; i++) {
            s->batch[i]->sched_n = 0;
            s->batch[i]->done = true;
        }
        int w = 0;
        for (int r = 0; r < s->n_running; r++) {
            mg_seq *q = s->running[r];
            if (q->done) {
                seq_free_blocks(s, q);
                seq_emit(q, MG_FINISH_ERROR);
                sched_seq_destroy(q);
                inf.n_finished++;
            } else {
                s->running[w++] = q;
            }
        }
        s->n_running = w;
        s->n_batch = 0;
        if (info) *info = inf;
        return st;
    }
    inf.n_finished = postprocess(s, &b);
    if (info) *info = inf;
    return MG_OK;
}
