/* openai.h - the OpenAI API as the frontend speaks it: request parsing and validation, error
 * bodies, and the response and SSE serialization of the hot path.
 *
 * Data flow: HTTP body -> oai_parse() -> oai_request (validated, typed) -> request plane ->
 * token text -> oai_sse_*() (one SSE event appended to a caller's buffer) or oai_response_json()
 * for stream=false.
 *
 * Parsing uses jansson once per request; the SSE writers do not: they append precomputed
 * prefixes and JSON-escaped text to a growable buffer, so a token costs no allocation once the
 * buffer has grown to its working size.
 *
 * Errors follow OpenAI: {"error":{"message","type","param","code"}} with the HTTP status in
 * oai_error.status. A wrong type or value names the field (dotted path, e.g. "messages[2].role").
 *
 * Threads: every function here is reentrant; an oai_request belongs to one thread at a time. */
#ifndef MG_FRONTEND_OPENAI_H
#define MG_FRONTEND_OPENAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "status.h"

/* ---- growable byte buffer ---- */

typedef struct oai_buf {
    char *p;    /* NUL-terminated when len > 0 or after any append */
    size_t len; /* bytes, excluding the NUL */
    size_t cap; /* allocated bytes */
} oai_buf;

void oai_buf_free(oai_buf *b);
/* Make room for n more bytes (plus the NUL). MG_ENOMEM on failure. */
mg_status oai_buf_reserve(oai_buf *b, size_t n);
mg_status oai_buf_put(oai_buf *b, const char *s, size_t n);
mg_status oai_buf_puts(oai_buf *b, const char *s);
mg_status oai_buf_printf(oai_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s[0..n) as the inside of a JSON string (no quotes): escapes ", \ and controls; invalid
 * UTF-8 becomes U+FFFD, so the output is always valid JSON. */
mg_status oai_buf_json_str(oai_buf *b, const char *s, size_t n);

/* ---- errors ---- */

typedef struct oai_error {
    int status;       /* HTTP status: 400, 404, 413, 503, 500 */
    const char *type; /* "invalid_request_error", "not_found_error", "service_unavailable" ... */
    const char
        *code;      /* "invalid_type", "invalid_value", "missing_required_parameter", ... or NULL */
    char param[96]; /* the field, "" when none */
    char message[384]; /* human-readable */
} oai_error;

/* Fill e; returns MG_EINVAL (or the status implied by http_status) so parsers can
 * `return oai_fail(...)`. param may be NULL. */
mg_status oai_fail(oai_error *e, int http_status, const char *type, const char *code,
                   const char *param, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* The error as a JSON body {"error":{...}} appended to b. */
mg_status oai_error_json(const oai_error *e, oai_buf *b);

/* ---- requests ---- */

typedef enum oai_endpoint {
    OAI_CHAT = 0,        /* POST /v1/chat/completions */
    OAI_COMPLETIONS = 1, /* POST /v1/completions */
} oai_endpoint;

#define OAI_MAX_STOP 16 /* stop strings per request (OpenAI allows 4; vLLM more) */

typedef struct oai_request {
    oai_endpoint endpoint;
    json_t *root; /* the parsed body; owns every borrowed pointer below */

    const char *model;
    /* chat: the validated messages array (borrowed from root). Each message is an object with a
     * string role in {system, developer, user, assistant, tool}; content is a string, null, or an
     * array of {"type":"text","text":...} parts. */
    json_t *messages;
    /* completions: either text (prompt_text, prompt_len) or token ids (prompt_ids, owned). */
    const char *prompt_text;
    size_t prompt_len;
    uint32_t *prompt_ids;
    size_t n_prompt_ids;

    int64_t max_tokens; /* max_tokens or max_completion_tokens (the latter wins); -1 unset */
    int64_t min_tokens; /* 0 unless set (top level or nvext) */
    bool ignore_eos;    /* top level or nvext */
    double temperature; /* default 1.0 */
    double top_p;       /* default 1.0 */
    int64_t top_k;      /* 0 or -1: off */
    bool has_seed;
    uint64_t seed;
    const char *stop[OAI_MAX_STOP]; /* borrowed; non-empty strings */
    size_t stop_len[OAI_MAX_STOP];
    int n_stop;
    uint32_t stop_token_ids[OAI_MAX_STOP]; /* stop_token_ids (vLLM extension) */
    int n_stop_token_ids;
    bool stream;
    bool include_usage;           /* stream_options.include_usage */
    const char *reasoning_effort; /* "low" | "medium" | "high"; NULL: the default (medium) */
    json_t *tools;                /* validated array of function tools, or NULL */
    const char *tool_choice;      /* "none" | "auto" | "required" | a function name; NULL = auto */
    bool tool_choice_named;       /* tool_choice was {"type":"function","function":{"name":..}} */
    const char *user;
    bool echo; /* completions: echo the prompt (accepted, only false supported) */
} oai_request;

/* Parse and validate body[0..len) for endpoint ep into *r (which the caller then owns and frees
 * with oai_request_free). vocab bounds token ids in a prompt array (0: unchecked). On a bad
 * request returns MG_EINVAL with *e filled (400, naming the field) and *r left empty. Checks that
 * need the model (unknown model, context length) are the caller's. */
mg_status oai_parse(oai_endpoint ep, const char *body, size_t len, uint32_t vocab, oai_request *r,
                    oai_error *e);
void oai_request_free(oai_request *r);

/* ---- responses ---- */

typedef enum oai_finish {
    OAI_FINISH_NONE = 0,
    OAI_FINISH_STOP = 1,
    OAI_FINISH_LENGTH = 2,
    OAI_FINISH_TOOL_CALLS = 3,
} oai_finish;

const char *oai_finish_str(oai_finish f); /* "stop", "length", "tool_calls", NULL for NONE */

typedef struct oai_usage {
    uint32_t prompt_tokens;
    uint32_t completion_tokens;
    uint32_t cached_tokens;
} oai_usage;

/* The fixed head of every SSE event of one response, computed once per request:
 * `data: {"id":"<id>","object":"<obj>","created":<t>,"model":"<model>","choices":[` */
typedef struct oai_sse_head {
    oai_buf head;
    oai_endpoint endpoint;
} oai_sse_head;

mg_status oai_sse_head_init(oai_sse_head *h, oai_endpoint ep, const char *id, int64_t created,
                            const char *model);
void oai_sse_head_free(oai_sse_head *h);

/* Which field of the delta a piece of text goes to. */
typedef enum oai_field {
    OAI_CONTENT = 0,   /* chat: delta.content; completions: text */
    OAI_REASONING = 1, /* chat: delta.reasoning_content */
} oai_field;

/* Each appends one complete SSE event ("data: ...\n\n") to out. */
mg_status oai_sse_role(const oai_sse_head *h, oai_buf *out); /* chat: {"role":"assistant"} */
mg_status oai_sse_text(const oai_sse_head *h, oai_field f, const char *text, size_t len,
                       oai_buf *out);
/* A tool call's first delta (index, id, name, empty arguments) or, with id NULL, a fragment of its
 * arguments. */
mg_status oai_sse_tool_call(const oai_sse_head *h, int index, const char *id, const char *name,
                            const char *args, size_t args_len, oai_buf *out);
mg_status oai_sse_finish(const oai_sse_head *h, oai_finish f, oai_buf *out);
/* The usage event of stream_options.include_usage: "choices":[] and usage. */
mg_status oai_sse_usage(const oai_sse_head *h, const oai_usage *u, oai_buf *out);
/* An error event: data: {"error":{...}} */
mg_status oai_sse_error(const oai_error *e, oai_buf *out);
mg_status oai_sse_done(oai_buf *out); /* data: [DONE] */

/* A tool call as a complete (non-streamed) response holds it. */
typedef struct oai_tool_call {
    char id[40];
    char *name;   /* owned */
    oai_buf args; /* JSON text of the arguments */
} oai_tool_call;

/* The whole non-streamed response body. content / reasoning may be NULL (omitted or null). */
mg_status oai_response_json(oai_endpoint ep, const char *id, int64_t created, const char *model,
                            const char *content, size_t content_len, const char *reasoning,
                            size_t reasoning_len, const oai_tool_call *calls, int n_calls,
                            oai_finish f, const oai_usage *u, oai_buf *out);

/* A fresh response id "chatcmpl-<hex>" / "cmpl-<hex>" (random, 24 hex digits) into out[48]. */
void oai_make_id(oai_endpoint ep, char out[48]);

#endif
