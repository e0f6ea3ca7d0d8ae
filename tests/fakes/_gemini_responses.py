"""``GenerateContentResponse`` bodies of the fake Gemini API, whole or as stream chunks.

A whole answer: ``candidates[0].content`` (``role: "model"``, parts: thought summaries when
``thinkingConfig.includeThoughts``, text, ``functionCall``s with a ``thoughtSignature`` on the
first), ``finishReason`` and ``index``; ``usageMetadata``; ``modelVersion``; ``responseId``.
Function calls end with ``finishReason: "STOP"``, as live (there is no tool-call reason).

A stream: thought chunk(s), then text a few words per chunk, then the function calls (whole,
together in one chunk), the last chunk carrying ``finishReason``. Every chunk repeats
``modelVersion``/``responseId`` and ``usageMetadata`` so far (prompt counts from the first,
candidate counts on the last), as the live stream does.
"""

from __future__ import annotations

import json
from typing import Any

from . import _brain
from ._gemini_wire import response_id, signature, text_pieces

__all__ = ["answer_of", "generate_chunks", "generate_response"]

_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}
_SAFETY = [
    {"category": c, "probability": "NEGLIGIBLE"}
    for c in (
        "HARM_CATEGORY_SEXUALLY_EXPLICIT",
        "HARM_CATEGORY_HATE_SPEECH",
        "HARM_CATEGORY_HARASSMENT",
        "HARM_CATEGORY_DANGEROUS_CONTENT",
    )
]


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = (
            _merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def answer_of(body: dict[str, Any], chat: dict[str, Any], reply: Any) -> tuple[list[Any], str, str]:
    """``(parts, finishReason, thought text)``: scripted ``reply`` or the brain's answer."""
    if reply is not None:
        parts: list[Any] = [{"text": reply.content}] if reply.content else []
        for call in reply.tool_calls or []:
            fc = {"name": call["name"], "args": call.get("args") or {}}
            if call.get("id"):
                fc["id"] = call["id"]
            parts.append({"functionCall": fc})
        finish = reply.finish_reason or "STOP"
        thought = reply.thought or ""
    else:
        answer = _brain.respond(chat)
        parts = [{"text": answer.content}] if answer.content else []
        parts += [
            {"functionCall": {"name": c.name, "args": json.loads(c.arguments)}}
            for c in answer.tool_calls
        ]
        finish = _FINISH.get(answer.finish_reason, "STOP")
        thought = f"**Answering**\n\nThe user wrote: {_brain.last_user_text(chat['messages'])[:80]}"
    include = ((body.get("generationConfig") or {}).get("thinkingConfig") or {}).get(
        "includeThoughts"
    )
    return parts, finish, thought if include else ""


def _usage(
    body: dict[str, Any], reply: Any, prompt: int, parts: list[Any], thought: str, final: bool
) -> dict[str, Any]:
    cached = reply.cached_tokens if reply else 0
    prompt = max(prompt, cached)
    candidates = sum(
        _brain.count_tokens(p.get("text") or json.dumps(p.get("functionCall"))) for p in parts
    )
    thoughts = (reply.thoughts_tokens if reply else 0) or _brain.count_tokens(thought)
    usage: dict[str, Any] = {"promptTokenCount": prompt}
    if final and candidates:
        usage["candidatesTokenCount"] = candidates
    usage["totalTokenCount"] = prompt + thoughts + (candidates if final else 0)
    if cached:
        usage["cachedContentTokenCount"] = cached
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if cached:
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    if reply is not None and reply.usage:
        usage = _merge(usage, reply.usage)
        if "totalTokenCount" not in reply.usage:  # keep the sum consistent with the override
            usage["totalTokenCount"] = (
                usage["promptTokenCount"] + thoughts + usage.get("candidatesTokenCount", 0)
            )
            usage["promptTokensDetails"] = [
                {"modality": "TEXT", "tokenCount": usage["promptTokenCount"]}
            ]
    return usage


def _blocked(reply: Any, model: str, n: int, prompt: int) -> dict[str, Any]:
    return {
        "promptFeedback": {
            "blockReason": reply.block_reason,
            "safetyRatings": [
                {**r, "probability": "HIGH", "blocked": True} if i == 0 else r
                for i, r in enumerate(_SAFETY)
            ],
        },
        "usageMetadata": {
            "promptTokenCount": prompt,
            "totalTokenCount": prompt,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        },
        "modelVersion": model,
        "responseId": response_id(n),
    }


def _candidate(parts: list[Any], finish: str | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {}
    if parts:
        candidate["content"] = {"parts": parts, "role": "model"}
    if finish is not None:
        candidate["finishReason"] = finish
        if finish == "SAFETY":
            candidate["safetyRatings"] = [
                {**r, "probability": "HIGH", "blocked": True} if i == 0 else r
                for i, r in enumerate(_SAFETY)
            ]
    candidate["index"] = 0
    return candidate


def _sign(parts: list[Any], n: int) -> list[Any]:
    # Thinking models sign the first function call of a step (Gemini 3 checks it comes back).
    for index, part in enumerate(parts):
        if "functionCall" in part:
            part["thoughtSignature"] = signature(n, index)
            break
    return parts


def generate_response(
    body: dict[str, Any], chat: dict[str, Any], reply: Any, model: str, prompt: int, n: int
) -> dict[str, Any]:
    """The body of a ``:generateContent`` answer."""
    if reply is not None and reply.block_reason:
        return _blocked(reply, model, n, prompt)
    parts, finish, thought = answer_of(body, chat, reply)
    everything = ([{"text": thought, "thought": True}] if thought else []) + _sign(parts, n)
    return {
        "candidates": [_candidate(everything, finish)],
        "usageMetadata": _usage(body, reply, prompt, parts, thought, final=True),
        "modelVersion": model,
        "responseId": response_id(n),
    }


def generate_chunks(
    body: dict[str, Any], chat: dict[str, Any], reply: Any, model: str, prompt: int, n: int
) -> list[dict[str, Any]]:
    """The ``GenerateContentResponse`` chunks of a ``:streamGenerateContent`` answer."""
    if reply is not None and reply.block_reason:
        return [_blocked(reply, model, n, prompt)]
    parts, finish, thought = answer_of(body, chat, reply)
    texts = [p["text"] for p in parts if "text" in p]
    calls = _sign([p for p in parts if "functionCall" in p], n)
    steps: list[list[Any]] = [[{"text": thought, "thought": True}]] if thought else []
    steps += [[{"text": piece}] for text in texts for piece in text_pieces(text)]
    if calls:
        steps.append(calls)
    steps = steps or [[]]
    chunks = []
    for index, step in enumerate(steps):
        final = index == len(steps) - 1
        chunks.append(
            {
                "candidates": [_candidate(step, finish if final else None)],
                "usageMetadata": _usage(body, reply, prompt, parts, thought, final),
                "modelVersion": model,
                "responseId": response_id(n),
            }
        )
    return chunks
