"""`FallbackChatModel`: one LangChain chat model over a chain of providers.

One loop decides, for every call: which provider next (the balancing strategy), whether to skip
it at no cost (open breaker, no rate-limit room while another provider has some, a worst case
over budget), whether to wait, and what a failure means (retry later, fall back, or raise).
Every attempt counts against ``max_attempts``, retries and fallbacks alike; the adapters' own
retries are off. The decisions live in `_Call`, which does no I/O, so the sync and async drivers
only send, stream and sleep.

Streaming failover: before the first token, the next provider simply takes over. After text
was emitted, the next provider is asked to continue it (`agency.resilience._splice`); the
caller sees one stream, and the final chunk's ``response_metadata["agency"]["failover"]`` says
where the switch happened. A stream that already emitted tool-call chunks cannot be continued.

The answer's ``response_metadata`` carries ``cost`` (USD, every attempt of the call; ``None``
when a price is unknown) and ``agency``: the provider that answered, the attempts, the failures.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

from agency._fastpath import QuietInvokeMixin
from agency._structured import StructuredOutputMixin
from agency.chat_models import arelay, merge_chunks, relay
from agency.errors import (
    CapabilityError,
    ProviderError,
)
from agency.providers._base import Capabilities
from agency.resilience._call import MAX_DEFERRALS, _Call

if TYPE_CHECKING:
    from agency.resilience.pool import ProviderPool

__all__ = ["MAX_DEFERRALS", "FallbackChatModel"]


class FallbackChatModel(QuietInvokeMixin, StructuredOutputMixin, BaseChatModel):
    """A chat model over a chain of providers, built by `agency.Agency.chat_model`.

    ``bind_tools`` and ``with_structured_output`` bind every candidate (the tools travel with
    the call), so fallback keeps tools and schemas. See the module docstring for the loop.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    chain: list[str]
    """Entry names or ``"provider:model"`` specs, in configured order."""
    role: str | None = None
    """Role whose budget and statistics this model's calls count against."""
    max_tokens: int | None = None
    """Cap on generated tokens for every candidate (else each candidate's own)."""
    max_cost: float | None = None
    """Most one call may cost in the worst case, USD (the ``cost`` strategy's filter)."""
    preferred_models: list[str] = Field(default_factory=list)
    """Models the ``cost`` strategy picks first when they fit."""
    streaming: bool = False
    """Whether ``invoke`` streams under the hood (the answer is the same)."""
    max_attempts: int | None = None
    """Attempts of one call, retries and fallbacks together (default: ``[llm.fallback]``'s)."""
    fallback: bool | None = None
    """Whether a failure moves on along ``chain`` (default: ``[llm.fallback] enabled``; an
    explicit chain, such as a workflow step's ``models``, always falls back)."""

    if TYPE_CHECKING:
        _pool: ProviderPool

    @classmethod
    def over(cls, pool: ProviderPool, chain: Sequence[str], **fields: Any) -> FallbackChatModel:
        """A model over ``chain`` whose state lives in ``pool``."""
        model = cls(chain=list(chain), **fields)
        object.__setattr__(model, "_pool", pool)
        for ref in chain:
            pool.get(ref)  # fail now on a bad reference, not on the first call
        return model

    @property
    def provider(self) -> str:  # type: ignore[override]
        """A label for messages: ``fallback(a, b, ...)``."""
        return f"fallback({', '.join(self.chain)})"

    @property
    def _llm_type(self) -> str:
        return "agency-fallback"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        specs = [self._pool.get(ref).spec for ref in self.chain]
        return {"chain": specs, "role": self.role, "max_tokens": self.max_tokens}

    @property
    def capabilities(self) -> Capabilities:
        """What every candidate can do (structured output picks a method all of them have)."""
        caps = [self._pool.get(ref).model.capabilities for ref in self.chain]
        names = [
            f for f in Capabilities.__dataclass_fields__ if isinstance(getattr(caps[0], f), bool)
        ]
        return Capabilities(**{f: all(getattr(c, f) for c in caps) for f in names})

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        first = self._pool.get(self.chain[0]).model
        params["ls_provider"] = first.provider
        params["ls_model_name"] = first.model
        return params

    # -- calls ------------------------------------------------------------------------
    def _kwargs(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = {k: v for k, v in kwargs.items() if k != "stream"}
        if stop:
            kwargs["stop"] = stop
        if self.max_tokens is not None:
            kwargs.setdefault("max_tokens", self.max_tokens)
        return kwargs

    def _run(
        self, messages: list[BaseMessage], kwargs: dict[str, Any], *, stream: bool
    ) -> Iterator[ChatGenerationChunk]:
        call = _Call(self, messages, kwargs)
        while (step := call.next()) is not None:
            if isinstance(step, float):
                self._pool.sleep(step)
                continue
            if step.limiter_tokens is not None and not step.state.limiter.acquire(
                step.limiter_tokens, max_wait=self._pool.policy.max_wait_s
            ):
                call.limiter_timed_out(step)
                continue
            request = call.send(step)
            adapter = step.state.model._adapter
            try:
                # (a whole answer comes in hand, without the stream's generator layers)
                chunks = adapter.chat(request, stream=True) if stream else adapter.complete(request)
                for chunk in chunks:
                    out = call.on_chunk(step, chunk)
                    if out is not None:
                        yield out
            except (ProviderError, CapabilityError) as exc:
                call.failed(step, exc)
                continue
            except BaseException:
                call.aborted(step)
                raise
            yield from call.succeeded(step)
            return
        raise call.give_up()

    async def _arun(
        self,
        messages: list[BaseMessage],
        kwargs: dict[str, Any],
        *,
        stream: bool,
        route: dict[str, Any] | None = None,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = _Call(self, messages, kwargs)
        while (step := await call.anext()) is not None:
            if isinstance(step, float):
                await self._pool.asleep(step)
                continue
            if step.limiter_tokens is not None and not await step.state.limiter.aacquire(
                step.limiter_tokens, max_wait=self._pool.policy.max_wait_s
            ):
                call.limiter_timed_out(step)
                continue
            request = call.send(step)
            if route is not None:
                route["provider"], route["model"] = step.state.name, step.state.spec
            adapter = step.state.model._adapter
            try:
                if stream:
                    async for chunk in adapter.achat(request, stream=True):
                        out = call.on_chunk(step, chunk)
                        if out is not None:
                            yield out
                else:
                    for chunk in await adapter.acomplete(request):
                        out = call.on_chunk(step, chunk)
                        if out is not None:
                            yield out
            except (ProviderError, CapabilityError) as exc:
                call.failed(step, exc)
                continue
            except BaseException:
                call.aborted(step)
                raise
            for chunk in call.succeeded(step):
                yield chunk
            return
        raise call.give_up()

    def achunks(
        self,
        messages: list[BaseMessage],
        *,
        stream: bool,
        stop: list[str] | None = None,
        route: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """One call's chunks as the loop yields them, without LangChain's callbacks and run
        tracking: the path of a server that answers over the wire (the gateway). The last
        chunk carries ``cost`` and the ``agency`` route, as in `astream`; ``route``, when
        given, holds the ``provider`` (entry) and ``model`` (spec) being asked as each
        attempt starts, so a streamed answer's headers can name them at its first chunk."""
        return self._arun(messages, self._kwargs(stop, kwargs), stream=stream, route=route)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from relay(self._run(messages, self._kwargs(stop, kwargs), stream=True), run_manager)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        chunks = self._arun(messages, self._kwargs(stop, kwargs), stream=True)
        async for chunk in arelay(chunks, run_manager):
            yield chunk

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        stream = self.streaming or bool(kwargs.get("stream"))
        chunks = self._run(messages, self._kwargs(stop, kwargs), stream=stream)
        return merge_chunks(list(chunks))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        stream = self.streaming or bool(kwargs.get("stream"))
        chunks = [c async for c in self._arun(messages, self._kwargs(stop, kwargs), stream=stream)]
        return merge_chunks(chunks)


# See agency.chat_models: LangChain inspects _generate's signature on every call.
for _method in (FallbackChatModel._generate, FallbackChatModel._agenerate):
    _method.__signature__ = inspect.signature(_method)  # type: ignore[union-attr]
