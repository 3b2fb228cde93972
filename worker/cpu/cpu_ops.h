/* cpu_ops.h - the float32 kernels of the CPU forward pass (DESIGN.md §3), one function per op,
 * each working on the rows it is given so that the backend can split rows over threads.
 *
 * Weights arrive as stored in the checkpoint (bf16, MXFP4) and are converted a row at a time
 * into a float scratch row, then dotted with every token's activations: one conversion serves
 * the whole batch, memory holds 2 (or 0.53) bytes per weight instead of 4, and each dot product
 * sums in a fixed order, so a token's result does not depend on what else is in the batch.
 * Shapes are in comments: T tokens, H hidden, D head_dim. No allocation; no thread rules. */
#ifndef MG_CPU_OPS_H
#define MG_CPU_OPS_H

#include <stdint.h>

/* sum a[i]*b[i], i < n, in a fixed order (8 partial sums, then a fixed tree). */
float ops_dot(const float *a, const float *b, int n);

/* ops_dot with a bf16 first operand, converted on the fly; same summation order. */
float ops_dot_bf16(const uint16_t *w, const float *x, int n);

/* out (n) = bf16 row w (n) as float. */
void ops_bf16_row(float *out, const uint16_t *w, int n);

/* One row of an MXFP4 matrix: n inputs (multiple of 32) from n/32 blocks of 16 code bytes
 * (low nibble first) and n/32 E8M0 scales. */
void ops_mxfp4_row(float *out, const uint8_t *blocks, const uint8_t *scales, int n);

/* out (T, N) rows [r0, r1) = x (T, K) · W^T + b, W (N, K) bf16, b (N) bf16 or NULL.
 * wrow: OPS_ROW_TILE * K floats of scratch. */
#define OPS_ROW_TILE 16
void ops_matmul_bf16(float *out, const float *x, const uint16_t *w, const uint16_t *b, int T, int N,
                     int K, int r0, int r1, float *wrow);

/* x (H) → out (H): x / sqrt(mean(x²) + eps) * g. */
void ops_rmsnorm(float *out, const float *x, const uint16_t *g, int H, float eps);

/* Rotate n_heads heads of x (n_heads, D) in place for one position (NeoX half split), with
 * inv_freq (D/2) and YaRN's concentration multiplying cos and sin. */
void ops_rope(float *x, int n_heads, int D, int pos, const float *inv_freq, float concentration);

/* YaRN inverse frequencies (D/2), computed as Hugging Face does in float32. Returns the
 * attention factor (concentration). */
float ops_yarn_inv_freq(float *inv_freq, int D, double theta, double factor, double beta_fast,
                        double beta_slow, int orig_ctx, int truncate);

/* Clamped SwiGLU of gpt-oss: h (2I) interleaved gate/up → a (I). */
void ops_swiglu(float *a, const float *h, int I, float limit);

#endif
