#!/usr/bin/env bash
# run-bundle.sh - on the GPU machine (which has none of the serving stack's libraries or servers):
# unpack a bundle made by deploy/bundle/make-bundle.sh --tar and run the whole stack from it.
#
#   here:  deploy/bundle/make-bundle.sh build-x .bundle/magneto-bundle --tar   (.bundle is
#          git-ignored through .git/info/exclude; remove the unpacked folder, carry the .tar.xz)
#   there: deploy/gpu/run-bundle.sh [.bundle/magneto-bundle.tar.xz]      (carry: .bundle)
#
# Prints what the machine lacks, unpacks to a folder outside the checkout, runs bundle-run.sh
# with mocker workers and with CPU workers on the tiny checkpoint, and shows which libraries
# the processes mapped. Logs go to $OUT when set (the device tool's result folder).
set -uo pipefail
TARBALL=$(readlink -f "${1:-.bundle/magneto-bundle.tar.xz}")
[ -f "$TARBALL" ] || { echo "run-bundle: no $TARBALL" >&2; exit 1; }
DEST=$(mktemp -d /tmp/magneto-bundle.XXXXXX)
RUNS=$(mktemp -d /tmp/magneto-runs.XXXXXX)
trap 'rm -rf "$DEST" "$RUNS"' EXIT

echo "== machine"
. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME, $(uname -m), $(getconf GNU_LIBC_VERSION), $(nproc) CPUs"
nvidia-smi -L 2>/dev/null | head -8
echo "== what the machine has of the stack's dependencies"
for x in nats-server etcd etcdctl promtool curl python3 gnuplot patchelf; do
  printf '  %-12s %s\n' "$x" "$(command -v "$x" || echo -)"
done
for l in libnats libprotobuf-c libjansson libmicrohttpd libcurl.so.4 libnghttp2 libssh2 libpsl librtmp libssl.so.3; do
  printf '  %-14s %s\n' "$l" "$(ldconfig -p | grep -m1 "$l" | sed 's/.*=> //' || true)"
done

echo "== unpack"
tar -xJf "$TARBALL" -C "$DEST" || exit 1
B=$DEST/magneto-bundle
sed -n '1,5p;/^needs/p' "$B/MANIFEST.txt"
echo "  resolved outside the bundle (worker, frontend, bench):"
for p in magneto-worker magneto-frontend magneto-bench; do
  ldd "$B/bin/$p" | grep -v "$B" | sed "s/^/    $p: /"
done

rc=0
cd "$RUNS" || exit 1
echo "== mocker workers: 2 workers, 8 requests"
"$B/bundle-run.sh" -n 2 -o "$RUNS/mocker" || rc=1
echo "== mocker workers: 4 workers, 256 requests, concurrency 64, ISL 512, OSL 128"
"$B/bundle-run.sh" -n 4 -o "$RUNS/mocker4" --backend mocker --mocker-speedup-ratio 10 --max-batch-size 64 -- \
  --streaming --concurrency 64 --request-count 256 --isl 512 --osl 128 \
  --extra-inputs ignore_eos:true --extra-inputs min_tokens:128 --extra-inputs max_tokens:128 || rc=1
echo "== CPU workers on the tiny checkpoint: 2 workers, 8 requests"
(. "$B/env.sh" && mg-mkckpt --preset tiny --out "$RUNS/ckpt" --tokenizer-from "$MAGNETO_O200K_PATH") >"$RUNS/mkckpt.log" 2>&1 || { rc=1; tail "$RUNS/mkckpt.log"; }
"$B/bundle-run.sh" -n 2 -o "$RUNS/cpu" --backend cpu --model-path "$RUNS/ckpt" --max-batch-size 8 \
  --max-num-tokens 256 --max-seq-len 1024 --threads 4 -- --streaming --concurrency 4 \
  --request-count 16 --isl 64 --osl 32 --extra-inputs ignore_eos:true || rc=1

echo "== libraries the processes mapped from outside the bundle (mocker run)"
grep -v -e '^==' -e "^$B/" "$RUNS/mocker/server_logs/libs.txt" | sort | uniq -c
echo "  from the bundle: $(grep -c "^$B/lib/" "$RUNS/mocker/server_logs/libs.txt") mappings"

if [ -n "${OUT:-}" ]; then
  cp "$RUNS/mocker/server_logs/libs.txt" "$OUT/libs.txt"
  cp "$RUNS/mocker/server_logs/frontend.log" "$OUT/frontend.log"
  cp "$RUNS/mocker4/server_logs/bench.log" "$OUT/bench_mocker4.log"
  cp "$RUNS/mocker4/benchmark_logs/profile_export_aiperf.json" "$OUT/profile_export_aiperf_mocker4.json" 2>/dev/null
  cp "$RUNS/cpu/server_logs/bench.log" "$OUT/bench_cpu.log"
  cp "$B/MANIFEST.txt" "$OUT/MANIFEST.txt"
fi
echo "== run-bundle: exit $rc"
exit $rc
