/* options.h - magneto-bench's command line, in AIPerf's option names (`aiperf profile ...`).
 *
 * bench_options_parse fills a bench_config from argv; every option of reference/aiperf.md
 * section 1 that this client implements is here under AIPerf's names and aliases, and options
 * that only steer AIPerf's own process layout (--workers-max, --record-processors, tokenizer
 * revision flags) are accepted and recorded but change nothing. Bad values are errors that name
 * the option. The config owns its strings and JSON (freed by bench_config_deinit). */
#ifndef MG_BENCH_OPTIONS_H
#define MG_BENCH_OPTIONS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "status.h"

typedef enum bench_endpoint { BENCH_CHAT = 0, BENCH_COMPLETIONS = 1 } bench_endpoint;
typedef enum bench_rate_mode { BENCH_POISSON = 0, BENCH_CONSTANT = 1 } bench_rate_mode;

typedef struct bench_config {
    char *model;    /* first of --model (comma list allowed; the first is sent) */
    char *url;      /* as given */
    char host[256]; /* parsed from url */
    int port;
    char *endpoint_path; /* --endpoint or the default for the type */
    bench_endpoint endpoint_type;
    bool streaming;
    double request_timeout_s;
    char *api_key;
    char **headers; /* "K: V" lines from -H */
    int n_headers;
    bool use_legacy_max_tokens, use_server_token_count;
    json_t *extra_inputs; /* object merged last into every body */
    char *input_file, *custom_dataset_type;
    unsigned long long random_seed;
    bool random_seed_set;
    bool fixed_schedule, fixed_schedule_auto_offset;
    long long fixed_schedule_start_offset_ms, fixed_schedule_end_offset_ms; /* -1: none */
    char *tokenizer;
    double isl_mean, isl_stddev;
    int isl_block_size;
    double osl_mean, osl_stddev; /* osl_mean < 0: no max tokens sent */
    int concurrency;             /* 0: not given */
    double request_rate;         /* 0: not given */
    bench_rate_mode rate_mode;
    long long request_count; /* 0: not given */
    long long warmup_request_count;
    double benchmark_duration_s; /* 0: count mode */
    double grace_period_s;
    double cancel_rate_pct, cancel_delay_s;
    int conversation_num;
    char *artifact_dir;
    char *ui; /* "simple", "none", "dashboard" */
    int workers_max, record_processors;
    char *corpus; /* colon-separated text files; NULL: the default corpus */
    char *deployment_kind, *total_gpus;
    bool no_plots;
    char *goodput;     /* --goodput SLOs, as given */
    char *cli_command; /* argv joined, for input_config */
} bench_config;

/* Parse argv (argv[0] the program; an optional "profile" subcommand first). Returns MG_OK,
 * MG_ECANCELED after printing --help, or MG_EINVAL with the detail set. */
mg_status bench_options_parse(int argc, char **argv, bench_config *c);
void bench_config_deinit(bench_config *c);
void bench_options_usage(FILE *f);

/* Parse one --extra-inputs value (a JSON object or key:value with AIPerf's coercion) and merge it
 * into obj. */
mg_status bench_extra_inputs_add(json_t *obj, const char *arg);

/* The resolved configuration as AIPerf's input_config object (new reference). */
json_t *bench_config_json(const bench_config *c);

#endif
