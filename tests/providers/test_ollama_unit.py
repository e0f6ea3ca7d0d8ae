"""The Ollama adapter without a server: request bodies (checked against Ollama's OpenAPI spec),
response parsing, error mapping, LangChain's standard unit suites. Integration against the
fake server is in test_ollama.py."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fakes._openapi import validate_request
from langchain_core.messages import (
    AIMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_tests.unit_tests import ChatModelUnitTests, EmbeddingsUnitTests

import agency
from agency import errors
from agency.chat_models import AgencyChatModel
from agency.embedding_models import AgencyEmbeddings
from agency.providers._base import ChatRequest
from agency.providers.ollama import (
    OllamaAdapter,
    StreamState,
    build_chat_body,
    chunk_from_response,
    context_window_from_show,
    ollama_messages,
    usage_from_ollama,
)
from providers._standard import CapabilitySwitches

SPEC = "ollama-openapi.yaml"


class TestOllamaChatModelUnit(CapabilitySwitches, ChatModelUnitTests):
    provider = "ollama"

    @property
    def chat_model_class(self) -> type[AgencyChatModel]:
        return AgencyChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"model": "ollama:llama3.2", "temperature": 0}

    @pytest.mark.xfail(
        reason="langchain-core's load() revives only classes on its own allowlist "
        "(allowed_objects='all' = LangChain partner packages), so no third-party class loads; "
        "test_serdes_roundtrip below runs the same checks with our class allowed explicitly",
        strict=True,
    )
    def test_serdes(self, model, snapshot) -> None:  # type: ignore[no-untyped-def]
        super().test_serdes(model, snapshot)

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        return (
            {"OLLAMA_API_KEY": "key-from-env"},
            {"model": "ollama:llama3.2"},
            {"api_key": "key-from-env"},
        )


class TestOllamaEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[AgencyEmbeddings]:
        return AgencyEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": "ollama:nomic-embed-text"}


def test_serdes_roundtrip(monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_core.load import dumpd, load

    monkeypatch.setenv("OLLAMA_API_KEY", "key-from-env")
    model = AgencyChatModel(model="ollama:llama3.2:3b", temperature=0.3, max_tokens=50)
    ser = dumpd(model)
    assert ser["kwargs"]["api_key"] == {"id": ["OLLAMA_API_KEY"], "lc": 1, "type": "secret"}
    revived = load(
        ser, valid_namespaces=["agency"], allowed_objects=[AgencyChatModel], secrets_from_env=True
    )
    assert isinstance(revived, AgencyChatModel) and revived.model == "llama3.2:3b"
    assert model.asdict() == revived.asdict()


def test_spec_keeps_colons_and_profile_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OLLAMA_API_URL", "OLLAMA_HOST", "OLLAMA_BASE_URL", "OLLAMA_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    llm = agency.chat_model("ollama:llama3.2:3b")
    assert llm.model == "llama3.2:3b" and llm.api_key is None
    assert llm.connection.base_url == "http://localhost:11434"
    assert llm.connection.auth_headers() == {}
    caps = llm.capabilities
    assert (caps.tools, caps.tool_choice, caps.parallel_tool_calls) == (True, False, True)
    assert caps.json_mode and caps.json_schema and caps.image_inputs and caps.embeddings
    assert caps.list_models and not caps.cached_tokens


# -- request bodies -------------------------------------------------------------------------
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True,
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


def _req(**kw: Any) -> ChatRequest:
    return ChatRequest(messages=[SystemMessage("be brief"), HumanMessage("hi")], model="m", **kw)


def _valid(body: dict[str, Any]) -> dict[str, Any]:
    assert validate_request(SPEC, "ChatRequest", body) == []
    return body


def test_body_maps_sampling_format_and_extras() -> None:
    body = _valid(
        build_chat_body(
            _req(
                temperature=0.1,
                top_p=0.5,
                max_tokens=9,
                stop=["x"],
                seed=3,
                response_format={"type": "json_object"},
                extra_body={"keep_alive": 0, "think": "low", "num_ctx": 4096, "options": {"a": 1}},
            ),
            stream=True,
        )
    )
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert body["stream"] is True and body["format"] == "json"
    assert (body["keep_alive"], body["think"]) == (0, "low")
    assert body["options"] == {
        "temperature": 0.1, "top_p": 0.5, "num_predict": 9, "stop": ["x"], "seed": 3,
        "num_ctx": 4096, "a": 1,
    }  # fmt: skip
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "A", "schema": schema, "strict": True}}
    assert _valid(build_chat_body(_req(response_format=fmt), stream=False))["format"] == schema
    plain = _valid(build_chat_body(_req(response_format={"type": "text"}), stream=False))
    assert "format" not in plain and "options" not in plain and plain["stream"] is False


@pytest.mark.parametrize(
    ("choice", "names"),
    [
        (None, ["get_weather", "get_time"]),
        ("auto", ["get_weather", "get_time"]),
        ("required", ["get_weather", "get_time"]),
        ({"type": "function", "function": {"name": "get_time"}}, ["get_time"]),
        ("none", None),
    ],
)
def test_tool_choice_narrows_the_tools(choice: Any, names: list[str] | None) -> None:
    body = _valid(
        build_chat_body(
            _req(tools=[WEATHER, TIME], tool_choice=choice, parallel_tool_calls=False),
            stream=False,
        )
    )
    assert "tool_choice" not in body and "parallel_tool_calls" not in body
    sent = [t["function"]["name"] for t in body["tools"]] if "tools" in body else None
    assert sent == names
    if "tools" in body:
        assert "strict" not in body["tools"][0]["function"]  # OpenAI-only field dropped


def test_messages_tool_history_names_and_thinking() -> None:
    messages = [
        SystemMessage("sys"),
        HumanMessage("hello", name="bob"),
        AIMessage(
            "",
            tool_calls=[
                {"name": "get_weather", "args": {"city": "Oslo"}, "id": "c1"},
                {"name": "get_time", "args": {}, "id": "c2"},
            ],
            additional_kwargs={"reasoning_content": "thought"},
        ),
        ToolMessage("-3", tool_call_id="c1"),
        ToolMessage("noon", tool_call_id="c2", name="get_time"),
        ToolMessage("orphan", tool_call_id="zz"),
    ]
    out = ollama_messages(messages)
    assert out == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hello"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
                {"function": {"name": "get_time", "arguments": {}}},
            ],
            "thinking": "thought",
        },
        {"role": "tool", "content": "-3", "tool_name": "get_weather"},
        {"role": "tool", "content": "noon", "tool_name": "get_time"},
        {"role": "tool", "content": "orphan"},
    ]
    _valid({"model": "m", "messages": out})


def test_messages_images_and_refusals() -> None:
    content: list[Any] = [
        {"type": "text", "text": "first"},
        {"type": "text", "text": "second"},
        {"type": "image", "base64": "AAAA", "mime_type": "image/png"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,BBBB"}},
        {"type": "image_url", "image_url": {"url": "data:image/png,%00%01"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "CC=="}},
    ]
    (msg,) = ollama_messages([HumanMessage(content=content)])
    assert msg == {
        "role": "user",
        "content": "first\nsecond",
        "images": ["AAAA", "BBBB", "AAE=", "CC=="],
    }
    tool = ToolMessage(
        content=[{"type": "image", "base64": "DDDD", "mime_type": "image/png"}], tool_call_id="1"
    )
    assert ollama_messages([tool])[0]["images"] == ["DDDD"]
    for refused in (
        {"type": "image", "url": "https://example.com/a.png"},
        {"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"},
        {"type": "file", "base64": "AAAA", "mime_type": "application/pdf", "filename": "a.pdf"},
    ):
        with pytest.raises(errors.CapabilityError):
            ollama_messages([HumanMessage(content=[refused])])  # type: ignore[list-item]


# -- responses ---------------------------------------------------------------------------------
T0 = "2025-07-07T20:22:19.184789Z"


def _line(message: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"model": "llama3.2", "created_at": T0, "done": False, **kw}
    if message is not None:
        data["message"] = {"role": "assistant", **message}
    return data


def test_stream_lines_to_chunks() -> None:
    state = StreamState()
    text = chunk_from_response(_line({"content": "Hi"}), "ollama", "m", state)
    assert text is not None and text.message.content == "Hi"
    assert text.message.response_metadata == {} and text.generation_info is None
    think = chunk_from_response(_line({"content": "", "thinking": "hmm"}), "ollama", "m", state)
    assert think is not None and think.message.additional_kwargs == {"reasoning_content": "hmm"}
    assert chunk_from_response(_line({"content": ""}), "ollama", "m", state) is None
    calls = [{"function": {"name": "f", "arguments": {"a": 1}}}]
    first = chunk_from_response(_line({"content": "", "tool_calls": calls}), "ollama", "m", state)
    second = chunk_from_response(_line({"content": "", "tool_calls": calls}), "ollama", "m", state)
    assert first is not None and second is not None
    one, two = first.message.tool_call_chunks[0], second.message.tool_call_chunks[0]  # type: ignore[attr-defined]
    assert (one["index"], two["index"]) == (0, 1) and one["args"] == '{"a": 1}'
    assert one["id"] != two["id"] and str(one["id"]).startswith("call_")
    again = chunk_from_response(
        _line({"content": "", "tool_calls": calls}), "ollama", "m", StreamState()
    )
    assert again is not None and again.message.tool_call_chunks[0]["id"] == one["id"]  # type: ignore[attr-defined]
    final = _line(
        {"content": ""}, done=True, done_reason="stop", prompt_eval_count=10, eval_count=4,
        total_duration=5, load_duration=1, eval_duration=2, prompt_eval_duration=1,
    )  # fmt: skip
    last = chunk_from_response(final, "ollama", "m", state)
    assert last is not None and state.done
    assert last.message.chunk_position == "last"  # type: ignore[attr-defined]
    assert last.message.usage_metadata == {
        "input_tokens": 10,
        "output_tokens": 4,
        "total_tokens": 14,
    }  # type: ignore[attr-defined]
    meta = last.message.response_metadata
    assert meta["finish_reason"] == "tool_calls" and meta["raw_finish_reason"] == "stop"
    assert meta["model_name"] == "llama3.2" and meta["total_duration"] == 5
    assert last.generation_info == {"finish_reason": "tool_calls"}


@pytest.mark.parametrize(
    ("reason", "finish", "raw"),
    [("length", "length", None), ("load", "stop", "load"), (None, "stop", None)],
)
def test_done_reasons(reason: str | None, finish: str, raw: str | None) -> None:
    chunk = chunk_from_response(
        _line({"content": "x"}, done=True, done_reason=reason), "ollama", "m", StreamState()
    )
    assert chunk is not None
    assert chunk.message.response_metadata["finish_reason"] == finish
    assert chunk.message.response_metadata.get("raw_finish_reason") == raw


def test_history_final_line_without_message() -> None:
    # docs/api.md "Chat request (With History)": the done line may carry no message at all.
    chunk = chunk_from_response(
        {"model": "m", "done": True, "eval_count": 3}, "o", "m", StreamState()
    )
    assert chunk is not None and chunk.message.content == ""
    assert chunk.message.usage_metadata == {
        "input_tokens": 0,
        "output_tokens": 3,
        "total_tokens": 3,
    }  # type: ignore[attr-defined]
    assert usage_from_ollama({"done": True}) is None


@pytest.mark.parametrize(
    ("text", "cls"),
    [
        ("an error was encountered while running the model", errors.ProviderUnavailable),
        ('model "x" not found, try pulling it first', errors.ModelNotFound),
        ("the input length exceeds the context length", errors.ContextWindowExceeded),
    ],
)
def test_error_lines_are_mapped(text: str, cls: type[Exception]) -> None:
    with pytest.raises(cls, match=text.split()[0]):
        chunk_from_response({"error": text}, "ollama", "m", StreamState())


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"message": "x"},
        {"message": {"content": 5}},
        {"message": {"content": "", "thinking": 3}},
        {"message": {"content": ""}, "done": "yes"},
        {"message": {"tool_calls": {"function": {}}}},
        {"message": {"tool_calls": [{"function": {"arguments": {}}}]}},
        {"message": {"tool_calls": ["f"]}},
    ],
)
def test_malformed_lines_are_typed(data: Any) -> None:
    with pytest.raises(errors.MalformedResponse):
        chunk_from_response(data, "ollama", "m", StreamState())


def test_context_window_from_show() -> None:
    info = {"general.architecture": "llama", "llama.context_length": 8192}
    assert context_window_from_show({"model_info": info}) == 8192
    assert context_window_from_show({"model_info": {"bert.context_length": 512}}) == 512
    assert context_window_from_show({"model_info": None}) is None
    assert context_window_from_show("nope") is None


# -- error hints ---------------------------------------------------------------------------------
def _adapter() -> OllamaAdapter:
    llm = agency.chat_model("ollama:llama3.2", base_url="http://127.0.0.1:1")
    assert isinstance(llm._adapter, OllamaAdapter)
    return llm._adapter


def test_404_hints() -> None:
    adapter = _adapter()
    missing = httpx.Response(
        404, json={"error": 'model "llama3.2" not found, try pulling it first'}
    )
    err = adapter._error(missing, "llama3.2")
    assert isinstance(err, errors.ModelNotFound) and "`ollama pull llama3.2`" in str(err)
    assert err.status_code == 404
    unrouted = adapter._error(httpx.Response(404, text="404 page not found"), "llama3.2")
    assert isinstance(unrouted, errors.ModelNotFound) and "no /v1" in str(unrouted)
    listed = adapter._error(httpx.Response(404, json={"error": "gone"}), None)
    assert "ollama pull" not in str(listed)
    busy = adapter._error(httpx.Response(503, json={"error": "server busy"}), "llama3.2")
    assert isinstance(busy, errors.ProviderUnavailable) and "server busy" in str(busy)


def test_transport_hints() -> None:
    adapter = _adapter()
    refused = adapter._transport_error(httpx.ConnectError("refused"), "m")
    assert isinstance(refused, errors.ConnectionFailed) and "ollama serve" in str(refused)
    slow = adapter._transport_error(httpx.ReadTimeout("slow"), "m")
    assert isinstance(slow, errors.Timeout) and "ollama serve" not in str(slow)


def test_whole_answer_requires_message_and_done() -> None:
    adapter = _adapter()
    ok = {"model": "m", "message": {"role": "assistant", "content": "x"}, "done": True}
    request = ChatRequest(messages=[], model="m")
    assert adapter._whole(ok, request).message.content == "x"
    for bad in ({**ok, "done": False}, {"model": "m", "done": True}):
        with pytest.raises(errors.MalformedResponse):
            adapter._whole(bad, request)
    with pytest.raises(errors.MalformedResponse):
        adapter._embed_vectors({"embeddings": [[1.0], "x"]}, 2, "m")
    with pytest.raises(errors.MalformedResponse):
        adapter._embed_vectors({"embeddings": [[1.0]]}, 2, "m")
    assert adapter._embed_vectors(json.loads('{"embeddings": [[1, 0.5]]}'), 1, "m") == [[1.0, 0.5]]
