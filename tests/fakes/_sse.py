"""Server-sent events the way OpenAI streams Chat Completions.

``chat_chunks`` turns an answer into ``chat.completion.chunk`` objects:

1. ``delta: {"role": "assistant", "content": "", "refusal": null}`` (``content: null`` and the
   first tool call instead when the answer starts with a tool call);
2. content deltas, a word at a time;
3. per tool call: a delta with ``index``, ``id``, ``type``, ``function.name`` and empty
   ``arguments``, then ``arguments`` fragments carrying only the ``index``;
4. ``delta: {}`` with ``finish_reason``;
5. with ``stream_options.include_usage``: ``choices: []`` and ``usage`` (every earlier chunk
   then carries ``"usage": null``);

then ``SSEResponse`` frames them as ``data: <json>\\n\\n`` and ends with ``data: [DONE]``.
Azure OpenAI additionally opens with a chunk with empty ``choices``, ``id``, ``model`` and
``object`` holding ``prompt_filter_results``, and adds ``content_filter_results`` to choices.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from typing import Any

from ._brain import Answer
from ._server import drop_connection

__all__ = ["SSEResponse", "call_id", "chat_chunks"]

_PIECE = re.compile(r"\s*\S+\s*|\s+")
_FRAGMENT = re.compile(r"\w+|\s+|[^\w\s]")
_FILTERS = {
    name: {"filtered": False, "severity": "safe"}
    for name in ("hate", "self_harm", "sexual", "violence")
}


def call_id(seed: int, index: int) -> str:
    return "call_" + hashlib.sha256(f"call{seed}.{index}".encode()).hexdigest()[:24]


def _obfuscation(index: int) -> str:
    digest = hashlib.sha256(f"obf{index}".encode()).digest()
    return base64.b64encode(digest).decode("ascii").rstrip("=")[: 1 + digest[0] % 15]


def chat_chunks(
    base: dict[str, Any],
    answer: Answer,
    usage: dict[str, Any] | None,
    *,
    call_id_seed: int,
    obfuscate: bool = True,
    azure: bool = False,
) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of one streamed answer (see module doc)."""
    deltas: list[dict[str, Any]] = []
    if answer.content is not None or not answer.tool_calls:
        first: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
        if answer.refusal is not None:
            first = {"role": "assistant", "content": None, "refusal": ""}
        deltas.append(first)
        deltas += [{"content": piece} for piece in _PIECE.findall(answer.content or "")]
        deltas += [{"refusal": piece} for piece in _PIECE.findall(answer.refusal or "")]
    for index, call in enumerate(answer.tool_calls):
        head = {
            "index": index,
            "id": call_id(call_id_seed, index),
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        if deltas:
            deltas.append({"tool_calls": [head]})
        else:
            deltas.append(
                {"role": "assistant", "content": None, "tool_calls": [head], "refusal": None}
            )
        deltas += [
            {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}
            for fragment in _FRAGMENT.findall(call.arguments)
        ]
    choices: list[dict[str, Any]] = [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None} for delta in deltas
    ]
    choices.append(
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": answer.finish_reason}
    )
    head = {
        "id": base["id"],
        "object": "chat.completion.chunk",
        "created": base["created"],
        "model": base["model"],
        "service_tier": base["service_tier"],
        "system_fingerprint": base["system_fingerprint"],
    }
    chunks: list[dict[str, Any]] = []
    if azure:
        chunks.append(
            {
                "choices": [],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTERS}],
            }
        )
    for choice in choices:
        if azure:
            choice["content_filter_results"] = _FILTERS if choice["finish_reason"] else {}
        chunk: dict[str, Any] = {**head, "choices": [choice]}
        if usage is not None:
            chunk["usage"] = None
        chunks.append(chunk)
    if usage is not None:
        chunks.append({**head, "choices": [], "usage": usage})
    if obfuscate:
        for index, chunk in enumerate(chunks):
            chunk["obfuscation"] = _obfuscation(index)
    return chunks


class SSEResponse:
    """ASGI response streaming ``data: <json>`` events then ``data: [DONE]``.

    ``drop_after=N`` cuts the connection after N events (no ``[DONE]``, no end of the chunked
    body), like a server dying mid-stream.
    """

    media_type = "text/event-stream; charset=utf-8"

    def __init__(self, events: list[Any], *, drop_after: int | None = None) -> None:
        self.events = events
        self.drop_after = drop_after

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", self.media_type.encode())],
            }
        )
        for index, event in enumerate(self.events):
            if self.drop_after is not None and index >= self.drop_after:
                break
            data = event if isinstance(event, str) else json.dumps(
                event, ensure_ascii=False, separators=(",", ":")
            )  # fmt: skip
            body = f"data: {data}\n\n".encode()
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await asyncio.sleep(0)
        if self.drop_after is not None:
            await drop_connection(scope)
            return
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
