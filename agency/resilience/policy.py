"""What the fallback loop does on each kind of failure: policies as data.

A failure is classified once, by `condition_of`, into the conditions the config speaks of::

    rate_limit      RateLimited (429), or the client-side limiter had no room in time
    unavailable     ProviderUnavailable (5xx, 529), CircuitOpen, ConnectionFailed,
                    MalformedResponse (the provider answered garbage), ModelNotFound
    timeout         Timeout
    context_window  ContextWindowExceeded
    content_filter  ContentFiltered
    auth            AuthenticationError, PermissionDenied

By default the loop falls back on ``rate_limit``, ``unavailable`` and ``timeout`` (the provider
is at fault, another may answer). ``context_window``, ``content_filter`` and ``auth`` fall back
only where a rule names them; any other error (a plain `BadRequest`: the request itself is
wrong) is raised at once, because every provider would refuse it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agency.errors import (
    AuthenticationError,
    CircuitOpen,
    ConnectionFailed,
    ContentFiltered,
    ContextWindowExceeded,
    MalformedResponse,
    ModelNotFound,
    PermissionDenied,
    ProviderUnavailable,
    RateLimited,
    Timeout,
)
from agency.resilience.balancing import Strategy

__all__ = [
    "DEFAULT_FALLBACK_CONDITIONS",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_WAIT_S",
    "DEFAULT_RETRY_DELAY_S",
    "RETRYABLE_CONDITIONS",
    "Condition",
    "FallbackPolicy",
    "FallbackRule",
    "condition_of",
]

Condition = Literal[
    "rate_limit", "unavailable", "timeout", "context_window", "content_filter", "auth"
]

DEFAULT_MAX_ATTEMPTS = 4
"""Attempts of one call, across retries and fallbacks, unless configured."""
DEFAULT_RETRY_DELAY_S = 1.0
"""Pause before trying the same provider again, unless its ``Retry-After`` says longer."""
DEFAULT_MAX_WAIT_S = 30.0
"""Longest one call sleeps at once (a retry delay, a ``Retry-After``, a rate limit)."""

DEFAULT_FALLBACK_CONDITIONS: frozenset[Condition] = frozenset(
    {"rate_limit", "unavailable", "timeout"}
)
"""Conditions that move on to the next provider without a rule."""
RETRYABLE_CONDITIONS: frozenset[Condition] = frozenset({"rate_limit", "unavailable", "timeout"})
"""Conditions after which the same provider may be tried again, later in the same call."""


def condition_of(exc: BaseException) -> Condition | None:
    """The config's name for this failure; ``None`` for errors that no provider would fix."""
    if isinstance(exc, RateLimited):
        return "rate_limit"
    if isinstance(exc, Timeout):
        return "timeout"
    if isinstance(
        exc,
        ProviderUnavailable | CircuitOpen | ConnectionFailed | MalformedResponse | ModelNotFound,
    ):
        return "unavailable"
    if isinstance(exc, ContextWindowExceeded):
        return "context_window"
    if isinstance(exc, ContentFiltered):
        return "content_filter"
    if isinstance(exc, AuthenticationError | PermissionDenied):
        return "auth"
    return None


@dataclass(frozen=True)
class FallbackRule:
    """What to do on one condition (``[[llm.fallback.rules]]``)."""

    condition: Condition
    """The failure this rule handles."""
    fallback_providers: tuple[str, ...] = ()
    """Entry names or specs tried next, before the rest of the chain."""
    retry_original: bool = False
    """Try the failing provider again (after ``retry_delay_s``) once those were tried."""
    retry_delay_s: float = 0.0
    """Seconds before the original may be tried again."""


@dataclass(frozen=True)
class FallbackPolicy:
    """How one call moves through its chain of providers."""

    strategy: Strategy = "priority"
    """Order of the chain for each call (see `agency.resilience.balancing`)."""
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    """Every attempt of one call counts, retries and fallbacks alike; skipped providers do not."""
    retry_delay_s: float = DEFAULT_RETRY_DELAY_S
    """Pause before the same provider is tried again (a longer ``Retry-After`` wins)."""
    max_wait_s: float = DEFAULT_MAX_WAIT_S
    """A retry or rate-limit wait longer than this is not waited for: the provider is skipped."""
    fallback: bool = True
    """Whether other providers of the chain are tried; ``False`` retries the first only."""
    rules: tuple[FallbackRule, ...] = ()
    """Per-condition rules; the first rule for a condition applies."""
    stream_failover: bool = True
    """Whether a stream that fails after emitting text is continued by the next provider."""

    def rule_for(self, condition: Condition | None) -> FallbackRule | None:
        """The rule configured for ``condition``, if any."""
        return next((r for r in self.rules if r.condition == condition), None)

    def falls_back(self, condition: Condition | None) -> bool:
        """Whether a failure of this condition moves on (instead of raising)."""
        if condition is None:
            return False
        return condition in DEFAULT_FALLBACK_CONDITIONS or self.rule_for(condition) is not None
