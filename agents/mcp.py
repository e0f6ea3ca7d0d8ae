"""The tools of MCP servers as LangChain tools, through ``langchain-mcp-adapters``.

    >>> tools = mcp_tools({"files": {"command": "python", "args": ["server.py"]},
    ...                    "search": {"url": "http://127.0.0.1:8931/mcp"}})
    >>> Agent("researcher", tools=tools)

A server is a stdio command (``command``, ``args``, ``env``, ``cwd``) or a streamable HTTP
endpoint (``url``, ``headers``): the two forms an ``[[agent]]`` table's ``mcp`` takes. Each
tool call opens a session to its server (the adapters' default), so tools survive a server
restart between calls. A tool's error goes back to the model as an error message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agency._aio import run_sync
from agency.errors import ConfigError

__all__ = ["amcp_tools", "connection", "mcp_tools"]


def connection(spec: Mapping[str, Any], *, where: str = "mcp") -> dict[str, Any]:
    """The adapters' connection for one server spec; `ConfigError` names what is wrong."""
    if "command" in spec:
        conn: dict[str, Any] = {
            "transport": "stdio",
            "command": str(spec["command"]),
            "args": [str(a) for a in spec.get("args", [])],
        }
        for key in ("env", "cwd"):
            if spec.get(key) is not None:
                conn[key] = spec[key]
        return conn
    if "url" in spec:
        conn = {"transport": "streamable_http", "url": str(spec["url"])}
        if spec.get("headers"):
            conn["headers"] = dict(spec["headers"])
        return conn
    raise ConfigError(
        f"an MCP server needs a command (stdio) or a url (streamable HTTP), got {dict(spec)!r}",
        key=where,
        fix='write mcp = {command = "python", args = ["server.py"]} or mcp = {url = "http://..."}',
    )


async def amcp_tools(servers: Mapping[str, Mapping[str, Any]]) -> list[Any]:
    """The tools of every server in ``servers`` (name -> spec), as LangChain tools."""
    from langchain_mcp_adapters.client import MultiServerMCPClient

    client = MultiServerMCPClient(
        {name: connection(spec, where=f"mcp.{name}") for name, spec in servers.items()},  # type: ignore[misc]
        handle_tool_errors=True,
    )
    return list(await client.get_tools())


def mcp_tools(servers: Mapping[str, Mapping[str, Any]]) -> list[Any]:
    """The sync twin of `amcp_tools`."""
    return run_sync(amcp_tools(servers))
