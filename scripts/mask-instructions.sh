#!/usr/bin/env bash
# Instructions the streaming masker executes per byte of JSON: a figure that
# does not depend on the machine's load, unlike the MB/s of
# scripts/mask-memory.sh. Not part of the test suite.
#
# Builds shared/benches/mask_stream.rs in release mode and runs each list
# (500 Secrets, ~2.0 MB; 500 Pods, ~1.2 MB; 500 ConfigMaps with nothing to
# mask, ~0.7 MB; default masking) under
# `valgrind --tool=callgrind`, collecting only inside the bench's `mask_piece`
# and `mask_end` (the masker, and the token scrub when asked for; the list
# generator is not counted). Prints
# instructions per input byte and per item, and how many items the byte-level
# path masked and how many it left to the tree engine.
#
# Usage: scripts/mask-instructions.sh [ITEMS]     (default 500)
# Environment: MASK_BENCH_TOKEN=1 also scrubs a token from every string and
# from the output bytes, as the sidecar does (any other value: that token); MASK_INSTR_KEEP=DIR keeps the callgrind files in DIR
# (for callgrind_annotate).
set -euo pipefail
cd "$(dirname "$0")/.."

items=${1:-500}
command -v valgrind >/dev/null || {
  echo "valgrind is needed (apt-get install valgrind)" >&2
  exit 1
}
echo "building (release)..." >&2
exe=$(cargo test --release -p mcp-warden-shared --bench mask_stream --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="mask_stream" and m.get("executable"):
        print(m["executable"])')
[ -x "$exe" ] || { echo "bench binary not built" >&2; exit 1; }

dir=${MASK_INSTR_KEEP:-$(mktemp -d)}
mkdir -p "$dir"
printf '%-11s %6s %10s %14s %10s %10s %9s %8s\n' list items input_MB instructions per_byte per_item by_bytes by_tree
for t in secret pod configmap; do
  out=$(MASK_BENCH_SECRETS=$items valgrind --tool=callgrind --callgrind-out-file="$dir/$t.out" \
    --toggle-collect='*mask_piece*' --toggle-collect='*mask_end*' \
    "$exe" --ignored --nocapture --test-threads 1 "mask_${t}_list" 2>&1)
  mb=$(echo "$out" | sed -n 's/.*input_bytes=\([0-9]*\).*/\1/p' | head -1)
  ir=$(echo "$out" | sed -n 's/.*Collected : \([0-9]*\).*/\1/p' | head -1)
  ub=$(echo "$out" | sed -n 's/.*units_by_bytes=\([0-9]*\).*/\1/p' | head -1)
  ut=$(echo "$out" | sed -n 's/.*units_by_tree=\([0-9]*\).*/\1/p' | head -1)
  [ -n "$mb" ] && [ -n "$ir" ] || { echo "$out" | tail -20 >&2; exit 1; }
  python3 -c "mb=int('$mb')/1e6; ir=int('$ir'); n=int('$items')
print(f'{\"$t\"+\"s\":<11} {n:>6} {mb:>10.2f} {ir:>14,} {ir/(mb*1e6):>10.1f} {ir/n:>10,.0f} {\"${ub:--}\":>9} {\"${ut:--}\":>8}')"
done
[ -n "${MASK_INSTR_KEEP:-}" ] || rm -rf "$dir"
