/* test_discovery.c - discovery against a real etcd: a registered card appears in watchers and in
 * etcd under the DESIGN.md key; repeated puts are not reported twice; a closed registration
 * disappears at once, and one of a process killed with SIGKILL within the lease TTL; a lost lease
 * is re-registered under a new id; watchers and registrations ride out an etcd restart.
 *
 * The SIGKILL case runs this binary again as a child ("register" mode) so the child is a clean
 * process with its own threads, as a real worker would be. */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "discovery.h"
#include "log.h"
#include "spawn.h"

static char NS[64]; /* per-run namespace */

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    usleep((useconds_t)ms * 1000);
}

typedef struct change {
    disc_change ch;
    int64_t id;
    char subject[160];
} change;

typedef struct recorder {
    pthread_mutex_t mu;
    change v[128];
    int n;
} recorder;

static void on_inst(void *ud, disc_change ch, const disc_instance *in) {
    recorder *r = ud;
    pthread_mutex_lock(&r->mu);
    if (r->n < 128) {
        r->v[r->n].ch = ch;
        r->v[r->n].id = in->instance_id;
        snprintf(r->v[r->n].subject, sizeof r->v[r->n].subject, "%s", in->subject);
        r->n++;
    }
    pthread_mutex_unlock(&r->mu);
}

static int count(recorder *r) {
    pthread_mutex_lock(&r->mu);
    int n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static bool wait_n(recorder *r, int n, int timeout_ms) {
    long long end = now_ms() + timeout_ms;
    while (count(r) < n) {
        if (now_ms() > end) return false;
        sleep_ms(10);
    }
    return true;
}

static disc_instance card(const char *component, int rank) {
    disc_instance c = {0};
    snprintf(c.ns, sizeof c.ns, "%s", NS);
    snprintf(c.component, sizeof c.component, "%s", component);
    c.dp_rank = rank;
    c.dp_size = 4;
    snprintf(c.group, sizeof c.group, "g0");
    snprintf(c.host, sizeof c.host, "localhost");
    c.pid = (int)getpid();
    c.gpu = rank;
    snprintf(c.role, sizeof c.role, "agg");
    return c;
}

static void test_register_and_watch(etcd_client *c) {
    recorder rec = {.mu = PTHREAD_MUTEX_INITIALIZER};
    disc_watch *w = NULL;
    CHECK_OK(disc_watch_instances(c, NS, "worker", on_inst, &rec, &w));
    if (!w) return;
    CHECK_EQ_INT(disc_watch_count(w), 0);

    disc_instance in = card("worker", 1);
    disc_model m = {0};
    snprintf(m.name, sizeof m.name, "openai/gpt-oss-20b");
    m.context_length = 131072;
    m.kv_block_size = 32;
    m.total_kv_blocks = 5000;
    m.max_batch_size = 800;
    m.max_num_tokens = 768;
    snprintf(m.tokenizer, sizeof m.tokenizer, "o200k_harmony");
    disc_reg *r = NULL;
    CHECK_OK(disc_register(c, &in, &m, NULL, NULL, &r));
    if (!r) {
        disc_watch_destroy(w);
        return;
    }
    int64_t id = disc_reg_id(r);
    CHECK(id != 0);
    CHECK_EQ_INT(disc_reg_generation(r), 0);
    CHECK_OK(disc_watch_wait_count(w, 1, 1, 5000));
    CHECK(wait_n(&rec, 1, 5000));
    char subj[160];
    snprintf(subj, sizeof subj, "%s.worker.%" PRIx64 ".generate", NS, (uint64_t)id);
    CHECK_EQ_INT(rec.v[0].ch, DISC_ADDED);
    CHECK_EQ_INT(rec.v[0].id, id);
    CHECK_EQ_STR(rec.v[0].subject, subj);

    /* The snapshot holds the whole card; etcd holds it under the DESIGN.md key with the lease. */
    disc_instance *snap = NULL;
    size_t n = 0;
    CHECK_OK(disc_watch_instances_snapshot(w, &snap, &n));
    CHECK_EQ_INT(n, 1);
    if (n == 1) {
        CHECK_EQ_INT(snap[0].dp_rank, 1);
        CHECK_EQ_INT(snap[0].dp_size, 4);
        CHECK_EQ_INT(snap[0].gpu, 1);
        CHECK_EQ_INT(snap[0].pid, getpid());
        CHECK_EQ_STR(snap[0].role, "agg");
        CHECK_EQ_STR(snap[0].group, "g0");
    }
    free(snap);
    disc_model *ms = NULL;
    CHECK_EQ_INT(disc_watch_models_snapshot(w, &ms, &n), MG_EINVAL);
    char key[256];
    CHECK_OK(disc_instance_key(NS, "worker", id, key, sizeof key));
    etcd_kvs kvs;
    CHECK_OK(etcd_get(c, key, &kvs));
    CHECK(kvs.n == 1 && kvs.kvs[0].lease == id);
    etcd_kvs_free(&kvs);

    /* Model watch: the card under magneto/v1/models/{ns}/{model}/{lease_hex}. */
    disc_watch *mw = NULL;
    CHECK_OK(disc_watch_models(c, NS, "openai/gpt-oss-20b", NULL, NULL, &mw));
    CHECK_OK(disc_watch_models_snapshot(mw, &ms, &n));
    CHECK_EQ_INT(n, 1);
    if (n == 1) {
        CHECK_EQ_STR(ms[0].name, "openai/gpt-oss-20b");
        CHECK_EQ_INT(ms[0].instance_id, id);
        CHECK_EQ_INT(ms[0].kv_block_size, 32);
        CHECK_EQ_INT(ms[0].total_kv_blocks, 5000);
        CHECK_EQ_STR(ms[0].tokenizer, "o200k_harmony");
    }
    free(ms);
    disc_watch_destroy(mw);

    /* Another component's watcher does not see the worker. */
    disc_watch *rw = NULL;
    CHECK_OK(disc_watch_instances(c, NS, "router", NULL, NULL, &rw));
    CHECK_EQ_INT(disc_watch_count(rw), 0);
    disc_watch_destroy(rw);

    /* The same card put again is no change; an edited card is an update; garbage is ignored. */
    char *json = NULL;
    disc_instance cur;
    disc_reg_card(r, &cur);
    CHECK_OK(disc_instance_encode(&cur, &json));
    CHECK_OK(etcd_put(c, key, json, strlen(json), id));
    free(json);
    cur.dp_rank = 2;
    CHECK_OK(disc_instance_encode(&cur, &json));
    CHECK_OK(etcd_put(c, key, json, strlen(json), id));
    free(json);
    char junk[256];
    CHECK_OK(disc_instance_key(NS, "worker", 0x99, junk, sizeof junk));
    CHECK_OK(etcd_put(c, junk, "{not json", 9, 0));
    CHECK(wait_n(&rec, 2, 5000));
    sleep_ms(200);
    CHECK_EQ_INT(count(&rec), 2);
    CHECK_EQ_INT(rec.v[1].ch, DISC_UPDATED);
    CHECK_EQ_INT(disc_watch_count(w), 1);
    etcd_delete(c, junk, false, NULL);

    /* Close revokes: the watcher sees the removal at once, not after the TTL. */
    long long t0 = now_ms();
    disc_close(r);
    CHECK(wait_n(&rec, 3, 3000));
    CHECK_MSG(now_ms() - t0 < 1500, "removal took %lld ms", now_ms() - t0);
    CHECK_EQ_INT(rec.v[2].ch, DISC_REMOVED);
    CHECK_EQ_INT(rec.v[2].id, id);
    CHECK_EQ_INT(disc_watch_count(w), 0);
    CHECK_EQ_INT(disc_watch_wait_count(w, 1, 5, 200), MG_ETIMEOUT);
    disc_close(NULL);
    disc_watch_destroy(w);
    disc_watch_destroy(NULL);
}

/* Child mode: register, print the instance id, wait to be killed. */
static int child_register(const char *url, const char *ns) {
    snprintf(NS, sizeof NS, "%s", ns);
    etcd_client *c = NULL;
    disc_reg *r = NULL;
    disc_instance in = card("worker", 0);
    if (etcd_client_create(url, 0, &c) != MG_OK ||
        disc_register(c, &in, NULL, NULL, NULL, &r) != MG_OK) {
        fprintf(stderr, "child: %s\n", mg_err_msg());
        return 1;
    }
    printf("%" PRIx64 "\n", disc_reg_id(r));
    fflush(stdout);
    for (;;) pause();
}

static void test_sigkill(etcd_client *c, const char *url) {
    recorder rec = {.mu = PTHREAD_MUTEX_INITIALIZER};
    disc_watch *w = NULL;
    CHECK_OK(disc_watch_instances(c, NS, "worker", on_inst, &rec, &w));
    if (!w) return;
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        execl("/proc/self/exe", "test_discovery", "register", url, NS, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char line[64] = "";
    FILE *f = fdopen(fds[0], "r");
    CHECK(fgets(line, sizeof line, f) != NULL);
    fclose(f);
    int64_t id = (int64_t)strtoull(line, NULL, 16);
    CHECK(id != 0);
    CHECK(wait_n(&rec, 1, 5000));
    CHECK(rec.v[0].ch == DISC_ADDED && rec.v[0].id == id);

    /* Past several keep-alive rounds, the child is still there. */
    sleep_ms(4000);
    CHECK_EQ_INT(disc_watch_count(w), 1);
    CHECK_EQ_INT(count(&rec), 1);

    long long t0 = now_ms();
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    CHECK_OK(disc_watch_wait_count(w, 0, 0, (DISC_TTL_S + 3) * 1000));
    long long gone = now_ms() - t0;
    /* The lease had up to TTL left at the kill; etcd's expiry check adds up to ~0.5 s. */
    CHECK_MSG(gone <= DISC_TTL_S * 1000 + 1500, "removed %lld ms after SIGKILL", gone);
    CHECK_MSG(gone >= 3000, "removed only %lld ms after SIGKILL: was the lease renewed?", gone);
    /* The callback runs just after the set changes: wait for it too. */
    CHECK(wait_n(&rec, 2, 1000));
    CHECK(count(&rec) == 2 && rec.v[1].ch == DISC_REMOVED && rec.v[1].id == id);
    printf("SIGKILLed instance removed from the watcher after %lld ms (TTL %d s)\n", gone,
           DISC_TTL_S);
    disc_watch_destroy(w);
}

static _Atomic int64_t rereg_old;
static void on_rereg(void *ud, int64_t old_id, disc_instance *card) {
    atomic_store(&rereg_old, old_id);
}

static void test_reregister(etcd_client *c) {
    recorder rec = {.mu = PTHREAD_MUTEX_INITIALIZER};
    disc_watch *w = NULL;
    CHECK_OK(disc_watch_instances(c, NS, "prefill", on_inst, &rec, &w));
    disc_instance in = card("prefill", 0);
    disc_reg *r = NULL;
    CHECK_OK(disc_register_ttl(c, &in, NULL, 3, on_rereg, NULL, &r));
    if (!r || !w) return;
    int64_t id = disc_reg_id(r);
    CHECK(wait_n(&rec, 1, 5000));
    /* Pull the lease from under it: the next renewal learns it is gone and registers again. */
    CHECK_OK(etcd_lease_revoke(c, id));
    long long t0 = now_ms();
    while (disc_reg_generation(r) == 0 && now_ms() - t0 < 5000) sleep_ms(20);
    CHECK_EQ_INT(disc_reg_generation(r), 1);
    int64_t id2 = disc_reg_id(r);
    CHECK(id2 != 0 && id2 != id);
    CHECK_EQ_INT(atomic_load(&rereg_old), id);
    CHECK(wait_n(&rec, 3, 5000));
    CHECK(rec.v[1].ch == DISC_REMOVED && rec.v[1].id == id);
    CHECK(rec.v[2].ch == DISC_ADDED && rec.v[2].id == id2);
    char subj[160];
    snprintf(subj, sizeof subj, "%s.prefill.%" PRIx64 ".generate", NS, (uint64_t)id2);
    CHECK_EQ_STR(rec.v[2].subject, subj);
    disc_close(r);
    CHECK_OK(disc_watch_wait_count(w, 0, 0, 3000));
    disc_watch_destroy(w);
}

/* An etcd restart: the registration keeps its lease (etcd restores leases), the watcher
 * resumes, and a registration made after the restart is seen. */
static void test_etcd_restart(void) {
    spawn_srv s;
    if (spawn_etcd(&s, NULL) != 0) {
        CHECK_MSG(0, "cannot start etcd");
        return;
    }
    etcd_client *c = NULL;
    CHECK_OK(etcd_client_create(s.url, 2000, &c));
    recorder rec = {.mu = PTHREAD_MUTEX_INITIALIZER};
    disc_watch *w = NULL;
    disc_reg *r1 = NULL, *r2 = NULL;
    disc_instance a = card("worker", 0), b = card("worker", 1);
    CHECK_OK(disc_watch_instances(c, NS, "worker", on_inst, &rec, &w));
    CHECK_OK(disc_register_ttl(c, &a, NULL, 3, NULL, NULL, &r1));
    if (w) CHECK_OK(disc_watch_wait_count(w, 1, 1, 5000));
    CHECK_EQ_INT(spawn_stop(&s), 0);
    sleep_ms(1500); /* renewals fail meanwhile */
    CHECK_EQ_INT(spawn_restart(&s), 0);
    CHECK_OK(disc_register_ttl(c, &b, NULL, 3, NULL, NULL, &r2));
    if (w) CHECK_OK(disc_watch_wait_count(w, 2, 2, 8000));
    /* Well past the TTL after the restart, both are still alive and were never re-registered. */
    sleep_ms(4000);
    if (w) CHECK_EQ_INT(disc_watch_count(w), 2);
    if (r1) CHECK_EQ_INT(disc_reg_generation(r1), 0);
    CHECK_EQ_INT(count(&rec), 2);
    disc_close(r1);
    disc_close(r2);
    if (w) CHECK_OK(disc_watch_wait_count(w, 0, 0, 3000));
    disc_watch_destroy(w);

    /* etcd down: registering and watching fail with a clear error, not a hang. */
    CHECK_EQ_INT(spawn_stop(&s), 0);
    long long t0 = now_ms();
    CHECK_EQ_INT(disc_register(c, &a, NULL, NULL, NULL, &r1), MG_EUNAVAIL);
    CHECK(strstr(mg_err_msg(), s.url) != NULL);
    CHECK_EQ_INT(disc_watch_instances(c, NS, "worker", NULL, NULL, &w), MG_EUNAVAIL);
    CHECK(r1 == NULL && w == NULL);
    CHECK_MSG(now_ms() - t0 < 2000, "took %lld ms", now_ms() - t0);
    etcd_client_destroy(c);
    spawn_cleanup(&s);
}

/* A watcher cut off from etcd (etcd stays up) while instances come and go and the store is
 * compacted past its revision: when it gets back, etcd cannot replay the missed events, so the
 * watcher re-reads and ends with the true set (B), having reported A removed and B added, and
 * never the short-lived C. */
static void test_partition_compacted(void) {
    spawn_srv s;
    if (spawn_etcd(&s, NULL) != 0) {
        CHECK_MSG(0, "cannot start etcd");
        return;
    }
    spawn_proxy *px = spawn_proxy_start(s.port);
    CHECK(px != NULL);
    etcd_client *direct = NULL, *cut = NULL;
    CHECK_OK(etcd_client_create(s.url, 2000, &direct));
    if (px) CHECK_OK(etcd_client_create(spawn_proxy_url(px), 2000, &cut));
    recorder rec = {.mu = PTHREAD_MUTEX_INITIALIZER};
    disc_watch *w = NULL;
    disc_reg *ra = NULL, *rb = NULL, *rc = NULL;
    disc_instance a = card("worker", 0), b = card("worker", 1), cc = card("worker", 2);
    if (cut) CHECK_OK(disc_watch_instances(cut, NS, "worker", on_inst, &rec, &w));
    CHECK_OK(disc_register_ttl(direct, &a, NULL, 5, NULL, NULL, &ra));
    if (!w || !ra) goto out;
    CHECK(wait_n(&rec, 1, 5000));
    int64_t ida = disc_reg_id(ra);

    spawn_proxy_block(px, true);
    CHECK_OK(disc_register_ttl(direct, &b, NULL, 5, NULL, NULL, &rb));
    CHECK_OK(disc_register_ttl(direct, &cc, NULL, 5, NULL, NULL, &rc));
    disc_close(rc);
    disc_close(ra);
    ra = NULL;
    etcd_kvs kvs; /* an empty read, for the current revision */
    CHECK_OK(etcd_get_prefix(direct, "nothing/", &kvs));
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "ETCDCTL_API=3 etcdctl --endpoints=%s compaction %" PRId64 " >/dev/null 2>&1", s.url,
             kvs.revision);
    etcd_kvs_free(&kvs);
    CHECK_EQ_INT(system(cmd), 0);
    CHECK_EQ_INT(count(&rec), 1); /* cut off: nothing seen yet */
    spawn_proxy_block(px, false);

    CHECK_OK(disc_watch_wait_count(w, 1, 1, 8000));
    CHECK(wait_n(&rec, 3, 3000));
    sleep_ms(300);
    CHECK_EQ_INT(count(&rec), 3);
    if (rb && count(&rec) == 3) {
        CHECK(rec.v[1].ch == DISC_REMOVED && rec.v[1].id == ida);
        CHECK(rec.v[2].ch == DISC_ADDED && rec.v[2].id == disc_reg_id(rb));
    }
    disc_instance *snap = NULL;
    size_t n = 0;
    CHECK_OK(disc_watch_instances_snapshot(w, &snap, &n));
    CHECK(n == 1 && rb && snap[0].instance_id == disc_reg_id(rb));
    free(snap);
    /* Live again: a change after the re-read is seen. */
    disc_close(rb);
    rb = NULL;
    CHECK_OK(disc_watch_wait_count(w, 0, 0, 3000));
out:
    disc_close(ra);
    disc_close(rb);
    disc_watch_destroy(w);
    etcd_client_destroy(cut);
    etcd_client_destroy(direct);
    spawn_proxy_stop(px);
    spawn_cleanup(&s);
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "register") == 0) return child_register(argv[2], argv[3]);
    mg_log_init("test_discovery", -1);
    snprintf(NS, sizeof NS, "t%d", (int)getpid());
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
        test_register_and_watch(c);
        test_sigkill(c, url);
        test_reregister(c);
        etcd_client_destroy(c);
    }
    if (own.pid) spawn_cleanup(&own);
    test_etcd_restart();
    test_partition_compacted();
    return check_done();
}
