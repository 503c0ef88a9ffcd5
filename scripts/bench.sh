#!/usr/bin/env bash
# Benchmarks: the sidecar against direct access, nginx and kubectl proxy, in one run.
#
# Not part of the test suite. Builds release binaries, installs the load tools from Debian if missing
# (h2load from nghttp2-client, wrk, nginx-light), then runs scripts/bench/bench.py, which starts
# kube-apisim, a collector, the sidecar (as deployed: policy, masking, recording, spool), the same sidecar
# with recording off (no --collector-url; its stdout of events to /dev/null) and nginx (TLS reverse proxy)
# on 127.0.0.1 and compares them with direct access on the same upstream (issue 14's table: 800 req/s
# fixed rate, 16 connections x 10 streams at maximum), interleaved, several runs, medians; then evaluates
# issue 14's goals. Writes bench/results.md and bench/results.json and prints the table.
#
#   scripts/bench.sh                      # 3 runs (about 10-15 minutes on 2 cores)
#   scripts/bench.sh --runs 5 --seconds 10
#   scripts/bench.sh --only paths         # just the path comparison (also: lists,watches,ready,webhook)
#   scripts/bench.sh --paths sidecar-norec,kubectl-proxy   # paths besides direct, nginx, sidecar
#
# The sidecar and webhook are measured as the image ships them: static x86_64-unknown-linux-musl binaries
# of the release profile, built as the Dockerfile builds them (scripts/build-musl.sh; BENCH_BUILD=gnu
# measures the dynamic glibc build instead, BENCH_BUILD=gnu-static a static glibc build with mimalloc).
# kube-apisim and the collector are ordinary release builds.
#
# Environment: BENCH_BUILD (musl, the default, gnu or gnu-static), BENCH_KUBECTL (default /usr/lib/google-cloud-sdk/bin/kubectl.1.32), BENCH_SKIP_BUILD=1, BENCH_KEEP_TMP=1,
# BENCH_NO_MASK_BENCH=1 (skip building the streaming-masker micro-bench shared/benches/mask_stream.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[bench.sh] %s\n' "$*" >&2; }

need=()
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} from Debian"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null ||
    { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
fi
export PATH="$PATH:/usr/sbin"
# HTTP/2 watches (scripts/bench/watches.py --h2) speak through the h2 package.
python3 -c 'import h2' 2>/dev/null || python3 -m pip install --quiet h2 2>/dev/null ||
  python3 -m pip install --quiet --break-system-packages h2
[ -x "${BENCH_KUBECTL:-/usr/lib/google-cloud-sdk/bin/kubectl.1.32}" ] || { log "kubectl not found at ${BENCH_KUBECTL:-/usr/lib/google-cloud-sdk/bin/kubectl.1.32}"; exit 1; }

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
  log "building release binaries"
  cargo build --release --locked -p mcp-warden-tests --bin kube-apisim --bin mcp-warden-collector
  if [ "${BENCH_BUILD:-musl}" = gnu ]; then
    cargo build --release --locked -p mcp-warden-sidecar -p mcp-warden-webhook \
      --bin mcp-warden-sidecar --bin mcp-warden-webhook
  elif [ "${BENCH_BUILD:-musl}" = gnu-static ]; then
    # Not what the image ships: static glibc (its memcpy) with mimalloc, for comparison.
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target x86_64-unknown-linux-gnu \
      -p mcp-warden-sidecar -p mcp-warden-webhook --bin mcp-warden-sidecar --bin mcp-warden-webhook
  else
    # What the image ships (Dockerfile): static musl binaries with musl's C library and malloc.
    scripts/build-musl.sh
  fi
fi

# The masking helper's streaming-masker micro-bench (optional: the figure for the masker alone).
if [ -z "${BENCH_NO_MASK_BENCH:-}" ] && [ -z "${BENCH_MASK_STREAM_EXE:-}" ]; then
  BENCH_MASK_STREAM_EXE=$(cargo test --release --locked -p mcp-warden-shared --bench mask_stream --no-run \
    --message-format=json 2>/dev/null | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="mask_stream" and m.get("executable"):
        print(m["executable"])' || true)
  export BENCH_MASK_STREAM_EXE
  [ -n "$BENCH_MASK_STREAM_EXE" ] || log "mask_stream micro-bench not built; skipping that figure"
fi

py=""
cleanup() {
  # bench.py stops what it started; this is the backstop if it is killed hard.
  if [ -n "$py" ] && kill -0 "$py" 2>/dev/null; then
    kill -TERM "$py" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$py" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$py" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

python3 scripts/bench/bench.py "$@" &
py=$!
wait "$py"
