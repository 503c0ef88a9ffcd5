#!/usr/bin/env python3
"""Opens N Kubernetes watches and holds them open, either over HTTP/1.1+TLS (one
connection each, as the Python client and urllib3 do; the default) or, with
--h2, as HTTP/2 streams multiplexed the way client-go (kubectl, Go MCP servers)
and kube-rs do: one TLS connection carries as many watches as the server's
SETTINGS_MAX_CONCURRENT_STREAMS allows, and only a full connection makes the
client open the next one.

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


class H2Conn:
    """One HTTP/2 connection carrying up to `capacity` watch streams (h2 is sans-IO: this feeds it)."""

    def __init__(self, reader, writer, conn):
        self.reader, self.writer, self.conn = reader, writer, conn
        self.waiting = {}  # stream id -> (future, bytes so far) until its first ADDED event
        self.capacity = None

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)

    async def pump(self):
        """Reads frames until the connection ends: settles each stream's future on its first event."""
        import h2.events
        import h2.settings

        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                for ev in self.conn.receive_data(data):
                    if isinstance(ev, h2.events.RemoteSettingsChanged):
                        mcs = ev.changed_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
                        if mcs is not None:
                            self.capacity = mcs.new_value
                    elif isinstance(ev, h2.events.DataReceived):
                        self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        w = self.waiting.get(ev.stream_id)
                        if w is not None:
                            buf = w[1] + ev.data
                            if b"ADDED" in buf:
                                del self.waiting[ev.stream_id]
                                w[0].done() or w[0].set_result(None)
                            elif len(buf) > 1 << 20:
                                del self.waiting[ev.stream_id]
                                w[0].done() or w[0].set_result("no ADDED event in the first MiB")
                            else:
                                self.waiting[ev.stream_id] = (w[0], buf)
                    elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                        w = self.waiting.pop(ev.stream_id, None)
                        if w is not None and not w[0].done():
                            w[0].set_result(f"stream ended before the first event: {w[1][:200]!r}")
                self.flush()
                await self.writer.drain()
        except Exception as e:  # noqa: BLE001 - fails the streams still waiting
            err = f"connection: {e}"
        else:
            err = "connection closed"
        for fut, _ in self.waiting.values():
            fut.done() or fut.set_result(err)
        self.waiting.clear()


async def h2_connect(args, ctx):
    import h2.config
    import h2.connection

    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(args.host, args.port, ssl=ctx), timeout=args.deadline
    )
    if writer.get_extra_info("ssl_object").selected_alpn_protocol() != "h2":
        writer.close()
        raise RuntimeError("the server did not choose h2 by ALPN")
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    c = H2Conn(reader, writer, conn)
    c.flush()
    c.task = asyncio.create_task(c.pump())
    # The server's SETTINGS come first; wait (bounded) for its stream limit as a Go client does.
    t0 = time.monotonic()
    while c.capacity is None and time.monotonic() - t0 < 5 and not c.task.done():
        await asyncio.sleep(0.01)
    if c.capacity is None:
        c.capacity = 100  # RFC 9113's recommended minimum, what Go assumes before SETTINGS
    return c


async def h2_watches(args, ctx):
    """Returns (established, errors, connections)."""
    conns, futs, errors = [], [], []
    loop = asyncio.get_running_loop()
    cur, used = None, 0
    for _ in range(args.n):
        if cur is None or used >= cur.capacity:
            try:
                cur = await h2_connect(args, ctx)
            except Exception as e:  # noqa: BLE001 - counted as failures
                errors.append(f"connect: {e}")
                break
            conns.append(cur)
            used = 0
        sid = cur.conn.get_next_available_stream_id()
        cur.conn.send_headers(sid, [
            (":method", "GET"), (":scheme", "https"), (":authority", f"{args.host}:{args.port}"),
            (":path", args.path), ("authorization", f"Bearer {args.token}"), ("accept", "application/json"),
            ("user-agent", "mcp-warden-bench-watches"),
        ], end_stream=True)
        fut = loop.create_future()
        cur.waiting[sid] = (fut, b"")
        futs.append(fut)
        cur.flush()
        used += 1
        if used % 50 == 0:
            await cur.writer.drain()
    for c in conns:
        await c.writer.drain()
    if futs:
        done, pending = await asyncio.wait(futs, timeout=args.deadline)
        errors += [f.result() for f in done if f.result()] + ["deadline"] * len(pending)
        established = sum(1 for f in done if not f.result())
    else:
        established = 0
    errors += ["not sent"] * (args.n - len(futs))
    return established, errors, conns


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
    p.add_argument("--h2", action="store_true", help="HTTP/2 streams over shared connections (as client-go)")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.n + 256)), hard))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if args.h2:
        await main_h2(args, ctx)
        return
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
    await hold(args)
    for w in streams:
        w.close()
    for t in tasks:
        t.cancel()


async def hold(args):
    """Until a line on stdin, or --hold seconds."""
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), timeout=args.hold)
    except asyncio.TimeoutError:
        pass


async def main_h2(args, ctx):
    ctx.set_alpn_protocols(["h2"])
    t0 = time.monotonic()
    established, errors, conns = await h2_watches(args, ctx)
    print(
        f"established={established} failed={len(errors)} seconds={time.monotonic() - t0:.2f}"
        f" connections={len(conns)}" + (f" first_error={errors[0]!r}" if errors else ""),
        flush=True,
    )
    await hold(args)
    for c in conns:
        c.writer.close()
        c.task.cancel()


if __name__ == "__main__":
    asyncio.run(main())
