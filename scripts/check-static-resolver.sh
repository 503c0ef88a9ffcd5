#!/usr/bin/env bash
# Checks that a static sidecar binary resolves host names as it must in a
# pod: through /etc/hosts (the webhook's hostAliases) and through the DNS
# server in /etc/resolv.conf (the cluster DNS), with no shared library of the
# C library on disk (the image is distroless/static: no libnss_*.so).
#
#   scripts/check-static-resolver.sh [BINARY]
#   # default: the image's binary, target/x86_64-unknown-linux-musl/release/
#   # mcp-warden-sidecar (scripts/build-musl.sh); also used to vet other
#   # static builds (a static glibc build passes too, bench/results.md)
#
# Needs root (a mount and network namespace of its own: loopback only; the
# machine's /etc and libraries are untouched outside it). Inside it:
# - /etc/hosts names `files-only.test`, /etc/resolv.conf points at a DNS
#   server this script runs on 127.0.0.1:53 that answers `dns-only.test`
#   (and nothing else), and /etc/nsswitch.conf is distroless's
#   `hosts: files dns`;
# - every NSS module and resolver library (`libnss_*`, `libresolv`) is
#   hidden under /dev/null once the helpers are running, so a resolver that
#   needed to load one would fail, and the sidecar must map no shared object
#   at all;
# - the sidecar runs with `--upstream https://NAME:6443` and is sent one
#   request; a TCP listener on 6443 must see the sidecar's connection. (The
#   TLS handshake then fails: only the name lookup is under test.)
# Prints one line per name and exits non-zero if either was not reached.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(readlink -f "${1:-target/x86_64-unknown-linux-musl/release/mcp-warden-sidecar}")
[ -x "$BIN" ] || { echo "no binary at $BIN (build it: scripts/build-musl.sh)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "check-static-resolver.sh needs root (namespaces)" >&2; exit 2; }
command -v openssl >/dev/null || { echo "needs openssl" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=upstream -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
echo "not-a-real-token" > "$work/token"
printf '127.0.0.1 localhost\n127.0.0.1 files-only.test\n' > "$work/hosts"
printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:2\n' > "$work/resolv.conf"
printf 'hosts: files dns\n' > "$work/nsswitch.conf"

cat > "$work/dns.py" <<'EOF'
# A DNS server for one name: A 127.0.0.1 for dns-only.test, NXDOMAIN else.
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
print("ready", flush=True)
while True:
    q, peer = s.recvfrom(512)
    if len(q) < 12:
        continue
    i, labels = 12, []
    while i < len(q) and q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace"))
        i += 1 + q[i]
    qtype = struct.unpack(">H", q[i + 1:i + 3])[0] if i + 3 <= len(q) else 0
    question = q[12:i + 5]
    name = ".".join(labels).lower()
    hit = name == "dns-only.test"
    flags = 0x8180 if hit else 0x8183
    answers = 1 if hit and qtype == 1 else 0
    r = q[:2] + struct.pack(">HHHHH", flags, 1, answers, 0, 0) + question
    if answers:
        r += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 5, 4) + socket.inet_aton("127.0.0.1")
    s.sendto(r, peer)
EOF

cat > "$work/listen.py" <<'EOF'
# Accepts on 127.0.0.1:6443 and prints one line per connection.
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 6443))
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    print("connection", flush=True)
    c.close()
EOF

cat > "$work/client.py" <<'EOF'
# Started before the libraries are hidden (its own are loaded by then): for
# each name, once go-NAME exists, sends one request to the sidecar with the
# token the sidecar wrote for the app, then writes done-NAME.
import http.client, os, ssl, sys, time
w = sys.argv[1]
ctx = ssl._create_unverified_context()
for name in ("files-only.test", "dns-only.test"):
    while not os.path.exists(f"{w}/go-{name}"):
        time.sleep(0.05)
    status = "no answer"
    try:
        token = open(f"{w}/local-{name}/token").read().strip()
        c = http.client.HTTPSConnection("127.0.0.1", 15443, context=ctx, timeout=15)
        c.request("GET", "/api/v1/namespaces/default/pods", headers={"Authorization": f"Bearer {token}"})
        status = c.getresponse().status
    except Exception as e:
        status = repr(e)
    open(f"{w}/done-{name}", "w").write(f"{status}\n")
EOF

cat > "$work/inner.sh" <<'EOF'
set -euo pipefail
w=$1; bin=$2
ip link set lo up
mount --bind "$w/hosts" /etc/hosts
mount --bind "$w/resolv.conf" /etc/resolv.conf
if [ -e /etc/nsswitch.conf ]; then mount --bind "$w/nsswitch.conf" /etc/nsswitch.conf; fi
python3 -u "$w/dns.py" > "$w/dns.log" 2>&1 &
python3 -u "$w/listen.py" > "$w/listen.log" 2>&1 &
python3 -u "$w/client.py" "$w" > "$w/client.log" 2>&1 &
for _ in $(seq 50); do grep -q ready "$w/dns.log" 2>/dev/null && grep -q ready "$w/listen.log" 2>/dev/null && break; sleep 0.1; done
# From here on no NSS module or resolver library can be loaded.
for f in /lib/*/libnss_* /usr/lib/*/libnss_* /lib/*/libresolv.so* /usr/lib/*/libresolv.so*; do
  [ -e "$f" ] && mount --bind /dev/null "$f"
done
fail=0
for name in files-only.test dns-only.test; do
  before=$(grep -c connection "$w/listen.log" || true)
  mkdir -p "$w/local-$name"
  "$bin" --listen 127.0.0.1:15443 --admin-listen 127.0.0.1:15020 --listen-https-alias off \
    --upstream "https://$name:6443" --upstream-ca-file "$w/ca.crt" --upstream-token-file "$w/token" \
    --local-dir "$w/local-$name" > "$w/sidecar-$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do [ -s "$w/local-$name/token" ] && break; sleep 0.1; done
  "$bin" wait-ready --admin-listen 127.0.0.1:15020 --timeout 10s >/dev/null 2>&1 || true
  touch "$w/go-$name"
  for _ in $(seq 200); do [ -e "$w/done-$name" ] && break; sleep 0.1; done
  after=$(grep -c connection "$w/listen.log" || true)
  if maps=$(cat "/proc/$pid/maps" 2>/dev/null); then
    libs=$(printf '%s\n' "$maps" | grep -c '\.so' || true)
  else
    libs=gone
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ "$libs" = gone ]; then
    echo "FAIL  $name: the sidecar exited; its log:"
    sed 's/^/      /' "$w/sidecar-$name.log" | tail -5
    fail=1
  elif [ "$libs" != 0 ]; then
    echo "FAIL  $name: the binary mapped shared objects:"
    printf '%s\n' "$maps" | grep '\.so' | awk '{print "      " $6}' | sort -u
    fail=1
  elif [ "$after" -gt "$before" ]; then
    echo "ok    $name: resolved, the sidecar connected to it"
  else
    echo "FAIL  $name: no connection (client: $(cat "$w/done-$name" 2>/dev/null)); sidecar log:"
    sed 's/^/      /' "$w/sidecar-$name.log" | tail -5
    fail=1
  fi
done
exit $fail
EOF

unshare --mount --net --propagation private bash "$work/inner.sh" "$work" "$BIN"
