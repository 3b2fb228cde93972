#!/usr/bin/env bash
# The frontend's own cost (DESIGN.md §8 rows frontend_tok_s, frontend_added_p99_ms): starts
# nats-server and etcd on free ports and one magneto-frontend pinned to one core (taskset),
# then magneto-frontend-bench on the other cores twice:
#   throughput: 64 streams of 500 tokens, instant workers (no pause between steps);
#   latency:    64 streams, workers paced at one token per 2 ms per stream (the frontend far
#               from saturation): the latency from a worker handing a token to NATS to the
#               client holding its SSE event, then the same load straight over NATS to a bus
#               inbox (no frontend); the frontend adds the difference.
#   frontend/bench.sh BUILD_DIR [FRONTEND_CORE]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "$1" && pwd)
CORE=${2:-0}
. "$ROOT/tests/servers.sh"
WORK=$(mktemp -d /tmp/magneto-febench.XXXXXX)
FE=
cleanup() { set +e; [ -n "$FE" ] && kill "$FE" && wait "$FE"; mg_servers_stop; rm -rf "$WORK"; }
trap cleanup EXIT
mg_servers_start "$WORK/servers"
NCPU=$(nproc)
OTHERS=$(python3 -c "print(','.join(str(c) for c in range($NCPU) if c != $CORE) or '$CORE')")
run() { # namespace, bench args...
  local ns=$1 port
  shift
  MAGNETO_LOG_LEVEL=warn taskset -c "$CORE" "$BIN/frontend/magneto-frontend" --namespace "$ns" \
    --nats-url "$MAGNETO_NATS_URL" --etcd-url "$MAGNETO_ETCD_URL" --host 127.0.0.1 \
    --http-port 0 >"$WORK/frontend-$ns.log" 2>&1 &
  FE=$!
  port=$(mg_frontend_port "$WORK/frontend-$ns.log")
  MAGNETO_LOG_LEVEL=warn taskset -c "$OTHERS" "$BIN/frontend/magneto-frontend-bench" \
    --namespace "$ns" --nats-url "$MAGNETO_NATS_URL" --etcd-url "$MAGNETO_ETCD_URL" \
    --url "http://127.0.0.1:$port" --frontend-pid "$FE" "$@"
  kill "$FE"; wait "$FE" || true
  FE=
}
echo "== throughput (frontend on core $CORE, bench on $OTHERS)"
run tput --streams 64 --tokens 500 --workers 2 --warmup 3 --duration 10
echo "== latency"
run lat --streams 64 --tokens 500 --workers 2 --warmup 3 --duration 10 --step-us 2000 --direct 1
