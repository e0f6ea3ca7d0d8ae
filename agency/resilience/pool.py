"""`ProviderPool`: the run-time state one `Agency` shares between all of its calls.

It holds a `ProviderState` per provider entry (breaker, limiter, price, live load numbers),
the budget, the statistics, the fallback policy and the clock. Chains name providers by entry
name or by ``"provider:model"`` spec; a spec that is not an entry gets its own state on first
use, built by ``make_state``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from agency.resilience.balancing import ProviderState
from agency.resilience.policy import FallbackPolicy

if TYPE_CHECKING:
    from agency.resilience.budget import Budget
    from agency.stats import Stats

__all__ = ["ProviderPool"]


class ProviderPool:
    """Provider states by name, plus the shared policy, budget, stats and clock."""

    def __init__(
        self,
        states: Mapping[str, ProviderState],
        *,
        policy: FallbackPolicy,
        stats: Stats,
        budget: Budget | None = None,
        make_state: Callable[[str], ProviderState] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        asleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.states: dict[str, ProviderState] = dict(states)
        self.policy = policy
        self.stats = stats
        self.budget = budget
        self.clock = clock
        self.sleep = sleep
        self.asleep = asleep
        self._make_state = make_state
        self._lock = threading.Lock()

    def get(self, ref: str) -> ProviderState:
        """The state of entry ``ref``, or of the spec ``ref`` (created on first use).

        Raises `KeyError` for an unknown name when no ``make_state`` was given.
        """
        state = self.states.get(ref)
        if state is not None:
            return state
        if self._make_state is None:
            raise KeyError(ref)
        with self._lock:
            state = self.states.get(ref)
            if state is None:
                state = self._make_state(ref)
                self.states[ref] = state
        return state
