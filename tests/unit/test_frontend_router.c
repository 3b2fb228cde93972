/* test_frontend_router.c - the embedded router's baseline modes: round-robin visits every target
 * in turn, random spreads picks over all targets, a migrating request avoids the worker it lost
 * when another exists, removed targets are never picked, and no target is MG_EUNAVAIL. */
#include <string.h>

#include "check.h"
#include "router.h"

static router_target tgt(int64_t id) {
    router_target t = {.worker_id = id, .dp_rank = (uint32_t)(id % 4)};
    snprintf(t.subject, sizeof t.subject, "ns.worker.%llx.generate", (long long)id);
    return t;
}

int main(void) {
    router_mode m;
    CHECK_OK(router_mode_parse("round-robin", &m));
    CHECK(m == ROUTER_ROUND_ROBIN);
    CHECK_OK(router_mode_parse("random", &m));
    CHECK(m == ROUTER_RANDOM);
    CHECK_OK(router_mode_parse("kv", &m));
    CHECK_EQ_INT(router_mode_parse("fastest", &m), MG_EINVAL);
    CHECK(strstr(mg_err_msg(), "fastest") != NULL);

    router *r;
    CHECK_OK(router_create(ROUTER_ROUND_ROBIN, 1, &r));
    router_target out;
    CHECK_EQ_INT(router_pick(r, NULL, &out), MG_EUNAVAIL);
    for (int64_t id = 1; id <= 4; id++) {
        router_target t = tgt(id * 10);
        CHECK_OK(router_add(r, &t));
    }
    router_target again = tgt(20);
    snprintf(again.subject, sizeof again.subject, "changed");
    CHECK_OK(router_add(r, &again)); /* replaces, does not duplicate */
    CHECK_EQ_INT(router_count(r), 4);

    /* Round-robin: each of 4 targets exactly twice in 8 picks. */
    int seen[5] = {0};
    for (int i = 0; i < 8; i++) {
        CHECK_OK(router_pick(r, NULL, &out));
        seen[out.worker_id / 10]++;
        if (out.worker_id == 20) CHECK_EQ_STR(out.subject, "changed");
    }
    for (int k = 1; k <= 4; k++) CHECK_EQ_INT(seen[k], 2);

    /* Avoid: never the lost worker while others exist. */
    router_query q = {.avoid_worker = 30};
    for (int i = 0; i < 20; i++) {
        CHECK_OK(router_pick(r, &q, &out));
        CHECK(out.worker_id != 30);
    }
    /* Removal. */
    CHECK_OK(router_remove(r, 30));
    CHECK_EQ_INT(router_remove(r, 30), MG_ENOTFOUND);
    for (int i = 0; i < 12; i++) {
        CHECK_OK(router_pick(r, NULL, &out));
        CHECK(out.worker_id != 30);
    }
    /* With one target left, avoiding it still picks it (better than failing the request). */
    CHECK_OK(router_remove(r, 10));
    CHECK_OK(router_remove(r, 40));
    q.avoid_worker = 20;
    CHECK_OK(router_pick(r, &q, &out));
    CHECK_EQ_INT(out.worker_id, 20);
    router_destroy(r);

    /* Random: every target gets a fair share of 8,000 picks. */
    CHECK_OK(router_create(ROUTER_RANDOM, 42, &r));
    for (int64_t id = 1; id <= 4; id++) {
        router_target t = tgt(id);
        CHECK_OK(router_add(r, &t));
    }
    int cnt[5] = {0};
    for (int i = 0; i < 8000; i++) {
        CHECK_OK(router_pick(r, NULL, &out));
        cnt[out.worker_id]++;
    }
    for (int k = 1; k <= 4; k++)
        CHECK_MSG(cnt[k] > 1700 && cnt[k] < 2300, "target %d: %d", k, cnt[k]);
    router_destroy(r);
    router_destroy(NULL);
    return check_done();
}
