#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from the test fixtures, the unit tests' inputs
# and the few hand-written seeds under fuzz/seeds/<target>/. Idempotent:
# seed files are named seed-*, libFuzzer's own finds (hash names) are kept.
#
#   fuzz/seed.sh
#
# Input formats (see fuzz/src/*.rs and docs/fuzzing.md):
#   request_parse  "METHOD /path?query\nheader: value\n..."
#   mask_stream    [mode][split] body   (mode bit 0: raw/planted, bits 1-2: JSON/watch/log,
#                  bits 3-5: resource, bits 6-7: verb; see fuzz/src/mask_stream.rs)
#   ws_frame_tap   [mode][seed] records [dir|len][bytes]...
#   policy_parse   a policy file
set -euo pipefail
cd "$(dirname "$0")"
ROOT=..
C=corpus

for t in request_parse mask_stream ws_frame_tap policy_parse; do
  mkdir -p "$C/$t"
  rm -f "$C/$t"/seed-*
  if [ -d "seeds/$t" ]; then
    for f in "seeds/$t"/*; do
      [ -f "$f" ] && cp "$f" "$C/$t/seed-$(basename "$f")"
    done
  fi
done

# request_parse: every request target in shared/src/attrs.rs (its unit-test
# tables and HOSTILE_PATH_EXAMPLES), with the method the table gives or GET.
# Impersonation headers come from fuzz/seeds/request_parse/.
n=0
{ grep -o '("[A-Z]*", "/[^"]*"' "$ROOT/shared/src/attrs.rs" || true; } | sed -E 's/^\("([A-Z]*)", "(.*)"$/\1 \2/' |
  while IFS= read -r line; do
    n=$((n + 1)); printf '%s\n' "$line" > "$C/request_parse/seed-attrs-$n"
  done
{ grep -o '"/[a-z][^" ]*"' "$ROOT/shared/src/attrs.rs" || true; } | tr -d '"' | sort -u |
  while IFS= read -r path; do
    n=$((n + 1)); printf 'GET %s\n' "$path" > "$C/request_parse/seed-path-$n"
  done

# mask_stream: every raw JSON string of the masking unit tests and the JSON
# fixtures, as a JSON document (secrets, list), a watch stream and a log,
# split one byte at a time and in 7-byte chunks.
k=0
mask_seed() { # name, file
  k=$((k + 1))
  { printf '\x40\x01'; cat "$2"; } > "$C/mask_stream/seed-$1-json-$k"
  { printf '\x50\x05'; cat "$2"; } > "$C/mask_stream/seed-$1-json-cm-$k"
  { printf '\x82\x02'; cat "$2"; } > "$C/mask_stream/seed-$1-watch-$k"
  { printf '\x04\x03'; cat "$2"; } > "$C/mask_stream/seed-$1-log-$k"
}
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
{ grep -o 'br#"[^#]*"#' "$ROOT/shared/src/mask/tests.rs" || true; } | sed -E 's/^br#"//; s/"#$//' |
  while IFS= read -r body; do
    printf '%s' "$body" > "$tmp"
    mask_seed unit "$tmp"
  done
for f in "$ROOT"/tests/fixtures/audit/*.json "$ROOT"/tests/fixtures/webhook/*.json; do
  mask_seed "$(basename "$f" .json)" "$f"
done
# A few planted-mode inputs (arbitrary bytes pick the shape).
for i in 1 2 3 4 5 6 7 8; do
  { printf '\x01'; printf "\\x$(printf %02x "$i")"
    head -c 64 /dev/zero | tr '\0' "\\$(printf %03o $((i * 29)))"; } > "$C/mask_stream/seed-planted-$i"
done

# policy_parse: the policy fixtures (valid and invalid), the embedded default
# and the chart's policy.
for f in "$ROOT"/tests/fixtures/policies/*.yaml "$ROOT"/shared/src/policy/default.yaml; do
  cp "$f" "$C/policy_parse/seed-$(basename "$f")"
done
find "$ROOT/charts" -name '*.yaml' -path '*polic*' 2>/dev/null | while IFS= read -r f; do
  cp "$f" "$C/policy_parse/seed-chart-$(basename "$f")"
done

for t in request_parse mask_stream ws_frame_tap policy_parse; do
  printf '%-14s %4d seed files\n' "$t" "$(find "$C/$t" -name 'seed-*' | wc -l)"
done
