#!/usr/bin/env bash
# bench_client_tok_s: magneto-bench's own capacity. magneto-sse-server streams as fast as the
# socket takes it (16 SSE events per write, one o200k token each) on the same machine, and
# magneto-bench holds 4,096 concurrent streams against it; the figure is the output token
# throughput of the profiling phase (tokens re-counted with o200k), with the client's CPU time.
#   bench/loadgen/client_bench.sh [build-dir] [concurrency] [requests]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
CONC=${2:-4096}
REQS=${3:-$((CONC * 4))}
BIN=$BUILD/bench/loadgen
WORK=$(mktemp -d /tmp/client_bench.XXXXXX)
"$BIN/magneto-sse-server" --port 0 --batch "${SSE_BATCH:-16}" --threads "${SSE_THREADS:-1}" >"$WORK/port" &
SRV=$!
trap 'kill $SRV 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 50); do grep -q PORT "$WORK/port" && break; sleep 0.1; done
PORT=$(awk '/PORT/{print $2}' "$WORK/port")
"$BIN/magneto-bench" profile -m openai/gpt-oss-120b -u "127.0.0.1:$PORT" --endpoint-type chat \
  --streaming --isl 128 --osl 1000 --extra-inputs '{"ignore_eos":true}' \
  --concurrency "$CONC" --request-count "$REQS" --warmup-request-count "$CONC" \
  --random-seed 100 --ui none --no-plots --artifact-dir "$WORK/artifacts" | tee "$WORK/out"
TOK_S=$(awk -F',' '/^Output Token Throughput \(tokens\/sec\),/{print $2}' "$WORK/artifacts/profile_export_aiperf.csv")
echo
echo "bench_client_tok_s $TOK_S tokens/s at concurrency $CONC ($(grep -o 'max [0-9]* in flight' "$WORK/out"))"
grep '^Client CPU' "$WORK/out"
# Parsing cost per token: every streamed token (warmup included) over the client's CPU seconds.
awk '/^Client: /{ev=$2} /^Client CPU/{for(i=1;i<=NF;i++) if($i=="=") cpu=$(i+1)} END{
  printf "client CPU per streamed event: %.3f us (%.0f events per CPU-second)\n", cpu/ev*1e6, ev/cpu}' "$WORK/out"
