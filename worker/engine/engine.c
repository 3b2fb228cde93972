/* engine.c - the engine thread: drain the submit/cancel queues, step, publish the load figures.
 *
 * Lock order: mu guards the queues and the stop flag; stats_mu guards the published figures.
 * Neither is held while the scheduler steps or a callback runs, so submitters never wait for a
 * step. The scheduler itself is touched only by the engine thread (sched_seq_create only reads
 * limits fixed at creation, so submitters call it without a lock). */
#include "engine.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

typedef struct pend {
    struct pend *next;
    mg_seq *seq;  /* a submitted request, or */
    char *cancel; /* the id of a request to cancel */
} pend;

struct mg_engine {
    mg_engine_config cfg;
    mg_backend *be;
    mg_sched *sched;
    mg_engine_hooks hooks;
    pthread_t thread;
    bool started;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    pend *head, *tail; /* FIFO: submits and cancels keep their relative order */
    int n_pending_submits;
    bool stop, closed, clear_kv;

    pthread_mutex_t stats_mu;
    mg_engine_stats stats;
};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void publish(mg_engine *e, const mg_step_info *inf, double ms, int pending) {
    mg_sched_load l = sched_load(e->sched);
    pthread_mutex_lock(&e->stats_mu);
    mg_engine_stats *s = &e->stats;
    s->active_slots = l.running;
    s->total_slots = l.max_running;
    s->waiting = l.waiting + pending;
    s->kv_active_blocks = l.kv.active_blocks;
    s->kv_total_blocks = l.kv.total_blocks;
    s->kv_cached_blocks = l.kv.cached_blocks;
    s->kv_window_active_blocks = l.window_kv.active_blocks;
    s->kv_window_total_blocks = l.window_kv.total_blocks;
    s->window_cache_usage = l.window_kv.usage;
    s->cache_usage = l.kv.usage;
    s->prefix_hit_rate = l.kv.hit_rate;
    s->steps = l.steps;
    s->preemptions = l.preemptions;
    s->tokens_out = l.tokens_out;
    if (inf) {
        s->requests_done += (uint64_t)inf->n_finished;
        if (inf->n_seqs) {
            s->last_step_ms = ms;
            s->last_batch_seqs = inf->n_seqs;
            s->last_batch_tokens = inf->n_tokens;
        }
    }
    pthread_mutex_unlock(&e->stats_mu);
}

static void count_done(mg_engine *e, int n) {
    pthread_mutex_lock(&e->stats_mu);
    e->stats.requests_done += (uint64_t)n;
    pthread_mutex_unlock(&e->stats_mu);
}

/* Lockstep ranks poll the group this often while all of them are idle. */
#define GROUP_IDLE_POLL_NS 1000000L

static void *engine_main(void *arg) {
    mg_engine *e = arg;
    bool lockstep = e->be->ops->group_sync != NULL, group_busy = false, sync_failed = false;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        if (!lockstep) {
            while (!e->stop && !e->head && !e->clear_kv && !sched_has_work(e->sched))
                pthread_cond_wait(&e->cv, &e->mu);
        } else if (!e->stop && !e->head && !e->clear_kv && !sched_has_work(e->sched) &&
                   !group_busy) {
            /* The group's collective must be reached by every rank, so an idle rank only naps
             * (woken early by a submit) and then takes part again. */
            struct timespec dl;
            clock_gettime(CLOCK_MONOTONIC, &dl);
            dl.tv_nsec += GROUP_IDLE_POLL_NS;
            if (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&e->cv, &e->mu, &dl);
        }
        pend *list = e->head;
        e->head = e->tail = NULL;
        bool stop = e->stop, clear = e->clear_kv;
        e->clear_kv = false;
        pthread_mutex_unlock(&e->mu);

        int cancelled = 0, taken = 0;
        for (pend *p = list, *n; p; p = n) {
            n = p->next;
            if (p->seq) {
                sched_enqueue(e->sched, p->seq);
                taken++;
            } else if (sched_cancel(e->sched, p->cancel)) {
                cancelled++;
            }
            free(p->cancel);
            free(p);
        }
        if (cancelled) count_done(e, cancelled);
        if (clear) sched_kv_clear(e->sched);
        bool run = !stop && sched_has_work(e->sched);
        if (lockstep && !stop) {
            int any = 0;
            if (e->be->ops->group_sync(e->be, run, &any) != MG_OK) {
                if (!sync_failed) MG_LOG_ERR("engine: group sync failed; stepping alone");
                sync_failed = true;
                any = run;
            }
            group_busy = any != 0;
            run = group_busy;
        }
        if (run) {
            mg_step_info inf;
            double t0 = now_ms();
            /* A failure ended the batch's requests and was logged. */
            if (lockstep && !sync_failed)
                sched_step_lockstep(e->sched, &inf);
            else
                sched_step(e->sched, &inf);
            double ms = now_ms() - t0;
            publish(e, &inf, ms, 0);
            if (inf.n_seqs && e->hooks.on_step) e->hooks.on_step(e->hooks.on_step_ud, &inf, ms);
        } else {
            publish(e, NULL, 0, 0);
        }
        if (taken) {
            /* Only now do the published figures hold these requests: until here they counted as
             * pending, so engine_idle never sees a request in neither place. */
            pthread_mutex_lock(&e->mu);
            e->n_pending_submits -= taken;
            pthread_mutex_unlock(&e->mu);
        }
        if (stop) break;
    }
    mg_sched_load l = sched_load(e->sched);
    sched_abort_all(e->sched, MG_FINISH_ERROR);
    count_done(e, l.running + l.waiting);
    publish(e, NULL, 0, 0);
    return NULL;
}

mg_status engine_create(const mg_engine_config *cfg, mg_backend *backend,
                        const mg_engine_hooks *hooks, mg_engine **out) {
    *out = NULL;
    mg_engine *e = calloc(1, sizeof(*e));
    if (!e) return MG_ERRF(MG_ENOMEM, "engine: out of memory");
    e->cfg = *cfg;
    mg_status st = engine_config_check(&e->cfg);
    if (st) {
        free(e);
        return st;
    }
    e->cfg.eos_token_ids = NULL; /* owned by the caller's settings table; stop_ids are parsed */
    e->be = backend;
    if (hooks) e->hooks = *hooks;
    st = sched_create(&e->cfg, backend, &e->sched);
    if (st) {
        free(e);
        return st;
    }
    if (e->hooks.kv_event)
        kv_pool_set_event_cb(sched_kv(e->sched), e->hooks.kv_event, e->hooks.kv_event_ud);
    pthread_mutex_init(&e->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the lockstep nap's deadline */
    pthread_cond_init(&e->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&e->stats_mu, NULL);
    publish(e, NULL, 0, 0);
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        engine_destroy(e);
        return MG_ERRF(MG_ERR, "engine: cannot start the engine thread");
    }
    e->started = true;
    MG_INFO("engine: backend %s, %d KV blocks of %d tokens, max_batch_size %lld, "
            "max_num_tokens %lld, max length %d",
            backend->ops->name ? backend->ops->name : "?", backend->num_blocks, backend->block_size,
            (long long)e->cfg.max_batch_size, (long long)e->cfg.max_num_tokens,
            sched_max_len(e->sched));
    if (backend->window_blocks > 0)
        MG_INFO("engine: sliding-window layers in a pool of their own: %d blocks (window %d); "
                "full-attention layers: %d blocks",
                backend->window_blocks, backend->window, backend->num_blocks);
    *out = e;
    return MG_OK;
}

void engine_destroy(mg_engine *e) {
    if (!e) return;
    if (e->started) {
        pthread_mutex_lock(&e->mu);
        e->stop = true;
        e->closed = true;
        pthread_cond_signal(&e->cv);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->thread, NULL);
    }
    /* Whatever arrived after the thread's last drain. */
    for (pend *p = e->head, *n; p; p = n) {
        n = p->next;
        if (p->seq) {
            sched_enqueue(e->sched, p->seq);
        }
        free(p->cancel);
        free(p);
    }
    e->head = e->tail = NULL;
    if (e->sched) sched_abort_all(e->sched, MG_FINISH_ERROR);
    sched_destroy(e->sched);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->stats_mu);
    free(e);
}

static mg_status push(mg_engine *e, pend *p) {
    pthread_mutex_lock(&e->mu);
    if (e->closed) {
        pthread_mutex_unlock(&e->mu);
        return MG_ERRF(MG_ECLOSED, "engine: shutting down");
    }
    if (e->tail)
        e->tail->next = p;
    else
        e->head = p;
    e->tail = p;
    if (p->seq) e->n_pending_submits++;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return MG_OK;
}

mg_status engine_submit(mg_engine *e, const mg_request *r) {
    mg_seq *q;
    mg_status st = sched_seq_create(e->sched, r, &q);
    if (st) return st;
    pend *p = calloc(1, sizeof(*p));
    if (!p) {
        sched_seq_destroy(q);
        return MG_ERRF(MG_ENOMEM, "engine: out of memory");
    }
    p->seq = q;
    st = push(e, p);
    if (st) {
        sched_seq_destroy(q);
        free(p);
    }
    return st;
}

void engine_cancel(mg_engine *e, const char *id) {
    pend *p = calloc(1, sizeof(*p));
    if (!p) return;
    p->cancel = strdup(id);
    if (!p->cancel || push(e, p) != MG_OK) {
        free(p->cancel);
        free(p);
    }
}

void engine_clear_kv(mg_engine *e) {
    pthread_mutex_lock(&e->mu);
    e->clear_kv = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

mg_engine_stats engine_stats(mg_engine *e) {
    pthread_mutex_lock(&e->mu);
    int pending = e->n_pending_submits;
    pthread_mutex_unlock(&e->mu);
    pthread_mutex_lock(&e->stats_mu);
    mg_engine_stats s = e->stats;
    pthread_mutex_unlock(&e->stats_mu);
    s.waiting += pending;
    return s;
}

bool engine_idle(mg_engine *e) {
    mg_engine_stats s = engine_stats(e);
    return s.waiting == 0 && s.active_slots == 0;
}

int engine_max_len(const mg_engine *e) {
    return sched_max_len(e->sched);
}
int engine_kv_blocks(const mg_engine *e) {
    return e->be->num_blocks;
}
int engine_kv_block_size(const mg_engine *e) {
    return e->be->block_size;
}
