"""Wire-level pieces of the fake Anthropic service: models, errors, headers, the "brain"
bridge, prompt caching, and the bodies of messages and their SSE streams.

Shapes follow the live API (and ``anthropic-openapi.yaml``): compact JSON, errors as
``{"type": "error", "error": {"type", "message"}, "request_id"}``, a ``request-id`` header and
``anthropic-ratelimit-*`` headers, named SSE events (``event: message_start`` ...).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.responses import Response

from . import _brain
from ._service import FrameStream

__all__ = [
    "CONTEXT_WINDOW",
    "MODELS",
    "STATUS_DEFAULTS",
    "AnswerBlocks",
    "ModelCard",
    "PromptCache",
    "answer_blocks",
    "brain_body",
    "decode_base64",
    "default_headers",
    "error_body",
    "event_stream",
    "json_response",
    "message_body",
    "model_card",
    "new_request_id",
    "request_segments",
    "stream_events",
    "thinking_signature",
    "usage_body",
]


@dataclass(frozen=True)
class ModelCard:
    id: str
    display_name: str
    created_at: str
    max_output: int
    alias: str | None
    exclusive_sampling: bool = False  # temperature and top_p may not both be set
    min_cacheable: int = 1024


MODELS: tuple[ModelCard, ...] = (  # newest first, as GET /v1/models lists them
    ModelCard("claude-opus-4-5-20251101", "Claude Opus 4.5", "2025-11-24T00:00:00Z", 64000,
              "claude-opus-4-5", True, 4096),
    ModelCard("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-15T00:00:00Z", 64000,
              "claude-haiku-4-5", True, 4096),
    ModelCard("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z", 64000,
              "claude-sonnet-4-5", True),
    ModelCard("claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z", 32000,
              "claude-opus-4-1", True),
    ModelCard("claude-opus-4-20250514", "Claude Opus 4", "2025-05-22T00:00:00Z", 32000,
              "claude-opus-4-0"),
    ModelCard("claude-sonnet-4-20250514", "Claude Sonnet 4", "2025-05-22T00:00:00Z", 64000,
              "claude-sonnet-4-0"),
    ModelCard("claude-3-7-sonnet-20250219", "Claude Sonnet 3.7", "2025-02-24T00:00:00Z", 64000,
              "claude-3-7-sonnet-latest"),
    ModelCard("claude-3-5-haiku-20241022", "Claude Haiku 3.5", "2024-10-22T00:00:00Z", 8192,
              "claude-3-5-haiku-latest", min_cacheable=2048),
    ModelCard("claude-3-haiku-20240307", "Claude Haiku 3", "2024-03-07T00:00:00Z", 4096, None,
              min_cacheable=2048),
)  # fmt: skip
CONTEXT_WINDOW = 200_000

STATUS_DEFAULTS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use the specified "
          "resource."),
    404: ("not_found_error", "Not Found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "This request would exceed the rate limit for your organization "
          "of 50 requests per minute. For details, refer to: "
          "https://docs.claude.com/en/api/rate-limits."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timeout"),
    529: ("overloaded_error", "Overloaded"),
}  # fmt: skip


def model_card(card: ModelCard) -> dict[str, Any]:
    """A ``ModelInfo`` as ``GET /v1/models`` returns it."""
    line = next((w for w in ("opus", "sonnet", "haiku") if w in card.id), None)
    return {
        "type": "model", "id": card.id, "display_name": card.display_name,
        "created_at": card.created_at, "lifecycle": "active", "deprecated_at": None,
        "retires_at": None, "line": line, "max_input_tokens": CONTEXT_WINDOW,
        "max_tokens": card.max_output,
    }  # fmt: skip


def error_body(status: int, message: str | None, type_: str | None, request_id: str) -> Any:
    d_type, d_message = STATUS_DEFAULTS.get(status, ("api_error", "Internal server error"))
    error = {"type": type_ or d_type, "message": message or d_message}
    return {"type": "error", "error": error, "request_id": request_id}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # The live API answers compact JSON in UTF-8.
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return Response(text, status, headers=headers, media_type="application/json")


def new_request_id(n: int) -> str:
    return "req_011C" + hashlib.sha256(f"req{n}".encode()).hexdigest()[:20]


def _reset(seconds: int) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_headers(method: str, state: dict[str, Any], organization: str) -> dict[str, str]:
    """The live service's headers: ``request-id`` (the one in error bodies),
    ``anthropic-organization-id`` and, on POSTs, the ``anthropic-ratelimit-*`` family."""
    headers = {"request-id": state["request_id"], "anthropic-organization-id": organization}
    if method == "POST":
        tokens = state.get("fake_tokens", 0)
        for kind, limit in (
            ("requests", 4000),
            ("input-tokens", 2_000_000),
            ("output-tokens", 400_000),
            ("tokens", 2_400_000),
        ):
            used = 1 if kind == "requests" else tokens
            prefix = f"anthropic-ratelimit-{kind}"
            headers[f"{prefix}-limit"] = str(limit)
            headers[f"{prefix}-remaining"] = str(max(limit - used, 0))
            headers[f"{prefix}-reset"] = _reset(1)
    return headers


# --------------------------------------------------------------------------- requests


def decode_base64(data: str) -> bytes | None:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def _describe(block: dict[str, Any]) -> str:
    kind, source = block.get("type"), block.get("source") or {}
    if source.get("type") == "url":
        return f"I see {'an image' if kind == 'image' else 'a document'} at {source.get('url')}."
    if source.get("type") == "text":
        return f"I see a text document: {str(source.get('data'))[:200]}"
    size = len(decode_base64(str(source.get("data", ""))) or b"")
    return f"I see {'an image' if kind == 'image' else 'a PDF document'} ({size} bytes)."


def _result_text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(
            b.get("text", "") if b.get("type") == "text" else _describe(b) for b in content
        )
    return str(content or "")


def brain_body(body: dict[str, Any]) -> dict[str, Any]:
    """The request as the Chat Completions body `_brain.respond` reads (no stop, no limit:
    `answer_blocks` applies those the Anthropic way)."""
    messages: list[dict[str, Any]] = []
    for turn in body["messages"]:
        content = turn["content"]
        if isinstance(content, str):
            messages.append({"role": turn["role"], "content": content})
            continue
        texts, calls = [], []
        for block in content:
            kind = block.get("type")
            if kind == "tool_result":
                text = _result_text(block.get("content"))
                messages.append(
                    {"role": "tool", "tool_call_id": block["tool_use_id"], "content": text}
                )
            elif kind == "text":
                texts.append(block["text"])
            elif kind in ("image", "document"):
                texts.append(_describe(block))
            elif kind == "tool_use":
                fn = {"name": block["name"], "arguments": json.dumps(block["input"])}
                calls.append({"id": block["id"], "type": "function", "function": fn})
        if texts or calls:
            message: dict[str, Any] = {"role": turn["role"], "content": " ".join(texts)}
            messages += [{**message, "tool_calls": calls} if calls else message]
    tools = [
        {"type": "function", "function": {"name": t["name"], "parameters": t["input_schema"]}}
        for t in body.get("tools") or [] if t.get("type") in (None, "custom")
    ]  # fmt: skip
    out: dict[str, Any] = {"messages": messages, "tools": tools}
    choice = body.get("tool_choice") or {}
    kind = choice.get("type")
    if kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif kind in ("any", "none", "auto"):
        out["tool_choice"] = {"any": "required"}.get(kind, kind)
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False
    return out


def request_segments(body: dict[str, Any]) -> list[tuple[Any, int, dict[str, Any] | None]]:
    """The prompt in cache order (tools, system, messages) as ``(content, tokens,
    cache_control)`` pieces; a prefix ending at a ``cache_control`` is a cache entry."""
    out: list[tuple[Any, int, dict[str, Any] | None]] = []
    for tool in body.get("tools") or []:
        out.append((tool, _brain.count_tokens(json.dumps(tool)), tool.get("cache_control")))
    system = body.get("system")
    blocks: list[dict[str, Any]] = (
        [{"type": "text", "text": system}] if isinstance(system, str) else system or []
    )
    for block in blocks:
        out.append((block, _brain.count_tokens(block["text"]), block.get("cache_control")))
    for turn in body["messages"]:
        content = turn["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for block in blocks:
            if block.get("type") == "text":
                tokens = _brain.count_tokens(block["text"])
            elif block.get("type") in ("image", "document"):
                tokens = 85 + len(str((block.get("source") or {}).get("data", ""))) // 1000
            else:
                tokens = _brain.count_tokens(json.dumps(block))
            out.append(((turn["role"], block), tokens + 1, block.get("cache_control")))
    return out


@dataclass
class PromptCache:
    """Prompt caching as documented: a prefix up to a ``cache_control`` block of at least the
    model's minimum size is written on first use (``cache_creation_input_tokens``) and read
    afterwards (``cache_read_input_tokens``); shorter prefixes are silently not cached."""

    entries: dict[str, int] = field(default_factory=dict)

    def account(self, model: str, body: dict[str, Any], minimum: int) -> tuple[int, int, int, str]:
        """(uncached input, cache read, cache creation, ttl of the creation)."""
        segments = request_segments(body)
        total = sum(tokens for _, tokens, _ in segments) + 3 * len(body["messages"])
        prefix, read, written, ttl = 0, 0, 0, "5m"
        digest = hashlib.sha256(model.encode())
        for content, tokens, cache_control in segments:
            prefix += tokens
            digest.update(json.dumps(content, sort_keys=True).encode())
            if not cache_control or prefix < minimum:
                continue
            key = digest.hexdigest()
            if key in self.entries:
                read, written = prefix, 0
            else:
                self.entries[key] = prefix
                written, ttl = prefix - read, str(cache_control.get("ttl", "5m"))
        return total - read - written, read, written, ttl


# --------------------------------------------------------------------------- answers


def thinking_signature(thinking: str) -> str:
    """The fake's signature of a thinking text (the live API signs its thinking blocks)."""
    digest = hashlib.sha256(b"fake-anthropic-thinking:" + thinking.encode()).digest()
    return base64.b64encode(digest * 3).decode("ascii")


@dataclass
class AnswerBlocks:
    content: list[dict[str, Any]]
    stop_reason: str
    stop_sequence: str | None = None
    thinking_tokens: int = 0


def _tool_use_id(seed: int, index: int) -> str:
    return "toolu_01" + hashlib.sha256(f"tool{seed}.{index}".encode()).hexdigest()[:22]


def answer_blocks(
    body: dict[str, Any],
    answer: _brain.Answer,
    *,
    seed: int,
    thinking: str | None = None,
    stop_reason: str | None = None,
) -> AnswerBlocks:
    """Content blocks of the answer, cut at the first stop sequence or ``max_tokens`` words."""
    text = answer.content or ""
    stop, sequence = "end_turn", None
    if answer.tool_calls:
        stop = "tool_use"
    hits = [(text.find(s), s) for s in body.get("stop_sequences") or [] if s and s in text]
    if hits and not answer.tool_calls:
        cut, sequence = min(hits)
        text, stop = text[:cut], "stop_sequence"
    words = text.split()
    if len(words) > body["max_tokens"]:
        text, stop, sequence = " ".join(words[: body["max_tokens"]]), "max_tokens", None
    content: list[dict[str, Any]] = []
    if thinking is not None:
        content.append({"type": "thinking", "thinking": thinking,
                        "signature": thinking_signature(thinking)})  # fmt: skip
    if text:
        content.append({"type": "text", "text": text, "citations": None})
    for index, call in enumerate(answer.tool_calls):
        content.append({"type": "tool_use", "id": _tool_use_id(seed, index), "name": call.name,
                        "input": json.loads(call.arguments)})  # fmt: skip
    tokens = _brain.count_tokens(thinking) if thinking else 0
    return AnswerBlocks(content, stop_reason or stop, sequence, tokens)


def usage_body(
    blocks: AnswerBlocks, cache: tuple[int, int, int, str], overrides: dict[str, Any] | None
) -> dict[str, Any]:
    uncached, read, written, ttl = cache
    output = sum(
        _brain.count_tokens(b.get("text") or json.dumps(b.get("input", "")))
        for b in blocks.content if b["type"] != "thinking"
    ) + blocks.thinking_tokens + 1  # fmt: skip
    usage: dict[str, Any] = {
        "input_tokens": uncached,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": written if ttl != "1h" else 0,
            "ephemeral_1h_input_tokens": written if ttl == "1h" else 0,
        },
        "output_tokens": output,
        "server_tool_use": None,
        "service_tier": "standard",
    }
    if blocks.thinking_tokens:
        usage["output_tokens_details"] = {"thinking_tokens": blocks.thinking_tokens}
    usage.update(overrides or {})
    return usage


def message_body(
    message_id: str, model: str, blocks: AnswerBlocks, usage: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": message_id, "type": "message", "role": "assistant", "model": model,
        "content": blocks.content, "stop_reason": blocks.stop_reason,
        "stop_sequence": blocks.stop_sequence, "usage": usage,
    }  # fmt: skip


_PIECE = re.compile(r"\s*\S+\s*|\s+")
_FRAGMENT = re.compile(r"\w+|\s+|[^\w\s]")


def stream_events(message: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The named events of a streamed answer: ``message_start`` (usage so far), per block
    ``content_block_start``/``_delta``.../``_stop`` (a ``ping`` after the first start),
    ``message_delta`` (stop reason, cumulative usage), ``message_stop``."""
    usage = message["usage"]
    start_usage = {**usage, "output_tokens": 1}
    start_usage.pop("output_tokens_details", None)
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": start_usage}  # fmt: skip
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"message": start})]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        deltas: list[dict[str, Any]]
        if kind == "text":
            opening: dict[str, Any] = {"type": "text", "text": "", "citations": None}
            deltas = [{"type": "text_delta", "text": p} for p in _PIECE.findall(block["text"])]
        elif kind == "thinking":
            opening = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p}
                      for p in _PIECE.findall(block["thinking"])]  # fmt: skip
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            opening = {**block, "input": {}}
            pieces = _FRAGMENT.findall(json.dumps(block["input"]))
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in ["", *pieces]]
        events.append(("content_block_start", {"index": index, "content_block": opening}))
        if index == 0:
            events.append(("ping", {}))
        events += [("content_block_delta", {"index": index, "delta": d}) for d in deltas]
        events.append(("content_block_stop", {"index": index}))
    delta_usage = {
        k: usage.get(k)
        for k in (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
        )
    }
    delta_usage["server_tool_use"] = None
    if "output_tokens_details" in usage:
        delta_usage["output_tokens_details"] = usage["output_tokens_details"]
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    events += [("message_delta", {"delta": delta, "usage": delta_usage}), ("message_stop", {})]
    return [(name, {"type": name, **data}) for name, data in events]  # fmt: skip


def event_stream(
    events: list[tuple[str, dict[str, Any]]],
    *,
    drop_after: int | None = None,
    error: tuple[int, dict[str, Any]] | None = None,
) -> FrameStream:
    """Events framed as ``event: <name>\\ndata: <json>\\n\\n``; ``error=(n, event)`` sends the
    ``error`` event after n events and ends the stream, as the live API does when it fails
    mid-answer (e.g. ``overloaded_error``); ``drop_after``: see ``FrameStream``."""
    if error is not None:
        events = [*events[: error[0]], ("error", error[1])]
    compact = {"ensure_ascii": False, "separators": (",", ":")}
    frames = [f"event: {name}\ndata: {json.dumps(data, **compact)}\n\n" for name, data in events]
    return FrameStream(
        frames,
        media_type="text/event-stream; charset=utf-8",
        headers={"cache-control": "no-cache"},
        drop_after=drop_after,
    )
