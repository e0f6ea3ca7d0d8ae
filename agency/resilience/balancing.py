"""Provider state shared by every call of one `Agency`, and the order in which to try providers.

A `ProviderState` is one configured provider entry at run time: its chat model (with the
adapter's own retries off), its circuit breaker, its rate limiter, its price and the live
numbers the balancing strategies read (calls in flight, an EWMA of latency).

`order_candidates` turns a chain into the order one call tries it:

    priority      by ``priority`` (lower first), ties in chain order
    round-robin   the chain rotated by one on every call
    weighted      a random order drawn by ``weight`` (Efraimidis-Spirakis keys)
    least-loaded  fewest calls in flight first
    latency       lowest EWMA latency first; providers with no sample yet go first, to get one
    cost          cheapest worst case first, among those that fit the call's constraints
                  (context window, ``max_cost``); ``preferred_models`` first when they fit

Open breakers are not filtered here: the fallback loop skips them at no cost, and records why.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from agency.chat_models import AgencyChatModel
    from agency.pricing import ModelPrice
    from agency.resilience.breaker import CircuitBreaker
    from agency.resilience.limits import RateLimiter

__all__ = ["LATENCY_EWMA_ALPHA", "CallConstraints", "ProviderState", "Strategy", "order_candidates"]

Strategy = Literal["priority", "round-robin", "weighted", "least-loaded", "latency", "cost"]

LATENCY_EWMA_ALPHA = 0.2
"""Weight of the newest sample in the latency EWMA (about the last 10 calls matter)."""


@dataclass(eq=False)
class ProviderState:
    """One provider entry at run time, shared by every call that may use it."""

    name: str
    """Entry name (or the spec, for chain members that are not configured entries)."""
    model: AgencyChatModel
    """Its chat model; adapter retries are off, the fallback loop owns retries."""
    breaker: CircuitBreaker
    """Skips the provider at no cost while it is failing."""
    limiter: RateLimiter
    """Client-side RPM/TPM, informed by the provider's rate-limit headers."""
    price: ModelPrice | None = None
    """Price of the model, when the pricing table knows it."""
    priority: int = 100
    """Lower is tried first by the ``priority`` strategy."""
    weight: int = 1
    """Share of traffic under the ``weighted`` strategy."""
    in_flight: int = 0
    """Calls running now (``least-loaded``)."""
    latency_ewma_s: float | None = None
    """Smoothed latency of successful calls, seconds (``latency``)."""
    fleet: Any = None
    """The fleet's admission (`agency.resilience.shared.Fleet`: breaker, limiter and budget
    in one Redis round trip) when the state is shared; None in one process."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def spec(self) -> str:
        """``"provider:model"`` of the chat model."""
        return f"{self.model.provider}:{self.model.model}"

    def started(self) -> None:
        """A call to this provider begins."""
        with self._lock:
            self.in_flight += 1

    def finished(self, latency_s: float | None) -> None:
        """A call ended; ``latency_s`` is given for successes only."""
        with self._lock:
            self.in_flight -= 1
            if latency_s is not None:
                old = self.latency_ewma_s
                self.latency_ewma_s = (
                    latency_s if old is None else old + LATENCY_EWMA_ALPHA * (latency_s - old)
                )

    def worst_case_cost(self, prompt_tokens: int, max_tokens: int) -> float | None:
        """The most a call can cost here, USD (see `agency.pricing.worst_case_cost`)."""
        from agency.pricing import worst_case_cost

        return worst_case_cost(self.price, prompt_tokens, max_tokens)


@dataclass(frozen=True)
class CallConstraints:
    """What one call needs from a provider, for the ``cost`` strategy."""

    prompt_tokens: int = 0
    """Estimated prompt tokens."""
    max_tokens: int = 0
    """Tokens the call may generate."""
    max_cost: float | None = None
    """Most this call may cost (worst case), USD; ``None`` = no limit."""
    preferred_models: tuple[str, ...] = ()
    """Models (names or specs) to choose first when they fit."""


_rotation = itertools.count()


def order_candidates(
    states: Sequence[ProviderState],
    strategy: Strategy,
    constraints: CallConstraints | None = None,
    *,
    rng: Callable[[], float] = random.random,
) -> list[ProviderState]:
    """The order in which one call tries ``states`` (see the module docstring)."""
    if len(states) <= 1:
        return list(states)
    if strategy == "priority":
        return sorted(states, key=lambda s: s.priority)
    if strategy == "round-robin":
        start = next(_rotation) % len(states)
        return [*states[start:], *states[:start]]
    if strategy == "weighted":
        # Efraimidis-Spirakis: key u^(1/w); sorting by key descending draws without replacement.
        keyed = [(rng() ** (1.0 / max(s.weight, 1)), i) for i, s in enumerate(states)]
        return [states[i] for _, i in sorted(keyed, reverse=True)]
    if strategy == "least-loaded":
        return sorted(states, key=lambda s: (s.in_flight, s.priority))
    if strategy == "latency":
        return sorted(
            states,
            key=lambda s: (s.latency_ewma_s is not None, s.latency_ewma_s or 0.0, s.priority),
        )
    if strategy == "cost":
        return _by_cost(states, constraints or CallConstraints())
    raise ValueError(f"unknown balancing strategy {strategy!r}")


def _by_cost(states: Sequence[ProviderState], c: CallConstraints) -> list[ProviderState]:
    def fits(s: ProviderState) -> bool:
        window = s.price.context_window if s.price else None
        if window is not None and c.prompt_tokens + c.max_tokens > window:
            return False
        cost = s.worst_case_cost(c.prompt_tokens, c.max_tokens)
        return c.max_cost is None or cost is None or cost <= c.max_cost

    def key(s: ProviderState) -> tuple[Any, ...]:
        preferred = bool(c.preferred_models) and (
            s.model.model in c.preferred_models or s.spec in c.preferred_models
        )
        cost = s.worst_case_cost(c.prompt_tokens, c.max_tokens)
        # Unpriced providers go after priced ones: their cost is unknown, not zero.
        return (not preferred, cost is None, math.inf if cost is None else cost, s.priority)

    # Those that cannot fit are left out: their context window is too small (a sure failure)
    # or their worst case is over the call's max_cost.
    return sorted((s for s in states if fits(s)), key=key)
