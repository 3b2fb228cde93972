#!/usr/bin/env bash
# bundle.sh - the relocatable bundle (deploy/bundle/make-bundle.sh) made from this build works
# on its own:
#   1. it holds the programs, nats-server, etcd, the ranks file, and every library the worker,
#      frontend and bench load except glibc's, libstdc++, libgcc_s and the NVIDIA driver;
#   2. moved to another folder, its programs resolve those libraries to its own lib/ with no
#      environment help (ldd);
#   3. run from a folder outside the repository, in a mount namespace where the system's copies
#      of libnats, libprotobuf-c, jansson, libmicrohttpd, libcurl and curl's dependencies are
#      empty files and LD_LIBRARY_PATH points at broken decoys, bundle-run.sh brings up its own
#      nats-server and etcd, two mocker workers and a frontend, and magneto-bench completes every
#      request; every library the processes mapped (/proc/PID/maps) is the bundle's or glibc's.
# Argument: the build directory. Starts its own servers (from the bundle), so it needs none.
# MG_BUNDLE_WRAPPERS=1 tests the layout without RPATH (wrappers in bin/).
set -euo pipefail
BUILD=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
T=$(mktemp -d /tmp/magneto-bundle-test.XXXXXX)
cleanup() {
  local rc=$?
  if [ $rc -ne 0 ] && [ -d "$T/run/server_logs" ]; then
    for f in "$T"/run/server_logs/*.log; do echo "== $f"; tail -15 "$f"; done
  fi
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT
FAILED=0
PASSED=0
ok() { PASSED=$((PASSED + 1)); }
fail() { echo "FAIL: $*"; FAILED=$((FAILED + 1)); }
# Libraries the target machine provides itself (as make-bundle.sh's exclusion list).
SYSTEM_LIBS='^(linux-vdso|ld-linux[^/]*|libc|libm|libmvec|libpthread|libdl|librt|libresolv|libutil|libanl|libnsl|libnss_[a-z0-9_]+|libstdc\+\+|libgcc_s|libcuda|libnvidia-[a-z0-9_-]+)\.so([.0-9]*)$'

# 1. Make it, then move it: nothing may point back at where it was made.
"$ROOT/deploy/bundle/make-bundle.sh" "$BUILD" "$T/made" >"$T/make.log" 2>&1 ||
  { cat "$T/make.log"; echo "FAIL: make-bundle.sh"; exit 1; }
mkdir -p "$T/elsewhere" "$T/cwd"
mv "$T/made" "$T/elsewhere/magneto"
B=$T/elsewhere/magneto

for f in bin/magneto-worker bin/magneto-frontend bin/magneto-bench bin/nats-server bin/etcd bundle-run.sh; do
  [ -x "$B/$f" ] && ok || fail "bundle lacks $f"
done
for f in share/o200k_base.tiktoken share/servers.sh env.sh MANIFEST.txt README.md; do
  [ -s "$B/$f" ] && ok || fail "bundle lacks $f"
done
cmp -s "$ROOT/tests/servers.sh" "$B/share/servers.sh" && ok || fail "share/servers.sh is not tests/servers.sh"
for l in libnats libprotobuf-c libjansson libmicrohttpd libcurl; do
  ls "$B/lib/$l".so* >/dev/null 2>&1 && ok || fail "bundle lacks $l"
done
# Every non-system library the build's own programs load is in lib/, and no system one is.
for p in worker/magneto-worker frontend/magneto-frontend bench/loadgen/magneto-bench; do
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    if [[ $name =~ $SYSTEM_LIBS ]]; then
      [ ! -e "$B/lib/$name" ] && ok || fail "bundle carries system library $name"
    else
      [ -f "$B/lib/$name" ] && ok || fail "$p needs $name ($path): not in the bundle"
    fi
  done < <(ldd "$BUILD/$p")
done

# 2. No environment help: ldd of the moved bundle's programs finds every bundled library there.
if [ "$(head -c4 "$B/bin/magneto-worker" | tail -c3)" = ELF ]; then
  for p in magneto-worker magneto-frontend magneto-bench; do
    res=$(env -i PATH=/usr/bin:/bin ldd "$B/bin/$p" 2>&1)
    grep -q 'not found' <<<"$res" && fail "$p: $(grep 'not found' <<<"$res")"
    while read -r name arrow path _; do
      [ "$arrow" = "=>" ] || continue
      [[ $name =~ $SYSTEM_LIBS ]] && continue
      [[ $path == "$B/"* ]] && ok || fail "$p resolves $name to $path"
    done <<<"$res"
  done
else
  echo "note: bin/ holds wrappers (no patchelf where the bundle was made): ldd check left to the maps check"
fi

# 3. Hide the system's copies. Keep those that the shell tools of the run itself load (python3
# for free ports, bash, coreutils), which the bundle's programs must not need anyway.
PY=$(env -i PATH=/usr/bin:/bin sh -c 'command -v python3' || true)
declare -A KEEP=()
tools=(/bin/bash /usr/bin/sed /usr/bin/grep /usr/bin/awk /usr/bin/sort /usr/bin/tee /usr/bin/cat /usr/bin/date)
if [ -n "$PY" ]; then
  tools+=("$PY")
  dyn=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("platstdlib"))')/lib-dynload
  for m in "$dyn"/*.so; do [ -e "$m" ] && tools+=("$m"); done
fi
for t in "${tools[@]}"; do
  while read -r name arrow _; do [ "$arrow" = "=>" ] && KEEP[$name]=1; done < <(ldd "$(readlink -f "$t")" 2>/dev/null || true)
done
HIDE=()
# Where the system's copies are: where the build's own programs find them.
declare -A SYSPATH=()
for p in worker/magneto-worker frontend/magneto-frontend bench/loadgen/magneto-bench; do
  while read -r name arrow path _; do [ "$arrow" = "=>" ] && SYSPATH[$name]=$path; done < <(ldd "$BUILD/$p")
done
mkdir -p "$T/decoy"
for l in "$B"/lib/*.so*; do
  name=$(basename "$l")
  [ -n "${KEEP[$name]:-}" ] && continue
  : >"$T/decoy/$name"
  sys=${SYSPATH[$name]:-}
  [ -n "$sys" ] && HIDE+=("$(readlink -f "$sys")")
done
for l in libnats libprotobuf-c libjansson libmicrohttpd libcurl; do
  grep -q "/$l\.so" <<<"$(printf '%s\n' "${HIDE[@]}")" && ok || fail "$l is not among the hidden system copies"
done

cat >"$T/inns.sh" <<EOF
set -u
# In a private mount namespace: the system's copies become empty files here only.
for f in ${HIDE[*]}; do mount --bind /dev/null "\$f" || exit 90; done
# The control: the build's own worker, which uses the system's copies, cannot start now.
if "$BUILD/worker/magneto-worker" --help >/dev/null 2>"$T/control.err"; then exit 91; fi
grep -q 'error while loading shared libraries' "$T/control.err" || exit 92
cd "$T/cwd"
exec env -i PATH=/usr/bin:/bin HOME="$T" LD_LIBRARY_PATH="$T/decoy" \
  "$B/bundle-run.sh" -n 2 -o "$T/run" --backend mocker --mocker-speedup-ratio 0 -- \
  --endpoint-type chat --streaming --concurrency 2 --request-count 6 \
  --synthetic-input-tokens-mean 32 --output-tokens-mean 16 --extra-inputs ignore_eos:true \
  --extra-inputs max_tokens:16 --ui none --no-plots
EOF
rc=0
if unshare -m true 2>/dev/null; then
  unshare -m bash "$T/inns.sh" >"$T/run.out" 2>&1 || rc=$?
  case $rc in
  90) fail "could not hide the system libraries" ;;
  91 | 92) fail "control: the build's own worker started with its libraries hidden: $(cat "$T/control.err")" ;;
  *) ok ;;
  esac
else
  # No mount namespace (an unprivileged container): the maps check below still shows which
  # copies were loaded.
  echo "note: no mount namespace here: system copies stay visible; relying on /proc maps"
  sed -i '/mount --bind/d; /control/,/exit 92/d' "$T/inns.sh"
  bash "$T/inns.sh" >"$T/run.out" 2>&1 || rc=$?
fi
[ $rc -eq 0 ] && ok || { cat "$T/run.out"; fail "bundle-run.sh exit $rc"; }

J=$T/run/benchmark_logs/profile_export_aiperf.json
if [ -f "$J" ]; then
  got=$(python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))
print(int(d["request_count"]["avg"]), len(d.get("error_summary", [])))' "$J" 2>&1 || true)
  [ "$got" = "6 0" ] && ok || fail "profile_export_aiperf.json: requests and error kinds '$got', wanted '6 0'"
else
  fail "no $J"
fi

# What the processes mapped: the five named libraries from the bundle, nothing from outside
# it but the system's own.
L=$T/run/server_logs/libs.txt
for proc in worker0 worker1 frontend; do
  sec=$(awk -v p="== $proc " 'index($0, p) == 1 {on = 1; next} /^==/ {on = 0} on' "$L" 2>/dev/null)
  [ -n "$sec" ] || { fail "no maps recorded for $proc"; continue; }
  for l in libnats libprotobuf-c libjansson libmicrohttpd libcurl; do
    grep -q "^$B/lib/$l\.so" <<<"$sec" && ok || fail "$proc did not map the bundle's $l: $(grep "/$l" <<<"$sec" || echo none)"
  done
  while read -r path; do
    [[ $path == "$B/lib/"* ]] && continue
    [[ $(basename "$path") =~ $SYSTEM_LIBS ]] && continue
    fail "$proc mapped $path from outside the bundle"
  done <<<"$sec"
done
if grep -l -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$T"/run/server_logs/*.log 2>/dev/null; then
  fail "sanitizer reports in the logs above"
fi

echo "bundle: $PASSED passed, $FAILED failed"
[ $FAILED -eq 0 ]
