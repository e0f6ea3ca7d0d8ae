"""Oracle tests: the official ``anthropic`` SDK (strict response validation) and
langchain-anthropic, pointed at ``FakeAnthropic``, must accept everything it says; its bodies and
stream events must match the response schemas of ``anthropic-openapi.yaml``; and its request
validation must catch what the spec and the live API's rules forbid."""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import pytest
from pydantic import BaseModel

from ._anthropic_wire import thinking_signature
from ._openapi import request_validator
from .anthropic_server import Disconnect, Fail, FakeAnthropic, Reply, StreamError

SPEC = "anthropic-openapi.yaml"
MODEL = "claude-haiku-4-5"  # not on the SDK's deprecation list, so no warnings
HELLO: list[Any] = [{"role": "user", "content": "Hello there"}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather of a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key="sk-ant-test").running() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    with server.checked() as fake:
        yield fake


def _client(fake: FakeAnthropic, **kw: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=fake.base_url,
        api_key=kw.pop("api_key", "sk-ant-test"),
        max_retries=0,
        _strict_response_validation=True,
        http_client=anthropic.DefaultHttpxClient(trust_env=False),
        **kw,
    )


@pytest.fixture
def client(fake: FakeAnthropic) -> anthropic.Anthropic:
    return _client(fake)


def _schema_errors(schema: str, instance: Any) -> list[str]:
    return [e.message for e in request_validator(SPEC, schema).iter_errors(instance)]


def _raw_events(fake: FakeAnthropic, body: dict[str, Any]) -> list[tuple[str, Any]]:
    headers = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
    response = httpx.post(
        f"{fake.base_url}/v1/messages", json={**body, "stream": True}, headers=headers
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for frame in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


# --------------------------------------------------------------------------- messages


def test_message_parses_strictly_and_matches_the_spec(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=100, messages=HELLO)
    message = raw.parse()
    assert (
        message.content[0].type == "text"
        and message.content[0].text == "Hello! You said: Hello there"
    )
    assert message.model == "claude-haiku-4-5-20251001" and message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.cache_read_input_tokens == 0
    assert _schema_errors("Message", json.loads(raw.http_response.content)) == []
    assert raw.headers["request-id"].startswith("req_")
    for kind in ("requests", "input-tokens", "output-tokens", "tokens"):
        assert int(raw.headers[f"anthropic-ratelimit-{kind}-remaining"]) >= 0
    recorded = fake.last_request
    # SDK 2.x sends the key as a bearer token with its newer anthropic-version; the fake takes
    # both that and the documented x-api-key + 2023-06-01 pair that agency sends.
    assert recorded is not None and recorded.headers["authorization"] == "Bearer sk-ant-test"
    assert recorded.body == {"model": MODEL, "max_tokens": 100, "messages": HELLO}


def test_stream_events_match_the_spec_and_the_sdk_accumulates_them(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    body = {"model": MODEL, "max_tokens": 100, "messages": HELLO, "tools": [WEATHER]}
    fake.script(
        Reply(
            content="Checking.", tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}]
        )
    )
    events = _raw_events(fake, body)
    names = [name for name, _ in events]
    assert (
        names[0] == "message_start"
        and names[-2:] == ["message_delta", "message_stop"]
        and "ping" in names
    )
    for name, data in events:
        assert data["type"] == name
        if name != "ping":
            assert _schema_errors("MessageStreamEvent", data) == [], data
    with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text == "Hello! You said: Hello there"  # type: ignore[union-attr]
    assert final.usage.output_tokens > 1 and final.stop_reason == "end_turn"


def test_stream_tool_use_and_thinking(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL,
        max_tokens=4096,
        messages=[{"role": "user", "content": "Weather in 'Paris'?"}],
        tools=[WEATHER],  # type: ignore[list-item]
        thinking={"type": "enabled", "budget_tokens": 1024},
    ) as stream:
        final = stream.get_final_message()
    thinking, text, use = final.content
    assert thinking.type == "thinking" and thinking.signature == thinking_signature(
        thinking.thinking
    )
    assert text.type == "text" and use.type == "tool_use" and use.input == {"city": "Paris"}
    assert final.stop_reason == "tool_use" and final.usage.output_tokens_details.thinking_tokens > 0  # type: ignore[union-attr]
    # Replaying the turn (signed thinking first) with the tool result continues it.
    followup = client.messages.create(
        model=MODEL,
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 1024},
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "Weather in 'Paris'?"},
            final.to_param(),
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
            },
        ],
    )
    assert followup.content[-1].text == "The tool returned: sunny"  # type: ignore[union-attr]


def test_stop_sequences_max_tokens_and_images(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    stopped = client.messages.create(
        model=MODEL, max_tokens=100, messages=HELLO, stop_sequences=["said"]
    )
    assert (stopped.stop_reason, stopped.stop_sequence, stopped.content[0].text) == (
        "stop_sequence",
        "said",
        "Hello! You ",
    )  # type: ignore[union-attr]
    short = client.messages.create(model=MODEL, max_tokens=2, messages=HELLO)
    assert (short.stop_reason, short.content[0].text) == ("max_tokens", "Hello! You")  # type: ignore[union-attr]
    gif = base64.b64encode(b"GIF89a" + b"\0" * 20).decode()
    seen = client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/gif", "data": gif},
                    },
                    {"type": "text", "text": "What is it?"},
                ],
            }
        ],
    )
    assert "I see an image (26 bytes)." in seen.content[0].text  # type: ignore[union-attr]


def test_prompt_caching_and_count_tokens(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    system = [
        {
            "type": "text",
            "text": "policy " * 1500,
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ]
    first = client.messages.create(
        model="claude-opus-4-1-20250805", max_tokens=50, system=system, messages=HELLO
    )  # type: ignore[arg-type]
    second = client.messages.create(
        model="claude-opus-4-1-20250805", max_tokens=50, system=system, messages=HELLO
    )  # type: ignore[arg-type]
    created = first.usage.cache_creation_input_tokens
    assert (
        created
        and created >= 1500
        and first.usage.cache_creation.ephemeral_1h_input_tokens == created
    )  # type: ignore[union-attr]
    assert (
        second.usage.cache_read_input_tokens == created
        and second.usage.cache_creation_input_tokens == 0
    )
    counted = client.messages.count_tokens(model=MODEL, system=system, messages=HELLO)  # type: ignore[arg-type]
    assert counted.input_tokens == first.usage.input_tokens + created
    assert _schema_errors("CountMessageTokensResponse", counted.model_dump()) == []
    # Below the model's minimum (4096 tokens for Haiku 4.5) nothing is cached, silently.
    small = client.messages.create(model=MODEL, max_tokens=50, system=system, messages=HELLO)  # type: ignore[arg-type]
    assert small.usage.cache_creation_input_tokens == 0 and small.usage.cache_read_input_tokens == 0


async def test_async_client(fake: FakeAnthropic) -> None:
    client = anthropic.AsyncAnthropic(
        base_url=fake.base_url,
        api_key="sk-ant-test",
        max_retries=0,
        _strict_response_validation=True,
    )
    message = await client.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    assert message.content[0].text == "Hello! You said: Hello there"  # type: ignore[union-attr]
    async with client.messages.stream(model=MODEL, max_tokens=50, messages=HELLO) as stream:
        assert "".join([t async for t in stream.text_stream]) == "Hello! You said: Hello there"
    assert len([m async for m in client.models.list(limit=2)]) == len(fake.models)
    await client.close()


# --------------------------------------------------------------------------- models


def test_models_pages_and_retrieve(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    page = client.models.list(limit=3)
    assert (
        page.has_more and page.first_id == fake.models[0].id and page.last_id == fake.models[2].id
    )
    assert [m.id for m in page] == [card.id for card in fake.models]  # auto-pagination via after_id
    assert [r.query.get("after_id") for r in fake.requests] == [
        None,
        fake.models[2].id,
        fake.models[5].id,
    ]
    raw = client.models.with_raw_response.list(before_id=fake.models[3].id, limit=2)
    assert [m["id"] for m in json.loads(raw.http_response.content)["data"]] == [
        fake.models[1].id,
        fake.models[2].id,
    ]
    assert _schema_errors("ListResponse_ModelInfo_", json.loads(raw.http_response.content)) == []
    model = client.models.retrieve("claude-sonnet-4-5")
    assert (model.id, model.display_name, model.max_input_tokens) == (
        "claude-sonnet-4-5-20250929",
        "Claude Sonnet 4.5",
        200_000,
    )
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("claude-nope")


# --------------------------------------------------------------------------- errors


def test_errors_are_the_sdk_types(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.script(Fail(429, retry_after=30))
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    assert limited.value.response.headers["retry-after"] == "30"
    assert limited.value.type == "rate_limit_error" and limited.value.request_id
    assert _schema_errors("ErrorResponse", limited.value.body) == []
    fake.script(Fail(529))
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        client.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    assert overloaded.value.status_code == 529 and overloaded.value.api_message == "Overloaded"
    with pytest.raises(anthropic.AuthenticationError, match="invalid x-api-key"):
        _client(fake, api_key="sk-ant-wrong").messages.create(
            model=MODEL, max_tokens=10, messages=HELLO
        )
    with pytest.raises(anthropic.NotFoundError, match="model: claude-nope"):
        client.messages.create(model="claude-nope", max_tokens=10, messages=HELLO)
    fake.script(StreamError(after_events=3))
    stream = client.messages.stream(model=MODEL, max_tokens=10, messages=HELLO)
    with pytest.raises(anthropic.APIStatusError) as mid_stream, stream as events:
        events.get_final_message()
    assert mid_stream.value.type == "overloaded_error"
    fake.script(Disconnect(after_events=3))
    stream = client.messages.stream(model=MODEL, max_tokens=10, messages=HELLO)
    # anthropic < 2.17 lets httpx's error through; 2.17 wraps it in APIConnectionError
    broken_by = (httpx2.RemoteProtocolError, anthropic.APIConnectionError)
    with pytest.raises(broken_by) as broken, stream as events:
        events.get_final_message()
    cause = broken.value
    if isinstance(cause, anthropic.APIConnectionError):
        cause = cause.__cause__
    assert isinstance(cause, httpx2.RemoteProtocolError)  # the body broke off mid-stream


def test_missing_version_header_and_key(fake: FakeAnthropic) -> None:
    bare = httpx.post(f"{fake.base_url}/v1/messages", json={}, headers={"x-api-key": "sk-ant-test"})
    assert bare.status_code == 400 and "anthropic-version" in bare.json()["error"]["message"]
    nokey = httpx.post(
        f"{fake.base_url}/v1/messages", json={}, headers={"anthropic-version": "2023-06-01"}
    )
    assert nokey.status_code == 401 and nokey.json()["error"]["type"] == "authentication_error"
    assert nokey.headers["request-id"] == nokey.json()["request_id"]
    missing = httpx.get(f"{fake.base_url}/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


_TOOL_USE = {
    "role": "assistant",
    "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}],
}
_RESULT = {
    "role": "user",
    "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}],
}
_PNG_AS_JPEG = {
    "type": "image",
    "source": {
        "type": "base64",
        "media_type": "image/jpeg",
        "data": base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 8).decode(),
    },
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_tokens": None}, "max_tokens: Field required"),
        ({"temperature": 1.5}, "temperature: 1.5 is greater than the maximum of 1"),
        ({"bogus": 1}, "bogus: Extra inputs are not permitted"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
            "should be non-empty",
        ),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        (
            {"model": "claude-sonnet-4-5", "temperature": 0.5, "top_p": 0.5},
            "cannot both be specified",
        ),
        ({"messages": [*HELLO, _RESULT]}, "unexpected `tool_use_id`"),
        (
            {"messages": [*HELLO, _TOOL_USE, {"role": "user", "content": "and?"}]},
            "without `tool_result`",
        ),
        (
            {
                "messages": [
                    *HELLO,
                    _TOOL_USE,
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "first"}, *_RESULT["content"]],
                    },
                ]
            },
            "must come first",
        ),
        (
            {"messages": [*HELLO, {"role": "assistant", "content": "trailing "}]},
            "trailing whitespace",
        ),
        (
            {"messages": [{"role": "user", "content": [_PNG_AS_JPEG]}]},
            "appears to be a image/png image",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
                        ]
                        * 5,
                    }
                ]
            },
            "maximum of 4 blocks with cache_control",
        ),
        ({"tool_choice": {"type": "any"}}, "only be specified while providing tools"),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 1024},
            "must be greater than `thinking.budget_tokens`",
        ),
        (
            {
                "thinking": {"type": "enabled", "budget_tokens": 1024},
                "max_tokens": 2048,
                "tools": [WEATHER],
                "messages": [*HELLO, _TOOL_USE, _RESULT],
            },
            "must start with a thinking block",
        ),
        ({"max_tokens": 100_000}, "maximum allowed number of output tokens"),
    ],
)
def test_request_validation_catches_what_the_api_rejects(
    fake: FakeAnthropic, change: dict[str, Any], message: str
) -> None:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 100, "messages": HELLO, **change}
    body = {k: v for k, v in body.items() if v is not None}
    headers = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
    response = httpx.post(f"{fake.base_url}/v1/messages", json=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert message in response.json()["error"]["message"]
    assert len(fake.spec_violations) == 1 and message in fake.spec_violations[0]
    fake.spec_violations.clear()


def test_prompt_too_long_is_not_a_violation(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake.context_window = 10
    with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):
        client.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "word " * 50}]
        )


# --------------------------------------------------------------------------- langchain-anthropic


def test_langchain_anthropic_against_the_fake(fake: FakeAnthropic) -> None:
    chat_anthropic = pytest.importorskip(
        "langchain_anthropic", reason="optional oracle"
    ).ChatAnthropic

    class City(BaseModel):
        name: str
        population: int

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        llm = chat_anthropic(
            model=MODEL, anthropic_api_url=fake.base_url, api_key="sk-ant-test", max_retries=0
        )
        assert llm.invoke("Hello there").content == "Hello! You said: Hello there"
        assert "".join(c.text for c in llm.stream("Hello there")) == "Hello! You said: Hello there"
        called = llm.bind_tools([WEATHER]).invoke("Weather in 'Rome'?")
        assert called.tool_calls[0]["args"] == {"city": "Rome"}
        city = llm.with_structured_output(City, method="function_calling").invoke(
            "'Oslo' has 700000 people"
        )
        assert city == City(name="Oslo", population=700000)
