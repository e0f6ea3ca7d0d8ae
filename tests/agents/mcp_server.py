"""A real MCP server (the official ``mcp`` SDK's FastMCP) for the agent tests.

python mcp_server.py                 # stdio
python mcp_server.py http PORT       # streamable HTTP on 127.0.0.1:PORT/mcp
"""

from __future__ import annotations

import sys

from mcp.server.fastmcp import FastMCP

server = FastMCP("test-tools", host="127.0.0.1")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


@server.tool()
def explode(reason: str) -> str:
    """Always fails."""
    raise ValueError(f"exploded: {reason}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        server.settings.port = int(sys.argv[2])
        server.run(transport="streamable-http")
    else:
        server.run()
