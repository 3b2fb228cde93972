/* test_kv.c - KV block pool: reference counts, prefix matching, LRU eviction order, events that
 * balance, clear, and a random walk checked against a model of the reusable set. */
#include <stdlib.h>

#include "check.h"
#include "kv.h"

#define MAXH 4096

/* Event recorder: the reusable set as a consumer (the router) would rebuild it from events. */
typedef struct rec {
    uint64_t live[MAXH];
    int n_live;
    int stored, removed, cleared, bad;
    uint64_t last_id;
    uint64_t removed_order[MAXH];
    int n_removed_order;
    /* the last stored event */
    bool last_has_parent;
    uint64_t last_parent;
    int last_n;
} rec;

static int live_find(rec *r, uint64_t h) {
    for (int i = 0; i < r->n_live; i++)
        if (r->live[i] == h) return i;
    return -1;
}

static void on_event(void *ud, const mg_kv_event *ev) {
    rec *r = ud;
    if (ev->event_id != r->last_id + 1) r->bad++; /* ids rise by one */
    r->last_id = ev->event_id;
    if (ev->kind == MG_KV_STORED) {
        r->stored += ev->n;
        r->last_has_parent = ev->has_parent;
        r->last_parent = ev->parent_hash;
        r->last_n = ev->n;
        for (int i = 0; i < ev->n; i++) {
            if (live_find(r, ev->block_hashes[i]) >= 0) r->bad++; /* stored twice */
            r->live[r->n_live++] = ev->block_hashes[i];
        }
    } else if (ev->kind == MG_KV_REMOVED) {
        r->removed += ev->n;
        for (int i = 0; i < ev->n; i++) {
            int k = live_find(r, ev->block_hashes[i]);
            if (k < 0)
                r->bad++; /* removed without being stored */
            else
                r->live[k] = r->live[--r->n_live];
            if (r->n_removed_order < MAXH)
                r->removed_order[r->n_removed_order++] = ev->block_hashes[i];
        }
    } else if (ev->kind == MG_KV_CLEARED) {
        r->cleared++;
        r->n_live = 0;
    }
}

static void test_basic(void) {
    mg_kv_pool *p;
    CHECK_OK(kv_pool_create(8, 4, true, &p));
    rec r = {0};
    kv_pool_set_event_cb(p, on_event, &r);
    int32_t a[3];
    CHECK_OK(kv_allocate(p, 3, a));
    CHECK(a[0] == 0 && a[1] == 1 && a[2] == 2);
    CHECK_EQ_INT(kv_ref(p, a[0]), 1);
    CHECK_EQ_INT(kv_stats(p).active_blocks, 3);
    CHECK_EQ_INT(kv_num_free(p), 5);

    uint64_t h[4] = {101, 102, 103, 104}, loc[4] = {1, 2, 3, 4};
    kv_commit(p, a, h, loc, 3, false, 0);
    CHECK_EQ_INT(r.stored, 3);
    CHECK(!r.last_has_parent);
    CHECK_EQ_INT(kv_stats(p).cached_blocks, 3);

    int idle = -1;
    CHECK_EQ_INT(kv_match(p, h, 4, &idle), 3);
    CHECK_EQ_INT(idle, 0);
    /* A second sequence shares the first two blocks. */
    int32_t b[2];
    kv_acquire(p, h, 2, b);
    CHECK(b[0] == a[0] && b[1] == a[1]);
    CHECK_EQ_INT(kv_ref(p, a[0]), 2);
    CHECK_EQ_INT(kv_stats(p).active_blocks, 3);

    kv_release(p, a, 3);
    CHECK_EQ_INT(kv_ref(p, a[0]), 1);
    CHECK_EQ_INT(kv_ref(p, a[2]), 0);
    CHECK_EQ_INT(kv_stats(p).active_blocks, 2);
    CHECK_EQ_INT(kv_num_free(p), 6); /* 5 plain + block 2 cached */
    CHECK_EQ_INT(kv_match(p, h, 3, &idle), 3);
    CHECK_EQ_INT(idle, 1);
    CHECK(kv_can_allocate(p, 1, 5));
    CHECK(!kv_can_allocate(p, 1, 6));

    /* A chained commit carries its parent. */
    int32_t c[1];
    CHECK_OK(kv_allocate(p, 1, c));
    uint64_t h4 = 104, l4 = 4;
    kv_commit(p, c, &h4, &l4, 1, true, 103);
    CHECK(r.last_has_parent && r.last_parent == 103 && r.last_n == 1);
    /* A duplicate hash leaves the block unhashed and emits nothing. */
    int32_t d[1];
    CHECK_OK(kv_allocate(p, 1, d));
    int before = r.stored;
    kv_commit(p, d, &h4, &l4, 1, true, 103);
    CHECK_EQ_INT(r.stored, before);
    kv_release(p, d, 1);
    CHECK_EQ_INT(kv_stats(p).cached_blocks, 4);

    /* Too many blocks: nothing taken. */
    int32_t big[16];
    int active = kv_stats(p).active_blocks;
    CHECK(kv_allocate(p, kv_num_free(p) + 1, big) == MG_EFULL);
    CHECK_EQ_INT(kv_stats(p).active_blocks, active);

    kv_release(p, b, 2);
    kv_release(p, c, 1);
    CHECK_EQ_INT(kv_stats(p).active_blocks, 0);
    CHECK_EQ_INT(kv_num_free(p), 8);
    CHECK_EQ_INT(r.stored - r.removed, kv_stats(p).cached_blocks);

    /* Allocating everything evicts every cached block. */
    int32_t all[8];
    CHECK_OK(kv_allocate(p, 8, all));
    CHECK_EQ_INT(r.stored, r.removed);
    CHECK_EQ_INT(r.n_live, 0);
    CHECK_EQ_INT(kv_stats(p).cached_blocks, 0);
    CHECK_EQ_INT(kv_match(p, h, 4, NULL), 0);
    kv_release(p, all, 8);
    CHECK_EQ_INT(r.bad, 0);
    kv_pool_destroy(p);
}

/* Eviction takes least-recently-released first, and a sequence's tail before its head. */
static void test_lru(void) {
    mg_kv_pool *p;
    CHECK_OK(kv_pool_create(6, 2, true, &p));
    rec r = {0};
    kv_pool_set_event_cb(p, on_event, &r);
    int32_t A[2], B[2], C[2];
    uint64_t ha[2] = {11, 12}, hb[2] = {21, 22}, hc[2] = {31, 32};
    CHECK_OK(kv_allocate(p, 2, A));
    CHECK_OK(kv_allocate(p, 2, B));
    CHECK_OK(kv_allocate(p, 2, C));
    kv_commit(p, A, ha, ha, 2, false, 0);
    kv_commit(p, B, hb, hb, 2, false, 0);
    kv_commit(p, C, hc, hc, 2, false, 0);
    kv_release(p, A, 2); /* oldest */
    kv_release(p, B, 2);
    kv_release(p, C, 2);
    /* Touch A: reacquire and release, so it becomes the most recent. */
    int32_t A2[2];
    CHECK_EQ_INT(kv_match(p, ha, 2, NULL), 2);
    kv_acquire(p, ha, 2, A2);
    kv_release(p, A2, 2);
    int32_t x[1];
    uint64_t want[6] = {22, 21, 32, 31, 12, 11};
    for (int i = 0; i < 6; i++) {
        CHECK_OK(kv_allocate(p, 1, x));
        CHECK_MSG(r.n_removed_order == i + 1 && r.removed_order[i] == want[i],
                  "eviction %d: got %llu want %llu", i,
                  (unsigned long long)(r.n_removed_order > i ? r.removed_order[i] : 0),
                  (unsigned long long)want[i]);
    }
    CHECK_EQ_INT(kv_num_free(p), 0);
    CHECK_EQ_INT(r.bad, 0);
    kv_pool_destroy(p);
}

static void test_clear_and_noreuse(void) {
    mg_kv_pool *p;
    CHECK_OK(kv_pool_create(4, 2, true, &p));
    rec r = {0};
    kv_pool_set_event_cb(p, on_event, &r);
    int32_t a[2];
    uint64_t h[2] = {5, 6};
    CHECK_OK(kv_allocate(p, 2, a));
    kv_commit(p, a, h, h, 2, false, 0);
    int32_t b[1];
    kv_acquire(p, h, 1, b);
    kv_release(p, a + 1, 1); /* block 1 idle cached, block 0 held twice */
    kv_clear(p);
    CHECK_EQ_INT(r.cleared, 1);
    CHECK_EQ_INT(kv_stats(p).cached_blocks, 0);
    CHECK_EQ_INT(kv_match(p, h, 2, NULL), 0);
    CHECK_EQ_INT(kv_num_free(p), 3);
    kv_release(p, a, 1);
    kv_release(p, b, 1);
    CHECK_EQ_INT(kv_num_free(p), 4);
    CHECK_EQ_INT(kv_stats(p).active_blocks, 0);
    kv_pool_destroy(p);

    CHECK_OK(kv_pool_create(4, 2, false, &p));
    rec r2 = {0};
    kv_pool_set_event_cb(p, on_event, &r2);
    CHECK_OK(kv_allocate(p, 2, a));
    kv_commit(p, a, h, h, 2, false, 0);
    CHECK_EQ_INT(r2.stored, 0);
    CHECK_EQ_INT(kv_match(p, h, 2, NULL), 0);
    kv_release(p, a, 2);
    kv_pool_destroy(p);

    CHECK(kv_pool_create(0, 2, true, &p) == MG_EINVAL);
    /* past 2^30 blocks the table size would wrap to 0 (an endless doubling loop) */
    CHECK(kv_pool_create((1 << 30) + 1, 2, true, &p) == MG_EINVAL);
    CHECK(p == NULL);
}

/* A random walk of sequences over a small pool; after every action the pool's answers must agree
 * with the reusable set rebuilt from its own events. Exercises the hash table's deletions. */
static void test_random(void) {
    enum { NB = 64, NS = 12, MAXB = 16 };
    mg_kv_pool *p;
    CHECK_OK(kv_pool_create(NB, 4, true, &p));
    rec r = {0};
    kv_pool_set_event_cb(p, on_event, &r);
    int32_t held[NS][MAXB];
    int n_held[NS] = {0};
    uint64_t hs[NS][MAXB];
    unsigned seed = 7;
    int mismatches = 0, refbad = 0;
    for (int it = 0; it < 20000; it++) {
        int s = rand_r(&seed) % NS;
        if (n_held[s] == 0) {
            /* Start a sequence: a chain over a small alphabet so prefixes repeat. */
            int len = 1 + rand_r(&seed) % MAXB;
            uint64_t hh = 0;
            for (int i = 0; i < len; i++)
                hs[s][i] = hh = hh * 31 + 1 + (uint64_t)(rand_r(&seed) % 3);
            int idle;
            int hit = kv_match(p, hs[s], len, &idle);
            if (!kv_can_allocate(p, idle, len - hit)) continue;
            kv_acquire(p, hs[s], hit, held[s]);
            CHECK_OK(kv_allocate(p, len - hit, held[s] + hit));
            kv_commit(p, held[s] + hit, hs[s] + hit, hs[s] + hit, len - hit, hit > 0,
                      hit ? hs[s][hit - 1] : 0);
            n_held[s] = len;
        } else {
            kv_release(p, held[s], n_held[s]);
            n_held[s] = 0;
        }
        /* The pool and the event-built set agree. */
        mg_kv_stats st = kv_stats(p);
        if (st.cached_blocks != r.n_live) mismatches++;
        for (int i = 0; i < r.n_live; i++)
            if (kv_match(p, &r.live[i], 1, NULL) != 1) mismatches++;
        int sum_active = 0;
        for (int b = 0; b < NB; b++) sum_active += kv_ref(p, b) > 0;
        if (sum_active != st.active_blocks || st.free_blocks != NB - st.active_blocks) refbad++;
    }
    CHECK_EQ_INT(mismatches, 0);
    CHECK_EQ_INT(refbad, 0);
    for (int s = 0; s < NS; s++) kv_release(p, held[s], n_held[s]);
    CHECK_EQ_INT(kv_stats(p).active_blocks, 0);
    CHECK_EQ_INT(kv_num_free(p), NB);
    for (int b = 0; b < NB; b++) CHECK_EQ_INT(kv_ref(p, b), 0);
    CHECK_EQ_INT(r.stored - r.removed, kv_stats(p).cached_blocks);
    CHECK(r.removed > 0); /* the walk did evict */
    CHECK_EQ_INT(r.bad, 0);
    kv_pool_destroy(p);
}

int main(void) {
    test_basic();
    test_lru();
    test_clear_and_noreuse();
    test_random();
    return check_done();
}
