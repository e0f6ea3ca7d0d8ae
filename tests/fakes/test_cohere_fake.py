"""Oracle tests: the official ``cohere`` SDK (``ClientV2`` / ``AsyncClientV2``) pointed at
``FakeCohere`` must accept everything it says; its answers must match the response schemas of
Cohere's spec; and its request validation must catch what the spec forbids."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import cohere
import httpx
import pytest

from ._openapi_paths import validate_body, validate_component
from .cohere_server import SPEC_FILE, Disconnect, Fail, FakeCohere, Reply, StreamError

MODEL = "command-a-03-2025"
HELLO = [{"role": "user", "content": "Hello there"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeCohere]:
    with FakeCohere().running() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeCohere) -> Iterator[FakeCohere]:
    with server.checked(violations=False) as fake:
        yield fake


@pytest.fixture
def client(fake: FakeCohere) -> cohere.ClientV2:
    return cohere.ClientV2(api_key="test", base_url=fake.base_url, max_retries=0)


def _raw(fake: FakeCohere, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{fake.base_url}{path}", json=body, headers={"authorization": "Bearer test"}, timeout=10
    )


def _sse_events(text: str) -> list[tuple[str | None, str]]:
    frames = []
    for block in text.strip().split("\n\n"):
        name = next((ln[7:] for ln in block.splitlines() if ln.startswith("event: ")), None)
        data = "\n".join(ln[6:] for ln in block.splitlines() if ln.startswith("data: "))
        frames.append((name, data))
    return frames


# --------------------------------------------------------------------------- chat


def test_chat_parses_in_the_sdk_and_matches_the_response_schema(fake, client):
    response = client.chat(model=MODEL, messages=HELLO)
    assert response.message.content[0].text == "Hello! You said: Hello there"
    assert response.finish_reason == "COMPLETE"
    assert response.usage.billed_units.input_tokens == 2
    assert response.usage.tokens.input_tokens > response.usage.billed_units.input_tokens
    raw = _raw(fake, "/v2/chat", {"model": MODEL, "messages": HELLO})
    assert validate_component(SPEC_FILE, "ChatResponseV2", raw.json()) == []
    assert raw.headers["x-debug-trace-id"]
    recorded = fake.bodies()[0]
    assert recorded == {"model": MODEL, "messages": HELLO, "stream": False}
    assert fake.requests[0].headers["authorization"] == "Bearer test"
    assert fake.spec_violations == []


def test_chat_stream_text_events_are_typed_by_the_sdk(fake, client):
    events = list(client.chat_stream(model=MODEL, messages=HELLO))
    kinds = [e.type for e in events]
    assert kinds[0] == "message-start" and kinds[-1] == "message-end"
    assert {"content-start", "content-delta", "content-end"} <= set(kinds)
    text = "".join(e.delta.message.content.text for e in events if e.type == "content-delta")
    assert text == "Hello! You said: Hello there"
    assert events[-1].delta.finish_reason == "COMPLETE"
    assert events[-1].delta.usage.tokens.output_tokens > 0
    raw = _raw(fake, "/v2/chat", {"model": MODEL, "messages": HELLO, "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    frames = _sse_events(raw.text)
    assert frames[-1] == (None, "[DONE]")
    for name, data in frames[:-1]:
        event = json.loads(data)
        assert name == event["type"]
        assert validate_component(SPEC_FILE, "StreamedChatResponseV2", event) == [], event


def test_chat_tool_calls_non_streamed_and_streamed(fake, client):
    messages = [{"role": "user", "content": "What is the weather in 'Toronto'?"}]
    response = client.chat(model=MODEL, messages=messages, tools=[WEATHER])
    assert response.finish_reason == "TOOL_CALL"
    call = response.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Toronto"}
    assert call.id.startswith("get_weather_")
    assert response.message.tool_plan
    events = list(client.chat_stream(model=MODEL, messages=messages, tools=[WEATHER]))
    start = next(e for e in events if e.type == "tool-call-start")
    assert start.delta.message.tool_calls.function.name == "get_weather"
    args = start.delta.message.tool_calls.function.arguments or ""
    args += "".join(
        e.delta.message.tool_calls.function.arguments for e in events if e.type == "tool-call-delta"
    )
    assert json.loads(args) == {"location": "Toronto"}
    assert any(e.type == "tool-plan-delta" for e in events)
    assert events[-1].delta.finish_reason == "TOOL_CALL"
    # The tool result round trip: a text answer quoting it.
    history = [
        *messages,
        {
            "role": "assistant",
            "tool_plan": response.message.tool_plan,
            "tool_calls": [call.dict()],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    final = client.chat(model=MODEL, messages=history, tools=[WEATHER])
    assert final.finish_reason == "COMPLETE"
    assert "sunny, 21 C" in final.message.content[0].text
    assert fake.spec_violations == []


def test_tool_choice_and_json_schema_response_format(fake, client):
    forced = client.chat(model=MODEL, messages=HELLO, tools=[WEATHER], tool_choice="REQUIRED")
    assert forced.message.tool_calls
    none = client.chat(model=MODEL, messages=HELLO, tools=[WEATHER], tool_choice="NONE")
    assert none.message.tool_calls is None and none.finish_reason == "COMPLETE"
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    answer = client.chat(
        model=MODEL,
        messages=[{"role": "user", "content": "'Ada' is 36"}],
        response_format={"type": "json_object", "json_schema": schema},
    )
    assert json.loads(answer.message.content[0].text) == {"name": "Ada", "age": 36}
    assert fake.spec_violations == []


def test_stop_sequences_and_max_tokens(fake, client):
    stopped = client.chat(model=MODEL, messages=HELLO, stop_sequences=["said"])
    assert stopped.message.content[0].text == "Hello! You "
    assert stopped.finish_reason == "STOP_SEQUENCE"
    short = client.chat(model=MODEL, messages=HELLO, max_tokens=2)
    assert short.finish_reason == "MAX_TOKENS"
    assert len(short.message.content[0].text.split()) == 2


def test_image_content_needs_a_vision_model(fake, client):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    parts = [{"type": "text", "text": "what is this?"}, image]
    answer = client.chat(
        model="command-a-vision-07-2025", messages=[{"role": "user", "content": parts}]
    )
    assert "image" in answer.message.content[0].text
    with pytest.raises(cohere.errors.BadRequestError) as info:
        client.chat(model=MODEL, messages=[{"role": "user", "content": parts}])
    assert "image content is not supported" in info.value.body["message"]
    fake.spec_violations.clear()


async def test_async_client(fake):
    client = cohere.AsyncClientV2(api_key="test", base_url=fake.base_url, max_retries=0)
    response = await client.chat(model=MODEL, messages=HELLO)
    assert response.message.content[0].text.startswith("Hello!")
    texts = [
        e.delta.message.content.text
        async for e in client.chat_stream(model=MODEL, messages=HELLO)
        if e.type == "content-delta"
    ]
    assert "".join(texts) == "Hello! You said: Hello there"
    embedded = await client.embed(
        model="embed-v4.0", texts=["a"], input_type="search_query", embedding_types=["float"]
    )
    assert len(embedded.embeddings.float_[0]) == 1536


# --------------------------------------------------------------------------- embed and models


def test_embed_types_dimensions_and_schema(fake, client):
    response = client.embed(
        model="embed-v4.0",
        texts=["hello", "world"],
        input_type="search_document",
        embedding_types=["float", "int8", "base64"],
        output_dimension=256,
    )
    assert len(response.embeddings.float_) == 2 and len(response.embeddings.float_[0]) == 256
    assert len(response.embeddings.int8[1]) == 256
    assert response.texts == ["hello", "world"]
    assert response.meta.billed_units.input_tokens == 2
    raw = _raw(
        fake,
        "/v2/embed",
        {"model": "embed-v4.0", "texts": ["x"], "input_type": "search_query"},
    ).json()
    # The spec lists a top-level "api_version" as required; the live API (and the SDK's
    # EmbedByTypeResponse) carry it under meta, so that one requirement is not checked.
    problems = validate_component(SPEC_FILE, "EmbedByTypeResponse", raw)
    assert problems == ["'api_version' is a required property"]
    with pytest.raises(cohere.errors.BadRequestError):
        client.embed(
            model="embed-english-v3.0", texts=["x"], input_type="search_query", output_dimension=256
        )
    fake.spec_violations.clear()


def test_models_list_pages_and_get(fake, client):
    first = client.models.list(page_size=3)
    assert len(first.models) == 3 and first.next_page_token == "3"
    rest = client.models.list(page_size=1000, page_token=first.next_page_token)
    names = [m.name for m in first.models + rest.models]
    assert MODEL in names and "embed-v4.0" in names and rest.next_page_token is None
    chat_only = client.models.list(endpoint="chat")
    assert all("chat" in m.endpoints for m in chat_only.models)
    raw = httpx.get(f"{fake.base_url}/v1/models", headers={"authorization": "Bearer t"}).json()
    assert validate_component(SPEC_FILE, "ListModelsResponse", raw) == []
    assert client.models.get(MODEL).context_length == 256000


# --------------------------------------------------------------------------- errors


def test_errors_raise_the_sdk_types(fake, client):
    fake.script(Fail(429))
    with pytest.raises(cohere.errors.TooManyRequestsError) as limited:
        client.chat(model=MODEL, messages=HELLO)
    assert "Trial key" in limited.value.body["message"]
    fake.api_key = "right"
    with pytest.raises(cohere.errors.UnauthorizedError) as denied:
        client.chat(model=MODEL, messages=HELLO)
    assert denied.value.body["message"] == "invalid api token"
    fake.api_key = None
    with pytest.raises(cohere.errors.NotFoundError):
        client.chat(model="command-z", messages=HELLO)
    fake.script(Fail(498))
    with pytest.raises(cohere.errors.InvalidTokenError):
        client.chat(model=MODEL, messages=HELLO)
    fake.script(Fail(503))
    with pytest.raises(cohere.errors.ServiceUnavailableError):
        client.chat(model=MODEL, messages=HELLO)


def test_stream_failures(fake, client):
    fake.script(StreamError("boom", after_events=2))
    events = list(client.chat_stream(model=MODEL, messages=HELLO))
    assert events[-1].delta.error == "boom" and events[-1].delta.finish_reason == "ERROR"
    fake.script(Disconnect(after_events=2))
    with pytest.raises(httpx.RemoteProtocolError):
        list(client.chat_stream(model=MODEL, messages=HELLO))


def test_scripted_reply_with_cached_tokens_and_thinking(fake, client):
    fake.script(Reply(content="cached", cached_tokens=40, thinking="hmm"))
    response = client.chat(model=MODEL, messages=HELLO)
    assert response.usage.cached_tokens == 40
    assert [c.type for c in response.message.content] == ["thinking", "text"]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"model": MODEL}, "'messages' is a required property"),
        ({"model": MODEL, "messages": [{"role": "bot", "content": "x"}]}, "is not one of"),
        ({"model": MODEL, "messages": HELLO, "temperature": 2}, "greater than the maximum"),
        ({"model": MODEL, "messages": HELLO, "tool_choice": "ANY"}, "'ANY' is not one of"),
        ({"model": MODEL, "messages": HELLO, "response_format": {"type": "json"}}, "json"),
        ({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
    ],
)
def test_spec_validation_catches_bad_bodies(fake, body, expected):
    assert any(expected in problem for problem in validate_body(SPEC_FILE, "/v2/chat", body))
    response = _raw(fake, "/v2/chat", body)
    assert response.status_code == 400
    assert response.json()["message"].startswith("invalid request:")
    assert len(fake.spec_violations) == 1


def test_live_rules_beyond_the_schema(fake):
    cases = [
        {"model": MODEL, "messages": HELLO, "tool_choice": "REQUIRED"},
        {"model": MODEL, "messages": HELLO, "stop_sequences": list("abcdef")},
        {"model": MODEL, "messages": HELLO, "n": 2},
        {
            "model": MODEL,
            "messages": [*HELLO, {"role": "tool", "tool_call_id": "x", "content": "r"}],
        },
    ]
    for body in cases:
        assert _raw(fake, "/v2/chat", body).status_code == 400, body
    assert len(fake.spec_violations) == len(cases)


def test_valid_bodies_pass_the_discriminated_schema():
    body = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
                "tool_plan": "p",
            },
            {
                "role": "tool",
                "tool_call_id": "a",
                "content": [{"type": "document", "document": {"data": {"x": 1}}}],
            },
        ],
        "response_format": {"type": "json_object"},
        "tools": [WEATHER],
        "tool_choice": "REQUIRED",
    }
    assert validate_body(SPEC_FILE, "/v2/chat", body) == []
