"""The fake Ollama server against the official ``ollama`` SDK (the oracle).

If ``ollama.Client`` / ``ollama.AsyncClient`` pointed at the fake work and their pydantic
response types accept every answer (strictly, and with no field the SDK or the OpenAPI spec
does not know), the fake speaks Ollama's wire format. Answers are also validated against the
response schemas of ``../shared/specs/ollama-openapi.yaml``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import pytest
from ollama import ChatResponse, EmbedResponse, ListResponse, ShowResponse
from pydantic import BaseModel

from fakes._ollama_wire import SPEC_FILE
from fakes._openapi import component_properties, validate_request
from fakes.ollama_server import FakeOllama, Reply, StreamError


@pytest.fixture(scope="module")
def _server() -> Iterator[FakeOllama]:
    with FakeOllama().running() as fake:
        yield fake


@pytest.fixture
def fake(_server: FakeOllama) -> Iterator[FakeOllama]:
    with _server.checked() as fake:
        yield fake


@pytest.fixture
def client(fake: FakeOllama) -> ollama.Client:
    assert fake.base_url
    return ollama.Client(host=fake.base_url)


def _checked(schema: str, sdk_type: type[BaseModel], text: str) -> dict[str, Any]:
    """``text`` validated three ways: the spec schema, the SDK type in strict mode, and no
    top-level field outside the spec's and the SDK's (catches a fake inventing fields)."""
    data = json.loads(text)
    assert validate_request(SPEC_FILE, schema, data) == []
    sdk_type.model_validate_json(text, strict=True)
    known = component_properties(SPEC_FILE, schema) | {
        f.alias or name for name, f in sdk_type.model_fields.items()
    }
    assert set(data) <= known, set(data) - known
    return data  # type: ignore[no-any-return]


def _post(fake: FakeOllama, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{fake.base_url}{path}", json=body, timeout=10)


def test_chat_non_streamed(client: ollama.Client, fake: FakeOllama) -> None:
    answer = client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi <there>"}])
    assert answer.message.role == "assistant"
    assert answer.message.content == "Hello! You said: hi <there>"
    assert answer.done is True and answer.done_reason == "stop"
    assert answer.prompt_eval_count and answer.eval_count
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    response = _post(fake, "/api/chat", body)
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    _checked("ChatResponse", ChatResponse, response.text)
    # Go escapes HTML characters in JSON strings.
    raw = _post(fake, "/api/chat", {**body, "messages": [{"role": "user", "content": "<b>"}]})
    assert "\\u003cb\\u003e" in raw.text


def test_chat_streamed_ndjson(client: ollama.Client, fake: FakeOllama) -> None:
    parts = list(client.chat(model="llama3.2", messages=[{"role": "user", "content": "a b c"}],
                             stream=True))  # fmt: skip
    assert len(parts) > 2 and all(not p.done for p in parts[:-1])
    last = parts[-1]
    assert last.done and last.done_reason == "stop" and last.eval_count
    assert "".join(p.message.content or "" for p in parts) == "Hello! You said: a b c"
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "x y"}]}
    with httpx.stream("POST", f"{fake.base_url}/api/chat", json=body) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = [line for line in response.iter_lines() if line]
    for line in lines[:-1]:
        _checked("ChatStreamEvent", ChatResponse, line)
    _checked("ChatResponse", ChatResponse, lines[-1])


def get_weather(city: str) -> str:
    """Get the weather in a city.

    Args:
      city: The city to get the weather for
    """
    return "sunny"


def test_tools_streamed_and_not(client: ollama.Client, fake: FakeOllama) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in 'Tokyo'?"}]
    answer = client.chat(model="llama3.2", messages=messages, tools=[get_weather])
    (call,) = answer.message.tool_calls or []
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Tokyo"}
    assert answer.done_reason == "stop"  # Ollama has no "tool_calls" reason
    parts = list(client.chat(model="llama3.2", messages=messages, tools=[get_weather],
                             stream=True))  # fmt: skip
    with_calls = [p for p in parts if p.message.tool_calls]
    assert len(with_calls) == 1 and not with_calls[0].done  # complete, in a non-final line
    messages += [answer.message, {"role": "tool", "content": "11 C", "tool_name": "get_weather"}]
    follow = client.chat(model="llama3.2", messages=messages, tools=[get_weather])
    assert follow.message.content == "The tool returned: 11 C" and not follow.message.tool_calls


def test_tools_refused_by_a_model_without_them(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="llava", messages=[{"role": "user", "content": "x"}], tools=[get_weather])
    assert info.value.status_code == 400 and "does not support tools" in info.value.error


def test_format_schema_and_json(client: ollama.Client) -> None:
    class Country(BaseModel):
        name: str
        capital: str
        population: int

    schema = Country.model_json_schema()
    answer = client.chat(
        model="llama3.2",
        messages=[{"role": "user", "content": "Tell me about 'Canada', 'Ottawa', 38000000"}],
        format=schema,
    )
    parsed = Country.model_validate_json(answer.message.content or "")
    assert parsed == Country(name="Canada", capital="Ottawa", population=38000000)
    plain = client.chat(
        model="llama3.2",
        messages=[{"role": "user", "content": "give 'setup' and 'punchline' as JSON"}],
        format="json",
    )
    assert set(json.loads(plain.message.content or "")) == {"setup", "punchline"}


def test_embed(client: ollama.Client, fake: FakeOllama) -> None:
    result = client.embed(model="nomic-embed-text", input=["sky", "grass", "sky"])
    assert len(result.embeddings) == 3 and all(len(v) == 768 for v in result.embeddings)
    assert result.embeddings[0] == result.embeddings[2] != result.embeddings[1]
    assert abs(sum(x * x for x in result.embeddings[0]) - 1.0) < 1e-6
    assert result.prompt_eval_count
    short = client.embed(model="nomic-embed-text", input="sky", dimensions=64)
    assert len(short.embeddings) == 1 and len(short.embeddings[0]) == 64
    response = _post(fake, "/api/embed", {"model": "nomic-embed-text", "input": ["a"]})
    _checked("EmbedResponse", EmbedResponse, response.text)
    with pytest.raises(ollama.ResponseError) as info:
        client.embed(model="nomic-embed-text", input="word " * 3000, truncate=False)
    assert info.value.status_code == 400 and "context length" in info.value.error


def test_list_show_version(client: ollama.Client, fake: FakeOllama) -> None:
    names = [m.model for m in client.list().models]
    assert "llama3.2:latest" in names and "nomic-embed-text:latest" in names
    shown = client.show("llama3.2")
    assert shown.modelinfo and shown.modelinfo["llama.context_length"] == 131072
    assert shown.capabilities == ["completion", "tools"]
    _checked("ListResponse", ListResponse, httpx.get(f"{fake.base_url}/api/tags").text)
    show = _post(fake, "/api/show", {"model": "qwen3"})
    data = _checked("ShowResponse", ShowResponse, show.text)
    assert "thinking" in data["capabilities"]
    version = httpx.get(f"{fake.base_url}/api/version")
    assert validate_request(SPEC_FILE, "VersionResponse", version.json()) == []
    assert version.json() == {"version": fake.version}
    assert httpx.get(f"{fake.base_url}/").text == "Ollama is running"


@pytest.mark.parametrize("stream", [False, True])
def test_missing_model_is_response_error_404(client: ollama.Client, stream: bool) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        result = client.chat(
            model="llama9", messages=[{"role": "user", "content": "x"}], stream=stream
        )
        list(result) if stream else None  # type: ignore[call-overload]
    assert info.value.status_code == 404
    assert info.value.error == 'model "llama9" not found, try pulling it first'
    with pytest.raises(ollama.ResponseError) as shown:
        client.show("llama9")
    assert shown.value.status_code == 404


def test_error_inside_a_stream(client: ollama.Client, fake: FakeOllama) -> None:
    fake.script(StreamError("an error was encountered while running the model", after_events=2))
    seen = []
    with pytest.raises(ollama.ResponseError) as info:
        for part in client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}],
                                stream=True):  # fmt: skip
            seen.append(part)
    assert len(seen) == 2 and "error was encountered" in info.value.error


def test_thinking_and_images(client: ollama.Client, png: bytes) -> None:
    answer = client.chat(model="qwen3", messages=[{"role": "user", "content": "why?"}], think=True)
    assert answer.message.thinking == "The user asks: why?"
    with pytest.raises(ollama.ResponseError, match="does not support thinking"):
        client.chat(model="llama3.2", messages=[{"role": "user", "content": "x"}], think=True)
    seen = client.chat(
        model="llava", messages=[{"role": "user", "content": "what?", "images": [png]}]
    )
    assert f"I see an image ({len(png)} bytes)" in (seen.message.content or "")
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="llama3.2", messages=[{"role": "user", "content": "x", "images": [png]}])
    assert info.value.status_code == 400


@pytest.fixture
def png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


async def test_async_client(fake: FakeOllama) -> None:
    client = ollama.AsyncClient(host=fake.base_url)
    answer = await client.chat(model="llama3.2", messages=[{"role": "user", "content": "hey"}])
    assert answer.message.content == "Hello! You said: hey"
    parts = [p async for p in await client.chat(
        model="llama3.2", messages=[{"role": "user", "content": "hey you"}], stream=True
    )]  # fmt: skip
    assert parts[-1].done and "".join(p.message.content or "" for p in parts).endswith("hey you")
    vectors = await client.embed(model="nomic-embed-text", input=["a", "b"])
    assert len(vectors.embeddings) == 2
    assert len((await client.list()).models) == len(fake.models)
    with pytest.raises(ollama.ResponseError) as info:
        await client.show("nope")
    assert info.value.status_code == 404


def test_scripted_reply_and_empty_chat(client: ollama.Client, fake: FakeOllama) -> None:
    fake.script(
        Reply(content="", tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}])
    )
    answer = client.chat(model="llama3.2", messages=[{"role": "user", "content": "x"}])
    assert answer.message.tool_calls and answer.message.tool_calls[0].function.arguments == {
        "city": "Oslo"
    }
    loaded = client.chat(model="llama3.2", messages=[])
    assert loaded.done_reason == "load" and loaded.message.content == ""


def test_violations_are_recorded(fake: FakeOllama) -> None:
    bad_args = {
        "model": "llama3.2",
        "stream": False,
        "messages": [
            {"role": "assistant", "content": "",
             "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1}'}}]},
        ],
    }  # fmt: skip
    assert _post(fake, "/api/chat", bad_args).status_code == 400
    ignored = {
        "model": "llama3.2",
        "stream": False,
        "max_tokens": 5,
        "options": {"max_tokens": 5},
        "messages": [{"role": "user", "content": "x", "name": "bob", "tool_call_id": "1"}],
    }
    assert _post(fake, "/api/chat", ignored).status_code == 200  # Ollama ignores, we record
    data_url = {
        "model": "llava",
        "stream": False,
        "messages": [{"role": "user", "content": "x", "images": ["data:image/png;base64,AAAA"]}],
    }
    answer = _post(fake, "/api/chat", data_url)
    assert answer.status_code == 400 and "illegal base64" in answer.json()["error"]
    violations = list(fake.spec_violations)
    fake.spec_violations.clear()
    text = "\n".join(violations)
    assert "arguments" in text and "max_tokens" in text and "'name'" in text
    assert "tool_call_id" in text and "invalid option" in text and "illegal base64" in text
    assert len(violations) == 5


def test_unknown_route_and_auth(fake: FakeOllama) -> None:
    wrong = httpx.post(f"{fake.base_url}/v1/api/chat", json={})
    assert (wrong.status_code, wrong.text) == (404, "404 page not found")
    fake.api_key = "k-123"
    with pytest.raises(ollama.ResponseError) as info:
        ollama.Client(host=fake.base_url).list()
    assert info.value.status_code == 401
    authed = ollama.Client(host=fake.base_url, headers={"Authorization": "Bearer k-123"})
    assert authed.list().models


def test_spec_schema_rejects_bad_bodies() -> None:
    """The validator the fake relies on does catch what Ollama rejects."""
    assert validate_request(
        SPEC_FILE, "ChatRequest", {"model": "m", "messages": [], "format": "xml"}
    )
    assert validate_request(SPEC_FILE, "ChatRequest", {"model": "m"})  # messages required
    assert validate_request(SPEC_FILE, "EmbedRequest", {"model": "m", "input": 3})
