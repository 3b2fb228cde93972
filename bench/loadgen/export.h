/* export.h - AIPerf's artifacts, the console summary and the plots of one run.
 *
 * Files written into the artifact folder (reference/aiperf.md section 3):
 *   profile_export_aiperf.csv   stats section (Metric,avg,min,max,p1,...,p99,std; %.2f), a blank
 *                               line, then Metric,Value scalars;
 *   profile_export_aiperf.json  {tag:{unit,avg,p1..p99,min,max,std,count,sum}} for record
 *                               metrics, {unit,avg} for scalars, input_config, was_cancelled,
 *                               error_summary, start_time, end_time;
 *   profile_export.jsonl        one {metadata, metrics, error} per profiling request;
 *   inputs.json                 {"data":[{"session_id","payloads":[body]}]};
 *   deployment_config.json      {"kind","model","total_gpus"} as Dynamo's bench.sh writes it;
 *   plots/<name>.png                TTFT and ITL distributions, throughput over time (gnuplot; a
 *                               missing gnuplot is a warning).
 * Called once, after the run and token counting, from the main thread. */
#ifndef MG_BENCH_EXPORT_H
#define MG_BENCH_EXPORT_H

#include <stdio.h>

#include "loadgen.h"
#include "options.h"
#include "prompts.h"
#include "stats.h"

mg_status bench_export_all(const bench_config *cfg, const bench_pool *pool, const bench_run *run,
                           const bench_summary *s);
mg_status bench_export_csv(const char *path, const bench_summary *s);
mg_status bench_export_json(const char *path, const bench_config *cfg, const bench_run *run,
                            const bench_summary *s);
mg_status bench_export_jsonl(const char *path, const bench_run *run, const bench_pool *pool);
mg_status bench_export_inputs(const char *path, const bench_pool *pool);
mg_status bench_export_deployment(const char *path, const bench_config *cfg);
/* Writes plot data and runs gnuplot; returns MG_EUNAVAIL (after a warning) without gnuplot. */
mg_status bench_export_plots(const char *dir, const bench_run *run);
/* The console table and the client's own cost. */
void bench_print_summary(FILE *f, const bench_config *cfg, const bench_run *run,
                         const bench_summary *s, double tokenize_s, const char *tokenizer);
/* mkdir -p */
mg_status bench_mkdirs(const char *path);

#endif
