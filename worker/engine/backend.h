/* backend.h - what the scheduler hands a backend each step, and the backend's interface.
 *
 * The scheduler (worker/engine) owns sequences, KV block tables and sampling; a backend (cpu,
 * cuda, mocker) owns the weights and the KV storage and runs one forward step over a batch of
 * tokens from many sequences, some in prefill (several tokens, chunked) and some in decode (one).
 * The backend writes logits only for the rows listed in logits_rows.
 *
 * KV storage is paged: num_blocks blocks of block_size positions for every layer. block_table
 * row s lists the physical blocks of batch sequence s in position order; a block id may appear in
 * several rows (a prefix shared by sequences), but the scheduler never schedules a write to a
 * shared block: every position a batch writes lies in a block that only its sequence holds.
 * Positions below seq_ctx[s] - seq_len[s] were written by earlier steps (or by another sequence
 * with the same prefix) and must be read, not recomputed.
 *
 * Window pool (DESIGN.md §4: sliding-window layers need only their last `window` positions): a
 * backend that sets window_blocks > 0 keeps its sliding layers' KV in a second pool of that many
 * blocks, and every batch then carries window_table beside block_table (same stride, same
 * logical block index). A sliding layer reads and writes position p of sequence s through
 * window_table: the row holds real ids for every block that contains a position >= (first query
 * of s in this step) - window + 1, and -1 for blocks wholly below that, which the scheduler has
 * given back. Full-attention layers keep using block_table. window_blocks == 0 (every backend
 * that does not opt in) means no window pool: window_table is NULL and sliding layers use
 * block_table, as before.
 *
 * Order: decode sequences (one token, generation phase) come first, rows 0..n_decode-1, then
 * prefill chunks. Tokens of a sequence are contiguous and in position order. A batch may be empty
 * (n_seqs 0) only for a backend with group_sync: it must still take part in the group's step.
 *
 * Ownership: every array belongs to the scheduler and is valid only during the call.
 * Thread rule: every call comes from the one engine thread of this rank. */
#ifndef MG_BACKEND_H
#define MG_BACKEND_H

#include <stdint.h>

#include "sampling.h"
#include "status.h"

typedef struct mg_batch {
    int n_tokens;               /* tokens in this step, all sequences */
    int n_seqs;                 /* sequences in this step */
    int n_decode;               /* sequences 0..n_decode-1 are decode steps (seq_len 1) */
    int n_prefill_tokens;       /* tokens of the prefill chunks (n_tokens - n_decode) */
    const int32_t *tokens;      /* (n_tokens) token ids */
    const int32_t *positions;   /* (n_tokens) position of each token in its sequence */
    const int32_t *token_seq;   /* (n_tokens) batch sequence index of each token */
    const int32_t *seq_start;   /* (n_seqs) first token row of each sequence */
    const int32_t *seq_len;     /* (n_seqs) tokens of each sequence in this step */
    const int32_t *seq_ctx;     /* (n_seqs) context length after this step (positions 0..ctx) */
    const int32_t *block_table; /* (n_seqs, max_blocks) physical KV block ids, -1 past the end */
    int max_blocks;             /* row stride of block_table (blocks of the longest row) */
    /* (n_seqs, max_blocks) the sliding layers' blocks in the window pool, -1 below each row's
     * window and past its end; NULL when the backend has no window pool (window_blocks 0). */
    const int32_t *window_table;
    int n_logits;               /* rows that need logits (or a sampled token) */
    const int32_t *logits_rows; /* (n_logits) token rows whose logits are wanted, ascending */
    const int32_t *logits_seq;  /* (n_logits) batch sequence index of each logits row */
} mg_batch;

/* What a backend that samples on its own needs for one logits row. */
typedef struct mg_sample_req {
    mg_sampling params; /* temperature, top_p, top_k, seed */
    uint64_t counter;   /* tokens this sequence has generated so far: the RNG position */
    /* Ids that must not be drawn: treat their logits as -inf (the stop ids of a request that has
     * not reached min_tokens). NULL when none, which is the common case; a backend that cannot
     * apply them on the device takes such a row through sampling_pick on the host. */
    const int32_t *banned;
    int n_banned;
} mg_sample_req;

typedef struct mg_backend mg_backend;
typedef struct mg_backend_ops {
    const char *name;
    /* Run one step: write KV for every token, logits (n_logits, vocab) as float32 row-major in
     * the order of batch->logits_rows. NULL when the backend only offers forward_sampled. */
    mg_status (*forward)(mg_backend *b, const mg_batch *batch, float *logits);
    /* Optional. Run one step and choose the tokens itself (on-device sampling, or the mocker):
     * write KV for every token, then out_tokens[i] for logits row i, following sampling.h's
     * rules with reqs[i] (n_logits entries). Used instead of forward when present. */
    mg_status (*forward_sampled)(mg_backend *b, const mg_batch *batch, const mg_sample_req *reqs,
                                 int32_t *out_tokens);
    /* Optional. Copy block src to dst in every layer (copy-on-write of a shared partial block).
     * The scheduler does not need it today: it never shares a partial block. With a window pool
     * it copies the full-attention layers only (window blocks have ids of their own, which this
     * call does not carry): a caller must copy those separately. */
    mg_status (*copy_block)(mg_backend *b, int32_t dst, int32_t src);
    void (*destroy)(mg_backend *b); /* frees b and everything it owns */
    /* Optional, for ranks that step in lockstep (attention data-parallel ranks whose MoE layers
     * exchange hidden states over NCCL): a collective over the group, called once per engine
     * loop iteration by every rank, that sets *group_work to whether any rank has local_work.
     * When present, the engine runs a step on every rank whenever *group_work is set, with an
     * empty batch (n_seqs 0) on ranks that have nothing to do, and while the whole group is
     * idle it calls this again every millisecond or so. */
    mg_status (*group_sync)(mg_backend *b, int local_work, int *group_work);
} mg_backend_ops;

struct mg_backend {
    const mg_backend_ops *ops;
    int vocab;      /* logits row width */
    int num_blocks; /* KV blocks the backend allocated */
    int block_size; /* positions per block; must equal the engine's kv block size */
    int max_ctx;    /* longest sequence the backend supports */
    /* Sliding layers' own pool (see the top of this file): blocks in it, 0 for none; and the
     * positions a sliding layer sees, query included (gpt-oss: 128; meaningful when
     * window_blocks > 0). */
    int window_blocks;
    int window;
};

/* What a forward holds a batch to before it indexes its arrays with it: at most max_tokens
 * tokens, at least one sequence and block-table column, every context within [1, b->max_ctx]
 * and its block-table row, every block id within [0, b->num_blocks), every token id within
 * [0, b->vocab), every token's sequence and position within that sequence's context, at most
 * n_tokens logits rows, each within the batch; a window_table exactly when b->window_blocks > 0,
 * with an id within [0, b->window_blocks) for every block a sliding layer of the step reads or
 * writes. MG_EINVAL names who ("cpu forward") and the offending field. */
mg_status mg_batch_check(const mg_batch *bt, const mg_backend *b, int max_tokens, const char *who);

#endif
