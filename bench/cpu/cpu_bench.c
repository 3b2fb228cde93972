/* cpu_bench.c - tokens/s of the CPU backend: B sequences prefilled, then decode steps of B
 * tokens each with greedy picks, timed after a warm-up. Prints one line per batch size with the
 * DESIGN.md §8 figure name (cpu_<name>_tok_s_b<B>), for bench/RESULTS.md.
 *
 *   mg-cpu-bench --model DIR [--name tiny] [--batches 1,32] [--prompt 64] [--steps 64]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "cpu_backend.h"
#include "log.h"

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static double now(void) {
    return clock_s(CLOCK_MONOTONIC);
}
/* CPU time of the whole process (all threads): on a shared, loaded machine, tokens per
 * CPU-second says what the code does, independent of how much of the cores it was given. */
static double cpu_now(void) {
    return clock_s(CLOCK_PROCESS_CPUTIME_ID);
}

typedef struct run {
    int B, max_blocks, bs;
    int32_t *tokens, *positions, *token_seq, *seq_start, *seq_len, *seq_ctx, *table, *rows, *rseq;
    int *ctx;
    float *logits;
} run;

/* One step: every sequence adds n tokens (its prompt, or its last pick). */
static mg_status step(mg_backend *b, run *r, int n, const int32_t *next) {
    mg_batch bt = {0};
    int t = 0;
    for (int s = 0; s < r->B; s++) {
        r->seq_start[s] = t, r->seq_len[s] = n, r->seq_ctx[s] = r->ctx[s] + n;
        for (int i = 0; i < n; i++, t++) {
            r->tokens[t] = n == 1 ? next[s] : (int32_t)((s * 7919 + i * 104729 + 11) % b->vocab);
            r->positions[t] = r->ctx[s] + i;
            r->token_seq[t] = s;
        }
        r->rows[s] = t - 1, r->rseq[s] = s;
        r->ctx[s] += n;
    }
    bt.n_tokens = t, bt.n_seqs = r->B, bt.n_decode = n == 1 ? r->B : 0;
    bt.n_prefill_tokens = n == 1 ? 0 : t;
    bt.tokens = r->tokens, bt.positions = r->positions, bt.token_seq = r->token_seq;
    bt.seq_start = r->seq_start, bt.seq_len = r->seq_len, bt.seq_ctx = r->seq_ctx;
    bt.block_table = r->table, bt.max_blocks = r->max_blocks;
    bt.n_logits = r->B, bt.logits_rows = r->rows, bt.logits_seq = r->rseq;
    return b->ops->forward(b, &bt, r->logits);
}

int main(int argc, char **argv) {
    mg_log_init("cpu-bench", -1);
    char *model = NULL, *name = NULL, *batches = NULL;
    int64_t prompt = 0, steps = 0, threads = 0, warmup = 0;
    mg_cfg_opt opts[] = {
        {"model", MG_CFG_STR, &model, NULL, 0, -1, "checkpoint folder", NULL},
        {"name", MG_CFG_STR, &name, "tiny", 0, -1, "preset name in the figure", NULL},
        {"batches", MG_CFG_STR, &batches, "1,32", 0, -1, "batch sizes, comma separated", NULL},
        {"prompt", MG_CFG_INT, &prompt, "64", 1, 4096, "prompt tokens per sequence", NULL},
        {"steps", MG_CFG_INT, &steps, "64", 1, 100000, "timed decode steps", NULL},
        {"warmup", MG_CFG_INT, &warmup, "4", 0, 1000, "untimed decode steps first", NULL},
        {"threads", MG_CFG_INT, &threads, "0", 0, 64, "threads (0: all CPUs)", NULL},
    };
    int nopts = (int)(sizeof(opts) / sizeof(opts[0]));
    mg_status st = mg_cfg_parse(opts, nopts, argc, argv, "mg-cpu-bench", "CPU backend tokens/s.");
    if (st == MG_ECANCELED) return 0;
    if (st || !model) {
        if (!st)
            MG_ERROR("--model is required");
        else
            MG_LOG_ERR("mg-cpu-bench");
        mg_cfg_free(opts, nopts);
        return 1;
    }
    mg_model *m;
    if ((st = model_load(model, &m))) {
        MG_LOG_ERR("mg-cpu-bench");
        mg_cfg_free(opts, nopts);
        return 1;
    }
    int rc = 0;
    for (char *p = batches; p && *p;) {
        int B = atoi(p);
        p = strchr(p, ',');
        if (p) p++;
        if (B < 1) continue;
        run r = {.B = B, .bs = 32};
        int ctx = (int)(prompt + warmup + steps);
        r.max_blocks = (ctx + r.bs - 1) / r.bs;
        cpu_backend_opts o = {.num_blocks = B * r.max_blocks,
                              .block_size = r.bs,
                              .max_tokens = (int)(B * prompt),
                              .threads = (int)threads};
        mg_backend *b;
        if ((st = cpu_backend_create(m, &o, &b))) {
            MG_LOG_ERR("mg-cpu-bench");
            rc = 1;
            break;
        }
        size_t T = (size_t)B * prompt;
        r.tokens = malloc(4 * T), r.positions = malloc(4 * T), r.token_seq = malloc(4 * T);
        r.seq_start = malloc(4 * B), r.seq_len = malloc(4 * B), r.seq_ctx = malloc(4 * B);
        r.rows = malloc(4 * B), r.rseq = malloc(4 * B), r.ctx = calloc(B, sizeof(int));
        r.table = malloc(4 * (size_t)B * r.max_blocks);
        r.logits = malloc(sizeof(float) * (size_t)B * b->vocab);
        for (int i = 0; i < B * r.max_blocks; i++) r.table[i] = i;
        int32_t *next = calloc(B, sizeof(int32_t));
        double t0 = now();
        st = step(b, &r, (int)prompt, NULL);
        double t_prefill = now() - t0, t_dec = 0, c0 = cpu_now();
        for (int k = 0; !st && k < warmup + steps; k++) {
            if (k == warmup) t0 = now(), c0 = cpu_now();
            for (int s = 0; s < B; s++) { /* greedy pick: part of a decode step */
                const float *row = r.logits + (size_t)s * b->vocab;
                int best = 0;
                for (int v = 1; v < b->vocab; v++)
                    if (row[v] > row[best]) best = v;
                next[s] = best;
            }
            st = step(b, &r, 1, next);
        }
        t_dec = now() - t0;
        double c_dec = cpu_now() - c0;
        if (st) {
            MG_LOG_ERR("mg-cpu-bench");
            rc = 1;
        } else {
            printf("cpu_%s_tok_s_b%d %.1f tokens/s (decode: %lld steps of %d tokens in %.3f s, "
                   "%.3f CPU-s = %.1f tokens per CPU-second; prefill %d x %lld tokens at %.0f "
                   "tokens/s; %d threads)\n",
                   name, B, (double)B * steps / t_dec, (long long)steps, B, t_dec, c_dec,
                   (double)B * steps / c_dec, B, (long long)prompt, (double)T / t_prefill,
                   threads ? (int)threads : (int)sysconf(_SC_NPROCESSORS_ONLN));
        }
        free(next), free(r.tokens), free(r.positions), free(r.token_seq), free(r.seq_start);
        free(r.seq_len), free(r.seq_ctx), free(r.rows), free(r.rseq), free(r.ctx), free(r.table);
        free(r.logits);
        b->ops->destroy(b);
        if (rc) break;
    }
    model_destroy(m);
    mg_cfg_free(opts, nopts);
    return rc;
}
