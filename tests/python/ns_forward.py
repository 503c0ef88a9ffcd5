"""A TCP forwarder across network namespaces, through a Unix socket (a path
in the file system is reachable from every network namespace):

    ns_forward.py unix-to-tcp SOCKET HOST:PORT   # run in the target's netns
    ns_forward.py tcp-to-unix HOST:PORT SOCKET   # run in the listener's netns

The simulated pod uses it to put the real kube-apiserver (on the host's
loopback) at the pod's "Service IP". Bytes are copied, never read: TLS goes
end to end. Runs until killed.
"""

import asyncio
import sys


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


def split(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


async def main(mode, listen, target):
    async def handle(reader, writer):
        try:
            if mode == "unix-to-tcp":
                r2, w2 = await asyncio.open_connection(*split(target))
            else:
                r2, w2 = await asyncio.open_unix_connection(target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, w2), pipe(r2, writer))

    if mode == "unix-to-tcp":
        server = await asyncio.start_unix_server(handle, path=listen)
    else:
        host, port = split(listen)
        server = await asyncio.start_server(handle, host, port)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
