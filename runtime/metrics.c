/* metrics.c - the Prometheus registry: families, children, lock-free updates, text format 0.0.4.
 *
 * Layout: a registry holds a list of families in creation order under its mutex. A family holds
 * its children in a chained hash table keyed by the label values (for lookups) and in a list in
 * creation order (for rendering), both under the family's mutex. Children are never freed before
 * the registry, so handles stay valid without reference counts.
 *
 * Values are atomics updated with relaxed ordering: a scrape needs each number to be one that
 * was true at some moment, not a consistent cut across numbers. Doubles live in uint64_t bit
 * patterns updated by compare-and-swap; integer counts use fetch_add, which never retries.
 * A histogram keeps one non-cumulative count per bucket; the exposition accumulates them and
 * reports _count as their total, so _count always equals the +Inf bucket. */
#include "metrics.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

/* ---- atomic doubles ---- */

static uint64_t dbits(double v) {
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

static double bitsd(uint64_t u) {
    double v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static void atomic_add_double(_Atomic uint64_t *p, double v) {
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(p, &old, dbits(bitsd(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

static double atomic_load_double(const _Atomic uint64_t *p) {
    return bitsd(atomic_load_explicit((_Atomic uint64_t *)p, memory_order_relaxed));
}

/* ---- types ---- */

struct child {
    struct child *hnext; /* hash chain */
    struct child *onext; /* creation order */
    mg_metric *fam;
    uint64_t hash;
    atomic_bool hidden;
    char **values; /* fam->nlabels strings */
};

struct mg_counter {
    struct child ch;
    _Atomic uint64_t n;     /* integer increments (fetch_add) */
    _Atomic uint64_t fbits; /* fractional adds, a double (CAS) */
};

struct mg_gauge {
    struct child ch;
    _Atomic uint64_t bits; /* a double */
    mg_gauge_fn fn;        /* under fam->mu */
    void *arg;
};

struct mg_histogram {
    struct child ch;
    _Atomic uint64_t sumbits;  /* a double */
    _Atomic uint64_t counts[]; /* fam->nbuckets + 1, non-cumulative; the last is +Inf */
};

struct mg_metric {
    mg_metric *next; /* registry order */
    char *name;
    char *help;
    mg_metric_type type;
    int nlabels;
    char **label_names;
    double *buckets; /* histograms: finite upper bounds, increasing */
    size_t nbuckets;

    pthread_mutex_t mu; /* children: table, list; gauge callbacks */
    struct child **table;
    size_t tcap; /* power of two */
    size_t nchildren;
    struct child *first, *last;
};

struct hook {
    mg_scrape_fn fn;
    void *arg;
};

struct mg_registry {
    pthread_mutex_t mu; /* families, hooks */
    mg_metric *first, *last;
    struct hook *hooks;
    size_t nhooks;
    bool process; /* process collector registered */
    /* process collector state; written by its scrape hook */
    mg_counter *p_cpu;
    mg_gauge *p_rss, *p_vsize, *p_start, *p_fds, *p_maxfds;
};

/* ---- buckets ---- */

const double metrics_latency_buckets[] = {
    0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
    0.5,   0.75,  1,     1.5,  2,     3,    5,     7.5,  10,   20,   40,    80,  160,  320, 480,
};
const size_t metrics_latency_nbuckets = sizeof(metrics_latency_buckets) / sizeof(double);

mg_status metrics_buckets_exponential(double start, double factor, size_t count, double *out) {
    if (!out || count == 0 || !(start > 0) || !(factor > 1) || !isfinite(start) ||
        !isfinite(factor))
        return MG_ERRF(MG_EINVAL,
                       "exponential buckets: need start > 0, factor > 1, count > 0 "
                       "(got start %g, factor %g, count %zu)",
                       start, factor, count);
    double v = start;
    for (size_t i = 0; i < count; i++, v *= factor) out[i] = v;
    if (!isfinite(out[count - 1]))
        return MG_ERRF(MG_EINVAL, "exponential buckets overflow after %zu bounds", count);
    return MG_OK;
}

mg_status metrics_buckets_linear(double start, double width, size_t count, double *out) {
    if (!out || count == 0 || !(width > 0) || !isfinite(start) || !isfinite(width))
        return MG_ERRF(MG_EINVAL,
                       "linear buckets: need width > 0, count > 0 (got width %g, "
                       "count %zu)",
                       width, count);
    for (size_t i = 0; i < count; i++) out[i] = start + width * (double)i;
    return MG_OK;
}

/* ---- registry ---- */

mg_status metrics_registry_create(mg_registry **out) {
    mg_registry *r = calloc(1, sizeof *r);
    if (!r) return MG_ERRF(MG_ENOMEM, "metrics registry: out of memory");
    pthread_mutex_init(&r->mu, NULL);
    *out = r;
    return MG_OK;
}

static void free_strings(char **v, int n) {
    if (!v) return;
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

static void family_free(mg_metric *m) {
    struct child *c = m->first;
    while (c) {
        struct child *next = c->onext;
        free_strings(c->values, m->nlabels);
        free(c);
        c = next;
    }
    free(m->table);
    free_strings(m->label_names, m->nlabels);
    free(m->buckets);
    free(m->name);
    free(m->help);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void metrics_registry_destroy(mg_registry *r) {
    if (!r) return;
    mg_metric *m = r->first;
    while (m) {
        mg_metric *next = m->next;
        family_free(m);
        m = next;
    }
    free(r->hooks);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static mg_registry *default_reg;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void default_init(void) {
    mg_registry *r = NULL;
    if (metrics_registry_create(&r) != MG_OK) return;
    if (metrics_process_register(r) != MG_OK) {
        metrics_registry_destroy(r);
        return;
    }
    default_reg = r;
}

mg_registry *metrics_default(void) {
    pthread_once(&default_once, default_init);
    return default_reg;
}

mg_status metrics_registry_on_scrape(mg_registry *r, mg_scrape_fn fn, void *arg) {
    if (!r || !fn) return MG_ERRF(MG_EINVAL, "metrics_registry_on_scrape: NULL registry or fn");
    pthread_mutex_lock(&r->mu);
    struct hook *h = realloc(r->hooks, (r->nhooks + 1) * sizeof *h);
    if (!h) {
        pthread_mutex_unlock(&r->mu);
        return MG_ERRF(MG_ENOMEM, "metrics scrape hook: out of memory");
    }
    h[r->nhooks++] = (struct hook){fn, arg};
    r->hooks = h;
    pthread_mutex_unlock(&r->mu);
    return MG_OK;
}

/* ---- families ---- */

static bool valid_metric_name(const char *s) {
    if (!s || !*s) return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                  (p > s && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

static bool valid_label_name(const char *s) {
    if (!s || !*s || (s[0] == '_' && s[1] == '_')) return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (p > s && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

static const char *type_name(mg_metric_type t) {
    switch (t) {
    case MG_METRIC_COUNTER:
        return "counter";
    case MG_METRIC_GAUGE:
        return "gauge";
    case MG_METRIC_HISTOGRAM:
        return "histogram";
    }
    return "untyped";
}

/* True when an existing family is the same declaration as the one asked for. */
static bool same_family(const mg_metric *m, mg_metric_type type, const char *const *labels,
                        int nlabels, const double *buckets, size_t nbuckets) {
    if (m->type != type || m->nlabels != nlabels) return false;
    for (int i = 0; i < nlabels; i++)
        if (strcmp(m->label_names[i], labels[i]) != 0) return false;
    if (type == MG_METRIC_HISTOGRAM) {
        if (m->nbuckets != nbuckets) return false;
        for (size_t i = 0; i < nbuckets; i++)
            if (m->buckets[i] != buckets[i]) return false;
    }
    return true;
}

static mg_status family_new(mg_registry *r, mg_metric_type type, const char *name, const char *help,
                            const char *const *labels, const double *buckets, size_t nbuckets,
                            mg_metric **out) {
    if (!r || !out) return MG_ERRF(MG_EINVAL, "metrics: NULL registry or out");
    if (!valid_metric_name(name))
        return MG_ERRF(MG_EINVAL, "metric name \"%s\": must match [a-zA-Z_:][a-zA-Z0-9_:]*",
                       name ? name : "(null)");
    int nlabels = 0;
    if (labels)
        while (labels[nlabels]) {
            if (nlabels == MG_METRICS_MAX_LABELS)
                return MG_ERRF(MG_EINVAL, "metric %s: more than %d labels", name,
                               MG_METRICS_MAX_LABELS);
            const char *l = labels[nlabels];
            if (!valid_label_name(l))
                return MG_ERRF(MG_EINVAL,
                               "metric %s: label name \"%s\" must match [a-zA-Z_][a-zA-Z0-9_]* "
                               "and not start with __",
                               name, l);
            if (type == MG_METRIC_HISTOGRAM && strcmp(l, "le") == 0)
                return MG_ERRF(MG_EINVAL, "metric %s: a histogram may not have the label \"le\"",
                               name);
            for (int j = 0; j < nlabels; j++)
                if (strcmp(labels[j], l) == 0)
                    return MG_ERRF(MG_EINVAL, "metric %s: label \"%s\" given twice", name, l);
            nlabels++;
        }
    if (type == MG_METRIC_HISTOGRAM) {
        if (!buckets) {
            buckets = metrics_latency_buckets;
            nbuckets = metrics_latency_nbuckets;
        }
        if (nbuckets == 0) return MG_ERRF(MG_EINVAL, "histogram %s: no buckets", name);
        for (size_t i = 0; i < nbuckets; i++) {
            if (!isfinite(buckets[i]))
                return MG_ERRF(MG_EINVAL, "histogram %s: bucket %zu is not finite", name, i);
            if (i > 0 && !(buckets[i] > buckets[i - 1]))
                return MG_ERRF(MG_EINVAL, "histogram %s: bucket %zu (%g) not above bucket %zu (%g)",
                               name, i, buckets[i], i - 1, buckets[i - 1]);
        }
    }

    pthread_mutex_lock(&r->mu);
    for (mg_metric *m = r->first; m; m = m->next) {
        if (strcmp(m->name, name) != 0) continue;
        bool same = same_family(m, type, labels, nlabels, buckets, nbuckets);
        pthread_mutex_unlock(&r->mu);
        if (!same)
            return MG_ERRF(MG_EEXIST,
                           "metric %s already registered as a %s with other labels or buckets",
                           name, type_name(m->type));
        *out = m;
        return MG_OK;
    }

    mg_metric *m = calloc(1, sizeof *m);
    if (!m) goto oom;
    pthread_mutex_init(&m->mu, NULL);
    m->type = type;
    m->name = strdup(name);
    m->help = strdup(help ? help : "");
    m->tcap = 16;
    m->table = calloc(m->tcap, sizeof *m->table);
    if (nlabels) m->label_names = calloc((size_t)nlabels, sizeof(char *));
    if (!m->name || !m->help || !m->table || (nlabels && !m->label_names)) goto oom_m;
    for (; m->nlabels < nlabels; m->nlabels++)
        if (!(m->label_names[m->nlabels] = strdup(labels[m->nlabels]))) goto oom_m;
    if (type == MG_METRIC_HISTOGRAM) {
        m->buckets = malloc(nbuckets * sizeof(double));
        if (!m->buckets) goto oom_m;
        memcpy(m->buckets, buckets, nbuckets * sizeof(double));
        m->nbuckets = nbuckets;
    }
    if (r->last)
        r->last->next = m;
    else
        r->first = m;
    r->last = m;
    pthread_mutex_unlock(&r->mu);
    *out = m;
    return MG_OK;

oom_m:
    family_free(m);
oom:
    pthread_mutex_unlock(&r->mu);
    return MG_ERRF(MG_ENOMEM, "metric %s: out of memory", name);
}

mg_status metrics_counter_new(mg_registry *r, const char *name, const char *help,
                              const char *const *label_names, mg_metric **out) {
    return family_new(r, MG_METRIC_COUNTER, name, help, label_names, NULL, 0, out);
}

mg_status metrics_gauge_new(mg_registry *r, const char *name, const char *help,
                            const char *const *label_names, mg_metric **out) {
    return family_new(r, MG_METRIC_GAUGE, name, help, label_names, NULL, 0, out);
}

mg_status metrics_histogram_new(mg_registry *r, const char *name, const char *help,
                                const char *const *label_names, const double *buckets,
                                size_t nbuckets, mg_metric **out) {
    return family_new(r, MG_METRIC_HISTOGRAM, name, help, label_names, buckets, nbuckets, out);
}

const char *metrics_name(const mg_metric *m) {
    return m->name;
}

mg_metric_type metrics_type(const mg_metric *m) {
    return m->type;
}

/* ---- children ---- */

/* Strict UTF-8 check: the exposition must be valid UTF-8, and label values often come from
 * outside (model names). */
static bool valid_utf8(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        if (*p < 0x80) {
            p++;
            continue;
        }
        int n;
        uint32_t cp;
        if ((*p & 0xe0) == 0xc0) {
            n = 1;
            cp = *p & 0x1f;
        } else if ((*p & 0xf0) == 0xe0) {
            n = 2;
            cp = *p & 0x0f;
        } else if ((*p & 0xf8) == 0xf0) {
            n = 3;
            cp = *p & 0x07;
        } else {
            return false;
        }
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        static const uint32_t min_cp[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        p += n + 1;
    }
    return true;
}

static uint64_t hash_values(const char *const *values, int n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (int i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++) {
            h ^= *p;
            h *= 1099511628211ull;
        }
        h ^= 0xff; /* separator: ("ab","c") differs from ("a","bc") */
        h *= 1099511628211ull;
    }
    return h;
}

static mg_status check_values(const mg_metric *m, const char *const *values) {
    int n = 0;
    if (values)
        while (n <= m->nlabels && values[n]) n++;
    if (n != m->nlabels)
        return MG_ERRF(MG_EINVAL, "metric %s: %d label value(s) given, it has %d label(s)", m->name,
                       n, m->nlabels);
    for (int i = 0; i < n; i++)
        if (!valid_utf8(values[i]))
            return MG_ERRF(MG_EINVAL, "metric %s: value of label %s is not valid UTF-8", m->name,
                           m->label_names[i]);
    return MG_OK;
}

/* Under m->mu. */
static struct child *find_child(mg_metric *m, const char *const *values, uint64_t h) {
    for (struct child *c = m->table[h & (m->tcap - 1)]; c; c = c->hnext) {
        if (c->hash != h) continue;
        int i = 0;
        while (i < m->nlabels && strcmp(c->values[i], values[i]) == 0) i++;
        if (i == m->nlabels) return c;
    }
    return NULL;
}

/* Under m->mu. Doubling keeps chains short; a failed grow just leaves them longer. */
static void grow_table(mg_metric *m) {
    size_t cap = m->tcap * 2;
    struct child **t = calloc(cap, sizeof *t);
    if (!t) return;
    for (struct child *c = m->first; c; c = c->onext) {
        c->hnext = t[c->hash & (cap - 1)];
        t[c->hash & (cap - 1)] = c;
    }
    free(m->table);
    m->table = t;
    m->tcap = cap;
}

static mg_status child_get(mg_metric *m, mg_metric_type type, const char *const *values,
                           struct child **out) {
    if (!m || !out) return MG_ERRF(MG_EINVAL, "metrics: NULL family or out");
    if (m->type != type)
        return MG_ERRF(MG_EINVAL, "metric %s is a %s, not a %s", m->name, type_name(m->type),
                       type_name(type));
    mg_status s = check_values(m, values);
    if (s != MG_OK) return s;
    uint64_t h = hash_values(values, m->nlabels);

    pthread_mutex_lock(&m->mu);
    struct child *c = find_child(m, values, h);
    if (c) {
        atomic_store_explicit(&c->hidden, false, memory_order_relaxed);
        pthread_mutex_unlock(&m->mu);
        *out = c;
        return MG_OK;
    }
    size_t size = type == MG_METRIC_COUNTER ? sizeof(mg_counter)
                  : type == MG_METRIC_GAUGE
                      ? sizeof(mg_gauge)
                      : sizeof(mg_histogram) + (m->nbuckets + 1) * sizeof(_Atomic uint64_t);
    c = calloc(1, size); /* all-zero bits are 0.0 and count 0 */
    if (!c) goto oom;
    c->fam = m;
    c->hash = h;
    if (m->nlabels) {
        c->values = calloc((size_t)m->nlabels, sizeof(char *));
        if (!c->values) goto oom_c;
        for (int i = 0; i < m->nlabels; i++)
            if (!(c->values[i] = strdup(values[i]))) goto oom_c;
    }
    if (m->nchildren + 1 > m->tcap * 2) grow_table(m);
    c->hnext = m->table[h & (m->tcap - 1)];
    m->table[h & (m->tcap - 1)] = c;
    if (m->last)
        m->last->onext = c;
    else
        m->first = c;
    m->last = c;
    m->nchildren++;
    pthread_mutex_unlock(&m->mu);
    *out = c;
    return MG_OK;

oom_c:
    free_strings(c->values, m->nlabels);
    free(c);
oom:
    pthread_mutex_unlock(&m->mu);
    return MG_ERRF(MG_ENOMEM, "metric %s: out of memory", m->name);
}

mg_status metrics_counter_child(mg_metric *m, const char *const *values, mg_counter **out) {
    struct child *c;
    mg_status s = child_get(m, MG_METRIC_COUNTER, values, &c);
    if (s == MG_OK) *out = (mg_counter *)c;
    return s;
}

mg_status metrics_gauge_child(mg_metric *m, const char *const *values, mg_gauge **out) {
    struct child *c;
    mg_status s = child_get(m, MG_METRIC_GAUGE, values, &c);
    if (s == MG_OK) *out = (mg_gauge *)c;
    return s;
}

mg_status metrics_histogram_child(mg_metric *m, const char *const *values, mg_histogram **out) {
    struct child *c;
    mg_status s = child_get(m, MG_METRIC_HISTOGRAM, values, &c);
    if (s == MG_OK) *out = (mg_histogram *)c;
    return s;
}

mg_status metrics_remove(mg_metric *m, const char *const *values) {
    if (!m) return MG_ERRF(MG_EINVAL, "metrics_remove: NULL family");
    mg_status s = check_values(m, values);
    if (s != MG_OK) return s;
    uint64_t h = hash_values(values, m->nlabels);
    pthread_mutex_lock(&m->mu);
    struct child *c = find_child(m, values, h);
    if (c) atomic_store_explicit(&c->hidden, true, memory_order_relaxed);
    pthread_mutex_unlock(&m->mu);
    if (!c) return MG_ERRF(MG_ENOTFOUND, "metric %s: no child with those label values", m->name);
    return MG_OK;
}

/* ---- updates ---- */

void metrics_counter_inc(mg_counter *c) {
    atomic_fetch_add_explicit(&c->n, 1, memory_order_relaxed);
}

void metrics_counter_add_u64(mg_counter *c, unsigned long long n) {
    atomic_fetch_add_explicit(&c->n, n, memory_order_relaxed);
}

void metrics_counter_add(mg_counter *c, double v) {
    if (!(v > 0)) return; /* negative, zero and NaN */
    atomic_add_double(&c->fbits, v);
}

double metrics_counter_value(const mg_counter *c) {
    return (double)atomic_load_explicit((_Atomic uint64_t *)&c->n, memory_order_relaxed) +
           atomic_load_double(&c->fbits);
}

void metrics_gauge_set(mg_gauge *g, double v) {
    atomic_store_explicit(&g->bits, dbits(v), memory_order_relaxed);
}

void metrics_gauge_add(mg_gauge *g, double v) {
    atomic_add_double(&g->bits, v);
}

void metrics_gauge_inc(mg_gauge *g) {
    atomic_add_double(&g->bits, 1.0);
}

void metrics_gauge_dec(mg_gauge *g) {
    atomic_add_double(&g->bits, -1.0);
}

/* Under g->ch.fam->mu. */
static double gauge_read_locked(const mg_gauge *g) {
    if (g->fn) return g->fn(g->arg);
    return atomic_load_double(&g->bits);
}

double metrics_gauge_value(const mg_gauge *g) {
    mg_metric *m = g->ch.fam;
    pthread_mutex_lock(&m->mu);
    double v = gauge_read_locked(g);
    pthread_mutex_unlock(&m->mu);
    return v;
}

void metrics_gauge_set_fn(mg_gauge *g, mg_gauge_fn fn, void *arg) {
    mg_metric *m = g->ch.fam;
    pthread_mutex_lock(&m->mu);
    g->fn = fn;
    g->arg = fn ? arg : NULL;
    pthread_mutex_unlock(&m->mu);
}

void metrics_histogram_observe(mg_histogram *h, double v) {
    if (isnan(v)) return;
    const mg_metric *m = h->ch.fam;
    /* First bound >= v (the "le" rule); nbuckets when v is above them all (+Inf). */
    size_t lo = 0, hi = m->nbuckets;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v <= m->buckets[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&h->counts[lo], 1, memory_order_relaxed);
    atomic_add_double(&h->sumbits, v);
}

unsigned long long metrics_histogram_count(const mg_histogram *h) {
    unsigned long long n = 0;
    for (size_t i = 0; i <= h->ch.fam->nbuckets; i++)
        n += atomic_load_explicit((_Atomic uint64_t *)&h->counts[i], memory_order_relaxed);
    return n;
}

double metrics_histogram_sum(const mg_histogram *h) {
    return atomic_load_double(&h->sumbits);
}

/* ---- exposition ---- */

struct buf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void buf_reserve(struct buf *b, size_t more) {
    if (b->oom || b->len + more + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void buf_put(struct buf *b, const char *s, size_t n) {
    buf_reserve(b, n);
    if (b->oom) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void buf_str(struct buf *b, const char *s) {
    buf_put(b, s, strlen(s));
}

/* Escape for HELP text (label_value false: backslash and newline) or label values (also the
 * double quote), as the 0.0.4 format requires. */
static void buf_escaped(struct buf *b, const char *s, bool label_value) {
    const char *run = s;
    for (const char *p = s; *p; p++) {
        const char *rep = NULL;
        if (*p == '\\')
            rep = "\\\\";
        else if (*p == '\n')
            rep = "\\n";
        else if (*p == '"' && label_value)
            rep = "\\\"";
        if (!rep) continue;
        buf_put(b, run, (size_t)(p - run));
        buf_str(b, rep);
        run = p + 1;
    }
    buf_str(b, run);
}

/* Shortest text that reads back as the same double (what Go's client prints), with the
 * format's spellings of the special values. */
static void fmt_double(char out[32], double v) {
    if (isnan(v)) {
        strcpy(out, "NaN");
        return;
    }
    if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, 32, "%.*g", prec, v);
        if (strtod(out, NULL) == v) return;
    }
}

static void buf_double(struct buf *b, double v) {
    char tmp[32];
    fmt_double(tmp, v);
    buf_str(b, tmp);
}

/* name{l1="v1",...,extra="xv"} — extra is the histogram's "le" (NULL for none). */
static void buf_series(struct buf *b, const mg_metric *m, const char *suffix, const struct child *c,
                       const char *extra_name, const char *extra_value) {
    buf_str(b, m->name);
    if (suffix) buf_str(b, suffix);
    if (m->nlabels == 0 && !extra_name) return;
    buf_put(b, "{", 1);
    for (int i = 0; i < m->nlabels; i++) {
        if (i) buf_put(b, ",", 1);
        buf_str(b, m->label_names[i]);
        buf_put(b, "=\"", 2);
        buf_escaped(b, c->values[i], true);
        buf_put(b, "\"", 1);
    }
    if (extra_name) {
        if (m->nlabels) buf_put(b, ",", 1);
        buf_str(b, extra_name);
        buf_put(b, "=\"", 2);
        buf_str(b, extra_value);
        buf_put(b, "\"", 1);
    }
    buf_put(b, "}", 1);
}

static void render_family(struct buf *b, mg_metric *m) {
    pthread_mutex_lock(&m->mu);
    if (m->help[0]) {
        buf_str(b, "# HELP ");
        buf_str(b, m->name);
        buf_put(b, " ", 1);
        buf_escaped(b, m->help, false);
        buf_put(b, "\n", 1);
    }
    buf_str(b, "# TYPE ");
    buf_str(b, m->name);
    buf_put(b, " ", 1);
    buf_str(b, type_name(m->type));
    buf_put(b, "\n", 1);
    for (struct child *c = m->first; c; c = c->onext) {
        if (atomic_load_explicit(&c->hidden, memory_order_relaxed)) continue;
        if (m->type == MG_METRIC_COUNTER || m->type == MG_METRIC_GAUGE) {
            double v = m->type == MG_METRIC_COUNTER ? metrics_counter_value((mg_counter *)c)
                                                    : gauge_read_locked((mg_gauge *)c);
            buf_series(b, m, NULL, c, NULL, NULL);
            buf_put(b, " ", 1);
            buf_double(b, v);
            buf_put(b, "\n", 1);
            continue;
        }
        const mg_histogram *h = (const mg_histogram *)c;
        uint64_t cum = 0;
        char le[32];
        for (size_t i = 0; i <= m->nbuckets; i++) {
            cum += atomic_load_explicit((_Atomic uint64_t *)&h->counts[i], memory_order_relaxed);
            if (i < m->nbuckets)
                fmt_double(le, m->buckets[i]);
            else
                strcpy(le, "+Inf");
            buf_series(b, m, "_bucket", c, "le", le);
            buf_put(b, " ", 1);
            buf_double(b, (double)cum);
            buf_put(b, "\n", 1);
        }
        buf_series(b, m, "_sum", c, NULL, NULL);
        buf_put(b, " ", 1);
        buf_double(b, metrics_histogram_sum(h));
        buf_put(b, "\n", 1);
        buf_series(b, m, "_count", c, NULL, NULL);
        buf_put(b, " ", 1);
        buf_double(b, (double)cum);
        buf_put(b, "\n", 1);
    }
    pthread_mutex_unlock(&m->mu);
}

mg_status metrics_render(mg_registry *r, char **out, size_t *len) {
    if (!r || !out) return MG_ERRF(MG_EINVAL, "metrics_render: NULL registry or out");
    /* Hooks run without the registry lock, so they may take their own locks freely; a copy of
     * the list keeps this safe against hooks registered meanwhile. */
    pthread_mutex_lock(&r->mu);
    size_t nhooks = r->nhooks;
    struct hook local[8], *hooks = nhooks <= 8 ? local : malloc(nhooks * sizeof *hooks);
    if (hooks && nhooks) memcpy(hooks, r->hooks, nhooks * sizeof *hooks);
    pthread_mutex_unlock(&r->mu);
    if (!hooks) return MG_ERRF(MG_ENOMEM, "metrics_render: out of memory");
    for (size_t i = 0; i < nhooks; i++) hooks[i].fn(hooks[i].arg);
    if (hooks != local) free(hooks);

    struct buf b = {0};
    buf_reserve(&b, 0);
    pthread_mutex_lock(&r->mu);
    for (mg_metric *m = r->first; m; m = m->next) render_family(&b, m);
    pthread_mutex_unlock(&r->mu);
    if (b.oom) {
        free(b.p);
        return MG_ERRF(MG_ENOMEM, "metrics_render: out of memory");
    }
    *out = b.p;
    if (len) *len = b.len;
    return MG_OK;
}

/* ---- process collector ---- */

/* The collector writes a counter's value outright: CPU time is read, not accumulated. */
static void counter_store(mg_counter *c, double v) {
    atomic_store_explicit(&c->n, 0, memory_order_relaxed);
    atomic_store_explicit(&c->fbits, dbits(v), memory_order_relaxed);
}

/* Fields of /proc/self/stat after the command name, which may itself hold spaces and ')': the
 * last ')' ends it. Field numbers as in proc(5). */
static bool read_proc_stat(unsigned long long *utime, unsigned long long *stime,
                           unsigned long long *starttime, unsigned long long *vsize,
                           long long *rss_pages) {
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f) return false;
    char line[1024];
    bool ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    if (!ok) return false;
    char *p = strrchr(line, ')');
    if (!p) return false;
    /* fields 3 (state) .. 24 (rss) */
    return sscanf(p + 1,
                  " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d "
                  "%llu %llu %lld",
                  utime, stime, starttime, vsize, rss_pages) == 5;
}

static double boot_time(void) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    char line[256];
    double bt = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long v;
        if (sscanf(line, "btime %llu", &v) == 1) {
            bt = (double)v;
            break;
        }
    }
    fclose(f);
    return bt;
}

static long count_open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

static void process_scrape(void *arg) {
    mg_registry *r = arg;
    unsigned long long ut, st, start, vsize;
    long long rss;
    if (read_proc_stat(&ut, &st, &start, &vsize, &rss)) {
        double tck = (double)sysconf(_SC_CLK_TCK);
        counter_store(r->p_cpu, (double)(ut + st) / tck);
        metrics_gauge_set(r->p_vsize, (double)vsize);
        metrics_gauge_set(r->p_rss, (double)rss * (double)sysconf(_SC_PAGESIZE));
    }
    long fds = count_open_fds();
    if (fds >= 0) metrics_gauge_set(r->p_fds, (double)fds);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        metrics_gauge_set(r->p_maxfds,
                          rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur);
}

mg_status metrics_process_register(mg_registry *r) {
    if (!r) return MG_ERRF(MG_EINVAL, "metrics_process_register: NULL registry");
    pthread_mutex_lock(&r->mu);
    bool done = r->process;
    r->process = true;
    pthread_mutex_unlock(&r->mu);
    if (done) return MG_OK;

    mg_metric *m;
    mg_status s;
#define FAM(kind, name, help, dst)                                                                 \
    if ((s = metrics_##kind##_new(r, name, help, NULL, &m)) != MG_OK ||                            \
        (s = metrics_##kind##_child(m, NULL, &r->dst)) != MG_OK)                                   \
        goto fail;
    FAM(counter, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
        p_cpu);
    FAM(gauge, "process_open_fds", "Number of open file descriptors.", p_fds);
    FAM(gauge, "process_max_fds", "Maximum number of open file descriptors.", p_maxfds);
    FAM(gauge, "process_virtual_memory_bytes", "Virtual memory size in bytes.", p_vsize);
    FAM(gauge, "process_resident_memory_bytes", "Resident memory size in bytes.", p_rss);
    FAM(gauge, "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.", p_start);
#undef FAM

    unsigned long long ut, st, start, vsize;
    long long rss;
    double start_s;
    if (read_proc_stat(&ut, &st, &start, &vsize, &rss)) {
        start_s = boot_time() + (double)start / (double)sysconf(_SC_CLK_TCK);
    } else {
        struct timeval tv; /* no /proc: registration time is the best guess left */
        gettimeofday(&tv, NULL);
        start_s = (double)tv.tv_sec + tv.tv_usec / 1e6;
    }
    metrics_gauge_set(r->p_start, start_s);
    return metrics_registry_on_scrape(r, process_scrape, r);

fail:
    pthread_mutex_lock(&r->mu);
    r->process = false;
    pthread_mutex_unlock(&r->mu);
    return s;
}
