#!/usr/bin/env bash
# The demo: the main job as a user meets it. An AI agent's tool calls (the
# official MCP SDK playing the agent) go through the real kubernetes-mcp-server,
# running as the app container of a simulated pod that mcp-warden-webhook
# injected, to kube-apisim (the stand-in API server): reads allowed, Secret and
# env values masked, a delete and an exec denied with the rule named, every
# request recorded. No kubeconfig anywhere: the MCP server uses its in-cluster
# config, which the injection points at the sidecar. The sidecar runs its
# embedded default policy.
#
#   scripts/demo.sh
#
# Installs what it needs (the MCP server from npm, the MCP SDK and the Python
# kubernetes client from PyPI) and builds the workspace. The simulated pod
# uses Linux namespaces and needs root; without root the kubectl walk-through
# (scripts/demo/kubectl.sh) runs instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != "0" ]; then
  cat >&2 <<'MSG'
############################################################################
#  NOT RUNNING AS ROOT: the simulated pod needs Linux namespaces. Running   #
#  the kubectl walk-through (scripts/demo/kubectl.sh) instead.              #
############################################################################
MSG
  exec scripts/demo/kubectl.sh
fi

printf '\n\033[1m== installing what the demo needs, building (cargo build --bins)\033[0m\n'
python3 -c 'import kubernetes' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check kubernetes
bash scripts/deps/mcp-servers.sh >/dev/null
cargo build --quiet --workspace --bins
exec target/debug/mcp-warden-demo
