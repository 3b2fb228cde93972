/* tok.h - the o200k_harmony tokenizer (byte-level BPE) shared by the frontend and the benchmark.
 *
 * Data flow: the frontend renders a chat (harmony.h), encodes it here into token ids and sends
 * them to a worker; ids coming back are decoded here (tok_stream for streaming) and parsed by the
 * harmony parser. The benchmark uses tok_count / tok_encode to size prompts and count outputs.
 *
 * Encoding is exactly tiktoken's: the o200k pre-tokenizer regex (a hand-written scanner over a
 * Unicode category table, tok_scan.h), then rank-ordered byte-pair merging inside each piece.
 * Special tokens ("<|start|>" ...) are recognised in the text before that, when the call allows.
 *
 * Threads: a tok_t is immutable after loading and may be used from any number of threads at
 * once. A tok_stream belongs to one request and one thread at a time.
 *
 * Ownership: *_load and *_create return objects owned by the caller, freed with the matching
 * *_destroy, which accepts NULL. Output arrays are growable buffers owned by the caller: pass
 * a pointer to a (possibly NULL) buffer and its capacity; the call reallocs as needed. */
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
    TOK_NUM_RANKS = 199998, /* ordinary (BPE) tokens: ids 0..199997 */
};

/* How tok_encode treats special-token text such as "<|start|>" found in its input. The first two
 * values equal false/true so that a bool argument keeps its meaning. */
typedef enum tok_special {
    TOK_SPECIAL_REJECT = 0, /* MG_EINVAL if any special token's text occurs (tiktoken's default) */
    TOK_SPECIAL_ALLOW = 1,  /* special-token text becomes the special id (allowed_special="all") */
    TOK_SPECIAL_TEXT = 2,   /* treated as ordinary text (encode_ordinary) */
} tok_special;

typedef struct tok tok_t;

/* Load from a tiktoken ranks file (base64 token, space, rank per line; o200k_base.tiktoken) and
 * add the o200k_harmony specials. Errors name the file and line. */
mg_status tok_load_tiktoken(const char *path, tok_t **out);
/* Load from a checkpoint folder: tokenizer.json (model.vocab of byte-level strings as ranks and
 * added_tokens for the specials); tokenizer_config.json and special_tokens_map.json are read
 * when present: their bos/eos/pad must name special tokens. The pre-tokenizer is taken to be
 * o200k's; a different Split regex is logged as a warning. */
mg_status tok_load_dir(const char *dir, tok_t **out);
void tok_destroy(tok_t *t);

/* Write a gpt-oss-style tokenizer.json, tokenizer_config.json and special_tokens_map.json for
 * this vocabulary into dir (which must exist); tok_load_dir reads them back with identical ids. */
mg_status tok_write_dir(const tok_t *t, const char *dir);

/* Encode UTF-8 text. Invalid UTF-8 is an error (MG_EINVAL naming the byte offset), never read
 * past len. Ids are appended after the first *n entries of *ids (set *n = 0 to start afresh);
 * *ids may be NULL at first, *cap is its capacity in ids. */
mg_status tok_encode(const tok_t *t, const char *text, size_t len, tok_special special,
                     uint32_t **ids, size_t *n, size_t *cap);
/* Number of tokens the text encodes to as ordinary text (TOK_SPECIAL_TEXT). Never fails: each
 * invalid UTF-8 sequence counts as U+FFFD would (Python's errors="replace"). Allocation-free for
 * valid text whose pieces are under 512 bytes. */
size_t tok_count(const tok_t *t, const char *text, size_t len);

/* Decode ids to bytes appended to *out (growable, caller-owned, kept NUL-terminated); *len is
 * the length so far (set 0 to start afresh). Special ids give their text ("<|end|>"). Ids that
 * are out of range or unassigned are MG_EINVAL. The bytes need not be valid UTF-8 when the ids
 * split a character; tok_stream never emits such a split. */
mg_status tok_decode(const tok_t *t, const uint32_t *ids, size_t n, char **out, size_t *len,
                     size_t *cap);
/* The bytes of one token (not NUL-terminated); NULL for ids out of range or unassigned. */
const char *tok_piece(const tok_t *t, uint32_t id, size_t *len);
/* The rank of a byte string if it is exactly one ordinary token, else -1. */
int64_t tok_rank(const tok_t *t, const void *bytes, size_t len);
uint32_t tok_vocab_size(const tok_t *t); /* 201088 for o200k_harmony */
bool tok_is_special(const tok_t *t, uint32_t id);
/* Id of a special token by its text ("<|call|>"); MG_ENOTFOUND when there is none. */
mg_status tok_special_id(const tok_t *t, const char *name, uint32_t *id);

/* Replace invalid UTF-8 sequences by U+FFFD (one per maximal invalid subpart, as Python does);
 * appends to a growable caller-owned buffer. Returns true when the input was already valid. */
bool tok_utf8_sanitize(const char *s, size_t len, char **out, size_t *out_len, size_t *cap);
/* Length of the longest valid UTF-8 prefix of s (== len when all valid). */
size_t tok_utf8_valid_prefix(const char *s, size_t len);

/* Streaming decode: feed ids as they come, get only complete UTF-8 text (a character split over
 * tokens is held back until complete; an impossible sequence becomes U+FFFD). */
typedef struct tok_stream tok_stream;
tok_stream *tok_stream_create(const tok_t *t);
void tok_stream_destroy(tok_stream *s);
/* Appends the newly completed text to *out (growable, caller-owned, NUL-terminated). */
mg_status tok_stream_feed(tok_stream *s, uint32_t id, char **out, size_t *len, size_t *cap);
/* End of stream: bytes still held back (a truncated character) come out as U+FFFD. */
mg_status tok_stream_finish(tok_stream *s, char **out, size_t *len, size_t *cap);

#endif
