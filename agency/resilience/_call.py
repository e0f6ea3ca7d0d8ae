"""The decisions of one call of a `FallbackChatModel` (`_Call`), apart from its I/O.

`_Call.next` chooses the next attempt (or a sleep, or the end); `on_chunk` accounts for what
streams back; `succeeded`, `failed` and `aborted` settle an attempt. The drivers in
`agency.resilience.fallback` only send, stream and sleep.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk

from agency.chat_models import add_chunk_usage
from agency.errors import (
    AllProvidersFailed,
    BudgetExceeded,
    CapabilityError,
    CircuitOpen,
    ProviderError,
    RateLimited,
)
from agency.pricing import DEFAULT_MAX_OUTPUT_TOKENS
from agency.resilience._splice import Splice, continuation_messages
from agency.resilience.balancing import CallConstraints, ProviderState, order_candidates
from agency.resilience.breaker import counts_as_failure
from agency.resilience.policy import condition_of

if TYPE_CHECKING:
    from agency.resilience.budget import Reservation
    from agency.resilience.fallback import FallbackChatModel
    from agency.resilience.pool import ProviderPool

__all__ = ["MAX_DEFERRALS"]

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


@dataclass(frozen=True)
class _Ask:
    """What `_Call._choose` needs its driver to ask the fleet (`shared.Fleet.admit`)."""

    fleet: Any
    args: tuple[Any, ...]


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
        chooser, verdict = self._choose(), None
        while True:
            try:
                ask = chooser.send(verdict)
            except StopIteration as chosen:
                return chosen.value  # type: ignore[no-any-return]
            verdict = ask.fleet.admit(*ask.args)

    async def anext(self) -> _Step | float | None:
        """The async twin of `next`: a fleet's admission is awaited, not waited for."""
        chooser, verdict = self._choose(), None
        while True:
            try:
                ask = chooser.send(verdict)
            except StopIteration as chosen:
                return chosen.value  # type: ignore[no-any-return]
            verdict = await ask.fleet.aadmit(*ask.args)

    def _choose(self) -> Generator[_Ask, Any, _Step | float | None]:
        """`next`, asking its driver for each fleet admission (the one I/O of choosing)."""
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
            if state.fleet is not None:
                tokens = self.prompt_tokens + self._max_tokens(state)
                worst = None
                if pool.budget is not None:
                    worst = state.worst_case_cost(self.prompt_tokens, self._max_tokens(state))
                verdict = yield _Ask(state.fleet, (tokens, worst, self.model.role, pool.budget))
                admitted = self._admitted(state, tokens, verdict)
                if isinstance(admitted, _Step):
                    return admitted
                if admitted:
                    continue  # refused: recorded, or deferred
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
            return self._step(state, tokens, reservation, limiter_tokens)
        return None

    def _step(
        self, state: ProviderState, tokens: int, reservation: Any, limiter_tokens: int | None
    ) -> _Step:
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

    def _admitted(self, state: ProviderState, tokens: int, verdict: Any) -> _Step | bool:
        """A fleet's verdict on an attempt (breaker, limiter and budget, one round trip): the
        step, or True when refused (recorded, or deferred as for a local limiter), or False
        when the store did not answer (the per-object path then decides, as ``[state]``
        says)."""
        if verdict is None:
            return False
        model = state.model
        if verdict.kind == "ok":
            return self._step(state, tokens, verdict.reservation, None)
        if verdict.kind == "breaker":
            message = f"circuit open after recent failures; next probe in {verdict.wait:.1f}s"
            error: ProviderError = CircuitOpen(
                message, provider=model.provider, model=model.model, retry_after=verdict.wait
            )
            self._skip(state, error)
        elif verdict.kind == "budget":
            self.failures.append((state.name, verdict.error))
        else:  # the limiter has no room yet: wait (or let another provider go first)
            count = self.deferrals.get(state.name, 0)
            if verdict.wait <= self.policy.max_wait_s and count < MAX_DEFERRALS:
                self.deferrals[state.name] = count + 1
                self.later.append((self.pool.clock() + verdict.wait, state))
            else:
                error = RateLimited(
                    f"client-side rate limit: no room for {verdict.wait:.1f}s",
                    provider=model.provider, model=model.model, retry_after=verdict.wait,
                )  # fmt: skip
                self._skip(state, error)
        return True

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
