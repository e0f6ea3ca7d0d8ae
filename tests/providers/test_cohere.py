"""The Cohere adapter against the fake Cohere server (tests/fakes/cohere_server.py).

Every request the adapter sends is validated by the fake against Cohere's OpenAPI spec and the
live API's rules; each test ends by asserting there was no violation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fakes.cohere_server import Disconnect, Fail, FakeCohere, Malformed, Reply, Stall, StreamError
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests, EmbeddingsIntegrationTests

import agency
from agency import errors
from agency.chat_models import AgencyChatModel
from agency.embedding_models import AgencyEmbeddings
from agency.providers import cohere as wire
from providers._standard import CapabilitySwitches

MODEL = "command-a-03-2025"
VISION = "command-a-vision-07-2025"
_CURRENT: list[FakeCohere] = []


@pytest.fixture(scope="module")
def server() -> Iterator[FakeCohere]:
    with FakeCohere().running() as fake:
        yield fake


@pytest.fixture(autouse=True)
def fake(server: FakeCohere) -> Iterator[FakeCohere]:
    server.reset()
    _CURRENT[:] = [server]
    yield server
    assert server.spec_violations == [], server.spec_violations
    assert server.internal_errors == [], server.internal_errors


def _params(model: str = MODEL, **kw: Any) -> dict[str, Any]:
    return {
        "model": f"cohere:{model}",
        "base_url": _CURRENT[0].base_url,
        "api_key": "co-test",
        **kw,
    }


def _llm(model: str = MODEL, **kw: Any) -> AgencyChatModel:
    return AgencyChatModel(**_params(model, **kw))


def _invoke(llm: Any, stream: bool, prompt: Any = "hello") -> AIMessage:
    if not stream:
        return llm.invoke(prompt)  # type: ignore[no-any-return]
    full = None
    for chunk in llm.stream(prompt):
        full = chunk if full is None else full + chunk
    assert full is not None
    return full  # type: ignore[no-any-return]


@pytest.mark.usefixtures("local_media")
class TestCohereStandard(CapabilitySwitches, ChatModelIntegrationTests):
    provider = "cohere"

    @property
    def chat_model_class(self) -> type[AgencyChatModel]:
        return AgencyChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return _params(temperature=0)

    @property
    def supports_image_inputs(self) -> bool:
        return False  # command-a-03-2025 is text-only; TestCohereVisionStandard covers images

    @property
    def model_override_value(self) -> str:
        return "command-r-plus-08-2024"

    @property
    def supported_usage_metadata_details(self) -> Any:
        return {"invoke": ["cache_read_input"], "stream": ["cache_read_input"]}

    def invoke_with_cache_read_input(self, *, stream: bool = False) -> AIMessage:
        _CURRENT[0].script(Reply(content="cached answer", cached_tokens=1024))
        return _invoke(_llm(), stream)


@pytest.mark.usefixtures("local_media")
class TestCohereVisionStandard(CapabilitySwitches, ChatModelIntegrationTests):
    """Cohere's vision model: images in (base64 and URLs), no tool use."""

    provider = "cohere"

    @property
    def chat_model_class(self) -> type[AgencyChatModel]:
        return AgencyChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return _params(VISION, temperature=0)

    @property
    def has_tool_calling(self) -> bool:
        return False  # command-a-vision has no tool use (the fake refuses tools for it)

    @property
    def structured_output_kwargs(self) -> dict[str, Any]:
        return {"method": "json_schema"}

    @property
    def model_override_value(self) -> str:
        return "c4ai-aya-vision-32b"


class TestCohereEmbeddingsStandard(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[AgencyEmbeddings]:
        return AgencyEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return _params("embed-v4.0")


# -- behaviour beyond the standard suites ------------------------------------------------------
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
}


def test_named_tool_choice_sends_only_that_tool_required(fake: FakeCohere) -> None:
    for stream in (False, True):
        llm = _llm().bind_tools([WEATHER, TIME], tool_choice="get_time")
        msg = _invoke(llm, stream, "what time is it in 'CET'")
        assert [(c["name"], c["args"]) for c in msg.tool_calls] == [("get_time", {"tz": "CET"})]
        body = fake.last_request.body  # type: ignore[union-attr]
        assert body["tool_choice"] == "REQUIRED"
        assert [t["function"]["name"] for t in body["tools"]] == ["get_time"]
        assert msg.response_metadata["finish_reason"] == "tool_calls"
        assert msg.response_metadata["raw_finish_reason"] == "TOOL_CALL"
        assert msg.additional_kwargs["tool_plan"].startswith("I will use the get_time tool")


def test_parallel_tool_calls_streamed_and_not(fake: FakeCohere) -> None:
    calls = [
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"name": "get_time", "arguments": {"tz": "CET"}},
    ]
    for stream in (False, True):
        fake.script(Reply(tool_calls=calls, tool_plan="Two lookups."))
        msg = _invoke(_llm().bind_tools([WEATHER, TIME], tool_choice="any"), stream)
        assert [(c["name"], c["args"]) for c in msg.tool_calls] == [
            ("get_weather", {"city": "Paris"}),
            ("get_time", {"tz": "CET"}),
        ]
        assert len({c["id"] for c in msg.tool_calls}) == 2
        assert msg.additional_kwargs["tool_plan"] == "Two lookups."


def test_tool_round_trip_sends_the_tool_plan_back(fake: FakeCohere) -> None:
    llm = _llm().bind_tools([WEATHER])
    first = llm.invoke("weather in 'Oslo'")
    call = first.tool_calls[0]
    answer = llm.invoke(
        [
            HumanMessage("weather in 'Oslo'"),
            first,
            ToolMessage("rainy, 4 C", tool_call_id=call["id"]),
        ]
    )
    assert "rainy, 4 C" in answer.text
    sent = fake.last_request.body["messages"]  # type: ignore[union-attr]
    assert sent[1] == {
        "role": "assistant",
        "tool_calls": [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            }
        ],
        "tool_plan": first.additional_kwargs["tool_plan"],
    }
    assert sent[2] == {"role": "tool", "tool_call_id": call["id"], "content": "rainy, 4 C"}


def test_anthropic_format_history_without_images(fake: FakeCohere) -> None:
    history = [
        HumanMessage([{"type": "text", "text": "what's your favourite colour"}]),
        AIMessage(
            [
                {"type": "text", "text": "Hmm let me think about that"},
                {"type": "tool_use", "input": {"city": "Rome"}, "id": "foo", "name": "get_weather"},
            ],
            tool_calls=[{"name": "get_weather", "args": {"city": "Rome"}, "id": "foo"}],
        ),
        ToolMessage("That's a great pick!", tool_call_id="foo"),
    ]
    answer = _llm().bind_tools([WEATHER]).invoke(history)
    assert "great pick" in answer.text
    sent = fake.last_request.body["messages"]  # type: ignore[union-attr]
    assert sent[1]["tool_plan"] == "Hmm let me think about that"


def test_tool_choice_none_and_json_modes(fake: FakeCohere) -> None:
    msg = _llm().bind_tools([WEATHER], tool_choice="none").invoke("weather in 'Rome'")
    assert msg.tool_calls == [] and fake.last_request.body["tool_choice"] == "NONE"  # type: ignore[union-attr]
    parsed = _llm().with_structured_output(
        {"title": "Person", "type": "object", "properties": {"name": {"type": "string"}},
         "required": ["name"]}, method="json_mode",
    ).invoke("Return 'name' as json")  # fmt: skip
    assert set(parsed) == {"name"}
    assert fake.last_request.body["response_format"] == {"type": "json_object"}  # type: ignore[union-attr]
    schema = {"title": "City", **WEATHER["function"]["parameters"]}
    assert _llm().with_structured_output(schema).invoke("'Lima'") == {"city": "Lima"}
    fmt = fake.last_request.body["response_format"]  # type: ignore[union-attr]
    assert fmt == {"type": "json_object", "json_schema": schema}


def test_finish_reasons_and_usage(fake: FakeCohere) -> None:
    short = _llm(max_tokens=2).invoke("one two three four")
    assert short.response_metadata["finish_reason"] == "length"
    assert short.response_metadata["raw_finish_reason"] == "MAX_TOKENS"
    stopped = _invoke(_llm(stop=["said"]), stream=True, prompt="hi")
    assert stopped.text == "Hello! You "
    assert stopped.response_metadata["finish_reason"] == "stop"
    assert stopped.response_metadata["raw_finish_reason"] == "STOP_SEQUENCE"
    body = fake.last_request.body  # type: ignore[union-attr]
    assert body["stop_sequences"] == ["said"] and body["stream"] is True
    usage = stopped.usage_metadata
    assert usage is not None and usage["input_tokens"] == 1 + 64  # billed 1 + preamble
    assert stopped.response_metadata["billed_units"]["input_tokens"] == 1


def test_sampling_parameters_map_to_cohere_names(fake: FakeCohere) -> None:
    _llm(temperature=0.2, top_p=0.5, seed=7, max_tokens=20).invoke("hi")
    body = fake.last_request.body  # type: ignore[union-attr]
    assert (body["temperature"], body["p"], body["seed"], body["max_tokens"]) == (0.2, 0.5, 7, 20)
    assert "top_p" not in body and "stop" not in body


def test_image_input_is_sent_as_image_url_part(fake: FakeCohere) -> None:
    msg = HumanMessage(
        [
            {"type": "text", "text": "what is this?"},
            {"type": "image", "base64": "iVBORw0KGgo=", "mime_type": "image/png"},
        ]
    )
    assert "image" in _llm(VISION).invoke([msg]).text.lower()
    part = fake.last_request.body["messages"][0]["content"][1]  # type: ignore[union-attr]
    assert part == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


def test_audio_content_is_a_capability_error(fake: FakeCohere) -> None:
    msg = HumanMessage([{"type": "audio", "base64": "UklGRg==", "mime_type": "audio/wav"}])
    with pytest.raises(errors.CapabilityError):
        _llm().invoke([msg])
    assert fake.requests == []


def test_retries_429_then_gives_up_on_503(fake: FakeCohere) -> None:
    fake.script(Fail(429, times=2, headers={"retry-after": "0.05"}), Reply(content="finally"))
    assert _llm().invoke("hi").text == "finally"
    assert len(fake.bodies()) == 3
    fake.script(Fail(503, times=5))
    with pytest.raises(errors.ProviderUnavailable) as info:
        _llm(max_retries=1).invoke("hi")
    assert info.value.status_code == 503 and info.value.request_id
    assert len(fake.bodies()) == 5


@pytest.mark.parametrize(
    ("status", "cls", "retried"),
    [
        (400, errors.BadRequest, False),
        (401, errors.AuthenticationError, False),
        (404, errors.ModelNotFound, False),
        (498, errors.ContentFiltered, False),
        (499, errors.ProviderUnavailable, True),
        (500, errors.ProviderUnavailable, True),
    ],
)
def test_status_mapping(
    fake: FakeCohere, status: int, cls: type[errors.ProviderError], retried: bool
) -> None:
    fake.script(Fail(status, times=3))
    with pytest.raises(cls) as info:
        _llm(max_retries=1, timeout=5).invoke("hi")
    assert info.value.status_code == status
    assert len(fake.bodies()) == (2 if retried else 1)


def test_wrong_key_and_unknown_model(fake: FakeCohere) -> None:
    fake.api_key = "right"
    with pytest.raises(errors.AuthenticationError) as info:
        _llm(api_key="co-SECRET-123456").invoke("hi")
    assert info.value.message == "invalid api token"
    assert "SECRET" not in str(info.value) and "SECRET" not in repr(info.value.__dict__)
    fake.api_key = None
    with pytest.raises(errors.ModelNotFound):
        _llm("command-z").invoke("hi")


def test_context_window_exceeded(fake: FakeCohere) -> None:
    fake.models[MODEL]["context_length"] = 50
    with pytest.raises(errors.ContextWindowExceeded):
        _llm().invoke("word " * 60)


def test_stream_failures_are_typed(fake: FakeCohere) -> None:
    fake.script(Disconnect(after_events=4))
    seen: list[str] = []
    with pytest.raises(errors.ConnectionFailed):
        for chunk in _llm(max_retries=0).stream("count one two three"):
            seen.append(chunk.text)
    assert "".join(seen)  # the part that arrived was passed on
    fake.script(StreamError("the model crashed", after_events=4))
    with pytest.raises(errors.ProviderUnavailable, match="the model crashed"):
        list(_llm(max_retries=0).stream("count one two three"))
    start = '{"id": "m", "type": "message-start", "delta": {"message": {"role": "assistant"}}}'
    fake.script(Malformed(f"event: message-start\ndata: {start}\n\ndata: [DONE]\n\n"))
    with pytest.raises(errors.ConnectionFailed, match="before message-end"):
        list(_llm(max_retries=0).stream("hi"))


def test_malformed_bodies_are_typed(fake: FakeCohere) -> None:
    fake.script(Malformed("{not json"))
    with pytest.raises(errors.MalformedResponse):
        _llm().invoke("hi")
    fake.script(Malformed('{"id": "x", "finish_reason": "COMPLETE"}'))
    with pytest.raises(errors.MalformedResponse):
        _llm().invoke("hi")
    fake.script(Malformed("event: content-delta\ndata: {broken\n\n"))
    with pytest.raises(errors.MalformedResponse):
        list(_llm().stream("hi"))
    fake.script(Malformed('data: {"type": "content-delta", "index": 0, "delta": {}}\n\n'))
    with pytest.raises(errors.MalformedResponse):
        list(_llm().stream("hi"))


def test_timeout_is_typed_and_retried(fake: FakeCohere) -> None:
    fake.script(Stall(1.0), Reply(content="after the stall"))
    assert _llm(timeout=0.3).invoke("hi").text == "after the stall"
    fake.script(Stall(1.0))
    with pytest.raises(errors.Timeout):
        _llm(timeout=0.3, max_retries=0).invoke("hi")


def test_embeddings_batches_dimensions_and_input_type(
    fake: FakeCohere, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire.CohereAdapter, "embed_batch_size", 3)
    emb = agency.embeddings(
        "cohere:embed-v4.0", base_url=fake.base_url, api_key="co-test", dimensions=256
    )
    texts = [f"text number {i}" for i in range(7)]
    vectors = emb.embed_documents(texts)
    assert len(vectors) == 7 and all(len(v) == 256 for v in vectors)
    bodies = fake.bodies("/v2/embed")
    assert [len(b["texts"]) for b in bodies] == [3, 3, 1]
    assert {b["input_type"] for b in bodies} == {"search_document"}
    assert bodies[0]["output_dimension"] == 256 and bodies[0]["embedding_types"] == ["float"]
    adapter = emb._adapter
    query = adapter._embed(
        ["text number 4"], model="embed-v4.0", dimensions=256, input_type="query"
    )  # type: ignore[call-arg]
    assert fake.bodies("/v2/embed")[-1]["input_type"] == "search_query"
    assert query[0] == vectors[4]


def test_embedding_errors_are_typed(fake: FakeCohere) -> None:
    emb = agency.embeddings("cohere:embed-english-v3.0", base_url=fake.base_url, api_key="k")
    fake.script_embeddings(Malformed('{"id": "x", "embeddings": {"float": [[0.1]]}}'))
    with pytest.raises(errors.MalformedResponse):
        emb.embed_documents(["a", "b"])
    fake.script_embeddings(Fail(429, times=1), Fail(401))
    with pytest.raises(errors.AuthenticationError):
        emb.embed_documents(["a"])
    assert len(fake.bodies("/v2/embed")) == 3


def test_models_pages_and_availability(fake: FakeCohere, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "MODELS_PAGE_SIZE", 3)
    models = agency.list_models("cohere", base_url=fake.base_url, api_key="k")
    assert {m.id for m in models} == set(fake.models)
    assert len([r for r in fake.requests if r.path == "/v1/models"]) == 3
    card = next(m for m in models if m.id == MODEL)
    assert card.context_window == 256000 and card.owned_by == "cohere"
    assert agency.is_model_available(f"cohere:{MODEL}", base_url=fake.base_url, api_key="k")
    assert not agency.is_model_available("cohere:command-z", base_url=fake.base_url, api_key="k")


async def test_async_twins(fake: FakeCohere) -> None:
    llm = _llm()
    fake.script(Fail(429), Reply(content="async ok"))
    assert (await llm.ainvoke("hi")).text == "async ok"
    parts = [c.text async for c in llm.astream("hello there")]
    assert len(parts) > 1 and "hello there" in "".join(parts)
    tools = llm.bind_tools([WEATHER])
    call = (await tools.ainvoke("weather in 'Bern'")).tool_calls[0]  # type: ignore[attr-defined]
    assert call["args"] == {"city": "Bern"}
    emb = agency.embeddings("cohere:embed-v4.0", base_url=fake.base_url, api_key="k")
    vectors = await emb.aembed_documents(["a", "b"])
    assert len(vectors) == 2 and vectors[0] != vectors[1]
    models = await agency.alist_models("cohere", base_url=fake.base_url, api_key="k")
    assert MODEL in {m.id for m in models}
