/* scheduler.h - the scheduler (functions sched_*): continuous batching over a paged KV pool.
 * (Not named sched.h: that would shadow the C library header of the same name.)
 *
 * sched_step() = schedule -> run -> postprocess, in one direction:
 *   schedule    running sequences first, decode ones (one token) before prefill chunks, then
 *               waiting ones in arrival order while there are slots (max_batch_size), step tokens
 *               (max_num_tokens; a prompt longer than what is left is chunked) and KV blocks.
 *               A waiting prompt reuses cached full blocks of its prefix, but at least its last
 *               token is recomputed so that logits exist (a fully cached prompt recomputes its
 *               last block: blocks shared between sequences are never written). When a running
 *               sequence needs a block and none is free, the newest running sequence is
 *               preempted: it gives its blocks back and waits again at the head of the queue;
 *               when readmitted it recomputes prompt and output so far (often from the cache),
 *               and what it already emitted is not emitted again.
 *   run         builds an mg_batch in preallocated arrays and calls the backend (forward_sampled
 *               when it has one, else forward + sampling.h on each logits row).
 *   postprocess appends the sampled tokens, registers newly full blocks with the pool (their hashes
 *               become reusable and are announced as KV events), checks stop conditions, calls
 *               each request's output callback and frees finished sequences and their blocks.
 *
 * Window pool: when the backend keeps its sliding layers in a pool of their own
 * (backend.h: window_blocks > 0), the scheduler owns a second block pool of that size. Each
 * sequence then has a second block table of the same logical length whose blocks wholly below
 * the window of its next query are given back after every step (and marked -1). Admission needs
 * room in both pools, growing a running sequence takes a block from each (preempting when either
 * is short), preemption and finishing free both. The window pool reuses full blocks by the same
 * sequence hashes (no KV events: the router tracks the full pool), and a prefix hit is shortened
 * to the longest one whose first recomputed position still finds its window's blocks cached.
 *
 * Stop conditions, in order: a stop token id (the engine's eos_token_ids plus the request's own)
 * ends with "stop" unless ignore_eos, and only after min_tokens other tokens (until then the stop
 * ids are banned from sampling, on both backend paths); max_tokens, max_seq_len and the KV
 * capacity end with "length".
 * The stop token is part of the output (and of completion_tokens).
 *
 * Ownership: the scheduler owns the KV pool, the sequences and every array it hands the backend;
 * it borrows the backend (the caller destroys it after sched_destroy).
 * Thread rule: one thread (the engine thread) calls everything, except sched_seq_create and
 * sched_seq_destroy, which any thread may call on a sequence it holds. */
#ifndef MG_SCHED_H
#define MG_SCHED_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "engine_config.h"
#include "kv.h"
#include "sampling.h"
#include "status.h"

typedef enum mg_finish {
    MG_FINISH_NONE = 0,      /* not finished: more output follows */
    MG_FINISH_STOP = 1,      /* a stop token */
    MG_FINISH_LENGTH = 2,    /* max_tokens, max_seq_len or KV capacity */
    MG_FINISH_CANCELLED = 3, /* sched_cancel / engine_cancel */
    MG_FINISH_ERROR = 4,     /* the backend failed, or the engine shut down */
} mg_finish;

/* "stop", "length", "cancelled", "error" (NULL for MG_FINISH_NONE), as OpenAI spells them. */
const char *mg_finish_str(mg_finish f);

typedef struct mg_usage {
    int32_t prompt_tokens;
    int32_t completion_tokens; /* output tokens so far */
    int32_t cached_tokens;     /* prompt tokens found in the prefix cache at first admission */
} mg_usage;

/* Callbacks carry the tokens produced since the last one: the first token at once, then every
 * stream_interval tokens (engine config; 1 = every step), and always exactly one callback with
 * finish != MG_FINISH_NONE (carrying what is left), after which the request is gone (its user
 * data may be freed). */
typedef struct mg_output {
    const char *id;        /* the request id */
    const int32_t *tokens; /* new tokens since the last callback (n_tokens of them; may be 0) */
    int n_tokens;
    mg_finish finish;
    mg_usage usage;
} mg_output;

/* Called on the engine thread; out and its arrays are valid during the call only. The callback
 * must not call back into the scheduler. */
typedef void (*mg_output_cb)(void *ud, const mg_output *out);

#define MG_REQUEST_MAX_STOP_IDS 16

typedef struct mg_request {
    const char *id;          /* non-empty, < 256 bytes; copied */
    const int32_t *prompt;   /* (n_prompt) token ids, 0 <= id < vocab; copied */
    int n_prompt;            /* >= 1 */
    mg_sampling sampling;    /* see sampling.h */
    bool has_seed;           /* false: the seed is derived from the id (repeatable per id) */
    int32_t max_tokens;      /* 0: until max_seq_len */
    int32_t min_tokens;      /* stop ids are not honoured before this many tokens */
    bool ignore_eos;         /* never stop on a stop id (benchmarks: exact lengths) */
    const int32_t *stop_ids; /* (n_stop_ids) extra stop ids besides the engine's; copied */
    int n_stop_ids;
    mg_output_cb cb; /* may be NULL (the request then runs silently) */
    void *ud;
} mg_request;

typedef struct mg_seq mg_seq;
typedef struct mg_sched mg_sched;

/* Counters readable by the scheduler's thread (the engine copies them out for others). */
typedef struct mg_sched_load {
    int running;     /* active slots */
    int max_running; /* total slots: max_batch_size */
    int waiting;     /* queued, including preempted */
    mg_kv_stats kv;
    mg_kv_stats window_kv; /* the window pool's (all zero without one) */
    uint64_t steps;
    uint64_t preemptions;
    uint64_t tokens_out; /* output tokens emitted */
} mg_sched_load;

typedef struct mg_step_info {
    int n_seqs;           /* sequences in the step */
    int n_tokens;         /* tokens in the step */
    int n_decode;         /* of the sequences, decode steps */
    int n_prefill_tokens; /* tokens of prefill chunks */
    int n_preempted;      /* sequences preempted while scheduling */
    int n_finished;       /* sequences that finished */
} mg_step_info;

/* Check cfg (engine_config_check must have run), create the KV pool with the backend's
 * num_blocks (and the window pool with its window_blocks, which must hold at least one
 * sequence's window plus a max_num_tokens chunk) and preallocate every step array. The backend's
 * block_size must equal cfg->kv_block_size. */
mg_status sched_create(const mg_engine_config *cfg, mg_backend *backend, mg_sched **out);
/* Frees the remaining sequences without calling their callbacks (see sched_abort_all). */
void sched_destroy(mg_sched *s);

/* The longest sequence this scheduler admits: min(max_seq_len, backend max_ctx, KV capacity). */
int sched_max_len(const mg_sched *s);

/* Validate a request against the limits and copy it into a new sequence. Any thread (the limits
 * are fixed at sched_create). MG_EINVAL with detail naming the field on bad input. */
mg_status sched_seq_create(const mg_sched *s, const mg_request *r, mg_seq **out);
void sched_seq_destroy(mg_seq *q);
/* Queue a sequence made by sched_seq_create; the scheduler owns it from now on. */
void sched_enqueue(mg_sched *s, mg_seq *q);
/* sched_seq_create + sched_enqueue. */
mg_status sched_add(mg_sched *s, const mg_request *r);

/* Cancel the request with this id wherever it is: frees it and its blocks and calls its callback
 * with MG_FINISH_CANCELLED. Returns false when no such request is queued or running. */
bool sched_cancel(mg_sched *s, const char *id);
/* Finish every request with reason (callbacks called), e.g. MG_FINISH_ERROR at shutdown. */
void sched_abort_all(mg_sched *s, mg_finish reason);

/* Whether a step would do anything (running or waiting sequences). */
bool sched_has_work(const mg_sched *s);
/* One step. info may be NULL. On a backend failure every sequence of the batch finishes with
 * MG_FINISH_ERROR and the backend's status is returned. */
mg_status sched_step(mg_sched *s, mg_step_info *info);

/* The same, but the backend is called even when nothing could be scheduled (an empty batch):
 * ranks of a group that exchange hidden states every layer must all run every step. */
mg_status sched_step_lockstep(mg_sched *s, mg_step_info *info);

mg_sched_load sched_load(const mg_sched *s);
/* The KV pool, for its event callback and counters (same thread rule). */
mg_kv_pool *sched_kv(mg_sched *s);
/* The window pool (its counters), or NULL when the backend has none. */
mg_kv_pool *sched_window_kv(mg_sched *s);
/* Forget every cached prefix in both pools (the full pool emits "cleared"). */
void sched_kv_clear(mg_sched *s);

#endif
