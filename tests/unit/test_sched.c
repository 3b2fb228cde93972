/* test_sched.c - the scheduler against a toy backend whose logits are a function of the whole
 * token history *read back from its paged KV store*: a wrong block table, a missed write, a
 * bad prefix reuse or a preemption that loses state changes the tokens.
 *
 * Shows: the same tokens for each request alone, inside a batch of 32 with chunked prefill,
 * under forced preemption, and with its prefix taken from the cache; ref counts back to zero and
 * events balanced after every run; exact lengths for min_tokens / ignore_eos / max_tokens /
 * max_seq_len; cancel frees blocks; a backend failure ends the batch with errors; a backend that
 * samples on its own (forward_sampled) gives the same tokens as the logits path. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "scheduler.h"

#define V        101 /* toy vocabulary */
#define STOP_TOK 100
#define BS       4
#define MAXOUT   64

#include "sched_out.h" /* res, on_out, res_same: after MAXOUT */

/* ---------- the toy backend ---------- */

typedef struct toy {
    mg_backend base;
    int32_t *kv;    /* (num_blocks * BS) token + 1 per position, 0 = never written */
    int errors;     /* invariant violations seen */
    bool bias_stop; /* make STOP_TOK the best token */
    bool fail;      /* forward returns an error */
    int max_seqs, max_tokens, steps;
} toy;

static uint64_t mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static mg_status toy_forward(mg_backend *be, const mg_batch *b, float *logits) {
    toy *t = (toy *)be;
    if (t->fail) return MG_ERRF(MG_ECUDA, "toy: injected failure");
    t->steps++;
    if (b->n_seqs > t->max_seqs) t->max_seqs = b->n_seqs;
    if (b->n_tokens > t->max_tokens) t->max_tokens = b->n_tokens;
    int sum = 0, nd = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        if (b->seq_start[s] != sum) t->errors++;
        sum += b->seq_len[s];
        if (s < b->n_decode && b->seq_len[s] != 1) t->errors++;
        nd += s < b->n_decode;
    }
    if (sum != b->n_tokens || b->n_prefill_tokens != b->n_tokens - nd) t->errors++;
    /* writes */
    for (int r = 0; r < b->n_tokens; r++) {
        int s = b->token_seq[r], pos = b->positions[r];
        if (pos != b->seq_ctx[s] - b->seq_len[s] + (r - b->seq_start[s])) t->errors++;
        const int32_t *row = b->block_table + (size_t)s * b->max_blocks;
        int32_t blk = row[pos / be->block_size];
        if (blk < 0 || blk >= be->num_blocks) {
            t->errors++;
            continue;
        }
        /* No other sequence of the batch may hold a block this one writes. */
        for (int o = 0; o < b->n_seqs; o++) {
            if (o == s) continue;
            const int32_t *orow = b->block_table + (size_t)o * b->max_blocks;
            for (int k = 0; k < b->max_blocks && orow[k] >= 0; k++)
                if (orow[k] == blk) t->errors++;
        }
        t->kv[blk * be->block_size + pos % be->block_size] = b->tokens[r] + 1;
    }
    /* logits from the history read back through the block table */
    for (int i = 0; i < b->n_logits; i++) {
        int r = b->logits_rows[i], s = b->token_seq[r], pos = b->positions[r];
        if (b->logits_seq[i] != s || pos != b->seq_ctx[s] - 1) t->errors++;
        const int32_t *row = b->block_table + (size_t)s * b->max_blocks;
        uint64_t h = 1469598103934665603ull;
        for (int p = 0; p <= pos; p++) {
            int bs = be->block_size;
            int32_t v = t->kv[row[p / bs] * bs + p % bs];
            if (v == 0) t->errors++; /* reading a position nobody wrote */
            h = mix(h ^ (uint64_t)v);
        }
        float *out = logits + (size_t)i * V;
        for (int v = 0; v < V; v++) out[v] = (float)(mix(h * V + v) >> 40) / (float)(1 << 24) * 6;
        out[STOP_TOK] = t->bias_stop ? 100.0f : -100.0f;
    }
    return MG_OK;
}

/* The same model choosing its own tokens, as a device-sampling backend would: it must follow
 * sampling.h with the (params, counter) the scheduler hands it. */
static mg_sampler *toy_sampler;
static float toy_rows[64 * V];

static mg_status toy_forward_sampled(mg_backend *be, const mg_batch *b, const mg_sample_req *rq,
                                     int32_t *out) {
    if (b->n_logits > 64) return MG_ERRF(MG_EINVAL, "toy: too many rows");
    mg_status st = toy_forward(be, b, toy_rows);
    if (st) return st;
    for (int i = 0; i < b->n_logits; i++) {
        float *row = toy_rows + (size_t)i * V;
        for (int k = 0; k < rq[i].n_banned; k++)
            if (rq[i].banned[k] >= 0 && rq[i].banned[k] < V) row[rq[i].banned[k]] = -INFINITY;
        out[i] = sampling_pick(toy_sampler, row, &rq[i].params, rq[i].counter);
    }
    return MG_OK;
}

static void toy_destroy(mg_backend *be) {
    toy *t = (toy *)be;
    free(t->kv);
    free(t);
}

static const mg_backend_ops toy_ops = {
    .name = "toy", .forward = toy_forward, .destroy = toy_destroy};
static const mg_backend_ops toy_sampled_ops = {
    .name = "toy-sampled", .forward_sampled = toy_forward_sampled, .destroy = toy_destroy};
static bool use_sampled_ops;

static toy *toy_new_bs(int num_blocks, int bs) {
    toy *t = calloc(1, sizeof(*t));
    t->base = (mg_backend){.ops = use_sampled_ops ? &toy_sampled_ops : &toy_ops,
                           .vocab = V,
                           .num_blocks = num_blocks,
                           .block_size = bs,
                           .max_ctx = 1 << 20};
    t->kv = calloc((size_t)num_blocks * bs, sizeof(int32_t));
    return t;
}

static toy *toy_new(int num_blocks) {
    return toy_new_bs(num_blocks, BS);
}

/* ---------- results: res, on_out (sched_out.h) ---------- */

/* KV events, balanced per hash */
typedef struct evs {
    int stored, removed, cleared;
} evs;

static void on_ev(void *ud, const mg_kv_event *e) {
    evs *x = ud;
    if (e->kind == MG_KV_STORED) x->stored += e->n;
    if (e->kind == MG_KV_REMOVED) x->removed += e->n;
    if (e->kind == MG_KV_CLEARED) x->cleared++;
}

/* ---------- the workload ---------- */

#define NREQ 32
static int32_t prompts[NREQ][80];
static int plen[NREQ];
static mg_request reqs[NREQ];
static char ids[NREQ][16];

static void make_workload(void) {
    unsigned seed = 2024;
    for (int i = 0; i < NREQ; i++) {
        plen[i] = 1 + rand_r(&seed) % 70;
        for (int k = 0; k < plen[i]; k++) prompts[i][k] = rand_r(&seed) % STOP_TOK;
        /* requests 16..31 share a prefix of 40 tokens with 0..15 where long enough */
        if (i >= 16 && plen[i] > 40 && plen[i - 16] >= 40)
            memcpy(prompts[i], prompts[i - 16], 40 * sizeof(int32_t));
        snprintf(ids[i], sizeof(ids[i]), "req-%d", i);
        mg_request r = {.id = ids[i], .prompt = prompts[i], .n_prompt = plen[i]};
        r.max_tokens = 10 + rand_r(&seed) % 22;
        if (i % 2) {
            r.sampling = (mg_sampling){0.9f, 0.9f, 20, (uint64_t)(1000 + i)};
            r.has_seed = true;
        } else {
            r.sampling = mg_sampling_greedy();
        }
        reqs[i] = r;
    }
}

static mg_engine_config base_cfg(void) {
    mg_engine_config c;
    engine_config_defaults(&c);
    c.kv_block_size = BS;
    c.max_seq_len = 1024;
    c.eos_token_ids = "100";
    CHECK_OK(engine_config_check(&c));
    c.eos_token_ids = NULL;
    return c;
}

typedef struct run_out {
    mg_sched_load load;
    int toy_errors, max_seqs, max_tokens;
} run_out;

/* Step until idle; then check the pool is back to all-free with zero refs and balanced events. */
static void drain(mg_sched *s, toy *t, evs *ev, run_out *ro) {
    int guard = 0;
    while (sched_has_work(s) && guard++ < 100000) CHECK_OK(sched_step(s, NULL));
    CHECK(!sched_has_work(s));
    mg_kv_pool *kv = sched_kv(s);
    mg_kv_stats st = kv_stats(kv);
    CHECK_EQ_INT(st.active_blocks, 0);
    CHECK_EQ_INT(st.free_blocks, st.total_blocks);
    int nonzero = 0;
    for (int b = 0; b < st.total_blocks; b++) nonzero += kv_ref(kv, b) != 0;
    CHECK_EQ_INT(nonzero, 0);
    if (ev) CHECK_EQ_INT(ev->stored - ev->removed, st.cached_blocks);
    if (ro) {
        ro->load = sched_load(s);
        ro->toy_errors = t->errors;
        ro->max_seqs = t->max_seqs;
        ro->max_tokens = t->max_tokens;
    }
    CHECK_EQ_INT(t->errors, 0);
}

/* Run the workload (requests [0, n)) with cfg over num_blocks blocks; fill results. */
static void run_batch(mg_engine_config cfg, int num_blocks, res *out, int n, run_out *ro) {
    toy *t = toy_new(num_blocks);
    mg_sched *s;
    CHECK_OK(sched_create(&cfg, &t->base, &s));
    evs ev = {0};
    kv_pool_set_event_cb(sched_kv(s), on_ev, &ev);
    for (int i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof(res));
        mg_request r = reqs[i];
        r.cb = on_out;
        r.ud = &out[i];
        CHECK_OK(sched_add(s, &r));
    }
    drain(s, t, &ev, ro);
    sched_destroy(s);
    toy_destroy(&t->base);
}

static int same_tokens(const res *a, const res *b) {
    return a->n == b->n && memcmp(a->toks, b->toks, sizeof(int32_t) * a->n) == 0;
}

static res ref[NREQ];

static void test_alone(void) {
    mg_engine_config c = base_cfg();
    c.max_batch_size = 1;
    c.enable_block_reuse = false;
    for (int i = 0; i < NREQ; i++) {
        toy *t = toy_new(256);
        mg_sched *s;
        CHECK_OK(sched_create(&c, &t->base, &s));
        mg_request r = reqs[i];
        r.cb = on_out;
        r.ud = &ref[i];
        CHECK_OK(sched_add(s, &r));
        drain(s, t, NULL, NULL);
        CHECK_EQ_INT(ref[i].n, reqs[i].max_tokens); /* no stop token in reach */
        CHECK_EQ_INT(ref[i].fin, MG_FINISH_LENGTH);
        CHECK_EQ_INT(ref[i].n_final, 1);
        CHECK_EQ_INT(ref[i].after_final, 0);
        CHECK_EQ_INT(ref[i].usage.prompt_tokens, plen[i]);
        CHECK_EQ_INT(ref[i].usage.completion_tokens, ref[i].n);
        CHECK_EQ_INT(ref[i].usage.cached_tokens, 0);
        sched_destroy(s);
        toy_destroy(&t->base);
    }
    /* the toy's outputs do depend on history: not all requests agree */
    int distinct = 0;
    for (int i = 1; i < NREQ; i++) distinct += ref[i].toks[0] != ref[0].toks[0];
    CHECK(distinct > 0);
}

static void test_batch_chunked(void) {
    /* 256 tokens a step: the 32 prompts (~1,100 tokens) are chunked over the first steps, then
     * all 32 decode together; 16 a step: prompts trickle in 16-token chunks beside decodes. */
    int budgets[2] = {256, 16};
    for (int k = 0; k < 2; k++) {
        mg_engine_config c = base_cfg();
        c.max_batch_size = 32;
        c.max_num_tokens = budgets[k];
        res out[NREQ];
        run_out ro;
        run_batch(c, 1024, out, NREQ, &ro);
        int mism = 0;
        for (int i = 0; i < NREQ; i++) {
            if (!same_tokens(&out[i], &ref[i])) mism++;
            CHECK_EQ_INT(out[i].n_final, 1);
            CHECK_EQ_INT(out[i].after_final, 0);
            CHECK_EQ_INT(out[i].fin, MG_FINISH_LENGTH);
        }
        CHECK_EQ_INT(mism, 0);
        if (k == 0) CHECK_EQ_INT(ro.max_seqs, 32);
        CHECK(ro.max_tokens <= budgets[k]);
        CHECK(ro.load.kv.hit_blocks > 0); /* the shared 40-token prefixes were reused */
        CHECK_EQ_INT(ro.load.preemptions, 0);
    }
}

static void test_sampled_path(void) {
    CHECK_OK(sampler_create(V, &toy_sampler));
    use_sampled_ops = true;
    mg_engine_config c = base_cfg();
    c.max_batch_size = 32;
    c.max_num_tokens = 48;
    res out[NREQ];
    run_out ro;
    run_batch(c, 60, out, NREQ, &ro); /* small pool: preemption on this path too */
    int mism = 0;
    for (int i = 0; i < NREQ; i++) mism += !same_tokens(&out[i], &ref[i]);
    CHECK_EQ_INT(mism, 0);
    CHECK(ro.load.preemptions > 0);
    use_sampled_ops = false;
    sampler_destroy(toy_sampler);
}

/* stream_interval 4: the same tokens, the first alone, then in fours, the rest with the finish;
 * preemption included (small pool). */
static void test_stream_interval(void) {
    mg_engine_config c = base_cfg();
    c.max_batch_size = 32;
    c.max_num_tokens = 64;
    c.stream_interval = 4;
    res out[NREQ];
    run_out ro;
    run_batch(c, 48, out, NREQ, &ro);
    int mism = 0, bad_calls = 0;
    for (int i = 0; i < NREQ; i++) {
        mism += !same_tokens(&out[i], &ref[i]);
        int n = out[i].n, want = 1 + (n - 1) / 4 + ((n - 1) % 4 ? 1 : 0);
        if (out[i].first_n != 1 || out[i].calls != want || out[i].n_final != 1) bad_calls++;
    }
    CHECK_EQ_INT(mism, 0);
    CHECK_EQ_INT(bad_calls, 0);
    CHECK(ro.load.preemptions > 0);
}

/* Random configurations (block size 1..16, step budgets down to 1 token, batch sizes down to 1,
 * pools from barely enough to plenty, reuse on and off, stream intervals) with random cancels:
 * every request that is not cancelled gives its reference tokens, a cancelled one a prefix of
 * them, and the pool ends all free. */
static void test_random_configs(void) {
    unsigned seed = 77;
    int bad_tokens = 0, bad_cancel = 0, bad_final = 0, preempting_runs = 0;
    for (int it = 0; it < 150; it++) {
        int bs_choices[5] = {1, 2, 4, 8, 16};
        int bs = bs_choices[rand_r(&seed) % 5];
        mg_engine_config c = base_cfg();
        c.kv_block_size = bs;
        c.max_batch_size = 1 + rand_r(&seed) % 32;
        c.max_num_tokens = 1 + rand_r(&seed) % 100;
        c.enable_block_reuse = rand_r(&seed) % 4 != 0;
        c.stream_interval = 1 + rand_r(&seed) % 5;
        int need = (70 + 32 + bs - 1) / bs; /* one longest sequence must fit */
        int nblocks = need + rand_r(&seed) % (need * 6);
        toy *t = toy_new_bs(nblocks, bs);
        mg_sched *s;
        CHECK_OK(sched_create(&c, &t->base, &s));
        evs ev = {0};
        kv_pool_set_event_cb(sched_kv(s), on_ev, &ev);
        res out[NREQ];
        bool cancelled[NREQ] = {0};
        for (int i = 0; i < NREQ; i++) {
            memset(&out[i], 0, sizeof(res));
            mg_request r = reqs[i];
            r.cb = on_out;
            r.ud = &out[i];
            CHECK_OK(sched_add(s, &r));
        }
        int steps = 0;
        while (sched_has_work(s) && steps < 200000) {
            CHECK_OK(sched_step(s, NULL));
            steps++;
            if (rand_r(&seed) % 64 == 0) {
                int v = rand_r(&seed) % NREQ;
                if (sched_cancel(s, ids[v])) cancelled[v] = true;
            }
        }
        CHECK(!sched_has_work(s));
        for (int i = 0; i < NREQ; i++) {
            if (out[i].n_final != 1 || out[i].after_final) bad_final++;
            if (cancelled[i]) {
                if (out[i].fin != MG_FINISH_CANCELLED || out[i].n > ref[i].n ||
                    memcmp(out[i].toks, ref[i].toks, sizeof(int32_t) * out[i].n) != 0)
                    bad_cancel++;
            } else if (!same_tokens(&out[i], &ref[i])) {
                bad_tokens++;
            }
        }
        mg_kv_stats st = kv_stats(sched_kv(s));
        CHECK_EQ_INT(st.active_blocks, 0);
        CHECK_EQ_INT(st.free_blocks, nblocks);
        CHECK_EQ_INT(ev.stored - ev.removed, st.cached_blocks);
        CHECK_EQ_INT(t->errors, 0);
        CHECK(t->max_tokens <= c.max_num_tokens && t->max_seqs <= c.max_batch_size);
        preempting_runs += sched_load(s).preemptions > 0;
        sched_destroy(s);
        toy_destroy(&t->base);
    }
    CHECK_EQ_INT(bad_tokens, 0);
    CHECK_EQ_INT(bad_cancel, 0);
    CHECK_EQ_INT(bad_final, 0);
    CHECK(preempting_runs > 0);
}

static void test_preemption(void) {
    mg_engine_config c = base_cfg();
    c.max_batch_size = 32;
    c.max_num_tokens = 64;
    res out[NREQ];
    run_out ro;
    /* 40 blocks of 4 tokens: far less than 32 sequences of up to 94 tokens need. */
    run_batch(c, 40, out, NREQ, &ro);
    int mism = 0;
    for (int i = 0; i < NREQ; i++) {
        if (!same_tokens(&out[i], &ref[i])) mism++;
        CHECK_EQ_INT(out[i].n_final, 1);
        CHECK_EQ_INT(out[i].overflow, 0);
    }
    CHECK_EQ_INT(mism, 0);
    CHECK_MSG(ro.load.preemptions > 0, "no preemption happened");
    /* without reuse too (recompute from scratch) */
    c.enable_block_reuse = false;
    run_batch(c, 40, out, NREQ, &ro);
    mism = 0;
    for (int i = 0; i < NREQ; i++) mism += !same_tokens(&out[i], &ref[i]);
    CHECK_EQ_INT(mism, 0);
    CHECK(ro.load.preemptions > 0);
    CHECK_EQ_INT(ro.load.kv.hit_blocks, 0);
}

static void test_prefix_cache(void) {
    mg_engine_config c = base_cfg();
    c.max_batch_size = 8;
    c.max_num_tokens = 16;
    toy *t = toy_new(512);
    mg_sched *s;
    CHECK_OK(sched_create(&c, &t->base, &s));
    evs ev = {0};
    kv_pool_set_event_cb(sched_kv(s), on_ev, &ev);
    /* the longest prompt of the workload, then again under another id, then one sharing its
     * first 40 tokens, then a prompt that is an exact multiple of the block size */
    int L = 0;
    for (int i = 1; i < NREQ; i++)
        if (plen[i] > plen[L]) L = i;
    res a = {0}, b = {0};
    mg_request r = reqs[L];
    r.cb = on_out;
    r.ud = &a;
    CHECK_OK(sched_add(s, &r));
    drain(s, t, &ev, NULL);
    CHECK(same_tokens(&a, &ref[L]));
    CHECK_EQ_INT(a.usage.cached_tokens, 0);
    r.id = "again";
    r.ud = &b;
    CHECK_OK(sched_add(s, &r));
    drain(s, t, &ev, NULL);
    CHECK(same_tokens(&b, &ref[L]));
    CHECK_EQ_INT(b.usage.cached_tokens, (plen[L] - 1) / BS * BS);
    for (int i = 16; i < NREQ; i++) {
        if (memcmp(prompts[i], prompts[i - 16], 40 * sizeof(int32_t)) != 0) continue;
        res x = {0}, y = {0};
        mg_request r1 = reqs[i - 16], r2 = reqs[i];
        r1.cb = r2.cb = on_out;
        r1.ud = &x;
        r2.ud = &y;
        r1.id = "first";
        r2.id = "second";
        CHECK_OK(sched_add(s, &r1));
        drain(s, t, &ev, NULL);
        CHECK_OK(sched_add(s, &r2));
        drain(s, t, &ev, NULL);
        CHECK(same_tokens(&x, &ref[i - 16]));
        CHECK(same_tokens(&y, &ref[i]));
        CHECK(y.usage.cached_tokens >= 40);
    }
    mg_kv_stats st = kv_stats(sched_kv(s));
    CHECK(st.hit_rate > 0 && st.hit_rate <= 1);
    /* clear: nothing is reused afterwards */
    kv_clear(sched_kv(s));
    CHECK_EQ_INT(ev.cleared, 1);
    res d = {0};
    r.id = "after-clear";
    r.ud = &d;
    CHECK_OK(sched_add(s, &r));
    ev.stored = ev.removed = 0;
    drain(s, t, &ev, NULL);
    CHECK(same_tokens(&d, &ref[L]));
    CHECK_EQ_INT(d.usage.cached_tokens, 0);
    sched_destroy(s);
    toy_destroy(&t->base);
}

/* A prompt of whole blocks fully cached: the last block is recomputed so logits exist. */
static void test_full_block_prompt(void) {
    mg_engine_config c = base_cfg();
    toy *t = toy_new(64);
    mg_sched *s;
    CHECK_OK(sched_create(&c, &t->base, &s));
    int32_t p[16];
    for (int i = 0; i < 16; i++) p[i] = (i * 7) % STOP_TOK;
    res a = {0}, b = {0};
    mg_request r = {
        .id = "x", .prompt = p, .n_prompt = 16, .max_tokens = 5, .cb = on_out, .ud = &a};
    CHECK_OK(sched_add(s, &r));
    drain(s, t, NULL, NULL);
    r.ud = &b;
    CHECK_OK(sched_add(s, &r));
    drain(s, t, NULL, NULL);
    CHECK(same_tokens(&a, &b) && a.n == 5);
    CHECK_EQ_INT(b.usage.cached_tokens, 12);
    sched_destroy(s);
    toy_destroy(&t->base);
}

static res one(mg_engine_config c, mg_request r, bool bias) {
    toy *t = toy_new(64);
    t->bias_stop = bias;
    mg_sched *s;
    res x = {0};
    CHECK_OK(sched_create(&c, &t->base, &s));
    r.cb = on_out;
    r.ud = &x;
    CHECK_OK(sched_add(s, &r));
    drain(s, t, NULL, NULL);
    CHECK_EQ_INT(x.n_final, 1);
    CHECK_EQ_INT(x.usage.completion_tokens, x.n);
    sched_destroy(s);
    toy_destroy(&t->base);
    return x;
}

static void test_stops(void) {
    mg_engine_config c = base_cfg();
    int32_t p[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    mg_request r = {.id = "s", .prompt = p, .n_prompt = 10, .sampling = mg_sampling_greedy()};
    /* the stop token is the best token: one token, "stop" */
    res x = one(c, r, true);
    CHECK_EQ_INT(x.n, 1);
    CHECK_EQ_INT(x.toks[0], STOP_TOK);
    CHECK_EQ_INT(x.fin, MG_FINISH_STOP);
    /* min_tokens 5: five ordinary tokens (stop banned), then the stop; on the logits path and
     * on a backend that samples on its own */
    r.min_tokens = 5;
    CHECK_OK(sampler_create(V, &toy_sampler));
    for (int path = 0; path < 2; path++) {
        use_sampled_ops = path == 1;
        x = one(c, r, true);
        CHECK_EQ_INT(x.n, 6);
        CHECK_EQ_INT(x.fin, MG_FINISH_STOP);
        int early = 0;
        for (int i = 0; i < 5; i++) early += x.toks[i] == STOP_TOK;
        CHECK_EQ_INT(early, 0);
        CHECK_EQ_INT(x.toks[5], STOP_TOK);
    }
    use_sampled_ops = false;
    sampler_destroy(toy_sampler);
    /* with ignore_eos the stop id is an ordinary token, not banned: it is drawn at once */
    r.ignore_eos = true;
    r.max_tokens = 7;
    x = one(c, r, true);
    CHECK_EQ_INT(x.n, 7);
    CHECK_EQ_INT(x.toks[0], STOP_TOK);
    CHECK_EQ_INT(x.fin, MG_FINISH_LENGTH);
    r.ignore_eos = false;
    r.max_tokens = 0;
    /* max_tokens below min_tokens wins */
    r.max_tokens = 3;
    x = one(c, r, true);
    CHECK_EQ_INT(x.n, 3);
    CHECK_EQ_INT(x.fin, MG_FINISH_LENGTH);
    /* ignore_eos: exactly max_tokens */
    r.min_tokens = 0;
    r.max_tokens = 10;
    r.ignore_eos = true;
    x = one(c, r, true);
    CHECK_EQ_INT(x.n, 10);
    CHECK_EQ_INT(x.fin, MG_FINISH_LENGTH);
    /* max_seq_len 16 caps a 10-token prompt at 6 output tokens */
    mg_engine_config c16 = c;
    c16.max_seq_len = 16;
    r.max_tokens = 0;
    x = one(c16, r, true);
    CHECK_EQ_INT(x.n, 6);
    CHECK_EQ_INT(x.fin, MG_FINISH_LENGTH);
    /* a request's own stop id, with the engine's defaults (gpt-oss ids) */
    mg_engine_config cg;
    engine_config_defaults(&cg);
    cg.kv_block_size = BS;
    cg.max_seq_len = 1024;
    CHECK_OK(engine_config_check(&cg));
    CHECK_EQ_INT(cg.n_stop_ids, 2);
    CHECK(cg.stop_ids[0] == 200002 && cg.stop_ids[1] == 200012);
    int32_t mine = STOP_TOK;
    mg_request r2 = {.id = "own", .prompt = p, .n_prompt = 10, .stop_ids = &mine, .n_stop_ids = 1};
    x = one(cg, r2, true);
    CHECK_EQ_INT(x.n, 1);
    CHECK_EQ_INT(x.fin, MG_FINISH_STOP);
    r2.n_stop_ids = 0; /* no stop id in reach: runs to max_tokens */
    r2.max_tokens = 7;
    x = one(cg, r2, true);
    CHECK_EQ_INT(x.n, 7);
    CHECK_EQ_INT(x.fin, MG_FINISH_LENGTH);
}

static void test_cancel_and_errors(void) {
    mg_engine_config c = base_cfg();
    c.max_batch_size = 1;
    toy *t = toy_new(64);
    mg_sched *s;
    CHECK_OK(sched_create(&c, &t->base, &s));
    int32_t p[20];
    for (int i = 0; i < 20; i++) p[i] = i;
    res a = {0}, b = {0};
    mg_request r = {
        .id = "a", .prompt = p, .n_prompt = 20, .max_tokens = 50, .cb = on_out, .ud = &a};
    CHECK_OK(sched_add(s, &r));
    r.id = "b";
    r.ud = &b;
    CHECK_OK(sched_add(s, &r));
    for (int i = 0; i < 5; i++) CHECK_OK(sched_step(s, NULL));
    CHECK(kv_stats(sched_kv(s)).active_blocks > 0);
    CHECK_EQ_INT(sched_load(s).waiting, 1);
    CHECK(sched_cancel(s, "b")); /* waiting */
    CHECK(sched_cancel(s, "a")); /* running, mid-generation */
    CHECK(!sched_cancel(s, "a"));
    CHECK_EQ_INT(a.fin, MG_FINISH_CANCELLED);
    CHECK_EQ_INT(b.fin, MG_FINISH_CANCELLED);
    CHECK(a.n >= 4 && a.n < 50);
    CHECK_EQ_INT(a.usage.completion_tokens, a.n);
    CHECK_EQ_INT(b.n, 0);
    CHECK_EQ_INT(a.n_final + b.n_final, 2);
    CHECK(!sched_has_work(s));
    CHECK_EQ_INT(kv_stats(sched_kv(s)).active_blocks, 0);
    CHECK_EQ_INT(kv_num_free(sched_kv(s)), 64);

    /* bad requests */
    mg_request bad = r;
    bad.n_prompt = 0;
    CHECK(sched_add(s, &bad) == MG_EINVAL);
    bad = r;
    int32_t oob[2] = {1, V};
    bad.prompt = oob;
    bad.n_prompt = 2;
    CHECK(sched_add(s, &bad) == MG_EINVAL);
    CHECK(strstr(mg_err_msg(), "outside") != NULL);
    bad = r;
    bad.n_prompt = 20;
    bad.id = "";
    CHECK(sched_add(s, &bad) == MG_EINVAL);
    bad = r;
    bad.sampling.top_p = 2.0f;
    CHECK(sched_add(s, &bad) == MG_EINVAL);
    CHECK(!sched_has_work(s));

    /* a backend failure ends the batch with errors and frees its blocks */
    res e1 = {0}, e2 = {0};
    c.max_batch_size = 4;
    sched_destroy(s);
    CHECK_OK(sched_create(&c, &t->base, &s));
    r.id = "e1";
    r.ud = &e1;
    CHECK_OK(sched_add(s, &r));
    r.id = "e2";
    r.ud = &e2;
    CHECK_OK(sched_add(s, &r));
    CHECK_OK(sched_step(s, NULL));
    t->fail = true;
    CHECK(sched_step(s, NULL) == MG_ECUDA);
    CHECK_EQ_INT(e1.fin, MG_FINISH_ERROR);
    CHECK_EQ_INT(e2.fin, MG_FINISH_ERROR);
    CHECK_EQ_INT(kv_stats(sched_kv(s)).active_blocks, 0);
    CHECK(!sched_has_work(s));
    t->fail = false;
    /* abort_all reaches waiting requests too */
    res w = {0};
    r.id = "w";
    r.ud = &w;
    CHECK_OK(sched_add(s, &r));
    sched_abort_all(s, MG_FINISH_ERROR);
    CHECK_EQ_INT(w.fin, MG_FINISH_ERROR);
    CHECK_EQ_INT(w.n_final, 1);
    sched_destroy(s);

    /* mismatched block size */
    mg_engine_config c8 = c;
    c8.kv_block_size = 8;
    CHECK(sched_create(&c8, &t->base, &s) == MG_EINVAL);
    toy_destroy(&t->base);
}

int main(void) {
    make_workload();
    test_alone();
    test_batch_chunked();
    test_preemption();
    test_stream_interval();
    test_random_configs();
    test_sampled_path();
    test_prefix_cache();
    test_full_block_prompt();
    test_stops();
    test_cancel_and_errors();
    return check_done();
}
