"""A circuit breaker per provider: stop calling a provider that keeps failing, at no cost.

Contract::

    closed ──(N failures in a row, or failure rate >= r over >= min_calls recent outcomes)──► open
    open ──(cooldown elapsed)──► half_open          (read lazily from the clock: no timer thread)
    half_open ──probe succeeds──► closed             (window cleared, cooldown back to the base)
    half_open ──probe fails──► open                  (cooldown doubled, up to ``max_cooldown_s``)
    any ──open_for(s) / record_failure(retry_after=s)──► open for at least ``s`` (capped)

The caller asks `CircuitBreaker.allow` before each call. ``True`` means "call the provider"
(in ``half_open`` it also takes one of ``half_open_probes`` probe slots); ``False`` means
"skip this provider now": nothing was sent, so a fallback chain moves on and a single
deployment raises `agency.errors.CircuitOpen` with ``retry_after=breaker.retry_in()``. After
the call the caller reports exactly one of `record_success`, `record_failure` (for errors
where `counts_as_failure` is true) or `release` (the call ended without a verdict on the
provider's health, e.g. a `BadRequest` or a cancellation), so probe slots are never leaked.

The failure rate is measured over a sliding window of the last ``window`` outcomes, of which
those older than ``window_s`` seconds are forgotten. Outcomes are only recorded while closed:
results of calls admitted before a trip that finish while open are stale and ignored.

Every time is read from the injectable ``clock`` (monotonic seconds), so tests drive the
breaker with a fake clock instead of sleeping. All state is guarded by one `threading.Lock`;
`allow` on a closed breaker reads one attribute and takes no lock, no clock and allocates
nothing, because it runs before every call.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Final, Literal

from agency.errors import ConfigError, classify

__all__ = [
    "COOLDOWN_GROWTH",
    "FORCED_OPEN_S",
    "BreakerPolicy",
    "BreakerState",
    "CircuitBreaker",
    "counts_as_failure",
]

BreakerState = Literal["closed", "open", "half_open"]

_CLOSED: Final = "closed"
_OPEN: Final = "open"
_HALF_OPEN: Final = "half_open"

COOLDOWN_GROWTH: Final = 2.0
"""Factor the cooldown grows by each time a half-open probe fails."""
FORCED_OPEN_S: Final = 3600.0
"""How long an operator's ``force("open")`` holds a breaker open unless told otherwise."""

def counts_as_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is evidence that the provider is unhealthy (record it as a failure).

    The ``breaker failure`` column of `agency.errors.ERROR_POLICIES`. True: `RateLimited`,
    `ProviderUnavailable`, `Timeout`, `ConnectionFailed`, `MalformedResponse`,
    `AuthenticationError`, `PermissionDenied`, `ModelNotFound` (401/403/404 are configuration
    failures of this entry: every call to it fails the same way until the key or model is
    fixed, so skipping it at no cost is right), any other `ProviderError` (and langchain-core
    ``ModelError``), builtin `TimeoutError` and `ConnectionError`.

    False: `CircuitOpen` (the provider was not called), `AllProvidersFailed` (each member was
    recorded on its own breaker), `BadRequest` and its subclasses `ContextWindowExceeded` and
    `ContentFiltered` (the caller's request is at fault: tripping on these would let one bad
    request take a healthy provider out for everyone), and anything else (bugs,
    `BudgetExceeded`, cancellation): for those the caller should `CircuitBreaker.release`.
    """
    return classify(exc).breaker_failure


@dataclass(frozen=True)
class BreakerPolicy:
    """When a breaker opens and how long it stays open. Defaults suit a hosted LLM API."""

    window: int = 20
    """Outcomes kept in the sliding window the failure rate is measured over."""
    window_s: float = 60.0
    """Outcomes older than this many seconds are forgotten (and so is a run of failures)."""
    min_calls: int = 5
    """The failure-rate rule needs at least this many outcomes in the window."""
    failure_rate: float = 0.5
    """Open when failures / outcomes in the window reaches this (0 < rate <= 1)."""
    consecutive_failures: int = 3
    """Also open after this many failures in a row: a dead provider is caught fast."""
    cooldown_s: float = 30.0
    """Seconds an opened breaker waits before letting a half-open probe through."""
    max_cooldown_s: float = 300.0
    """The cooldown doubles each time a half-open probe fails, up to this."""
    half_open_probes: int = 1
    """Probe calls allowed at the same time while half-open."""
    max_retry_after_s: float = 600.0
    """Cap on how long a provider's ``retry-after`` may hold the breaker open."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"must be a finite number >= 0, got {value!r}", key=f.name)
        for name in ("window", "min_calls", "consecutive_failures", "half_open_probes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be at least 1, got {getattr(self, name)!r}", key=name)
        if self.window_s <= 0:
            raise ConfigError(f"must be > 0, got {self.window_s!r}", key="window_s")
        if not 0 < self.failure_rate <= 1:
            raise ConfigError(
                f"must be in (0, 1], got {self.failure_rate!r}",
                key="failure_rate",
                fix="a fraction of calls, e.g. 0.5",
            )
        if self.max_cooldown_s < self.cooldown_s:
            raise ConfigError(
                f"max_cooldown_s ({self.max_cooldown_s}) is below cooldown_s ({self.cooldown_s})",
                key="max_cooldown_s",
            )


_DEFAULT_POLICY: Final = BreakerPolicy()


class CircuitBreaker:
    """Closed / open / half-open breaker for one provider; see the module docstring."""

    __slots__ = (
        "_clock",
        "_consecutive",
        "_cooldown",
        "_failures",
        "_last_failure_at",
        "_lock",
        "_open_until",
        "_opened_at",
        "_outcomes",
        "_probes",
        "_reason",
        "_state",
        "_trips",
        "name",
        "policy",
    )

    def __init__(
        self,
        policy: BreakerPolicy = _DEFAULT_POLICY,
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str = "",
    ) -> None:
        self.policy = policy
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._state: BreakerState = _CLOSED
        # (time, failed) per recorded outcome, oldest first; _failures counts the failed ones.
        self._outcomes: deque[tuple[float, bool]] = deque()
        self._failures = 0
        self._consecutive = 0
        self._last_failure_at = -math.inf
        self._opened_at: float | None = None
        self._open_until = -math.inf
        self._cooldown = policy.cooldown_s
        self._probes = 0
        self._trips = 0
        self._reason = ""

    def __repr__(self) -> str:
        return f"CircuitBreaker(name={self.name!r}, state={self.state!r}, trips={self._trips})"

    # -- reading ---------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The state now; an open breaker whose cooldown has elapsed reads as ``half_open``."""
        state = self._state
        if state == _OPEN and self._clock() >= self._open_until:
            return _HALF_OPEN
        return state

    def allow(self) -> bool:
        """Whether a call may go to the provider now.

        ``True`` while closed; while half-open it takes a probe slot (give it back with
        `record_success`, `record_failure` or `release`). ``False`` means skip the provider:
        nothing needs to be reported back.
        """
        # Hot path: a plain attribute read. A trip racing with this read lets one more call
        # through, which is what would have happened had it arrived a moment earlier.
        if self._state is _CLOSED:
            return True
        with self._lock:
            if self._state == _OPEN:
                if self._clock() < self._open_until:
                    return False
                self._to_half_open()
            elif self._state == _CLOSED:
                return True
            if self._probes < self.policy.half_open_probes:
                self._probes += 1
                return True
            return False

    def retry_in(self) -> float:
        """Seconds until `allow` would return ``True`` (0.0 if it would now).

        While half-open with every probe slot taken the answer is not knowable (it depends on
        the probe); the current cooldown is returned as an estimate.
        """
        if self._state is _CLOSED:
            return 0.0
        with self._lock:
            now = self._clock()
            self._refresh(now)
            if self._state == _OPEN:
                return max(0.0, self._open_until - now)
            if self._state == _HALF_OPEN and self._probes >= self.policy.half_open_probes:
                return self._cooldown
            return 0.0

    def snapshot(self) -> dict[str, Any]:
        """The breaker's numbers now, for logs, metrics and ``CircuitOpen`` messages."""
        with self._lock:
            now = self._clock()
            self._refresh(now)
            self._forget_old(now)
            state = self._state
            retry_in = max(0.0, self._open_until - now) if state == _OPEN else 0.0
            return {
                "name": self.name,
                "state": state,
                "failures": self._failures,
                "successes": len(self._outcomes) - self._failures,
                "consecutive_failures": self._consecutive,
                "opened_at": self._opened_at,
                "retry_in": retry_in,
                "cooldown_s": self._cooldown,
                "probes_in_flight": self._probes,
                "trips": self._trips,
                "reason": self._reason,
            }

    # -- reporting -------------------------------------------------------------------------

    def record_success(self) -> None:
        """The call succeeded. A half-open success closes the breaker and resets it."""
        with self._lock:
            now = self._clock()
            self._refresh(now)
            if self._state == _CLOSED:
                self._consecutive = 0
                self._push(now, failed=False)
            elif self._state == _HALF_OPEN:
                self._close()
            # Open: a call admitted before the trip; the cooldown runs its course regardless.

    def record_failure(self, retry_after: float | None = None) -> None:
        """The call failed in a way `counts_as_failure` accepts.

        Closed: counts toward the trip rules. Half-open: the probe failed, so the breaker
        opens again with the cooldown doubled (capped at ``max_cooldown_s``). ``retry_after``
        (seconds, e.g. from a 429) also holds the breaker open at least that long.
        """
        with self._lock:
            now = self._clock()
            self._refresh(now)
            if self._state == _CLOSED:
                self._record_closed_failure(now)
            elif self._state == _HALF_OPEN:
                self._cooldown = min(self._cooldown * COOLDOWN_GROWTH, self.policy.max_cooldown_s)
                self._trip(now, self._cooldown, "half-open probe failed")
            if retry_after is not None:
                self._open_for(now, retry_after)

    def release(self) -> None:
        """A call ended without a verdict on the provider: give back its probe slot, if any."""
        with self._lock:
            if self._probes > 0:
                self._probes -= 1

    def open_for(self, seconds: float) -> None:
        """Hold the breaker open for at least ``seconds`` (capped at ``max_retry_after_s``).

        Used for a provider's ``retry-after``: no call is sent before it says it is ready.
        A breaker that is already open longer stays open longer; non-positive values do nothing.
        """
        with self._lock:
            now = self._clock()
            self._refresh(now)
            self._open_for(now, seconds)

    def force(self, state: Literal["open", "closed"], seconds: float = FORCED_OPEN_S) -> None:
        """An operator's override: hold the breaker open for ``seconds`` (no cap; a probe is
        allowed after), or close it now, forgetting its failures."""
        with self._lock:
            if state == "open":
                self._trip(self._clock(), seconds, "forced open")
            else:
                self._close()
                self._reason = "forced closed"

    # -- internals (called with the lock held) ---------------------------------------------

    def _refresh(self, now: float) -> None:
        if self._state == _OPEN and now >= self._open_until:
            self._to_half_open()

    def _to_half_open(self) -> None:
        self._state = _HALF_OPEN
        self._probes = 0

    def _forget_old(self, now: float) -> None:
        outcomes = self._outcomes
        horizon = now - self.policy.window_s
        while outcomes and outcomes[0][0] < horizon:
            _, failed = outcomes.popleft()
            self._failures -= failed

    def _push(self, now: float, *, failed: bool) -> None:
        self._forget_old(now)
        outcomes = self._outcomes
        if len(outcomes) >= self.policy.window:
            _, old_failed = outcomes.popleft()
            self._failures -= old_failed
        outcomes.append((now, failed))
        self._failures += failed

    def _record_closed_failure(self, now: float) -> None:
        policy = self.policy
        # A run of failures spread over longer than the window is not "a dead provider".
        if now - self._last_failure_at > policy.window_s:
            self._consecutive = 0
        self._consecutive += 1
        self._last_failure_at = now
        self._push(now, failed=True)
        total = len(self._outcomes)
        if self._consecutive >= policy.consecutive_failures:
            self._trip(now, self._cooldown, f"{self._consecutive} failures in a row")
        elif total >= policy.min_calls and self._failures >= policy.failure_rate * total:
            self._trip(now, self._cooldown, f"{self._failures} of the last {total} calls failed")

    def _trip(self, now: float, duration: float, reason: str) -> None:
        self._state = _OPEN
        self._opened_at = now
        self._open_until = now + duration
        self._probes = 0
        self._trips += 1
        self._reason = reason

    def _open_for(self, now: float, seconds: float) -> None:
        if not seconds > 0:  # also rejects NaN
            return
        seconds = min(seconds, self.policy.max_retry_after_s)
        until = now + seconds
        if self._state == _OPEN:
            if until > self._open_until:
                self._open_until = until
                self._reason = f"retry-after {seconds:g}s"
        else:
            self._trip(now, seconds, f"retry-after {seconds:g}s")

    def _close(self) -> None:
        self._state = _CLOSED
        self._outcomes.clear()
        self._failures = 0
        self._consecutive = 0
        self._last_failure_at = -math.inf
        self._cooldown = self.policy.cooldown_s
        self._probes = 0
        self._open_until = -math.inf
