#!/usr/bin/env bash
# Install every package magneto needs to build, test and run on Debian 12 (idempotent; quiet when
# everything is already there). Run as root or with sudo available.
set -euo pipefail

PKGS=(
  build-essential bc cmake pkg-config git ca-certificates curl procps iproute2 python3 patchelf
  clang clang-format libclang-rt-14-dev
  libnats-dev nats-server etcd-server etcd-client
  libcurl4-openssl-dev libprotobuf-c-dev protobuf-c-compiler libucx-dev libmicrohttpd-dev
  libjansson-dev libyaml-dev libxxhash-dev libpcre2-dev libcmocka-dev
  prometheus gnuplot-nox
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm (the openai client and tokenizer data for tests): a machine may already have a
# Node.js build that bundles npm, which conflicts with Debian's npm package.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
