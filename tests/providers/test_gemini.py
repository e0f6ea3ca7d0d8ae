"""The Gemini wire adapter against the fake Gemini API (tests/fakes/gemini_server.py).

Every request our adapter sends is validated by the fake against the Gemini OpenAPI spec, the
proto parser's unknown-field rule and the live API's semantic rules; each test ends by
asserting there was no violation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fakes.gemini_server import Disconnect, Fail, FakeGemini, Malformed, Reply, Stall
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests, EmbeddingsIntegrationTests
from pydantic import BaseModel

import agency
from agency import errors
from agency.chat_models import AgencyChatModel
from agency.embedding_models import AgencyEmbeddings
from agency.providers.gemini import SIGNATURES_KEY
from providers._standard import CapabilitySwitches

_FAKE: list[FakeGemini] = []


@pytest.fixture(scope="module")
def gemini_server() -> Iterator[FakeGemini]:
    with FakeGemini().running() as fake:
        yield fake


@pytest.fixture(autouse=True)
def fake(gemini_server: FakeGemini) -> Iterator[FakeGemini]:
    """The module's fake, reset; every test ends with no spec violation and no fake bug."""
    gemini_server.reset()
    _FAKE[:] = [gemini_server]
    yield gemini_server
    violations, internal = list(gemini_server.spec_violations), list(gemini_server.internal_errors)
    gemini_server.reset()
    assert violations == [], violations
    assert internal == [], internal


def _llm(fake: FakeGemini, model: str = "gemini-2.5-flash", **kw: Any) -> AgencyChatModel:
    params: dict[str, Any] = {"base_url": fake.base_url, "api_key": "test-key", "max_retries": 2}
    return agency.chat_model(f"gemini:{model}", **{**params, **kw})


def _invoke(llm: Any, stream: bool, prompt: Any = "hello") -> AIMessage:
    if not stream:
        return llm.invoke(prompt)  # type: ignore[no-any-return]
    full = None
    for chunk in llm.stream(prompt):
        full = chunk if full is None else full + chunk
    assert full is not None
    return full  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- local media


# --------------------------------------------------------------------------- standard suites
@pytest.mark.usefixtures("local_media")
class TestGeminiStandard(CapabilitySwitches, ChatModelIntegrationTests):
    provider = "gemini"

    @property
    def chat_model_class(self) -> type[AgencyChatModel]:
        return AgencyChatModel

    @property
    def chat_model_params(self) -> dict:
        return {
            "model": "gemini:gemini-2.5-flash",
            "base_url": _FAKE[0].base_url,
            "api_key": "test-key",
            "temperature": 0,
        }

    @property
    def supports_pdf_inputs(self) -> bool:
        return True  # not a Capabilities field: the wire takes PDF document parts

    @property
    def supports_audio_inputs(self) -> bool:
        return True  # not a Capabilities field: the wire takes audio parts

    @property
    def supports_image_tool_message(self) -> bool:
        return False  # functionResponse.parts (multimodal tool results) are Gemini 3 only

    @property
    def supports_pdf_tool_message(self) -> bool:
        return False  # functionResponse.parts (multimodal tool results) are Gemini 3 only

    @property
    def model_override_value(self) -> str:
        return "gemini-2.5-pro"

    @property
    def supported_usage_metadata_details(self) -> dict:
        return {
            "invoke": ["cache_read_input", "reasoning_output"],
            "stream": ["cache_read_input", "reasoning_output"],
        }

    def invoke_with_cache_read_input(self, *, stream: bool = False) -> AIMessage:
        _FAKE[0].script(
            Reply(content="cached answer", cached_tokens=1024, usage={"promptTokenCount": 2000})
        )
        return _invoke(AgencyChatModel(**self.chat_model_params), stream)

    def invoke_with_reasoning_output(self, *, stream: bool = False) -> AIMessage:
        _FAKE[0].script(Reply(content="thought about it", thoughts_tokens=64))
        return _invoke(AgencyChatModel(**self.chat_model_params), stream)


class TestGeminiEmbeddingsStandard(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[AgencyEmbeddings]:
        return AgencyEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {
            "model": "gemini:gemini-embedding-001",
            "base_url": _FAKE[0].base_url,
            "api_key": "test-key",
        }


# --------------------------------------------------------------------------- wire behaviour
def test_request_path_key_header_and_body(fake: FakeGemini) -> None:
    _llm(fake, temperature=0.2, max_tokens=50, top_p=0.9, seed=7, stop_sequences=["END"]).invoke(
        [("system", "be brief"), ("human", "hi")]
    )
    request = fake.last_request
    assert request is not None and request.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert request.headers["x-goog-api-key"] == "test-key" and "key" not in request.query
    assert request.body == {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "generationConfig": {"temperature": 0.2, "topP": 0.9, "maxOutputTokens": 50, "seed": 7,
                             "stopSequences": ["END"]},
    }  # fmt: skip
    list(_llm(fake).stream("hi"))
    assert fake.last_request.path.endswith(":streamGenerateContent")  # type: ignore[union-attr]
    assert fake.last_request.query == {"alt": "sse"}  # type: ignore[union-attr]


def test_usage_with_cache_and_thoughts_streamed_and_not(fake: FakeGemini) -> None:
    for stream in (False, True):
        fake.script(
            Reply(
                content="a b c",
                cached_tokens=128,
                thoughts_tokens=7,
                usage={"promptTokenCount": 300},
            )
        )
        usage = _invoke(_llm(fake), stream).usage_metadata
        assert usage is not None
        # output counts candidates and thoughts, so input + output = totalTokenCount
        assert usage["input_tokens"] == 300 and usage["output_tokens"] == 3 + 7
        assert usage["total_tokens"] == 310
        assert usage["input_token_details"] == {"cache_read": 128}
        assert usage["output_token_details"] == {"reasoning": 7}


def test_parallel_tool_calls_ids_signatures_and_the_round_trip(fake: FakeGemini) -> None:
    tools = [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather.",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "get_time", "description": "Time.",
         "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}},
    ]  # fmt: skip
    for stream in (False, True):
        fake.script(Reply(tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}},
                                      {"name": "get_time", "args": {"tz": "CET"}, "id": "api-id-7"}]))  # fmt: skip
        llm = _llm(fake, model="gemini-3-pro-preview").bind_tools(tools, tool_choice="any")
        msg = _invoke(llm, stream, "weather and time")
        assert [(c["name"], c["args"]) for c in msg.tool_calls] == [
            ("get_weather", {"city": "Paris"}),
            ("get_time", {"tz": "CET"}),
        ]
        first, second = (c["id"] for c in msg.tool_calls)
        assert first and first != second and second == "api-id-7"
        assert msg.response_metadata["finish_reason"] == "tool_calls"
        assert msg.response_metadata["raw_finish_reason"] == "STOP"
        assert list(msg.additional_kwargs[SIGNATURES_KEY]) == [first]
        sent = fake.last_request.body  # type: ignore[union-attr]
        assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
        # Gemini 3 rejects a history whose function call lost its thoughtSignature.
        history = [HumanMessage("weather and time"), msg, ToolMessage("sunny", tool_call_id=first),
                   ToolMessage('{"time": "noon"}', tool_call_id=second)]  # fmt: skip
        answer = _llm(fake, model="gemini-3-pro-preview").bind_tools(tools).invoke(history)
        assert answer.text == 'The tool returned: {"result": "sunny"}; {"time": "noon"}'
        turns = fake.last_request.body["contents"]  # type: ignore[union-attr]
        assert [t["role"] for t in turns] == ["user", "model", "user"]
        assert (
            "thoughtSignature" in turns[1]["parts"][0]
            and "id" not in turns[1]["parts"][0]["functionCall"]
        )
        assert turns[1]["parts"][1]["functionCall"]["id"] == "api-id-7"
        assert [p["functionResponse"]["name"] for p in turns[2]["parts"]] == [
            "get_weather",
            "get_time",
        ]


def test_tool_choice_by_name_none_and_declarations(fake: FakeGemini) -> None:
    class Person(BaseModel):
        """A person."""

        name: str
        nickname: str | None = None
        tags: list[str] = []

    def no_args() -> str:
        """Takes nothing."""
        return "x"

    llm = _llm(fake)
    msg = llm.bind_tools([Person, no_args], tool_choice="Person").invoke("make 'Ann'")
    assert msg.tool_calls[0]["name"] == "Person" and msg.tool_calls[0]["args"]["name"] == "Ann"
    body = fake.last_request.body  # type: ignore[union-attr]
    assert body["toolConfig"]["functionCallingConfig"] == {
        "mode": "ANY",
        "allowedFunctionNames": ["Person"],
    }
    person, none = body["tools"][0]["functionDeclarations"]
    assert person["parameters"]["properties"]["nickname"] == {"type": "STRING", "nullable": True}
    assert none == {"name": "no_args", "description": "Takes nothing."}
    assert llm.bind_tools([Person], tool_choice="none").invoke("make 'Ann'").tool_calls == []
    # a schema Gemini's Schema subset cannot say goes as parametersJsonSchema
    free = {"type": "function", "function": {"name": "put", "description": "Store.", "parameters": {
        "type": "object", "properties": {"data": {"type": "object", "additionalProperties": True}}}}}  # fmt: skip
    assert llm.bind_tools([free], tool_choice="any").invoke("store").tool_calls[0]["name"] == "put"
    decl = fake.last_request.body["tools"][0]["functionDeclarations"][0]  # type: ignore[union-attr]
    assert decl["parametersJsonSchema"] == free["function"]["parameters"]


def test_structured_output_methods_and_json_mode(fake: FakeGemini) -> None:
    class City(BaseModel):
        name: str
        population: int

    llm = _llm(fake)
    for method in ("json_schema", "function_calling"):
        city = llm.with_structured_output(City, method=method).invoke("'Oslo' has 700000 people")
        assert city == City(name="Oslo", population=700000), method
    config = fake.bodies(":generateContent")[0]["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    # the JSON schema travels as is (responseJsonSchema), lower-case types and all
    assert config["responseJsonSchema"]["properties"] == {
        "name": {"type": "string"},
        "population": {"type": "integer"},
    }
    parsed = llm.with_structured_output(None, method="json_mode").invoke(
        "Give 'setup' and 'punchline'"
    )
    assert set(parsed) == {"setup", "punchline"}
    assert "responseJsonSchema" not in fake.last_request.body["generationConfig"]  # type: ignore[union-attr]


def test_thoughts_are_reasoning_not_content(fake: FakeGemini) -> None:
    kwargs = {"generationConfig": {"thinkingConfig": {"includeThoughts": True}}}
    for stream in (False, True):
        fake.script(Reply(content="The answer is 4.", thought="**Adding**\n\n2 + 2 = 4"))
        msg = _invoke(_llm(fake, model_kwargs=kwargs, temperature=0.5), stream, "2+2?")
        assert msg.content == "The answer is 4."
        assert msg.additional_kwargs["reasoning_content"] == "**Adding**\n\n2 + 2 = 4"
        assert msg.content_blocks[0] == {
            "type": "reasoning",
            "reasoning": "**Adding**\n\n2 + 2 = 4",
        }
        # model_kwargs merge into generationConfig instead of replacing it
        assert fake.last_request.body["generationConfig"] == {  # type: ignore[union-attr]
            "temperature": 0.5, "thinkingConfig": {"includeThoughts": True}}  # fmt: skip


def test_images_pdf_audio_and_urls_become_parts(fake: FakeGemini) -> None:
    msg = HumanMessage(content=[
        {"type": "text", "text": "what are these?"},
        {"type": "image", "base64": "iVBORw0KGgo=", "mime_type": "image/png"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
        {"type": "file", "url": "https://example.com/report.pdf"},
        {"type": "audio", "base64": "UklGRg==", "mime_type": "audio/wav"},
        {"type": "file", "file_id": "files/abc-123", "mime_type": "application/pdf"},
    ])  # fmt: skip
    answer = _llm(fake).invoke([msg])
    assert "I see an image (8 bytes)" in answer.text and "I hear audio" in answer.text
    parts = fake.last_request.body["contents"][0]["parts"]  # type: ignore[union-attr]
    assert parts[1:] == [
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},
        {"fileData": {"fileUri": "https://example.com/report.pdf", "mimeType": "application/pdf"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"fileData": {"fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc-123",
                      "mimeType": "application/pdf"}},
    ]  # fmt: skip


def test_blocked_prompt_is_content_filtered_and_safety_finish_is_normalised(
    fake: FakeGemini,
) -> None:
    for stream in (False, True):
        fake.script(Reply(block_reason="PROHIBITED_CONTENT"))
        with pytest.raises(errors.ContentFiltered, match="PROHIBITED_CONTENT"):
            _invoke(_llm(fake), stream)
        fake.script(Reply(finish_reason="SAFETY"))
        msg = _invoke(_llm(fake), stream)
        assert msg.content == "" and msg.response_metadata["finish_reason"] == "content_filter"
        fake.script(Reply(content="one two", finish_reason="MAX_TOKENS"))
        assert _invoke(_llm(fake), stream).response_metadata["finish_reason"] == "length"


def test_rate_limit_retries_after_the_retry_info_delay(fake: FakeGemini) -> None:
    fake.script(Fail(429, retry_after=0.05, times=2), Reply(content="finally"))
    assert _llm(fake).invoke("hi").text == "finally"
    assert len(fake.bodies(":generateContent")) == 3
    fake.script(Fail(429, retry_after=0.5))
    with pytest.raises(errors.RateLimited) as info:
        _llm(fake, max_retries=0).invoke("hi")
    assert info.value.retry_after == 0.5 and info.value.status_code == 429
    fake.script(Fail(503, times=5))
    with pytest.raises(errors.ProviderUnavailable):
        _llm(fake, max_retries=1).invoke("hi")
    assert len(fake.bodies(":generateContent")) == 3 + 1 + 2


@pytest.mark.parametrize(
    ("fail", "cls"),
    [
        (Fail(400), errors.BadRequest),
        (Fail(403), errors.PermissionDenied),
        (Fail(404, body={"status": "NOT_FOUND"}), errors.ModelNotFound),
        (
            Fail(
                400,
                message="The input token count (2000000) exceeds the maximum number of tokens allowed (1048576).",
            ),
            errors.ContextWindowExceeded,
        ),
        (Fail(504), errors.ProviderUnavailable),
    ],
)
def test_errors_are_typed_and_client_errors_not_retried(
    fake: FakeGemini, fail: Fail, cls: type
) -> None:
    fake.script(Fail(**{**fail.__dict__, "times": 3}))
    with pytest.raises(cls):
        _llm(fake, max_retries=0 if cls is errors.ProviderUnavailable else 2).invoke("hi")
    assert len(fake.bodies(":generateContent")) == 1


def test_unknown_model_and_wrong_key(fake: FakeGemini) -> None:
    with pytest.raises(errors.ModelNotFound, match="not found for API version v1beta"):
        _llm(fake, model="gemini-9").invoke("hi")
    fake.api_key = "right-key"
    with pytest.raises(errors.AuthenticationError) as info:
        _llm(fake, api_key="AIzaWRONG-SECRET-1234567890").invoke("hi")
    assert info.value.status_code == 400  # Gemini answers a bad key with 400 API_KEY_INVALID
    assert "SECRET" not in str(info.value) and "SECRET" not in repr(info.value.__dict__)


def test_stream_cut_mid_answer_is_connection_failed(fake: FakeGemini) -> None:
    fake.script(Disconnect(after_events=2))
    seen: list[str] = []
    with pytest.raises(errors.ConnectionFailed):
        for chunk in _llm(fake, max_retries=0).stream("one two three four five six seven eight"):
            seen.append(chunk.text)
    assert "".join(seen)  # the caller got the part that arrived


def test_malformed_bodies_are_typed(fake: FakeGemini) -> None:
    for body, stream in (
        ("{not json", False),
        ('{"candidates": [{"content": {"parts": "x"}}]}', False),
        ('{"usageMetadata": {}}', False),
        ("data: {broken\r\n\r\n", True),
        (
            'data: {"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]}\r\n\r\n',
            True,
        ),
    ):
        fake.script(Malformed(body))
        with pytest.raises(errors.MalformedResponse):
            _invoke(_llm(fake), stream)


def test_error_event_inside_a_stream_is_mapped(fake: FakeGemini) -> None:
    fake.script(
        Malformed(
            'data: {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}\r\n\r\n'
        )
    )
    with pytest.raises(errors.ProviderUnavailable, match="overloaded"):
        list(_llm(fake, max_retries=0).stream("hi"))


def test_timeout_is_typed_and_retried(fake: FakeGemini) -> None:
    fake.script(Stall(1.0), Reply(content="after the stall"))
    assert _llm(fake, timeout=0.3).invoke("hi").text == "after the stall"
    fake.script(Stall(1.0))
    with pytest.raises(errors.Timeout):
        _llm(fake, timeout=0.3, max_retries=0).invoke("hi")


async def test_async_twins(fake: FakeGemini) -> None:
    llm = _llm(fake)
    fake.script(Fail(429, retry_after=0.01), Reply(content="async ok"))
    assert (await llm.ainvoke("hi")).text == "async ok"
    parts = [c.text async for c in llm.astream("hello there my friend")]
    assert len(parts) > 2 and "hello there my friend" in "".join(parts)
    emb = agency.embeddings("gemini", base_url=fake.base_url, api_key="test-key", dimensions=32)
    vectors = await emb.aembed_documents(["a cat", "a dog"])
    assert [len(v) for v in vectors] == [32, 32] and vectors[0] != vectors[1]
    query = await emb.aembed_query("a cat")
    assert len(query) == 32 and fake.last_request.body["taskType"] == "RETRIEVAL_QUERY"  # type: ignore[union-attr]
    fake.page_size_cap = 3
    models = await agency.alist_models("gemini", base_url=fake.base_url, api_key="test-key")
    assert [m.id for m in models] == fake.models


def test_embeddings_single_batched_and_chunked(
    fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agency.providers import gemini as wire

    monkeypatch.setattr(wire.GeminiAdapter, "embed_batch_size", 3)
    emb = agency.embeddings(
        "gemini:gemini-embedding-001", base_url=fake.base_url, api_key="k", dimensions=64
    )
    vectors = emb.embed_documents([f"text number {i}" for i in range(7)])
    assert len(vectors) == 7 and all(len(v) == 64 for v in vectors)
    batches = fake.bodies(":batchEmbedContents")
    assert [len(b["requests"]) for b in batches] == [3, 3, 1]
    assert batches[0]["requests"][0] == {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": "text number 0"}]},
        "taskType": "RETRIEVAL_DOCUMENT",
        "outputDimensionality": 64,
    }
    assert len(emb.embed_query("text number 4")) == 64
    assert fake.last_request.body["taskType"] == "RETRIEVAL_QUERY"  # type: ignore[union-attr]
    assert fake.last_request.path.endswith(":embedContent")  # type: ignore[union-attr]
    adapter = emb._adapter
    again = adapter.embed(
        ["text number 4"], model="gemini-embedding-001", dimensions=64, input_type="document"
    )
    assert again == [vectors[4]]
    typed = adapter._embed(["q"], model="gemini-embedding-001", dimensions=None, input_type="query")
    assert fake.last_request.body["taskType"] == "RETRIEVAL_QUERY" and len(typed[0]) == 3072  # type: ignore[union-attr]


def test_models_pages_and_availability(fake: FakeGemini) -> None:
    fake.page_size_cap = 2
    models = agency.list_models("gemini", base_url=fake.base_url, api_key="k")
    assert [m.id for m in models] == fake.models
    flash = next(m for m in models if m.id == "gemini-2.5-flash")
    assert flash.context_window == 1_048_576 and flash.raw["name"] == "models/gemini-2.5-flash"
    tokens = [r.query.get("pageToken") for r in fake.requests if r.path == "/v1beta/models"]
    assert tokens[0] is None and all(tokens[1:]) and len(tokens) == 4
    assert agency.is_model_available("gemini:gemini-2.5-pro", base_url=fake.base_url, api_key="k")
    assert not agency.is_model_available("gemini:gemini-9", base_url=fake.base_url, api_key="k")


def test_api_version_option_and_versioned_base_url(fake: FakeGemini) -> None:
    _llm(fake, api_version="v1").invoke("hi")
    assert fake.last_request.path == "/v1/models/gemini-2.5-flash:generateContent"  # type: ignore[union-attr]
    _llm(fake, base_url=f"{fake.base_url}/v1beta").invoke("hi")
    assert fake.last_request.path == "/v1beta/models/gemini-2.5-flash:generateContent"  # type: ignore[union-attr]
