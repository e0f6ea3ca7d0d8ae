"""The Ollama native-API adapter (``POST /api/chat``, ``/api/embed``, ``/api/tags``, ``/api/show``).

Wire format (docs/api.md and docs/openapi.yaml of ollama/ollama):

* Chat: ``{"model", "messages": [{role, content, images?, tool_calls?, tool_name?, thinking?}],
  "stream", "format", "options": {temperature, top_p, num_predict, stop, seed, ...}, "tools",
  "keep_alive"?, "think"?}``. A streamed answer is NDJSON: one JSON object per line, the last
  with ``done: true``, ``done_reason`` and the token counts (``prompt_eval_count`` in,
  ``eval_count`` out; durations in ns). A failure after the first line arrives *inside* the
  stream as ``{"error": "..."}`` and is mapped into the error tree like an HTTP error.
* Tool calls arrive complete (``arguments`` is a JSON object, not a string), possibly in a
  non-final line, and carry no id: ids are derived from the answer's ``created_at``, the call's
  position, name and arguments, so they are the same on every chunk and unique per answer.
  ``done_reason`` stays ``"stop"`` when the model called tools; ``finish_reason`` then says
  ``tool_calls`` (``raw_finish_reason`` keeps ``"stop"``).
* ``message.thinking`` (thinking models, ``think`` passed through ``model_kwargs``) becomes
  ``additional_kwargs["reasoning_content"]`` and is sent back as ``thinking`` in history.
* Images are raw base64 strings in ``images`` (no ``data:`` prefix). Ollama cannot fetch image
  URLs, take audio or files: those raise `CapabilityError` before anything is sent.

Limits stated rather than hidden:

* Ollama has no ``tool_choice``. ``"none"`` sends no tools; a named tool sends only that tool
  (the model cannot call another, but may still answer in text); ``"required"``/``"any"`` sends
  the tools unchanged, so the model *may* answer without calling one. ``parallel_tool_calls``
  has no Ollama equivalent and is not sent.
* Usage has no cached-token or reasoning-token split (``eval_count`` includes thinking).

``model_kwargs``/call kwargs: ``keep_alive``, ``think``, ``format``, ``logprobs``,
``top_logprobs`` go to the top level; ``options`` (a dict) and every other key (``num_ctx``,
``top_k``, ``repeat_penalty``, ...) are Modelfile options merged into ``options``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote_to_bytes

import httpx
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import ToolCallChunk
from langchain_core.outputs import ChatGenerationChunk

from agency._http import error_from_response
from agency.errors import (
    CapabilityError,
    ConnectionFailed,
    ModelNotFound,
    ProviderError,
)
from agency.providers import _wire
from agency.providers._base import ALL_CAPABILITIES, ChatRequest, ModelInfo, normalize_finish_reason
from agency.providers._http_adapter import HTTPChatAdapter, StreamReader
from agency.providers.openai import wire_messages

__all__ = [
    "EMBEDDING_BATCH_SIZE",
    "TOP_LEVEL_EXTRAS",
    "OllamaAdapter",
    "StreamState",
    "build_chat_body",
    "chunk_from_response",
    "context_window_from_show",
    "ollama_messages",
    "stream_error",
    "usage_from_ollama",
]

EMBEDDING_BATCH_SIZE = 256
"""Texts per ``/api/embed`` request. Ollama documents no limit; batching keeps each request
well inside the timeout on a local machine."""

TOP_LEVEL_EXTRAS = frozenset({"keep_alive", "think", "format", "logprobs", "top_logprobs"})
"""Extra request keys that belong at the top of the chat body; any other extra is an option."""

# done_reason words only Ollama uses: "load"/"unload" answer an empty request that only
# (un)loaded the model, which finished normally.
_DONE_REASONS = {"load": "stop", "unload": "stop"}
_DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")


# --------------------------------------------------------------------------- requests


def _image_from_url(url: str) -> str:
    """The raw base64 payload of a ``data:`` URL; anything else cannot reach Ollama."""
    if not url.startswith("data:"):
        raise CapabilityError(
            f"Ollama takes images as base64 data only and cannot fetch {url[:80]!r}: download "
            'it and pass {"type": "image", "base64": ..., "mime_type": ...}'
        )
    head, sep, payload = url.partition(",")
    if not sep:
        raise CapabilityError("malformed data: URL for an image (no comma)")
    if head.endswith(";base64"):
        return payload
    return base64.b64encode(unquote_to_bytes(payload)).decode("ascii")


def _text_and_images(content: Any, role: str) -> tuple[str, list[str]]:
    """Text and base64 images of a chat-completions ``content`` (string or parts)."""
    if content is None or isinstance(content, str):
        return content or "", []
    texts: list[str] = []
    images: list[str] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
            continue
        kind = part.get("type")
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url", "") if isinstance(image, dict) else str(image or "")
            images.append(_image_from_url(str(url)))
        else:
            # Audio, files and anything unknown: Ollama's messages hold only text and images.
            raise CapabilityError(f"Ollama cannot take {kind!r} content in a {role} message")
    # Parts are separate paragraphs; gluing them with "" would fuse words.
    return "\n".join(t for t in texts if t), images


def _arguments(raw: Any) -> dict[str, Any]:
    """Tool-call arguments as the JSON object Ollama requires."""
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except (TypeError, ValueError):
        parsed = None
    # LangChain always serialises a dict here; anything else has no object form to send.
    return parsed if isinstance(parsed, dict) else {}


def _convert(wire: Mapping[str, Any], names: dict[str, str]) -> dict[str, Any]:
    role = str(wire.get("role"))
    if role == "developer":
        role = "system"
    text, images = _text_and_images(wire.get("content"), role)
    out: dict[str, Any] = {"role": role, "content": text}
    if images:
        out["images"] = images
    if role == "assistant" and wire.get("tool_calls"):
        calls = []
        for call in wire["tool_calls"]:
            fn = call.get("function") or {}
            if call.get("id") and fn.get("name"):
                names[str(call["id"])] = str(fn["name"])
            calls.append(
                {"function": {"name": fn.get("name"), "arguments": _arguments(fn.get("arguments"))}}
            )
        out["tool_calls"] = calls
    if role == "tool":
        name = wire.get("name") or names.get(str(wire.get("tool_call_id")))
        if name:
            out["tool_name"] = str(name)
    return out


def ollama_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as Ollama chat messages.

    Goes through chat-completions dicts (`agency.providers.openai.wire_messages`, which
    normalises every LangChain content form), then: text parts joined, images as raw base64,
    tool-call arguments as objects, tool results named by ``tool_name`` (the name of the call
    they answer), ``name`` dropped (Ollama has no per-message name), an AI message's
    ``reasoning_content`` sent back as ``thinking``.
    """
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, ToolMessage) and message.name:
            names.setdefault(message.tool_call_id, message.name)
        converted = [_convert(wire, names) for wire in wire_messages([message])]
        thinking = (
            message.additional_kwargs.get("reasoning_content")
            if isinstance(message, AIMessage)
            else None
        )
        if isinstance(thinking, str) and thinking:
            for item in converted:
                if item["role"] == "assistant":
                    item["thinking"] = thinking
        out.extend(converted)
    return out


def _tools(request: ChatRequest) -> list[dict[str, Any]] | None:
    """The tools to send, narrowed by ``tool_choice`` as far as Ollama allows (module doc)."""
    if not request.tools or request.tool_choice == "none":
        return None
    tools: list[dict[str, Any]] = []
    for tool in request.tools:
        fn = dict(tool.get("function") or {})
        fn.pop("strict", None)  # OpenAI-only; Ollama constrains nothing per tool
        tools.append({"type": "function", "function": fn})
    choice = request.tool_choice
    if isinstance(choice, Mapping):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        only = [t for t in tools if t["function"].get("name") == name]
        return only or tools
    return tools


def _format(response_format: Mapping[str, Any] | None) -> str | dict[str, Any] | None:
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        return dict(schema) if isinstance(schema, Mapping) else "json"
    if kind == "text":
        return None
    raise CapabilityError(f"Ollama has no response_format {kind!r}")


def build_chat_body(request: ChatRequest, *, stream: bool) -> dict[str, Any]:
    """The JSON body of ``POST /api/chat`` for ``request``."""
    body: dict[str, Any] = {
        "model": request.model,
        "messages": ollama_messages(request.messages),
        "stream": stream,
    }
    sampling = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "num_predict": request.max_tokens,  # Ollama's name for max_tokens
        "stop": list(request.stop) if request.stop else None,
        "seed": request.seed,
    }
    options = {key: value for key, value in sampling.items() if value is not None}
    tools = _tools(request)
    if tools:
        body["tools"] = tools
    fmt = _format(request.response_format)
    if fmt is not None:
        body["format"] = fmt
    for key, value in request.extra_body.items():
        if key == "options" and isinstance(value, Mapping):
            options.update(value)
        elif key in TOP_LEVEL_EXTRAS:
            body[key] = value
        else:
            options[key] = value
    if options:
        body["options"] = options
    return body


# --------------------------------------------------------------------------- responses
@dataclass
class StreamState:
    """What one answer's parser carries from line to line."""

    tool_calls: int = 0
    """Tool calls seen so far (the next call's index)."""
    done: bool = False
    """Whether the ``done: true`` line has arrived."""


_int = _wire.count


def usage_from_ollama(data: Mapping[str, Any]) -> UsageMetadata | None:
    """Usage from a final line's ``prompt_eval_count``/``eval_count`` (None when absent)."""
    if "prompt_eval_count" not in data and "eval_count" not in data:
        return None
    prompt, output = _int(data.get("prompt_eval_count")), _int(data.get("eval_count"))
    return UsageMetadata(input_tokens=prompt, output_tokens=output, total_tokens=prompt + output)


def stream_error(message: str, provider: str, model: str | None) -> ProviderError:
    """An ``{"error": "..."}`` line, classified like the HTTP error Ollama would have sent
    before the first byte: a missing model 404, a too-long input 400, anything else 500."""
    lowered = message.lower()
    status = 500
    if "not found" in lowered:
        status = 404
    elif "context length" in lowered or "context window" in lowered:
        status = 400
    fake = httpx.Response(status, json={"error": message})
    return error_from_response(fake, provider=provider, model=model)


def _call_id(created_at: Any, index: int, name: Any, arguments: Any) -> str:
    if not isinstance(created_at, str) or not created_at:
        return f"call_{uuid.uuid4().hex[:24]}"
    key = json.dumps([created_at, index, name, arguments], sort_keys=True, default=str)
    return "call_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _tool_chunks(
    message: Mapping[str, Any],
    data: Mapping[str, Any],
    state: StreamState,
    where: tuple[str, str | None],
) -> list[ToolCallChunk]:
    raw = message.get("tool_calls")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _wire.malformed(*where, "message.tool_calls is not a list")
    chunks = []
    for call in raw:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _wire.malformed(*where, "a tool call has no function.name")
        args = {} if fn.get("arguments") is None else fn["arguments"]
        text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
        index = state.tool_calls
        state.tool_calls += 1
        given = call.get("id")  # recent Ollama versions send one
        if not isinstance(given, str) or not given:
            given = _call_id(data.get("created_at"), index, fn["name"], args)
        chunks.append(_wire.tool_piece(name=fn["name"], args=text, id=given, index=index,
                                 provider=where[0], model=where[1]))  # fmt: skip
    return chunks


def _metadata(data: Mapping[str, Any], provider: str, state: StreamState) -> dict[str, Any]:
    raw = data.get("done_reason")
    reason = normalize_finish_reason(_DONE_REASONS.get(str(raw), raw) if raw else "stop")
    if state.tool_calls and reason == "stop":
        reason = "tool_calls"  # Ollama says "stop" after tool calls
    meta: dict[str, Any] = {"provider": provider, "model_provider": "ollama"}
    if isinstance(data.get("model"), str):
        meta["model_name"] = data["model"]
    meta["finish_reason"] = reason
    if raw is not None and raw != reason:
        meta["raw_finish_reason"] = raw
    if isinstance(data.get("created_at"), str):
        meta["created_at"] = data["created_at"]
    for key in _DURATIONS:
        if isinstance(data.get(key), int):
            meta[key] = data[key]
    return meta


def chunk_from_response(
    data: Any, provider: str, model: str | None, state: StreamState
) -> ChatGenerationChunk | None:
    """One ``/api/chat`` answer object (a stream line, or the whole non-streamed answer) as a
    LangChain chunk; ``None`` when a line carries nothing. The ``done`` object's chunk holds
    usage, metadata and ``chunk_position="last"``. An ``error`` object raises it, mapped."""
    with _wire.parsing(provider, model):
        where = (provider, model)
        if not isinstance(data, dict):
            raise _wire.malformed(provider, model, "answer is not a JSON object")
        if "error" in data:
            raise stream_error(str(data["error"]), provider, model)
        message = {} if data.get("message") is None else data["message"]
        if not isinstance(message, dict):
            raise _wire.malformed(provider, model, "message is not an object")
        content, thinking = message.get("content") or "", message.get("thinking") or ""
        done = data.get("done", False)
        if (
            not isinstance(content, str)
            or not isinstance(thinking, str)
            or not isinstance(done, bool)
        ):
            raise _wire.malformed(
                provider, model, "message.content/thinking or done of a wrong type"
            )
        tools = _tool_chunks(message, data, state, where)
        if not (content or thinking or tools or done):
            return None
        extra = {"reasoning_content": thinking} if thinking else {}
        if not done:
            return ChatGenerationChunk(
                message=AIMessageChunk(
                    content=content, tool_call_chunks=tools, additional_kwargs=extra
                )
            )
        state.done = True
        meta = _metadata(data, provider, state)
        chunk = AIMessageChunk(
            content=content,
            tool_call_chunks=tools,
            additional_kwargs=extra,
            usage_metadata=usage_from_ollama(data),
            response_metadata=meta,
            chunk_position="last",
        )
        return ChatGenerationChunk(
            message=chunk, generation_info={"finish_reason": meta["finish_reason"]}
        )


def context_window_from_show(data: Any) -> int | None:
    """``<architecture>.context_length`` from an ``/api/show`` answer's ``model_info``: the
    context the model was trained for (Ollama runs it with ``num_ctx``, often smaller)."""
    info = data.get("model_info") if isinstance(data, dict) else None
    if not isinstance(info, dict):
        return None
    arch = info.get("general.architecture")
    value = info.get(f"{arch}.context_length") if isinstance(arch, str) else None
    if not isinstance(value, int):
        value = next(
            (v for k, v in info.items() if k.endswith(".context_length") and isinstance(v, int)),
            None,
        )
    return value


class _Reader:
    """Reads an ``/api/chat`` NDJSON stream up to its ``done: true`` line."""

    def __init__(self, provider: str, model: str) -> None:
        self.provider, self.model, self.state = provider, model, StreamState()

    @property
    def done(self) -> bool:
        return self.state.done

    def feed(self, line: str) -> ChatGenerationChunk | None:
        data = _wire.json_payload(line, self.provider, self.model, "stream line")
        return chunk_from_response(data, self.provider, self.model, self.state)

    def end(self) -> None:
        if not self.state.done:
            raise ConnectionFailed(
                "stream ended before the answer finished (no line with done: true)",
                provider=self.provider,
                model=self.model,
            )


# --------------------------------------------------------------------------- adapter
class OllamaAdapter(HTTPChatAdapter):
    """Ollama's native API over pooled httpx clients (local server or ollama.com)."""

    capabilities = replace(ALL_CAPABILITIES, tool_choice=False, cached_tokens=False)

    # -- errors -------------------------------------------------------------------------
    def _error(self, response: httpx.Response, model: str | None) -> ProviderError:
        err = super()._error(response, model)
        if response.status_code != 404:
            return err
        try:
            ollama_said = isinstance(response.json(), dict)
        except ValueError:
            ollama_said = False
        if ollama_said and model:
            hint = f"; run `ollama pull {model}` on the Ollama host"
        elif ollama_said:
            return err
        else:  # Go's router: "404 page not found" as text, so not an Ollama API root
            hint = (
                f"; {self.connection.base_url} does not serve Ollama's native API (/api/...): "
                "base_url must be the server root, e.g. http://localhost:11434 (no /v1)"
            )
        return ModelNotFound(
            err.message + hint,
            provider=err.provider,
            model=err.model,
            status_code=err.status_code,
            request_id=err.request_id,
        )

    def _transport_error(self, exc: httpx.TransportError, model: str | None) -> ProviderError:
        err = super()._transport_error(exc, model)
        if isinstance(exc, httpx.ConnectError):
            return ConnectionFailed(
                f"{err.message}; is Ollama running at {self.connection.base_url}? Start it "
                "with `ollama serve` (or point OLLAMA_HOST / base_url at it)",
                provider=err.provider,
                model=err.model,
            )
        return err

    # -- chat -------------------------------------------------------------------------
    sse = False  # streams are NDJSON lines

    def _chat_request(self, request: ChatRequest, *, stream: bool) -> tuple[str, Any]:
        return "/api/chat", build_chat_body(request, stream=stream)

    def _whole(self, data: Any, request: ChatRequest) -> ChatGenerationChunk:
        model, state = request.model, StreamState()
        chunk = chunk_from_response(data, self.provider, model, state)  # raises an "error"
        if chunk is None or not state.done or not isinstance(data.get("message"), dict):
            raise _wire.malformed(
                self.provider, model, "a chat answer without message and done: true"
            )
        return chunk

    def _reader(self, request: ChatRequest) -> StreamReader:
        return _Reader(self.provider, request.model)

    # -- embeddings: the hooks of HTTPAdapter's template --------------------------------
    embed_batch_size = EMBEDDING_BATCH_SIZE
    embed_path = "/api/embed"

    def _embed_body(
        self, batch: Sequence[str], model: str, dimensions: int | None, input_type: str | None
    ) -> dict[str, Any]:
        # input_type is not sent: this API embeds queries and documents alike
        body: dict[str, Any] = {"model": model, "input": list(batch)}
        if dimensions is not None:
            body["dimensions"] = dimensions
        return body

    def _embed_vectors(self, data: Any, count: int, model: str) -> list[list[float]]:
        vectors = data.get("embeddings") if isinstance(data, dict) else None
        return _wire.number_vectors(vectors, count, self.provider, model, "embeddings[]")

    # -- models -----------------------------------------------------------------------
    def _model(self, name: str, record: dict[str, Any], context: int | None = None) -> ModelInfo:
        details = record.get("details")
        family = details.get("family") if isinstance(details, dict) else None
        owner = family if isinstance(family, str) and family else None
        return ModelInfo(name, self.provider, owner, context, record)

    def _parse_tags(self, data: Any) -> list[ModelInfo]:
        items = data.get("models") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise _wire.malformed(self.provider, None, "no models[] in /api/tags")
        # A context window costs one /api/show per model: left to `model_info`.
        names = [(i.get("name") or i.get("model"), i) for i in items if isinstance(i, dict)]
        return [self._model(name, item) for name, item in names if isinstance(name, str)]

    def _list_models(self) -> list[ModelInfo]:
        return self._parse_tags(self._send("GET", "/api/tags", None))

    async def _alist_models(self) -> list[ModelInfo]:
        return self._parse_tags(await self._asend("GET", "/api/tags", None))

    def _object(self, data: Any, path: str, model: str | None, key: str = "") -> dict[str, Any]:
        if not isinstance(data, dict) or (key and not isinstance(data.get(key), str)):
            raise _wire.malformed(
                self.provider, model, f"{path} answer is not the documented object"
            )
        return data

    def show(self, model: str) -> dict[str, Any]:
        """Ollama's ``/api/show`` record of ``model`` (details, ``model_info``, capabilities,
        template, parameters); `ModelNotFound` with an ``ollama pull`` hint when absent."""
        return self._object(self._send("POST", "/api/show", model, {"model": model}), "show", model)

    async def ashow(self, model: str) -> dict[str, Any]:
        """Async twin of `show`."""
        data = await self._asend("POST", "/api/show", model, {"model": model})
        return self._object(data, "show", model)

    def model_info(self, model: str) -> ModelInfo:
        """`ModelInfo` of one model, with its context window (one ``/api/show`` call)."""
        data = self.show(model)
        return self._model(model, data, context_window_from_show(data))

    async def amodel_info(self, model: str) -> ModelInfo:
        """Async twin of `model_info`."""
        data = await self.ashow(model)
        return self._model(model, data, context_window_from_show(data))

    def version(self) -> str:
        """The server's version (``GET /api/version``), e.g. ``"0.12.6"``."""
        data = self._send("GET", "/api/version", None)
        return str(self._object(data, "/api/version", None, "version")["version"])

    async def aversion(self) -> str:
        """Async twin of `version`."""
        data = await self._asend("GET", "/api/version", None)
        return str(self._object(data, "/api/version", None, "version")["version"])
