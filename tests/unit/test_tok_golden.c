/* test_tok_golden.c - mg_tok against tiktoken's o200k_harmony ids.
 *
 * The corpus (tools/tok/mkcorpus.py, rebuilt at build time, about 1.3 MB: license prose, code,
 * CJK, Arabic, Devanagari, Thai, emoji sequences, whitespace and newline runs, digit runs, mixed
 * case contractions, odd punctuation, pieces longer than 256 bytes) is a list of NUL-separated
 * records. tests/golden/tok/o200k_corpus.golden holds, per record, its length and FNV-1a hash and
 * the count and FNV-1a hash of tiktoken's encode_ordinary ids; o200k_corpus_ids.txt has the full
 * ids of every 64th record; specials.golden strings with special-token text (allowed_special).
 * The first differing record is printed with the position of the first differing id when known.
 * Every record must also decode back to itself. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tok.h"

static const char *ranks_path(void) {
    const char *p = getenv("MAGNETO_TOK_RANKS");
    return p && *p ? p : MG_TOK_RANKS;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[n] = 0, *len = (size_t)n;
    return b;
}

static uint64_t fnv64(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001B3ull;
    return h;
}

static uint64_t fnv64_ids(const uint32_t *ids, size_t n) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 4; k++) h = (h ^ ((ids[i] >> (8 * k)) & 0xFF)) * 0x100000001B3ull;
    return h;
}

/* The full golden ids of record idx from o200k_corpus_ids.txt, or NULL. */
static uint32_t *golden_ids(const char *ids_file, size_t idx, size_t *n) {
    const char *p = ids_file;
    while (p && *p) {
        char *end;
        unsigned long rec = strtoul(p, &end, 10);
        const char *eol = strchr(p, '\n');
        if (!eol) eol = p + strlen(p);
        if (rec == idx) {
            size_t cap = 64, k = 0;
            uint32_t *v = malloc(cap * sizeof *v);
            const char *q = end;
            while (q < eol) {
                unsigned long x = strtoul(q, &end, 10);
                if (end == q) break;
                if (k == cap) v = realloc(v, (cap *= 2) * sizeof *v);
                v[k++] = (uint32_t)x;
                q = end;
            }
            *n = k;
            return v;
        }
        p = *eol ? eol + 1 : eol;
    }
    return NULL;
}

static void show_record(const char *s, size_t n) {
    fprintf(stderr, "    text: \"");
    for (size_t i = 0; i < n && i < 80; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\')
            fputc(c, stderr);
        else
            fprintf(stderr, "\\x%02x", c);
    }
    fprintf(stderr, "%s\"\n", n > 80 ? "..." : "");
}

static void corpus_test(const tok_t *t) {
    size_t clen = 0, glen = 0, ilen = 0;
    char *corpus = slurp(MG_TOK_CORPUS, &clen);
    char *golden = slurp(MG_TOK_GOLDEN_DIR "/o200k_corpus.golden", &glen);
    char *idsf = slurp(MG_TOK_GOLDEN_DIR "/o200k_corpus_ids.txt", &ilen);
    CHECK_MSG(corpus != NULL, "corpus %s missing (built by tools/tok/mkcorpus.py)", MG_TOK_CORPUS);
    CHECK_MSG(golden != NULL, "golden file missing in %s", MG_TOK_GOLDEN_DIR);
    if (!corpus || !golden) goto out;

    /* Header: "corpus <bytes> <fnv>", "records <n>". */
    const char *p = strstr(golden, "\ncorpus ");
    unsigned long long want_bytes = 0, want_fnv = 0, nrec = 0;
    CHECK(p && sscanf(p, "\ncorpus %llu %llx", &want_bytes, &want_fnv) == 2);
    p = strstr(golden, "\nrecords ");
    CHECK(p && sscanf(p, "\nrecords %llu", &nrec) == 1);
    CHECK_MSG(clen == want_bytes && fnv64(corpus, clen) == want_fnv,
              "the corpus differs from the one the golden ids were made for (%zu bytes, golden "
              "%llu): were mkcorpus.py or its inputs changed? Records are compared one by one",
              clen, want_bytes);
    CHECK_MSG(clen >= 1000000, "corpus is only %zu bytes", clen);
    p = strchr(p + 1, '\n') + 1;

    uint32_t *ids = NULL;
    char *dec = NULL;
    size_t cap = 0, dcap = 0, rec = 0, pos = 0, bad = 0, checked_bytes = 0, total_ids = 0;
    while (pos <= clen && rec < nrec) {
        const char *z = memchr(corpus + pos, 0, clen - pos);
        size_t end = z ? (size_t)(z - corpus) : clen, len = end - pos;
        unsigned long long gi, gbytes, gtext, gcount, gids;
        if (sscanf(p, "%llu %llu %llx %llu %llx", &gi, &gbytes, &gtext, &gcount, &gids) != 5 ||
            gi != rec) {
            CHECK_MSG(0, "golden line for record %zu unreadable", rec);
            break;
        }
        p = strchr(p, '\n');
        p = p ? p + 1 : "";
        const char *s = corpus + pos;
        if (len != gbytes || fnv64(s, len) != gtext) {
            CHECK_MSG(0, "record %zu: its text differs from the golden corpus (inputs changed)",
                      rec);
            bad++;
        } else {
            size_t n = 0;
            mg_status st = tok_encode(t, s, len, TOK_SPECIAL_TEXT, &ids, &n, &cap);
            CHECK_OK(st);
            int same = st == MG_OK && n == gcount && fnv64_ids(ids, n) == gids;
            CHECK_MSG(same, "record %zu: ids differ from tiktoken (%zu ids, tiktoken %llu)", rec, n,
                      gcount);
            if (!same && bad++ < 5) {
                show_record(s, len);
                size_t gn = 0;
                uint32_t *g = idsf ? golden_ids(idsf, rec, &gn) : NULL;
                if (g) {
                    size_t k = 0;
                    while (k < n && k < gn && ids[k] == g[k]) k++;
                    fprintf(stderr, "    first differing id at %zu: ours %u, tiktoken %u\n", k,
                            k < n ? ids[k] : 0, k < gn ? g[k] : 0);
                }
                free(g);
            }
            if (same) checked_bytes += len, total_ids += n;
            size_t dl = 0;
            CHECK_OK(tok_decode(t, ids, n, &dec, &dl, &dcap));
            CHECK_MSG(dl == len && memcmp(dec, s, len) == 0, "record %zu does not decode back",
                      rec);
        }
        rec++;
        pos = end + 1;
    }
    CHECK_EQ_INT(rec, nrec);
    printf("golden: %zu records, %zu bytes, %zu ids identical to tiktoken\n", rec, checked_bytes,
           total_ids);
    CHECK(checked_bytes >= 1000000);
    free(ids);
    free(dec);
out:
    free(corpus);
    free(golden);
    free(idsf);
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static void specials_test(const tok_t *t) {
    size_t len = 0;
    char *g = slurp(MG_TOK_GOLDEN_DIR "/specials.golden", &len);
    CHECK(g != NULL);
    if (!g) return;
    int cases = 0;
    uint32_t *ids = NULL;
    size_t cap = 0;
    for (char *line = g; line && *line;) {
        char *eol = strchr(line, '\n');
        if (eol) *eol = 0;
        if (*line != '#') {
            char text[512];
            size_t tl = 0;
            char *q = line;
            while (hexval(q[0]) >= 0 && hexval(q[1]) >= 0 && tl < sizeof text)
                text[tl++] = (char)(hexval(q[0]) * 16 + hexval(q[1])), q += 2;
            uint32_t want[128];
            size_t wn = 0;
            char *end;
            for (;;) {
                unsigned long x = strtoul(q, &end, 10);
                if (end == q || wn == 128) break;
                want[wn++] = (uint32_t)x, q = end;
            }
            size_t n = 0;
            CHECK_OK(tok_encode(t, text, tl, TOK_SPECIAL_ALLOW, &ids, &n, &cap));
            CHECK_MSG(n == wn && memcmp(ids, want, n * sizeof *ids) == 0,
                      "special case %d (%.*s) differs from tiktoken", cases, (int)tl, text);
            cases++;
        }
        line = eol ? eol + 1 : NULL;
    }
    CHECK(cases >= 8);
    free(ids);
    free(g);
}

int main(void) {
    tok_t *t = NULL;
    CHECK_MSG(tok_load_tiktoken(ranks_path(), &t) == MG_OK, "load %s: %s (run tests/setup-node.sh)",
              ranks_path(), mg_err_msg());
    if (!t) return check_done();
    corpus_test(t);
    specials_test(t);
    tok_destroy(t);
    return check_done();
}
