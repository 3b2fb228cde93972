/* engine.h - one rank's engine: the scheduler running on a thread of its own.
 *
 * The worker executable's I/O threads (NATS subscriptions, etcd) talk to the engine only through
 * this API: engine_submit and engine_cancel queue work and wake the engine thread; the engine
 * thread drains the queues between steps, runs sched_step while there is work and sleeps on a
 * condition variable when there is none. Output callbacks and KV event callbacks run on the
 * engine thread, so they must be quick (turn the tokens into a message and hand it on) and must
 * not call engine_destroy.
 *
 *   I/O thread --engine_submit/cancel--> queues --> engine thread: sched_step loop
 *        ^                                                 | output cb, kv event cb
 *        +---------------- NATS chunks / events <----------+
 *
 * Lockstep groups: when the backend has group_sync (backend.h), every loop iteration first asks
 * the group whether any rank has work; if so every rank steps (with an empty batch when it has
 * nothing), else all nap about a millisecond and ask again. Before engine_destroy of a rank, make
 * the group's collective return an error (abort the communicator), or peers would wait on it.
 *
 * Ownership: the engine copies the config and each request; it borrows the backend, which the
 * caller destroys after engine_destroy. */
#ifndef MG_ENGINE_H
#define MG_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "engine_config.h"
#include "kv.h"
#include "scheduler.h"
#include "status.h"

typedef struct mg_engine mg_engine;

/* Load figures for {ns}.load and /metrics (Dynamo's ForwardPassMetrics). */
typedef struct mg_engine_stats {
    int active_slots;     /* request_active_slots: running sequences */
    int total_slots;      /* request_total_slots: max_batch_size */
    int waiting;          /* num_requests_waiting: queued (submitted, preempted) */
    int kv_active_blocks; /* kv_active_blocks */
    int kv_total_blocks;  /* kv_total_blocks */
    int kv_cached_blocks; /* blocks holding a reusable prefix */
    /* The sliding layers' window pool (backend.h), 0 without one: the figures above are the
     * full-attention pool's, which bounds how many tokens fit. */
    int kv_window_active_blocks;
    int kv_window_total_blocks;
    double window_cache_usage; /* active / total of the window pool */
    double cache_usage;        /* gpu_cache_usage_perc, as a fraction 0..1 */
    double prefix_hit_rate;    /* gpu_prefix_cache_hit_rate, 0..1 over all prompts so far */
    uint64_t steps;            /* steps run */
    uint64_t preemptions;      /* sequences preempted */
    uint64_t tokens_out;       /* output tokens emitted */
    uint64_t requests_done;    /* requests finished (any reason) */
    double last_step_ms;       /* wall time of the last step */
    int last_batch_seqs;       /* sequences in the last step */
    int last_batch_tokens;     /* tokens in the last step */
} mg_engine_stats;

/* Optional callbacks, all called on the engine thread. */
typedef struct mg_engine_hooks {
    mg_kv_event_cb kv_event; /* every KV stored/removed/cleared event, in event id order */
    void *kv_event_ud;
    /* After each step that ran a batch (for step-time and batch-size metrics). */
    void (*on_step)(void *ud, const mg_step_info *info, double step_ms);
    void *on_step_ud;
} mg_engine_hooks;

/* Check cfg (engine_config_check), build the scheduler over backend and start the engine
 * thread. hooks may be NULL. */
mg_status engine_create(const mg_engine_config *cfg, mg_backend *backend,
                        const mg_engine_hooks *hooks, mg_engine **out);
/* Stop the thread: requests still queued or running finish with MG_FINISH_ERROR (their
 * callbacks run on the engine thread before this returns). Accepts NULL. Not from a callback. */
void engine_destroy(mg_engine *e);

/* Queue a request (any thread). The request is validated and copied here, so a bad one fails
 * with MG_EINVAL and detail on the caller's thread, and its callback is never called. After a
 * successful submit the callback is called at least once, the last time with a finish reason.
 * MG_ECLOSED once the engine is shutting down. Request ids should be unique among live requests
 * (engine_cancel finds the first match). */
mg_status engine_submit(mg_engine *e, const mg_request *r);
/* Ask to cancel a request (any thread); returns at once. The request's callback then gets
 * MG_FINISH_CANCELLED, unless it finished first. Unknown ids are ignored. */
void engine_cancel(mg_engine *e, const char *id);
/* Ask to drop the prefix cache (the clear_kv_blocks endpoint): emits a "cleared" KV event. */
void engine_clear_kv(mg_engine *e);

/* A consistent copy of the load figures, updated after every step (any thread). */
mg_engine_stats engine_stats(mg_engine *e);
/* Whether nothing is queued, pending or running (for a graceful drain: stop taking requests,
 * then poll this). Any thread. */
bool engine_idle(mg_engine *e);
/* The longest prompt + output accepted (model card's context length). */
int engine_max_len(const mg_engine *e);
/* KV blocks and block size (model card). */
int engine_kv_blocks(const mg_engine *e);
int engine_kv_block_size(const mg_engine *e);

#endif
