/* test_harmony.c - harmony rendering against the examples of the format's documentation
 * (openai/harmony docs/format.md, rebuilt here from those facts), rendering to ids, and the
 * incremental parser on interleaved analysis / commentary / final streams fed one token at a
 * time, with the stream cut at every token boundary. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "harmony.h"
#include "tok.h"

static const char *ranks_path(void) {
    const char *p = getenv("MAGNETO_TOK_RANKS");
    return p && *p ? p : MG_TOK_RANKS;
}

/* The documentation's tools: get_location takes nothing; the weather functions take schemas. */
static const harmony_tool doc_tools[] = {
    {"get_location", "Gets the location of the user.", NULL},
    {"get_current_weather", "Gets the current weather in the provided location.",
     "{\"type\":\"object\",\"properties\":{\"location\":{\"type\":\"string\",\"description\":"
     "\"The city and state, e.g. San Francisco, CA\"},\"format\":{\"type\":\"string\",\"enum\":["
     "\"celsius\",\"fahrenheit\"],\"default\":\"celsius\"}},\"required\":[\"location\"]}"},
    {"get_multiple_weathers", "Gets the current weather in the provided list of locations.",
     "{\"type\":\"object\",\"properties\":{\"locations\":{\"type\":\"array\",\"items\":{\"type\":"
     "\"string\"},\"description\":\"List of city and state, e.g. [\\\"San Francisco, CA\\\", "
     "\\\"New York, NY\\\"]\"},\"format\":{\"type\":\"string\",\"enum\":[\"celsius\","
     "\"fahrenheit\"],\"default\":\"celsius\"}},\"required\":[\"locations\"]}"},
};

#define DOC_SYSTEM                                                                                 \
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"       \
    "Knowledge cutoff: 2024-06\n"                                                                  \
    "Current date: 2025-06-28\n\n"                                                                 \
    "Reasoning: high\n\n"                                                                          \
    "# Valid channels: analysis, commentary, final. Channel must be included for every "           \
    "message.\n"                                                                                   \
    "Calls to these tools must go to the commentary channel: 'functions'.<|end|>"

#define DOC_DEVELOPER                                                                              \
    "<|start|>developer<|message|># Instructions\n\n"                                              \
    "Use a friendly tone.\n\n"                                                                     \
    "# Tools\n\n"                                                                                  \
    "## functions\n\n"                                                                             \
    "namespace functions {\n\n"                                                                    \
    "// Gets the location of the user.\n"                                                          \
    "type get_location = () => any;\n\n"                                                           \
    "// Gets the current weather in the provided location.\n"                                      \
    "type get_current_weather = (_: {\n"                                                           \
    "// The city and state, e.g. San Francisco, CA\n"                                              \
    "location: string,\n"                                                                          \
    "format?: \"celsius\" | \"fahrenheit\", // default: celsius\n"                                 \
    "}) => any;\n\n"                                                                               \
    "// Gets the current weather in the provided list of locations.\n"                             \
    "type get_multiple_weathers = (_: {\n"                                                         \
    "// List of city and state, e.g. [\"San Francisco, CA\", \"New York, NY\"]\n"                  \
    "locations: string[],\n"                                                                       \
    "format?: \"celsius\" | \"fahrenheit\", // default: celsius\n"                                 \
    "}) => any;\n\n"                                                                               \
    "} // namespace functions<|end|>"

static char *render(const harmony_request *r) {
    char *out = NULL;
    size_t len = 0, cap = 0;
    mg_status st = harmony_render(r, &out, &len, &cap);
    CHECK_OK(st);
    if (st) {
        free(out);
        return NULL;
    }
    CHECK_EQ_INT(strlen(out), len);
    return out;
}

static void check_same(const char *got, const char *want, const char *what) {
    if (got && strcmp(got, want) == 0) {
        CHECK(1);
        return;
    }
    size_t i = 0;
    while (got && got[i] && got[i] == want[i]) i++;
    CHECK_MSG(0, "%s differs at byte %zu:\n--- got ---\n%s\n--- want ---\n%s", what, i,
              got ? got + i : "(null)", want + i);
}

static void doc_examples(void) {
    /* "Function calling": system + developer with three tools + the user's question. */
    harmony_msg msgs[] = {
        {.role = HARMONY_SYSTEM, .content = "Use a friendly tone."},
        {.role = HARMONY_USER, .content = "What is the weather like in SF?"},
    };
    harmony_request r = {.current_date = "2025-06-28",
                         .effort = HARMONY_EFFORT_HIGH,
                         .tools = doc_tools,
                         .n_tools = 3,
                         .msgs = msgs,
                         .n_msgs = 2};
    char *got = render(&r);
    check_same(got,
               DOC_SYSTEM DOC_DEVELOPER
               "<|start|>user<|message|>What is the weather like in SF?<|end|><|start|>assistant",
               "function-calling example");
    free(got);

    /* "Handling tool calls": the analysis and the call kept, then the tool's result. */
    harmony_msg msgs2[] = {
        {.role = HARMONY_SYSTEM, .content = "Use a friendly tone."},
        {.role = HARMONY_USER, .content = "What is the weather like in SF?"},
        {.role = HARMONY_ASSISTANT,
         .reasoning = "Need to use function get_weather.",
         .tool_name = "get_weather",
         .tool_args = "{\"location\":\"San Francisco\"}"},
        {.role = HARMONY_TOOL,
         .name = "get_weather",
         .content = "{\"sunny\": true, \"temperature\": 20}"},
    };
    r.msgs = msgs2, r.n_msgs = 4;
    got = render(&r);
    check_same(
        got,
        DOC_SYSTEM DOC_DEVELOPER
        "<|start|>user<|message|>What is the weather like in SF?<|end|>"
        "<|start|>assistant<|channel|>analysis<|message|>Need to use function get_weather.<|end|>"
        "<|start|>assistant<|channel|>commentary to=functions.get_weather "
        "<|constrain|>json<|message|>{\"location\":\"San Francisco\"}<|call|>"
        "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{\"sunny\": "
        "true, \"temperature\": 20}<|end|><|start|>assistant",
        "tool-result example");
    free(got);

    /* "Developer message format" without tools, and the system message's default effort. */
    harmony_msg msgs3[] = {{.role = HARMONY_SYSTEM, .content = "{instructions}"},
                           {.role = HARMONY_USER, .content = "What is 2 + 2?"}};
    harmony_request r3 = {.current_date = "2025-06-28", .msgs = msgs3, .n_msgs = 2};
    got = render(&r3);
    check_same(got,
               "<|start|>system<|message|>You are ChatGPT, a large language model trained by "
               "OpenAI.\nKnowledge cutoff: 2024-06\nCurrent date: 2025-06-28\n\nReasoning: "
               "medium\n\n# Valid channels: analysis, final. Channel must be included for every "
               "message.<|end|>"
               "<|start|>developer<|message|># Instructions\n\n{instructions}<|end|>"
               "<|start|>user<|message|>What is 2 + 2?<|end|><|start|>assistant",
               "developer-message example");
    free(got);

    /* History: the earlier analysis is dropped once a final answer exists. */
    harmony_msg msgs4[] = {
        {.role = HARMONY_USER, .content = "What is 2 + 2?"},
        {.role = HARMONY_ASSISTANT, .reasoning = "Simple arithmetic.", .content = "2 + 2 = 4."},
        {.role = HARMONY_USER, .content = "What about 9 / 2?"},
    };
    harmony_request r4 = {.effort = HARMONY_EFFORT_LOW, .msgs = msgs4, .n_msgs = 3};
    got = render(&r4);
    check_same(got,
               "<|start|>system<|message|>You are ChatGPT, a large language model trained by "
               "OpenAI.\nKnowledge cutoff: 2024-06\n\nReasoning: low\n\n# Valid channels: "
               "analysis, final. Channel must be included for every message.<|end|>"
               "<|start|>user<|message|>What is 2 + 2?<|end|>"
               "<|start|>assistant<|channel|>final<|message|>2 + 2 = 4.<|end|>"
               "<|start|>user<|message|>What about 9 / 2?<|end|><|start|>assistant",
               "history example");
    free(got);
}

static void preamble_case(void) {
    /* Text beside a call is a commentary preamble; the analysis before it is kept. */
    harmony_msg msgs[] = {
        {.role = HARMONY_USER, .content = "Weather?"},
        {.role = HARMONY_ASSISTANT,
         .reasoning = "Call it.",
         .content = "Let me check.",
         .tool_name = "get_weather",
         .tool_args = "{}"},
        {.role = HARMONY_TOOL, .name = "get_weather", .content = "sunny"},
    };
    harmony_tool tool = {"get_weather", NULL, NULL};
    harmony_request r = {.tools = &tool, .n_tools = 1, .msgs = msgs, .n_msgs = 3};
    char *got = render(&r);
    CHECK(got &&
          strstr(got, "<|start|>user<|message|>Weather?<|end|>"
                      "<|start|>assistant<|channel|>analysis<|message|>Call it.<|end|>"
                      "<|start|>assistant<|channel|>commentary<|message|>Let me check.<|end|>"
                      "<|start|>assistant<|channel|>commentary to=functions.get_weather "
                      "<|constrain|>json<|message|>{}<|call|>"
                      "<|start|>functions.get_weather to=assistant<|channel|>commentary"
                      "<|message|>sunny<|end|><|start|>assistant"));
    CHECK(got && strstr(got, "type get_weather = () => any;\n\n} // namespace functions"));
    free(got);
}

static void schema_cases(void) {
    /* Nested objects, numbers, booleans, nullable, type arrays, oneOf, non-enum defaults. */
    harmony_tool t = {
        "f", "Line one.\nLine two.",
        "{\"type\":\"object\",\"properties\":{"
        "\"n\":{\"type\":\"integer\",\"default\":10},"
        "\"flag\":{\"type\":\"boolean\"},"
        "\"name\":{\"type\":\"string\",\"default\":\"x\",\"nullable\":true},"
        "\"mixed\":{\"type\":[\"number\",\"string\"]},"
        "\"opt\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\"}},\"required\":["
        "\"a\"]},"
        "\"u\":{\"description\":\"pick\",\"oneOf\":[{\"type\":\"string\"},{\"type\":\"number\","
        "\"description\":\"a number\"}]}},"
        "\"required\":[\"n\"]}"};
    harmony_request r = {.tools = &t, .n_tools = 1};
    char *got = render(&r);
    const char *want = "// Line one.\n// Line two.\n"
                       "type f = (_: {\n"
                       "n: number, // default: 10\n"
                       "flag?: boolean,\n"
                       "name?: string | null, // default: \"x\"\n"
                       "mixed?: number | string,\n"
                       "opt?: {\n"
                       "    a: number,\n"
                       "    },\n"
                       "// pick\n"
                       "u?:\n"
                       " | string\n"
                       " | number // a number\n"
                       ",\n"
                       "}) => any;\n";
    CHECK_MSG(got && strstr(got, want), "schema rendering:\n%s\n--- want ---\n%s", got, want);
    free(got);

    harmony_tool bad = {"g", NULL, "{not json"};
    r.tools = &bad;
    char *out = NULL;
    size_t len = 0, cap = 0;
    CHECK_EQ_INT(harmony_render(&r, &out, &len, &cap), MG_EINVAL);
    CHECK(strstr(mg_err_msg(), "tools[0]") != NULL);
    harmony_msg m = {.role = HARMONY_TOOL, .content = "{}"};
    harmony_request r2 = {.msgs = &m, .n_msgs = 1};
    CHECK_EQ_INT(harmony_render(&r2, &out, &len, &cap), MG_EINVAL);
    CHECK(strstr(mg_err_msg(), "messages[0]") != NULL);
    free(out);
}

static void render_ids(const tok_t *t) {
    harmony_msg msgs[] = {{.role = HARMONY_USER, .content = "What is 2 + 2? <|end|>"}};
    harmony_request r = {.msgs = msgs, .n_msgs = 1};
    uint32_t *ids = NULL;
    size_t n = 0, cap = 0;
    CHECK_OK(harmony_render_ids(t, &r, &ids, &n, &cap));
    /* Ends with <|start|>assistant; user text stays text even where it looks special. */
    CHECK(n > 4 && ids[n - 2] == TOK_START && ids[n - 1] == 173781);
    CHECK_EQ_INT(ids[0], TOK_START);
    size_t specials = 0;
    for (size_t i = 0; i < n; i++) specials += tok_is_special(t, ids[i]);
    CHECK_EQ_INT(specials, 7); /* system: start, message, end; user: start, message, end; start */
    char *text = NULL, *rendered = NULL;
    size_t tl = 0, tc = 0, rl = 0, rc = 0;
    CHECK_OK(tok_decode(t, ids, n, &text, &tl, &tc));
    CHECK_OK(harmony_render(&r, &rendered, &rl, &rc));
    CHECK(text && rendered && strcmp(text, rendered) == 0);
    /* The user message is "<|start|>user<|message|>" + ordinary ids of the content. */
    uint32_t *cids = NULL;
    size_t cn = 0, ccap = 0;
    CHECK_OK(tok_encode(t, msgs[0].content, strlen(msgs[0].content), TOK_SPECIAL_TEXT, &cids, &cn,
                        &ccap));
    CHECK(n > cn + 3 && memcmp(ids + n - 3 - cn, cids, cn * sizeof *ids) == 0);
    free(cids);
    free(text);
    free(rendered);
    free(ids);
}

/* ---- parsing */

typedef struct collected {
    char reasoning[4096], content[4096], args[4][1024], names[4][64];
    int ntools, stops, begins, errors;
} collected;

static void collect(collected *c, const harmony_event *ev, mg_status st) {
    if (st) c->errors++;
    CHECK_EQ_INT(strlen(ev->text), ev->len);
    /* Every delta is whole UTF-8. */
    CHECK_EQ_INT(tok_utf8_valid_prefix(ev->text, ev->len), ev->len);
    if (ev->kind == HARMONY_REASONING) strncat(c->reasoning, ev->text, 4000 - strlen(c->reasoning));
    if (ev->kind == HARMONY_CONTENT) strncat(c->content, ev->text, 4000 - strlen(c->content));
    if (ev->tool_begin) {
        c->begins++;
        CHECK(ev->tool_index == c->ntools);
        if (c->ntools < 4) snprintf(c->names[c->ntools], 64, "%s", ev->tool_name);
        c->ntools++;
    }
    if (ev->kind == HARMONY_TOOL_ARGS && ev->tool_index >= 0 && ev->tool_index < 4)
        strncat(c->args[ev->tool_index], ev->text, 1000 - strlen(c->args[ev->tool_index]));
    if (ev->stop) c->stops++;
}

/* Encode a model output written as text (specials allowed), the prompt's "<|start|>assistant"
 * already consumed. */
static uint32_t *output_ids(const tok_t *t, const char *text, size_t *n) {
    uint32_t *ids = NULL;
    size_t cap = 0;
    *n = 0;
    CHECK_OK(tok_encode(t, text, strlen(text), TOK_SPECIAL_ALLOW, &ids, n, &cap));
    return ids;
}

static void parse_doc_stream(const tok_t *t) {
    /* The token ids of the documentation's StreamableParser example. */
    static const uint32_t doc[] = {
        200005, 35644, 200008, 1844,  31064, 25,  392,   4827, 382, 220,    17,     659,
        220,    17,    16842,  12295, 81645, 13,  51441, 6052, 13,  200007, 200006, 173781,
        200005, 17196, 200008, 17,    659,   220, 17,    314,  220, 19,     13,     200002};
    harmony_parser *p = harmony_parser_create(t);
    collected c = {0};
    harmony_event ev;
    for (size_t i = 0; i < sizeof doc / sizeof doc[0]; i++)
        collect(&c, &ev, harmony_parser_feed(p, doc[i], &ev));
    CHECK_EQ_STR(c.reasoning, "User asks: \"What is 2 + 2?\" Simple arithmetic. Provide answer.");
    CHECK_EQ_STR(c.content, "2 + 2 = 4.");
    CHECK_EQ_STR(harmony_parser_content(p), "2 + 2 = 4.");
    CHECK_EQ_INT(c.stops, 1);
    CHECK_EQ_INT(c.errors, 0);
    harmony_parser_destroy(p);
}

static void parse_interleaved(const tok_t *t) {
    /* analysis, a preamble, two tool calls (recipient in the channel part and in the role part),
     * more analysis with characters that tokens split, a final answer. */
    const char *out =
        "<|channel|>analysis<|message|>Need two calls: 東京 and Zürich 🌦️.<|end|>"
        "<|start|>assistant<|channel|>commentary<|message|>Checking the weather…<|end|>"
        "<|start|>assistant<|channel|>commentary to=functions.get_weather "
        "<|constrain|>json<|message|>{\"location\":\"東京\"}<|call|>";
    const char *out2 =
        "<|start|>assistant to=functions.get_weather<|channel|>commentary "
        "json<|message|>{\"location\":\"Zürich\"}<|end|>"
        "<|start|>assistant<|channel|>analysis<|message|>Both sunny 😀.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Sunny in 東京 and Zürich.<|return|>";
    size_t n1, n2;
    uint32_t *a = output_ids(t, out, &n1), *b = output_ids(t, out2, &n2);
    size_t n = n1 + n2;
    uint32_t *ids = malloc(n * sizeof *ids);
    memcpy(ids, a, n1 * sizeof *ids);
    memcpy(ids + n1, b, n2 * sizeof *ids);
    /* The emoji and CJK must come out of byte tokens: check the stream has split characters. */
    int split = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *piece = tok_piece(t, ids[i], &len);
        if (!tok_is_special(t, ids[i]) && tok_utf8_valid_prefix(piece, len) != len) split = 1;
    }
    CHECK(split);

    /* Every byte boundary of the text becomes a token boundary in some variant: variant k
     * feeds token k as its single bytes (variant n feeds every token so), the rest as they
     * are. Each must give the same reasoning, content and calls, in whole characters. */
    size_t most = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        tok_piece(t, ids[i], &len);
        most += len;
    }
    uint32_t *v = malloc(most * sizeof *v);
    for (size_t k = 0; k <= n; k++) {
        size_t vn = 0;
        for (size_t i = 0; i < n; i++) {
            size_t len;
            const char *piece = tok_piece(t, ids[i], &len);
            if ((i == k || k == n) && !tok_is_special(t, ids[i]) && len > 1) {
                for (size_t j = 0; j < len; j++) v[vn++] = (uint32_t)tok_rank(t, piece + j, 1);
            } else {
                v[vn++] = ids[i];
            }
        }
        harmony_parser *p = harmony_parser_create(t);
        collected c = {0};
        harmony_event ev;
        for (size_t i = 0; i < vn; i++) collect(&c, &ev, harmony_parser_feed(p, v[i], &ev));
        int ok = strcmp(c.reasoning,
                        "Need two calls: 東京 and Zürich 🌦️.Both sunny 😀.") == 0 &&
                 strcmp(c.content, "Checking the weather…Sunny in 東京 and Zürich.") == 0 &&
                 c.ntools == 2 && strcmp(c.names[0], "get_weather") == 0 &&
                 strcmp(c.names[1], "get_weather") == 0 &&
                 strcmp(c.args[0], "{\"location\":\"東京\"}") == 0 &&
                 strcmp(c.args[1], "{\"location\":\"Zürich\"}") == 0 && c.stops == 2;
        CHECK_MSG(ok, "variant %zu: reasoning \"%s\" content \"%s\" tools %d args0 %s args1 %s", k,
                  c.reasoning, c.content, c.ntools, c.args[0], c.args[1]);
        /* The <|call|> in the middle ends the first completion (a client stops there); the
         * parser still reads the messages of a resumed completion after it. */
        CHECK_EQ_INT(c.errors, 0);
        CHECK_EQ_INT(harmony_parser_tool_count(p), 2);
        CHECK_EQ_STR(harmony_parser_reasoning(p),
                     "Need two calls: 東京 and Zürich 🌦️.Both sunny 😀.");
        CHECK_EQ_STR(harmony_parser_tool_name(p, 1), "get_weather");
        CHECK_EQ_STR(harmony_parser_tool_args(p, 1), "{\"location\":\"Zürich\"}");
        harmony_parser_destroy(p);
        if (!ok) break;
    }
    free(v);
    free(a);
    free(b);
    free(ids);
}

static void parse_errors(const tok_t *t) {
    harmony_parser *p = harmony_parser_create(t);
    harmony_event ev;
    size_t n;
    uint32_t *ids = output_ids(t,
                               "<|channel|>final<|message|>hi<|end|>oops<|start|>assistant"
                               "<|channel|>final<|message|> there<|return|>",
                               &n);
    int errors = 0;
    char content[256] = "";
    for (size_t i = 0; i < n; i++) {
        mg_status st = harmony_parser_feed(p, ids[i], &ev);
        if (st) {
            errors++;
            CHECK_EQ_INT(st, MG_EPROTO);
        }
        if (ev.kind == HARMONY_CONTENT) strncat(content, ev.text, 200);
    }
    CHECK(errors >= 1); /* "oops" where <|start|> is due */
    CHECK_EQ_STR(content, "hi there");
    CHECK_EQ_INT(harmony_parser_feed(p, TOK_VOCAB_SIZE + 5, &ev), MG_EINVAL);
    free(ids);
    harmony_parser_destroy(p);
    CHECK(harmony_is_stop(TOK_RETURN) && harmony_is_stop(TOK_CALL) && !harmony_is_stop(TOK_END));
}

/* Random token streams (specials included) never crash the parser or leave it stuck. */
static void parse_fuzz(const tok_t *t) {
    static const uint32_t specials[] = {TOK_START,     TOK_END,  TOK_MESSAGE, TOK_CHANNEL,
                                        TOK_CONSTRAIN, TOK_CALL, TOK_RETURN,  TOK_ENDOFTEXT};
    uint64_t x = 42;
    for (int iter = 0; iter < 300; iter++) {
        harmony_parser *p = harmony_parser_create(t);
        harmony_event ev;
        for (int i = 0; i < 200; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t id =
                (x >> 33) % 4 == 0 ? specials[(x >> 40) % 8] : (uint32_t)((x >> 20) % 200000);
            mg_status st = harmony_parser_feed(p, id, &ev);
            CHECK(st == MG_OK || st == MG_EPROTO);
            CHECK(ev.text != NULL && strlen(ev.text) == ev.len);
        }
        /* After any of that, a well-formed message still parses. */
        uint32_t tail[] = {TOK_START, 173781, TOK_CHANNEL, 17196, TOK_MESSAGE, 17, TOK_RETURN};
        char content[64] = "";
        for (size_t i = 0; i < sizeof tail / sizeof tail[0]; i++) {
            harmony_parser_feed(p, tail[i], &ev);
            if (ev.kind == HARMONY_CONTENT) strncat(content, ev.text, 32);
        }
        CHECK_EQ_STR(content, "2");
        harmony_parser_destroy(p);
    }
}

int main(void) {
    doc_examples();
    preamble_case();
    schema_cases();
    tok_t *t = NULL;
    CHECK_MSG(tok_load_tiktoken(ranks_path(), &t) == MG_OK, "load %s: %s", ranks_path(),
              mg_err_msg());
    if (t) {
        render_ids(t);
        parse_doc_stream(t);
        parse_interleaved(t);
        parse_errors(t);
        parse_fuzz(t);
    }
    tok_destroy(t);
    return check_done();
}
