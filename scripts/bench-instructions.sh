#!/usr/bin/env bash
# Instructions per proxied GET of the sidecar (issue 14): a figure that does not depend on the machine's
# load, unlike the latencies of scripts/bench.sh. Not part of the test suite.
#
# Builds the release binaries, installs valgrind and h2load from Debian if missing, then runs
# scripts/bench/instructions.py: kube-apisim and a collector, and for each configuration the sidecar
# under callgrind, 2,000 GETs of a ~1.3 KB Pod one at a time over one HTTP/2 connection, minus an idle
# baseline of the same length. Prints a table and appends the run to bench/instructions.json.
#
#   scripts/bench-instructions.sh                                  # deployed, no-collector
#   scripts/bench-instructions.sh --configs deployed,deployed-secret,no-collector
#   scripts/bench-instructions.sh --config 'fsync-always=deployed:--spool-sync-interval always'
#   scripts/bench-instructions.sh --sidecar /tmp/old/mcp-warden-sidecar --label before
#   scripts/bench-instructions.sh --rss          # no callgrind: RSS idle and after the GETs, by kind
#                                                # (heap, other anonymous, file-backed) and threads
#   scripts/bench-instructions.sh --rss --watches 1000 [--watch-h2]   # and with 1,000 watches open
#
# Environment: BENCH_BUILD (musl, the default: the sidecar as the image ships it; or gnu), BENCH_SKIP_BUILD=1, BENCH_KEEP_TMP=1 (keeps the callgrind dumps for callgrind_annotate).
# Takes about a minute per configuration on 2 cores (the sidecar runs ~50x slower under callgrind).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[bench-instructions.sh] %s\n' "$*" >&2; }

need=()
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v valgrind >/dev/null || need+=(valgrind)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} from Debian"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null ||
    { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
fi
# HTTP/2 watches (--watches N --watch-h2) speak through the h2 package.
python3 -c 'import h2' 2>/dev/null || python3 -m pip install --quiet h2 2>/dev/null ||
  python3 -m pip install --quiet --break-system-packages h2

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
  log "building release binaries"
  cargo build --release --locked -p mcp-warden-tests --bin kube-apisim --bin mcp-warden-collector
  if [ "${BENCH_BUILD:-musl}" = gnu ]; then
    cargo build --release --locked -p mcp-warden-sidecar --bin mcp-warden-sidecar
  else
    scripts/build-musl.sh   # the sidecar as the image ships it (static musl)
  fi
fi

exec python3 scripts/bench/instructions.py "$@"
