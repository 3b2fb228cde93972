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
. "$ROOT/tests/e2e/common.sh"
e2e_begin many
MAGNETO_LOG_LEVEL=warn "$BIN/frontend/magneto-frontend" "${COMMON[@]}" --host 127.0.0.1 \
  --http-port 0 >"$WORK/frontend.log" 2>&1 &
FE=$!
PIDS+=($FE)
PORT=$(mg_frontend_port "$WORK/frontend.log") || fail "frontend did not start"
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
