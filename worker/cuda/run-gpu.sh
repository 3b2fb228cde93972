#!/usr/bin/env bash
# worker/cuda/run-gpu.sh - everything the CUDA backend needs a GPU for, in one go: build the
# engine core with CUDA (no serving stack), run the host-side unit test, the kernel lab
# (cuda-check: every kernel group against its CPU twin at the 120b shapes, poisoned outputs)
# and the whole-model logits against the CPU backend on the tiny preset, then the decode-step
# benchmark at the 120b shape with random weights (cuda-bench) for kernel versions 7 (the
# worker's: six kernels a layer for steps of up to 4 tokens) and 6 (nine) with CUDA graphs
# (MG_BENCH_RUNS="VERSION:GRAPHS ..." to choose others), then both at 2 and 4 tokens, and
# version 7 at 1 to 4 tokens with its expert kernels unsplit (--split 0), and at one token with
# o_proj a warp a row and q/k/v in waves (--o-split 1 --persist 0), and with the previous
# one-token forms (--persist 2 --trigger 0; also through the whole-model check; the token
# choice a CTA a row, --sample-split 0, at temperatures 0 and 1; gate_up's token row from L2,
# --rows 0, also through the whole-model check; the cluster router's top-k in rounds instead
# of by rank, --trigger 3), and with forms not yet the default (the rank top-k four threads
# an expert, --trigger 51; down's act rows staged by each warp for itself, --rows 5; down a CTA
# per 8 rows, --rows 17; the small rows read after the waits by bulk copies, --bulk 63; all
# also through the whole-model check), without the expert kernels' arithmetic (--no-math 3:
# what the loads hide of it) and with gate_up's first wave half late (--no-math 4). Logs go
# to $OUT (or ./gpu-logs); the summary prints last. Exit status: non-zero when the build or any
# check fails.
#
#   worker/cuda/run-gpu.sh            (from any directory)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-logs}
mkdir -p "$OUT"
B=${MG_GPU_BUILD:-build-gpu}
J=$(nproc)
status=0
# mg_base includes the header-only XXH3 (xxhash.h); a GPU machine without the package builds
# with the copy deploy/gpu/carry.sh puts in .carry/include (carry .carry along).

nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version,clocks.max.sm --format=csv \
    >"$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
echo "== build"
if ! { cmake -S . -B "$B" -DMG_SERVING=OFF -DMG_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
        -DMG_CUDA_VERBOSE=ON &&
       cmake --build "$B" -j"$J" --target cuda-check cuda-bench mg-mkckpt test_cuda_plan; } \
        >"$OUT/build.log" 2>&1; then
    tail -40 "$OUT/build.log"
    echo "BUILD FAILED"
    exit 1
fi
grep -A3 "Compiling entry function.*for 'sm_90a'" "$OUT/build.log" >"$OUT/ptxas.txt" || true

echo "== unit test"
"$B/tests/test_cuda_plan" 2>&1 | tail -3 || status=1

echo "== kernel lab and whole model (tiny)"
rm -rf "$B/ckpt-tiny"
"$B/tools/mkckpt/mg-mkckpt" --preset tiny --out "$B/ckpt-tiny" >"$OUT/mkckpt.log" 2>&1 ||
    { tail "$OUT/mkckpt.log"; status=1; }
MG_CHECK_KERNELS=1 timeout 150 "$B/worker/cuda/cuda-check" --model "$B/ckpt-tiny" \
    >"$OUT/check.log" 2>&1 || status=1
cat "$OUT/check.log"
# whole_tiny NAME LABEL ARGS...: the whole tiny model with version 7 and ARGS, its verdicts
whole_tiny() {
    local log="$OUT/check-$1.log"
    echo "== whole model (tiny), version 7: $2"
    shift 2
    timeout 100 "$B/worker/cuda/cuda-check" --model "$B/ckpt-tiny" --versions 7 "$@" >"$log" 2>&1 ||
        status=1
    grep -E "FAIL|passed" "$log"
}
whole_tiny p2-t0 "q/k/v looping, o_proj's late trigger, one-CTA top-k" --persist 2 --trigger 0
whole_tiny row-l2 "gate_up's token row from L2" --rows 0
whole_tiny t51-r5 "rank top-k four threads an expert, down's rows a warp's" --trigger 51 --rows 5
whole_tiny bulk-half "small rows by bulk copies, down 8 rows a CTA" --bulk 63 --rows 17

echo "== decode-step benchmark, 120b shape, random weights, kernel versions 7 and 6 with graphs"
for run in ${MG_BENCH_RUNS:-7:1 6:1}; do
    set -- ${run%:*} ${run#*:}
    log="$OUT/bench-v$1-g$2.log"
    timeout 120 "$B/worker/cuda/cuda-bench" --preset 120b --batches 1,64,256,512 --ctx 1024 \
        --steps 10 --version "$1" --graphs "$2" >"$log" 2>&1 || status=1
    cat "$log"
done

echo "== versions 7 and 6 at 2 and 4 tokens"
for v in 7 6; do
    log="$OUT/bench-small-v$v.log"
    timeout 60 "$B/worker/cuda/cuda-bench" --preset 120b --batches 2,4 --ctx 1024 --steps 10 \
        --version "$v" --graphs 1 >"$log" 2>&1 || status=1
    grep RESULT "$log" | sed "s/^/small steps: /"
done
log="$OUT/bench-small-v7-unsplit.log"
timeout 60 "$B/worker/cuda/cuda-bench" --preset 120b --batches 1,2,4 --ctx 1024 --steps 10 \
    --version 7 --graphs 1 --split 0 >"$log" 2>&1 || status=1
grep RESULT "$log" | sed "s/^/small steps, expert kernels unsplit: /"
# one_token NAME LABEL ARGS...: version 7 at one token with ARGS, its RESULT line labelled
one_token() {
    local log="$OUT/bench-small-v7-$1.log" label="$2"
    shift 2
    timeout 60 "$B/worker/cuda/cuda-bench" --preset 120b --batches 1 --ctx 1024 --steps 10 \
        --version 7 --graphs 1 "$@" >"$log" 2>&1 || status=1
    grep RESULT "$log" | sed "s|^|one token, $label: |"
}
one_token o1p0 "o_proj a warp a row, q/k/v in waves" --o-split 1 --persist 0
one_token p2t0 "q/k/v looping, late trigger, one-CTA top-k" --persist 2 --trigger 0
one_token row-l2 "gate_up's token row from L2" --rows 0
one_token topk-rounds "the router's top-k in rounds" --trigger 3
one_token topk-four "the rank top-k four threads an expert" --trigger 51
one_token down-rows "down's act rows a warp's own" --rows 5
one_token down-half "down 8 rows a CTA" --rows 17
one_token bulk "small rows by bulk copies" --bulk 63
one_token no-math "expert kernels without their arithmetic (tokens meaningless)" --no-math 3
one_token stagger "gate_up's first wave half 1 us late" --no-math 4
for t in 0 1; do
    one_token "sample-cta-t$t" "temperature $t, token choice a CTA a row" --temperature "$t" \
        --sample-split 0
done

echo "== decode step at batch 256 with temperature 1: sampling on the device, then on the host"
for h in ${MG_SAMPLING_RUNS-0 1}; do
    log="$OUT/bench-sample-host$h.log"
    timeout 120 "$B/worker/cuda/cuda-bench" --preset 120b --batches 256 --ctx 1024 --steps 5 \
        --version 7 --graphs 1 --temperature 1 --host-sampling "$h" >"$log" 2>&1 || status=1
    cat "$log"
done

echo "== summary"
grep -E "FAIL|passed, .* failed" "$OUT/check.log" || true
grep -h RESULT "$OUT"/bench-v*.log || true
echo "run-gpu.sh: status $status"
exit $status
