/* router.h - picks the worker (and data-parallel rank) that serves a request.
 *
 * Data flow: the frontend tokenizes a request, asks router_pick() for a target, and publishes the
 * GenerateRequest to the target's NATS subject; tokens flow back from the worker to the frontend
 * and never through here. Targets come from discovery (etcd instance cards): one target per
 * worker instance, which is one attention data-parallel rank.
 *
 * Modes: round-robin and random are the baselines of DESIGN.md §1. The KV-aware mode (radix index
 * of cached blocks fed by KV events, cost = prefill blocks + active decode blocks) slots in behind
 * the same router_pick(): the query already carries the prompt's token ids for it.
 *
 * Threads: every function may be called from any thread; the target set is guarded by a lock
 * and a pick costs one lock and no allocation. */
#ifndef MG_ROUTER_H
#define MG_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum router_mode {
    ROUTER_ROUND_ROBIN = 0,
    ROUTER_RANDOM = 1,
    ROUTER_KV = 2, /* the KV-aware mode; until it lands, picks as round-robin */
} router_mode;

/* "round-robin" | "random" | "kv" -> mode; MG_EINVAL for anything else. */
mg_status router_mode_parse(const char *name, router_mode *out);
const char *router_mode_name(router_mode m);

typedef struct router_target {
    int64_t worker_id; /* instance id (etcd lease) */
    uint32_t dp_rank;
    char subject[160]; /* where GenerateRequests go: {ns}.worker.{hex}.generate */
} router_target;

typedef struct router_query {
    const uint32_t *token_ids; /* the prompt (for the KV mode); may be NULL */
    size_t n_tokens;
    int64_t avoid_worker; /* a worker to skip when another exists (migration); 0 = none */
} router_query;

typedef struct router router;

mg_status router_create(router_mode mode, uint64_t seed, router **out);
void router_destroy(router *r); /* accepts NULL */
router_mode router_get_mode(const router *r);

/* Add or replace the target of worker_id (the card changed). */
mg_status router_add(router *r, const router_target *t);
/* Remove worker_id's target; MG_ENOTFOUND when absent. */
mg_status router_remove(router *r, int64_t worker_id);
size_t router_count(router *r);

/* Choose a target for q into *out. MG_EUNAVAIL when there is none. */
mg_status router_pick(router *r, const router_query *q, router_target *out);

#endif
