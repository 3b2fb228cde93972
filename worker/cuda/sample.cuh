/* sample.cuh - greedy token choice on the device, and the fills behind --random-weights.
 * CPU twin of the arg-max: sampling_argmax in worker/engine/sampling.c. */
#pragma once

#include "common.cuh"

/* ---- kernels ---- */

/* (v, i) over (bv, bi): greater, or equal and lower index; NaN compares false everywhere, so it
 * never wins. */
__device__ __forceinline__ void samp_better(float &bv, int &bi, float v, int i) {
    if (v > bv || (v == bv && i < bi)) bv = v, bi = i;
}

/* The CTA's best (v, i) by samp_better, to every thread. */
__device__ __forceinline__ void samp_block_best(float &bv, int &bi) {
    __shared__ float sv[32];
    __shared__ int si[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        samp_better(bv, bi, __shfl_xor_sync(0xffffffffu, bv, o),
                    __shfl_xor_sync(0xffffffffu, bi, o));
    __syncthreads(); /* sv, si free from an earlier call */
    if (lane == 0) sv[warp] = bv, si[warp] = bi;
    __syncthreads();
    bv = lane < nw ? sv[lane] : -INFINITY;
    bi = lane < nw ? si[lane] : 0x7fffffff;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        samp_better(bv, bi, __shfl_xor_sync(0xffffffffu, bv, o),
                    __shfl_xor_sync(0xffffffffu, bi, o));
}

/* One CTA per row; (value, index) pairs reduced with samp_better. */
__global__ void argmax_kernel(int32_t *out, const float *logits, int V) {
    const float *l = logits + (size_t)blockIdx.x * V;
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float v = l[i];
        if (v > bv) bv = v, bi = i; /* ascending i: the first of equals stays */
    }
    samp_block_best(bv, bi);
    if (threadIdx.x == 0) out[blockIdx.x] = bv == -INFINITY ? 0 : bi;
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__global__ void fill_bf16_kernel(uint16_t *p, size_t n, uint64_t seed, float mean, float std) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float u =
            (float)(mix64(seed + 0x9E3779B97F4A7C15ull * (i + 1)) >> 40) * (1.0f / 16777216.0f);
        p[i] = f2bf16(mean + std * (2.0f * u - 1.0f) * 1.7320508f);
    }
}

__global__ void fill_u8_kernel(uint8_t *p, size_t n, uint64_t seed, int lo, int span) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        p[i] =
            (uint8_t)(lo + (int)(mix64(seed + 0x9E3779B97F4A7C15ull * (i + 1)) % (uint64_t)span));
}

/* ---- launchers ---- */

extern "C" int cuda_argmax(int32_t *out, const float *logits, int n, int V, cudaStream_t s) {
    if (n <= 0) return 0;
    argmax_kernel<<<n, 1024, 0, s>>>(out, logits, V);
    return launch_status();
}

extern "C" int cuda_fill_bf16(uint16_t *p, size_t n, uint64_t seed, float mean, float std,
                              cudaStream_t s) {
    if (n == 0) return 0;
    fill_bf16_kernel<<<4096, 256, 0, s>>>(p, n, seed, mean, std);
    return launch_status();
}

extern "C" int cuda_fill_u8(uint8_t *p, size_t n, uint64_t seed, int lo, int hi, cudaStream_t s) {
    if (n == 0) return 0;
    if (hi < lo) return (int)cudaErrorInvalidValue;
    fill_u8_kernel<<<4096, 256, 0, s>>>(p, n, seed, lo, hi - lo + 1);
    return launch_status();
}

/* ---- sampling on the device: sampling_pick's rules, bit for bit ----
 *
 * One CTA of SAMP_THREADS per row. Every float operation that the host does is done here with
 * the same rounding (the _rn intrinsics keep nvcc from fusing a multiply and an add, which the
 * host's x86-64 build never does), and every sum the host forms in a given order is formed in
 * the same order:
 *   - the weights exp_neg((l - lmax) * ft) are sampling.c's polynomial, op for op;
 *   - a whole row's normalizer is float sums over 1024-entry blocks in eight lanes (lane k takes
 *     entries b0 + 8j + k in j order), combined ((0+1)+(2+3))+((4+5)+(6+7)), then a double sum
 *     over the blocks in order, as sampling.c's row_weights;
 *   - candidate lists (top_k, the nucleus) are the best entries by (logit desc, id asc), found by
 *     a radix select over the float bits (no sort of the vocabulary) and then sorted in shared
 *     memory; their double running sums are one thread's sequential loop, as the host's.
 * So for the same logits the device draws the same token. A top_p-alone row whose nucleus
 * holds more than SAMP_CAND entries writes -1: the caller takes it through the host. */

#define SAMP_THREADS    1024
#define SAMP_CAND       2048
#define SAMP_MAX_BLOCKS 1024 /* V up to 1024 * 1024 */

__device__ __forceinline__ uint64_t samp_mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* sampling_uniform(seed, counter) */
__device__ __forceinline__ double samp_uniform(uint64_t seed, uint64_t counter) {
    uint64_t r = samp_mix64(seed ^ samp_mix64(counter ^ 0xD1B54A32D192ED03ull));
    return (double)(r >> 11) * (1.0 / 9007199254740992.0);
}

/* sampling.c's exp_neg, operation for operation. */
__device__ __forceinline__ float samp_exp_neg(float x) {
    x = x >= -87.0f ? x : -87.0f;
    float t = __fmul_rn(x, 1.44269504088896341f);
    int n = __float2int_rz(t);
    n -= t < (float)n;
    float f = __fsub_rn(t, (float)n);
    float p = 1.5252733804e-5f;
    p = __fadd_rn(__fmul_rn(p, f), 1.5403530393e-4f);
    p = __fadd_rn(__fmul_rn(p, f), 1.3333558146e-3f);
    p = __fadd_rn(__fmul_rn(p, f), 9.6181291076e-3f);
    p = __fadd_rn(__fmul_rn(p, f), 5.5504108665e-2f);
    p = __fadd_rn(__fmul_rn(p, f), 2.4022650696e-1f);
    p = __fadd_rn(__fmul_rn(p, f), 6.9314718056e-1f);
    p = __fadd_rn(__fmul_rn(p, f), 1.0f);
    float r = __fmul_rn(p, __int_as_float((n + 127) << 23));
    return x > -87.0f ? r : 0.0f;
}

__device__ __forceinline__ float samp_w(float l, float lmax, float ft) {
    return samp_exp_neg(__fmul_rn(__fsub_rn(l, lmax), ft));
}

/* Order-preserving key of a logit: larger key, larger value; -0 as +0 (the host compares
 * values, to which they are equal); 0 for NaN, which no real value maps to. */
__device__ __forceinline__ uint32_t samp_key(float f) {
    if (f != f) return 0;
    if (f == 0.0f) f = 0.0f;
    uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float samp_val(uint32_t k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
/* Candidate: key high, then ~id, so that a larger composite is a better entry (lower id on
 * equal logits). Real keys are >= 0x007fffff (-inf), so 0 pads below every entry. */
__device__ __forceinline__ uint64_t samp_comp(uint32_t key, int i) {
    return ((uint64_t)key << 32) | (uint32_t) ~(uint32_t)i;
}
__device__ __forceinline__ int samp_id(uint64_t c) {
    return (int)~(uint32_t)c;
}

struct samp_smem {
    uint64_t cand[SAMP_CAND];
    float w[SAMP_CAND];
    int hist[2048];
    float sums[SAMP_THREADS];
    float bsum[SAMP_MAX_BLOCKS];
    float redf[32];
    int redi[32];
    int digit, rem, eq, cnt, tok, flag, b;
    double z, c, x;
};

/* Largest non-NaN entry of the row (-inf when none), to every thread. */
__device__ float samp_row_max(const float *l, int V, samp_smem &S) {
    float m = -INFINITY;
    for (int i = threadIdx.x; i < V; i += SAMP_THREADS) {
        float v = l[i];
        m = v > m ? v : m;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float v = __shfl_xor_sync(0xffffffffu, m, o);
        m = v > m ? v : m;
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) S.redf[threadIdx.x >> 5] = m;
    __syncthreads();
    m = S.redf[threadIdx.x & 31];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float v = __shfl_xor_sync(0xffffffffu, m, o);
        m = v > m ? v : m;
    }
    return m;
}

/* First index holding m (V when none), to every thread. */
__device__ int samp_first(const float *l, int V, float m, samp_smem &S) {
    int best = V;
    for (int i = threadIdx.x; i < V; i += SAMP_THREADS)
        if (l[i] == m) {
            best = i;
            break;
        }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) best = min(best, __shfl_xor_sync(0xffffffffu, best, o));
    __syncthreads();
    if ((threadIdx.x & 31) == 0) S.redi[threadIdx.x >> 5] = best;
    __syncthreads();
    best = S.redi[threadIdx.x & 31];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) best = min(best, __shfl_xor_sync(0xffffffffu, best, o));
    return best;
}

/* sampling_argmax */
__device__ int samp_argmax(const float *l, int V, samp_smem &S) {
    float m = samp_row_max(l, V, S);
    if (m == -INFINITY) return 0;
    int i = samp_first(l, V, m, S);
    return i < V ? i : 0;
}

/* row_weights: S.bsum[b] the float sum of block b, S.z the double total. */
__device__ void samp_row_weights(const float *l, int V, float lmax, float ft, samp_smem &S) {
    int nb = (V + 1023) / 1024, t = threadIdx.x;
    for (int r0 = 0; r0 < nb; r0 += SAMP_THREADS / 8) {
        int b = r0 + (t >> 3), k = t & 7;
        float acc = 0.0f;
        if (b < nb) {
            int b0 = b * 1024, e = min(b0 + 1024, V), base = b0;
            for (; base + 8 <= e; base += 8) acc = __fadd_rn(acc, samp_w(l[base + k], lmax, ft));
            if (k == 0)
                for (; base < e; base++) acc = __fadd_rn(acc, samp_w(l[base], lmax, ft));
        }
        S.sums[t] = acc;
        __syncthreads();
        if (t < SAMP_THREADS / 8 && r0 + t < nb) {
            const float *a = S.sums + 8 * t;
            S.bsum[r0 + t] = __fadd_rn(__fadd_rn(__fadd_rn(a[0], a[1]), __fadd_rn(a[2], a[3])),
                                       __fadd_rn(__fadd_rn(a[4], a[5]), __fadd_rn(a[6], a[7])));
        }
        __syncthreads();
    }
    if (t == 0) {
        double z = 0.0;
        for (int b = 0; b < nb; b++) z += S.bsum[b];
        S.z = z;
    }
    __syncthreads();
}

/* One radix-select digit: histogram of bits [shift, shift + bits) of the valid keys whose bits
 * above match prefix/mask; then the digit holding the rem-th largest (rem < 0: the
 * min(-rem, counted)-th). Sets S.digit, S.rem (the rank inside that digit), S.eq (entries with
 * that digit). Returns the number of keys counted. */
__device__ int samp_digit(const float *l, int V, uint32_t prefix, uint32_t mask, int shift,
                          int bits, int rem, samp_smem &S) {
    int nbins = 1 << bits, t = threadIdx.x, lane = t & 31;
    for (int i = t; i < nbins; i += SAMP_THREADS) S.hist[i] = 0;
    __syncthreads();
    for (int base = 0; base < V; base += SAMP_THREADS) {
        int i = base + t;
        uint32_t key = i < V ? samp_key(l[i]) : 0;
        bool ok = key != 0 && (key & mask) == prefix;
        if (!__any_sync(0xffffffffu, ok)) continue;
        int d = ok ? (int)((key >> shift) & (uint32_t)(nbins - 1)) : -1;
        unsigned peers = __match_any_sync(0xffffffffu, d);
        if (ok && lane == __ffs(peers) - 1) atomicAdd(&S.hist[d], __popc(peers));
    }
    __syncthreads();
    if (t < 32) {
        /* lane L sums the L-th run of per bins from the top; a scan over lanes finds the run
         * where the count from the top reaches rem, and that lane walks its bins. */
        int per = nbins / 32, hi = nbins - 1 - lane * per, s = 0;
        for (int d = hi; d > hi - per; d--) s += S.hist[d];
        int incl = s;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            int v = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += v;
        }
        int total = __shfl_sync(0xffffffffu, incl, 31);
        if (rem < 0) rem = min(-rem, total);
        unsigned hit = rem > 0 ? __ballot_sync(0xffffffffu, incl >= rem) : 0u;
        if (hit && lane == __ffs(hit) - 1) {
            int cum = incl - s;
            for (int d = hi; d > hi - per; d--) {
                if (cum + S.hist[d] >= rem) {
                    S.digit = d, S.rem = rem - cum, S.eq = S.hist[d];
                    break;
                }
                cum += S.hist[d];
            }
        }
        if (lane == 0) S.cnt = total;
    }
    __syncthreads();
    return S.cnt;
}

/* The min(cap, valid) best entries of the row, best first, in S.cand; returns their number and
 * sets *n_valid to the row's non-NaN count. cap <= SAMP_CAND. */
__device__ int samp_select(const float *l, int V, int cap, int *n_valid, samp_smem &S) {
    int t = threadIdx.x;
    const int shifts[3] = {21, 10, 0}, nbits[3] = {11, 11, 10};
    uint32_t prefix = 0, mask = 0;
    int rem = -cap;
    for (int p = 0; p < 3; p++) {
        int counted = samp_digit(l, V, prefix, mask, shifts[p], nbits[p], rem, S);
        if (p == 0) {
            *n_valid = counted;
            if (counted == 0) return 0;
        }
        uint32_t dm = ((1u << nbits[p]) - 1u) << shifts[p];
        prefix |= (uint32_t)S.digit << shifts[p];
        mask |= dm;
        rem = S.rem;
    }
    uint32_t kth = prefix;
    int n = min(cap, *n_valid), take_eq = rem, n_gt = n - rem;
    bool all_eq = S.eq == take_eq;
    __syncthreads();
    if (t == 0) S.cnt = 0;
    __syncthreads();
    for (int i = t; i < V; i += SAMP_THREADS) {
        uint32_t key = samp_key(l[i]);
        if (key > kth || (all_eq && key == kth)) S.cand[atomicAdd(&S.cnt, 1)] = samp_comp(key, i);
    }
    if (!all_eq) {
        /* more entries share the k-th logit than fit: the lowest ids, in id order */
        int lane = t & 31, warp = t >> 5, done = 0;
        for (int base = 0; base < V && done < take_eq; base += SAMP_THREADS) {
            int i = base + t;
            bool f = i < V && samp_key(l[i]) == kth;
            unsigned bal = __ballot_sync(0xffffffffu, f);
            __syncthreads();
            if (lane == 0) S.redi[warp] = __popc(bal);
            __syncthreads();
            int before = 0, total = 0;
            for (int w = 0; w < SAMP_THREADS / 32; w++) {
                int c = S.redi[w];
                before += w < warp ? c : 0;
                total += c;
            }
            int rank = done + before + __popc(bal & ((1u << lane) - 1u));
            if (f && rank < take_eq) S.cand[n_gt + rank] = samp_comp(kth, i);
            done += total;
        }
    }
    /* bitonic sort, descending, over a power of two padded with 0 */
    int P = 2;
    while (P < n) P <<= 1;
    __syncthreads();
    for (int i = n + t; i < P; i += SAMP_THREADS) S.cand[i] = 0;
    __syncthreads();
    for (int k = 2; k <= P; k <<= 1)
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int q = t; q < P / 2; q += SAMP_THREADS) {
                int i = (q / j) * 2 * j + (q % j), m = i + j;
                uint64_t a = S.cand[i], b = S.cand[m];
                bool desc = (i & k) == 0;
                if (desc ? a < b : a > b) S.cand[i] = b, S.cand[m] = a;
            }
            __syncthreads();
        }
    return n;
}

/* sampling.c's draw over S.cand[0..n) with weights S.w, normalizer z; one thread. */
__device__ int samp_draw(int n, double z, float top_p, double u, const samp_smem &S) {
    if (n <= 0) return 0;
    int m = n;
    double kept = 0.0;
    if (top_p < 1.0f) {
        double want = (double)top_p * z;
        for (m = 0; m < n;) {
            kept += S.w[m++];
            if (kept >= want) break;
        }
    } else {
        for (int i = 0; i < n; i++) kept += S.w[i];
    }
    if (!(kept > 0.0) || !isfinite(kept)) return samp_id(S.cand[0]);
    double x = u * kept, c = 0.0;
    for (int i = 0; i < m; i++) {
        c += S.w[i];
        if (x < c) return samp_id(S.cand[i]);
    }
    return samp_id(S.cand[m - 1]);
}

__global__ void __launch_bounds__(SAMP_THREADS, 1)
    sample_kernel(int32_t *out, float *logits, const cuda_sample_row *rows, const int32_t *bans,
                  int V) {
    __shared__ samp_smem S;
    const cuda_sample_row p = rows[blockIdx.x];
    float *l = logits + (size_t)blockIdx.x * V;
    int t = threadIdx.x;
    if (p.mode != CUDA_SAMPLE_DEVICE) {
        if (t == 0) out[blockIdx.x] = -1;
        return;
    }
    /* banned ids weigh nothing: -inf in the row itself, as the scheduler does on the host */
    for (int j = t; j < p.n_banned; j += SAMP_THREADS) {
        int id = bans[p.ban_off + j];
        if (id >= 0 && id < V) l[id] = -INFINITY;
    }
    __syncthreads();
    int tok;
    if (p.temperature <= 0.0f || p.top_k == 1) {
        tok = samp_argmax(l, V, S);
        if (t == 0) out[blockIdx.x] = tok;
        return;
    }
    float ft = (float)(1.0 / (double)p.temperature);
    float top_p = (p.top_p > 0.0f && p.top_p < 1.0f) ? p.top_p : 1.0f;
    double u = samp_uniform(p.seed, p.counter);
    int k = (p.top_k > 0 && p.top_k < V) ? p.top_k : V;

    if (k < V) {
        /* top_k, then top_p inside the k */
        if (k > SAMP_CAND) {
            if (t == 0) out[blockIdx.x] = -1;
            return;
        }
        int valid, n = samp_select(l, V, k, &valid, S);
        if (n == 0) {
            if (t == 0) out[blockIdx.x] = 0;
            return;
        }
        float lmax = samp_val((uint32_t)(S.cand[0] >> 32));
        for (int i = t; i < n; i += SAMP_THREADS)
            S.w[i] = samp_w(samp_val((uint32_t)(S.cand[i] >> 32)), lmax, ft);
        __syncthreads();
        if (t == 0) {
            double z = 0.0;
            for (int i = 0; i < n; i++) z += S.w[i];
            out[blockIdx.x] = samp_draw(n, z, top_p, u, S);
        }
        return;
    }

    float lmax = samp_row_max(l, V, S);
    if (lmax == -INFINITY) {
        if (t == 0) out[blockIdx.x] = 0;
        return;
    }
    samp_row_weights(l, V, lmax, ft, S);
    double z = S.z;

    if (top_p >= 1.0f) {
        /* plain temperature sampling: the block holding the draw, then a scan inside it */
        int nb = (V + 1023) / 1024;
        if (t == 0) {
            S.flag = 0;
            if (!(z > 0.0) || !isfinite(z)) {
                S.flag = 1; /* the host falls back to the arg-max */
            } else {
                double x = u * z, c = 0.0;
                int b = 0;
                for (; b < nb - 1 && c + S.bsum[b] <= x; b++) c += S.bsum[b];
                S.b = b, S.c = c, S.x = x;
            }
        }
        __syncthreads();
        if (!S.flag) {
            int b0 = S.b * 1024, e = min(b0 + 1024, V);
            for (int i = b0 + t; i < e; i += SAMP_THREADS) S.w[i - b0] = samp_w(l[i], lmax, ft);
            __syncthreads();
            if (t == 0) {
                double x = S.x, c = S.c;
                int last = -1;
                S.tok = -1;
                for (int i = b0; i < e; i++) {
                    float w = S.w[i - b0];
                    if (w <= 0.0f) continue;
                    c += w;
                    last = i;
                    if (x < c) {
                        S.tok = i;
                        break;
                    }
                }
                if (S.tok < 0) {
                    if (last >= 0)
                        S.tok = last;
                    else
                        S.flag = 1;
                }
            }
            __syncthreads();
        }
        if (S.flag) {
            tok = samp_argmax(l, V, S);
            if (t == 0) out[blockIdx.x] = tok;
        } else if (t == 0) {
            out[blockIdx.x] = S.tok;
        }
        return;
    }

    /* top_p alone: the normalizer is over the whole row; the nucleus is the shortest best-first
     * prefix holding top_p of it, found among the SAMP_CAND best */
    int valid, n = samp_select(l, V, SAMP_CAND, &valid, S);
    for (int i = t; i < n; i += SAMP_THREADS)
        S.w[i] = samp_w(samp_val((uint32_t)(S.cand[i] >> 32)), lmax, ft);
    __syncthreads();
    if (t == 0) {
        double want = (double)top_p * z, kept = 0.0;
        for (int i = 0; i < n && kept < want; i++) kept += S.w[i];
        if (kept >= want || n == valid)
            out[blockIdx.x] = samp_draw(n, z, top_p, u, S);
        else
            out[blockIdx.x] = -1; /* a nucleus wider than SAMP_CAND: the host's */
    }
}

extern "C" int cuda_sample(int32_t *out, float *logits, const cuda_sample_row *rows,
                           const int32_t *bans, int n, int V, cudaStream_t s) {
    if (n <= 0) return 0;
    if (V < 1 || V > SAMP_MAX_BLOCKS * 1024) return (int)cudaErrorInvalidValue;
    sample_kernel<<<n, SAMP_THREADS, 0, s>>>(out, logits, rows, bans, V);
    return launch_status();
}

/* ---- a few rows, each spread over many CTAs (cuda_sample_split) ----
 *
 * sample_kernel gives a row one CTA, which at one or two rows leaves the GPU idle while that CTA
 * walks the whole vocabulary (201,088 entries) one L2 round trip at a time: twice for a greedy
 * row (the max, then its first index), twice more for a sampled one (the max, the blocks' sums).
 * Here CTA b of a row takes its 1024-entry block b (the blocks of row_weights) in two kernels:
 *   1. the banned ids of its block set to -inf, then the block's largest entry and the first
 *      index holding it (argmax's rule); a greedy row's last CTA takes the row's from those;
 *   2. (sampled rows) the row's max from step 1's partials, then the block's weights and its float
 *      sum in row_weights' eight lanes and order; the row's last CTA sums the blocks in double in
 *      order, finds the draw's block and walks it as sample_kernel does.
 * Each value is formed by the same operations in the same order as sample_kernel's, so the
 * tokens are the same. Rows of other kinds get -1 (cuda_sample_kind says which are taken). */
enum { SAMP_SPLIT_THREADS = 256 }; /* four entries of a block a thread */

struct samp_part {
    float m; /* the block's largest entry (-inf when none) */
    int i;   /* the first index holding it (0x7fffffff when none) */
};

/* 0 greedy, 1 plain temperature, 2 another kind on the device (top_k, top_p), 3 the host's; as
 * sample_kernel branches. */
__host__ __device__ static inline int samp_kind(const cuda_sample_row &p, int V) {
    if (p.mode != CUDA_SAMPLE_DEVICE) return 3;
    if (p.temperature <= 0.0f || p.top_k == 1) return 0;
    bool all_k = !(p.top_k > 0 && p.top_k < V);
    bool all_p = !(p.top_p > 0.0f && p.top_p < 1.0f);
    return all_k && all_p ? 1 : 2;
}

/* The row's (max, first index) from its nb partials (written by other CTAs), to every thread. */
__device__ __forceinline__ void samp_parts_best(const samp_part *pr, int nb, float &bv, int &bi) {
    bv = -INFINITY, bi = 0x7fffffff;
    for (int j = threadIdx.x; j < nb; j += blockDim.x)
        samp_better(bv, bi, __ldcg(&pr[j].m), __ldcg(&pr[j].i));
    samp_block_best(bv, bi);
}

/* Step 1: grid (blocks of the row, rows). rows NULL: every row greedy (cuda_argmax). */
__global__ void __launch_bounds__(SAMP_SPLIT_THREADS)
    samp_split_max_kernel(int32_t *out, float *logits, const cuda_sample_row *rows,
                          const int32_t *bans, int V, samp_part *part, int *count) {
    int b = blockIdx.x, r = blockIdx.y, nb = gridDim.x, t = threadIdx.x;
    float *l = logits + (size_t)r * V;
    int kind = 0, b0 = b * 1024, e = min(b0 + 1024, V);
    if (rows) {
        const cuda_sample_row p = rows[r];
        kind = samp_kind(p, V);
        if (b == 0 && t == 0 && kind >= 1) out[r] = -1; /* a plain row's: step 2 overwrites it */
        if (kind >= 2) return;
        for (int j = t; j < p.n_banned; j += SAMP_SPLIT_THREADS) {
            int id = bans[p.ban_off + j];
            if (id >= b0 && id < e) l[id] = -INFINITY;
        }
        __syncthreads(); /* the CTA's own writes, seen by its loads below */
    }
    float v[4], bv = -INFINITY;
    int bi = 0x7fffffff;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        int i = b0 + 4 * t + k;
        v[k] = i < e ? l[i] : -INFINITY;
    }
#pragma unroll
    for (int k = 0; k < 4; k++)
        if (v[k] > bv) bv = v[k], bi = b0 + 4 * t + k; /* ascending: the first of equals stays */
    samp_block_best(bv, bi);
    samp_part *pr = part + (size_t)r * SAMP_MAX_BLOCKS;
    if (t == 0) pr[b] = samp_part{bv, bi};
    if (kind != 0 || !last_cta(&count[r], nb)) return;
    samp_parts_best(pr, nb, bv, bi);
    if (t == 0) {
        out[r] = bv == -INFINITY ? 0 : bi;
        count[r] = 0;
    }
}

/* Step 2: grid (blocks of the row, rows); only plain temperature rows work. */
__global__ void __launch_bounds__(SAMP_SPLIT_THREADS)
    samp_split_draw_kernel(int32_t *out, const float *logits, const cuda_sample_row *rows, int V,
                           const samp_part *part, float *bsum, int *count) {
    __shared__ float w[1024];
    __shared__ float sums[8];
    __shared__ int tok_s, flag_s;
    int b = blockIdx.x, r = blockIdx.y, nb = gridDim.x, n = gridDim.y, t = threadIdx.x;
    const cuda_sample_row p = rows[r];
    if (samp_kind(p, V) != 1) return;
    const float *l = logits + (size_t)r * V;
    const samp_part *pr = part + (size_t)r * SAMP_MAX_BLOCKS;
    float *bs = bsum + (size_t)r * SAMP_MAX_BLOCKS;
    float lmax;
    int imax;
    samp_parts_best(pr, nb, lmax, imax);
    if (lmax == -INFINITY) { /* every CTA of the row sees it */
        if (b == 0 && t == 0) out[r] = 0;
        return;
    }
    float ft = (float)(1.0 / (double)p.temperature);
    int b0 = b * 1024, len = min(b0 + 1024, V) - b0;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        int i = 4 * t + k;
        if (i < len) w[i] = samp_w(l[b0 + i], lmax, ft);
    }
    __syncthreads();
    if (t < 8) { /* row_weights' lane t: entries t, t + 8, ... of the block, then lane 0 the rest */
        float acc = 0.0f;
        int base = 0;
#pragma unroll 16
        for (; base + 8 <= len; base += 8) acc = __fadd_rn(acc, w[base + t]);
        if (t == 0)
            for (; base < len; base++) acc = __fadd_rn(acc, w[base]);
        sums[t] = acc;
    }
    __syncthreads();
    if (t == 0)
        bs[b] = __fadd_rn(__fadd_rn(__fadd_rn(sums[0], sums[1]), __fadd_rn(sums[2], sums[3])),
                          __fadd_rn(__fadd_rn(sums[4], sums[5]), __fadd_rn(sums[6], sums[7])));
    if (!last_cta(&count[n + r], nb)) return;
    /* the row's last CTA: sample_kernel's draw over the blocks' sums (from L2 into w first) */
    for (int j = t; j < nb; j += SAMP_SPLIT_THREADS) w[j] = __ldcg(bs + j);
    __syncthreads();
    __shared__ double x_s, c_s;
    __shared__ int b_s;
    if (t == 0) {
        double z = 0.0;
        for (int j = 0; j < nb; j++) z += w[j];
        flag_s = 0;
        if (!(z > 0.0) || !isfinite(z)) {
            flag_s = 1; /* the arg-max, as sample_kernel falls back to */
        } else {
            double x = samp_uniform(p.seed, p.counter) * z, c = 0.0;
            int j = 0;
            for (; j < nb - 1 && c + w[j] <= x; j++) c += w[j];
            b_s = j, c_s = c, x_s = x;
        }
    }
    __syncthreads();
    if (!flag_s) {
        int c0 = b_s * 1024, ce = min(c0 + 1024, V);
        for (int i = c0 + t; i < ce; i += SAMP_SPLIT_THREADS) w[i - c0] = samp_w(l[i], lmax, ft);
        __syncthreads();
        if (t == 0) {
            double x = x_s, c = c_s;
            int last = -1;
            tok_s = -1;
            for (int i = c0; i < ce; i++) {
                float wi = w[i - c0];
                if (wi <= 0.0f) continue;
                c += wi;
                last = i;
                if (x < c) {
                    tok_s = i;
                    break;
                }
            }
            if (tok_s < 0) {
                if (last >= 0)
                    tok_s = last;
                else
                    flag_s = 1;
            }
        }
        __syncthreads();
    }
    if (t == 0) {
        out[r] = flag_s ? imax : tok_s; /* lmax is finite: imax is a real index */
        count[n + r] = 0;
    }
}

extern "C" int cuda_sample_kind(const cuda_sample_row *row, int V) {
    return samp_kind(*row, V);
}

extern "C" size_t cuda_sample_split_scratch(void) {
    return (size_t)CUDA_SAMPLE_SPLIT_ROWS * SAMP_MAX_BLOCKS * (sizeof(samp_part) + sizeof(float));
}

extern "C" int cuda_sample_split(int32_t *out, float *logits, const cuda_sample_row *rows,
                                 const int32_t *bans, int n, int V, int plain, void *scratch,
                                 int *count, cudaStream_t s) {
    if (n <= 0) return 0;
    if (n > CUDA_SAMPLE_SPLIT_ROWS || V < 1 || V > SAMP_MAX_BLOCKS * 1024)
        return (int)cudaErrorInvalidValue;
    samp_part *part = (samp_part *)scratch;
    float *bsum = (float *)(part + (size_t)CUDA_SAMPLE_SPLIT_ROWS * SAMP_MAX_BLOCKS);
    dim3 grid((V + 1023) / 1024, n);
    samp_split_max_kernel<<<grid, SAMP_SPLIT_THREADS, 0, s>>>(out, logits, rows, bans, V, part,
                                                              count);
    int e = launch_status();
    if (e || !rows || !plain) return e;
    samp_split_draw_kernel<<<grid, SAMP_SPLIT_THREADS, 0, s>>>(out, logits, rows, V, part, bsum,
                                                               count);
    return launch_status();
}
