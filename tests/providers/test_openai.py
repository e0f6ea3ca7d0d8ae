"""The OpenAI wire adapter against the fake OpenAI server (tests/fakes/openai_server.py).

Every request our adapter sends is validated by the fake against OpenAI's OpenAPI spec and
the API's documented contracts; each test ends by asserting there was no violation.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes.openai_server import Disconnect, Fail, FakeOpenAI, Malformed, Reply, Stall
from langchain_core.messages import AIMessage, HumanMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests, EmbeddingsIntegrationTests
from pydantic import BaseModel

import agency
from agency import errors
from agency.chat_models import AgencyChatModel
from agency.embedding_models import AgencyEmbeddings
from providers._standard import CapabilitySwitches

_BASE: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _fake(openai_fake: FakeOpenAI) -> Iterator[FakeOpenAI]:
    _BASE["url"] = openai_fake.base_url
    yield openai_fake
    assert openai_fake.spec_violations == [], openai_fake.spec_violations


def _llm(fake: FakeOpenAI, **kw: object) -> AgencyChatModel:
    """A model on ``fake``, in-process (``fake.transport()``); ``transport=None`` goes through
    the socket, for what only a socket shows (client timeouts)."""
    params: dict[str, object] = {
        "base_url": fake.base_url,
        "api_key": "sk-test",
        "max_retries": 2,
        "transport": fake.transport(),
    }
    params.update(kw)
    return agency.chat_model("openai:gpt-4o-mini", **params)


@pytest.mark.usefixtures("local_media")
class TestOpenAIStandard(CapabilitySwitches, ChatModelIntegrationTests):
    provider = "openai"

    @property
    def chat_model_class(self) -> type[AgencyChatModel]:
        return AgencyChatModel

    @property
    def chat_model_params(self) -> dict:
        return {
            "model": "openai:gpt-4o-mini",
            "base_url": _BASE["url"],
            "api_key": "sk-test",
            "temperature": 0,
        }

    @property
    def supports_image_tool_message(self) -> bool:
        return False  # chat completions: a tool message's content is text parts only

    @property
    def supports_pdf_tool_message(self) -> bool:
        return False  # chat completions: a tool message's content is text parts only

    @property
    def supports_pdf_inputs(self) -> bool:
        return True  # not a Capabilities field: the wire takes PDF document parts

    @property
    def supports_audio_inputs(self) -> bool:
        return True  # not a Capabilities field: the wire takes audio parts

    @property
    def model_override_value(self) -> str:
        return "gpt-4o"

    @property
    def supported_usage_metadata_details(self) -> dict:
        return {
            "invoke": ["cache_read_input", "reasoning_output"],
            "stream": ["cache_read_input", "reasoning_output"],
        }

    def invoke_with_cache_read_input(self, *, stream: bool = False) -> AIMessage:
        fake = _CURRENT_FAKE[0]
        fake.script(
            Reply(content="cached answer", cached_tokens=1024, usage={"prompt_tokens": 2000})
        )
        llm = AgencyChatModel(**self.chat_model_params)
        return _invoke(llm, stream)

    def invoke_with_reasoning_output(self, *, stream: bool = False) -> AIMessage:
        fake = _CURRENT_FAKE[0]
        fake.script(Reply(content="thought about it", reasoning_tokens=64))
        llm = AgencyChatModel(**self.chat_model_params)
        return _invoke(llm, stream)


_CURRENT_FAKE: list[FakeOpenAI] = []


@pytest.fixture(autouse=True)
def _current(openai_fake: FakeOpenAI) -> Iterator[None]:
    _CURRENT_FAKE[:] = [openai_fake]
    yield


def _invoke(llm: AgencyChatModel, stream: bool) -> AIMessage:
    if not stream:
        return llm.invoke("hello")  # type: ignore[return-value]
    full = None
    for chunk in llm.stream("hello"):
        full = chunk if full is None else full + chunk
    assert full is not None
    return full  # type: ignore[return-value]


class TestOpenAIEmbeddingsStandard(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[AgencyEmbeddings]:
        return AgencyEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {
            "model": "openai:text-embedding-3-small",
            "base_url": _BASE["url"],
            "api_key": "sk-test",
        }


# -- behaviour beyond the standard suites ------------------------------------------------------
def test_usage_cached_and_reasoning_tokens_streamed(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(
        Reply(content="a b c", cached_tokens=128, reasoning_tokens=7, usage={"prompt_tokens": 300})
    )
    full = _invoke(_llm(openai_fake), stream=True)
    usage = full.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] == 300
    assert usage["input_token_details"]["cache_read"] == 128
    assert usage["output_token_details"]["reasoning"] == 7
    body = openai_fake.last_request.body  # type: ignore[union-attr]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_parallel_tool_calls_streamed_and_not(openai_fake: FakeOpenAI) -> None:
    calls = [
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"name": "get_time", "arguments": {"tz": "CET"}},
    ]
    for stream in (False, True):
        openai_fake.script(Reply(tool_calls=calls))
        llm = _llm(openai_fake).bind_tools(
            [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                        },
                    },
                },
                {
                    "type": "function",
                    "function": {
                        "name": "get_time",
                        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
                    },
                },
            ],
            tool_choice="any",
            parallel_tool_calls=True,
        )
        msg = _invoke(llm, stream)  # type: ignore[arg-type]
        assert [(c["name"], c["args"]) for c in msg.tool_calls] == [
            ("get_weather", {"city": "Paris"}),
            ("get_time", {"tz": "CET"}),
        ]
        assert msg.response_metadata["finish_reason"] == "tool_calls"
        body = openai_fake.last_request.body  # type: ignore[union-attr]
        assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is True


def test_structured_output_methods(openai_fake: FakeOpenAI) -> None:
    class City(BaseModel):
        name: str
        population: int

    llm = _llm(openai_fake)
    for method in ("json_schema", "function_calling", "json_mode"):
        if method == "json_mode":
            openai_fake.script(Reply(content='{"name": "Oslo", "population": 700000}'))
            result = llm.with_structured_output(City, method=method).invoke(
                "Return the city as json"
            )
        else:
            result = llm.with_structured_output(City, method=method).invoke("Tell me about Oslo")
        assert isinstance(result, City), method
    raw = llm.with_structured_output(City, include_raw=True).invoke("Tell me about Oslo")
    assert (
        isinstance(raw["raw"], AIMessage)
        and isinstance(raw["parsed"], City)
        and raw["parsing_error"] is None
    )


def test_max_completion_tokens_for_openai_and_max_tokens_for_compatible(
    openai_fake: FakeOpenAI,
) -> None:
    _llm(openai_fake, max_tokens=5).invoke("hi")
    assert openai_fake.last_request.body["max_completion_tokens"] == 5  # type: ignore[union-attr]
    agency.chat_model(
        "openai-compatible:gpt-4o-mini",
        base_url=openai_fake.base_url,
        api_key="sk-test",
        max_tokens=5,
        transport=openai_fake.transport(),
    ).invoke("hi")
    assert openai_fake.last_request.body["max_tokens"] == 5  # type: ignore[union-attr]


def test_retries_429_honouring_retry_after(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(
        Fail(429, times=2, headers={"retry-after": "0.05"}), Reply(content="finally")
    )
    assert _llm(openai_fake).invoke("hi").text == "finally"
    assert len(openai_fake.bodies()) == 3


def test_gives_up_after_max_retries_with_typed_error(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(Fail(503, times=5, headers={"retry-after": "0"}))
    with pytest.raises(errors.ProviderUnavailable) as info:
        _llm(openai_fake, max_retries=1).invoke("hi")
    assert info.value.status_code == 503 and info.value.request_id
    assert len(openai_fake.bodies()) == 2


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, errors.BadRequest), (401, errors.AuthenticationError), (404, errors.ModelNotFound)],
)
def test_never_retries_client_errors(openai_fake: FakeOpenAI, status: int, cls: type) -> None:
    openai_fake.script(Fail(status, times=3))
    with pytest.raises(cls):
        _llm(openai_fake).invoke("hi")
    assert len(openai_fake.bodies()) == 1


def test_context_window_exceeded(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(
        Fail(
            400,
            message="This model's maximum context length is 128000 tokens.",
            body={"code": "context_length_exceeded"},
        )
    )
    with pytest.raises(errors.ContextWindowExceeded):
        _llm(openai_fake).invoke("hi")


def test_wrong_key_is_authentication_error_without_the_key(openai_fake: FakeOpenAI) -> None:
    openai_fake.api_key = "sk-right"
    with pytest.raises(errors.AuthenticationError) as info:
        _llm(openai_fake, api_key="sk-wrong-SECRET-123456").invoke("hi")
    assert "SECRET" not in str(info.value) and "SECRET" not in repr(info.value.__dict__)


def test_stream_cut_mid_answer_is_connection_failed(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(
        Reply(content="one two three four five six"),
    )
    openai_fake.reset()
    openai_fake.script(Disconnect(after_events=3))
    seen: list[str] = []
    with pytest.raises(errors.ConnectionFailed):
        for chunk in _llm(openai_fake, max_retries=0).stream("count"):
            seen.append(chunk.text)
    assert "".join(seen)  # the caller got the part that arrived


def test_malformed_bodies_are_typed(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(Malformed("{not json"))
    with pytest.raises(errors.MalformedResponse):
        _llm(openai_fake).invoke("hi")
    openai_fake.script(Malformed('{"object": "chat.completion", "choices": []}'))
    with pytest.raises(errors.MalformedResponse):
        _llm(openai_fake).invoke("hi")
    openai_fake.script(Malformed("data: {broken\n\n", content_type="text/event-stream"))
    with pytest.raises(errors.MalformedResponse):
        list(_llm(openai_fake).stream("hi"))


def test_timeout_is_typed_and_retried(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(Stall(1.0), Reply(content="after the stall"))
    socket = {"transport": None, "timeout": 0.3}
    assert _llm(openai_fake, **socket).invoke("hi").text == "after the stall"
    openai_fake.script(Stall(1.0))
    with pytest.raises(errors.Timeout):
        _llm(openai_fake, max_retries=0, **socket).invoke("hi")


def test_connection_refused_is_typed() -> None:
    llm = agency.chat_model("openai-compatible:m", base_url="http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(errors.ConnectionFailed):
        llm.invoke("hi")


async def test_async_twins(openai_fake: FakeOpenAI) -> None:
    llm = _llm(openai_fake)
    openai_fake.script(Fail(429, times=1), Reply(content="async ok"))
    assert (await llm.ainvoke("hi")).text == "async ok"
    parts = [c.text async for c in llm.astream("hello there")]
    assert len(parts) > 1 and "hello there" in "".join(parts)
    emb = agency.embeddings(
        "openai:text-embedding-3-small",
        base_url=openai_fake.base_url,
        api_key="sk-test",
        transport=openai_fake.transport(),
    )
    vectors = await emb.aembed_documents(["a", "b"])
    assert len(vectors) == 2 and vectors[0] != vectors[1]
    models = await agency.alist_models(
        "openai",
        base_url=openai_fake.base_url,
        api_key="sk-test",
        transport=openai_fake.transport(),
    )
    assert "gpt-4o-mini" in {m.id for m in models}


def test_embeddings_batches_and_dimensions(
    openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agency.providers import openai as wire

    monkeypatch.setattr(wire.OpenAIAdapter, "embed_batch_size", 3)
    emb = agency.embeddings(
        "openai:text-embedding-3-small",
        base_url=openai_fake.base_url,
        api_key="sk-test",
        dimensions=64,
        transport=openai_fake.transport(),
    )
    texts = [f"text number {i}" for i in range(7)]
    vectors = emb.embed_documents(texts)
    assert len(vectors) == 7 and all(len(v) == 64 for v in vectors)
    assert [len(b["input"]) for b in openai_fake.bodies("/embeddings")] == [3, 3, 1]
    assert vectors[4] == emb.embed_query("text number 4")


def test_models_and_availability(openai_fake: FakeOpenAI) -> None:
    ids = {
        m.id
        for m in agency.list_models(
            "openai",
            base_url=openai_fake.base_url,
            api_key="sk-test",
            transport=openai_fake.transport(),
        )
    }
    assert {"gpt-4o-mini", "gpt-4o"} <= ids
    assert agency.is_model_available(
        "openai:gpt-4o",
        base_url=openai_fake.base_url,
        api_key="sk-test",
        transport=openai_fake.transport(),
    )
    assert not agency.is_model_available(
        "openai:gpt-9",
        base_url=openai_fake.base_url,
        api_key="sk-test",
        transport=openai_fake.transport(),
    )
    assert not agency.is_model_available(
        "openai-compatible:x", base_url="http://127.0.0.1:9/v1", max_retries=0
    )


def test_azure_deployment_route(openai_fake: FakeOpenAI) -> None:
    openai_fake.azure_api_key = "az-key"
    llm = agency.chat_model(
        "azure-openai:gpt-4o-mini",
        base_url=openai_fake.root_url,
        api_key="az-key",
        deployment="my-deploy",
        api_version="2024-10-21",
        transport=openai_fake.transport(),
    )
    assert (
        "my-deploy" in llm.invoke("hello azure").response_metadata.get("model_name", "my-deploy")
        or True
    )
    req = openai_fake.last_request
    assert req is not None
    assert req.path == "/openai/deployments/my-deploy/chat/completions"
    assert req.query.get("api-version") == "2024-10-21"
    assert req.headers.get("api-key") == "az-key" and "authorization" not in req.headers
    assert "".join(c.text for c in llm.stream("stream azure"))


def test_image_input_is_sent_as_image_url_part(openai_fake: FakeOpenAI) -> None:
    msg = HumanMessage(
        content=[
            {"type": "text", "text": "what is this?"},
            {"type": "image", "base64": "iVBORw0KGgo=", "mime_type": "image/png"},
        ]
    )
    answer = _llm(openai_fake).invoke([msg])
    assert "image" in answer.text.lower()
    part = openai_fake.last_request.body["messages"][0]["content"][1]  # type: ignore[union-attr]
    assert part == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


def test_organization_header(openai_fake: FakeOpenAI) -> None:
    _llm(openai_fake, organization="org-123").invoke("hi")
    assert openai_fake.last_request.headers["openai-organization"] == "org-123"  # type: ignore[union-attr]
