"""The Ollama adapter against the fake Ollama server (tests/fakes/ollama_server.py), plus one
test against a real Ollama when one runs at localhost:11434.

Every request our adapter sends is validated by the fake against Ollama's OpenAPI spec and
its documented contracts; each test ends by asserting there was no violation.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from fakes.media import png
from fakes.ollama_server import (
    Disconnect,
    Fail,
    FakeOllama,
    Malformed,
    Reply,
    Stall,
    StreamError,
)
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests, EmbeddingsIntegrationTests
from typer.testing import CliRunner

import agency
from agency import errors
from agency.chat_models import AgencyChatModel
from agency.cli import app
from agency.embedding_models import AgencyEmbeddings
from agency.providers.ollama import OllamaAdapter
from providers._standard import CapabilitySwitches

_BASE: dict[str, str] = {}
VISION_TOOLS_MODEL = "mistral-small3.1"  # a fake model with completion, vision and tools


@pytest.fixture(scope="module")
def _server() -> Iterator[FakeOllama]:
    with FakeOllama().running() as fake:
        yield fake


@pytest.fixture(autouse=True)
def fake(_server: FakeOllama) -> Iterator[FakeOllama]:
    _server.reset()
    assert _server.base_url
    _BASE["url"] = _server.base_url
    yield _server
    problems = list(_server.spec_violations), list(_server.internal_errors)
    _server.reset()
    assert problems == ([], []), problems


def _llm(fake: FakeOllama, model: str = "llama3.2", **kw: object) -> AgencyChatModel:
    return agency.chat_model(f"ollama:{model}", base_url=fake.base_url, **kw)


def _collect(llm: object, prompt: object) -> AIMessage:
    full = None
    for chunk in llm.stream(prompt):  # type: ignore[attr-defined]
        full = chunk if full is None else full + chunk
    assert full is not None
    return full  # type: ignore[no-any-return]


# -- LangChain's standard suites ---------------------------------------------------------------
@pytest.mark.usefixtures("local_media")
class TestOllamaStandard(CapabilitySwitches, ChatModelIntegrationTests):
    provider = "ollama"

    @property
    def chat_model_class(self) -> type[AgencyChatModel]:
        return AgencyChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"model": f"ollama:{VISION_TOOLS_MODEL}", "base_url": _BASE["url"], "temperature": 0}

    @property
    def supports_image_urls(self) -> bool:
        return False  # Ollama takes base64 images only; URLs raise CapabilityError

    @property
    def supports_image_tool_message(self) -> bool:
        return True  # images are a field of any message, tool results included

    @property
    def model_override_value(self) -> str:
        return "llama3.2"


class TestOllamaEmbeddingsStandard(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[AgencyEmbeddings]:
        return AgencyEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": "ollama:nomic-embed-text", "base_url": _BASE["url"]}


# -- request bodies ------------------------------------------------------------------------------
def test_body_carries_options_format_and_extras(fake: FakeOllama) -> None:
    llm = _llm(
        fake,
        temperature=0.2,
        top_p=0.9,
        max_tokens=64,
        seed=7,
        stop_sequences=["STOP"],
        model_kwargs={"keep_alive": "10m", "num_ctx": 8192, "options": {"top_k": 20}},
    )
    assert llm.invoke("hello").text == "Hello! You said: hello"
    body = fake.bodies()[-1]
    assert body["stream"] is False and body["keep_alive"] == "10m"
    assert body["options"] == {
        "temperature": 0.2,
        "top_p": 0.9,
        "num_predict": 64,
        "stop": ["STOP"],
        "seed": 7,
        "num_ctx": 8192,
        "top_k": 20,
    }
    _collect(llm, "hi")
    assert fake.bodies()[-1]["stream"] is True


def test_max_tokens_truncates_with_length(fake: FakeOllama) -> None:
    answer = _llm(fake, max_tokens=3).invoke("one two three four five")
    assert answer.text == "Hello! You said:"
    assert answer.response_metadata["finish_reason"] == "length"


def test_usage_and_metadata(fake: FakeOllama) -> None:
    fake.script(Reply(content="ok", prompt_eval_count=26, eval_count=298))
    answer = _llm(fake).invoke("hi")
    assert answer.usage_metadata == {"input_tokens": 26, "output_tokens": 298, "total_tokens": 324}
    meta = answer.response_metadata
    assert meta["provider"] == "ollama" and meta["model_provider"] == "ollama"
    assert meta["model_name"] == "llama3.2" and meta["finish_reason"] == "stop"
    assert meta["load_duration"] > 0 and meta["eval_duration"] > 0 and meta["created_at"]


# -- tools -----------------------------------------------------------------------------------------
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Time in a zone",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
}


@pytest.mark.parametrize("stream", [False, True])
def test_parallel_tool_calls_get_stable_ids(fake: FakeOllama, stream: bool) -> None:
    fake.script(
        Reply(
            tool_calls=[
                {"name": "get_weather", "arguments": {"city": "Paris"}},
                {"name": "get_time", "arguments": {"tz": "CET"}},
            ]
        )
    )
    llm = _llm(fake).bind_tools([WEATHER, TIME])
    msg = _collect(llm, "weather and time?") if stream else llm.invoke("weather and time?")
    assert [(c["name"], c["args"]) for c in msg.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "CET"}),
    ]
    ids = [c["id"] for c in msg.tool_calls]
    assert all(i and i.startswith("call_") for i in ids) and len(set(ids)) == 2
    assert msg.response_metadata["finish_reason"] == "tool_calls"
    assert msg.response_metadata["raw_finish_reason"] == "stop"
    assert fake.bodies()[-1]["tools"] == [WEATHER, TIME]


def test_server_tool_call_ids_are_kept(fake: FakeOllama) -> None:
    fake.script(Reply(tool_calls=[{"name": "get_weather", "arguments": {}, "id": "call_srv1"}]))
    msg = _llm(fake).bind_tools([WEATHER]).invoke("weather?")
    assert msg.tool_calls[0]["id"] == "call_srv1"


def test_tool_history_goes_out_as_ollama_messages(fake: FakeOllama) -> None:
    history = [
        HumanMessage("weather in 'Oslo'?", name="alice"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}, "id": "c1"}]),
        ToolMessage("-3 C", tool_call_id="c1"),
    ]
    answer = _llm(fake).bind_tools([WEATHER]).invoke(history)
    assert answer.text == "The tool returned: -3 C"
    messages = fake.bodies()[-1]["messages"]
    assert messages == [
        {"role": "user", "content": "weather in 'Oslo'?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}],
        },
        {"role": "tool", "content": "-3 C", "tool_name": "get_weather"},
    ]


def test_tool_choice_is_narrowed_as_far_as_ollama_allows(fake: FakeOllama) -> None:
    llm = _llm(fake)
    assert llm.bind_tools([WEATHER, TIME], tool_choice="none").invoke("hi").text
    assert "tools" not in fake.bodies()[-1]
    forced = llm.bind_tools([WEATHER, TIME], tool_choice="get_time").invoke("hi")
    assert fake.bodies()[-1]["tools"] == [TIME] and forced.tool_calls[0]["name"] == "get_time"
    llm.bind_tools([WEATHER, TIME], tool_choice="any").invoke("hi")
    assert fake.bodies()[-1]["tools"] == [WEATHER, TIME]  # sent, but nothing can force a call


def test_structured_output_methods(fake: FakeOllama) -> None:
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int

    llm = _llm(fake)
    city = llm.with_structured_output(City).invoke("Tell me about 'Oslo', 700000")
    assert city == City(name="Oslo", population=700000)
    schema = fake.bodies()[-1]["format"]
    assert schema["type"] == "object" and schema["required"] == ["name", "population"]
    tool = llm.with_structured_output(City, method="function_calling").invoke("'Oslo' 5")
    assert tool == City(name="Oslo", population=5)
    fake.script(Reply(content='{"name": "Oslo", "population": 1}'))
    assert llm.with_structured_output(City, method="json_mode").invoke("json") == City(
        name="Oslo", population=1
    )
    assert fake.bodies()[-1]["format"] == "json"


# -- thinking and images ------------------------------------------------------------------------
def test_thinking_arrives_as_reasoning_and_goes_back(fake: FakeOllama) -> None:
    llm = _llm(fake, "qwen3", model_kwargs={"think": True})
    streamed = _collect(llm, "why is the sky blue?")
    assert streamed.additional_kwargs["reasoning_content"] == "The user asks: why is the sky blue?"
    answer = llm.invoke("why?")
    assert answer.additional_kwargs["reasoning_content"] == "The user asks: why?"
    llm.invoke([HumanMessage("why?"), answer, HumanMessage("and?")])
    assert fake.bodies()[-1]["messages"][1]["thinking"] == "The user asks: why?"
    with pytest.raises(errors.BadRequest, match="does not support thinking"):
        _llm(fake, model_kwargs={"think": True}).invoke("hi")


def test_images_go_as_raw_base64_and_urls_are_refused(fake: FakeOllama) -> None:
    import base64

    data = base64.b64encode(png()).decode()
    msg = HumanMessage(
        content=[
            {"type": "text", "text": "what is this?"},
            {"type": "image", "base64": data, "mime_type": "image/png"},
        ]
    )
    answer = _llm(fake, "llava").invoke([msg])
    assert f"I see an image ({len(png())} bytes)" in answer.text
    sent = fake.bodies()[-1]["messages"][0]
    assert sent == {"role": "user", "content": "what is this?", "images": [data]}
    count = len(fake.requests)
    url = HumanMessage(content=[{"type": "image", "url": "https://example.com/cat.png"}])
    with pytest.raises(errors.CapabilityError, match="base64"):
        _llm(fake, "llava").invoke([url])
    audio = HumanMessage(content=[{"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"}])
    with pytest.raises(errors.CapabilityError):
        _llm(fake, "llava").invoke([audio])
    assert len(fake.requests) == count  # refused before sending
    with pytest.raises(errors.BadRequest, match="image input"):
        _llm(fake).invoke([msg])  # llama3.2 has no vision


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
def test_missing_model_says_ollama_pull(fake: FakeOllama, stream: bool) -> None:
    llm = _llm(fake, "llama9:7b")
    with pytest.raises(errors.ModelNotFound) as info:
        _collect(llm, "hi") if stream else llm.invoke("hi")
    assert "ollama pull llama9:7b" in str(info.value) and info.value.status_code == 404
    assert len(fake.bodies()) == 1  # never retried


def test_openai_style_base_url_is_explained(fake: FakeOllama) -> None:
    llm = agency.chat_model("ollama:llama3.2", base_url=f"{fake.base_url}/v1")
    with pytest.raises(errors.ModelNotFound, match=r"server root.*no /v1"):
        llm.invoke("hi")


def test_connection_refused_suggests_ollama_serve() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    llm = agency.chat_model("ollama:llama3.2", base_url=f"http://127.0.0.1:{port}", max_retries=0)
    with pytest.raises(errors.ConnectionFailed, match="ollama serve"):
        llm.invoke("hi")


def test_errors_inside_the_stream_are_typed(fake: FakeOllama) -> None:
    fake.script(StreamError("an error was encountered while running the model", after_events=2))
    seen: list[str] = []
    with pytest.raises(errors.ProviderUnavailable, match="error was encountered"):
        for chunk in _llm(fake, max_retries=0).stream("one two three"):
            seen.append(chunk.text)
    assert "".join(seen) == "Hello! You "
    fake.script(StreamError('model "x" not found, try pulling it first', after_events=0))
    with pytest.raises(errors.ModelNotFound):
        _collect(_llm(fake, max_retries=0), "hi")


def test_stream_cut_mid_answer_is_connection_failed(fake: FakeOllama) -> None:
    fake.script(Disconnect(after_events=3))
    seen: list[str] = []
    with pytest.raises(errors.ConnectionFailed):
        for chunk in _llm(fake, max_retries=0).stream("one two three four"):
            seen.append(chunk.text)
    assert "".join(seen) == "Hello! You said: "


def test_malformed_answers_are_typed(fake: FakeOllama) -> None:
    llm = _llm(fake, max_retries=0)
    for body in ("{not json", '{"model": "llama3.2", "done": true}', '{"message": "x"}'):
        fake.script(Malformed(body))
        with pytest.raises(errors.MalformedResponse):
            llm.invoke("hi")
    fake.script(Malformed('{"message": {"content": "a"}, "done": false}\n{broken\n'))
    with pytest.raises(errors.MalformedResponse):
        _collect(llm, "hi")
    fake.script(Malformed('{"message": {"content": "a"}, "done": false}\n'))
    with pytest.raises(errors.ConnectionFailed, match="done: true"):
        _collect(llm, "hi")


def test_retries_server_errors_then_succeeds(fake: FakeOllama) -> None:
    fake.script(Fail(500, times=1), Fail(429, "too many requests", headers={"retry-after": "0"}))
    assert _llm(fake).invoke("hi").text == "Hello! You said: hi"
    assert len(fake.bodies()) == 3
    fake.script(Fail(503, times=5))
    with pytest.raises(errors.ProviderUnavailable):
        _llm(fake, max_retries=1).invoke("hi")


def test_timeout_is_typed_and_retried(fake: FakeOllama) -> None:
    fake.script(Stall(1.0), Reply(content="after the stall"))
    assert _llm(fake, timeout=0.3).invoke("hi").text == "after the stall"
    fake.script(Stall(1.0))
    with pytest.raises(errors.Timeout):
        _llm(fake, timeout=0.3, max_retries=0).invoke("hi")


def test_ollama_com_key_is_sent_and_never_shown(
    fake: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.api_key = "ok-key-123456"
    monkeypatch.setenv("OLLAMA_API_KEY", "ok-key-123456")
    assert _llm(fake).invoke("hi").text
    assert fake.last_request.headers["authorization"] == "Bearer ok-key-123456"  # type: ignore[union-attr]
    wrong = _llm(fake, api_key="wrong-SECRET-7890")
    with pytest.raises(errors.AuthenticationError) as info:
        wrong.invoke("hi")
    assert "SECRET" not in str(info.value) and "SECRET" not in repr(wrong)


def test_ollama_host_without_scheme(fake: FakeOllama, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_API_URL", raising=False)
    monkeypatch.setenv("OLLAMA_HOST", fake.base_url.removeprefix("http://"))  # type: ignore[union-attr]
    llm = agency.chat_model("ollama:llama3.2:3b")
    assert llm.connection.base_url == fake.base_url
    assert llm.invoke("hi").response_metadata["model_name"] == "llama3.2:3b"


# -- embeddings, models, CLI, async -------------------------------------------------------------
def test_embeddings_batches_and_dimensions(
    fake: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agency.providers import ollama as wire

    monkeypatch.setattr(wire.OllamaAdapter, "embed_batch_size", 3)
    emb = agency.embeddings("ollama:nomic-embed-text", base_url=fake.base_url, dimensions=64)
    vectors = emb.embed_documents([f"text {i}" for i in range(7)])
    assert len(vectors) == 7 and all(len(v) == 64 for v in vectors)
    bodies = fake.bodies("/api/embed")
    assert [len(b["input"]) for b in bodies] == [3, 3, 1] and bodies[0]["dimensions"] == 64
    assert vectors[4] == emb.embed_query("text 4")
    fake.script_embeddings(Fail(400, "the input length exceeds the context length"))
    with pytest.raises(errors.ContextWindowExceeded):
        emb.embed_query("long")
    with pytest.raises(errors.ModelNotFound, match="ollama pull nope"):
        agency.embeddings("ollama:nope", base_url=fake.base_url).embed_query("x")


def test_models_show_and_version(fake: FakeOllama) -> None:
    models = {m.id: m for m in agency.list_models("ollama", base_url=fake.base_url)}
    assert {"llama3.2:latest", "llama3.2:3b", "nomic-embed-text:latest"} <= set(models)
    assert models["llama3.2:latest"].owned_by == "llama"
    assert models["llama3.2:latest"].raw["details"]["parameter_size"] == "3.2B"
    adapter = _llm(fake)._adapter
    assert isinstance(adapter, OllamaAdapter)
    info = adapter.model_info("llama3.2")
    assert info.context_window == 131072 and info.owned_by == "llama"
    assert adapter.show("qwen3")["capabilities"] == ["completion", "tools", "thinking"]
    assert adapter.version() == fake.version
    with pytest.raises(errors.ModelNotFound, match="ollama pull gone"):
        adapter.show("gone")


def test_cli_lists_pulled_models(fake: FakeOllama) -> None:
    result = CliRunner().invoke(app, ["models", "ollama", "--base-url", str(fake.base_url)])
    assert result.exit_code == 0, result.output
    for card in fake.models:
        assert f"ollama:{card.name}" in result.output


async def test_async_twins(fake: FakeOllama) -> None:
    llm = _llm(fake)
    fake.script(Fail(500), Reply(content="async ok"))
    assert (await llm.ainvoke("hi")).text == "async ok"
    parts = [c.text async for c in llm.astream("hello there")]
    assert len(parts) > 1 and "".join(parts) == "Hello! You said: hello there"
    emb = agency.embeddings("ollama:nomic-embed-text", base_url=fake.base_url)
    vectors = await emb.aembed_documents(["a", "b"])
    assert len(vectors) == 2 and vectors[0] != vectors[1]
    models = await agency.alist_models("ollama", base_url=fake.base_url)
    assert "qwen3:latest" in {m.id for m in models}
    adapter = llm._adapter
    assert isinstance(adapter, OllamaAdapter)
    assert (await adapter.amodel_info("qwen3")).context_window == 40960
    assert await adapter.aversion() == fake.version
    with pytest.raises(errors.ModelNotFound, match="ollama pull"):
        await _llm(fake, "absent").ainvoke("hi")


# -- a real Ollama, when one runs ---------------------------------------------------------------
def _real_ollama_running() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 11434), timeout=0.3):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _real_ollama_running(), reason="no Ollama server at localhost:11434")
def test_real_ollama() -> None:
    real = "http://localhost:11434"
    names = {m.id for m in agency.list_models("ollama", base_url=real)}
    assert names, "the real Ollama lists no models"
    llm = agency.chat_model("ollama:llama3.2", base_url=real, max_tokens=20, temperature=0)
    answer = llm.invoke("Say hello in one word.")
    assert answer.text and answer.usage_metadata and answer.usage_metadata["output_tokens"] > 0
    assert answer.response_metadata["finish_reason"] in {"stop", "length"}
