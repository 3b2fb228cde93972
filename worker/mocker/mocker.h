/* mocker.h - the model-free backend, as Dynamo's mocker: for testing the serving stack at scale.
 *
 * It has no weights and no KV data, but it is a real mg_backend: the scheduler gives it batches
 * over a real KV block account (num_blocks of the engine's block size), so max_batch_size,
 * max_num_tokens, KV capacity, prefix reuse and preemption behave exactly as with a model.
 * Each step it sleeps a simulated time and returns tokens through forward_sampled:
 *
 *   step_us = (decode_base_us + prefill_us_per_token * prefill tokens
 *              + decode_us_per_seq * decode sequences
 *              + decode_us_per_kv_token * context tokens of the decode sequences) / speedup_ratio
 *
 * (decode_base_us stands for reading the weights once per step, which every step pays; the
 * context term for reading the KV cache in attention, which grows as sequences get longer;
 * speedup_ratio 0 means instant). Token ids are pseudo-random ordinary tokens, a pure function of
 * (request seed, output index) through sampling.h's stream, so a request repeats exactly; a stop
 * token comes only when eos_rate > 0 (then with that probability per token).
 *
 * Thread rule: the backend is called by the engine thread only. */
#ifndef MG_MOCKER_H
#define MG_MOCKER_H

#include <stdint.h>

#include "backend.h"
#include "config.h"
#include "engine_config.h"
#include "status.h"

typedef struct mg_mocker_config {
    int64_t num_blocks;            /* mocker-num-kv-blocks */
    int64_t vocab;                 /* mocker-vocab (gpt-oss: 201088) */
    int64_t ordinary_tokens;       /* mocker-ordinary-tokens: ids drawn from [0, this) */
    double prefill_us_per_token;   /* mocker-prefill-us-per-token */
    double decode_base_us;         /* mocker-decode-base-us */
    double decode_us_per_seq;      /* mocker-decode-us-per-seq */
    double decode_us_per_kv_token; /* mocker-decode-us-per-kv-token */
    double speedup_ratio;          /* mocker-speedup-ratio: divides every time; 0 = instant */
    double eos_rate;               /* mocker-eos-rate: chance per token of eos_token */
    int64_t eos_token;             /* mocker-eos-token (gpt-oss <|return|>) */
} mg_mocker_config;

#define MG_MOCKER_CONFIG_NOPTS 10

void mocker_config_defaults(mg_mocker_config *c);
/* Rows for the worker's settings table; returns MG_MOCKER_CONFIG_NOPTS. */
int mocker_config_opts(mg_mocker_config *c, mg_cfg_opt *rows);

/* A mocker backend with ec's block size and max_seq_len; free it with b->ops->destroy(b). */
mg_status mocker_create(const mg_mocker_config *mc, const mg_engine_config *ec, mg_backend **out);

/* Simulated microseconds of a batch (before sleeping), for tests and capacity planning. */
double mocker_step_us(const mg_mocker_config *mc, const mg_batch *batch);

#endif
