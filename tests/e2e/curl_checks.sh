#!/usr/bin/env bash
# The frontend through curl: a streamed chat whose every event is valid JSON and ends with
# [DONE], a non-streamed completion, /health, /live, /metrics (linted by promtool), and bad
# requests with their status and OpenAI error body.
#   tests/e2e/curl_checks.sh URL MODEL MODE
set -euo pipefail
URL=$1 MODEL=$2 MODE=$3
fail() { echo "FAIL: $*"; exit 1; }
J='Content-Type: application/json'

out=$(curl -sS -N -H "$J" "$URL/v1/chat/completions" -d "{\"model\":\"$MODEL\",\"stream\":true,
  \"max_tokens\":16,\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],
  \"stream_options\":{\"include_usage\":true}}")
echo "$out" | python3 -c '
import json, sys
events = [l[6:] for l in sys.stdin.read().split("\n") if l.startswith("data: ")]
assert events and events[-1] == "[DONE]", "stream must end with [DONE]"
objs = [json.loads(e) for e in events[:-1]]
assert all(o["object"] == "chat.completion.chunk" for o in objs)
assert any(o.get("usage") for o in objs), "usage chunk"
assert any(c.get("finish_reason") for o in objs for c in o["choices"]), "finish_reason"
' || fail "streamed chat: $out"

out=$(curl -sS -H "$J" "$URL/v1/completions" -d "{\"model\":\"$MODEL\",\"prompt\":[1,2,3],\"max_tokens\":5}")
echo "$out" | python3 -c '
import json, sys
o = json.load(sys.stdin)
assert o["object"] == "text_completion" and o["usage"]["completion_tokens"] == 5, o
assert o["usage"]["prompt_tokens"] == 3, o
' || fail "completion: $out"

code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/health"); [ "$code" = 200 ] || fail "health $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/live"); [ "$code" = 200 ] || fail "live $code"
curl -sS "$URL/metrics" >/tmp/mg-e2e-metrics.$$
grep -q '^magneto_frontend_requests_total{' /tmp/mg-e2e-metrics.$$ || fail "metrics: requests_total"
grep -q '^magneto_frontend_time_to_first_token_seconds_bucket' /tmp/mg-e2e-metrics.$$ || fail "metrics: ttft"
command -v promtool >/dev/null || fail "promtool is not installed (deploy/local/install-deps.sh)"
promtool check metrics </tmp/mg-e2e-metrics.$$ >/dev/null 2>&1 || {
  promtool check metrics </tmp/mg-e2e-metrics.$$ | head; rm -f /tmp/mg-e2e-metrics.$$; fail "promtool"; }
rm -f /tmp/mg-e2e-metrics.$$

bad() { # body want_status want_code
  local o c
  o=$(curl -sS -w '\n%{http_code}' -H "$J" "$URL/v1/chat/completions" -d "$1")
  c=${o##*$'\n'}
  [ "$c" = "$2" ] || fail "status $c, want $2 for $1: $o"
  echo "${o%$'\n'*}" | python3 -c "import json,sys; e=json.load(sys.stdin)['error']; assert e['code']=='$3', e" \
    || fail "code for $1: $o"
}
bad '{"model":' 400 invalid_json
bad "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_p\":\"a\"}" 400 invalid_type
bad '{"model":"nope","messages":[{"role":"user","content":"x"}]}' 404 model_not_found
bad "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":9999999}" 400 context_length_exceeded
echo "curl checks: ok ($MODE)"
