"""The Anthropic wire adapter against the fake Anthropic server (tests/fakes/anthropic_server.py).

Every request our adapter sends is validated by the fake against ``CreateMessageParams`` of
Anthropic's OpenAPI spec and the API's documented rules (tool pairing, thinking replay, media,
cache breakpoints); each test ends by asserting there was no violation.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from fakes.anthropic_server import (
    Disconnect,
    Fail,
    FakeAnthropic,
    Malformed,
    Reply,
    Stall,
    StreamError,
)
from fakes.media import pdf, png
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests
from pydantic import BaseModel

import agency
from agency import errors
from agency.chat_models import AgencyChatModel
from agency.providers import anthropic as wire
from providers._standard import CapabilitySwitches

_BASE: dict[str, str] = {}
_CURRENT: list[FakeAnthropic] = []
_UNIQUE = itertools.count()
SPEC = "anthropic:claude-sonnet-4-5"
KEY = "sk-ant-test-key"


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY).running() as fake:
        yield fake


@pytest.fixture(autouse=True)
def fake(anthropic_server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    anthropic_server.reset()
    _BASE["url"] = anthropic_server.base_url  # type: ignore[assignment]
    _CURRENT[:] = [anthropic_server]
    yield anthropic_server
    assert anthropic_server.spec_violations == [], anthropic_server.spec_violations
    assert anthropic_server.internal_errors == [], anthropic_server.internal_errors


def _llm(fake: FakeAnthropic, **kw: Any) -> AgencyChatModel:
    params: dict[str, Any] = {"base_url": fake.base_url, "api_key": KEY, "max_retries": 2}
    params.update(kw)
    return agency.chat_model(SPEC, **params)


def _invoke(llm: Any, messages: Any = "hello", stream: bool = False) -> AIMessage:
    if not stream:
        return llm.invoke(messages)  # type: ignore[no-any-return]
    full = None
    for chunk in llm.stream(messages):
        full = chunk if full is None else full + chunk
    assert full is not None
    return full  # type: ignore[no-any-return]


def _cached_prompt(tag: str) -> SystemMessage:
    """A system prompt long enough to be cached (over 1024 tokens), marked for caching."""
    text = f"[{tag}] " + " ".join(f"rule {i}: be precise and kind." for i in range(200))
    return SystemMessage([{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}])


@pytest.mark.usefixtures("local_media")
class TestAnthropicStandard(CapabilitySwitches, ChatModelIntegrationTests):
    provider = "anthropic"

    @property
    def chat_model_class(self) -> type[AgencyChatModel]:
        return AgencyChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"model": SPEC, "base_url": _BASE["url"], "api_key": KEY, "temperature": 0}

    @property
    def supports_image_tool_message(self) -> bool:
        return True  # tool_result content may hold image blocks

    @property
    def supports_pdf_inputs(self) -> bool:
        return True  # not a Capabilities field: the wire takes PDF document parts

    @property
    def supports_pdf_tool_message(self) -> bool:
        return True  # tool_result content may hold document blocks

    @property
    def model_override_value(self) -> str:
        return "claude-haiku-4-5"

    @property
    def supported_usage_metadata_details(self) -> dict:
        details = ["cache_read_input", "cache_creation_input", "reasoning_output"]
        return {"invoke": details, "stream": details}

    def invoke_with_cache_creation_input(self, *, stream: bool = False) -> AIMessage:
        messages = [_cached_prompt(f"creation {next(_UNIQUE)}"), HumanMessage("hello")]
        return _invoke(AgencyChatModel(**self.chat_model_params), messages, stream)

    def invoke_with_cache_read_input(self, *, stream: bool = False) -> AIMessage:
        messages = [_cached_prompt(f"read {next(_UNIQUE)}"), HumanMessage("hello")]
        llm = AgencyChatModel(**self.chat_model_params)
        _invoke(llm, messages)  # writes the cache
        return _invoke(llm, messages, stream)

    def invoke_with_reasoning_output(self, *, stream: bool = False) -> AIMessage:
        params = {**self.chat_model_params, "temperature": None}
        thinking = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
        return _invoke(AgencyChatModel(**params, model_kwargs=thinking), "think first", stream)


# -- the request on the wire ------------------------------------------------------------------
def test_request_shape_headers_and_defaults(fake: FakeAnthropic) -> None:
    llm = _llm(fake, temperature=0.2, stop_sequences=["END"])
    llm.invoke([SystemMessage("be brief"), HumanMessage("hi"), HumanMessage("again")])
    request = fake.last_request
    assert request is not None and request.path == "/v1/messages"
    assert request.headers["x-api-key"] == KEY and "authorization" not in request.headers
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.body == {
        "model": "claude-sonnet-4-5",
        "system": "be brief",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "again"}],
            }
        ],
        "max_tokens": wire.DEFAULT_MAX_TOKENS,
        "temperature": 0.2,
        "stop_sequences": ["END"],
    }


def test_tool_round_trip_and_parallel_calls(fake: FakeAnthropic) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        },
        {
            "type": "function",
            "function": {
                "name": "get_time",
                "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
            },
        },
    ]
    calls = [
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"name": "get_time", "arguments": {"tz": "CET"}},
    ]
    for stream in (False, True):
        fake.script(Reply(content="Checking both.", tool_calls=calls))
        llm = _llm(fake).bind_tools(tools, tool_choice="any")
        msg = _invoke(llm, "weather and time in Paris", stream)
        assert msg.text == "Checking both."
        assert [(c["name"], c["args"]) for c in msg.tool_calls] == [
            ("get_weather", {"city": "Paris"}),
            ("get_time", {"tz": "CET"}),
        ]
        assert all(c["id"].startswith("toolu_") for c in msg.tool_calls)
        assert msg.response_metadata["finish_reason"] == "tool_calls"
        assert msg.response_metadata["raw_finish_reason"] == "tool_use"
        assert fake.last_request.body["tool_choice"] == {"type": "any"}  # type: ignore[union-attr]
        history: list[BaseMessage] = [HumanMessage("weather and time in Paris"), msg]
        history += [ToolMessage("sunny", tool_call_id=msg.tool_calls[0]["id"])]
        history += [ToolMessage("12:00", tool_call_id=msg.tool_calls[1]["id"], status="error")]
        answer = _invoke(_llm(fake).bind_tools(tools), history, stream)
        assert answer.text == "The tool returned: sunny; 12:00"
        last = fake.last_request.body["messages"]  # type: ignore[union-attr]
        assert [b["type"] for b in last[1]["content"]] == ["text", "tool_use", "tool_use"]
        assert last[2]["content"][1] == {
            "type": "tool_result",
            "tool_use_id": msg.tool_calls[1]["id"],
            "content": "12:00",
            "is_error": True,
        }


def test_structured_output_is_a_forced_tool(fake: FakeAnthropic) -> None:
    class City(BaseModel):
        name: str
        population: int

    llm = _llm(fake)
    for stream in (False, True):
        structured = llm.with_structured_output(City)
        result = structured.invoke("Tell me about 'Oslo', population 700000", stream=stream)
        assert result == City(name="Oslo", population=700000)
        body = fake.last_request.body  # type: ignore[union-attr]
        assert body["tool_choice"] == {
            "type": "tool",
            "name": "City",
            "disable_parallel_tool_use": True,
        }
        assert body["tools"][0]["name"] == "City" and "input_schema" in body["tools"][0]
    raw = llm.with_structured_output(City, include_raw=True).invoke("about 'Oslo', 5")
    assert isinstance(raw["parsed"], City) and raw["parsing_error"] is None
    for method in ("json_schema", "json_mode"):
        with pytest.raises(errors.CapabilityError):
            llm.with_structured_output(City, method=method).invoke("x")  # type: ignore[arg-type]


# -- usage, caching, thinking -----------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
def test_cache_tokens_are_added_to_input_and_reported_apart(
    fake: FakeAnthropic, stream: bool
) -> None:
    usage = {
        "input_tokens": 10,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 24,
        "output_tokens": 5,
    }
    fake.script(Reply(content="cached", usage=usage))
    msg = _invoke(_llm(fake), "hello", stream)
    assert msg.usage_metadata == {
        "input_tokens": 1034,
        "output_tokens": 5,
        "total_tokens": 1039,
        "input_token_details": {"cache_read": 1000, "cache_creation": 24},
    }
    # The fake caches like the API: the first call writes the prefix, the second reads it.
    messages = [_cached_prompt(f"usage {stream}"), HumanMessage("hello")]
    first, second = _invoke(_llm(fake), messages, stream), _invoke(_llm(fake), messages, stream)
    created = first.usage_metadata["input_token_details"]["cache_creation"]  # type: ignore[index]
    assert created > 1024 and first.usage_metadata["input_token_details"]["cache_read"] == 0  # type: ignore[index]
    assert second.usage_metadata["input_token_details"] == {
        "cache_read": created,
        "cache_creation": 0,
    }  # type: ignore[index]
    assert first.usage_metadata["input_tokens"] == second.usage_metadata["input_tokens"] > created  # type: ignore[index]


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_is_kept_and_replayed_with_tool_results(fake: FakeAnthropic, stream: bool) -> None:
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 2048}}
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
    llm = _llm(fake, model_kwargs=thinking).bind_tools([tool])
    first = _invoke(llm, "use lookup for 'x'", stream)
    # With tools or thinking the content keeps Anthropic's blocks, as langchain-anthropic does.
    block, text, call = first.content  # type: ignore[misc]
    assert block["type"] == "thinking" and block["thinking"].startswith("Let me think about")
    assert block["signature"] and text["type"] == "text" and call["type"] == "tool_use"
    assert [b["type"] for b in first.content_blocks] == ["reasoning", "text", "tool_call"]
    assert first.usage_metadata["output_token_details"]["reasoning"] > 0  # type: ignore[index]
    assert first.tool_calls[0]["args"] == {"q": "x"}
    # The fake, like the API, rejects a tool result whose assistant turn lost its signed thinking.
    history = [
        HumanMessage("use lookup for 'x'"),
        first,
        ToolMessage("42", tool_call_id=first.tool_calls[0]["id"]),
    ]
    final = _invoke(llm, history, stream)
    assert final.text == "The tool returned: 42"
    sent = fake.last_request.body["messages"][1]["content"]  # type: ignore[union-attr]
    assert sent[0] == {k: block[k] for k in ("type", "thinking", "signature")}
    assert [b["type"] for b in sent] == ["thinking", "text", "tool_use"]


def test_stop_sequence_and_max_tokens_finish_reasons(fake: FakeAnthropic) -> None:
    msg = _llm(fake).invoke("Hello there", stop=["said"])
    assert msg.text == "Hello! You "
    meta = msg.response_metadata
    assert (meta["finish_reason"], meta["raw_finish_reason"], meta["stop_sequence"]) == (
        "stop",
        "stop_sequence",
        "said",
    )
    short = _invoke(_llm(fake, max_tokens=2), "Hello there", stream=True)
    assert short.text == "Hello! You" and short.response_metadata["finish_reason"] == "length"
    assert fake.last_request.body["max_tokens"] == 2  # type: ignore[union-attr]


def test_images_and_documents_become_anthropic_blocks(fake: FakeAnthropic) -> None:
    png_b64 = base64.b64encode(png()).decode()
    message = HumanMessage(
        content=[
            {"type": "text", "text": "what are these?"},
            {"type": "image", "base64": png_b64, "mime_type": "image/png"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            {
                "type": "file",
                "base64": base64.b64encode(pdf()).decode(),
                "mime_type": "application/pdf",
            },
        ]
    )
    answer = _llm(fake).invoke([message])
    assert "I see an image (" in answer.text and "at https://example.com/cat.jpg" in answer.text
    assert "PDF document" in answer.text
    content = fake.last_request.body["messages"][0]["content"]  # type: ignore[union-attr]
    assert content[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": png_b64},
    }
    assert content[2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.jpg"},
    }
    assert (
        content[3]["type"] == "document" and content[3]["source"]["media_type"] == "application/pdf"
    )


# -- failures -----------------------------------------------------------------------------------
def test_rate_limit_honours_retry_after_then_succeeds(fake: FakeAnthropic) -> None:
    fake.script(Fail(429, times=2), Reply(content="finally"))
    assert _llm(fake).invoke("hi").text == "finally"
    assert len(fake.bodies()) == 3
    fake.script(Fail(429, retry_after=7))
    with pytest.raises(errors.RateLimited) as info:
        _llm(fake, max_retries=0).invoke("hi")
    assert info.value.retry_after == 7.0 and info.value.status_code == 429
    assert info.value.request_id and info.value.request_id.startswith("req_")


def test_overloaded_529_is_provider_unavailable_and_retried(fake: FakeAnthropic) -> None:
    fake.script(Fail(529), Reply(content="recovered"))
    assert _llm(fake).invoke("hi").text == "recovered"
    fake.script(Fail(529, times=3))
    with pytest.raises(errors.ProviderUnavailable, match="Overloaded") as info:
        _llm(fake, max_retries=1).invoke("hi")
    assert info.value.status_code == 529


def test_error_event_mid_stream(fake: FakeAnthropic) -> None:
    # Before any content: nothing reached the caller, so the call is retried.
    fake.script(StreamError(after_events=2), Reply(content="second try"))
    assert "".join(c.text for c in _llm(fake).stream("hi")) == "second try"
    assert len(fake.bodies()) == 2
    # After content: the error surfaces, typed, and is not replayed.
    fake.script(StreamError(after_events=6, type="overloaded_error"))
    seen: list[str] = []
    with pytest.raises(errors.ProviderUnavailable, match="Overloaded"):
        for chunk in _llm(fake).stream("one two three four five"):
            seen.append(chunk.text)
    assert "".join(seen).startswith("Hello!")
    fake.script(StreamError(after_events=1, type="rate_limit_error", message="slow down"))
    with pytest.raises(errors.RateLimited, match="slow down"):
        list(_llm(fake, max_retries=0).stream("hi"))


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.BadRequest),
        (401, errors.AuthenticationError),
        (403, errors.PermissionDenied),
        (404, errors.ModelNotFound),
        (413, errors.ContextWindowExceeded),
    ],
)
def test_client_errors_are_typed_and_not_retried(
    fake: FakeAnthropic, status: int, cls: type
) -> None:
    fake.script(Fail(status, times=3))
    with pytest.raises(cls):
        _llm(fake).invoke("hi")
    assert len(fake.bodies()) == 1


def test_prompt_too_long_is_context_window_exceeded(fake: FakeAnthropic) -> None:
    fake.context_window = 50
    with pytest.raises(errors.ContextWindowExceeded, match="prompt is too long"):
        _llm(fake).invoke("word " * 100)


def test_unknown_model_and_wrong_key(fake: FakeAnthropic) -> None:
    with pytest.raises(errors.ModelNotFound, match="claude-nope"):
        agency.chat_model("anthropic:claude-nope", base_url=fake.base_url, api_key=KEY).invoke("hi")
    with pytest.raises(errors.AuthenticationError, match="invalid x-api-key") as info:
        _llm(fake, api_key="sk-ant-wrong-SECRET-123456").invoke("hi")
    assert "SECRET" not in str(info.value) and "SECRET" not in repr(info.value.__dict__)


def test_stream_cut_and_malformed_bodies(fake: FakeAnthropic) -> None:
    fake.script(Disconnect(after_events=6))
    seen: list[str] = []
    with pytest.raises(errors.ConnectionFailed):
        for chunk in _llm(fake, max_retries=0).stream("one two three four"):
            seen.append(chunk.text)
    assert "".join(seen)
    fake.script(Malformed("{not json"))
    with pytest.raises(errors.MalformedResponse):
        _llm(fake).invoke("hi")
    fake.script(Malformed('{"type": "message", "content": "text"}'))
    with pytest.raises(errors.MalformedResponse):
        _llm(fake).invoke("hi")
    fake.script(Malformed("event: message_start\ndata: {broken\n\n"))
    with pytest.raises(errors.MalformedResponse):
        list(_llm(fake).stream("hi"))


def test_timeout_is_typed_and_retried(fake: FakeAnthropic) -> None:
    fake.script(Stall(1.0), Reply(content="after the stall"))
    assert _llm(fake, timeout=0.3).invoke("hi").text == "after the stall"
    fake.script(Stall(1.0))
    with pytest.raises(errors.Timeout):
        _llm(fake, timeout=0.3, max_retries=0).invoke("hi")


# -- models, embeddings, async --------------------------------------------------------------------
def test_models_follow_pages(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "MODELS_PAGE_LIMIT", 4)
    models = agency.list_models("anthropic", base_url=fake.base_url, api_key=KEY)
    assert [m.id for m in models] == [card.id for card in fake.models]
    assert models[0].context_window == 200_000 and models[0].raw["display_name"]
    queries = [r.query for r in fake.requests if r.path == "/v1/models"]
    assert queries == [
        {"limit": "4"},
        {"limit": "4", "after_id": models[3].id},
        {"limit": "4", "after_id": models[7].id},
    ]
    assert agency.is_model_available(
        "anthropic:claude-sonnet-4-5-20250929", base_url=fake.base_url, api_key=KEY
    )
    assert not agency.is_model_available("anthropic:claude-9", base_url=fake.base_url, api_key=KEY)


def test_no_embeddings_points_at_voyage(fake: FakeAnthropic) -> None:
    adapter = _llm(fake)._adapter
    with pytest.raises(errors.CapabilityError, match="voyage"):
        adapter.embed(["x"], model="claude-sonnet-4-5")
    assert not adapter.effective_capabilities().embeddings
    with pytest.raises(errors.CapabilityError):
        agency.embeddings("anthropic:claude-sonnet-4-5", api_key=KEY, base_url=fake.base_url)
    assert fake.requests == []


async def test_async_twins(fake: FakeAnthropic) -> None:
    llm = _llm(fake)
    fake.script(Fail(529), Reply(content="async ok"))
    assert (await llm.ainvoke("hi")).text == "async ok"
    parts = [c.text async for c in llm.astream("hello there")]
    assert len(parts) > 1 and "".join(parts) == "Hello! You said: hello there"
    models = await agency.alist_models("anthropic", base_url=fake.base_url, api_key=KEY)
    assert "claude-haiku-4-5-20251001" in {m.id for m in models}
    with pytest.raises(errors.CapabilityError, match="voyage"):
        await llm._adapter.aembed(["x"], model="m")
    fake.script(StreamError(after_events=6))
    with pytest.raises(errors.ProviderUnavailable):
        async for _ in llm.astream("one two three"):
            pass
