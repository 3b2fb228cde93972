#!/usr/bin/env bash
# Run on a machine with tiktoken (the GPU machine's image): golden ids for the corpus, the
# Hugging Face check of mk-tokenizer-json's output, and the same-machine speed comparison of
# tiktoken and tok-bench. Inputs in .carry/ (ranks file, corpus, xxhash.h); results to $OUT.
#   OUT=dir bench/tok/device.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/tok-out}
mkdir -p "$OUT"
C=.carry
echo "== machine"; nproc; grep -m1 "model name" /proc/cpuinfo
python3 -c "import tiktoken, tokenizers; print('tiktoken', tiktoken.__version__, 'tokenizers', tokenizers.__version__)"
echo "== build"
B=/tmp/tokbuild
if cmake -S . -B $B -DMG_SERVING=OFF -DMG_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
     -DCMAKE_C_FLAGS="-I$PWD/$C/include" -DMG_TOK_RANKS=$PWD/$C/o200k_base.tiktoken >$OUT/cmake.log 2>&1 &&
   cmake --build $B -j8 --target tok-bench mk-tokenizer-json >>$OUT/cmake.log 2>&1; then
  BENCH=$B/bench/tok/tok-bench MK=$B/mk-tokenizer-json
  [ -x $MK ] || MK=$(find $B -name mk-tokenizer-json -type f | head -1)
  [ -x $BENCH ] || BENCH=$(find $B -name tok-bench -type f | head -1)
else
  echo "cmake build failed (tail of log below); building with gcc directly"; tail -5 $OUT/cmake.log
  SRC="runtime/status.c runtime/log.c runtime/tok/tok.c runtime/tok/tok_json.c runtime/tok/harmony.c"
  F="-O2 -g -DNDEBUG -std=gnu11 -D_GNU_SOURCE -I$C/include -Iruntime -Iruntime/tok"
  gcc $F -DMG_TOK_RANKS=\"$C/o200k_base.tiktoken\" $SRC bench/tok/tok_bench.c -o /tmp/tok-bench -lm -lpthread &&
  gcc $F $SRC tools/tok/mk_tokenizer_json.c -o /tmp/mk-tokenizer-json -lm -lpthread
  BENCH=/tmp/tok-bench MK=/tmp/mk-tokenizer-json
fi
echo "== tokenizer.json"
mkdir -p /tmp/tokjson && $MK $C/o200k_base.tiktoken /tmp/tokjson && ls -la /tmp/tokjson
echo "== golden"
time python3 tools/tok/golden.py $C/o200k_base.tiktoken $C/corpus.bin "$OUT" --hf /tmp/tokjson
echo "== speed, same machine, single thread"
for i in 1 2 3; do
  python3 tools/tok/golden.py $C/o200k_base.tiktoken $C/corpus.bin /tmp --bench 5 | grep -v "^hf"
  $BENCH --ranks $C/o200k_base.tiktoken --repeat 5 $C/corpus.bin
done
