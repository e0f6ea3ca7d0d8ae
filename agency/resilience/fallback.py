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

import dataclasses
import inspect
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

from agency._fastpath import QuietInvokeMixin
from agency._structured import StructuredOutputMixin
from agency.chat_models import add_chunk_usage, arelay, merge_chunks, relay
from agency.errors import (
    AllProvidersFailed,
    BudgetExceeded,
    CapabilityError,
    CircuitOpen,
    ProviderError,
    RateLimited,
)
from agency.pricing import DEFAULT_MAX_OUTPUT_TOKENS
from agency.providers._base import Capabilities
from agency.resilience._splice import Splice, continuation_messages
from agency.resilience.balancing import CallConstraints, ProviderState, order_candidates
from agency.resilience.breaker import counts_as_failure
from agency.resilience.policy import condition_of

if TYPE_CHECKING:
    from agency.resilience.budget import Reservation
    from agency.resilience.pool import ProviderPool

__all__ = ["MAX_DEFERRALS", "FallbackChatModel"]
MAX_DEFERRALS = 3
"""Times one call may put a provider back in line because its rate limiter had no room."""


@dataclass
class _Step:
    state: ProviderState
    limiter_tokens: int | None  # acquire these (waiting) before sending; None = already taken
    tokens: int
    reservation: Reservation | None
    retry: bool
    fallback: bool
    emitted: str = ""
    tool_chunks: bool = False
    usage: dict[str, Any] | None = None
    splice: Splice | None = None
    seen_meta: set[str] = field(default_factory=set)
    sent_at: float = 0.0  # the pool's clock when the request went out


def _policy_of(model: FallbackChatModel, pool: ProviderPool) -> Any:
    """The pool's policy with this model's own bounds (a workflow step's) over the agency's;
    worked out once per pool policy, not on every call."""
    key = (pool.policy, model.max_attempts, model.fallback)
    known = model.__dict__.get("_policy")
    if known is not None and known[0] == key:
        return known[1]
    policy = pool.policy
    if model.max_attempts is not None:
        policy = dataclasses.replace(policy, max_attempts=model.max_attempts)
    if model.fallback is not None:
        policy = dataclasses.replace(policy, fallback=model.fallback)
    object.__setattr__(model, "_policy", (key, policy))
    return policy


class _Call:
    """The decisions of one call; no I/O (the drivers send, stream and sleep)."""

    def __init__(
        self, model: FallbackChatModel, messages: list[BaseMessage], kwargs: dict[str, Any]
    ) -> None:
        from agency.pricing import estimate_tokens

        self.model = model
        self.pool: ProviderPool = model._pool
        self.policy = _policy_of(model, self.pool)
        self.messages = messages
        self.kwargs = kwargs
        self.prompt_tokens = estimate_tokens(messages, tools=kwargs.get("tools"))
        states = [self.pool.get(ref) for ref in model.chain]
        constraints = CallConstraints(
            prompt_tokens=self.prompt_tokens,
            max_tokens=kwargs.get("max_tokens") or model.max_tokens or DEFAULT_MAX_OUTPUT_TOKENS,
            max_cost=model.max_cost,
            preferred_models=tuple(model.preferred_models),
        )
        ordered = order_candidates(states, self.policy.strategy, constraints)
        if not self.policy.fallback:
            ordered = ordered[:1]
        self.order: deque[ProviderState] = deque(ordered)
        self.later: list[tuple[float, ProviderState]] = []  # (not before, state)
        self.tried: set[str] = set()
        self.deferrals: dict[str, int] = {}
        self.attempts = 0
        self.failures: list[tuple[str, BaseException]] = []
        self.failovers: list[dict[str, Any]] = []
        self.cost: float | None = 0.0
        self.emitted = ""  # text the caller has received, across attempts

    # -- choosing ---------------------------------------------------------------------
    def next(self) -> _Step | float | None:
        """The next attempt; or seconds to sleep before asking again; or ``None`` when the
        call has nothing left to try."""
        pool, policy = self.pool, self.policy
        while self.attempts < policy.max_attempts:
            if self.order:
                state = self.order.popleft()
            elif self.later:
                self.later.sort(key=lambda item: item[0])
                ready_at, state = self.later.pop(0)
                wait = ready_at - pool.clock()
                if wait > policy.max_wait_s:
                    continue
                if wait > 0:
                    # Sleep first, then decide afresh (the breaker or limiter may differ then).
                    self.later.insert(0, (ready_at, state))
                    return wait
            else:
                return None
            if not self._capable(state):
                continue
            if not state.breaker.allow():
                retry_in = state.breaker.retry_in()
                self._skip(
                    state,
                    CircuitOpen(
                        f"circuit open after recent failures; next probe in {retry_in:.1f}s",
                        provider=state.model.provider,
                        model=state.model.model,
                        retry_after=retry_in,
                    ),
                )
                continue
            tokens = self.prompt_tokens + self._max_tokens(state)
            limiter_tokens: int | None = None
            if not state.limiter.try_acquire(tokens):
                need = state.limiter.wait_time(tokens)
                count = self.deferrals.get(state.name, 0)
                if (self.order or self.later) and count < MAX_DEFERRALS:
                    # Someone else may have room now: this one goes back in line.
                    self.deferrals[state.name] = count + 1
                    self.later.append((pool.clock() + need, state))
                    state.breaker.release()
                    continue
                if need > policy.max_wait_s:
                    error = RateLimited(
                        f"client-side rate limit: no room for {need:.1f}s",
                        provider=state.model.provider,
                        model=state.model.model,
                        retry_after=need,
                    )
                    state.breaker.release()
                    self._skip(state, error)
                    continue
                limiter_tokens = tokens
            reservation = None
            if pool.budget is not None:
                worst = state.worst_case_cost(self.prompt_tokens, self._max_tokens(state))
                try:
                    reservation = pool.budget.reserve(worst, role=self.model.role)  # type: ignore[arg-type]
                except BudgetExceeded as exc:
                    state.breaker.release()
                    if limiter_tokens is None:
                        state.limiter.settle(tokens, 0)
                    self.failures.append((state.name, exc))
                    continue
            self.attempts += 1
            step = _Step(
                state=state,
                limiter_tokens=limiter_tokens,
                tokens=tokens,
                reservation=reservation,
                retry=state.name in self.tried,
                fallback=bool(self.failures) and state.name not in self.tried,
            )
            self.tried.add(state.name)
            if self.emitted:
                step.splice = Splice(self.emitted)
            return step
        return None

    def _capable(self, state: ProviderState) -> bool:
        caps = state.model.capabilities
        problem = None
        if self.kwargs.get("tools") and not caps.tools:
            problem = "tool calling"
        fmt = (self.kwargs.get("response_format") or {}).get("type")
        if fmt == "json_schema" and not caps.json_schema:
            problem = "JSON-schema output"
        elif fmt == "json_object" and not caps.json_mode:
            problem = "JSON mode"
        if problem is None:
            return True
        self.failures.append(
            (state.name, CapabilityError(f"{state.spec} does not support {problem}"))
        )
        return False

    def _skip(self, state: ProviderState, error: ProviderError) -> None:
        self.failures.append((state.name, error))
        self.pool.stats.record(provider=state.name, role=self.model.role, ok=False, error=error)

    def _max_tokens(self, state: ProviderState) -> int:
        explicit = self.kwargs.get("max_tokens") or self.model.max_tokens or state.model.max_tokens
        if explicit:
            return int(explicit)
        if state.price is not None and state.price.max_output:
            # The model's own ceiling: a smaller guess would let budgets be overspent.
            return state.price.max_output
        return DEFAULT_MAX_OUTPUT_TOKENS

    def send(self, step: _Step) -> Any:
        """The wire request for this attempt (with the continuation after a cut stream); the
        attempt counts as in flight from now."""
        messages = self.messages
        if self.emitted:
            messages = continuation_messages(messages, self.emitted)
        stop = self.kwargs.get("stop")
        kwargs = {k: v for k, v in self.kwargs.items() if k != "stop"}
        request = step.state.model._request(messages, stop, kwargs)
        step.state.started()
        step.sent_at = self.pool.clock()
        return request

    def limiter_timed_out(self, step: _Step) -> None:
        """The limiter had no room within ``max_wait_s`` after all."""
        self.attempts -= 1
        step.state.breaker.release()
        if step.reservation is not None:
            step.reservation.release()
        self._skip(
            step.state,
            RateLimited(
                "client-side rate limit: no room in time",
                provider=step.state.model.provider,
                model=step.state.model.model,
            ),
        )

    # -- streaming --------------------------------------------------------------------
    def on_chunk(self, step: _Step, chunk: ChatGenerationChunk) -> ChatGenerationChunk | None:
        """Account for one chunk; what to pass on (``None``: nothing)."""
        message = chunk.message
        if isinstance(message, AIMessageChunk):
            step.usage = add_chunk_usage(step.usage, chunk)
            if message.tool_call_chunks:
                step.tool_chunks = True
        text = chunk.text
        if step.splice is not None:
            kept = step.splice.feed(text) if text else ""
            meta = {k: v for k, v in message.response_metadata.items() if k not in step.seen_meta}
            if kept == text and meta == message.response_metadata:
                pass
            elif not kept and not _has_payload(message) and not meta:
                return None
            else:
                message = message.model_copy(update={"content": kept, "response_metadata": meta})
                chunk = ChatGenerationChunk(message=message, generation_info=chunk.generation_info)
            text = kept
        step.emitted += text
        self.emitted += text
        step.seen_meta.update(message.response_metadata)
        return chunk

    # -- outcomes ---------------------------------------------------------------------
    def succeeded(self, step: _Step) -> list[ChatGenerationChunk]:
        """Settle the attempt; the closing chunks (held text, cost and route metadata)."""
        from agency.pricing import cost_of

        latency_s = self.pool.clock() - step.sent_at
        state = step.state
        cost = cost_of(step.usage, state.price)
        self._settle(step, cost)
        state.breaker.record_success()
        state.finished(latency_s)
        self.pool.stats.record(
            provider=state.name,
            role=self.model.role,
            ok=True,
            latency_s=latency_s,
            usage=step.usage,
            cost=cost,
            retry=step.retry,
            fallback=step.fallback,
        )
        closing: list[ChatGenerationChunk] = []
        held = step.splice.flush() if step.splice is not None else ""
        if held:
            self.emitted += held
            closing.append(ChatGenerationChunk(message=AIMessageChunk(content=held)))
        route = {
            "provider": state.name,
            "model": state.spec,
            "attempts": self.attempts,
            "failures": [
                {"provider": name, "error": type(err).__name__, "message": str(err)}
                for name, err in self.failures
            ],
            "failover": self.failovers,
        }
        closing.append(
            ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    response_metadata={"cost": self.cost, "agency": route},
                    chunk_position="last",
                )
            )
        )
        return closing

    def failed(self, step: _Step, error: BaseException) -> None:
        """Settle a failed attempt and decide: raise now, or leave the next to `next`."""
        from agency.pricing import cost_of

        state = step.state
        state.finished(None)
        partial: float | None = 0.0  # a request that failed before any text is not billed
        if step.emitted and state.price is not None:
            out = max(1, len(step.emitted) // 4)
            partial = cost_of(
                {"input_tokens": self.prompt_tokens, "output_tokens": out}, state.price
            )
        self._settle(step, partial)
        if counts_as_failure(error):
            state.breaker.record_failure(retry_after=getattr(error, "retry_after", None))
        else:
            state.breaker.release()
        self.pool.stats.record(
            provider=state.name,
            role=self.model.role,
            ok=False,
            error=error,
            retry=step.retry,
            fallback=step.fallback,
        )
        self.failures.append((state.name, error))
        if not self.policy.falls_back(error):
            raise error
        if self.emitted and (step.tool_chunks or not self.policy.stream_failover):
            raise self.give_up()
        if step.emitted:
            self.failovers.append(
                {"from": state.name, "at_char": len(self.emitted), "error": type(error).__name__}
            )
        rule = self.policy.rule_for(condition_of(error))
        for ref in reversed(rule.fallback_providers if rule is not None else ()):
            target = self.pool.get(ref)
            if target in self.order:
                self.order.remove(target)
            if target is not state:
                self.order.appendleft(target)
        delay = self.policy.retry_delay(error)
        if delay is not None:
            self.later.append((self.pool.clock() + delay, state))

    def aborted(self, step: _Step) -> None:
        """The caller stopped consuming (or the task was cancelled) mid-attempt."""
        step.state.finished(None)
        step.state.breaker.release()
        self._settle(step, None)

    def _settle(self, step: _Step, cost: float | None) -> None:
        if step.reservation is not None:
            # None (usage unknown) settles at the reserved worst case: never under-count.
            step.reservation.settle(cost)
        used = 0
        if step.usage:
            used = int(step.usage.get("input_tokens", 0)) + int(step.usage.get("output_tokens", 0))
        step.state.limiter.settle(step.tokens, used)
        if cost is None:
            if step.state.price is None:
                self.cost = None
        elif self.cost is not None:
            self.cost += cost

    def give_up(self) -> BaseException:
        """The error that ends the call: every failure, in order."""
        errors = [e for _, e in self.failures]
        if errors and all(isinstance(e, BudgetExceeded) for e in errors):
            return errors[0]
        if not errors:
            return ProviderError(
                f"no provider in the chain {self.model.chain} fits this call "
                "(context window, max_cost or capabilities)"
            )
        what = "; ".join(f"{n}: {type(e).__name__}" for n, e in self.failures)
        return AllProvidersFailed(
            f"all providers failed after {self.attempts} attempt(s) ({what})",
            [e if isinstance(e, Exception) else RuntimeError(str(e)) for e in errors],
            self.failures,
        )


def _has_payload(message: BaseMessage) -> bool:
    if not isinstance(message, AIMessageChunk):
        return False
    return bool(message.tool_call_chunks or message.usage_metadata or message.additional_kwargs)


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
            try:
                for chunk in step.state.model._adapter.chat(request, stream=stream):
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
        self, messages: list[BaseMessage], kwargs: dict[str, Any], *, stream: bool
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = _Call(self, messages, kwargs)
        while (step := call.next()) is not None:
            if isinstance(step, float):
                await self._pool.asleep(step)
                continue
            if step.limiter_tokens is not None and not await step.state.limiter.aacquire(
                step.limiter_tokens, max_wait=self._pool.policy.max_wait_s
            ):
                call.limiter_timed_out(step)
                continue
            request = call.send(step)
            try:
                async for chunk in step.state.model._adapter.achat(request, stream=stream):
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
