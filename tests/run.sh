#!/usr/bin/env bash
# Set up, build and run every test through ctest: first a normal build, then one with
# AddressSanitizer and UndefinedBehaviorSanitizer. nats-server and etcd are started on free
# loopback ports and stopped on exit, also when a test fails.
#   ./tests/run.sh                 everything
#   MG_NO_SANITIZE=1 ./tests/run.sh skip the sanitizer build
#   ./tests/run.sh -R regex        pass ctest arguments (both builds)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

./deploy/local/install-deps.sh
./tests/setup-node.sh

. tests/servers.sh
WORK=$(mktemp -d /tmp/magneto-tests.XXXXXX)
cleanup() { mg_servers_stop; rm -rf "$WORK"; }
trap cleanup EXIT
mg_servers_start "$WORK/servers"

JOBS=$(nproc)
run_build() { # dir, cmake args...
  local dir=$1; shift
  cmake -S "$ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j"$JOBS" 2>&1 | grep -E 'error|warning:' || true
  cmake --build "$dir" -j"$JOBS" >/dev/null
  # A failing test runs once more (the failure stays in the log): the integration tests share
  # two cores with servers and each other, and a single timing hiccup should not hide the rest.
  (cd "$dir" && ctest --output-on-failure -j"$JOBS" --repeat until-pass:2 "${CTEST_ARGS[@]}")
}
CTEST_ARGS=("$@")

# The CUDA backend compiles wherever the toolkit is (no GPU needed); its kernels run on GPU
# machines through worker/cuda/run-gpu.sh.
CUDA_ARGS=()
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then CUDA_ARGS=(-DMG_CUDA=ON); fi

status=0
echo "== build and test: $ROOT/build ${CUDA_ARGS[*]}"
run_build "$ROOT/build" "${CUDA_ARGS[@]}" || status=1
if [ -z "${MG_NO_SANITIZE:-}" ]; then
  echo "== build and test with ASan+UBSan: $ROOT/build-asan"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
    run_build "$ROOT/build-asan" -DMG_SANITIZE=ON || status=1
fi
exit $status
