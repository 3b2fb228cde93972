/* tok_internal.h - the tokenizer's layout, shared by the loaders (tok.c, tok_json.c); not public.
 *
 * Every id (ordinary and special) has its bytes in one pool: pool[off[id] .. off[id + 1]).
 * Ordinary ids 0..n_ranks-1 are BPE ranks; the hash table maps their bytes back to the rank.
 * Specials are kept sorted by text for the "<|...|>" matcher. */
#ifndef MG_TOK_INTERNAL_H
#define MG_TOK_INTERNAL_H

#include "tok.h"

enum { TOK_KIND_NONE = 0, TOK_KIND_RANK = 1, TOK_KIND_SPECIAL = 2 };

typedef struct tok_special_entry {
    const char *text; /* points into the pool; not NUL-terminated, len bytes */
    uint32_t len;
    uint32_t id;
} tok_special_entry;

/* A hash slot. Tokens of up to 8 bytes are compared by `key`, their bytes zero-padded, without
 * touching the pool (most lookups in BPE are of short byte pairs); longer ones by the full hash
 * in `key`, then their bytes. rank1 = rank + 1, 0 for an empty slot. */
typedef struct tok_slot {
    uint64_t key;
    uint32_t rank1;
    uint32_t len;
} tok_slot;

struct tok {
    uint32_t vocab;   /* ids 0..vocab-1 */
    uint32_t n_ranks; /* ordinary ids are 0..n_ranks-1 */
    uint8_t *pool;
    uint32_t *off;  /* [vocab + 1] */
    uint8_t *kind;  /* [vocab] TOK_KIND_* */
    tok_slot *slot; /* open-addressing hash of ordinary tokens' bytes */
    uint64_t mask;  /* slots - 1 */
    int shift;      /* 64 - log2(slots): the index is the hash's top bits */
    int32_t byte_rank[256];
    uint32_t *pair_rank;         /* [65536] rank of each two-byte string (first byte low), or ~0 */
    tok_special_entry *specials; /* sorted by text */
    uint32_t n_specials;
    uint32_t max_special_len;
};

/* Building a tok_t: tok_builder_add for each ordinary token (any order, ranks dense from 0),
 * tok_builder_special for each special, then tok_builder_finish. Errors carry `what` (a file). */
typedef struct tok_builder tok_builder;
tok_builder *tok_builder_create(void);
void tok_builder_destroy(tok_builder *b);
mg_status tok_builder_add(tok_builder *b, const void *bytes, size_t len, uint32_t rank);
mg_status tok_builder_special(tok_builder *b, const char *text, uint32_t id);
/* Adds the o200k_harmony specials (ids 199998..201087) that were not given explicitly. */
void tok_builder_harmony_specials(tok_builder *b);
mg_status tok_builder_finish(tok_builder *b, const char *what, tok_t **out);

/* The two tokens whose merge gives `rank` (for writing merges): the left one is its first
 * *left_len bytes. */
mg_status tok_merge_split(const tok_t *t, uint32_t rank, uint32_t *left_len);

/* The o200k pre-tokenizer pattern as tiktoken and tokenizer.json spell it. */
extern const char tok_o200k_pattern[];

#endif
