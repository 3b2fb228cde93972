/* test_tok.c - mg_tok's API: loading errors, specials per mode, decoding, invalid UTF-8,
 * streaming decode, tokenizer.json written and read back, and a property test that
 * decode(encode(x)) == x for random valid UTF-8 (and that random bytes never crash). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "tok.h"

static const char *ranks_path(void) {
    const char *p = getenv("MAGNETO_TOK_RANKS");
    return p && *p ? p : MG_TOK_RANKS;
}

static uint64_t rng_state = 0x1234567887654321ull;
static uint64_t rnd(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A random code point, weighted toward what stresses the scanner. */
static uint32_t rand_cp(void) {
    static const uint32_t picks[] = {' ',    '\n',    '\r',    '\t',   '\'',   's',    'S',
                                     'a',    'Z',     '0',     '9',    '.',    '/',    '<',
                                     '|',    '>',     0x85,    0xA0,   0x17F,  0x301,  0x3000,
                                     0x2028, 0x1F600, 0x1F3FB, 0x200D, 0xFE0F, 0x4E2D, 0x0627,
                                     0x064B, 0x0661,  0x01C5,  0x02B0, 0x00B2, 0x2163};
    switch (rnd() % 4) {
    case 0:
        return picks[rnd() % (sizeof picks / sizeof picks[0])];
    case 1:
        return 0x20 + rnd() % 0x5F;
    case 2:
        return (uint32_t)(rnd() % 0x3000);
    default: {
        uint32_t cp = (uint32_t)(rnd() % 0x110000);
        return cp >= 0xD800 && cp < 0xE000 ? 0xFFFD : cp; /* no surrogates in UTF-8 */
    }
    }
}

static void load_errors(void) {
    tok_t *t = (tok_t *)1;
    CHECK_EQ_INT(tok_load_tiktoken("/nonexistent/o200k.tiktoken", &t), MG_EIO);
    CHECK(t == NULL);
    CHECK(strstr(mg_err_msg(), "/nonexistent/o200k.tiktoken") != NULL);

    char path[] = "/tmp/test_tok_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("IQ== 0\nIg== 1\nnot-base64! 2\n", f);
    fclose(f);
    CHECK_EQ_INT(tok_load_tiktoken(path, &t), MG_EFORMAT);
    CHECK_MSG(strstr(mg_err_msg(), ":3:") != NULL, "error names the line: %s", mg_err_msg());
    f = fopen(path, "w");
    fputs("IQ== 0\nIg== x\n", f);
    fclose(f);
    CHECK_EQ_INT(tok_load_tiktoken(path, &t), MG_EFORMAT);
    CHECK(strstr(mg_err_msg(), ":2:") != NULL);
    f = fopen(path, "w");
    fputs("IQ== 0\nIg== 1\n", f); /* valid lines, but not o200k_base's 199,998 */
    fclose(f);
    CHECK_EQ_INT(tok_load_tiktoken(path, &t), MG_EFORMAT);
    unlink(path);

    CHECK_EQ_INT(tok_load_dir("/nonexistent/ckpt", &t), MG_ENOTFOUND);
    CHECK(strstr(mg_err_msg(), "/nonexistent/ckpt/tokenizer.json") != NULL);
}

static void basics(const tok_t *t) {
    CHECK_EQ_INT(tok_vocab_size(t), TOK_VOCAB_SIZE);
    uint32_t *ids = NULL;
    size_t n = 0, cap = 0;
    const char *hello = "Hello world";
    CHECK_OK(tok_encode(t, hello, strlen(hello), TOK_SPECIAL_REJECT, &ids, &n, &cap));
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(ids[0], 13225); /* "Hello" */
    CHECK_EQ_INT(ids[1], 2375);  /* " world" */
    CHECK_EQ_INT(tok_count(t, hello, strlen(hello)), 2);
    /* Appends after *n. */
    CHECK_OK(tok_encode(t, "!", 1, TOK_SPECIAL_REJECT, &ids, &n, &cap));
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(tok_rank(t, " world", 6), 2375);
    CHECK_EQ_INT(tok_rank(t, "not a single token at all", 25), -1);

    /* Specials: rejected, allowed, or plain text. */
    const char *s = "a<|end|>b";
    n = 0;
    CHECK_EQ_INT(tok_encode(t, s, strlen(s), TOK_SPECIAL_REJECT, &ids, &n, &cap), MG_EINVAL);
    CHECK(strstr(mg_err_msg(), "<|end|>") != NULL);
    n = 0;
    CHECK_OK(tok_encode(t, s, strlen(s), TOK_SPECIAL_ALLOW, &ids, &n, &cap));
    CHECK(n == 3 && ids[1] == TOK_END);
    n = 0;
    CHECK_OK(tok_encode(t, s, strlen(s), TOK_SPECIAL_TEXT, &ids, &n, &cap));
    CHECK(n > 3);
    for (size_t i = 0; i < n; i++) CHECK(!tok_is_special(t, ids[i]));
    n = 0; /* near-misses are text in every mode */
    CHECK_OK(tok_encode(t, "<|nope|> <|", 11, TOK_SPECIAL_REJECT, &ids, &n, &cap));
    CHECK_EQ_INT(tok_encode(t, "x", 1, (tok_special)7, &ids, &n, &cap), MG_EINVAL);

    uint32_t id = 0;
    CHECK_OK(tok_special_id(t, "<|call|>", &id));
    CHECK_EQ_INT(id, TOK_CALL);
    CHECK_OK(tok_special_id(t, "<|endofprompt|>", &id));
    CHECK_EQ_INT(id, TOK_ENDOFPROMPT);
    CHECK_OK(tok_special_id(t, "<|reserved_201087|>", &id));
    CHECK_EQ_INT(id, 201087);
    CHECK_EQ_INT(tok_special_id(t, "<|reserved_201088|>", &id), MG_ENOTFOUND);
    CHECK(tok_is_special(t, TOK_START) && !tok_is_special(t, 13225));
    size_t len = 0;
    const char *piece = tok_piece(t, TOK_CHANNEL, &len);
    CHECK(piece && len == 11 && memcmp(piece, "<|channel|>", 11) == 0);
    CHECK(tok_piece(t, TOK_VOCAB_SIZE, &len) == NULL);

    /* Decoding: specials give their text; unknown ids are an error. */
    char *out = NULL;
    size_t olen = 0, ocap = 0;
    uint32_t seq[] = {13225, TOK_END, 2375};
    CHECK_OK(tok_decode(t, seq, 3, &out, &olen, &ocap));
    CHECK_EQ_STR(out, "Hello<|end|> world");
    uint32_t badseq[] = {13225, 999999};
    CHECK_EQ_INT(tok_decode(t, badseq, 2, &out, &olen, &ocap), MG_EINVAL);
    free(out);
    free(ids);
}

static void invalid_utf8(const tok_t *t) {
    uint32_t *ids = NULL;
    size_t n = 0, cap = 0;
    const char bad[] = "ok \xff tail";
    CHECK_EQ_INT(tok_encode(t, bad, sizeof bad - 1, TOK_SPECIAL_TEXT, &ids, &n, &cap), MG_EINVAL);
    CHECK_MSG(strstr(mg_err_msg(), "byte 3") != NULL, "%s", mg_err_msg());
    CHECK_EQ_INT(n, 0);
    /* Truncated, overlong, surrogate, too large: all rejected, none read past len. */
    const char *cases[] = {"\xe4\xb8", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        n = 0;
        CHECK_EQ_INT(tok_encode(t, cases[i], strlen(cases[i]), TOK_SPECIAL_TEXT, &ids, &n, &cap),
                     MG_EINVAL);
    }
    /* The documented replacement: one U+FFFD per maximal invalid subpart, as Python does. */
    char *clean = NULL;
    size_t cl = 0, cc = 0;
    CHECK(!tok_utf8_sanitize("a\xe0\x80z\xf0\x9f\x98", 7, &clean, &cl, &cc));
    CHECK_EQ_STR(clean, "a\xef\xbf\xbd\xef\xbf\xbdz\xef\xbf\xbd");
    cl = 0;
    CHECK(tok_utf8_sanitize("plain \xe4\xb8\xad", 9, &clean, &cl, &cc));
    CHECK_EQ_STR(clean, "plain \xe4\xb8\xad");
    CHECK_EQ_INT(tok_count(t, bad, sizeof bad - 1), tok_count(t, "ok \xef\xbf\xbd tail", 11));
    free(clean);
    free(ids);
}

static void roundtrip_property(const tok_t *t) {
    char *buf = malloc(1 << 16);
    uint32_t *ids = NULL;
    char *out = NULL;
    size_t cap = 0, ocap = 0;
    int fails = 0;
    for (int iter = 0; iter < 3000 && fails < 3; iter++) {
        size_t len = 0, want = rnd() % 600;
        if (iter % 100 == 0) want = 4000 + rnd() % 4000; /* long pieces: the heap merge */
        while (len < want) {
            uint32_t cp = rand_cp();
            int rep = rnd() % 8 == 0 ? (int)(rnd() % 300) : 1; /* runs of one character */
            for (int k = 0; k < rep && len + 4 < (1 << 16); k++) len += put_utf8(buf + len, cp);
        }
        size_t n = 0, olen = 0;
        mg_status st = tok_encode(t, buf, len, TOK_SPECIAL_TEXT, &ids, &n, &cap);
        if (st == MG_OK) st = tok_decode(t, ids, n, &out, &olen, &ocap);
        int ok =
            st == MG_OK && olen == len && memcmp(out, buf, len) == 0 && tok_count(t, buf, len) == n;
        for (size_t i = 0; ok && i < n; i++) ok = !tok_is_special(t, ids[i]);
        if (ok && iter % 10 == 0) { /* streaming gives the same text, in whole characters */
            tok_stream *s = tok_stream_create(t);
            size_t sl = 0;
            for (size_t i = 0; ok && i < n; i++) {
                size_t before = sl;
                ok = tok_stream_feed(s, ids[i], &out, &sl, &ocap) == MG_OK &&
                     tok_utf8_valid_prefix(out + before, sl - before) == sl - before;
            }
            ok = ok && tok_stream_finish(s, &out, &sl, &ocap) == MG_OK && sl == len &&
                 memcmp(out, buf, len) == 0;
            tok_stream_destroy(s);
        }
        if (!ok) fails++;
        CHECK_MSG(ok, "iteration %d: decode(encode(x)) != x (%zu bytes): %s", iter, len,
                  st ? mg_err_msg() : "");
    }
    /* Random bytes: either an error naming a byte or a lossless round trip; never a crash. */
    for (int iter = 0; iter < 3000; iter++) {
        size_t len = rnd() % 64;
        for (size_t i = 0; i < len; i++)
            buf[i] = (char)(rnd() % 3 ? 0x80 + rnd() % 0x80 : rnd() % 0x80);
        size_t n = 0, olen = 0;
        mg_status st = tok_encode(t, buf, len, TOK_SPECIAL_ALLOW, &ids, &n, &cap);
        if (st == MG_OK) {
            CHECK(tok_utf8_valid_prefix(buf, len) == len);
            CHECK_OK(tok_decode(t, ids, n, &out, &olen, &ocap));
            CHECK(olen == len && memcmp(out, buf, len) == 0);
        } else {
            CHECK_EQ_INT(st, MG_EINVAL);
            CHECK(tok_utf8_valid_prefix(buf, len) < len);
        }
        (void)tok_count(t, buf, len);
    }
    free(buf);
    free(ids);
    free(out);
}

static void streaming(const tok_t *t) {
    const char *text = "Grüße 東京 😀👍🏽 🇯🇵 e\xcc\x81 done";
    uint32_t *ids = NULL;
    size_t n = 0, cap = 0;
    CHECK_OK(tok_encode(t, text, strlen(text), TOK_SPECIAL_TEXT, &ids, &n, &cap));
    tok_stream *s = tok_stream_create(t);
    char *all = NULL, *chunk = NULL;
    size_t alen = 0, ccap = 0, held = 0;
    for (size_t i = 0; i < n; i++) {
        size_t clen = 0;
        CHECK_OK(tok_stream_feed(s, ids[i], &chunk, &clen, &ccap));
        CHECK_EQ_INT(tok_utf8_valid_prefix(chunk, clen), clen); /* never a split character */
        size_t plen;
        const char *piece = tok_piece(t, ids[i], &plen);
        if (tok_utf8_valid_prefix(piece, plen) != plen) held++;
        char *na = realloc(all, alen + clen + 1);
        all = na;
        memcpy(all + alen, chunk, clen);
        alen += clen;
        all[alen] = 0;
    }
    size_t flen = 0;
    CHECK_OK(tok_stream_finish(s, &chunk, &flen, &ccap));
    CHECK_EQ_INT(flen, 0);
    CHECK(held > 0); /* the emoji really were split over tokens */
    CHECK(all && alen == strlen(text) && memcmp(all, text, alen) == 0);
    tok_stream_destroy(s);

    /* A character cut off at the end becomes U+FFFD at finish; an impossible one at once. */
    s = tok_stream_create(t);
    int32_t b_e4 = (int32_t)tok_rank(t, "\xe4", 1), b_b8 = (int32_t)tok_rank(t, "\xb8", 1);
    size_t clen = 0;
    CHECK_OK(tok_stream_feed(s, (uint32_t)b_e4, &chunk, &clen, &ccap));
    CHECK_OK(tok_stream_feed(s, (uint32_t)b_b8, &chunk, &clen, &ccap));
    CHECK_EQ_INT(clen, 0);
    CHECK_OK(tok_stream_finish(s, &chunk, &clen, &ccap));
    CHECK_EQ_STR(chunk, "\xef\xbf\xbd");
    clen = 0;
    CHECK_OK(tok_stream_feed(s, (uint32_t)b_e4, &chunk, &clen, &ccap));
    CHECK_OK(tok_stream_feed(s, (uint32_t)tok_rank(t, "A", 1), &chunk, &clen, &ccap));
    CHECK_EQ_STR(chunk, "\xef\xbf\xbd"
                        "A");
    CHECK_EQ_INT(tok_stream_feed(s, TOK_VOCAB_SIZE, &chunk, &clen, &ccap), MG_EINVAL);
    tok_stream_destroy(s);
    tok_stream_destroy(NULL);
    free(chunk);
    free(all);
    free(ids);
}

/* A hand-written tokenizer.json in the shapes a Hugging Face checkpoint may use: merges as
 * "a b" strings, a special listed in both model.vocab and added_tokens, config tokens as strings
 * or objects, a model_max_length beyond 64 bits. 256 bytes, " t", "he", " the", "<|start|>". */
static void write_file(const char *dir, const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) fputs(text, f), fclose(f);
}

static void tokenizer_json_shapes(void) {
    char dir[] = "/tmp/test_tok_hf_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    /* GPT-2's byte-level alphabet: printable bytes stand for themselves, the rest U+0100 + k. */
    char *vocab = malloc(1 << 16);
    size_t vl = 0;
    int k = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        unsigned cp = printable ? (unsigned)b : 256u + (unsigned)k++;
        char key[8];
        if (cp == '"' || cp == '\\')
            snprintf(key, sizeof key, "\\%c", cp);
        else if (cp < 0x80)
            snprintf(key, sizeof key, "%c", cp);
        else
            snprintf(key, sizeof key, "%c%c", 0xC0 | (cp >> 6), 0x80 | (cp & 0x3F));
        vl += (size_t)sprintf(vocab + vl, "%s\"%s\": %d", b ? ", " : "", key, b);
    }
    /* " " is byte 32, which maps to U+0120 (Ġ, UTF-8 C4 A0). */
    vl += (size_t)sprintf(vocab + vl, ", \"\xc4\xa0t\": 256, \"he\": 257, \"\xc4\xa0the\": 258, "
                                      "\"<|start|>\": 259");
    char *json = malloc(1 << 17);
    snprintf(json, 1 << 17,
             "{\"version\": \"1.0\", \"added_tokens\": [{\"id\": 259, \"content\": "
             "\"<|start|>\", \"special\": true}],\n"
             " \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\s+\"}},\n"
             " \"model\": {\"type\": \"BPE\", \"vocab\": {%s},\n"
             "  \"merges\": [\"\xc4\xa0 t\", \"h e\", \"\xc4\xa0t he\"]}}\n",
             vocab);
    write_file(dir, "tokenizer.json", json);
    write_file(dir, "tokenizer_config.json",
               "{\"bos_token\": \"<|start|>\", \"eos_token\": {\"content\": \"<|start|>\"}, "
               "\"model_max_length\": 1000000000000000019884624838656}");
    tok_t *t = NULL;
    mg_status st = tok_load_dir(dir, &t);
    CHECK_OK(st);
    if (t) {
        CHECK_EQ_INT(tok_vocab_size(t), 260);
        uint32_t *ids = NULL, id = 0;
        size_t n = 0, cap = 0;
        CHECK_OK(tok_encode(t, " the<|start|> he", 16, TOK_SPECIAL_ALLOW, &ids, &n, &cap));
        CHECK(n == 4 && ids[0] == 258 && ids[1] == 259 && ids[2] == 32 && ids[3] == 257);
        CHECK_OK(tok_special_id(t, "<|start|>", &id));
        CHECK_EQ_INT(id, 259);
        free(ids);
        tok_destroy(t);
    }
    /* A config naming a token that is not special, and a model that is not BPE. */
    write_file(dir, "special_tokens_map.json", "{\"eos_token\": \"<|nope|>\"}");
    t = NULL;
    CHECK_EQ_INT(tok_load_dir(dir, &t), MG_EFORMAT);
    CHECK(t == NULL && strstr(mg_err_msg(), "special_tokens_map.json") != NULL);
    write_file(dir, "tokenizer.json", "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}");
    CHECK_EQ_INT(tok_load_dir(dir, &t), MG_EUNSUPPORTED);
    static const char *files[] = {"tokenizer.json", "tokenizer_config.json",
                                  "special_tokens_map.json"};
    for (int i = 0; i < 3; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    free(vocab);
    free(json);
}

static void tokenizer_json(const tok_t *t) {
    char dir[] = "/tmp/test_tok_dir_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    CHECK_OK(tok_write_dir(t, dir));
    tok_t *back = NULL;
    mg_status st = tok_load_dir(dir, &back);
    if (st == MG_EUNSUPPORTED) {
        CHECK_MSG(0, "tok_load_dir unavailable in this build: %s", mg_err_msg());
    } else {
        CHECK_OK(st);
    }
    if (back) {
        CHECK_EQ_INT(tok_vocab_size(back), tok_vocab_size(t));
        int same = 1;
        for (uint32_t id = 0; id < tok_vocab_size(t) && same; id++) {
            size_t a = 0, b = 0;
            const char *pa = tok_piece(t, id, &a), *pb = tok_piece(back, id, &b);
            same = a == b && !pa == !pb && (!pa || memcmp(pa, pb, a) == 0) &&
                   tok_is_special(t, id) == tok_is_special(back, id);
            CHECK_MSG(same, "token %u differs after tokenizer.json", id);
        }
        const char *s = "The tokenizer.json round trip: 東京, <|start|> and 1234567.";
        uint32_t *x = NULL, *y = NULL;
        size_t xn = 0, yn = 0, xc = 0, yc = 0;
        CHECK_OK(tok_encode(t, s, strlen(s), TOK_SPECIAL_ALLOW, &x, &xn, &xc));
        CHECK_OK(tok_encode(back, s, strlen(s), TOK_SPECIAL_ALLOW, &y, &yn, &yc));
        CHECK(xn == yn && memcmp(x, y, xn * sizeof *x) == 0);
        free(x);
        free(y);
        tok_destroy(back);
    }
    /* A broken tokenizer.json names the file and line. */
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\n  \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": }\n}\n", f);
    fclose(f);
    back = NULL;
    st = tok_load_dir(dir, &back);
    CHECK(st == MG_EFORMAT || st == MG_EUNSUPPORTED);
    CHECK(back == NULL);
    CHECK(strstr(mg_err_msg(), "tokenizer.json") != NULL);
    static const char *files[] = {"tokenizer.json", "tokenizer_config.json",
                                  "special_tokens_map.json"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* A tok_t is shared by threads: concurrent encodes give the single-threaded result. */
typedef struct job {
    const tok_t *t;
    const char *text;
    size_t len, n;
    uint64_t sum;
} job;

static void *encode_job(void *arg) {
    job *j = arg;
    uint32_t *ids = NULL;
    size_t cap = 0;
    for (int r = 0; r < 20; r++) {
        size_t n = 0;
        if (tok_encode(j->t, j->text, j->len, TOK_SPECIAL_TEXT, &ids, &n, &cap)) break;
        uint64_t sum = 0;
        for (size_t i = 0; i < n; i++) sum = sum * 31 + ids[i];
        if (r == 0) j->n = n, j->sum = sum;
        if (n != j->n || sum != j->sum) j->n = 0;
    }
    free(ids);
    return NULL;
}

static void threads(const tok_t *t) {
    const char *text = "Threads share one tokenizer: 東京, Zürich, 12345, 'LL   \n\n 😀 done.";
    job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (job){t, text, strlen(text), 0, 0};
        CHECK_EQ_INT(pthread_create(&th[i], NULL, encode_job, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++)
        CHECK(jobs[i].n > 0 && jobs[i].n == jobs[0].n && jobs[i].sum == jobs[0].sum);
}

int main(void) {
    load_errors();
    tok_t *t = NULL;
    CHECK_MSG(tok_load_tiktoken(ranks_path(), &t) == MG_OK, "load %s: %s (run tests/setup-node.sh)",
              ranks_path(), mg_err_msg());
    if (t) {
        basics(t);
        invalid_utf8(t);
        roundtrip_property(t);
        streaming(t);
        tokenizer_json(t);
        threads(t);
        tokenizer_json_shapes();
    }
    tok_destroy(t);
    tok_destroy(NULL);
    return check_done();
}
