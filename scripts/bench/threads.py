#!/usr/bin/env python3
"""Per-thread CPU of sidecar binaries under h2load (bench/notes-rec.md). Not part of the test suite.

Starts kube-apisim and a collector (from --bin-dir) and one sidecar per --sidecar LABEL=PATH (as deployed:
example policy, recording to the collector through the spool; --norec: no collector; --extra: more flags),
then per round and sidecar runs h2load on --obj: --mode fixed (8,000 GETs at 800 req/s, 4 connections x 16
streams) or max (16 x 10 for --seconds after 1 s warm-up), and prints one JSON line per run: req/s, p50/p99,
the sidecar's CPU seconds per 10k requests in all and per thread name (user, system, voluntary and
involuntary context switches per request, from /proc/PID/task/*), the collector's, kube-apisim's and
h2load's CPU per 10k requests, and the machine's idle share (/proc/stat). --perf runs a command during the
first round ({pid}, {label}, {tmp} replaced), e.g. 'timeout -s INT 8 perf trace -s -p {pid} -o out.txt'.
"""
import argparse, json, os, shutil, subprocess, sys, time, tempfile, resource
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts", "bench"))
import bench as B  # noqa: E402

def threads(pid):
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            st = open(f"/proc/{pid}/task/{t}/stat").read()
            name = st[st.index("(")+1:st.rindex(")")]
            f = st[st.rindex(")")+2:].split()
            out[int(t)] = (name, int(f[11]), int(f[12]))
            sw = open(f"/proc/{pid}/task/{t}/status").read()
            v = [int(l.split()[1]) for l in sw.splitlines() if "ctxt_switches" in l]
            out[int(t)] += tuple(v)
        except OSError:
            pass
    return out

def tdelta(a, b):
    agg = {}
    for tid, v in b.items():
        name, u, s, vol, nvol = v
        a0 = a.get(tid, (name, 0, 0, 0, 0))
        k = name.rstrip("0123456789-") or name
        x = agg.setdefault(k, [0, 0, 0, 0, 0])
        x[0] += (u - a0[1]); x[1] += (s - a0[2]); x[2] += (vol - a0[3]); x[3] += (nvol - a0[4]); x[4] += 1
    return agg

def cpustat():
    f = open("/proc/stat").readline().split()[1:]
    v = list(map(int, f))
    return v[3] + v[4], sum(v[:8])

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sidecar", action="append", required=True, help="label=path")
    ap.add_argument("--obj", default="secret")
    ap.add_argument("--mode", default="max")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--norec", action="store_true")
    ap.add_argument("--extra", default="", help="extra sidecar flags, space separated")
    ap.add_argument("--perf", default="", help="command run during the first round's load; {pid} replaced")
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, spools)")
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"), help="kube-apisim and mcp-warden-collector")
    args = ap.parse_args()
    s_, h_ = resource.getrlimit(resource.RLIMIT_NOFILE); resource.setrlimit(resource.RLIMIT_NOFILE, (h_, h_))
    tmp = tempfile.mkdtemp(prefix="rec-lab.")
    os.makedirs(tmp + "/logs")
    procs = B.Procs(tmp + "/logs")
    # The image's allocator settings, unless the environment sets one (as bench.py does): update()
    # overrode an explicit MIMALLOC_PURGE_DELAY, so a comparison of two settings measured one.
    for k, v in B.IMAGE_ENV.items():
        os.environ.setdefault(k, v)
    res = []
    try:
        ns = argparse.Namespace(apisim=os.path.join(args.bin_dir, "kube-apisim"), policy=os.path.join(ROOT, "tests", "fixtures", "policies", "example.yaml"),
                                spool_base=None, large_list=0)
        env = B.Env(ns, tmp, procs)
        B.BIN = args.bin_dir
        env.start_apisim()
        env.start_collector()
        scs = []
        for spec in args.sidecar:
            label, path = spec.split("=", 1)
            port, admin = B.free_port(), B.free_port()
            d = os.path.join(tmp, label)
            os.makedirs(d + "/local"); os.makedirs(d + "/spool")
            argv = [path, "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
                    "--upstream", f"https://127.0.0.1:{env.up_port}", "--upstream-ca-file", env.up_ca,
                    "--upstream-token-file", env.up_token_file, "--local-dir", d + "/local",
                    "--policy-file", ns.policy, "--spool-dir", d + "/spool", "--pod-name", "bench-mcp-server",
                    "--pod-namespace", "bench"] + ([] if args.norec else ["--collector-url", env.collector_url]) + args.extra.split()
            p = procs.start(label, argv, stdout=subprocess.DEVNULL if args.norec else None)
            B.wait_until(lambda: B.http_status(admin, "/readyz") == 200, 60, label)
            tok = open(d + "/local/token").read().strip()
            scs.append((label, p, port, tok, admin))
        url = lambda port: f"https://127.0.0.1:{port}" + B.OBJECTS[args.obj]
        for label, p, port, tok, admin in scs:
            r = B.h2load(url(port), tmp, headers=[f"authorization: Bearer {tok}"], n=500, clients=1, streams=8)
            B.log(f"warm {label}: {r['status_2xx']}")
        for rnd in range(args.rounds):
            for label, p, port, tok, admin in scs:
                hdr = [f"authorization: Bearer {tok}", "accept: application/json"]
                t0 = threads(p.pid); c0 = B.cpu_seconds([env.collector.pid]); a0 = B.cpu_seconds([env.apisim.pid])
                ru0 = resource.getrusage(resource.RUSAGE_CHILDREN); s0 = cpustat()
                perf = None
                if args.perf and rnd == 0:
                    perf = subprocess.Popen(args.perf.format(pid=p.pid, label=label, tmp=tmp), shell=True)
                    time.sleep(0.5)
                if args.mode == "max":
                    r = B.h2load(url(port), tmp, headers=hdr, duration=args.seconds, warmup=1, clients=16, streams=10, timeout=args.seconds + 60)
                else:
                    r = B.h2load(url(port), tmp, headers=hdr, n=8000, clients=4, streams=16, rps=200, timeout=120)
                if perf:
                    perf.wait(timeout=120)
                ru1 = resource.getrusage(resource.RUSAGE_CHILDREN); s1 = cpustat()
                t1 = threads(p.pid); c1 = B.cpu_seconds([env.collector.pid]); a1 = B.cpu_seconds([env.apisim.pid])
                agg = tdelta(t0, t1)
                done = r["done"] or 1
                tot = sum(v[0] + v[1] for v in agg.values()) / B.CLK_TCK
                row = {"label": label, "round": rnd, "req_s": r["req_per_s"], "done": done, "p50": r["p50_ms"], "p99": r["p99_ms"],
                       "wall": r["wall_s"], "sidecar_cpu_per10k": round(tot * 1e4 / done, 3),
                       "cores": round(tot / r["wall_s"], 2),
                       "collector_cpu_per10k": round((c1 - c0) * 1e4 / done, 3), "apisim_cpu_per10k": round((a1 - a0) * 1e4 / done, 3),
                       "h2load_cpu_per10k": round((ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) * 1e4 / done, 3),
                       "threads": {k: {"user_per10k": round(v[0] / B.CLK_TCK * 1e4 / done, 3), "sys_per10k": round(v[1] / B.CLK_TCK * 1e4 / done, 3),
                                       "vol_cs_per_req": round(v[2] / done, 2), "invol_cs_per_req": round(v[3] / done, 2), "n": v[4]} for k, v in agg.items()},
                       "loadavg": B.loadavg(), "machine_idle_pct": round(100 * (s1[0] - s0[0]) / max(1, s1[1] - s0[1]), 1)}
                res.append(row)
                print(json.dumps(row), flush=True)
    finally:
        procs.stop_all()
        if args.keep:
            B.log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        if args.out:
            json.dump(res, open(args.out, "w"), indent=1)

main()
