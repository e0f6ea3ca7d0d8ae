"""Many providers as one: fallback, circuit breakers, rate limits, balancing and budgets.

`agency.Agency` composes these; each piece also works alone (all of them take an injectable
clock). Submodules are imported on use, so ``import agency.resilience`` stays light.
"""

from __future__ import annotations

from typing import Any

from agency._lazy import export

_EXPORTS: dict[str, str] = {
    "Budget": "agency.resilience.budget",
    "BudgetPolicy": "agency.resilience.budget",
    "BreakerPolicy": "agency.resilience.breaker",
    "CallConstraints": "agency.resilience.balancing",
    "CircuitBreaker": "agency.resilience.breaker",
    "FallbackChatModel": "agency.resilience.fallback",
    "FallbackPolicy": "agency.resilience.policy",
    "FallbackRule": "agency.resilience.policy",
    "ProviderPool": "agency.resilience.pool",
    "ProviderState": "agency.resilience.balancing",
    "RateLimitPolicy": "agency.resilience.limits",
    "RateLimiter": "agency.resilience.limits",
    "condition_of": "agency.resilience.policy",
    "flush_state": "agency.resilience._store",
    "order_candidates": "agency.resilience.balancing",
}

__all__ = [
    "BreakerPolicy",
    "Budget",
    "BudgetPolicy",
    "CallConstraints",
    "CircuitBreaker",
    "FallbackChatModel",
    "FallbackPolicy",
    "FallbackRule",
    "ProviderPool",
    "ProviderState",
    "RateLimitPolicy",
    "RateLimiter",
    "condition_of",
    "flush_state",
    "order_candidates",
]


def __getattr__(name: str) -> Any:
    return export(__name__, _EXPORTS, name)
