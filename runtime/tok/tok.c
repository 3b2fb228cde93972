/* tok.c - o200k_harmony: building the vocabulary, encoding (specials, pre-tokenizer, BPE),
 * decoding, streaming decode and UTF-8 helpers.
 *
 * Encoding matches tiktoken id for id: special-token text is found first (per the call's
 * tok_special mode), the text between is split by the o200k scanner (tok_scan.h), and each piece
 * that is not itself a token is merged pair by pair, always the lowest-ranked adjacent pair
 * first, leftmost on ties. Short pieces use tiktoken's quadratic loop on stack arrays (fastest
 * for the few bytes a piece usually has); long ones (whitespace runs, long words) a heap, so a
 * megabyte of spaces stays O(n log n). */
#include "tok_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_scan.h"

const char tok_o200k_pattern[] = "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{"
                                 "Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|"
                                 "'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}"
                                 "\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{"
                                 "Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| "
                                 "?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|"
                                 "\\s+(?!\\S)|\\s+";

/* Pieces up to BPE_QUAD bytes use the quadratic loop (fewest instructions when short); longer
 * ones the heap, with stack buffers up to BPE_STACK bytes. BPE_SMALL bounds tok_merge_split. */
enum { BPE_QUAD = 20, BPE_STACK = 512, BPE_SMALL = 256, NO_RANK = 0xFFFFFFFFu };

/* ---------------------------------------------------------------- hashing */

static inline uint64_t mix64(uint64_t h) {
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 29;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 32;
    return h;
}

static inline uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull * (n + 1);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = mix64(h ^ v);
        p += 8, n -= 8;
    }
    uint64_t v = 0;
    switch (n) { /* the tail, little-endian, without a variable-length memcpy */
    case 7:
        v |= (uint64_t)p[6] << 48; /* fall through */
    case 6:
        v |= (uint64_t)p[5] << 40; /* fall through */
    case 5:
        v |= (uint64_t)p[4] << 32; /* fall through */
    case 4:
        v |= (uint64_t)p[3] << 24; /* fall through */
    case 3:
        v |= (uint64_t)p[2] << 16; /* fall through */
    case 2:
        v |= (uint64_t)p[1] << 8; /* fall through */
    case 1:
        v |= p[0];
    }
    return mix64(h ^ v ^ 0x5555);
}

/* The bytes of a token of at most 8 bytes as a little-endian integer, zero-padded. */
static inline uint64_t load_small(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    switch (n) {
    case 8:
        v |= (uint64_t)p[7] << 56; /* fall through */
    case 7:
        v |= (uint64_t)p[6] << 48; /* fall through */
    case 6:
        v |= (uint64_t)p[5] << 40; /* fall through */
    case 5:
        v |= (uint64_t)p[4] << 32; /* fall through */
    case 4:
        v |= (uint64_t)p[3] << 24; /* fall through */
    case 3:
        v |= (uint64_t)p[2] << 16; /* fall through */
    case 2:
        v |= (uint64_t)p[1] << 8; /* fall through */
    case 1:
        v |= p[0];
    }
    return v;
}

/* The same from a buffer with at least 8 readable bytes at p (one load and a mask). */
static inline uint64_t load_padded(const uint8_t *p, size_t n) {
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return n >= 8 ? v : v & ((1ull << (8 * n)) - 1);
}

/* Fibonacci hashing: the index is the top bits of one multiplication. */
static inline uint64_t small_hash(uint64_t v, size_t n) {
    return (v ^ ((uint64_t)n << 59)) * 0x9E3779B97F4A7C15ull;
}

static inline uint32_t probe_small(const tok_t *t, uint64_t v, size_t n) {
    for (uint64_t i = small_hash(v, n) >> t->shift;; i = (i + 1) & t->mask) {
        const tok_slot *sl = &t->slot[i];
        if (!sl->rank1) return NO_RANK;
        if (sl->key == v && sl->len == n) return sl->rank1 - 1;
    }
}

static inline uint32_t probe_long(const tok_t *t, const uint8_t *p, size_t n) {
    uint64_t h = hash_bytes(p, n);
    for (uint64_t i = h >> t->shift;; i = (i + 1) & t->mask) {
        const tok_slot *sl = &t->slot[i];
        if (!sl->rank1) return NO_RANK;
        if (sl->key == h && sl->len == n && memcmp(t->pool + t->off[sl->rank1 - 1], p, n) == 0)
            return sl->rank1 - 1;
    }
}

/* Rank of bytes p[0..n) or NO_RANK. */
static inline uint32_t rank_of(const tok_t *t, const uint8_t *p, size_t n) {
    return n <= 8 ? probe_small(t, load_small(p, n), n) : probe_long(t, p, n);
}

/* The same where 8 bytes are readable at p whatever n is. */
static inline uint32_t rank_of_padded(const tok_t *t, const uint8_t *p, size_t n) {
    return n <= 8 ? probe_small(t, load_padded(p, n), n) : probe_long(t, p, n);
}

int64_t tok_rank(const tok_t *t, const void *bytes, size_t len) {
    if (!t || (!bytes && len) || len == 0) return -1;
    uint32_t r = rank_of(t, bytes, len);
    return r == NO_RANK ? -1 : (int64_t)r;
}

/* ---------------------------------------------------------------- building */

typedef struct bentry {
    uint32_t off, len, id;
} bentry;

struct tok_builder {
    uint8_t *bytes;
    size_t nbytes, capbytes;
    bentry *ranks, *specials;
    size_t nranks, capranks, nspecials, capspecials;
    int oom;
};

tok_builder *tok_builder_create(void) {
    return calloc(1, sizeof(tok_builder));
}

void tok_builder_destroy(tok_builder *b) {
    if (!b) return;
    free(b->bytes);
    free(b->ranks);
    free(b->specials);
    free(b);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q, *cap = c;
    return 0;
}

static mg_status builder_push(tok_builder *b, bentry **arr, size_t *n, size_t *cap,
                              const void *bytes, size_t len, uint32_t id) {
    if (grow((void **)&b->bytes, &b->capbytes, b->nbytes + len + 1, 1) ||
        grow((void **)arr, cap, *n + 1, sizeof(bentry)))
        return MG_ERRF(MG_ENOMEM, "tokenizer: out of memory while loading");
    memcpy(b->bytes + b->nbytes, bytes, len);
    (*arr)[(*n)++] = (bentry){(uint32_t)b->nbytes, (uint32_t)len, id};
    b->nbytes += len;
    return MG_OK;
}

mg_status tok_builder_add(tok_builder *b, const void *bytes, size_t len, uint32_t rank) {
    return builder_push(b, &b->ranks, &b->nranks, &b->capranks, bytes, len, rank);
}

mg_status tok_builder_special(tok_builder *b, const char *text, uint32_t id) {
    return builder_push(b, &b->specials, &b->nspecials, &b->capspecials, text, strlen(text), id);
}

/* o200k_harmony's named specials; every other id in 199998..201087 is <|reserved_ID|>. */
static const struct {
    const char *text;
    uint32_t id;
} harmony_named[] = {
    {"<|startoftext|>", TOK_STARTOFTEXT},
    {"<|endoftext|>", TOK_ENDOFTEXT},
    {"<|return|>", TOK_RETURN},
    {"<|constrain|>", TOK_CONSTRAIN},
    {"<|channel|>", TOK_CHANNEL},
    {"<|start|>", TOK_START},
    {"<|end|>", TOK_END},
    {"<|message|>", TOK_MESSAGE},
    {"<|call|>", TOK_CALL},
    {"<|endofprompt|>", TOK_ENDOFPROMPT},
};

void tok_builder_harmony_specials(tok_builder *b) {
    uint8_t *have = calloc(TOK_VOCAB_SIZE - TOK_NUM_RANKS, 1);
    if (!have) {
        b->oom = 1;
        return;
    }
    for (size_t i = 0; i < b->nspecials; i++) {
        uint32_t id = b->specials[i].id;
        if (id >= TOK_NUM_RANKS && id < TOK_VOCAB_SIZE) have[id - TOK_NUM_RANKS] = 1;
    }
    for (uint32_t id = TOK_NUM_RANKS; id < TOK_VOCAB_SIZE; id++) {
        if (have[id - TOK_NUM_RANKS]) continue;
        char name[32];
        snprintf(name, sizeof name, "<|reserved_%u|>", id);
        for (size_t k = 0; k < sizeof harmony_named / sizeof harmony_named[0]; k++)
            if (harmony_named[k].id == id) snprintf(name, sizeof name, "%s", harmony_named[k].text);
        if (tok_builder_special(b, name, id) != MG_OK) b->oom = 1;
    }
    free(have);
}

static int special_cmp(const void *a, const void *b) {
    const tok_special_entry *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->text, y->text, n);
    return c ? c : (int)x->len - (int)y->len;
}

mg_status tok_builder_finish(tok_builder *b, const char *what, tok_t **out) {
    *out = NULL;
    if (b->oom) return MG_ERRF(MG_ENOMEM, "%s: out of memory", what);
    if (b->nranks == 0) return MG_ERRF(MG_EFORMAT, "%s: no tokens", what);
    uint32_t n_ranks = (uint32_t)b->nranks, vocab = n_ranks;
    for (size_t i = 0; i < b->nspecials; i++)
        if (b->specials[i].id + 1 > vocab) vocab = b->specials[i].id + 1;
    tok_t *t = calloc(1, sizeof *t);
    if (!t) return MG_ERRF(MG_ENOMEM, "%s: out of memory", what);
    t->vocab = vocab, t->n_ranks = n_ranks;
    t->off = calloc(vocab + 1, sizeof *t->off);
    t->kind = calloc(vocab, 1);
    t->pool = malloc(b->nbytes + 1);
    uint32_t *id_entry = malloc(vocab * sizeof *id_entry); /* builder entry of each id */
    uint64_t nslots = 1;
    int bits = 0;
    while (nslots < 2ull * n_ranks) nslots <<= 1, bits++;
    t->slot = calloc(nslots, sizeof *t->slot);
    t->pair_rank = malloc(65536 * sizeof *t->pair_rank);
    t->mask = nslots - 1;
    t->shift = 64 - bits;
    t->specials = calloc(b->nspecials ? b->nspecials : 1, sizeof *t->specials);
    mg_status st = MG_OK;
    if (!t->off || !t->kind || !t->pool || !id_entry || !t->slot || !t->pair_rank || !t->specials) {
        st = MG_ERRF(MG_ENOMEM, "%s: out of memory", what);
        goto fail;
    }
    /* Ranks must be dense 0..n-1 (as in every tiktoken file), each id given once. */
    for (size_t i = 0; i < b->nranks; i++) {
        uint32_t r = b->ranks[i].id;
        if (r >= n_ranks) {
            st = MG_ERRF(MG_EFORMAT, "%s: rank %u out of range (the file has %u tokens)", what, r,
                         n_ranks);
            goto fail;
        }
        if (t->kind[r]) {
            st = MG_ERRF(MG_EFORMAT, "%s: rank %u given twice", what, r);
            goto fail;
        }
        if (b->ranks[i].len == 0) {
            st = MG_ERRF(MG_EFORMAT, "%s: rank %u has no bytes", what, r);
            goto fail;
        }
        t->kind[r] = TOK_KIND_RANK;
        id_entry[r] = (uint32_t)i;
    }
    for (size_t i = 0; i < b->nspecials; i++) {
        uint32_t id = b->specials[i].id;
        if (t->kind[id]) {
            st = MG_ERRF(MG_EFORMAT, "%s: special token id %u collides with another token", what,
                         id);
            goto fail;
        }
        t->kind[id] = TOK_KIND_SPECIAL;
        id_entry[id] = (uint32_t)i;
    }
    /* Pool in id order. */
    uint32_t pos = 0;
    for (uint32_t id = 0; id < vocab; id++) {
        t->off[id] = pos;
        if (!t->kind[id]) continue;
        const bentry *e =
            t->kind[id] == TOK_KIND_RANK ? &b->ranks[id_entry[id]] : &b->specials[id_entry[id]];
        memcpy(t->pool + pos, b->bytes + e->off, e->len);
        pos += e->len;
    }
    t->off[vocab] = pos;
    /* Hash of ordinary tokens; the same bytes under two ranks would make BPE ambiguous. */
    for (uint32_t r = 0; r < n_ranks; r++) {
        const uint8_t *p = t->pool + t->off[r];
        size_t n = t->off[r + 1] - t->off[r];
        if (rank_of(t, p, n) != NO_RANK) {
            st = MG_ERRF(MG_EFORMAT, "%s: ranks %u and %u have the same bytes", what,
                         rank_of(t, p, n), r);
            goto fail;
        }
        uint64_t key = n <= 8 ? load_small(p, n) : hash_bytes(p, n);
        uint64_t i = (n <= 8 ? small_hash(key, n) : key) >> t->shift;
        while (t->slot[i].rank1) i = (i + 1) & t->mask;
        t->slot[i] = (tok_slot){key, r + 1, (uint32_t)n};
    }
    for (uint32_t v = 0; v < 65536; v++) {
        uint8_t pair[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
        t->pair_rank[v] = rank_of(t, pair, 2);
    }
    for (int c = 0; c < 256; c++) {
        uint8_t byte = (uint8_t)c;
        uint32_t r = rank_of(t, &byte, 1);
        if (r == NO_RANK) {
            st = MG_ERRF(MG_EFORMAT, "%s: byte 0x%02x has no token (byte-level BPE needs all 256)",
                         what, c);
            goto fail;
        }
        t->byte_rank[c] = (int32_t)r;
    }
    for (uint32_t id = 0; id < vocab; id++) {
        if (t->kind[id] != TOK_KIND_SPECIAL) continue;
        tok_special_entry *e = &t->specials[t->n_specials++];
        e->text = (const char *)t->pool + t->off[id];
        e->len = t->off[id + 1] - t->off[id];
        e->id = id;
        if (e->len < 4 || memcmp(e->text, "<|", 2) != 0 || memcmp(e->text + e->len - 2, "|>", 2) ||
            memmem(e->text + 2, e->len - 4, "|>", 2)) {
            st = MG_ERRF(MG_EFORMAT, "%s: special token %u is not of the form <|name|>", what, id);
            goto fail;
        }
        if (e->len > t->max_special_len) t->max_special_len = e->len;
    }
    qsort(t->specials, t->n_specials, sizeof *t->specials, special_cmp);
    for (uint32_t i = 1; i < t->n_specials; i++)
        if (special_cmp(&t->specials[i - 1], &t->specials[i]) == 0) {
            st = MG_ERRF(MG_EFORMAT, "%s: special token %.*s given twice", what,
                         (int)t->specials[i].len, t->specials[i].text);
            goto fail;
        }
    free(id_entry);
    *out = t;
    return MG_OK;
fail:
    free(id_entry);
    tok_destroy(t);
    return st;
}

void tok_destroy(tok_t *t) {
    if (!t) return;
    free(t->pool);
    free(t->off);
    free(t->kind);
    free(t->slot);
    free(t->pair_rank);
    free(t->specials);
    free(t);
}

/* ---------------------------------------------------------------- tiktoken file */

static int b64_val(uint8_t c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Standard base64 with padding; returns the decoded length or -1. */
static long b64_decode(const char *s, size_t n, uint8_t *out) {
    if (n % 4) return -1;
    long o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (s[i + k] == '=' && i + 4 == n && k >= 2) {
                v[k] = 0, pad++;
                continue;
            }
            if (pad) return -1;
            v[k] = b64_val((uint8_t)s[i + k]);
            if (v[k] < 0) return -1;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | v[3];
        out[o++] = (uint8_t)(w >> 16);
        if (pad < 2) out[o++] = (uint8_t)(w >> 8);
        if (pad < 1) out[o++] = (uint8_t)w;
    }
    return o;
}

static mg_status read_file(const char *path, char **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return MG_ERRF(MG_EIO, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            fclose(f);
            return MG_ERRF(MG_ENOMEM, "%s: out of memory", path);
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (n < cap - 1) break;
        char *nb = realloc(buf, cap * 2);
        if (!nb) free(buf);
        buf = nb, cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return MG_ERRF(MG_EIO, "%s: read error", path);
    }
    buf[n] = 0;
    *data = buf, *len = n;
    return MG_OK;
}

mg_status tok_load_tiktoken(const char *path, tok_t **out) {
    if (!path || !out) return MG_ERRF(MG_EINVAL, "tok_load_tiktoken: NULL argument");
    *out = NULL;
    char *data = NULL;
    size_t len = 0;
    mg_status st = read_file(path, &data, &len);
    if (st) return st;
    tok_builder *b = tok_builder_create();
    if (!b) {
        free(data);
        return MG_ERRF(MG_ENOMEM, "%s: out of memory", path);
    }
    size_t line = 0;
    for (size_t p = 0; p < len && st == MG_OK;) {
        line++;
        size_t e = p;
        while (e < len && data[e] != '\n') e++;
        size_t le = e;
        if (le > p && data[le - 1] == '\r') le--;
        if (le > p) { /* tiktoken skips nothing, but a trailing empty line is harmless */
            const char *sp = memchr(data + p, ' ', le - p);
            uint8_t tokbuf[512];
            long n = -1;
            if (sp && (size_t)(sp - (data + p)) <= sizeof tokbuf / 3 * 4)
                n = b64_decode(data + p, (size_t)(sp - (data + p)), tokbuf);
            char *endp = NULL;
            unsigned long r = sp ? strtoul(sp + 1, &endp, 10) : 0;
            if (!sp || n <= 0)
                st = MG_ERRF(MG_EFORMAT, "%s:%zu: expected '<base64 token> <rank>'", path, line);
            else if (endp != data + le || sp + 1 == endp || r >= TOK_NUM_RANKS * 4ul)
                st = MG_ERRF(MG_EFORMAT, "%s:%zu: bad rank", path, line);
            else
                st = tok_builder_add(b, tokbuf, (size_t)n, (uint32_t)r);
        }
        p = e + 1;
    }
    free(data);
    if (st == MG_OK) {
        if (b->nranks != TOK_NUM_RANKS) {
            st = MG_ERRF(MG_EFORMAT, "%s: %zu ranks, o200k_base has %d", path, b->nranks,
                         TOK_NUM_RANKS);
        } else {
            tok_builder_harmony_specials(b);
            st = tok_builder_finish(b, path, out);
        }
    }
    tok_builder_destroy(b);
    return st;
}

/* ---------------------------------------------------------------- UTF-8 */

/* One step of UTF-8 decoding at s[i] (i < len): the width of a valid character (> 0); 0 when a
 * valid prefix of a character runs into the end; -k for an invalid maximal subpart of k bytes
 * (replaced by one U+FFFD, as Python and the Unicode standard's best practice do). */
static int utf8_step(const uint8_t *s, size_t i, size_t len) {
    uint8_t c = s[i];
    if (c < 0x80) return 1;
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return -1;
    }
    for (int k = 1; k <= need; k++) {
        if (i + k >= len) return 0;
        uint8_t d = s[i + k];
        if (d < lo || d > hi) return -k;
        lo = 0x80, hi = 0xBF;
    }
    return need + 1;
}

size_t tok_utf8_valid_prefix(const char *str, size_t len) {
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0;
    while (i < len) {
        if (i + 8 <= len) {
            uint64_t v;
            memcpy(&v, s + i, 8);
            if (!(v & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        int w = utf8_step(s, i, len);
        if (w <= 0) return i;
        i += (size_t)w;
    }
    return len;
}

static int buf_append(char **out, size_t *len, size_t *cap, const void *p, size_t n) {
    if (grow((void **)out, cap, *len + n + 1, 1)) return -1;
    memcpy(*out + *len, p, n);
    *len += n;
    (*out)[*len] = 0;
    return 0;
}

bool tok_utf8_sanitize(const char *str, size_t len, char **out, size_t *out_len, size_t *cap) {
    const uint8_t *s = (const uint8_t *)str;
    bool valid = true;
    size_t i = 0, run = 0;
    if (grow((void **)out, cap, *out_len + len + 1, 1)) return false;
    while (i < len) {
        int w = utf8_step(s, i, len);
        if (w > 0) {
            i += (size_t)w;
            continue;
        }
        valid = false;
        buf_append(out, out_len, cap, s + run, i - run);
        buf_append(out, out_len, cap, "\xEF\xBF\xBD", 3);
        if (w == 0) { /* a truncated character at the end: one U+FFFD for all of it */
            i = len;
        } else {
            i += (size_t)-w;
        }
        run = i;
    }
    buf_append(out, out_len, cap, s + run, len - run);
    return valid;
}

/* ---------------------------------------------------------------- encoding */

typedef struct emit {
    uint32_t *ids;
    size_t n, cap;
    bool count_only;
    bool oom;
} emit;

static inline void emit_id(emit *e, uint32_t id) {
    if (!e->count_only) {
        if (e->n == e->cap && grow((void **)&e->ids, &e->cap, e->n + 1, sizeof(uint32_t))) {
            e->oom = true;
            return;
        }
        e->ids[e->n] = id;
    }
    e->n++;
}

/* tiktoken's merge loop: part i covers [st[i], st[i+1]); rk[i] is the rank of part i merged
 * with part i+1; tr[i] the token of part i. */
static void bpe_small(const tok_t *t, const uint8_t *piece, size_t n, emit *e) {
    struct part {
        uint32_t start, rank, tok;
    } pt[BPE_QUAD + 1];
    uint8_t s[BPE_QUAD + 8]; /* a copy with 8 bytes of slack for rank_of_padded's loads */
    memcpy(s, piece, n);
    memset(s + n, 0, 8);
    size_t m = n; /* parts; pt[m].start = n closes the last one */
    for (size_t i = 0; i + 1 < n; i++)
        pt[i] = (struct part){(uint32_t)i, t->pair_rank[s[i] | (uint32_t)s[i + 1] << 8],
                              (uint32_t)t->byte_rank[s[i]]};
    pt[n - 1] = (struct part){(uint32_t)n - 1, NO_RANK, (uint32_t)t->byte_rank[s[n - 1]]};
    pt[n].start = (uint32_t)n;
    for (;;) {
        uint32_t best = NO_RANK;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < m; i++)
            if (pt[i].rank < best) best = pt[i].rank, bi = i;
        if (best == NO_RANK) break;
        pt[bi].tok = best;
        for (size_t i = bi + 1; i < m; i++) pt[i] = pt[i + 1]; /* drop part bi + 1 */
        m--;
        pt[bi].rank = bi + 1 < m
                          ? rank_of_padded(t, s + pt[bi].start, pt[bi + 2].start - pt[bi].start)
                          : NO_RANK;
        if (bi > 0)
            pt[bi - 1].rank =
                rank_of_padded(t, s + pt[bi - 1].start, pt[bi + 1].start - pt[bi - 1].start);
    }
    for (size_t i = 0; i < m; i++) emit_id(e, pt[i].tok);
}

/* The same order of merges with a binary min-heap of (rank << 32 | position): lowest rank
 * first, leftmost on ties, one comparison each. Parts are a linked list. */
static void heap_push(uint64_t *h, size_t *n, uint64_t v) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (v >= h[p]) break;
        h[i] = h[p], i = p;
    }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], v = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h[c + 1] < h[c]) c++;
        if (h[c] >= v) break;
        h[i] = h[c], i = c;
    }
    if (*n) h[i] = v;
    return top;
}

static void bpe_large(const tok_t *t, const uint8_t *piece, size_t n, emit *e) {
    /* Parts are named by their start byte; next[] links them, n is the end sentinel. */
    uint32_t next_s[BPE_STACK + 1], prev_s[BPE_STACK + 1], rk_s[BPE_STACK + 1], tr_s[BPE_STACK + 1];
    uint64_t h_s[2 * BPE_STACK + 1];
    uint8_t s_s[BPE_STACK + 8];
    int big = n > BPE_STACK;
    uint32_t *next = big ? malloc((n + 1) * sizeof *next) : next_s;
    uint32_t *prev = big ? malloc((n + 1) * sizeof *prev) : prev_s;
    uint32_t *rk = big ? malloc((n + 1) * sizeof *rk) : rk_s;
    uint32_t *tr = big ? malloc((n + 1) * sizeof *tr) : tr_s;
    uint64_t *h = big ? malloc((2 * n + 1) * sizeof *h) : h_s;
    uint8_t *s = big ? malloc(n + 8) : s_s; /* a copy with slack for rank_of_padded */
    if (!next || !prev || !rk || !tr || !h || !s) {
        e->oom = true;
        goto done;
    }
    memcpy(s, piece, n);
    memset(s + n, 0, 8);
    size_t hn = 0;
    for (size_t i = 0; i <= n; i++) next[i] = (uint32_t)i + 1, prev[i] = (uint32_t)i - 1;
    for (size_t i = 0; i < n; i++) {
        tr[i] = (uint32_t)t->byte_rank[s[i]];
        rk[i] = i + 1 < n ? t->pair_rank[s[i] | (uint32_t)s[i + 1] << 8] : NO_RANK;
        if (rk[i] != NO_RANK) heap_push(h, &hn, (uint64_t)rk[i] << 32 | i);
    }
    while (hn) {
        uint64_t top = heap_pop(h, &hn);
        uint32_t i = (uint32_t)top, top_rank = (uint32_t)(top >> 32);
        if (tr[i] == NO_RANK || rk[i] != top_rank) continue; /* merged away or stale */
        uint32_t j = next[i];                                /* the part merged into i */
        tr[i] = top_rank;
        tr[j] = NO_RANK;
        next[i] = next[j];
        if (next[j] <= n) prev[next[j]] = i;
        uint32_t k = next[i]; /* i now covers [i, k) */
        rk[i] = k < n ? rank_of_padded(t, s + i, next[k] - i) : NO_RANK;
        if (rk[i] != NO_RANK) heap_push(h, &hn, (uint64_t)rk[i] << 32 | i);
        if (i > 0) {
            uint32_t p = prev[i];
            rk[p] = rank_of_padded(t, s + p, k - p);
            if (rk[p] != NO_RANK) heap_push(h, &hn, (uint64_t)rk[p] << 32 | p);
        }
    }
    for (size_t i = 0; i < n; i = next[i]) emit_id(e, tr[i]);
done:
    if (big) free(next), free(prev), free(rk), free(tr), free(h), free(s);
}

/* One piece; `room` bytes are readable from s (at least n). */
static inline void encode_piece(const tok_t *t, const uint8_t *s, size_t n, size_t room, emit *e) {
    if (n == 1) {
        emit_id(e, (uint32_t)t->byte_rank[s[0]]);
        return;
    }
    uint32_t r = room >= 8 ? rank_of_padded(t, s, n) : rank_of(t, s, n);
    if (r != NO_RANK) {
        emit_id(e, r);
    } else if (n <= BPE_QUAD) {
        bpe_small(t, s, n, e);
    } else {
        bpe_large(t, s, n, e);
    }
}

static void encode_ordinary(const tok_t *t, const uint8_t *s, size_t len, emit *e) {
    size_t p = 0;
    while (p < len) {
        size_t q = scan_piece(s, p, len);
        encode_piece(t, s + p, q - p, len - p, e);
        p = q;
    }
}

/* Length of the special token at s (which starts with "<|"), 0 if none; its id in *id. */
static size_t match_special(const tok_t *t, const char *s, size_t len, uint32_t *id) {
    size_t lim = len < t->max_special_len ? len : t->max_special_len;
    const char *close = lim > 2 ? memmem(s + 2, lim - 2, "|>", 2) : NULL;
    if (!close) return 0;
    tok_special_entry key = {s, (uint32_t)(close + 2 - s), 0};
    tok_special_entry *hit = bsearch(&key, t->specials, t->n_specials, sizeof key, special_cmp);
    if (!hit) return 0;
    *id = hit->id;
    return hit->len;
}

static mg_status encode_checked(const tok_t *t, const char *text, size_t len, tok_special special,
                                emit *e) {
    const uint8_t *s = (const uint8_t *)text;
    if (special == TOK_SPECIAL_TEXT || t->n_specials == 0) {
        encode_ordinary(t, s, len, e);
        return MG_OK;
    }
    size_t seg = 0, pos = 0;
    while (pos + 1 < len) {
        const char *q = memmem(text + pos, len - pos, "<|", 2);
        if (!q) break;
        size_t at = (size_t)(q - text);
        uint32_t id;
        size_t n = match_special(t, q, len - at, &id);
        if (!n) {
            pos = at + 1;
            continue;
        }
        if (special == TOK_SPECIAL_REJECT)
            return MG_ERRF(MG_EINVAL,
                           "text contains the special token %.*s at byte %zu (not allowed here)",
                           (int)n, q, at);
        encode_ordinary(t, s + seg, at - seg, e);
        emit_id(e, id);
        seg = pos = at + n;
    }
    encode_ordinary(t, s + seg, len - seg, e);
    return MG_OK;
}

mg_status tok_encode(const tok_t *t, const char *text, size_t len, tok_special special,
                     uint32_t **ids, size_t *n, size_t *cap) {
    if (!t || (!text && len) || !ids || !n || !cap)
        return MG_ERRF(MG_EINVAL, "tok_encode: NULL argument");
    if ((unsigned)special > TOK_SPECIAL_TEXT)
        return MG_ERRF(MG_EINVAL, "tok_encode: bad special mode %d", (int)special);
    size_t bad = tok_utf8_valid_prefix(text, len);
    if (bad < len)
        return MG_ERRF(MG_EINVAL, "tok_encode: invalid UTF-8 at byte %zu (0x%02x)", bad,
                       (unsigned)(uint8_t)text[bad]);
    emit e = {*ids, *n, *cap, false, false};
    /* Most text encodes to fewer tokens than a quarter of its bytes: reserve once. */
    if (grow((void **)&e.ids, &e.cap, e.n + len / 3 + 16, sizeof(uint32_t)))
        return MG_ERRF(MG_ENOMEM, "tok_encode: out of memory");
    mg_status st = encode_checked(t, text, len, special, &e);
    *ids = e.ids, *cap = e.cap;
    if (st) return st;
    if (e.oom) return MG_ERRF(MG_ENOMEM, "tok_encode: out of memory");
    *n = e.n;
    return MG_OK;
}

size_t tok_count(const tok_t *t, const char *text, size_t len) {
    if (!t || !text) return 0;
    emit e = {NULL, 0, 0, true, false};
    if (tok_utf8_valid_prefix(text, len) == len) {
        encode_ordinary(t, (const uint8_t *)text, len, &e);
        return e.n;
    }
    char *clean = NULL;
    size_t clen = 0, ccap = 0;
    tok_utf8_sanitize(text, len, &clean, &clen, &ccap);
    if (clean) encode_ordinary(t, (const uint8_t *)clean, clen, &e);
    free(clean);
    return e.n;
}

/* ---------------------------------------------------------------- decoding */

const char *tok_piece(const tok_t *t, uint32_t id, size_t *len) {
    if (!t || id >= t->vocab || !t->kind[id]) return NULL;
    if (len) *len = t->off[id + 1] - t->off[id];
    return (const char *)t->pool + t->off[id];
}

uint32_t tok_vocab_size(const tok_t *t) {
    return t ? t->vocab : 0;
}

bool tok_is_special(const tok_t *t, uint32_t id) {
    return t && id < t->vocab && t->kind[id] == TOK_KIND_SPECIAL;
}

mg_status tok_special_id(const tok_t *t, const char *name, uint32_t *id) {
    if (!t || !name || !id) return MG_ERRF(MG_EINVAL, "tok_special_id: NULL argument");
    tok_special_entry key = {name, (uint32_t)strlen(name), 0};
    tok_special_entry *hit = bsearch(&key, t->specials, t->n_specials, sizeof key, special_cmp);
    if (!hit) return MG_ERRF(MG_ENOTFOUND, "no special token %s", name);
    *id = hit->id;
    return MG_OK;
}

mg_status tok_decode(const tok_t *t, const uint32_t *ids, size_t n, char **out, size_t *len,
                     size_t *cap) {
    if (!t || (!ids && n) || !out || !len || !cap)
        return MG_ERRF(MG_EINVAL, "tok_decode: NULL argument");
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] >= t->vocab || !t->kind[ids[i]])
            return MG_ERRF(MG_EINVAL, "tok_decode: id %u (at %zu) is not in the vocabulary", ids[i],
                           i);
        total += t->off[ids[i] + 1] - t->off[ids[i]];
    }
    if (grow((void **)out, cap, *len + total + 1, 1))
        return MG_ERRF(MG_ENOMEM, "tok_decode: out of memory");
    char *o = *out + *len;
    for (size_t i = 0; i < n; i++) {
        uint32_t a = t->off[ids[i]], b = t->off[ids[i] + 1];
        memcpy(o, t->pool + a, b - a);
        o += b - a;
    }
    *len += total;
    (*out)[*len] = 0;
    return MG_OK;
}

/* ---------------------------------------------------------------- streaming decode */

struct tok_stream {
    const tok_t *t;
    uint8_t pend[4]; /* the start of a character not yet complete (at most 3 bytes) */
    int npend;
};

tok_stream *tok_stream_create(const tok_t *t) {
    if (!t) return NULL;
    tok_stream *s = calloc(1, sizeof *s);
    if (s) s->t = t;
    return s;
}

void tok_stream_destroy(tok_stream *s) {
    free(s);
}

/* Emit the complete characters of buf, U+FFFD for impossible sequences, and keep a trailing
 * incomplete one in s->pend. */
static mg_status stream_emit(tok_stream *s, const uint8_t *buf, size_t n, char **out, size_t *len,
                             size_t *cap) {
    if (grow((void **)out, cap, *len + n + 3 * 4 + 1, 1))
        return MG_ERRF(MG_ENOMEM, "tok_stream: out of memory");
    char *o = *out + *len;
    size_t i = 0;
    s->npend = 0;
    while (i < n) {
        int w = utf8_step(buf, i, n);
        if (w > 0) {
            memcpy(o, buf + i, (size_t)w);
            o += w, i += (size_t)w;
        } else if (w == 0) {
            s->npend = (int)(n - i);
            memcpy(s->pend, buf + i, n - i);
            break;
        } else {
            memcpy(o, "\xEF\xBF\xBD", 3);
            o += 3, i += (size_t)-w;
        }
    }
    *len = (size_t)(o - *out);
    (*out)[*len] = 0;
    return MG_OK;
}

mg_status tok_stream_feed(tok_stream *s, uint32_t id, char **out, size_t *len, size_t *cap) {
    if (!s || !out || !len || !cap) return MG_ERRF(MG_EINVAL, "tok_stream_feed: NULL argument");
    size_t n;
    const char *p = tok_piece(s->t, id, &n);
    if (!p) return MG_ERRF(MG_EINVAL, "tok_stream_feed: id %u is not in the vocabulary", id);
    if (s->npend == 0) return stream_emit(s, (const uint8_t *)p, n, out, len, cap);
    uint8_t small[64];
    uint8_t *buf = n + 4 <= sizeof small ? small : malloc(n + 4);
    if (!buf) return MG_ERRF(MG_ENOMEM, "tok_stream: out of memory");
    memcpy(buf, s->pend, (size_t)s->npend);
    memcpy(buf + s->npend, p, n);
    mg_status st = stream_emit(s, buf, n + (size_t)s->npend, out, len, cap);
    if (buf != small) free(buf);
    return st;
}

mg_status tok_stream_finish(tok_stream *s, char **out, size_t *len, size_t *cap) {
    if (!s || !out || !len || !cap) return MG_ERRF(MG_EINVAL, "tok_stream_finish: NULL argument");
    if (grow((void **)out, cap, *len + 4, 1))
        return MG_ERRF(MG_ENOMEM, "tok_stream: out of memory");
    if (s->npend) {
        memcpy(*out + *len, "\xEF\xBF\xBD", 3);
        *len += 3;
        s->npend = 0;
    }
    (*out)[*len] = 0;
    return MG_OK;
}

/* ---------------------------------------------------------------- merges (for tokenizer.json) */

/* The pair of tokens whose merge makes `rank`: BPE over its bytes using only lower ranks must
 * stop at exactly two parts (true of every tiktoken vocabulary; checked). */
mg_status tok_merge_split(const tok_t *t, uint32_t rank, uint32_t *left_len) {
    size_t n = t->off[rank + 1] - t->off[rank];
    const uint8_t *s = t->pool + t->off[rank];
    if (n < 2 || n > BPE_SMALL) return MG_ERRF(MG_EINVAL, "rank %u: %zu bytes", rank, n);
    uint32_t st[BPE_SMALL + 1], rk[BPE_SMALL + 1];
    size_t m = n;
    for (size_t i = 0; i <= n; i++) st[i] = (uint32_t)i;
    for (size_t i = 0; i + 1 < n; i++) rk[i] = rank_of(t, s + i, 2);
    rk[n - 1] = NO_RANK;
    for (;;) {
        uint32_t best = NO_RANK;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < m; i++)
            if (rk[i] < best) best = rk[i], bi = i;
        if (best >= rank) break;
        memmove(st + bi + 1, st + bi + 2, (m - bi - 1) * sizeof *st);
        memmove(rk + bi + 1, rk + bi + 2, (m - bi - 2) * sizeof *rk);
        m--;
        rk[bi] = bi + 1 < m ? rank_of(t, s + st[bi], st[bi + 2] - st[bi]) : NO_RANK;
        if (bi > 0) rk[bi - 1] = rank_of(t, s + st[bi - 1], st[bi + 1] - st[bi - 1]);
    }
    if (m != 2) return MG_ERRF(MG_EFORMAT, "rank %u: lower ranks merge it into %zu parts", rank, m);
    *left_len = st[1];
    return MG_OK;
}
