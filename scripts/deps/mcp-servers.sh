#!/usr/bin/env bash
# Installs what the real-MCP-server tests and the demo need, idempotently:
#
# - kubernetes-mcp-server 0.0.67 (github.com/containers/kubernetes-mcp-server),
#   whose Linux binary ships in the npm package
#   kubernetes-mcp-server-linux-amd64. We `npm pack` it (no install, no
#   scripts run) and keep the binary, outside the checkout (CI clones fresh):
#   ${XDG_CACHE_HOME:-$HOME/.cache}/mcp-warden/kubernetes-mcp-server-0.0.67/kubernetes-mcp-server
# - the official MCP SDK for Python (`mcp` on PyPI), which drives it.
#
# Prints the binary's directory on stdout.
set -euo pipefail

version=0.0.67
dir="${XDG_CACHE_HOME:-$HOME/.cache}/mcp-warden/kubernetes-mcp-server-$version"
bin="$dir/kubernetes-mcp-server"

if ! python3 -c 'import mcp' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check 'mcp>=1.20' >&2
fi

if [[ -x "$bin" ]] && "$bin" --version >/dev/null 2>&1; then
  echo "$dir"
  exit 0
fi

mkdir -p "$dir"
work="$(mktemp -d "$dir.XXXXXX")"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "kubernetes-mcp-server-linux-amd64@$version" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/bin/kubernetes-mcp-server-linux-amd64
install -m 0755 "$work/package/bin/kubernetes-mcp-server-linux-amd64" "$bin.tmp"
mv "$bin.tmp" "$bin"
"$bin" --version >&2
echo "$dir"
