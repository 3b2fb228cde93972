/* router.c - the target set and the round-robin / random picks. See router.h. */
#include "router.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct router {
    router_mode mode;
    pthread_mutex_t mu;
    router_target *t; /* kept sorted by worker_id so round-robin order is stable across adds */
    size_t n, cap;
    uint64_t next; /* round-robin cursor */
    uint64_t rng;  /* xorshift64* state for the random mode */
};

mg_status router_mode_parse(const char *name, router_mode *out) {
    if (!name) return MG_ERRF(MG_EINVAL, "router mode: missing");
    if (!strcmp(name, "round-robin") || !strcmp(name, "round_robin"))
        *out = ROUTER_ROUND_ROBIN;
    else if (!strcmp(name, "random"))
        *out = ROUTER_RANDOM;
    else if (!strcmp(name, "kv"))
        *out = ROUTER_KV;
    else
        return MG_ERRF(MG_EINVAL, "router mode '%s': expected round-robin, random or kv", name);
    return MG_OK;
}

const char *router_mode_name(router_mode m) {
    switch (m) {
    case ROUTER_ROUND_ROBIN:
        return "round-robin";
    case ROUTER_RANDOM:
        return "random";
    case ROUTER_KV:
        return "kv";
    }
    return "?";
}

mg_status router_create(router_mode mode, uint64_t seed, router **out) {
    router *r = calloc(1, sizeof *r);
    if (!r) return MG_ERRF(MG_ENOMEM, "router");
    r->mode = mode;
    r->rng = seed ? seed : 0x9E3779B97F4A7C15ull;
    pthread_mutex_init(&r->mu, NULL);
    *out = r;
    return MG_OK;
}

void router_destroy(router *r) {
    if (!r) return;
    pthread_mutex_destroy(&r->mu);
    free(r->t);
    free(r);
}

router_mode router_get_mode(const router *r) {
    return r->mode;
}

/* Index of the first target with worker_id >= id. */
static size_t lower_bound(const router *r, int64_t id) {
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r->t[mid].worker_id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

mg_status router_add(router *r, const router_target *t) {
    pthread_mutex_lock(&r->mu);
    size_t i = lower_bound(r, t->worker_id);
    if (i < r->n && r->t[i].worker_id == t->worker_id) {
        r->t[i] = *t;
        pthread_mutex_unlock(&r->mu);
        return MG_OK;
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        router_target *nt = realloc(r->t, cap * sizeof *nt);
        if (!nt) {
            pthread_mutex_unlock(&r->mu);
            return MG_ERRF(MG_ENOMEM, "router targets");
        }
        r->t = nt;
        r->cap = cap;
    }
    memmove(r->t + i + 1, r->t + i, (r->n - i) * sizeof *r->t);
    r->t[i] = *t;
    r->n++;
    pthread_mutex_unlock(&r->mu);
    return MG_OK;
}

mg_status router_remove(router *r, int64_t worker_id) {
    pthread_mutex_lock(&r->mu);
    size_t i = lower_bound(r, worker_id);
    if (i >= r->n || r->t[i].worker_id != worker_id) {
        pthread_mutex_unlock(&r->mu);
        return MG_ERRF(MG_ENOTFOUND, "router: no target for worker %llx",
                       (unsigned long long)worker_id);
    }
    memmove(r->t + i, r->t + i + 1, (r->n - i - 1) * sizeof *r->t);
    r->n--;
    pthread_mutex_unlock(&r->mu);
    return MG_OK;
}

size_t router_count(router *r) {
    pthread_mutex_lock(&r->mu);
    size_t n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

mg_status router_pick(router *r, const router_query *q, router_target *out) {
    pthread_mutex_lock(&r->mu);
    if (r->n == 0) {
        pthread_mutex_unlock(&r->mu);
        return MG_ERRF(MG_EUNAVAIL, "no workers available");
    }
    size_t i;
    if (r->mode == ROUTER_RANDOM)
        i = (size_t)(xorshift(&r->rng) % r->n);
    else
        i = (size_t)(r->next++ % r->n);
    /* Skip the worker a migrating request just lost, when there is another one. */
    if (q && q->avoid_worker && r->n > 1 && r->t[i].worker_id == q->avoid_worker)
        i = (i + 1) % r->n;
    *out = r->t[i];
    pthread_mutex_unlock(&r->mu);
    return MG_OK;
}
