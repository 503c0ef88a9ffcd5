"""An AI agent's side of MCP, scripted: connects to an MCP server with the
official MCP SDK (`mcp` on PyPI) and makes the tool calls it is given.

    mcp_agent.py stdio CALLS.json -- COMMAND [ARGS...]
    mcp_agent.py http  CALLS.json URL

CALLS.json is a list of {"tool": NAME, "arguments": {...}}, or of
{"concurrent": [calls]} to make several calls at once (a call may carry
"delay": seconds to wait before it starts). Prints one JSON document:
{"tools": [names], "calls": [{"tool", "isError", "text"}]}; a call answered
with a JSON-RPC error has "error": {"code", "message"} instead of "isError".
Over http, MCP_AGENT_BEARER (if set) is sent as `Authorization: Bearer`.
Bounded: every call has a timeout, the whole run too.
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client
from mcp.shared.exceptions import MCPError as McpError

CALL_TIMEOUT = 60.0
RUN_TIMEOUT = 240.0


def text_of(result):
    parts = []
    for c in getattr(result, "content", None) or []:
        t = getattr(c, "text", None)
        if t is not None:
            parts.append(t)
    return "\n".join(parts)


async def one_call(session, call):
    if call.get("delay"):
        await asyncio.sleep(float(call["delay"]))
    try:
        result = await session.call_tool(
            call["tool"], call.get("arguments") or {}, read_timeout_seconds=CALL_TIMEOUT
        )
    except McpError as e:
        err = getattr(e, "error", None)
        return {
            "tool": call["tool"],
            "error": {"code": getattr(err, "code", None), "message": getattr(err, "message", str(e))},
        }
    return {
        "tool": call["tool"],
        "isError": bool(getattr(result, "is_error", None) or getattr(result, "isError", False)),
        "text": text_of(result),
    }


async def drive(read, write, calls):
    async with ClientSession(read, write) as session:
        await session.initialize()
        tools = await session.list_tools()
        out = {"tools": sorted(t.name for t in tools.tools), "calls": []}
        for call in calls:
            if "concurrent" in call:
                results = await asyncio.gather(*(one_call(session, c) for c in call["concurrent"]))
                out["calls"].extend(results)
            else:
                out["calls"].append(await one_call(session, call))
        return out


async def main(argv):
    mode, calls_path = argv[1], argv[2]
    with open(calls_path) as f:
        calls = json.load(f)
    if mode == "stdio":
        sep = argv.index("--")
        command, args = argv[sep + 1], argv[sep + 2 :]
        # The server is the container's process: it gets the container's whole env
        # (the SDK's default passes only HOME, PATH and a few more).
        params = StdioServerParameters(command=command, args=args, env=dict(os.environ))
        async with stdio_client(params) as (read, write):
            return await drive(read, write, calls)
    if mode == "http":
        bearer = os.environ.get("MCP_AGENT_BEARER")
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else None
        async with create_mcp_http_client(headers=headers) as client:
            async with streamable_http_client(argv[3], http_client=client) as streams:
                return await drive(streams[0], streams[1], calls)
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    result = asyncio.run(asyncio.wait_for(main(sys.argv), RUN_TIMEOUT))
    print(json.dumps(result, indent=1))
