"""`HTTPChatAdapter.complete`/`acomplete`: a whole answer in hand without the stream's
generator layers, the same chunk, requests and retries as ``chat(stream=False)``; a wire with
its own ``_complete`` keeps it. Over `httpx.MockTransport` (no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.outputs import ChatGenerationChunk

import agency
from agency.providers._base import ChatRequest

_CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
}  # fmt: skip


def _model(answers: list[tuple[int, dict[str, Any]]], seen: list[httpx.Request]) -> Any:
    """A model whose requests get ``answers`` (status, JSON) in turn, the last one after."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status, body = answers.pop(0) if len(answers) > 1 else answers[0]
        return httpx.Response(status, json=body, headers={"retry-after": "0"})

    return agency.chat_model(
        "openai:gpt-4o-mini",
        api_key="sk-test",
        base_url="https://mock.invalid/v1",
        transport=httpx.MockTransport(handle),
        max_retries=2,
    )


def _request(model: Any) -> ChatRequest:
    return model._request([HumanMessage("hi")], None, {})  # type: ignore[no-any-return]


def _dumps(chunks: list[ChatGenerationChunk]) -> list[dict[str, Any]]:
    return [c.model_dump() for c in chunks]


async def test_complete_is_chat_without_the_stream_in_hand() -> None:
    seen: list[httpx.Request] = []
    model = _model([(200, _CHAT)], seen)
    adapter, request = model._adapter, _request(model)
    by_chat = list(adapter.chat(request, stream=False))
    by_achat = [c async for c in adapter.achat(request, stream=False)]
    whole, awhole = adapter.complete(request), await adapter.acomplete(request)
    assert len(whole) == 1 and whole[0].message.content == "whole"
    assert _dumps(whole) == _dumps(by_chat) == _dumps(awhole) == _dumps(by_achat)
    assert [r.content for r in seen[2:]] == [r.content for r in seen[:2]]  # the same request
    assert len(seen) == 4


async def test_complete_retries_as_chat_does() -> None:
    seen: list[httpx.Request] = []
    busy = (503, {"error": {"message": "busy"}})
    model = _model([busy, (200, _CHAT)], seen)
    assert model._adapter.complete(_request(model))[0].message.content == "whole"
    assert len(seen) == 2
    seen.clear()
    model = _model([busy, (200, _CHAT)], seen)
    assert (await model._adapter.acomplete(_request(model)))[0].message.content == "whole"
    assert len(seen) == 2


async def test_a_wire_with_its_own_complete_keeps_it() -> None:
    seen: list[httpx.Request] = []
    model = _model([(200, _CHAT)], seen)
    base = type(model._adapter)

    class Own(base):  # type: ignore[misc,valid-type]
        def _complete(self, request: ChatRequest) -> Iterator[ChatGenerationChunk]:
            yield ChatGenerationChunk(message=AIMessageChunk(content="own"))

        async def _acomplete(self, request: ChatRequest) -> AsyncIterator[ChatGenerationChunk]:
            yield ChatGenerationChunk(message=AIMessageChunk(content="aown"))

    model._adapter.__class__ = Own
    assert [c.message.content for c in model._adapter.complete(_request(model))] == ["own"]
    assert [c.message.content for c in await model._adapter.acomplete(_request(model))] == ["aown"]
    assert (await model.ainvoke("hi")).content == "aown" and seen == []
