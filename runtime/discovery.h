/* discovery.h - who is alive: instance and model cards in etcd under a process's lease.
 *
 * Key layout (DESIGN.md §2), lease ids in lowercase hex without padding:
 *   magneto/v1/instances/{ns}/{component}/{lease_hex} -> instance card (JSON)
 *   magneto/v1/models/{ns}/{model}/{lease_hex}        -> model card (JSON)
 * A serving process registers once (disc_register): it gets a 10 s lease, renews it every ~3 s
 * on a thread, and puts its cards under it. If etcd says the lease is gone (the process stalled
 * past the TTL, or etcd lost it), the thread grants a new lease and puts the cards again, with the
 * new instance id, logging both. A process that dies simply stops renewing: its keys vanish
 * within the TTL and every watcher reports it removed.
 *
 * Routers and frontends watch (disc_watch_instances / disc_watch_models): a prefix read, then an
 * etcd watch from the read's revision + 1, so the state never misses a change; a snapshot of the
 * current set can be taken at any time from any thread.
 *
 * Card strings are fixed-size and NUL-terminated; decode rejects a field that does not fit. */
#ifndef MG_DISCOVERY_H
#define MG_DISCOVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "etcd.h"
#include "status.h"

#define DISC_TTL_S  10
#define DISC_PREFIX "magneto/v1"

typedef struct disc_instance {
    int64_t instance_id; /* = lease id; filled by disc_register */
    char ns[64];         /* namespace */
    char component[32];  /* worker | prefill | router | frontend */
    char subject[160];   /* NATS request subject; "" at register: {ns}.{component}.{hex}.generate */
    int dp_rank, dp_size; /* attention data-parallel rank and size of its group */
    char group[64];       /* the rank group (one NCCL communicator) */
    char host[64];
    int pid;
    int gpu;             /* device index, -1 for none */
    char role[16];       /* agg | prefill | decode; "" for processes without one */
    char ucx_addr[2048]; /* UCX worker address as text (base64), "" when unused */
} disc_instance;

typedef struct disc_model {
    int64_t instance_id;     /* lease of the process that serves it; filled by disc_register */
    char name[128];          /* served model name, e.g. "openai/gpt-oss-120b" */
    int64_t context_length;  /* max tokens per sequence */
    int kv_block_size;       /* tokens per KV block */
    int64_t total_kv_blocks; /* per dp rank */
    int max_batch_size;
    int max_num_tokens;
    char tokenizer[128]; /* tokenizer identity, e.g. "o200k_harmony" */
} disc_model;

/* Cards <-> JSON. encode returns a malloc'd string (caller frees). decode fills *out from text
 * of len bytes; a missing required field, a wrong type or a string too long is MG_EPROTO naming
 * the field. Unknown fields are ignored (newer writers may add some). */
mg_status disc_instance_encode(const disc_instance *in, char **json);
mg_status disc_instance_decode(const char *json, size_t len, disc_instance *out);
mg_status disc_model_encode(const disc_model *in, char **json);
mg_status disc_model_decode(const char *json, size_t len, disc_model *out);

/* Keys. Write into buf (cap bytes); MG_EINVAL when it does not fit or a name holds no text. */
mg_status disc_instance_key(const char *ns, const char *component, int64_t id, char *buf,
                            size_t cap);
mg_status disc_model_key(const char *ns, const char *model, int64_t id, char *buf, size_t cap);
/* magneto/v1/groups/{ns}/{group}/nccl: the group's NCCL unique id, put by rank 0 (under its
 * lease), read by the other ranks with etcd_get_wait. */
mg_status disc_nccl_key(const char *ns, const char *group, char *buf, size_t cap);

/* Registration. */
typedef struct disc_reg disc_reg;
/* Called before the cards are put: once at the first registration (old_id 0, on the caller's
 * thread) and on every re-registration (lease lost, new lease granted; on the registration
 * thread, old_id the lost instance id). card has the new instance_id and may be edited (e.g. a
 * subject of the owner's choosing). The owner should serve under the new id from this call on,
 * so that nobody who finds the card can reach a subject without a subscriber. */
typedef void (*disc_rereg_cb)(void *ud, int64_t old_id, disc_instance *card);

/* Grant a DISC_TTL_S lease, put inst (and model when not NULL) under it, start renewing. The
 * cards are copied; inst->ns and inst->component must be set. Returns after the puts succeeded.
 * rereg may be NULL. */
mg_status disc_register(etcd_client *c, const disc_instance *inst, const disc_model *model,
                        disc_rereg_cb rereg, void *ud, disc_reg **out);
/* As disc_register with another TTL (tests; keep-alive every ttl_s/3 s). */
mg_status disc_register_ttl(etcd_client *c, const disc_instance *inst, const disc_model *model,
                            int ttl_s, disc_rereg_cb rereg, void *ud, disc_reg **out);
int64_t disc_reg_id(disc_reg *r);                    /* current instance id (= lease); any thread */
int disc_reg_generation(disc_reg *r);                /* 0, then +1 on every re-registration */
void disc_reg_card(disc_reg *r, disc_instance *out); /* current card (copy) */
/* Stop renewing and revoke the lease, so watchers see the removal at once. NULL is accepted.
 * Not from the rereg callback. */
void disc_close(disc_reg *r);

/* Watching. */
typedef enum disc_change { DISC_ADDED = 0, DISC_UPDATED = 1, DISC_REMOVED = 2 } disc_change;
/* Called once per change of the set: an add for each card present at start (on the caller's
 * thread, before disc_watch_* returns), then on the watch thread. A put that repeats the card
 * already held is not reported. For DISC_REMOVED the card is the last one seen. The set (count,
 * snapshot) changes just before the callback runs. A callback may take snapshots; it must not
 * destroy its own watch. */
typedef void (*disc_instance_cb)(void *ud, disc_change change, const disc_instance *inst);
typedef void (*disc_model_cb)(void *ud, disc_change change, const disc_model *model);

typedef struct disc_watch disc_watch;
/* Watch the instances of one component of namespace ns (component NULL: every component).
 * cb may be NULL (use snapshots). */
mg_status disc_watch_instances(etcd_client *c, const char *ns, const char *component,
                               disc_instance_cb cb, void *ud, disc_watch **out);
/* Watch the model cards of ns (model NULL: every model). cb may be NULL. */
mg_status disc_watch_models(etcd_client *c, const char *ns, const char *model, disc_model_cb cb,
                            void *ud, disc_watch **out);
/* Copy of the current set, sorted by key; free with free(). *n may be 0 (*out NULL). Any thread.
 * The instance form is for instance watches, the model form for model watches (MG_EINVAL
 * otherwise). */
mg_status disc_watch_instances_snapshot(disc_watch *w, disc_instance **out, size_t *n);
mg_status disc_watch_models_snapshot(disc_watch *w, disc_model **out, size_t *n);
size_t disc_watch_count(disc_watch *w);
/* Wait until min <= count <= max (any thread other than the callback's). MG_ETIMEOUT after
 * timeout_ms. */
mg_status disc_watch_wait_count(disc_watch *w, size_t min, size_t max, int timeout_ms);
void disc_watch_destroy(disc_watch *w); /* stops the thread; NULL is accepted */

#endif
