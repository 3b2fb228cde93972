/* sampling.h - choosing the next token from a float32 logits row: greedy, temperature, top-k,
 * top-p, with a per-request seed.
 *
 * Sits at the end of a step: the backend writes one logits row per sequence that needs a token,
 * the scheduler calls sampling_pick on each row. Backends that sample on their own (forward_sampled
 * in backend.h) receive the same mg_sampling parameters and the same RNG position, and must follow
 * the same rules so a request's tokens do not depend on which path ran.
 *
 * Determinism: the random draw for a sequence's n-th generated token is a pure function of
 * (seed, n), a counter-based per-sequence RNG. The same seed therefore gives the same tokens
 * whatever else shares the batch, and after a preemption the sequence continues where it was.
 * Greedy breaks ties towards the lowest token id.
 *
 * Cost (one 201,088-entry row, one core, -O2, SSE2): greedy is a vectorized max plus a search
 * for its first position (~0.1 ms); top_k keeps a k-entry heap in one pass and never sorts the
 * vocabulary (~0.25 ms for k = 50); plain temperature sampling computes the weights in SIMD
 * lanes and draws by block (~0.3 ms); top_p alone computes the normalizer, then grows a
 * best-first candidate heap (256, 1024, ...) until it holds the requested mass (~0.6 ms).
 *
 * Thread rule: an mg_sampler is used by one thread at a time (the engine thread owns one). */
#ifndef MG_SAMPLING_H
#define MG_SAMPLING_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

/* Per-request sampling parameters (OpenAI / vLLM meaning). */
typedef struct mg_sampling {
    float temperature; /* <= 0: greedy (argmax) */
    float
        top_p; /* in [0, 1]; 0 or 1: off. Keep the smallest set of best tokens with mass >= top_p */
    int32_t top_k; /* 0: off; else only the k best tokens are candidates (top_k applies first) */
    uint64_t seed; /* RNG seed; the engine derives one from the request id when none is given */
} mg_sampling;

/* Parameters of greedy decoding. */
static inline mg_sampling mg_sampling_greedy(void) {
    mg_sampling s = {0.0f, 1.0f, 0, 0};
    return s;
}

/* The uniform draw in [0, 1) for the counter-th token of a sequence seeded with seed. Exposed so
 * that backends sampling on their own (and the mocker) use the very same stream. */
double sampling_uniform(uint64_t seed, uint64_t counter);
/* A 64-bit mix of (seed, counter), the integer behind sampling_uniform. */
uint64_t sampling_rand64(uint64_t seed, uint64_t counter);

/* Check parameters; MG_EINVAL with detail naming the field when out of range. */
mg_status sampling_check(const mg_sampling *p);

typedef struct mg_sampler mg_sampler;

/* Scratch space for rows of vocab entries; allocated once, no allocation per call. */
mg_status sampler_create(int vocab, mg_sampler **out);
void sampler_destroy(mg_sampler *s);

/* Pick a token id from logits[0..vocab). counter is the sequence's number of generated tokens so
 * far (the RNG position). Never fails on finite input; NaN entries are never picked. */
int32_t sampling_pick(mg_sampler *s, const float *logits, const mg_sampling *p, uint64_t counter);

/* Argmax of a row, lowest id on ties (the greedy fast path). */
int32_t sampling_argmax(const float *logits, int vocab);

#endif
