#!/usr/bin/env bash
# worker/cuda/profile-moe.sh - Nsight Compute on version 3's expert GEMMs at the seed workload's
# shape (batch 256 over 128 experts: the kernel lab's last MoE case), to name what limits them
# (worker/cuda/NOTES.md, "What limits the expert GEMMs now"). Builds cuda-check as run-gpu.sh
# does, runs its MoE group only, and profiles the first gate_up and down launches of that case.
# The lab's launch order per case: gate_up, down (checked), then 21 timed launches of each; the
# cases run 64, 16, 1, 160, 256 tokens, so the 256-token case starts after 4 x 44 launches.
#
#   OUT=/tmp/prof worker/cuda/profile-moe.sh        (reports in $OUT: ncu.txt, moe3.ncu-rep)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-logs}
B=${MG_GPU_BUILD:-build-gpu}
NCU=${NCU:-$(command -v ncu || echo /usr/local/cuda/bin/ncu)}
mkdir -p "$OUT"
{ cmake -S . -B "$B" -DMG_SERVING=OFF -DMG_CUDA=ON -DCMAKE_BUILD_TYPE=Release &&
  cmake --build "$B" -j"$(nproc)" --target cuda-check; } >"$OUT/build.log" 2>&1 ||
    { tail -20 "$OUT/build.log"; exit 1; }
"$NCU" --kernel-name regex:moe3_kernel --launch-skip "${SKIP:-176}" --launch-count 2 \
    --set full --export "$OUT/moe3" --force-overwrite \
    "$B/worker/cuda/cuda-check" --seed 7 --only moe >"$OUT/ncu.txt" 2>&1
rc=$?
"$NCU" --import "$OUT/moe3.ncu-rep" --page details >"$OUT/details.txt" 2>&1 || true
grep -E "moe3_kernel|Duration|DRAM Throughput|Memory Throughput|Compute \(SM\) Throughput|Registers Per|Achieved Occupancy|Issue Slots Busy|Warp Cycles Per Issued|Stall|No Eligible|L2 Hit Rate" \
    "$OUT/details.txt" | head -60
echo "profile-moe.sh: ncu exit $rc"
exit $rc
