/* tok_scan.h - the o200k pre-tokenizer as a hand-written scanner (internal to mg_tok).
 *
 * It splits valid UTF-8 text into the same pieces as tiktoken's regex, the seven alternatives
 * tried in order at each position, leftmost-first, with the backtracking they imply:
 *   1
 * [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
 *   2
 * [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?
 *   3  \p{N}{1,3}
 *   4   ?[^\s\p{L}\p{N}]+[\r\n/]*
 *   5  \s*[\r\n]+
 *   6  \s+(?!\S)
 *   7  \s+
 * Call A the class of 1's first bracket ("upper"), B the second ("lower"). The classes come from
 * Unicode 16.0 (tok_unicode.h), the version of the Rust regex engine inside tiktoken, so that
 * recently assigned letters split alike. The input must be
 * valid UTF-8 (tok_encode checks it first), so decoding here does no bounds checks beyond len.
 * No allocation; about one table lookup per character. */
#ifndef MG_TOK_SCAN_H
#define MG_TOK_SCAN_H

#include <stddef.h>
#include <stdint.h>

#include "tok_unicode.h"

enum { UC_NL = 32 }; /* \r or \n, beside the generated UC_* bits */

/* Class bits of ASCII characters (generated table plus UC_NL). */
static const uint8_t scan_ascii[128] = {
#define S_ UC_S
#define D_ UC_N
#define U_ (UC_L | UC_A)
#define W_ (UC_L | UC_B)
    0,  0,  0,  0,  0,  0,  0,  0,  0,  S_, S_ | UC_NL, S_, S_, S_ | UC_NL, 0,  0,  0,  0,  0,
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,          0,  0,  S_,         0,  0,  0,  0,  0,
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  D_,         D_, D_, D_,         D_, D_, D_, D_, D_,
    D_, 0,  0,  0,  0,  0,  0,  0,  U_, U_, U_,         U_, U_, U_,         U_, U_, U_, U_, U_,
    U_, U_, U_, U_, U_, U_, U_, U_, U_, U_, U_,         U_, U_, U_,         U_, 0,  0,  0,  0,
    0,  0,  W_, W_, W_, W_, W_, W_, W_, W_, W_,         W_, W_, W_,         W_, W_, W_, W_, W_,
    W_, W_, W_, W_, W_, W_, W_, W_, W_, 0,  0,          0,  0,  0,
#undef S_
#undef D_
#undef U_
#undef W_
};

/* Decode the character at s[i] (valid UTF-8) into its class bits; *w gets its width. */
static inline unsigned scan_class(const uint8_t *s, size_t i, unsigned *w) {
    uint8_t c = s[i];
    if (c < 0x80) {
        *w = 1;
        return scan_ascii[c];
    }
    uint32_t cp;
    if (c < 0xE0) {
        cp = ((uint32_t)(c & 0x1F) << 6) | (s[i + 1] & 0x3F);
        *w = 2;
    } else if (c < 0xF0) {
        cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F);
        *w = 3;
    } else {
        cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[i + 1] & 0x3F) << 12) |
             ((uint32_t)(s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F);
        *w = 4;
    }
    /* U+0085 is \s but not a line break for the regex's [\r\n]. */
    return uc_class(cp);
}

static inline int scan_ci(uint8_t c, char lower) {
    return (c | 0x20) == (uint8_t)lower;
}

/* The optional (?i:'s|'t|'re|'ve|'m|'ll|'d) at e; returns the new end. Case-insensitive in
 * Unicode mode, so 's' also matches U+017F (long s, UTF-8 C5 BF). */
static inline size_t scan_contraction(const uint8_t *s, size_t e, size_t len) {
    if (e + 1 >= len || s[e] != '\'') return e;
    uint8_t c = s[e + 1];
    if (scan_ci(c, 's') || scan_ci(c, 't') || scan_ci(c, 'm') || scan_ci(c, 'd')) return e + 2;
    if (c == 0xC5 && e + 2 < len && s[e + 2] == 0xBF) return e + 3;
    if (e + 2 < len) {
        uint8_t d = s[e + 2];
        if ((scan_ci(c, 'r') && scan_ci(d, 'e')) || (scan_ci(c, 'v') && scan_ci(d, 'e')) ||
            (scan_ci(c, 'l') && scan_ci(d, 'l')))
            return e + 3;
    }
    return e;
}

/* A*B+ from q: the greedy A run, then B+; when B+ cannot start where A stops, A gives back
 * characters until B+ matches one that is in both A and B. Returns the end, or 0 when there is no
 * match (q > 0 always holds for a match, since q is after the piece start or is the start with
 * a character consumed). *ok tells whether it matched. */
static inline size_t scan_upper_lower(const uint8_t *s, size_t q, size_t len, int *ok) {
    size_t i = q, last_b_end = 0;
    int have_b = 0;
    unsigned w, k = 0;
    while (i < len) {
        k = scan_class(s, i, &w);
        if (!(k & UC_A)) break;
        if (k & UC_B) have_b = 1, last_b_end = i + w;
        i += w;
    }
    if (i < len && (k & UC_B)) { /* B+ from the end of the A run (k is not A: an Ll) */
        i += w;
        while (i < len) {
            k = scan_class(s, i, &w);
            if (!(k & UC_B)) break;
            i += w;
        }
        *ok = 1;
        return i;
    }
    *ok = have_b;
    return last_b_end;
}

/* A+B* from q (alternative 2 after its optional prefix). */
static inline size_t scan_upper_then_lower(const uint8_t *s, size_t q, size_t len) {
    size_t i = q;
    unsigned w;
    while (i < len && (scan_class(s, i, &w) & UC_A)) i += w;
    while (i < len && (scan_class(s, i, &w) & UC_B)) i += w;
    return i;
}

/* The commonest piece, an optional space and an ASCII word [A-Z]*[a-z]+ followed by an ASCII
 * character that is neither a letter nor an apostrophe (or by the end): alternative 1 matches
 * exactly that, so it is taken without class lookups. Returns 0 when the text is not of that
 * shape, and scan_piece goes the general way. */
static inline size_t scan_ascii_word(const uint8_t *s, size_t p, size_t len) {
    size_t i = p + (s[p] == ' ');
    size_t q = i;
    while (q < len && (uint8_t)(s[q] - 'A') < 26) q++;
    size_t r = q;
    while (r < len && (uint8_t)(s[r] - 'a') < 26) r++;
    if (r == q) return 0;
    if (r == len) return r;
    uint8_t c = s[r];
    return c < 0x80 && c != '\'' && (uint8_t)((c | 0x20) - 'a') >= 26 ? r : 0;
}

/* The end of the piece that starts at p (p < len). */
static inline size_t scan_piece(const uint8_t *s, size_t p, size_t len) {
    size_t fast = scan_ascii_word(s, p, len);
    if (fast) return fast;
    unsigned w0, w;
    unsigned k0 = scan_class(s, p, &w0);
    int prefix_ok = !(k0 & (UC_NL | UC_L | UC_N)); /* [^\r\n\p{L}\p{N}] */
    int ok;
    size_t e;

    /* 1: with the prefix character, then without. */
    if (prefix_ok && p + w0 < len) {
        e = scan_upper_lower(s, p + w0, len, &ok);
        if (ok) return scan_contraction(s, e, len);
    }
    if (k0 & (UC_A | UC_B)) {
        e = scan_upper_lower(s, p, len, &ok);
        if (ok) return scan_contraction(s, e, len);
    }
    /* 2 */
    if (prefix_ok && p + w0 < len && (scan_class(s, p + w0, &w) & UC_A))
        return scan_contraction(s, scan_upper_then_lower(s, p + w0, len), len);
    if (k0 & UC_A) return scan_contraction(s, scan_upper_then_lower(s, p, len), len);
    /* 3 */
    if (k0 & UC_N) {
        e = p + w0;
        for (int n = 1; n < 3 && e < len && (scan_class(s, e, &w) & UC_N); n++) e += w;
        return e;
    }
    /* 4: " ?" then [^\s\p{L}\p{N}]+ then [\r\n/]* */
    {
        size_t q = p;
        if (s[p] == ' ' && p + 1 < len && !(scan_class(s, p + 1, &w) & (UC_S | UC_L | UC_N)))
            q = p + 1;
        if (q > p || !(k0 & (UC_S | UC_L | UC_N))) {
            e = q;
            while (e < len && !(scan_class(s, e, &w) & (UC_S | UC_L | UC_N))) e += w;
            while (e < len && (s[e] == '\r' || s[e] == '\n' || s[e] == '/')) e++;
            return e;
        }
    }
    /* Here k0 is \s. 5: \s*[\r\n]+ ends after the last \r or \n of the whitespace run. */
    size_t end = p, last_nl_end = 0, last_start = p;
    while (end < len) {
        unsigned k = scan_class(s, end, &w);
        if (!(k & UC_S)) break;
        if (k & UC_NL) last_nl_end = end + w;
        last_start = end;
        end += w;
    }
    if (last_nl_end) return last_nl_end;
    /* 6: \s+(?!\S): the whole run at the end of text, else all but its last character. */
    if (end == len) return end;
    if (last_start > p) return last_start;
    /* 7 */
    return end;
}

#endif
