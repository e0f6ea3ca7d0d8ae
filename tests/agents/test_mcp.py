"""MCP tools from real MCP server processes (stdio and streamable HTTP), used by an Agent."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.openai_server import FakeOpenAI, Reply
from test_agent import _agency, _chat

from agency.agents.agent import Agent
from agency.agents.mcp import connection, mcp_tools
from agency.errors import ConfigError

pytest.importorskip("langchain_mcp_adapters", reason="MCP tools are the agents extra")
SERVER = str(Path(__file__).with_name("mcp_server.py"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, SERVER, "http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "MCP server did not start"
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_an_agent_uses_the_tools_of_a_real_mcp_server(
    openai_fake: FakeOpenAI, http_server: str, transport: str
) -> None:
    spec = (
        {"command": sys.executable, "args": [SERVER]}
        if transport == "stdio"
        else {"url": http_server}
    )
    tools = mcp_tools({"calc": spec})
    assert sorted(t.name for t in tools) == ["add", "explode", "shout"]
    openai_fake.script(
        Reply(tool_calls=[{"name": "add", "arguments": {"a": 2, "b": 40}}]),
        Reply(tool_calls=[{"name": "explode", "arguments": {"reason": "testing"}}]),
        Reply("2 + 40 = 42, and explode failed."),
    )
    result = Agent("calc", agency=_agency(openai_fake), tools=tools).invoke("Add 2 and 40")
    assert result.text == "2 + 40 = 42, and explode failed."
    turns = _chat(openai_fake)
    assert turns[1]["messages"][-1]["role"] == "tool" and "42" in str(turns[1]["messages"][-1])
    assert "exploded: testing" in str(turns[2]["messages"][-1]["content"])  # error to the model
    assert "Add two integers." in str(turns[0]["tools"])


def test_a_server_spec_needs_a_command_or_a_url() -> None:
    with pytest.raises(ConfigError) as info:
        connection({"cmd": "python"}, where="agent[0].tools.mcp")
    assert info.value.key == "agent[0].tools.mcp" and "command" in (info.value.fix or "")
    assert (
        connection({"url": "http://x/mcp", "headers": {"A": "b"}})["transport"] == "streamable_http"
    )
