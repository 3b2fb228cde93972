/* bus.h - the NATS wrapper: one connection per process, publish/subscribe, and the token-stream
 * layer that carries GenerateChunk streams from workers to a frontend (DESIGN.md §2).
 *
 * Data flow. A frontend creates one stream inbox per process: a single wildcard subscription on
 * a unique prefix (`_INBOX.magneto.<random>.*`). For each request it opens a stream, whose reply
 * subject `<prefix>.<request_id>` travels with the GenerateRequest through the router to the
 * worker. The worker sends the chunks with bus_stream_send() straight to that subject; each
 * carries a sequence number (header `Mg-Seq`, 0, 1, 2, ...) and the final one the header
 * `Mg-Last: 1`. The inbox demultiplexes by the subject's last token and checks the sequence:
 *   - seq == expected: delivered, in order;
 *   - seq <  expected: a duplicate, dropped;
 *   - seq >  expected: a chunk was lost (core NATS is at-most-once, e.g. across a reconnect): the
 *     stream FAILS with MG_EGAP and is never reported complete;
 *   - no chunk for the stream's silence timeout: the stream FAILS with MG_ETIMEOUT.
 * Payloads are opaque bytes; this layer knows nothing of protobuf.
 *
 * Use. Frontend: bus_inbox_create() once; per request bus_inbox_open(ib, id, {.queue = true,
 * .fn = wake}) and bus_publish(b, "<ns>.router.generate", reply_subject, request, len); wake()
 * (NATS thread) resumes the HTTP response, whose writer pops with bus_stream_next(s, 0, &c)
 * until it returns something other than MG_OK; bus_stream_close() when the response ends.
 * Worker: bus_subscribe(b, "<ns>.worker.<id>.generate", NULL, on_request, ...) where on_request
 * copies m->data and m->reply into the engine's queue; the step loop's output side calls
 * bus_stream_send(b, reply, seq++, chunk, len, finished) per sequence and step.
 *
 * Connection. bus_connect() fails fast when no server answers (unless connect_wait_ms asks it to
 * keep trying); once connected, the connection reconnects (forever by default) with a pause
 * between attempts, buffers publishes while disconnected (reconnect buffer), re-creates its
 * subscriptions on the new connection and logs disconnects and reconnects. Messages published by
 * others while this process was disconnected are lost; the stream layer turns that into MG_EGAP or
 * MG_ETIMEOUT rather than a hang.
 *
 * Threads. Publishing, flushing, subscribing and opening/closing streams may be called from any
 * thread, concurrently. Subscription callbacks and stream callbacks run on libnats threads (one
 * delivery thread per subscription; an inbox adds one timer thread for silence timeouts): they
 * must return quickly, never block on the network and never call bus_flush(). Calls for one
 * subscription are serialized; calls for one stream are serialized and never overlap.
 *
 * Ownership. The caller owns every handle it gets and releases it with the matching destroy or
 * close call; destroy and close functions accept NULL. Destroy in this order: streams, inboxes
 * and subscriptions, then the bus; call bus_shutdown() once at process exit so that libnats
 * frees its globals (leak checkers stay quiet). Strings passed in are copied unless stated. */
#ifndef MG_BUS_H
#define MG_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct bus bus;
typedef struct bus_sub bus_sub;
typedef struct bus_inbox bus_inbox;
typedef struct bus_stream bus_stream;

/* ---- connection ------------------------------------------------------------------------- */

typedef struct bus_options {
    const char *url;         /* "nats://host:port", or several separated by commas */
    const char *name;        /* connection name the server shows (may be NULL) */
    int max_reconnect;       /* reconnect attempts before giving up; -1 = forever */
    int reconnect_wait_ms;   /* pause between attempts to the same server */
    int reconnect_buf_bytes; /* publishes held while disconnected; beyond it publish fails */
    int connect_timeout_ms;  /* per connection attempt */
    int connect_wait_ms;     /* keep trying the first connect this long (0: one try), for
                                processes started alongside nats-server */
    int ping_interval_ms;    /* how soon a silently dead server is noticed (2 pings missed) */
} bus_options;

/* Defaults: url from MAGNETO_NATS_URL or nats://127.0.0.1:4222, reconnect forever every 250 ms,
 * 8 MiB reconnect buffer, 2 s connect timeout, one connect try, 5 s ping interval. */
void bus_options_default(bus_options *o);

/* Connect. MG_EUNAVAIL when no server answered within connect_wait_ms, MG_EINVAL for a bad
 * option. *out on success. */
mg_status bus_connect(const bus_options *o, bus **out);
/* Close the connection (pending publishes are flushed for up to 1 s) and free it. */
void bus_destroy(bus *b);
/* Free libnats' global state; call once after every bus was destroyed (process exit). */
void bus_shutdown(void);

bool bus_is_connected(bus *b);
/* Wait until the connection is up (after a disconnect); MG_ETIMEOUT, MG_ECLOSED. */
mg_status bus_wait_connected(bus *b, int timeout_ms);

typedef struct bus_stats {
    uint64_t disconnects, reconnects;
    uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
} bus_stats;
void bus_stats_get(bus *b, bus_stats *out);

/* ---- publish ---------------------------------------------------------------------------- */

typedef struct bus_header {
    const char *key, *value;
} bus_header;

/* Publish data (copied into libnats' buffer before return) to subject. reply may be NULL; when
 * set, receivers answer there (no request/response wait happens here). While disconnected the
 * message goes to the reconnect buffer; MG_EFULL when that is full, MG_ECLOSED when closed. */
mg_status bus_publish(bus *b, const char *subject, const char *reply, const void *data, size_t len);
/* Same, with NATS headers (nats-server >= 2.2). */
mg_status bus_publish_hdr(bus *b, const char *subject, const char *reply, const bus_header *hdrs,
                          int nhdrs, const void *data, size_t len);
/* Send buffered publishes and wait for the server's acknowledgement (a PING/PONG round trip).
 * Not from a callback. */
mg_status bus_flush(bus *b, int timeout_ms);

/* ---- subscribe -------------------------------------------------------------------------- */

/* A received message. Everything it points to is valid only during the callback. */
typedef struct bus_msg {
    const char *subject;
    const char *reply; /* NULL when the sender gave none */
    const void *data;
    size_t len;
    void *raw_; /* the natsMsg, for bus_msg_header */
} bus_msg;

/* Value of header key (first value), or NULL. Valid during the callback. */
const char *bus_msg_header(const bus_msg *m, const char *key);

/* Runs on the subscription's libnats delivery thread, one message at a time. */
typedef void (*bus_msg_fn)(void *arg, const bus_msg *m);

/* Subscribe to subject (wildcards allowed). queue == NULL: every subscriber gets each message;
 * queue set: subscribers sharing that queue name share the messages, each delivered once. */
mg_status bus_subscribe(bus *b, const char *subject, const char *queue, bus_msg_fn fn, void *arg,
                        bus_sub **out);
/* Unsubscribe and free. On return the callback is not running and will not run again, so arg may
 * be freed; called from the subscription's own callback it returns without waiting. (libnats'
 * small subscription record is kept until bus_destroy, to dodge a libnats 3.4 race.) */
void bus_sub_destroy(bus_sub *s);

/* ---- token streams: receiving side ------------------------------------------------------ */

typedef struct bus_inbox_options {
    const char *prefix;     /* subject prefix; default "_INBOX.magneto"; a random token is added */
    int timeout_ms;         /* default silence timeout per stream (0: 30000) */
    int pending_msgs_limit; /* libnats queue for the inbox subscription (0: 1,000,000 messages) */
    int pending_bytes;      /* (0: 512 MiB); overflow drops messages, seen as gaps */
} bus_inbox_options;

/* Create the per-process inbox: subscribes `<prefix>.<random>.*` and starts its timer thread.
 * o may be NULL for defaults. */
mg_status bus_inbox_create(bus *b, const bus_inbox_options *o, bus_inbox **out);
/* Unsubscribe, stop the timer thread and free. Close every stream before this call: a stream
 * left open gets its final callback with MG_ECLOSED and is freed here, so its handle becomes
 * invalid (a consumer still using it would crash). Accepts NULL. */
void bus_inbox_destroy(bus_inbox *ib);
/* The inbox's unique subject prefix (without the trailing ".*"). */
const char *bus_inbox_subject(const bus_inbox *ib);

typedef struct bus_chunk {
    uint64_t seq;
    bool last;        /* the sender's final chunk: the stream is complete */
    const void *data; /* payload, opaque */
    size_t len;
} bus_chunk;

/* Stream callback. Called on the inbox's NATS thread, or on its timer thread for a timeout;
 * calls for one stream never overlap. It may call bus_stream_close() on its own stream.
 * - Direct mode (opts.queue false): once per in-order chunk with status MG_OK and chunk set
 *   (chunk->data valid during the call); the stream is complete after the chunk with last set.
 * - Queue mode (opts.queue true): a wake-up with chunk NULL and status MG_OK when a chunk was
 *   queued. Wake-ups are edge-triggered: after one, the next comes only once the consumer has
 *   drained the queue, i.e. bus_stream_next() returned something other than MG_OK (typically
 *   MG_ETIMEOUT for timeout 0). So on a wake-up, pop until then. This lets a frontend with
 *   thousands of streams get one cheap wake-up per burst and do the work on its own thread.
 * - In both modes, a failed stream gets one final call with chunk NULL and status MG_EGAP,
 *   MG_ETIMEOUT or MG_ECLOSED (inbox destroyed). Nothing is called after the end. */
typedef void (*bus_stream_fn)(void *arg, bus_stream *s, const bus_chunk *chunk, mg_status status);

typedef struct bus_stream_opts {
    bus_stream_fn fn; /* may be NULL in queue mode (the consumer polls bus_stream_next) */
    void *arg;
    bool queue;     /* queue chunks for bus_stream_next() */
    int timeout_ms; /* silence timeout; 0: the inbox's default; counted from open, then from
                       each chunk received */
} bus_stream_opts;

/* Open a stream for request_id (1..63 characters of [A-Za-z0-9_-], unique among open streams of
 * this inbox: MG_EEXIST otherwise; NULL: the inbox makes a unique id). Returns the stream and
 * its reply subject (owned by the stream, valid until close) to send with the request.
 * opts NULL: queue mode, no callback. Use a fresh id for each attempt of a request (migration):
 * late chunks of an earlier attempt to a reused id would fail the new stream. */
mg_status bus_inbox_open(bus_inbox *ib, const char *request_id, const bus_stream_opts *opts,
                         bus_stream **out, const char **reply_subject);

/* Queue mode, one consumer thread per stream: take the next chunk in order, waiting up to
 * timeout_ms (0: do not wait, -1: forever). Returns
 *   MG_OK        a chunk; out->data valid until the next bus_stream_next() or close;
 *   MG_ETIMEOUT  nothing within timeout_ms (stream still open), or the stream failed for silence
 *                (bus_stream_state() then says BUS_STREAM_FAILED);
 *   MG_ECLOSED   complete, and every chunk was taken;
 *   MG_EGAP      failed for a lost chunk (chunks before the gap are returned first).
 * MG_EINVAL for a stream not in queue mode. */
mg_status bus_stream_next(bus_stream *s, int timeout_ms, bus_chunk *out);

/* Change the stream's silence timeout (e.g. longer while a request waits in a worker's queue,
 * shorter once tokens flow). Any thread. Takes effect at the timer's next tick. */
void bus_stream_set_timeout(bus_stream *s, int timeout_ms);

typedef enum bus_stream_state {
    BUS_STREAM_OPEN = 0,
    BUS_STREAM_DONE = 1,   /* final chunk received, no gap */
    BUS_STREAM_FAILED = 2, /* gap, silence timeout or inbox closed: see bus_stream_status */
} bus_stream_state;

bus_stream_state bus_stream_state_get(bus_stream *s);
/* MG_OK while open or done; the failure (MG_EGAP, MG_ETIMEOUT, MG_ECLOSED) once failed. */
mg_status bus_stream_status(bus_stream *s);
const char *bus_stream_id(const bus_stream *s);
const char *bus_stream_reply(const bus_stream *s);

/* Stop receiving and free the stream. On return no callback for it runs or will run (called from
 * its own callback it returns without waiting), so the callback's arg may be freed. Do not hold a
 * lock that the stream's callback takes while calling this from another thread: it waits for a
 * running callback. Late chunks for its id are dropped (counted as unknown). */
void bus_stream_close(bus_stream *s);

typedef struct bus_inbox_stats {
    uint64_t open_streams;
    uint64_t chunks;     /* delivered in order */
    uint64_t duplicates; /* dropped, seq below expected */
    uint64_t gaps;       /* streams failed with MG_EGAP */
    uint64_t timeouts;   /* streams failed with MG_ETIMEOUT */
    uint64_t unknown;    /* dropped: no open stream for the id (late, or after close) */
    uint64_t malformed;  /* dropped: no or bad Mg-Seq header */
} bus_inbox_stats;
void bus_inbox_stats_get(bus_inbox *ib, bus_inbox_stats *out);

/* ---- token streams: sending side -------------------------------------------------------- */

#define BUS_HDR_SEQ  "Mg-Seq"
#define BUS_HDR_LAST "Mg-Last"

/* Send chunk seq (0, 1, 2, ... without holes) of a stream to its reply subject; last marks the
 * final chunk. Any thread; chunks of one stream must be sent from one thread (or in order) so
 * that NATS keeps their order. Returns what bus_publish_hdr returns. */
mg_status bus_stream_send(bus *b, const char *reply_subject, uint64_t seq, const void *data,
                          size_t len, bool last);

#endif
