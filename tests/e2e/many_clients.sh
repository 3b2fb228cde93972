#!/usr/bin/env bash
# 2,048 concurrent streaming clients held by one frontend: magneto-frontend-bench opens 2,048
# streams (curl multi) against instant workers paced at one token per 50 ms per stream; while
# they run, the frontend's /health must report at least 2,048 requests in flight, and at the end
# no stream may have ended short.
#   tests/e2e/many_clients.sh BUILD_DIR [STREAMS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$(cd "$1" && pwd)
STREAMS=${2:-2048}
. "$ROOT/tests/servers.sh"
WORK=$(mktemp -d /tmp/magneto-many.XXXXXX)
PIDS=()
OWN_SERVERS=
cleanup() {
  local rc=$?
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  [ -n "$OWN_SERVERS" ] && mg_servers_stop
  if grep -l -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$WORK"/*.log 2>/dev/null; then
    echo "sanitizer reports above"
    rc=1
  fi
  if [ $rc -ne 0 ]; then for f in "$WORK"/*.log; do echo "== $f"; tail -15 "$f"; done; fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
if [ -z "${MAGNETO_NATS_URL:-}" ] || [ -z "${MAGNETO_ETCD_URL:-}" ]; then
  mg_servers_start "$WORK/servers"
  OWN_SERVERS=1
fi
NS=many$$
COMMON=(--namespace "$NS" --nats-url "$MAGNETO_NATS_URL" --etcd-url "$MAGNETO_ETCD_URL")
# The frontend's HTTP port, read from its log (it is started with --http-port 0, so that
# concurrent runs never race for a port).
fe_port() {
  local p i
  for ((i = 0; i < 300; i++)); do
    p=$(sed -n 's/^magneto-frontend listening on port \([0-9]*\)$/\1/p' "$1" 2>/dev/null || true)
    [ -n "$p" ] && { echo "$p"; return 0; }
    sleep 0.1
  done
  return 1
}
MAGNETO_LOG_LEVEL=warn "$BIN/frontend/magneto-frontend" "${COMMON[@]}" --host 127.0.0.1 \
  --http-port 0 >"$WORK/frontend.log" 2>&1 &
FE=$!
PIDS+=($FE)
PORT=$(fe_port "$WORK/frontend.log") || fail "frontend did not start"
MAGNETO_LOG_LEVEL=warn "$BIN/frontend/magneto-frontend-bench" "${COMMON[@]}" \
  --url "http://127.0.0.1:$PORT" --streams "$STREAMS" --tokens 150 --step-us 50000 --workers 4 \
  --warmup 4 --duration 8 --frontend-pid "$FE" >"$WORK/bench.log" 2>&1 &
BENCH=$!
PIDS+=($BENCH)
peak=0
while kill -0 "$BENCH" 2>/dev/null; do
  n=$(curl -s --max-time 2 "http://127.0.0.1:$PORT/health" | python3 -c \
    'import json,sys; print(json.load(sys.stdin)["inflight_requests"])' 2>/dev/null || echo 0)
  [ "$n" -gt "$peak" ] && peak=$n
  sleep 0.5
done
wait "$BENCH" || fail "bench failed"
cat "$WORK/bench.log"
[ "$peak" -ge "$STREAMS" ] || fail "peak in-flight requests $peak, want $STREAMS"
grep -q "incomplete streams 0$" "$WORK/bench.log" || fail "some streams ended short"
echo "ok: $STREAMS concurrent streams held (peak in flight $peak)"
