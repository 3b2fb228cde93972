/* test_frontend.c - the frontend end to end against real nats-server and etcd, with workers that
 * speak the real wire protocol (GenerateRequest in, GenerateChunk stream out over the bus, cards
 * in etcd through discovery) and play a scripted output, so that every answer is known exactly:
 *   - no workers: /health unhealthy and 503 on generate; a worker joins: /health lists it,
 *     /v1/models lists its model;
 *   - a table of bad requests over HTTP, each with its status and error code;
 *   - completions (text and token-id prompts), stream and not, usage, finish reasons;
 *   - chat: harmony output split into reasoning_content and content; a tool call;
 *   - a stop string split across tokens ends the stream and cancels the worker;
 *   - a client that disconnects cancels its request on the worker;
 *   - a worker lost mid-stream: with migration the stream completes with every token, without
 *     it the client gets an error event.
 * Servers: MAGNETO_NATS_URL / MAGNETO_ETCD_URL when set (tests/run.sh), else its own. */
#include <curl/curl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "check.h"
#include "discovery.h"
#include "frontend.h"
#include "harmony.h"
#include "log.h"
#include "openai.h"
#include "scripted_worker.h"
#include "spawn.h"
#include "tok.h"

#ifndef MG_TOK_RANKS
#define MG_TOK_RANKS ""
#endif

static char NS[64];
static const char *MODEL = "test/gpt-oss-tiny";
static tok_t *TOK;
static bus *BUS;
static etcd_client *ETCD;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- a scripted worker ---- */

/* What every worker plays: token k of a request's output is script[k] (a migrated request
 * resumes at its position), so the whole answer is known in advance. */
static pthread_mutex_t script_mu = PTHREAD_MUTEX_INITIALIZER;
static uint32_t *script;
static size_t n_script;

static void set_script(const char *text) {
    pthread_mutex_lock(&script_mu);
    size_t cap = 0;
    free(script);
    script = NULL;
    n_script = 0;
    if (tok_encode(TOK, text, strlen(text), TOK_SPECIAL_ALLOW, &script, &n_script, &cap))
        fprintf(stderr, "encode script: %s\n", mg_err_msg());
    pthread_mutex_unlock(&script_mu);
}

static void script_cb(void *ud, const uint32_t *prompt, size_t n_prompt, uint32_t **out,
                      size_t *n) {
    pthread_mutex_lock(&script_mu);
    *out = malloc((n_script ? n_script : 1) * sizeof **out);
    memcpy(*out, script, n_script * sizeof **out);
    *n = n_script;
    pthread_mutex_unlock(&script_mu);
}

static sworker *tw_start(int delay_us) {
    sworker *w = sworker_start(BUS, ETCD, NS, MODEL, 4096, script_cb, NULL);
    CHECK(w != NULL);
    if (w) w->delay_us = delay_us;
    return w;
}

static bool wait_workers(frontend *fe, size_t n) {
    for (int i = 0; i < 1000; i++) {
        if (frontend_workers(fe) == n) return true;
        usleep(10000);
    }
    return false;
}

/* ---- HTTP client ---- */

typedef struct resp {
    long status;
    oai_buf body;
    size_t abort_after;
    double t_end;
} resp;

static size_t on_data(char *p, size_t sz, size_t n, void *ud) {
    resp *r = ud;
    oai_buf_put(&r->body, p, sz * n);
    if (r->abort_after && r->body.len >= r->abort_after) return 0;
    return sz * n;
}

static void req(int port, const char *method, const char *path, const char *body, size_t abort,
                resp *r) {
    size_t keep = abort;
    memset(r, 0, sizeof *r);
    r->abort_after = keep;
    CURL *h = curl_easy_init();
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    r->t_end = now_s();
    if (!r->body.p) oai_buf_puts(&r->body, "");
}

/* A streamed answer, reassembled from its SSE events. */
typedef struct sse_result {
    int events;
    oai_buf content, reasoning, tool_name, tool_args;
    char finish[32];
    long usage_prompt, usage_completion;
    bool done, error, bad_json;
    char error_code[64];
} sse_result;

static void sse_parse(const char *body, sse_result *s) {
    memset(s, 0, sizeof *s);
    s->usage_prompt = s->usage_completion = -1;
    const char *p = body;
    while ((p = strstr(p, "data: "))) {
        p += 6;
        const char *e = strstr(p, "\n\n");
        if (!e) break;
        s->events++;
        if (e - p == 6 && !memcmp(p, "[DONE]", 6)) {
            s->done = true;
            p = e;
            continue;
        }
        json_t *j = json_loadb(p, (size_t)(e - p), 0, NULL);
        p = e;
        if (!j) {
            s->bad_json = true;
            continue;
        }
        json_t *err = json_object_get(j, "error");
        if (err) {
            s->error = true;
            const char *c = json_string_value(json_object_get(err, "code"));
            snprintf(s->error_code, sizeof s->error_code, "%s", c ? c : "");
        }
        json_t *u = json_object_get(j, "usage");
        if (json_is_object(u)) {
            s->usage_prompt = (long)json_integer_value(json_object_get(u, "prompt_tokens"));
            s->usage_completion = (long)json_integer_value(json_object_get(u, "completion_tokens"));
        }
        json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
        const char *fr = json_string_value(json_object_get(c0, "finish_reason"));
        if (fr) snprintf(s->finish, sizeof s->finish, "%s", fr);
        const char *text = json_string_value(json_object_get(c0, "text"));
        if (text) oai_buf_puts(&s->content, text);
        json_t *d = json_object_get(c0, "delta");
        const char *dc = json_string_value(json_object_get(d, "content"));
        if (dc) oai_buf_puts(&s->content, dc);
        const char *rc = json_string_value(json_object_get(d, "reasoning_content"));
        if (rc) oai_buf_puts(&s->reasoning, rc);
        json_t *tc = json_array_get(json_object_get(d, "tool_calls"), 0);
        json_t *fn = json_object_get(tc, "function");
        const char *nm = json_string_value(json_object_get(fn, "name"));
        if (nm) oai_buf_puts(&s->tool_name, nm);
        const char *ar = json_string_value(json_object_get(fn, "arguments"));
        if (ar) oai_buf_puts(&s->tool_args, ar);
        json_decref(j);
    }
    oai_buf_puts(&s->content, "");
    oai_buf_puts(&s->reasoning, "");
    oai_buf_puts(&s->tool_name, "");
    oai_buf_puts(&s->tool_args, "");
}

static void sse_free(sse_result *s) {
    oai_buf_free(&s->content);
    oai_buf_free(&s->reasoning);
    oai_buf_free(&s->tool_name);
    oai_buf_free(&s->tool_args);
}

static char *decode_script(size_t from, size_t n) {
    char *out = NULL;
    size_t len = 0, cap = 0;
    pthread_mutex_lock(&script_mu);
    if (from + n > n_script) n = n_script - from;
    tok_decode(TOK, script + from, n, &out, &len, &cap);
    pthread_mutex_unlock(&script_mu);
    if (!out) out = strdup("");
    return out;
}

static const char *err_code(const resp *r) {
    static char code[64];
    json_t *j = json_loads(r->body.p, 0, NULL);
    const char *c = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    snprintf(code, sizeof code, "%s", c ? c : "(none)");
    json_decref(j);
    return code;
}

static frontend *start_frontend(int migration_limit, const char *ranks, int timeout_ms) {
    fe_config cfg = {.host = "127.0.0.1",
                     .ns = NS,
                     .tokenizer = ranks,
                     .migration_limit = migration_limit,
                     .max_body = 64 * 1024,
                     .stream_timeout_ms = timeout_ms};
    frontend *fe = NULL;
    CHECK_OK(frontend_create(&cfg, &fe));
    return fe;
}

/* ---- the checks ---- */

typedef struct bad_http {
    const char *method, *path, *body;
    long status;
    const char *code;
} bad_http;

static void test_bad_requests(int port) {
    static char big[70 * 1024];
    memset(big, ' ', sizeof big - 1);
    memcpy(big, "{\"model\":\"x\"", 12);
    big[sizeof big - 2] = '}';
    char ctx_body[512];
    snprintf(ctx_body, sizeof ctx_body, "{\"model\":\"%s\",\"prompt\":[1,2,3],\"max_tokens\":4094}",
             MODEL);
    char chat_ctx[512];
    snprintf(chat_ctx, sizeof chat_ctx,
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
             "\"max_tokens\":100000}",
             MODEL);
    const bad_http cases[] = {
        {"POST", "/v1/chat/completions", "{\"model\":", 400, "invalid_json"},
        {"POST", "/v1/chat/completions", "", 400, "invalid_json"},
        {"POST", "/v1/chat/completions",
         "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":"
         "\"warm\"}",
         400, "invalid_type"},
        {"POST", "/v1/completions", "{\"model\":\"m\",\"prompt\":true}", 400, "invalid_type"},
        {"POST", "/v1/chat/completions",
         "{\"model\":\"no-such-model\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 404,
         "model_not_found"},
        {"POST", "/v1/completions", ctx_body, 400, "context_length_exceeded"},
        {"POST", "/v1/chat/completions", chat_ctx, 400, "context_length_exceeded"},
        {"POST", "/v1/completions", big, 413, "request_too_large"},
        {"GET", "/v1/chat/completions", NULL, 405, "method_not_allowed"},
        {"GET", "/v2/whatever", NULL, 404, "not_found"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        resp r;
        req(port, cases[i].method, cases[i].path, cases[i].body, 0, &r);
        CHECK_MSG(r.status == cases[i].status, "case %zu: status %ld, want %ld: %s", i, r.status,
                  cases[i].status, r.body.p);
        CHECK_MSG(!strcmp(err_code(&r), cases[i].code), "case %zu: code %s, want %s: %s", i,
                  err_code(&r), cases[i].code, r.body.p);
        oai_buf_free(&r.body);
    }
}

int main(int argc, char **argv) {
    mg_log_init("test_frontend", -1);
    curl_global_init(CURL_GLOBAL_ALL);
    const char *ranks = getenv("MAGNETO_TOK_RANKS");
    if (!ranks || !*ranks) ranks = MG_TOK_RANKS;
    CHECK_OK(tok_load_tiktoken(ranks, &TOK));
    if (!TOK) return check_done();
    snprintf(NS, sizeof NS, "fe%d", (int)getpid());

    spawn_srv nats = {0}, etcd = {0};
    const char *nurl = getenv("MAGNETO_NATS_URL"), *eurl = getenv("MAGNETO_ETCD_URL");
    if (!nurl || !*nurl) {
        if (spawn_nats(&nats)) return 1;
        nurl = nats.url;
    }
    if (!eurl || !*eurl) {
        if (spawn_etcd(&etcd, NULL)) return 1;
        eurl = etcd.url;
    }
    setenv("MAGNETO_NATS_URL", nurl, 1);
    setenv("MAGNETO_ETCD_URL", eurl, 1);
    bus_options bo;
    bus_options_default(&bo);
    bo.url = nurl;
    CHECK_OK(bus_connect(&bo, &BUS));
    CHECK_OK(etcd_client_create(eurl, 0, &ETCD));

    frontend *fe = start_frontend(0, ranks, 20000);
    if (!fe) return check_done();
    int port = frontend_port(fe);
    resp r;
    char body[2048];

    /* No workers: unhealthy, and generate is 503. */
    req(port, "GET", "/health", NULL, 0, &r);
    CHECK_EQ_INT(r.status, 503);
    CHECK(strstr(r.body.p, "\"unhealthy\"") != NULL);
    oai_buf_free(&r.body);
    snprintf(body, sizeof body, "{\"model\":\"%s\",\"prompt\":\"hi\"}", MODEL);
    req(port, "POST", "/v1/completions", body, 0, &r);
    CHECK_EQ_INT(r.status, 503);
    CHECK_EQ_STR(err_code(&r), "no_workers");
    oai_buf_free(&r.body);
    req(port, "GET", "/live", NULL, 0, &r);
    CHECK_EQ_INT(r.status, 200);
    oai_buf_free(&r.body);

    /* A worker joins. */
    set_script("Hello, world! This is a test of the magneto frontend, streaming tokens.");
    sworker *w1 = tw_start(0);
    CHECK(wait_workers(fe, 1));
    req(port, "GET", "/health", NULL, 0, &r);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.body.p, "\"healthy\"") && strstr(r.body.p, w1->subject));
    oai_buf_free(&r.body);
    req(port, "GET", "/v1/models", NULL, 0, &r);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.body.p, MODEL) != NULL);
    oai_buf_free(&r.body);

    test_bad_requests(port);

    /* Completions, not streamed, cut by max_tokens. */
    snprintf(body, sizeof body, "{\"model\":\"%s\",\"prompt\":\"Say hello\",\"max_tokens\":5}",
             MODEL);
    req(port, "POST", "/v1/completions", body, 0, &r);
    CHECK_EQ_INT(r.status, 200);
    json_t *j = json_loads(r.body.p, 0, NULL);
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    char *want = decode_script(0, 5);
    CHECK_EQ_STR(json_string_value(json_object_get(c0, "text")), want);
    CHECK_EQ_STR(json_string_value(json_object_get(c0, "finish_reason")), "length");
    json_t *u = json_object_get(j, "usage");
    CHECK_EQ_INT(json_integer_value(json_object_get(u, "completion_tokens")), 5);
    CHECK_EQ_INT(json_integer_value(json_object_get(u, "prompt_tokens")),
                 tok_count(TOK, "Say hello", 9));
    const char *rid = json_string_value(json_object_get(j, "id"));
    CHECK(rid && strncmp(rid, "cmpl-", 5) == 0);
    free(want);
    json_decref(j);
    oai_buf_free(&r.body);

    /* Completions streamed to the end of the script, with usage; a token-id prompt. */
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"prompt\":[9906,11,1879],\"max_tokens\":500,\"stream\":true,"
             "\"stream_options\":{\"include_usage\":true}}",
             MODEL);
    req(port, "POST", "/v1/completions", body, 0, &r);
    CHECK_EQ_INT(r.status, 200);
    sse_result s;
    sse_parse(r.body.p, &s);
    want = decode_script(0, n_script);
    CHECK_EQ_STR(s.content.p, want);
    CHECK_EQ_STR(s.finish, "stop");
    CHECK(s.done && !s.error && !s.bad_json);
    CHECK_EQ_INT(s.usage_prompt, 3);
    CHECK_EQ_INT(s.usage_completion, (long)n_script);
    free(want);
    sse_free(&s);
    oai_buf_free(&r.body);

    /* A stop string split across tokens: text before it, finish stop, the worker cancelled. */
    w1->delay_us = 2000;
    int cancels0 = atomic_load(&w1->cancels);
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"prompt\":\"x\",\"max_tokens\":100,\"stream\":true,\"stop\":["
             "\"s a te\"]}",
             MODEL);
    req(port, "POST", "/v1/completions", body, 0, &r);
    sse_parse(r.body.p, &s);
    CHECK_EQ_STR(s.content.p, "Hello, world! This i");
    CHECK_EQ_STR(s.finish, "stop");
    for (int i = 0; i < 200 && atomic_load(&w1->cancels) == cancels0; i++) usleep(10000);
    CHECK_EQ_INT(atomic_load(&w1->cancels), cancels0 + 1);
    sse_free(&s);
    oai_buf_free(&r.body);
    w1->delay_us = 0;

    /* Chat: harmony output -> reasoning_content and content. */
    set_script("<|channel|>analysis<|message|>The user greets; reply briefly.<|end|>"
               "<|start|>assistant<|channel|>final<|message|>Hi there! \xF0\x9F\x91\x8B<|return|>");
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
             "{\"role\":\"user\",\"content\":\"Hello\"}],\"stream\":true,\"reasoning_effort\":"
             "\"low\",\"stream_options\":{\"include_usage\":true}}",
             MODEL);
    req(port, "POST", "/v1/chat/completions", body, 0, &r);
    CHECK_EQ_INT(r.status, 200);
    sse_parse(r.body.p, &s);
    CHECK_EQ_STR(s.reasoning.p, "The user greets; reply briefly.");
    CHECK_EQ_STR(s.content.p, "Hi there! \xF0\x9F\x91\x8B");
    CHECK_EQ_STR(s.finish, "stop");
    CHECK(s.done && !s.error && !s.bad_json);
    CHECK_EQ_INT(s.usage_completion, (long)n_script);
    CHECK(s.usage_prompt > 20); /* the harmony system and developer messages are there */
    sse_free(&s);
    oai_buf_free(&r.body);

    /* The same, not streamed. */
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}", MODEL);
    req(port, "POST", "/v1/chat/completions", body, 0, &r);
    CHECK_EQ_INT(r.status, 200);
    j = json_loads(r.body.p, 0, NULL);
    json_t *msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    CHECK_EQ_STR(json_string_value(json_object_get(msg, "content")), "Hi there! \xF0\x9F\x91\x8B");
    CHECK_EQ_STR(json_string_value(json_object_get(msg, "reasoning_content")),
                 "The user greets; reply briefly.");
    CHECK_EQ_STR(json_string_value(json_object_get(j, "object")), "chat.completion");
    json_decref(j);
    oai_buf_free(&r.body);

    /* A tool call. */
    set_script("<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant"
               "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
               "{\"city\":\"Paris\"}<|call|>");
    const char *tools = "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                        "\"description\":\"Weather now\",\"parameters\":{\"type\":\"object\","
                        "\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]"
                        "}}}]";
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Weather in "
             "Paris?\"}],%s,\"stream\":true}",
             MODEL, tools);
    req(port, "POST", "/v1/chat/completions", body, 0, &r);
    sse_parse(r.body.p, &s);
    CHECK_EQ_STR(s.tool_name.p, "get_weather");
    CHECK_EQ_STR(s.tool_args.p, "{\"city\":\"Paris\"}");
    CHECK_EQ_STR(s.finish, "tool_calls");
    CHECK_EQ_STR(s.reasoning.p, "Need weather.");
    sse_free(&s);
    oai_buf_free(&r.body);
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Weather in "
             "Paris?\"}],%s}",
             MODEL, tools);
    req(port, "POST", "/v1/chat/completions", body, 0, &r);
    j = json_loads(r.body.p, 0, NULL);
    c0 = json_array_get(json_object_get(j, "choices"), 0);
    msg = json_object_get(c0, "message");
    json_t *tc = json_array_get(json_object_get(msg, "tool_calls"), 0);
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(tc, "function"), "name")),
                 "get_weather");
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(tc, "function"), "arguments")),
                 "{\"city\":\"Paris\"}");
    const char *tid = json_string_value(json_object_get(tc, "id"));
    CHECK(tid && strncmp(tid, "call_", 5) == 0);
    CHECK_EQ_STR(json_string_value(json_object_get(c0, "finish_reason")), "tool_calls");
    json_decref(j);
    oai_buf_free(&r.body);

    /* Chat output that is not harmony (a mocker's): shown as content from the first token. */
    set_script("Plain words, no harmony here.");
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
             "\"stream\":true}",
             MODEL);
    req(port, "POST", "/v1/chat/completions", body, 0, &r);
    sse_parse(r.body.p, &s);
    CHECK_EQ_STR(s.content.p, "Plain words, no harmony here.");
    CHECK_EQ_STR(s.reasoning.p, "");
    CHECK_EQ_STR(s.finish, "stop");
    sse_free(&s);
    oai_buf_free(&r.body);

    /* A client that leaves: the worker gets a cancel and stops early. */
    set_script("one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
               "fifteen sixteen seventeen eighteen nineteen twenty twenty-one twenty-two");
    w1->delay_us = 20000;
    cancels0 = atomic_load(&w1->cancels);
    int sent0 = atomic_load(&w1->tokens_sent);
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"prompt\":\"count\",\"max_tokens\":100,\"stream\":true}", MODEL);
    req(port, "POST", "/v1/completions", body, 150, &r);
    for (int i = 0; i < 300 && atomic_load(&w1->cancels) == cancels0; i++) usleep(10000);
    CHECK_EQ_INT(atomic_load(&w1->cancels), cancels0 + 1);
    for (int i = 0; i < 300 && atomic_load(&w1->running) > 0; i++) usleep(10000);
    CHECK(atomic_load(&w1->tokens_sent) - sent0 < (int)n_script);
    CHECK_EQ_INT(frontend_inflight(fe), 0);
    oai_buf_free(&r.body);
    w1->delay_us = 0;

    /* Worker lost mid-stream, no migration: an error event, promptly. */
    w1->delay_us = 5000;
    w1->die_after = 5;
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"prompt\":\"count\",\"max_tokens\":100,\"stream\":true}", MODEL);
    double t0 = now_s();
    req(port, "POST", "/v1/completions", body, 0, &r);
    sse_parse(r.body.p, &s);
    CHECK(s.error);
    CHECK_EQ_STR(s.error_code, "worker_lost");
    CHECK(r.t_end - t0 < 15);
    sse_free(&s);
    oai_buf_free(&r.body);
    sworker_stop(w1);
    CHECK(wait_workers(fe, 0));
    frontend_destroy(fe);

    /* With migration: the stream completes with every token, in order. */
    fe = start_frontend(2, ranks, 1500);
    port = frontend_port(fe);
    sworker *a = tw_start(5000), *b = tw_start(5000);
    CHECK(wait_workers(fe, 2));
    a->die_after = b->die_after = 7;
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"prompt\":\"count\",\"max_tokens\":20,\"stream\":true,"
             "\"stream_options\":{\"include_usage\":true}}",
             MODEL);
    req(port, "POST", "/v1/completions", body, 0, &r);
    sse_parse(r.body.p, &s);
    want = decode_script(0, 20);
    CHECK_MSG(!s.error, "%s", r.body.p);
    CHECK_EQ_STR(s.content.p, want);
    CHECK_EQ_STR(s.finish, "length");
    CHECK_EQ_INT(s.usage_completion, 20);
    CHECK(atomic_load(&a->dead) != atomic_load(&b->dead)); /* one died, the other finished */
    free(want);
    sse_free(&s);
    oai_buf_free(&r.body);
    req(port, "GET", "/metrics", NULL, 0, &r);
    CHECK(strstr(r.body.p, "magneto_frontend_migrations_total 1") != NULL);
    CHECK(strstr(r.body.p, "magneto_frontend_time_to_first_token_seconds_bucket") != NULL);
    oai_buf_free(&r.body);

    /* A lost chunk (sequence gap) and a worker that falls silent while still registered (the
     * stream's silence timeout, 1.5 s here): both migrate, and the answer is still exact. */
    a->die_after = b->die_after = 0;
    a->gap_after = b->gap_after = 4;
    req(port, "POST", "/v1/completions", body, 0, &r);
    sse_parse(r.body.p, &s);
    want = decode_script(0, 20);
    CHECK_MSG(!s.error, "%s", r.body.p);
    CHECK_EQ_STR(s.content.p, want);
    CHECK_EQ_INT(s.usage_completion, 20);
    free(want);
    sse_free(&s);
    oai_buf_free(&r.body);
    a->gap_after = b->gap_after = 0;
    a->hang_after = b->hang_after = 6;
    int cancels_a = atomic_load(&a->cancels), cancels_b = atomic_load(&b->cancels);
    t0 = now_s();
    req(port, "POST", "/v1/completions", body, 0, &r);
    sse_parse(r.body.p, &s);
    want = decode_script(0, 20);
    CHECK_MSG(!s.error, "%s", r.body.p);
    CHECK_EQ_STR(s.content.p, want);
    CHECK_EQ_INT(s.usage_completion, 20);
    CHECK(r.t_end - t0 >= 1.4 && r.t_end - t0 < 10);
    /* The silent worker was told to drop the attempt. */
    CHECK_EQ_INT(atomic_load(&a->cancels) + atomic_load(&b->cancels), cancels_a + cancels_b + 1);
    free(want);
    sse_free(&s);
    oai_buf_free(&r.body);
    req(port, "GET", "/metrics", NULL, 0, &r);
    CHECK(strstr(r.body.p, "magneto_frontend_migrations_total 3") != NULL);
    oai_buf_free(&r.body);

    sworker_stop(a);
    sworker_stop(b);
    frontend_destroy(fe);
    free(script);
    tok_destroy(TOK);
    etcd_client_destroy(ETCD);
    bus_destroy(BUS);
    bus_shutdown();
    spawn_cleanup(&nats);
    spawn_cleanup(&etcd);
    curl_global_cleanup();
    (void)argc;
    (void)argv;
    return check_done();
}
