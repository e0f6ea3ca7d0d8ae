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

then ``sse_response`` frames them as ``data: <json>\\n\\n`` and ends with ``data: [DONE]``.
Azure OpenAI additionally opens with a chunk with empty ``choices``, ``id``, ``model`` and
``object`` holding ``prompt_filter_results``, and adds ``content_filter_results`` to choices.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

from ._brain import Answer
from ._service import FrameStream

__all__ = ["call_id", "chat_chunks", "sse_response"]

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


def sse_response(events: list[Any], *, drop_after: int | None = None) -> FrameStream:
    """``data: <json>`` events then ``data: [DONE]``; ``drop_after``: see ``FrameStream``."""
    compact = {"ensure_ascii": False, "separators": (",", ":")}
    frames = [f"data: {e if isinstance(e, str) else json.dumps(e, **compact)}\n\n" for e in events]
    return FrameStream(
        frames,
        media_type="text/event-stream; charset=utf-8",
        terminator="data: [DONE]\n\n",
        drop_after=drop_after,
    )
