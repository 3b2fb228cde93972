/* options.c - AIPerf-compatible command line parsing (see options.h). */
#include "options.h"

#include "stats.h"

#include <errno.h>
#include <stddef.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum opt_kind { O_STR, O_INT, O_LL, O_DBL, O_FLAG, O_SPECIAL } opt_kind;

typedef struct opt {
    const char *names[5]; /* long names and short aliases */
    opt_kind kind;
    size_t off; /* offsetof(bench_config, field) for plain kinds */
    const char *help;
} opt;

#define OFF(f) offsetof(bench_config, f)

static const opt opts[] = {
    {{"--model", "--model-names", "-m"}, O_SPECIAL, 0, "model name sent in every body (required)"},
    {{"--url", "-u"}, O_STR, OFF(url), "server, host:port or http://host:port (localhost:8000)"},
    {{"--endpoint-type"}, O_SPECIAL, 0, "chat (default) or completions"},
    {{"--endpoint", "--custom-endpoint"}, O_STR, OFF(endpoint_path), "path override"},
    {{"--streaming"}, O_FLAG, OFF(streaming), "stream responses (SSE)"},
    {{"--request-timeout-seconds"}, O_DBL, OFF(request_timeout_s), "per request (600)"},
    {{"--api-key"}, O_STR, OFF(api_key), "sent as Authorization: Bearer"},
    {{"--header", "-H"}, O_SPECIAL, 0, "extra header 'K:V' (repeatable)"},
    {{"--use-legacy-max-tokens"},
     O_FLAG,
     OFF(use_legacy_max_tokens),
     "send max_tokens instead of max_completion_tokens (chat)"},
    {{"--use-server-token-count"},
     O_FLAG,
     OFF(use_server_token_count),
     "count output tokens from usage instead of re-tokenizing"},
    {{"--extra-inputs"}, O_SPECIAL, 0, "JSON object or key:value merged into bodies (repeatable)"},
    {{"--input-file"}, O_STR, OFF(input_file), "mooncake_trace JSONL"},
    {{"--custom-dataset-type"}, O_STR, OFF(custom_dataset_type), "mooncake_trace"},
    {{"--random-seed"}, O_SPECIAL, 0, "seed for prompts, lengths and arrivals"},
    {{"--fixed-schedule"}, O_FLAG, OFF(fixed_schedule), "issue at the trace's timestamps"},
    {{"--fixed-schedule-auto-offset"},
     O_FLAG,
     OFF(fixed_schedule_auto_offset),
     "shift the trace so its first timestamp is 0"},
    {{"--fixed-schedule-start-offset"}, O_LL, OFF(fixed_schedule_start_offset_ms), "ms"},
    {{"--fixed-schedule-end-offset"}, O_LL, OFF(fixed_schedule_end_offset_ms), "ms"},
    {{"--tokenizer"}, O_STR, OFF(tokenizer), "ranks file, checkpoint folder or 'words'"},
    {{"--tokenizer-revision"}, O_SPECIAL, 0, "accepted, unused"},
    {{"--tokenizer-trust-remote-code"}, O_SPECIAL, 0, "accepted, unused"},
    {{"--synthetic-input-tokens-mean", "--prompt-input-tokens-mean", "--isl"},
     O_DBL,
     OFF(isl_mean),
     "prompt tokens (550)"},
    {{"--synthetic-input-tokens-stddev", "--prompt-input-tokens-stddev", "--isl-stddev"},
     O_DBL,
     OFF(isl_stddev),
     "(0)"},
    {{"--isl-block-size"}, O_INT, OFF(isl_block_size), "tokens per trace hash block (512)"},
    {{"--output-tokens-mean", "--osl", "--prompt-output-tokens-mean"},
     O_DBL,
     OFF(osl_mean),
     "max tokens per request"},
    {{"--output-tokens-stddev", "--osl-stddev", "--prompt-output-tokens-stddev"},
     O_DBL,
     OFF(osl_stddev),
     "(0)"},
    {{"--concurrency"}, O_INT, OFF(concurrency), "requests in flight"},
    {{"--request-rate"}, O_DBL, OFF(request_rate), "requests/s"},
    {{"--request-rate-mode", "--arrival-pattern"}, O_SPECIAL, 0, "poisson (default) or constant"},
    {{"--request-count", "--num-requests"}, O_LL, OFF(request_count), "profiling requests (10)"},
    {{"--warmup-request-count", "--num-warmup-requests"},
     O_LL,
     OFF(warmup_request_count),
     "warmup requests, drained before profiling (0)"},
    {{"--benchmark-duration"}, O_DBL, OFF(benchmark_duration_s), "seconds (instead of a count)"},
    {{"--benchmark-grace-period"}, O_DBL, OFF(grace_period_s), "seconds after the duration (30)"},
    {{"--request-cancellation-rate"}, O_DBL, OFF(cancel_rate_pct), "percent of requests cancelled"},
    {{"--request-cancellation-delay"}, O_DBL, OFF(cancel_delay_s), "seconds before cancelling"},
    {{"--conversation-num", "--num-conversations", "--num-dataset-entries"},
     O_INT,
     OFF(conversation_num),
     "size of the prompt pool (100)"},
    {{"--artifact-dir"}, O_STR, OFF(artifact_dir), "output folder"},
    {{"--ui", "--ui-type"}, O_STR, OFF(ui), "simple (default), none or dashboard"},
    {{"--workers-max", "--max-workers"}, O_INT, OFF(workers_max), "accepted; one event loop"},
    {{"--record-processors"}, O_INT, OFF(record_processors), "accepted, unused"},
    {{"--corpus"}, O_STR, OFF(corpus), "text files for prompts, ':'-separated"},
    {{"--deployment-kind"}, O_STR, OFF(deployment_kind), "deployment_config.json kind"},
    {{"--total-gpus"}, O_STR, OFF(total_gpus), "deployment_config.json total_gpus"},
    {{"--no-plots"}, O_FLAG, OFF(no_plots), "skip the gnuplot PNGs"},
    {{"--goodput", "--goodput-constraints"},
     O_STR,
     OFF(goodput),
     "SLOs 'time_to_first_token:100 inter_token_latency:3.4' (ms; tokens/sec/user)"},
    {{"--help", "-h"}, O_SPECIAL, 0, "this text"},
};

void bench_options_usage(FILE *f) {
    fprintf(f, "usage: magneto-bench [profile] --model NAME [options]\n\n");
    for (size_t i = 0; i < sizeof opts / sizeof *opts; i++) {
        char names[160] = "";
        for (int k = 0; k < 5 && opts[i].names[k]; k++) {
            if (k) strcat(names, ", ");
            strcat(names, opts[i].names[k]);
        }
        fprintf(f, "  %-62s %s\n", names, opts[i].help);
    }
}

static const opt *find_opt(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof opts / sizeof *opts; i++)
        for (int k = 0; k < 5 && opts[i].names[k]; k++)
            if (strlen(opts[i].names[k]) == len && strncmp(opts[i].names[k], name, len) == 0)
                return &opts[i];
    return NULL;
}

/* AIPerf's coerce_value: true/false, none/null, int, float, else string. */
static json_t *coerce(const char *v) {
    if (strcasecmp(v, "true") == 0) return json_true();
    if (strcasecmp(v, "false") == 0) return json_false();
    if (strcasecmp(v, "none") == 0 || strcasecmp(v, "null") == 0) return json_null();
    char *e;
    errno = 0;
    long long i = strtoll(v, &e, 10);
    if (*v && !*e && !errno) return json_integer(i);
    double d = strtod(v, &e);
    if (*v && !*e) return json_real(d);
    return json_string(v);
}

mg_status bench_extra_inputs_add(json_t *obj, const char *arg) {
    const char *p = arg;
    while (*p == ' ') p++;
    if (*p == '{') {
        json_error_t err;
        json_t *j = json_loads(p, 0, &err);
        if (!j || !json_is_object(j)) {
            json_decref(j);
            return MG_ERRF(MG_EINVAL, "--extra-inputs '%s': not a JSON object (%s)", arg,
                           j ? "not an object" : err.text);
        }
        json_object_update(obj, j);
        json_decref(j);
        return MG_OK;
    }
    const char *colon = strchr(arg, ':');
    if (!colon || colon == arg)
        return MG_ERRF(MG_EINVAL, "--extra-inputs '%s': expected key:value or a JSON object", arg);
    char key[256];
    size_t kl = colon - arg;
    if (kl >= sizeof key) return MG_ERRF(MG_EINVAL, "--extra-inputs: key too long");
    memcpy(key, arg, kl);
    key[kl] = 0;
    json_object_set_new(obj, key, coerce(colon + 1));
    return MG_OK;
}

static mg_status set_value(bench_config *c, const opt *o, const char *name, const char *v) {
    char *e;
    void *field = (char *)c + o->off;
    switch (o->kind) {
    case O_STR:
        free(*(char **)field);
        *(char **)field = strdup(v);
        return MG_OK;
    case O_INT: {
        errno = 0;
        long x = strtol(v, &e, 10);
        if (!*v || *e || errno || x < 0 || x > 100000000)
            return MG_ERRF(MG_EINVAL, "%s: '%s' is not a non-negative integer", name, v);
        *(int *)field = (int)x;
        return MG_OK;
    }
    case O_LL: {
        errno = 0;
        long long x = strtoll(v, &e, 10);
        if (!*v || *e || errno || x < 0)
            return MG_ERRF(MG_EINVAL, "%s: '%s' is not a non-negative integer", name, v);
        *(long long *)field = x;
        return MG_OK;
    }
    case O_DBL: {
        double x = strtod(v, &e);
        /* Seconds become int64 ns offsets from now: past 1e9 the conversion is undefined. */
        if (!*v || *e || !isfinite(x) || x < 0 || x > 1e9)
            return MG_ERRF(MG_EINVAL, "%s: '%s' is not a number in [0, 1e9]", name, v);
        *(double *)field = x;
        return MG_OK;
    }
    default:
        return MG_ERRF(MG_EINVAL, "%s: internal option kind", name);
    }
}

static mg_status parse_url(bench_config *c) {
    const char *u = c->url;
    if (strncmp(u, "http://", 7) == 0)
        u += 7;
    else if (strncmp(u, "https://", 8) == 0)
        return MG_ERRF(MG_EUNSUPPORTED, "--url %s: https is not supported", c->url);
    const char *slash = strchr(u, '/');
    size_t hl = slash ? (size_t)(slash - u) : strlen(u);
    char hp[250];
    if (hl == 0 || hl >= sizeof hp) return MG_ERRF(MG_EINVAL, "--url %s: no host", c->url);
    memcpy(hp, u, hl);
    hp[hl] = 0;
    c->port = 80;
    char *colon = strrchr(hp, ':');
    if (hp[0] == '[') { /* [v6]:port */
        char *rb = strchr(hp, ']');
        if (!rb) return MG_ERRF(MG_EINVAL, "--url %s: bad IPv6 host", c->url);
        *rb = 0;
        snprintf(c->host, sizeof c->host, "%s", hp + 1);
        if (rb[1] == ':') c->port = atoi(rb + 2);
    } else if (colon) {
        *colon = 0;
        snprintf(c->host, sizeof c->host, "%s", hp);
        char *e;
        long p = strtol(colon + 1, &e, 10);
        if (*e || p <= 0 || p > 65535) return MG_ERRF(MG_EINVAL, "--url %s: bad port", c->url);
        c->port = (int)p;
    } else {
        snprintf(c->host, sizeof c->host, "%s", hp);
    }
    return MG_OK;
}

static void defaults(bench_config *c) {
    memset(c, 0, sizeof *c);
    c->url = strdup("localhost:8000");
    c->request_timeout_s = 600;
    c->extra_inputs = json_object();
    c->fixed_schedule_start_offset_ms = c->fixed_schedule_end_offset_ms = -1;
    c->isl_mean = 550;
    c->isl_block_size = 512;
    c->osl_mean = -1;
    c->grace_period_s = 30;
    c->conversation_num = 100;
    c->ui = strdup("simple");
}

mg_status bench_options_parse(int argc, char **argv, bench_config *c) {
    defaults(c);
    size_t cl = 0;
    for (int i = 0; i < argc; i++) cl += strlen(argv[i]) + 32;
    c->cli_command = calloc(1, cl + 1);
    for (int i = 0; i < argc; i++) {
        if (i) strcat(c->cli_command, " ");
        /* credentials stay out of the artifacts */
        const char *a = argv[i];
        if (i > 0 && strcmp(argv[i - 1], "--api-key") == 0) a = "<redacted>";
        if (strncasecmp(a, "authorization:", 14) == 0) a = "Authorization: <redacted>";
        bool quote = strpbrk(a, " {}\"'") != NULL;
        if (quote) strcat(c->cli_command, "'");
        strcat(c->cli_command, a);
        if (quote) strcat(c->cli_command, "'");
    }
    int i = 1;
    if (i < argc && strcmp(argv[i], "profile") == 0) i++;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-') return MG_ERRF(MG_EINVAL, "unexpected argument '%s'", a);
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        const opt *o = find_opt(a, nl);
        if (!o) return MG_ERRF(MG_EINVAL, "unknown option '%.*s' (see --help)", (int)nl, a);
        const char *name = o->names[0];
        if (strcmp(name, "--help") == 0) {
            bench_options_usage(stdout);
            return MG_ECANCELED;
        }
        if (o->kind == O_FLAG) {
            bool v = true;
            if (eq) v = strcasecmp(eq + 1, "false") != 0 && strcmp(eq + 1, "0") != 0;
            *(bool *)((char *)c + o->off) = v;
            continue;
        }
        if (strcmp(name, "--tokenizer-trust-remote-code") == 0) continue;
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) return MG_ERRF(MG_EINVAL, "%s needs a value", name);
        mg_status s = MG_OK;
        if (o->kind != O_SPECIAL) {
            s = set_value(c, o, name, v);
        } else if (strcmp(name, "--model") == 0) {
            free(c->model);
            const char *comma = strchr(v, ',');
            c->model = comma ? strndup(v, comma - v) : strdup(v);
        } else if (strcmp(name, "--endpoint-type") == 0) {
            if (strcmp(v, "chat") == 0)
                c->endpoint_type = BENCH_CHAT;
            else if (strcmp(v, "completions") == 0)
                c->endpoint_type = BENCH_COMPLETIONS;
            else
                s = MG_ERRF(MG_EINVAL, "--endpoint-type '%s': chat or completions", v);
        } else if (strcmp(name, "--header") == 0) {
            const char *colon = strchr(v, ':');
            if (!colon || colon == v || strpbrk(v, "\r\n"))
                return MG_ERRF(MG_EINVAL, "--header '%s': expected 'Key:Value'", v);
            char **h = realloc(c->headers, (c->n_headers + 1) * sizeof *h);
            if (!h) return MG_ERRF(MG_ENOMEM, "out of memory");
            c->headers = h;
            const char *val = colon + 1;
            while (*val == ' ') val++;
            char *line;
            if (asprintf(&line, "%.*s: %s", (int)(colon - v), v, val) < 0)
                return MG_ERRF(MG_ENOMEM, "out of memory");
            c->headers[c->n_headers++] = line;
        } else if (strcmp(name, "--extra-inputs") == 0) {
            s = bench_extra_inputs_add(c->extra_inputs, v);
        } else if (strcmp(name, "--random-seed") == 0) {
            char *e;
            c->random_seed = strtoull(v, &e, 10);
            if (!*v || *e) s = MG_ERRF(MG_EINVAL, "--random-seed '%s': not an integer", v);
            c->random_seed_set = true;
        } else if (strcmp(name, "--request-rate-mode") == 0) {
            if (strcmp(v, "poisson") == 0)
                c->rate_mode = BENCH_POISSON;
            else if (strcmp(v, "constant") == 0)
                c->rate_mode = BENCH_CONSTANT;
            else
                s = MG_ERRF(MG_EINVAL, "--request-rate-mode '%s': poisson or constant", v);
        } /* --tokenizer-revision: accepted */
        if (s != MG_OK) return s;
    }
    if (!c->model) return MG_ERRF(MG_EINVAL, "--model is required");
    if (c->benchmark_duration_s > 0 && c->request_count > 0)
        return MG_ERRF(MG_EINVAL,
                       "--benchmark-duration and --request-count are mutually exclusive");
    if (c->cancel_rate_pct > 100)
        return MG_ERRF(MG_EINVAL, "--request-cancellation-rate %.1f: a percentage (0-100)",
                       c->cancel_rate_pct);
    if (c->goodput) {
        bench_slo slo[16];
        const char *bad;
        if (bench_slo_parse(c->goodput, slo, 16, &bad) < 0)
            return MG_ERRF(MG_EINVAL,
                           "--goodput '%s': bad SLO at '%s' (metric:value with a metric among "
                           "request_latency, time_to_first_token, time_to_second_token, "
                           "time_to_first_output_token, inter_token_latency, "
                           "output_token_throughput_per_user)",
                           c->goodput, bad ? bad : "");
    }
    if (c->isl_block_size <= 0) return MG_ERRF(MG_EINVAL, "--isl-block-size must be > 0");
    if (c->conversation_num <= 0) return MG_ERRF(MG_EINVAL, "--conversation-num must be > 0");
    if (c->custom_dataset_type && strcmp(c->custom_dataset_type, "mooncake_trace") != 0)
        return MG_ERRF(MG_EINVAL, "--custom-dataset-type '%s': only mooncake_trace is supported",
                       c->custom_dataset_type);
    if (c->fixed_schedule && !c->input_file)
        return MG_ERRF(MG_EINVAL, "--fixed-schedule needs --input-file");
    /* A trace is replayed once through unless a count or duration is given (main.c sets it). */
    if (c->request_count == 0 && c->benchmark_duration_s == 0 && !c->input_file)
        c->request_count = 10;
    if (!c->endpoint_path)
        c->endpoint_path =
            strdup(c->endpoint_type == BENCH_CHAT ? "/v1/chat/completions" : "/v1/completions");
    if (c->endpoint_path[0] != '/') {
        char *p;
        if (asprintf(&p, "/%s", c->endpoint_path) < 0) return MG_ERRF(MG_ENOMEM, "oom");
        free(c->endpoint_path);
        c->endpoint_path = p;
    }
    if (!c->random_seed_set) c->random_seed = 0;
    /* Without a timing mode: one request at a time; a trace with timestamps instead switches
     * to its fixed schedule (main.c, once the trace is read). */
    if (!c->concurrency && c->request_rate == 0 && !c->fixed_schedule && !c->input_file)
        c->concurrency = 1;
    if (!c->artifact_dir) {
        char m[256];
        snprintf(m, sizeof m, "%s", c->model);
        for (char *p = m; *p; p++)
            if (*p == '/') *p = '_';
        char *d;
        int n;
        if (c->request_rate > 0)
            n = asprintf(&d, "artifacts/%s-openai-%s-concurrency%d-request_rate%g", m,
                         c->endpoint_type == BENCH_CHAT ? "chat" : "completions", c->concurrency,
                         c->request_rate);
        else
            n = asprintf(&d, "artifacts/%s-openai-%s-concurrency%d", m,
                         c->endpoint_type == BENCH_CHAT ? "chat" : "completions", c->concurrency);
        if (n < 0) return MG_ERRF(MG_ENOMEM, "oom");
        c->artifact_dir = d;
    }
    return parse_url(c);
}

void bench_config_deinit(bench_config *c) {
    free(c->model);
    free(c->url);
    free(c->endpoint_path);
    free(c->api_key);
    for (int i = 0; i < c->n_headers; i++) free(c->headers[i]);
    free(c->headers);
    json_decref(c->extra_inputs);
    free(c->input_file);
    free(c->custom_dataset_type);
    free(c->tokenizer);
    free(c->artifact_dir);
    free(c->ui);
    free(c->corpus);
    free(c->deployment_kind);
    free(c->total_gpus);
    free(c->cli_command);
    free(c->goodput);
    memset(c, 0, sizeof *c);
}

json_t *bench_config_json(const bench_config *c) {
    json_t *hdrs = json_array();
    for (int i = 0; i < c->n_headers; i++) /* credentials stay out of the artifacts */
        json_array_append_new(hdrs, json_string(strncasecmp(c->headers[i], "authorization:", 14)
                                                    ? c->headers[i]
                                                    : "Authorization: <redacted>"));
    json_t *endpoint =
        json_pack("{s:[s], s:s, s:s, s:b, s:[s], s:f, s:s?, s:o, s:b, s:b}", "model_names",
                  c->model, "type", c->endpoint_type == BENCH_CHAT ? "chat" : "completions",
                  "custom_endpoint", c->endpoint_path, "streaming", c->streaming, "urls", c->url,
                  "timeout_seconds", c->request_timeout_s, "api_key",
                  c->api_key ? "<redacted>" : NULL, "headers", hdrs, "use_legacy_max_tokens",
                  c->use_legacy_max_tokens, "use_server_token_count", c->use_server_token_count);
    json_t *prompt =
        json_pack("{s:{s:f, s:f, s:i}, s:{s:o, s:f}}", "input_tokens", "mean", c->isl_mean,
                  "stddev", c->isl_stddev, "block_size", c->isl_block_size, "output_tokens", "mean",
                  c->osl_mean >= 0 ? json_real(c->osl_mean) : json_null(), "stddev", c->osl_stddev);
    json_t *input = json_pack(
        "{s:O, s:o, s:s?, s:s?, s:I, s:b, s:i, s:s?}", "extra", c->extra_inputs, "prompt", prompt,
        "file", c->input_file, "custom_dataset_type", c->custom_dataset_type, "random_seed",
        (json_int_t)c->random_seed, "fixed_schedule", c->fixed_schedule, "conversation_num",
        c->conversation_num, "corpus", c->corpus, "goodput", c->goodput);
    json_t *loadgen =
        json_pack("{s:o, s:o, s:s, s:I, s:I, s:o, s:f, s:f, s:f}", "concurrency",
                  c->concurrency ? json_integer(c->concurrency) : json_null(), "request_rate",
                  c->request_rate > 0 ? json_real(c->request_rate) : json_null(),
                  "request_rate_mode", c->rate_mode == BENCH_POISSON ? "poisson" : "constant",
                  "request_count", (json_int_t)c->request_count, "warmup_request_count",
                  (json_int_t)c->warmup_request_count, "benchmark_duration",
                  c->benchmark_duration_s > 0 ? json_real(c->benchmark_duration_s) : json_null(),
                  "benchmark_grace_period", c->grace_period_s, "request_cancellation_rate",
                  c->cancel_rate_pct, "request_cancellation_delay", c->cancel_delay_s);
    return json_pack("{s:o, s:o, s:o, s:{s:s}, s:{s:s?}, s:s}", "endpoint", endpoint, "input",
                     input, "loadgen", loadgen, "output", "artifact_directory", c->artifact_dir,
                     "tokenizer", "name", c->tokenizer, "cli_command", c->cli_command);
}
