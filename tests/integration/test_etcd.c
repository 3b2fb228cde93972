/* test_etcd.c - the etcd client against a real etcd: key-value calls, leases and their expiry,
 * the keep-alive thread, watches (history, live, compaction) and a watch that resumes across etcd
 * restarts without losing or repeating an event; errors when etcd is down or hung.
 *
 * Uses MAGNETO_ETCD_URL when set (tests/run.sh), else starts its own etcd; the restart cases
 * always start their own on a free port. Keys live under a per-run prefix so runs do not mix. */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "etcd.h"
#include "log.h"
#include "spawn.h"

static char P[64]; /* per-run key prefix */

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    usleep((useconds_t)ms * 1000);
}

static const char *k(const char *suffix) {
    static __thread char b[4][160];
    static __thread int i;
    char *s = b[i++ & 3];
    snprintf(s, 160, "%s/%s", P, suffix);
    return s;
}

/* ---- events recorded by a watch callback */

typedef struct rec_ev {
    etcd_event_type type;
    char key[96];
    char value[64];
    int64_t rev;
} rec_ev;

typedef struct recorder {
    pthread_mutex_t mu;
    rec_ev ev[256];
    int n;
} recorder;

static void on_ev(void *ud, const etcd_event *e) {
    recorder *r = ud;
    pthread_mutex_lock(&r->mu);
    if (r->n < 256) {
        rec_ev *x = &r->ev[r->n++];
        x->type = e->type;
        snprintf(x->key, sizeof x->key, "%.*s", (int)e->key_len, e->key);
        snprintf(x->value, sizeof x->value, "%.*s", (int)e->value_len, e->value);
        x->rev = e->mod_revision;
    }
    pthread_mutex_unlock(&r->mu);
}

static int rec_count(recorder *r) {
    pthread_mutex_lock(&r->mu);
    int n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static bool rec_wait(recorder *r, int n, int timeout_ms) {
    long long end = now_ms() + timeout_ms;
    while (rec_count(r) < n) {
        if (now_ms() > end) return false;
        sleep_ms(10);
    }
    return true;
}

/* ---- key-value */

static void test_kv(etcd_client *c) {
    CHECK_OK(etcd_put(c, k("kv/a"), "1", 1, 0));
    CHECK_OK(etcd_put(c, k("kv/b"), "22", 2, 0));
    CHECK_OK(etcd_put(c, k("kv/b"), "23", 2, 0)); /* overwrite */
    CHECK_OK(etcd_put(c, k("kv0"), "x", 1, 0));   /* shares the text prefix "kv", not "kv/" */
    static const char bin[] = {0, 1, 2, (char)0xff, 0, 'z'};
    CHECK_OK(etcd_put(c, k("kv/bin"), bin, sizeof bin, 0));

    etcd_kvs r;
    CHECK_OK(etcd_get(c, k("kv/b"), &r));
    CHECK_EQ_INT(r.n, 1);
    if (r.n == 1) {
        CHECK_EQ_STR(r.kvs[0].value, "23");
        CHECK_EQ_STR(r.kvs[0].key, k("kv/b"));
        CHECK_EQ_INT(r.kvs[0].version, 2);
        CHECK(r.kvs[0].mod_revision > r.kvs[0].create_revision);
        CHECK(r.revision >= r.kvs[0].mod_revision);
        CHECK_EQ_INT(r.kvs[0].lease, 0);
    }
    etcd_kvs_free(&r);

    CHECK_OK(etcd_get(c, k("kv/bin"), &r));
    CHECK(r.n == 1 && r.kvs[0].value_len == sizeof bin &&
          memcmp(r.kvs[0].value, bin, sizeof bin) == 0);
    etcd_kvs_free(&r);

    CHECK_EQ_INT(etcd_get(c, k("kv/none"), &r), MG_ENOTFOUND);
    CHECK_EQ_INT(r.n, 0);
    CHECK(r.revision > 0);
    etcd_kvs_free(&r);

    /* An empty value is a value, not an absence. */
    CHECK_OK(etcd_put(c, k("kv/empty"), "", 0, 0));
    CHECK_OK(etcd_get(c, k("kv/empty"), &r));
    CHECK(r.n == 1 && r.kvs[0].value_len == 0 && r.kvs[0].value[0] == 0);
    etcd_kvs_free(&r);

    CHECK_OK(etcd_get_prefix(c, k("kv/"), &r));
    CHECK_EQ_INT(r.n, 4); /* a, b, bin, empty; not kv0 */
    if (r.n == 4) {
        CHECK_EQ_STR(r.kvs[0].key, k("kv/a"));
        CHECK_EQ_STR(r.kvs[1].key, k("kv/b"));
        CHECK_EQ_STR(r.kvs[2].key, k("kv/bin"));
        CHECK_EQ_STR(r.kvs[3].key, k("kv/empty"));
    }
    etcd_kvs_free(&r);

    CHECK_OK(etcd_create(c, k("kv/new"), "n", 1, 0));
    CHECK_EQ_INT(etcd_create(c, k("kv/new"), "m", 1, 0), MG_EEXIST);
    CHECK_OK(etcd_get(c, k("kv/new"), &r));
    CHECK(r.n == 1 && strcmp(r.kvs[0].value, "n") == 0);
    etcd_kvs_free(&r);

    int64_t del = -1;
    CHECK_OK(etcd_delete(c, k("kv/a"), false, &del));
    CHECK_EQ_INT(del, 1);
    CHECK_OK(etcd_delete(c, k("kv/a"), false, &del));
    CHECK_EQ_INT(del, 0);
    CHECK_OK(etcd_delete(c, k("kv/"), true, &del));
    CHECK_EQ_INT(del, 4); /* b, bin, empty, new */
    CHECK_OK(etcd_get_prefix(c, k("kv/"), &r));
    CHECK_EQ_INT(r.n, 0);
    etcd_kvs_free(&r);
    CHECK_OK(etcd_get(c, k("kv0"), &r)); /* outside the prefix: untouched */
    etcd_kvs_free(&r);
}

/* Many threads on one client at once. */
typedef struct put_job {
    etcd_client *c;
    int t;
    int fails;
} put_job;

static void *put_many(void *arg) {
    put_job *j = arg;
    for (int i = 0; i < 40; i++) {
        char key[160], val[32];
        snprintf(key, sizeof key, "%s/mt/%d/%03d", P, j->t, i);
        int n = snprintf(val, sizeof val, "v%d", i);
        if (etcd_put(j->c, key, val, (size_t)n, 0) != MG_OK) j->fails++;
    }
    return NULL;
}

static void test_threads(etcd_client *c) {
    pthread_t th[4];
    put_job jobs[4];
    for (int t = 0; t < 4; t++) {
        jobs[t] = (put_job){c, t, 0};
        pthread_create(&th[t], NULL, put_many, &jobs[t]);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        CHECK_EQ_INT(jobs[t].fails, 0);
    }
    etcd_kvs r;
    CHECK_OK(etcd_get_prefix(c, k("mt/"), &r));
    CHECK_EQ_INT(r.n, 160);
    etcd_kvs_free(&r);
    int64_t del = 0;
    CHECK_OK(etcd_delete(c, k("mt/"), true, &del));
    CHECK_EQ_INT(del, 160);
}

/* Waiting for a key that another thread (rank 0) publishes a little later. */
typedef struct late_put {
    etcd_client *c;
    const char *key;
} late_put;

static void *put_later(void *arg) {
    late_put *lp = arg;
    sleep_ms(300);
    static const unsigned char id[128] = {1, 2, 3, 0, 0xff}; /* binary, like an NCCL id */
    etcd_put(lp->c, lp->key, id, sizeof id, 0);
    return NULL;
}

static void test_get_wait(etcd_client *c) {
    etcd_kvs r;
    CHECK_OK(etcd_put(c, k("wait/here"), "now", 3, 0));
    CHECK_OK(etcd_get_wait(c, k("wait/here"), 1000, &r)); /* already there: at once */
    CHECK(r.n == 1 && strcmp(r.kvs[0].value, "now") == 0);
    etcd_kvs_free(&r);

    late_put lp = {c, k("wait/nccl")};
    pthread_t th;
    pthread_create(&th, NULL, put_later, &lp);
    long long t0 = now_ms();
    CHECK_OK(etcd_get_wait(c, lp.key, 5000, &r));
    long long took = now_ms() - t0;
    pthread_join(th, NULL);
    CHECK_MSG(took >= 250 && took < 3000, "waited %lld ms", took);
    CHECK(r.n == 1 && r.kvs[0].value_len == 128 && (unsigned char)r.kvs[0].value[4] == 0xff);
    if (r.n == 1) CHECK_EQ_STR(r.kvs[0].key, lp.key);
    etcd_kvs_free(&r);

    t0 = now_ms();
    CHECK_EQ_INT(etcd_get_wait(c, k("wait/never"), 300, &r), MG_ETIMEOUT);
    CHECK(r.n == 0);
    took = now_ms() - t0;
    CHECK_MSG(took >= 250 && took < 2000, "timed out after %lld ms", took);
}

/* ---- leases */

static atomic_int lost_calls;
static _Atomic int64_t lost_lease;
static void on_lost(void *ud, int64_t lease) {
    atomic_fetch_add(&lost_calls, 1);
    atomic_store(&lost_lease, lease);
}

static bool key_exists(etcd_client *c, const char *key) {
    etcd_kvs r;
    mg_status st = etcd_get(c, key, &r);
    etcd_kvs_free(&r);
    return st == MG_OK;
}

static void test_leases(etcd_client *c) {
    int64_t lease = 0;
    CHECK_OK(etcd_lease_grant(c, 5, &lease));
    CHECK(lease != 0);
    CHECK_OK(etcd_put(c, k("lease/a"), "a", 1, lease));
    etcd_kvs r;
    CHECK_OK(etcd_get(c, k("lease/a"), &r));
    CHECK(r.n == 1 && r.kvs[0].lease == lease);
    etcd_kvs_free(&r);
    int ttl = 0;
    CHECK_OK(etcd_lease_keepalive_once(c, lease, &ttl));
    CHECK_EQ_INT(ttl, 5);
    CHECK_OK(etcd_lease_revoke(c, lease));
    CHECK(!key_exists(c, k("lease/a")));
    CHECK_EQ_INT(etcd_lease_revoke(c, lease), MG_ENOTFOUND);
    CHECK_EQ_INT(etcd_lease_keepalive_once(c, lease, &ttl), MG_ENOTFOUND);
    CHECK_EQ_INT(ttl, 0);
    CHECK_EQ_INT(etcd_lease_grant(c, 0, &lease), MG_EINVAL);

    /* Expiry: a 1 s lease left alone takes its keys with it (etcd checks expiry every ~500 ms). */
    CHECK_OK(etcd_lease_grant(c, 1, &lease));
    CHECK_OK(etcd_put(c, k("lease/b"), "b", 1, lease));
    CHECK(key_exists(c, k("lease/b")));
    long long t0 = now_ms();
    while (key_exists(c, k("lease/b")) && now_ms() - t0 < 5000) sleep_ms(50);
    long long gone_ms = now_ms() - t0;
    CHECK_MSG(!key_exists(c, k("lease/b")), "key of an expired 1 s lease still there");
    CHECK_MSG(gone_ms >= 500 && gone_ms < 4000, "expired after %lld ms", gone_ms);
    CHECK_EQ_INT(etcd_lease_keepalive_once(c, lease, NULL), MG_ENOTFOUND);

    /* Putting under a dead lease fails with not-found. */
    CHECK_EQ_INT(etcd_put(c, k("lease/c"), "c", 1, lease), MG_ENOTFOUND);

    /* The keep-alive thread holds a 2 s lease for 4 s, then reports loss once when the lease is
     * revoked behind its back. */
    CHECK_OK(etcd_lease_grant(c, 2, &lease));
    CHECK_OK(etcd_put(c, k("lease/d"), "d", 1, lease));
    etcd_keepalive *ka = NULL;
    CHECK_OK(etcd_keepalive_start(c, lease, 2, on_lost, NULL, &ka));
    sleep_ms(4000);
    CHECK_MSG(key_exists(c, k("lease/d")), "kept-alive key expired");
    CHECK_EQ_INT(atomic_load(&lost_calls), 0);
    CHECK_OK(etcd_lease_revoke(c, lease));
    t0 = now_ms();
    while (atomic_load(&lost_calls) == 0 && now_ms() - t0 < 3000) sleep_ms(10);
    CHECK_EQ_INT(atomic_load(&lost_calls), 1);
    CHECK_EQ_INT(atomic_load(&lost_lease), lease);
    CHECK(etcd_keepalive_lost(ka));
    etcd_keepalive_stop(ka);
    etcd_keepalive_stop(NULL);
}

/* ---- watches */

static void test_watch(etcd_client *c) {
    /* Live events of a prefix, in order, with types and values. */
    recorder rec = {.mu = PTHREAD_MUTEX_INITIALIZER};
    etcd_watch *w = NULL;
    CHECK_OK(etcd_watch_start(c, k("w/"), true, 0, on_ev, &rec, &w));
    if (!w) return;
    CHECK_OK(etcd_put(c, k("w/a"), "1", 1, 0));
    CHECK_OK(etcd_put(c, k("wx"), "outside", 7, 0)); /* not under "w/" */
    CHECK_OK(etcd_put(c, k("w/b"), "2", 1, 0));
    CHECK_OK(etcd_put(c, k("w/a"), "3", 1, 0));
    CHECK_OK(etcd_delete(c, k("w/b"), false, NULL));
    CHECK(rec_wait(&rec, 4, 5000));
    sleep_ms(100); /* nothing more may come */
    CHECK_EQ_INT(rec_count(&rec), 4);
    static const struct {
        etcd_event_type t;
        const char *key, *val;
    } want[] = {{ETCD_EV_PUT, "w/a", "1"},
                {ETCD_EV_PUT, "w/b", "2"},
                {ETCD_EV_PUT, "w/a", "3"},
                {ETCD_EV_DELETE, "w/b", ""}};
    for (int i = 0; i < 4 && i < rec.n; i++) {
        CHECK_EQ_INT(rec.ev[i].type, want[i].t);
        CHECK_EQ_STR(rec.ev[i].key, k(want[i].key));
        CHECK_EQ_STR(rec.ev[i].value, want[i].val);
        if (i) CHECK(rec.ev[i].rev > rec.ev[i - 1].rev);
    }
    int64_t first = rec.ev[0].rev, last = rec.ev[3].rev;
    CHECK_EQ_INT(etcd_watch_revision(w), last);
    CHECK_EQ_INT(etcd_watch_reconnects(w), 0);
    etcd_watch_stop(w);

    /* History: a watch from an old revision replays what happened since. */
    recorder hist = {.mu = PTHREAD_MUTEX_INITIALIZER};
    CHECK_OK(etcd_watch_start(c, k("w/"), true, first, on_ev, &hist, &w));
    CHECK(rec_wait(&hist, 4, 5000));
    for (int i = 0; i < 4; i++) CHECK_EQ_INT(hist.ev[i].rev, rec.ev[i].rev);
    etcd_watch_stop(w);

    /* A single key. */
    recorder one = {.mu = PTHREAD_MUTEX_INITIALIZER};
    CHECK_OK(etcd_watch_start(c, k("w/a"), false, first, on_ev, &one, &w));
    CHECK(rec_wait(&one, 2, 5000));
    sleep_ms(100);
    CHECK_EQ_INT(rec_count(&one), 2);
    etcd_watch_stop(w);
    (void)last;
}

/* Figures, printed and not asserted (timing is for benchmarks, not tests): latency of a put
 * through the gateway, and from a put returning to its watch event arriving. */
static void measure(etcd_client *c) {
    recorder rec = {.mu = PTHREAD_MUTEX_INITIALIZER};
    etcd_watch *w = NULL;
    CHECK_OK(etcd_watch_start(c, k("lat/"), true, 0, on_ev, &rec, &w));
    if (!w) return;
    enum { N = 200 };
    long long put_us = 0, ev_us = 0;
    for (int i = 0; i < N; i++) {
        struct timespec a, b, e;
        clock_gettime(CLOCK_MONOTONIC, &a);
        CHECK_OK(etcd_put(c, k("lat/x"), "v", 1, 0));
        clock_gettime(CLOCK_MONOTONIC, &b);
        long long end = now_ms() + 2000;
        while (rec_count(&rec) < i + 1 && now_ms() < end) {
        }
        CHECK_EQ_INT(rec_count(&rec), i + 1);
        clock_gettime(CLOCK_MONOTONIC, &e);
        put_us += (b.tv_sec - a.tv_sec) * 1000000LL + (b.tv_nsec - a.tv_nsec) / 1000;
        ev_us += (e.tv_sec - a.tv_sec) * 1000000LL + (e.tv_nsec - a.tv_nsec) / 1000;
    }
    etcd_watch_stop(w);
    printf("etcd put: %.0f us mean; put to watch event: %.0f us mean (%d puts)\n",
           (double)put_us / N, (double)ev_us / N, N);
}

/* Compact the store at rev with etcdctl (the client has no call for it: nothing in magneto
 * compacts; etcd does by its own policy). */
static int compact(const char *url, int64_t rev) {
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "ETCDCTL_API=3 etcdctl --endpoints=%s compaction %" PRId64 " >/dev/null 2>&1", url,
             rev);
    return system(cmd);
}

static void test_compacted(etcd_client *c, const char *url) {
    etcd_kvs r;
    CHECK_OK(etcd_put(c, k("cmp/a"), "1", 1, 0));
    CHECK_OK(etcd_get(c, k("cmp/a"), &r));
    int64_t rev1 = r.revision;
    etcd_kvs_free(&r);
    CHECK_OK(etcd_put(c, k("cmp/a"), "2", 1, 0));
    CHECK_OK(etcd_put(c, k("cmp/a"), "3", 1, 0));
    CHECK_OK(etcd_get(c, k("cmp/a"), &r));
    int64_t rev3 = r.revision;
    etcd_kvs_free(&r);
    CHECK_EQ_INT(compact(url, rev3), 0);
    /* Watching from rev1 cannot be served: the client reports the compaction, then goes on from
     * the compaction revision (the put of "3" is at rev3 itself). */
    recorder rec = {.mu = PTHREAD_MUTEX_INITIALIZER};
    etcd_watch *w = NULL;
    CHECK_OK(etcd_watch_start(c, k("cmp/"), true, rev1, on_ev, &rec, &w));
    CHECK(rec_wait(&rec, 2, 5000));
    if (rec_count(&rec) >= 2) {
        CHECK_EQ_INT(rec.ev[0].type, ETCD_EV_COMPACTED);
        CHECK_EQ_INT(rec.ev[0].rev, rev3);
        CHECK_EQ_INT(rec.ev[1].type, ETCD_EV_PUT);
        CHECK_EQ_STR(rec.ev[1].value, "3");
        CHECK_EQ_INT(rec.ev[1].rev, rev3);
    }
    CHECK_OK(etcd_put(c, k("cmp/a"), "4", 1, 0));
    CHECK(rec_wait(&rec, 3, 5000));
    CHECK_EQ_STR(rec.ev[2].value, "4");
    etcd_watch_stop(w);
}

/* The watch outlives etcd restarts: puts before, across and after each restart each arrive
 * exactly once, in order. kill_it: SIGKILL instead of SIGTERM. */
static void test_watch_resume(bool kill_it) {
    spawn_srv s;
    if (spawn_etcd(&s, NULL) != 0) {
        CHECK_MSG(0, "cannot start etcd");
        return;
    }
    etcd_client *c = NULL;
    CHECK_OK(etcd_client_create(s.url, 2000, &c));
    recorder rec = {.mu = PTHREAD_MUTEX_INITIALIZER};
    etcd_watch *w = NULL;
    CHECK_OK(etcd_watch_start(c, "resume/", true, 0, on_ev, &rec, &w));
    int puts = 0;
    char key[32], val[32];
    for (int round = 0; round < 2 && w; round++) {
        for (int i = 0; i < 5; i++, puts++) {
            snprintf(key, sizeof key, "resume/%03d", puts);
            int n = snprintf(val, sizeof val, "v%d", puts);
            CHECK_OK(etcd_put(c, key, val, (size_t)n, 0));
        }
        /* Stop etcd at once: the last puts may not have reached the watcher yet. */
        if (kill_it)
            CHECK_EQ_INT(spawn_kill(&s), 0);
        else
            CHECK_EQ_INT(spawn_stop(&s), 0);
        /* While it is down, calls fail fast and clearly. */
        CHECK_EQ_INT(etcd_put(c, "resume/x", "x", 1, 0), MG_EUNAVAIL);
        CHECK(strstr(mg_err_msg(), s.url) != NULL);
        sleep_ms(300); /* let the watcher notice and start its backoff */
        CHECK_EQ_INT(spawn_restart(&s), 0);
        /* Puts right after the restart land before the watcher has reconnected. */
        for (int i = 0; i < 5; i++, puts++) {
            snprintf(key, sizeof key, "resume/%03d", puts);
            int n = snprintf(val, sizeof val, "v%d", puts);
            CHECK_OK(etcd_put(c, key, val, (size_t)n, 0));
        }
    }
    CHECK_MSG(rec_wait(&rec, puts, 15000), "saw %d of %d events", rec_count(&rec), puts);
    sleep_ms(200);
    CHECK_EQ_INT(rec_count(&rec), puts);
    for (int i = 0; i < rec.n && i < puts; i++) {
        snprintf(key, sizeof key, "resume/%03d", i);
        snprintf(val, sizeof val, "v%d", i);
        CHECK_EQ_STR(rec.ev[i].key, key);
        CHECK_EQ_STR(rec.ev[i].value, val);
        CHECK_EQ_INT(rec.ev[i].type, ETCD_EV_PUT);
        if (i)
            CHECK_MSG(rec.ev[i].rev > rec.ev[i - 1].rev, "event %d rev %" PRId64, i, rec.ev[i].rev);
    }
    /* At least one reconnect; one can bridge both restarts when the second comes while the
     * watcher is still backing off from the first (seen on a loaded machine). What matters is
     * above: every event exactly once, in order. */
    if (w) CHECK(etcd_watch_reconnects(w) >= 1);
    etcd_watch_stop(w);
    etcd_client_destroy(c);
    spawn_cleanup(&s);
}

/* ---- etcd down or hung */

static void test_down(void) {
    int port = spawn_free_port(); /* nothing listens there */
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    etcd_client *c = NULL;
    CHECK_OK(etcd_client_create(url, 1000, &c));
    long long t0 = now_ms();
    CHECK_EQ_INT(etcd_put(c, "a", "b", 1, 0), MG_EUNAVAIL);
    CHECK_MSG(strstr(mg_err_msg(), url) != NULL, "message without the URL: %s", mg_err_msg());
    int64_t lease;
    CHECK_EQ_INT(etcd_lease_grant(c, 5, &lease), MG_EUNAVAIL);
    etcd_watch *w = NULL;
    recorder rec = {.mu = PTHREAD_MUTEX_INITIALIZER};
    CHECK_EQ_INT(etcd_watch_start(c, "a", true, 0, on_ev, &rec, &w), MG_EUNAVAIL);
    CHECK(w == NULL);
    CHECK(strstr(mg_err_msg(), url) != NULL);
    CHECK_MSG(now_ms() - t0 < 1000, "refused connections took %lld ms", now_ms() - t0);
    etcd_client_destroy(c);

    /* A server that accepts TCP and never answers: the deadline holds. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 16) == 0 &&
          getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", ntohs(a.sin_port));
    CHECK_OK(etcd_client_create(url, 500, &c));
    t0 = now_ms();
    CHECK_EQ_INT(etcd_put(c, "a", "b", 1, 0), MG_ETIMEOUT);
    long long took = now_ms() - t0;
    CHECK_MSG(took >= 400 && took < 2000, "hung put returned after %lld ms", took);
    CHECK(strstr(mg_err_msg(), url) != NULL);
    t0 = now_ms();
    CHECK_EQ_INT(etcd_watch_start(c, "a", true, 0, on_ev, &rec, &w), MG_ETIMEOUT);
    took = now_ms() - t0;
    CHECK_MSG(took >= 400 && took < 2500, "hung watch start returned after %lld ms", took);
    etcd_client_destroy(c);
    close(fd);

    CHECK_EQ_INT(etcd_client_create("127.0.0.1:2379", 0, &c), MG_EINVAL);
    CHECK(c == NULL);
}

int main(void) {
    mg_log_init("test_etcd", -1);
    snprintf(P, sizeof P, "test_etcd/%d-%lld", (int)getpid(), now_ms());
    spawn_srv own = {0};
    const char *url = getenv("MAGNETO_ETCD_URL");
    if (!url || !url[0]) {
        if (spawn_etcd(&own, NULL) != 0) {
            CHECK_MSG(0, "cannot start etcd");
            return check_done();
        }
        url = own.url;
    }
    etcd_client *c = NULL;
    CHECK_OK(etcd_client_create(url, 0, &c));
    if (c) {
        CHECK_EQ_STR(etcd_client_url(c), url);
        test_kv(c);
        test_threads(c);
        test_get_wait(c);
        test_leases(c);
        test_watch(c);
        measure(c);
        etcd_delete(c, P, true, NULL);
        etcd_client_destroy(c);
    }
    if (own.pid) spawn_cleanup(&own);

    /* Compaction and restarts change the whole store: on an etcd of their own. */
    spawn_srv s;
    if (spawn_etcd(&s, NULL) == 0) {
        CHECK_OK(etcd_client_create(s.url, 0, &c));
        test_compacted(c, s.url);
        etcd_client_destroy(c);
        spawn_cleanup(&s);
    } else {
        CHECK_MSG(0, "cannot start etcd");
    }
    test_watch_resume(false);
    test_watch_resume(true);
    test_down();
    return check_done();
}
