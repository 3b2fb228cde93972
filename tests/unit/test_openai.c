/* test_openai.c - OpenAI request parsing and validation (a table of bad requests, each with its
 * status, error code and field), the SSE and response writers (their output parsed back with
 * jansson), JSON escaping of arbitrary bytes, and stop strings split across tokens. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "openai.h"
#include "stopstr.h"

typedef struct bad_case {
    oai_endpoint ep;
    const char *body;
    int status;
    const char *code;  /* expected error code */
    const char *param; /* expected param ("" = null) */
} bad_case;

static const bad_case bad[] = {
    {OAI_CHAT, "{", 400, "invalid_json", ""},
    {OAI_CHAT, "[1,2]", 400, "invalid_json", ""},
    {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 400,
     "missing_required_parameter", "model"},
    {OAI_CHAT, "{\"model\":5,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 400,
     "invalid_type", "model"},
    {OAI_CHAT, "{\"model\":\"m\"}", 400, "missing_required_parameter", "messages"},
    {OAI_CHAT, "{\"model\":\"m\",\"messages\":\"hi\"}", 400, "invalid_type", "messages"},
    {OAI_CHAT, "{\"model\":\"m\",\"messages\":[]}", 400, "invalid_value", "messages"},
    {OAI_CHAT, "{\"model\":\"m\",\"messages\":[{\"content\":\"hi\"}]}", 400,
     "missing_required_parameter", "messages[0].role"},
    {OAI_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"wizard\",\"content\":\"hi\"}]}", 400,
     "invalid_value", "messages[0].role"},
    {OAI_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\","
     "\"content\":7}]}",
     400, "invalid_type", "messages[1].content"},
    {OAI_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}", 400,
     "missing_required_parameter", "messages[0].content"},
    {OAI_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
     400, "invalid_value", "messages[0].content[0]"},
    {OAI_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":\"9\"}",
     400, "invalid_type", "max_tokens"},
    {OAI_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":0}", 400,
     "invalid_value", "max_tokens"},
    {OAI_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
     "\"max_completion_tokens\":-3}",
     400, "invalid_value", "max_completion_tokens"},
    {OAI_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":3}",
     400, "invalid_value", "temperature"},
    {OAI_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":"
     "\"hot\"}",
     400, "invalid_type", "temperature"},
    {OAI_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_p\":0}",
     400, "invalid_value", "top_p"},
    {OAI_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_k\":1.5}", 400,
     "invalid_type", "top_k"},
    {OAI_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"seed\":\"s\"}", 400,
     "invalid_type", "seed"},
    {OAI_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":2}",
     400, "invalid_value", "n"},
    {OAI_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":\"yes\"}",
     400, "invalid_type", "stream"},
    {OAI_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream_options\":{"
     "\"include_usage\":true}}",
     400, "invalid_value", "stream_options"},
    {OAI_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":true,"
     "\"stream_options\":{\"include_usage\":1}}",
     400, "invalid_type", "stream_options.include_usage"},
    {OAI_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[\"a\",3]}",
     400, "invalid_type", "stop[1]"},
    {OAI_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":{}}",
     400, "invalid_type", "stop"},
    {OAI_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"reasoning_effort\":"
     "\"max\"}",
     400, "invalid_value", "reasoning_effort"},
    {OAI_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":{}}", 400,
     "invalid_type", "tools"},
    {OAI_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
     "\"function\",\"function\":{\"name\":\"f\",\"parameters\":[]}}]}",
     400, "invalid_type", "tools[0].function.parameters"},
    {OAI_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":"
     "\"sometimes\"}",
     400, "invalid_value", "tool_choice"},
    {OAI_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
     "\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":{\"type\":\"function\","
     "\"function\":{\"name\":\"g\"}}}",
     400, "invalid_value", "tool_choice.function.name"},
    {OAI_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"nvext\":{"
     "\"ignore_eos\":\"true\"}}",
     400, "invalid_type", "nvext.ignore_eos"},
    {OAI_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":5,"
     "\"min_tokens\":9}",
     400, "invalid_value", "min_tokens"},
    {OAI_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"user\":42}",
     400, "invalid_type", "user"},
    {OAI_COMPLETIONS, "{\"model\":\"m\"}", 400, "missing_required_parameter", "prompt"},
    {OAI_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"\"}", 400, "invalid_value", "prompt"},
    {OAI_COMPLETIONS, "{\"model\":\"m\",\"prompt\":{}}", 400, "invalid_type", "prompt"},
    {OAI_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[1,\"x\"]}", 400, "invalid_value", "prompt"},
    {OAI_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[1,2.5]}", 400, "invalid_type", "prompt[1]"},
    {OAI_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[1,999999]}", 400, "invalid_value", "prompt[1]"},
    {OAI_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[-1]}", 400, "invalid_value", "prompt[0]"},
    {OAI_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"hi\",\"echo\":true}", 400, "invalid_value",
     "echo"},
};

static void test_bad_table(void) {
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const bad_case *b = &bad[i];
        oai_request r;
        oai_error e;
        mg_status s = oai_parse(b->ep, b->body, strlen(b->body), 201088, &r, &e);
        CHECK_MSG(s == MG_EINVAL, "case %zu (%s): status %d", i, b->body, s);
        if (s != MG_EINVAL) {
            oai_request_free(&r);
            continue;
        }
        CHECK_MSG(e.status == b->status, "case %zu: http %d, want %d (%s)", i, e.status, b->status,
                  e.message);
        CHECK_MSG(e.code && strcmp(e.code, b->code) == 0, "case %zu (%s): code %s, want %s (%s)", i,
                  b->body, e.code ? e.code : "(null)", b->code, e.message);
        CHECK_MSG(strcmp(e.param, b->param) == 0, "case %zu: param '%s', want '%s' (%s)", i,
                  e.param, b->param, e.message);
        /* The body is valid JSON with the four OpenAI fields. */
        oai_buf out = {0};
        CHECK_OK(oai_error_json(&e, &out));
        json_t *j = json_loads(out.p, 0, NULL);
        json_t *err = json_object_get(j, "error");
        CHECK_MSG(json_is_string(json_object_get(err, "message")), "case %zu: %s", i, out.p);
        CHECK(json_is_string(json_object_get(err, "type")));
        CHECK(b->param[0] ? json_is_string(json_object_get(err, "param"))
                          : json_is_null(json_object_get(err, "param")));
        CHECK_EQ_STR(json_string_value(json_object_get(err, "code")), b->code);
        json_decref(j);
        oai_buf_free(&out);
    }
}

static void test_good(void) {
    oai_request r;
    oai_error e;
    const char *chat =
        "{\"model\":\"gpt-oss\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
        "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"42\"}],"
        "\"max_tokens\":10,\"max_completion_tokens\":20,\"temperature\":0.5,\"top_p\":0.9,"
        "\"top_k\":40,\"seed\":7,\"stop\":[\"END\",\"\",\"##\"],\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},\"reasoning_effort\":\"low\","
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"description\":\"d\","
        "\"parameters\":{\"type\":\"object\"}}}],\"tool_choice\":\"auto\",\"user\":\"u1\","
        "\"nvext\":{\"ignore_eos\":true,\"min_tokens\":5},\"logprobs\":false}";
    CHECK_OK(oai_parse(OAI_CHAT, chat, strlen(chat), 201088, &r, &e));
    CHECK_EQ_STR(r.model, "gpt-oss");
    CHECK_EQ_INT(json_array_size(r.messages), 4);
    CHECK_EQ_INT(r.max_tokens, 20); /* max_completion_tokens wins */
    CHECK_EQ_INT(r.min_tokens, 5);
    CHECK(r.ignore_eos);
    CHECK_NEAR(r.temperature, 0.5, 1e-12);
    CHECK_NEAR(r.top_p, 0.9, 1e-12);
    CHECK_EQ_INT(r.top_k, 40);
    CHECK(r.has_seed && r.seed == 7);
    CHECK_EQ_INT(r.n_stop, 2); /* the empty stop string is dropped */
    CHECK_EQ_STR(r.stop[1], "##");
    CHECK(r.stream && r.include_usage);
    CHECK_EQ_STR(r.reasoning_effort, "low");
    CHECK(r.tools && json_array_size(r.tools) == 1);
    CHECK_EQ_STR(r.tool_choice, "auto");
    CHECK_EQ_STR(r.user, "u1");
    oai_request_free(&r);

    const char *defaults = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    CHECK_OK(oai_parse(OAI_CHAT, defaults, strlen(defaults), 0, &r, &e));
    CHECK_EQ_INT(r.max_tokens, -1);
    CHECK_NEAR(r.temperature, 1.0, 0);
    CHECK(!r.stream && !r.ignore_eos && r.n_stop == 0 && !r.tools);
    oai_request_free(&r);

    const char *ids = "{\"model\":\"m\",\"prompt\":[[1,2,3]],\"max_tokens\":4,\"ignore_eos\":true,"
                      "\"min_tokens\":4,\"stop\":\"\\n\"}";
    CHECK_OK(oai_parse(OAI_COMPLETIONS, ids, strlen(ids), 201088, &r, &e));
    CHECK_EQ_INT(r.n_prompt_ids, 3);
    CHECK(r.prompt_ids && r.prompt_ids[2] == 3);
    CHECK(r.ignore_eos && r.min_tokens == 4 && r.max_tokens == 4);
    CHECK_EQ_INT(r.n_stop, 1);
    oai_request_free(&r);

    const char *txt = "{\"model\":\"m\",\"prompt\":[\"hello\"],\"max_tokens\":5.0}";
    CHECK_OK(oai_parse(OAI_COMPLETIONS, txt, strlen(txt), 201088, &r, &e));
    CHECK(r.prompt_text && r.prompt_len == 5);
    CHECK_EQ_INT(r.max_tokens, 5);
    oai_request_free(&r);
}

/* Every SSE event is "data: <json>\n\n"; return the parsed JSON of the first one. */
static json_t *parse_event(const oai_buf *b) {
    CHECK(b->len > 8 && memcmp(b->p, "data: ", 6) == 0);
    CHECK(b->len >= 2 && b->p[b->len - 1] == '\n' && b->p[b->len - 2] == '\n');
    json_error_t je;
    json_t *j = json_loadb(b->p + 6, b->len - 8, 0, &je);
    CHECK_MSG(j != NULL, "%s: %s", b->p, je.text);
    return j;
}

static void test_sse(void) {
    oai_sse_head h;
    CHECK_OK(oai_sse_head_init(&h, OAI_CHAT, "chatcmpl-abc", 1700000000, "gpt-\"oss\""));
    oai_buf b = {0};
    /* Text with quotes, controls, a multi-byte character and an invalid byte. */
    const char text[] = "a\"b\\c\n\t\x01 \xC3\xA9 \xFF";
    CHECK_OK(oai_sse_text(&h, OAI_CONTENT, text, sizeof text - 1, &b));
    json_t *j = parse_event(&b);
    CHECK_EQ_STR(json_string_value(json_object_get(j, "id")), "chatcmpl-abc");
    CHECK_EQ_STR(json_string_value(json_object_get(j, "object")), "chat.completion.chunk");
    CHECK_EQ_STR(json_string_value(json_object_get(j, "model")), "gpt-\"oss\"");
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "created")), 1700000000);
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(c0, "delta"), "content")),
                 "a\"b\\c\n\t\x01 \xC3\xA9 \xEF\xBF\xBD");
    CHECK(json_is_null(json_object_get(c0, "finish_reason")));
    json_decref(j);

    b.len = 0;
    CHECK_OK(oai_sse_text(&h, OAI_REASONING, "think", 5, &b));
    j = parse_event(&b);
    c0 = json_array_get(json_object_get(j, "choices"), 0);
    CHECK_EQ_STR(
        json_string_value(json_object_get(json_object_get(c0, "delta"), "reasoning_content")),
        "think");
    json_decref(j);

    b.len = 0;
    CHECK_OK(oai_sse_tool_call(&h, 0, "call_1", "get_weather", "{\"ci", 4, &b));
    j = parse_event(&b);
    c0 = json_array_get(json_object_get(j, "choices"), 0);
    json_t *tc = json_array_get(json_object_get(json_object_get(c0, "delta"), "tool_calls"), 0);
    CHECK_EQ_STR(json_string_value(json_object_get(tc, "id")), "call_1");
    CHECK_EQ_STR(json_string_value(json_object_get(tc, "type")), "function");
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(tc, "function"), "name")),
                 "get_weather");
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(tc, "function"), "arguments")),
                 "{\"ci");
    json_decref(j);

    b.len = 0;
    CHECK_OK(oai_sse_finish(&h, OAI_FINISH_TOOL_CALLS, &b));
    j = parse_event(&b);
    c0 = json_array_get(json_object_get(j, "choices"), 0);
    CHECK_EQ_STR(json_string_value(json_object_get(c0, "finish_reason")), "tool_calls");
    json_decref(j);

    b.len = 0;
    oai_usage u = {12, 34, 0};
    CHECK_OK(oai_sse_usage(&h, &u, &b));
    j = parse_event(&b);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "choices")), 0);
    json_t *us = json_object_get(j, "usage");
    CHECK_EQ_INT(json_integer_value(json_object_get(us, "prompt_tokens")), 12);
    CHECK_EQ_INT(json_integer_value(json_object_get(us, "completion_tokens")), 34);
    CHECK_EQ_INT(json_integer_value(json_object_get(us, "total_tokens")), 46);
    json_decref(j);

    b.len = 0;
    CHECK_OK(oai_sse_done(&b));
    CHECK_EQ_STR(b.p, "data: [DONE]\n\n");
    oai_sse_head_free(&h);

    CHECK_OK(oai_sse_head_init(&h, OAI_COMPLETIONS, "cmpl-1", 1, "m"));
    b.len = 0;
    CHECK_OK(oai_sse_text(&h, OAI_CONTENT, "xy", 2, &b));
    j = parse_event(&b);
    CHECK_EQ_STR(json_string_value(json_object_get(j, "object")), "text_completion");
    c0 = json_array_get(json_object_get(j, "choices"), 0);
    CHECK_EQ_STR(json_string_value(json_object_get(c0, "text")), "xy");
    json_decref(j);
    oai_sse_head_free(&h);
    oai_buf_free(&b);
}

static void test_response(void) {
    oai_buf b = {0};
    oai_tool_call call = {.id = "call_x", .name = "f"};
    oai_buf_puts(&call.args, "{\"a\":1}");
    oai_usage u = {3, 4, 2};
    CHECK_OK(oai_response_json(OAI_CHAT, "chatcmpl-1", 5, "m", NULL, 0, "why", 3, &call, 1,
                               OAI_FINISH_TOOL_CALLS, &u, &b));
    json_t *j = json_loads(b.p, 0, NULL);
    CHECK_MSG(j != NULL, "%s", b.p);
    CHECK_EQ_STR(json_string_value(json_object_get(j, "object")), "chat.completion");
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    json_t *msg = json_object_get(c0, "message");
    CHECK_EQ_STR(json_string_value(json_object_get(msg, "role")), "assistant");
    CHECK(json_is_null(json_object_get(msg, "content")));
    CHECK_EQ_STR(json_string_value(json_object_get(msg, "reasoning_content")), "why");
    json_t *tc = json_array_get(json_object_get(msg, "tool_calls"), 0);
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(tc, "function"), "arguments")),
                 "{\"a\":1}");
    CHECK_EQ_STR(json_string_value(json_object_get(c0, "finish_reason")), "tool_calls");
    json_t *us = json_object_get(j, "usage");
    CHECK_EQ_INT(json_integer_value(json_object_get(us, "total_tokens")), 7);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(us, "prompt_tokens_details"),
                                                    "cached_tokens")),
                 2);
    json_decref(j);
    oai_buf_free(&call.args);

    b.len = 0;
    CHECK_OK(oai_response_json(OAI_COMPLETIONS, "cmpl-1", 5, "m", "out", 3, NULL, 0, NULL, 0,
                               OAI_FINISH_LENGTH, &u, &b));
    j = json_loads(b.p, 0, NULL);
    c0 = json_array_get(json_object_get(j, "choices"), 0);
    CHECK_EQ_STR(json_string_value(json_object_get(c0, "text")), "out");
    CHECK_EQ_STR(json_string_value(json_object_get(c0, "finish_reason")), "length");
    json_decref(j);
    oai_buf_free(&b);

    char id1[48], id2[48];
    oai_make_id(OAI_CHAT, id1);
    oai_make_id(OAI_CHAT, id2);
    CHECK(strncmp(id1, "chatcmpl-", 9) == 0 && strlen(id1) == 9 + 24);
    CHECK(strcmp(id1, id2) != 0);
}

/* Feed pieces, collect the released text. */
static int run_stop(const char *const *stops, int n, const char *const *pieces, int np, char *out,
                    size_t cap) {
    size_t lens[8] = {0};
    for (int i = 0; i < n; i++) lens[i] = strlen(stops[i]);
    stopstr m;
    stopstr_init(&m, stops, lens, n);
    size_t o = 0;
    int matched = 0;
    for (int i = 0; i < np && !matched; i++) {
        const char *r;
        size_t rn;
        matched = stopstr_feed(&m, pieces[i], strlen(pieces[i]), &r, &rn);
        memcpy(out + o, r, rn);
        o += rn;
    }
    if (!matched) {
        const char *r;
        size_t rn;
        stopstr_flush(&m, &r, &rn);
        memcpy(out + o, r, rn);
        o += rn;
    }
    out[o] = 0;
    stopstr_free(&m);
    return matched;
}

static void test_stop(void) {
    char out[256];
    const char *s1[] = {"STOP"};
    /* Split across three tokens. */
    const char *p1[] = {"hello S", "T", "OP world"};
    CHECK(run_stop(s1, 1, p1, 3, out, sizeof out));
    CHECK_EQ_STR(out, "hello ");
    /* A false start is released once it cannot match. */
    const char *p2[] = {"aS", "TO", "x", "yz"};
    CHECK(!run_stop(s1, 1, p2, 4, out, sizeof out));
    CHECK_EQ_STR(out, "aSTOxyz");
    /* The earliest of several stops wins; text before it survives. */
    const char *s3[] = {"world", "lo w"};
    const char *p3[] = {"hel", "lo wor", "ld"};
    CHECK(run_stop(s3, 2, p3, 3, out, sizeof out));
    CHECK_EQ_STR(out, "hel");
    /* Held-back prefix at the end is flushed. */
    const char *p4[] = {"abc ST"};
    CHECK(!run_stop(s1, 1, p4, 1, out, sizeof out));
    CHECK_EQ_STR(out, "abc ST");
    /* No stop strings: everything passes. */
    const char *p5[] = {"x", "y"};
    CHECK(!run_stop(NULL, 0, p5, 2, out, sizeof out));
    CHECK_EQ_STR(out, "xy");
    /* Released text never contains a prefix that later completes a stop. */
    size_t len1 = 4;
    stopstr m;
    stopstr_init(&m, s1, &len1, 1);
    const char *r;
    size_t rn;
    CHECK(!stopstr_feed(&m, "xxSTO", 5, &r, &rn));
    CHECK_EQ_INT(rn, 2);
    CHECK(stopstr_feed(&m, "P", 1, &r, &rn));
    CHECK_EQ_INT(rn, 0);
    stopstr_free(&m);
}

int main(void) {
    test_bad_table();
    test_good();
    test_sse();
    test_response();
    test_stop();
    return check_done();
}
