#!/usr/bin/env bash
# tools/oracle/run_agree.sh - the CUDA backend's correctness report on a GPU machine with PyTorch
# and transformers: whole-model logits and 128-token greedy continuations against the float32
# CPU engine and against Hugging Face transformers, on the tiny preset and on a 20b-shape
# checkpoint (worker/cuda/cuda_agree.c says what each check holds to and why).
#
#   cmake -S . -B build-gpu -DMG_SERVING=OFF -DMG_CUDA=ON -DCMAKE_BUILD_TYPE=Release
#   cmake --build build-gpu -j16 --target cuda-agree mg-mkckpt
#   MKCKPT=build-gpu/tools/mkckpt/mg-mkckpt AGREE=build-gpu/worker/cuda/cuda-agree \
#     OUT=/tmp/agree-logs tools/oracle/run_agree.sh
#
# Environment: MKCKPT (mg-mkckpt), AGREE (cuda-agree), OUT (logs, golden files, summary);
# WORK (checkpoints, default /tmp/mg-agree; the 20b shape is ~13 GB of files);
# TINY_VERSIONS (kernel versions run on tiny, default "1 2 3"), BIG_VERSION (at 20b, default 3,
# what the recorded runs used);
# PARTS (default "tiny 20b"): which halves to run, e.g. PARTS=20b alone in a second call when
# one call may not last long enough for both.
#
# Steps, each timed: make both checkpoints; HF goldens (tiny: float32 on the CPU, the same
# arithmetic as the CPU engine; 20b: bfloat16 on the GPU, since float32 would need ~84 GB, more
# than an H100's 80 GB); cuda-agree on both with random prompts (greedy agreement with the CPU
# engine) and with the golden (logits and greedy tokens against HF). HF runs in its own process
# and exits, freeing the GPU, before any cuda-agree starts.
# Budget: the CPU engine at the 20b shape took 1.7 s per decode step (2 sequences) and 41 s for a
# 207-token prefill on 2 cores; on 16 cores that is ~0.2-0.35 s and ~5-8 s, so 20b uses 2 random
# prompts and 3 golden prompts (7, 64, 200 tokens; greedy from 7 and 200) of 128 greedy tokens:
# ~1 minute of CPU engine per cuda-agree run, the whole script ~5-6 minutes.
# Exit status: non-zero when any step fails.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
: "${MKCKPT:?path of mg-mkckpt}" "${AGREE:?path of cuda-agree}" "${OUT:?output folder}"
MKCKPT=$(realpath "$MKCKPT") AGREE=$(realpath "$AGREE")
WORK=${WORK:-/tmp/mg-agree}
TINY_VERSIONS=${TINY_VERSIONS:-"1 2 3"}
BIG_VERSION=${BIG_VERSION:-3}
PARTS=${PARTS:-"tiny 20b"}
mkdir -p "$WORK" "$OUT"
export PYTHONUNBUFFERED=1
# no network there: transformers must not try the hub (the checkpoints are local folders)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# The maker reads MAGNETO_<OPTION> too; the checkpoints must be the presets' own.
for v in SEED HIDDEN LAYERS HEADS KV_HEADS HEAD_DIM EXPERTS TOP_K INTERMEDIATE VOCAB \
    SLIDING_WINDOW SHARD_MB; do unset "MAGNETO_$v"; done
status=0
echo "== $(date -u +%FT%TZ) parts: $PARTS" >>"$OUT/times.txt" # a later call appends

# step NAME TIMEOUT_S command...: runs it with its output in $OUT/NAME.log, prints the log's
# verdict lines and the wall time, records a failure.
step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    local t0 t1 rc
    t0=$(date +%s%N)
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    t1=$(date +%s%N)
    grep -E "^(PASS|FAIL)|agree before|forward time|cuda-agree:|wrote|Error|error" \
        "$OUT/$name.log" | tail -40
    [ $rc -eq 124 ] && echo "TIMEOUT after ${limit}s"
    printf "%-28s %5d.%d s  exit %d\n" "$name" $(((t1 - t0) / 1000000000)) \
        $(((t1 - t0) / 100000000 % 10)) $rc | tee -a "$OUT/times.txt"
    [ $rc -eq 0 ] || status=1
    return $rc
}

nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv \
    >"$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
python3 -c "import torch, transformers as t; print('torch', torch.__version__, 'transformers', \
    t.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tail -1

# ---- tiny: HF in float32 on the CPU ----
if [[ " $PARTS " == *" tiny "* ]]; then
    rm -rf "$WORK/tiny"
    step mkckpt-tiny 120 "$MKCKPT" --preset tiny --out "$WORK/tiny"
    rm -f "$OUT/tiny.golden"
    step hf-tiny 300 python3 tools/oracle/hf_golden.py --ckpt "$WORK/tiny" --name tiny \
        --maker-args "--preset tiny" --lengths 1,7,40,200 --greedy 1,3 --new-tokens 128 \
        --dtype float32 --device cpu --out "$OUT/tiny.golden"
    for v in $TINY_VERSIONS; do
        for g in 0 1; do
            step "agree-tiny-v$v-g$g" 120 "$AGREE" --model "$WORK/tiny" --tokens 128 --prompts 8 \
                --kernel-version "$v" --graphs "$g"
        done
    done
    if [ -s "$OUT/tiny.golden" ]; then
        step agree-tiny-golden 120 "$AGREE" --model "$WORK/tiny" --prompts 0 \
            --golden "$OUT/tiny.golden" --kernel-version "${TINY_VERSIONS##* }"
    fi
fi

# ---- 20b shape: HF in bfloat16 on the GPU ----
if [[ " $PARTS " == *" 20b "* ]]; then
    rm -rf "$WORK/20b"
    step mkckpt-20b 300 "$MKCKPT" --preset 20b --out "$WORK/20b"
    # a separate process: it exits (and frees the GPU's ~42 GB) before cuda-agree opens the GPU
    rm -f "$OUT/20b.golden"
    step hf-20b 420 python3 tools/oracle/hf_golden.py --ckpt "$WORK/20b" --name 20b \
        --maker-args "--preset 20b" --lengths 7,64,200 --greedy 0,2 --new-tokens 128 \
        --dtype bfloat16 --device cuda --out "$OUT/20b.golden"
    step agree-20b 420 "$AGREE" --model "$WORK/20b" --tokens 128 --prompts 2 \
        --kernel-version "$BIG_VERSION" --graphs 1
    if [ -s "$OUT/20b.golden" ]; then
        step agree-20b-golden 420 "$AGREE" --model "$WORK/20b" --prompts 0 \
            --golden "$OUT/20b.golden" --kernel-version "$BIG_VERSION" --graphs 1
    fi
fi

echo "== summary"
for f in "$OUT"/agree-*.log; do
    [ -e "$f" ] || continue
    line=$(grep -E '^cuda-agree: [0-9]+ passed' "$f" || echo 'no summary line (crashed?)')
    printf "%-28s %s\n" "$(basename "$f" .log)" "$line"
    grep -E "agree before divergence" "$f" | sed 's/^ */    /'
done
cat "$OUT/times.txt"
echo "run_agree.sh: status $status"
exit $status
