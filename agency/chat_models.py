"""`AgencyChatModel`: one LangChain `BaseChatModel` over any registered provider.

Streaming first: `_stream`/`_astream` pull chunks from the provider's adapter, and
`_generate`/`_agenerate` merge those same chunks (one chunk for a non-streamed call), so a
streamed and a non-streamed answer are assembled by the same code. Retries happen inside the
adapter, before the first chunk only.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessageChunk, BaseMessage, message_chunk_to_message
from langchain_core.messages.ai import add_usage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, SecretStr, model_validator

from agency._fastpath import QuietInvokeMixin
from agency._specs import build_adapter, get_profile, split_model_fields
from agency._structured import StructuredOutputMixin
from agency.errors import ConfigError, ProviderError
from agency.providers._base import Adapter, Capabilities, ChatRequest
from agency.providers._profile import Connection

__all__ = ["AgencyChatModel"]

# Per-call keyword arguments that map onto `ChatRequest` fields.
_REQUEST_FIELDS = frozenset(
    {
        "model",
        "temperature",
        "max_tokens",
        "top_p",
        "seed",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
    }
)


class AgencyChatModel(QuietInvokeMixin, StructuredOutputMixin, BaseChatModel):
    """A chat model of any provider, named ``"provider:model"``.

    ``AgencyChatModel(model="groq:llama-3.3-70b-versatile")`` or
    ``AgencyChatModel(provider="groq", model="llama-3.3-70b-versatile")``; usually built by
    `agency.chat_model`. The key comes from ``api_key`` or the provider's environment
    variable and is never printed, logged or serialized.
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    provider: str = ""
    """Registered provider name; parsed from ``model`` when empty."""
    model: str = Field(default="", alias="model_name")
    """Model name at the provider (or a whole ``"provider:model"`` spec)."""
    api_key: SecretStr | None = None
    """The key; defaults to the provider's environment variable."""
    base_url: str | None = None
    """API root; defaults to the provider's."""
    temperature: float | None = None
    """Sampling temperature."""
    max_tokens: int | None = None
    """Upper bound on generated tokens."""
    top_p: float | None = None
    """Nucleus sampling."""
    seed: int | None = None
    """Sampling seed, where the provider supports one."""
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    """Default stop sequences."""
    timeout: float | None = None
    """Seconds per request; default 60."""
    max_retries: int | None = None
    """Retries on retryable failures; default 2. The `Agency` facade sets 0 and retries itself."""
    streaming: bool = False
    """Whether ``invoke`` streams under the hood (the answer is the same)."""
    default_headers: dict[str, str] | None = None
    """Extra headers on every request."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Provider-specific body fields sent as given."""
    organization: str | None = None
    """OpenAI organization header."""
    deployment: str | None = None
    """Azure OpenAI deployment name (defaults to the model name)."""
    api_version: str | None = None
    """Azure OpenAI ``api-version``."""
    transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = Field(
        default=None, exclude=True, repr=False
    )
    """An httpx transport to send through (e.g. `httpx.MockTransport`) instead of the shared
    pools; never serialized, printed or part of cache keys."""

    if TYPE_CHECKING:
        _adapter: Adapter

    @model_validator(mode="before")
    @classmethod
    def _split_spec(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        values = split_model_fields(values, embedding=False)
        if isinstance(values.get("api_key"), str):
            values["api_key"] = SecretStr(values["api_key"])
        return values

    def model_post_init(self, context: Any, /) -> None:
        if not self.model:
            raise ConfigError(
                f"provider {self.provider!r} has no default model",
                fix=f'name one: "{self.provider}:MODEL"',
            )
        adapter = build_adapter(
            self.provider,
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=self.max_retries,
            headers=self.default_headers,
            model=self.model,
            organization=self.organization,
            deployment=self.deployment,
            api_version=self.api_version,
            transport=self.transport,
        )
        # A plain instance attribute, not a pydantic PrivateAttr: private attributes are read
        # through pydantic's __getattr__ (an internal AttributeError each time), which cost
        # ~10 us per call on the hot path (measured in benchmarks/local_overhead.py).
        object.__setattr__(self, "_adapter", adapter)
        # Expose the resolved key (env included) as the field, so serialization maps it to
        # its environment variable (`lc_secrets`) instead of dropping or printing it.
        self.api_key = adapter.connection.api_key

    # -- LangChain identity -------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return f"agency-{self.provider}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        # Used for llm_string (cache keys): model and sampling, never the key.
        params = {
            "provider": self.provider,
            "model": self.model,
            "base_url": self._adapter.connection.base_url,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": self.stop,
        }
        params.update(self.model_kwargs)
        return {k: v for k, v in params.items() if v is not None}

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["agency", "chat_models"]

    @property
    def lc_secrets(self) -> dict[str, str]:
        env = get_profile(self.provider).api_key_env if self.provider else ()
        return {"api_key": env[0] if env else "AGENCY_API_KEY"}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = self.provider
        params["ls_model_name"] = kwargs.get("model", self.model)
        params["ls_model_type"] = "chat"
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        stops = stop or self.stop
        if stops:
            params["ls_stop"] = stops
        return params

    @property
    def capabilities(self) -> Capabilities:
        """What this provider can do, with the preset's quirks applied."""
        return self._adapter.effective_capabilities()

    @property
    def connection(self) -> Connection:
        """Where this model sends its requests (the key inside is a `SecretStr`)."""
        return self._adapter.connection

    # -- requests -----------------------------------------------------------------------
    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> ChatRequest:
        fields: dict[str, Any] = {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "seed": self.seed,
        }
        extra = dict(self.model_kwargs)
        for key, value in kwargs.items():
            if key in _REQUEST_FIELDS:
                fields[key] = value
            elif key == "stream":
                continue
            elif value is not None:
                extra[key] = value
        return ChatRequest(messages=messages, stop=stop or self.stop, extra_body=extra, **fields)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        request = self._request(messages, stop, kwargs)
        yield from relay(self._with_cost(self._adapter.chat(request, stream=True)), run_manager)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        request = self._request(messages, stop, kwargs)
        chunks = self._awith_cost(self._adapter.achat(request, stream=True))
        async for chunk in arelay(chunks, run_manager):
            yield chunk

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming or kwargs.get("stream"):
            return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))
        request = self._request(messages, stop, kwargs)
        return self._priced(merge_chunks(self._adapter.complete(request)))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming or kwargs.get("stream"):
            return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))
        request = self._request(messages, stop, kwargs)
        return self._priced(merge_chunks(await self._adapter.acomplete(request)))

    # -- cost ---------------------------------------------------------------------------
    def _cost(self, usage: Any) -> float | None:
        """USD for this usage at this model's price (`agency.pricing`); None when unknown."""
        price = self.__dict__.get("_price", _UNPRICED)
        if price is _UNPRICED:
            from agency.pricing import price_for

            price = price_for(self.provider, self.model)
            object.__setattr__(self, "_price", price)
        if price is None or usage is None:
            return None
        from agency.pricing import cost_of

        return cost_of(usage, price)

    def _priced(self, result: ChatResult) -> ChatResult:
        message = result.generations[0].message
        usage = getattr(message, "usage_metadata", None)
        message.response_metadata["cost"] = self._cost(usage)
        return result

    def _with_cost(self, chunks: Iterator[ChatGenerationChunk]) -> Iterator[ChatGenerationChunk]:
        """The chunks, the last one carrying ``response_metadata["cost"]`` (see `_CostOnLast`)."""
        last = _CostOnLast(self._cost)
        for chunk in chunks:
            yield from last.feed(chunk)
        yield last.close()

    async def _awith_cost(
        self, chunks: AsyncIterator[ChatGenerationChunk]
    ) -> AsyncIterator[ChatGenerationChunk]:
        """The async twin of `_with_cost`."""
        last = _CostOnLast(self._cost)
        async for chunk in chunks:
            for out in last.feed(chunk):
                yield out
        yield last.close()


class _CostOnLast:
    """Puts a stream's cost on its last chunk.

    A chunk with usage is held back until the next one arrives (text chunks never are), so
    the cost lands on the final usage chunk: LangChain's chunk merge cannot add a float found
    in two chunks, and callers expect usage on the last chunk.
    """

    def __init__(self, cost: Callable[[Any], float | None]) -> None:
        self._cost = cost
        self._held: ChatGenerationChunk | None = None
        self._usage: Any = None

    def feed(self, chunk: ChatGenerationChunk) -> list[ChatGenerationChunk]:
        """What may be yielded now that ``chunk`` has arrived."""
        out = [self._held] if self._held is not None else []
        self._held = None
        if _has_usage(chunk):
            self._usage, self._held = add_chunk_usage(self._usage, chunk), chunk
        else:
            out.append(chunk)
        return out

    def close(self) -> ChatGenerationChunk:
        """The last chunk, with ``response_metadata["cost"]``."""
        cost = self._cost(self._usage)
        held = self._held
        if held is None:
            return ChatGenerationChunk(
                message=AIMessageChunk(
                    content="", response_metadata={"cost": cost}, chunk_position="last"
                )
            )
        held.message.response_metadata = {**held.message.response_metadata, "cost": cost}
        return held


# LangChain calls inspect.signature(self._generate) on every call to see whether it takes a
# run_manager; a precomputed __signature__ makes that 3x cheaper (~15 us per call, measured).
for _method in (AgencyChatModel._generate, AgencyChatModel._agenerate):
    _method.__signature__ = inspect.signature(_method)  # type: ignore[union-attr]


_UNPRICED = object()


def _has_usage(chunk: ChatGenerationChunk) -> bool:
    return getattr(chunk.message, "usage_metadata", None) is not None


def relay(
    chunks: Iterator[ChatGenerationChunk], run_manager: CallbackManagerForLLMRun | None
) -> Iterator[ChatGenerationChunk]:
    """``chunks``, each reported to ``run_manager`` as a new token before it is yielded: what
    LangChain's streaming callbacks (``on_llm_new_token``) expect of a `_stream`."""
    for chunk in chunks:
        if run_manager:
            run_manager.on_llm_new_token(chunk.text, chunk=chunk)
        yield chunk


async def arelay(
    chunks: AsyncIterator[ChatGenerationChunk], run_manager: AsyncCallbackManagerForLLMRun | None
) -> AsyncIterator[ChatGenerationChunk]:
    """The async twin of `relay`."""
    async for chunk in chunks:
        if run_manager:
            await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
        yield chunk


def add_chunk_usage(total: Any, chunk: ChatGenerationChunk) -> Any:
    """``total`` plus the chunk's usage (``None`` until a chunk reports some)."""
    usage = getattr(chunk.message, "usage_metadata", None)
    if usage is None:
        return total
    return usage if total is None else add_usage(total, usage)


def merge_chunks(chunks: list[ChatGenerationChunk]) -> ChatResult:
    """`generate_from_stream` for chunks in hand, the same result; without its general merge
    when there is nothing to merge: a non-streamed answer is one chunk, perhaps followed by
    metadata-only chunks (the fallback chain's route and cost) whose keys are new."""
    if not chunks:
        raise ProviderError("the provider returned no answer")
    first = chunks[0]
    message, info = first.message, first.generation_info
    if len(chunks) > 1:
        meta = dict(message.response_metadata)
        for chunk in chunks[1:]:
            extra = chunk.message.response_metadata
            simple = _metadata_only(chunk) and isinstance(message.content, str)
            if not simple or extra.keys() & meta.keys():
                return generate_from_stream(iter(chunks))
            meta.update(extra)
        info = info or None  # as ChatGenerationChunk's sum has it
    else:
        meta = None
    whole = message_chunk_to_message(message)
    if meta is not None:
        whole.response_metadata = meta
    return ChatResult(generations=[ChatGeneration(message=whole, generation_info=info)])


def _metadata_only(chunk: ChatGenerationChunk) -> bool:
    message = chunk.message
    return (
        isinstance(message, AIMessageChunk)
        and message.content == ""
        and not message.tool_call_chunks
        and not message.additional_kwargs
        and message.usage_metadata is None
        and message.id is None
        and not chunk.generation_info
    )
