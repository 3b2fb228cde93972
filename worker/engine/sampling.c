/* sampling.c - token choice from a logits row without sorting the vocabulary.
 *
 * Candidates are kept in a min-heap ordered by "worse" (lower logit, then higher id), so one pass
 * over the row keeps the k best; popping the heap lists them best-first. Probabilities are
 * exp((l - lmax) / T), summed in double; the nucleus is the shortest best-first prefix whose weight
 * reaches top_p of the distribution's total. */
#include "sampling.h"

#include <math.h>
#include <stdlib.h>

struct mg_sampler {
    int vocab;
    float *hval;  /* (vocab) heap logits */
    int32_t *hid; /* (vocab) heap ids */
    double *w;    /* (vocab) candidate weights, best-first */
};

static uint64_t mix64(uint64_t z) {
    /* splitmix64's finalizer: a bijection with full avalanche, so (seed, counter) pairs that
     * differ in one bit give unrelated draws. */
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t sampling_rand64(uint64_t seed, uint64_t counter) {
    return mix64(seed ^ mix64(counter ^ 0xD1B54A32D192ED03ull));
}

double sampling_uniform(uint64_t seed, uint64_t counter) {
    return (double)(sampling_rand64(seed, counter) >> 11) * 0x1.0p-53;
}

mg_status sampling_check(const mg_sampling *p) {
    if (!(p->temperature >= 0.0f) || p->temperature > 100.0f)
        return MG_ERRF(MG_EINVAL, "sampling: temperature %g outside [0, 100]", p->temperature);
    if (!(p->top_p >= 0.0f && p->top_p <= 1.0f))
        return MG_ERRF(MG_EINVAL, "sampling: top_p %g outside [0, 1]", p->top_p);
    if (p->top_k < 0) return MG_ERRF(MG_EINVAL, "sampling: top_k %d is negative", p->top_k);
    return MG_OK;
}

mg_status sampler_create(int vocab, mg_sampler **out) {
    *out = NULL;
    if (vocab < 1) return MG_ERRF(MG_EINVAL, "sampler: vocab %d must be >= 1", vocab);
    mg_sampler *s = calloc(1, sizeof(*s));
    if (!s) return MG_ERRF(MG_ENOMEM, "sampler: out of memory");
    s->vocab = vocab;
    s->hval = malloc(sizeof(float) * vocab);
    s->hid = malloc(sizeof(int32_t) * vocab);
    s->w = malloc(sizeof(double) * vocab);
    if (!s->hval || !s->hid || !s->w) {
        sampler_destroy(s);
        return MG_ERRF(MG_ENOMEM, "sampler: out of memory for vocab %d", vocab);
    }
    *out = s;
    return MG_OK;
}

void sampler_destroy(mg_sampler *s) {
    if (!s) return;
    free(s->hval);
    free(s->hid);
    free(s->w);
    free(s);
}

int32_t sampling_argmax(const float *l, int vocab) {
    int32_t best = 0;
    float bv = -INFINITY;
    /* Strict '>' keeps the lowest id among equal maxima; NaN compares false and is skipped. */
    for (int i = 0; i < vocab; i++)
        if (l[i] > bv) bv = l[i], best = i;
    return best;
}

/* a is worse than b: lower logit, or equal logit and higher id. */
static inline int worse(float va, int32_t ia, float vb, int32_t ib) {
    return va < vb || (va == vb && ia > ib);
}

static void sift_down(float *v, int32_t *id, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(v[l], id[l], v[m], id[m])) m = l;
        if (r < n && worse(v[r], id[r], v[m], id[m])) m = r;
        if (m == i) return;
        float tv = v[i];
        int32_t ti = id[i];
        v[i] = v[m], id[i] = id[m], v[m] = tv, id[m] = ti;
        i = m;
    }
}

/* Keep the k best non-NaN entries of l, then leave them best-first in s->hval/s->hid[0..ret). */
static int top_k_sorted(mg_sampler *s, const float *l, int vocab, int k) {
    float *v = s->hval;
    int32_t *id = s->hid;
    int n = 0;
    for (int i = 0; i < vocab; i++) {
        float x = l[i];
        if (x != x) continue; /* NaN */
        if (n < k) {
            /* sift up */
            int c = n++;
            v[c] = x, id[c] = i;
            while (c > 0) {
                int par = (c - 1) / 2;
                if (!worse(v[c], id[c], v[par], id[par])) break;
                float tv = v[c];
                int32_t ti = id[c];
                v[c] = v[par], id[c] = id[par], v[par] = tv, id[par] = ti;
                c = par;
            }
        } else if (worse(v[0], id[0], x, i)) {
            v[0] = x, id[0] = i;
            sift_down(v, id, n, 0);
        }
    }
    /* Heap sort in place: the worst goes to the end each round, leaving best-first order. */
    for (int m = n - 1; m > 0; m--) {
        float tv = v[0];
        int32_t ti = id[0];
        v[0] = v[m], id[0] = id[m], v[m] = tv, id[m] = ti;
        sift_down(v, id, m, 0);
    }
    return n;
}

/* Draw from best-first candidates with weights s->w[0..n), normalizer z (the total weight of the
 * distribution they come from), nucleus top_p. */
static int32_t draw(const mg_sampler *s, int n, double z, float top_p, double u) {
    if (n <= 0) return 0;
    int m = n;
    double kept = 0.0;
    if (top_p < 1.0f) {
        double want = (double)top_p * z;
        for (m = 0; m < n;) {
            kept += s->w[m++];
            if (kept >= want) break;
        }
    } else {
        for (int i = 0; i < n; i++) kept += s->w[i];
    }
    if (!(kept > 0.0) || !isfinite(kept)) return s->hid[0];
    double x = u * kept, c = 0.0;
    for (int i = 0; i < m; i++) {
        c += s->w[i];
        if (x < c) return s->hid[i];
    }
    return s->hid[m - 1]; /* rounding left x at the very top */
}

int32_t sampling_pick(mg_sampler *s, const float *l, const mg_sampling *p, uint64_t counter) {
    int vocab = s->vocab;
    if (p->temperature <= 0.0f || p->top_k == 1) return sampling_argmax(l, vocab);
    double inv_t = 1.0 / p->temperature;
    float top_p = (p->top_p > 0.0f && p->top_p < 1.0f) ? p->top_p : 1.0f; /* 0 and 1: off */
    double u = sampling_uniform(p->seed, counter);
    int k = (p->top_k > 0 && p->top_k < vocab) ? p->top_k : vocab;

    if (k == vocab && top_p >= 1.0f) {
        /* Plain temperature sampling over the whole row: max, weights, one scan. */
        float lmax = -INFINITY;
        for (int i = 0; i < vocab; i++)
            if (l[i] > lmax) lmax = l[i];
        double z = 0.0;
        float ft = (float)inv_t;
        for (int i = 0; i < vocab; i++) {
            double w = l[i] == l[i] ? expf((l[i] - lmax) * ft) : 0.0f;
            s->w[i] = w;
            z += w;
        }
        if (!(z > 0.0) || !isfinite(z)) return sampling_argmax(l, vocab);
        double x = u * z, c = 0.0;
        int last = 0;
        for (int i = 0; i < vocab; i++) {
            if (s->w[i] <= 0.0) continue;
            c += s->w[i];
            last = i;
            if (x < c) return i;
        }
        return last;
    }

    if (k < vocab) {
        /* top_k (then top_p within the k): the distribution is renormalized over the k best. */
        int n = top_k_sorted(s, l, vocab, k);
        if (n == 0) return 0;
        double z = 0.0, lmax = s->hval[0];
        for (int i = 0; i < n; i++) z += s->w[i] = exp(((double)s->hval[i] - lmax) * inv_t);
        return draw(s, n, z, top_p, u);
    }

    /* top_p alone: the normalizer is over the whole row; grow the best-first candidate list
     * until it holds top_p of the mass (a few hundred entries for peaked model outputs). */
    float lmax = -INFINITY;
    for (int i = 0; i < vocab; i++)
        if (l[i] > lmax) lmax = l[i];
    if (lmax == -INFINITY) return sampling_argmax(l, vocab);
    /* float exp: four times faster than double over 201,088 entries; the sum stays double. */
    double z = 0.0;
    float ft = (float)inv_t;
    for (int i = 0; i < vocab; i++)
        if (l[i] == l[i]) z += expf((l[i] - lmax) * ft);
    double want = (double)top_p * z;
    for (int cand = 256;; cand *= 4) {
        if (cand > vocab) cand = vocab;
        int n = top_k_sorted(s, l, vocab, cand);
        double kept = 0.0;
        for (int i = 0; i < n; i++) kept += s->w[i] = expf((s->hval[i] - lmax) * ft);
        if (kept >= want || n < cand || cand == vocab) return draw(s, n, z, top_p, u);
    }
}
