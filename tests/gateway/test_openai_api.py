"""The OpenAI-compatible routes, proven with the official SDK (strict response validation),
langchain-openai's ChatOpenAI and OpenAI's OpenAPI spec."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from fakes._openapi import validate_request
from fakes.openai_server import Reply
from gateway_harness import Running
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

SPEC = "openai-openapi.yaml"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8Bw"
    "HwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


def _client(run: Running, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=run.url + "/v1",
        api_key=key or run.key(),
        _strict_response_validation=True,
        max_retries=0,
    )


def _valid(schema: str, body: Any) -> None:
    assert validate_request(SPEC, schema, body) == [], body


def test_chat_json_validates_and_says_who_answered(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    raw = _client(run).chat.completions.with_raw_response.create(
        model="primary", messages=[{"role": "user", "content": "hello there"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello! You said: hello there"
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert raw.headers["x-agency-provider"] == "primary"
    assert raw.headers["x-agency-model"] == "openai:gpt-4o-mini"
    assert raw.headers["x-agency-attempts"] == "1"
    assert float(raw.headers["x-agency-cost-usd"]) > 0
    assert raw.headers["x-request-id"].startswith("req_")
    _valid("CreateChatCompletionResponse", json.loads(raw.http_response.text))
    # The upstream got the gateway's key, never the client's.
    sent = run.primary.requests[-1]
    assert sent.headers["authorization"] == "Bearer sk-upstream-primary"


def test_stream_with_usage_chunk(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    key = run.key()
    with httpx.stream(
        "POST",
        run.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={
            "model": "primary",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "stream me"}],
        },
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-agency-provider"] == "primary"
        assert r.headers["x-agency-model"] == "openai:gpt-4o-mini"
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        _valid("CreateChatCompletionStreamResponse", chunk)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello! You said: stream me"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    # And the SDK's own stream reader agrees.
    stream = _client(run, key).chat.completions.create(
        model="primary",
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    got = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) == text
    assert got[-1].usage is not None and got[-1].usage.total_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_parallel_tool_calls(start_gateway: Callable[..., Running], stream: bool) -> None:
    run = start_gateway()
    two = Reply(
        tool_calls=[
            {"name": "get_weather", "arguments": {"city": "Paris"}},
            {"name": "get_weather", "arguments": {"city": "Oslo"}},
        ]
    )
    run.primary.script(two, two)
    client = _client(run)
    args = {
        "model": "primary",
        "tools": [WEATHER],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "messages": [{"role": "user", "content": "weather in Paris and Oslo?"}],
    }
    if stream:
        calls: dict[int, dict[str, str]] = {}
        finish = None
        stream_ = client.chat.completions.with_raw_response.create(**args, stream=True)
        lines = [ln[6:] for ln in stream_.http_response.iter_lines() if ln.startswith("data: {")]
        for line in lines:
            _valid("CreateChatCompletionStreamResponse", json.loads(line))
        for chunk in client.chat.completions.create(**args, stream=True):
            for tc in chunk.choices[0].delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
                slot["id"] += tc.id or ""
                slot["name"] += (tc.function.name or "") if tc.function else ""
                slot["args"] += (tc.function.arguments or "") if tc.function else ""
            finish = chunk.choices[0].finish_reason or finish
        got = [(c["name"], json.loads(c["args"])) for _, c in sorted(calls.items())]
        assert all(c["id"] for c in calls.values())
    else:
        raw = client.chat.completions.with_raw_response.create(**args)
        _valid("CreateChatCompletionResponse", json.loads(raw.http_response.text))
        out = raw.parse()
        finish = out.choices[0].finish_reason
        tool_calls = out.choices[0].message.tool_calls or []
        got = [(t.function.name, json.loads(t.function.arguments)) for t in tool_calls]  # type: ignore[union-attr]
    assert finish == "tool_calls"
    assert got == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})]
    body = run.primary.requests[-1].body
    assert body["tools"] == [WEATHER] and body["parallel_tool_calls"] is True


def test_tool_results_round_trip_and_images(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    out = _client(run).chat.completions.create(
        model="primary",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": PNG}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        tools=[WEATHER],
    )
    assert out.choices[0].message.content
    sent = run.primary.requests[-1].body["messages"]
    assert sent[0]["content"][1]["image_url"]["url"] == PNG
    assert sent[1]["tool_calls"][0]["id"] == "call_1"
    assert sent[2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}


def test_response_format_json_schema(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    run.primary.script(Reply(content='{"city": "Paris"}'))
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "place", "schema": schema, "strict": True},
    }
    out = _client(run).chat.completions.create(
        model="primary",
        messages=[{"role": "user", "content": "a city"}],
        response_format=fmt,  # type: ignore[arg-type]
    )
    assert json.loads(out.choices[0].message.content or "") == {"city": "Paris"}
    assert run.primary.requests[-1].body["response_format"] == fmt


def test_embeddings_float_and_base64(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    client = _client(run)
    raw = client.embeddings.with_raw_response.create(
        model="primary", input=["a cat", "a dog"], encoding_format="float"
    )
    floats = raw.parse()
    assert [d.index for d in floats.data] == [0, 1]
    assert floats.usage.prompt_tokens > 0
    _valid("CreateEmbeddingResponse", json.loads(raw.http_response.text))
    b64 = httpx.post(
        run.url + "/v1/embeddings",
        headers={"x-api-key": run.key("b64")},
        json={"model": "primary", "input": "a cat", "encoding_format": "base64"},
    ).json()
    packed = base64.b64decode(b64["data"][0]["embedding"])
    vector = struct.unpack(f"<{len(packed) // 4}f", packed)
    assert vector == pytest.approx(floats.data[0].embedding, rel=1e-6)
    # The SDK's default asks for base64 and decodes it (its strict mode validates before
    # decoding, which fails against api.openai.com too: a plain client here).
    plain = openai.OpenAI(base_url=run.url + "/v1", api_key=run.key("plain"), max_retries=0)
    decoded = plain.embeddings.create(model="primary", input=["a cat", "a dog"])
    assert decoded.data[1].embedding == pytest.approx(floats.data[1].embedding, rel=1e-6)
    # A spec borrows the key and base URL of the entry of its provider.
    spec = client.embeddings.create(
        model="openai:text-embedding-3-small", input="x", encoding_format="float"
    )
    assert len(spec.data[0].embedding) > 0


def test_models_list(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    raw = _client(run).models.with_raw_response.list()
    ids = [m.id for m in raw.parse().data]
    assert ids == ["primary", "backup", "role:code", "role:cheap", "auto"]
    _valid("ListModelsResponse", json.loads(raw.http_response.text))
    assert _client(run).models.retrieve("role:code").id == "role:code"
    with pytest.raises(openai.NotFoundError):
        _client(run).models.retrieve("gpt-nope")


def test_chatopenai_invoke_stream_tools(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    llm = ChatOpenAI(model="role:cheap", base_url=run.url + "/v1", api_key=run.key(), max_retries=0)  # type: ignore[arg-type]
    answer = llm.invoke([HumanMessage("hi from langchain")])
    assert answer.content == "Hello! You said: hi from langchain"
    assert answer.usage_metadata is not None and answer.usage_metadata["total_tokens"] > 0
    streamed = list(llm.stream("stream from langchain"))
    assert "".join(str(c.content) for c in streamed) == "Hello! You said: stream from langchain"
    # role:cheap's chain is primary alone.
    assert len(run.primary.requests) == 2 and not run.backup.requests

    class Weather(BaseModel):
        city: str

    run.primary.script(Reply(tool_calls=[{"name": "Weather", "arguments": {"city": "Lima"}}]))
    called = llm.bind_tools([Weather]).invoke("weather in Lima")
    assert called.tool_calls[0]["name"] == "Weather"
    assert called.tool_calls[0]["args"] == {"city": "Lima"}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"model": "primary"}', 400, "'messages'"),
        (
            b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "unknown model",
        ),
        (b'{"model": "role:nope", "messages": [{"role": "user", "content": "x"}]}', 404, "no role"),
        (
            b'{"model": "primary", "n": 2, "messages": [{"role": "user", "content": "x"}]}',
            400,
            "n=1",
        ),
        (
            b'{"model": "primary", "messages": [{"role": "wizard", "content": "x"}]}',
            400,
            "messages",
        ),
    ],
)
def test_bad_requests_get_openai_errors(
    start_gateway: Callable[..., Running], body: bytes, status: int, words: str
) -> None:
    run = start_gateway()
    r = httpx.post(
        run.url + "/v1/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {run.key()}", "content-type": "application/json"},
    )
    assert r.status_code == status
    _valid("ErrorResponse", r.json())
    assert words in r.json()["error"]["message"]
    assert not run.primary.requests  # refused before any provider was called


def test_a_provider_model_spec_is_a_model_name(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    raw = _client(run).chat.completions.with_raw_response.create(
        model="openai:gpt-4o", messages=[{"role": "user", "content": "spec please"}]
    )
    assert raw.parse().model == "gpt-4o"
    assert raw.headers["x-agency-provider"] == "openai:gpt-4o"
    # The spec took the key and base URL of the first openai entry (primary's).
    assert run.primary.requests[-1].body["model"] == "gpt-4o"
    assert run.primary.requests[-1].headers["authorization"] == "Bearer sk-upstream-primary"
