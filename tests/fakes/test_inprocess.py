"""``FakeService.transport()``: the fake's wire served in-process, no socket involved.

The fake here is never ``running()``; a request that reached for a socket would fail under
pytest-socket (only 127.0.0.1 is allowed, and ``fake.test`` does not resolve to it)."""

from __future__ import annotations

import httpx
import pytest

from .openai_server import Disconnect, Fail, FakeOpenAI, Malformed, Reply

HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}]}
AUTH = {"authorization": "Bearer sk-test"}


@pytest.fixture
def fake() -> FakeOpenAI:
    fake = FakeOpenAI()
    assert fake.base_url is None
    return fake


def test_sync_answers_records_and_sets_urls(fake: FakeOpenAI) -> None:
    transport = fake.transport()
    assert (fake.root_url, fake.base_url) == ("http://fake.test", "http://fake.test/v1")
    with httpx.Client(transport=transport, base_url=fake.base_url) as client:
        fake.script(Reply(content="scripted"))
        answer = client.post("/chat/completions", json=HELLO, headers=AUTH)
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"] == "scripted"
    assert answer.headers["x-request-id"].startswith("req_")  # the fake's middleware ran
    assert fake.bodies() == [HELLO]
    assert fake.last_request.headers["authorization"] == "Bearer sk-test"  # type: ignore[union-attr]
    assert fake.internal_errors == [] and fake.spec_violations == []


def test_same_transport_is_reused_and_keeps_a_running_fakes_urls(fake: FakeOpenAI) -> None:
    with fake.running():
        url = fake.base_url
        assert fake.transport() is fake.transport()
        assert fake.base_url == url


def test_errors_and_malformed_bodies_come_through(fake: FakeOpenAI) -> None:
    with httpx.Client(transport=fake.transport(), base_url=fake.base_url) as client:
        fake.script(Fail(429, retry_after=2), Malformed("{not json"))
        limited = client.post("/chat/completions", json=HELLO, headers=AUTH)
        broken = client.post("/chat/completions", json=HELLO, headers=AUTH)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert limited.json()["error"]["type"] == "requests"
    assert broken.status_code == 200 and broken.text == "{not json"


def test_disconnect_before_the_answer_is_a_protocol_error(fake: FakeOpenAI) -> None:
    fake.script(Disconnect())
    with (
        httpx.Client(transport=fake.transport(), base_url=fake.base_url) as client,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        client.post("/chat/completions", json=HELLO, headers=AUTH)


def test_disconnect_mid_stream_yields_the_sent_part_then_fails(fake: FakeOpenAI) -> None:
    fake.script(Disconnect(after_events=2))
    lines: list[str] = []
    with (
        httpx.Client(transport=fake.transport(), base_url=fake.base_url) as client,
        client.stream(
            "POST", "/chat/completions", json={**HELLO, "stream": True}, headers=AUTH
        ) as response,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        lines.extend(line for line in response.iter_lines() if line)
    assert len(lines) == 2 and all(line.startswith("data: {") for line in lines)


async def test_async_requests_run_on_the_callers_loop(fake: FakeOpenAI) -> None:
    fake.script(Reply(content="async"))
    async with httpx.AsyncClient(transport=fake.transport(), base_url=fake.base_url) as client:
        answer = await client.post("/chat/completions", json=HELLO, headers=AUTH)
        streamed = await client.post(
            "/chat/completions", json={**HELLO, "stream": True}, headers=AUTH
        )
    assert answer.json()["choices"][0]["message"]["content"] == "async"
    assert streamed.text.rstrip().endswith("data: [DONE]")


def test_unknown_route_gets_the_wires_404(fake: FakeOpenAI) -> None:
    with httpx.Client(transport=fake.transport(), base_url=fake.base_url) as client:
        missing = client.get("/nowhere", headers=AUTH)
    assert missing.status_code == 404 and "Invalid URL" in missing.json()["error"]["message"]
    assert fake.last_request.path == "/v1/nowhere"  # type: ignore[union-attr]
