"""The contract between the LangChain models and the wire adapters.

An adapter turns a `ChatRequest` into the provider's HTTP calls and the provider's answers
into LangChain `ChatGenerationChunk`s; `agency.chat_model.AgencyChatModel` does the rest.
Retries wrap the adapter here, once, and only until the first chunk has been produced.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk

from agency._http import call_with_retry, call_with_retry_async
from agency.errors import CapabilityError
from agency.providers._profile import Connection

__all__ = [
    "ALL_CAPABILITIES",
    "FINISH_REASONS",
    "Adapter",
    "Capabilities",
    "ChatAdapter",
    "ChatRequest",
    "InputType",
    "ModelInfo",
    "normalize_finish_reason",
]

InputType = Literal["query", "document"]
"""What texts are embedded for: search queries or the documents searched."""

FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "error"})
"""The one vocabulary every adapter maps its stop reasons into."""

# Provider words for the same few reasons (OpenAI, Anthropic, Gemini, Cohere, Ollama, llama.cpp).
_FINISH = {
    "stop": "stop",
    "eos": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "complete": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "tool_use": "tool_calls",
    "tool_call": "tool_calls",
    "content_filter": "content_filter",
    "safety": "content_filter",
    "recitation": "content_filter",
    "blocklist": "content_filter",
    "prohibited_content": "content_filter",
    "spii": "content_filter",
    "refusal": "content_filter",
    "error": "error",
    "error_toxic": "content_filter",
    "malformed_function_call": "error",
    "finish_reason_unspecified": "stop",
    "other": "stop",
    "load": "stop",
    "unload": "stop",
    "language": "content_filter",
    "image_safety": "content_filter",
    "image_prohibited_content": "content_filter",
    "image_recitation": "content_filter",
    "unexpected_tool_call": "error",
    "too_many_tool_calls": "error",
    "missing_thought_signature": "error",
    "timeout": "length",
    "pause_turn": "length",
}


def normalize_finish_reason(reason: object) -> str | None:
    """Map a provider's stop reason (any case) into `FINISH_REASONS`; unknown words pass through
    lower-cased so nothing is hidden."""
    if reason is None:
        return None
    word = str(reason).lower()
    return _FINISH.get(word, word)


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do; drives the README matrix and the standard test switches."""

    chat: bool = True
    """Chat completions."""
    streaming: bool = True
    """Token streaming."""
    tools: bool = False
    """Tool (function) calling."""
    tool_choice: bool = False
    """Forcing a tool or any tool."""
    parallel_tool_calls: bool = False
    """Several tool calls in one answer."""
    json_mode: bool = False
    """A JSON-object response mode."""
    json_schema: bool = False
    """Responses constrained to a JSON schema."""
    image_inputs: bool = False
    """Images in user messages."""
    embeddings: bool = False
    """An embeddings endpoint."""
    list_models: bool = False
    """Listing the available models."""
    usage: bool = True
    """Token usage on responses (streams included)."""
    cached_tokens: bool = False
    """Cached prompt tokens reported in usage."""


ALL_CAPABILITIES = Capabilities(
    tools=True,
    tool_choice=True,
    parallel_tool_calls=True,
    json_mode=True,
    json_schema=True,
    image_inputs=True,
    embeddings=True,
    list_models=True,
    cached_tokens=True,
)
"""Every capability: what the OpenAI, Gemini and Cohere APIs each offer; other wires declare
theirs as this with the parts they lack switched off (`dataclasses.replace`)."""


@dataclass(frozen=True)
class ModelInfo:
    """One model a provider offers."""

    id: str
    """The model name to put after ``provider:``."""
    provider: str
    """The provider name."""
    owned_by: str | None = None
    """Owner or family, when the provider says."""
    context_window: int | None = None
    """Maximum prompt plus completion tokens, when the provider says."""
    raw: Mapping[str, Any] = field(default_factory=dict)
    """The provider's own record."""


@dataclass(frozen=True)
class ChatRequest:
    """One chat call, provider-neutral. Tools are in OpenAI's function format."""

    messages: Sequence[BaseMessage]
    """The conversation."""
    model: str
    """Model name at the provider."""
    temperature: float | None = None
    """Sampling temperature."""
    max_tokens: int | None = None
    """Upper bound on generated tokens."""
    stop: Sequence[str] | None = None
    """Stop sequences."""
    top_p: float | None = None
    """Nucleus sampling."""
    seed: int | None = None
    """Sampling seed, where supported."""
    tools: Sequence[Mapping[str, Any]] | None = None
    """``[{"type": "function", "function": {"name", "description", "parameters"}}]``."""
    tool_choice: str | Mapping[str, Any] | None = None
    """``"auto"``, ``"none"``, ``"required"`` or ``{"type": "function", "function": {"name"}}``."""
    parallel_tool_calls: bool | None = None
    """Allow several tool calls in one answer."""
    response_format: Mapping[str, Any] | None = None
    """``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {...}}``."""
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    """Provider-specific fields merged into the request body as given."""


class Adapter:
    """What every adapter is: a connection, capabilities, embeddings and model listing.

    Chat is `ChatAdapter`'s; an adapter without it (an embeddings-only provider) refuses chat
    with `CapabilityError` saying `chat_hint`. Embeddings are `_embed`'s (the HTTP adapters'
    template batches them); without them, `embed` says `embeddings_hint`.
    """

    capabilities: ClassVar[Capabilities] = Capabilities()
    """What this wire protocol supports (a preset may switch parts off via quirks)."""
    chat_hint: ClassVar[str] = ""
    """Said when chat is asked of a provider that has none: where to get it."""
    embeddings_hint: ClassVar[str] = ""
    """Said when embeddings are asked of a provider that has none: where to get them."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    @property
    def provider(self) -> str:
        """The provider name used in errors and metadata."""
        return self.connection.provider

    def effective_capabilities(self) -> Capabilities:
        """`capabilities` narrowed by the profile's quirks."""
        return self.capabilities

    # -- public ---------------------------------------------------------------------
    def chat(self, request: ChatRequest, *, stream: bool) -> Iterator[ChatGenerationChunk]:
        """Chunks of one answer (`ChatAdapter`); here: `CapabilityError`."""
        raise CapabilityError(self.chat_hint or f"{self.provider} does not offer chat")

    def achat(self, request: ChatRequest, *, stream: bool) -> AsyncIterator[ChatGenerationChunk]:
        """Async twin of `chat`."""
        raise CapabilityError(self.chat_hint or f"{self.provider} does not offer chat")

    def complete(self, request: ChatRequest) -> list[ChatGenerationChunk]:
        """``chat(request, stream=False)``'s chunks, in hand (the same calls and retries)."""
        return list(self.chat(request, stream=False))

    async def acomplete(self, request: ChatRequest) -> list[ChatGenerationChunk]:
        """Async twin of `complete`."""
        return [chunk async for chunk in self.achat(request, stream=False)]

    def embed(
        self, texts: Sequence[str], *, model: str, dimensions: int | None = None,
        input_type: InputType | None = None,
    ) -> list[list[float]]:  # fmt: skip
        """One vector per text, in order, retried as a whole. ``input_type`` says whether the
        texts are search ``"query"``s or ``"document"``s, for providers that embed them
        differently."""
        return call_with_retry(
            lambda: self._embed(texts, model=model, dimensions=dimensions, input_type=input_type),
            self.connection.max_retries,
        )

    async def aembed(
        self, texts: Sequence[str], *, model: str, dimensions: int | None = None,
        input_type: InputType | None = None,
    ) -> list[list[float]]:  # fmt: skip
        """Async twin of `embed`."""
        return await call_with_retry_async(
            lambda: self._aembed(texts, model=model, dimensions=dimensions, input_type=input_type),
            self.connection.max_retries,
        )

    def list_models(self) -> list[ModelInfo]:
        """The models the provider offers to this key."""
        return call_with_retry(self._list_models, self.connection.max_retries)

    async def alist_models(self) -> list[ModelInfo]:
        """Async twin of `list_models`."""
        return await call_with_retry_async(self._alist_models, self.connection.max_retries)

    # -- to implement where offered ---------------------------------------------------
    def _embed(
        self, texts: Sequence[str], *, model: str, dimensions: int | None,
        input_type: InputType | None = None,
    ) -> list[list[float]]:  # fmt: skip
        raise CapabilityError(self.embeddings_hint or f"{self.provider} does not offer embeddings")

    async def _aembed(
        self, texts: Sequence[str], *, model: str, dimensions: int | None,
        input_type: InputType | None = None,
    ) -> list[list[float]]:  # fmt: skip
        return self._embed(texts, model=model, dimensions=dimensions, input_type=input_type)

    def _list_models(self) -> list[ModelInfo]:
        raise CapabilityError(f"{self.provider} cannot list its models")

    async def _alist_models(self) -> list[ModelInfo]:
        return self._list_models()

    def close(self) -> None:  # an optional hook: most adapters hold nothing
        """Release resources the adapter holds beyond the shared client pool."""

    async def aclose(self) -> None:
        """Async twin of `close`."""
        self.close()


class ChatAdapter(Adapter, ABC):
    """An adapter that chats. Subclasses implement `_stream` and `_astream`, and
    `_complete`/`_acomplete` where a non-streamed answer is its own call."""

    # -- public, retried ------------------------------------------------------------
    def chat(self, request: ChatRequest, *, stream: bool) -> Iterator[ChatGenerationChunk]:
        """Chunks of one answer; retried until the first chunk is produced, never after."""

        def open_() -> tuple[ChatGenerationChunk | None, Iterator[ChatGenerationChunk]]:
            it = self._stream(request) if stream else self._complete(request)
            return next(it, None), it

        first, rest = call_with_retry(open_, self.connection.max_retries)
        if first is None:
            return
        yield first
        yield from rest

    async def achat(
        self, request: ChatRequest, *, stream: bool
    ) -> AsyncIterator[ChatGenerationChunk]:
        """Async twin of `chat`."""

        async def open_() -> tuple[ChatGenerationChunk | None, AsyncIterator[ChatGenerationChunk]]:
            it = self._astream(request) if stream else self._acomplete(request)
            try:
                return await it.__anext__(), it
            except StopAsyncIteration:
                return None, it

        first, rest = await call_with_retry_async(open_, self.connection.max_retries)
        if first is None:
            return
        yield first
        async for chunk in rest:
            yield chunk

    # -- to implement -----------------------------------------------------------------
    @abstractmethod
    def _stream(self, request: ChatRequest) -> Iterator[ChatGenerationChunk]:
        """Stream the answer."""

    @abstractmethod
    async def _astream(self, request: ChatRequest) -> AsyncIterator[ChatGenerationChunk]:
        """Async twin of `_stream` (an async generator, as its overrides are)."""
        raise NotImplementedError
        yield  # pragma: no cover - unreachable; makes this an async generator like overrides

    def _complete(self, request: ChatRequest) -> Iterator[ChatGenerationChunk]:
        """The answer of a non-streamed call, as one chunk (default: the stream)."""
        return self._stream(request)

    async def _acomplete(self, request: ChatRequest) -> AsyncIterator[ChatGenerationChunk]:
        """Async twin of `_complete`."""
        async for chunk in self._astream(request):
            yield chunk
