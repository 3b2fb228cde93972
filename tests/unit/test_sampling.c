/* test_sampling.c - sampling statistics: top-k never leaves the k best, top-p keeps the right
 * mass, temperature follows softmax, seeds repeat, greedy ties go to the lowest id, and the
 * gpt-oss vocabulary size is handled without sorting it. */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "sampling.h"

static double softmax_p(const float *l, int n, int i, double t) {
    double m = -INFINITY, z = 0;
    for (int k = 0; k < n; k++)
        if (l[k] > m) m = l[k];
    for (int k = 0; k < n; k++) z += exp((l[k] - m) / t);
    return exp((l[i] - m) / t) / z;
}

static void test_greedy(void) {
    float l[12] = {0, 1, 3, 2, 0, 3, -1, 3, NAN, 0, 0, 1};
    CHECK_EQ_INT(sampling_argmax(l, 12), 2); /* ties: lowest id; NaN skipped */
    mg_sampler *s;
    CHECK_OK(sampler_create(12, &s));
    mg_sampling g = mg_sampling_greedy();
    for (uint64_t c = 0; c < 10; c++) CHECK_EQ_INT(sampling_pick(s, l, &g, c), 2);
    /* top_k 1 is greedy too, whatever the temperature. */
    mg_sampling k1 = {1.0f, 1.0f, 1, 99};
    CHECK_EQ_INT(sampling_pick(s, l, &k1, 3), 2);
    float nan_first[3] = {NAN, -5, -7};
    CHECK_EQ_INT(sampling_argmax(nan_first, 3), 1);
    sampler_destroy(s);
}

static void test_temperature(void) {
    enum { V = 6, N = 60000 };
    float l[V] = {1.0f, 0.5f, 2.0f, -1.0f, 0.0f, 1.5f};
    mg_sampler *s;
    CHECK_OK(sampler_create(V, &s));
    mg_sampling p = {0.7f, 1.0f, 0, 1234};
    int cnt[V] = {0};
    for (int c = 0; c < N; c++) cnt[sampling_pick(s, l, &p, (uint64_t)c)]++;
    for (int i = 0; i < V; i++) {
        double want = softmax_p(l, V, i, 0.7);
        /* 5 standard deviations of a binomial count */
        double tol = 5 * sqrt(want * (1 - want) / N) + 1e-4;
        CHECK_NEAR((double)cnt[i] / N, want, tol);
    }
    sampler_destroy(s);
}

/* NaN and -inf entries (a masked token) are never drawn, on any path, including rows longer
 * than one summation block. */
static void test_masked(void) {
    enum { NV = 3000 };
    static float l[NV];
    for (int i = 0; i < NV; i++) l[i] = (i % 3 == 0) ? NAN : (i % 3 == 1) ? -INFINITY : -(i % 7);
    mg_sampler *s;
    CHECK_OK(sampler_create(NV, &s));
    mg_sampling ps[4] = {
        {1.0f, 1.0f, 0, 1}, {1.0f, 0.5f, 0, 2}, {2.0f, 1.0f, 100, 3}, {0, 1, 0, 0}};
    int bad = 0;
    for (int k = 0; k < 4; k++)
        for (int c = 0; c < 500; c++) bad += (sampling_pick(s, l, &ps[k], (uint64_t)c) % 3) != 2;
    CHECK_EQ_INT(bad, 0);
    sampler_destroy(s);
}

static void test_top_k(void) {
    enum { V = 1000, K = 10, N = 40000 };
    float l[V];
    unsigned seed = 3;
    for (int i = 0; i < V; i++) l[i] = (float)(rand_r(&seed) % 10000) / 2500.0f;
    /* the K best ids by a plain reference sort: mark them */
    int order[V];
    for (int i = 0; i < V; i++) order[i] = i;
    for (int i = 0; i < K; i++)
        for (int j = i + 1; j < V; j++)
            if (l[order[j]] > l[order[i]] || (l[order[j]] == l[order[i]] && order[j] < order[i])) {
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
    bool in_k[V] = {0};
    float lk[K];
    for (int i = 0; i < K; i++) in_k[order[i]] = true, lk[i] = l[order[i]];
    mg_sampler *s;
    CHECK_OK(sampler_create(V, &s));
    mg_sampling p = {1.5f, 1.0f, K, 42};
    int outside = 0, cnt[V] = {0};
    for (int c = 0; c < N; c++) {
        int t = sampling_pick(s, l, &p, (uint64_t)c);
        if (!in_k[t]) outside++;
        cnt[t]++;
    }
    CHECK_EQ_INT(outside, 0);
    /* within the k, the renormalized softmax */
    for (int i = 0; i < K; i++) {
        double want = softmax_p(lk, K, i, 1.5);
        double tol = 5 * sqrt(want * (1 - want) / N) + 1e-4;
        CHECK_NEAR((double)cnt[order[i]] / N, want, tol);
    }
    sampler_destroy(s);
}

static void test_top_p(void) {
    /* probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1 */
    enum { V = 4, N = 40000 };
    float l[V] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    mg_sampler *s;
    CHECK_OK(sampler_create(V, &s));
    mg_sampling p = {1.0f, 0.75f, 0, 7};
    int cnt[V] = {0};
    for (int c = 0; c < N; c++) cnt[sampling_pick(s, l, &p, (uint64_t)c)]++;
    CHECK_EQ_INT(cnt[2] + cnt[3], 0); /* outside the nucleus {0, 1} */
    CHECK_NEAR((double)cnt[0] / N, 0.5 / 0.8, 0.015);
    /* top_p 0.9 admits token 2 as well; top_k 2 then top_p 0.9 does not */
    p.top_p = 0.9f;
    int seen2 = 0;
    for (int c = 0; c < 2000; c++) seen2 += sampling_pick(s, l, &p, (uint64_t)c) == 2;
    CHECK(seen2 > 0);
    p.top_k = 2;
    seen2 = 0;
    for (int c = 0; c < 2000; c++) seen2 += sampling_pick(s, l, &p, (uint64_t)c) >= 2;
    CHECK_EQ_INT(seen2, 0);
    sampler_destroy(s);
}

static int cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* The real vocabulary: top_p alone grows its candidate list; every pick must lie inside the
 * nucleus computed by a full sort. */
static void test_big_vocab(void) {
    enum { V = 201088 };
    float *l = malloc(sizeof(float) * V), *sorted = malloc(sizeof(float) * V);
    unsigned seed = 11;
    for (int i = 0; i < V; i++) {
        /* a peaked, model-like row: a few strong candidates over a noisy floor */
        double u = (rand_r(&seed) + 1.0) / (RAND_MAX + 2.0);
        l[i] = (float)(-log(-log(u)) * 1.5);
    }
    for (int i = 0; i < 40; i++) l[rand_r(&seed) % V] += 12.0f;
    for (int i = 0; i < V; i++) sorted[i] = l[i];
    qsort(sorted, V, sizeof(float), cmp_desc);
    double m = sorted[0], z = 0, c = 0;
    for (int i = 0; i < V; i++) z += exp(sorted[i] - m);
    int nuc = 0;
    while (nuc < V && c < 0.9 * z) c += exp(sorted[nuc++] - m);
    float floor_logit = sorted[nuc - 1];
    mg_sampler *s;
    CHECK_OK(sampler_create(V, &s));
    mg_sampling p = {1.0f, 0.9f, 0, 5};
    int outside = 0;
    for (int k = 0; k < 300; k++) {
        int t = sampling_pick(s, l, &p, (uint64_t)k);
        if (l[t] < floor_logit) outside++;
    }
    CHECK_EQ_INT(outside, 0);
    /* top_k 50 over the real vocabulary: only the 50 best */
    mg_sampling pk = {1.0f, 1.0f, 50, 5};
    outside = 0;
    for (int k = 0; k < 300; k++) outside += l[sampling_pick(s, l, &pk, (uint64_t)k)] < sorted[49];
    CHECK_EQ_INT(outside, 0);
    /* greedy */
    mg_sampling g = mg_sampling_greedy();
    CHECK(l[sampling_pick(s, l, &g, 0)] == sorted[0]);
    sampler_destroy(s);
    free(l);
    free(sorted);
}

static void test_seed(void) {
    enum { V = 500 };
    float l[V];
    for (int i = 0; i < V; i++) l[i] = (float)((i * 37) % 101) / 20.0f;
    mg_sampler *s;
    CHECK_OK(sampler_create(V, &s));
    mg_sampling a = {1.0f, 0.95f, 40, 777}, b = a;
    b.seed = 778;
    int same = 0, diff_seed_same = 0;
    for (int c = 0; c < 200; c++) {
        int x = sampling_pick(s, l, &a, (uint64_t)c);
        int y = sampling_pick(s, l, &a, (uint64_t)c); /* same (seed, counter): same token */
        same += x == y;
        diff_seed_same += x == sampling_pick(s, l, &b, (uint64_t)c);
    }
    CHECK_EQ_INT(same, 200);
    CHECK(diff_seed_same < 100);
    CHECK(sampling_uniform(1, 2) == sampling_uniform(1, 2));
    CHECK(sampling_uniform(1, 2) != sampling_uniform(2, 1));
    double mean = 0;
    for (int i = 0; i < 10000; i++) {
        double u = sampling_uniform(9, (uint64_t)i);
        CHECK(u >= 0 && u < 1);
        mean += u;
    }
    CHECK_NEAR(mean / 10000, 0.5, 0.02);
    sampler_destroy(s);
}

static void test_check(void) {
    mg_sampling p = {1.0f, 1.0f, 0, 0};
    CHECK_OK(sampling_check(&p));
    p.top_p = 1.5f;
    CHECK(sampling_check(&p) == MG_EINVAL);
    p.top_p = 1.0f;
    p.temperature = -1.0f;
    CHECK(sampling_check(&p) == MG_EINVAL);
    p.temperature = NAN;
    CHECK(sampling_check(&p) == MG_EINVAL);
    p.temperature = 1.0f;
    p.top_k = -2;
    CHECK(sampling_check(&p) == MG_EINVAL);
    mg_sampler *s;
    CHECK(sampler_create(0, &s) == MG_EINVAL);
}

int main(void) {
    test_greedy();
    test_temperature();
    test_masked();
    test_top_k();
    test_top_p();
    test_big_vocab();
    test_seed();
    test_check();
    return check_done();
}
