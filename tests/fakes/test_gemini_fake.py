"""Oracle tests: the official ``google-genai`` SDK (pydantic models with ``extra="forbid"``),
pointed at ``FakeGemini``, must accept everything it says; its bodies must match the response
schemas of the spec; its request validation must catch what the live API rejects."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors, types
from pydantic import BaseModel

from ._gemini_checks import SPEC_FILE
from ._openapi import request_validator
from .gemini_server import Disconnect, Fail, FakeGemini, Malformed, Reply, Stall

MODEL = "gemini-2.5-flash"


@pytest.fixture(scope="module")
def gemini_server() -> Iterator[FakeGemini]:
    with FakeGemini().running() as fake:
        yield fake


@pytest.fixture
def fake(gemini_server: FakeGemini) -> Iterator[FakeGemini]:
    with gemini_server.checked(violations=False) as fake:
        yield fake


def _client(fake: FakeGemini, **options: Any) -> genai.Client:
    http = types.HttpOptions(base_url=fake.base_url, api_version="v1beta", **options)
    return genai.Client(api_key="test-key", http_options=http)


@pytest.fixture
def client(fake: FakeGemini) -> genai.Client:
    return _client(fake)


def _schema_errors(schema: str, instance: Any) -> list[str]:
    return [e.message for e in request_validator(SPEC_FILE, schema).iter_errors(instance)]


def _raw(fake: FakeGemini, path: str, body: Any, **kw: Any) -> httpx.Response:
    headers = {"x-goog-api-key": "test-key", **kw.pop("headers", {})}
    return httpx.post(f"{fake.base_url}/v1beta/{path}", json=body, headers=headers, **kw)


def get_weather(location: str) -> str:
    """Get the current weather in a location."""
    return f"sunny in {location}"


def get_time(timezone: str) -> str:
    """Get the current time in a timezone."""
    return f"noon in {timezone}"


NO_AFC = types.AutomaticFunctionCallingConfig(disable=True)


# --------------------------------------------------------------------------- generate
def test_generate_content_parses_strictly_and_matches_the_response_schema(fake, client):
    response = client.models.generate_content(model=MODEL, contents="Hello there")
    assert response.text == "Hello! You said: Hello there"
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert response.model_version == MODEL and response.response_id
    usage = response.usage_metadata
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    raw = _raw(fake, f"models/{MODEL}:generateContent", {"contents": [{"parts": [{"text": "hi"}]}]})
    assert raw.headers["content-type"] == "application/json; charset=UTF-8"
    assert raw.text.startswith('{\n  "candidates": [')  # pretty-printed, like Google's front end
    assert _schema_errors("GenerateContentResponse", raw.json()) == []
    assert fake.spec_violations == []


def test_stream_is_sse_of_whole_responses_without_done(fake, client):
    pieces = [
        c.text
        for c in client.models.generate_content_stream(
            model=MODEL, contents="Count one two three four five six seven"
        )
    ]
    assert len(pieces) > 2 and "".join(pieces).endswith("four five six seven")
    raw = _raw(
        fake,
        f"models/{MODEL}:streamGenerateContent",
        {"contents": [{"parts": [{"text": "one two three four five six"}]}]},
        params={"alt": "sse"},
    )
    assert raw.headers["content-type"] == "text/event-stream"
    events = [e for e in raw.text.split("\r\n\r\n") if e]
    assert all(e.startswith("data: ") and "\n" not in e for e in events)
    chunks = [json.loads(e[6:]) for e in events]
    assert "[DONE]" not in raw.text and "finishReason" in chunks[-1]["candidates"][0]
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    assert all(_schema_errors("GenerateContentResponse", c) == [] for c in chunks)
    assert "candidatesTokenCount" in chunks[-1]["usageMetadata"]


def test_stream_without_alt_sse_is_one_json_array(fake):
    raw = _raw(
        fake,
        f"models/{MODEL}:streamGenerateContent",
        {"contents": [{"parts": [{"text": "a b c d e f"}]}]},
    )
    chunks = raw.json()
    assert isinstance(chunks, list) and len(chunks) > 1
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks).endswith(
        "a b c d e f"
    )


def test_function_calls_parallel_with_signature_and_stop(fake, client):
    config = types.GenerateContentConfig(
        tools=[get_weather, get_time], automatic_function_calling=NO_AFC
    )
    response = client.models.generate_content(
        model=MODEL, contents="Call get_weather for 'Paris' and get_time for 'CET'", config=config
    )
    calls = response.function_calls
    # the brain fills each call from the prompt's first quoted string
    assert [(c.name, c.args) for c in calls] == [
        ("get_weather", {"location": "Paris"}),
        ("get_time", {"timezone": "Paris"}),
    ]
    parts = response.candidates[0].content.parts
    assert parts[0].thought_signature and parts[1].thought_signature is None
    assert response.candidates[0].finish_reason == types.FinishReason.STOP  # no TOOL_CALL reason
    forced = types.GenerateContentConfig(
        tools=[get_weather, get_time],
        automatic_function_calling=NO_AFC,
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(
                mode="ANY", allowed_function_names=["get_time"]
            )
        ),
    )
    response = client.models.generate_content(model=MODEL, contents="Hi 'UTC'", config=forced)
    assert [c.name for c in response.function_calls] == ["get_time"]
    assert fake.spec_violations == []


def test_automatic_function_calling_round_trip_on_gemini_3(fake, client):
    config = types.GenerateContentConfig(tools=[get_weather])
    response = client.models.generate_content(
        model="gemini-3-pro-preview", contents="Weather in 'Oslo'?", config=config
    )
    assert response.text == 'The tool returned: {"result": "sunny in Oslo"}'
    second = fake.bodies(":generateContent")[-1]
    assert "thoughtSignature" in second["contents"][1]["parts"][0]
    assert fake.spec_violations == []


def test_gemini_3_rejects_a_function_call_without_its_signature(fake):
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "Weather?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
            {
                "role": "user",
                "parts": [{"functionResponse": {"name": "get_weather", "response": {"r": 1}}}],
            },
        ],
        "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "w"}]}],
    }
    raw = _raw(fake, "models/gemini-3-pro-preview:generateContent", body)
    assert raw.status_code == 400 and "thought_signature" in raw.json()["error"]["message"]
    assert _raw(fake, f"models/{MODEL}:generateContent", body).status_code == 200  # 2.5: optional
    fake.spec_violations.clear()


def test_thoughts_and_usage_when_included(fake, client):
    config = types.GenerateContentConfig(
        thinking_config=types.ThinkingConfig(include_thoughts=True)
    )
    response = client.models.generate_content(model=MODEL, contents="Think first", config=config)
    parts = response.candidates[0].content.parts
    assert parts[0].thought is True and parts[1].text == "Hello! You said: Think first"
    usage = response.usage_metadata
    assert usage.thoughts_token_count and usage.total_token_count == (
        usage.prompt_token_count + usage.candidates_token_count + usage.thoughts_token_count
    )
    fake.script(Reply(content="cached", cached_tokens=2048, thoughts_tokens=12))
    usage = client.models.generate_content(model=MODEL, contents="x").usage_metadata
    assert (usage.cached_content_token_count, usage.thoughts_token_count) == (2048, 12)
    assert usage.prompt_token_count >= 2048


def test_structured_output_with_json_schema_and_response_schema(fake, client):
    class City(BaseModel):
        name: str
        population: int

    for config in (
        types.GenerateContentConfig(response_mime_type="application/json", response_schema=City),
        types.GenerateContentConfig(
            response_mime_type="application/json", response_json_schema=City.model_json_schema()
        ),
    ):
        response = client.models.generate_content(
            model=MODEL, contents="'Oslo' has 700000 people", config=config
        )
        assert json.loads(response.text) == {"name": "Oslo", "population": 700000}
    json_mode = types.GenerateContentConfig(response_mime_type="application/json")
    text = client.models.generate_content(
        model=MODEL, contents="Give 'setup' and 'punchline'", config=json_mode
    ).text
    assert set(json.loads(text)) == {"setup", "punchline"}
    assert fake.spec_violations == []


def test_blocked_prompt_and_safety_finish(fake, client):
    fake.script(Reply(block_reason="SAFETY"))
    response = client.models.generate_content(model=MODEL, contents="bad")
    assert not response.candidates
    assert response.prompt_feedback.block_reason == types.BlockedReason.SAFETY
    fake.script(Reply(finish_reason="SAFETY"))
    response = client.models.generate_content(model=MODEL, contents="bad")
    assert response.candidates[0].finish_reason == types.FinishReason.SAFETY
    assert response.candidates[0].content is None


def test_every_answer_shape_matches_the_response_schema(fake):
    body = {
        "contents": [{"parts": [{"text": "call 'f'"}]}],
        "tools": [{"functionDeclarations": [{"name": "f", "description": "F.", "parameters": {
            "type": "OBJECT", "properties": {"a": {"type": "STRING"}}}}]}],
        "generationConfig": {"thinkingConfig": {"includeThoughts": True}},
    }  # fmt: skip
    replies = [
        None,  # the brain: a function call, with a thought summary and a signature
        Reply(content="plain", cached_tokens=10, thoughts_tokens=3),
        Reply(finish_reason="SAFETY"),
        Reply(block_reason="PROHIBITED_CONTENT"),
        Reply(content="cut", finish_reason="MAX_TOKENS"),
    ]
    for reply in replies:
        for method, params in (
            (":generateContent", {}),
            (":streamGenerateContent", {"alt": "sse"}),
        ):
            if reply is not None:
                fake.script(reply)
            raw = _raw(fake, f"models/{MODEL}{method}", body, params=params)
            chunks = [raw.json()] if not params else [
                json.loads(e[6:]) for e in raw.text.split("\r\n\r\n") if e
            ]  # fmt: skip
            for chunk in chunks:
                assert _schema_errors("GenerateContentResponse", chunk) == [], (reply, chunk)
                types.GenerateContentResponse.model_validate(chunk)  # the SDK's strict models
    assert fake.spec_violations == []


def test_images_are_seen(fake, client):
    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    )
    response = client.models.generate_content(
        model=MODEL,
        contents=[types.Part.from_bytes(data=png, mime_type="image/png"), "What is it?"],
    )
    assert "I see an image (" in response.text
    assert response.usage_metadata.prompt_token_count > 258  # an image costs 258 tokens


async def test_async_client_twins(fake, client):
    response = await client.aio.models.generate_content(model=MODEL, contents="Hello async")
    assert response.text == "Hello! You said: Hello async"
    texts = [
        c.text
        async for c in await client.aio.models.generate_content_stream(
            model=MODEL, contents="one two three four five six"
        )
    ]
    assert len(texts) > 1 and "".join(texts).endswith("six")
    embedded = await client.aio.models.embed_content(model="gemini-embedding-001", contents=["a b"])
    assert len(embedded.embeddings[0].values) == 3072
    names = [m.name async for m in await client.aio.models.list()]
    assert "models/gemini-2.5-flash" in names


# --------------------------------------------------------------------------- embeddings, models
def test_embeddings_batch_dimensions_and_task_type(fake, client):
    result = client.models.embed_content(
        model="gemini-embedding-001",
        contents=["the cat sat", "a dog ran"],
        config=types.EmbedContentConfig(output_dimensionality=64, task_type="RETRIEVAL_DOCUMENT"),
    )
    vectors = [e.values for e in result.embeddings]
    assert [len(v) for v in vectors] == [64, 64] and vectors[0] != vectors[1]
    assert sum(x * x for x in vectors[0]) < 0.99  # shortened vectors are not normalised
    body = fake.last_request.body
    assert fake.last_request.path.endswith(":batchEmbedContents")
    assert body["requests"][0]["model"] == "models/gemini-embedding-001"
    assert _schema_errors("BatchEmbedContentsResponse", json.loads(_raw(
        fake, "models/gemini-embedding-001:batchEmbedContents", body).text)) == []  # fmt: skip
    single = _raw(fake, "models/gemini-embedding-001:embedContent",
                  {"content": {"parts": [{"text": "the cat sat"}]}, "taskType": "RETRIEVAL_QUERY"})  # fmt: skip
    query = single.json()["embedding"]["values"]
    assert len(query) == 3072 and abs(sum(x * x for x in query) - 1) < 1e-6
    too_many = {
        "requests": [
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "x"}]}}
        ]
        * 101
    }
    assert _raw(fake, "models/gemini-embedding-001:batchEmbedContents", too_many).status_code == 400
    fake.spec_violations.clear()


def test_models_list_pages_and_get(fake, client):
    fake.page_size_cap = 2
    names = [m.name for m in client.models.list(config={"page_size": 50})]
    assert names == [f"models/{m}" for m in fake.models]
    assert len([r for r in fake.requests if r.path == "/v1beta/models"]) == 4
    model = client.models.get(model="gemini-2.5-flash")
    assert model.input_token_limit == 1_048_576 and "generateContent" in model.supported_actions
    page = httpx.get(f"{fake.base_url}/v1beta/models", headers={"x-goog-api-key": "k"}).json()
    errors_ = _schema_errors("ListModelsResponse", page)
    # The live API leaves out `baseModelId`, which the discovery document marks required.
    assert errors_ and all("'baseModelId' is a required property" in e for e in errors_)


# --------------------------------------------------------------------------- errors
def test_rate_limit_is_a_client_error_with_retry_info(fake, client):
    fake.script(Fail(429, retry_after=31))
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model=MODEL, contents="x")
    assert (info.value.code, info.value.status) == (429, "RESOURCE_EXHAUSTED")
    retry = [d for d in info.value.details["error"]["details"] if d["@type"].endswith("RetryInfo")]
    assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31s"}]


def test_keys_models_and_server_errors(fake, client):
    fake.api_key = "right-key"
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model=MODEL, contents="x")
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT")
    assert info.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    no_key = httpx.post(f"{fake.base_url}/v1beta/models/{MODEL}:generateContent", json={})
    assert no_key.status_code == 403 and no_key.json()["error"]["status"] == "PERMISSION_DENIED"
    fake.api_key = None
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model="gemini-9", contents="x")
    assert info.value.code == 404 and "not found for API version v1beta" in info.value.message
    for status, word in ((500, "INTERNAL"), (503, "UNAVAILABLE"), (504, "DEADLINE_EXCEEDED")):
        fake.script(Fail(status))
        with pytest.raises(errors.ServerError) as server:
            client.models.generate_content(model=MODEL, contents="x")
        assert (server.value.code, server.value.status) == (status, word)
    html = httpx.get(f"{fake.base_url}/v1beta/nothing-here")
    assert html.status_code == 404 and html.headers["content-type"].startswith("text/html")


def test_input_token_limit(fake, client):
    fake.input_token_limit = 5
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model=MODEL, contents="one two three four five six")
    assert "exceeds the maximum number of tokens allowed (5)" in info.value.message


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"contents": [{"parts": [{"text": "x"}]}], "foo": 1}, 'Unknown name "foo"'),
        ({"contents": [{"parts": [{"text": 5}]}]}, "5 is not of type 'string'"),
        ({"contents": []}, "contents is not specified"),
        ({"contents": [{"role": "user", "parts": []}]}, "parts must not be empty"),
        ({"contents": [{"parts": [{"text": ""}]}]}, "empty text parameter"),
        (
            {
                "contents": [
                    {
                        "parts": [
                            {"text": "a", "inlineData": {"mimeType": "image/png", "data": "AA=="}}
                        ]
                    }
                ]
            },
            "oneof field 'data' is already set",
        ),
        ({"contents": [{"role": "system", "parts": [{"text": "a"}]}]}, "valid role"),
        (
            {
                "contents": [{"parts": [{"text": "a"}]}],
                "tools": [
                    {
                        "functionDeclarations": [
                            {
                                "name": "f",
                                "description": "d",
                                "parameters": {"type": "OBJECT", "properties": {}},
                            }
                        ]
                    }
                ],
            },
            "should be non-empty for OBJECT type",
        ),
        (
            {
                "contents": [{"parts": [{"text": "a"}]}],
                "tools": [
                    {
                        "functionDeclarations": [
                            {
                                "name": "f",
                                "description": "d",
                                "parameters": {
                                    "type": "object",
                                    "properties": {"a": {"type": "string"}},
                                },
                            }
                        ]
                    }
                ],
            },
            "is not one of",
        ),
        (
            {
                "contents": [{"parts": [{"text": "a"}]}],
                "tools": [
                    {
                        "functionDeclarations": [
                            {
                                "name": "f",
                                "description": "d",
                                "parameters": {
                                    "type": "OBJECT",
                                    "additionalProperties": False,
                                    "properties": {"a": {"type": "STRING"}},
                                },
                            }
                        ]
                    }
                ],
            },
            'Unknown name "additionalProperties"',
        ),
        (
            {
                "contents": [
                    {"role": "user", "parts": [{"text": "a"}]},
                    {
                        "role": "model",
                        "parts": [{"functionCall": {"name": "f"}}, {"functionCall": {"name": "f"}}],
                    },
                    {
                        "role": "user",
                        "parts": [{"functionResponse": {"name": "f", "response": {}}}],
                    },
                ]
            },
            "number of function response parts is equal",
        ),
        (
            {
                "contents": [{"parts": [{"text": "a"}]}],
                "generationConfig": {"responseJsonSchema": {"type": "object"}},
            },
            "response_mime_type",
        ),
    ],
)
def test_the_live_rules_are_enforced_and_recorded(fake, body, needle):
    raw = _raw(fake, f"models/{MODEL}:generateContent", body)
    assert raw.status_code == 400 and raw.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert needle in raw.json()["error"]["message"]
    assert len(fake.spec_violations) == 1
    fake.spec_violations.clear()


def test_snake_case_proto_names_are_accepted(fake):
    body = {
        "contents": [{"parts": [{"text": "hi"}]}],
        "generation_config": {"max_output_tokens": 2},
    }
    raw = _raw(fake, f"models/{MODEL}:generateContent", body)
    assert raw.status_code == 200 and raw.json()["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert fake.spec_violations == []


def test_disconnect_stall_and_malformed(fake):
    fake.script(Disconnect(after_events=1))
    with pytest.raises(httpx.RemoteProtocolError):
        _raw(fake, f"models/{MODEL}:streamGenerateContent",
             {"contents": [{"parts": [{"text": "one two three four five six seven"}]}]},
             params={"alt": "sse"})  # fmt: skip
    fake.script(Stall(1.0))
    with pytest.raises(httpx.ReadTimeout):
        _raw(fake, f"models/{MODEL}:generateContent", {"contents": [{"parts": [{"text": "x"}]}]},
             timeout=0.2)  # fmt: skip
    fake.script(Malformed("{not json"))
    raw = _raw(fake, f"models/{MODEL}:generateContent", {"contents": [{"parts": [{"text": "x"}]}]})
    assert raw.status_code == 200 and raw.text == "{not json"
    client = _client(fake, timeout=200)  # milliseconds
    fake.script(Stall(1.0))
    with pytest.raises(Exception, match="timed out") as info:  # httpx2's ReadTimeout
        client.models.generate_content(model=MODEL, contents="x")
    assert type(info.value).__name__ == "ReadTimeout"
