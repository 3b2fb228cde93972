/* test_sched_cpu.c - the scheduler over the real CPU backend (worker/cpu) on a checkpoint that
 * mg-mkckpt writes at test time (preset mid cut to 2 layers, sliding window 32, vocab 4096, so
 * that it stays quick under the sanitizers).
 *
 * The same requests (prompts up to 110 tokens, so past the sliding window; greedy and seeded
 * sampling) must give the same tokens alone, in one batch with chunked prefill, under
 * preemption from a small KV pool, and with their prefix taken from the cache. This holds the
 * scheduler and the backend's paged attention to each other: a block table or position the
 * backend reads differently from how the scheduler laid it out changes the tokens.
 *
 * Environment: MG_MKCKPT (maker binary), MG_CKPT_DIR (scratch folder). */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "check.h"
#include "cpu_backend.h"
#include "log.h"
#include "scheduler.h"

#define NREQ   6
#define MAXOUT 32
#define BS     16

#include "sched_out.h" /* res, on_out, res_same: after MAXOUT */

static const char *ckpt;
static int32_t prompts[NREQ][200];
static int plen[NREQ];
static mg_request reqs[NREQ];
static char ids[NREQ][8];
static res ref[NREQ];

static mg_engine_config cfg(int max_batch, int max_tokens) {
    mg_engine_config c;
    engine_config_defaults(&c);
    c.kv_block_size = BS;
    c.max_seq_len = 512;
    c.max_batch_size = max_batch;
    c.max_num_tokens = max_tokens;
    CHECK_OK(engine_config_check(&c));
    return c;
}

/* Run requests [0, n) through a fresh scheduler and backend; returns preemptions. */
static int run(mg_engine_config c, int num_blocks, res *out, int n, bool twice) {
    cpu_backend_opts o = {.num_blocks = num_blocks,
                          .block_size = BS,
                          .max_tokens = (int)c.max_num_tokens,
                          .max_ctx = 512,
                          .threads = 1};
    mg_backend *be = NULL;
    CHECK_OK(cpu_backend_open(ckpt, &o, &be));
    if (!be) return 0;
    mg_sched *s;
    CHECK_OK(sched_create(&c, be, &s));
    for (int round = 0; round < (twice ? 2 : 1); round++) {
        for (int i = 0; i < n; i++) {
            memset(&out[i], 0, sizeof(res));
            mg_request r = reqs[i];
            r.cb = on_out;
            r.ud = &out[i];
            CHECK_OK(sched_add(s, &r));
        }
        int guard = 0;
        while (sched_has_work(s) && guard++ < 20000) CHECK_OK(sched_step(s, NULL));
    }
    mg_kv_stats st = kv_stats(sched_kv(s));
    CHECK_EQ_INT(st.active_blocks, 0);
    CHECK_EQ_INT(st.free_blocks, num_blocks);
    int pre = (int)sched_load(s).preemptions;
    sched_destroy(s);
    be->ops->destroy(be);
    return pre;
}

static int mismatches(const res *out) {
    int m = 0;
    for (int i = 0; i < NREQ; i++)
        if (out[i].n != ref[i].n || out[i].n_final != 1 ||
            memcmp(out[i].toks, ref[i].toks, sizeof(int32_t) * out[i].n) != 0) {
            m++;
            fprintf(stderr, "request %d: %d tokens, reference %d\n", i, out[i].n, ref[i].n);
        }
    return m;
}

int main(void) {
    mg_log_set_level(MG_LOG_WARN);
    const char *maker = getenv("MG_MKCKPT"), *dir = getenv("MG_CKPT_DIR");
    if (!maker || !dir) {
        fprintf(stderr, "set MG_MKCKPT and MG_CKPT_DIR\n");
        return 1;
    }
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "'%s' --preset mid --layers 2 --sliding-window 32 --vocab 4096 --out '%s' 2>/dev/null",
             maker, dir);
    int rc = system(cmd);
    CHECK_MSG(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "mg-mkckpt failed: %d", rc);
    ckpt = dir;

    unsigned seed = 5;
    for (int i = 0; i < NREQ; i++) {
        plen[i] = 1 + rand_r(&seed) % 110;
        for (int k = 0; k < plen[i]; k++) prompts[i][k] = rand_r(&seed) % 4000;
        if (i >= 3 && plen[i] > 80 && plen[i - 3] >= 80) memcpy(prompts[i], prompts[i - 3], 80 * 4);
        snprintf(ids[i], sizeof(ids[i]), "c%d", i);
        reqs[i] = (mg_request){.id = ids[i],
                               .prompt = prompts[i],
                               .n_prompt = plen[i],
                               .max_tokens = 4 + rand_r(&seed) % 8,
                               .ignore_eos = true};
        if (i % 2) {
            reqs[i].sampling = (mg_sampling){0.8f, 0.95f, 50, (uint64_t)(7 + i)};
            reqs[i].has_seed = true;
        }
    }
    int longest = 0;
    for (int i = 0; i < NREQ; i++) longest = plen[i] > longest ? plen[i] : longest;
    CHECK(longest > 64); /* the workload reaches well past the sliding window */
    /* alone: one at a time, no reuse */
    mg_engine_config c = cfg(1, 512);
    c.enable_block_reuse = false;
    run(c, 64, ref, NREQ, false);
    for (int i = 0; i < NREQ; i++) CHECK_EQ_INT(ref[i].n, reqs[i].max_tokens);

    res out[NREQ];
    /* one batch, prompts chunked 48 tokens a step beside the decodes */
    run(cfg(NREQ, 48), 256, out, NREQ, false);
    CHECK_EQ_INT(mismatches(out), 0);
    /* a pool too small for all of them at once: preemption and recompute */
    int pre = run(cfg(NREQ, 64), 16, out, NREQ, false);
    CHECK_EQ_INT(mismatches(out), 0);
    CHECK_MSG(pre > 0, "no preemption with 16 blocks");
    /* the whole workload twice on one scheduler: the second round's prompts come from the cache */
    run(cfg(NREQ, 128), 256, out, NREQ, true);
    CHECK_EQ_INT(mismatches(out), 0);
    int cached = 0;
    for (int i = 0; i < NREQ; i++) cached += out[i].usage.cached_tokens;
    CHECK(cached > 0);
    return check_done();
}
