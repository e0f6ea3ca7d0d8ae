"""What the fallback loop does on each kind of failure: policies as data.

What a failure means (retry the same provider? fall back? which condition?) is one table,
`agency.errors.ERROR_POLICIES`; `condition_of` reads its condition column, the names the
config speaks of::

    rate_limit      RateLimited (429), or the client-side limiter had no room in time
    unavailable     ProviderUnavailable (5xx, 529), CircuitOpen, ConnectionFailed,
                    MalformedResponse (the provider answered garbage), ModelNotFound
    timeout         Timeout
    context_window  ContextWindowExceeded
    content_filter  ContentFiltered
    auth            AuthenticationError, PermissionDenied

Failures the table marks "fall back" (rate limits, 5xx, timeouts, connection errors, garbage,
a model this entry lacks) move on to the next provider without a rule; those marked "by rule"
(``context_window``, ``content_filter``, ``auth``) only where a rule names them; any other
error (a plain `BadRequest`: the request itself is wrong) is raised at once, because every
provider would refuse it too. The same provider is tried again later in the call only where
the table's ``retry_same`` says so, or a rule's ``retry_original`` asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from agency.errors import ERROR_POLICIES, Condition, classify, retries_same
from agency.resilience.balancing import Strategy

__all__ = [
    "DEFAULT_FALLBACK_CONDITIONS",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_WAIT_S",
    "DEFAULT_RETRY_DELAY_S",
    "Condition",
    "FallbackPolicy",
    "FallbackRule",
    "condition_of",
]

DEFAULT_MAX_ATTEMPTS = 4
"""Attempts of one call, across retries and fallbacks, unless configured."""
DEFAULT_RETRY_DELAY_S = 1.0
"""Pause before trying the same provider again, unless its ``Retry-After`` says longer."""
DEFAULT_MAX_WAIT_S = 30.0
"""Longest one call sleeps at once (a retry delay, a ``Retry-After``, a rate limit)."""

DEFAULT_FALLBACK_CONDITIONS: frozenset[Condition] = frozenset(
    p.condition for p in ERROR_POLICIES.values() if p.fall_back == "yes" and p.condition
)
"""Conditions that move on to the next provider without a rule (from the table)."""


def condition_of(exc: BaseException) -> Condition | None:
    """The config's name for this failure; ``None`` for failures no rule can name."""
    return classify(exc).condition


@dataclass(frozen=True)
class FallbackRule:
    """What to do on one condition (``[[llm.fallback.rules]]``)."""

    condition: Condition
    """The failure this rule handles."""
    fallback_providers: tuple[str, ...] = ()
    """Entry names or specs tried next, before the rest of the chain."""
    retry_original: bool = False
    """Try the failing provider again (after ``retry_delay_s``) once those were tried; only
    for failures the table marks ``retry_same`` (a 404, a bad key or a prompt too long would
    only fail the same way again)."""
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

    def falls_back(self, exc: BaseException) -> bool:
        """Whether this failure moves on to another provider (instead of raising)."""
        kind = classify(exc)
        if kind.fall_back == "by_rule":
            return self.rule_for(kind.condition) is not None
        return kind.fall_back == "yes"

    def retry_delay(self, exc: BaseException) -> float | None:
        """Seconds before the failing provider may be tried again in this call; ``None``: not
        again. Never where the table's ``retry_same`` says no; else a rule for the condition
        decides (``retry_original``, after its ``retry_delay_s``), or, without one, after
        ``retry_delay_s`` or the provider's longer ``Retry-After``."""
        if not retries_same(exc):
            return None
        rule = self.rule_for(condition_of(exc))
        if rule is not None:
            return rule.retry_delay_s if rule.retry_original else None
        return max(self.retry_delay_s, getattr(exc, "retry_after", None) or 0.0)
