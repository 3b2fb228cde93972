/* test_mocker.c - the engine thread over the mocker backend: 1,000 requests submitted at once
 * from several threads all finish with the right token counts inside the batch and KV limits;
 * cancel mid-generation frees the blocks; shutdown ends what is left with an error; the
 * mocker's tokens repeat per seed and its step time follows its model; a TensorRT-LLM engine
 * YAML fills the engine settings; two lockstep ranks step together with work on one only. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "engine.h"
#include "log.h"
#include "mocker.h"

#define NREQ     1000
#define NTHREADS 4

typedef struct rec {
    int n, n_final, after_final, bad_tok;
    mg_finish fin;
    mg_usage usage;
    int max_tokens, n_prompt;
    int32_t first[8];
} rec;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int n_done;

static void on_out(void *ud, const mg_output *o) {
    rec *r = ud;
    if (r->n_final) r->after_final++;
    for (int i = 0; i < o->n_tokens; i++) {
        if (o->tokens[i] < 0 || o->tokens[i] >= 199998) r->bad_tok++;
        if (r->n < 8) r->first[r->n] = o->tokens[i];
        r->n++;
    }
    if (o->finish != MG_FINISH_NONE) {
        r->fin = o->finish;
        r->usage = o->usage;
        r->n_final++;
        pthread_mutex_lock(&mu);
        n_done++;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
    }
}

static bool wait_done(int want, int seconds) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += seconds;
    pthread_mutex_lock(&mu);
    while (n_done < want)
        if (pthread_cond_timedwait(&cv, &mu, &dl) != 0) break;
    bool ok = n_done >= want;
    pthread_mutex_unlock(&mu);
    return ok;
}

/* Hooks: event ids rise by one; stored and removed balance; steps respect the limits. */
typedef struct hooks_rec {
    uint64_t last_id;
    int id_gaps, stored, removed, cleared;
    int max_seqs, max_tokens, steps;
} hooks_rec;

static void on_kv(void *ud, const mg_kv_event *e) {
    hooks_rec *h = ud;
    if (e->event_id != h->last_id + 1) h->id_gaps++;
    h->last_id = e->event_id;
    if (e->kind == MG_KV_STORED)
        h->stored += e->n;
    else if (e->kind == MG_KV_REMOVED)
        h->removed += e->n;
    else
        h->cleared++;
}

static void on_step(void *ud, const mg_step_info *inf, double ms) {
    hooks_rec *h = ud;
    h->steps++;
    if (inf->n_seqs > h->max_seqs) h->max_seqs = inf->n_seqs;
    if (inf->n_tokens > h->max_tokens) h->max_tokens = inf->n_tokens;
}

static rec recs[NREQ];
static int32_t prompts[NREQ][320];
static char ids[NREQ][24];
static mg_engine *eng;
static atomic_int submit_errors;

static void *submitter(void *arg) {
    int t = (int)(intptr_t)arg;
    for (int i = t; i < NREQ; i += NTHREADS) {
        mg_request r = {.id = ids[i],
                        .prompt = prompts[i],
                        .n_prompt = recs[i].n_prompt,
                        .max_tokens = recs[i].max_tokens,
                        .ignore_eos = true,
                        .cb = on_out,
                        .ud = &recs[i]};
        if (i % 3 == 0) r.sampling = (mg_sampling){0.8f, 0.95f, 40, (uint64_t)i};
        if (engine_submit(eng, &r) != MG_OK) atomic_fetch_add(&submit_errors, 1);
    }
    return NULL;
}

static void test_thousand(void) {
    mg_engine_config ec;
    engine_config_defaults(&ec);
    ec.max_batch_size = 64;
    ec.max_num_tokens = 256;
    ec.max_seq_len = 4096;
    ec.kv_block_size = 16;
    mg_mocker_config mc;
    mocker_config_defaults(&mc);
    mc.speedup_ratio = 0; /* instant */
    mc.num_blocks = 400;  /* 6,400 tokens for up to 64 sequences of up to 364: preemption */
    mg_backend *be;
    CHECK_OK(mocker_create(&mc, &ec, &be));
    hooks_rec h = {0};
    mg_engine_hooks hk = {on_kv, &h, on_step, &h};
    CHECK_OK(engine_create(&ec, be, &hk, &eng));

    unsigned seed = 99;
    int32_t system[64];
    for (int k = 0; k < 64; k++) system[k] = rand_r(&seed) % 199998;
    long want_tokens = 0;
    for (int i = 0; i < NREQ; i++) {
        recs[i].n_prompt = 1 + rand_r(&seed) % 300;
        recs[i].max_tokens = 1 + rand_r(&seed) % 64;
        want_tokens += recs[i].max_tokens;
        for (int k = 0; k < recs[i].n_prompt; k++)
            prompts[i][k] = (i % 2 && k < 64) ? system[k] : rand_r(&seed) % 199998;
        snprintf(ids[i], sizeof(ids[i]), "r%d", i);
    }
    n_done = 0;
    pthread_t th[NTHREADS];
    for (int t = 0; t < NTHREADS; t++) pthread_create(&th[t], NULL, submitter, (void *)(intptr_t)t);
    for (int t = 0; t < NTHREADS; t++) pthread_join(th[t], NULL);
    CHECK_EQ_INT(atomic_load(&submit_errors), 0);
    CHECK_MSG(wait_done(NREQ, 60), "only %d of %d finished", n_done, NREQ);

    int wrong = 0, finals = 0, after = 0, bad = 0;
    for (int i = 0; i < NREQ; i++) {
        rec *r = &recs[i];
        if (r->n != r->max_tokens || r->fin != MG_FINISH_LENGTH ||
            r->usage.completion_tokens != r->n || r->usage.prompt_tokens != r->n_prompt)
            wrong++;
        finals += r->n_final;
        after += r->after_final;
        bad += r->bad_tok;
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(finals, NREQ);
    CHECK_EQ_INT(after, 0);
    CHECK_EQ_INT(bad, 0);

    /* The stats are published after the step whose callbacks finished the last request. */
    mg_engine_stats st = engine_stats(eng);
    for (int i = 0; i < 200 && st.requests_done < NREQ; i++) {
        usleep(5000);
        st = engine_stats(eng);
    }
    CHECK_EQ_INT(st.requests_done, NREQ);
    CHECK_EQ_INT(st.tokens_out, want_tokens);
    CHECK_EQ_INT(st.active_slots, 0);
    CHECK_EQ_INT(st.waiting, 0);
    CHECK_EQ_INT(st.kv_active_blocks, 0);
    CHECK_EQ_INT(st.kv_total_blocks, 400);
    CHECK_EQ_INT(st.total_slots, 64);
    CHECK(st.prefix_hit_rate > 0); /* half the prompts share a 64-token system prefix */
    CHECK_MSG(st.preemptions > 0, "expected preemptions with 400 blocks");
    printf("1000 requests: %llu steps, %llu preemptions, hit rate %.3f, %llu tokens\n",
           (unsigned long long)st.steps, (unsigned long long)st.preemptions, st.prefix_hit_rate,
           (unsigned long long)st.tokens_out);
    engine_destroy(eng);
    CHECK(h.max_seqs <= 64 && h.max_seqs > 1);
    CHECK(h.max_tokens <= 256);
    CHECK_EQ_INT(h.id_gaps, 0);
    CHECK_EQ_INT(h.stored - h.removed, st.kv_cached_blocks);
    be->ops->destroy(be);
}

static void test_cancel_shutdown_determinism(void) {
    mg_engine_config ec;
    engine_config_defaults(&ec);
    ec.max_batch_size = 8;
    ec.max_num_tokens = 512;
    ec.max_seq_len = 4096;
    mg_mocker_config mc;
    mocker_config_defaults(&mc);
    mc.decode_base_us = 2000; /* 2 ms a step */
    mc.prefill_us_per_token = 1;
    mc.decode_us_per_seq = 0;
    mc.decode_us_per_kv_token = 0;
    mc.num_blocks = 256;
    mg_backend *be;
    CHECK_OK(mocker_create(&mc, &ec, &be));
    CHECK_OK(engine_create(&ec, be, NULL, &eng));
    CHECK_EQ_INT(engine_max_len(eng), 4096);
    CHECK_EQ_INT(engine_kv_blocks(eng), 256);

    int32_t p[40];
    for (int i = 0; i < 40; i++) p[i] = i * 11;
    /* a bad request fails on the caller's thread and never calls back */
    rec badr = {0};
    mg_request bad = {.id = "bad", .prompt = p, .n_prompt = 0, .cb = on_out, .ud = &badr};
    CHECK(engine_submit(eng, &bad) == MG_EINVAL);

    /* timing: 10 tokens at 2 ms a step take at least 20 ms */
    n_done = 0;
    rec t10 = {0};
    mg_request r = {
        .id = "t10", .prompt = p, .n_prompt = 40, .max_tokens = 10, .cb = on_out, .ud = &t10};
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    CHECK_OK(engine_submit(eng, &r));
    CHECK(wait_done(1, 10));
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
    CHECK_MSG(ms >= 20.0, "10 steps took %.1f ms", ms);
    CHECK_EQ_INT(t10.n, 10);

    /* the same id and prompt give the same tokens; another seed does not */
    rec again = {0}, other = {0};
    r.ud = &again;
    CHECK_OK(engine_submit(eng, &r));
    r.id = "t10-seeded";
    r.has_seed = true;
    r.sampling.seed = 12345;
    r.ud = &other;
    CHECK_OK(engine_submit(eng, &r));
    CHECK(wait_done(3, 10));
    CHECK(memcmp(t10.first, again.first, sizeof(t10.first)) == 0);
    CHECK(memcmp(t10.first, other.first, sizeof(t10.first)) != 0);

    /* cancel mid-generation */
    rec c = {0};
    mg_request rc = {
        .id = "long", .prompt = p, .n_prompt = 40, .max_tokens = 3000, .cb = on_out, .ud = &c};
    CHECK_OK(engine_submit(eng, &rc));
    for (int i = 0; i < 2000 && engine_stats(eng).tokens_out < 30 + 5; i++) usleep(1000);
    CHECK(engine_stats(eng).kv_active_blocks > 0);
    engine_cancel(eng, "long");
    CHECK(wait_done(4, 10));
    CHECK_EQ_INT(c.fin, MG_FINISH_CANCELLED);
    CHECK(c.n >= 5 && c.n < 3000);
    CHECK_EQ_INT(c.n_final, 1);
    mg_engine_stats st = engine_stats(eng);
    for (int i = 0; i < 200 && (st.kv_active_blocks || st.active_slots); i++) {
        usleep(2000);
        st = engine_stats(eng);
    }
    CHECK_EQ_INT(st.kv_active_blocks, 0);
    CHECK_EQ_INT(st.active_slots, 0);
    CHECK(engine_idle(eng));
    engine_cancel(eng, "no-such-request"); /* ignored */

    /* shutdown with work in flight: the request ends with an error */
    rec s = {0};
    rc.id = "at-shutdown";
    rc.ud = &s;
    CHECK_OK(engine_submit(eng, &rc));
    usleep(10000);
    engine_destroy(eng);
    CHECK_EQ_INT(s.fin, MG_FINISH_ERROR);
    CHECK_EQ_INT(s.n_final, 1);
    engine_destroy(NULL);
    be->ops->destroy(be);
}

/* An open-ended request longer than the first reservation grows its arrays inside the step. */
static void test_long_output(void) {
    mg_engine_config ec;
    engine_config_defaults(&ec);
    ec.max_batch_size = 4;
    ec.max_num_tokens = 256;
    ec.max_seq_len = 20100;
    ec.kv_block_size = 16;
    mg_mocker_config mc;
    mocker_config_defaults(&mc);
    mc.speedup_ratio = 0;
    mc.num_blocks = 1300;
    mg_backend *be;
    CHECK_OK(mocker_create(&mc, &ec, &be));
    CHECK_OK(engine_create(&ec, be, NULL, &eng));
    int32_t p[100];
    for (int i = 0; i < 100; i++) p[i] = i;
    rec r = {0};
    n_done = 0;
    mg_request q = {
        .id = "long", .prompt = p, .n_prompt = 100, .ignore_eos = true, .cb = on_out, .ud = &r};
    CHECK_OK(engine_submit(eng, &q));
    CHECK(wait_done(1, 60));
    CHECK_EQ_INT(r.n, 20000); /* max_tokens 0: up to max_seq_len */
    CHECK_EQ_INT(r.fin, MG_FINISH_LENGTH);
    engine_destroy(eng);
    be->ops->destroy(be);
}

/* ---------- lockstep: two ranks of a group, work on one only ---------- */

typedef struct group {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n, arrived, acc, result;
    unsigned gen;
    bool closed;
} group;

typedef struct rank_be {
    mg_backend base;
    group *g;
    atomic_int forwards, empty_forwards, syncs;
} rank_be;

/* An all-reduce (max) over the group's ranks, as NCCL would do it. */
static mg_status rank_sync(mg_backend *b, int local, int *any) {
    rank_be *r = (rank_be *)b;
    group *g = r->g;
    atomic_fetch_add(&r->syncs, 1);
    pthread_mutex_lock(&g->mu);
    unsigned gen = g->gen;
    g->acc |= local;
    if (++g->arrived == g->n) {
        g->result = g->acc;
        g->acc = g->arrived = 0;
        g->gen++;
        pthread_cond_broadcast(&g->cv);
    } else {
        while (gen == g->gen && !g->closed) pthread_cond_wait(&g->cv, &g->mu);
    }
    *any = g->result;
    bool closed = g->closed;
    pthread_mutex_unlock(&g->mu);
    return closed ? MG_ECLOSED : MG_OK;
}

static mg_status rank_forward(mg_backend *b, const mg_batch *bt, const mg_sample_req *rq,
                              int32_t *out) {
    rank_be *r = (rank_be *)b;
    atomic_fetch_add(&r->forwards, 1);
    if (bt->n_seqs == 0) atomic_fetch_add(&r->empty_forwards, 1);
    for (int i = 0; i < bt->n_logits; i++) out[i] = (int32_t)(rq[i].counter % 100);
    return MG_OK;
}

static void rank_destroy(mg_backend *b) {
    (void)b;
}

static const mg_backend_ops rank_ops = {.name = "rank",
                                        .forward_sampled = rank_forward,
                                        .destroy = rank_destroy,
                                        .group_sync = rank_sync};

static void test_lockstep(void) {
    group g = {.n = 2};
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    rank_be r[2];
    mg_engine *e[2];
    mg_engine_config ec;
    engine_config_defaults(&ec);
    ec.max_batch_size = 8;
    ec.max_num_tokens = 64;
    ec.max_seq_len = 256;
    ec.kv_block_size = 16;
    for (int i = 0; i < 2; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        r[i].base = (mg_backend){
            .ops = &rank_ops, .vocab = 1000, .num_blocks = 64, .block_size = 16, .max_ctx = 256};
        r[i].g = &g;
        CHECK_OK(engine_create(&ec, &r[i].base, NULL, &e[i]));
    }
    rec out[10];
    char rid[10][8];
    int32_t p[20];
    for (int k = 0; k < 20; k++) p[k] = k;
    n_done = 0;
    for (int i = 0; i < 10; i++) {
        memset(&out[i], 0, sizeof(out[i]));
        snprintf(rid[i], sizeof(rid[i]), "g%d", i);
        mg_request q = {.id = rid[i],
                        .prompt = p,
                        .n_prompt = 20,
                        .max_tokens = 12,
                        .ignore_eos = true,
                        .cb = on_out,
                        .ud = &out[i]};
        CHECK_OK(engine_submit(e[0], &q)); /* rank 0 only */
    }
    CHECK(wait_done(10, 30));
    for (int i = 0; i < 10; i++) CHECK_EQ_INT(out[i].n, 12);
    /* Once both are idle again they have stepped the same number of times: every step of rank 0
     * was matched by an empty one on rank 1. */
    int f0 = -1, f1 = -2;
    for (int t = 0; t < 500 && f0 != f1; t++) {
        usleep(2000);
        f0 = atomic_load(&r[0].forwards);
        f1 = atomic_load(&r[1].forwards);
    }
    CHECK_EQ_INT(f0, f1);
    CHECK(f0 >= 12);
    CHECK_EQ_INT(atomic_load(&r[1].empty_forwards), f1);
    CHECK_EQ_INT(atomic_load(&r[0].empty_forwards), 0);
    /* idle ranks keep meeting in the collective without stepping */
    int s0 = atomic_load(&r[0].syncs);
    usleep(20000);
    CHECK(atomic_load(&r[0].syncs) > s0);
    CHECK_EQ_INT(atomic_load(&r[0].forwards), f0);
    /* shutdown: abort the group first, then destroy the ranks */
    pthread_mutex_lock(&g.mu);
    g.closed = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    engine_destroy(e[0]);
    engine_destroy(e[1]);
    pthread_mutex_destroy(&g.mu);
    pthread_cond_destroy(&g.cv);
}

/* A mocker asked for stops (eos_rate 1) still gives min_tokens ordinary tokens first. */
static void test_eos_min_tokens(void) {
    mg_engine_config ec;
    engine_config_defaults(&ec);
    ec.max_seq_len = 1024;
    mg_mocker_config mc;
    mocker_config_defaults(&mc);
    mc.speedup_ratio = 0;
    mc.eos_rate = 1.0;
    mc.num_blocks = 64;
    mg_backend *be;
    CHECK_OK(mocker_create(&mc, &ec, &be));
    CHECK_OK(engine_create(&ec, be, NULL, &eng));
    int32_t p[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    rec a = {0}, b = {0};
    n_done = 0;
    mg_request r = {.id = "eos", .prompt = p, .n_prompt = 10, .cb = on_out, .ud = &a};
    CHECK_OK(engine_submit(eng, &r));
    r.id = "eos-min";
    r.min_tokens = 5;
    r.ud = &b;
    CHECK_OK(engine_submit(eng, &r));
    CHECK(wait_done(2, 10));
    CHECK_EQ_INT(a.n, 1);
    CHECK_EQ_INT(a.fin, MG_FINISH_STOP);
    CHECK_EQ_INT(a.bad_tok, 1); /* the stop id 200002 is no ordinary token */
    CHECK_EQ_INT(b.n, 6);
    CHECK_EQ_INT(b.fin, MG_FINISH_STOP);
    CHECK_EQ_INT(b.bad_tok, 1); /* only the last one */
    engine_destroy(eng);
    be->ops->destroy(be);
}

/* Banned stop ids that are ordinary tokens are never drawn either (min_tokens on the mocker). */
static void test_banned_ordinary(void) {
    mg_engine_config ec;
    engine_config_defaults(&ec);
    CHECK(ec.sliding_window_pool); /* on unless turned off */
    mg_mocker_config mc;
    mocker_config_defaults(&mc);
    mc.speedup_ratio = 0;
    mc.ordinary_tokens = 3;
    mg_backend *be;
    CHECK_OK(mocker_create(&mc, &ec, &be));
    int32_t tok = 1, pos = 0, seq = 0, start = 0, len = 1, ctx = 1, blocks = 0, row = 0, lseq = 0;
    mg_batch b = {.n_tokens = 1,
                  .n_seqs = 1,
                  .n_decode = 1,
                  .tokens = &tok,
                  .positions = &pos,
                  .token_seq = &seq,
                  .seq_start = &start,
                  .seq_len = &len,
                  .seq_ctx = &ctx,
                  .block_table = &blocks,
                  .max_blocks = 1,
                  .n_logits = 1,
                  .logits_rows = &row,
                  .logits_seq = &lseq};
    int32_t banned[2] = {0, 2};
    int seen[3] = {0};
    for (uint64_t n = 0; n < 200; n++) {
        mg_sample_req rq = {
            .params = mg_sampling_greedy(), .counter = n, .banned = banned, .n_banned = 2};
        rq.params.seed = 77;
        int32_t out = -1;
        CHECK_OK(be->ops->forward_sampled(be, &b, &rq, &out));
        if (out >= 0 && out < 3) seen[out]++;
    }
    CHECK_EQ_INT(seen[0], 0);
    CHECK_EQ_INT(seen[2], 0);
    CHECK_EQ_INT(seen[1], 200);
    be->ops->destroy(be);
}

static void test_step_model(void) {
    mg_mocker_config mc;
    mocker_config_defaults(&mc);
    mc.decode_base_us = 1000;
    mc.prefill_us_per_token = 10;
    mc.decode_us_per_seq = 5;
    mc.speedup_ratio = 2;
    mc.decode_us_per_kv_token = 0.5;
    int32_t ctx[12] = {10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 300, 400}; /* decode: 550 */
    mg_batch b = {
        .n_tokens = 110, .n_seqs = 12, .n_decode = 10, .n_prefill_tokens = 100, .seq_ctx = ctx};
    CHECK_NEAR(mocker_step_us(&mc, &b), (1000 + 100 * 10 + 10 * 5 + 550 * 0.5) / 2.0, 1e-9);
    mc.speedup_ratio = 0;
    CHECK_NEAR(mocker_step_us(&mc, &b), 0, 0);
    mg_engine_config ec;
    engine_config_defaults(&ec);
    mg_backend *be;
    mc.ordinary_tokens = mc.vocab + 1;
    CHECK(mocker_create(&mc, &ec, &be) == MG_EINVAL);
}

/* A TensorRT-LLM --extra-engine-args file fills the engine rows; unknown keys are skipped. */
static void test_config_yaml(void) {
    char path[] = "/tmp/test_mocker_engine_XXXXXX";
    int fd = mkstemp(path);
    const char *yaml = "tensor_parallel_size: 4\n"
                       "moe_expert_parallel_size: 4\n"
                       "max_batch_size: 800\n"
                       "max_num_tokens: 768\n"
                       "max_seq_len: 1128\n"
                       "enable_attention_dp: true\n"
                       "cuda_graph_config:\n"
                       "  enable_padding: true\n"
                       "  max_batch_size: 800\n"
                       "kv_cache_config:\n"
                       "  dtype: fp8\n"
                       "  free_gpu_memory_fraction: 0.8\n"
                       "  enable_block_reuse: false\n"
                       "  sliding_window_pool: false\n"
                       "stream_interval: 10\n";
    CHECK(write(fd, yaml, strlen(yaml)) == (ssize_t)strlen(yaml));
    close(fd);
    mg_engine_config ec;
    engine_config_defaults(&ec);
    CHECK(ec.sliding_window_pool); /* on unless turned off */
    mg_mocker_config mc;
    mocker_config_defaults(&mc);
    mg_cfg_opt rows[MG_ENGINE_CONFIG_NOPTS + MG_MOCKER_CONFIG_NOPTS + 1];
    char *yaml_path = NULL;
    int n = engine_config_opts(&ec, rows);
    CHECK_EQ_INT(n, MG_ENGINE_CONFIG_NOPTS);
    n += mocker_config_opts(&mc, rows + n);
    rows[n++] =
        (mg_cfg_opt){"extra-engine-args", MG_CFG_YAML, &yaml_path, NULL, 1, 0, "engine YAML", NULL};
    char *argv[] = {"w",  "--extra-engine-args", path,    "--mocker-num-kv-blocks",
                    "77", "--eos-token-ids",     "[5, 6]"};
    CHECK_OK(mg_cfg_parse(rows, n, 7, argv, "w", "test"));
    CHECK_EQ_INT(ec.max_batch_size, 800);
    CHECK_EQ_INT(ec.max_num_tokens, 768);
    CHECK_EQ_INT(ec.max_seq_len, 1128);
    CHECK_EQ_INT(ec.tensor_parallel_size, 4);
    CHECK_EQ_INT(ec.moe_expert_parallel_size, 4);
    CHECK(ec.enable_attention_dp);
    CHECK(!ec.enable_block_reuse);
    CHECK(!ec.sliding_window_pool);
    CHECK_NEAR(ec.free_gpu_memory_fraction, 0.8, 1e-12);
    CHECK_EQ_INT(ec.kv_block_size, 32);
    CHECK_EQ_INT(ec.stream_interval, 10);
    CHECK_EQ_INT(mc.num_blocks, 77);
    CHECK_OK(engine_config_check(&ec));
    CHECK_EQ_INT(ec.n_stop_ids, 2);
    CHECK(ec.stop_ids[0] == 5 && ec.stop_ids[1] == 6);
    /* KV blocks from memory: 80% of 10 GiB in 1 MiB blocks, capped by kv max tokens */
    CHECK_EQ_INT(engine_config_kv_blocks(&ec, 10ull << 30, 1ull << 20), 8192);
    ec.kv_max_tokens = 32 * 100;
    CHECK_EQ_INT(engine_config_kv_blocks(&ec, 10ull << 30, 1ull << 20), 100);
    mg_cfg_free(rows, n);
    unlink(path);
    /* a bad id list names the field */
    engine_config_defaults(&ec);
    ec.eos_token_ids = "1,x";
    CHECK(engine_config_check(&ec) == MG_EINVAL);
    CHECK(strstr(mg_err_msg(), "eos_token_ids") != NULL);
}

int main(void) {
    mg_log_set_level(MG_LOG_WARN);
    test_banned_ordinary();
    test_step_model();
    test_config_yaml();
    test_cancel_shutdown_determinism();
    test_thousand();
    test_long_output();
    test_lockstep();
    test_eos_min_tokens();
    return check_done();
}
