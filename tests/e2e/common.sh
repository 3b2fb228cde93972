# common.sh - what every end-to-end script needs; source it after setting ROOT and BIN:
#   e2e_begin NAME   a work folder, servers (MAGNETO_NATS_URL / MAGNETO_ETCD_URL when set, else
#                    its own on free ports), a namespace NS, worker/frontend flags COMMON, and an
#                    EXIT trap that stops every pid in PIDS, fails on sanitizer reports in
#                    $WORK/*.log and prints the logs' tails when the script fails
#   fail MSG         print and exit 1
#   (and, from servers.sh, mg_frontend_port LOG: the port a frontend with --http-port 0 logged)
. "$ROOT/tests/servers.sh"

PIDS=()
OWN_SERVERS=

e2e_cleanup() {
  local rc=$?
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  [ -n "$OWN_SERVERS" ] && mg_servers_stop
  # A sanitizer build reports memory errors and leaks when its processes exit.
  if grep -l -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$WORK"/*.log 2>/dev/null; then
    echo "sanitizer reports above"
    rc=1
  fi
  if [ $rc -ne 0 ]; then for f in "$WORK"/*.log; do echo "== $f"; tail -20 "$f"; done; fi
  rm -rf "$WORK"
  exit $rc
}

e2e_begin() { # name
  WORK=$(mktemp -d "/tmp/magneto-$1.XXXXXX")
  trap e2e_cleanup EXIT
  if [ -z "${MAGNETO_NATS_URL:-}" ] || [ -z "${MAGNETO_ETCD_URL:-}" ]; then
    mg_servers_start "$WORK/servers"
    OWN_SERVERS=1
  fi
  NS=$1$$
  COMMON=(--namespace "$NS" --nats-url "$MAGNETO_NATS_URL" --etcd-url "$MAGNETO_ETCD_URL")
}

fail() { echo "FAIL: $*"; exit 1; }

