"""The Anthropic wire adapter without a server: request bodies, response and stream parsing,
error mapping, LangChain's standard unit suite. Integration against the fake is in
test_anthropic.py."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_tests.unit_tests import ChatModelUnitTests
from langchain_tests.unit_tests.chat_models import TEST_PYDANTIC_MODELS
from pydantic import SecretStr

import agency
from agency import errors
from agency._http import SSEEvent, error_from_response
from agency.chat_models import AgencyChatModel
from agency.errors import CapabilityError
from agency.providers._base import ChatRequest
from agency.providers.anthropic import (
    DEFAULT_MAX_TOKENS,
    AnthropicAdapter,
    StreamState,
    anthropic_error_info,
    build_messages_body,
    chunk_from_message,
    chunk_from_stream_event,
    usage_from_anthropic,
    wire_messages,
)
from providers._standard import CapabilitySwitches


class TestAnthropicChatModelUnit(CapabilitySwitches, ChatModelUnitTests):
    provider = "anthropic"

    @property
    def chat_model_class(self) -> type[AgencyChatModel]:
        return AgencyChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"model": "anthropic:claude-sonnet-4-5", "api_key": "sk-ant-test", "temperature": 0}

    @property
    def supports_pdf_inputs(self) -> bool:
        return True  # not a Capabilities field: the wire takes PDF document parts

    @pytest.mark.xfail(
        reason="langchain-core's load() revives only classes on its own allowlist "
        "(allowed_objects='all' = LangChain partner packages), so no third-party class loads; "
        "test_serdes_roundtrip below runs the same checks with our class allowed explicitly",
        strict=True,
    )
    def test_serdes(self, model, snapshot) -> None:  # type: ignore[no-untyped-def]
        super().test_serdes(model, snapshot)

    @pytest.mark.xfail(
        reason="the Messages API has no JSON mode and (in anthropic-openapi.yaml) no "
        "response_format, so AgencyChatModel refuses method='json_mode'/'json_schema' with "
        "CapabilityError; test_structured_output_methods below checks function_calling",
        raises=CapabilityError,
        strict=True,
    )
    @pytest.mark.parametrize("schema", TEST_PYDANTIC_MODELS)
    def test_with_structured_output(self, model, schema) -> None:  # type: ignore[no-untyped-def]
        super().test_with_structured_output(model, schema)

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        return (
            {"ANTHROPIC_API_KEY": "sk-ant-from-env"},
            {"model": "anthropic:claude-sonnet-4-5"},
            {"api_key": "sk-ant-from-env"},
        )


def test_serdes_roundtrip(monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_core.load import dumpd, load

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    model = AgencyChatModel(model="anthropic:claude-sonnet-4-5", max_tokens=50)
    ser = dumpd(model)
    assert ser["kwargs"]["api_key"] == {"id": ["ANTHROPIC_API_KEY"], "lc": 1, "type": "secret"}
    revived = load(
        ser, valid_namespaces=["agency"], allowed_objects=[AgencyChatModel], secrets_from_env=True
    )
    assert isinstance(revived, AgencyChatModel) and revived.asdict() == model.asdict()


def test_structured_output_methods() -> None:
    llm = agency.chat_model("anthropic:claude-sonnet-4-5", api_key="sk-ant-test")
    for strict in (None, False, True):
        bound = llm.with_structured_output(
            {"title": "Out", "type": "object", "properties": {}}, strict=strict
        )
        tool = bound.first.kwargs["tools"][0]  # type: ignore[attr-defined]
        assert tool["function"]["name"] == "Out"
        assert bound.first.kwargs["tool_choice"] == {
            "type": "function",
            "function": {"name": "Out"},
        }  # type: ignore[attr-defined]
    for method in ("json_schema", "json_mode"):
        with pytest.raises(CapabilityError):
            llm.with_structured_output({"title": "Out", "type": "object"}, method=method)  # type: ignore[arg-type]


def _body(messages: list[Any], **kw: Any) -> dict[str, Any]:
    return build_messages_body(ChatRequest(messages=messages, model="m", **kw), stream=False)


# -- requests --------------------------------------------------------------------------------
def test_system_turns_and_defaults() -> None:
    system, turns = wire_messages(
        [
            SystemMessage("one"),
            HumanMessage("a"),
            HumanMessage("b"),
            AIMessage("x"),
            AIMessage("y "),
        ]
    )
    assert system == "one"  # a lone plain system prompt goes as a string
    assert turns == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        # the final assistant turn may not end with whitespace
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}],
        },
    ]
    cached = {"type": "text", "text": "long", "cache_control": {"type": "ephemeral"}}
    system, turns = wire_messages(
        [SystemMessage([cached]), SystemMessage("two"), HumanMessage("hi")]
    )
    assert system == [cached, {"type": "text", "text": "two"}] and turns[0]["content"] == "hi"
    body = _body([HumanMessage("hi")], seed=3, top_p=0.5, stop=["x"])
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": DEFAULT_MAX_TOKENS,
        "top_p": 0.5,
        "stop_sequences": ["x"],
    }


def test_empty_and_whitespace_content_is_dropped() -> None:
    _, turns = wire_messages(
        [
            HumanMessage(["  ", {"type": "text", "text": ""}, "ok"]),
            AIMessage(""),
            HumanMessage("again"),
        ]
    )
    assert turns == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "ok"}, {"type": "text", "text": "again"}],
        }
    ]


def test_tool_history_pairs_ids_and_orders_results_first() -> None:
    ai = AIMessage(
        "let me check", tool_calls=[{"name": "f", "args": {"a": 1}, "id": "functions.f:0"}]
    )
    _, turns = wire_messages(
        [
            HumanMessage("q"),
            ai,
            HumanMessage("also this"),
            ToolMessage("3", tool_call_id="functions.f:0", status="error"),
        ]
    )
    use = turns[1]["content"][1]
    assert use["type"] == "tool_use" and use["id"].startswith("toolu_") and use["input"] == {"a": 1}
    # A ToolMessage after a HumanMessage still opens the merged user turn.
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": use["id"], "content": "3", "is_error": True},
        {"type": "text", "text": "also this"},
    ]


def test_native_anthropic_blocks_pass_through() -> None:
    ai = AIMessage(
        [
            {"type": "thinking", "thinking": "hmm", "signature": "sig", "index": 0},
            {"type": "thinking", "thinking": "unsigned"},  # the API rejects unsigned thinking
            {"type": "text", "text": "picking", "index": 1},
            {
                "type": "tool_use",
                "id": "foo",
                "name": "pick",
                "input": {},
                "partial_json": '{"c": 1}',
                "index": 2,
            },
        ],
        tool_calls=[{"name": "pick", "args": {"c": 1}, "id": "foo"}],
    )
    result = HumanMessage(
        [
            {
                "type": "tool_result",
                "tool_use_id": "foo",
                "content": [{"type": "text", "text": "ok", "cache_control": {"type": "ephemeral"}}],
            },
            {"type": "text", "text": "next?"},
        ]
    )
    _, turns = wire_messages([HumanMessage("hi"), ai, result])
    assert turns[1]["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "text", "text": "picking"},
        {"type": "tool_use", "id": "foo", "name": "pick", "input": {"c": 1}},
    ]
    assert turns[2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "foo",
        "content": [{"type": "text", "text": "ok"}],
        "cache_control": {"type": "ephemeral"},  # hoisted: not allowed inside tool_result content
    }


def test_thinking_kept_in_additional_kwargs_is_replayed() -> None:
    saved = [
        {"index": 0, "type": "thinking", "thinking": "t", "signature": "s"},
        {"index": 1, "type": "redacted_thinking", "data": "d"},
    ]
    ai = AIMessage("answer", additional_kwargs={"thinking_blocks": saved})
    _, turns = wire_messages([HumanMessage("q"), ai, HumanMessage("more")])
    assert turns[1]["content"][:2] == [
        {"type": "thinking", "thinking": "t", "signature": "s"},
        {"type": "redacted_thinking", "data": "d"},
    ]


def test_media_blocks() -> None:
    content = [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/AAA"}},
        {"type": "image", "url": "https://x/y.png"},
        {"type": "image", "base64": "iVBORw0KGgo="},  # no mime type: sniffed from the bytes
        {
            "type": "file",
            "base64": "JVBERi0=",
            "mime_type": "application/pdf",
            "extras": {"title": "T"},
        },
        {"type": "file", "base64": "aGVsbG8=", "mime_type": "text/plain"},
        {"type": "text-plain", "text": "plain", "mime_type": "text/plain"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/gif", "data": "R0lGOD"},
            "cache_control": {"type": "ephemeral"},
        },
    ]
    _, turns = wire_messages([HumanMessage(content)])
    blocks = turns[0]["content"]
    assert blocks[0]["source"] == {"type": "base64", "media_type": "image/jpeg", "data": "/9j/AAA"}
    assert blocks[1]["source"] == {"type": "url", "url": "https://x/y.png"}
    assert blocks[2]["source"]["media_type"] == "image/png"
    assert blocks[3] == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
        "title": "T",
    }
    assert blocks[4]["source"] == {"type": "text", "media_type": "text/plain", "data": "hello"}
    assert blocks[5]["source"] == {"type": "text", "media_type": "text/plain", "data": "plain"}
    assert blocks[6] == content[6]
    with pytest.raises(errors.CapabilityError, match="audio"):
        wire_messages(
            [HumanMessage([{"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"}])]
        )
    with pytest.raises(ValueError, match="text only"):
        wire_messages([SystemMessage([{"type": "image", "url": "https://x"}])])


@pytest.mark.parametrize(
    ("choice", "parallel", "wire"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", False, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "f"}},
            False,
            {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ({"type": "any"}, None, {"type": "any"}),
    ],
)
def test_tool_choice_mapping(choice: Any, parallel: bool | None, wire: dict[str, Any]) -> None:
    tool = {
        "type": "function",
        "function": {"name": "f", "description": "d", "parameters": {"properties": {}}},
    }
    body = _body(
        [HumanMessage("x")], tools=[tool], tool_choice=choice, parallel_tool_calls=parallel
    )
    assert body["tools"] == [
        {"name": "f", "description": "d", "input_schema": {"type": "object", "properties": {}}}
    ]
    assert body["tool_choice"] == wire


def test_response_format_and_unknown_messages_are_refused() -> None:
    with pytest.raises(errors.CapabilityError, match="forces a tool"):
        _body([HumanMessage("x")], response_format={"type": "json_object"})
    from langchain_core.messages import FunctionMessage

    with pytest.raises(ValueError, match="FunctionMessage"):
        wire_messages([FunctionMessage("x", name="f")])


# -- responses ------------------------------------------------------------------------------------
MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "text", "text": "Calling.", "citations": None},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"x": 1}},
        {"type": "tool_use", "id": "toolu_2", "name": "g", "input": {}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 5,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 7,
        "output_tokens": 9,
        "output_tokens_details": {"thinking_tokens": 3},
    },
}


def test_usage_sums_cached_tokens() -> None:
    assert usage_from_anthropic(MESSAGE["usage"]) == {
        "input_tokens": 112,
        "output_tokens": 9,
        "total_tokens": 121,
        "input_token_details": {"cache_read": 100, "cache_creation": 7},
        "output_token_details": {"reasoning": 3},
    }
    plain = usage_from_anthropic({"input_tokens": 3, "cache_read_input_tokens": None})
    assert plain is not None and (plain["input_tokens"], plain["output_tokens"]) == (3, 0)
    assert usage_from_anthropic(None) is None


@pytest.mark.parametrize("blocks", [False, True])
def test_message_as_text_or_blocks(blocks: bool) -> None:
    msg = chunk_from_message(MESSAGE, "anthropic", "m", blocks=blocks).message
    assert isinstance(msg, AIMessageChunk)
    assert [(c["name"], c["args"], c["id"]) for c in msg.tool_calls] == [
        ("f", {"x": 1}, "toolu_1"),
        ("g", {}, "toolu_2"),
    ]
    assert msg.response_metadata == {
        "provider": "anthropic",
        "model_provider": "anthropic",
        "model_name": "claude-sonnet-4-5-20250929",
        "id": "msg_1",
        "finish_reason": "tool_calls",
        "raw_finish_reason": "tool_use",
    }
    if blocks:
        assert [b["type"] for b in msg.content] == ["thinking", "text", "tool_use", "tool_use"]  # type: ignore[index]
        assert [b["type"] for b in msg.content_blocks] == [
            "reasoning",
            "text",
            "tool_call",
            "tool_call",
        ]
    else:
        assert msg.content == "Calling."
        assert msg.additional_kwargs == {
            "reasoning_content": "hmm",
            "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "sig"}],
        }


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"content": "text"},
        {"content": [7]},
        {"content": [{"type": "text", "text": 5}]},
        {"content": [{"type": "tool_use", "id": "t", "name": "f", "input": "x"}]},
        {"content": [{"type": "tool_use", "id": 3, "name": "f", "input": {}}]},
    ],
)
def test_malformed_message_is_typed(data: Any) -> None:
    with pytest.raises(errors.MalformedResponse):
        chunk_from_message(data, "anthropic", "m")


_START = {
    "input_tokens": 5,
    "cache_read_input_tokens": 100,
    "cache_creation_input_tokens": 7,
    "output_tokens": 1,
}


def _events(*pairs: tuple[str, dict[str, Any]]) -> list[SSEEvent]:
    return [SSEEvent(json.dumps({"type": name, **data}), name) for name, data in pairs]


STREAM = _events(
    (
        "message_start",
        {"message": {**MESSAGE, "content": [], "stop_reason": None, "usage": _START}},
    ),
    (
        "content_block_start",
        {"index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    ),
    ("ping", {}),
    ("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}}),
    ("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "m"}}),
    ("content_block_delta", {"index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
    ("content_block_stop", {"index": 0}),
    ("content_block_start", {"index": 1, "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"index": 1, "delta": {"type": "text_delta", "text": "Call"}}),
    ("content_block_delta", {"index": 1, "delta": {"type": "text_delta", "text": "ing."}}),
    (
        "content_block_start",
        {
            "index": 2,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
        },
    ),
    (
        "content_block_delta",
        {"index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}},
    ),
    (
        "content_block_delta",
        {"index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"x": '}},
    ),
    (
        "content_block_delta",
        {"index": 2, "delta": {"type": "input_json_delta", "partial_json": "1}"}},
    ),
    (
        "content_block_start",
        {
            "index": 3,
            "content_block": {"type": "tool_use", "id": "toolu_2", "name": "g", "input": {}},
        },
    ),
    ("content_block_delta", {"index": 3, "delta": {"type": "citations_delta", "citation": {}}}),
    ("some_future_event", {"anything": 1}),
    (
        "message_delta",
        {
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 9, "output_tokens_details": {"thinking_tokens": 3}},
        },
    ),
    ("message_stop", {}),
)


@pytest.mark.parametrize("blocks", [False, True])
def test_stream_assembles_like_the_message(blocks: bool) -> None:
    state = StreamState(blocks_mode=blocks)
    chunks = [
        c for e in STREAM if (c := chunk_from_stream_event(e, state, "anthropic", "m")) is not None
    ]
    assert state.finished and state.stopped
    assert all(c.message.response_metadata["model_provider"] == "anthropic" for c in chunks)
    assert sum(1 for c in chunks if c.message.usage_metadata) == 1  # cumulative usage, sent once
    full = chunks[0].message
    for chunk in chunks[1:]:
        full = full + chunk.message
    whole = chunk_from_message(MESSAGE, "anthropic", "m", blocks=blocks).message
    assert full.tool_calls == whole.tool_calls  # type: ignore[attr-defined]
    assert full.usage_metadata == whole.usage_metadata  # type: ignore[attr-defined]
    assert full.text == whole.text == "Calling."
    assert full.response_metadata["finish_reason"] == "tool_calls" and full.id == "msg_1"
    if not blocks:
        assert full.additional_kwargs["reasoning_content"] == "hmm"
        assert full.additional_kwargs["thinking_blocks"] == [
            {"index": 0, "type": "thinking", "thinking": "hmm", "signature": "sig"}
        ]
    else:
        thinking = full.content[0]  # type: ignore[index]
        assert (thinking["thinking"], thinking["signature"]) == ("hmm", "sig")  # type: ignore[index]


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        ({"type": "overloaded_error", "message": "Overloaded"}, errors.ProviderUnavailable),
        ({"type": "rate_limit_error", "message": "slow"}, errors.RateLimited),
        ({"type": "api_error", "message": "boom"}, errors.ProviderUnavailable),
        (
            {
                "type": "invalid_request_error",
                "message": "prompt is too long: 9 tokens > 5 maximum",
            },
            errors.ContextWindowExceeded,
        ),
    ],
)
def test_error_events_map_to_the_tree(error: dict[str, Any], cls: type) -> None:
    event = SSEEvent(json.dumps({"type": "error", "error": error}), "error")
    with pytest.raises(cls, match=error["message"]):
        chunk_from_stream_event(event, StreamState(), "anthropic", "m")


@pytest.mark.parametrize(
    "event",
    [
        SSEEvent("{broken", "message_start"),
        SSEEvent("[1]", "message_start"),
        SSEEvent('{"type": "message_start", "message": 3}'),
        SSEEvent('{"type": "content_block_start", "index": "0", "content_block": {}}'),
        SSEEvent(
            '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 1}}'
        ),
        SSEEvent('{"type": "message_delta", "delta": null}'),
    ],
)
def test_malformed_stream_events_are_typed(event: SSEEvent) -> None:
    with pytest.raises(errors.MalformedResponse):
        chunk_from_stream_event(event, StreamState(), "anthropic", "m")


def test_http_errors_map_through_the_anthropic_parser() -> None:
    def error(status: int, kind: str, message: str, **headers: str) -> errors.ProviderError:
        body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"}
        response = httpx.Response(status, json=body, headers={"request-id": "req_1", **headers})
        return error_from_response(
            response, provider="anthropic", model="m", parse=anthropic_error_info
        )

    overloaded = error(529, "overloaded_error", "Overloaded")
    assert isinstance(overloaded, errors.ProviderUnavailable) and overloaded.request_id == "req_1"
    limited = error(429, "rate_limit_error", "slow", **{"retry-after": "12"})
    assert isinstance(limited, errors.RateLimited) and limited.retry_after == 12.0
    too_long = error(
        400, "invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum"
    )
    assert isinstance(too_long, errors.ContextWindowExceeded)
    assert (
        type(error(400, "invalid_request_error", "max_tokens: Field required")) is errors.BadRequest
    )
    assert isinstance(
        error(401, "authentication_error", "invalid x-api-key"), errors.AuthenticationError
    )
    assert isinstance(error(404, "not_found_error", "model: x"), errors.ModelNotFound)
    info = anthropic_error_info(
        {"error": {"type": "x", "message": "m", "details": {"error_code": "c"}}}, ""
    )
    assert (info.type, info.code) == ("x", "c")
    assert anthropic_error_info(None, "gateway down").message == "gateway down"


# -- configuration ------------------------------------------------------------------------------
def test_capabilities_and_key_handling(monkeypatch: pytest.MonkeyPatch) -> None:
    caps = AnthropicAdapter.capabilities
    assert caps.tools and caps.tool_choice and caps.image_inputs and caps.cached_tokens
    assert not caps.json_schema and not caps.json_mode and not caps.embeddings
    secret = "sk-ant-VERYSECRET-123456"
    llm = agency.chat_model("anthropic:claude-sonnet-4-5", api_key=secret)
    assert isinstance(llm.api_key, SecretStr)
    assert llm._adapter._headers()["x-api-key"] == secret
    assert llm._adapter._headers()["anthropic-version"] == "2023-06-01"
    for text in (repr(llm), str(llm), llm.model_dump_json(), repr(llm.connection)):
        assert "VERYSECRET" not in text
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(errors.AuthenticationError, match="ANTHROPIC_API_KEY"):
        agency.chat_model("anthropic:claude-sonnet-4-5")
    assert agency.chat_model("anthropic", api_key="k").model == "claude-sonnet-4-6"


def test_embeddings_on_anthropic_name_voyage() -> None:
    import agency
    from agency.errors import CapabilityError

    with pytest.raises(CapabilityError, match="voyage"):
        agency.embeddings("anthropic:claude-sonnet-4-6", api_key="sk-ant-test")
