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

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import reduce
from typing import Any

import httpx
import pytest

import agency
from agency.errors import AgencyError, MalformedResponse

from ._wire_cases import (
    ANTHROPIC_JSON,
    ANTHROPIC_STREAM,
    COHERE_JSON,
    COHERE_STREAM,
    EMBEDDINGS,
    GEMINI_JSON,
    GEMINI_STREAM,
    OLLAMA_JSON,
    OLLAMA_STREAM,
    OPENAI_JSON,
    OPENAI_STREAM,
    REPLICATE_EVENT_VARIANTS,
    REPLICATE_EVENTS,
    REPLICATE_JSON,
    REPLICATE_STREAMED,
    b64,
    json_bodies,
    ndjson,
    replace_at,
    sse,
    stream_variants,
)

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
        lambda events: sse(events, done=True),
    ),
    "anthropic": Wire(
        "anthropic:claude-x",
        "https://mock.invalid",
        ANTHROPIC_JSON,
        ANTHROPIC_STREAM,
        lambda events: sse(events, named=True),
    ),
    "gemini": Wire("gemini:gemini-x", "https://mock.invalid", GEMINI_JSON, GEMINI_STREAM, sse),
    "ollama": Wire(
        "ollama:llama3.2",
        "http://mock.invalid:11434",
        OLLAMA_JSON,
        OLLAMA_STREAM,
        ndjson,
        "application/x-ndjson",
    ),
    "cohere": Wire("cohere:command-a", "https://mock.invalid", COHERE_JSON, COHERE_STREAM, sse),
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


def test_replicate_malformed_streamed_predictions_raise_only_agency_errors() -> None:
    prediction: dict[str, Any] = {"body": json.dumps(REPLICATE_STREAMED)}
    events: dict[str, Any] = {"list": REPLICATE_EVENTS}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/v1/stream/"):
            text = "".join(f"event: {name}\ndata: {data}\n\n" for name, data in events["list"])
            return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, text=prediction["body"])

    llm = agency.chat_model(
        "replicate:meta/llama",
        api_key="k",
        base_url="https://mock.invalid",
        max_retries=0,
        transport=httpx.MockTransport(handle),
    )
    assert "".join(str(c.content) for c in llm.stream("hi")) == "hi there"

    def serve_prediction(body: str) -> None:
        prediction["body"] = body

    outcomes = _run(json_bodies(REPLICATE_STREAMED), serve_prediction, lambda: _stream_all(llm))
    assert len(outcomes) >= 30 and "MalformedResponse" in outcomes
    serve_prediction(json.dumps(REPLICATE_STREAMED))

    def serve_events(variant: list[tuple[str, str]]) -> None:
        events["list"] = variant

    variants = iter(REPLICATE_EVENT_VARIANTS.items())
    outcomes = _run(variants, serve_events, lambda: _stream_all(llm))
    assert outcomes == [
        "MalformedResponse",
        "MalformedResponse",
        "ProviderUnavailable",
        "ProviderUnavailable",
        "ConnectionFailed",
    ]


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
        ("openai:text-embedding-3-small", b64(1.0)[:-4] + "AAA=", "not whole float32s"),
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
    bad = replace_at(
        OPENAI_JSON, ("choices", 0, "message", "tool_calls", 0, "function", "name"), 42
    )
    served.body = json.dumps(bad)
    with pytest.raises(MalformedResponse, match="name"):
        llm.invoke("weather in Paris?")


def test_a_streamed_tool_call_index_that_is_not_an_integer_is_malformed_response() -> None:
    served = Served()
    llm = _model(WIRES["openai"], served)
    path = ("choices", 0, "delta", "tool_calls", 0, "index")
    events = [OPENAI_STREAM[0], replace_at(OPENAI_STREAM[1], path, "0"), *OPENAI_STREAM[2:]]
    served.body, served.content_type = sse(events, done=True), "text/event-stream"
    with pytest.raises(MalformedResponse, match="index"):
        list(llm.stream("weather in Paris?"))
