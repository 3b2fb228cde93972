/* client.c - magneto-client: a test client of the request plane, without the HTTP frontend.
 *
 * It finds workers through etcd (discovery), sends GenerateRequests straight to their subjects
 * (round-robin), and receives the token streams on its own stream inbox, checking every chunk:
 * sequence numbers in order (the inbox fails a stream on a gap), the request id, and at the end
 * the finish reason and the number of tokens. It prints one line per request with --verbose and
 * a summary; the exit status is 0 only when every request completed as asked.
 *
 *   magneto-client --requests 1000 --concurrency 1000 --prompt-tokens 64 --max-tokens 50
 *
 * With ignore_eos (the default) every request must end with finish "length" after exactly
 * max-tokens tokens; --no-ignore-eos accepts "stop" earlier. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "config.h"
#include "discovery.h"
#include "etcd.h"
#include "log.h"
#include "magneto.pb-c.h"

typedef struct opts {
    char *ns, *nats_url, *etcd_url, *model;
    int64_t requests, concurrency, prompt_tokens, max_tokens, wait_workers, timeout_ms, seed;
    bool ignore_eos, verbose;
} opts;

typedef struct creq {
    char id[64];
    int n_tokens; /* received so far */
    uint64_t next_seq;
    int finish;       /* Magneto__FinishReason of the last chunk */
    mg_status status; /* MG_OK, or why the stream failed */
    bool done;
    double ttft_ms, total_ms;
    struct timespec start;
    char error[128];
} creq;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int in_flight, finished;

static double ms_since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) * 1e-6;
}

static void finish_req(creq *r, mg_status st) {
    r->status = st;
    r->total_ms = ms_since(&r->start);
    pthread_mutex_lock(&mu);
    r->done = true;
    in_flight--;
    finished++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* Inbox thread: one chunk of one stream, or its failure. */
static void on_chunk(void *arg, bus_stream *s, const bus_chunk *c, mg_status status) {
    creq *r = arg;
    (void)s;
    if (r->done) return; /* failed already (bad chunk); the rest is ignored */
    if (!c) {
        finish_req(r, status ? status : MG_ECLOSED);
        return;
    }
    Magneto__GenerateChunk *ch = magneto__generate_chunk__unpack(NULL, c->len, c->data);
    if (!ch) {
        snprintf(r->error, sizeof(r->error), "chunk %" PRIu64 " does not parse", c->seq);
        finish_req(r, MG_EPROTO);
        return;
    }
    if (ch->seq != r->next_seq || strcmp(ch->request_id, r->id) != 0) {
        snprintf(r->error, sizeof(r->error), "chunk seq %" PRIu64 " id %s, expected %" PRIu64 " %s",
                 ch->seq, ch->request_id, r->next_seq, r->id);
        magneto__generate_chunk__free_unpacked(ch, NULL);
        finish_req(r, MG_EPROTO);
        return;
    }
    r->next_seq++;
    if (r->n_tokens == 0 && ch->n_token_ids > 0) r->ttft_ms = ms_since(&r->start);
    r->n_tokens += (int)ch->n_token_ids;
    if (ch->finish == MAGNETO__FINISH_REASON__FINISH_ERROR && ch->error)
        snprintf(r->error, sizeof(r->error), "%s", ch->error);
    r->finish = ch->finish;
    magneto__generate_chunk__free_unpacked(ch, NULL);
    if (c->last) finish_req(r, MG_OK);
}

int main(int argc, char **argv) {
    opts o = {0};
    mg_cfg_opt rows[] = {
        {"namespace", MG_CFG_STR, &o.ns, "magneto", 1, 0, "deployment namespace", NULL},
        {"nats-url", MG_CFG_STR, &o.nats_url, "nats://127.0.0.1:4222", 1, 0, "NATS server", NULL},
        {"etcd-url", MG_CFG_STR, &o.etcd_url, "http://127.0.0.1:2379", 1, 0, "etcd", NULL},
        {"model", MG_CFG_STR, &o.model, "openai/gpt-oss-120b", 1, 0, "model name", NULL},
        {"requests", MG_CFG_INT, &o.requests, "4", 1, 10000000, "requests to send", NULL},
        {"concurrency", MG_CFG_INT, &o.concurrency, "4", 1, 100000, "requests in flight", NULL},
        {"prompt-tokens", MG_CFG_INT, &o.prompt_tokens, "32", 1, 1 << 20, "prompt length", NULL},
        {"max-tokens", MG_CFG_INT, &o.max_tokens, "16", 1, 1 << 20, "tokens to generate", NULL},
        {"ignore-eos", MG_CFG_BOOL, &o.ignore_eos, "true", 1, 0, "generate exactly max-tokens",
         NULL},
        {"wait-workers", MG_CFG_INT, &o.wait_workers, "1", 1, 4096, "workers to wait for", NULL},
        {"timeout-ms", MG_CFG_INT, &o.timeout_ms, "60000", 100, 3600000, "whole-run deadline",
         NULL},
        {"seed", MG_CFG_INT, &o.seed, "1", 0, INT64_MAX, "prompt token seed", NULL},
        {"verbose", MG_CFG_BOOL, &o.verbose, "false", 1, 0, "one line per request", NULL},
    };
    int nrows = (int)(sizeof(rows) / sizeof(rows[0]));
    mg_log_init("client", -1);
    mg_status s = mg_cfg_parse(rows, nrows, argc, argv, "magneto-client",
                               "Streams requests to workers found in etcd, over NATS.");
    if (s == MG_ECANCELED) return 0;
    if (s) {
        fprintf(stderr, "magneto-client: %s\n", mg_err_msg());
        return 2;
    }
    int rc = 1;
    bus *b = NULL;
    bus_inbox *ib = NULL;
    etcd_client *etcd = NULL;
    disc_watch *dw = NULL;
    disc_instance *workers = NULL;
    size_t n_workers = 0;
    creq *reqs = calloc((size_t)o.requests, sizeof(creq));
    bus_stream **streams = calloc((size_t)o.requests, sizeof(bus_stream *));
    uint32_t *prompt = malloc((size_t)o.prompt_tokens * sizeof(uint32_t));
    if (!reqs || !streams || !prompt) goto out;

    bus_options bo;
    bus_options_default(&bo);
    bo.url = o.nats_url;
    bo.name = "magneto-client";
    if ((s = bus_connect(&bo, &b)) || (s = bus_inbox_create(b, NULL, &ib))) {
        MG_LOG_ERR("NATS");
        goto out;
    }
    if ((s = etcd_client_create(o.etcd_url, 5000, &etcd)) ||
        (s = disc_watch_instances(etcd, o.ns, "worker", NULL, NULL, &dw))) {
        MG_LOG_ERR("etcd");
        goto out;
    }
    if ((s = disc_watch_wait_count(dw, (size_t)o.wait_workers, SIZE_MAX, (int)o.timeout_ms))) {
        MG_ERROR("fewer than %" PRId64 " workers in %s after %" PRId64 " ms", o.wait_workers, o.ns,
                 o.timeout_ms);
        goto out;
    }
    if ((s = disc_watch_instances_snapshot(dw, &workers, &n_workers)) || n_workers == 0) goto out;
    fprintf(stderr,
            "magneto-client: %zu worker(s); sending %" PRId64 " requests, %" PRId64 " at a time\n",
            n_workers, o.requests, o.concurrency);

    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t rng = (uint64_t)o.seed * 0x9e3779b97f4a7c15ull + 1;
    for (int64_t i = 0; i < o.requests; i++) {
        pthread_mutex_lock(&mu);
        while (in_flight >= o.concurrency) pthread_cond_wait(&cv, &mu);
        in_flight++;
        pthread_mutex_unlock(&mu);
        creq *r = &reqs[i];
        snprintf(r->id, sizeof(r->id), "client-%d-%" PRId64, (int)getpid(), i);
        for (int64_t k = 0; k < o.prompt_tokens; k++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            prompt[k] = (uint32_t)(rng % 199998u); /* ordinary o200k ids */
        }
        const char *reply = NULL;
        bus_stream_opts so = {.fn = on_chunk, .arg = r, .queue = false, .timeout_ms = 30000};
        clock_gettime(CLOCK_MONOTONIC, &r->start);
        if ((s = bus_inbox_open(ib, r->id, &so, &streams[i], &reply))) {
            snprintf(r->error, sizeof(r->error), "open: %s", mg_err_msg());
            finish_req(r, s);
            continue;
        }
        Magneto__SamplingParams sp = MAGNETO__SAMPLING_PARAMS__INIT;
        sp.max_tokens = (uint32_t)o.max_tokens;
        sp.ignore_eos = o.ignore_eos;
        Magneto__GenerateRequest q = MAGNETO__GENERATE_REQUEST__INIT;
        q.request_id = r->id;
        q.model = o.model;
        q.n_token_ids = (size_t)o.prompt_tokens;
        q.token_ids = prompt;
        q.sampling = &sp;
        q.reply_subject = (char *)reply;
        q.prompt_tokens = (uint32_t)o.prompt_tokens;
        size_t len = magneto__generate_request__get_packed_size(&q);
        uint8_t *buf = malloc(len);
        if (!buf) goto out;
        magneto__generate_request__pack(&q, buf);
        const disc_instance *wk = &workers[(size_t)i % n_workers];
        s = bus_publish(b, wk->subject, reply, buf, len);
        free(buf);
        if (s) {
            bus_stream_close(streams[i]);
            streams[i] = NULL;
            snprintf(r->error, sizeof(r->error), "publish: %s", mg_err_msg());
            finish_req(r, s);
        }
    }
    pthread_mutex_lock(&mu);
    while (finished < o.requests) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&cv, &mu, &ts);
        if (ms_since(&t0) > (double)o.timeout_ms) break;
    }
    pthread_mutex_unlock(&mu);
    double wall_ms = ms_since(&t0);
    for (int64_t i = 0; i < o.requests; i++) bus_stream_close(streams[i]);

    int ok = 0, bad = 0;
    long tokens = 0;
    const Magneto__FinishReason want =
        o.ignore_eos ? MAGNETO__FINISH_REASON__FINISH_LENGTH : MAGNETO__FINISH_REASON__FINISH_STOP;
    for (int64_t i = 0; i < o.requests; i++) {
        creq *r = &reqs[i];
        bool good = r->done && r->status == MG_OK &&
                    (o.ignore_eos ? (r->finish == want && r->n_tokens == o.max_tokens)
                                  : (r->finish == MAGNETO__FINISH_REASON__FINISH_LENGTH ||
                                     r->finish == MAGNETO__FINISH_REASON__FINISH_STOP) &&
                                        r->n_tokens <= o.max_tokens);
        tokens += r->n_tokens;
        good ? ok++ : bad++;
        if (o.verbose || (!good && bad <= 10))
            fprintf(stderr, "%s %s: %d tokens, finish %d, %s%s%s, ttft %.1f ms, total %.1f ms\n",
                    good ? "ok  " : "FAIL", r->id, r->n_tokens, r->finish,
                    r->done ? mg_status_str(r->status) : "not finished", r->error[0] ? ": " : "",
                    r->error, r->ttft_ms, r->total_ms);
    }
    printf("requests %" PRId64 " completed %d failed %d tokens %ld wall %.1f ms tok/s %.0f\n",
           o.requests, ok, bad, tokens, wall_ms, tokens / (wall_ms / 1e3));
    rc = bad ? 1 : 0;
out:
    if (rc && s) MG_LOG_ERR("magneto-client");
    disc_watch_destroy(dw);
    etcd_client_destroy(etcd);
    bus_inbox_destroy(ib);
    bus_destroy(b);
    bus_shutdown();
    free(workers);
    free(reqs);
    free(streams);
    free(prompt);
    mg_cfg_free(rows, nrows);
    return rc;
}
