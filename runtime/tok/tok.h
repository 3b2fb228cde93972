/* tok.h - the o200k_harmony tokenizer (byte-level BPE) and the harmony chat format.
 *
 * Shared by the frontend (render + encode requests, decode + parse responses) and the benchmark
 * (synthetic prompts of exact token counts, counting returned tokens). A tok_t is immutable after
 * loading and safe to use from many threads; tok_stream and harmony_parser are per-request.
 *
 * Ownership: functions that fill a caller's buffer say so; *_create returns an object owned by the
 * caller and freed with the matching *_destroy, which accepts NULL. */
#ifndef MG_TOK_H
#define MG_TOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Harmony special tokens (DESIGN.md section 3). */
enum {
    TOK_STARTOFTEXT = 199998,
    TOK_ENDOFTEXT = 199999,
    TOK_RETURN = 200002,
    TOK_CONSTRAIN = 200003,
    TOK_CHANNEL = 200005,
    TOK_START = 200006,
    TOK_END = 200007,
    TOK_MESSAGE = 200008,
    TOK_CALL = 200012,
    TOK_ENDOFPROMPT = 200018,
    TOK_VOCAB_SIZE = 201088,
};

typedef struct tok tok_t;

/* Load from a tiktoken ranks file (base64 token, space, rank per line) plus the harmony specials. */
mg_status tok_load_tiktoken(const char *path, tok_t **out);
/* Load from a checkpoint folder: tokenizer.json (+ tokenizer_config.json, special_tokens_map.json). */
mg_status tok_load_dir(const char *dir, tok_t **out);
void tok_destroy(tok_t *t);

/* Encode UTF-8 text. allow_special: special-token text ("<|start|>") becomes its id; otherwise it
 * is an error (MG_EINVAL) when present. Ids go to a growable array owned by the caller
 * (*ids may be NULL at first; *cap its capacity), *n gets the count. */
mg_status tok_encode(const tok_t *t, const char *text, size_t len, bool allow_special,
                     uint32_t **ids, size_t *n, size_t *cap);
/* Number of tokens text encodes to (no specials). */
size_t tok_count(const tok_t *t, const char *text, size_t len);
/* Decode ids to bytes appended to out (growable, caller-owned, NUL-terminated). */
mg_status tok_decode(const tok_t *t, const uint32_t *ids, size_t n, char **out, size_t *len,
                     size_t *cap);
/* The bytes of one token (not NUL-terminated); NULL for ids out of range. */
const char *tok_piece(const tok_t *t, uint32_t id, size_t *len);
uint32_t tok_vocab_size(const tok_t *t);
bool tok_is_special(const tok_t *t, uint32_t id);

/* Streaming decode: feed ids as they come, get only complete UTF-8 text (a character split over
 * tokens is held back until complete). */
typedef struct tok_stream tok_stream;
tok_stream *tok_stream_create(const tok_t *t);
void tok_stream_destroy(tok_stream *s);
/* Appends the newly completed text to out (growable, caller-owned). */
mg_status tok_stream_feed(tok_stream *s, uint32_t id, char **out, size_t *len, size_t *cap);

#endif
