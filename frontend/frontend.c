/* frontend.c - the request plane on the frontend's side: HTTP handler, worker discovery, request
 * submission, the chunk -> SSE path, cancellation and migration. See frontend.h.
 *
 * A request (fe_req) is reference-counted: one reference for the HTTP connection (dropped when
 * the connection completes) and one for the request plane (dropped when the request finishes:
 * last chunk, stop string, error, or cancel). Its stream handle is swapped out under the
 * request's lock before bus_stream_close, never closed while holding the lock, because close
 * waits for a running callback that may itself be waiting for the lock. */
#include "frontend.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "bus.h"
#include "discovery.h"
#include "etcd.h"
#include "harmony.h"
#include "http.h"
#include "log.h"
#include "magneto.pb-c.h"
#include "metrics.h"
#include "openai.h"
#include "stopstr.h"
#include "tok.h"

typedef struct fe_req fe_req;

typedef struct fe_metrics {
    mg_metric *requests, *inflight, *ttft, *itl, *duration, *isl, *osl, *disconnects, *migrations,
        *out_tokens;
} fe_metrics;

struct frontend {
    fe_config cfg;
    char ns[64];
    bus *bus;
    bus_inbox *inbox;
    etcd_client *etcd;
    disc_watch *wi, *wm;
    router *rt;
    tok_t *tok;
    fe_http *http;
    fe_metrics m;
    pthread_mutex_t mu; /* guards the active list */
    fe_req *active;
    atomic_size_t n_active;
    atomic_uint_fast64_t seq; /* request counter, for stream ids */
};

struct fe_req {
    atomic_int refs;
    frontend *fe;
    pthread_mutex_t mu;
    fe_conn *conn;
    fe_req *prev, *next; /* in fe->active while registered */
    bool registered;

    oai_request r;
    char id[48];   /* response id */
    char base[40]; /* stream id base; attempt k uses "<base>-<k>" */
    int64_t created;
    char model[128];

    uint32_t *prompt;
    size_t n_prompt, cap_prompt;
    uint32_t *gen; /* tokens generated so far (migration resends prompt + these) */
    size_t n_gen, cap_gen;
    int64_t max_tokens; /* completion tokens allowed in total */
    int64_t context_length;

    router_target target;
    bus_stream *stream;
    char stream_id[64];
    int attempt;

    tok_stream *ts;
    harmony_parser *hp;
    bool raw;         /* chat output that is not harmony (random tokens of a mocker): plain text */
    int hdr_tokens;   /* ordinary tokens in a row before the parser produced anything */
    bool saw_special; /* the output held a special token: it is harmony, never raw */
    bool any_text;
    stopstr stop;
    bool stop_hit;
    oai_sse_head head;
    oai_buf ev;   /* SSE bytes of the current chunk, written to the connection at once */
    oai_buf text; /* detokenized text scratch */
    oai_buf content, reasoning; /* stream=false totals */
    int n_tools;
    char tool_ids[8][40];

    bool finished, cancelled;
    oai_finish finish;
    uint32_t cached_tokens;

    double t_start, t_first, t_last;
    mg_histogram *h_ttft, *h_itl, *h_dur, *h_isl, *h_osl;
    mg_gauge *g_inflight;
    mg_counter *c_out;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- protobuf-c with a per-thread bump arena: unpacking a chunk allocates nothing ---- */

#define ARENA_BYTES (256 * 1024)
static __thread struct {
    char *p;
    size_t used;
} arena;

static void *arena_alloc(void *ud, size_t size) {
    size = (size + 15) & ~(size_t)15;
    if (arena.used + size > ARENA_BYTES) return NULL;
    void *p = arena.p + arena.used;
    arena.used += size;
    return p;
}
static void arena_free(void *ud, void *p) {}
static ProtobufCAllocator arena_allocator = {arena_alloc, arena_free, NULL};

static void arena_cleanup(void *p) {
    free(p);
}
static pthread_key_t arena_key;
static pthread_once_t arena_once = PTHREAD_ONCE_INIT;
static void arena_key_init(void) {
    pthread_key_create(&arena_key, arena_cleanup);
}

/* Unpack a chunk; *arena_used tells the caller to reset the arena after use. Messages too large
 * for the arena go through malloc (free with magneto__generate_chunk__free_unpacked(m, NULL)). */
static Magneto__GenerateChunk *chunk_unpack(const void *data, size_t len, bool *in_arena) {
    /* A varint is at least one byte, so ids take at most 4x the payload once unpacked. */
    if (len * 5 + 4096 < ARENA_BYTES) {
        if (!arena.p) {
            pthread_once(&arena_once, arena_key_init);
            arena.p = malloc(ARENA_BYTES);
            if (arena.p) pthread_setspecific(arena_key, arena.p);
        }
        if (arena.p) {
            arena.used = 0;
            *in_arena = true;
            return magneto__generate_chunk__unpack(&arena_allocator, len, data);
        }
    }
    *in_arena = false;
    return magneto__generate_chunk__unpack(NULL, len, data);
}

/* ---- request lifetime ---- */

static void req_unref(fe_req *q) {
    if (!q || atomic_fetch_sub(&q->refs, 1) != 1) return;
    oai_request_free(&q->r);
    free(q->prompt);
    free(q->gen);
    tok_stream_destroy(q->ts);
    harmony_parser_destroy(q->hp);
    stopstr_free(&q->stop);
    oai_sse_head_free(&q->head);
    oai_buf_free(&q->ev);
    oai_buf_free(&q->text);
    oai_buf_free(&q->content);
    oai_buf_free(&q->reasoning);
    if (q->conn) fe_conn_unref(q->conn);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

static void req_register(fe_req *q) {
    frontend *fe = q->fe;
    pthread_mutex_lock(&fe->mu);
    q->next = fe->active;
    if (fe->active) fe->active->prev = q;
    fe->active = q;
    q->registered = true;
    pthread_mutex_unlock(&fe->mu);
    atomic_fetch_add(&fe->n_active, 1);
}

static void req_unregister(fe_req *q) {
    frontend *fe = q->fe;
    pthread_mutex_lock(&fe->mu);
    bool was = q->registered;
    if (was) {
        if (q->prev)
            q->prev->next = q->next;
        else
            fe->active = q->next;
        if (q->next) q->next->prev = q->prev;
        q->prev = q->next = NULL;
        q->registered = false;
    }
    pthread_mutex_unlock(&fe->mu);
    if (was) atomic_fetch_sub(&fe->n_active, 1);
}

/* ---- metrics ---- */

static void metrics_init(fe_metrics *m) {
    mg_registry *r = metrics_default();
    static double tok_buckets[21];
    metrics_buckets_exponential(1, 2, 21, tok_buckets);
    const char *const *ml = MG_LABELS("model");
    if (metrics_counter_new(r, MG_M_FRONTEND_REQUESTS_TOTAL,
                            "Requests finished, by model, endpoint, request type and status",
                            MG_LABELS("model", "endpoint", "request_type", "status"),
                            &m->requests) ||
        metrics_gauge_new(r, MG_M_FRONTEND_INFLIGHT_REQUESTS, "Requests in flight", ml,
                          &m->inflight) ||
        metrics_histogram_new(r, MG_M_FRONTEND_TTFT_SECONDS, "Time to the first token", ml, NULL, 0,
                              &m->ttft) ||
        metrics_histogram_new(r, MG_M_FRONTEND_ITL_SECONDS, "Time between tokens", ml, NULL, 0,
                              &m->itl) ||
        metrics_histogram_new(r, MG_M_FRONTEND_DURATION_SECONDS, "Request duration", ml, NULL, 0,
                              &m->duration) ||
        metrics_histogram_new(r, MG_M_FRONTEND_INPUT_TOKENS, "Prompt tokens", ml, tok_buckets, 21,
                              &m->isl) ||
        metrics_histogram_new(r, MG_M_FRONTEND_OUTPUT_TOKENS, "Completion tokens", ml, tok_buckets,
                              21, &m->osl) ||
        metrics_gauge_new(r, MG_M_FRONTEND_DISCONNECTED,
                          "Clients that went away before their response ended", NULL,
                          &m->disconnects) ||
        metrics_counter_new(r, MG_M_FRONTEND_OUTPUT_TOKENS_TOTAL, "Completion tokens streamed", ml,
                            &m->out_tokens) ||
        metrics_counter_new(r, "magneto_frontend_migrations_total",
                            "Requests moved to another worker after losing theirs", NULL,
                            &m->migrations))
        MG_LOG_ERR("frontend metrics");
}

static void count_request(fe_req *q, const char *status) {
    mg_counter *c;
    const char *ep = q->r.endpoint == OAI_CHAT ? "chat_completions" : "completions";
    if (q->fe->m.requests &&
        metrics_counter_child(q->fe->m.requests,
                              MG_LABELS(q->model, ep, q->r.stream ? "stream" : "unary", status),
                              &c) == MG_OK)
        metrics_counter_inc(c);
}

/* ---- worker plane: send, cancel ---- */

static void cancel_subject(const frontend *fe, const router_target *t, char *buf, size_t cap) {
    const char *suf = ".generate";
    size_t n = strlen(t->subject), k = strlen(suf);
    if (n > k && strcmp(t->subject + n - k, suf) == 0)
        snprintf(buf, cap, "%.*s.cancel", (int)(n - k), t->subject);
    else
        snprintf(buf, cap, "%s.worker.%" PRIx64 ".cancel", fe->ns, (uint64_t)t->worker_id);
}

static void send_cancel(frontend *fe, const router_target *t, const char *stream_id) {
    Magneto__CancelRequest cr = MAGNETO__CANCEL_REQUEST__INIT;
    cr.request_id = (char *)stream_id;
    uint8_t buf[128];
    size_t n = magneto__cancel_request__get_packed_size(&cr);
    if (n > sizeof buf) return;
    magneto__cancel_request__pack(&cr, buf);
    char subj[200];
    cancel_subject(fe, t, subj, sizeof subj);
    if (bus_publish(fe->bus, subj, NULL, buf, n)) MG_LOG_ERR("cancel publish");
}

static void on_chunk(void *arg, bus_stream *s, const bus_chunk *ch, mg_status st);

/* Pick a worker and publish the request (prompt + tokens so far). Caller holds q->mu. */
static mg_status submit_locked(fe_req *q, int64_t avoid) {
    frontend *fe = q->fe;
    int64_t left = q->max_tokens - (int64_t)q->n_gen;
    if (left <= 0) return MG_ERRF(MG_EINVAL, "nothing left to generate");
    router_query rq = {.token_ids = q->prompt, .n_tokens = q->n_prompt, .avoid_worker = avoid};
    mg_status s = router_pick(fe->rt, &rq, &q->target);
    if (s) return s;
    snprintf(q->stream_id, sizeof q->stream_id, "%s-%d", q->base, q->attempt);
    bus_stream_opts so = {.fn = on_chunk, .arg = q, .timeout_ms = fe->cfg.stream_timeout_ms};
    const char *reply;
    bus_stream *bs;
    s = bus_inbox_open(fe->inbox, q->stream_id, &so, &bs, &reply);
    if (s) return s;

    size_t ntok = q->n_prompt + q->n_gen;
    uint32_t *ids = malloc((ntok ? ntok : 1) * sizeof *ids);
    if (!ids) {
        bus_stream_close(bs);
        return MG_ERRF(MG_ENOMEM, "request tokens");
    }
    memcpy(ids, q->prompt, q->n_prompt * sizeof *ids);
    if (q->n_gen) memcpy(ids + q->n_prompt, q->gen, q->n_gen * sizeof *ids);

    Magneto__SamplingParams sp = MAGNETO__SAMPLING_PARAMS__INIT;
    sp.temperature = (float)q->r.temperature;
    sp.top_p = (float)q->r.top_p;
    sp.top_k = q->r.top_k > 0 ? (int32_t)q->r.top_k : 0;
    sp.has_seed = q->r.has_seed;
    /* A migrated request resumes at another position of the random stream: shift the seed so
     * that it does not replay the first attempt's draws. */
    sp.seed = q->r.seed + (uint64_t)q->n_gen;
    sp.ignore_eos = q->r.ignore_eos;
    int64_t mt = q->r.min_tokens - (int64_t)q->n_gen;
    sp.min_tokens = mt > 0 ? (uint32_t)mt : 0;
    sp.max_tokens = (uint32_t)left;
    sp.n_stop_token_ids = (size_t)q->r.n_stop_token_ids;
    sp.stop_token_ids = q->r.stop_token_ids;

    Magneto__GenerateRequest gr = MAGNETO__GENERATE_REQUEST__INIT;
    gr.request_id = q->stream_id;
    gr.model = q->model;
    gr.n_token_ids = ntok;
    gr.token_ids = ids;
    gr.sampling = &sp;
    gr.dp_rank = q->target.dp_rank;
    gr.has_dp_rank = true;
    gr.migrations = (uint32_t)q->attempt;
    gr.reply_subject = (char *)reply;
    gr.prompt_tokens = (uint32_t)q->n_prompt;

    size_t n = magneto__generate_request__get_packed_size(&gr);
    uint8_t stackbuf[4096];
    uint8_t *buf = n <= sizeof stackbuf ? stackbuf : malloc(n);
    if (!buf) {
        free(ids);
        bus_stream_close(bs);
        return MG_ERRF(MG_ENOMEM, "request buffer");
    }
    magneto__generate_request__pack(&gr, buf);
    free(ids);
    q->stream = bs;
    s = bus_publish(fe->bus, q->target.subject, reply, buf, n);
    if (buf != stackbuf) free(buf);
    if (s) {
        q->stream = NULL;
        bus_stream_close(bs);
        return s;
    }
    return MG_OK;
}

/* ---- output: tokens -> text -> SSE ---- */

static void emit_text(fe_req *q, oai_field f, const char *t, size_t n) {
    if (n == 0) return;
    if (!q->any_text) {
        q->any_text = true;
        q->t_first = now_s();
        if (q->h_ttft) metrics_histogram_observe(q->h_ttft, q->t_first - q->t_start);
    }
    if (q->r.stream)
        oai_sse_text(&q->head, f, t, n, &q->ev);
    else
        oai_buf_put(f == OAI_REASONING ? &q->reasoning : &q->content, t, n);
}

static void emit_content(fe_req *q, const char *t, size_t n) {
    const char *o;
    size_t on;
    bool hit = stopstr_feed(&q->stop, t, n, &o, &on);
    emit_text(q, OAI_CONTENT, o, on);
    if (hit) q->stop_hit = true;
}

/* Plain-text decode of one id (completions, or chat output that is not harmony). */
static void feed_plain(fe_req *q, uint32_t id) {
    if (!q->ts) return;
    if (tok_is_special(q->fe->tok, id)) return; /* specials are skipped, as vLLM does */
    q->text.len = 0;
    if (tok_stream_feed(q->ts, id, &q->text.p, &q->text.len, &q->text.cap)) return;
    if (q->text.len) emit_content(q, q->text.p, q->text.len);
}

/* Chat output that never forms a harmony header is passed through as text, so that workers
 * emitting arbitrary tokens (the mocker) still produce visible output. A real header holds a
 * few ordinary tokens between specials ("commentary to=functions.get_weather "), never this
 * many in a row. */
#define HARMONY_HEADER_MAX 16

static void go_raw(fe_req *q) {
    q->raw = true;
    for (size_t i = 0; i < q->n_gen && !q->stop_hit; i++) feed_plain(q, q->gen[i]);
}

static void feed_harmony(fe_req *q, uint32_t id) {
    /* gpt-oss opens its answer with <|channel|>, or with a recipient (" to=functions.x") before
     * it; any other first token means the output is not harmony: show it as text at once rather
     * than hold tokens back (which would inflate the time to first token). */
    if (q->n_gen == 1 && !tok_is_special(q->fe->tok, id)) {
        size_t pl;
        const char *piece = tok_piece(q->fe->tok, id, &pl);
        if (!piece || pl < 3 || memcmp(piece, " to", 3) != 0) {
            go_raw(q);
            return;
        }
    }
    harmony_event ev;
    mg_status s = harmony_parser_feed(q->hp, id, &ev);
    if (s) {
        if (!q->any_text) go_raw(q);
        return;
    }
    switch (ev.kind) {
    case HARMONY_NONE:
        if (tok_is_special(q->fe->tok, id))
            q->hdr_tokens = 0, q->saw_special = true;
        else if (!q->any_text && ++q->hdr_tokens > HARMONY_HEADER_MAX)
            go_raw(q);
        break;
    case HARMONY_REASONING:
        emit_text(q, OAI_REASONING, ev.text, ev.len);
        break;
    case HARMONY_CONTENT:
        emit_content(q, ev.text, ev.len);
        break;
    case HARMONY_TOOL_ARGS:
        if (ev.tool_begin && ev.tool_index >= 0 && ev.tool_index < 8) {
            char *tid = q->tool_ids[ev.tool_index];
            char rid[48];
            oai_make_id(OAI_COMPLETIONS, rid); /* "cmpl-" + 24 random hex digits */
            snprintf(tid, 40, "call_%.24s", rid + 5);
            q->n_tools = ev.tool_index + 1;
            if (!q->any_text) {
                q->any_text = true;
                q->t_first = now_s();
                if (q->h_ttft) metrics_histogram_observe(q->h_ttft, q->t_first - q->t_start);
            }
            if (q->r.stream)
                oai_sse_tool_call(&q->head, ev.tool_index, tid, ev.tool_name ? ev.tool_name : "",
                                  ev.text, ev.len, &q->ev);
        } else if (ev.len && q->r.stream) {
            oai_sse_tool_call(&q->head, ev.tool_index, NULL, NULL, ev.text, ev.len, &q->ev);
        }
        break;
    }
}

static void feed_token(fe_req *q, uint32_t id) {
    if (q->n_gen == q->cap_gen) {
        size_t cap = q->cap_gen ? q->cap_gen * 2 : 256;
        uint32_t *g = realloc(q->gen, cap * sizeof *g);
        if (!g) return;
        q->gen = g;
        q->cap_gen = cap;
    }
    q->gen[q->n_gen++] = id;
    if (q->hp && !q->raw)
        feed_harmony(q, id);
    else
        feed_plain(q, id);
}

/* Write the closing events (or the whole body for stream=false). Caller holds q->mu. */
static void finish_locked(fe_req *q, oai_finish f) {
    q->finished = true;
    /* Short non-harmony output ended before the header limit: show it as text all the same. */
    if (q->hp && !q->raw && !q->any_text && !q->saw_special && q->n_gen > 0) go_raw(q);
    if (!q->stop_hit) { /* release text held back by the stop-string matcher */
        const char *o;
        size_t on;
        stopstr_flush(&q->stop, &o, &on);
        if (on) emit_text(q, OAI_CONTENT, o, on);
    }
    if (q->n_tools > 0 && f == OAI_FINISH_STOP) f = OAI_FINISH_TOOL_CALLS;
    q->finish = f;
    oai_usage u = {(uint32_t)q->n_prompt, (uint32_t)q->n_gen, q->cached_tokens};
    double t = now_s();
    if (q->h_dur) metrics_histogram_observe(q->h_dur, t - q->t_start);
    if (q->h_osl) metrics_histogram_observe(q->h_osl, (double)q->n_gen);
    count_request(q, "success");
    if (q->r.stream) {
        oai_sse_finish(&q->head, f, &q->ev);
        if (q->r.include_usage) oai_sse_usage(&q->head, &u, &q->ev);
        oai_sse_done(&q->ev);
        fe_conn_write(q->conn, q->ev.p, q->ev.len);
        q->ev.len = 0;
        fe_conn_end(q->conn);
        return;
    }
    oai_tool_call calls[8];
    int nc = 0;
    if (q->hp && !q->raw) {
        nc = harmony_parser_tool_count(q->hp);
        if (nc > 8) nc = 8;
        for (int i = 0; i < nc; i++) {
            memcpy(calls[i].id, q->tool_ids[i], sizeof calls[i].id);
            calls[i].name = (char *)harmony_parser_tool_name(q->hp, i);
            const char *a = harmony_parser_tool_args(q->hp, i);
            calls[i].args = (oai_buf){(char *)a, strlen(a), 0};
        }
    }
    oai_buf body = {0};
    bool chat = q->r.endpoint == OAI_CHAT;
    mg_status s = oai_response_json(q->r.endpoint, q->id, q->created, q->model,
                                    q->content.p ? q->content.p : "", q->content.len,
                                    chat && q->reasoning.len ? q->reasoning.p : NULL,
                                    q->reasoning.len, calls, nc, f, &u, &body);
    if (s)
        fe_conn_reply(q->conn, 500, "application/json", "{}", 2);
    else
        fe_conn_reply(q->conn, 200, "application/json", body.p, body.len);
    oai_buf_free(&body);
}

/* End the request with an error (503-like: worker lost, no worker). Caller holds q->mu. */
static void fail_locked(fe_req *q, int http_status, const char *code, const char *msg) {
    q->finished = true;
    oai_error e;
    oai_fail(&e, http_status, http_status == 503 ? "service_unavailable" : "internal_error", code,
             NULL, "%s", msg);
    count_request(q, "error");
    if (q->h_dur) metrics_histogram_observe(q->h_dur, now_s() - q->t_start);
    if (q->r.stream) {
        q->ev.len = 0;
        oai_sse_error(&e, &q->ev);
        fe_conn_write(q->conn, q->ev.p, q->ev.len);
        q->ev.len = 0;
        fe_conn_end(q->conn);
        return;
    }
    oai_buf b = {0};
    oai_error_json(&e, &b);
    fe_conn_reply(q->conn, http_status, "application/json", b.p ? b.p : "{}", b.len);
    oai_buf_free(&b);
}

/* Request done: leave the active list, drop the request plane's reference. No lock held. */
static void req_done(fe_req *q) {
    if (q->g_inflight) metrics_gauge_dec(q->g_inflight);
    req_unregister(q);
    req_unref(q);
}

/* The worker is gone or its stream broke: move the request, or end it with an error. Any thread
 * except with q->mu held. */
static void migrate_or_fail(fe_req *q, mg_status why) {
    frontend *fe = q->fe;
    pthread_mutex_lock(&q->mu);
    if (q->finished) {
        pthread_mutex_unlock(&q->mu);
        return;
    }
    bus_stream *old = q->stream;
    q->stream = NULL;
    router_target lost = q->target;
    char old_id[64];
    snprintf(old_id, sizeof old_id, "%s", q->stream_id);
    pthread_mutex_unlock(&q->mu);
    if (old) bus_stream_close(old);
    /* The worker may be alive (a lost chunk): make sure it stops this attempt. */
    send_cancel(fe, &lost, old_id);

    pthread_mutex_lock(&q->mu);
    if (q->finished) {
        pthread_mutex_unlock(&q->mu);
        return;
    }
    bool done = false;
    if (q->attempt >= fe->cfg.migration_limit || why == MG_ECLOSED) {
        MG_LOGR(MG_LOG_WARN, q->id, "worker %" PRIx64 " lost (%s) after %zu tokens; %s",
                (uint64_t)lost.worker_id, mg_status_str(why), q->n_gen,
                fe->cfg.migration_limit ? "migration limit reached" : "migration is off");
        fail_locked(q, 503, "worker_lost",
                    "The worker serving this request was lost and the request could not be "
                    "moved.");
        done = true;
    } else {
        q->attempt++;
        mg_status s = submit_locked(q, lost.worker_id);
        if (s == MG_OK) {
            mg_counter *c;
            if (fe->m.migrations && metrics_counter_child(fe->m.migrations, NULL, &c) == MG_OK)
                metrics_counter_inc(c);
            MG_LOGR(MG_LOG_INFO, q->id, "migrated after %zu tokens to worker %" PRIx64 " (%s)",
                    q->n_gen, (uint64_t)q->target.worker_id, mg_status_str(why));
        } else if (q->max_tokens - (int64_t)q->n_gen <= 0) {
            finish_locked(q, OAI_FINISH_LENGTH);
            done = true;
        } else {
            fail_locked(q, 503, "no_workers",
                        "The worker serving this request was lost and no other worker is "
                        "available.");
            done = true;
        }
    }
    pthread_mutex_unlock(&q->mu);
    if (done) req_done(q);
}

static void on_chunk(void *arg, bus_stream *s, const bus_chunk *ch, mg_status st) {
    fe_req *q = arg;
    /* This runs on the inbox's NATS delivery thread, which the NATS reader thread wakes once
     * per message. As SCHED_BATCH it does not preempt the reader on each wake-up: on the
     * frontend's (often single, busy) core the reader parses the burst it has read and this
     * thread then takes the chunks in one run, instead of two context switches per token. A
     * p99 gain measured with frontend/bench.sh (bench/RESULTS.md); no privilege needed. */
    static _Thread_local bool batch_set;
    if (!batch_set) {
        batch_set = true;
        struct sched_param sp = {0};
        pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    }
    if (!ch) { /* the stream failed: gap, silence, or the inbox closed */
        pthread_mutex_lock(&q->mu);
        bool ours = q->stream == s && !q->finished;
        pthread_mutex_unlock(&q->mu);
        if (ours) migrate_or_fail(q, st);
        return;
    }
    bool in_arena;
    Magneto__GenerateChunk *m = chunk_unpack(ch->data, ch->len, &in_arena);
    pthread_mutex_lock(&q->mu);
    if (q->stream != s || q->finished) {
        pthread_mutex_unlock(&q->mu);
        if (m && !in_arena) magneto__generate_chunk__free_unpacked(m, NULL);
        return;
    }
    if (!m) {
        pthread_mutex_unlock(&q->mu);
        MG_LOGR(MG_LOG_ERROR, q->id, "malformed GenerateChunk (%zu bytes)", ch->len);
        migrate_or_fail(q, MG_EPROTO);
        return;
    }
    q->ev.len = 0;
    double t = now_s();
    if (m->n_token_ids && q->h_itl && q->n_gen > 0)
        metrics_histogram_observe(q->h_itl, (t - q->t_last) / (double)m->n_token_ids);
    if (m->n_token_ids) q->t_last = t;
    if (q->c_out) metrics_counter_add_u64(q->c_out, m->n_token_ids);
    for (size_t i = 0; i < m->n_token_ids && !q->stop_hit; i++) feed_token(q, m->token_ids[i]);
    if (m->usage) q->cached_tokens = m->usage->cached_tokens;
    bool done = false, cancel = false;
    if (q->stop_hit) {
        finish_locked(q, OAI_FINISH_STOP);
        done = cancel = !ch->last && m->finish == MAGNETO__FINISH_REASON__FINISH_NONE;
        done = true;
    } else if (m->finish == MAGNETO__FINISH_REASON__FINISH_STOP) {
        finish_locked(q, OAI_FINISH_STOP);
        done = true;
    } else if (m->finish == MAGNETO__FINISH_REASON__FINISH_LENGTH) {
        finish_locked(q, OAI_FINISH_LENGTH);
        done = true;
    } else if (m->finish == MAGNETO__FINISH_REASON__FINISH_ERROR ||
               m->finish == MAGNETO__FINISH_REASON__FINISH_CANCELLED) {
        MG_LOGR(MG_LOG_ERROR, q->id, "worker error: %s", m->error ? m->error : "");
        char msg[300];
        snprintf(msg, sizeof msg, "The worker failed: %s",
                 m->error && m->error[0] ? m->error : "cancelled");
        fail_locked(q, 500, "worker_error", msg);
        done = true;
    } else if (ch->last) {
        finish_locked(q, OAI_FINISH_STOP);
        done = true;
    } else if (q->ev.len) {
        fe_conn_write(q->conn, q->ev.p, q->ev.len);
        q->ev.len = 0;
    }
    router_target tgt = q->target;
    if (done) q->stream = NULL;
    pthread_mutex_unlock(&q->mu);
    if (!in_arena) magneto__generate_chunk__free_unpacked(m, NULL);
    if (done) {
        if (cancel) send_cancel(q->fe, &tgt, q->stream_id);
        bus_stream_close(s); /* from its own callback: returns at once */
        req_done(q);
    }
}

/* The HTTP connection completed. client_gone: before the response was fully sent. */
static void on_conn_close(void *arg, bool client_gone) {
    fe_req *q = arg;
    pthread_mutex_lock(&q->mu);
    bool cancel = !q->finished;
    bus_stream *s = NULL;
    router_target tgt = q->target;
    if (cancel) {
        q->finished = q->cancelled = true;
        s = q->stream;
        q->stream = NULL;
    }
    pthread_mutex_unlock(&q->mu);
    if (cancel) {
        mg_gauge *g;
        if (q->fe->m.disconnects && metrics_gauge_child(q->fe->m.disconnects, NULL, &g) == MG_OK)
            metrics_gauge_inc(g);
        count_request(q, "cancelled");
        if (s) {
            send_cancel(q->fe, &tgt, q->stream_id);
            bus_stream_close(s);
        }
        req_done(q);
    }
    req_unref(q); /* the connection's reference */
}

/* ---- HTTP handler ---- */

static void reply_json(fe_conn *c, int status, const char *body) {
    fe_conn_reply(c, status, "application/json", body, strlen(body));
}

static void reply_error(fe_conn *c, const oai_error *e) {
    oai_buf b = {0};
    oai_error_json(e, &b);
    fe_conn_reply(c, e->status, "application/json", b.p ? b.p : "{}", b.len);
    oai_buf_free(&b);
}

static void handle_models(frontend *fe, fe_conn *c) {
    disc_model *ms = NULL;
    size_t n = 0;
    json_t *data = json_array();
    if (disc_watch_models_snapshot(fe->wm, &ms, &n) == MG_OK) {
        for (size_t i = 0; i < n; i++) {
            bool dup = false;
            for (size_t j = 0; j < i; j++) dup |= strcmp(ms[i].name, ms[j].name) == 0;
            if (dup) continue;
            json_array_append_new(
                data, json_pack("{s:s,s:s,s:I,s:s,s:I}", "id", ms[i].name, "object", "model",
                                "created", (json_int_t)time(NULL), "owned_by", "magneto",
                                "max_model_len", (json_int_t)ms[i].context_length));
        }
    }
    free(ms);
    json_t *o = json_pack("{s:s,s:o}", "object", "list", "data", data);
    char *s = json_dumps(o, JSON_COMPACT);
    reply_json(c, 200, s ? s : "{}");
    free(s);
    json_decref(o);
}

static void handle_health(frontend *fe, fe_conn *c) {
    disc_instance *is = NULL;
    size_t n = 0;
    json_t *inst = json_array();
    if (disc_watch_instances_snapshot(fe->wi, &is, &n) == MG_OK) {
        for (size_t i = 0; i < n; i++)
            json_array_append_new(inst, json_pack("{s:I,s:s,s:s,s:i,s:i}", "instance_id",
                                                  (json_int_t)is[i].instance_id, "subject",
                                                  is[i].subject, "host", is[i].host, "dp_rank",
                                                  is[i].dp_rank, "dp_size", is[i].dp_size));
    }
    free(is);
    json_t *o = json_pack("{s:s,s:o,s:I}", "status", n ? "healthy" : "unhealthy", "instances", inst,
                          "inflight_requests", (json_int_t)atomic_load(&fe->n_active));
    char *s = json_dumps(o, JSON_COMPACT);
    reply_json(c, n ? 200 : 503, s ? s : "{}");
    free(s);
    json_decref(o);
}

static void handle_metrics(fe_conn *c) {
    char *s = NULL;
    size_t len = 0;
    if (metrics_render(metrics_default(), &s, &len)) {
        reply_json(c, 500, "{}");
        return;
    }
    fe_conn_reply(c, 200, MG_METRICS_CONTENT_TYPE, s, len);
    free(s);
}

/* Text of a message content: string, or text parts joined. Returns a malloc'd string or NULL. */
static char *content_text(json_t *c) {
    if (!c || json_is_null(c)) return NULL;
    if (json_is_string(c)) return strdup(json_string_value(c));
    oai_buf b = {0};
    oai_buf_puts(&b, "");
    size_t i;
    json_t *p;
    json_array_foreach(c, i, p) oai_buf_puts(&b, json_string_value(json_object_get(p, "text")));
    return b.p;
}

/* Render the chat in harmony and tokenize it into q->prompt. */
static mg_status render_chat(frontend *fe, fe_req *q, oai_error *e) {
    json_t *msgs = q->r.messages;
    size_t nm = json_array_size(msgs), cap = nm * 2 + 1, n = 0;
    harmony_msg *hm = calloc(cap, sizeof *hm);
    char **owned = calloc(cap * 2 + 16, sizeof *owned);
    size_t n_owned = 0;
    size_t ntools = q->r.tools ? json_array_size(q->r.tools) : 0;
    harmony_tool *ht = calloc(ntools + 1, sizeof *ht);
    mg_status s = MG_OK;
    if (!hm || !owned || !ht) {
        s = MG_ERRF(MG_ENOMEM, "render");
        goto out;
    }
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        char *text = content_text(json_object_get(m, "content"));
        if (text) owned[n_owned++] = text;
        harmony_msg x = {0};
        x.content = text;
        if (!strcmp(role, "system") || !strcmp(role, "developer"))
            x.role = HARMONY_SYSTEM;
        else if (!strcmp(role, "user"))
            x.role = HARMONY_USER;
        else if (!strcmp(role, "tool")) {
            x.role = HARMONY_TOOL;
            const char *name = json_string_value(json_object_get(m, "name"));
            /* The function's name, when absent, comes from the assistant call it answers. */
            const char *tcid = json_string_value(json_object_get(m, "tool_call_id"));
            for (size_t j = i; !name && tcid && j-- > 0;) {
                json_t *calls = json_object_get(json_array_get(msgs, j), "tool_calls");
                size_t k;
                json_t *call;
                json_array_foreach(calls, k, call) {
                    const char *cid = json_string_value(json_object_get(call, "id"));
                    if (cid && !strcmp(cid, tcid))
                        name = json_string_value(
                            json_object_get(json_object_get(call, "function"), "name"));
                }
            }
            x.name = name ? name : "tool";
        } else {
            x.role = HARMONY_ASSISTANT;
            x.reasoning = json_string_value(json_object_get(m, "reasoning_content"));
            json_t *calls = json_object_get(m, "tool_calls");
            size_t k;
            json_t *call;
            json_array_foreach(calls, k, call) {
                json_t *fn = json_object_get(call, "function");
                harmony_msg y = x;
                if (k > 0) y.content = NULL, y.reasoning = NULL;
                y.tool_name = json_string_value(json_object_get(fn, "name"));
                json_t *args = json_object_get(fn, "arguments");
                if (json_is_string(args))
                    y.tool_args = json_string_value(args);
                else if (args) {
                    char *a = json_dumps(args, JSON_COMPACT);
                    if (a) owned[n_owned++] = a;
                    y.tool_args = a;
                } else
                    y.tool_args = "{}";
                if (n == cap) break;
                hm[n++] = y;
            }
            if (json_array_size(calls) > 0) continue;
        }
        if (n < cap) hm[n++] = x;
    }
    if (q->r.tool_choice && !strcmp(q->r.tool_choice, "none")) ntools = 0;
    for (size_t t = 0; t < ntools; t++) {
        json_t *fn = json_object_get(json_array_get(q->r.tools, t), "function");
        ht[t].name = json_string_value(json_object_get(fn, "name"));
        ht[t].description = json_string_value(json_object_get(fn, "description"));
        json_t *p = json_object_get(fn, "parameters");
        if (p && json_is_object(p)) {
            char *ps = json_dumps(p, JSON_COMPACT | JSON_PRESERVE_ORDER);
            if (ps) owned[n_owned++] = ps;
            ht[t].parameters_json = ps;
        }
    }
    char date[16];
    time_t now = time(NULL);
    struct tm tmv;
    gmtime_r(&now, &tmv);
    strftime(date, sizeof date, "%Y-%m-%d", &tmv);
    harmony_request hr = {
        .current_date = date, .tools = ht, .n_tools = ntools, .msgs = hm, .n_msgs = n};
    const char *eff = q->r.reasoning_effort;
    hr.effort = !eff || !strcmp(eff, "medium") ? HARMONY_EFFORT_MEDIUM
                : !strcmp(eff, "low")          ? HARMONY_EFFORT_LOW
                                               : HARMONY_EFFORT_HIGH;
    q->n_prompt = 0;
    s = harmony_render_ids(fe->tok, &hr, &q->prompt, &q->n_prompt, &q->cap_prompt);
    if (s) oai_fail(e, 400, "invalid_request_error", "invalid_value", NULL, "%s", mg_err_msg());
out:
    for (size_t k = 0; k < n_owned; k++) free(owned[k]);
    free(owned);
    free(hm);
    free(ht);
    return s;
}

static void handle_generate(frontend *fe, fe_conn *c, oai_endpoint ep, const char *body,
                            size_t len) {
    oai_error e;
    fe_req *q = calloc(1, sizeof *q);
    if (!q) {
        reply_json(c, 500, "{}");
        return;
    }
    atomic_init(&q->refs, 1);
    q->fe = fe;
    pthread_mutex_init(&q->mu, NULL);
    q->t_start = now_s();
    uint32_t vocab = fe->tok ? tok_vocab_size(fe->tok) : 0;
    if (oai_parse(ep, body, len, vocab, &q->r, &e)) {
        reply_error(c, &e);
        req_unref(q);
        return;
    }
    snprintf(q->model, sizeof q->model, "%s", q->r.model);
    if (router_count(fe->rt) == 0) {
        oai_fail(&e, 503, "service_unavailable", "no_workers", NULL,
                 "No workers are available to serve the request.");
        reply_error(c, &e);
        req_unref(q);
        return;
    }
    disc_model *ms = NULL;
    size_t nm = 0;
    disc_watch_models_snapshot(fe->wm, &ms, &nm);
    q->context_length = -1;
    for (size_t i = 0; i < nm; i++)
        if (!strcmp(ms[i].name, q->model) &&
            (q->context_length < 0 || ms[i].context_length < q->context_length))
            q->context_length = ms[i].context_length;
    free(ms);
    if (q->context_length < 0) {
        oai_fail(&e, 404, "invalid_request_error", "model_not_found", "model",
                 "The model `%s` does not exist.", q->model);
        reply_error(c, &e);
        req_unref(q);
        return;
    }
    if (!fe->tok && (ep == OAI_CHAT || q->r.prompt_text)) {
        oai_fail(&e, 503, "service_unavailable", "no_tokenizer", NULL,
                 "This frontend has no tokenizer loaded (start it with --tokenizer).");
        reply_error(c, &e);
        req_unref(q);
        return;
    }
    /* Tokenize. */
    if (ep == OAI_CHAT) {
        if (render_chat(fe, q, &e)) {
            reply_error(c, &e);
            req_unref(q);
            return;
        }
    } else if (q->r.prompt_text) {
        if (tok_encode(fe->tok, q->r.prompt_text, q->r.prompt_len, TOK_SPECIAL_ALLOW, &q->prompt,
                       &q->n_prompt, &q->cap_prompt)) {
            oai_fail(&e, 400, "invalid_request_error", "invalid_value", "prompt", "%s",
                     mg_err_msg());
            reply_error(c, &e);
            req_unref(q);
            return;
        }
    } else {
        q->prompt = q->r.prompt_ids;
        q->n_prompt = q->cap_prompt = q->r.n_prompt_ids;
        q->r.prompt_ids = NULL;
    }
    /* Context: prompt plus max_tokens must fit. */
    int64_t ctx = q->context_length, np = (int64_t)q->n_prompt;
    if (np >= ctx || (q->r.max_tokens > 0 && np + q->r.max_tokens > ctx)) {
        if (q->r.max_tokens > 0)
            oai_fail(&e, 400, "invalid_request_error", "context_length_exceeded", "max_tokens",
                     "This model's maximum context length is %lld tokens. However, you requested "
                     "%lld tokens (%lld in the messages, %lld in the completion). Please reduce "
                     "the length of the messages or completion.",
                     (long long)ctx, (long long)(np + q->r.max_tokens), (long long)np,
                     (long long)q->r.max_tokens);
        else
            oai_fail(&e, 400, "invalid_request_error", "context_length_exceeded", "messages",
                     "This model's maximum context length is %lld tokens. However, your prompt "
                     "has %lld tokens.",
                     (long long)ctx, (long long)np);
        reply_error(c, &e);
        req_unref(q);
        return;
    }
    q->max_tokens = q->r.max_tokens > 0 ? q->r.max_tokens : ctx - np;

    /* Output state. */
    oai_make_id(ep, q->id);
    snprintf(q->base, sizeof q->base, "%s", strchr(q->id, '-') + 1);
    q->created = (int64_t)time(NULL);
    if (fe->tok) q->ts = tok_stream_create(fe->tok);
    if (ep == OAI_CHAT && fe->tok) q->hp = harmony_parser_create(fe->tok);
    stopstr_init(&q->stop, q->r.stop, q->r.stop_len, q->r.n_stop);
    oai_sse_head_init(&q->head, ep, q->id, q->created, q->model);
    mg_metric *hs[] = {fe->m.ttft, fe->m.itl, fe->m.duration, fe->m.isl, fe->m.osl};
    mg_histogram **ho[] = {&q->h_ttft, &q->h_itl, &q->h_dur, &q->h_isl, &q->h_osl};
    for (int i = 0; i < 5; i++)
        if (hs[i]) metrics_histogram_child(hs[i], MG_LABELS(q->model), ho[i]);
    if (fe->m.out_tokens) metrics_counter_child(fe->m.out_tokens, MG_LABELS(q->model), &q->c_out);
    if (fe->m.inflight) metrics_gauge_child(fe->m.inflight, MG_LABELS(q->model), &q->g_inflight);
    if (q->h_isl) metrics_histogram_observe(q->h_isl, (double)q->n_prompt);

    fe_conn_ref(c);
    q->conn = c;
    atomic_fetch_add(&q->refs, 1); /* the request plane's reference; the first is the conn's */
    fe_conn_set_on_close(c, on_conn_close, q);
    req_register(q);
    if (q->g_inflight) metrics_gauge_inc(q->g_inflight);

    pthread_mutex_lock(&q->mu);
    mg_status s = submit_locked(q, 0);
    if (s) {
        q->finished = true;
        oai_fail(&e, 503, "service_unavailable", "no_workers", NULL,
                 "No worker could take the request: %s", mg_err_msg());
        reply_error(c, &e);
        count_request(q, "error");
        pthread_mutex_unlock(&q->mu);
        req_done(q);
        return;
    }
    if (q->r.stream) {
        fe_conn_stream(c);
        if (ep == OAI_CHAT) {
            oai_buf rb = {0};
            oai_sse_role(&q->head, &rb);
            fe_conn_write(c, rb.p, rb.len);
            oai_buf_free(&rb);
        }
    }
    pthread_mutex_unlock(&q->mu);
}

static void on_http(void *ud, fe_conn *c, const char *method, const char *path, const char *body,
                    size_t len) {
    frontend *fe = ud;
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    bool post = !strcmp(method, "POST");
    const char *q = strchr(path, '?');
    size_t plen = q ? (size_t)(q - path) : strlen(path);
#define IS(p) (plen == sizeof(p) - 1 && !memcmp(path, p, plen))
    if (IS("/v1/chat/completions") || IS("/v1/completions")) {
        if (!post) {
            reply_json(c, 405,
                       "{\"error\":{\"message\":\"Method not allowed; use POST.\","
                       "\"type\":\"invalid_request_error\",\"param\":null,"
                       "\"code\":\"method_not_allowed\"}}");
            return;
        }
        handle_generate(fe, c, IS("/v1/chat/completions") ? OAI_CHAT : OAI_COMPLETIONS, body, len);
        return;
    }
    if (get && IS("/v1/models")) return handle_models(fe, c);
    if (get && IS("/health")) return handle_health(fe, c);
    if (get && IS("/live")) return reply_json(c, 200, "{\"status\":\"alive\"}");
    if (get && IS("/metrics")) return handle_metrics(c);
#undef IS
    oai_error e;
    oai_fail(&e, 404, "invalid_request_error", "not_found", NULL, "Unknown path: %s %.*s", method,
             (int)plen, path);
    reply_error(c, &e);
}

/* ---- discovery ---- */

static void on_instance(void *ud, disc_change ch, const disc_instance *in) {
    frontend *fe = ud;
    if (ch == DISC_REMOVED) {
        router_remove(fe->rt, in->instance_id);
        MG_INFO("worker %" PRIx64 " left", (uint64_t)in->instance_id);
        /* Move its requests now rather than wait for their streams to fall silent. */
        for (;;) {
            fe_req *hit = NULL;
            pthread_mutex_lock(&fe->mu);
            for (fe_req *q = fe->active; q; q = q->next) {
                pthread_mutex_lock(&q->mu);
                bool on = !q->finished && q->stream && q->target.worker_id == in->instance_id;
                pthread_mutex_unlock(&q->mu);
                if (on) {
                    hit = q;
                    atomic_fetch_add(&q->refs, 1);
                    break;
                }
            }
            pthread_mutex_unlock(&fe->mu);
            if (!hit) break;
            migrate_or_fail(hit, MG_EUNAVAIL);
            req_unref(hit);
        }
        return;
    }
    router_target t = {.worker_id = in->instance_id, .dp_rank = (uint32_t)in->dp_rank};
    if (in->subject[0])
        snprintf(t.subject, sizeof t.subject, "%s", in->subject);
    else
        snprintf(t.subject, sizeof t.subject, "%s.worker.%" PRIx64 ".generate", fe->ns,
                 (uint64_t)in->instance_id);
    router_add(fe->rt, &t);
    if (ch == DISC_ADDED)
        MG_INFO("worker %" PRIx64 " joined: %s dp_rank %d/%d", (uint64_t)in->instance_id, t.subject,
                in->dp_rank, in->dp_size);
}

/* ---- life cycle ---- */

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

mg_status frontend_create(const fe_config *cfg, frontend **out) {
    *out = NULL;
    frontend *fe = calloc(1, sizeof *fe);
    if (!fe) return MG_ERRF(MG_ENOMEM, "frontend");
    fe->cfg = *cfg;
    snprintf(fe->ns, sizeof fe->ns, "%s", cfg->ns ? cfg->ns : "magneto");
    fe->cfg.ns = fe->ns;
    if (fe->cfg.stream_timeout_ms <= 0) fe->cfg.stream_timeout_ms = 300000;
    /* The strings are used during create only; do not keep the caller's pointers. */
    fe->cfg.host = fe->cfg.nats_url = fe->cfg.etcd_url = fe->cfg.tokenizer = NULL;
    pthread_mutex_init(&fe->mu, NULL);
    metrics_init(&fe->m);

    /* Every streaming client holds a socket: lift the descriptor limit to the hard limit. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    mg_status s;
    if (cfg->tokenizer && cfg->tokenizer[0]) {
        s = is_dir(cfg->tokenizer) ? tok_load_dir(cfg->tokenizer, &fe->tok)
                                   : tok_load_tiktoken(cfg->tokenizer, &fe->tok);
        if (s) goto fail;
    }
    if (cfg->router_mode == ROUTER_KV)
        MG_WARN("--router-mode kv: the KV-aware router is not built in yet; picking round-robin");
    s = router_create(cfg->router_mode, (uint64_t)time(NULL), &fe->rt);
    if (s) goto fail;

    bus_options bo;
    bus_options_default(&bo);
    if (cfg->nats_url) bo.url = cfg->nats_url;
    bo.name = "magneto-frontend";
    s = bus_connect(&bo, &fe->bus);
    if (s) goto fail;
    bus_inbox_options io = {.timeout_ms = fe->cfg.stream_timeout_ms};
    s = bus_inbox_create(fe->bus, &io, &fe->inbox);
    if (s) goto fail;

    const char *eurl = cfg->etcd_url ? cfg->etcd_url : getenv("MAGNETO_ETCD_URL");
    s = etcd_client_create(eurl ? eurl : "http://127.0.0.1:2379", 0, &fe->etcd);
    if (s) goto fail;
    s = disc_watch_models(fe->etcd, fe->ns, NULL, NULL, NULL, &fe->wm);
    if (s) goto fail;
    s = disc_watch_instances(fe->etcd, fe->ns, "worker", on_instance, fe, &fe->wi);
    if (s) goto fail;

    fe_http_opts ho = {.host = cfg->host,
                       .port = cfg->port,
                       .threads = cfg->http_threads,
                       .max_body = cfg->max_body,
                       .handler = on_http,
                       .ud = fe};
    s = fe_http_start(&ho, &fe->http);
    if (s) goto fail;
    MG_INFO("frontend listening on port %d (namespace %s, router %s, migration limit %d, "
            "%zu workers)",
            fe_http_port(fe->http), fe->ns, router_mode_name(cfg->router_mode),
            cfg->migration_limit, router_count(fe->rt));
    *out = fe;
    return MG_OK;
fail:
    frontend_destroy(fe);
    return s;
}

void frontend_destroy(frontend *fe) {
    if (!fe) return;
    /* HTTP first: ends every stream (connections complete, cancelling their requests). */
    fe_http_stop(fe->http);
    disc_watch_destroy(fe->wi);
    disc_watch_destroy(fe->wm);
    /* Requests still active (no connection left) end here; their streams close. */
    for (;;) {
        pthread_mutex_lock(&fe->mu);
        fe_req *q = fe->active;
        if (q) atomic_fetch_add(&q->refs, 1);
        pthread_mutex_unlock(&fe->mu);
        if (!q) break;
        pthread_mutex_lock(&q->mu);
        bool was = !q->finished;
        q->finished = true;
        bus_stream *s = q->stream;
        q->stream = NULL;
        pthread_mutex_unlock(&q->mu);
        if (s) bus_stream_close(s);
        if (was)
            req_done(q);
        else
            req_unregister(q);
        req_unref(q);
    }
    bus_inbox_destroy(fe->inbox);
    bus_destroy(fe->bus);
    etcd_client_destroy(fe->etcd);
    router_destroy(fe->rt);
    tok_destroy(fe->tok);
    pthread_mutex_destroy(&fe->mu);
    free(fe);
}

int frontend_port(const frontend *fe) {
    return fe_http_port(fe->http);
}

size_t frontend_workers(frontend *fe) {
    return router_count(fe->rt);
}

size_t frontend_inflight(frontend *fe) {
    return atomic_load(&fe->n_active);
}
