/* kv.h - the paged KV block pool: reference counts, prefix reuse by sequence hash, LRU eviction.
 *
 * The pool owns block *ids* and their bookkeeping, never the KV data (the backend stores that).
 * The scheduler owns the pool. A block is in exactly one of three states:
 *   active  ref > 0, held by one or more sequences (a shared prefix has ref > 1);
 *   cached  ref == 0 with a sequence hash: reusable by a later prompt with the same prefix, and
 *           evicted least-recently-released first when fresh blocks are needed;
 *   free    ref == 0 without hash: taken first by kv_allocate.
 * A block gets its hash only through kv_commit, after its KV was fully written; a hash maps to at
 * most one block (a duplicate commit leaves the second block unhashed).
 *
 * The reusable set is every hashed block, active or idle. Events: every block that enters it
 * (kv_commit) is reported as "stored" with its parent's sequence hash, every block that leaves it
 * (evicted by kv_allocate) as "removed"; kv_clear empties it with one "cleared" instead. Event
 * ids rise by one per event, so a consumer (the router, through {ns}.kv_events) sees gaps.
 *
 * Questions are apart from actions: kv_match / kv_can_allocate change nothing; kv_acquire,
 * kv_allocate, kv_commit, kv_release, kv_clear do.
 * Thread rule: single-threaded (the engine thread). Counters are plain reads for that thread;
 * the engine publishes them to other threads. */
#ifndef MG_KV_H
#define MG_KV_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

typedef enum mg_kv_event_kind {
    MG_KV_STORED = 1,  /* blocks entered the reusable set */
    MG_KV_REMOVED = 2, /* blocks left it */
    MG_KV_CLEARED = 3, /* every block left it */
} mg_kv_event_kind;

typedef struct mg_kv_event {
    uint64_t event_id; /* 1, 2, 3 ... per pool */
    mg_kv_event_kind kind;
    bool has_parent;              /* stored: the first block has a parent block */
    uint64_t parent_hash;         /* stored: sequence hash of the parent of block_hashes[0] */
    int n;                        /* blocks in this event (0 for cleared) */
    const uint64_t *block_hashes; /* (n) sequence hashes, in chain order for stored */
    const uint64_t *local_hashes; /* (n) stored: tokens-only hashes; NULL for removed */
} mg_kv_event;

/* Called on the pool's thread; the arrays are valid during the call only. */
typedef void (*mg_kv_event_cb)(void *ud, const mg_kv_event *ev);

typedef struct mg_kv_stats {
    int total_blocks;
    int active_blocks;      /* ref > 0 */
    int cached_blocks;      /* blocks with a hash (active or not) */
    int free_blocks;        /* ref == 0, cached or not: what kv_allocate can hand out */
    uint64_t lookup_blocks; /* prompt blocks looked up by kv_note_lookup */
    uint64_t hit_blocks;    /* of those, found in the cache */
    double usage;           /* active / total */
    double hit_rate;        /* hit / lookup (0 before any lookup) */
} mg_kv_stats;

typedef struct mg_kv_pool mg_kv_pool;

/* num_blocks >= 1, block_size >= 1. enable_reuse false: kv_commit registers nothing (no prefix
 * reuse, no events). */
mg_status kv_pool_create(int num_blocks, int block_size, bool enable_reuse, mg_kv_pool **out);
void kv_pool_destroy(mg_kv_pool *p);
/* Install the event callback (NULL to stop). */
void kv_pool_set_event_cb(mg_kv_pool *p, mg_kv_event_cb cb, void *ud);

int kv_block_size(const mg_kv_pool *p);
int kv_num_blocks(const mg_kv_pool *p);
int kv_num_free(const mg_kv_pool *p);
int kv_ref(const mg_kv_pool *p, int32_t block);
mg_kv_stats kv_stats(const mg_kv_pool *p);

/* --- questions --- */

/* How many leading hashes of seq_hashes[0..n) are cached (active or not). *n_idle (may be NULL)
 * receives how many of those are idle (ref 0): acquiring them takes them out of the free set. */
int kv_match(const mg_kv_pool *p, const uint64_t *seq_hashes, int n, int *n_idle);
/* Whether n_idle_hits cached-idle blocks plus n_new fresh blocks can be taken now. */
bool kv_can_allocate(const mg_kv_pool *p, int n_idle_hits, int n_new);

/* --- actions --- */

/* Take a reference on the blocks of the n leading matched hashes (n <= kv_match's answer) and
 * write their ids to out. */
void kv_acquire(mg_kv_pool *p, const uint64_t *seq_hashes, int n, int32_t *out);
/* Take n fresh blocks (ref 1, no hash), evicting least-recently-released cached blocks when no
 * plain free block is left; MG_EFULL (nothing taken) when fewer than n are free. */
mg_status kv_allocate(mg_kv_pool *p, int n, int32_t *out);
/* Register blocks[0..n) (held by the caller, fully written) under their sequence hashes, in
 * chain order; parent is the sequence hash before blocks[0] (has_parent false for the first
 * block of a sequence). Emits one "stored" event for the blocks that got registered. */
void kv_commit(mg_kv_pool *p, const int32_t *blocks, const uint64_t *seq_hashes,
               const uint64_t *local_hashes, int n, bool has_parent, uint64_t parent);
/* Drop one reference on each of blocks[0..n). Blocks reaching ref 0 become cached (hashed) or
 * free. They are released last-first, so a sequence's tail blocks are evicted before its head
 * (the head is the part other prompts share). */
void kv_release(mg_kv_pool *p, const int32_t *blocks, int n);
/* Forget every hash (active blocks stay held but will not be reused again) and emit "cleared",
 * which tells a consumer to drop everything it knows of this pool. */
void kv_clear(mg_kv_pool *p);
/* Count a prompt lookup: n_blocks looked up, n_hit found (the prefix hit-rate counter). */
void kv_note_lookup(mg_kv_pool *p, int n_blocks, int n_hit);

/* --- sizing the window pool (backend.h: sliding layers in a pool of their own) --- */

/* Window blocks that never limit running sequences: each of max_seqs sequences holds the blocks
 * of its last `window` positions (at most ceil(window / block_size) + 1) plus those of its next
 * step's tokens, which add up to at most max_tokens over the step (one more block each for the
 * alignment of a chunk): max_seqs * (ceil(window / bs) + 2) + ceil(max_tokens / bs). */
int64_t kv_window_blocks_needed(int window, int block_size, int64_t max_seqs, int64_t max_tokens);

/* Split budget_bytes of KV memory between the full pool (full_bytes per block: the
 * full-attention layers) and the window pool (window_bytes per block: the sliding layers): the
 * window pool gets kv_window_blocks_needed and an eighth more (so that the window blocks of
 * recent prefixes stay cached for reuse), the full pool the rest. Returns false, setting
 * nothing, when the full pool would then get no more blocks than a single pool of
 * full_bytes + window_bytes per block would: one pool serves such a budget better. */
bool kv_window_split(uint64_t budget_bytes, uint64_t full_bytes, uint64_t window_bytes, int window,
                     int block_size, int64_t max_seqs, int64_t max_tokens, int *full_blocks,
                     int *window_blocks);

#endif
