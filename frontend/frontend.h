/* frontend.h - magneto-frontend: the OpenAI-compatible HTTP front door and the request plane on
 * its side (DESIGN.md §1-2).
 *
 * Data flow: HTTP request (http.c) -> parse and validate (openai.c) -> render the chat in harmony
 * and tokenize (runtime/tok) -> pick a worker (router/) among those discovery reports (etcd) ->
 * publish a GenerateRequest to it over NATS with this process's stream inbox as reply subject ->
 * GenerateChunks come back on the inbox -> detokenize and parse harmony incrementally, apply stop
 * strings -> SSE events (or one JSON body for stream=false).
 *
 * Stateless: everything a request needs lives in the request; workers and models are learned from
 * etcd only. A client that goes away cancels its request on the worker; a worker that vanishes
 * (its etcd key leaves, a chunk is lost, or it stays silent past the stream timeout) has its
 * requests migrated (prompt plus tokens so far, the rest of max_tokens) up to migration_limit
 * times, else the stream ends with an error event. Never a hang.
 *
 * Output: chat output is parsed as harmony (analysis -> reasoning_content, final -> content,
 * commentary to=functions.X -> tool_calls); output that never forms a harmony header (a mocker's
 * random ids) is passed through as content. Stop strings apply to content (and completions
 * text), not to reasoning. tool_choice "none" renders no tools; "required" and a named function
 * are accepted and validated but left to the model, as vLLM does for gpt-oss.
 * A stream=false request cannot see its client leave (the connection is suspended until the
 * answer is ready), so it runs to the end on the worker.
 *
 * Threads: HTTP on libmicrohttpd's threads, chunks on the inbox's NATS thread, discovery on the
 * etcd watch threads; a request's state is guarded by its own lock. */
#ifndef MG_FRONTEND_H
#define MG_FRONTEND_H

#include <stddef.h>

#include "router.h"
#include "status.h"

typedef struct fe_config {
    const char *host;      /* HTTP bind address; NULL = 0.0.0.0 */
    int port;              /* 0 = a free port (frontend_port tells) */
    int http_threads;      /* libmicrohttpd threads; 0 = 1 */
    const char *ns;        /* namespace; NULL = "magneto" */
    const char *nats_url;  /* NULL = MAGNETO_NATS_URL or nats://127.0.0.1:4222 */
    const char *etcd_url;  /* NULL = MAGNETO_ETCD_URL or http://127.0.0.1:2379 */
    const char *tokenizer; /* a .tiktoken ranks file or a checkpoint folder; NULL = none (then
                              only token-id prompts are served and output is not detokenized:
                              requests needing text get 503) */
    router_mode router_mode;
    int migration_limit;   /* migrations per request; 0 = off */
    size_t max_body;       /* bytes; 0 = 8 MiB */
    int stream_timeout_ms; /* silence before a stream counts as lost; 0 = 300000 */
} fe_config;

typedef struct frontend frontend;

/* Connect to NATS and etcd, load the tokenizer, start watching workers and serving HTTP. The
 * config is copied. */
mg_status frontend_create(const fe_config *cfg, frontend **out);
/* Stop serving: every open stream ends, deferred replies get 503, then everything is freed.
 * Accepts NULL. */
void frontend_destroy(frontend *fe);
int frontend_port(const frontend *fe);
/* Workers known right now. */
size_t frontend_workers(frontend *fe);
/* Requests in flight right now. */
size_t frontend_inflight(frontend *fe);

#endif
