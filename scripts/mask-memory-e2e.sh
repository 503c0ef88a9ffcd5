#!/usr/bin/env bash
# Peak memory of the sidecar binary while it masks a huge Secret list, end to
# end: kube-apisim loaded with N Secrets (~4 KB each, so 50,000 is ~200 MB of
# JSON), the release sidecar in front of it (embedded default policy: Secret
# data masked), one `curl` list through the sidecar with the local CA and
# token and `Accept-Encoding: identity`. Prints the sidecar's peak RSS
# (VmHWM from /proc/PID/status) for SMALL and LARGE next to each other.
#
# kube-apisim itself holds the whole list in memory; only the sidecar's peak
# is reported. Not part of the test suite (scripts/mask-memory.sh measures the
# streaming masker alone).
#
# Usage: scripts/mask-memory-e2e.sh [SMALL] [LARGE]
set -euo pipefail
cd "$(dirname "$0")/.."

small=${1:-500}
large=${2:-50000}

echo "building (release)..." >&2
cargo build --release -q -p mcp-warden-sidecar --bin mcp-warden-sidecar >&2
cargo build --release -q -p mcp-warden-tests --bin kube-apisim >&2
bin=target/release

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Creates N Secrets in kube-apisim over one keep-alive connection (a seed
# file of 50,000 documents exceeds the YAML parser's document budget). Each:
# ~3 KB of random data (base64 of 2,250 bytes), a password, and a
# last-applied annotation holding the password, as `kubectl apply` leaves it.
# Prints the first Secret's base64 password (checked for leaks later).
load() {
  python3 - "$1" "$2" <<'EOF'
import base64, http.client, json, os, ssl, sys
n, state = int(sys.argv[1]), sys.argv[2]
host, port = open(f"{state}/addr").read().strip().rsplit(":", 1)
token = open(f"{state}/token").read().strip()
ctx = ssl.create_default_context(cafile=f"{state}/ca.crt")
conn = http.client.HTTPSConnection(host, int(port), context=ctx)
hdrs = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
def post(path, obj):
    conn.request("POST", path, body=json.dumps(obj), headers=hdrs)
    r = conn.getresponse()
    body = r.read()
    if r.status != 201:
        sys.exit(f"POST {path}: {r.status} {body[:300]!r}")
post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "load"}})
first = None
for i in range(n):
    pw = base64.b64encode(base64.b64encode(os.urandom(24))).decode()
    first = first or pw
    blob = base64.b64encode(os.urandom(2250)).decode()
    applied = {"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": f"secret-{i}", "namespace": "load"}, "data": {"password": pw}}
    post("/api/v1/namespaces/load/secrets", {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": f"secret-{i}", "namespace": "load", "labels": {"app": "load"},
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(applied)}},
        "type": "Opaque", "data": {"password": pw, "blob": blob}})
print(first)
EOF
}

# wait_file FILE PID: until FILE exists, while PID lives.
wait_file() {
  for _ in $(seq 1 1200); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { echo "process $2 exited; see $(dirname "$1")/../sim.log" >&2; return 1; }
    sleep 0.5
  done
  echo "timed out waiting for $1" >&2; return 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# run N -> prints "N list_MB masked_values baseline_KiB peak_KiB"
run() {
  local n=$1 d="$work/run-$1"
  mkdir -p "$d"
  RUST_LOG=warn "$bin/kube-apisim" --listen 127.0.0.1:0 --state-dir "$d/sim" >"$d/sim.log" 2>&1 &
  local sim_pid=$!
  pids+=("$sim_pid")
  wait_file "$d/sim/addr" "$sim_pid"
  wait_file "$d/sim/token" "$sim_pid"
  wait_file "$d/sim/ca.crt" "$sim_pid"
  local first
  first=$(load "$n" "$d/sim")
  local sim_addr admin listen
  sim_addr=$(cat "$d/sim/addr")
  admin=127.0.0.1:$(free_port)
  listen=127.0.0.1:$(free_port)
  MCP_WARDEN_LOG=warn "$bin/mcp-warden-sidecar" --listen "$listen" --admin-listen "$admin" \
    --upstream "https://$sim_addr" --upstream-ca-file "$d/sim/ca.crt" \
    --upstream-token-file "$d/sim/token" --local-dir "$d/local" \
    --policy-file "$d/no-policy/policy.yaml" --spool-dir "$d/spool" \
    --pod-name mem --pod-namespace default >"$d/sidecar.log" 2>&1 &
  local sc_pid=$!
  pids+=("$sc_pid")
  for _ in $(seq 1 600); do
    curl -fs "http://$admin/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fs "http://$admin/readyz" >/dev/null || { echo "sidecar not ready: $(cat "$d/sidecar.log")" >&2; return 1; }
  local base upstream
  base=$(hwm_kib "$sc_pid")
  # Size of the unmasked list as kube-apisim sends it (direct, not via the sidecar).
  upstream=$(curl -sS --fail --max-time 600 --cacert "$d/sim/ca.crt" \
    -H "Authorization: Bearer $(cat "$d/sim/token")" -H "Accept-Encoding: identity" \
    -o /dev/null -w '%{size_download}' "https://$sim_addr/api/v1/namespaces/load/secrets")
  local size masked
  size=$(curl -sS --fail --max-time 600 --cacert "$d/local/ca.crt" \
    -H "Authorization: Bearer $(cat "$d/local/token")" \
    -H "Accept: application/json" -H "Accept-Encoding: identity" \
    -o "$d/list.json" -w '%{size_download}' \
    "https://$listen/api/v1/namespaces/load/secrets")
  masked=$(grep -o 'KioqTUFTS0VEKioq' "$d/list.json" | wc -l)
  # The planted values must not be there (spot check: the first Secret's).
  if grep -qF "$first" "$d/list.json"; then echo "LEAK: planted value in the list" >&2; return 1; fi
  local peak
  peak=$(hwm_kib "$sc_pid")
  echo "$n $(awk -v b="$upstream" 'BEGIN{printf "%.1f", b/1e6}') $(awk -v b="$size" 'BEGIN{printf "%.1f", b/1e6}') $masked $base $peak"
  kill "$sc_pid" "$sim_pid" 2>/dev/null || true
  wait "$sc_pid" "$sim_pid" 2>/dev/null || true
  rm -f "$d/list.json"
}

r_small=$(run "$small")
r_large=$(run "$large")
printf '%-9s %12s %12s %14s %14s %14s\n' secrets upstream_MB masked_MB masked_values idle_RSS_MiB peak_RSS_MiB
for r in "$r_small" "$r_large"; do
  read -r n up mb masked base peak <<<"$r"
  printf '%-9s %12s %12s %14s %14s %14s\n' "$n" "$up" "$mb" "$masked" "$((base / 1024))" "$((peak / 1024))"
done
