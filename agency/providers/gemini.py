"""The Google AI Gemini API (``v1beta``) wire adapter.

``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse`` (each
SSE ``data:`` is a whole ``GenerateContentResponse``; no ``[DONE]``: the last one has a
``finishReason``), ``:embedContent`` / ``:batchEmbedContents``, the paged ``GET /v1beta/models``;
key in ``x-goog-api-key``. Tools are declared in Gemini's OpenAPI-subset `Schema` (or as
``parametersJsonSchema`` where it falls short), structured output uses ``responseJsonSchema``,
tool results are ``functionResponse`` parts named after the call they answer, function calls'
``thoughtSignature``s round-trip through ``additional_kwargs[SIGNATURES_KEY]`` (Gemini 3 needs
them) and ``thought: true`` parts become ``additional_kwargs["reasoning_content"]``.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import InputTokenDetails, OutputTokenDetails, UsageMetadata
from langchain_core.outputs import ChatGenerationChunk

import agency.errors as errors
from agency._http import ErrorInfo, SSEEvent, default_error_info, error_from_response
from agency.errors import CapabilityError, ConnectionFailed, MalformedResponse, ProviderError
from agency.providers import _wire
from agency.providers._base import ALL_CAPABILITIES, ChatRequest, ModelInfo, normalize_finish_reason
from agency.providers._gemini_schema import gemini_declaration, gemini_schema
from agency.providers._http_adapter import EmbedCall, HTTPAdapter, HTTPChatAdapter, StreamReader

__all__ = [
    "DEFAULT_API_VERSION",
    "EMBEDDING_BATCH_SIZE",
    "SIGNATURES_KEY",
    "GeminiAdapter",
    "build_generate_body",
    "gemini_error_info",
    "gemini_schema",
    "map_error",
    "usage_from_gemini",
    "wire_contents",
]

DEFAULT_API_VERSION = "v1beta"
"""The API version in URLs unless the connection's ``api_version`` option names another."""
EMBEDDING_BATCH_SIZE = 100
"""Requests per ``:batchEmbedContents`` call (the API's limit)."""
SIGNATURES_KEY = "__gemini_function_call_thought_signatures__"
"""``additional_kwargs`` key of ``{tool_call_id: thoughtSignature}``; langchain-google-genai's
name, so histories made by either library keep their signatures."""

_GENERATED_ID = "gemini-call-"  # ids invented here mean nothing to the API: never sent back
_TASK_TYPES = {"query": "RETRIEVAL_QUERY", "document": "RETRIEVAL_DOCUMENT"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
_TOKEN_LIMIT = re.compile(r"input token count.*exceeds the maximum", re.IGNORECASE | re.DOTALL)


# --------------------------------------------------------------------------- tools
def _tool_config(choice: str | Mapping[str, Any]) -> dict[str, Any]:
    """``tool_choice`` as ``toolConfig``: a named function is ``ANY`` limited to that name."""
    if isinstance(choice, Mapping):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    mode = {"auto": "AUTO", "none": "NONE", "required": "ANY", "any": "ANY"}.get(choice)
    if mode is None:
        raise ValueError(f"unknown tool_choice {choice!r}")
    return {"functionCallingConfig": {"mode": mode}}


# --------------------------------------------------------------------------- requests
def _media(block: Mapping[str, Any]) -> dict[str, Any]:
    """One LangChain v1 data block (image, audio, video, file) as an inline or file part."""
    mime = block.get("mime_type")
    uri = str(block.get("url") or block.get("file_id") or "")
    if uri.startswith("data:") and ";base64," in uri:
        mime, data = uri[5:].split(";base64,", 1)
        return {"inlineData": {"mimeType": mime or "application/octet-stream", "data": data}}
    if block.get("base64"):
        mime = mime or {"image": "image/png", "audio": "audio/wav"}.get(str(block["type"]))
        return {"inlineData": {"mimeType": mime or "application/octet-stream",
                               "data": block["base64"]}}  # fmt: skip
    if not uri:
        raise CapabilityError(f"gemini: a {block['type']} block needs base64, url or file_id")
    if uri.startswith("files/"):  # a Files API name; fileData wants the file's URI
        uri = f"https://generativelanguage.googleapis.com/{DEFAULT_API_VERSION}/{uri}"
    mime = mime or mimetypes.guess_type(uri.split("?", 1)[0])[0]
    return {"fileData": {"fileUri": uri, **({"mimeType": mime} if mime else {})}}


def _tool_result(content: Any, error: bool) -> dict[str, Any]:
    """A tool's output as ``functionResponse.response``, which must be a JSON object."""
    if isinstance(content, list):
        if any(isinstance(b, dict) and b.get("type") != "text" for b in content):
            # functionResponse.parts (media in tool results) exist for Gemini 3 only
            raise CapabilityError("gemini: a tool result can carry text or JSON only")
        content = "".join(b if isinstance(b, str) else str(b.get("text", "")) for b in content)
    if isinstance(content, str):
        with contextlib.suppress(ValueError):
            content = json.loads(content)
    if isinstance(content, dict) and not error:
        return content
    return {"error": content} if error else {"result": content}


@dataclass
class _History:
    """What converting one message needs to know about the others."""

    names: dict[str, str] = field(default_factory=dict)  # tool_call_id -> function name
    signatures: dict[str, str] = field(default_factory=dict)  # tool_call_id -> signature

    def response(self, call_id: str | None, result: Any, error: bool) -> dict[str, Any]:
        name = self.names.get(call_id or "")
        if not name:
            raise ValueError(f"tool result {call_id!r} answers no tool call in the history")
        fr: dict[str, Any] = {"name": name, "response": _tool_result(result, error)}
        if call_id and not call_id.startswith(_GENERATED_ID):
            fr["id"] = call_id
        return {"functionResponse": fr}

    def calls(self, message: AIMessage) -> list[dict[str, Any]]:
        parts = []
        for tool_call in message.tool_calls:
            call_id, name = tool_call["id"], tool_call["name"]
            call: dict[str, Any] = {"name": name, "args": tool_call["args"]}
            if call_id and not call_id.startswith(_GENERATED_ID):
                call["id"] = call_id
            part: dict[str, Any] = {"functionCall": call}
            if call_id in self.signatures:
                part["thoughtSignature"] = self.signatures[call_id]
            parts.append(part)
            self.names[call_id or ""] = name
        return parts


def _user_parts(message: BaseMessage, history: _History) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    blocks: list[dict[str, Any]] = [dict(b) for b in message.content_blocks]
    for block in blocks:
        kind, value = block.get("type"), block.get("value")
        if kind == "text":
            parts += [{"text": block["text"]}] if block.get("text") else []
        elif kind in ("image", "audio", "video", "file"):
            parts.append(_media(block))
        elif (
            kind == "non_standard"
            and isinstance(value, dict)
            and value.get("type") == "tool_result"
        ):
            error = bool(value.get("is_error"))
            parts.append(history.response(value.get("tool_use_id"), value.get("content"), error))
        else:
            raise CapabilityError(f"gemini cannot send a {kind!r} content block")
    return parts


def wire_contents(messages: Sequence[BaseMessage]) -> tuple[dict[str, Any] | None, list[Any]]:
    """``(systemInstruction, contents)`` for LangChain ``messages``.

    Consecutive turns of one role are merged (parallel tool results form one ``user`` turn of
    ``functionResponse`` parts, as the API requires) and empty turns dropped.
    """
    history = _History()
    for message in messages:
        if isinstance(message, AIMessage):
            history.signatures.update(message.additional_kwargs.get(SIGNATURES_KEY) or {})
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    for message in messages:
        role = message.role if isinstance(message, ChatMessage) else message.type
        if isinstance(message, SystemMessage) or role in ("system", "developer"):
            system += [{"text": message.text}] if message.text else []
            continue
        if isinstance(message, AIMessage) or role in ("assistant", "model"):
            ai = message if isinstance(message, AIMessage) else AIMessage(message.content)
            role = "model"
            parts = ([{"text": ai.text}] if ai.text else []) + history.calls(ai)
        elif isinstance(message, ToolMessage):
            error = message.status == "error"
            role, parts = "user", [history.response(message.tool_call_id, message.content, error)]
        elif isinstance(message, HumanMessage) or role == "user":
            role, parts = "user", _user_parts(message, history)
        else:
            raise CapabilityError(f"gemini cannot send a {role!r} message")
        if parts and contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        elif parts:
            contents.append({"role": role, "parts": parts})
    return ({"parts": system} if system else None), contents


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            value = _deep_merge(dict(base[key]), value)
        base[key] = value
    return base


def build_generate_body(request: ChatRequest) -> dict[str, Any]:
    """The JSON body of ``:generateContent`` / ``:streamGenerateContent`` for ``request``.

    ``request.extra_body`` is merged deeply: ``{"generationConfig": {"thinkingConfig": {...}}}``
    adds to the generated ``generationConfig`` instead of replacing it.
    """
    system, contents = wire_contents(request.messages)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = system
    config: dict[str, Any] = {
        key: value
        for key, value in (
            ("temperature", request.temperature),
            ("topP", request.top_p),
            ("maxOutputTokens", request.max_tokens),
            ("seed", request.seed),
            ("stopSequences", list(request.stop) if request.stop else None),
        )
        if value is not None
    }
    fmt = request.response_format or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    if fmt.get("type") == "json_schema":
        config["responseJsonSchema"] = dict((fmt.get("json_schema") or {}).get("schema") or {})
    if config:
        body["generationConfig"] = config
    if request.tools:
        body["tools"] = [{"functionDeclarations": [gemini_declaration(t) for t in request.tools]}]
        if request.tool_choice is not None:
            body["toolConfig"] = _tool_config(request.tool_choice)
    return _deep_merge(body, request.extra_body)


# --------------------------------------------------------------------------- responses
_int = _wire.count


def usage_from_gemini(meta: Any) -> UsageMetadata | None:
    """LangChain usage from ``usageMetadata`` (zero counts are absent on the wire: proto3).

    Input is the prompt (cached tokens included) plus the tool-use prompt; output is the
    candidates *plus* the thoughts, so input + output = ``totalTokenCount``.
    """
    if not isinstance(meta, dict):
        return None
    prompt = _int(meta.get("promptTokenCount")) + _int(meta.get("toolUsePromptTokenCount"))
    thoughts = _int(meta.get("thoughtsTokenCount"))
    output = _int(meta.get("candidatesTokenCount")) + thoughts
    total = _int(meta.get("totalTokenCount")) or prompt + output
    usage = UsageMetadata(input_tokens=prompt, output_tokens=output, total_tokens=total)
    inputs, outputs = InputTokenDetails(), OutputTokenDetails()
    if cached := _int(meta.get("cachedContentTokenCount")):
        inputs["cache_read"] = cached
    if thoughts:
        outputs["reasoning"] = thoughts
    if inputs:
        usage["input_token_details"] = inputs
    if outputs:
        usage["output_token_details"] = outputs
    return usage


@dataclass
class _Turn:
    """What the responses of one answer said so far (a stream is several of them)."""

    provider: str
    model: str
    calls: int = 0  # tool calls seen: indexes stay distinct across stream chunks
    finish: str | None = None
    usage: Any = None
    model_version: str | None = None
    response_id: str | None = None
    done: bool = False  # a stream has no end marker: it ends with the connection

    def feed(self, event: SSEEvent) -> ChatGenerationChunk | None:
        """One streamed ``GenerateContentResponse``'s new content, as a chunk."""
        chunk = self.read(_wire.json_payload(event.data, self.provider, self.model, "stream event"))
        return None if chunk is None else ChatGenerationChunk(message=chunk)

    def end(self) -> ChatGenerationChunk:
        """The closing chunk of a stream. A whole answer's last response has a finishReason:
        a stream without one was cut off."""
        if self.finish is None:
            raise ConnectionFailed("stream ended before the answer finished (no finishReason)",
                                   provider=self.provider, model=self.model)  # fmt: skip
        return self.last()

    def bad(self, what: str) -> MalformedResponse:
        return _wire.malformed(self.provider, self.model, what)

    def read(self, data: Any) -> AIMessageChunk | None:
        """The new content of one ``GenerateContentResponse`` (metadata is kept for `last`)."""
        with _wire.parsing(self.provider, self.model):
            if not isinstance(data, dict):
                raise self.bad("response is not a JSON object")
            if isinstance(data.get("error"), dict):  # an error reported inside a stream
                status = _int(data["error"].get("code")) or 500
                fake = httpx.Response(status, json=data, request=httpx.Request("POST", "http://x"))
                raise map_error(fake, self.provider, self.model, None)
            self.usage = data.get("usageMetadata", self.usage)
            self.model_version = data.get("modelVersion") or self.model_version
            self.response_id = data.get("responseId") or self.response_id
            candidates = data.get("candidates")
            feedback = data.get("promptFeedback")
            if not candidates and isinstance(feedback, dict) and feedback.get("blockReason"):
                note = feedback.get("blockReasonMessage")
                raise errors.ContentFiltered(
                    f"prompt blocked by Gemini: {feedback['blockReason']}{f' ({note})' if note else ''}",
                    provider=self.provider, model=self.model,
                )  # fmt: skip
            if not candidates:
                return None
            if not isinstance(candidates, list) or not isinstance(candidates[0], dict):
                raise self.bad("candidates[0] is not an object")
            self.finish = candidates[0].get("finishReason") or self.finish
            content = candidates[0].get("content") or {}
            parts = (content.get("parts") or []) if isinstance(content, dict) else None
            if not isinstance(parts, list):
                raise self.bad("candidates[0].content.parts is not a list")
            text: list[str] = []
            thoughts: list[str] = []
            tools: list[Any] = []
            signatures: dict[str, str] = {}
            for part in parts:
                if not isinstance(part, dict):
                    raise self.bad("a part is not an object")
                if "functionCall" in part:
                    call = part["functionCall"]
                    args = call.get("args") or {} if isinstance(call, dict) else None
                    if not isinstance(args, dict) or not isinstance(call.get("name"), str):
                        raise self.bad("functionCall without a name or with non-object args")
                    call_id = call.get("id") or f"{_GENERATED_ID}{uuid.uuid4().hex[:24]}"
                    if isinstance(part.get("thoughtSignature"), str):
                        signatures[call_id] = part["thoughtSignature"]
                    tools.append(_wire.tool_piece(name=call["name"], args=args, id=call_id, index=self.calls,
                                            provider=self.provider, model=self.model))  # fmt: skip
                    self.calls += 1
                elif "text" in part:
                    if not isinstance(part["text"], str):
                        raise self.bad("part.text is not a string")
                    (thoughts if part.get("thought") else text).append(part["text"])
            extra: dict[str, Any] = {SIGNATURES_KEY: signatures} if signatures else {}
            if thoughts:
                extra["reasoning_content"] = "".join(thoughts)
            if not text and not tools and not extra:
                return None
            return AIMessageChunk(content="".join(text), tool_call_chunks=tools,
                                  additional_kwargs=extra, id=self.response_id)  # fmt: skip

    def last(self, content: AIMessageChunk | None = None) -> ChatGenerationChunk:
        """The closing chunk: ``content`` (if any) with usage, finish reason and metadata."""
        with _wire.parsing(self.provider, self.model):
            raw = self.finish
            finish = normalize_finish_reason(raw)
            if finish == "stop" and self.calls:
                finish = "tool_calls"  # Gemini says STOP after function calls too
            meta: dict[str, Any] = {"provider": self.provider, "model_provider": "gemini",
                                    "model_name": self.model_version or self.model}  # fmt: skip
            if self.response_id:
                meta["id"] = self.response_id
            if finish is not None:
                meta["finish_reason"] = finish
                if raw != finish:
                    meta["raw_finish_reason"] = raw
            base = content or AIMessageChunk(content="")
            chunk = AIMessageChunk(
                content=base.content, tool_call_chunks=base.tool_call_chunks,
                additional_kwargs=base.additional_kwargs, usage_metadata=usage_from_gemini(self.usage),
                response_metadata=meta, id=self.response_id, chunk_position="last",
            )  # fmt: skip
            return ChatGenerationChunk(message=chunk, generation_info={"finish_reason": finish})


# --------------------------------------------------------------------------- errors
def _details(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, list) and len(body) == 1:  # some endpoints wrap the error in a list
        body = body[0]
    err = body.get("error") if isinstance(body, dict) else None
    details = err.get("details") if isinstance(err, dict) else None
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def gemini_error_info(body: Any, text: str) -> ErrorInfo:
    """``{"error": {"code", "message", "status", "details"}}``: the type is the status word
    (``RESOURCE_EXHAUSTED``), the code the ``google.rpc.ErrorInfo`` reason (``API_KEY_INVALID``)
    or ``context_length_exceeded`` for the input-token-count message."""
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    info = default_error_info(body, text)
    reason = next((str(d["reason"]) for d in _details(body) if d.get("reason")), None)
    if _TOKEN_LIMIT.search(info.message):  # names none of the words error_from_response knows
        reason = "context_length_exceeded"
    return ErrorInfo(info.message, info.type, reason)


def map_error(
    response: httpx.Response, provider: str, model: str | None, secret: str | None
) -> ProviderError:
    """`error_from_response`, plus Gemini's own signals: a ``google.rpc.RetryInfo`` detail
    sets ``retry_after`` (the API sends no Retry-After header), and ``API_KEY_INVALID``,
    which the API answers with a 400, is an `AuthenticationError`."""
    err = error_from_response(
        response, provider=provider, model=model, secret=secret, parse=gemini_error_info,
        request_id_headers=HTTPAdapter.request_id_headers,
    )  # fmt: skip
    try:
        details = _details(json.loads(response.text)) if response.text else []
    except ValueError:
        return err
    if isinstance(err, errors.RateLimited | errors.ProviderUnavailable) and err.retry_after is None:
        for detail in details:
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo") and match:
                err.retry_after = float(match.group(1))
    if any(d.get("reason") == "API_KEY_INVALID" for d in details):
        return errors.AuthenticationError(
            err.message, provider=provider, model=model,
            status_code=err.status_code, request_id=err.request_id,
        )  # fmt: skip
    return err


# --------------------------------------------------------------------------- adapter
class GeminiAdapter(HTTPChatAdapter):
    """The Gemini API (Google AI Studio keys) over pooled httpx clients."""

    capabilities = ALL_CAPABILITIES
    max_pages = 100  # of GET /models followed at most: a guard against a looping page token

    def _url(self, path: str, model: str | None = None) -> str:
        base = self.connection.base_url
        if re.search(r"/v\d+(alpha|beta)?$", base):  # the caller's base URL names a version
            return base + path
        return f"{base}/{self.connection.options.get('api_version') or DEFAULT_API_VERSION}{path}"

    @staticmethod
    def _model_path(model: str) -> str:
        return "/" + quote(model if "/" in model else f"models/{model}", safe="/-_.")

    def _error_info(self, body: Any, text: str) -> ErrorInfo:
        return gemini_error_info(body, text)

    def _error(self, response: httpx.Response, model: str | None) -> ProviderError:
        return map_error(response, self.provider, model, self.connection.secret())

    # -- chat -------------------------------------------------------------------------
    def _chat_request(self, request: ChatRequest, *, stream: bool) -> tuple[str, Any]:
        verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{self._model_path(request.model)}:{verb}", build_generate_body(request)

    def _whole(self, data: Any, request: ChatRequest) -> ChatGenerationChunk:
        turn = _Turn(self.provider, request.model)
        content = turn.read(data)
        if not data.get("candidates"):
            raise turn.bad("no candidates and no promptFeedback.blockReason")
        return turn.last(content)

    def _reader(self, request: ChatRequest) -> StreamReader:
        return _Turn(self.provider, request.model)

    # -- embeddings: the hooks of HTTPAdapter's template --------------------------------
    embed_batch_size = EMBEDDING_BATCH_SIZE

    def _embed_calls(
        self, texts: Sequence[str], model: str, dimensions: int | None, input_type: str | None
    ) -> Iterator[EmbedCall]:
        """One text uses ``:embedContent``, more use ``:batchEmbedContents`` in batches of
        `embed_batch_size`. ``input_type`` ``"query"``/``"document"`` sets ``taskType``
        ``RETRIEVAL_QUERY``/``RETRIEVAL_DOCUMENT`` (another word is sent upper-cased)."""
        base = self._model_path(model)
        options: dict[str, Any] = {}
        if input_type:
            options["taskType"] = _TASK_TYPES.get(input_type.lower(), input_type.upper())
        if dimensions is not None:
            options["outputDimensionality"] = dimensions
        if len(texts) == 1:  # the URL names the model
            body = {"content": {"parts": [{"text": texts[0]}]}, **options}
            yield EmbedCall(f"{base}:embedContent", body, 1)
            return
        size = self.embed_batch_size
        for start in range(0, len(texts), size):
            batch = texts[start : start + size]
            requests = [
                {"model": base[1:], "content": {"parts": [{"text": text}]}, **options}
                for text in batch
            ]
            yield EmbedCall(f"{base}:batchEmbedContents", {"requests": requests}, len(batch))

    def _embed_vectors(self, data: Any, count: int, model: str) -> list[list[float]]:
        data = data if isinstance(data, dict) else {}
        items = [data["embedding"]] if "embedding" in data else data.get("embeddings")
        if not isinstance(items, list):
            raise _wire.malformed(self.provider, model, f"expected {count} embeddings")
        values = [item.get("values") if isinstance(item, dict) else None for item in items]
        return _wire.number_vectors(values, count, self.provider, model, "embeddings[].values")

    # -- models -----------------------------------------------------------------------
    def _page(self, data: Any, out: list[ModelInfo]) -> str | None:
        """Append one page's models to ``out``; the next page's token, if any."""
        items = data.get("models", []) if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise _Turn(self.provider, "").bad("models list has no models[]")
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                out.append(ModelInfo(
                    id=item["name"].removeprefix("models/"), provider=self.provider,
                    owned_by="google", context_window=_int(item.get("inputTokenLimit")) or None,
                    raw=item,
                ))  # fmt: skip
        token = data.get("nextPageToken")
        return token if isinstance(token, str) and token else None

    @staticmethod
    def _models_path(token: str | None) -> str:
        return "/models?" + urlencode({"pageSize": 1000, **({"pageToken": token} if token else {})})

    def _list_models(self) -> list[ModelInfo]:
        models: list[ModelInfo] = []
        token: str | None = None
        for _ in range(self.max_pages):
            data = self._send("GET", self._models_path(token), None)
            if (token := self._page(data, models)) is None:
                break
        return models

    async def _alist_models(self) -> list[ModelInfo]:
        models: list[ModelInfo] = []
        token: str | None = None
        for _ in range(self.max_pages):
            data = await self._asend("GET", self._models_path(token), None)
            if (token := self._page(data, models)) is None:
                break
        return models
