#!/usr/bin/env bash
# bench/pieces/run.sh - on a GPU machine with PyTorch: the pieces of a 120b decode step as
# PyTorch/cuBLAS run them (torch_pieces.py) beside magneto's own per-kernel times for the same
# batch and context (cuda-bench's profiled step, divided per layer), in one run on one card.
#
#   bench/pieces/run.sh [BATCH] [CTX]        (defaults 512 628: DESIGN.md §8's reference step)
# Builds cuda-bench into ${MG_GPU_BUILD:-build-gpu} first (as worker/cuda/run-gpu.sh does).
set -uo pipefail
cd "$(dirname "$0")/../.."
BATCH=${1:-512} CTX=${2:-628}
B=${MG_GPU_BUILD:-build-gpu}
{ cmake -S . -B "$B" -DMG_SERVING=OFF -DMG_CUDA=ON -DCMAKE_BUILD_TYPE=Release &&
  cmake --build "$B" -j"$(nproc)" --target cuda-bench; } >/tmp/pieces-build.log 2>&1 ||
    { tail -20 /tmp/pieces-build.log; exit 1; }
python3 bench/pieces/torch_pieces.py --batch "$BATCH" --ctx "$CTX" | tee /tmp/pieces-torch.txt
"$B/worker/cuda/cuda-bench" --preset 120b --batches "$BATCH" --ctx "$CTX" --steps 5 --version 3 \
    --graphs 1 | tee /tmp/pieces-magneto.txt
# per layer: magneto's profiled per-step sums over 36 layers
awk -v L=36 '
  /^PIECE/ { t[$2] = $3 }
  /per-kernel ms per step/ {
    for (i = 1; i <= NF; i++) if (split($i, kv, "=") == 2) m[kv[1]] = kv[2]
  }
  END {
    printf "\n%-28s %12s %12s\n", "piece (ms)", "pytorch", "magneto"
    printf "%-28s %12.4f %12.4f\n", "attention projections/layer", t["attn_proj"], (m["qkv_gemm"] + m["o_gemm"]) / L
    printf "%-28s %12.4f %12.4f\n", "decode attention/layer", t["sdpa_avg"], m["attention"] / L
    printf "%-28s %12.4f %12.4f\n", "experts/layer (bf16 vs MXFP4)", t["experts_bf16"], (m["moe_gate_up"] + m["moe_down"]) / L
    printf "%-28s %12.4f %12.4f\n", "lm_head/step", t["lm_head"], m["lm_head"]
  }' /tmp/pieces-torch.txt /tmp/pieces-magneto.txt
