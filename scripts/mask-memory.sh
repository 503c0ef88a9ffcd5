#!/usr/bin/env bash
# Peak memory and throughput of response masking over a large Secret list.
#
# Not part of the test suite. Builds in release mode, then masks a 500-Secret
# list and a 50,000-Secret list (~200 MB) with the streaming masker
# (shared/benches/mask_stream.rs: the list is generated item by item into
# 64 KiB chunks, as the proxy receives it from the socket) and prints peak
# RSS of each run next to the other, plus MB of JSON per CPU-second of the
# masker (the generator not counted).
#
# This measures the masking path (StreamMasker, the same code MaskedBody runs
# for every chunk of an upstream body) in its own process, not a full
# sidecar + API server round trip.
#
# Usage: scripts/mask-memory.sh [SMALL] [LARGE]
set -euo pipefail
cd "$(dirname "$0")/.."

small=${1:-500}
large=${2:-50000}

echo "building (release)..." >&2
exe=$(cargo test --release -p mcp-warden-shared --bench mask_stream --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="mask_stream" and m.get("executable"):
        print(m["executable"])')
[ -x "$exe" ] || { echo "bench binary not built" >&2; exit 1; }

run() {
  local n=$1 out
  out=$(MASK_BENCH_SECRETS=$n /usr/bin/time -f 'time_max_rss_kib=%M' "$exe" --ignored --nocapture --test-threads 1 mask_secret_list 2>&1)
  echo "$out" | grep -oE 'list=.*mb_per_cpu_s=[0-9]+|time_max_rss_kib=[0-9]+' | tr '\n' ' '
  echo
}

printf '%s\n' "--- streaming masker, default masking, Secret list"
r_small=$(run "$small")
r_large=$(run "$large")
echo "$r_small"
echo "$r_large"
rss() { echo "$1" | sed -n 's/.*time_max_rss_kib=\([0-9]*\).*/\1/p'; }
mbs() { echo "$1" | sed -n 's/.*mb_per_cpu_s=\([0-9]*\).*/\1/p'; }
inmb() { echo "$1" | sed -n 's/.*input_mb=\([0-9.]*\).*/\1/p'; }
printf '%-10s %10s %14s %8s\n' secrets input_MB peak_RSS_MiB MB/cpu-s
printf '%-10s %10s %14s %8s\n' "$small" "$(inmb "$r_small")" "$(( $(rss "$r_small") / 1024 ))" "$(mbs "$r_small")"
printf '%-10s %10s %14s %8s\n' "$large" "$(inmb "$r_large")" "$(( $(rss "$r_large") / 1024 ))" "$(mbs "$r_large")"
