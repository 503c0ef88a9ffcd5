#!/usr/bin/env bash
# memcpy of glibc and of musl on this machine, per call, by size and by
# relative alignment: the C library is the image's (static musl) choice, and
# the sidecar's copies (TLS records, h2 frames, the masker's buffer) are at
# arbitrary byte offsets. Prints a table and writes bench/memcpy.md.
# Benchmark, not a test. Installs musl-tools (musl-gcc) if missing.
#
#   scripts/memcpy-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v musl-gcc >/dev/null; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y --no-install-recommends musl-tools >/dev/null ||
    { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends musl-tools >/dev/null; }
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -O2 -o "$tmp/glibc" scripts/bench/memcpy.c
musl-gcc -O2 -static -o "$tmp/musl" scripts/bench/memcpy.c
"$tmp/glibc" > "$tmp/glibc.tsv"
"$tmp/musl" > "$tmp/musl.tsv"
out=bench/memcpy.md
{
  echo "# memcpy per call: glibc $(ldd --version | head -1 | awk '{print $NF}') and musl ($(date -u +%Y-%m-%d), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
  echo
  echo "Written by scripts/memcpy-bench.sh. Misaligned: destination 3 bytes and source 1 byte past a multiple of 8."
  echo
  echo "| bytes | alignment | glibc ns/call | musl ns/call | musl / glibc |"
  echo "|---:|---|---:|---:|---:|"
  paste "$tmp/glibc.tsv" "$tmp/musl.tsv" | awk -F'\t' '{printf "| %s | %s | %.1f | %.1f | %.1f |\n", $1, $2, $3, $7, $7 / $3}'
} > "$out"
cat "$out"
