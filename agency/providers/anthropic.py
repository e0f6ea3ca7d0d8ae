"""The Anthropic Messages API wire adapter (``anthropic:claude-sonnet-4-5``).

``POST /v1/messages`` (JSON, or SSE with named events) and ``GET /v1/models`` (cursor pages).

Requests: system messages become the top-level ``system``; the rest alternate user/assistant
turns (same-role messages merge; tool results are ``tool_result`` blocks opening a user turn,
tool calls ``tool_use`` blocks); ``max_tokens`` is required (`DEFAULT_MAX_TOKENS` if unset);
images become ``image`` blocks, PDFs and text files ``document`` blocks; Anthropic-native
blocks (``cache_control``, signed ``thinking``, ``tool_use``, ``tool_result``, ``document``)
pass through; ``parallel_tool_calls=False`` is ``disable_parallel_tool_use``. ``seed`` has no
Anthropic equivalent and is not sent; ``response_format`` is refused (structured output uses a
forced tool).

Answers: when the request offers tools or turns thinking on, the content is Anthropic's block
list (``text``, signed ``thinking``, ``tool_use``), as langchain-anthropic makes it, so
LangChain's ``anthropic`` translator reads its ``content_blocks`` and the blocks go back as
they came on the next turn; otherwise it is the text, and any thinking lands in
``additional_kwargs["reasoning_content"]`` and ``["thinking_blocks"]`` (replayed from there).
``tool_use`` blocks are tool calls either way. Anthropic's ``input_tokens`` excludes cached
tokens: LangChain's is its sum with the cache creation and cache read tokens, which
``input_token_details`` reports apart. Stream usage is cumulative, so it is emitted once, at
``message_delta``; an ``error`` event mid-stream is mapped like the HTTP error it stands for.
Anthropic has no embeddings API: `AnthropicAdapter._embed` points at ``voyage``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import httpx
from langchain_core.messages import (
    AIMessageChunk,
)
from langchain_core.messages.ai import InputTokenDetails, OutputTokenDetails, UsageMetadata
from langchain_core.outputs import ChatGenerationChunk

from agency._http import ErrorInfo, SSEEvent, default_error_info, error_from_response
from agency.errors import ConnectionFailed, ProviderError
from agency.providers import _wire
from agency.providers._anthropic_messages import (
    DEFAULT_MAX_TOKENS,
    build_messages_body,
    wire_messages,
)
from agency.providers._base import ALL_CAPABILITIES, ChatRequest, ModelInfo, normalize_finish_reason
from agency.providers._http_adapter import HTTPChatAdapter, StreamReader

__all__ = [
    "DEFAULT_MAX_TOKENS", "NO_EMBEDDINGS_MESSAGE", "AnthropicAdapter", "StreamState",
    "anthropic_error_info", "build_messages_body", "chunk_from_message",
    "chunk_from_stream_event", "usage_from_anthropic", "wire_messages",
]  # fmt: skip

MODELS_PAGE_LIMIT = 1000
"""Models per ``GET /v1/models`` page (the API's maximum)."""
NO_EMBEDDINGS_MESSAGE = (
    'Anthropic has no embeddings API; use agency.embeddings("voyage:voyage-3.5"), '
    "the embeddings partner Anthropic recommends"
)

# Status an in-stream error would have had as an HTTP answer (Anthropic's documented pairs).
_ERROR_STATUS = {
    "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
    "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
    "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529,
}  # fmt: skip


# --------------------------------------------------------------------------- responses
_int = _wire.count


def usage_from_anthropic(usage: Any) -> UsageMetadata | None:
    """LangChain usage from Anthropic's: ``input_tokens`` there excludes cached tokens, so
    LangChain's is input + cache creation + cache read (each also reported apart)."""
    if not isinstance(usage, Mapping):
        return None
    read = _int(usage.get("cache_read_input_tokens"))
    created = _int(usage.get("cache_creation_input_tokens"))
    prompt = _int(usage.get("input_tokens")) + read + created
    output = _int(usage.get("output_tokens"))
    result = UsageMetadata(
        input_tokens=prompt,
        output_tokens=output,
        total_tokens=prompt + output,
        input_token_details=InputTokenDetails(cache_read=read, cache_creation=created),
    )
    details = usage.get("output_tokens_details")
    if isinstance(details, Mapping) and isinstance(details.get("thinking_tokens"), int):
        result["output_token_details"] = OutputTokenDetails(reasoning=details["thinking_tokens"])
    return result


def _metadata(
    provider: str, message_id: Any, model: Any, stop_reason: Any, stop_sequence: Any
) -> dict[str, Any]:
    finish = normalize_finish_reason(stop_reason)
    meta = {
        "provider": provider, "model_provider": "anthropic", "model_name": model or None,
        "id": message_id or None, "finish_reason": finish,
        "raw_finish_reason": stop_reason if stop_reason != finish else None,
        "stop_sequence": stop_sequence,
    }  # fmt: skip
    return {k: v for k, v in meta.items() if v is not None}


def _str_field(block: Mapping[str, Any], key: str, provider: str, model: str | None) -> str:
    value = block.get(key)
    if not isinstance(value, str):
        raise _wire.malformed(
            provider, model, f"{block.get('type')} block without a string {key!r}"
        )
    return value


def _block_mode(request: ChatRequest) -> bool:
    """Whether answers keep Anthropic's content blocks (the request offers tools or turns
    thinking on), as langchain-anthropic does, so LangChain's ``anthropic`` translator reads
    their ``content_blocks``; otherwise the content is the plain text."""
    thinking = request.extra_body.get("thinking")
    return bool(request.tools) or (
        isinstance(thinking, Mapping) and thinking.get("type") != "disabled"
    )


@dataclass
class _Parts:
    """What content blocks, or streamed pieces of one (``index`` set), add to a chunk."""

    blocks_mode: bool
    index: int | None = None
    text: str = ""
    blocks: list[Any] = field(default_factory=list)
    tools: list[Any] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def put(self, block: dict[str, Any]) -> None:
        """Block mode keeps ``block``; text mode keeps its text, and thinking (for the replay
        the API requires) or unknown blocks in ``additional_kwargs``."""
        if self.index is not None:
            block["index"] = self.index
        kind = block["type"]
        if self.blocks_mode:
            self.blocks.append(block)
        elif kind == "text":
            self.text += block["text"]
        elif kind in ("thinking", "redacted_thinking"):
            self.extra.setdefault("thinking_blocks", []).append(block)
            if block.get("thinking"):
                reasoning = self.extra.get("reasoning_content", "") + block["thinking"]
                self.extra["reasoning_content"] = reasoning
        elif kind not in ("tool_use", "input_json_delta"):  # tool calls travel as chunks
            self.extra.setdefault("anthropic_blocks", []).append(block)

    def chunk(self, **kw: Any) -> AIMessageChunk | None:
        """The chunk, or None when these parts carry nothing (and ``kw`` adds nothing)."""
        if not (self.text or self.blocks or self.tools or self.extra or kw):
            return None
        content = self.blocks if self.blocks_mode else self.text
        return AIMessageChunk(
            content=content, tool_call_chunks=self.tools, additional_kwargs=self.extra, **kw
        )


def _block_parts(parts: _Parts, block: Any, provider: str, model: str | None) -> None:
    """Add a whole content block (response) or a block's opening (``content_block_start``)."""
    if not isinstance(block, Mapping):
        raise _wire.malformed(provider, model, "a content block is not an object")
    kind = block.get("type")
    streamed = parts.index is not None
    if kind == "text":
        text = _str_field(block, "text", provider, model)
        if text or not streamed:
            cited = {"citations": block["citations"]} if block.get("citations") else {}
            parts.put({"type": "text", "text": text, **cited})
    elif kind == "tool_use":
        raw = block.get("input")
        if not isinstance(raw, Mapping):
            raise _wire.malformed(provider, model, "tool_use block without an input object")
        # Streamed tool input arrives as input_json_delta pieces after an empty `input`.
        args = json.dumps(raw) if raw or not streamed else ""
        name, call_id = (_str_field(block, k, provider, model) for k in ("name", "id"))
        index = parts.index if streamed else len(parts.tools)
        piece = _wire.tool_piece(name=name, args=args, id=call_id, index=index,
                           provider=provider, model=model)  # fmt: skip
        parts.tools.append(piece)
        parts.put({"type": "tool_use", "id": call_id, "name": name, "input": dict(raw)})
    elif kind == "thinking":
        thinking = _str_field(block, "thinking", provider, model)
        parts.put(
            {"type": "thinking", "thinking": thinking, "signature": block.get("signature") or ""}
        )
    else:  # redacted thinking, server tools, types added later: kept as given
        parts.put(dict(block))


def chunk_from_message(
    data: Any, provider: str, model: str | None, *, blocks: bool = False
) -> ChatGenerationChunk:
    """The whole answer of a non-streamed ``message`` as one chunk (``blocks``: see
    `_block_mode`)."""
    with _wire.parsing(provider, model):
        if not isinstance(data, Mapping) or not isinstance(data.get("content"), list):
            raise _wire.malformed(provider, model, "no content[] in message")
        parts = _Parts(blocks)
        for block in data["content"]:
            _block_parts(parts, block, provider, model)
        stop = data.get("stop_reason")
        meta = _metadata(
            provider, data.get("id"), data.get("model"), stop, data.get("stop_sequence")
        )
        chunk = parts.chunk(
            usage_metadata=usage_from_anthropic(data.get("usage")),
            response_metadata=meta,
            id=data.get("id"),
            chunk_position="last",
        )
        assert chunk is not None  # metadata always given
        return ChatGenerationChunk(
            message=chunk, generation_info={"finish_reason": normalize_finish_reason(stop)}
        )


@dataclass
class StreamState:
    """What a stream has said so far: the message id/model and the cumulative usage."""

    blocks_mode: bool = False
    """Keep Anthropic's content blocks (see `_block_mode`)."""
    message_id: str | None = None
    model: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    blocks: dict[int, str] = field(default_factory=dict)
    finished: bool = False
    """A ``message_delta`` (stop reason and final usage) arrived."""
    stopped: bool = False
    """``message_stop`` arrived: nothing more will come."""


def _stream_error(
    err: Any, provider: str, model: str | None, secret: str | None = None
) -> ProviderError:
    """An ``error`` event inside a stream, mapped like the HTTP error it stands for."""
    err = dict(err) if isinstance(err, Mapping) else {"type": "api_error", "message": str(err)}
    status = _ERROR_STATUS.get(str(err.get("type")), 500)
    response = httpx.Response(status, json={"type": "error", "error": err})
    return error_from_response(
        response, provider=provider, model=model, secret=secret, parse=anthropic_error_info
    )


def _delta_parts(
    data: Mapping[str, Any], state: StreamState, provider: str, model: str | None
) -> _Parts:
    index, delta = data.get("index"), data.get("delta")
    if not _wire.integer(index) or not isinstance(delta, Mapping):
        raise _wire.malformed(provider, model, "content_block_delta without index/delta")
    parts = _Parts(state.blocks_mode, index)
    kind = delta.get("type")
    if kind == "text_delta":
        parts.put({"type": "text", "text": _str_field(delta, "text", provider, model)})
    elif kind == "input_json_delta" and state.blocks.get(index) == "tool_use":
        piece = _str_field(delta, "partial_json", provider, model)
        parts.tools.append(
            _wire.tool_piece(args=piece, index=index, provider=provider, model=model)
        )
        parts.put({"type": "input_json_delta", "partial_json": piece})
    elif kind == "thinking_delta":
        parts.put({"type": "thinking", "thinking": _str_field(delta, "thinking", provider, model)})
    elif kind == "signature_delta":
        signature = _str_field(delta, "signature", provider, model)
        parts.put({"type": "thinking", "signature": signature})
    # citations_delta and delta types added later carry no text of their own
    return parts


def chunk_from_stream_event(
    event: SSEEvent,
    state: StreamState,
    provider: str,
    model: str | None,
    *,
    secret: str | None = None,
) -> ChatGenerationChunk | None:
    """One server-sent event as a LangChain chunk (``None`` when it carries nothing); updates
    ``state``. Raises the mapped error for an ``error`` event."""
    with _wire.parsing(provider, model):
        data = _wire.json_payload(event.data, provider, model, "stream event") if event.data else {}
        if not isinstance(data, Mapping):
            raise _wire.malformed(provider, model, "stream event is not a JSON object")
        kind = data.get("type") or event.event
        message: AIMessageChunk | None = None
        info: dict[str, Any] | None = None
        if kind == "error":
            raise _stream_error(data.get("error", data), provider, model, secret)
        if kind == "message_start":
            start = data.get("message")
            if not isinstance(start, Mapping):
                raise _wire.malformed(provider, model, "message_start without a message")
            state.message_id = _wire.text_or_none(start.get("id"), "message.id", provider, model)
            state.model = _wire.text_or_none(start.get("model"), "message.model", provider, model)
            usage = start.get("usage")
            state.usage = dict(usage) if isinstance(usage, Mapping) else {}
        elif kind == "content_block_start":
            index, block = data.get("index"), data.get("content_block")
            if not _wire.integer(index) or not isinstance(block, Mapping):
                raise _wire.malformed(
                    provider, model, "content_block_start without index/content_block"
                )
            state.blocks[index] = str(block.get("type"))
            parts = _Parts(state.blocks_mode, index)
            _block_parts(parts, block, provider, model)
            message = parts.chunk()
        elif kind == "content_block_delta":
            message = _delta_parts(data, state, provider, model).chunk()
        elif kind == "message_delta":
            delta, usage = data.get("delta"), data.get("usage")
            if not isinstance(delta, Mapping):
                raise _wire.malformed(provider, model, "message_delta without a delta")
            if isinstance(usage, Mapping):  # cumulative counts: the later value wins
                state.usage.update({k: v for k, v in usage.items() if v is not None})
            stop = delta.get("stop_reason")
            state.finished = True
            meta = _metadata(
                provider, state.message_id, state.model, stop, delta.get("stop_sequence")
            )
            message = _Parts(state.blocks_mode).chunk(
                usage_metadata=usage_from_anthropic(state.usage),
                response_metadata=meta,
                chunk_position="last",
            )
            info = {"finish_reason": normalize_finish_reason(stop)}
        elif kind == "message_stop":
            state.stopped = True
        # ping, content_block_stop and event types added later carry nothing to pass on.
        if message is None:
            return None
        message.id = state.message_id
        # Every chunk names its format: LangChain translates each chunk's blocks by it (v1 output).
        message.response_metadata.setdefault("model_provider", "anthropic")
        return ChatGenerationChunk(message=message, generation_info=info)


def anthropic_error_info(body: Any, text: str) -> ErrorInfo:
    """``{"type": "error", "error": {"type", "message", "details"?}}``. Anthropic has no
    machine code for an over-long prompt: "prompt is too long" is given the code
    ``context_length_exceeded`` so it maps to `ContextWindowExceeded`."""
    err = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(err, Mapping):
        return default_error_info(body, text)
    message = str(err.get("message") or json.dumps(dict(err))[:500])
    details = err.get("details")
    code = details.get("error_code") if isinstance(details, Mapping) else None
    if code is None and "prompt is too long" in message.lower():
        code = "context_length_exceeded"
    kind = err.get("type")
    return ErrorInfo(
        message, None if kind is None else str(kind), None if code is None else str(code)
    )


# --------------------------------------------------------------------------- adapter
@dataclass
class _Reader:
    """Reads a Messages event stream up to ``message_stop``."""

    state: StreamState
    provider: str
    model: str
    secret: str | None

    @property
    def done(self) -> bool:
        return self.state.stopped

    def feed(self, event: SSEEvent) -> ChatGenerationChunk | None:
        return chunk_from_stream_event(
            event, self.state, self.provider, self.model, secret=self.secret
        )

    def end(self) -> None:
        # message_stop may be lost once message_delta said why the answer ended; a stream
        # that ends before that was cut off.
        if not (self.state.stopped or self.state.finished):
            raise ConnectionFailed(
                "stream ended before the answer finished (no message_delta, no message_stop)",
                provider=self.provider,
                model=self.model,
            )


class AnthropicAdapter(HTTPChatAdapter):
    """Anthropic's Messages API. Structured output uses a forced tool (``json_schema`` and
    ``json_mode`` are off, so `AgencyChatModel.with_structured_output` picks
    ``function_calling``)."""

    embeddings_hint = NO_EMBEDDINGS_MESSAGE

    capabilities = replace(ALL_CAPABILITIES, json_mode=False, json_schema=False, embeddings=False)

    def _error_info(self, body: Any, text: str) -> ErrorInfo:
        return anthropic_error_info(body, text)

    # -- chat -------------------------------------------------------------------------
    def _chat_request(self, request: ChatRequest, *, stream: bool) -> tuple[str, Any]:
        return "/v1/messages", build_messages_body(request, stream=stream)

    def _whole(self, data: Any, request: ChatRequest) -> ChatGenerationChunk:
        return chunk_from_message(data, self.provider, request.model, blocks=_block_mode(request))

    def _reader(self, request: ChatRequest) -> StreamReader:
        state = StreamState(blocks_mode=_block_mode(request))
        return _Reader(state, self.provider, request.model, self.connection.secret())

    # -- models -----------------------------------------------------------------------
    def _models_page(self, data: Any) -> tuple[list[ModelInfo], str | None]:
        """The models of one page and the cursor of the next (None on the last page)."""
        items = data.get("data") if isinstance(data, Mapping) else None
        if not isinstance(items, list):
            raise _wire.malformed(self.provider, None, "models list has no data[]")
        window = "max_input_tokens"
        models = [
            ModelInfo(item["id"], self.provider, "anthropic", _int(item.get(window)) or None, item)
            for item in items
            if isinstance(item, Mapping) and isinstance(item.get("id"), str)
        ]
        last = data.get("last_id")
        return models, (last if data.get("has_more") is True and isinstance(last, str) else None)

    @staticmethod
    def _models_path(after: str | None) -> str:
        path = f"/v1/models?limit={MODELS_PAGE_LIMIT}"
        return path + (f"&after_id={quote(after, safe='')}" if after else "")

    def _list_models(self) -> list[ModelInfo]:
        models, after, seen = [], None, set()
        while True:
            page, after = self._models_page(self._send("GET", self._models_path(after), None))
            models += page
            if not after or after in seen:  # a cursor that repeats would loop forever
                return models
            seen.add(after)

    async def _alist_models(self) -> list[ModelInfo]:
        models, after, seen = [], None, set()
        while True:
            data = await self._asend("GET", self._models_path(after), None)
            page, after = self._models_page(data)
            models += page
            if not after or after in seen:
                return models
            seen.add(after)
