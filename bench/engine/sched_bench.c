/* sched_bench.c - host time of the scheduler per step: the seed workload's shape (N requests of
 * a P-token prompt and exactly O output tokens, temperature 1) stepped to the end on the mocker
 * backend with no simulated time, so each step's wall time is the scheduler's own work (admit,
 * lay the batch out, hand the mocker its sampling rows, append tokens, commit full blocks, emit)
 * plus the mocker's token draw. Prints the mean over the steps that decode all N sequences.
 *
 *   mg-sched-bench [--requests 256] [--prompt 128] [--output 1000] [--block 32]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_config.h"
#include "mocker.h"
#include "scheduler.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static long n_tokens; /* output tokens handed to the callbacks */

static void on_output(void *ud, const mg_output *o) {
    (void)ud;
    n_tokens += o->n_tokens;
}

int main(int argc, char **argv) {
    int n_req = 256, n_prompt = 128, n_out = 1000, block = 32;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--requests"))
            n_req = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prompt"))
            n_prompt = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--output"))
            n_out = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--block"))
            block = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "mg-sched-bench: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (n_req < 1 || n_prompt < 1 || n_out < 1 || block < 1 || n_prompt > 65536) {
        fprintf(stderr, "mg-sched-bench: --requests, --prompt (<= 65536), --output and --block "
                        "must be positive\n");
        return 2;
    }
    mg_engine_config ec;
    engine_config_defaults(&ec);
    ec.max_batch_size = n_req;
    ec.max_num_tokens = 8192;
    ec.max_seq_len = n_prompt + n_out;
    ec.kv_block_size = block;
    mg_mocker_config mc;
    mocker_config_defaults(&mc);
    mc.speedup_ratio = 0; /* instant steps */
    mc.num_blocks = (int64_t)n_req * ((n_prompt + n_out) / block + 2);
    mg_backend *be;
    mg_sched *s;
    if (mocker_create(&mc, &ec, &be) || sched_create(&ec, be, &s)) {
        fprintf(stderr, "mg-sched-bench: %s\n", mg_err_msg());
        return 1;
    }
    int32_t *prompt = malloc(sizeof(int32_t) * n_prompt);
    if (!prompt) return 1;
    for (int i = 0; i < n_prompt; i++) prompt[i] = 100 + 7 * i;
    for (int r = 0; r < n_req; r++) {
        char id[32];
        snprintf(id, sizeof(id), "r%d", r);
        mg_request q = {.id = id,
                        .prompt = prompt,
                        .n_prompt = n_prompt,
                        .sampling = mg_sampling_greedy(),
                        .max_tokens = n_out,
                        .min_tokens = n_out,
                        .ignore_eos = true,
                        .cb = on_output};
        q.sampling.temperature = 1.0f;
        if (sched_add(s, &q)) {
            fprintf(stderr, "mg-sched-bench: %s\n", mg_err_msg());
            return 1;
        }
    }
    int steps = 0, full = 0;
    double t0 = now_ms(), full_ms = 0;
    while (sched_has_work(s)) {
        mg_step_info inf;
        double a = now_ms();
        if (sched_step(s, &inf)) {
            fprintf(stderr, "mg-sched-bench: step: %s\n", mg_err_msg());
            return 1;
        }
        double b = now_ms();
        steps++;
        if (inf.n_prefill_tokens == 0 && inf.n_seqs == n_req) full++, full_ms += b - a;
    }
    double total = now_ms() - t0;
    printf("%d requests x (%d + %d tokens), block %d: %d steps in %.1f ms, %ld tokens emitted\n",
           n_req, n_prompt, n_out, block, steps, total, n_tokens);
    printf("RESULT sched_step_us_b%d %.1f (mean over %d steps that decode every sequence)\n", n_req,
           full ? 1e3 * full_ms / full : 0.0, full);
    sched_destroy(s);
    be->ops->destroy(be);
    free(prompt);
    return n_tokens == (long)n_req * n_out ? 0 : 1;
}
