"""Wire-level pieces of the fake Cohere service: the ``Reply`` action, the model catalogue, answer
bodies, the v2 chat event stream, and the bridge to the shared deterministic brain.

Shapes follow Cohere's API reference (``cohere-openapi.yaml``) and the ``cohere`` SDK: errors are
``{"id", "message"}``; non-streamed chat answers are ``{"id", "finish_reason", "message":
{"role", "content": [{"type": "text", "text"}], "tool_plan", "tool_calls"}, "usage": {
"billed_units", "tokens"}}``; streams are SSE frames ``event: <type>`` + ``data: <json with the
same type>`` ending with ``data: [DONE]`` (the spec's ``x-fern-streaming`` terminator).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from . import _brain
from ._service import FrameStream

__all__ = [
    "CATALOGUE",
    "PREAMBLE_TOKENS",
    "Reply",
    "answer_for",
    "chat_body",
    "chat_events",
    "cohere_sse",
    "error_body",
    "tool_call_id",
    "usage_body",
]

PREAMBLE_TOKENS = 64
"""Tokens Cohere's own system preamble adds to the model's input (``usage.tokens`` counts
them, ``usage.billed_units`` does not)."""

# name -> catalogue record (the fields of GetModelResponse), plus fake-only "_dims"/"_vision".
CATALOGUE: dict[str, dict[str, Any]] = {
    "command-a-03-2025": {
        "endpoints": ["chat"],
        "context_length": 256000,
        "features": ["json_mode", "json_schema", "safety_modes", "strict_tools", "tools"],
    },
    "command-r-plus-08-2024": {
        "endpoints": ["chat", "generate"],
        "context_length": 128000,
        "features": ["json_mode", "json_schema", "tools"],
    },
    "command-r7b-12-2024": {
        "endpoints": ["chat"],
        "context_length": 128000,
        "features": ["json_mode", "json_schema", "strict_tools", "tools"],
    },
    "command-a-vision-07-2025": {
        "endpoints": ["chat"],
        "context_length": 128000,
        "features": ["json_mode", "vision"],
        "_vision": True,
    },
    "c4ai-aya-vision-32b": {
        "endpoints": ["chat"],
        "context_length": 16384,
        "features": ["vision"],
        "_vision": True,
    },
    "embed-v4.0": {
        "endpoints": ["embed"],
        "context_length": 128000,
        "features": ["multimodal"],
        "_dims": (1536, (256, 512, 1024, 1536)),
    },
    "embed-english-v3.0": {
        "endpoints": ["embed", "classify"],
        "context_length": 512,
        "_dims": (1024, ()),
    },
    "embed-multilingual-v3.0": {
        "endpoints": ["embed", "classify"],
        "context_length": 512,
        "_dims": (1024, ()),
    },
    "rerank-v3.5": {"endpoints": ["rerank"], "context_length": 4096},
}


# --------------------------------------------------------------------------- script actions
@dataclass
class Reply:
    """Answer the next chat request with this message (streamed if the request streams)."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # [{"name": ..., "arguments": dict | str}]
    tool_plan: str | None = None
    finish_reason: str | None = None  # default: TOOL_CALL with tool calls, else COMPLETE
    cached_tokens: int = 0
    usage: dict[str, Any] | None = None  # replaces the computed usage
    thinking: str | None = None


STATUS_MESSAGES = {
    400: "invalid request",
    401: "invalid api token",
    403: "forbidden",
    404: "not found",
    422: "unprocessable entity",
    429: "You are using a Trial key, which is limited to 10 API calls / minute. You can "
    "continue to use the Trial key for free or upgrade to a Production key with higher rate "
    "limits at 'https://dashboard.cohere.com/api-keys'. Contact us on "
    "'https://discord.gg/XW44jPfYJu' or email us at support@cohere.com with any questions",
    498: "blocked output: please adjust your prompt and try again",
    499: "request cancelled",
    500: "internal server error, this has been reported to our developers",
    503: "service unavailable",
}


def error_body(status: int, message: str | None, request_id: str) -> dict[str, Any]:
    return {"id": request_id, "message": message or STATUS_MESSAGES.get(status, "error")}


def tool_call_id(name: str, seed: int, index: int) -> str:
    digest = hashlib.sha256(f"{name}.{seed}.{index}".encode()).hexdigest()
    letters = "".join("abcdefghijklmnopqrstuvwxyz0123456789"[int(c, 16) * 2] for c in digest[:12])
    return f"{name}_{letters}"


# --------------------------------------------------------------------------- the brain bridge
def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            parts.append(str(part.get("text", "")))
        elif part.get("type") == "document":
            parts.append(json.dumps((part.get("document") or {}).get("data"), sort_keys=True))
    return " ".join(parts)


def openai_view(body: dict[str, Any]) -> dict[str, Any]:
    """The request as a chat-completions body, for ``_brain`` (stop and length applied here)."""
    messages = []
    for message in body["messages"]:
        role, content = message["role"], message.get("content")
        if role == "user" and isinstance(content, list):
            view: dict[str, Any] = {"role": role, "content": content}
        elif role == "assistant":
            view = {"role": role, "content": _text(content) or None}
            if message.get("tool_calls"):
                view["tool_calls"] = message["tool_calls"]
        else:
            view = {"role": role, "content": _text(content)}
        messages.append(view)
    out: dict[str, Any] = {"messages": messages, "tools": body.get("tools") or []}
    choice = body.get("tool_choice")
    if choice:
        out["tool_choice"] = {"REQUIRED": "required", "NONE": "none"}[choice]
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_object" and fmt.get("json_schema"):
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"schema": fmt["json_schema"]},
        }
    elif fmt.get("type") == "json_object":
        out["response_format"] = {"type": "json_object"}
    return out


def answer_for(body: dict[str, Any], reply: Reply | None) -> _brain.Answer:
    """The answer (finish reasons in Cohere's words): scripted, else the brain's, then cut at
    the first stop sequence (``STOP_SEQUENCE``) or at ``max_tokens`` words (``MAX_TOKENS``)."""
    if reply is not None:
        calls = [
            _brain.ToolCall(
                c["name"],
                c["arguments"] if isinstance(c["arguments"], str) else json.dumps(c["arguments"]),
            )
            for c in reply.tool_calls or []
        ]
        finish = reply.finish_reason or ("TOOL_CALL" if calls else "COMPLETE")
        return _brain.Answer(reply.content, calls, finish)
    answer = _brain.respond(openai_view(body))
    if answer.tool_calls:
        answer.finish_reason = "TOOL_CALL"
        return answer
    answer.finish_reason = "COMPLETE"
    text = answer.content or ""
    stops = [s for s in body.get("stop_sequences") or [] if s and s in text]
    if stops:
        text = text[: min(text.find(s) for s in stops)]
        answer.finish_reason = "STOP_SEQUENCE"
    limit = body.get("max_tokens")
    if isinstance(limit, int) and limit > 0 and len(text.split()) > limit:
        text, answer.finish_reason = " ".join(text.split()[:limit]), "MAX_TOKENS"
    answer.content = text
    return answer


def prompt_tokens(body: dict[str, Any]) -> int:
    """Billed input tokens: the words of every message and tool schema."""
    total = 0
    for message in body["messages"]:
        total += _brain.count_tokens(_text(message.get("content")))
        total += _brain.count_tokens(message.get("tool_plan") or "")
        for call in message.get("tool_calls") or []:
            total += _brain.count_tokens(json.dumps(call.get("function") or {}))
    return total + sum(_brain.count_tokens(json.dumps(t)) for t in body.get("tools") or [])


def usage_body(
    body: dict[str, Any], answer: _brain.Answer, plan: str, reply: Reply | None
) -> dict[str, Any]:
    if reply is not None and reply.usage is not None:
        return reply.usage
    billed_in = prompt_tokens(body)
    cached = reply.cached_tokens if reply is not None else 0
    out = _brain.count_tokens(answer.content or "") + _brain.count_tokens(plan)
    out += sum(_brain.count_tokens(f"{c.name} {c.arguments}") for c in answer.tool_calls)
    usage: dict[str, Any] = {
        "billed_units": {"input_tokens": billed_in, "output_tokens": out},
        "tokens": {"input_tokens": max(billed_in + PREAMBLE_TOKENS, cached), "output_tokens": out},
    }
    if cached:
        usage["cached_tokens"] = cached
    return usage


def tool_plan_for(answer: _brain.Answer, reply: Reply | None) -> str:
    if reply is not None and reply.tool_plan is not None:
        return reply.tool_plan
    if not answer.tool_calls:
        return ""
    names = ", ".join(call.name for call in answer.tool_calls)
    return f"I will use the {names} tool to answer this."


def chat_body(
    chat_id: str, answer: _brain.Answer, plan: str, usage: dict[str, Any], seed: int,
    thinking: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A non-streamed ``ChatResponseV2``."""
    message: dict[str, Any] = {"role": "assistant"}
    if answer.tool_calls:
        message["tool_plan"] = plan
        message["tool_calls"] = [
            {
                "id": tool_call_id(c.name, seed, i),
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for i, c in enumerate(answer.tool_calls)
        ]
    content = []
    if thinking:
        content.append({"type": "thinking", "thinking": thinking})
    if answer.content:
        content.append({"type": "text", "text": answer.content})
    if content or not answer.tool_calls:
        message["content"] = content
    return {
        "id": chat_id,
        "message": message,
        "finish_reason": answer.finish_reason,
        "usage": usage,
    }


_PIECE = re.compile(r"\s*\S+\s*|\s+")
_FRAGMENT = re.compile(r"\w+|\s+|[^\w\s]")


def chat_events(
    chat_id: str, answer: _brain.Answer, plan: str, usage: dict[str, Any], seed: int,
    thinking: str | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """The ``StreamedChatResponseV2`` events of one streamed answer, in order."""
    start_message = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [],
                     "citations": []}  # fmt: skip
    events: list[dict[str, Any]] = [
        {"id": chat_id, "type": "message-start", "delta": {"message": start_message}}
    ]
    index = 0
    if thinking:
        events.append({"type": "content-start", "index": index, "delta": {"message": {
            "content": {"type": "thinking", "thinking": ""}}}})  # fmt: skip
        events += [
            {"type": "content-delta", "index": index,
             "delta": {"message": {"content": {"thinking": piece}}}}
            for piece in _PIECE.findall(thinking)
        ]  # fmt: skip
        events.append({"type": "content-end", "index": index})
        index += 1
    if answer.content:
        events.append({"type": "content-start", "index": index, "delta": {"message": {
            "content": {"type": "text", "text": ""}}}})  # fmt: skip
        events += [
            {"type": "content-delta", "index": index,
             "delta": {"message": {"content": {"text": piece}}}}
            for piece in _PIECE.findall(answer.content)
        ]  # fmt: skip
        events.append({"type": "content-end", "index": index})
    if answer.tool_calls:
        events += [
            {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": piece}}}
            for piece in _PIECE.findall(plan)
        ]
        for i, call in enumerate(answer.tool_calls):
            head = {"id": tool_call_id(call.name, seed, i), "type": "function",
                    "function": {"name": call.name, "arguments": ""}}  # fmt: skip
            events.append({"type": "tool-call-start", "index": i,
                           "delta": {"message": {"tool_calls": head}}})  # fmt: skip
            events += [
                {"type": "tool-call-delta", "index": i,
                 "delta": {"message": {"tool_calls": {"function": {"arguments": fragment}}}}}
                for fragment in _FRAGMENT.findall(call.arguments)
            ]  # fmt: skip
            events.append({"type": "tool-call-end", "index": i})
    events.append(
        {"type": "message-end", "delta": {"finish_reason": answer.finish_reason, "usage": usage}}
    )
    return events


def cohere_sse(
    events: list[Any], *, drop_after: int | None = None, headers: dict[str, str] | None = None
) -> FrameStream:
    """``event: <type>`` / ``data: <json>`` frames (a str event goes as is), then
    ``data: [DONE]``; ``drop_after``: see ``FrameStream``."""
    compact = {"ensure_ascii": False, "separators": (",", ":")}
    frames = [
        e if isinstance(e, str) else f"event: {e['type']}\ndata: {json.dumps(e, **compact)}\n\n"
        for e in events
    ]
    return FrameStream(
        frames,
        headers={"cache-control": "no-cache", **(headers or {})},
        terminator="data: [DONE]\n\n",
        drop_after=drop_after,
    )
