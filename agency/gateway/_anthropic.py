"""Anthropic's Messages API at the gateway (``POST /v1/messages``), so Anthropic-SDK programs
use it too.

`parse_messages` turns a Messages request into the gateway's `ChatCall`: ``system`` becomes a
system message, ``tool_result`` blocks become tool messages (ahead of any text of the same
turn), ``tool_use`` blocks the assistant's tool calls, base64 and URL images image blocks;
``tools`` / ``tool_choice`` become OpenAI's function format that `ChatRequest` speaks.
`message` builds the ``message`` object of an answer; `EventWriter` streams it in Anthropic's
event framing: ``message_start``, ``content_block_start`` / ``_delta`` / ``_stop`` per text or
tool_use block, ``message_delta`` (stop reason, usage), ``message_stop``.
"""

from __future__ import annotations

from typing import Any

import orjson
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from agency.gateway._errors import GatewayError
from agency.gateway._openai import ChatCall, finish_reason

__all__ = ["EventWriter", "error_body", "message", "parse_messages"]

_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def _bad(text: str) -> GatewayError:
    return GatewayError(400, text, "invalid_request_error")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


def _image(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = str(source.get("url", ""))
    else:
        raise _bad("image blocks need a source of type base64 or url")
    return {"type": "image_url", "image_url": {"url": url}}


def _turn(role: str, content: Any) -> list[BaseMessage]:
    if isinstance(content, str):
        return [HumanMessage(content) if role == "user" else AIMessage(content)]
    if not isinstance(content, list):
        raise _bad("a message's content must be a string or an array of content blocks")
    out: list[BaseMessage] = []
    parts: list[Any] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image" and role == "user":
            parts.append(_image(block))
        elif kind == "tool_result" and role == "user":
            text = _text_of(block.get("content"))
            out.append(
                ToolMessage(
                    text,
                    tool_call_id=str(block.get("tool_use_id", "")),
                    status="error" if block.get("is_error") else "success",
                )
            )
        elif kind == "tool_use" and role == "assistant":
            calls.append(
                {
                    "id": block.get("id"),
                    "name": block.get("name"),
                    "args": block.get("input") or {},
                    "type": "tool_call",
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # earlier reasoning: not sent on to other providers
        else:
            raise _bad(f"unsupported content block {kind!r} in a {role} message")
    if role == "user":
        if parts:
            simple = all(p["type"] == "text" for p in parts)
            out.append(HumanMessage("".join(p["text"] for p in parts) if simple else parts))
    else:
        text = "".join(p["text"] for p in parts)
        out.append(AIMessage(content=text, tool_calls=calls))
    return out


def parse_messages(body: Any) -> ChatCall:
    """A `ChatCall` from a Messages request body; `GatewayError` (400) names the problem."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    model, raw = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        raise _bad("model: Field required")
    limit = body.get("max_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise _bad("max_tokens: Field required (a positive integer)")
    if not isinstance(raw, list) or not raw:
        raise _bad("messages: at least one message is required")
    messages: list[BaseMessage] = []
    system = body.get("system")
    if system:
        messages.append(SystemMessage(_text_of(system)))
    for turn in raw:
        role = turn.get("role") if isinstance(turn, dict) else None
        if role not in ("user", "assistant"):
            raise _bad("messages: each message's role must be 'user' or 'assistant'")
        messages += _turn(role, turn.get("content"))
    params: dict[str, Any] = {"max_tokens": limit}
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            params[name] = body[name]
    if body.get("stop_sequences"):
        params["stop"] = list(body["stop_sequences"])
    if body.get("tools"):
        params["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t["name"],
                    "description": t.get("description", ""),
                    "parameters": t.get("input_schema") or {"type": "object", "properties": {}},
                },
            }
            for t in body["tools"]
        ]
    choice = body.get("tool_choice") or {}
    kind = choice.get("type")
    if kind in ("auto", "any", "none"):
        params["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    elif kind == "tool":
        params["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    if choice.get("disable_parallel_tool_use"):
        params["parallel_tool_calls"] = False
    user = (body.get("metadata") or {}).get("user_id")
    return ChatCall(
        model=model,
        messages=messages,
        params=params,
        stream=bool(body.get("stream")),
        user=user if isinstance(user, str) else None,
    )


def _usage(usage: Any, *, delta: bool = False) -> dict[str, Any]:
    """Anthropic's ``usage`` (``delta``: a ``message_delta``'s, which has no cache breakdown
    or service tier)."""
    usage = usage or {}
    cached = (usage.get("input_token_details") or {}).get("cache_read") or 0
    created = (usage.get("input_token_details") or {}).get("cache_creation") or 0
    total_in = int(usage.get("input_tokens") or 0)
    return {
        # Anthropic counts cache reads and writes apart from input_tokens.
        "input_tokens": max(0, total_in - int(cached) - int(created)),
        "output_tokens": int(usage.get("output_tokens") or 0),
        "cache_read_input_tokens": int(cached),
        "cache_creation_input_tokens": int(created),
        "server_tool_use": None,
        **({} if delta else {"cache_creation": None, "service_tier": None}),
    }


def _stop_reason(meta: dict[str, Any], has_tools: bool) -> str:
    return _STOP.get(finish_reason(meta, has_tools), "end_turn")


def message(answer: AIMessage, *, message_id: str, model: str) -> dict[str, Any]:
    """The ``message`` object of an answer."""
    content: list[dict[str, Any]] = []
    text = answer.text
    if text:
        content.append({"type": "text", "text": text, "citations": None})
    for i, call in enumerate(answer.tool_calls):
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{i}",
                "name": call["name"],
                "input": call.get("args") or {},
            }
        )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(answer.response_metadata, bool(answer.tool_calls)),
        "stop_sequence": None,
        "usage": _usage(answer.usage_metadata),
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class EventWriter:
    """Anthropic's stream events for one answer: `start`, `feed` per chunk, `close`."""

    def __init__(self, *, message_id: str, model: str) -> None:
        self._id, self._model = message_id, model
        self._block: tuple[str, int] | None = None  # ("text", -1) or ("tool", openai index)
        self._index = -1
        self._tools = False
        self._started = False
        self.meta: dict[str, Any] = {}
        self.usage: Any = None

    def start(self) -> bytes:
        """``message_start`` (usage arrives in ``message_delta``) and a ``ping``."""
        self._started = True
        head: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(None),
        }
        return _event("message_start", {"type": "message_start", "message": head}) + _event(
            "ping", {"type": "ping"}
        )

    def _open(self, block: tuple[str, int], content_block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._index += 1
        self._block = block
        start = {
            "type": "content_block_start",
            "index": self._index,
            "content_block": content_block,
        }
        return out + _event("content_block_start", start)

    def _close_block(self) -> bytes:
        if self._block is None:
            return b""
        self._block = None
        return _event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def feed(self, chunk: Any) -> bytes:
        """Events for one `AIMessageChunk`."""
        out = b"" if self._started else self.start()
        if chunk.response_metadata:
            self.meta.update(chunk.response_metadata)
        if chunk.usage_metadata is not None:
            self.usage = chunk.usage_metadata
        text = chunk.content if isinstance(chunk.content, str) else chunk.text
        if text:
            if self._block != ("text", -1):
                out += self._open(("text", -1), {"type": "text", "text": "", "citations": None})
            delta = {"type": "text_delta", "text": text}
            out += _event(
                "content_block_delta",
                {"type": "content_block_delta", "index": self._index, "delta": delta},
            )
        for call in chunk.tool_call_chunks:
            index = call.get("index") or 0
            if self._block != ("tool", index):
                self._tools = True
                block: dict[str, Any] = {
                    "type": "tool_use",
                    "id": call.get("id") or f"toolu_{index}",
                    "name": call.get("name") or "",
                    "input": {},
                }
                out += self._open(("tool", index), block)
            if call.get("args"):
                delta = {"type": "input_json_delta", "partial_json": call["args"]}
                out += _event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": self._index, "delta": delta},
                )
        return out

    def close(self) -> bytes:
        """The last block's stop, ``message_delta`` and ``message_stop``."""
        out = b"" if self._started else self.start()
        out += self._close_block()
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(self.meta, self._tools), "stop_sequence": None},
            "usage": _usage(self.usage, delta=True),
        }
        return (
            out + _event("message_delta", delta) + _event("message_stop", {"type": "message_stop"})
        )

    @staticmethod
    def error(err: GatewayError) -> bytes:
        """An ``error`` event, for a failure after the stream began."""
        return _event("error", error_body(err))


def error_body(err: GatewayError, request_id: str | None = None) -> dict[str, Any]:
    """Anthropic's error shape: ``{"type": "error", "error": {"type", "message"},
    "request_id"}``."""
    kind = _ERROR_TYPES.get(err.status, "api_error")
    return {
        "type": "error",
        "error": {"type": kind, "message": err.message},
        "request_id": request_id,
    }
