/* test_bench_sse.c - the client's HTTP/1.1 response decoder, SSE assembly and chunk scanner:
 * chunked bodies cut at every byte, Content-Length and read-until-close bodies, CRLF and LF
 * lines, multi-line data, comments and event types, JSON escapes, malformed input as errors. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "sse.h"

typedef struct sink {
    char events[64][256];
    char types[64][32];
    int n;
} sink;

static int on_ev(void *ctx, const char *type, const char *data, size_t len) {
    sink *s = ctx;
    if (s->n < 64) {
        snprintf(s->events[s->n], sizeof s->events[0], "%.*s", (int)len, data);
        snprintf(s->types[s->n], sizeof s->types[0], "%s", type);
    }
    s->n++;
    return 0;
}

static const char *STREAM = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n"
                            "19\r\ndata: {\"a\":1}\n\n: comment\n\r\n"
                            "2;ext=1\r\nda\r\n"
                            "16\r\nta: {\"b\":2}\r\n\r\nevent: \r\n"
                            "23\r\nerror\ndata: x\ndata: y\n\ndata: [DONE]\r\n"
                            "4\r\n\r\n\r\n\r\n"
                            "0\r\nTrailer: v\r\n\r\n";

/* Feed text in pieces of `step` bytes; returns the final result. */
static hresp_result feed_steps(hresp *h, const char *text, size_t step) {
    size_t n = strlen(text), off = 0;
    hresp_result r = HRESP_MORE;
    while (off < n && r == HRESP_MORE) {
        size_t k = n - off < step ? n - off : step, used;
        r = hresp_feed(h, text + off, k, &used);
        off += used;
    }
    return r;
}

static void test_chunked_sse(void) {
    size_t n = strlen(STREAM);
    for (size_t step = 1; step <= n; step++) {
        sink s = {0};
        hresp h;
        hresp_init(&h, on_ev, &s);
        hresp_reset(&h);
        hresp_result r = feed_steps(&h, STREAM, step);
        CHECK_MSG(r == HRESP_DONE, "step %zu: result %d (%s)", step, r, h.error);
        CHECK_EQ_INT(h.status, 200);
        CHECK(h.sse);
        CHECK(h.keep_alive);
        CHECK_MSG(s.n == 4, "step %zu: %d events", step, s.n);
        if (s.n == 4) {
            CHECK_EQ_STR(s.events[0], "{\"a\":1}");
            CHECK_EQ_STR(s.events[1], "{\"b\":2}");
            CHECK_EQ_STR(s.types[2], "error");
            CHECK_EQ_STR(s.events[2], "x\ny");
            CHECK_EQ_STR(s.events[3], "[DONE]");
        }
        hresp_deinit(&h);
        if (step > 40) step += 7; /* large steps behave alike */
    }
}

static void test_content_length(void) {
    const char *resp = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 11\r\n"
                       "Connection: close\r\n\r\n{\"e\":\"bad\"}";
    sink s = {0};
    hresp h;
    hresp_init(&h, on_ev, &s);
    hresp_reset(&h);
    size_t used;
    CHECK_EQ_INT(hresp_feed(&h, resp, strlen(resp), &used), HRESP_DONE);
    CHECK_EQ_INT(used, strlen(resp));
    CHECK_EQ_INT(h.status, 500);
    CHECK_EQ_STR(h.reason, "Internal Server Error");
    CHECK(!h.keep_alive);
    CHECK(!h.sse);
    CHECK_EQ_INT(h.body_len, 11);
    CHECK(memcmp(h.body, "{\"e\":\"bad\"}", 11) == 0);
    CHECK_EQ_INT(s.n, 0);
    /* next response on the same object (keep-alive reuse), read until close */
    hresp_reset(&h);
    const char *r2 = "HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\ndata: 2";
    CHECK_EQ_INT(hresp_feed(&h, r2, strlen(r2), &used), HRESP_MORE);
    CHECK_EQ_INT(hresp_eof(&h), HRESP_DONE);
    CHECK_EQ_INT(s.n, 2); /* the unterminated last event still counts at EOF */
    CHECK_EQ_STR(s.events[1], "2");
    hresp_deinit(&h);
}

static void test_truncated(void) {
    sink s = {0};
    hresp h;
    hresp_init(&h, on_ev, &s);
    hresp_reset(&h);
    const char *part = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n10\r\ndata: {\"a\"";
    size_t used;
    CHECK_EQ_INT(hresp_feed(&h, part, strlen(part), &used), HRESP_MORE);
    CHECK_EQ_INT(hresp_eof(&h), HRESP_ERROR);
    CHECK(strstr(h.error, "mid-response") != NULL);
    hresp_reset(&h);
    CHECK_EQ_INT(hresp_eof(&h), HRESP_ERROR); /* nothing at all */
    hresp_reset(&h);
    const char *junk = "SSH-2.0-OpenSSH\r\n\r\n";
    CHECK_EQ_INT(hresp_feed(&h, junk, strlen(junk), &used), HRESP_ERROR);
    hresp_reset(&h);
    const char *badchunk = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    CHECK_EQ_INT(hresp_feed(&h, badchunk, strlen(badchunk), &used), HRESP_ERROR);
    hresp_deinit(&h);
}

/* An event of endless data lines (no blank line) is an error once past the line limit, not
 * unbounded memory. */
static void test_event_limit(void) {
    sink s = {0};
    hresp h;
    hresp_init(&h, on_ev, &s);
    hresp_reset(&h);
    const char *head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";
    size_t used;
    CHECK_EQ_INT(hresp_feed(&h, head, strlen(head), &used), HRESP_MORE);
    size_t n = 1 << 20;
    char *buf = malloc(n);
    CHECK(buf != NULL);
    if (!buf) return;
    for (size_t i = 0; i < n; i += 8) memcpy(buf + i, "data: x\n", 8);
    hresp_result r = HRESP_MORE;
    int feeds = 0;
    for (; feeds < 64 && r == HRESP_MORE; feeds++) r = hresp_feed(&h, buf, n, &used);
    CHECK_EQ_INT(r, HRESP_ERROR);
    CHECK(strstr(h.error, "too long") != NULL);
    CHECK_MSG(feeds <= 40, "%d MiB of data lines accepted", feeds);
    CHECK_EQ_INT(s.n, 0);
    free(buf);
    hresp_deinit(&h);
}

static int scan(const char *json, char **content, size_t *cl, size_t *cc, char **reas, size_t *rl,
                size_t *rc, bench_chunk *c) {
    memset(c, 0, sizeof *c);
    c->content = content;
    c->content_len = cl;
    c->content_cap = cc;
    c->reasoning = reas;
    c->reasoning_len = rl;
    c->reasoning_cap = rc;
    return bench_chunk_scan(json, strlen(json), c);
}

static void test_scanner(void) {
    char *ct = NULL, *rs = NULL;
    size_t cl = 0, cc = 0, rl = 0, rc = 0;
    bench_chunk c;
    CHECK_EQ_INT(scan("{\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,"
                      "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\\\"b\\\\c\\n\\u00e9"
                      "\\ud83d\\ude00\"},\"logprobs\":null,\"finish_reason\":null}],"
                      "\"usage\":null,\"x\":[1,2.5e3,-3,true,false,{\"y\":[]}]}",
                      &ct, &cl, &cc, &rs, &rl, &rc, &c),
                 0);
    CHECK_EQ_STR(ct, "a\"b\\c\n\xc3\xa9\xf0\x9f\x98\x80");
    CHECK_EQ_INT(c.content_added, cl);
    CHECK_EQ_INT(c.usage_completion_tokens, -1);
    /* completions text, second choice ignored, usage */
    CHECK_EQ_INT(scan("{\"choices\":[{\"text\":\" more\"},{\"text\":\"no\"}],"
                      "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":7}}",
                      &ct, &cl, &cc, &rs, &rl, &rc, &c),
                 0);
    CHECK(strstr(ct, " more") != NULL && strstr(ct, "no") == NULL);
    CHECK_EQ_INT(c.usage_completion_tokens, 7);
    /* reasoning fields */
    CHECK_EQ_INT(scan("{\"choices\":[{\"delta\":{\"reasoning\":\"r1\"}}]}", &ct, &cl, &cc, &rs, &rl,
                      &rc, &c),
                 0);
    CHECK_EQ_INT(scan("{\"choices\":[{\"delta\":{\"reasoning_content\":\"r2\"}}]}", &ct, &cl, &cc,
                      &rs, &rl, &rc, &c),
                 0);
    CHECK_EQ_STR(rs, "r1r2");
    /* malformed: nothing appended */
    size_t before = cl;
    const char *bad[] = {"{\"choices\":[{\"delta\":{\"content\":\"tru",
                         "{\"choices\":[{\"delta\":{\"content\":\"ok\"}}]} trailing",
                         "not json",
                         "{\"a\":tru}",
                         "{\"a\":\"\\x\"}",
                         "{\"a\":1,}",
                         "",
                         "{\"a\":\"ctl\x01\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_MSG(scan(bad[i], &ct, &cl, &cc, &rs, &rl, &rc, &c) == -1, "accepted: %s", bad[i]);
        CHECK_EQ_INT(cl, before);
    }
    /* error objects */
    CHECK_EQ_INT(
        scan("{\"error\":{\"message\":\"m\",\"code\":429}}", &ct, &cl, &cc, &rs, &rl, &rc, &c), 0);
    CHECK(c.error);
    CHECK_EQ_STR(c.error_msg, "m");
    CHECK_EQ_INT(c.error_code, 429);
    CHECK_EQ_INT(scan("{\"error\":null,\"choices\":[]}", &ct, &cl, &cc, &rs, &rl, &rc, &c), 0);
    CHECK(!c.error);
    /* numbers no int holds are ignored, never converted (undefined behaviour) */
    CHECK_EQ_INT(
        scan("{\"usage\":{\"completion_tokens\":1e300}}", &ct, &cl, &cc, &rs, &rl, &rc, &c), 0);
    CHECK_EQ_INT(c.usage_completion_tokens, -1);
    CHECK_EQ_INT(
        scan("{\"usage\":{\"completion_tokens\":3000000000}}", &ct, &cl, &cc, &rs, &rl, &rc, &c),
        0);
    CHECK_EQ_INT(c.usage_completion_tokens, -1);
    CHECK_EQ_INT(scan("{\"usage\":{\"completion_tokens\":-5}}", &ct, &cl, &cc, &rs, &rl, &rc, &c),
                 0);
    CHECK_EQ_INT(c.usage_completion_tokens, -1);
    CHECK_EQ_INT(
        scan("{\"error\":{\"message\":\"m\",\"code\":9e99}}", &ct, &cl, &cc, &rs, &rl, &rc, &c), 0);
    CHECK(c.error);
    CHECK_EQ_INT(c.error_code, 0);
    free(ct);
    free(rs);
}

int main(void) {
    test_chunked_sse();
    test_content_length();
    test_truncated();
    test_event_limit();
    test_scanner();
    return check_done();
}
