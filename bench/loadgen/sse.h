/* sse.h - the client side of one HTTP/1.1 response: status line and headers, Content-Length or
 * chunked transfer decoding, SSE event assembly, and a scanner that pulls the text out of an
 * OpenAI chat/completions chunk without building a JSON tree.
 *
 * Data flow: loadgen.c reads socket bytes into a shared buffer and feeds them to hresp_feed;
 * each complete SSE event's data goes to the caller's callback, which runs bench_chunk_scan on
 * it. Nothing is copied on the fast path except the event data itself (one memcpy per event),
 * because events may straddle reads and HTTP chunks.
 *
 * An hresp belongs to one connection and one thread. hresp_init/hresp_deinit bracket its life;
 * hresp_reset readies it for the next response on a kept-alive connection (buffers are kept). */
#ifndef MG_BENCH_SSE_H
#define MG_BENCH_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Called with each SSE event's data (the "data:" lines joined by '\n'). event_type is "" or the
 * value of an "event:" line. Return 0 to go on, -1 to stop with an error (the callback records
 * it). */
typedef int (*hresp_event_fn)(void *ctx, const char *event_type, const char *data, size_t len);

typedef enum hresp_result {
    HRESP_MORE = 0,     /* needs more bytes */
    HRESP_DONE = 1,     /* the response is complete */
    HRESP_ERROR = -1,   /* protocol error: message in hresp.error */
    HRESP_STOPPED = -2, /* the event callback returned -1 */
} hresp_result;

typedef struct hresp {
    int state;
    int status;      /* HTTP status code */
    char reason[64]; /* reason phrase */
    bool chunked, keep_alive, sse, until_close;
    int64_t content_left;
    uint64_t chunk_left;
    char *hbuf; /* header bytes until the blank line */
    size_t hlen, hcap;
    char *line; /* a partial SSE line carried between feeds */
    size_t line_len, line_cap;
    char *ev; /* the data of the SSE event being assembled */
    size_t ev_len, ev_cap;
    bool ev_has_data;
    char ev_type[32];
    char *body; /* a non-SSE body (full JSON response or error text) */
    size_t body_len, body_cap, body_limit;
    uint64_t bytes; /* body bytes seen */
    char error[160];
    hresp_event_fn on_event;
    void *ctx;
} hresp;

void hresp_init(hresp *h, hresp_event_fn on_event, void *ctx);
void hresp_reset(hresp *h);
void hresp_deinit(hresp *h);
/* Feed bytes. *used gets how many were consumed (less than len only when DONE came early). */
hresp_result hresp_feed(hresp *h, const char *data, size_t len, size_t *used);
/* The peer closed the connection: completes a read-until-close body, else an error. */
hresp_result hresp_eof(hresp *h);

/* What one chunk (or a non-streaming response) carried. The caller points the append targets at
 * its record's growable buffers; the scanner appends unescaped text there. */
typedef struct bench_chunk {
    char **content;
    size_t *content_len, *content_cap;
    char **reasoning;
    size_t *reasoning_len, *reasoning_cap;
    size_t content_added, reasoning_added; /* out: bytes appended */
    bool error;                            /* out: the object had an "error" member */
    char error_msg[200];
    int error_code;
    long usage_completion_tokens; /* out: -1 when no usage */
} bench_chunk;

/* Scan one JSON object: choices[0].delta|message.{content,reasoning_content,reasoning},
 * choices[0].text, usage.completion_tokens, error. Returns 0, or -1 with error_msg set when the
 * text is not valid JSON (then nothing is appended). */
int bench_chunk_scan(const char *json, size_t len, bench_chunk *c);

#endif
