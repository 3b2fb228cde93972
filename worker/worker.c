/* worker.c - magneto-worker: one attention data-parallel rank serving GenerateRequests.
 *
 * Data flow:
 *   NATS {ns}.worker.{id}.generate --(bus thread: decode, engine_submit)--> engine thread
 *   engine output callback --(queue)--> sender thread --(GenerateChunk, seq 0,1,2..)--> the
 *   request's reply subject
 *   engine KV events --> {ns}.kv_events ; load thread --> {ns}.load every load-interval-ms
 *   NATS {ns}.worker.{id}.cancel --> engine_cancel
 * The process registers an instance card and a model card in etcd under a 10 s lease
 * (discovery.h); its instance id (the lease) names its subjects. It subscribes under a new id
 * before the card that names it is put, so nobody can reach a subject without a subscriber.
 *
 * Threads: main (set-up, then waits for a signal), the engine thread, the output sender,
 * libnats delivery threads, the discovery keep-alive thread, the load publisher and the
 * sysserver thread. Per-request state (wreq) is created on the bus thread and freed by the
 * sender once it has sent the request's last chunk. */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "config.h"
#include "discovery.h"
#include "engine.h"
#include "etcd.h"
#include "log.h"
#include "magneto.pb-c.h"
#include "metrics.h"
#include "mocker.h"
#include "status.h"
#include "sysserver.h"
#ifdef MG_HAVE_CPU
#include "cpu_backend.h"
#endif
#ifdef MG_HAVE_CUDA
#include "cuda_backend.h"
#include "cuda_plan.h"
#endif

/* ---- settings ------------------------------------------------------------------------------ */

typedef struct worker_cfg {
    char *ns, *nats_url, *etcd_url, *backend, *model, *served_name, *group, *role, *sys_host;
    char *tokenizer_id, *random_weights;
    int64_t dp_rank, dp_size, gpu, sys_port, load_interval_ms, threads, cuda_kernels;
    bool cuda_graphs, cuda_gemm_autotune, cuda_sample_split;
    mg_engine_config engine;
    mg_mocker_config mocker;
} worker_cfg;

#define BASE_ROWS 20
#define MAX_ROWS  (BASE_ROWS + MG_ENGINE_CONFIG_NOPTS + MG_MOCKER_CONFIG_NOPTS)

static int worker_cfg_rows(worker_cfg *c, mg_cfg_opt *rows) {
    mg_cfg_opt base[BASE_ROWS] = {
        {"namespace", MG_CFG_STR, &c->ns, "magneto", 1, 0,
         "deployment namespace (prefixes keys and subjects)", NULL},
        {"nats-url", MG_CFG_STR, &c->nats_url, "nats://127.0.0.1:4222", 1, 0, "NATS server(s)",
         NULL},
        {"etcd-url", MG_CFG_STR, &c->etcd_url, "http://127.0.0.1:2379", 1, 0, "etcd v3 gateway",
         NULL},
        /* yaml "": TensorRT-LLM engine files have keys of these names (backend: pytorch, model,
         * tokenizer) that mean something else; only flags and the environment set them. */
        {"backend", MG_CFG_STR, &c->backend, "mocker", 1, 0, "engine backend: mocker | cpu | cuda",
         ""},
        {"model-path", MG_CFG_STR, &c->model, NULL, 1, 0, "checkpoint folder (cpu, cuda)", ""},
        {"served-model-name", MG_CFG_STR, &c->served_name, "openai/gpt-oss-120b", 1, 0,
         "model name clients ask for", NULL},
        {"dp-rank", MG_CFG_INT, &c->dp_rank, "0", 0, 4095, "attention data-parallel rank", NULL},
        {"dp-size", MG_CFG_INT, &c->dp_size, "1", 1, 4096, "ranks in the group", NULL},
        {"group", MG_CFG_STR, &c->group, "g0", 1, 0, "rank group name (one NCCL communicator)",
         NULL},
        {"gpu", MG_CFG_INT, &c->gpu, "-1", -1, 1023, "GPU index (-1: none)", NULL},
        {"role", MG_CFG_STR, &c->role, "agg", 1, 0, "agg | prefill | decode", NULL},
        {"load-interval-ms", MG_CFG_INT, &c->load_interval_ms, "100", 10, 60000,
         "period of {ns}.load messages", NULL},
        {"threads", MG_CFG_INT, &c->threads, "0", 0, 1024, "CPU backend threads (0: all cores)",
         NULL},
        {"tokenizer-name", MG_CFG_STR, &c->tokenizer_id, "o200k_harmony", 1, 0,
         "tokenizer identity on the model card", ""},
        {"random-weights", MG_CFG_STR, &c->random_weights, NULL, 1, 0,
         "cuda: no checkpoint; weights of this shape (120b, 20b, tiny) drawn on the device, for "
         "benchmarks",
         ""},
        {"cuda-kernel-version", MG_CFG_INT, &c->cuda_kernels, "7", 1, 7,
         "cuda: kernel set (2: MoE 8x8 tiles, split-KV decode attention; 3: MXFP4 streamed one "
         "block per lane; 4: 3 with large batches streamed through shared memory; 5: 4 with "
         "attention on the tensor cores; 6: 5 with the split-KV merge and the router top-k fused; "
         "7: 6 with the norms and residual adds of steps of up to 4 tokens fused)",
         NULL},
        {"cuda-graphs", MG_CFG_BOOL, &c->cuda_graphs, "true", 1, 0,
         "cuda: replay decode steps from CUDA graphs (padded batch buckets; false: eager)", NULL},
        {"cuda-sample-split", MG_CFG_BOOL, &c->cuda_sample_split, "true", 1, 0,
         "cuda: steps of up to 8 sequences choose their tokens with each logits row spread over "
         "many thread blocks (the same tokens; false: a block a row)",
         NULL},
        {"cuda-gemm-autotune", MG_CFG_BOOL, &c->cuda_gemm_autotune, "false", 1, 0,
         "cuda: time cuBLASLt's candidate algorithms for each decode-step GEMM shape on first "
         "use and keep the fastest (false: the heuristic's first)",
         NULL},
        {"extra-engine-args", MG_CFG_YAML, NULL, NULL, 1, 0, "engine YAML (TensorRT-LLM keys)",
         NULL},
    };
    static char *yaml_path;
    base[BASE_ROWS - 1].dst = &yaml_path;
    memcpy(rows, base, sizeof(base));
    int n = BASE_ROWS;
    n += engine_config_opts(&c->engine, rows + n);
    n += mocker_config_opts(&c->mocker, rows + n);
    return n;
}

/* ---- state --------------------------------------------------------------------------------- */

typedef struct worker {
    worker_cfg cfg;
    bus *bus;
    etcd_client *etcd;
    disc_reg *reg;
    mg_engine *engine;
    mg_backend *backend;
    sysserver *sys;
    pthread_mutex_t sub_mu; /* guards the subscriptions while re-registering */
    bus_sub *gen_sub, *cancel_sub;
    bus_sub *old_subs[16]; /* subscriptions of earlier instance ids, until exit */
    int n_old;
    _Atomic int64_t id; /* instance id (lease) */
    char kv_subject[160], load_subject[160];
    atomic_bool stop;
    pthread_t load_th;
    pthread_mutex_t stop_mu;
    pthread_cond_t stop_cv;
    /* metrics */
    mg_counter *m_req_ok, *m_req_err;
    mg_gauge *m_inflight;
    mg_histogram *m_duration, *m_step_ms, *m_batch;
    mg_gauge *g_active_blocks, *g_total_blocks, *g_usage, *g_hit, *g_window_usage;
    atomic_long inflight;
    /* output queue: the engine thread appends, the sender thread sends (out_mu) */
    pthread_t out_th;
    bool out_started, out_stop;
    pthread_mutex_t out_mu;
    pthread_cond_t out_cv;
    struct outmsg *out_head, *out_tail;
} worker;

/* One request in flight on this worker. */
typedef struct wreq {
    worker *w;
    uint64_t seq;           /* next chunk number */
    uint32_t prompt_tokens; /* the original prompt (usage stays right after migration) */
    uint32_t carried;       /* tokens generated before a migration, part of the prompt here */
    struct timespec start;
    char id[128];
    char reply[256];
} wreq;

static double since_s(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) * 1e-9;
}

/* Pack and send one GenerateChunk; small chunks go through a stack buffer. */
static void send_chunk(worker *w, wreq *r, const uint32_t *tokens, size_t n,
                       Magneto__FinishReason fin, const mg_usage *usage, const char *error) {
    Magneto__GenerateChunk ch = MAGNETO__GENERATE_CHUNK__INIT;
    Magneto__Usage u = MAGNETO__USAGE__INIT;
    ch.request_id = r->id;
    ch.seq = r->seq;
    ch.n_token_ids = n;
    ch.token_ids = (uint32_t *)tokens;
    ch.finish = fin;
    ch.worker_id = (uint64_t)atomic_load(&w->id);
    ch.dp_rank = (uint32_t)w->cfg.dp_rank;
    if (usage) {
        u.prompt_tokens = r->prompt_tokens;
        u.completion_tokens = (uint32_t)usage->completion_tokens + r->carried;
        u.cached_tokens = (uint32_t)usage->cached_tokens;
        ch.usage = &u;
    }
    if (error) ch.error = (char *)error;
    size_t len = magneto__generate_chunk__get_packed_size(&ch);
    uint8_t stack[4096];
    uint8_t *buf = len <= sizeof(stack) ? stack : malloc(len);
    if (!buf) {
        MG_LOGR(MG_LOG_ERROR, r->id, "out of memory packing a chunk of %zu bytes", len);
        return;
    }
    magneto__generate_chunk__pack(&ch, buf);
    bool last = fin != MAGNETO__FINISH_REASON__FINISH_NONE;
    if (bus_stream_send(w->bus, r->reply, r->seq, buf, len, last) != MG_OK)
        MG_LOGR(MG_LOG_WARN, r->id, "sending chunk %" PRIu64 ": %s", r->seq, mg_err_msg());
    r->seq++;
    if (buf != stack) free(buf);
}

static Magneto__FinishReason finish_to_proto(mg_finish f) {
    switch (f) {
    case MG_FINISH_NONE:
        return MAGNETO__FINISH_REASON__FINISH_NONE;
    case MG_FINISH_STOP:
        return MAGNETO__FINISH_REASON__FINISH_STOP;
    case MG_FINISH_LENGTH:
        return MAGNETO__FINISH_REASON__FINISH_LENGTH;
    case MG_FINISH_CANCELLED:
        return MAGNETO__FINISH_REASON__FINISH_CANCELLED;
    case MG_FINISH_ERROR:
        return MAGNETO__FINISH_REASON__FINISH_ERROR;
    }
    return MAGNETO__FINISH_REASON__FINISH_ERROR;
}

/* One engine output waiting for the sender: new tokens and, once, the finish. */
typedef struct outmsg {
    struct outmsg *next;
    wreq *r;
    mg_finish finish;
    mg_usage usage;
    size_t n;
    uint32_t tokens[];
} outmsg;

/* Send one output; after the finish the request is done here and r is freed. */
static void deliver(worker *w, wreq *r, const uint32_t *tokens, size_t n, mg_finish finish,
                    const mg_usage *usage) {
    send_chunk(w, r, tokens, n, finish_to_proto(finish), finish ? usage : NULL,
               finish == MG_FINISH_ERROR ? "engine error" : NULL);
    if (finish != MG_FINISH_NONE) {
        metrics_histogram_observe(w->m_duration, since_s(&r->start));
        metrics_counter_inc(finish == MG_FINISH_ERROR ? w->m_req_err : w->m_req_ok);
        metrics_gauge_set(w->m_inflight, (double)atomic_fetch_sub(&w->inflight, 1) - 1);
        free(r);
    }
}

/* Engine thread: queue the output for the sender. Packing a chunk and publishing it with its
 * stream headers costs microseconds; at 256 sequences a step that would hold the engine thread,
 * and so the GPU, for most of a millisecond per step. The queue is FIFO, so a request's chunks
 * keep their order. Without the sender (not started, or no memory) it sends at once. */
static void on_output(void *ud, const mg_output *out) {
    wreq *r = ud;
    worker *w = r->w;
    if (out->n_tokens == 0 && out->finish == MG_FINISH_NONE) return;
    size_t n = (size_t)out->n_tokens;
    outmsg *m = w->out_started ? malloc(sizeof(*m) + n * sizeof(uint32_t)) : NULL;
    if (!m) {
        deliver(w, r, (const uint32_t *)out->tokens, n, out->finish, &out->usage);
        return;
    }
    m->next = NULL;
    m->r = r;
    m->finish = out->finish;
    m->usage = out->usage;
    m->n = n;
    if (n) memcpy(m->tokens, out->tokens, n * sizeof(uint32_t));
    pthread_mutex_lock(&w->out_mu);
    bool was_empty = !w->out_head;
    if (w->out_tail)
        w->out_tail->next = m;
    else
        w->out_head = m;
    w->out_tail = m;
    if (was_empty) pthread_cond_signal(&w->out_cv); /* the sender waits only on an empty queue */
    pthread_mutex_unlock(&w->out_mu);
}

/* Sender thread: send what the engine queued, until stopped with the queue empty. */
static void *sender_main(void *arg) {
    worker *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->out_mu);
        while (!w->out_head && !w->out_stop) pthread_cond_wait(&w->out_cv, &w->out_mu);
        outmsg *list = w->out_head;
        w->out_head = w->out_tail = NULL;
        bool stop = w->out_stop;
        pthread_mutex_unlock(&w->out_mu);
        for (outmsg *m = list, *next; m; m = next) {
            next = m->next;
            deliver(w, m->r, m->tokens, m->n, m->finish, &m->usage);
            free(m);
        }
        if (stop && !list) return NULL;
    }
}

static void sender_stop(worker *w) {
    if (!w->out_started) return;
    pthread_mutex_lock(&w->out_mu);
    w->out_stop = true;
    pthread_cond_signal(&w->out_cv);
    pthread_mutex_unlock(&w->out_mu);
    pthread_join(w->out_th, NULL); /* it drains the queue first */
    w->out_started = false;
}

/* Bus thread: a GenerateRequest. */
static void on_generate(void *arg, const bus_msg *m) {
    worker *w = arg;
    Magneto__GenerateRequest *q = magneto__generate_request__unpack(NULL, m->len, m->data);
    const char *reply = m->reply;
    if (!q) {
        MG_WARN("dropping a malformed GenerateRequest (%zu bytes) on %s", m->len, m->subject);
        return;
    }
    if (q->reply_subject && q->reply_subject[0]) reply = q->reply_subject;
    if (!reply || !q->request_id || !q->request_id[0] ||
        strlen(q->request_id) >= sizeof(((wreq *)0)->id) ||
        strlen(reply) >= sizeof(((wreq *)0)->reply)) {
        MG_WARN("dropping a GenerateRequest without request id or reply subject");
        magneto__generate_request__free_unpacked(q, NULL);
        return;
    }
    wreq *r = calloc(1, sizeof(*r));
    if (!r) {
        magneto__generate_request__free_unpacked(q, NULL);
        return;
    }
    r->w = w;
    clock_gettime(CLOCK_MONOTONIC, &r->start);
    snprintf(r->id, sizeof(r->id), "%s", q->request_id);
    snprintf(r->reply, sizeof(r->reply), "%s", reply);
    uint32_t n_prompt = (uint32_t)q->n_token_ids;
    r->prompt_tokens =
        q->prompt_tokens && q->prompt_tokens <= n_prompt ? q->prompt_tokens : n_prompt;
    r->carried = n_prompt - r->prompt_tokens;

    mg_request req = {0};
    req.id = r->id;
    req.prompt = (const int32_t *)q->token_ids;
    req.n_prompt = (int)n_prompt;
    req.sampling = mg_sampling_greedy();
    int32_t stops[MG_REQUEST_MAX_STOP_IDS];
    if (q->sampling) {
        Magneto__SamplingParams *s = q->sampling;
        req.sampling.temperature = s->temperature;
        req.sampling.top_p = s->top_p > 0 ? s->top_p : 1.0f;
        req.sampling.top_k = s->top_k;
        req.sampling.seed = s->seed;
        req.has_seed = s->has_seed;
        req.ignore_eos = s->ignore_eos;
        req.min_tokens = (int32_t)s->min_tokens;
        req.max_tokens = (int32_t)s->max_tokens;
        size_t ns = s->n_stop_token_ids < MG_REQUEST_MAX_STOP_IDS ? s->n_stop_token_ids
                                                                  : MG_REQUEST_MAX_STOP_IDS;
        for (size_t i = 0; i < ns; i++) stops[i] = (int32_t)s->stop_token_ids[i];
        req.stop_ids = stops;
        req.n_stop_ids = (int)ns;
    }
    req.cb = on_output;
    req.ud = r;
    metrics_gauge_set(w->m_inflight, (double)atomic_fetch_add(&w->inflight, 1) + 1);
    mg_status st = engine_submit(w->engine, &req);
    magneto__generate_request__free_unpacked(q, NULL);
    if (st != MG_OK) {
        /* A bad request ends at once with an error chunk; nothing else is queued for it. */
        MG_LOGR(MG_LOG_WARN, r->id, "rejected: %s", mg_err_msg());
        mg_usage u = {0};
        send_chunk(w, r, NULL, 0, MAGNETO__FINISH_REASON__FINISH_ERROR, &u, mg_err_msg());
        metrics_counter_inc(w->m_req_err);
        metrics_gauge_set(w->m_inflight, (double)atomic_fetch_sub(&w->inflight, 1) - 1);
        free(r);
    }
}

static void on_cancel(void *arg, const bus_msg *m) {
    worker *w = arg;
    Magneto__CancelRequest *c = magneto__cancel_request__unpack(NULL, m->len, m->data);
    if (!c) return;
    if (c->request_id && c->request_id[0]) {
        MG_LOGR(MG_LOG_DEBUG, c->request_id, "cancel");
        engine_cancel(w->engine, c->request_id);
    }
    magneto__cancel_request__free_unpacked(c, NULL);
}

/* Engine thread: KV events to {ns}.kv_events. */
static void on_kv_event(void *ud, const mg_kv_event *ev) {
    worker *w = ud;
    Magneto__KvEvent e = MAGNETO__KV_EVENT__INIT;
    Magneto__KvStored st = MAGNETO__KV_STORED__INIT;
    Magneto__KvRemoved rm = MAGNETO__KV_REMOVED__INIT;
    Magneto__KvCleared cl = MAGNETO__KV_CLEARED__INIT;
    e.worker_id = (uint64_t)atomic_load(&w->id);
    e.dp_rank = (uint32_t)w->cfg.dp_rank;
    e.event_id = ev->event_id;
    switch (ev->kind) {
    case MG_KV_STORED:
        st.has_parent = ev->has_parent;
        st.parent_hash = ev->parent_hash;
        st.n_block_hashes = (size_t)ev->n;
        st.block_hashes = (uint64_t *)ev->block_hashes;
        st.n_local_hashes = ev->local_hashes ? (size_t)ev->n : 0;
        st.local_hashes = (uint64_t *)ev->local_hashes;
        e.data_case = MAGNETO__KV_EVENT__DATA_STORED;
        e.stored = &st;
        break;
    case MG_KV_REMOVED:
        rm.n_block_hashes = (size_t)ev->n;
        rm.block_hashes = (uint64_t *)ev->block_hashes;
        e.data_case = MAGNETO__KV_EVENT__DATA_REMOVED;
        e.removed = &rm;
        break;
    case MG_KV_CLEARED:
        e.data_case = MAGNETO__KV_EVENT__DATA_CLEARED;
        e.cleared = &cl;
        break;
    }
    size_t len = magneto__kv_event__get_packed_size(&e);
    uint8_t stack[8192];
    uint8_t *buf = len <= sizeof(stack) ? stack : malloc(len);
    if (!buf) return;
    magneto__kv_event__pack(&e, buf);
    bus_publish(w->bus, w->kv_subject, NULL, buf, len);
    if (buf != stack) free(buf);
}

static void on_step(void *ud, const mg_step_info *info, double step_ms) {
    worker *w = ud;
    metrics_histogram_observe(w->m_step_ms, step_ms / 1000.0);
    metrics_histogram_observe(w->m_batch, info->n_seqs);
}

static void publish_load(worker *w) {
    mg_engine_stats s = engine_stats(w->engine);
    Magneto__LoadMetrics lm = MAGNETO__LOAD_METRICS__INIT;
    lm.worker_id = (uint64_t)atomic_load(&w->id);
    lm.dp_rank = (uint32_t)w->cfg.dp_rank;
    lm.active_slots = (uint32_t)s.active_slots;
    lm.total_slots = (uint32_t)s.total_slots;
    lm.waiting_requests = (uint32_t)s.waiting;
    lm.active_blocks = (uint64_t)s.kv_active_blocks;
    lm.total_blocks = (uint64_t)s.kv_total_blocks;
    lm.cache_usage = (float)s.cache_usage;
    lm.prefix_hit_rate = (float)s.prefix_hit_rate;
    uint8_t buf[128];
    size_t len = magneto__load_metrics__pack(&lm, buf);
    bus_publish(w->bus, w->load_subject, NULL, buf, len);
    metrics_gauge_set(w->g_active_blocks, s.kv_active_blocks);
    metrics_gauge_set(w->g_total_blocks, s.kv_total_blocks);
    metrics_gauge_set(w->g_usage, s.cache_usage * 100.0);
    metrics_gauge_set(w->g_window_usage, s.window_cache_usage * 100.0);
    metrics_gauge_set(w->g_hit, s.prefix_hit_rate);
}

/* Publishes {ns}.load every interval and beats the /live heartbeat. */
static void *load_main(void *arg) {
    worker *w = arg;
    pthread_mutex_lock(&w->stop_mu);
    while (!atomic_load(&w->stop)) {
        pthread_mutex_unlock(&w->stop_mu);
        publish_load(w);
        sysserver_heartbeat(w->sys);
        pthread_mutex_lock(&w->stop_mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long ns = ts.tv_nsec + (long)w->cfg.load_interval_ms * 1000000L;
        ts.tv_sec += ns / 1000000000L;
        ts.tv_nsec = ns % 1000000000L;
        if (!atomic_load(&w->stop)) pthread_cond_timedwait(&w->stop_cv, &w->stop_mu, &ts);
    }
    pthread_mutex_unlock(&w->stop_mu);
    return NULL;
}

/* Subscribe the request and cancel subjects of instance id (called before the card is put). */
static void serve_as(void *ud, int64_t old_id, disc_instance *card) {
    worker *w = ud;
    char cancel[192];
    snprintf(cancel, sizeof(cancel), "%s.worker.%" PRIx64 ".cancel", w->cfg.ns,
             (uint64_t)card->instance_id);
    bus_sub *gen = NULL, *can = NULL;
    if (bus_subscribe(w->bus, card->subject, NULL, on_generate, w, &gen) != MG_OK ||
        bus_subscribe(w->bus, cancel, NULL, on_cancel, w, &can) != MG_OK) {
        MG_LOG_ERR("subscribing the request subjects");
        bus_sub_destroy(gen);
        return;
    }
    bus_flush(w->bus, 2000); /* the server knows the subscription before anyone can find it */
    pthread_mutex_lock(&w->sub_mu);
    bus_sub *old_gen = w->gen_sub, *old_can = w->cancel_sub;
    w->gen_sub = gen;
    w->cancel_sub = can;
    atomic_store(&w->id, card->instance_id);
    pthread_mutex_unlock(&w->sub_mu);
    /* The old subjects stay served: requests already on their way still find a subscriber. */
    if (old_gen && w->n_old < (int)(sizeof(w->old_subs) / sizeof(w->old_subs[0])) - 1) {
        w->old_subs[w->n_old++] = old_gen;
        w->old_subs[w->n_old++] = old_can;
    } else {
        bus_sub_destroy(old_gen);
        bus_sub_destroy(old_can);
    }
    if (old_id)
        MG_WARN("serving as %" PRIx64 " (was %" PRIx64 ")", (uint64_t)card->instance_id,
                (uint64_t)old_id);
}

/* Until the engine, the bus and the registration exist, the worker is not ready (and health()
 * would read them before they are set). */
static bool health_starting(void *arg, json_t *details) {
    (void)arg;
    json_object_set_new(details, "state", json_string("starting"));
    return false;
}

static bool health(void *arg, json_t *details) {
    worker *w = arg;
    mg_engine_stats s = engine_stats(w->engine);
    json_object_set_new(details, "instance_id", json_integer(atomic_load(&w->id)));
    json_object_set_new(details, "nats_connected", json_boolean(bus_is_connected(w->bus)));
    json_object_set_new(details, "active_slots", json_integer(s.active_slots));
    json_object_set_new(details, "waiting", json_integer(s.waiting));
    return bus_is_connected(w->bus) && atomic_load(&w->id) != 0;
}

static mg_status metrics_setup(worker *w) {
    mg_registry *reg = metrics_default();
    mg_metric *m;
    const char *const lbl[] = {"status", NULL};
    mg_status s = metrics_counter_new(reg, MG_M_WORKER_REQUESTS_TOTAL,
                                      "Requests finished by this worker", lbl, &m);
    if (s) return s;
    if ((s = metrics_counter_child(m, (const char *const[]){"success", NULL}, &w->m_req_ok)))
        return s;
    if ((s = metrics_counter_child(m, (const char *const[]){"error", NULL}, &w->m_req_err)))
        return s;
#define GAUGE(name, help, dst)                                                                     \
    if ((s = metrics_gauge_new(reg, name, help, NULL, &m)) ||                                      \
        (s = metrics_gauge_child(m, NULL, dst)))                                                   \
        return s;
    GAUGE(MG_M_WORKER_INFLIGHT_REQUESTS, "Requests in flight on this worker", &w->m_inflight);
    GAUGE(MG_M_KVSTATS_ACTIVE_BLOCKS, "KV blocks in use", &w->g_active_blocks);
    GAUGE(MG_M_KVSTATS_TOTAL_BLOCKS, "KV blocks in the pool", &w->g_total_blocks);
    GAUGE(MG_M_KVSTATS_GPU_CACHE_USAGE, "KV cache usage in percent", &w->g_usage);
    GAUGE(MG_M_KVSTATS_PREFIX_HIT_RATE, "Prompt blocks found in the prefix cache, fraction",
          &w->g_hit);
    GAUGE("magneto_component_kvstats_window_cache_usage_percent",
          "Sliding-window layers' KV pool usage in percent (0 without one)", &w->g_window_usage);
#undef GAUGE
    double b[16];
    metrics_buckets_exponential(0.001, 2, 16, b);
    if ((s = metrics_histogram_new(reg, MG_M_WORKER_DURATION_SECONDS, "Request time on this worker",
                                   NULL, b, 16, &m)) ||
        (s = metrics_histogram_child(m, NULL, &w->m_duration)))
        return s;
    double sb[16];
    metrics_buckets_exponential(0.0001, 2, 16, sb);
    if ((s = metrics_histogram_new(reg, "magneto_component_step_seconds", "Engine step time", NULL,
                                   sb, 16, &m)) ||
        (s = metrics_histogram_child(m, NULL, &w->m_step_ms)))
        return s;
    double bb[12];
    metrics_buckets_exponential(1, 2, 12, bb);
    if ((s = metrics_histogram_new(reg, "magneto_component_batch_size", "Sequences per engine step",
                                   NULL, bb, 12, &m)) ||
        (s = metrics_histogram_child(m, NULL, &w->m_batch)))
        return s;
    return metrics_process_register(reg);
}

static mg_status backend_create(worker *w) {
    const char *b = w->cfg.backend;
    if (!strcmp(b, "mocker")) return mocker_create(&w->cfg.mocker, &w->cfg.engine, &w->backend);
#ifdef MG_HAVE_CPU
    if (!strcmp(b, "cpu")) {
        if (!w->cfg.model) return MG_ERRF(MG_EINVAL, "--backend cpu needs --model-path DIR");
        const mg_engine_config *e = &w->cfg.engine;
        cpu_backend_opts o = {0};
        o.block_size = (int)e->kv_block_size;
        /* The CPU backend keeps float32 KV in host memory: kv_cache_config.max_tokens sizes
         * the pool when given, else room for max_batch_size sequences of max_seq_len, capped at
         * 16,384 tokens (256 MiB for the tiny preset) so the defaults cannot exhaust the host. */
        int64_t tokens = e->kv_max_tokens;
        if (!tokens) {
            tokens = e->max_batch_size * e->max_seq_len;
            if (tokens > 16384) {
                tokens = 16384;
                MG_INFO("cpu backend: KV pool of %" PRId64 " tokens; kv_cache_config.max_tokens "
                        "(--kv-max-tokens) sets another size",
                        tokens);
            }
        }
        o.num_blocks = (int)((tokens + e->kv_block_size - 1) / e->kv_block_size);
        o.max_tokens = (int)e->max_num_tokens;
        o.max_ctx = (int)e->max_seq_len;
        o.threads = (int)w->cfg.threads;
        o.window_pool = e->sliding_window_pool;
        o.max_seqs = (int)e->max_batch_size;
        return cpu_backend_open(w->cfg.model, &o, &w->backend);
    }
#endif
#ifdef MG_HAVE_CUDA
    if (!strcmp(b, "cuda")) {
        const mg_engine_config *e = &w->cfg.engine;
        cuda_backend_opts o = {0};
        mg_status s;
        o.device = w->cfg.gpu < 0 ? 0 : (int)w->cfg.gpu;
        o.free_gpu_memory_fraction = e->free_gpu_memory_fraction;
        if (e->kv_max_tokens)
            o.num_blocks = (int)((e->kv_max_tokens + e->kv_block_size - 1) / e->kv_block_size);
        o.block_size = (int)e->kv_block_size;
        o.max_tokens = (int)e->max_num_tokens;
        o.max_seqs = (int)e->max_batch_size;
        o.max_ctx = (int)e->max_seq_len;
        o.kernel_version = (int)w->cfg.cuda_kernels;
        o.cuda_graphs = w->cfg.cuda_graphs;
        o.pdl_max_tokens = CUDA_PDL_MAX_TOKENS;
        o.gemm_autotune = w->cfg.cuda_gemm_autotune;
        o.sample_split = w->cfg.cuda_sample_split;
        o.window_pool = e->sliding_window_pool;
        if (w->cfg.random_weights) {
            mg_model_config mc;
            s = cuda_plan_preset(w->cfg.random_weights, &mc);
            if (s) return s;
            MG_WARN("random weights of the %s shape: outputs are meaningless (benchmarks only)",
                    w->cfg.random_weights);
            s = cuda_backend_create_random(&mc, 1, &o, &w->backend);
        } else if (!w->cfg.model) {
            return MG_ERRF(MG_EINVAL, "--backend cuda needs --model-path DIR or --random-weights");
        } else {
            s = cuda_backend_open(w->cfg.model, &o, &w->backend);
        }
        /* every decode graph before serving: no request waits for a capture */
        return s ? s : cuda_backend_capture_graphs(w->backend);
    }
#endif
    return MG_ERRF(MG_EUNSUPPORTED, "--backend %s: not built into this binary (have: mocker%s%s)",
                   b,
#ifdef MG_HAVE_CPU
                   ", cpu",
#else
                   "",
#endif
#ifdef MG_HAVE_CUDA
                   ", cuda"
#else
                   ""
#endif
    );
}

static worker *the_worker;
static void on_signal(int sig) {
    (void)sig;
    if (!the_worker) return;
    atomic_store(&the_worker->stop, true);
}

int main(int argc, char **argv) {
    static worker W;
    worker *w = &W;
    the_worker = w;
    mg_log_init("worker", -1);
    engine_config_defaults(&w->cfg.engine);
    mocker_config_defaults(&w->cfg.mocker);
    mg_cfg_opt rows[MAX_ROWS + 2];
    int n = worker_cfg_rows(&w->cfg, rows);
    mg_cfg_opt sys[] = {SYSSERVER_CFG_ROWS(&w->cfg.sys_host, &w->cfg.sys_port, "0")};
    memcpy(rows + n, sys, sizeof(sys));
    n += 2;
    mg_status s =
        mg_cfg_parse(rows, n, argc, argv, "magneto-worker",
                     "One engine rank: serves GenerateRequests from NATS, registers in etcd.");
    if (s == MG_ECANCELED) return 0;
    if (s) {
        fprintf(stderr, "magneto-worker: %s\n", mg_err_msg());
        return 2;
    }
    mg_log_init("worker", (int)w->cfg.dp_rank);
    if ((s = engine_config_check(&w->cfg.engine))) {
        fprintf(stderr, "magneto-worker: %s\n", mg_err_msg());
        return 2;
    }
    pthread_mutex_init(&w->sub_mu, NULL);
    pthread_mutex_init(&w->out_mu, NULL);
    pthread_cond_init(&w->out_cv, NULL);
    pthread_mutex_init(&w->stop_mu, NULL);
    pthread_cond_init(&w->stop_cv, NULL);
    snprintf(w->kv_subject, sizeof(w->kv_subject), "%s.kv_events", w->cfg.ns);
    snprintf(w->load_subject, sizeof(w->load_subject), "%s.load", w->cfg.ns);

    int rc = 1;
    if ((s = backend_create(w))) {
        MG_LOG_ERR("backend");
        goto out;
    }
    if ((s = metrics_setup(w))) {
        MG_LOG_ERR("metrics");
        goto out;
    }
    sysserver_opts so = {.host = w->cfg.sys_host,
                         .port = (int)w->cfg.sys_port,
                         .component = "worker",
                         .live_timeout_ms = 5000};
    if ((s = sysserver_start(&so, &w->sys))) {
        MG_LOG_ERR("system server");
        goto out;
    }
    sysserver_set_health(w->sys, health_starting, NULL);
    if (pthread_create(&w->out_th, NULL, sender_main, w) != 0) {
        MG_ERROR("cannot start the output sender thread");
        goto out;
    }
    w->out_started = true;
    mg_engine_hooks hooks = {
        .kv_event = on_kv_event, .kv_event_ud = w, .on_step = on_step, .on_step_ud = w};
    if ((s = engine_create(&w->cfg.engine, w->backend, &hooks, &w->engine))) {
        MG_LOG_ERR("engine");
        goto out;
    }
    bus_options bo;
    bus_options_default(&bo);
    bo.url = w->cfg.nats_url;
    bo.name = "magneto-worker";
    bo.connect_wait_ms = 10000;
    if ((s = bus_connect(&bo, &w->bus))) {
        MG_LOG_ERR("NATS");
        goto out;
    }
    if ((s = etcd_client_create(w->cfg.etcd_url, 5000, &w->etcd))) {
        MG_LOG_ERR("etcd");
        goto out;
    }
    disc_instance card = {0};
    snprintf(card.ns, sizeof(card.ns), "%s", w->cfg.ns);
    snprintf(card.component, sizeof(card.component), "worker");
    card.dp_rank = (int)w->cfg.dp_rank;
    card.dp_size = (int)w->cfg.dp_size;
    snprintf(card.group, sizeof(card.group), "%s", w->cfg.group);
    gethostname(card.host, sizeof(card.host) - 1);
    card.pid = (int)getpid();
    card.gpu = (int)w->cfg.gpu;
    snprintf(card.role, sizeof(card.role), "%s", w->cfg.role);
    disc_model model = {0};
    snprintf(model.name, sizeof(model.name), "%s", w->cfg.served_name);
    model.context_length = engine_max_len(w->engine);
    model.kv_block_size = engine_kv_block_size(w->engine);
    model.total_kv_blocks = engine_kv_blocks(w->engine);
    model.max_batch_size = (int)w->cfg.engine.max_batch_size;
    model.max_num_tokens = (int)w->cfg.engine.max_num_tokens;
    snprintf(model.tokenizer, sizeof(model.tokenizer), "%s", w->cfg.tokenizer_id);
    if ((s = disc_register(w->etcd, &card, &model, serve_as, w, &w->reg))) {
        MG_LOG_ERR("registering in etcd");
        goto out;
    }
    if (!w->gen_sub) {
        /* serve_as could not subscribe (logged there; e.g. a namespace that is no valid subject
         * token): a card nobody answers behind would only make requests time out. */
        MG_ERROR("not serving: the request subjects of %" PRIx64 " have no subscriber",
                 (uint64_t)disc_reg_id(w->reg));
        goto out;
    }
    sysserver_set_health(w->sys, health, w); /* the lock it takes publishes the fields set above */
    if (pthread_create(&w->load_th, NULL, load_main, w) != 0) {
        MG_ERROR("cannot start the load thread");
        goto out;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    /* The first signal asks for the orderly drain (which may wait on etcd and NATS for seconds);
     * a second one of the same kind ends the process at once. */
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    MG_INFO("serving %s with the %s backend as %" PRIx64 " (%s), /metrics on port %d",
            w->cfg.served_name, w->cfg.backend, (uint64_t)atomic_load(&w->id), card.ns,
            sysserver_port(w->sys));
    printf("ready instance=%" PRIx64 " system_port=%d\n", (uint64_t)atomic_load(&w->id),
           sysserver_port(w->sys));
    fflush(stdout);
    while (!atomic_load(&w->stop)) usleep(50 * 1000);
    MG_INFO("shutting down");
    pthread_mutex_lock(&w->stop_mu);
    pthread_cond_broadcast(&w->stop_cv);
    pthread_mutex_unlock(&w->stop_mu);
    pthread_join(w->load_th, NULL);
    rc = 0;
out:
    /* Leave discovery first so nobody routes here, then stop taking requests, then drain. */
    disc_close(w->reg);
    /* The health callback reads the engine and the bus: stop serving it before they go. */
    sysserver_stop(w->sys);
    w->sys = NULL;
    pthread_mutex_lock(&w->sub_mu);
    bus_sub_destroy(w->gen_sub);
    bus_sub_destroy(w->cancel_sub);
    for (int i = 0; i < w->n_old; i++) bus_sub_destroy(w->old_subs[i]);
    pthread_mutex_unlock(&w->sub_mu);
    engine_destroy(w->engine); /* remaining requests end with an error chunk */
    sender_stop(w);            /* ... which the sender sends before it ends */
    if (w->bus) bus_flush(w->bus, 1000);
    bus_destroy(w->bus);
    bus_shutdown();
    etcd_client_destroy(w->etcd);
    if (w->backend) w->backend->ops->destroy(w->backend);
    mg_cfg_free(rows, n);
    return rc;
}
