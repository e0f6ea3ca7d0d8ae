"""The async transports, over real sockets to the fake OpenAI on 127.0.0.1: aiohttp (the
default when httpx-aiohttp is installed) and plain httpx behave alike, errors included.

Most provider tests reach the fakes in-process (``fake.transport()``), which skips the
transport; these go through the socket, once per transport.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from fakes.openai_server import Disconnect, Fail, FakeOpenAI, Reply, Stall

import agency
from agency import _http, errors


@pytest.fixture(params=["aiohttp", "httpx"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(_http.TRANSPORT_ENV, request.param)
    assert _http.async_transport() == request.param
    yield request.param


def _llm(fake: FakeOpenAI, **kw: object) -> agency.AgencyChatModel:
    params: dict[str, object] = {"base_url": fake.base_url, "api_key": "sk-test", **kw}
    return agency.chat_model("openai:gpt-4o-mini", **params)


async def test_chat_stream_and_embeddings(openai_fake: FakeOpenAI, transport: str) -> None:
    llm = _llm(openai_fake)
    openai_fake.script(Reply(content="over the wire"))
    assert (await llm.ainvoke("hi")).text == "over the wire"
    parts = [c.text async for c in llm.astream("one two three")]
    assert len(parts) > 2 and "one two three" in "".join(parts)
    emb = agency.embeddings(
        "openai:text-embedding-3-small", base_url=openai_fake.base_url, api_key="sk-test"
    )
    vectors = await emb.aembed_documents(["a", "b", "c"])
    assert len(vectors) == 3 and all(isinstance(x, float) for x in vectors[0])
    from agency._aiohttp import AiohttpTransport

    wanted = transport == "aiohttp"
    pools = _http._async_clients[asyncio.get_running_loop()]
    used = [
        c
        for key, c in pools.items()
        if key[0].startswith(openai_fake.base_url) and key[2] == wanted
    ]
    assert used and all(isinstance(c._transport, AiohttpTransport) == wanted for c in used)


async def test_retry_after_is_read_and_retried(openai_fake: FakeOpenAI, transport: str) -> None:
    openai_fake.script(Fail(429, retry_after=0.05), Reply(content="after waiting"))
    assert (await _llm(openai_fake).ainvoke("hi")).text == "after waiting"
    openai_fake.script(Fail(429, retry_after=0.05))
    with pytest.raises(errors.RateLimited) as info:
        await _llm(openai_fake, max_retries=0).ainvoke("hi")
    assert info.value.retry_after == pytest.approx(0.05)


async def test_a_stall_is_a_timeout(openai_fake: FakeOpenAI, transport: str) -> None:
    openai_fake.script(Stall(1.0))
    with pytest.raises(errors.Timeout):
        await _llm(openai_fake, max_retries=0, timeout=0.3).ainvoke("hi")


async def test_a_refused_connection_is_connection_failed_not_a_timeout(transport: str) -> None:
    llm = agency.chat_model("openai-compatible:m", base_url="http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(errors.ConnectionFailed) as info:
        await llm.ainvoke("hi")
    assert not isinstance(info.value, errors.Timeout)


async def test_a_cut_connection_is_connection_failed_with_what_arrived(
    openai_fake: FakeOpenAI, transport: str
) -> None:
    openai_fake.script(Disconnect(after_events=3))
    seen: list[str] = []
    with pytest.raises(errors.ConnectionFailed, match="connection dropped"):
        async for chunk in _llm(openai_fake, max_retries=0).astream("count to ten"):
            seen.append(chunk.text)
    assert "".join(seen)
    openai_fake.script(Disconnect())  # before any response byte
    with pytest.raises(errors.ConnectionFailed, match="connection dropped"):
        await _llm(openai_fake, max_retries=0).ainvoke("hi")


def test_an_unknown_transport_name_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_http.TRANSPORT_ENV, "curl")
    with pytest.raises(errors.ConfigError, match="AGENCY_HTTP_TRANSPORT"):
        _http.async_transport()


def test_asyncio_run_calls_leave_no_unclosed_session_behind(openai_fake: FakeOpenAI) -> None:
    """Scripts call ``asyncio.run(llm.ainvoke(...))`` again and again: each run's pool is
    closed with its loop, with no "Unclosed client session" report (aiohttp's complaint)."""
    openai_fake.script(*[Reply(content="ok")] * 3)
    code = (
        "import asyncio, gc, agency\n"
        f"llm = agency.chat_model('openai:gpt-4o-mini', base_url={openai_fake.base_url!r}, "
        "api_key='sk-test')\n"
        "for _ in range(3):\n"
        "    assert asyncio.run(llm.ainvoke('hi')).text == 'ok'\n"
        "gc.collect()\n"
        "from agency import _http; print(_http.async_transport())\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, _http.TRANSPORT_ENV: "aiohttp"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "aiohttp"
    assert "Unclosed" not in done.stderr and "destroyed" not in done.stderr, done.stderr


async def test_closing_a_stream_early_closes_its_connection(
    openai_fake: FakeOpenAI, transport: str
) -> None:
    llm = _llm(openai_fake)
    stream = llm.astream(" ".join(f"w{i}" for i in range(200)))
    first = await stream.__anext__()
    await stream.aclose()
    assert first is not None
    openai_fake.script(Reply(content="the pool still works"))
    assert (await asyncio.wait_for(llm.ainvoke("hi"), 10)).text == "the pool still works"


async def test_proxy_variables_are_honoured_only_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from agency._aiohttp import AiohttpTransport

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    plain = AiohttpTransport().get_client()
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    proxied = AiohttpTransport().get_client()
    try:
        assert plain.trust_env is False and proxied.trust_env is True
    finally:
        await plain.close()
        await proxied.close()


async def test_a_gzipped_answer_is_read_once_decoded(transport: str) -> None:
    """Providers compress their answers: the body is decoded exactly once on either path."""
    import gzip
    import json

    answer = {
        "id": "chatcmpl-gz",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "unzipped"},
             "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }  # fmt: skip
    body = gzip.compress(json.dumps(answer).encode())
    asked: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        asked.append(head.lower())
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        llm = agency.chat_model(
            "openai-compatible:gpt-4o-mini", base_url=f"http://127.0.0.1:{port}/v1",
            api_key="sk-test", max_retries=0,
        )  # fmt: skip
        assert (await llm.ainvoke("hi")).text == "unzipped"
        assert b"authorization: bearer sk-test" in asked[0]
        assert b"content-type: application/json" in asked[0]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("status", [200, 429])
async def test_the_direct_json_path_answers_as_httpx_does(
    openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    """`async_request` on a pooled aiohttp client skips httpx's request and response objects:
    what it returns reads the same as httpx's own answer to the same request."""
    monkeypatch.setenv(_http.TRANSPORT_ENV, "aiohttp")
    client = _http.async_client(openai_fake.base_url, timeout=30.0)
    assert client in _http._direct
    args = {
        "method": "POST",
        "url": f"{openai_fake.base_url}/chat/completions",
        "json": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        "headers": {"authorization": "Bearer sk-test"},
        "params": None,
    }
    answers = []
    for send in (_http.async_request, lambda c, **a: c.request(**a)):
        fail = Fail(429, "slow down", retry_after=2)
        openai_fake.script(Reply(content="same") if status == 200 else fail)
        response = await send(client, **args)
        answers.append(response)
    direct, full = answers
    assert direct.status_code == full.status_code == status
    assert direct.content == direct.text.encode() and len(direct.content) == len(full.content)
    vary = {"id", "created"}  # differ between two answers by nature
    d, f = direct.json(), full.json()
    assert {k: v for k, v in d.items() if k not in vary} == {
        k: v for k, v in f.items() if k not in vary
    }
    # The same names in the same order; values too, but for those that vary by nature.
    assert [k for k, _ in direct.headers.multi_items()] == [k for k, _ in full.headers.multi_items()]
    steady = {"content-type", "retry-after", "x-ratelimit-limit-requests"}
    assert [(k, v) for k, v in direct.headers.multi_items() if k in steady] == [
        (k, v) for k, v in full.headers.multi_items() if k in steady
    ]
    assert direct.encoding == full.encoding and direct.is_closed and direct.is_stream_consumed
