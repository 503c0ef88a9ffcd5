#!/usr/bin/env python3
"""Opens N Kubernetes watches over HTTP/1.1+TLS (one connection each, as the
Python client and urllib3 do) and holds them open.

A watch counts as established once its first event (the initial ADDED of an
existing object) has arrived, so the proxy really holds a live stream, not
just an accepted socket. Prints one line `established=N failed=M seconds=S`,
then waits for a line on stdin (or --hold seconds) and closes everything.

Every wait is bounded: --deadline for establishing, --hold for holding.
"""

import argparse
import asyncio
import resource
import ssl
import sys
import time


async def one_watch(args, ctx, sem, done, streams):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(args.host, args.port, ssl=ctx), timeout=args.deadline
            )
        except Exception as e:  # noqa: BLE001 - counted as a failure
            return f"connect: {e}"
        req = (
            f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
            f"Authorization: Bearer {args.token}\r\nAccept: application/json\r\n"
            "User-Agent: mcp-warden-bench-watches\r\n\r\n"
        )
        writer.write(req.encode())
        try:
            await writer.drain()
            buf = b""
            while b"ADDED" not in buf:
                chunk = await asyncio.wait_for(reader.read(65536), timeout=args.deadline)
                if not chunk:
                    return f"closed before the first event: {buf[:200]!r}"
                buf += chunk
                if len(buf) > 1 << 20:
                    return "no ADDED event in the first MiB"
        except Exception as e:  # noqa: BLE001
            writer.close()
            return f"read: {e}"
        streams.append(writer)
        done.append(1)
        return None


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--parallel", type=int, default=64)
    p.add_argument("--deadline", type=float, default=60.0)
    p.add_argument("--hold", type=float, default=120.0)
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.n + 256)), hard))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    sem = asyncio.Semaphore(args.parallel)
    done, streams = [], []
    t0 = time.monotonic()
    tasks = [asyncio.create_task(one_watch(args, ctx, sem, done, streams)) for _ in range(args.n)]
    try:
        results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=args.deadline + 5)
    except asyncio.TimeoutError:
        results = ["deadline"] * (args.n - len(done))
    errors = [r for r in results if r]
    print(
        f"established={len(done)} failed={len(errors)} seconds={time.monotonic() - t0:.2f}"
        + (f" first_error={errors[0]!r}" if errors else ""),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), timeout=args.hold)
    except asyncio.TimeoutError:
        pass
    for w in streams:
        w.close()
    for t in tasks:
        t.cancel()


if __name__ == "__main__":
    asyncio.run(main())
