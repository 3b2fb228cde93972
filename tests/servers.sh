# servers.sh - start nats-server and etcd on free loopback ports for tests and the local demo.
# Source it, call mg_servers_start DIR, and mg_servers_stop (also registered on EXIT by the caller).
# Exports MAGNETO_NATS_URL and MAGNETO_ETCD_URL. mg_frontend_port LOG [PID]: the port a frontend
# started with --http-port 0 logged.

mg_free_port() {
  # Ask the kernel for a free port by binding port 0, then release it.
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

mg_wait_port() { # host port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    (exec 3<>/dev/tcp/$1/$2) 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

mg_servers_start() {
  local dir=$1
  mkdir -p "$dir"
  local np ep pp
  np=$(mg_free_port); ep=$(mg_free_port); pp=$(mg_free_port)
  nats-server -a 127.0.0.1 -p "$np" >"$dir/nats.log" 2>&1 &
  MG_NATS_PID=$!
  etcd --name mg-test --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$ep" --advertise-client-urls "http://127.0.0.1:$ep" \
    --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
    --initial-cluster "mg-test=http://127.0.0.1:$pp" >"$dir/etcd.log" 2>&1 &
  MG_ETCD_PID=$!
  mg_wait_port 127.0.0.1 "$np" 20 || { echo "nats-server did not start; see $dir/nats.log" >&2; return 1; }
  mg_wait_port 127.0.0.1 "$ep" 30 || { echo "etcd did not start; see $dir/etcd.log" >&2; return 1; }
  export MAGNETO_NATS_URL="nats://127.0.0.1:$np"
  export MAGNETO_ETCD_URL="http://127.0.0.1:$ep"
}

# Never fails: callers run it from EXIT traps under `set -e`, where a failing last command
# (wait returns the killed server's status) would replace the script's own exit status.
mg_servers_stop() {
  local p
  for p in "${MG_NATS_PID:-}" "${MG_ETCD_PID:-}"; do
    if [ -n "$p" ]; then
      kill "$p" 2>/dev/null || true
      wait "$p" 2>/dev/null || true
    fi
  done
  MG_NATS_PID=; MG_ETCD_PID=
  return 0
}

mg_frontend_port() { # log [pid]
  # The HTTP port a frontend started with --http-port 0 logged (frontends pick their port, so
  # concurrent runs never race for one): waits up to 30 s, or until pid has exited.
  local p i
  for ((i = 0; i < 300; i++)); do
    p=$(sed -n 's/^magneto-frontend listening on port \([0-9]*\)$/\1/p' "$1" 2>/dev/null || true)
    [ -n "$p" ] && { echo "$p"; return 0; }
    [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null && return 1
    sleep 0.1
  done
  return 1
}
