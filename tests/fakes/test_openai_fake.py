"""Oracle tests: the official ``openai`` SDK (strict response validation) and langchain-openai,
pointed at ``FakeOpenAI``, must accept everything it says; its bodies must match the response
schemas of the official spec; and its request validation must catch what the spec forbids."""

from __future__ import annotations

import base64
import json
import math
import struct
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel, Field, SecretStr

from ._openapi import request_validator
from .openai_server import Fail, FakeOpenAI, Reply, embed_text

SPEC = "openai-openapi.yaml"
MODEL = "gpt-4o-mini"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]
MAGIC_TOOL = {
    "type": "function",
    "function": {
        "name": "magic_function",
        "description": "Apply a magic function to an input.",
        "parameters": {
            "type": "object",
            "properties": {"input": {"type": "integer", "exclusiveMinimum": -1000}},
            "required": ["input"],
        },
    },
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


def _client(fake: FakeOpenAI, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=fake.base_url,
        api_key=kwargs.pop("api_key", "sk-test"),
        max_retries=kwargs.pop("max_retries", 0),
        _strict_response_validation=True,
        http_client=openai.DefaultHttpxClient(trust_env=False),
        **kwargs,
    )


def _schema_errors(schema_name: str, instance: Any) -> list[str]:
    return [e.message for e in request_validator(SPEC, schema_name).iter_errors(instance)]


@pytest.fixture
def client(openai_fake: FakeOpenAI) -> openai.OpenAI:
    return _client(openai_fake)


# --------------------------------------------------------------------------- chat, non-streamed


def test_chat_completion_parses_strictly_and_matches_response_schema(openai_fake, client):
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO)
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert completion.choices[0].message.content == "Hello! You said: Hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert completion.usage.prompt_tokens_details.cached_tokens == 0
    assert completion.usage.completion_tokens_details.reasoning_tokens == 0
    assert _schema_errors("CreateChatCompletionResponse", json.loads(raw.text)) == []
    assert raw.headers["x-request-id"].startswith("req_")
    assert int(raw.headers["openai-processing-ms"]) >= 0
    for name in ("limit", "remaining", "reset"):
        assert raw.headers[f"x-ratelimit-{name}-requests"]
        assert raw.headers[f"x-ratelimit-{name}-tokens"]
    recorded = openai_fake.last_request
    assert (recorded.method, recorded.path) == ("POST", "/v1/chat/completions")
    assert recorded.headers["authorization"] == "Bearer sk-test"
    assert recorded.body == {"model": MODEL, "messages": HELLO}
    assert openai_fake.bodies() == [recorded.body] and openai_fake.bodies("/embeddings") == []
    assert openai_fake.spec_violations == []


def test_stop_and_max_tokens_truncate(openai_fake, client):
    stopped = client.chat.completions.create(model=MODEL, messages=HELLO, stop=["said"])
    assert stopped.choices[0].message.content == "Hello! You "
    assert stopped.choices[0].finish_reason == "stop"
    short = client.chat.completions.create(model=MODEL, messages=HELLO, max_completion_tokens=2)
    assert short.choices[0].message.content == "Hello! You"
    assert short.choices[0].finish_reason == "length"
    nulls = client.chat.completions.create(
        model="gpt-4o", messages=HELLO, extra_body={"max_tokens": None, "stop": None}
    )
    assert nulls.model == "gpt-4o"  # ``nullable`` parameters accept null, as live
    assert openai_fake.spec_violations == []


def test_image_parts_are_described(openai_fake, client):
    png = base64.b64encode(b"\x89PNG" + b"\0" * 96).decode()
    content = [
        {"type": "text", "text": "Describe this."},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
    ]
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}]
    )
    assert completion.choices[0].message.content == (
        "Hello! You said: Describe this. I see an image (100 bytes)."
    )
    assert openai_fake.spec_violations == []


def test_scripted_reply_usage_refusal_and_tool_calls(openai_fake, client):
    openai_fake.script(
        Reply("cached", cached_tokens=5, reasoning_tokens=7, usage={"prompt_tokens": 50}),
        Reply(refusal="I can't help with that."),
        Reply(tool_calls=[{"name": "get_weather", "arguments": {"location": "Paris"}}]),
    )
    first = client.chat.completions.create(model=MODEL, messages=HELLO)
    assert first.choices[0].message.content == "cached"
    assert first.usage.prompt_tokens == 50
    assert first.usage.prompt_tokens_details.cached_tokens == 5
    assert first.usage.completion_tokens_details.reasoning_tokens == 7
    refused = client.chat.completions.create(model=MODEL, messages=HELLO)
    assert refused.choices[0].message.content is None
    assert refused.choices[0].message.refusal == "I can't help with that."
    called = client.chat.completions.create(model=MODEL, messages=HELLO, tools=[WEATHER_TOOL])
    call = called.choices[0].message.tool_calls[0]
    assert called.choices[0].finish_reason == "tool_calls"
    assert call.id.startswith("call_") and call.type == "function"
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_weather",
        {"location": "Paris"},
    )
    # the queue is used up: the brain answers again
    again = client.chat.completions.create(model=MODEL, messages=HELLO)
    assert again.choices[0].message.content == "Hello! You said: Hello there"


def test_brain_calls_tools_then_answers_with_the_result(openai_fake, client):
    question = [{"role": "user", "content": "What is magic_function(3)? Use the tool."}]
    first = client.chat.completions.create(model=MODEL, messages=question, tools=[MAGIC_TOOL])
    call = first.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "magic_function",
        {"input": 3},
    )
    history = [
        *question,
        first.choices[0].message.model_dump(exclude_none=True, exclude={"annotations"}),
        {"role": "tool", "tool_call_id": call.id, "content": "5"},
    ]
    final = client.chat.completions.create(model=MODEL, messages=history, tools=[MAGIC_TOOL])
    assert final.choices[0].message.content == "The tool returned: 5"
    forced = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        tools=[MAGIC_TOOL, WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert forced.choices[0].message.tool_calls[0].function.name == "get_weather"
    both = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Call magic_function(2) and get_weather 'Oslo'"}],
        tools=[MAGIC_TOOL, WEATHER_TOOL],
    )
    calls = both.choices[0].message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("magic_function", {"input": 2}),
        ("get_weather", {"location": "Oslo"}),
    ]
    assert len({c.id for c in calls}) == 2
    assert openai_fake.spec_violations == []


# --------------------------------------------------------------------------- chat, streamed


def test_stream_with_usage_chunk(openai_fake, client):
    stream = client.chat.completions.create(
        model=MODEL, messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(deltas) >= 3
    assert "".join(deltas) == "Hello! You said: Hello there"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


def test_stream_frames_match_the_chunk_schema(openai_fake):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "magic_function(7) and get_weather"}],
        "tools": [MAGIC_TOOL, WEATHER_TOOL],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = httpx.post(
        f"{openai_fake.base_url}/chat/completions",
        json=body,
        headers={"Authorization": "Bearer sk-test"},
        trust_env=False,
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("data: [DONE]\n\n")
    events = [e for e in response.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    for chunk in chunks:
        assert _schema_errors("CreateChatCompletionStreamResponse", chunk) == []
    calls = [
        tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    heads = [tc for tc in calls if "id" in tc]
    assert [h["index"] for h in heads] == [0, 1]
    assert all(h["type"] == "function" and h["function"]["arguments"] == "" for h in heads)
    assert all(set(tc) == {"index", "function"} for tc in calls if "id" not in tc)
    args = {0: "", 1: ""}
    for tc in calls:
        args[tc["index"]] += tc["function"]["arguments"]
    assert json.loads(args[0]) == {"input": 7}
    assert json.loads(args[1])["location"]


def test_stream_helper_assembles_parallel_tool_calls(openai_fake, client):
    openai_fake.script(
        Reply(
            tool_calls=[
                {"name": "magic_function", "arguments": {"input": 3}},
                {"name": "get_weather", "arguments": '{"location": "Zürich"}'},
            ]
        )
    )
    with client.chat.completions.stream(
        model=MODEL, messages=HELLO, tools=[MAGIC_TOOL, WEATHER_TOOL]
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.delta" in events
    calls = final.choices[0].message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("magic_function", {"input": 3}),
        ("get_weather", {"location": "Zürich"}),
    ]
    assert final.choices[0].finish_reason == "tool_calls"


async def test_async_client_invoke_and_stream(openai_fake):
    client = openai.AsyncOpenAI(
        base_url=openai_fake.base_url,
        api_key="sk-test",
        max_retries=0,
        _strict_response_validation=True,
        http_client=openai.DefaultAsyncHttpxClient(trust_env=False),
    )
    async with client:
        completion = await client.chat.completions.create(model=MODEL, messages=HELLO)
        stream = await client.chat.completions.create(
            model=MODEL, messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == completion.choices[0].message.content
    assert chunks[-1].usage is not None


# --------------------------------------------------------------------------- structured output


class Joke(BaseModel):
    setup: str = Field(description="question to set up a joke")
    punchline: str = Field(description="answer to resolve the joke")


def test_parse_with_pydantic_response_format(openai_fake, client):
    completion = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a joke about cats."}],
        response_format=Joke,
    )
    joke = completion.choices[0].message.parsed
    assert isinstance(joke, Joke)
    assert joke.setup and joke.punchline
    sent = openai_fake.last_request.body["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["strict"] is True
    assert openai_fake.spec_violations == []


def test_json_object_mode_uses_quoted_keys(openai_fake, client):
    prompt = "Return a JSON object with 'setup' and 'punchline' keys about cats."
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": prompt}],
        response_format={"type": "json_object"},
    )
    data = json.loads(completion.choices[0].message.content)
    assert set(data) == {"setup", "punchline"} and all(data.values())


# --------------------------------------------------------------------------- embeddings, models


def test_embeddings_float_and_default_base64(openai_fake, client):
    floats = client.embeddings.create(
        model="text-embedding-3-small",
        input=["the cat sat", "the cat sat", "the cats sat", "quantum chromodynamics"],
        dimensions=256,
        encoding_format="float",
    )
    vectors = [d.embedding for d in floats.data]
    assert [d.index for d in floats.data] == [0, 1, 2, 3]
    assert all(len(v) == 256 for v in vectors)
    assert math.isclose(sum(x * x for x in vectors[0]), 1.0, rel_tol=1e-9)
    cosine = [sum(a * b for a, b in zip(vectors[0], v, strict=True)) for v in vectors[1:]]
    assert cosine[0] == pytest.approx(1.0) and cosine[1] > 0.5 > cosine[2]
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 0
    # The SDK asks for base64 unless told otherwise and decodes it in a post-parser that runs
    # after strict response validation (which wants floats), so this call needs a lax client.
    lax = openai.OpenAI(
        base_url=openai_fake.base_url,
        api_key="sk-test",
        max_retries=0,
        http_client=openai.DefaultHttpxClient(trust_env=False),
    )
    default = lax.embeddings.create(model="text-embedding-3-small", input="the cat sat")
    assert openai_fake.last_request.body["encoding_format"] == "base64"  # the SDK's default
    assert len(default.data[0].embedding) == 1536
    assert default.data[0].embedding == pytest.approx(embed_text("the cat sat"), abs=1e-6)
    raw = httpx.post(
        f"{openai_fake.base_url}/embeddings",
        json={"model": "text-embedding-3-small", "input": [[1, 2, 3]], "encoding_format": "base64"},
        headers={"Authorization": "Bearer sk-test"},
        trust_env=False,
    ).json()
    assert _schema_errors("CreateEmbeddingResponse", {**raw, "data": []}) == []
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert struct.unpack("<1536f", packed) == pytest.approx(embed_text("1 2 3"), abs=1e-6)
    assert openai_fake.spec_violations == []


def test_embedding_errors(openai_fake, client):
    with pytest.raises(openai.BadRequestError, match="does not support specifying dimensions"):
        client.embeddings.create(model="text-embedding-ada-002", input="x", dimensions=8)
    with pytest.raises(openai.BadRequestError, match="input"):
        client.embeddings.create(model="text-embedding-3-small", input="")
    openai_fake.script_embeddings(Fail(503))
    with pytest.raises(openai.InternalServerError) as caught:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert caught.value.status_code == 503


def test_models_list_and_retrieve(openai_fake, client):
    openai_fake.models.append("ft:gpt-4o-mini:org::abc")
    ids = [m.id for m in client.models.list()]
    assert ids[:3] == ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
    model = client.models.retrieve("ft:gpt-4o-mini:org::abc")
    assert (model.id, model.object, model.owned_by) == (
        "ft:gpt-4o-mini:org::abc",
        "model",
        "system",
    )
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-9")
    assert caught.value.code == "model_not_found"
    assert _schema_errors("ErrorResponse", caught.value.response.json()) == []


# --------------------------------------------------------------------------- Azure


def test_azure_routes(openai_fake):
    openai_fake.azure_api_key = "azure-key"
    azure = openai.AzureOpenAI(
        azure_endpoint=openai_fake.root_url,
        api_key="azure-key",
        api_version="2024-10-21",
        max_retries=0,
        http_client=openai.DefaultHttpxClient(trust_env=False),
    )
    completion = azure.chat.completions.create(model="my-deployment", messages=HELLO)
    assert completion.choices[0].message.content == "Hello! You said: Hello there"
    assert (completion.model_extra or {})["prompt_filter_results"][0]["prompt_index"] == 0
    recorded = openai_fake.last_request
    assert recorded.path == "/openai/deployments/my-deployment/chat/completions"
    assert recorded.query == {"api-version": "2024-10-21"}
    assert recorded.headers["api-key"] == "azure-key"
    chunks = list(azure.chat.completions.create(model="my-deployment", messages=HELLO, stream=True))
    assert chunks[0].choices == [] and chunks[0].model == ""  # Azure's prompt-filter chunk
    assert "".join(c.choices[0].delta.content or "" for c in chunks[1:]).startswith("Hello!")
    embedding = azure.embeddings.create(model="emb-deployment", input="hi", dimensions=64)
    assert len(embedding.data[0].embedding) == 64
    url = f"{openai_fake.root_url}/openai/deployments/d/chat/completions"
    no_version = httpx.post(
        url, json={"messages": HELLO}, headers={"api-key": "azure-key"}, trust_env=False
    )
    assert no_version.status_code == 404
    wrong_key = httpx.post(
        url,
        params={"api-version": "2024-10-21"},
        json={"messages": HELLO},
        headers={"api-key": "x"},
        trust_env=False,
    )
    assert wrong_key.status_code == 401 and wrong_key.json()["error"]["code"] == "401"
    assert openai_fake.spec_violations == []


# --------------------------------------------------------------------------- langchain-openai


@tool
def magic_function(input: int) -> int:
    """Apply a magic function to an input."""
    return input + 2


def test_langchain_chat_openai_against_the_fake(openai_fake):
    llm = ChatOpenAI(
        base_url=openai_fake.base_url, api_key=SecretStr("sk-test"), model=MODEL, max_retries=0
    )
    reply = llm.invoke("Hello")
    assert isinstance(reply, AIMessage) and reply.content == "Hello! You said: Hello"
    assert reply.usage_metadata is not None and reply.usage_metadata["total_tokens"] > 0
    with_tools = llm.bind_tools([magic_function], tool_choice="any")
    query = "What is the value of magic_function(3)? Use the tool."
    called = with_tools.invoke(query)
    assert [(c["name"], c["args"]) for c in called.tool_calls] == [("magic_function", {"input": 3})]
    streamed: Any = None
    for chunk in with_tools.stream(query):
        streamed = chunk if streamed is None else streamed + chunk
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == [
        ("magic_function", {"input": 3})
    ]
    answer = llm.bind_tools([magic_function]).invoke(
        [
            HumanMessage(query),
            called,
            ToolMessage("5", tool_call_id=called.tool_calls[0]["id"]),
        ]
    )
    assert answer.content == "The tool returned: 5"
    joke = llm.with_structured_output(Joke).invoke("Tell me a joke about cats.")
    assert isinstance(joke, Joke) and joke.setup
    assert openai_fake.spec_violations == []
