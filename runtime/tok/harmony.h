/* harmony.h - the harmony chat format of gpt-oss: render a chat request into a prompt, and parse
 * the model's output tokens incrementally into reasoning, final content and tool calls.
 *
 * Data flow: frontend request -> harmony_render_ids (system message with knowledge cutoff, date,
 * reasoning effort and valid channels; the user's system prompt as the developer message with
 * function tools as the `functions` namespace; the turns; "<|start|>assistant") -> worker.
 * Worker tokens -> harmony_parser_feed -> reasoning_content / content / tool_calls deltas.
 *
 * The text rendering follows openai-harmony's renderer byte for byte (docs/format.md): the
 * special tokens appear as their text ("<|start|>"); harmony_render_ids encodes that text with
 * specials allowed inside the template and user text as ordinary text, as the reference does.
 *
 * Threads: rendering is a pure function. A harmony_parser belongs to one request. */
#ifndef MG_HARMONY_H
#define MG_HARMONY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "tok.h"

typedef enum harmony_role {
    HARMONY_SYSTEM = 0, /* OpenAI "system" and "developer" turns: become developer instructions */
    HARMONY_USER,
    HARMONY_ASSISTANT,
    HARMONY_TOOL, /* a tool's result; name is the function name ("get_weather") */
} harmony_role;

typedef enum harmony_effort {
    HARMONY_EFFORT_MEDIUM = 0, /* the default */
    HARMONY_EFFORT_LOW,
    HARMONY_EFFORT_HIGH,
} harmony_effort;

/* A function tool. parameters_json is a JSON Schema object as text (NULL: no arguments); its
 * properties render in the order they appear. */
typedef struct harmony_tool {
    const char *name;
    const char *description; /* may be NULL */
    const char *parameters_json;
} harmony_tool;

/* One turn. Strings are borrowed for the call. For an assistant turn, `content` is the final
 * answer, tool_name/tool_args a function call it made (rendered as the model writes it: the
 * commentary channel "to=functions.NAME <|constrain|>json", ended by <|call|>), `reasoning` its
 * analysis, rendered before the call only for a tool-calling turn after the last final answer
 * (the format drops chain of thought once answered and keeps it between tool calls). With a tool
 * call, `content` is a preamble on the commentary channel rather than a final answer. For a tool
 * turn, `name` is the function whose result `content` is. */
typedef struct harmony_msg {
    harmony_role role;
    const char *content;   /* may be NULL (assistant turn with only a tool call) */
    const char *reasoning; /* assistant only, may be NULL */
    const char *tool_name; /* assistant only: the function it called, or NULL */
    const char *tool_args; /* assistant only: JSON arguments of that call */
    const char *name;      /* tool only: the function name */
} harmony_msg;

typedef struct harmony_request {
    const char
        *model_identity; /* NULL: "You are ChatGPT, a large language model trained by OpenAI." */
    const char *knowledge_cutoff; /* NULL: "2024-06" */
    const char *current_date;     /* "YYYY-MM-DD"; NULL: omitted */
    harmony_effort effort;
    const harmony_tool *tools;
    size_t n_tools;
    const harmony_msg *msgs;
    size_t n_msgs;
} harmony_request;

/* Render the request as harmony text, ending with "<|start|>assistant", appended to *out
 * (growable, caller-owned, NUL-terminated; *len the length so far). The system/developer turns
 * are joined (blank line between) into the developer instructions. Valid channels are
 * "analysis, commentary, final", or "analysis, final" when there are no tools. MG_EINVAL (with
 * the field named) for a bad tool schema or a tool turn without a name. */
mg_status harmony_render(const harmony_request *r, char **out, size_t *len, size_t *cap);
/* The same, as token ids appended to *ids (growable, caller-owned): the template's specials
 * become their ids, user-supplied text is encoded as ordinary text (its "<|...|>" stay text). */
mg_status harmony_render_ids(const tok_t *t, const harmony_request *r, uint32_t **ids, size_t *n,
                             size_t *cap);

/* Stop tokens for an assistant completion: <|return|> and <|call|> (never <|end|>). */
bool harmony_is_stop(uint32_t id);

/* ---- Incremental parsing of the model's output ---- */

typedef enum harmony_kind {
    HARMONY_NONE = 0,  /* nothing new for the client (header tokens, <|end|>) */
    HARMONY_REASONING, /* text of the analysis channel -> reasoning_content */
    HARMONY_CONTENT,   /* text of the final channel (or commentary preamble) -> content */
    HARMONY_TOOL_ARGS, /* argument text of the tool call tool_index */
} harmony_kind;

/* What one fed token produced. Pointers stay valid until the next feed or destroy. */
typedef struct harmony_event {
    harmony_kind kind;
    const char *text; /* the delta (complete UTF-8 only), len bytes, NUL-terminated */
    size_t len;
    bool tool_begin;       /* a new tool call starts (its text may be empty) */
    int tool_index;        /* 0-based index of the current tool call, -1 when none */
    const char *tool_name; /* with HARMONY_TOOL_ARGS: "get_weather" ("functions." removed) */
    bool stop;             /* <|return|> or <|call|>: the completion is over */
} harmony_event;

typedef struct harmony_parser harmony_parser;
/* The parser starts inside an assistant header (the prompt ended with "<|start|>assistant"). */
harmony_parser *harmony_parser_create(const tok_t *t);
void harmony_parser_destroy(harmony_parser *p);
/* Feed one token id. MG_EPROTO (with detail) for output that breaks the format (text where a
 * <|start|> is due, a header that cannot be read); the parser then skips to the next
 * <|start|>, so a caller may go on feeding. */
mg_status harmony_parser_feed(harmony_parser *p, uint32_t id, harmony_event *ev);
/* Totals so far (NUL-terminated, owned by the parser): whole reasoning, content, and the tool
 * calls' names and arguments. Handy for non-streaming responses. */
const char *harmony_parser_reasoning(const harmony_parser *p);
const char *harmony_parser_content(const harmony_parser *p);
int harmony_parser_tool_count(const harmony_parser *p);
const char *harmony_parser_tool_name(const harmony_parser *p, int i);
const char *harmony_parser_tool_args(const harmony_parser *p, int i);

#endif
