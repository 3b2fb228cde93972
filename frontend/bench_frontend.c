/* bench_frontend.c - magneto-frontend-bench: what one frontend process costs per streamed token.
 *
 * This process hosts instant workers (registered in etcd, serving GenerateRequests over NATS like
 * magneto-worker, but with no model: each worker thread sends the next token of every request it
 * holds, one GenerateChunk per token, as fast as it can or every --step-us) and the HTTP clients
 * (curl multi, --streams concurrent streaming completions, each restarted when it ends). The
 * frontend under test is a separate process (give its URL, and its pid to read its CPU time).
 *
 * Figures: streamed tokens per second received by the clients, the frontend's CPU seconds per
 * token, and the latency per token from a worker handing a token to NATS to a client receiving
 * its SSE event (p50, p99). With --direct 1 the same load then runs straight over NATS to a bus
 * inbox in this process (what a client of the workers without a frontend would see); the
 * latency the frontend adds is the difference of the two. */
#include <curl/curl.h>
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

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- send times, by request ---- */

#define TABLE 65536
typedef struct slot {
    _Atomic uint64_t key; /* 0 = empty */
    double *t_send;       /* [tokens] */
} slot;
static slot table[TABLE];
static int TOKENS;

static uint64_t key_of(const char *hex) {
    uint64_t k = 0;
    for (int i = 0; i < 16 && hex[i]; i++) {
        char c = hex[i];
        k = (k << 4) | (uint64_t)(c <= '9' ? c - '0' : c - 'a' + 10);
    }
    return k ? k : 1;
}

static slot *slot_get(uint64_t k, bool insert) {
    for (uint64_t i = k % TABLE, n = 0; n < TABLE; i = (i + 1) % TABLE, n++) {
        uint64_t cur = atomic_load(&table[i].key);
        if (cur == k) return &table[i];
        if (cur == 0) {
            if (!insert) return NULL;
            /* Claim the slot; the send-time array is allocated once per slot and kept. */
            uint64_t zero = 0;
            if (atomic_compare_exchange_strong(&table[i].key, &zero, k)) {
                if (!table[i].t_send) table[i].t_send = calloc((size_t)TOKENS, sizeof(double));
                return table[i].t_send ? &table[i] : NULL;
            }
            if (zero == k) return &table[i];
        }
    }
    return NULL;
}

/* ---- instant workers ---- */

typedef struct wjob {
    char id[64], reply[200];
    uint32_t max, sent;
    uint64_t seq;
    slot *s;
    struct wjob *next;
} wjob;

typedef struct iworker {
    bus *b;
    disc_reg *reg;
    bus_sub *sub;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    wjob *incoming;
    bool stop;
    int step_us;
    char subject[160];
} iworker;

static void on_generate(void *arg, const bus_msg *m) {
    iworker *w = arg;
    Magneto__GenerateRequest *r = magneto__generate_request__unpack(NULL, m->len, m->data);
    if (!r) return;
    wjob *j = calloc(1, sizeof *j);
    snprintf(j->id, sizeof j->id, "%s", r->request_id);
    snprintf(j->reply, sizeof j->reply, "%s", m->reply ? m->reply : r->reply_subject);
    j->max = r->sampling ? r->sampling->max_tokens : 16;
    if (j->max > (uint32_t)TOKENS) j->max = (uint32_t)TOKENS;
    j->s = slot_get(key_of(j->id), true);
    magneto__generate_request__free_unpacked(r, NULL);
    pthread_mutex_lock(&w->mu);
    j->next = w->incoming;
    w->incoming = j;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* One "decode step" per pass: the next token of every request held. */
static void *worker_loop(void *arg) {
    iworker *w = arg;
    wjob *active = NULL;
    uint32_t tok = 87; /* "x" */
    uint8_t buf[256];
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (!w->incoming && !active && !w->stop) pthread_cond_wait(&w->cv, &w->mu);
        wjob *in = w->incoming;
        w->incoming = NULL;
        bool stop = w->stop;
        pthread_mutex_unlock(&w->mu);
        while (in) {
            wjob *n = in->next;
            in->next = active;
            active = in;
            in = n;
        }
        if (stop) break;
        wjob **pp = &active;
        while (*pp) {
            wjob *j = *pp;
            Magneto__GenerateChunk c = MAGNETO__GENERATE_CHUNK__INIT;
            Magneto__Usage u = MAGNETO__USAGE__INIT;
            c.request_id = j->id;
            c.seq = j->seq;
            bool last = j->sent + 1 >= j->max;
            c.n_token_ids = 1;
            c.token_ids = &tok;
            if (last) {
                c.finish = MAGNETO__FINISH_REASON__FINISH_LENGTH;
                u.completion_tokens = j->max;
                c.usage = &u;
            }
            size_t len = magneto__generate_chunk__pack(&c, buf);
            if (j->s) j->s->t_send[j->sent] = now_s();
            bus_stream_send(w->b, j->reply, j->seq++, buf, len, last);
            j->sent++;
            if (last) {
                *pp = j->next;
                free(j);
            } else {
                pp = &j->next;
            }
        }
        if (w->step_us) usleep((useconds_t)w->step_us);
    }
    while (active) {
        wjob *n = active->next;
        free(active);
        active = n;
    }
    return NULL;
}

/* ---- clients ---- */

typedef struct client {
    CURL *h;
    char carry[64]; /* an SSE boundary split across reads */
    size_t carry_len;
    int events;
    slot *s;
    bool have_id;
    char idbuf[128];
    size_t idlen;
} client;

static atomic_ullong tokens_rx;
static double *lat;
static size_t n_lat, cap_lat;
static double t_measure_start;

static void on_event(client *c, double t) {
    if (c->s && c->events < TOKENS && t >= t_measure_start) {
        double d = t - c->s->t_send[c->events];
        if (n_lat < cap_lat) lat[n_lat++] = d;
    }
    c->events++;
    atomic_fetch_add(&tokens_rx, 1);
}

/* Count events ("\n\n" boundaries) of text chunks; learn the request id from the first. */
static size_t on_data(char *p, size_t sz, size_t n, void *ud) {
    client *c = ud;
    size_t len = sz * n;
    double t = now_s();
    if (!c->have_id) {
        size_t k = len < sizeof c->idbuf - c->idlen - 1 ? len : sizeof c->idbuf - c->idlen - 1;
        memcpy(c->idbuf + c->idlen, p, k);
        c->idlen += k;
        c->idbuf[c->idlen] = 0;
        char *id = strstr(c->idbuf, "\"id\":\"cmpl-");
        if (id && strlen(id) > 11 + 16) {
            c->s = slot_get(key_of(id + 11), false);
            c->have_id = true;
        }
    }
    /* Boundaries, including one split between the previous read and this one. */
    if (c->carry_len && p[0] == '\n' && c->carry[0] == '\n') on_event(c, t);
    for (size_t i = 0; i + 1 < len; i++)
        if (p[i] == '\n' && p[i + 1] == '\n') {
            /* Only token events: skip the finish, usage and [DONE] events at the end. */
            if (c->events < TOKENS) on_event(c, t);
            i++;
        }
    c->carry_len = 1;
    c->carry[0] = p[len - 1];
    return len;
}

static void client_start(CURLM *m, client *c, const char *url, const char *body) {
    c->events = 0;
    c->s = NULL;
    c->have_id = false;
    c->idlen = 0;
    c->carry_len = 0;
    curl_easy_setopt(c->h, CURLOPT_URL, url);
    curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c->h, CURLOPT_WRITEDATA, c);
    curl_multi_add_handle(m, c->h);
}

/* ---- the direct path (no frontend), for the baseline ---- */

typedef struct dstream {
    bus_stream *s;
    atomic_int done;
    int count;
    char id[64];
    slot *sl;
} dstream;

static double *lat2;
static size_t n_lat2;
static double t_measure2;

static void on_dchunk(void *arg, bus_stream *s, const bus_chunk *ch, mg_status st) {
    dstream *d = arg;
    double t = now_s();
    if (!ch) {
        atomic_store(&d->done, 2);
        return;
    }
    Magneto__GenerateChunk *m = magneto__generate_chunk__unpack(NULL, ch->len, ch->data);
    if (m) {
        if (!d->sl) d->sl = slot_get(key_of(d->id), false);
        for (size_t i = 0; i < m->n_token_ids; i++, d->count++)
            if (d->sl && d->count < TOKENS && t >= t_measure2 && n_lat2 < cap_lat)
                lat2[n_lat2++] = t - d->sl->t_send[d->count];
        magneto__generate_chunk__free_unpacked(m, NULL);
    }
    if (ch->last) atomic_store(&d->done, 1);
}

static void dstream_start(bus *b, bus_inbox *ib, dstream *d, const char *subject) {
    static atomic_ullong ctr;
    unsigned long long x = atomic_fetch_add(&ctr, 1) + 1;
    snprintf(d->id, sizeof d->id, "%016llx%08x-0", x * 0x9E3779B97F4A7C15ull, (unsigned)x);
    d->count = 0;
    d->sl = NULL;
    atomic_store(&d->done, 0);
    bus_stream_opts so = {.fn = on_dchunk, .arg = d};
    const char *reply;
    if (bus_inbox_open(ib, d->id, &so, &d->s, &reply)) {
        d->s = NULL;
        atomic_store(&d->done, 2);
        return;
    }
    uint32_t ids[3] = {1, 2, 3};
    Magneto__SamplingParams sp = MAGNETO__SAMPLING_PARAMS__INIT;
    sp.max_tokens = (uint32_t)TOKENS;
    Magneto__GenerateRequest gr = MAGNETO__GENERATE_REQUEST__INIT;
    gr.request_id = d->id;
    gr.n_token_ids = 3;
    gr.token_ids = ids;
    gr.sampling = &sp;
    gr.reply_subject = (char *)reply;
    gr.prompt_tokens = 3;
    uint8_t buf[256];
    size_t n = magneto__generate_request__pack(&gr, buf);
    bus_publish(b, subject, reply, buf, n);
}

/* /health body: count the instances listed. */
static size_t discard_len;
static int discard_count;
static size_t on_discard(char *p, size_t sz, size_t n, void *ud) {
    discard_count = 0;
    for (size_t i = 0; i + 9 < sz * n; i++) discard_count += !memcmp(p + i, "\"dp_size\"", 9);
    discard_len += sz * n;
    return sz * n;
}

static double cpu_seconds(int pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    mg_log_init("frontend-bench", -1);
    char *url = NULL, *ns = NULL, *nats = NULL, *etcd = NULL, *model = NULL;
    int64_t workers = 4, streams = 256, tokens = 1000, duration = 10, warmup = 2, pid = 0,
            step_us = 0, direct = 0;
    mg_cfg_opt opts[] = {
        {"url", MG_CFG_STR, &url, "http://127.0.0.1:8000", 1, 0, "frontend base URL", NULL},
        {"namespace", MG_CFG_STR, &ns, "magneto", 1, 0, "namespace the frontend watches", NULL},
        {"nats-url", MG_CFG_STR, &nats, "nats://127.0.0.1:4222", 1, 0, "NATS", NULL},
        {"etcd-url", MG_CFG_STR, &etcd, "http://127.0.0.1:2379", 1, 0, "etcd", NULL},
        {"model", MG_CFG_STR, &model, "bench", 1, 0, "served model name", NULL},
        {"workers", MG_CFG_INT, &workers, "4", 1, 64, "instant workers in this process", NULL},
        {"streams", MG_CFG_INT, &streams, "256", 1, 100000, "concurrent client streams", NULL},
        {"tokens", MG_CFG_INT, &tokens, "1000", 2, 1000000, "tokens per request", NULL},
        {"duration", MG_CFG_INT, &duration, "10", 1, 3600, "measured seconds", NULL},
        {"warmup", MG_CFG_INT, &warmup, "2", 0, 600, "seconds before measuring", NULL},
        {"step-us", MG_CFG_INT, &step_us, "0", 0, 1000000, "worker pause between steps", NULL},
        {"frontend-pid", MG_CFG_INT, &pid, "0", 0, 1 << 30, "frontend pid (CPU time)", NULL},
        {"direct", MG_CFG_INT, &direct, "0", 0, 1,
         "1: then the same load straight over NATS, for the added latency", NULL},
    };
    int nopt = sizeof opts / sizeof opts[0];
    mg_status s = mg_cfg_parse(opts, nopt, argc, argv, "magneto-frontend-bench",
                               "Streamed tokens/s and added latency of one frontend.");
    if (s == MG_ECANCELED) return 0;
    if (s) {
        fprintf(stderr, "%s\n", mg_err_msg());
        return 2;
    }
    TOKENS = (int)tokens;
    cap_lat = 20u << 20;
    lat = malloc(cap_lat * sizeof *lat);

    bus_options bo;
    bus_options_default(&bo);
    bo.url = nats;
    etcd_client *ec;
    iworker *ws = calloc((size_t)workers, sizeof *ws);
    if (etcd_client_create(etcd, 0, &ec)) return 1;
    for (int i = 0; i < workers; i++) {
        iworker *w = &ws[i];
        pthread_mutex_init(&w->mu, NULL);
        pthread_cond_init(&w->cv, NULL);
        w->step_us = (int)step_us;
        /* A connection per worker, as separate processes would have. */
        if (bus_connect(&bo, &w->b)) return 1;
        disc_instance in = {0};
        snprintf(in.ns, sizeof in.ns, "%s", ns);
        snprintf(in.component, sizeof in.component, "worker");
        in.dp_size = 1;
        in.gpu = -1;
        disc_model md = {0};
        snprintf(md.name, sizeof md.name, "%s", model);
        md.context_length = 1 << 20;
        md.kv_block_size = 32;
        if (disc_register(ec, &in, &md, NULL, NULL, &w->reg)) return 1;
        disc_instance card;
        disc_reg_card(w->reg, &card);
        snprintf(w->subject, sizeof w->subject, "%s", card.subject);
        if (bus_subscribe(w->b, card.subject, NULL, on_generate, w, &w->sub)) return 1;
        bus_flush(w->b, 2000);
        pthread_create(&w->th, NULL, worker_loop, w);
    }
    /* Wait until the frontend sees every worker. */
    char hurl[256], gurl[256], body[512];
    snprintf(hurl, sizeof hurl, "%s/health", url);
    snprintf(gurl, sizeof gurl, "%s/v1/completions", url);
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"prompt\":[1,2,3],\"max_tokens\":%lld,\"stream\":true,"
             "\"ignore_eos\":true}",
             model, (long long)tokens);
    curl_global_init(CURL_GLOBAL_ALL);
    for (int i = 0; i < 300; i++) {
        CURL *h = curl_easy_init();
        curl_easy_setopt(h, CURLOPT_URL, hurl);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_discard);
        long code = 0;
        discard_len = 0;
        if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_cleanup(h);
        if (code == 200 && discard_count >= workers) break;
        usleep(100000);
    }
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)streams);
    client *cs = calloc((size_t)streams, sizeof *cs);
    for (int i = 0; i < streams; i++) {
        cs[i].h = curl_easy_init();
        client_start(m, &cs[i], gurl, body);
    }
    double t0 = now_s();
    t_measure_start = t0 + (double)warmup;
    double t_end = t_measure_start + (double)duration;
    unsigned long long rx0 = 0;
    double cpu0 = -1;
    bool measuring = false;
    int running = 0;
    unsigned long long failures = 0;
    while (now_s() < t_end) {
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            client *c = NULL;
            for (int i = 0; i < streams && !c; i++)
                if (cs[i].h == msg->easy_handle) c = &cs[i];
            if (msg->data.result != CURLE_OK || c->events < TOKENS) {
                if (!failures) {
                    long code = 0;
                    curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &code);
                    fprintf(stderr, "first incomplete stream: curl %d, HTTP %ld, %d events\n",
                            msg->data.result, code, c->events);
                }
                failures++;
            }
            curl_multi_remove_handle(m, c->h);
            client_start(m, c, gurl, body);
        }
        if (!measuring && now_s() >= t_measure_start) {
            measuring = true;
            rx0 = atomic_load(&tokens_rx);
            cpu0 = pid ? cpu_seconds((int)pid) : -1;
        }
        curl_multi_poll(m, NULL, 0, 5, NULL);
    }
    double elapsed = now_s() - t_measure_start;
    unsigned long long rx = atomic_load(&tokens_rx) - rx0;
    double cpu1 = pid ? cpu_seconds((int)pid) : -1;
    qsort(lat, n_lat, sizeof *lat, cmp_d);
    double p50 = n_lat ? lat[n_lat / 2] * 1e3 : 0, p99 = n_lat ? lat[n_lat * 99 / 100] * 1e3 : 0;
    double tps = (double)rx / elapsed;
    printf("frontend_tok_s %.0f\n", tps);
    printf("through_frontend_p50_ms %.3f\n", p50);
    printf("through_frontend_p99_ms %.3f\n", p99);
    if (pid && cpu0 >= 0 && cpu1 >= 0) {
        double cpu = cpu1 - cpu0;
        printf("frontend_cpu_cores %.2f\n", cpu / elapsed);
        printf("frontend_tok_per_cpu_s %.0f\n", cpu > 0 ? (double)rx / cpu : 0);
    }
    printf("streams %lld, tokens/request %lld, workers %lld, step_us %lld, samples %zu, "
           "incomplete streams %llu\n",
           (long long)streams, (long long)tokens, (long long)workers, (long long)step_us, n_lat,
           failures);
    fflush(stdout);
    if (direct) {
        /* The same load straight over NATS (worker -> bus inbox), no frontend: what the frontend
         * adds is the difference. Close the HTTP streams and let the workers drain first. */
        for (int i = 0; i < streams; i++) {
            curl_multi_remove_handle(m, cs[i].h);
            curl_easy_cleanup(cs[i].h);
        }
        sleep(2 + (unsigned)((double)tokens * (double)step_us * 1e-6));
        bus *db;
        bus_inbox *ib;
        if (bus_connect(&bo, &db) || bus_inbox_create(db, NULL, &ib)) return 1;
        lat2 = malloc(cap_lat * sizeof *lat2);
        dstream *ds = calloc((size_t)streams, sizeof *ds);
        for (int i = 0; i < streams; i++) dstream_start(db, ib, &ds[i], ws[i % workers].subject);
        t_measure2 = now_s() + (double)warmup;
        double t_end2 = t_measure2 + (double)duration;
        while (now_s() < t_end2) {
            for (int i = 0; i < streams; i++) {
                if (!atomic_load(&ds[i].done)) continue;
                bus_stream_close(ds[i].s);
                dstream_start(db, ib, &ds[i], ws[i % workers].subject);
            }
            usleep(1000);
        }
        qsort(lat2, n_lat2, sizeof *lat2, cmp_d);
        double d50 = n_lat2 ? lat2[n_lat2 / 2] * 1e3 : 0;
        double d99 = n_lat2 ? lat2[n_lat2 * 99 / 100] * 1e3 : 0;
        printf("direct_nats_p50_ms %.3f\n", d50);
        printf("direct_nats_p99_ms %.3f\n", d99);
        printf("frontend_added_p50_ms %.3f (through the frontend minus direct)\n", p50 - d50);
        printf("frontend_added_p99_ms %.3f (through the frontend minus direct)\n", p99 - d99);
        printf("direct samples %zu\n", n_lat2);
        fflush(stdout);
    }
    _exit(0); /* streams are still open: skip the orderly teardown of a benchmark process */
}
