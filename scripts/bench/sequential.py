#!/usr/bin/env python3
"""Sequential GETs (one at a time, h2load -c1 -m1) through sidecar binaries, and where the slow ones fall.
Not part of the test suite (results.md, "Ninth pass").

Starts kube-apisim and a collector (from --bin-dir) and one sidecar per --sidecar LABEL=PATH[=EXTRA FLAGS]
(as deployed: example policy, recording to the collector through the spool; a label ending in "norec" runs
without a collector, one containing "dead" records to a collector URL nothing listens on). Per round it runs
--n sequential GETs of --obj directly and through each sidecar, and prints p50/p90/p99 and, for the requests
slower than --slow-ms, how many fall within 3 requests after a multiple of 100 (the sender's batch size):
with a live collector on the same cores those are most of them. --collector-idle runs the collector under
SCHED_IDLE. --out writes the rows as JSON.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts", "bench"))
import bench as B  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sidecar", action="append", required=True, help="label=path[=extra flags]")
    ap.add_argument("--obj", default="secret", choices=sorted(B.OBJECTS))
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--slow-ms", type=float, default=0.9)
    ap.add_argument("--collector-idle", action="store_true", help="run the collector under SCHED_IDLE")
    ap.add_argument("--out", default=None)
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"), help="kube-apisim and mcp-warden-collector")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="seq-lab.")
    os.makedirs(tmp + "/logs")
    procs = B.Procs(tmp + "/logs")
    # The image's allocator settings, unless the environment sets one (as bench.py does): update()
    # overrode an explicit MIMALLOC_PURGE_DELAY, so a comparison of two settings measured one.
    for k, v in B.IMAGE_ENV.items():
        os.environ.setdefault(k, v)
    rows = []
    try:
        ns = argparse.Namespace(apisim=os.path.join(args.bin_dir, "kube-apisim"),
                                policy=os.path.join(ROOT, "tests", "fixtures", "policies", "example.yaml"),
                                spool_base=None, large_list=0)
        env = B.Env(ns, tmp, procs)
        B.BIN = args.bin_dir
        env.start_apisim()
        env.start_collector()
        if args.collector_idle:
            subprocess.run(["chrt", "-i", "-a", "-p", "0", str(env.collector.pid)], check=True, stdout=subprocess.DEVNULL)
        targets = [("direct", env.up_port, open(env.up_token_file).read().strip())]
        for spec in args.sidecar:
            label, path, *extra = spec.split("=", 2)
            port, admin = B.free_port(), B.free_port()
            d = os.path.join(tmp, label)
            os.makedirs(d + "/local")
            os.makedirs(d + "/spool")
            rec = [] if label.endswith("norec") else [
                "--collector-url", "http://127.0.0.1:9" if "dead" in label else env.collector_url]
            argv = [path, "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
                    "--upstream", f"https://127.0.0.1:{env.up_port}", "--upstream-ca-file", env.up_ca,
                    "--upstream-token-file", env.up_token_file, "--local-dir", d + "/local",
                    "--policy-file", ns.policy, "--spool-dir", d + "/spool", "--pod-name", "bench-mcp-server",
                    "--pod-namespace", "bench"] + rec + (extra[0].split() if extra else [])
            procs.start(label, argv, stdout=subprocess.DEVNULL if not rec else None)
            B.wait_until(lambda: B.http_status(admin, "/readyz") == 200, 60, label)
            targets.append((label, port, open(d + "/local/token").read().strip()))
        url = lambda port: f"https://127.0.0.1:{port}" + B.OBJECTS[args.obj]
        for label, port, tok in targets:
            B.h2load(url(port), tmp, headers=[f"authorization: Bearer {tok}"], n=500, clients=1, streams=1)
        print(f"{'path':<16} {'round':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'slow':>6} {'after a 100th':>14}")
        for rnd in range(args.rounds):
            for label, port, tok in targets:
                r = B.h2load(url(port), tmp, headers=[f"authorization: Bearer {tok}", "accept: application/json"],
                             n=args.n, clients=1, streams=1)
                lat = []
                with open(os.path.join(tmp, "h2load-requests.log")) as f:
                    for line in f:
                        p = line.split()
                        if len(p) >= 3 and p[1].startswith("2"):
                            lat.append((int(p[0]), int(p[2]) / 1000.0))
                lat.sort()
                slow = [i for i, (_, ms) in enumerate(lat) if ms > args.slow_ms]
                near = sum(1 for i in slow if i % 100 <= 3)
                row = {"path": label, "round": rnd, "p50_ms": r["p50_ms"], "p90_ms": r["p90_ms"], "p99_ms": r["p99_ms"],
                       "slow": len(slow), "slow_after_a_100th": near, "n": len(lat)}
                rows.append(row)
                print(f"{label:<16} {rnd:>5} {r['p50_ms']:>8.3f} {r['p90_ms']:>8.3f} {r['p99_ms']:>8.3f} {len(slow):>6} {near:>14}",
                      flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(rows, f, indent=1)


main()
