"""OpenAI's wire format at the gateway: Chat Completions and Embeddings requests in, answers out.

`parse_chat` turns a ``POST /v1/chat/completions`` body into a `ChatCall` (LangChain messages
and the `agency.providers.ChatRequest` fields, which are OpenAI's own: tools, tool_choice,
response_format travel as given); `completion` builds the ``chat.completion`` object of an
answer; `ChunkWriter` turns the answer's LangChain chunks into ``chat.completion.chunk`` SSE
events, ending with the usage chunk (``stream_options.include_usage``) and ``data: [DONE]``.
`error_body` is OpenAI's error shape. Every object follows the schemas of OpenAI's OpenAPI spec
(tests validate them against ``shared/specs/openai-openapi.yaml``).
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from langchain_core.messages import AIMessage, BaseMessage, convert_to_messages

from agency.gateway._errors import GatewayError

__all__ = [
    "ChatCall",
    "ChunkWriter",
    "completion",
    "embeddings_response",
    "error_body",
    "finish_reason",
    "parse_chat",
    "parse_embeddings",
    "usage_of",
]

# Forwarded to the provider (agency.providers.ChatRequest fields, OpenAI's meaning).
_FORWARDED = ("temperature", "top_p", "seed", "tools", "tool_choice", "parallel_tool_calls")
# Read by the gateway itself.
_OWN = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "user",
        "n",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "response_format",
        *_FORWARDED,
    }
)
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "COMPLETE": "stop",
    "ERROR_LIMIT": "length",
}
_OPENAI_FINISH = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})


@dataclass(slots=True)
class ChatCall:
    """One chat request, whatever wire format it came in."""

    model: str
    """The model name asked for (an entry, a spec, ``role:<name>`` or ``auto``)."""
    messages: list[BaseMessage]
    """The conversation, as LangChain messages."""
    params: dict[str, Any] = field(default_factory=dict)
    """`ChatRequest` fields for the call: max_tokens, temperature, tools, ..."""
    stream: bool = False
    """Whether the answer streams."""
    include_usage: bool = False
    """OpenAI streams: send the usage chunk (``stream_options.include_usage``)."""
    user: str | None = None
    """The end user's id, for sticky experiments and the audit."""
    ignored: tuple[str, ...] = ()
    """Request fields the gateway accepted but does not use (told in a header)."""


def _bad(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, kind="invalid_request_error", param=param)


def parse_chat(body: Any) -> ChatCall:
    """A `ChatCall` from a Chat Completions request body; `GatewayError` (400) names the field."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required: a model name from GET /v1/models", "model")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _bad("'messages' must be a non-empty array of messages", "messages")
    try:
        messages = convert_to_messages(raw)
    except (ValueError, TypeError, KeyError) as exc:
        raise _bad(f"invalid 'messages': {exc}", "messages") from exc
    n = body.get("n")
    if n not in (None, 1):
        raise _bad("only n=1 is supported: ask several times for several answers", "n")
    params: dict[str, Any] = {k: body[k] for k in _FORWARDED if body.get(k) is not None}
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise _bad("'max_tokens' must be a positive integer", "max_tokens")
        params["max_tokens"] = limit
    stop = body.get("stop")
    if stop is not None:
        params["stop"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = body.get("response_format")
    if fmt is not None and fmt.get("type") != "text":
        if fmt.get("type") not in ("json_object", "json_schema"):
            raise _bad("'response_format.type' must be text, json_object or json_schema")
        params["response_format"] = fmt
    options = body.get("stream_options") or {}
    user = body.get("user")
    return ChatCall(
        model=model,
        messages=messages,
        params=params,
        stream=bool(body.get("stream")),
        include_usage=bool(options.get("include_usage")),
        user=user if isinstance(user, str) else None,
        ignored=tuple(sorted(k for k in body if k not in _OWN and k != "metadata")),
    )


def finish_reason(meta: Mapping[str, Any], has_tools: bool) -> str:
    """OpenAI's finish_reason for a provider's (Anthropic's ``end_turn``, Gemini's ``STOP``)."""
    if has_tools:
        return "tool_calls"
    reason = meta.get("finish_reason") or meta.get("stop_reason")
    if reason in _OPENAI_FINISH:
        return str(reason)
    return _FINISH.get(str(reason), "stop")


def usage_of(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """OpenAI's ``usage`` object from LangChain's ``usage_metadata``."""
    usage = usage or {}
    prompt, out = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    cached = (usage.get("input_token_details") or {}).get("cache_read") or 0
    reasoning = (usage.get("output_token_details") or {}).get("reasoning") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": out,
        "total_tokens": prompt + out,
        "prompt_tokens_details": {"cached_tokens": int(cached)},
        "completion_tokens_details": {"reasoning_tokens": int(reasoning)},
    }


def _tool_calls(message: AIMessage) -> list[dict[str, Any]]:
    return [
        {
            "id": call.get("id") or f"call_{i}",
            "type": "function",
            "function": {
                "name": call["name"],
                "arguments": orjson.dumps(call.get("args") or {}).decode(),
            },
        }
        for i, call in enumerate(message.tool_calls)
    ]


def completion(message: AIMessage, *, completion_id: str, model: str) -> dict[str, Any]:
    """The ``chat.completion`` object of an answer."""
    calls = _tool_calls(message)
    text = message.text if isinstance(message.content, list) else message.content
    body: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if calls:
        body["tool_calls"] = calls
    out: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": body,
                "finish_reason": finish_reason(message.response_metadata, bool(calls)),
                "logprobs": None,
            }
        ],
        "usage": usage_of(message.usage_metadata),
    }
    fingerprint = message.response_metadata.get("system_fingerprint")
    if isinstance(fingerprint, str):
        out["system_fingerprint"] = fingerprint
    return out


class ChunkWriter:
    """``chat.completion.chunk`` SSE events for one streamed answer.

    Feed it every LangChain chunk (`feed`), then `close` once the stream ended; each returns
    the bytes to send. Tool-call chunks keep their index; the first delta carries the role.
    """

    def __init__(self, *, completion_id: str, model: str, include_usage: bool) -> None:
        self._head = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self._include_usage = include_usage
        self._started = False
        self._tools: set[int] = set()
        self.meta: dict[str, Any] = {}
        self.usage: dict[str, Any] | None = None

    def _event(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return b"data: " + orjson.dumps({**self._head, "choices": [choice]}) + b"\n\n"

    def start(self) -> bytes:
        """The opening event (the assistant role, empty content)."""
        self._started = True
        return self._event({"role": "assistant", "content": "", "refusal": None})

    def feed(self, message: Any) -> bytes:
        """Events for one `AIMessageChunk` (text and tool-call deltas); b"" for metadata only."""
        out = b"" if self._started else self.start()
        if message.response_metadata:
            self.meta.update(message.response_metadata)
        if message.usage_metadata is not None:
            self.usage = message.usage_metadata
        text = message.content if isinstance(message.content, str) else message.text
        if text:
            out += self._event({"content": text})
        for call in message.tool_call_chunks:
            index = call.get("index") or 0
            delta: dict[str, Any] = {"index": index}
            if index not in self._tools:
                self._tools.add(index)
                delta["id"] = call.get("id") or f"call_{index}"
                delta["type"] = "function"
                delta["function"] = {
                    "name": call.get("name") or "",
                    "arguments": call.get("args") or "",
                }
            else:
                delta["function"] = {"arguments": call.get("args") or ""}
            out += self._event({"tool_calls": [delta]})
        return out

    def close(self) -> bytes:
        """The finish event, the usage chunk when asked for, and ``[DONE]``."""
        out = b"" if self._started else self.start()
        out += self._event({}, finish_reason(self.meta, bool(self._tools)))
        if self._include_usage:
            tail = {**self._head, "choices": [], "usage": usage_of(self.usage)}
            out += b"data: " + orjson.dumps(tail) + b"\n\n"
        return out + b"data: [DONE]\n\n"

    @staticmethod
    def error(err: GatewayError) -> bytes:
        """An error after the stream began: one ``data: {"error": ...}`` event and ``[DONE]``."""
        return b"data: " + orjson.dumps(error_body(err)) + b"\n\ndata: [DONE]\n\n"


def error_body(err: GatewayError, request_id: str | None = None) -> dict[str, Any]:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}`` (its
    ``request_id`` travels in the ``x-request-id`` header; OpenAI's body has none)."""
    return {
        "error": {"message": err.message, "type": err.kind, "param": err.param, "code": err.code}
    }


# -- embeddings ---------------------------------------------------------------------------------


def parse_embeddings(body: Any) -> tuple[str, list[str], str, int | None]:
    """``(model, texts, encoding_format, dimensions)`` of an Embeddings request."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required", "model")
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise _bad(
            "'input' must be a string or a non-empty array of strings (token arrays "
            "are not supported: send text)",
            "input",
        )
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise _bad("'encoding_format' must be float or base64", "encoding_format")
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        raise _bad("'dimensions' must be a positive integer", "dimensions")
    return model, texts, encoding, dims


def embeddings_response(
    vectors: list[list[float]], *, model: str, encoding: str, prompt_tokens: int
) -> dict[str, Any]:
    """The ``list`` of ``embedding`` objects; base64 is little-endian float32, as OpenAI's."""
    data = []
    for i, vector in enumerate(vectors):
        value: Any = vector
        if encoding == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
