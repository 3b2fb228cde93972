/* backend.h - what the scheduler hands a backend each step, and the backend's interface.
 *
 * The scheduler (worker/engine) owns sequences, KV block tables and sampling; a backend (cpu,
 * cuda, mocker) owns the weights and the KV storage and runs one forward step over a batch of
 * tokens from many sequences, some in prefill (several tokens, chunked) and some in decode (one).
 * The backend writes logits only for the rows listed in logits_rows.
 *
 * KV storage is paged: num_blocks blocks of block_size positions for every layer. block_table
 * row s lists the physical blocks of batch sequence s in position order.
 * Thread rule: every call comes from the one engine thread of this rank. */
#ifndef MG_BACKEND_H
#define MG_BACKEND_H

#include <stdint.h>

#include "status.h"

typedef struct mg_batch {
    int n_tokens;                /* tokens in this step, all sequences */
    int n_seqs;                  /* sequences in this step */
    const int32_t *tokens;       /* (n_tokens) token ids */
    const int32_t *positions;    /* (n_tokens) position of each token in its sequence */
    const int32_t *token_seq;    /* (n_tokens) batch sequence index of each token */
    const int32_t *seq_start;    /* (n_seqs) first token row of each sequence */
    const int32_t *seq_len;      /* (n_seqs) tokens of each sequence in this step */
    const int32_t *seq_ctx;      /* (n_seqs) context length after this step (positions 0..ctx) */
    const int32_t *block_table;  /* (n_seqs, max_blocks) physical KV block ids */
    int max_blocks;              /* row stride of block_table */
    int n_logits;                /* rows that need logits */
    const int32_t *logits_rows;  /* (n_logits) token rows whose logits are wanted */
} mg_batch;

typedef struct mg_backend mg_backend;
typedef struct mg_backend_ops {
    const char *name;
    /* Run one step: write KV for every token, logits (n_logits, vocab) as float32. */
    mg_status (*forward)(mg_backend *b, const mg_batch *batch, float *logits);
    /* Copy block src to dst in every layer (for copy-on-write of a shared partial block). */
    mg_status (*copy_block)(mg_backend *b, int32_t dst, int32_t src);
    void (*destroy)(mg_backend *b);
} mg_backend_ops;

struct mg_backend {
    const mg_backend_ops *ops;
    int vocab;       /* logits row width */
    int num_blocks;  /* KV blocks the backend allocated */
    int block_size;  /* positions per block */
    int max_ctx;     /* longest sequence the backend supports */
};

#endif
