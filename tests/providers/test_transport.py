"""``transport=``: a model sends through the caller's httpx transport (here `httpx.MockTransport`)
instead of the shared pools, and the transport is never serialized, printed or in cache keys."""

from __future__ import annotations

import base64
import json
import struct

import httpx
import pytest
from langchain_core.load import dumpd, dumps

import agency
from agency._http import _sync_clients
from agency.errors import ConfigError, MalformedResponse

_CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hi from the mock"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
}
_STREAM = (
    'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
    '[{"index":0,"delta":{"role":"assistant","content":"hi "},"finish_reason":null}]}\n\n'
    'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
    '[{"index":0,"delta":{"content":"streamed"},"finish_reason":"stop"}]}\n\n'
    "data: [DONE]\n\n"
)


def _handler(seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        if request.url.path.endswith("/embeddings"):
            vectors = [[float(i), 0.5] for i, _ in enumerate(body["input"])]
            data = [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": base64.b64encode(struct.pack("<2f", *v)).decode()
                    if body.get("encoding_format") == "base64"
                    else v,
                }
                for i, v in enumerate(vectors)
            ]
            return httpx.Response(200, json={"object": "list", "data": data, "model": "e"})
        if body.get("stream"):
            return httpx.Response(200, text=_STREAM, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=_CHAT)

    return httpx.MockTransport(handle)


def test_chat_sync_goes_through_the_transport_not_the_pool() -> None:
    seen: list[httpx.Request] = []
    pooled_before = set(_sync_clients)
    llm = agency.chat_model(
        "openai:gpt-4o-mini",
        api_key="sk-test",
        base_url="https://mock.invalid/v1",
        transport=_handler(seen),
    )
    assert llm.invoke("hello").content == "hi from the mock"
    assert "".join(str(c.content) for c in llm.stream("hello")) == "hi streamed"
    assert [r.url.path for r in seen] == ["/v1/chat/completions"] * 2
    assert seen[0].headers["authorization"] == "Bearer sk-test"
    assert set(_sync_clients) == pooled_before  # no pooled client was made for this URL


async def test_chat_async_goes_through_the_transport() -> None:
    seen: list[httpx.Request] = []
    llm = agency.chat_model(
        "openai:gpt-4o-mini",
        api_key="sk-test",
        base_url="https://mock.invalid/v1",
        transport=_handler(seen),
    )
    assert (await llm.ainvoke("hello")).content == "hi from the mock"
    chunks = [c async for c in llm.astream("hello")]
    assert "".join(str(c.content) for c in chunks) == "hi streamed"
    assert len(seen) == 2


@pytest.mark.parametrize("spec", ["openai:text-embedding-3-small", "voyage:voyage-3.5"])
def test_embeddings_sync_and_async_go_through_the_transport(spec: str) -> None:
    import asyncio

    seen: list[httpx.Request] = []
    emb = agency.embeddings(
        spec, api_key="k", base_url="https://mock.invalid/v1", transport=_handler(seen)
    )
    assert emb.embed_documents(["a", "b"]) == [[0.0, 0.5], [1.0, 0.5]]
    assert asyncio.run(emb.aembed_query("q")) == [0.0, 0.5]
    assert [r.url.host for r in seen] == ["mock.invalid", "mock.invalid"]


def test_transport_is_not_serialized_printed_or_in_the_cache_key() -> None:
    transport = _handler([])
    llm = agency.chat_model("openai:gpt-4o-mini", api_key="sk-test", transport=transport)
    plain = agency.chat_model("openai:gpt-4o-mini", api_key="sk-test")
    assert "transport" not in dumpd(llm)["kwargs"]
    assert "MockTransport" not in repr(llm) and "MockTransport" not in dumps(llm)
    assert "transport" not in llm.model_dump()
    assert llm._get_llm_string() == plain._get_llm_string()
    assert llm.connection == plain.connection  # the transport is not the connection's identity
    assert "MockTransport" not in repr(llm.connection)
    emb = agency.embeddings("openai:text-embedding-3-small", api_key="k", transport=transport)
    assert "MockTransport" not in repr(emb) and "transport" not in emb.model_dump()


def test_a_sync_only_transport_refuses_async_calls_with_a_config_error() -> None:
    import asyncio

    class SyncOnly(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, json=_CHAT)

    llm = agency.chat_model("openai:gpt-4o-mini", api_key="sk-test", transport=SyncOnly())
    assert llm.invoke("x").content == "hi from the mock"
    with pytest.raises(ConfigError, match="sync-only"):
        asyncio.run(llm.ainvoke("x"))


# -- malformed answers carry the request id ------------------------------------------------
def _malformed_with_id(body: str, content_type: str = "application/json") -> httpx.MockTransport:
    headers = {"content-type": content_type, "x-request-id": "req-42"}
    return httpx.MockTransport(lambda request: httpx.Response(200, text=body, headers=headers))


def test_a_malformed_json_answer_names_its_request_id() -> None:
    bad = json.dumps({**_CHAT, "choices": [{"index": 0, "message": 5}]})
    llm = agency.chat_model("openai:gpt-4o-mini", api_key="k", transport=_malformed_with_id(bad))
    with pytest.raises(MalformedResponse) as info:
        llm.invoke("hi")
    assert info.value.request_id == "req-42" and "request id req-42" in str(info.value)


def test_a_malformed_stream_event_names_its_request_id() -> None:
    stream = "data: {not json\n\n"
    transport = _malformed_with_id(stream, "text/event-stream")
    llm = agency.chat_model("openai:gpt-4o-mini", api_key="k", transport=transport)
    with pytest.raises(MalformedResponse, match="not JSON") as info:
        list(llm.stream("hi"))
    assert info.value.request_id == "req-42"


async def test_malformed_embeddings_name_their_request_id_sync_and_async() -> None:
    bad = json.dumps({"data": [{"index": 0, "embedding": "%%%"}]})
    emb = agency.embeddings(
        "voyage:voyage-3.5", api_key="k", transport=_malformed_with_id(bad), max_retries=0
    )
    with pytest.raises(MalformedResponse, match="base64") as info:
        emb.embed_query("x")
    assert info.value.request_id == "req-42" and info.value.__cause__ is not None
    with pytest.raises(MalformedResponse) as ainfo:
        await emb.aembed_query("x")
    assert ainfo.value.request_id == "req-42"
