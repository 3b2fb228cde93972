#!/usr/bin/env bash
# make-bundle.sh - a relocatable copy of the serving stack for machines that have none of its
# dependencies and no network (the GPU benchmark machine, clusters without root).
#
#   deploy/bundle/make-bundle.sh BUILD_DIR OUT_DIR [--tar]
#
# OUT_DIR gets:
#   bin/      the magneto programs found in BUILD_DIR (stripped), nats-server, etcd, etcdctl
#             (promtool too with MG_BUNDLE_PROMTOOL=1)
#   lib/      every shared library those programs load that a bare Ubuntu 24.04 / Debian 12 base
#             may lack: all that ldd resolves except glibc's own, libstdc++, libgcc_s and the
#             NVIDIA driver (those must come from the machine itself)
#   share/    the o200k ranks file, tests/servers.sh
#   env.sh, bundle-run.sh, README.md, MANIFEST.txt
# With patchelf, programs and libraries carry an RPATH of $ORIGIN/../lib and $ORIGIN (DT_RPATH,
# so a cluster's LD_LIBRARY_PATH cannot swap in its own libcurl or OpenSSL). Without patchelf
# the programs go to libexec/ and bin/ holds wrappers that set LD_LIBRARY_PATH.
# --tar also writes OUT_DIR.tar.xz (the Go servers make the folder ~70 MB; xz takes it to ~25).
#
# Environment: MG_BUNDLE_PROMTOOL=1 adds promtool (48 MB); MG_BUNDLE_WRAPPERS=1 makes the
# wrapper layout even where patchelf exists; MG_BUNDLE_EXCLUDE is an extra
# extended regex of library names to leave out (e.g. '^libnccl' where the cluster has its own);
# NATS_SERVER, ETCD, ETCDCTL, PROMTOOL name the server binaries when they are not on PATH;
# MAGNETO_O200K_PATH names the ranks file when tests/setup-node.sh has not fetched it.
set -euo pipefail

usage() { echo "usage: $0 BUILD_DIR OUT_DIR [--tar]" >&2; exit 2; }
[ $# -ge 2 ] || usage
BUILD=$1
OUT=$2
TAR=
[ "${3:-}" = --tar ] && TAR=1
[ $# -le 3 ] || usage
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
die() { echo "make-bundle: $*" >&2; exit 1; }
[ -d "$BUILD" ] || die "no build directory $BUILD"
BUILD=$(cd "$BUILD" && pwd)
command -v ldd >/dev/null || die "ldd is needed to find the libraries"

# Programs of a build, by target name: whichever of them this build has.
PROGRAMS=(magneto-worker magneto-frontend magneto-router magneto-bench magneto-client
          magneto-sse-server magneto-frontend-bench mg-mkckpt mk-tokenizer-json
          mg-cpu-bench tok-bench cuda-check cuda-bench)
REQUIRED=(magneto-worker magneto-frontend magneto-bench)

# Libraries the target machine must provide itself: glibc (its parts must match each other and
# the machine's loader), the compiler runtime every base system has, and the NVIDIA driver.
EXCLUDE='^(linux-vdso|linux-gate|ld-linux[^/]*|libc|libm|libmvec|libpthread|libdl|librt|libresolv|libutil|libanl|libnsl|libBrokenLocale|libthread_db|libc_malloc_debug|libnss_[a-z0-9_]+|libstdc\+\+|libgcc_s|libcuda|libnvidia-[a-z0-9_-]+)\.so([.0-9]*)$'

[ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ] && die "$OUT exists and is not empty"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
mkdir -p "$OUT/bin" "$OUT/lib" "$OUT/share"

PATCHELF=$(command -v patchelf || true)
[ "${MG_BUNDLE_WRAPPERS:-0}" = 1 ] && PATCHELF=
EXEDIR=$OUT/bin
if [ -z "$PATCHELF" ]; then
  echo "make-bundle: no patchelf: programs go to libexec/ behind wrappers in bin/" >&2
  EXEDIR=$OUT/libexec
  mkdir -p "$EXEDIR"
fi

MANIFEST=$OUT/MANIFEST.txt
{
  echo "magneto bundle"
  echo "made:   $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME") $(uname -m)"
  echo "source: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"
  echo "build:  $BUILD ($(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD/CMakeCache.txt" 2>/dev/null))"
  echo "rpath:  $([ -n "$PATCHELF" ] && echo "patchelf ($($PATCHELF --version))" || echo "none (wrappers)")"
  echo
  echo "programs:"
} >"$MANIFEST"

ELFS=() # every ELF put into the bundle, for the library walk
found_program() { # name -> path in BUILD, or nothing
  local all
  all=$(find "$BUILD" -path '*/CMakeFiles' -prune -o -type f -name "$1" -perm -u+x -print 2>/dev/null || true)
  echo "${all%%$'\n'*}"
}
for p in "${PROGRAMS[@]}"; do
  src=$(found_program "$p")
  [ -n "$src" ] || continue
  cp "$src" "$EXEDIR/$p"
  chmod u+w "$EXEDIR/$p"
  # Debug info is most of a RelWithDebInfo binary; the build dir keeps the unstripped copy.
  command -v strip >/dev/null && strip --strip-unneeded "$EXEDIR/$p"
  ELFS+=("$EXEDIR/$p")
  echo "  bin/$p  <- ${src#$BUILD/}" >>"$MANIFEST"
done
for p in "${REQUIRED[@]}"; do
  [ -f "$EXEDIR/$p" ] || die "$BUILD has no $p (build it first: cmake --build $BUILD --target $p)"
done

# The servers: Go binaries, needing only libc (checked by the same library walk below).
add_server() { # name, path or empty, required(1/0)
  local name=$1 src=$2
  if [ -z "$src" ] || [ ! -x "$src" ]; then
    [ "$3" = 1 ] && die "no $name (install it, or name it with ${name^^}=path)"
    return 0
  fi
  cp -L "$src" "$OUT/bin/$name"
  ELFS+=("$OUT/bin/$name")
  # etcdctl has a 'version' command where the others have --version.
  local v
  if [ "$name" = etcdctl ]; then v=$("$src" version 2>/dev/null | head -1 || true); else v=$("$src" --version 2>/dev/null | head -1 || true); fi
  echo "  bin/$name  <- $src (${v:-version unknown})" >>"$MANIFEST"
}
add_server nats-server "${NATS_SERVER:-$(command -v nats-server || true)}" 1
add_server etcd "${ETCD:-$(command -v etcd || true)}" 1
add_server etcdctl "${ETCDCTL:-$(command -v etcdctl || true)}" 0
[ "${MG_BUNDLE_PROMTOOL:-0}" = 1 ] && add_server promtool "${PROMTOOL:-$(command -v promtool || true)}" 1

# Libraries: ldd gives the whole closure of each ELF as the loader would resolve it here.
echo >>"$MANIFEST"
echo "libraries:" >>"$MANIFEST"
declare -A LIBS=()
for f in "${ELFS[@]}"; do
  out=$(ldd "$f" 2>&1) || {
    # Static binaries ("not a dynamic executable") need nothing.
    grep -q 'not a dynamic executable' <<<"$out" && continue
    die "ldd $f failed: $out"
  }
  if grep -q 'not found' <<<"$out"; then
    die "$f: libraries not found here: $(grep 'not found' <<<"$out" | tr -s ' \t' ' ')"
  fi
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] && [ -n "$path" ] && [ "${path:0:1}" = / ] || continue
    [[ $name =~ $EXCLUDE ]] && continue
    [ -n "${MG_BUNDLE_EXCLUDE:-}" ] && [[ $name =~ $MG_BUNDLE_EXCLUDE ]] && continue
    LIBS[$name]=$path
  done <<<"$out"
done
for name in $(printf '%s\n' "${!LIBS[@]}" | sort); do
  src=${LIBS[$name]}
  cp -L "$src" "$OUT/lib/$name"
  chmod u+w "$OUT/lib/$name"
  pkg=$(dpkg -S "$(readlink -f "$src")" 2>/dev/null | head -1 | cut -d: -f1 || true)
  [ -z "$pkg" ] && pkg=$(dpkg -S "$src" 2>/dev/null | head -1 | cut -d: -f1 || true)
  echo "  lib/$name  <- $src${pkg:+ ($pkg $(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || true))}" >>"$MANIFEST"
done

# RPATH: the programs look in ../lib, the libraries beside themselves. DT_RPATH rather than
# DT_RUNPATH: it is searched before LD_LIBRARY_PATH and also for indirect dependencies.
if [ -n "$PATCHELF" ]; then
  for p in "${PROGRAMS[@]}"; do
    [ -f "$OUT/bin/$p" ] && "$PATCHELF" --force-rpath --set-rpath '$ORIGIN/../lib' "$OUT/bin/$p"
  done
  for l in "$OUT"/lib/*.so*; do
    [ -e "$l" ] && "$PATCHELF" --force-rpath --set-rpath '$ORIGIN' "$l"
  done
else
  for p in "${PROGRAMS[@]}"; do
    [ -f "$OUT/libexec/$p" ] || continue
    cat >"$OUT/bin/$p" <<EOF
#!/bin/sh
# Runs libexec/$p with the bundle's libraries first.
B=\$(cd "\$(dirname "\$0")/.." && pwd)
LD_LIBRARY_PATH=\$B/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH} exec "\$B/libexec/$p" "\$@"
EOF
    chmod +x "$OUT/bin/$p"
  done
fi

# The lowest glibc the bundle runs on: the newest GLIBC_x.y symbol version any of its files asks for.
GLIBC_MIN=$(for f in "${ELFS[@]}" "$OUT"/lib/*.so*; do
  [ -e "$f" ] && objdump -T "$f" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*'
done | sed 's/GLIBC_//' | sort -u -V | tail -1)
{
  echo
  echo "needs:  glibc >= ${GLIBC_MIN:-unknown} and x86-64 ($(uname -m) here); the NVIDIA driver for CUDA workers"
} >>"$MANIFEST"

# Data and scripts.
RANKS=${MAGNETO_O200K_PATH:-$ROOT/tests/node_modules/gpt-tokenizer/data/o200k_base.tiktoken}
[ -f "$RANKS" ] || die "no o200k ranks file at $RANKS (run tests/setup-node.sh, or set MAGNETO_O200K_PATH)"
cp "$RANKS" "$OUT/share/o200k_base.tiktoken"
cp "$ROOT/tests/servers.sh" "$OUT/share/servers.sh"
sed "s/@GLIBC_MIN@/${GLIBC_MIN:-0}/" "$HERE/env.sh" >"$OUT/env.sh"
cp "$HERE/bundle-run.sh" "$OUT/bundle-run.sh"
cp "$HERE/README.md" "$OUT/README.md"
chmod +x "$OUT/bundle-run.sh"

# Self-check: every bundled library resolves to the bundle's copy, with no environment help.
if [ -n "$PATCHELF" ]; then
  for f in "${ELFS[@]}"; do
    res=$(env -u LD_LIBRARY_PATH ldd "$f" 2>&1 || true)
    grep -q 'not found' <<<"$res" && die "$f: $(grep 'not found' <<<"$res")"
    for name in "${!LIBS[@]}"; do
      line=$(grep -F "$name =>" <<<"$res" || true)
      [ -z "$line" ] || [[ $line == *"$OUT/bin/../lib/$name "* || $line == *"$OUT/lib/$name "* ]] ||
        die "$f resolves $name outside the bundle: $line"
    done
  done
fi

size=$(du -sh "$OUT" | cut -f1)
echo "make-bundle: $OUT ($size, ${#ELFS[@]} programs, ${#LIBS[@]} libraries, glibc >= ${GLIBC_MIN:-?})"
if [ -n "$TAR" ]; then
  tar -C "$(dirname "$OUT")" -cf - "$(basename "$OUT")" | xz -T2 -6 >"$OUT.tar.xz"
  echo "make-bundle: $OUT.tar.xz ($(du -sh "$OUT.tar.xz" | cut -f1))"
fi
