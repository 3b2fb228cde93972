#!/usr/bin/env bash
# worker_streams.sh - magneto-worker (mocker) against real nats-server and etcd:
#   1. 1,000 concurrent streams through one worker all complete, every chunk in order;
#   2. every process's /metrics passes `promtool check metrics`; /health and /live answer;
#   3. a worker killed with SIGKILL disappears from discovery within the lease TTL (10 s);
#   4. SIGTERM deregisters at once.
# Needs MAGNETO_NATS_URL and MAGNETO_ETCD_URL (tests/run.sh). Arguments: the build directory.
set -euo pipefail
BUILD=$1
WORKER=$BUILD/worker/magneto-worker
CLIENT=$BUILD/tools/client/magneto-client
: "${MAGNETO_NATS_URL:?needs nats-server (tests/run.sh)}" "${MAGNETO_ETCD_URL:?needs etcd}"
NS=wtest$$
export MAGNETO_NAMESPACE=$NS
TMP=$(mktemp -d)
PIDS=()
fail() { echo "FAIL: $*"; FAILED=$((FAILED + 1)); }
FAILED=0; PASSED=0
ok() { PASSED=$((PASSED + 1)); }
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

start_worker() { # name, extra args...
  local name=$1; shift
  "$WORKER" --system-host 127.0.0.1 --system-port 0 "$@" >"$TMP/$name.log" 2>&1 &
  PIDS+=($!)
  eval "${name}_PID=$!"
  for _ in $(seq 100); do grep -q '^ready' "$TMP/$name.log" && break; sleep 0.1; done
  grep -q '^ready' "$TMP/$name.log" || { cat "$TMP/$name.log"; echo "FAIL: $name did not start"; exit 1; }
  eval "${name}_PORT=$(grep -o 'system_port=[0-9]*' "$TMP/$name.log" | cut -d= -f2)"
}

instances() {
  ETCDCTL_API=3 etcdctl --endpoints "$MAGNETO_ETCD_URL" get --prefix "magneto/v1/instances/$NS/worker/" --keys-only | grep -c . || true
}

# 0. /health while the worker still waits for NATS: 503 "starting", and the worker lives on.
"$WORKER" --system-host 127.0.0.1 --system-port 0 --nats-url nats://127.0.0.1:1 >"$TMP/early.log" 2>&1 &
EARLY=$!
PIDS+=($EARLY)
for _ in $(seq 100); do grep -q 'no server at' "$TMP/early.log" && break; sleep 0.1; done
EPORT=$(grep -o 'on 127.0.0.1:[0-9]*' "$TMP/early.log" | cut -d: -f2)
code=$(curl -s -o "$TMP/early.json" -w '%{http_code}' "http://127.0.0.1:$EPORT/health" || true)
[ "$code" = 503 ] && grep -q starting "$TMP/early.json" && ok || fail "/health while starting: $code"
sleep 0.2
kill -0 "$EARLY" 2>/dev/null && ok || fail "worker died answering /health while starting"
kill -9 "$EARLY" 2>/dev/null || true

# A namespace that is no valid NATS subject token: the worker cannot subscribe, so it exits
# with an error instead of registering a card that nobody answers behind.
rc=0
timeout 30 "$WORKER" --system-host 127.0.0.1 --system-port 0 --namespace "bad ns" >"$TMP/badns.log" 2>&1 || rc=$?
[ "$rc" = 1 ] && grep -q 'no subscriber' "$TMP/badns.log" && ok || fail "bad namespace: exit $rc: $(tail -3 "$TMP/badns.log")"

# 1. 1,000 concurrent streams, instant mocker.
start_worker a --mocker-speedup-ratio 0 --max-batch-size 1024
if "$CLIENT" --requests 1000 --concurrency 1000 --prompt-tokens 64 --max-tokens 50 >"$TMP/client.out" 2>&1; then
  grep -q 'completed 1000 failed 0 tokens 50000' "$TMP/client.out" && ok || fail "client summary: $(cat "$TMP/client.out")"
else
  fail "1000 streams: $(tail -5 "$TMP/client.out")"
fi

# 2. metrics lint and probes.
curl -sf "http://127.0.0.1:$a_PORT/metrics" >"$TMP/metrics.txt" || fail "no /metrics"
if promtool check metrics <"$TMP/metrics.txt" >"$TMP/promtool.out" 2>&1; then ok; else fail "promtool: $(cat "$TMP/promtool.out")"; fi
grep -q '^magneto_component_requests_total{status="success"} 1000' "$TMP/metrics.txt" && ok || fail "requests_total is not 1000"
curl -sf "http://127.0.0.1:$a_PORT/health" | grep -q '"status":"healthy"' && ok || fail "/health"
curl -sf "http://127.0.0.1:$a_PORT/live" | grep -q alive && ok || fail "/live"

# 3. SIGKILL: the card goes with the lease. This worker also reads a TensorRT-LLM engine file as
# Dynamo's recipes write them: flow maps, and TensorRT-LLM's own "backend" key.
cat >"$TMP/engine.yaml" <<'EOF'
backend: pytorch
tensor_parallel_size: 1
max_batch_size: 64
kv_cache_config: {enable_block_reuse: false, free_gpu_memory_fraction: 0.8}
cuda_graph_config: {max_batch_size: 64, enable_padding: true}
moe_config: {backend: CUTLASS}   # later versions: TRTLLM
stream_interval: 2
EOF
start_worker b --mocker-speedup-ratio 0 --extra-engine-args "$TMP/engine.yaml"
[ "$(instances)" = 2 ] && ok || fail "expected 2 instances, got $(instances)"
kill -9 "$b_PID"
t0=$(date +%s.%N)
gone=""
for _ in $(seq 150); do
  if [ "$(instances)" = 1 ]; then gone=$(date +%s.%N); break; fi
  sleep 0.1
done
if [ -n "$gone" ]; then
  secs=$(echo "$gone - $t0" | bc)
  echo "killed worker left discovery after ${secs} s"
  # The TTL is 10 s from the last renewal; etcd then finds the expiry (every 500 ms) and commits
  # the revoke (a disk sync, slow on a loaded CI machine), and each poll runs etcdctl.
  (( $(echo "$secs <= 13.5" | bc) )) && ok || fail "took ${secs} s, well over the 10 s TTL"
else
  fail "killed worker still registered after 15 s"
fi
# The survivor still serves.
"$CLIENT" --requests 20 --concurrency 20 --max-tokens 8 >"$TMP/client2.out" 2>&1 && ok || fail "after kill: $(tail -3 "$TMP/client2.out")"

# 4. SIGTERM deregisters at once.
kill -TERM "$a_PID"
for _ in $(seq 30); do [ "$(instances)" = 0 ] && break; sleep 0.1; done
[ "$(instances)" = 0 ] && ok || fail "SIGTERM left the card behind"
wait "$a_PID" && ok || fail "worker exited non-zero on SIGTERM"

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
