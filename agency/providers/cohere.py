"""The Cohere v2 wire adapter: ``POST /v2/chat`` (JSON and SSE), ``POST /v2/embed``,
``GET /v1/models``.

Messages are first normalised to chat-completions dicts (`agency.providers.openai.wire_messages`)
and then mapped to Cohere's v2 shapes: an assistant turn that calls tools carries ``tool_calls``
and a ``tool_plan`` (Cohere's reasoning text before a call) instead of ``content``; tool results
are ``role: tool`` messages. Cohere cannot force one named tool, so a named ``tool_choice`` sends
only that tool with ``tool_choice: "REQUIRED"``. Structured output is
``response_format: {"type": "json_object", "json_schema": ...}``.

Streams are server-sent events whose JSON ``type`` says what they carry (``message-start``,
``content-delta``, ``tool-plan-delta``, ``tool-call-start``/``-delta``/``-end``, ``message-end``
with the finish reason and usage); tool-call pieces become LangChain tool-call chunks keyed by
the event's ``index``. Cohere's 498 (a request or answer with a deny-listed token, per its API
reference) is `ContentFiltered`; 499 (request cancelled upstream) is `ProviderUnavailable`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import httpx
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import InputTokenDetails, UsageMetadata
from langchain_core.outputs import ChatGenerationChunk

import agency.errors as errors
from agency._http import ErrorInfo, SSEEvent
from agency.errors import CapabilityError, ConnectionFailed, ProviderError
from agency.providers import _wire
from agency.providers._base import ALL_CAPABILITIES, ChatRequest, ModelInfo, normalize_finish_reason
from agency.providers._http_adapter import HTTPAdapter, HTTPChatAdapter, StreamReader
from agency.providers.openai import wire_messages

__all__ = [
    "EMBEDDING_BATCH_SIZE",
    "MODELS_PAGE_SIZE",
    "CohereAdapter",
    "build_chat_body",
    "build_embed_body",
    "chunk_from_chat_response",
    "chunk_from_stream_event",
    "cohere_messages",
    "usage_from_cohere",
]

EMBEDDING_BATCH_SIZE = 96
"""Texts per ``/v2/embed`` request (Cohere's documented maximum)."""
MODELS_PAGE_SIZE = 1000
"""``page_size`` of ``GET /v1/models`` (Cohere's maximum); further pages follow the token."""
DEFAULT_TOOL_PLAN = "I will use the tools provided."
"""Sent as ``tool_plan`` for an assistant tool call that came without one (another provider's)."""

_INPUT_TYPES = {None: "search_document", "document": "search_document", "query": "search_query"}
# TIMEOUT: Cohere stopped the generation at its time limit; like MAX_TOKENS the answer is cut.
_LOCAL_FINISH = {"TIMEOUT": "length"}


def _finish(reason: Any) -> str | None:
    if isinstance(reason, str) and reason.upper() in _LOCAL_FINISH:
        return _LOCAL_FINISH[reason.upper()]
    return normalize_finish_reason(reason)


# --------------------------------------------------------------------------- requests
def _text_of(content: Any) -> str:
    if isinstance(content, str) or content is None:
        return content or ""
    return "".join(
        str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
    )


def _user_content(content: Any) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in content or []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            image = part.get("image_url") or {}
            url = image.get("url") if isinstance(image, dict) else image
            item: dict[str, Any] = {"url": str(url)}
            if isinstance(image, dict) and image.get("detail") in ("auto", "low", "high"):
                item["detail"] = image["detail"]
            parts.append({"type": "image_url", "image_url": item})
        else:
            raise CapabilityError(f"cohere chat takes text and images, not {kind!r} content")
    return parts


def _tool_plans(messages: Sequence[BaseMessage]) -> dict[str, str]:
    """``tool_call_id -> tool_plan`` of earlier Cohere answers, to send their plans back."""
    plans: dict[str, str] = {}
    for message in messages:
        plan = (
            message.additional_kwargs.get("tool_plan") if isinstance(message, AIMessage) else None
        )
        if isinstance(plan, str) and plan:
            for call in message.tool_calls:  # type: ignore[attr-defined]
                if call.get("id"):
                    plans[str(call["id"])] = plan
    return plans


def _wire_call(call: Mapping[str, Any]) -> dict[str, Any]:
    fn = call.get("function") or {}
    name, args = str(fn.get("name", "")), str(fn.get("arguments") or "{}")
    return {
        "id": str(call.get("id")),
        "type": "function",
        "function": {"name": name, "arguments": args},
    }


def cohere_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as Cohere v2 ``messages``.

    Raises `CapabilityError` for content Cohere does not take (audio, files).
    """
    plans = _tool_plans(messages)
    out: list[dict[str, Any]] = []
    for message in wire_messages(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            out.append({"role": "system", "content": _text_of(message.get("content"))})
        elif role == "user":
            out.append({"role": "user", "content": _user_content(message.get("content"))})
        elif role == "assistant":
            text = _text_of(message.get("content"))
            calls = [_wire_call(call) for call in message.get("tool_calls") or []]
            if not calls:
                out.append({"role": "assistant", "content": text})
                continue
            plan = next((plans[c["id"]] for c in calls if c["id"] in plans), None)
            out.append(
                {
                    "role": "assistant",
                    "tool_calls": calls,
                    "tool_plan": plan or text or DEFAULT_TOOL_PLAN,
                }
            )
        elif role == "tool":
            content = message.get("content")
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": str(message.get("tool_call_id", "")),
                    "content": content if isinstance(content, str) else _text_of(content),
                }
            )
    return out


def _tools(request: ChatRequest) -> tuple[list[dict[str, Any]], str | None, bool]:
    """(tools, tool_choice, strict) in Cohere's terms. ``parallel_tool_calls`` has no Cohere
    counterpart (its models may call several tools in one answer) and is not sent."""
    tools: list[dict[str, Any]] = []
    strict = False
    for tool in request.tools or []:
        fn = dict(tool.get("function") or {})
        strict = strict or bool(fn.pop("strict", False))
        wire: dict[str, Any] = {
            "name": fn.get("name"),
            "parameters": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            wire["description"] = fn["description"]
        tools.append({"type": "function", "function": wire})
    choice = request.tool_choice
    if isinstance(choice, Mapping):
        # No named forcing in Cohere: offer only the named tool and require a call.
        name = (choice.get("function") or {}).get("name")
        tools = [t for t in tools if t["function"]["name"] == name] or tools
        return tools, "REQUIRED", strict
    words = {"required": "REQUIRED", "any": "REQUIRED", "none": "NONE"}
    return tools, words.get(str(choice)) if choice is not None else None, strict


def build_chat_body(request: ChatRequest, *, stream: bool) -> dict[str, Any]:
    """The JSON body of ``POST /v2/chat`` for ``request``."""
    body: dict[str, Any] = {"model": request.model, "messages": cohere_messages(request.messages)}
    if request.tools:
        tools, choice, strict = _tools(request)
        body["tools"] = tools
        if choice is not None:
            body["tool_choice"] = choice
        if strict:
            body["strict_tools"] = True
    fmt = request.response_format
    if fmt is not None:
        if fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema") or {}
            body["response_format"] = {"type": "json_object", "json_schema": spec.get("schema")}
        elif fmt.get("type") == "json_object":
            body["response_format"] = {"type": "json_object"}
        else:
            body["response_format"] = dict(fmt)
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.top_p is not None:
        body["p"] = request.top_p
    if request.seed is not None:
        body["seed"] = request.seed
    if stream:
        body["stream"] = True
    body.update(request.extra_body)
    return body


def build_embed_body(
    texts: Sequence[str], model: str, dimensions: int | None, input_type: str | None
) -> dict[str, Any]:
    """The JSON body of ``POST /v2/embed``; ``input_type`` is ``"query"``, ``"document"``
    (the default) or one of Cohere's own words (``"classification"``, ``"clustering"``)."""
    body: dict[str, Any] = {
        "model": model,
        "texts": list(texts),
        "input_type": _INPUT_TYPES.get(input_type, input_type),
        "embedding_types": ["float"],
    }
    if dimensions is not None:
        body["output_dimension"] = dimensions
    return body


# --------------------------------------------------------------------------- responses
def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def usage_from_cohere(usage: Any) -> UsageMetadata | None:
    """LangChain usage from Cohere's ``usage``: the model's own token counts (``tokens``),
    else the billed ones; ``cached_tokens`` as cache reads."""
    if not isinstance(usage, dict):
        return None
    counts: dict[str, int] = {}
    for source in ("billed_units", "tokens"):  # tokens last: it wins where both are given
        part = usage.get(source)
        if isinstance(part, dict):
            for key in ("input_tokens", "output_tokens"):
                number = _count(part.get(key))
                if number is not None:
                    counts[key] = number
    if not counts:
        return None
    inp, out = counts.get("input_tokens", 0), counts.get("output_tokens", 0)
    result = UsageMetadata(input_tokens=inp, output_tokens=out, total_tokens=inp + out)
    cached = _count(usage.get("cached_tokens"))
    if cached:
        result["input_token_details"] = InputTokenDetails(cache_read=cached)
    return result


def _metadata(
    provider: str, model: str | None, message_id: Any, finish: Any, usage: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {"provider": provider, "model_provider": "cohere"}
    if model:
        meta["model_name"] = model
    if message_id:
        meta["id"] = message_id
    if finish is not None:
        meta["finish_reason"] = _finish(finish)
        if meta["finish_reason"] != finish:
            meta["raw_finish_reason"] = finish
    if isinstance(usage, dict) and isinstance(usage.get("billed_units"), dict):
        meta["billed_units"] = usage["billed_units"]
    return meta


def chunk_from_chat_response(data: Any, provider: str, model: str | None) -> ChatGenerationChunk:
    """The whole answer of a non-streamed ``/v2/chat`` call as one chunk."""
    with _wire.parsing(provider, model):
        if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
            raise _wire.malformed(provider, model, "no message object in the chat response")
        message = data["message"]
        content = message.get("content") or []
        if not isinstance(content, list):
            raise _wire.malformed(provider, model, "message.content is not a list")
        texts, thoughts = [], []
        for item in content:
            if not isinstance(item, dict):
                raise _wire.malformed(provider, model, "a content item is not an object")
            if item.get("type") == "text" and isinstance(item.get("text"), str):
                texts.append(item["text"])
            elif item.get("type") == "thinking" and isinstance(item.get("thinking"), str):
                thoughts.append(item["thinking"])
        extra: dict[str, Any] = {}
        if thoughts:
            extra["reasoning_content"] = "".join(thoughts)
        if message.get("tool_plan"):
            extra["tool_plan"] = message["tool_plan"]
        finish = data.get("finish_reason")
        meta = _metadata(provider, model, data.get("id"), finish, data.get("usage"))
        if message.get("citations"):
            meta["citations"] = message["citations"]
        chunk = AIMessageChunk(
            content="".join(texts),
            tool_call_chunks=_wire.openai_tool_calls(message.get("tool_calls"), provider, model),
            additional_kwargs=extra,
            usage_metadata=usage_from_cohere(data.get("usage")),
            response_metadata=meta,
            id=data.get("id"),
            chunk_position="last",
        )
        return ChatGenerationChunk(
            message=chunk, generation_info={"finish_reason": _finish(finish)}
        )


def chunk_from_stream_event(
    event: Any, provider: str, model: str | None, message_id: str | None = None
) -> ChatGenerationChunk | None:
    """One ``/v2/chat`` stream event as a LangChain chunk; ``None`` for events that carry
    nothing to pass on (``message-start``, ``content-start/-end``, ``tool-call-end``).

    A ``message-end`` with an ``error`` raises `ProviderUnavailable`.
    """
    with _wire.parsing(provider, model):
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise _wire.malformed(provider, model, "stream event without a type")
        kind = event["type"]
        delta: dict[str, Any] = event["delta"] if isinstance(event.get("delta"), dict) else {}
        message: dict[str, Any] = delta["message"] if isinstance(delta.get("message"), dict) else {}

        def chunk(info: dict[str, Any] | None = None, **fields: Any) -> ChatGenerationChunk:
            return ChatGenerationChunk(
                message=AIMessageChunk(content=fields.pop("content", ""), id=message_id, **fields),
                generation_info=info,
            )

        if kind == "content-delta":
            content = message.get("content")
            if not isinstance(content, dict):
                raise _wire.malformed(
                    provider, model, "content-delta without delta.message.content"
                )
            text, thought = content.get("text"), content.get("thinking")
            if text is not None and not isinstance(text, str):
                raise _wire.malformed(provider, model, "content-delta text is not a string")
            extra = {"reasoning_content": thought} if isinstance(thought, str) and thought else {}
            return chunk(content=text, additional_kwargs=extra) if text or extra else None
        if kind == "tool-plan-delta":
            plan = message.get("tool_plan")
            return (
                chunk(additional_kwargs={"tool_plan": plan})
                if isinstance(plan, str) and plan
                else None
            )
        if kind in ("tool-call-start", "tool-call-delta"):
            call = message.get("tool_calls")
            fn = call.get("function") if isinstance(call, dict) else None
            index = event.get("index")
            if not isinstance(call, dict) or not isinstance(fn, dict) or not _wire.integer(index):
                raise _wire.malformed(
                    provider, model, f"{kind} without tool_calls.function and index"
                )
            start = kind == "tool-call-start"
            piece = _wire.tool_piece(
                name=fn.get("name") if start else None,
                args=fn.get("arguments"),
                id=call.get("id") if start else None,
                index=index,
                provider=provider,
                model=model,
            )
            return chunk(tool_call_chunks=[piece])
        if kind == "citation-start":
            citations = message.get("citations")
            return chunk(response_metadata={"citations": [citations]}) if citations else None
        if kind == "message-end":
            if delta.get("error"):
                raise errors.ProviderUnavailable(
                    f"generation failed: {delta['error']}", provider=provider, model=model
                )
            finish, usage = delta.get("finish_reason"), delta.get("usage")
            return chunk(
                {"finish_reason": _finish(finish)},
                usage_metadata=usage_from_cohere(usage),
                response_metadata=_metadata(provider, model, message_id, finish, usage),
                chunk_position="last",
            )
        return None


# --------------------------------------------------------------------------- adapter
class CohereAdapter(HTTPChatAdapter):
    """Cohere's v2 API over the shared HTTP plumbing."""

    capabilities = ALL_CAPABILITIES
    request_id_headers = ("x-debug-trace-id", *HTTPAdapter.request_id_headers)

    def _error_info(self, body: Any, text: str) -> ErrorInfo:
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return ErrorInfo(body["message"])
        return super()._error_info(body, text)

    def _error(self, response: httpx.Response, model: str | None) -> ProviderError:
        err = super()._error(response, model)
        status = response.status_code
        kw: dict[str, Any] = {
            "provider": err.provider,
            "model": err.model,
            "status_code": status,
            "request_id": err.request_id,
        }
        if status == 498:  # "a request or response contains a deny-listed token"
            return errors.ContentFiltered(err.message, **kw)
        if status == 499:  # cancelled before Cohere finished; nothing wrong with the request
            return errors.ProviderUnavailable(err.message, **kw)
        return err

    # -- chat -------------------------------------------------------------------------
    def _chat_request(self, request: ChatRequest, *, stream: bool) -> tuple[str, Any]:
        return "/v2/chat", build_chat_body(request, stream=stream)

    def _whole(self, data: Any, request: ChatRequest) -> ChatGenerationChunk:
        return chunk_from_chat_response(data, self.provider, request.model)

    def _reader(self, request: ChatRequest) -> StreamReader:
        return _Reader(self.provider, request.model)

    # -- embeddings: the hooks of HTTPAdapter's template --------------------------------
    embed_batch_size = EMBEDDING_BATCH_SIZE
    embed_path = "/v2/embed"

    def _embed_body(
        self, batch: Sequence[str], model: str, dimensions: int | None, input_type: str | None
    ) -> dict[str, Any]:
        """``input_type`` ``"query"`` or ``"document"`` (the default), or Cohere's own word."""
        return build_embed_body(batch, model, dimensions, input_type)

    def _embed_vectors(self, data: Any, count: int, model: str) -> list[list[float]]:
        embeddings = data.get("embeddings") if isinstance(data, dict) else None
        vectors = embeddings.get("float") if isinstance(embeddings, dict) else None
        return _wire.number_vectors(vectors, count, self.provider, model, "embeddings.float")

    # -- models -----------------------------------------------------------------------
    def _parse_models(self, data: Any) -> tuple[list[ModelInfo], str | None]:
        items = data.get("models") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise _wire.malformed(self.provider, None, "models list has no models[]")
        models = [
            ModelInfo(
                item["name"], self.provider, "cohere", _count(item.get("context_length")), item
            )
            for item in items
            if isinstance(item, dict) and isinstance(item.get("name"), str)
        ]
        token = data.get("next_page_token")
        return models, token if isinstance(token, str) and token else None

    def _list_models(self) -> list[ModelInfo]:
        models: list[ModelInfo] = []
        token: str | None = None
        for _ in range(100):  # a bound, in case a server kept handing out tokens
            page, token = self._parse_models(self._send("GET", _models_path(token), None))
            models += page
            if token is None:
                break
        return models

    async def _alist_models(self) -> list[ModelInfo]:
        models: list[ModelInfo] = []
        token: str | None = None
        for _ in range(100):
            data = await self._asend("GET", _models_path(token), None)
            page, token = self._parse_models(data)
            models += page
            if token is None:
                break
        return models


def _models_path(token: str | None) -> str:
    params = {"page_size": str(MODELS_PAGE_SIZE)}
    if token:
        params["page_token"] = token
    return f"/v1/models?{urlencode(params)}"


class _Reader:
    """Reads one ``/v2/chat`` event stream: the message id, and whether it finished."""

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.message_id: str | None = None
        self.finished = False
        self.done = False

    def feed(self, item: SSEEvent) -> ChatGenerationChunk | None:
        data = item.data
        if data.strip() == "[DONE]":
            self.done = True
            return None
        event = _wire.json_payload(data, self.provider, self.model, "stream event")
        if isinstance(event, dict) and event.get("type") == "message-start":
            self.message_id = event.get("id") if isinstance(event.get("id"), str) else None
        chunk = chunk_from_stream_event(event, self.provider, self.model, self.message_id)
        if isinstance(event, dict) and event.get("type") == "message-end":
            self.finished = self.done = True
        return chunk

    def end(self) -> None:
        # message-end carries the finish reason; a stream that stops before it was cut off.
        if not self.finished:
            raise ConnectionFailed(
                "stream ended before message-end", provider=self.provider, model=self.model
            )
