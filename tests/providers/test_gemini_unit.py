"""The Gemini wire adapter without a server: schema conversion, request bodies, response
parsing, error mapping, URLs, and LangChain's standard unit suites. Integration against the fake
server is in test_gemini.py."""

from __future__ import annotations

import json
from typing import Any, Literal

import httpx
import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_tests.unit_tests import ChatModelUnitTests, EmbeddingsUnitTests
from pydantic import BaseModel, Field

import agency
from agency import errors
from agency.chat_models import AgencyChatModel
from agency.embedding_models import AgencyEmbeddings
from agency.providers._base import ChatRequest
from agency.providers.gemini import (
    SIGNATURES_KEY,
    GeminiAdapter,
    _Turn,
    build_generate_body,
    gemini_error_info,
    gemini_schema,
    map_error,
    usage_from_gemini,
    wire_contents,
)
from providers._standard import CapabilitySwitches


class TestGeminiChatModelUnit(CapabilitySwitches, ChatModelUnitTests):
    provider = "gemini"

    @property
    def chat_model_class(self) -> type[AgencyChatModel]:
        return AgencyChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"model": "gemini:gemini-2.5-flash", "api_key": "test-key", "temperature": 0}

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        return (
            {"GOOGLE_API_KEY": "from-env"},
            {"model": "gemini:gemini-2.5-flash"},
            {"api_key": "from-env"},
        )

    @pytest.mark.xfail(
        reason="langchain-core's load() revives only classes on its own allowlist "
        "(allowed_objects='all' = LangChain partner packages), so no third-party class loads; "
        "test_serdes_roundtrip below runs the same checks with our class allowed explicitly",
        strict=True,
    )
    def test_serdes(self, model, snapshot) -> None:  # type: ignore[no-untyped-def]
        super().test_serdes(model, snapshot)


class TestGeminiEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[AgencyEmbeddings]:
        return AgencyEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": "gemini:gemini-embedding-001", "api_key": "test-key"}


def test_serdes_roundtrip(monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_core.load import dumpd, load

    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "from-second-env")
    model = AgencyChatModel(model="gemini:gemini-2.5-flash", temperature=0.3)
    ser = dumpd(model)
    assert ser["kwargs"]["api_key"] == {"id": ["GOOGLE_API_KEY"], "lc": 1, "type": "secret"}
    monkeypatch.setenv("GOOGLE_API_KEY", "from-env")
    revived = load(
        ser, valid_namespaces=["agency"], allowed_objects=[AgencyChatModel], secrets_from_env=True
    )
    assert isinstance(revived, AgencyChatModel) and revived.model == "gemini-2.5-flash"
    assert revived.api_key is not None and revived.api_key.get_secret_value() == "from-env"
    assert model.api_key is not None and model.api_key.get_secret_value() == "from-second-env"


# --------------------------------------------------------------------------- schemas
def test_schema_conversion_follows_the_openapi_subset() -> None:
    class Inner(BaseModel):
        level: int = Field(ge=1, le=5)
        tags: list[str] = Field(min_length=1, max_length=3)

    class Outer(BaseModel):
        """Outer thing."""

        name: str = Field(description="the name")
        kind: Literal["a", "b"] = "a"
        when: str = Field(json_schema_extra={"format": "date-time"})
        url: str = Field(json_schema_extra={"format": "uri"})
        maybe: float | None = None
        inner: Inner
        many: list[Inner]

    params = convert_to_openai_tool(Outer)["function"]["parameters"]
    schema = gemini_schema(params)
    props = schema["properties"]
    assert schema["type"] == "OBJECT" and schema["required"] == [
        "name",
        "when",
        "url",
        "inner",
        "many",
    ]
    assert props["name"] == {"description": "the name", "type": "STRING"}
    assert props["kind"] == {"default": "a", "format": "enum", "enum": ["a", "b"], "type": "STRING"}
    assert props["when"] == {"format": "date-time", "type": "STRING"}
    assert props["url"] == {"type": "STRING"}  # formats the subset lacks are dropped
    assert props["maybe"] == {"type": "NUMBER", "nullable": True}  # no "default": null
    assert props["inner"]["properties"]["level"] == {"minimum": 1, "maximum": 5, "type": "INTEGER"}
    # int64 bounds are JSON strings in the proto mapping (and the spec)
    assert props["inner"]["properties"]["tags"] == {
        "minItems": "1", "maxItems": "3", "type": "ARRAY", "items": {"type": "STRING"}}  # fmt: skip
    assert props["many"]["items"] == props["inner"]  # $ref inlined
    assert "$defs" not in json.dumps(schema) and "additionalProperties" not in json.dumps(schema)


def test_schema_conversion_of_unions_consts_and_what_it_cannot_say() -> None:
    union = gemini_schema({"type": "object", "properties": {
        "x": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]},
        "y": {"type": ["integer", "null"]},
        "z": {"const": "fixed"},
        "n": {"type": "integer", "enum": [1, 2]},
    }})  # fmt: skip
    assert union["properties"] == {
        "x": {"nullable": True, "anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]},
        "y": {"type": "INTEGER", "nullable": True},
        "z": {"format": "enum", "enum": ["fixed"], "type": "STRING"},
        "n": {"type": "INTEGER"},  # enums are for strings only
    }
    for bad in (
        {"type": "object", "properties": {"d": {"type": "object", "additionalProperties": True}}},
        {"type": "object", "properties": {"a": {"type": "array"}}},
        {
            "type": "object",
            "properties": {"t": {"type": "array", "prefixItems": [{"type": "string"}]}},
        },
        {
            "$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}},
            "$ref": "#/$defs/N",
        },
        {"type": "object", "properties": {"r": {"$ref": "#/nowhere"}}},
    ):
        with pytest.raises(ValueError):
            gemini_schema(bad)


# --------------------------------------------------------------------------- requests
def _req(messages: list[Any], **kw: Any) -> ChatRequest:
    return ChatRequest(messages=messages, model="gemini-2.5-flash", **kw)


def test_history_names_results_keeps_signatures_and_merges_turns() -> None:
    ai = AIMessage(
        "Let me look.",
        tool_calls=[
            {"name": "weather", "args": {"city": "Oslo"}, "id": "gemini-call-abc"},
            {"name": "time", "args": {}, "id": "call_openai_1"},
        ],
        additional_kwargs={SIGNATURES_KEY: {"gemini-call-abc": "c2ln"}},
    )
    system, contents = wire_contents([
        SystemMessage("one"), SystemMessage("two"), HumanMessage("hi"), HumanMessage("there"), ai,
        ToolMessage('{"temp": 3}', tool_call_id="gemini-call-abc"),
        ToolMessage("broken", tool_call_id="call_openai_1", status="error"),
        AIMessage(""),  # an empty turn is dropped
    ])  # fmt: skip
    assert system == {"parts": [{"text": "one"}, {"text": "two"}]}
    assert contents == [
        {"role": "user", "parts": [{"text": "hi"}, {"text": "there"}]},
        {"role": "model", "parts": [
            {"text": "Let me look."},
            # an id invented by this adapter means nothing to the API and is not sent
            {"functionCall": {"name": "weather", "args": {"city": "Oslo"}}, "thoughtSignature": "c2ln"},
            {"functionCall": {"name": "time", "args": {}, "id": "call_openai_1"}},
        ]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "weather", "response": {"temp": 3}}},
            {"functionResponse": {"name": "time", "response": {"error": "broken"}, "id": "call_openai_1"}},
        ]},
    ]  # fmt: skip


def test_tool_results_in_anthropic_blocks_and_plain_text() -> None:
    ai = AIMessage("", tool_calls=[{"name": "pick", "args": {}, "id": "toolu_1"}])
    _, contents = wire_contents([
        HumanMessage("go"), ai,
        HumanMessage([{"type": "tool_result", "tool_use_id": "toolu_1", "content": "blue"},
                      {"type": "text", "text": "and now?"}]),
    ])  # fmt: skip
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "pick", "response": {"result": "blue"}, "id": "toolu_1"}},
        {"text": "and now?"},
    ]
    with pytest.raises(ValueError, match="answers no tool call"):
        wire_contents([HumanMessage("x"), ToolMessage("3", tool_call_id="nobody")])


def test_body_generation_config_tools_and_extra_body() -> None:
    tool = {"type": "function", "function": {"name": "f", "description": "F.", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}  # fmt: skip
    body = build_generate_body(_req(
        [HumanMessage("hi")], temperature=0.1, max_tokens=9, top_p=0.5, seed=3, stop=["x"],
        tools=[tool], tool_choice={"type": "function", "function": {"name": "f"}},
        response_format={"type": "json_object"},
        extra_body={"generationConfig": {"topK": 5}, "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}]},
    ))  # fmt: skip
    assert body["generationConfig"] == {
        "temperature": 0.1, "topP": 0.5, "maxOutputTokens": 9, "seed": 3, "stopSequences": ["x"],
        "responseMimeType": "application/json", "topK": 5,
    }  # fmt: skip
    assert body["tools"] == [{"functionDeclarations": [{"name": "f", "description": "F.", "parameters": {
        "type": "OBJECT", "properties": {"a": {"type": "INTEGER"}}, "required": ["a"]}}]}]  # fmt: skip
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}
    }
    assert body["safetySettings"][0]["threshold"] == "BLOCK_NONE"
    for choice, mode in (("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")):
        config = build_generate_body(_req([HumanMessage("x")], tools=[tool], tool_choice=choice))[
            "toolConfig"
        ]
        assert config == {"functionCallingConfig": {"mode": mode}}


def test_media_blocks() -> None:
    _, contents = wire_contents([HumanMessage([
        {"type": "image", "url": "gs://bucket/cat.jpg"},
        {"type": "video", "url": "https://www.youtube.com/watch?v=x"},
        {"type": "file", "base64": "JVBERi0=", "mime_type": "application/pdf"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "R0lG"}},
    ])])  # fmt: skip
    assert contents[0]["parts"] == [
        {"fileData": {"fileUri": "gs://bucket/cat.jpg", "mimeType": "image/jpeg"}},
        {"fileData": {"fileUri": "https://www.youtube.com/watch?v=x"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
        {"inlineData": {"mimeType": "image/gif", "data": "R0lG"}},
    ]
    with pytest.raises(errors.CapabilityError):
        wire_contents([HumanMessage([{"type": "reasoning", "reasoning": "x"}])])


# --------------------------------------------------------------------------- responses
def test_usage_counts_thoughts_as_output_and_cache_as_input_detail() -> None:
    usage = usage_from_gemini({
        "promptTokenCount": 100, "candidatesTokenCount": 20, "thoughtsTokenCount": 30,
        "cachedContentTokenCount": 64, "toolUsePromptTokenCount": 5, "totalTokenCount": 155,
    })  # fmt: skip
    assert usage == {
        "input_tokens": 105,
        "output_tokens": 50,
        "total_tokens": 155,
        "input_token_details": {"cache_read": 64},
        "output_token_details": {"reasoning": 30},
    }
    # proto3 leaves zero counts out
    assert usage_from_gemini({"promptTokenCount": 4}) == {
        "input_tokens": 4,
        "output_tokens": 0,
        "total_tokens": 4,
    }
    assert usage_from_gemini(None) is None


def test_stream_tool_call_indexes_stay_distinct_across_chunks() -> None:
    turn = _Turn("gemini", "m")
    first = turn.read(
        {
            "candidates": [
                {"content": {"parts": [{"functionCall": {"name": "a", "args": {"x": 1}}}]}}
            ]
        }
    )
    second = turn.read({"candidates": [{"content": {"parts": [
        {"functionCall": {"name": "b", "id": "fc-2"}, "thoughtSignature": "c2ln"},
        {"text": "thinking...", "thought": True}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7},
        "modelVersion": "gemini-2.5-flash-001", "responseId": "r1"})  # fmt: skip
    assert first is not None and second is not None
    full: Any = first + second + turn.last().message
    final = AIMessageChunk(**{**full.model_dump(), "chunk_position": "last"})
    assert [(c["name"], c["args"]) for c in final.tool_calls] == [("a", {"x": 1}), ("b", {})]
    assert final.tool_calls[1]["id"] == "fc-2" and final.tool_calls[0]["id"].startswith(
        "gemini-call-"
    )
    assert final.additional_kwargs == {
        SIGNATURES_KEY: {"fc-2": "c2ln"},
        "reasoning_content": "thinking...",
    }
    assert final.response_metadata["finish_reason"] == "tool_calls"
    assert final.response_metadata["model_name"] == "gemini-2.5-flash-001"
    assert final.usage_metadata == {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}


@pytest.mark.parametrize(
    "reason", ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "MISSING_THOUGHT_SIGNATURE"]
)
def test_error_finish_reasons(reason: str) -> None:
    turn = _Turn("gemini", "m")
    turn.read({"candidates": [{"finishReason": reason}]})
    meta = turn.last().message.response_metadata
    assert (meta["finish_reason"], meta["raw_finish_reason"]) == ("error", reason)


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"candidates": {"a": 1}},
        {"candidates": [7]},
        {"candidates": [{"content": {"parts": {"text": "x"}}}]},
        {"candidates": [{"content": {"parts": ["x"]}}]},
        {"candidates": [{"content": {"parts": [{"text": 5}]}}]},
        {"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]},
        {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": [1]}}]}}]},
    ],
)
def test_malformed_responses_are_typed(data: Any) -> None:
    with pytest.raises(errors.MalformedResponse):
        _Turn("gemini", "m").read(data)


# --------------------------------------------------------------------------- errors and URLs
def _response(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request("POST", "https://x"))


def test_error_mapping_reads_google_rpc_details() -> None:
    rate = {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31.5s"}]}}  # fmt: skip
    err = map_error(_response(429, rate), "gemini", "m", None)
    assert isinstance(err, errors.RateLimited) and err.retry_after == 31.5
    busy = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    assert isinstance(
        map_error(_response(503, busy), "gemini", "m", None), errors.ProviderUnavailable
    )
    key = {"error": {"code": 400, "message": "API key not valid. AIzaSyA-SECRET-123456789", "status": "INVALID_ARGUMENT",
                     "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}  # fmt: skip
    auth = map_error(_response(400, key), "gemini", "m", "AIzaSyA-SECRET-123456789")
    assert isinstance(auth, errors.AuthenticationError) and "SECRET" not in str(auth)
    long = [{"error": {"code": 400, "message": "The input token count (9) exceeds the maximum number of tokens allowed (5).", "status": "INVALID_ARGUMENT"}}]  # fmt: skip
    assert isinstance(
        map_error(_response(400, long), "gemini", "m", None), errors.ContextWindowExceeded
    )
    info = gemini_error_info(key, "")
    assert (info.type, info.code) == ("INVALID_ARGUMENT", "API_KEY_INVALID")
    html = httpx.Response(
        404, text="<html>Not Found</html>", request=httpx.Request("GET", "https://x")
    )
    assert isinstance(map_error(html, "gemini", "m", None), errors.ModelNotFound)


def test_urls_key_header_and_model_paths() -> None:
    llm = agency.chat_model("gemini:gemini-2.5-flash", api_key="AIza-test-key")
    adapter = llm._adapter
    assert isinstance(adapter, GeminiAdapter)
    assert adapter._url("/models") == "https://generativelanguage.googleapis.com/v1beta/models"
    assert (
        adapter._headers()["x-goog-api-key"] == "AIza-test-key"
        and "authorization" not in adapter._headers()
    )
    assert adapter._model_path("gemini-2.5-flash") == "/models/gemini-2.5-flash"
    assert adapter._model_path("tunedModels/my-model") == "/tunedModels/my-model"
    v1 = agency.chat_model("gemini:x", api_key="k", api_version="v1")._adapter
    assert v1._url("/models") == "https://generativelanguage.googleapis.com/v1/models"
    proxy = agency.chat_model(
        "gemini:x", api_key="k", base_url="https://proxy.example/gemini/v1beta"
    )._adapter
    assert proxy._url("/models") == "https://proxy.example/gemini/v1beta/models"
    caps = llm.capabilities
    assert (
        caps.tools
        and caps.json_schema
        and caps.embeddings
        and caps.cached_tokens
        and caps.list_models
    )


def test_key_from_either_variable_and_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    with pytest.raises(errors.AuthenticationError, match="GOOGLE_API_KEY or GEMINI_API_KEY"):
        agency.chat_model("gemini:gemini-2.5-flash")
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-VERYSECRET-0000")
    llm = agency.chat_model("gemini")
    assert llm.model == "gemini-2.5-flash"
    for text in (repr(llm), llm.model_dump_json(), llm._get_llm_string(), repr(llm.connection)):
        assert "VERYSECRET" not in text
    assert agency.embeddings("gemini").model == "gemini-embedding-001"
