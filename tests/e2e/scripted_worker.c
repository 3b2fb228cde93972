/* scripted_worker.c - see scripted_worker.h. */
#include "scripted_worker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "discovery.h"
#include "log.h"
#include "magneto.pb-c.h"

typedef struct job {
    sworker *w;
    char id[64], reply[256];
    uint32_t *script;
    size_t n_script;
    uint32_t pos, max, prompt, migrations;
} job;

static bool is_cancelled(sworker *w, const char *id) {
    pthread_mutex_lock(w->mu_);
    bool c = false;
    for (int i = 0; i < w->n_cancelled && !c; i++) c = !strcmp(w->cancelled[i], id);
    pthread_mutex_unlock(w->mu_);
    return c;
}

static void send_chunk(job *j, uint64_t seq, uint32_t *ids, size_t n, int finish, uint32_t done) {
    Magneto__GenerateChunk c = MAGNETO__GENERATE_CHUNK__INIT;
    Magneto__Usage u = MAGNETO__USAGE__INIT;
    c.request_id = j->id;
    c.seq = seq;
    c.n_token_ids = n;
    c.token_ids = ids;
    c.finish = (Magneto__FinishReason)finish;
    if (finish) {
        u.prompt_tokens = j->prompt;
        u.completion_tokens = done;
        c.usage = &u;
    }
    uint8_t buf[512];
    size_t len = magneto__generate_chunk__pack(&c, buf);
    bus_stream_send(j->w->b, j->reply, seq, buf, len, finish != 0);
}

static void *job_run(void *arg) {
    job *j = arg;
    sworker *w = j->w;
    uint64_t seq = 0;
    uint32_t sent = 0;
    int finish = 0;
    for (;;) {
        if (atomic_load(&w->dead) || is_cancelled(w, j->id)) break;
        if (j->pos + sent >= j->n_script) {
            finish = MAGNETO__FINISH_REASON__FINISH_STOP;
            break;
        }
        if (sent == j->max) {
            finish = MAGNETO__FINISH_REASON__FINISH_LENGTH;
            break;
        }
        int die = atomic_load(&w->die_after);
        if (die > 0 && j->migrations == 0 && sent == (uint32_t)die) {
            if (!atomic_exchange(&w->dead, true)) {
                disc_close(w->reg_); /* the key goes at once, as a lease would within its TTL */
                w->reg_ = NULL;
            }
            break;
        }
        int gap = atomic_load(&w->gap_after), hang = atomic_load(&w->hang_after);
        if (gap > 0 && j->migrations == 0 && sent == (uint32_t)gap) seq++; /* a chunk "lost" */
        if (hang > 0 && j->migrations == 0 && sent == (uint32_t)hang) {
            /* Silent until cancelled (or the worker stops), as a stuck process would be. */
            while (!atomic_load(&w->dead) && !is_cancelled(w, j->id)) usleep(2000);
            break;
        }
        uint32_t id = j->script[j->pos + sent];
        send_chunk(j, seq++, &id, 1, 0, 0);
        sent++;
        atomic_fetch_add(&w->tokens_sent, 1);
        int d = atomic_load(&w->delay_us);
        if (d) usleep((useconds_t)d);
    }
    if (finish) send_chunk(j, seq++, NULL, 0, finish, sent);
    free(j->script);
    free(j);
    atomic_fetch_sub(&w->running, 1);
    return NULL;
}

static void on_generate(void *arg, const bus_msg *m) {
    sworker *w = arg;
    if (atomic_load(&w->dead)) return;
    Magneto__GenerateRequest *r = magneto__generate_request__unpack(NULL, m->len, m->data);
    if (!r) return;
    job *j = calloc(1, sizeof *j);
    j->w = w;
    snprintf(j->id, sizeof j->id, "%s", r->request_id);
    snprintf(j->reply, sizeof j->reply, "%s", m->reply ? m->reply : r->reply_subject);
    j->prompt = r->prompt_tokens;
    j->pos = (uint32_t)r->n_token_ids - r->prompt_tokens;
    j->max = r->sampling ? r->sampling->max_tokens : 16;
    j->migrations = r->migrations;
    w->fn(w->ud, r->token_ids, r->prompt_tokens, &j->script, &j->n_script);
    magneto__generate_request__free_unpacked(r, NULL);
    atomic_fetch_add(&w->requests, 1);
    atomic_fetch_add(&w->running, 1);
    pthread_t t;
    pthread_create(&t, NULL, job_run, j);
    pthread_detach(t);
}

static void on_cancel(void *arg, const bus_msg *m) {
    sworker *w = arg;
    Magneto__CancelRequest *r = magneto__cancel_request__unpack(NULL, m->len, m->data);
    if (!r) return;
    pthread_mutex_lock(w->mu_);
    int slot = w->n_cancelled < 256 ? w->n_cancelled++ : 255;
    snprintf(w->cancelled[slot], 64, "%s", r->request_id);
    pthread_mutex_unlock(w->mu_);
    atomic_fetch_add(&w->cancels, 1);
    magneto__cancel_request__free_unpacked(r, NULL);
}

sworker *sworker_start(bus *b, etcd_client *etcd, const char *ns, const char *model, int64_t ctx,
                       sworker_script_fn fn, void *ud) {
    sworker *w = calloc(1, sizeof *w);
    pthread_mutex_t *mu = malloc(sizeof *mu);
    pthread_mutex_init(mu, NULL);
    w->mu_ = mu;
    w->b = b;
    w->fn = fn;
    w->ud = ud;
    disc_instance in = {0};
    snprintf(in.ns, sizeof in.ns, "%s", ns);
    snprintf(in.component, sizeof in.component, "worker");
    snprintf(in.host, sizeof in.host, "localhost");
    in.pid = (int)getpid();
    in.dp_size = 1;
    in.gpu = -1;
    snprintf(in.role, sizeof in.role, "agg");
    disc_model md = {0};
    snprintf(md.name, sizeof md.name, "%s", model);
    md.context_length = ctx;
    md.kv_block_size = 32;
    md.max_batch_size = 256;
    snprintf(md.tokenizer, sizeof md.tokenizer, "o200k_harmony");
    disc_reg *reg;
    if (disc_register(etcd, &in, &md, NULL, NULL, &reg)) {
        MG_LOG_ERR("scripted worker: register");
        sworker_stop(w);
        return NULL;
    }
    w->reg_ = reg;
    disc_instance card;
    disc_reg_card(reg, &card);
    snprintf(w->subject, sizeof w->subject, "%s", card.subject);
    char csub[200];
    snprintf(csub, sizeof csub, "%.*s.cancel", (int)(strlen(card.subject) - strlen(".generate")),
             card.subject);
    bus_sub *s1 = NULL, *s2 = NULL;
    if (bus_subscribe(b, card.subject, NULL, on_generate, w, &s1) ||
        bus_subscribe(b, csub, NULL, on_cancel, w, &s2)) {
        MG_LOG_ERR("scripted worker: subscribe");
        w->sub_ = s1;
        sworker_stop(w);
        return NULL;
    }
    w->sub_ = s1;
    w->csub_ = s2;
    bus_flush(b, 2000);
    return w;
}

void sworker_stop(sworker *w) {
    if (!w) return;
    atomic_store(&w->dead, true);
    for (int i = 0; i < 1000 && atomic_load(&w->running) > 0; i++) usleep(10000);
    disc_close(w->reg_);
    bus_sub_destroy(w->sub_);
    bus_sub_destroy(w->csub_);
    pthread_mutex_destroy(w->mu_);
    free(w->mu_);
    free(w);
}
