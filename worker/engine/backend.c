/* backend.c - the batch checks every backend's forward shares (backend.h). */
#include "backend.h"

#include <stddef.h>

mg_status mg_batch_check(const mg_batch *bt, const mg_backend *b, int max_tokens, const char *who) {
    int bs = b->block_size;
    if (bt->n_tokens < 0 || bt->n_tokens > max_tokens)
        return MG_ERRF(MG_EINVAL, "%s: %d tokens exceed max_tokens %d", who, bt->n_tokens,
                       max_tokens);
    if (bt->n_seqs < 1 || bt->max_blocks < 1)
        return MG_ERRF(MG_EINVAL, "%s: %d sequences, %d blocks per row", who, bt->n_seqs,
                       bt->max_blocks);
    if ((bt->window_table != NULL) != (b->window_blocks > 0))
        return MG_ERRF(MG_EINVAL, "%s: window_table %s, but the backend has %d window blocks", who,
                       bt->window_table ? "given" : "missing", b->window_blocks);
    for (int s = 0; s < bt->n_seqs; s++) {
        int ctx = bt->seq_ctx[s], nblk = (ctx + bs - 1) / bs;
        if (ctx < 1 || ctx > b->max_ctx || nblk > bt->max_blocks)
            return MG_ERRF(MG_EINVAL,
                           "%s: sequence %d: context %d outside [1, %d] or past its %d blocks", who,
                           s, ctx, b->max_ctx, bt->max_blocks);
        for (int k = 0; k < nblk; k++) {
            int32_t blk = bt->block_table[(size_t)s * bt->max_blocks + k];
            if (blk < 0 || blk >= b->num_blocks)
                return MG_ERRF(MG_EINVAL, "%s: sequence %d: block %d is %d, outside [0, %d)", who,
                               s, k, blk, b->num_blocks);
        }
    }
    for (int t = 0; t < bt->n_tokens; t++) {
        int s = bt->token_seq[t];
        if (bt->tokens[t] < 0 || bt->tokens[t] >= b->vocab)
            return MG_ERRF(MG_EINVAL, "%s: token %d is %d, outside the vocabulary", who, t,
                           bt->tokens[t]);
        if (s < 0 || s >= bt->n_seqs || bt->positions[t] < 0 || bt->positions[t] >= bt->seq_ctx[s])
            return MG_ERRF(MG_EINVAL, "%s: token %d: sequence %d, position %d outside its context",
                           who, t, s, bt->positions[t]);
        if (!bt->window_table) continue;
        /* A sliding layer writes this token's position and reads the window before it. */
        int pos = bt->positions[t], lo = pos - b->window + 1;
        for (int k = lo > 0 ? lo / bs : 0; k <= pos / bs; k++) {
            int32_t blk = bt->window_table[(size_t)s * bt->max_blocks + k];
            if (blk < 0 || blk >= b->window_blocks)
                return MG_ERRF(MG_EINVAL,
                               "%s: token %d: sequence %d, window_table block %d is %d, outside "
                               "[0, %d)",
                               who, t, s, k, blk, b->window_blocks);
        }
    }
    if (bt->n_logits < 0 || bt->n_logits > bt->n_tokens)
        return MG_ERRF(MG_EINVAL, "%s: %d logits rows for %d tokens", who, bt->n_logits,
                       bt->n_tokens);
    for (int i = 0; i < bt->n_logits; i++)
        if (bt->logits_rows[i] < 0 || bt->logits_rows[i] >= bt->n_tokens)
            return MG_ERRF(MG_EINVAL, "%s: logits row %d is %d, outside the batch", who, i,
                           bt->logits_rows[i]);
    return MG_OK;
}
