"""The OpenAI chat-completions wire adapter, and every OpenAI-compatible service through it.

Speaks ``POST /chat/completions`` (JSON and SSE, ``stream_options.include_usage``), tools with
parallel calls (streamed tool-call deltas are passed on as LangChain tool-call chunks, which
LangChain assembles by index), ``response_format`` (``json_object``, ``json_schema``), image
parts, ``POST /embeddings`` and ``GET /models``. Azure OpenAI is the same protocol on
deployment URLs with an ``api-version`` query and an ``api-key`` header (quirk ``azure``).

The parsing functions (`chunk_from_completion`, `chunk_from_stream_event`, `usage_from_openai`)
are pure and shared with the in-process `local` adapter, whose llama.cpp engine answers in
the same shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    convert_to_openai_messages,
)
from langchain_core.messages.ai import InputTokenDetails, OutputTokenDetails, UsageMetadata
from langchain_core.outputs import ChatGenerationChunk

from agency._http import SSEEvent, error_from_response
from agency.errors import ConnectionFailed, ProviderError
from agency.providers import _wire
from agency.providers._base import (
    ALL_CAPABILITIES,
    Capabilities,
    ChatRequest,
    ModelInfo,
    normalize_finish_reason,
)
from agency.providers._http_adapter import HTTPChatAdapter, StreamReader

__all__ = [
    "EMBEDDING_BATCH_SIZE",
    "OpenAIAdapter",
    "build_chat_body",
    "chunk_from_completion",
    "chunk_from_stream_event",
    "usage_from_openai",
    "wire_messages",
]

EMBEDDING_BATCH_SIZE = 1000
"""Texts per ``/embeddings`` request (OpenAI accepts up to 2048 inputs)."""


# --------------------------------------------------------------------------- requests
def wire_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as chat-completions messages.

    An AI message whose content is a list of blocks (LangChain's v1 output, or another
    provider's) keeps only its text here: its tool calls travel in ``tool_calls`` and
    reasoning blocks have no place in this API's history.
    """
    prepared: list[BaseMessage] = []
    for message in messages:
        if isinstance(message, AIMessage) and isinstance(message.content, list):
            text = "".join(
                block if isinstance(block, str) else str(block.get("text", ""))
                for block in message.content
                if isinstance(block, str) or block.get("type") == "text"
            )
            message = message.model_copy(update={"content": text})
        prepared.append(message)
    return convert_to_openai_messages(prepared)  # type: ignore[return-value]


def build_chat_body(
    request: ChatRequest, quirks: Mapping[str, Any], *, stream: bool
) -> dict[str, Any]:
    """The JSON body of ``POST /chat/completions`` for ``request``."""
    body: dict[str, Any] = {
        "model": request.model,
        "messages": wire_messages(request.messages),
    }
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body[quirks.get("max_tokens_field", "max_tokens")] = request.max_tokens
    if request.stop:
        body["stop"] = list(request.stop)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.seed is not None:
        body[quirks.get("seed_field", "seed")] = request.seed
    if request.tools:
        body["tools"] = [dict(t) for t in request.tools]
        choice = request.tool_choice
        if choice == "required" or choice == "any":
            choice = quirks.get("tool_choice_required", "required")
        if choice is not None:
            body["tool_choice"] = choice if isinstance(choice, str) else dict(choice)
        if request.parallel_tool_calls is not None and quirks.get("parallel_tool_calls", True):
            body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.response_format is not None:
        body["response_format"] = dict(request.response_format)
    if stream:
        body["stream"] = True
        if quirks.get("stream_usage", True):
            body["stream_options"] = {"include_usage": True}
    body.update(request.extra_body)
    return body


# --------------------------------------------------------------------------- responses
_int = _wire.count


def usage_from_openai(usage: Any) -> UsageMetadata | None:
    """LangChain usage from OpenAI's ``usage`` (cached prompt and reasoning tokens included)."""
    if not isinstance(usage, dict):
        return None
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    total = _int(usage.get("total_tokens")) or prompt + completion
    result = UsageMetadata(input_tokens=prompt, output_tokens=completion, total_tokens=total)
    pdetails = usage.get("prompt_tokens_details")
    # Some compatible servers (DeepSeek) report cache hits at the top level instead.
    cached = _int(pdetails.get("cached_tokens")) if isinstance(pdetails, dict) else 0
    cached = cached or _int(usage.get("prompt_cache_hit_tokens"))
    input_details = InputTokenDetails()
    if cached:
        input_details["cache_read"] = cached
    if isinstance(pdetails, dict) and _int(pdetails.get("audio_tokens")):
        input_details["audio"] = _int(pdetails.get("audio_tokens"))
    if input_details:
        result["input_token_details"] = input_details
    cdetails = usage.get("completion_tokens_details")
    output_details = OutputTokenDetails()
    if isinstance(cdetails, dict):
        if _int(cdetails.get("reasoning_tokens")):
            output_details["reasoning"] = _int(cdetails.get("reasoning_tokens"))
        if _int(cdetails.get("audio_tokens")):
            output_details["audio"] = _int(cdetails.get("audio_tokens"))
    if output_details:
        result["output_token_details"] = output_details
    return result


_META_FIELDS = {"model": "model_name", "id": "id", "system_fingerprint": "system_fingerprint",
                "service_tier": "service_tier"}  # fmt: skip


def _metadata(
    data: Mapping[str, Any], provider: str, model: str | None, finish: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {"provider": provider, "model_provider": "openai"}
    for wire, key in _META_FIELDS.items():
        # Strings only: LangChain merges a stream's metadata and fails on mixed types.
        if value := _wire.text_or_none(data.get(wire), wire, provider, model):
            meta[key] = value
    if finish is not None:
        meta["finish_reason"] = normalize_finish_reason(finish)
        if meta["finish_reason"] != finish:
            meta["raw_finish_reason"] = finish
    return meta


def _extra_kwargs(message: Mapping[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for key in ("refusal", "reasoning_content", "reasoning"):
        if message.get(key):
            extra[key] = message[key]
    return extra


def chunk_from_completion(data: Any, provider: str, model: str | None) -> ChatGenerationChunk:
    """The whole answer of a non-streamed ``chat.completion`` as one chunk."""
    with _wire.parsing(provider, model):
        if not isinstance(data, dict):
            raise _wire.malformed(provider, model, "body is not a JSON object")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise _wire.malformed(provider, model, "no choices[0] in chat.completion")
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            raise _wire.malformed(provider, model, "choices[0].message missing")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise _wire.malformed(provider, model, "message.content is not a string")
        finish = choice.get("finish_reason")
        chunk = AIMessageChunk(
            content=content or "",
            tool_call_chunks=_wire.openai_tool_calls(message.get("tool_calls"), provider, model),
            additional_kwargs=_extra_kwargs(message),
            usage_metadata=usage_from_openai(data.get("usage")),
            response_metadata=_metadata(data, provider, model, finish),
            id=data.get("id"),
            chunk_position="last",
        )
        return ChatGenerationChunk(
            message=chunk, generation_info={"finish_reason": normalize_finish_reason(finish)}
        )


def chunk_from_stream_event(
    data: Any, provider: str, model: str | None
) -> ChatGenerationChunk | None:
    """One ``chat.completion.chunk`` as a LangChain chunk; ``None`` when it carries nothing."""
    text = _plain_text_delta(data)
    if text is not None:
        # Most events of a stream: the same chunk the checks below build, without them.
        chunk = AIMessageChunk(
            content=text, tool_call_chunks=[], additional_kwargs={}, usage_metadata=None,
            response_metadata={}, id=data.get("id"),
        )  # fmt: skip
        return ChatGenerationChunk(message=chunk, generation_info=None)
    with _wire.parsing(provider, model):
        if not isinstance(data, dict):
            raise _wire.malformed(provider, model, "stream event is not a JSON object")
        if "error" in data and isinstance(data["error"], dict):
            raise _stream_error(data["error"], provider, model)
        choices = data.get("choices") or []
        if not isinstance(choices, list):
            raise _wire.malformed(provider, model, "choices is not a list")
        usage = usage_from_openai(data.get("usage"))
        # Groq reports stream usage under x_groq.usage.
        if usage is None and isinstance(data.get("x_groq"), dict):
            usage = usage_from_openai(data["x_groq"].get("usage"))
        delta: Any = {}
        finish = None
        if choices:
            choice = choices[0]
            if not isinstance(choice, dict):
                raise _wire.malformed(provider, model, "choices[0] is not an object")
            raw_delta = choice.get("delta")
            delta = {} if raw_delta is None else raw_delta
            if not isinstance(delta, dict):
                raise _wire.malformed(provider, model, "choices[0].delta is not an object")
            finish = choice.get("finish_reason")
        content = delta.get("content")
        if content is not None and not isinstance(content, str):
            raise _wire.malformed(provider, model, "delta.content is not a string")
        tools = _wire.openai_tool_calls(delta.get("tool_calls"), provider, model, streamed=True)
        extra = _extra_kwargs(delta)
        if (
            not content
            and not tools
            and not extra
            and usage is None
            and finish is None
            and not delta.get("role")
        ):
            return None
        has_meta = finish is not None or usage is not None
        meta = _metadata(data, provider, model, finish) if has_meta else {}
        chunk = AIMessageChunk(
            content=content or "",
            tool_call_chunks=tools,
            additional_kwargs=extra,
            usage_metadata=usage,
            response_metadata=meta,
            id=data.get("id"),
        )
        info = {"finish_reason": normalize_finish_reason(finish)} if finish is not None else None
        return ChatGenerationChunk(message=chunk, generation_info=info)


def _plain_text_delta(data: Any) -> str | None:
    """The text of an event the checked path would turn into a text-only chunk (one choice,
    non-empty string content, no usage, finish, error, tool calls or extras, a string id or
    none); else ``None``, and the checked path decides."""
    if type(data) is not dict or "error" in data or "x_groq" in data:
        return None
    choices = data.get("choices")
    if data.get("usage") is not None or type(choices) is not list or len(choices) != 1:
        return None
    choice = choices[0]
    if type(choice) is not dict or choice.get("finish_reason") is not None:
        return None
    delta = choice.get("delta")
    if type(delta) is not dict or delta.get("tool_calls") is not None:
        return None
    text, ident = delta.get("content"), data.get("id")
    if type(text) is not str or not text or not (ident is None or type(ident) is str):
        return None
    if delta.get("refusal") or delta.get("reasoning_content") or delta.get("reasoning"):
        return None
    return text


def _stream_error(err: Mapping[str, Any], provider: str, model: str | None) -> ProviderError:
    """An ``{"error": ...}`` event inside a stream, mapped like an HTTP error."""
    status = {"rate_limit_exceeded": 429, "invalid_request_error": 400, "server_error": 500}.get(
        str(err.get("code") or err.get("type")), 500
    )
    fake = httpx.Response(status, json={"error": dict(err)})
    return error_from_response(fake, provider=provider, model=model)


# --------------------------------------------------------------------------- adapter
class _Reader:
    """Reads a ``chat.completion.chunk`` event stream up to ``[DONE]``."""

    def __init__(self, provider: str, model: str) -> None:
        self.provider, self.model = provider, model
        self.done = self.finished = False

    def feed(self, event: SSEEvent) -> ChatGenerationChunk | None:
        if event.data.strip() == "[DONE]":
            self.done = True
            return None
        payload = _wire.json_payload(event.data, self.provider, self.model, "stream event")
        chunk = chunk_from_stream_event(payload, self.provider, self.model)
        if chunk is not None and (chunk.generation_info or {}).get("finish_reason"):
            self.finished = True
        return chunk

    def end(self) -> None:
        # A stream may omit [DONE] (some compatible servers) once it said why it finished;
        # one that stops before any finish_reason was cut off.
        if not (self.done or self.finished):
            raise ConnectionFailed(
                "stream ended before the answer finished (no finish_reason, no [DONE])",
                provider=self.provider,
                model=self.model,
            )


class OpenAIAdapter(HTTPChatAdapter):
    """OpenAI's chat-completions protocol over pooled httpx clients."""

    capabilities = ALL_CAPABILITIES

    def effective_capabilities(self) -> Capabilities:
        # Asked on every call of a fallback chain: worked out once per profile.
        profile = self.connection.profile
        known = self.__dict__.get("_effective")
        if known is None or known[0] is not profile:
            known = self.__dict__["_effective"] = (profile, self._effective(profile.quirk))
        return known[1]

    def _effective(self, q: Callable[[str, Any], Any]) -> Capabilities:
        from dataclasses import replace

        tools = bool(q("tools", True))
        return replace(
            self.capabilities,
            tools=tools,
            tool_choice=tools,
            parallel_tool_calls=tools and bool(q("parallel_tool_calls", True)),
            json_schema=bool(q("json_schema", True)),
            embeddings=bool(q("embeddings", True)),
        )

    # -- URLs and headers -------------------------------------------------------------
    def _url(self, path: str, model: str | None = None) -> str:
        base = self.connection.base_url
        if self.connection.profile.quirk("azure"):
            deployment = self.connection.options.get("deployment") or model
            if path == "/models":
                return f"{base}/openai/models"
            return f"{base}/openai/deployments/{deployment}{path}"
        return base + path

    def _params(self) -> dict[str, str] | None:
        if self.connection.profile.quirk("azure"):
            version = self.connection.options.get("api_version") or self.connection.profile.quirk(
                "default_api_version"
            )
            return {"api-version": str(version)}
        return None

    def _headers(self) -> dict[str, str]:
        headers = super()._headers()
        opts = self.connection.options
        if opts.get("organization"):
            headers["OpenAI-Organization"] = str(opts["organization"])
        if opts.get("project"):
            headers["OpenAI-Project"] = str(opts["project"])
        return headers

    def _body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        return build_chat_body(request, self.connection.profile.quirks, stream=stream)

    # -- chat -------------------------------------------------------------------------
    def _chat_request(self, request: ChatRequest, *, stream: bool) -> tuple[str, Any]:
        return "/chat/completions", self._body(request, stream=stream)

    def _whole(self, data: Any, request: ChatRequest) -> ChatGenerationChunk:
        return chunk_from_completion(data, self.provider, request.model)

    def _reader(self, request: ChatRequest) -> StreamReader:
        return _Reader(self.provider, request.model)

    # -- embeddings: the hooks of HTTPAdapter's template --------------------------------
    embed_batch_size = EMBEDDING_BATCH_SIZE

    def _embed_body(
        self, batch: Sequence[str], model: str, dimensions: int | None, input_type: str | None
    ) -> dict[str, Any]:
        # input_type is not sent: this API embeds queries and documents alike
        body: dict[str, Any] = {"model": model, "input": list(batch), "encoding_format": "float"}
        if dimensions is not None:
            body["dimensions"] = dimensions
        return body

    # -- models -----------------------------------------------------------------------
    def _parse_models(self, data: Any) -> list[ModelInfo]:
        items = data.get("data") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise _wire.malformed(self.provider, None, "models list has no data[]")
        models = []
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                ctx = (
                    item.get("context_window")
                    or item.get("context_length")
                    or item.get("max_model_len")
                )
                models.append(
                    ModelInfo(
                        id=item["id"],
                        provider=self.provider,
                        owned_by=item.get("owned_by"),
                        context_window=ctx if isinstance(ctx, int) else None,
                        raw=item,
                    )
                )
        return models

    def _list_models(self) -> list[ModelInfo]:
        return self._parse_models(self._send("GET", "/models", None))

    async def _alist_models(self) -> list[ModelInfo]:
        return self._parse_models(await self._asend("GET", "/models", None))
