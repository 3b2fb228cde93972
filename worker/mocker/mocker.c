/* mocker.c - simulated step time and pseudo-random tokens behind the backend interface. */
#include "mocker.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "sampling.h"

typedef struct mocker {
    mg_backend base; /* first: the engine sees an mg_backend */
    mg_mocker_config cfg;
} mocker;

void mocker_config_defaults(mg_mocker_config *c) {
    /* A rough single-H100 gpt-oss-120b shape: ~50k prefill tokens/s, ~7 ms per decode step
     * plus a little per sequence. Tune the rows to match a measured engine. */
    c->num_blocks = 16384;
    c->vocab = 201088;
    c->ordinary_tokens = 199998;
    c->prefill_us_per_token = 20.0;
    c->decode_base_us = 7000.0;
    c->decode_us_per_seq = 15.0;
    /* bf16 KV of 36 layers is 72 KiB a token: ~0.025 us at 3 TB/s */
    c->decode_us_per_kv_token = 0.025;
    c->speedup_ratio = 1.0;
    c->eos_rate = 0.0;
    c->eos_token = 200002;
}

int mocker_config_opts(mg_mocker_config *c, mg_cfg_opt *r) {
    int n = 0;
    r[n++] = (mg_cfg_opt){"mocker-num-kv-blocks",
                          MG_CFG_INT,
                          &c->num_blocks,
                          "16384",
                          1,
                          1 << 28,
                          "KV blocks the mocker accounts for",
                          NULL};
    r[n++] = (mg_cfg_opt){"mocker-vocab", MG_CFG_INT,        &c->vocab, "201088", 2,
                          1 << 24,        "vocabulary size", NULL};
    r[n++] = (mg_cfg_opt){"mocker-ordinary-tokens",
                          MG_CFG_INT,
                          &c->ordinary_tokens,
                          "199998",
                          1,
                          1 << 24,
                          "generated ids are drawn from [0, this)",
                          NULL};
    r[n++] = (mg_cfg_opt){"mocker-prefill-us-per-token",
                          MG_CFG_DOUBLE,
                          &c->prefill_us_per_token,
                          "20",
                          0,
                          1e6,
                          "simulated microseconds per prefill token",
                          NULL};
    r[n++] = (mg_cfg_opt){"mocker-decode-base-us",
                          MG_CFG_DOUBLE,
                          &c->decode_base_us,
                          "7000",
                          0,
                          1e8,
                          "simulated microseconds every step pays",
                          NULL};
    r[n++] = (mg_cfg_opt){"mocker-decode-us-per-seq",
                          MG_CFG_DOUBLE,
                          &c->decode_us_per_seq,
                          "15",
                          0,
                          1e6,
                          "simulated microseconds per decode sequence",
                          NULL};
    r[n++] = (mg_cfg_opt){"mocker-decode-us-per-kv-token",
                          MG_CFG_DOUBLE,
                          &c->decode_us_per_kv_token,
                          "0.025",
                          0,
                          1e6,
                          "simulated microseconds per context token of a decode sequence",
                          NULL};
    r[n++] = (mg_cfg_opt){"mocker-speedup-ratio",
                          MG_CFG_DOUBLE,
                          &c->speedup_ratio,
                          "1",
                          0,
                          1e9,
                          "divides simulated times; 0 = instant",
                          NULL};
    r[n++] = (mg_cfg_opt){"mocker-eos-rate",
                          MG_CFG_DOUBLE,
                          &c->eos_rate,
                          "0",
                          0,
                          1,
                          "chance per generated token of the stop token",
                          NULL};
    r[n++] = (mg_cfg_opt){"mocker-eos-token",
                          MG_CFG_INT,
                          &c->eos_token,
                          "200002",
                          0,
                          1 << 24,
                          "the stop token the mocker emits",
                          NULL};
    return n;
}

double mocker_step_us(const mg_mocker_config *c, const mg_batch *b) {
    if (c->speedup_ratio <= 0 || b->n_tokens == 0) return 0.0;
    double ctx = 0;
    for (int i = 0; i < b->n_decode; i++) ctx += b->seq_ctx[i];
    double us = c->decode_base_us + c->prefill_us_per_token * b->n_prefill_tokens +
                c->decode_us_per_seq * b->n_decode + c->decode_us_per_kv_token * ctx;
    return us / c->speedup_ratio;
}

static void sleep_us(double us) {
    if (us <= 0) return;
    struct timespec ts = {(time_t)(us / 1e6),
                          (long)((us - (double)(time_t)(us / 1e6) * 1e6) * 1e3)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static mg_status mocker_forward_sampled(mg_backend *be, const mg_batch *b,
                                        const mg_sample_req *reqs, int32_t *out) {
    mocker *m = (mocker *)be;
    sleep_us(mocker_step_us(&m->cfg, b));
    for (int i = 0; i < b->n_logits; i++) {
        uint64_t seed = reqs[i].params.seed, n = reqs[i].counter;
        bool banned = false;
        for (int k = 0; k < reqs[i].n_banned; k++) banned |= reqs[i].banned[k] == m->cfg.eos_token;
        if (m->cfg.eos_rate > 0 && !banned &&
            sampling_uniform(seed ^ 0x5EEDE05ull, n) < m->cfg.eos_rate) {
            out[i] = (int32_t)m->cfg.eos_token;
            continue;
        }
        uint64_t ord = (uint64_t)m->cfg.ordinary_tokens;
        uint64_t t = sampling_rand64(seed, n) % ord;
        /* A banned stop id may be an ordinary token too: step to the next allowed one (at most
         * n_banned steps; when every ordinary id is banned there is no choice to make). */
        for (int tries = 0; tries < reqs[i].n_banned && (uint64_t)tries < ord; tries++) {
            bool hit = false;
            for (int k = 0; k < reqs[i].n_banned; k++) hit |= (uint64_t)reqs[i].banned[k] == t;
            if (!hit) break;
            t = (t + 1) % ord;
        }
        out[i] = (int32_t)t;
    }
    return MG_OK;
}

static void mocker_destroy(mg_backend *be) {
    free(be);
}

static const mg_backend_ops mocker_ops = {
    .name = "mocker",
    .forward = NULL,
    .forward_sampled = mocker_forward_sampled,
    .copy_block = NULL,
    .destroy = mocker_destroy,
};

mg_status mocker_create(const mg_mocker_config *mc, const mg_engine_config *ec, mg_backend **out) {
    *out = NULL;
    if (mc->num_blocks < 1 || mc->num_blocks > INT32_MAX)
        return MG_ERRF(MG_EINVAL, "mocker-num-kv-blocks %lld out of range",
                       (long long)mc->num_blocks);
    if (mc->vocab < 2 || mc->ordinary_tokens < 1 || mc->ordinary_tokens > mc->vocab)
        return MG_ERRF(MG_EINVAL, "mocker-ordinary-tokens %lld must be in [1, mocker-vocab %lld]",
                       (long long)mc->ordinary_tokens, (long long)mc->vocab);
    if (mc->eos_token < 0 || mc->eos_token >= mc->vocab)
        return MG_ERRF(MG_EINVAL, "mocker-eos-token %lld outside the vocabulary of %lld",
                       (long long)mc->eos_token, (long long)mc->vocab);
    if (mc->speedup_ratio < 0 || mc->prefill_us_per_token < 0 || mc->decode_base_us < 0 ||
        mc->decode_us_per_seq < 0 || mc->decode_us_per_kv_token < 0)
        return MG_ERRF(MG_EINVAL, "mocker: timing parameters must be >= 0");
    mocker *m = calloc(1, sizeof(*m));
    if (!m) return MG_ERRF(MG_ENOMEM, "mocker: out of memory");
    m->cfg = *mc;
    m->base.ops = &mocker_ops;
    m->base.vocab = (int)mc->vocab;
    m->base.num_blocks = (int)mc->num_blocks;
    m->base.block_size = (int)ec->kv_block_size;
    m->base.max_ctx = (int)ec->max_seq_len;
    *out = &m->base;
    return MG_OK;
}
