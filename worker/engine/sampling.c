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
    float *wf;    /* (vocab) weights of a whole row (plain temperature sampling) */
    double *bsum; /* (vocab / BLOCK + 1) sums of wf per block */
};

/* Rows are summed in blocks of this many entries: float sums inside a block (vectorized), double
 * across blocks; a draw finds its block before scanning entries. */
#define BLOCK 1024

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
    s->wf = malloc(sizeof(float) * vocab);
    s->bsum = malloc(sizeof(double) * (vocab / BLOCK + 1));
    if (!s->hval || !s->hid || !s->w || !s->wf || !s->bsum) {
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
    free(s->wf);
    free(s->bsum);
    free(s);
}

/* e^x for x <= 0 in float, relative error below 5e-6, flushed to 0 below -87 (where float
 * would go denormal). No calls and no branches, so the row loops vectorize: expf() is a scalar
 * libm call and made one 201,088-entry row cost about 1 ms. */
static inline float exp_neg(float x) {
    /* NaN and -inf clamp to -87 too (the compare is false), so the int conversion below is
     * always defined, and they weigh 0. */
    x = x >= -87.0f ? x : -87.0f;
    float t = x * 1.44269504088896341f; /* log2(e) */
    int n = (int)t;                     /* toward zero */
    n -= t < (float)n;                  /* floor */
    float f = t - (float)n;             /* [0, 1) */
    /* 2^f: Taylor series of degree 7 around 0 (error below 2e-7 on [0, 1)); the rest of the
     * error is t - n losing bits when |t| is large */
    float p = 1.5252733804e-5f;
    p = p * f + 1.5403530393e-4f;
    p = p * f + 1.3333558146e-3f;
    p = p * f + 9.6181291076e-3f;
    p = p * f + 5.5504108665e-2f;
    p = p * f + 2.4022650696e-1f;
    p = p * f + 6.9314718056e-1f;
    p = p * f + 1.0f;
    union {
        int32_t i;
        float f;
    } sc = {.i = (n + 127) << 23};
    float r = p * sc.f;
    return x > -87.0f ? r : 0.0f;
}

/* Largest non-NaN entry (-inf when none). Eight independent lanes break the compare chain so the
 * compiler can use SIMD max; `x > m ? x : m` never lets a NaN in. */
static float row_max(const float *l, int n) {
    float m[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY,
                  -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) m[k] = l[i + k] > m[k] ? l[i + k] : m[k];
    for (; i < n; i++) m[0] = l[i] > m[0] ? l[i] : m[0];
    float r = m[0];
    for (int k = 1; k < 8; k++) r = m[k] > r ? m[k] : r;
    return r;
}

int32_t sampling_argmax(const float *l, int vocab) {
    /* Two passes (the max, then its first position) each run at memory speed, where one pass
     * tracking the index is a serial compare chain. Lowest id on ties; NaN never wins. */
    float m = row_max(l, vocab);
    if (m == -INFINITY) return 0;
    for (int i = 0; i < vocab; i++)
        if (l[i] == m) return i;
    return 0;
}

/* Weights of l[b0..e) into w (NaN weighs 0); returns their sum. Eight lanes of partial sums,
 * because a single float accumulator cannot be reordered into SIMD lanes without fast-math; the
 * selects vectorize because CMakeLists builds this file with -fno-trapping-math. */
static float block_weights(const float *restrict l, int b0, int e, float lmax, float ft,
                           float *restrict w) {
    float acc[8] = {0};
    int i = b0;
    for (; i + 8 <= e; i += 8) {
        for (int k = 0; k < 8; k++) {
            float y = exp_neg((l[i + k] - lmax) * ft);
            w[i + k] = y;
            acc[k] += y;
        }
    }
    for (; i < e; i++) {
        w[i] = exp_neg((l[i] - lmax) * ft);
        acc[0] += w[i];
    }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* Sum of exp((l - lmax) * ft) over a row, block by block: each weight lands in wf and each
 * block's sum in bsum. */
static double row_weights(const float *l, int n, float lmax, float ft, float *wf, double *bsum) {
    double z = 0.0;
    for (int b0 = 0, bi = 0; b0 < n; b0 += BLOCK, bi++) {
        int e = b0 + BLOCK < n ? b0 + BLOCK : n;
        float acc = block_weights(l, b0, e, lmax, ft, wf);
        bsum[bi] = acc;
        z += acc;
    }
    return z;
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
        /* Plain temperature sampling over the whole row: max, weights by block, then find
         * the block holding the draw and scan inside it. */
        float lmax = row_max(l, vocab);
        if (lmax == -INFINITY) return 0;
        double z = row_weights(l, vocab, lmax, (float)inv_t, s->wf, s->bsum);
        if (!(z > 0.0) || !isfinite(z)) return sampling_argmax(l, vocab);
        double x = u * z, c = 0.0;
        int nb = (vocab + BLOCK - 1) / BLOCK, b = 0;
        for (; b < nb - 1 && c + s->bsum[b] <= x; b++) c += s->bsum[b];
        int last = -1, e = (b + 1) * BLOCK < vocab ? (b + 1) * BLOCK : vocab;
        for (int i = b * BLOCK; i < e; i++) {
            if (s->wf[i] <= 0.0f) continue;
            c += s->wf[i];
            last = i;
            if (x < c) return i;
        }
        /* Rounding between the float block sums and the double scan left x past the block. */
        return last >= 0 ? last : sampling_argmax(l, vocab);
    }

    if (k < vocab) {
        /* top_k (then top_p within the k): the distribution is renormalized over the k best. */
        int n = top_k_sorted(s, l, vocab, k);
        if (n == 0) return 0;
        double z = 0.0;
        float lmax = s->hval[0], ft = (float)inv_t;
        for (int i = 0; i < n; i++) z += s->w[i] = exp_neg((s->hval[i] - lmax) * ft);
        return draw(s, n, z, top_p, u);
    }

    /* top_p alone: the normalizer is over the whole row; grow the best-first candidate list
     * until it holds top_p of the mass (a few hundred entries for peaked model outputs). */
    float lmax = row_max(l, vocab);
    if (lmax == -INFINITY) return 0;
    float ft = (float)inv_t;
    double z = row_weights(l, vocab, lmax, ft, s->wf, s->bsum);
    double want = (double)top_p * z;
    for (int cand = 256;; cand *= 4) {
        if (cand > vocab) cand = vocab;
        int n = top_k_sorted(s, l, vocab, cand);
        double kept = 0.0;
        for (int i = 0; i < n; i++) kept += s->w[i] = exp_neg((s->hval[i] - lmax) * ft);
        if (kept >= want || n < cand || cand == vocab) return draw(s, n, z, top_p, u);
    }
}
