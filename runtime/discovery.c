/* discovery.c - instance and model cards in etcd: register under a kept-alive lease, watch sets.
 *
 * Registration: one lease per process, renewed by a thread of this module every ttl/3; when etcd
 * answers that the lease is gone, the same thread grants a new one and puts the cards again.
 * Watching: prefix read, then an etcd watch from read revision + 1; the set lives in a sorted
 * array under a mutex, so snapshots are cheap copies. Callbacks run without the mutex held, on
 * the one thread that changes the set, so they see changes in order and may take snapshots. */
#include "mono.h"
#include "discovery.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

/* ---------------------------------------------------------------------------------------------
 * cards <-> JSON */

static mg_status get_str(json_t *o, const char *what, const char *field, char *dst, size_t cap,
                         bool required) {
    json_t *v = json_object_get(o, field);
    if (!v) {
        if (required) return MG_ERRF(MG_EPROTO, "%s: field %s is missing", what, field);
        dst[0] = 0;
        return MG_OK;
    }
    if (!json_is_string(v)) return MG_ERRF(MG_EPROTO, "%s: field %s is not a string", what, field);
    size_t n = json_string_length(v);
    if (n >= cap)
        return MG_ERRF(MG_EPROTO, "%s: field %s is %zu bytes, at most %zu fit", what, field, n,
                       cap - 1);
    if (memchr(json_string_value(v), 0, n))
        return MG_ERRF(MG_EPROTO, "%s: field %s holds a NUL byte", what, field);
    memcpy(dst, json_string_value(v), n + 1);
    return MG_OK;
}

static mg_status get_int(json_t *o, const char *what, const char *field, int64_t *dst, int64_t def,
                         bool required, int64_t min, int64_t max) {
    json_t *v = json_object_get(o, field);
    if (!v) {
        if (required) return MG_ERRF(MG_EPROTO, "%s: field %s is missing", what, field);
        *dst = def;
        return MG_OK;
    }
    if (!json_is_integer(v))
        return MG_ERRF(MG_EPROTO, "%s: field %s is not an integer", what, field);
    int64_t x = json_integer_value(v);
    if (x < min || x > max)
        return MG_ERRF(MG_EPROTO,
                       "%s: field %s = %" PRId64 " is outside [%" PRId64 ", %" PRId64 "]", what,
                       field, x, min, max);
    *dst = x;
    return MG_OK;
}

/* Instance ids travel as hex strings, as in the keys: JSON numbers past 2^53 lose digits in
 * many readers. */
static mg_status get_id(json_t *o, const char *what, int64_t *dst) {
    json_t *v = json_object_get(o, "instance_id");
    if (!v) return MG_ERRF(MG_EPROTO, "%s: field instance_id is missing", what);
    if (json_is_integer(v)) {
        *dst = json_integer_value(v);
        return MG_OK;
    }
    const char *s = json_string_value(v);
    char *end = NULL;
    errno = 0;
    uint64_t x = s ? strtoull(s, &end, 16) : 0;
    if (!s || !s[0] || *end || errno)
        return MG_ERRF(MG_EPROTO, "%s: field instance_id is not a hex string", what);
    *dst = (int64_t)x;
    return MG_OK;
}

static json_t *id_json(int64_t id) {
    char b[24];
    snprintf(b, sizeof b, "%" PRIx64, (uint64_t)id);
    return json_string(b);
}

static mg_status dump(json_t *o, const char *what, char **json) {
    *json = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    return *json ? MG_OK : MG_ERRF(MG_ENOMEM, "%s: cannot encode", what);
}

mg_status disc_instance_encode(const disc_instance *in, char **json) {
    json_t *o = json_pack("{s:o, s:s, s:s, s:s, s:i, s:i, s:s, s:s, s:i, s:i, s:s, s:s}",
                          "instance_id", id_json(in->instance_id), "namespace", in->ns, "component",
                          in->component, "subject", in->subject, "dp_rank", in->dp_rank, "dp_size",
                          in->dp_size, "group", in->group, "host", in->host, "pid", in->pid, "gpu",
                          in->gpu, "role", in->role, "ucx_address", in->ucx_addr);
    return dump(o, "instance card", json);
}

mg_status disc_instance_decode(const char *json, size_t len, disc_instance *out) {
    static const char W[] = "instance card";
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *o = json_loadb(json, len, 0, &jerr);
    if (!json_is_object(o)) {
        json_decref(o);
        return MG_ERRF(MG_EPROTO, "%s: not a JSON object (%s)", W, jerr.text);
    }
    int64_t rank = 0, size = 1, pid = 0, gpu = -1;
    mg_status st = get_id(o, W, &out->instance_id);
    if (!st) st = get_str(o, W, "namespace", out->ns, sizeof out->ns, false);
    if (!st) st = get_str(o, W, "component", out->component, sizeof out->component, true);
    if (!st) st = get_str(o, W, "subject", out->subject, sizeof out->subject, true);
    if (!st) st = get_int(o, W, "dp_rank", &rank, 0, false, 0, 1 << 20);
    if (!st) st = get_int(o, W, "dp_size", &size, 1, false, 1, 1 << 20);
    if (!st) st = get_str(o, W, "group", out->group, sizeof out->group, false);
    if (!st) st = get_str(o, W, "host", out->host, sizeof out->host, false);
    if (!st) st = get_int(o, W, "pid", &pid, 0, false, 0, INT32_MAX);
    if (!st) st = get_int(o, W, "gpu", &gpu, -1, false, -1, 1 << 16);
    if (!st) st = get_str(o, W, "role", out->role, sizeof out->role, false);
    if (!st) st = get_str(o, W, "ucx_address", out->ucx_addr, sizeof out->ucx_addr, false);
    if (!st && rank >= size)
        st = MG_ERRF(MG_EPROTO, "%s: dp_rank %" PRId64 " is not below dp_size %" PRId64, W, rank,
                     size);
    json_decref(o);
    out->dp_rank = (int)rank;
    out->dp_size = (int)size;
    out->pid = (int)pid;
    out->gpu = (int)gpu;
    return st;
}

mg_status disc_model_encode(const disc_model *in, char **json) {
    json_t *o = json_pack(
        "{s:o, s:s, s:I, s:i, s:I, s:i, s:i, s:s}", "instance_id", id_json(in->instance_id), "name",
        in->name, "context_length", (json_int_t)in->context_length, "kv_block_size",
        in->kv_block_size, "total_kv_blocks", (json_int_t)in->total_kv_blocks, "max_batch_size",
        in->max_batch_size, "max_num_tokens", in->max_num_tokens, "tokenizer", in->tokenizer);
    return dump(o, "model card", json);
}

mg_status disc_model_decode(const char *json, size_t len, disc_model *out) {
    static const char W[] = "model card";
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *o = json_loadb(json, len, 0, &jerr);
    if (!json_is_object(o)) {
        json_decref(o);
        return MG_ERRF(MG_EPROTO, "%s: not a JSON object (%s)", W, jerr.text);
    }
    int64_t bs = 0, mbs = 0, mnt = 0;
    mg_status st = get_id(o, W, &out->instance_id);
    if (!st) st = get_str(o, W, "name", out->name, sizeof out->name, true);
    if (!st) st = get_int(o, W, "context_length", &out->context_length, 0, true, 1, INT64_MAX);
    if (!st) st = get_int(o, W, "kv_block_size", &bs, 0, true, 1, 1 << 16);
    if (!st) st = get_int(o, W, "total_kv_blocks", &out->total_kv_blocks, 0, false, 0, INT64_MAX);
    if (!st) st = get_int(o, W, "max_batch_size", &mbs, 0, false, 0, INT32_MAX);
    if (!st) st = get_int(o, W, "max_num_tokens", &mnt, 0, false, 0, INT32_MAX);
    if (!st) st = get_str(o, W, "tokenizer", out->tokenizer, sizeof out->tokenizer, false);
    json_decref(o);
    out->kv_block_size = (int)bs;
    out->max_batch_size = (int)mbs;
    out->max_num_tokens = (int)mnt;
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * keys */

static mg_status key_fmt(char *buf, size_t cap, const char *kind, const char *ns, const char *name,
                         const char *id_hex) {
    if (!ns || !ns[0] || !name || !name[0])
        return MG_ERRF(MG_EINVAL, "discovery key: empty namespace or name");
    int n = snprintf(buf, cap, DISC_PREFIX "/%s/%s/%s/%s", kind, ns, name, id_hex);
    if (n < 0 || (size_t)n >= cap)
        return MG_ERRF(MG_EINVAL, "discovery key for %s/%s does not fit %zu bytes", ns, name, cap);
    return MG_OK;
}

mg_status disc_instance_key(const char *ns, const char *component, int64_t id, char *buf,
                            size_t cap) {
    char hex[24];
    snprintf(hex, sizeof hex, "%" PRIx64, (uint64_t)id);
    return key_fmt(buf, cap, "instances", ns, component, hex);
}

mg_status disc_model_key(const char *ns, const char *model, int64_t id, char *buf, size_t cap) {
    char hex[24];
    snprintf(hex, sizeof hex, "%" PRIx64, (uint64_t)id);
    return key_fmt(buf, cap, "models", ns, model, hex);
}

mg_status disc_nccl_key(const char *ns, const char *group, char *buf, size_t cap) {
    return key_fmt(buf, cap, "groups", ns, group, "nccl");
}

/* ---------------------------------------------------------------------------------------------
 * shared helpers */

/* ---------------------------------------------------------------------------------------------
 * registration */

struct disc_reg {
    etcd_client *c;
    int ttl_s;
    disc_rereg_cb rereg;
    void *ud;
    bool auto_subject;  /* subject derived from the instance id, so it follows re-registration */
    pthread_mutex_t mu; /* guards card, model, stop */
    pthread_cond_t cv;
    bool stop;
    disc_instance card;
    disc_model model;
    bool has_model;
    _Atomic int64_t lease;
    atomic_int generation;
    pthread_t th;
};

static void set_subject(disc_instance *c) {
    snprintf(c->subject, sizeof c->subject, "%s.%s.%" PRIx64 ".generate", c->ns, c->component,
             (uint64_t)c->instance_id);
}

/* Put the cards under lease. */
static mg_status put_cards(etcd_client *c, const disc_instance *card, const disc_model *model,
                           int64_t lease) {
    char key[512];
    char *json = NULL;
    mg_status st = disc_instance_key(card->ns, card->component, lease, key, sizeof key);
    if (!st) st = disc_instance_encode(card, &json);
    if (!st) st = etcd_put(c, key, json, strlen(json), lease);
    free(json);
    json = NULL;
    if (!st && model) {
        st = disc_model_key(card->ns, model->name, lease, key, sizeof key);
        if (!st) st = disc_model_encode(model, &json);
        if (!st) st = etcd_put(c, key, json, strlen(json), lease);
        free(json);
    }
    return st;
}

/* Sleep ms unless stopped; returns true when stop was asked. */
static bool reg_sleep(disc_reg *r, int ms) {
    struct timespec ts;
    mono_deadline(&ts, ms);
    pthread_mutex_lock(&r->mu);
    while (!r->stop && pthread_cond_timedwait(&r->cv, &r->mu, &ts) != ETIMEDOUT) {
    }
    bool stop = r->stop;
    pthread_mutex_unlock(&r->mu);
    return stop;
}

/* The lease is gone: grant a new one and put the cards again, until it works or stop. */
static void reregister(disc_reg *r) {
    int64_t old = atomic_load(&r->lease);
    MG_WARN("discovery: lease %" PRIx64 " of %s/%s lost; registering again", (uint64_t)old,
            r->card.ns, r->card.component);
    for (;;) {
        int64_t lease = 0;
        mg_status st = etcd_lease_grant(r->c, r->ttl_s, &lease);
        if (st == MG_OK) {
            pthread_mutex_lock(&r->mu);
            disc_instance card = r->card;
            disc_model model = r->model;
            pthread_mutex_unlock(&r->mu);
            card.instance_id = lease;
            model.instance_id = lease;
            if (r->auto_subject) set_subject(&card);
            if (r->rereg) r->rereg(r->ud, old, &card);
            st = put_cards(r->c, &card, r->has_model ? &model : NULL, lease);
            if (st == MG_OK) {
                pthread_mutex_lock(&r->mu);
                r->card = card;
                r->model = model;
                pthread_mutex_unlock(&r->mu);
                atomic_store(&r->lease, lease);
                atomic_fetch_add(&r->generation, 1);
                MG_INFO("discovery: %s/%s registered again as %" PRIx64 " (was %" PRIx64 ")",
                        card.ns, card.component, (uint64_t)lease, (uint64_t)old);
                return;
            }
            etcd_lease_revoke(r->c, lease); /* best effort: do not leave a half registration */
        }
        MG_WARN("discovery: registering %s/%s again failed, retrying in 1 s: %s", r->card.ns,
                r->card.component, mg_err_msg());
        if (reg_sleep(r, 1000)) return;
    }
}

static void *reg_main(void *arg) {
    disc_reg *r = arg;
    int interval = r->ttl_s * 1000 / 3, wait = interval;
    bool warned = false;
    while (!reg_sleep(r, wait)) {
        mg_status st = etcd_lease_keepalive_once(r->c, atomic_load(&r->lease), NULL);
        if (st == MG_OK) {
            if (warned)
                MG_INFO("discovery: lease %" PRIx64 " renewed again", atomic_load(&r->lease));
            warned = false;
            wait = interval;
        } else if (st == MG_ENOTFOUND) {
            reregister(r);
            warned = false;
            wait = interval;
        } else {
            /* etcd unreachable: retry soon; only etcd's answer says the lease is gone (it restores
             * leases with a fresh TTL when it restarts). */
            if (!warned)
                MG_WARN("discovery: renewing lease %" PRIx64 " failed, retrying: %s",
                        atomic_load(&r->lease), mg_err_msg());
            warned = true;
            wait = interval < 1000 ? interval : 1000;
        }
    }
    return NULL;
}

mg_status disc_register_ttl(etcd_client *c, const disc_instance *inst, const disc_model *model,
                            int ttl_s, disc_rereg_cb rereg, void *ud, disc_reg **out) {
    *out = NULL;
    if (!inst->ns[0] || !inst->component[0])
        return MG_ERRF(MG_EINVAL, "disc_register: the card needs a namespace and a component");
    if (ttl_s < 1) return MG_ERRF(MG_EINVAL, "disc_register: ttl %d s must be positive", ttl_s);
    if (model && !model->name[0])
        return MG_ERRF(MG_EINVAL, "disc_register: model card has no name");
    disc_reg *r = calloc(1, sizeof *r);
    if (!r) return MG_ERRF(MG_ENOMEM, "disc_register: out of memory");
    r->c = c;
    r->ttl_s = ttl_s;
    r->rereg = rereg;
    r->ud = ud;
    r->card = *inst;
    if (model) r->model = *model;
    r->has_model = model != NULL;
    r->auto_subject = inst->subject[0] == 0;
    pthread_mutex_init(&r->mu, NULL);
    mono_cond_init(&r->cv);

    int64_t lease = 0;
    mg_status st = etcd_lease_grant(c, ttl_s, &lease);
    if (st == MG_OK) {
        r->card.instance_id = lease;
        r->model.instance_id = lease;
        if (r->auto_subject) set_subject(&r->card);
        /* Let the owner serve under the id before the card makes it visible. */
        if (r->rereg) r->rereg(r->ud, 0, &r->card);
        atomic_store(&r->lease, lease);
        st = put_cards(c, &r->card, r->has_model ? &r->model : NULL, lease);
        if (st != MG_OK) {
            mg_status keep = st;
            char msg[512];
            snprintf(msg, sizeof msg, "%s", mg_err_msg());
            etcd_lease_revoke(c, lease);
            st = MG_ERRF(keep, "%s", msg);
        }
    }
    if (st == MG_OK && pthread_create(&r->th, NULL, reg_main, r) != 0) {
        etcd_lease_revoke(c, lease);
        st = MG_ERRF(MG_ERR, "disc_register: cannot start the keep-alive thread");
    }
    if (st != MG_OK) {
        pthread_cond_destroy(&r->cv);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return st;
    }
    MG_INFO("discovery: registered %s/%s as %" PRIx64 " (subject %s, ttl %d s)", r->card.ns,
            r->card.component, (uint64_t)lease, r->card.subject, ttl_s);
    *out = r;
    return MG_OK;
}

mg_status disc_register(etcd_client *c, const disc_instance *inst, const disc_model *model,
                        disc_rereg_cb rereg, void *ud, disc_reg **out) {
    return disc_register_ttl(c, inst, model, DISC_TTL_S, rereg, ud, out);
}

int64_t disc_reg_id(disc_reg *r) {
    return atomic_load(&r->lease);
}

int disc_reg_generation(disc_reg *r) {
    return atomic_load(&r->generation);
}

void disc_reg_card(disc_reg *r, disc_instance *out) {
    pthread_mutex_lock(&r->mu);
    *out = r->card;
    pthread_mutex_unlock(&r->mu);
}

void disc_close(disc_reg *r) {
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->th, NULL);
    int64_t lease = atomic_load(&r->lease);
    mg_status st = etcd_lease_revoke(r->c, lease);
    if (st != MG_OK && st != MG_ENOTFOUND)
        MG_WARN("discovery: revoking lease %" PRIx64 " failed (its keys expire with the TTL): %s",
                (uint64_t)lease, mg_err_msg());
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* ---------------------------------------------------------------------------------------------
 * watching */

typedef struct entry {
    char *key;
    void *card; /* disc_instance or disc_model */
} entry;

struct disc_watch {
    etcd_client *c;
    bool models;
    size_t card_size;
    char prefix[384];
    disc_instance_cb icb;
    disc_model_cb mcb;
    void *ud;
    pthread_mutex_t mu; /* guards v, n, cap */
    pthread_cond_t cv;  /* broadcast on every change of the set */
    entry *v;           /* sorted by key */
    size_t n, cap;
    int64_t floor; /* events at or below this revision are already in the set (after a re-read) */
    etcd_watch *ew;
};

static size_t find(const disc_watch *w, const char *key, bool *found) {
    size_t lo = 0, hi = w->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(w->v[mid].key, key);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

static void notify(disc_watch *w, disc_change ch, const void *card) {
    if (w->models) {
        if (w->mcb) w->mcb(w->ud, ch, card);
    } else if (w->icb) {
        w->icb(w->ud, ch, card);
    }
}

/* The id is the key's last segment; a card that left it out gets it from there. */
static int64_t key_id(const char *key) {
    const char *s = strrchr(key, '/');
    return s ? (int64_t)strtoull(s + 1, NULL, 16) : 0;
}

/* Apply a put of key = value. Runs on the one thread that changes the set. */
static void apply_put(disc_watch *w, const char *key, const char *value, size_t len) {
    union {
        disc_instance i;
        disc_model m;
    } card;
    mg_status st = w->models ? disc_model_decode(value, len, &card.m)
                             : disc_instance_decode(value, len, &card.i);
    if (st != MG_OK) {
        MG_WARN("discovery: ignoring %s: %s", key, mg_err_msg());
        return;
    }
    int64_t *id = w->models ? &card.m.instance_id : &card.i.instance_id;
    if (*id == 0) *id = key_id(key);

    pthread_mutex_lock(&w->mu);
    bool found;
    size_t at = find(w, key, &found);
    disc_change ch = DISC_ADDED;
    if (found) {
        if (memcmp(w->v[at].card, &card, w->card_size) == 0) {
            pthread_mutex_unlock(&w->mu); /* the same card again: not a change */
            return;
        }
        memcpy(w->v[at].card, &card, w->card_size);
        ch = DISC_UPDATED;
    } else {
        if (w->n == w->cap) {
            size_t cap = w->cap ? w->cap * 2 : 16;
            entry *v = realloc(w->v, cap * sizeof *v);
            if (!v) goto oom;
            w->v = v;
            w->cap = cap;
        }
        entry e = {strdup(key), malloc(w->card_size)};
        if (!e.key || !e.card) {
            free(e.key);
            free(e.card);
            goto oom;
        }
        memcpy(e.card, &card, w->card_size);
        memmove(w->v + at + 1, w->v + at, (w->n - at) * sizeof *w->v);
        w->v[at] = e;
        w->n++;
    }
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    notify(w, ch, &card);
    return;
oom:
    pthread_mutex_unlock(&w->mu);
    MG_ERROR("discovery: out of memory adding %s", key);
}

static void apply_delete(disc_watch *w, const char *key) {
    union {
        disc_instance i;
        disc_model m;
    } card;
    pthread_mutex_lock(&w->mu);
    bool found;
    size_t at = find(w, key, &found);
    if (!found) {
        pthread_mutex_unlock(&w->mu);
        return;
    }
    memcpy(&card, w->v[at].card, w->card_size);
    free(w->v[at].key);
    free(w->v[at].card);
    memmove(w->v + at, w->v + at + 1, (w->n - at - 1) * sizeof *w->v);
    w->n--;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    notify(w, DISC_REMOVED, &card);
}

/* Re-read the whole prefix and make the set equal to it (after a compaction lost events). */
static mg_status resync(disc_watch *w) {
    etcd_kvs kvs;
    mg_status st = etcd_get_prefix(w->c, w->prefix, &kvs);
    if (st != MG_OK) return st;
    /* Remove what is gone; the read is sorted by key, as the set is. */
    for (;;) {
        char *gone = NULL;
        pthread_mutex_lock(&w->mu);
        for (size_t i = 0; i < w->n && !gone; i++) {
            bool present = false;
            for (size_t j = 0; j < kvs.n && !present; j++)
                present = strcmp(kvs.kvs[j].key, w->v[i].key) == 0;
            if (!present) gone = strdup(w->v[i].key);
        }
        pthread_mutex_unlock(&w->mu);
        if (!gone) break;
        apply_delete(w, gone);
        free(gone);
    }
    for (size_t i = 0; i < kvs.n; i++)
        apply_put(w, kvs.kvs[i].key, kvs.kvs[i].value, kvs.kvs[i].value_len);
    w->floor = kvs.revision;
    etcd_kvs_free(&kvs);
    return MG_OK;
}

static void on_event(void *ud, const etcd_event *ev) {
    disc_watch *w = ud;
    if (ev->type == ETCD_EV_COMPACTED) {
        MG_WARN("discovery: watch of %s lost events to compaction; re-reading", w->prefix);
        for (int tries = 0; resync(w) != MG_OK; tries++) {
            MG_WARN("discovery: re-reading %s failed: %s", w->prefix, mg_err_msg());
            if (tries == 10) break;
            struct timespec ts = {0, 200 * 1000000L};
            nanosleep(&ts, NULL);
        }
        return;
    }
    if (ev->mod_revision <= w->floor) return;
    if (ev->type == ETCD_EV_PUT)
        apply_put(w, ev->key, ev->value, ev->value_len);
    else
        apply_delete(w, ev->key);
}

static mg_status watch_create(etcd_client *c, bool models, const char *ns, const char *name,
                              disc_instance_cb icb, disc_model_cb mcb, void *ud, disc_watch **out) {
    *out = NULL;
    if (!ns || !ns[0]) return MG_ERRF(MG_EINVAL, "disc_watch: empty namespace");
    disc_watch *w = calloc(1, sizeof *w);
    if (!w) return MG_ERRF(MG_ENOMEM, "disc_watch: out of memory");
    w->c = c;
    w->models = models;
    w->card_size = models ? sizeof(disc_model) : sizeof(disc_instance);
    w->icb = icb;
    w->mcb = mcb;
    w->ud = ud;
    pthread_mutex_init(&w->mu, NULL);
    mono_cond_init(&w->cv);
    int n = snprintf(w->prefix, sizeof w->prefix, DISC_PREFIX "/%s/%s/%s%s",
                     models ? "models" : "instances", ns, name ? name : "", name ? "/" : "");
    mg_status st = MG_OK;
    if (n < 0 || (size_t)n >= sizeof w->prefix)
        st = MG_ERRF(MG_EINVAL, "disc_watch: prefix for %s/%s too long", ns, name ? name : "");
    etcd_kvs kvs = {0};
    if (!st) st = etcd_get_prefix(c, w->prefix, &kvs);
    if (!st) {
        for (size_t i = 0; i < kvs.n; i++)
            apply_put(w, kvs.kvs[i].key, kvs.kvs[i].value, kvs.kvs[i].value_len);
        st = etcd_watch_start(c, w->prefix, true, kvs.revision + 1, on_event, w, &w->ew);
    }
    etcd_kvs_free(&kvs);
    if (st != MG_OK) {
        disc_watch_destroy(w);
        return st;
    }
    *out = w;
    return MG_OK;
}

mg_status disc_watch_instances(etcd_client *c, const char *ns, const char *component,
                               disc_instance_cb cb, void *ud, disc_watch **out) {
    return watch_create(c, false, ns, component, cb, NULL, ud, out);
}

mg_status disc_watch_models(etcd_client *c, const char *ns, const char *model, disc_model_cb cb,
                            void *ud, disc_watch **out) {
    return watch_create(c, true, ns, model, NULL, cb, ud, out);
}

static mg_status snapshot(disc_watch *w, bool models, void **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (w->models != models)
        return MG_ERRF(MG_EINVAL, "disc_watch snapshot: this watch holds %s cards",
                       w->models ? "model" : "instance");
    pthread_mutex_lock(&w->mu);
    mg_status st = MG_OK;
    if (w->n) {
        char *v = malloc(w->n * w->card_size);
        if (!v) {
            st = MG_ERRF(MG_ENOMEM, "disc_watch snapshot: out of memory");
        } else {
            for (size_t i = 0; i < w->n; i++)
                memcpy(v + i * w->card_size, w->v[i].card, w->card_size);
            *out = v;
            *n = w->n;
        }
    }
    pthread_mutex_unlock(&w->mu);
    return st;
}

mg_status disc_watch_instances_snapshot(disc_watch *w, disc_instance **out, size_t *n) {
    return snapshot(w, false, (void **)out, n);
}

mg_status disc_watch_models_snapshot(disc_watch *w, disc_model **out, size_t *n) {
    return snapshot(w, true, (void **)out, n);
}

size_t disc_watch_count(disc_watch *w) {
    pthread_mutex_lock(&w->mu);
    size_t n = w->n;
    pthread_mutex_unlock(&w->mu);
    return n;
}

mg_status disc_watch_wait_count(disc_watch *w, size_t min, size_t max, int timeout_ms) {
    struct timespec ts;
    mono_deadline(&ts, timeout_ms);
    pthread_mutex_lock(&w->mu);
    while (w->n < min || w->n > max) {
        if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) == ETIMEDOUT) break;
    }
    size_t n = w->n;
    pthread_mutex_unlock(&w->mu);
    if (n < min || n > max)
        return MG_ERRF(MG_ETIMEOUT, "discovery %s: %zu entries after %d ms, want %zu..%zu",
                       w->prefix, n, timeout_ms, min, max);
    return MG_OK;
}

void disc_watch_destroy(disc_watch *w) {
    if (!w) return;
    etcd_watch_stop(w->ew);
    for (size_t i = 0; i < w->n; i++) {
        free(w->v[i].key);
        free(w->v[i].card);
    }
    free(w->v);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
