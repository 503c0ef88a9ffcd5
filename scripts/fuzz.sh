#!/usr/bin/env bash
# Fuzzes each target for a bounded time, keeps what crashes as regression
# cases and fails if anything did; then replays the kept cases, the seeds and
# the corpus with a plain `cargo test` (fuzz/tests/replay.rs).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   # default: 60 s each, all targets
#
# Targets: request_parse mask_stream ws_frame_tap policy_parse (fuzz/src/*.rs
# says what each checks). One process per target (-jobs=1), one target at a
# time. A crash input is copied to fuzz/regressions/<target>/: commit it with
# the fix, and the replay test keeps it failing until the bug is fixed.
#
# Installs cargo-fuzz from crates.io if it is missing (idempotent).
#
# Why RUSTC_BOOTSTRAP=1: only the stable toolchain is available, and
# cargo-fuzz builds with unstable rustc flags (`-Z` options for the
# sanitizer-coverage instrumentation libFuzzer needs). RUSTC_BOOTSTRAP=1 lets
# stable rustc accept them; it is set for the fuzz build only, so the
# product's own builds stay on plain stable. `--sanitizer none`: the code
# under test forbids `unsafe`, so AddressSanitizer would mostly check the
# standard library at half the speed; panics (assertion failures, overflow,
# indexing) are what these targets look for.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECS=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(request_parse mask_stream ws_frame_tap policy_parse)

TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
FUZZ_FLAGS=(--sanitizer none --features libfuzzer)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

fuzz/seed.sh
# The instrumented release build of the dependencies (kube, k8s-openapi, cel,
# ...) takes minutes on two cores and changes only with Cargo.lock, so its
# target dir lives outside the checkout (CI clones fresh) and is reused;
# cargo rebuilds whatever changed, and builds it all when the cache is gone.
FUZZ_TARGET=${MCP_WARDEN_FUZZ_TARGET:-${XDG_CACHE_HOME:-$HOME/.cache}/mcp-warden/fuzz-target}
mkdir -p "$FUZZ_TARGET"
# All targets in one cargo build (they share every dependency).
RUSTC_BOOTSTRAP=1 cargo fuzz build "${FUZZ_FLAGS[@]}" --target-dir "$FUZZ_TARGET"

failed=()
summary=()
for t in "${TARGETS[@]}"; do
  bin="$FUZZ_TARGET/$TRIPLE/release/$t"
  art="$ROOT/fuzz/artifacts/$t"
  reg="$ROOT/fuzz/regressions/$t"
  mkdir -p "$art" "$reg" "$ROOT/fuzz/corpus/$t"
  rm -f "$art"/crash-* "$art"/timeout-* "$art"/oom-* "$art"/leak-* "$art"/fuzz-*.log
  echo "==> fuzzing $t for ${SECS}s"
  # -jobs=1: one fuzzing process, its output in fuzz-0.log (in $art).
  # Regression inputs are read first: one that still crashes fails at once.
  set +e
  dict=()
  [ -f "$ROOT/fuzz/dicts/$t.dict" ] && dict=(-dict="$ROOT/fuzz/dicts/$t.dict")
  (cd "$art" && "$bin" "$ROOT/fuzz/corpus/$t" "$reg" "${dict[@]}" \
    -max_total_time="$SECS" -jobs=1 -timeout=10 -rss_limit_mb=1024 \
    -print_final_stats=1 -artifact_prefix="$art/" >/dev/null 2>&1)
  rc=$?
  set -e
  log="$art/fuzz-0.log"
  [ -f "$log" ] || : >"$log"
  stats=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  execs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$stats")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$stats")
  corp=$(sed -nE 's/.* corp: ([0-9]+)\/([0-9]+[a-zA-Z]*).*/\1 files, \2/p' <<<"$stats")
  crashes=()
  for f in "$art"/crash-* "$art"/timeout-* "$art"/oom-* "$art"/leak-*; do
    [ -e "$f" ] || continue
    known=
    for g in "$reg"/*; do
      if [ -f "$g" ] && cmp -s "$f" "$g"; then known=$(basename "$g"); fi
    done
    if [ -n "$known" ]; then
      crashes+=("$known (still failing)")
    else
      cp "$f" "$reg/"
      crashes+=("$(basename "$f")")
    fi
  done
  summary+=("$(printf '%-14s exec/s %-6s runs %-9s cov %-5s ft %-6s corpus %s' \
    "$t" "${execs:-?}" "${runs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}")")
  if [ ${#crashes[@]} -gt 0 ] || [ $rc -ne 0 ]; then
    failed+=("$t")
    echo "!! $t failed (exit $rc); kept in fuzz/regressions/$t/: ${crashes[*]:-none}"
    grep -E -A20 'panicked at|deadly signal|ERROR: libFuzzer|out-of-memory|timeout after' "$log" |
      grep -vE '^ +[0-9]+: |^ +at ' | head -40 || true
  fi
done

echo
echo "==> fuzzing summary (${SECS}s per target)"
printf '  %s\n' "${summary[@]}"

echo
echo "==> replaying fuzz/regressions, fuzz/seeds and fuzz/corpus (cargo test)"
# The workspace's target dir: most of the debug dependencies are built there
# already (and without RUSTC_BOOTSTRAP, which cargo would rebuild them for).
# Not --locked: fuzz/Cargo.lock follows the workspace's path crates, and a
# dependency added to shared/ or sidecar/ must not break fuzzing.
set +e
CARGO_TARGET_DIR="$ROOT/target" cargo test --manifest-path fuzz/Cargo.toml
replay=$?
set -e

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]} (inputs kept in fuzz/regressions/)" >&2
fi
if [ $replay -ne 0 ]; then
  echo "the replay of fuzz/regressions, fuzz/seeds or fuzz/corpus failed" >&2
fi
[ ${#failed[@]} -eq 0 ] && [ $replay -eq 0 ]
