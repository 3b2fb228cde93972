#!/usr/bin/env bash
# bundle-run.sh - one job from a magneto bundle, on loopback: nats-server and etcd on free ports,
# N workers, a frontend, magneto-bench against it; everything is stopped when the bench ends.
#
#   bundle-run.sh [-n WORKERS] [-o OUTDIR] [-m MODEL] [WORKER_ARGS...] [-- BENCH_ARGS...]
#
#   -n  workers (2), each started with --dp-rank r --dp-size N
#   -o  logs and artifacts (./bundle-run_<UTC time>): server_logs/, benchmark_logs/
#   -m  served model name, given to the workers and to magneto-bench (openai/gpt-oss-120b)
#   WORKER_ARGS  passed to every worker (default: --backend mocker --mocker-speedup-ratio 10)
#   BENCH_ARGS   passed to magneto-bench (default: 8 streamed chat requests, ISL 64, OSL 32,
#                concurrency N); --model, --url and --artifact-dir are always set here
#   MG_FRONTEND_ARGS  extra frontend arguments (word-split); MG_READY_TIMEOUT seconds a worker
#                may take to start (600: CUDA workers load the checkpoint first)
#
# Example (CUDA workers, one per GPU):
#   bundle-run.sh -n 4 --backend cuda --model-path /ckpt/gpt-oss-120b -- --concurrency 64 \
#     --request-count 640 --isl 1024 --osl 1024 --streaming
# Exit status: magneto-bench's, or 1 when the stack did not come up.
set -euo pipefail
B=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
case ${1:-} in -h | --help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;; esac
[ -f "$B/MANIFEST.txt" ] && [ -f "$B/share/servers.sh" ] ||
  { echo "bundle-run: $B is no bundle: run the copy inside one (deploy/bundle/make-bundle.sh)" >&2; exit 2; }
. "$B/env.sh"
. "$B/share/servers.sh"

# servers.sh asks python3 for a free port; a machine without python gets one from bash alone: a
# random port nobody answers on (the servers then fail loudly if it was taken since).
if ! command -v python3 >/dev/null 2>&1; then
  mg_free_port() {
    local p
    while :; do
      p=$((20000 + RANDOM % 40000))
      (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return 0; }
    done
  }
fi

WORKERS=2
OUTDIR=
MODEL=openai/gpt-oss-120b
# Our own options come first; the first other word starts the worker arguments.
while [ $# -gt 0 ]; do
  case $1 in
  -n) WORKERS=${2:?-n needs a count}; shift 2 ;;
  -o) OUTDIR=${2:?-o needs a folder}; shift 2 ;;
  -m) MODEL=${2:?-m needs a name}; shift 2 ;;
  -h | --help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
  *) break ;;
  esac
done
[[ $WORKERS =~ ^[1-9][0-9]*$ ]] || { echo "bundle-run: -n wants a worker count, got '$WORKERS'" >&2; exit 2; }
WARGS=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do WARGS+=("$1"); shift; done
[ "${1:-}" = -- ] && shift
BARGS=("$@")
[ ${#WARGS[@]} -gt 0 ] || WARGS=(--backend mocker --mocker-speedup-ratio 10)
[ ${#BARGS[@]} -gt 0 ] || BARGS=(--endpoint-type chat --streaming --concurrency "$WORKERS"
  --request-count 8 --synthetic-input-tokens-mean 64 --output-tokens-mean 32
  --extra-inputs ignore_eos:true --extra-inputs min_tokens:32 --extra-inputs max_tokens:32)
# Plots need gnuplot, which such a machine rarely has.
command -v gnuplot >/dev/null 2>&1 || BARGS+=(--no-plots)

OUTDIR=${OUTDIR:-$PWD/bundle-run_$(date -u +%Y%m%dT%H%M%S)}
mkdir -p "$OUTDIR/server_logs" "$OUTDIR/benchmark_logs"
OUTDIR=$(cd "$OUTDIR" && pwd)
LOGS=$OUTDIR/server_logs
NS=bundle$$

PIDS=()
cleanup() {
  local rc=$?
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  mg_servers_stop
  [ $rc -eq 0 ] || echo "bundle-run: failed (exit $rc); logs in $LOGS" >&2
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { # message, log to show
  echo "bundle-run: $1" >&2
  [ -n "${2:-}" ] && [ -f "$2" ] && tail -20 "$2" >&2
  exit 1
}
start() { # name, command...
  local name=$1; shift
  "$@" >"$LOGS/$name.log" 2>&1 &
  PIDS+=($!)
}
# The libraries each process really loaded, from the kernel's own list of its mappings.
record_libs() { # name, pid
  { echo "== $1 (pid $2)"; awk '$6 ~ /\.so/ {print $6}' "/proc/$2/maps" 2>/dev/null | sort -u; } >>"$LOGS/libs.txt"
}
# One HTTP GET over bash's /dev/tcp (no curl needed): the body on stdout.
http_get() { # port, path
  local body
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
  body=$(cat <&3)
  exec 3<&-
  printf '%s\n' "${body#*$'\r\n\r\n'}"
}

echo "bundle-run: bundle $B ($(sed -n 's/^source: //p' "$B/MANIFEST.txt" 2>/dev/null)), logs in $OUTDIR"
mg_servers_start "$LOGS/servers" || fail "servers did not start"
echo "bundle-run: nats $MAGNETO_NATS_URL, etcd $MAGNETO_ETCD_URL ($(nats-server --version 2>&1 | head -1), $(etcd --version 2>&1 | head -1))"

COMMON=(--namespace "$NS" --nats-url "$MAGNETO_NATS_URL" --etcd-url "$MAGNETO_ETCD_URL")
for ((r = 0; r < WORKERS; r++)); do
  start "worker$r" magneto-worker "${COMMON[@]}" --system-host 127.0.0.1 --system-port 0 \
    --served-model-name "$MODEL" --dp-rank "$r" --dp-size "$WORKERS" "${WARGS[@]}"
done
WPIDS=("${PIDS[@]}")
deadline=$((SECONDS + ${MG_READY_TIMEOUT:-600}))
for ((r = 0; r < WORKERS; r++)); do
  until grep -q '^ready' "$LOGS/worker$r.log" 2>/dev/null; do
    kill -0 "${WPIDS[$r]}" 2>/dev/null || fail "worker $r exited" "$LOGS/worker$r.log"
    [ $SECONDS -lt $deadline ] || fail "worker $r not ready in ${MG_READY_TIMEOUT:-600} s" "$LOGS/worker$r.log"
    sleep 0.1
  done
  record_libs "worker$r" "${WPIDS[$r]}"
done
echo "bundle-run: $WORKERS worker(s) ready: ${WARGS[*]}"

# The frontend picks its own port (--http-port 0) and prints it.
# shellcheck disable=SC2086
start frontend magneto-frontend "${COMMON[@]}" --host 127.0.0.1 --http-port 0 \
  --tokenizer "$MAGNETO_TOKENIZER" ${MG_FRONTEND_ARGS:-}
FPID=${PIDS[-1]}
PORT=$(mg_frontend_port "$LOGS/frontend.log" "$FPID") || PORT=
[ -n "$PORT" ] || fail "frontend did not start" "$LOGS/frontend.log"
# Ready when its /health lists every worker.
n=0
for ((i = 0; i < 300; i++)); do
  n=$(http_get "$PORT" /health 2>/dev/null | grep -o '"instance_id"' | wc -l || true)
  [ "$n" -ge "$WORKERS" ] && break
  sleep 0.1
done
[ "$n" -ge "$WORKERS" ] || fail "frontend sees $n of $WORKERS workers" "$LOGS/frontend.log"
record_libs frontend "$FPID"
echo "bundle-run: frontend on 127.0.0.1:$PORT sees $n worker(s)"

set +e
magneto-bench --model "$MODEL" --url "http://127.0.0.1:$PORT" --artifact-dir "$OUTDIR/benchmark_logs" \
  --tokenizer "$MAGNETO_O200K_PATH" "${BARGS[@]}" 2>&1 | tee "$LOGS/bench.log"
rc=${PIPESTATUS[0]}
set -e
echo "bundle-run: magneto-bench exit $rc; artifacts in $OUTDIR/benchmark_logs"
exit $rc
