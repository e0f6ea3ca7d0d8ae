"""Malformed answers on every wire, JSON and streamed: only our errors may come out.

Each wire has one canonical valid answer (text, a tool call, usage); a deterministic mutation
generator rewrites it at every path (a wrong type, a missing key, a wrapping list), cuts it
short or replaces it with something that is not JSON. The answers are served through
``transport=httpx.MockTransport``. Whatever a mutation does, `invoke`, `stream` and
`embed_documents` either succeed (a mutation may still be a valid answer) or raise an
`AgencyError` (`MalformedResponse` for a bad shape; `ConnectionFailed` for a stream cut off
before its end; the provider's error for an in-stream error event): never ``KeyError``,
``TypeError``, ``IndexError``, ``binascii.Error``, ``struct.error`` or pydantic's
``ValidationError``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import reduce
from typing import Any

import httpx
import pytest

import agency
from agency.errors import AgencyError, MalformedResponse

_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
_ARGS = '{"city": "Paris"}'

# --------------------------------------------------------------------------- canonical answers
OPENAI_JSON = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "system_fingerprint": "fp_1",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "hi",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": _ARGS},
                    }
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 1},
        "completion_tokens_details": {"reasoning_tokens": 2},
    },
}


def _oa_chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    head = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    return {**head, "choices": [choice], **extra}


OPENAI_STREAM = [
    _oa_chunk({"role": "assistant", "content": "hi"}),
    _oa_chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    ),
    _oa_chunk({"tool_calls": [{"index": 0, "function": {"arguments": _ARGS}}]}),
    _oa_chunk({}, "tool_calls"),
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    },
]

ANTHROPIC_JSON = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [
        {"type": "text", "text": "hi"},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 3,
        "output_tokens": 4,
        "cache_read_input_tokens": 1,
        "cache_creation_input_tokens": 0,
    },
}
ANTHROPIC_STREAM = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": 3, "output_tokens": 1},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": _ARGS},
    },
    {"type": "content_block_stop", "index": 1},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 4},
    },
    {"type": "message_stop"},
]

_GEMINI_USAGE = {
    "promptTokenCount": 3,
    "candidatesTokenCount": 4,
    "totalTokenCount": 7,
    "cachedContentTokenCount": 1,
}
_GEMINI_CALL = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
GEMINI_JSON = {
    "candidates": [
        {
            "content": {"role": "model", "parts": [{"text": "hi"}, _GEMINI_CALL]},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": _GEMINI_USAGE,
    "modelVersion": "gemini-x",
    "responseId": "r1",
}
GEMINI_STREAM = [
    {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "index": 0}],
        "modelVersion": "gemini-x",
        "responseId": "r1",
    },
    {
        "candidates": [
            {"content": {"role": "model", "parts": [_GEMINI_CALL]}, "finishReason": "STOP"}
        ],
        "usageMetadata": _GEMINI_USAGE,
        "modelVersion": "gemini-x",
        "responseId": "r1",
    },
]

_OLLAMA_HEAD = {"model": "llama3.2", "created_at": "2025-01-01T00:00:00Z"}
_OLLAMA_CALL = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
OLLAMA_JSON = {
    **_OLLAMA_HEAD,
    "message": {"role": "assistant", "content": "hi", "tool_calls": [_OLLAMA_CALL]},
    "done": True,
    "done_reason": "stop",
    "total_duration": 10,
    "prompt_eval_count": 3,
    "eval_count": 4,
}
OLLAMA_STREAM = [
    {**_OLLAMA_HEAD, "message": {"role": "assistant", "content": "hi"}, "done": False},
    {
        **_OLLAMA_HEAD,
        "message": {"role": "assistant", "content": "", "tool_calls": [_OLLAMA_CALL]},
        "done": False,
    },
    {
        **_OLLAMA_HEAD,
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 3,
        "eval_count": 4,
    },
]

_COHERE_USAGE = {
    "billed_units": {"input_tokens": 3, "output_tokens": 4},
    "tokens": {"input_tokens": 3, "output_tokens": 4},
}
COHERE_JSON = {
    "id": "c1",
    "finish_reason": "TOOL_CALL",
    "message": {
        "role": "assistant",
        "content": [{"type": "text", "text": "hi"}],
        "tool_plan": "I will look it up",
        "tool_calls": [
            {
                "id": "tc1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": _ARGS},
            }
        ],
    },
    "usage": _COHERE_USAGE,
}
COHERE_STREAM = [
    {"type": "message-start", "id": "c1", "delta": {"message": {"role": "assistant"}}},
    {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "hi"}}}},
    {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will"}}},
    {
        "type": "tool-call-start",
        "index": 0,
        "delta": {
            "message": {
                "tool_calls": {
                    "id": "tc1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            }
        },
    },
    {
        "type": "tool-call-delta",
        "index": 0,
        "delta": {"message": {"tool_calls": {"function": {"arguments": _ARGS}}}},
    },
    {"type": "tool-call-end", "index": 0},
    {"type": "message-end", "delta": {"finish_reason": "TOOL_CALL", "usage": _COHERE_USAGE}},
]

REPLICATE_JSON = {
    "id": "p1",
    "model": "meta/llama",
    "version": "v1",
    "status": "succeeded",
    "output": ["hi", " there"],
    "error": None,
    "metrics": {"input_token_count": 3, "output_token_count": 4, "predict_time": 0.1},
    "urls": {
        "get": "https://mock.invalid/v1/predictions/p1",
        "cancel": "https://mock.invalid/v1/predictions/p1/cancel",
    },
}


# --------------------------------------------------------------------------- mutations
CUT = object()
"""Last item of a stream that is cut off: the connection closes with no end marker."""
_WRONG: tuple[Any, ...] = (None, 7, "x", True, [], {})


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def _replace(doc: Any, path: tuple[Any, ...], value: Any, *, delete: bool = False) -> Any:
    doc = copy.deepcopy(doc)
    if not path:
        return value
    parent = reduce(lambda node, key: node[key], path[:-1], doc)
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def mutations(doc: Any) -> Iterator[tuple[str, Any]]:
    """``(what, mutated document)``: at every path a value of each wrong type, the value
    wrapped in a list (wrong nesting), and the key deleted."""
    for path in _paths(doc):
        original = reduce(lambda node, key: node[key], path, doc)
        for wrong in _WRONG:
            if type(wrong) is not type(original):
                yield f"{list(path)} = {wrong!r}", _replace(doc, path, wrong)
        yield f"{list(path)} wrapped in a list", _replace(doc, path, [original])
        if path and isinstance(reduce(lambda node, key: node[key], path[:-1], doc), dict):
            yield f"{list(path)} deleted", _replace(doc, path, None, delete=True)


def json_bodies(doc: Any) -> Iterator[tuple[str, str]]:
    """Raw bodies: every mutation of ``doc``, then truncated and non-JSON ones."""
    for what, mutated in mutations(doc):
        yield what, json.dumps(mutated)
    text = json.dumps(doc)
    yield "truncated JSON", text[: len(text) // 2]
    yield "empty body", ""
    yield "not JSON", "<html>502 Bad Gateway</html>"


def stream_variants(events: list[Any]) -> Iterator[tuple[str, list[Any]]]:
    """Event lists (a str item is sent as raw data): one event mutated at a time, a non-JSON
    event, and the stream cut off halfway."""
    for i, event in enumerate(events):
        for what, mutated in mutations(event):
            yield f"event {i}: {what}", [*events[:i], mutated, *events[i + 1 :]]
        yield f"event {i} not JSON", [*events[:i], "{not json", *events[i + 1 :]]
        yield f"event {i} truncated", [*events[:i], json.dumps(event)[:9], *events[i + 1 :]]
    yield "cut off halfway", [*events[: len(events) // 2], CUT]


def _sse(events: list[Any], *, named: bool = False, done: bool = False) -> str:
    out = []
    if events and events[-1] is CUT:
        events, done = events[:-1], False
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        name = event.get("type") if named and isinstance(event, dict) else None
        out.append((f"event: {name}\n" if isinstance(name, str) else "") + f"data: {data}\n\n")
    if done:
        out.append("data: [DONE]\n\n")
    return "".join(out)


def _ndjson(events: list[Any]) -> str:
    lines = [e if isinstance(e, str) else json.dumps(e) for e in events if e is not CUT]
    return "".join(line + "\n" for line in lines)


# --------------------------------------------------------------------------- wires
@dataclass
class Wire:
    spec: str
    base_url: str
    answer: Any
    stream: list[Any]
    frame: Callable[[list[Any]], str]
    content_type: str = "text/event-stream"


WIRES = {
    "openai": Wire(
        "openai:gpt-4o-mini",
        "https://mock.invalid/v1",
        OPENAI_JSON,
        OPENAI_STREAM,
        lambda events: _sse(events, done=True),
    ),
    "anthropic": Wire(
        "anthropic:claude-x",
        "https://mock.invalid",
        ANTHROPIC_JSON,
        ANTHROPIC_STREAM,
        lambda events: _sse(events, named=True),
    ),
    "gemini": Wire("gemini:gemini-x", "https://mock.invalid", GEMINI_JSON, GEMINI_STREAM, _sse),
    "ollama": Wire(
        "ollama:llama3.2",
        "http://mock.invalid:11434",
        OLLAMA_JSON,
        OLLAMA_STREAM,
        _ndjson,
        "application/x-ndjson",
    ),
    "cohere": Wire("cohere:command-a", "https://mock.invalid", COHERE_JSON, COHERE_STREAM, _sse),
}


class Served:
    """The body the mock transport answers every request with (set per case)."""

    def __init__(self) -> None:
        self.body = ""
        self.content_type = "application/json"
        self.requests = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return httpx.Response(
            200, content=self.body.encode(), headers={"content-type": self.content_type}
        )


def _model(wire: Wire, served: Served, **params: Any) -> Any:
    llm = agency.chat_model(
        wire.spec,
        api_key="k",
        base_url=wire.base_url,
        max_retries=0,
        transport=httpx.MockTransport(served.handle),
        **params,
    )
    return llm.bind_tools(_TOOLS)


def _outcome(call: Callable[[], Any]) -> str:
    """``"ok"``, or the name of the `AgencyError` raised; any other exception propagates."""
    try:
        call()
    except AgencyError as exc:
        return type(exc).__name__
    return "ok"


def _run(cases: Iterator[tuple[str, Any]], serve: Callable[[Any], None], call: Any) -> list[str]:
    outcomes, escaped = [], []
    for what, case in cases:
        serve(case)
        try:
            outcomes.append(_outcome(call))
        except Exception as exc:  # the defect this test exists to find
            escaped.append(f"{what}: {type(exc).__module__}.{type(exc).__name__}: {exc}"[:300])
    assert not escaped, f"{len(escaped)} non-agency errors escaped:\n" + "\n".join(escaped[:15])
    return outcomes


def _stream_all(llm: Any) -> Any:
    chunks = list(llm.stream("weather in Paris?"))
    return reduce(lambda a, b: a + b, chunks)  # merged, as a consumer (and invoke) does


@pytest.mark.parametrize("name", sorted(WIRES))
def test_malformed_json_answers_raise_only_agency_errors(name: str) -> None:
    wire, served = WIRES[name], Served()
    llm = _model(wire, served)

    def serve(body: str) -> None:
        served.body, served.content_type = body, "application/json"

    serve(json.dumps(wire.answer))
    valid = llm.invoke("weather in Paris?")
    assert valid.tool_calls[0]["name"] == "get_weather" and valid.usage_metadata is not None
    outcomes = _run(json_bodies(wire.answer), serve, lambda: llm.invoke("weather in Paris?"))
    assert len(outcomes) >= 30
    assert outcomes[-3:] == ["MalformedResponse"] * 3  # truncated, empty, not JSON
    assert outcomes.count("MalformedResponse") >= len(outcomes) // 5


@pytest.mark.parametrize("name", sorted(WIRES))
def test_malformed_streams_raise_only_agency_errors(name: str) -> None:
    wire, served = WIRES[name], Served()
    llm = _model(wire, served)

    def serve(events: list[Any]) -> None:
        served.body, served.content_type = wire.frame(events), wire.content_type

    serve(wire.stream)
    valid = _stream_all(llm)
    assert valid.tool_calls[0]["name"] == "get_weather", valid
    assert valid.tool_calls[0]["args"] == {"city": "Paris"} and valid.usage_metadata is not None
    outcomes = _run(stream_variants(wire.stream), serve, lambda: _stream_all(llm))
    assert len(outcomes) >= 50
    assert "MalformedResponse" in outcomes
    assert outcomes[-1] in ("ConnectionFailed", "MalformedResponse")  # cut off halfway


async def test_malformed_answers_async_raise_only_agency_errors() -> None:
    """The async paths parse with the same code; a sample of cases through `ainvoke`."""
    wire, served = WIRES["openai"], Served()
    llm = _model(wire, served)
    escaped = []
    for what, body in list(json_bodies(wire.answer))[::7]:
        served.body = body
        try:
            await llm.ainvoke("weather in Paris?")
        except AgencyError:
            pass
        except Exception as exc:
            escaped.append(f"{what}: {type(exc).__name__}: {exc}")
    assert not escaped, escaped


def test_replicate_malformed_predictions_raise_only_agency_errors() -> None:
    served = Served()
    llm = agency.chat_model(
        "replicate:meta/llama",
        api_key="k",
        base_url="https://mock.invalid",
        max_retries=0,
        transport=httpx.MockTransport(served.handle),
    )

    def serve(body: str) -> None:
        served.body = body

    serve(json.dumps(REPLICATE_JSON))
    assert llm.invoke("hi").content == "hi there"
    # Only wrong types: a mutated status string would leave the prediction "running".
    outcomes = _run(json_bodies(REPLICATE_JSON), serve, lambda: llm.invoke("hi"))
    assert len(outcomes) >= 30 and "MalformedResponse" in outcomes


# --------------------------------------------------------------------------- embeddings
def _b64(*values: float) -> str:
    import base64
    import struct

    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


EMBEDDINGS = {
    "openai:text-embedding-3-small": {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5, 1.0]},
            {"object": "embedding", "index": 1, "embedding": [1.5, 2.0]},
        ],
        "model": "m",
    },
    "voyage:voyage-3.5": {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": _b64(0.5, 1.0)},
            {"object": "embedding", "index": 1, "embedding": _b64(1.5, 2.0)},
        ],
        "model": "voyage-3.5",
    },
    "cohere:embed-v4.0": {"id": "e1", "embeddings": {"float": [[0.5, 1.0], [1.5, 2.0]]}},
    "ollama:nomic-embed-text": {"model": "m", "embeddings": [[0.5, 1.0], [1.5, 2.0]]},
    "gemini:gemini-embedding-001": {"embeddings": [{"values": [0.5, 1.0]}, {"values": [1.5, 2.0]}]},
}


@pytest.mark.parametrize("spec", sorted(EMBEDDINGS))
def test_malformed_embeddings_raise_only_agency_errors(spec: str) -> None:
    served = Served()
    emb = agency.embeddings(
        spec,
        api_key="k",
        base_url="http://mock.invalid:11434"
        if spec.startswith("ollama")
        else "https://mock.invalid",
        max_retries=0,
        transport=httpx.MockTransport(served.handle),
    )

    def serve(body: str) -> None:
        served.body = body

    serve(json.dumps(EMBEDDINGS[spec]))
    assert emb.embed_documents(["a", "b"]) == [[0.5, 1.0], [1.5, 2.0]]
    outcomes = _run(json_bodies(EMBEDDINGS[spec]), serve, lambda: emb.embed_documents(["a", "b"]))
    assert len(outcomes) >= 20
    assert outcomes.count("MalformedResponse") >= len(outcomes) // 3


@pytest.mark.parametrize(
    ("spec", "embedding", "why"),
    [
        ("openai:text-embedding-3-small", "AAA", "bad padding"),
        ("openai:text-embedding-3-small", _b64(1.0)[:-4] + "AAA=", "not whole float32s"),
        ("voyage:voyage-3.5", "AAA", "bad padding"),
        ("voyage:voyage-3.5", "AACAPwA=", "5 bytes: not whole float32s"),
    ],
)
def test_malformed_base64_embeddings_are_malformed_response_from_the_cause(
    spec: str, embedding: str, why: str
) -> None:
    body = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": embedding}]}
    emb = agency.embeddings(
        spec,
        api_key="k",
        base_url="https://mock.invalid",
        max_retries=0,
        transport=httpx.MockTransport(lambda request: httpx.Response(200, json=body)),
    )
    with pytest.raises(MalformedResponse, match="base64") as info:
        emb.embed_query("x")
    assert info.value.provider == spec.split(":")[0], why
    assert info.value.__cause__ is not None, why  # raised from the binascii/struct error


# --------------------------------------------------------------------------- the cases
def test_a_tool_call_name_that_is_not_a_string_is_malformed_response() -> None:
    served = Served()
    llm = _model(WIRES["openai"], served)
    bad = _replace(OPENAI_JSON, ("choices", 0, "message", "tool_calls", 0, "function", "name"), 42)
    served.body = json.dumps(bad)
    with pytest.raises(MalformedResponse, match="name"):
        llm.invoke("weather in Paris?")


def test_a_streamed_tool_call_index_that_is_not_an_integer_is_malformed_response() -> None:
    served = Served()
    llm = _model(WIRES["openai"], served)
    path = ("choices", 0, "delta", "tool_calls", 0, "index")
    events = [OPENAI_STREAM[0], _replace(OPENAI_STREAM[1], path, "0"), *OPENAI_STREAM[2:]]
    served.body, served.content_type = _sse(events, done=True), "text/event-stream"
    with pytest.raises(MalformedResponse, match="index"):
        list(llm.stream("weather in Paris?"))
