#!/usr/bin/env python3
"""The pieces of a gpt-oss-120b decode step as PyTorch and cuBLAS run them on one GPU, for
comparison with magneto's kernels measured in the same run (bench/pieces/run.sh prints both).

Shapes follow the one-GPU step of cuda-bench: B decode tokens, context CTX, 36 layers (18 full,
18 sliding with a 128-token window), 64 query heads and 8 KV heads of 64, hidden 2880, 128
experts top-4 of width 2880, vocab 201,088. Random bf16 data; the median of REPS timed runs
after warm-up, CUDA events. Each line: `PIECE name ms_per_layer_or_step what`.

  python3 bench/pieces/torch_pieces.py [--batch 512] [--ctx 628] [--reps 20]
"""
import argparse

import torch
import torch.nn.functional as F

H, Q, KV, D, NH, NKV = 2880, 4096, 512, 64, 64, 8
E, TOPK, I, V, WIN = 128, 4, 2880, 201088, 128


def median_ms(fn, reps):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--ctx", type=int, default=628)
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    B, C, R = a.batch, a.ctx, a.reps
    dev, bf = "cuda", torch.bfloat16
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, batch {B}, ctx {C}")

    # attention projections of one layer: qkv (H -> Q + 2 KV) and o (Q -> H), with biases
    x = torch.randn(B, H, device=dev, dtype=bf)
    w_qkv = torch.randn(Q + 2 * KV, H, device=dev, dtype=bf) / H ** 0.5
    w_o = torch.randn(H, Q, device=dev, dtype=bf) / Q ** 0.5
    att = torch.randn(B, Q, device=dev, dtype=bf)
    ms = median_ms(lambda: (F.linear(x, w_qkv), F.linear(att, w_o)), R)
    print(f"PIECE attn_proj {ms:.4f} ms/layer qkv+o GEMMs, bf16")

    # decode attention (SDPA, GQA expanded) over the context, one full and one sliding layer
    q = torch.randn(B, NH, 1, D, device=dev, dtype=bf)
    k = torch.randn(B, NKV, C, D, device=dev, dtype=bf)
    v = torch.randn(B, NKV, C, D, device=dev, dtype=bf)
    kw, vw = k[:, :, -WIN:], v[:, :, -WIN:]

    def sdpa(kk, vv):
        return F.scaled_dot_product_attention(q, kk, vv, enable_gqa=True)

    ms_full = median_ms(lambda: sdpa(k, v), R)
    ms_win = median_ms(lambda: sdpa(kw, vw), R)
    print(f"PIECE sdpa_full {ms_full:.4f} ms/layer context {C} (no sinks)")
    print(f"PIECE sdpa_window {ms_win:.4f} ms/layer window {WIN} (no sinks)")
    print(f"PIECE sdpa_avg {(ms_full + ms_win) / 2:.4f} ms/layer mean of the two layer kinds")

    # experts: B * 4 slots spread evenly over 128 experts, bf16 weights (4x the bytes of MXFP4)
    t = max(1, B * TOPK // E)
    xe = torch.randn(E, t, H, device=dev, dtype=bf)
    w1 = torch.randn(E, H, 2 * I, device=dev, dtype=bf) / H ** 0.5
    w2 = torch.randn(E, I, H, device=dev, dtype=bf) / I ** 0.5

    def experts():
        h = torch.bmm(xe, w1)
        gate, up = h[..., ::2], h[..., 1::2]
        act = gate.clamp(max=7.0) * torch.sigmoid(1.702 * gate.clamp(max=7.0)) * (up.clamp(-7, 7) + 1)
        return torch.bmm(act, w2)

    ms = median_ms(experts, R)
    gb = E * (H * 2 * I + I * H) * 2 / 1e9
    print(f"PIECE experts_bf16 {ms:.4f} ms/layer {E} experts x {t} tokens, bmm + SwiGLU + bmm, "
          f"{gb / ms:.2f} TB/s of bf16 weights")

    # lm_head over the batch's rows
    xl = torch.randn(B, H, device=dev, dtype=bf)
    wl = torch.randn(V, H, device=dev, dtype=bf) / H ** 0.5
    ms = median_ms(lambda: F.linear(xl, wl), R)
    print(f"PIECE lm_head {ms:.4f} ms/step {B} x {H} x {V}")

    # copy bandwidth
    src = torch.empty(1 << 30, device=dev, dtype=torch.uint8)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), R)
    print(f"PIECE copy {2 * (1 << 30) / ms / 1e9:.3f} TB/s (read + write of 1 GiB)")


if __name__ == "__main__":
    main()
