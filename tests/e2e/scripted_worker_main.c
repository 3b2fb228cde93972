/* scripted_worker_main.c - magneto-scripted-worker: scripted workers (scripted_worker.h) as a
 * process, for the end-to-end tests (tests/e2e/run.sh) and the frontend benchmark.
 *
 * The answer depends on the prompt, so one deployment serves every e2e case:
 *   - a harmony chat prompt (it starts with <|start|>) that mentions "weather": analysis, then a
 *     call to functions.get_weather with {"location":"Paris"};
 *   - any other chat prompt: analysis "The user says hello. Respond in kind." then the final
 *     answer "Hello! How can I help you today?";
 *   - a plain completions prompt: " The quick brown fox jumps over the lazy dog." repeated, as
 *     long as max_tokens asks (up to --plain-tokens), ending with a stop.
 * Prints "ready" once every worker is registered; runs until SIGINT/SIGTERM. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "config.h"
#include "etcd.h"
#include "log.h"
#include "scripted_worker.h"
#include "tok.h"

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) {
    stop_flag = 1;
}

static tok_t *TOK;
static uint32_t *chat_ids, *tool_ids, *plain_ids;
static size_t n_chat, n_tool, n_plain;

static void encode(const char *text, uint32_t **ids, size_t *n) {
    size_t cap = 0;
    *n = 0;
    if (tok_encode(TOK, text, strlen(text), TOK_SPECIAL_ALLOW, ids, n, &cap)) {
        MG_LOG_ERR("encode script");
        exit(1);
    }
}

static void pick(void *ud, const uint32_t *prompt, size_t n_prompt, uint32_t **out, size_t *n) {
    const uint32_t *src = plain_ids;
    size_t len = n_plain;
    if (n_prompt && prompt[0] == TOK_START) {
        char *text = NULL;
        size_t tl = 0, cap = 0;
        tok_decode(TOK, prompt, n_prompt, &text, &tl, &cap);
        /* Only the last user turn counts: the developer message may list a weather tool. */
        const char *last = text ? strstr(text, "<|start|>user<|message|>") : NULL;
        for (const char *p = last; p; p = strstr(p + 1, "<|start|>user<|message|>")) last = p;
        bool weather = last && strstr(last, "weather");
        src = weather ? tool_ids : chat_ids;
        len = weather ? n_tool : n_chat;
        free(text);
    }
    *out = malloc((len ? len : 1) * sizeof **out);
    memcpy(*out, src, len * sizeof **out);
    *n = len;
}

int main(int argc, char **argv) {
    mg_log_init("scripted-worker", -1);
    char *ns = NULL, *nats = NULL, *etcd = NULL, *model = NULL, *tokenizer = NULL;
    int64_t count = 1, delay = 0, ctx = 8192, plain = 4096;
    mg_cfg_opt opts[] = {
        {"namespace", MG_CFG_STR, &ns, "magneto", 1, 0, "namespace", NULL},
        {"nats-url", MG_CFG_STR, &nats, "nats://127.0.0.1:4222", 1, 0, "NATS server", NULL},
        {"etcd-url", MG_CFG_STR, &etcd, "http://127.0.0.1:2379", 1, 0, "etcd", NULL},
        {"served-model-name", MG_CFG_STR, &model, "openai/gpt-oss-120b", 1, 0, "model", NULL},
        {"context-length", MG_CFG_INT, &ctx, "8192", 16, 1 << 24, "context length", NULL},
        {"tokenizer", MG_CFG_STR, &tokenizer, NULL, 1, 0, "o200k_base.tiktoken", NULL},
        {"workers", MG_CFG_INT, &count, "1", 1, 256, "workers in this process", NULL},
        {"delay-us", MG_CFG_INT, &delay, "0", 0, 10000000, "pause between tokens", NULL},
        {"plain-tokens", MG_CFG_INT, &plain, "4096", 1, 1 << 20, "length of the plain script",
         NULL},
    };
    int n = sizeof opts / sizeof opts[0];
    mg_status s = mg_cfg_parse(opts, n, argc, argv, "magneto-scripted-worker",
                               "Workers that play a known output, for end-to-end tests.");
    if (s == MG_ECANCELED) return 0;
    if (s || !tokenizer) {
        fprintf(stderr, "magneto-scripted-worker: %s\n", s ? mg_err_msg() : "--tokenizer needed");
        return 2;
    }
    if (tok_load_tiktoken(tokenizer, &TOK)) {
        MG_LOG_ERR("tokenizer");
        return 1;
    }
    encode("<|channel|>analysis<|message|>The user says hello. Respond in kind.<|end|>"
           "<|start|>assistant<|channel|>final<|message|>Hello! How can I help you today?"
           "<|return|>",
           &chat_ids, &n_chat);
    encode("<|channel|>analysis<|message|>Need to call get_weather.<|end|><|start|>assistant"
           "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
           "{\"location\":\"Paris\"}<|call|>",
           &tool_ids, &n_tool);
    uint32_t *fox = NULL;
    size_t n_fox;
    encode(" The quick brown fox jumps over the lazy dog.", &fox, &n_fox);
    plain_ids = malloc((size_t)plain * sizeof *plain_ids);
    for (n_plain = 0; n_plain < (size_t)plain; n_plain++) plain_ids[n_plain] = fox[n_plain % n_fox];
    free(fox);

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    bus_options bo;
    bus_options_default(&bo);
    bo.url = nats;
    bus *b;
    etcd_client *ec;
    if (bus_connect(&bo, &b) || etcd_client_create(etcd, 0, &ec)) {
        MG_LOG_ERR("connect");
        return 1;
    }
    sworker **ws = calloc((size_t)count, sizeof *ws);
    for (int i = 0; i < count; i++) {
        ws[i] = sworker_start(b, ec, ns, model, ctx, pick, NULL);
        if (!ws[i]) return 1;
        ws[i]->delay_us = (int)delay;
    }
    printf("ready: %d scripted worker(s)\n", (int)count);
    fflush(stdout);
    while (!stop_flag) pause();
    for (int i = 0; i < count; i++) sworker_stop(ws[i]);
    free(ws);
    etcd_client_destroy(ec);
    bus_destroy(b);
    bus_shutdown();
    tok_destroy(TOK);
    free(chat_ids);
    free(tool_ids);
    free(plain_ids);
    mg_cfg_free(opts, n);
    return 0;
}
