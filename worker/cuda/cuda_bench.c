/* cuda_bench.c - decode-step time of the CUDA backend at a released shape with random weights
 * (--random-weights: the 120b files would not fit on the benchmark machine's disk), next to the
 * bytes-and-FLOPs limit of the step (cuda_plan_decode_limit, DESIGN.md §8), with per-kernel
 * times from a profiled step. The KV pool is filled with random values so that every sequence
 * reads a full context.
 *
 *   cuda-bench [--preset 120b] [--batches 1,64,256,512] [--ctx 1024] [--steps 20]
 *              [--bw 3.35e12] [--peak 989e12] [--version 1..7] [--graphs 0|1] (kernel versions,
 * cuda_backend.h)   [--temperature 0] [--host-sampling 0|1]
 *              [--sample-split 0|1] (steps of up to 8 rows: each row's token choice spread over
 *                                    many CTAs, cuda_sample_split, the default, as the worker's
 *                                    --cuda-sample-split; 0: a CTA a row)
 *              [--moe-tile 0|1|2|3] (MoE tile of versions 3-6: by token count, small, large,
 *              many-token)   [--moe-small-stages 4|8] (the small tile's weight ring)
 *              [--split 0|1]        (version 7's expert kernels in their split form, the
 *                                    default, or version 3's small tile; with it, o_proj at
 *                                    one token too)   [--o-split 1|2|4|8] (warps a row there)
 *              [--persist MASK]     (one-token q/k/v on a grid that fits at once,
 *                                    cuda_small_persist: 2 looping; 16 a pair a warp
 *                                    with rows partly in shared memory; 18, the default,
 *                                    both; 0 in waves)
 *              [--trigger MASK]     (1: o_proj at one token lets the router launch from its
 *                                    start; 2: the router on a cluster; 16: the cluster
 *                                    router's top-k by rank, else in rounds; 19, the
 *                                    default, all three; 32: the ranks four threads an
 *                                    expert instead of one: cuda_small_trigger)
 *              [--rows MASK]        (how the expert kernels at a few tokens stage their token
 *                                    rows, cuda_small_rows: 1, the default, gate_up's through
 *                                    L1, else from L2; 4 down's by each warp for itself; 16
 *                                    down at one token 8 rows a CTA)
 *              [--bulk MASK]        (small rows read after the wait by one bulk copy,
 *                                    cuda_small_bulk: 1 q/k/v's x, 2 the router's x, 4
 *                                    down's act rows, 8 o_proj's input row, 16
 *                                    attention's q, 32 gate_up's token row; 0, the default,
 *                                    the threads' loads)
 *              [--no-math MASK]     (one-token expert kernels without their arithmetic, loads
 *                                    kept: 1 gate_up, 2 down (the 16-row kernel, whatever
 *                                    --rows and --bulk say); the tokens are meaningless; 4
 *                                    gate_up's first wave half 1 us late)
 *              [--kv-fraction 0.9]  (free_gpu_memory_fraction for the KV pool)
 *              [--gemm-autotune 0|1] (time cuBLASLt's candidates per decode GEMM shape, as the
 *                                    worker's --cuda-gemm-autotune)
 *              [--gemv 0|1]         (steps of up to 4 tokens: the GEMV kernel, or cuBLASLt)
 *              [--pdl 0|1]          (programmatic dependent launch between the kernels)
 *              [--pdl-max-tokens 4] (the same for steps of up to that many tokens only, as the
 *                                    worker does; --pdl 0 --pdl-max-tokens 0: none at all)
 *              [--prefill S] [--prefill-len 128] (then one prefill step of S prompts of that
 *                                    length, as the seed workload's 8,192-token chunks: 64)
 *              [--omit SETS]        (batch 1 again without each set of ops, e.g.
 *                                    "qkv_rope;residual_norm,moe_down": each set's names are
 *                                    profile op names; the time saved is what they cost inside a
 *                                    graph, the tokens are meaningless)
 *              [--timeline 1]       (a build with MG_CUDA_TIMELINE: after batch 1, each
 *                                    one-token kernel's CTAs' start, wait and end in the last
 *                                    layer of one more step, min / median / max us)
 *              [--window-pool 0|1]  (the sliding layers in a window pool of their own, as the
 *                                    worker's kv_cache_config.sliding_window_pool: the full
 *                                    layers' pool then holds longer contexts per sequence)
 *
 * --temperature > 0 makes every row sample (seeded, counter = step), so the step includes the
 * token choice: on the device (cuda_sample), or with --host-sampling 1 the logits rows copied
 * back and drawn by sampling_pick as before.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>

#include "cuda_backend.h"
#include "cuda_ops.h"
#include "cuda_plan.h"
#include "log.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The batch over the bench's host arrays: n_seqs sequences, T tokens, the first n_decode of
 * them decodes; logits for each sequence's last token (rows, lseq). */
static mg_batch bench_batch(int T, int n_seqs, int n_decode, int32_t *tok, int32_t *pos,
                            int32_t *tseq, int32_t *st, int32_t *sl, int32_t *sc, int32_t *bt,
                            int mb, int32_t *wt, int32_t *rows, int32_t *lseq) {
    return (mg_batch){.n_tokens = T,
                      .n_seqs = n_seqs,
                      .n_decode = n_decode,
                      .n_prefill_tokens = T - n_decode,
                      .tokens = tok,
                      .positions = pos,
                      .token_seq = tseq,
                      .seq_start = st,
                      .seq_len = sl,
                      .seq_ctx = sc,
                      .block_table = bt,
                      .max_blocks = mb,
                      .window_table = wt,
                      .n_logits = n_seqs,
                      .logits_rows = rows,
                      .logits_seq = lseq};
}

/* Median of `runs` timed steps after `warm` untimed ones (ms); -1 when a step fails. */
static double median_step(mg_backend *b, const mg_batch *batch, mg_sample_req *reqs, int32_t *out,
                          int warm, int runs) {
    double ms[1000];
    for (int i = -warm; i < runs; i++) {
        double a = now_ms();
        if (b->ops->forward_sampled(b, batch, reqs, out)) {
            fprintf(stderr, "cuda-bench: %d-token step: %s\n", batch->n_tokens, mg_err_msg());
            return -1;
        }
        if (i >= 0) ms[i] = now_ms() - a;
        for (int s = 0; s < batch->n_seqs; s++) reqs[s].counter++;
    }
    qsort(ms, (size_t)runs, sizeof(double), cmp_d);
    return ms[runs / 2];
}

static void bench_reqs(mg_sample_req *reqs, int n, float temperature) {
    for (int s = 0; s < n; s++) {
        reqs[s].params = mg_sampling_greedy();
        reqs[s].params.temperature = temperature;
        reqs[s].params.seed = (uint64_t)s + 1;
    }
}

/* Per-kernel times over 3 profiled runs of batch (events around each launch group), printed on
 * one line. */
static int profile_step(mg_backend *b, const mg_batch *batch, mg_sample_req *reqs, int32_t *out,
                        int B) {
    cuda_backend_set_profile(b, true);
    const char *names[CUDA_PROF_OPS];
    double pm[CUDA_PROF_OPS];
    int calls[CUDA_PROF_OPS];
    cuda_backend_profile_read(b, names, pm, calls);
    for (int i = 0; i < 3; i++)
        if (b->ops->forward_sampled(b, batch, reqs, out)) {
            fprintf(stderr, "cuda-bench: B=%d: %s\n", B, mg_err_msg());
            return 1;
        }
    cuda_backend_profile_read(b, names, pm, calls);
    cuda_backend_set_profile(b, false);
    double tot = 0;
    for (int i = 0; i < CUDA_PROF_OPS; i++) tot += pm[i] / 3;
    printf("  per-kernel ms per step (B=%d, profiled, sum %.3f):", B, tot);
    for (int i = 0; i < CUDA_PROF_OPS; i++) printf(" %s=%.3f", names[i], pm[i] / 3);
    printf("\n");
    return 0;
}

/* One more step, then each kernel's CTAs of its last layer (cuda_timeline): start, past the wait,
 * the two marks inside its work (mid1, mid2) and end, min / median / max over the CTAs that
 * passed each point, in us from the first q/k/v CTA's start. */
static int print_timeline(mg_backend *b, const mg_batch *batch, mg_sample_req *reqs, int32_t *out) {
    static const char *kn[CUDA_TL_KERNELS] = {"qkv",    "attention", "o_proj",
                                              "router", "gate_up",   "down"};
    static const char *ph[CUDA_TL_PHASES] = {"start", "wait", "end", "mid1", "mid2"};
    static const int order[CUDA_TL_PHASES] = {0, 1, 3, 4, 2};
    size_t n = (size_t)CUDA_TL_KERNELS * CUDA_TL_CTAS * CUDA_TL_PHASES;
    unsigned long long *st = malloc(sizeof(*st) * n);
    double *v = malloc(sizeof(double) * CUDA_TL_CTAS);
    const char *err = NULL;
    int e = st && v ? cuda_timeline(NULL, 1) : (int)cudaErrorMemoryAllocation;
    if (e == (int)cudaErrorNotSupported)
        err = "not in this build (configure with -DMG_CUDA_TIMELINE=ON)";
    else if (e)
        err = cudaGetErrorString((cudaError_t)e);
    else if (b->ops->forward_sampled(b, batch, reqs, out))
        err = mg_err_msg();
    else if ((e = cuda_timeline(st, 0)) != 0)
        err = cudaGetErrorString((cudaError_t)e);
    if (err) {
        fprintf(stderr, "cuda-bench: --timeline: %s\n", err);
        free(st), free(v);
        return 1;
    }
    unsigned long long t0 = ~0ull;
    for (int c = 0; c < CUDA_TL_CTAS; c++) {
        unsigned long long t = st[((size_t)CUDA_TL_QKV * CUDA_TL_CTAS + c) * CUDA_TL_PHASES];
        if (t && t < t0) t0 = t;
    }
    for (int k = 0; k < CUDA_TL_KERNELS; k++)
        for (int pi = 0; pi < CUDA_TL_PHASES; pi++) {
            int m = 0, p = order[pi];
            for (int c = 0; c < CUDA_TL_CTAS; c++) {
                unsigned long long t = st[((size_t)k * CUDA_TL_CTAS + c) * CUDA_TL_PHASES + p];
                if (t >= t0) v[m++] = ((double)t - (double)t0) / 1000.0; /* not an older layer's */
            }
            if (!m) continue;
            qsort(v, (size_t)m, sizeof(double), cmp_d);
            printf("TIMELINE %-9s %-5s ctas %4d min %8.2f med %8.2f max %8.2f us\n", kn[k], ph[p],
                   m, v[0], v[m / 2], v[m - 1]);
        }
    free(st), free(v);
    return 0;
}

/* Batch 1 without each ;-separated set of ,-separated profile op names (cuda_backend_omit), its
 * time beside the full step's (full_ms); every op is back in the step on return. */
static int omit_sets(mg_backend *b, const char *sets, const mg_batch *batch, mg_sample_req *reqs,
                     int32_t *out, int steps, double full_ms) {
    const char *names[CUDA_PROF_OPS];
    double pm[CUDA_PROF_OPS];
    int calls[CUDA_PROF_OPS];
    cuda_backend_profile_read(b, names, pm, calls);
    for (const char *p = sets; *p;) {
        size_t n = strcspn(p, ";");
        unsigned mask = 0;
        for (size_t i = 0; i < n;) {
            size_t m = strcspn(p + i, ",;");
            if (m > n - i) m = n - i;
            int k = 0;
            while (k < CUDA_PROF_OPS && (strlen(names[k]) != m || strncmp(names[k], p + i, m))) k++;
            if (k == CUDA_PROF_OPS) {
                fprintf(stderr, "cuda-bench: --omit: no op named %.*s\n", (int)m, p + i);
                return 1;
            }
            mask |= 1u << k;
            i += m + (i + m < n);
        }
        cuda_backend_omit(b, mask);
        double med = median_step(b, batch, reqs, out, 3, steps);
        if (med < 0) return 1;
        printf("RESULT omit %.*s decode_step_ms_b1 %.3f saves_ms %.3f\n", (int)n, p, med,
               full_ms - med);
        p += n + (p[n] == ';');
    }
    cuda_backend_omit(b, 0);
    return 0;
}

int main(int argc, char **argv) {
    const char *preset = "120b", *batches = "1,64,256,512", *omit = NULL;
    int timeline = 0;
    int ctx_req = 1024, steps = 20, version = 1, graphs = 0, host_sampling = 0, window_pool = 0,
        sample_split = 1;
    int autotune = 0, gemv = 1, pf_seqs = 0, pf_len = 128, pdl_max_tokens = CUDA_PDL_MAX_TOKENS,
        pdl_all = 0;
    float temperature = 0.0f;
    double kv_fraction = 0.9;
    double bw = 3.35e12, peak = 989e12;
    char err[320];
    for (int i = 1; i + 1 < argc; i += 2) {
        int r = cuda_small_option(argv[i], argv[i + 1], err, sizeof(err)); /* --persist etc. */
        if (r < 0) {
            fprintf(stderr, "cuda-bench: %s\n", err);
            return 2;
        }
        if (r == 0) continue;
        if (!strcmp(argv[i], "--preset"))
            preset = argv[i + 1];
        else if (!strcmp(argv[i], "--batches"))
            batches = argv[i + 1];
        else if (!strcmp(argv[i], "--ctx"))
            ctx_req = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps"))
            steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--bw"))
            bw = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--peak"))
            peak = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--version"))
            version = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--graphs"))
            graphs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--temperature"))
            temperature = (float)atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--host-sampling"))
            host_sampling = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--sample-split"))
            sample_split = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--kv-fraction"))
            kv_fraction = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--window-pool"))
            window_pool = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prefill"))
            pf_seqs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prefill-len"))
            pf_len = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--gemm-autotune"))
            autotune = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--gemv"))
            gemv = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--moe-tile"))
            cuda_moe3_force_tile(atoi(argv[i + 1]));
        else if (!strcmp(argv[i], "--moe-small-stages"))
            cuda_moe3_small_stages(atoi(argv[i + 1]));
        else if (!strcmp(argv[i], "--split"))
            cuda_small_split(atoi(argv[i + 1]));
        else if (!strcmp(argv[i], "--o-split")) {
            int ks = atoi(argv[i + 1]);
            if (ks != 1 && ks != 2 && ks != 4 && ks != 8) {
                fprintf(stderr, "cuda-bench: --o-split %s: warps a row must be 1, 2, 4 or 8\n",
                        argv[i + 1]);
                return 2;
            }
            cuda_small_o_split(ks);
        } else if (!strcmp(argv[i], "--omit"))
            omit = argv[i + 1];
        else if (!strcmp(argv[i], "--timeline"))
            timeline = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--pdl-max-tokens"))
            pdl_max_tokens = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--pdl"))
            cuda_set_pdl(pdl_all = atoi(argv[i + 1]));
        else {
            fprintf(stderr, "cuda-bench: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (steps < 1 || steps > 1000 || ctx_req < 1 || !(kv_fraction > 0 && kv_fraction <= 1) ||
        pf_seqs < 0 || pf_len < 1 || (long)pf_seqs * pf_len > 65536) {
        fprintf(stderr, "cuda-bench: --steps in [1, 1000], --ctx positive, --kv-fraction in (0, "
                        "1], --prefill x --prefill-len at most 65536 tokens\n");
        return 2;
    }
    mg_model_config c;
    if (cuda_plan_preset(preset, &c)) {
        fprintf(stderr, "cuda-bench: %s\n", mg_err_msg());
        return 2;
    }
    int bl[16], nb = 0, maxB = 1;
    for (const char *p = batches; *p && nb < 16;) {
        bl[nb] = atoi(p);
        if (bl[nb] < 1) {
            fprintf(stderr, "cuda-bench: --batches %s: positive sizes\n", batches);
            return 2;
        }
        if (bl[nb] > maxB) maxB = bl[nb];
        nb++;
        const char *q = strchr(p, ',');
        if (!q) break;
        p = q + 1;
    }
    struct cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
        fprintf(stderr, "cuda-bench: no CUDA device\n");
        return 2;
    }
    int max_tokens = pf_seqs * pf_len > maxB ? pf_seqs * pf_len : maxB;
    int max_seqs = pf_seqs > maxB ? pf_seqs : maxB;
    cuda_backend_opts o = {.device = 0,
                           .num_blocks = 0,
                           .free_gpu_memory_fraction = kv_fraction,
                           .block_size = 16,
                           .max_tokens = max_tokens,
                           .max_seqs = max_seqs,
                           .max_ctx = 8192,
                           .kernel_version = version,
                           .cuda_graphs = graphs != 0,
                           .host_sampling = host_sampling != 0,
                           .sample_split = sample_split != 0,
                           .window_pool = window_pool != 0,
                           .gemm_autotune = autotune != 0,
                           .gemm_no_gemv = gemv == 0,
                           .pdl_max_tokens = pdl_max_tokens};
    mg_backend *b;
    double t0 = now_ms();
    if (cuda_backend_create_random(&c, 1, &o, &b) || cuda_backend_fill_kv(b, 2)) {
        fprintf(stderr, "cuda-bench: %s\n", mg_err_msg());
        return 1;
    }
    char pdl_note[48];
    snprintf(pdl_note, sizeof(pdl_note), "up to %d tokens", pdl_max_tokens);
    printf("cuda-bench: %s, preset %s (random weights), kernel version %d, graphs %d, PDL %s, "
           "%d KV blocks of 16 (window pool: %d blocks), set-up %.0f ms, temperature %g, "
           "sampling on the %s%s\n",
           prop.name, preset, version, graphs,
           pdl_all              ? "every step"
           : pdl_max_tokens > 0 ? pdl_note
                                : "off",
           b->num_blocks, b->window_blocks, now_ms() - t0, temperature,
           host_sampling ? "host" : "device",
           sample_split ? " (up to 8 rows split over CTAs)" : "");
    int bs = b->block_size;
    int32_t *tok = malloc(4 * (size_t)max_tokens), *pos = malloc(4 * (size_t)max_tokens);
    int32_t *tseq = malloc(4 * (size_t)max_tokens), *st = malloc(4 * (size_t)max_seqs);
    int32_t *sl = malloc(4 * (size_t)max_seqs), *sc = malloc(4 * (size_t)max_seqs);
    int32_t *rows = malloc(4 * (size_t)max_seqs), *out = malloc(4 * (size_t)max_seqs);
    int32_t *lseq = malloc(4 * (size_t)max_seqs);
    mg_sample_req *reqs = calloc((size_t)max_seqs, sizeof(mg_sample_req));
    int32_t *bt = NULL, *wt = NULL;
    double single_ms = 0;
    printf("\n%-6s %-6s %10s %10s %10s %10s %8s\n", "batch", "ctx", "step_ms", "limit_ms",
           "bytes_GB", "TFLOP", "of_limit");
    for (int bi = 0; bi < nb; bi++) {
        int B = bl[bi];
        /* contexts as long as asked, or as the pool allows for B sequences */
        int per = b->num_blocks / B, ctx = ctx_req;
        if (per * bs < ctx) ctx = per * bs;
        if (ctx > b->max_ctx) ctx = b->max_ctx;
        int mb = (ctx + bs - 1) / bs;
        free(bt);
        free(wt);
        bt = malloc(4 * (size_t)B * mb);
        wt = malloc(4 * (size_t)B * mb);
        /* the window pool's blocks: those of the last `window` positions of each sequence (the
         * pool is sized for max_seqs of them), -1 below, as the scheduler lays them out */
        int wlo = ctx - b->window > 0 ? (ctx - b->window) / bs : 0, wper = mb - wlo;
        for (int s = 0; s < B; s++) {
            for (int k = 0; k < mb; k++) {
                bt[(size_t)s * mb + k] = s * mb + k;
                wt[(size_t)s * mb + k] = k < wlo ? -1 : s * wper + (k - wlo);
            }
            tok[s] = (int32_t)((s * 7919u + 13) % (unsigned)c.vocab), pos[s] = ctx - 1;
            tseq[s] = s, st[s] = s, sl[s] = 1, sc[s] = ctx, rows[s] = s, lseq[s] = s;
        }
        bench_reqs(reqs, B, temperature);
        mg_batch batch = bench_batch(B, B, B, tok, pos, tseq, st, sl, sc, bt, mb,
                                     b->window_blocks > 0 ? wt : NULL, rows, lseq);
        double med = median_step(b, &batch, reqs, out, 3, steps);
        if (med < 0) return 1;
        if (B == 1) single_ms = med;
        if (B == 1 && timeline && print_timeline(b, &batch, reqs, out)) return 1;
        cuda_step_limit lim = cuda_plan_decode_limit(&c, B, ctx, bw, peak);
        printf("%-6d %-6d %10.3f %10.3f %10.2f %10.2f %7.0f%%\n", B, ctx, med, lim.ms,
               lim.bytes / 1e9, lim.flops / 1e12, 100.0 * lim.ms / med);
        if (profile_step(b, &batch, reqs, out, B)) return 1;
        printf("RESULT v%d%s decode_step_ms_b%d %.3f limit_ms %.3f ctx %d experts_touched %.1f\n",
               version, graphs ? "+graphs" : "", B, med, lim.ms, ctx, lim.experts_touched);
        if (B == 1 && omit && omit_sets(b, omit, &batch, reqs, out, steps, med)) return 1;
    }
    if (pf_seqs > 0) { /* one chunked-prefill step: pf_seqs prompts of pf_len tokens from 0 */
        int T = pf_seqs * pf_len, mb = (pf_len + bs - 1) / bs;
        free(bt);
        free(wt);
        bt = malloc(4 * (size_t)pf_seqs * mb);
        wt = malloc(4 * (size_t)pf_seqs * mb);
        for (int s = 0; s < pf_seqs; s++) {
            for (int k = 0; k < mb; k++)
                bt[(size_t)s * mb + k] = wt[(size_t)s * mb + k] = s * mb + k;
            for (int j = 0; j < pf_len; j++) {
                int t = s * pf_len + j;
                tok[t] = (int32_t)((t * 7919u + 13) % (unsigned)c.vocab), pos[t] = j, tseq[t] = s;
            }
            st[s] = s * pf_len, sl[s] = pf_len, sc[s] = pf_len, rows[s] = s * pf_len + pf_len - 1;
            lseq[s] = s;
        }
        bench_reqs(reqs, pf_seqs, temperature);
        mg_batch batch = bench_batch(T, pf_seqs, 0, tok, pos, tseq, st, sl, sc, bt, mb,
                                     b->window_blocks > 0 ? wt : NULL, rows, lseq);
        double med = median_step(b, &batch, reqs, out, 1, steps < 5 ? steps : 5);
        if (med < 0) return 1;
        if (profile_step(b, &batch, reqs, out, T)) return 1;
        printf("RESULT v%d prefill_step_ms_%dx%d %.3f tokens_per_s %.0f\n", version, pf_seqs,
               pf_len, med, T / med * 1000.0);
    }
    if (single_ms > 0)
        printf("RESULT v%d%s single_stream_tok_s %.1f\n", version, graphs ? "+graphs" : "",
               1000.0 / single_ms);
    b->ops->destroy(b);
    free(tok), free(pos), free(tseq), free(st), free(sl), free(sc), free(rows), free(out);
    free(reqs), free(bt), free(wt), free(lseq);
    return 0;
}
