/* cpu_ops.c - float32 kernels of the CPU forward pass (see cpu_ops.h). */
#include "cpu_ops.h"

#include <math.h>
#include <string.h>

#include "model.h"

float ops_dot(const float *a, const float *b, int n) {
    /* Eight independent partial sums: the compiler can keep them in vector registers, and the
     * order of additions is fixed by the source, not by the batch. */
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    for (; i < n; i++) s[i & 7] += a[i] * b[i];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

float ops_dot_bf16(const uint16_t *w, const float *x, int n) {
    /* Same order of additions as ops_dot, so either path gives the same bits. */
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += bf16_to_f32(w[i + j]) * x[i + j];
    for (; i < n; i++) s[i & 7] += bf16_to_f32(w[i]) * x[i];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

void ops_bf16_row(float *out, const uint16_t *w, int n) {
    for (int i = 0; i < n; i++) out[i] = bf16_to_f32(w[i]);
}

/* e2m1 code → value: bit 3 sign, bits 2..1 exponent, bit 0 mantissa. */
static const float fp4[16] = {+0.0f, 0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                              -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

void ops_mxfp4_row(float *out, const uint8_t *blocks, const uint8_t *scales, int n) {
    for (int g = 0; g < n / 32; g++) {
        /* E8M0: 2^(s-127); s = 255 is NaN in the format, kept as the largest power here. */
        float scale = ldexpf(1.0f, (int)scales[g] - 127);
        const uint8_t *b = blocks + 16 * g;
        float *o = out + 32 * g;
        for (int j = 0; j < 16; j++) {
            o[2 * j] = fp4[b[j] & 0xF] * scale;
            o[2 * j + 1] = fp4[b[j] >> 4] * scale;
        }
    }
}

void ops_matmul_bf16(float *out, const float *x, const uint16_t *w, const uint16_t *b, int T, int N,
                     int K, int r0, int r1, float *wrow) {
    /* Few tokens (decode): read the bf16 row straight into the dot product. Many: convert the
     * row once and reuse it for every token. */
    if (T <= 2) {
        for (int r = r0; r < r1; r++) {
            float bias = b ? bf16_to_f32(b[r]) : 0.0f;
            for (int t = 0; t < T; t++)
                out[(size_t)t * N + r] =
                    ops_dot_bf16(w + (size_t)r * K, x + (size_t)t * K, K) + bias;
        }
        return;
    }
    /* Rows in tiles of OPS_ROW_TILE: each output row of a token is then written as one short
     * contiguous run instead of T scattered floats (N can be 201088 wide: scattered writes
     * cost a cache line and a TLB entry each). */
    for (int rt = r0; rt < r1; rt += OPS_ROW_TILE) {
        int nr = r1 - rt < OPS_ROW_TILE ? r1 - rt : OPS_ROW_TILE;
        for (int i = 0; i < nr; i++)
            ops_bf16_row(wrow + (size_t)i * K, w + (size_t)(rt + i) * K, K);
        for (int t = 0; t < T; t++) {
            const float *xt = x + (size_t)t * K;
            float *o = out + (size_t)t * N + rt;
            for (int i = 0; i < nr; i++)
                o[i] = ops_dot(wrow + (size_t)i * K, xt, K) + (b ? bf16_to_f32(b[rt + i]) : 0.0f);
        }
    }
}

void ops_rmsnorm(float *out, const float *x, const uint16_t *g, int H, float eps) {
    float ss = ops_dot(x, x, H);
    float inv = 1.0f / sqrtf(ss / (float)H + eps);
    for (int i = 0; i < H; i++) out[i] = bf16_to_f32(g[i]) * (x[i] * inv);
}

void ops_rope(float *x, int n_heads, int D, int pos, const float *inv_freq, float concentration) {
    int half = D / 2;
    for (int i = 0; i < half; i++) {
        float angle = (float)pos * inv_freq[i];
        float c = cosf(angle) * concentration, s = sinf(angle) * concentration;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (size_t)h * D;
            float x1 = v[i], x2 = v[i + half];
            v[i] = x1 * c - x2 * s;
            v[i + half] = x2 * c + x1 * s;
        }
    }
}

float ops_yarn_inv_freq(float *inv_freq, int D, double theta, double factor, double beta_fast,
                        double beta_slow, int orig_ctx, int truncate) {
    int half = D / 2;
    if (factor <= 1.0) { /* plain RoPE */
        for (int i = 0; i < half; i++)
            inv_freq[i] = 1.0f / powf((float)theta, (float)(2 * i) / (float)D);
        return 1.0f;
    }
    /* The dimension whose wavelength makes num_rot turns over the original context. */
    const double two_pi = 6.283185307179586;
    double low = D * log(orig_ctx / (beta_fast * two_pi)) / (2 * log(theta));
    double high = D * log(orig_ctx / (beta_slow * two_pi)) / (2 * log(theta));
    if (truncate) low = floor(low), high = ceil(high);
    if (low < 0) low = 0;
    if (high > D - 1) high = D - 1;
    if (low == high) high += 0.001;
    for (int i = 0; i < half; i++) {
        float pos_freq = powf((float)theta, (float)(2 * i) / (float)D);
        float extrap = 1.0f / pos_freq, interp = 1.0f / ((float)factor * pos_freq);
        float ramp = ((float)i - (float)low) / (float)(high - low);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        float keep = 1.0f - ramp; /* share of the original (extrapolated) frequency */
        inv_freq[i] = interp * (1.0f - keep) + extrap * keep;
    }
    return (float)(0.1 * log(factor) + 1.0);
}

void ops_swiglu(float *a, const float *h, int I, float limit) {
    for (int j = 0; j < I; j++) {
        float gate = h[2 * j], up = h[2 * j + 1];
        gate = gate > limit ? limit : gate;
        up = up > limit ? limit : up < -limit ? -limit : up;
        float glu = gate / (1.0f + expf(-1.702f * gate));
        a[j] = glu * (up + 1.0f);
    }
}
