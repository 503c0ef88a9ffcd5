#!/usr/bin/env bash
# The kubectl walk-through (no root needed): kube-apisim (the stand-in API server) with sample objects, the
# mcp-warden sidecar in front of it with the example policy, masking and a
# local collector, and a short kubectl session that uses ONLY what the sidecar
# gives an app (its local CA and local token). Stops everything it started.
#
#   scripts/demo/kubectl.sh   (scripts/demo.sh runs it when not root)
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)

say()  { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; }

say "building (cargo build --bins)"
cargo build --quiet --workspace --bins
BIN="$ROOT/target/debug"

WORK=$(mktemp -d /tmp/mcp-warden-demo.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for FILE-or-URL what
  for _ in $(seq 1 100); do
    if [ -e "$1" ] || curl -fsS "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $2" >&2; exit 1
}

say "starting kube-apisim with sample objects (tests/fixtures/seed-demo.yaml)"
APISIM_PORT=$(free_port)
"$BIN/kube-apisim" --listen "127.0.0.1:$APISIM_PORT" --state-dir "$WORK/apisim" \
  --seed tests/fixtures/seed-demo.yaml >"$WORK/apisim.log" 2>&1 &
PIDS+=($!)
wait_for "$WORK/apisim/token" "kube-apisim"

say "starting a local audit collector"
COLLECTOR_PORT=$(free_port)
"$BIN/mcp-warden-collector" --listen "127.0.0.1:$COLLECTOR_PORT" --out-dir "$WORK/collector" \
  >"$WORK/collector.log" 2>&1 &
PIDS+=($!)

say "starting the mcp-warden sidecar (policy: scripts/demo/policy.yaml)"
SIDECAR_PORT=$(free_port); ADMIN_PORT=$(free_port)
mkdir -p "$WORK/local" "$WORK/spool"
"$BIN/mcp-warden-sidecar" \
  --listen "127.0.0.1:$SIDECAR_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --upstream "https://127.0.0.1:$APISIM_PORT" \
  --upstream-ca-file "$WORK/apisim/ca.crt" --upstream-token-file "$WORK/apisim/token" \
  --local-dir "$WORK/local" --policy-file "$ROOT/scripts/demo/policy.yaml" \
  --collector-url "http://127.0.0.1:$COLLECTOR_PORT" --spool-dir "$WORK/spool" \
  --pod-name demo-mcp-server --pod-namespace default \
  >"$WORK/sidecar.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$ADMIN_PORT/readyz" "the sidecar to be ready"

# The app's view: a kubeconfig built only from the sidecar's local files.
KCFG="$WORK/app-kubeconfig"
cat >"$KCFG" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:$SIDECAR_PORT", certificate-authority: "$WORK/local/ca.crt"}}]
users: [{name: app, user: {tokenFile: "$WORK/local/token"}}]
contexts: [{name: app, context: {cluster: local, user: app, namespace: default}}]
current-context: app
KUBECONFIG
k() { show "kubectl $*"; kubectl --kubeconfig "$KCFG" --cache-dir "$WORK/kcache" "$@" 2>&1 | sed 's/^/    /' || true; }

say "1. reads are allowed"
k get pods -A
say "2. secret values never leave the sidecar unmasked"
k get secret db-credentials -o jsonpath='{.data.password}'; echo
show "  | base64 -d"
kubectl --kubeconfig "$KCFG" --cache-dir "$WORK/kcache" get secret db-credentials \
  -o jsonpath='{.data.password}' | base64 -d | sed 's/^/    /'; echo
k get configmap app-config -o jsonpath='{.data}'; echo
say "3. the policy denies what it says, with the rule's name"
k get secrets -n prod
k exec web-0 -- echo hi
k delete pod web-0
show "(the pod is still there)"
k get pod web-0
say "4. the real token never reaches the app: the local token is useless upstream"
show "curl https://127.0.0.1:$APISIM_PORT/api -H 'Authorization: Bearer <local token>'"
curl -sS --cacert "$WORK/apisim/ca.crt" -H "Authorization: Bearer $(cat "$WORK/local/token")" \
  "https://127.0.0.1:$APISIM_PORT/api" | sed 's/^/    /'; echo

say "5. every request was recorded (audit.k8s.io/v1 events at the collector)"
sleep 1.5
if [ -f "$WORK/collector/events.ndjson" ]; then
  python3 - "$WORK/collector/events.ndjson" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"    {len(rows)} events received")
for e in rows[-8:]:
    a = e.get("annotations", {})
    ref = e.get("objectRef") or {}
    what = "/".join(x for x in [ref.get("namespace", ""), ref.get("resource", ""), ref.get("name", "")] if x) or e.get("requestURI", "")
    print(f"    {e.get('verb',''):8} {what:40} {e.get('responseStatus',{}).get('code','')}  decision={a.get('mcp-warden.io/decision','')} rule={a.get('mcp-warden.io/rule','')} masked={a.get('mcp-warden.io/masked','')}")
PY
else
  echo "    (no events file yet: see $WORK/collector.log)"
fi

say "sidecar metrics (excerpt)"
curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" | grep -E '^mcp_warden' | head -12 | sed 's/^/    /' || true
say "done; stopping everything"
