#!/usr/bin/env bash
# Make the tiny and mid checkpoints and their golden files on a machine with PyTorch and
# transformers. MKCKPT: the maker binary. OUT: where golden files and logs go.
#   MKCKPT=build/tools/mkckpt/mg-mkckpt OUT=/tmp/golden tools/oracle/run_device.sh
#   cp /tmp/golden/*.golden tests/golden/model/     (each becomes test_cpu_golden_<name>)
# The maker is deterministic, so the checkpoints are byte-identical to those CI makes; each
# golden file records their SHA-256 and the test checks it.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${MKCKPT:?path of mg-mkckpt}" "${OUT:?output folder}"
WORK=${WORK:-/tmp/mg-oracle}
mkdir -p "$WORK" "$OUT"
export PYTHONUNBUFFERED=1
"$MKCKPT" --preset tiny --out "$WORK/tiny"
"$MKCKPT" --preset mid --out "$WORK/mid"
python3 tools/oracle/hf_golden.py --ckpt "$WORK/tiny" --name tiny --maker-args "--preset tiny" \
  --lengths 1,7,40,200 --greedy 1,3 --out "$OUT/tiny.golden" --debug "$OUT/tiny_hidden.txt" || echo "tiny failed" >&2
python3 tools/oracle/hf_golden.py --ckpt "$WORK/mid" --name mid --maker-args "--preset mid" \
  --lengths 5,300,333 --greedy 0,1 --out "$OUT/mid.golden" || echo "mid failed" >&2
