/* cuda_ops.h - the launchers of the CUDA forward pass (DESIGN.md §3), callable from C.
 *
 * Each launcher mirrors its CPU twin in worker/cpu (cpu_ops.h, cpu_backend.c): same op name with
 * a cuda_ prefix, outputs first, then inputs, then shapes, then the stream. The kernels live in
 * the .cuh files of this folder (kernels first, launchers after) and are compiled once, in
 * cuda_ops.cu. All pointers are device pointers unless said otherwise. Activations are float32
 * for the residual stream and bf16 (raw uint16_t) where they feed a tensor-core GEMM; weights
 * keep the checkpoint's layout (bf16, MXFP4 blocks + E8M0 scales) so that loading is a copy.
 *
 * KV cache layout, per layer: (num_blocks, n_kv_heads, block_size, head_dim) bf16, so one head's
 * positions of one block are contiguous. A token's slot is block * block_size + offset.
 *
 * Launchers enqueue work and return the launch error (cudaGetLastError) as an int: 0 is success.
 * No allocation; no thread rules beyond the stream's. */
#ifndef MG_CUDA_OPS_H
#define MG_CUDA_OPS_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Programmatic dependent launch for the forward pass's kernels (common.cuh): on, each may start
 * while the kernel before it finishes; off (the default): plain stream order. Same rule as
 * cuda_moe3_force_tile: set before stepping (graphs keep what they were captured with). */
void cuda_set_pdl(int on);
/* The same for the kernels launched (or captured) from now until the next call: the backend's
 * choice per step (cuda_backend_opts.pdl_max_tokens). Process-wide, as cuda_set_pdl: one
 * thread steps at a time. */
void cuda_pdl_step(int on);

/* x (T, H) float = embed rows of tokens (T); embed (V, H) bf16. */
int cuda_embed(float *x, const uint16_t *embed, const int32_t *tokens, int T, int H,
               cudaStream_t s);

/* The residual add fused with the next RMSNorm. For each row t < T:
 *   x[t] += delta[t*n_delta + 0] + ... + delta[t*n_delta + n_delta-1] (+ bias), in that order,
 *   out[t] = bf16(x[t] / sqrt(mean(x[t]^2) + eps) * g).
 * delta (T*n_delta, H) float or NULL (n_delta 0: a plain RMSNorm), bias (H) bf16 or NULL,
 * g (H) bf16, out (T, H) bf16. */
int cuda_rmsnorm(uint16_t *out, float *x, const float *delta, int n_delta, const uint16_t *bias,
                 const uint16_t *g, int T, int H, float eps, cudaStream_t s);

/* out (n, H) = rows[i] of x (·, H), bf16 (the final-normed rows that want logits). */
int cuda_gather_rows(uint16_t *out, const uint16_t *x, const int32_t *rows, int n, int H,
                     cudaStream_t s);

/* out (T, N) float = x (T, K) bf16 · W^T, W (N, K) bf16 row-major, for T up to CUDA_GEMV_MAX_T:
 * one warp per row of W, float sums (cuda_matmul_bf16's function for few tokens). K a multiple
 * of 8, x and w 16-byte aligned. */
#define CUDA_GEMV_MAX_T 4
int cuda_gemv_bf16(float *out, const uint16_t *x, const uint16_t *w, int T, int N, int K,
                   cudaStream_t s);
/* Router GEMV and top-k in one kernel for steps of T <= CUDA_GEMV_MAX_T tokens: logits (T, E) =
 * x · W^T, then the last CTA to finish (count: one int, zero, which the kernel leaves zero; no
 * other launch may use it at the same time) makes cuda_router's top_e, top_w, e_start, e_slots
 * (E <= 256). */
int cuda_router_gemv(float *logits, int *count, const uint16_t *x, const uint16_t *w,
                     const uint16_t *bias, int32_t *top_e, float *top_w, int32_t *e_start,
                     int32_t *e_slots, int T, int E, int K, int top_k, cudaStream_t s);

/* After the fused q/k/v GEMM: qkv (T, Q + 2 KV) float, bias (Q + 2 KV) bf16. Adds the bias,
 * rotates q and k (YaRN RoPE, NeoX halves; inv_freq (D/2) float, concentration multiplies cos and
 * sin), writes q (T, Q) float and k, v as bf16 into the layer's cache at slot[t]. */
int cuda_qkv_rope(float *q, uint16_t *kcache, uint16_t *vcache, const float *qkv,
                  const uint16_t *bias, const int32_t *positions, const int32_t *slots,
                  const float *inv_freq, float concentration, int T, int n_heads, int n_kv_heads,
                  int D, int block_size, cudaStream_t s);

/* Attention with sinks over the paged KV cache, one (token, kv head) per CTA, one query head per
 * warp, online softmax: out (T, Q) bf16. Token t attends to positions [lo, positions[t]] of
 * its sequence token_seq[t] (block_table row, stride max_blocks), lo = positions[t] - window + 1
 * when window > 0, else 0. sinks (n_heads) bf16 add exp(sink) to the denominator only.
 * D must be 64. */
int cuda_attention(uint16_t *out, const float *q, const uint16_t *kcache, const uint16_t *vcache,
                   const uint16_t *sinks, const int32_t *block_table, int max_blocks,
                   const int32_t *token_seq, const int32_t *positions, int T, int n_heads,
                   int n_kv_heads, int D, int block_size, int window, cudaStream_t s);

/* The same on the tensor cores (kernel version 5): one warp per (token, kv head) serving the
 * group's 8 query heads with bf16 MMAs, q split into two bf16 parts, the softmax weights rounded
 * to bf16 for P·V. Other shapes (D != 64, groups other than 8) fall back to cuda_attention. */
int cuda_attention_mma(uint16_t *out, const float *q, const uint16_t *kcache,
                       const uint16_t *vcache, const uint16_t *sinks, const int32_t *block_table,
                       int max_blocks, const int32_t *token_seq, const int32_t *positions, int T,
                       int n_heads, int n_kv_heads, int D, int block_size, int window,
                       cudaStream_t s);

/* Split-KV attention for small batches (flash-decoding), same result as cuda_attention: the
 * keys of each token are cut into at most `splits` chunks (multiples of 32) handled by separate
 * CTAs, whose partial states land in part (T, n_heads, CUDA_ATT_MAX_SPLITS, 66) float, then
 * merged with the sink: by the last CTA of each (token, kv head) when count is given ((T,
 * n_kv_heads) int, zeros, which the kernel leaves zero), else by a second kernel. max_ctx: the
 * longest context in the batch: it sets the number of splits and, unless per_token, the chunk
 * length; per_token: each token's keys are cut into that many chunks of its own (a graph
 * captured for the longest context then still spreads a short one over its CTAs). */
#define CUDA_ATT_MAX_SPLITS 32
int cuda_attention_split(uint16_t *out, float *part, int *count, const float *q,
                         const uint16_t *kcache, const uint16_t *vcache, const uint16_t *sinks,
                         const int32_t *block_table, int max_blocks, const int32_t *token_seq,
                         const int32_t *positions, int T, int n_heads, int n_kv_heads, int D,
                         int block_size, int window, int max_ctx, int splits, int per_token,
                         cudaStream_t s);

/* Router: logits (T, E) float from the router GEMM, bias (E) bf16. Per token the top_k experts
 * by logit (ties to the lower index) and a softmax over those k logits: top_e, top_w (T*top_k,
 * slot = t*top_k + k). Then the slots grouped by expert: e_start (E+1) offsets into
 * e_slots (T*top_k), in no fixed order within an expert. A warp per token, then one CTA for
 * the grouping (E <= 1024, top_k <= 8). */
int cuda_router(int32_t *top_e, float *top_w, int32_t *e_start, int32_t *e_slots,
                const float *logits, const uint16_t *bias, int T, int E, int top_k, cudaStream_t s);

/* First expert GEMM over the slots grouped by expert, MXFP4 codes decoded in registers into
 * bf16 tensor-core fragments: h = W1[e] · xn[slot / top_k] + b1[e], then the clamped SwiGLU
 * (gate = even rows, up = odd rows): act (S, I) bf16. xn (T, H) bf16; blocks (E, 2I, H/32, 16),
 * scales (E, 2I, H/32), bias (E, 2I) bf16. H and I multiples of 32. version: the kernel
 * (1 to 4, see moe.cuh), all computing the same function; T, the step's token count, picks
 * the tile of versions 3 and 4, which take blocks and scales in the tiled layout of
 * cuda_mxfp4_tile (16-byte aligned). */
int cuda_moe_gate_up(uint16_t *act, const uint16_t *xn, const uint8_t *blocks,
                     const uint8_t *scales, const uint16_t *bias, const int32_t *e_start,
                     const int32_t *e_slots, int T, int top_k, int E, int I, int H, float limit,
                     int version, cudaStream_t s);

/* Version 3's weight layout: blocks (E, N, K/32, 16) and scales (E, N, K/32) rearranged so that
 * a warp's loads are contiguous (moe.cuh); N a multiple of 16, K of 32. Sizes below; the tiled
 * tensors are padded to whole 4-block super-chunks. Not in place: four separate buffers. */
static inline size_t cuda_mxfp4_tiled_units(int E, int N, int K) {
    return (size_t)E * (size_t)(N / 16) * (size_t)((K / 32 + 3) / 4) * 64;
}
static inline size_t cuda_mxfp4_tiled_blocks_bytes(int E, int N, int K) {
    return 16 * cuda_mxfp4_tiled_units(E, N, K);
}
static inline size_t cuda_mxfp4_tiled_scales_bytes(int E, int N, int K) {
    return cuda_mxfp4_tiled_units(E, N, K);
}
int cuda_mxfp4_tile(uint8_t *blocks_t, uint8_t *scales_t, const uint8_t *blocks,
                    const uint8_t *scales, int E, int N, int K, cudaStream_t s);
/* Benchmarks only: the MoE tile of versions 3 and 4 for every step from now on (0: chosen by the
 * step's token count, 1: the small tile, 2: the large one, 3: version 4's many-token one). Not
 * thread-safe; set before stepping. */
void cuda_moe3_force_tile(int tile);
/* The small tile's weight ring (batch 1 to ~128 on 120b): 8 (the default) or 4 super-chunks.
 * Same rule as cuda_moe3_force_tile: set before stepping. */
void cuda_moe3_small_stages(int stages);

/* Second expert GEMM: y[slot] = top_w[slot] * (W2[e] · act[slot] + b2[e]), y (S, H) float;
 * the routing weight is applied here so that cuda_rmsnorm's n_delta = top_k sum is the MoE
 * output (a fixed-order sum instead of atomics: results do not depend on the batch). */
int cuda_moe_down(float *y, const uint16_t *act, const uint8_t *blocks, const uint8_t *scales,
                  const uint16_t *bias, const int32_t *e_start, const int32_t *e_slots,
                  const float *top_w, int T, int top_k, int E, int H, int I, int version,
                  cudaStream_t s);

/* ---- kernel version 7: a step of up to CUDA_GEMV_MAX_T tokens (small.cuh) ----
 * Each does the work of version-6 kernels with their arithmetic in their order: the results
 * are theirs bit for bit (the expert kernels' split form, cuda_small_split: to float rounding). x
 * (T, H) float is the residual stream; H at most 3072, a multiple of 8.
 *
 * cuda_qkv7: cuda_rmsnorm of x with gains g (x unchanged, the normed rows never leave the
 * kernel), the q/k/v GEMV against w (Q + 2 KV, H), then cuda_qkv_rope's bias, rotation and
 * writes. */
int cuda_qkv7(float *q, uint16_t *kcache, uint16_t *vcache, const float *x, const uint16_t *g,
              const uint16_t *w, const uint16_t *bias, const int32_t *positions,
              const int32_t *slots, const float *inv_freq, float concentration, int T, int H,
              int n_heads, int n_kv_heads, int D, int block_size, float eps, cudaStream_t s);
/* x (T, N) += in (T, K) · W^T, then + bias (N) bf16: the GEMV and cuda_rmsnorm's residual add. */
int cuda_gemv_res(float *x, const uint16_t *in, const uint16_t *w, const uint16_t *bias, int T,
                  int N, int K, cudaStream_t s);
/* xn (T, H) = cuda_rmsnorm of x with gains g, then cuda_router_gemv from it (E <= 256); with
 * e_start NULL no grouping (e_start, e_slots untouched), see cuda_small_topk_only. */
int cuda_router7(float *logits, int *count, uint16_t *xn, const float *x, const uint16_t *g,
                 const uint16_t *w, const uint16_t *bias, int32_t *top_e, float *top_w,
                 int32_t *e_start, int32_t *e_slots, int T, int E, int H, float eps, int top_k,
                 cudaStream_t s);
/* x (T, H) += cuda_moe_down's y rows of each token in slot order (slot t * top_k + k, expert
 * top_e[slot]; no grouping needed), as cuda_rmsnorm adds them. T * top_k at most 16; blocks and
 * scales tiled (cuda_mxfp4_tile). */
int cuda_moe_down_res(float *x, const uint16_t *act, const uint8_t *blocks, const uint8_t *scales,
                      const uint16_t *bias, const int32_t *top_e, const float *top_w, int T,
                      int top_k, int H, int I, cudaStream_t s);

/* Steps of a few tokens (version 7): the split form of the expert kernels (small.cuh: a tile's
 * K over several warps, their sums added at the end) when on (the default), else version 3's
 * small tile. Results agree with the unsplit kernels to float rounding. Returns the setting
 * before. Not thread-safe; set before stepping (graphs keep what they were captured with). */
int cuda_small_split(int on);
/* o_proj at one token with cuda_small_split on: KS warps a row of W (2, 4 or 8; 4, the default),
 * each over a KS-th of K, their sums added in order; 1: a warp a row (gemv_res_kernel). Results
 * agree with KS 1 to float rounding. Other values leave it as it was; returns the setting
 * before. */
int cuda_small_o_split(int ks);
/* One-token kernels whose CTAs all fit the GPU at once instead of running in waves (mask: 2,
 * q/k/v looping over its pairs; 16, q/k/v with a pair a warp, three CTAs an SM and part of each
 * row in shared memory, over 2 where both are set; 18, the default); results bit for bit those
 * without. Returns the mask before. */
int cuda_small_persist(int mask);
/* Latency switches of the one-token kernels (mask; 19 by default): 1, o_proj's split form lets
 * the router launch from its start instead of after its math; 2, the router on a cluster of
 * CTAs, its top-k reading the logits from distributed shared memory instead of after a ticket;
 * 16, the cluster router's first CTA picks the experts by rank, a thread an expert (with 32,
 * off by default: four), instead of in rounds over one warp. Results are unchanged, bit for bit.
 * Returns the mask before. */
int cuda_small_trigger(int mask);
/* How the expert kernels at a few tokens stage their token rows, a mask: 1, gate_up's through L1
 * (cp.async.ca, so that an SM's later CTAs find them there; else from L2); 4, the down
 * projection's act rows by each warp for itself, with no CTA barrier; 16, the down projection at
 * one token a CTA per 8 output rows instead of 16 (a grid twice as large, spread more evenly
 * over the SMs). 1 is the default. Results are unchanged, bit for bit. Returns the mask before. */
int cuda_small_rows(int mask);
/* Small rows that the one-token kernels read right after their wait, by one bulk copy of the
 * SM's copy engine instead of the threads' loads, which queue behind the weights in flight (a
 * mask: 1, x for q/k/v's norm; 2, x for the cluster router's norm; 4, the down projection's act
 * rows; 8, o_proj's input row; 16, attention's query heads; 32, gate_up's token row). 0 is the
 * default. Results are
 * unchanged, bit for bit. Returns the mask before. */
int cuda_small_bulk(int mask);
/* Measurement only: the expert kernels at one token keep their loads, stores and barriers but
 * not their arithmetic (mask: 1, gate_up; 2, down), so that a step's time without the math
 * shows how much of it the loads hide; the results are then meaningless. 4: gate_up at one token
 * with every other CTA of its first wave asking for its weights 1 us late, so that an SM's CTAs
 * no longer load and compute in step (the results are right). Returns the mask before. */
int cuda_small_nomath(int mask);
/* Sets the one-token switch named by a command-line option (--persist, --trigger, --rows,
 * --bulk, --no-math) to value, a decimal mask. Returns 0 when set, 1 when name is none of them,
 * -1 when value is not a mask of that switch's bits (err then says which bits it takes). */
int cuda_small_option(const char *name, const char *value, char *err, size_t n);
/* Every switch that cuda_small_option sets back to its default. */
void cuda_small_defaults(void);
/* The timeline of a one-token layer's kernels (a build with MG_CUDA_TIMELINE): per kernel
 * (q/k/v, attention, o_proj, router, gate_up, down), per CTA, %globaltimer ns at its start,
 * past its pdl_wait, at its end and at two points of its work in between (phases 0, 1, 2, 3,
 * 4), as the last layer of the last step wrote them; 0 where a CTA did not pass a point. clear:
 * zero them; else copy them to out (CUDA_TL_KERNELS * CUDA_TL_CTAS * CUDA_TL_PHASES).
 * cudaErrorNotSupported in other builds. */
enum {
    CUDA_TL_QKV,
    CUDA_TL_ATT,
    CUDA_TL_O,
    CUDA_TL_ROUTER,
    CUDA_TL_GATE_UP,
    CUDA_TL_DOWN,
    CUDA_TL_KERNELS,
    CUDA_TL_CTAS = 2048,
    CUDA_TL_PHASES = 5
};
int cuda_timeline(unsigned long long *out, int clear);
/* Whether a version-7 step of T tokens needs only the router's top_e (and top_w): one token with
 * gate_up in the split form, which takes each slot's expert from top_e, as the down projection
 * does; cuda_router7 may then skip the grouping (e_start NULL). */
int cuda_small_topk_only(int T, int top_k, int H, int I);
/* cuda_moe_gate_up at kernel version 7 (T * top_k at most 16), in the split form when
 * cuda_small_split is on and H fits it (at most 3072), else version 3's small tile; top_e as the
 * router wrote it (one token: CTA y takes slot y's expert without the grouping). */
int cuda_moe_gate_up_small(uint16_t *act, const uint16_t *xn, const uint8_t *blocks,
                           const uint8_t *scales, const uint16_t *bias, const int32_t *top_e,
                           const int32_t *e_start, const int32_t *e_slots, int T, int top_k, int E,
                           int I, int H, float limit, cudaStream_t s);

/* out (n) = argmax of each logits row (n, V): lowest id on ties, NaN never wins, 0 when every
 * entry is -inf or NaN (sampling_argmax's rule). */
int cuda_argmax(int32_t *out, const float *logits, int n, int V, cudaStream_t s);

/* Per-row parameters of cuda_sample (mg_sample_req flattened for the device). */
enum { CUDA_SAMPLE_HOST = 0, CUDA_SAMPLE_DEVICE = 1 };
typedef struct cuda_sample_row {
    float temperature, top_p; /* mg_sampling's */
    int32_t top_k;
    int32_t mode;              /* CUDA_SAMPLE_DEVICE, or CUDA_SAMPLE_HOST: the kernel writes -1 */
    int32_t ban_off, n_banned; /* the row's banned ids: bans[ban_off .. ban_off + n_banned) */
    uint64_t seed, counter;    /* the RNG stream and position (sampling_uniform's arguments) */
} cuda_sample_row;

/* Token choice on the device following sampling_pick (sampling.h) exactly: out (n) from logits
 * (n, V) float and rows (n) (device copies), one CTA per row. Banned ids are first set to -inf
 * in logits itself. Greedy rows (temperature <= 0 or top_k 1), plain temperature rows, top_k up
 * to 2048 (with or without top_p) and top_p alone with a nucleus of up to 2048 entries give the
 * token sampling_pick gives on the banned row; any other row (mode CUDA_SAMPLE_HOST, top_k over
 * 2048, a wider nucleus) gets -1 for the caller to pick on the host. No host synchronization:
 * graph-capturable. V at most 1024 * 1024. */
int cuda_sample(int32_t *out, float *logits, const cuda_sample_row *rows, const int32_t *bans,
                int n, int V, cudaStream_t s);
enum { CUDA_SAMPLE_MAX_TOP_K = 2048, CUDA_SAMPLE_MAX_VOCAB = 1024 * 1024 };

/* cuda_sample's tokens for a step of at most CUDA_SAMPLE_SPLIT_ROWS rows, each row spread over
 * a CTA per 1024 entries (one CTA a row leaves the GPU idle while it walks the vocabulary): the
 * same operations in the same order, so the same tokens. It takes greedy and plain temperature
 * rows (cuda_sample_kind 0 and 1) and writes -1 for every other row (leaving its banned ids to
 * the host), which the caller then picks on the host; plain: whether any row is of kind 1 (else
 * the second of its two kernels is not launched, and such rows read -1). rows NULL: every row
 * greedy, as cuda_argmax, and bans unused. scratch: cuda_sample_split_scratch() bytes; count:
 * 2 * CUDA_SAMPLE_SPLIT_ROWS ints, zeros, which it leaves zero. Graph-capturable. The backend's
 * choice with cuda_backend_opts.sample_split (the worker's default). */
#define CUDA_SAMPLE_SPLIT_ROWS 8
int cuda_sample_split(int32_t *out, float *logits, const cuda_sample_row *rows, const int32_t *bans,
                      int n, int V, int plain, void *scratch, int *count, cudaStream_t s);
size_t cuda_sample_split_scratch(void);
/* The row's kind as cuda_sample branches: 0 greedy, 1 plain temperature (top_k and top_p off),
 * 2 top_k or top_p, 3 the host's (mode CUDA_SAMPLE_HOST). */
int cuda_sample_kind(const cuda_sample_row *row, int V);

/* Benchmark weights: n bf16 values mean + std * uniform(-sqrt3, sqrt3) from (seed, index). */
int cuda_fill_bf16(uint16_t *p, size_t n, uint64_t seed, float mean, float std, cudaStream_t s);
/* n bytes uniform in [lo, hi] from (seed, index) (MXFP4 codes: 0..255; scales: a narrow range). */
int cuda_fill_u8(uint8_t *p, size_t n, uint64_t seed, int lo, int hi, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
