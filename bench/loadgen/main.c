/* main.c - magneto-bench: AIPerf-compatible benchmark of an OpenAI chat/completions server.
 *
 *   magneto-bench [profile] --model M --url host:port --streaming --concurrency 64 ...
 *
 * Flow: parse options -> load tokenizer and corpus -> build the prompt pool (all CPU work before
 * the first request) -> run the event loop -> re-tokenize the returned text on worker threads
 * -> summarize -> write artifacts, plots and the console table. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "btok.h"
#include "export.h"
#include "loadgen.h"
#include "log.h"
#include "options.h"
#include "prompts.h"
#include "stats.h"

static void on_signal(int sig) {
    bench_run_interrupt();
}

int main(int argc, char **argv) {
    mg_log_init("bench", -1);
    bench_config cfg;
    mg_status s = bench_options_parse(argc, argv, &cfg);
    if (s == MG_ECANCELED) {
        bench_config_deinit(&cfg);
        return 0;
    }
    if (s != MG_OK) {
        fprintf(stderr, "magneto-bench: %s\n", mg_err_msg());
        bench_config_deinit(&cfg);
        return 2;
    }
    btok *tok = NULL;
    bench_corpus corpus = {0};
    bench_pool pool = {0};
    bench_run run = {0};
    bench_summary sum = {0};
    int rc = 1;
    if ((s = btok_open(cfg.tokenizer, &tok)) != MG_OK) {
        fprintf(stderr, "magneto-bench: %s\n", mg_err_msg());
        goto out;
    }
    if ((s = bench_corpus_load(&corpus, cfg.corpus, tok)) != MG_OK) {
        fprintf(stderr, "magneto-bench: %s\n", mg_err_msg());
        goto out;
    }
    if ((s = bench_pool_build(&pool, &cfg, &corpus, tok)) != MG_OK) {
        fprintf(stderr, "magneto-bench: %s\n", mg_err_msg());
        goto out;
    }
    if (cfg.input_file) {
        /* AIPerf: a trace whose first record has a timestamp runs on its fixed schedule unless
         * another timing mode was asked for; a trace is replayed once through by default. */
        if (!cfg.fixed_schedule && !cfg.concurrency && cfg.request_rate == 0 &&
            pool.conv[0].timestamp_ms >= 0) {
            cfg.fixed_schedule = true;
            MG_INFO("%s has timestamps: fixed schedule", cfg.input_file);
        }
        if (!cfg.fixed_schedule && !cfg.concurrency && cfg.request_rate == 0) cfg.concurrency = 1;
        if (cfg.request_count == 0 && cfg.benchmark_duration_s == 0)
            cfg.request_count = (long long)pool.n;
    }
    MG_INFO("tokenizer %s, corpus %zu tokens, %zu prompts; %s", btok_name(tok), corpus.ntok, pool.n,
            cfg.url);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    if ((s = bench_run_execute(&cfg, &pool, &run)) != MG_OK) {
        fprintf(stderr, "magneto-bench: %s\n", mg_err_msg());
        goto out;
    }
    double tok_s = bench_run_count_tokens(&run, tok, (int)sysconf(_SC_NPROCESSORS_ONLN),
                                          cfg.use_server_token_count);
    if (!bench_summarize(run.recs, run.n_recs, &sum)) {
        fprintf(stderr, "magneto-bench: out of memory summarizing\n");
        goto out;
    }
    if (cfg.goodput) {
        bench_slo slo[16];
        const char *bad;
        int n_slo = bench_slo_parse(cfg.goodput, slo, 16, &bad);
        if (n_slo > 0) bench_summary_goodput(&sum, run.recs, run.n_recs, slo, n_slo);
    }
    if ((s = bench_export_all(&cfg, &pool, &run, &sum)) != MG_OK) {
        fprintf(stderr, "magneto-bench: %s\n", mg_err_msg());
        goto out;
    }
    bench_print_summary(stdout, &cfg, &run, &sum, tok_s, btok_name(tok));
    rc = run.was_cancelled ? 130 : 0;
out:
    bench_summary_free(&sum);
    bench_run_deinit(&run);
    bench_pool_deinit(&pool);
    bench_corpus_deinit(&corpus);
    btok_destroy(tok);
    bench_config_deinit(&cfg);
    return rc;
}
