# shellcheck shell=bash
# env.sh - source this to use a magneto bundle from wherever it lies:
#   . /shared/magneto-bundle/env.sh
# Puts the bundle's bin/ first on PATH and points the programs at the bundled o200k ranks file.
# The programs find their libraries themselves (RPATH, or the wrappers in bin/), so
# LD_LIBRARY_PATH is left alone and other programs of the shell keep the system's libraries.
# Works from bash and zsh; make-bundle.sh fills in the glibc figure below.

if [ -n "${BASH_SOURCE:-}" ]; then
  MAGNETO_BUNDLE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
elif [ -n "${ZSH_VERSION:-}" ]; then
  # shellcheck disable=SC2296 # zsh's own expansion: the file being sourced
  MAGNETO_BUNDLE=$(cd "$(dirname "${(%):-%x}")" && pwd)
else
  MAGNETO_BUNDLE=$(cd "$(dirname "$0")" && pwd)
fi
export MAGNETO_BUNDLE
case ":$PATH:" in
  *":$MAGNETO_BUNDLE/bin:"*) ;;
  *) export PATH="$MAGNETO_BUNDLE/bin:$PATH" ;;
esac
# The frontend's --tokenizer, magneto-bench's ranks file, the benchmark programs' ranks file.
export MAGNETO_TOKENIZER="${MAGNETO_TOKENIZER:-$MAGNETO_BUNDLE/share/o200k_base.tiktoken}"
export MAGNETO_O200K_PATH="${MAGNETO_O200K_PATH:-$MAGNETO_BUNDLE/share/o200k_base.tiktoken}"
export MAGNETO_TOK_RANKS="${MAGNETO_TOK_RANKS:-$MAGNETO_BUNDLE/share/o200k_base.tiktoken}"

# A machine whose glibc is older than the build machine's cannot run the bundle: say so now
# rather than with a loader error per program.
mg_bundle_glibc_need=@GLIBC_MIN@
mg_bundle_glibc_have=$(getconf GNU_LIBC_VERSION 2>/dev/null | sed 's/^glibc //')
case $mg_bundle_glibc_need in
  '' | 0 | *[!0-9.]*) ;; # not filled in (the template itself)
  *)
    if [ -n "$mg_bundle_glibc_have" ] &&
      [ "$(printf '%s\n%s\n' "$mg_bundle_glibc_need" "$mg_bundle_glibc_have" | sort -V | head -1)" != "$mg_bundle_glibc_need" ]; then
      echo "magneto bundle: this machine has glibc $mg_bundle_glibc_have; the bundle needs >= $mg_bundle_glibc_need (make it on an older system)" >&2
    fi
    ;;
esac
unset mg_bundle_glibc_need mg_bundle_glibc_have
