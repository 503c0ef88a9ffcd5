#!/usr/bin/env python3
"""Instructions per proxied GET of the sidecar: a figure that does not depend on the machine's noise.

Run by scripts/bench-instructions.sh (which builds the release binaries first). Starts kube-apisim
(seeded with a ~1.3 KB Pod whose env holds a password, and a small Secret) and a collector, then for each
configuration starts the sidecar under `valgrind --tool=callgrind` and, with `callgrind_control`:

  1. warms up: W GETs over their own HTTP/2 connection (h2load, one stream at a time);
  2. zeroes the counters, sends N GETs over one new HTTP/2 connection, one at a time, and dumps the
     counters: instructions of every thread of the sidecar during the load (the load's TLS handshake
     included, spread over the N requests);
  3. zeroes again, stays idle for as long as the load took, dumps: the idle baseline (timers, the
     spool syncer, the sender's tick);

and reports (load - idle) / N. Callgrind counts instructions executed in user space (the kernel's work
in system calls is not counted), deterministic up to scheduling (how often a thread wakes to find
nothing to do), so figures repeat within about 1 %, on a loaded machine too.

Configurations (name: what the sidecar runs with), each with --policy-file (default: the example
policy of the design brief, masking on), GET of the Pod unless said otherwise:

  deployed         recording to the collector through the spool (as deployed)
  deployed-secret  the same, GET of a Secret (its data masked)
  deployed-configmap  the same, GET of bench.py's ConfigMap (nothing to mask; a multi-line value)
  no-collector     no --collector-url: events go to the log (stdout)
  deployed-list    as deployed, GET of a list of 100 Secrets like bench.py's masking lists (~4.9 KB each,
                   a long base64 value and a password; ~490 KB), 5 warm-up and 50 counted GETs whatever
                   -n/--warmup say; also reported per MB of JSON the upstream sent: the whole path's
                   cost per byte (TLS both ways, HTTP/2, masking, the copies), as the masking goal

Extra sidecar flags per configuration: --extra NAME='--flag value ...'; --extra-all '...' for every
one. Other configurations can be added as NAME=BASE:flags with --config (BASE one of the above).

With --rss, no callgrind: the sidecar alone, its memory 1 s after /readyz and again after the W + N
GETs (and with --watches N: with N watches open, and after they closed), from /proc/PID/smaps: the
heap, other anonymous memory (thread stacks, malloc arenas, buffers),
file-backed pages (the binary's code and data mapped in; of which the executable itself, the rest
shared libraries), and its thread count.

To compare binaries, run them in one invocation: --compare LABEL=PATH (repeatable) with --rounds N
runs every configuration of every binary N times, interleaved, against the same kube-apisim and
collector. Separate invocations do not compare well: each starts a new kube-apisim, which gives the Pod
a new uid and timestamps, and the masker's search for masked values in the rest of the object costs
more or less depending on those bytes (10-20 % of a GET between two starts, same binary).

Writes bench/instructions.json (appends a run under --label) and prints a table.
"""

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))
import bench  # noqa: E402  (same directory: processes, waits)

BASES = {
    "deployed": {"collector": True, "path": "/api/v1/namespaces/bench/pods/bench-pod"},
    "deployed-secret": {"collector": True, "path": "/api/v1/namespaces/bench/secrets/creds"},
    "deployed-configmap": {"collector": True, "path": "/api/v1/namespaces/bench/configmaps/small"},
    "no-collector": {"collector": False, "path": "/api/v1/namespaces/bench/pods/bench-pod"},
    "deployed-list": {"collector": True, "path": "/api/v1/namespaces/mask-100/secrets", "warmup": 5, "requests": 50},
}

LIST_ITEMS = 100


def log(*a):
    print(f"[instructions {time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


def bench_pod():
    """A ~1.3 KB Pod as served; the policy's envNames rule masks DB_PASSWORD."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bench-pod", "namespace": "bench",
                     "labels": {"app": "bench", "tier": "backend", "pod-template-hash": "7d9f8c6b5"},
                     "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-20T10:00:00Z"}},
        "spec": {
            "serviceAccountName": "bench",
            "containers": [{
                "name": "app", "image": "registry.example.com/bench/app:1.4.2",
                "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "DB_HOST", "value": "db.bench.svc"},
                        {"name": "DB_PASSWORD", "value": "hunter2-hunter2"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10},
                "volumeMounts": [{"name": "config", "mountPath": "/etc/bench", "readOnly": True}],
            }],
            "volumes": [{"name": "config", "configMap": {"name": "bench-config"}}],
            "nodeName": "node-1", "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
        },
    }


def write_seed(path):
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}, bench_pod(),
            bench.small_secret(), bench.small_configmap(),
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mask-100"}}]
    for i in range(LIST_ITEMS):
        s = bench.list_secret(f"list-{i:03d}")
        s["metadata"].pop("generateName", None)
        s["metadata"].update({"name": f"list-{i:03d}", "namespace": "mask-100"})
        docs.append(s)
    with open(path, "w") as f:
        f.write("\n---\n".join(json.dumps(d) for d in docs) + "\n")


def h2load_get(url, token, n, tmp):
    r = subprocess.run(["h2load", "-t", "1", "-c", "1", "-m", "1", "-n", str(n), "-H",
                        f"authorization: Bearer {token}", url], capture_output=True, text=True, timeout=3600)
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", r.stdout)
    ok = int(m.group(1)) if m else 0
    if r.returncode != 0 or ok != n:
        raise RuntimeError(f"h2load: {ok}/{n} 2xx\n{r.stdout}\n{r.stderr}")


def callgrind(pid, what):
    """`callgrind_control -z` (zero) or `-d` (dump); returns the dump's total for -d."""
    r = subprocess.run(["callgrind_control", what, str(pid)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"callgrind_control {what} {pid}: {r.stdout}{r.stderr}")


def dump_total(outdir, before):
    """The total Ir of the newest callgrind dump in outdir not in `before`."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        new = sorted(set(os.listdir(outdir)) - before)
        for name in new:
            with open(os.path.join(outdir, name)) as f:
                for line in f:
                    if line.startswith("totals:") or line.startswith("summary:"):
                        return int(line.split()[1]), new
        time.sleep(0.2)
    raise RuntimeError("no callgrind dump appeared")


def memory(pid):
    """RSS of the process and where it is: the heap, other anonymous memory (thread stacks, malloc's
    per-thread arenas), file-backed pages (the binary's code and data; `binary_kib` the executable's
    own, the rest shared libraries), in KiB; and its thread count."""
    out = {"rss_kib": bench.rss_kib([pid]), "heap_kib": 0, "anon_other_kib": 0, "file_kib": 0,
           "binary_kib": 0, "anon_mappings": 0}
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = None
    try:
        with open(f"/proc/{pid}/status") as f:
            out["threads"] = int(next(l for l in f if l.startswith("Threads:")).split()[1])
        name, anon = "", False
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                parts = line.split()
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                    name = parts[5] if len(parts) > 5 else ""
                    anon = name == "" or name.startswith("[stack")
                    if anon:
                        out["anon_mappings"] += 1
                elif parts and parts[0] == "Rss:":
                    kib = int(parts[1])
                    if name == "[heap]":
                        out["heap_kib"] += kib
                    elif anon:
                        out["anon_other_kib"] += kib
                    else:
                        out["file_kib"] += kib
                        if name == exe:
                            out["binary_kib"] += kib
    except (OSError, StopIteration, ValueError):
        pass
    return out


def sidecar_argv(args, env, base, extra, d, port, admin):
    """The sidecar's command line for configuration `base` plus `extra` flags, its files under `d`."""
    argv = [args.sidecar, "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
            "--upstream", f"https://127.0.0.1:{env['up_port']}", "--upstream-ca-file", env["up_ca"],
            "--upstream-token-file", env["up_token_file"], "--local-dir", os.path.join(d, "local"),
            "--policy-file", args.policy, "--spool-dir", os.path.join(d, "spool"),
            "--pod-name", "bench-mcp-server", "--pod-namespace", "bench"]
    if BASES[base]["collector"]:
        argv += ["--collector-url", env["collector_url"]]
    return argv + extra


def measure_rss(args, env, name, base, extra, tmp, procs):
    """The sidecar without valgrind: its memory 1 s after /readyz, then after the GETs."""
    d = os.path.join(tmp, name)
    os.makedirs(os.path.join(d, "local"))
    os.makedirs(os.path.join(d, "spool"))
    port, admin = bench.free_port(), bench.free_port()
    argv = sidecar_argv(args, env, base, extra, d, port, admin)
    p = procs.start(f"sidecar-{name}", argv)
    bench.wait_until(lambda: bench.http_status(admin, "/readyz", timeout=20) == 200, 60, f"{name} /readyz")
    time.sleep(1.0)
    idle = memory(p.pid)
    token = open(os.path.join(d, "local", "token")).read().strip()
    url = f"https://127.0.0.1:{port}{BASES[base]['path']}"
    n = BASES[base].get("warmup", args.warmup) + BASES[base].get("requests", args.requests)
    h2load_get(url, token, n, tmp)
    time.sleep(1.0)
    after = memory(p.pid)
    out = {"config": name, "base": base, "extra": " ".join(extra), "requests": n,
           "idle": idle, "after_gets": after}
    if args.watches:
        out.update(hold_watches(args, port, token, p.pid))
    procs.stop(p, grace=60)
    log(f"{name}: idle {idle}, after {n} GETs {after}, watches {out.get('watches')}")
    return out


def hold_watches(args, port, token, pid):
    """Opens --watches watches of ConfigMaps through the sidecar (scripts/bench/watches.py: one
    HTTP/1.1+TLS connection each, as bench.py's first watch phase; with --watch-h2 HTTP/2 streams over
    shared connections, as client-go), measures the memory while they are open
    (2 s after the last one was established), closes them and measures again 2 s later."""
    w = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "watches.py"), "--port",
                          str(port), f"--token={token}", "-n", str(args.watches), "--deadline", "90", "--hold", "120",
                          "--path", "/api/v1/namespaces/bench/configmaps?watch=true&timeoutSeconds=600"]
                         + (["--h2"] if args.watch_h2 else []),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = w.stdout.readline().strip()
        time.sleep(2.0)
        held = memory(pid)
        w.stdin.write("close\n")
        w.stdin.flush()
        w.wait(timeout=30)
    finally:
        if w.poll() is None:
            os.killpg(w.pid, signal.SIGKILL)
            w.wait(timeout=5)
    time.sleep(2.0)
    closed = memory(pid)
    return {"watches": line, "with_watches": held, "after_watches": closed}


def measure(args, env, name, base, extra, tmp, procs):
    d = os.path.join(tmp, name)
    os.makedirs(os.path.join(d, "local"))
    os.makedirs(os.path.join(d, "spool"))
    cgdir = os.path.join(d, "callgrind")
    os.makedirs(cgdir)
    port, admin = bench.free_port(), bench.free_port()
    argv = sidecar_argv(args, env, base, extra, d, port, admin)
    vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={cgdir}/cg.%p", "--dump-instr=no", "--vgdb=yes"]
    p = procs.start(f"sidecar-{name}", vg + argv)
    bench.wait_until(lambda: bench.http_status(admin, "/readyz", timeout=20) == 200, 300, f"{name} /readyz")
    token = open(os.path.join(d, "local", "token")).read().strip()
    url = f"https://127.0.0.1:{port}{BASES[base]['path']}"
    warmup, requests = BASES[base].get("warmup", args.warmup), BASES[base].get("requests", args.requests)
    h2load_get(url, token, warmup, tmp)
    # Let the warm-up's events reach the collector before counting.
    time.sleep(1.0)
    before = set(os.listdir(cgdir))
    callgrind(p.pid, "-z")
    t0 = time.monotonic()
    h2load_get(url, token, requests, tmp)
    # The events of the last requests go out within the sender's batch delay (200 ms).
    time.sleep(1.0)
    load_s = time.monotonic() - t0
    callgrind(p.pid, "-d")
    load_ir, new = dump_total(cgdir, before)
    before |= set(new)
    callgrind(p.pid, "-z")
    time.sleep(load_s)
    callgrind(p.pid, "-d")
    idle_ir, _ = dump_total(cgdir, before)
    procs.stop(p, grace=60)
    per = (load_ir - idle_ir) / requests
    out = {"config": name, "base": base, "extra": " ".join(extra), "requests": requests,
           "load_ir": load_ir, "idle_ir": idle_ir, "load_seconds": round(load_s, 2),
           "instructions_per_get": round(per)}
    if "warmup" in BASES[base]:
        # What the upstream sends for this GET (the masked response is smaller).
        up_token = open(env["up_token_file"]).read().strip()
        size = bench.fetch_list(env["up_port"], up_token, BASES[base]["path"])["bytes"]
        out["upstream_bytes"] = size
        out["instructions_per_byte"] = round(per / size, 2)
    log(f"{name}: load {load_ir:,} Ir in {load_s:.1f} s, idle {idle_ir:,} Ir -> {per:,.0f} per GET"
        + (f" ({out['instructions_per_byte']} per byte of JSON)" if "upstream_bytes" in out else ""))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sidecar", default=os.path.join(bench.PRODUCT_BIN, "mcp-warden-sidecar"))
    ap.add_argument("--apisim", default=os.path.join(bench.BIN, "kube-apisim"))
    ap.add_argument("--collector", default=os.path.join(bench.BIN, "mcp-warden-collector"))
    ap.add_argument("--policy", default=os.path.join(ROOT, "tests", "fixtures", "policies", "example.yaml"))
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--configs", default="deployed,no-collector",
                    help="comma list of configurations (default: deployed,no-collector)")
    ap.add_argument("--config", action="append", default=[], metavar="NAME=BASE:FLAGS",
                    help="an extra configuration: BASE's set-up plus sidecar flags")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=FLAGS")
    ap.add_argument("--extra-all", default="")
    ap.add_argument("--label", default="", help="name of this run in the JSON (default: git describe)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "instructions.json"))
    ap.add_argument("--compare", action="append", default=[], metavar="LABEL=PATH",
                    help="a sidecar binary to measure (repeatable; replaces --sidecar), interleaved")
    ap.add_argument("--rounds", type=int, default=1, help="rounds over the binaries and configurations")
    ap.add_argument("--rss", action="store_true",
                    help="no callgrind: the sidecar's memory idle and after the GETs (appended to --out too)")
    ap.add_argument("--watches", type=int, default=0, metavar="N",
                    help="with --rss: also with N watches open (one HTTP/1.1+TLS connection each) and after")
    ap.add_argument("--watch-h2", action="store_true",
                    help="with --watches: HTTP/2 streams over shared connections (as client-go) instead")
    args = ap.parse_args()
    for tool in ("h2load",) if args.rss else ("valgrind", "callgrind_control", "h2load"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found (scripts/bench-instructions.sh installs it)")

    configs = [(c, c, []) for c in args.configs.split(",") if c]
    for c in args.config:
        name, rest = c.split("=", 1)
        base, flags = rest.split(":", 1)
        configs.append((name, base, shlex.split(flags)))
    extras = dict(e.split("=", 1) for e in args.extra)
    if len({name for name, _, _ in configs}) != len(configs):
        sys.exit("each configuration needs its own name (use --config NAME=BASE: for a repeat)")
    for name, base, _ in configs:
        if base not in BASES:
            sys.exit(f"unknown configuration base {base!r} (one of {', '.join(BASES)})")
    label = args.label or subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                                         capture_output=True, text=True).stdout.strip()

    tmp = tempfile.mkdtemp(prefix="mcp-warden-instr.")
    procs = bench.Procs(tmp)

    def on_signal(sig, _frame):
        procs.stop_all()
        sys.exit(128 + sig)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    results = []
    try:
        d = os.path.join(tmp, "apisim")
        os.makedirs(d)
        seed = os.path.join(tmp, "seed.yaml")
        write_seed(seed)
        procs.start("kube-apisim", [args.apisim, "--listen", "127.0.0.1:0", "--state-dir", d, "--seed", seed],
                    env={"RUST_LOG": "warn"})
        addr = bench.wait_until(lambda: open(os.path.join(d, "addr")).read().strip(), 60, "kube-apisim addr")
        env = {"up_port": int(addr.rsplit(":", 1)[1]), "up_ca": os.path.join(d, "ca.crt"),
               "up_token_file": os.path.join(d, "token")}
        bench.wait_until(lambda: bench.tcp_open(env["up_port"]), 30, "kube-apisim port")
        cd = os.path.join(tmp, "collector")
        procs.start("collector", [args.collector, "--listen", "127.0.0.1:0", "--out-dir", cd],
                    env={"RUST_LOG": "warn"})
        caddr = bench.wait_until(lambda: open(os.path.join(cd, "addr")).read().strip(), 30, "collector addr")
        env["collector_url"] = f"http://{caddr}"
        binaries = [tuple(c.split("=", 1)) for c in args.compare] or [("", args.sidecar)]
        for rnd in range(1, max(1, args.rounds) + 1):
            for blabel, path in binaries:
                bargs = argparse.Namespace(**{**vars(args), "sidecar": path})
                for name, base, flags in configs:
                    extra = shlex.split(args.extra_all) + shlex.split(extras.get(name, "")) + flags
                    tag = f"{name}-{blabel}-r{rnd}" if blabel else (f"{name}-r{rnd}" if args.rounds > 1 else name)
                    r = (measure_rss if args.rss else measure)(bargs, env, tag, base, extra, tmp, procs)
                    r.update({"config": name, "binary": blabel or None, "sidecar": path, "round": rnd})
                    results.append(r)
    finally:
        procs.stop_all()
        if not os.environ.get("BENCH_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")

    run = {"label": label, "at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"),
           "sidecar": os.path.relpath(args.sidecar, ROOT) if args.sidecar.startswith(ROOT) else args.sidecar,
           "policy": os.path.relpath(args.policy, ROOT), "results": results}
    runs = []
    if os.path.exists(args.out):
        with open(args.out) as f:
            runs = json.load(f)
    runs.append(run)
    with open(args.out, "w") as f:
        json.dump(runs, f, indent=1)
        f.write("\n")
    if args.rss:
        print(f"\n## Sidecar memory ({label}; KiB)\n")
        print("| configuration | when | RSS | heap | other anonymous | file-backed | of it the executable | threads |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for r in results:
            if r.get("binary"):
                r["config"] = f"{r['config']} ({r['binary']}, round {r['round']})"
            for when in ("idle", "after_gets", "with_watches", "after_watches"):
                m = r.get(when)
                if m is None:
                    continue
                print(f"| {r['config']} | {when} | {m['rss_kib']:,} | {m['heap_kib']:,} | {m['anon_other_kib']:,} | "
                      f"{m['file_kib']:,} | {m.get('binary_kib', 0):,} | {m.get('threads', '?')} |")
        for r in results:
            if r.get("watches"):
                print(f"\n{r['config']}: {args.watches} watches: {r['watches']}")
        print(f"\nappended to {os.path.relpath(args.out, ROOT)}")
        return
    counts = sorted({r["requests"] for r in results})
    print(f"\n## Instructions per proxied GET ({label}, {'/'.join(map(str, counts))} GETs, callgrind)\n")
    print("| binary | round | configuration | extra flags | instructions / GET | per byte of JSON | load Ir | idle Ir |")
    print("|---|---:|---|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r.get('binary') or '—'} | {r['round']} | {r['config']} | {r['extra'] or '—'} | "
              f"{r['instructions_per_get']:,} | {r.get('instructions_per_byte', '—')} | {r['load_ir']:,} | "
              f"{r['idle_ir']:,} |")
    print(f"\nappended to {os.path.relpath(args.out, ROOT)}")


if __name__ == "__main__":
    main()
