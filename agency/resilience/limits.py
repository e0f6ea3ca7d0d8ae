"""Client-side rate limits per provider: RPM and TPM token buckets, told by the provider's headers.

Contract: a call takes capacity before it is sent (`RateLimiter.try_acquire`, or
`RateLimiter.acquire` / `RateLimiter.aacquire` to wait up to ``max_wait_s``); if it cannot,
it goes to another provider or waits, and is never sent past a limit the limiter knows of.

Two sources of limits, both applied (a call needs room in every one of them):

* Local buckets from `RateLimitPolicy`: ``rpm`` requests and ``tpm`` tokens per minute. Each is
  a token bucket of capacity ``rpm`` (``tpm``) refilled at ``rpm / 60`` per second and full at
  start, the algorithm Anthropic documents for its own limits. So a burst of up to
  ``rpm`` calls may go at once, and over any interval of ``w`` seconds at most
  ``rpm + rpm * w / 60`` calls are admitted. A request asking for more tokens than ``tpm`` could
  never fit; it is admitted when the bucket is full and drives it negative (a debt later calls
  wait out), so huge requests are served instead of starved.
* What the provider says, through `RateLimiter.observe_headers`: OpenAI-style
  ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` (resets are durations such as
  ``"1s"``, ``"6m0s"``, ``"20ms"``), Anthropic's ``anthropic-ratelimit-{requests,tokens,
  input-tokens,output-tokens}-{limit,remaining,reset}`` (resets are RFC 3339 timestamps), and
  ``retry-after`` / ``retry-after-ms`` (no capacity at all until then). "Remaining R, reset in
  T" allows at most R more (requests or tokens) until T has passed; this only ever lowers what
  the local buckets allow. Without local limits, the server's numbers alone bound the calls.

Tokens a call asks for are an estimate (prompt plus ``max_tokens``); `RateLimiter.settle`
refunds or charges the difference once the real usage is known. Every token limit the server
reports (total, input, output) is checked against that one estimate: it bounds each part, so
the check is safe, if at times cautious. A call always needs at least one token of room.

Server state is as fresh as the last response: calls in flight when a response is observed
may have been counted by the server already or not. A 429 with ``retry-after`` stays the
backstop for what the headers cannot say.

Times come from the injectable ``clock`` (monotonic seconds) and ``wall_clock`` (Unix seconds,
to turn timestamps into delays; a skewed local clock shifts those, clamped to 0..a day); waits go through the injectable ``sleep`` / ``asleep``, so
tests never really sleep. State is guarded by one `threading.Lock`, never held while waiting.
A limiter with no policy that has seen no limiting headers returns at once without locking.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from agency.errors import ConfigError

__all__ = [
    "DEFAULT_RESET_S",
    "EPOCH_THRESHOLD",
    "MAX_RESET_S",
    "MAX_RETRY_AFTER_S",
    "SECONDS_PER_MINUTE",
    "RateLimitPolicy",
    "RateLimiter",
    "Window",
    "parse_duration",
    "parse_limit_headers",
]

SECONDS_PER_MINUTE: Final = 60.0
"""RPM and TPM limits are per minute."""

DEFAULT_RESET_S: Final = 60.0
"""How long a ``remaining`` count holds when the provider sends no reset time nor retry-after."""

MAX_RESET_S: Final = 86_400.0
"""Longest reset honoured: a day (some providers report requests per day)."""

MAX_RETRY_AFTER_S: Final = 3_600.0
"""Longest ``retry-after`` honoured: a bogus value must not block a provider for days."""

EPOCH_THRESHOLD: Final = 1e9
"""A bare number in a reset header above this is a Unix timestamp, not a delay (2001-09-09)."""

_MIN_WAIT_S: Final = 1e-9
# Waits shorter than this count as "now": after sleeping exactly the computed wait, float
# rounding can leave a deficit of a few ulps, which must not cause another round of sleeping.

_UNIT_S: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # Go prints the micro sign
    "μs": 1e-6,  # some servers the Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3_600.0,
    "d": 86_400.0,
}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION_PART: Final = re.compile(rf"({_NUMBER})(ns|us|µs|μs|ms|s|m|h|d)")
_DURATION: Final = re.compile(rf"(?:{_NUMBER}(?:ns|us|µs|μs|ms|s|m|h|d))+")

_Kind = Literal["requests", "tokens"]

_Family = tuple[str, _Kind, str, str, str]


def _anthropic_family(family: str, kind: _Kind) -> _Family:
    prefix = f"anthropic-ratelimit-{family}"
    return (
        f"anthropic-{family}",
        kind,
        f"{prefix}-limit",
        f"{prefix}-remaining",
        f"{prefix}-reset",
    )


# (name, kind, limit header, remaining header, reset header); one server window per row.
_HEADER_FAMILIES: Final[tuple[_Family, ...]] = (
    (
        "requests",
        "requests",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ),
    (
        "tokens",
        "tokens",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ),
    _anthropic_family("requests", "requests"),
    _anthropic_family("tokens", "tokens"),
    _anthropic_family("input-tokens", "tokens"),
    _anthropic_family("output-tokens", "tokens"),
)


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration (``"1s"``, ``"6m0s"``, ``"20ms"``, ``"1h2m3.5s"``).

    Returns None when ``text`` is not such a duration.
    """
    text = text.strip()
    if not _DURATION.fullmatch(text):
        return None
    return sum(float(n) * _UNIT_S[unit] for n, unit in _DURATION_PART.findall(text))


def _parse_number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _parse_timestamp(text: str) -> float | None:
    """Unix seconds of an RFC 3339 timestamp (UTC assumed when no offset is given)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _parse_reset(text: str | None, wall_now: float) -> float | None:
    """Seconds from now until a reset given as a duration, a number or a timestamp."""
    if text is None:
        return None
    seconds = parse_duration(text)
    if seconds is None:
        number = _parse_number(text)
        if number is not None:
            seconds = number - wall_now if number > EPOCH_THRESHOLD else number
        else:
            stamp = _parse_timestamp(text)
            if stamp is None:
                return None
            seconds = stamp - wall_now
    return min(max(seconds, 0.0), MAX_RESET_S)


def _parse_retry_after(headers: Mapping[str, str], wall_now: float) -> float | None:
    """Seconds of ``retry-after-ms`` (preferred: finer) or ``retry-after`` (seconds or date)."""
    millis = _parse_number(headers.get("retry-after-ms"))
    if millis is not None:
        return min(millis / 1000.0, MAX_RETRY_AFTER_S)
    text = headers.get("retry-after")
    if text is None:
        return None
    seconds = _parse_number(text)
    if seconds is None:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = max(moment.timestamp() - wall_now, 0.0)
    return min(seconds, MAX_RETRY_AFTER_S)


Window = tuple[str, _Kind, float, float | None, float]
"""One server window from the headers: (family, kind, remaining, limit, seconds to reset)."""


def parse_limit_headers(
    headers: Mapping[str, str], wall_now: float
) -> tuple[float | None, list[Window]]:
    """The ``retry-after`` (seconds) and the server windows a response's headers report (any
    letter case); malformed values are left out."""
    lower = {key.lower(): value for key, value in headers.items()}
    retry_after = _parse_retry_after(lower, wall_now)
    # A count without a reset time (e.g. a 429's bare "remaining: 0") holds until the
    # retry-after sent with it, or else for a minute: RPM/TPM windows are a minute long.
    fallback_reset = DEFAULT_RESET_S if retry_after is None else retry_after
    found: list[Window] = []
    for family, kind, limit_h, remaining_h, reset_h in _HEADER_FAMILIES:
        remaining = _parse_number(lower.get(remaining_h))
        if remaining is None:
            continue
        reset = _parse_reset(lower.get(reset_h), wall_now)
        limit = _parse_number(lower.get(limit_h))
        found.append((family, kind, remaining, limit, fallback_reset if reset is None else reset))
    return retry_after, found


@dataclass(frozen=True)
class RateLimitPolicy:
    """Client-side limits for one provider; None means no local limit of that kind."""

    rpm: int | None = None
    """Requests per minute (bucket capacity; refilled at ``rpm / 60`` per second)."""
    tpm: int | None = None
    """Tokens per minute (bucket capacity; refilled at ``tpm / 60`` per second)."""
    max_wait_s: float = 30.0
    """Longest a call waits for capacity when no other provider can take it."""

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"must be at least 1 (or unset), got {value!r}", key=name)
        if not (math.isfinite(self.max_wait_s) and self.max_wait_s >= 0):
            raise ConfigError(f"must be >= 0, got {self.max_wait_s!r}", key="max_wait_s")


_DEFAULT_POLICY: Final = RateLimitPolicy()


class _Bucket:
    """A token bucket with lazy refill: ``level`` is as of ``stamp``."""

    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, per_minute: int, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / SECONDS_PER_MINUTE
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait(self, need: float, now: float) -> float:
        self.refill(now)
        # More than the capacity can never fit: a full bucket admits it (see module docstring).
        deficit = min(need, self.capacity) - self.level
        return deficit / self.rate if deficit > 0 else 0.0


class _ServerWindow:
    """What the provider said about one limit: ``remaining`` may be used until ``until``."""

    __slots__ = ("kind", "limit", "remaining", "reported", "until")

    def __init__(self, kind: _Kind, remaining: float, limit: float | None, until: float) -> None:
        self.kind = kind
        self.remaining = remaining
        self.reported = remaining
        self.limit = limit
        self.until = until

    def wait(self, need: float, now: float) -> float:
        if now >= self.until:
            return 0.0
        if self.limit is not None:
            need = min(need, self.limit)  # as for buckets: more than the limit needs all of it
        return self.until - now if need > self.remaining else 0.0


class RateLimiter:
    """RPM/TPM limits for one provider; see the module docstring."""

    def __init__(
        self,
        policy: RateLimitPolicy = _DEFAULT_POLICY,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] = time.sleep,
        asleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        name: str = "",
    ) -> None:
        self.policy = policy
        self.name = name
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._asleep = asleep
        self._lock = threading.Lock()
        now = clock()
        self._requests = _Bucket(policy.rpm, now) if policy.rpm is not None else None
        self._tokens = _Bucket(policy.tpm, now) if policy.tpm is not None else None
        self._server: dict[str, _ServerWindow] = {}
        self._blocked_until = -math.inf
        # False while nothing can limit a call: wait_time/try_acquire then skip the lock.
        self._constrained = self._requests is not None or self._tokens is not None

    def __repr__(self) -> str:
        p = self.policy
        return f"RateLimiter(name={self.name!r}, rpm={p.rpm}, tpm={p.tpm})"

    # -- taking capacity -------------------------------------------------------------------

    def wait_time(self, tokens: int = 0) -> float:
        """Seconds until one request of ``tokens`` tokens fits; 0.0 means now. Takes nothing."""
        if not self._constrained:
            return 0.0
        with self._lock:
            return self._wait(tokens, self._clock())

    def try_acquire(self, tokens: int = 0) -> bool:
        """Take one request and ``tokens`` tokens if they fit now; otherwise take nothing."""
        if not self._constrained:
            return True
        return self._take_or_wait(tokens) == 0.0

    def acquire(self, tokens: int = 0, max_wait: float | None = None) -> bool:
        """Take capacity, sleeping for it up to ``max_wait`` (default ``policy.max_wait_s``).

        Returns False, at once and without sleeping, when the wait needed is longer than what
        is left of ``max_wait`` (another thread may take capacity meanwhile, so a wait can be
        followed by a False).
        """
        for wait in self._waits(tokens, max_wait):
            if wait is None:
                return False
            self._sleep(wait)
        return True

    async def aacquire(self, tokens: int = 0, max_wait: float | None = None) -> bool:
        """`acquire` for async code: waits with ``asleep``, never blocking the event loop."""
        for wait in self._waits(tokens, max_wait):
            if wait is None:
                return False
            await self._asleep(wait)
        return True

    def settle(self, reserved_tokens: int, used_tokens: int) -> None:
        """After the call: refund (or charge) the tokens used minus those reserved."""
        refund = reserved_tokens - used_tokens
        if refund == 0 or not self._constrained:
            return
        with self._lock:
            now = self._clock()
            bucket = self._tokens
            if bucket is not None:
                bucket.refill(now)
                bucket.level = min(bucket.capacity, bucket.level + refund)
            for window in self._server.values():
                if window.kind == "tokens" and now < window.until:
                    # Never above what the server last reported.
                    window.remaining = min(window.reported, window.remaining + refund)

    def block_for(self, seconds: float) -> None:
        """No capacity for ``seconds`` (e.g. a 429's ``retry_after`` when no headers are at hand)."""
        if not seconds > 0:  # also rejects NaN
            return
        seconds = min(seconds, MAX_RETRY_AFTER_S)
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)
            self._constrained = True

    # -- provider feedback -----------------------------------------------------------------

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Learn the provider's own limits from a response's headers (any letter case).

        Unknown or malformed values are ignored: headers are advice, never a reason to fail.
        """
        if not headers:
            return
        retry_after, found = parse_limit_headers(headers, self._wall_clock())
        if not found and retry_after is None:
            return
        with self._lock:
            now = self._clock()
            for key, kind, remaining, limit, reset in found:
                self._server[key] = _ServerWindow(kind, remaining, limit, now + reset)
            if retry_after is not None:
                self._blocked_until = max(self._blocked_until, now + retry_after)
            self._constrained = True

    def snapshot(self) -> dict[str, Any]:
        """Limits, what is available now, and what the server last reported."""
        with self._lock:
            now = self._clock()
            requests, tokens = self._requests, self._tokens
            if requests is not None:
                requests.refill(now)
            if tokens is not None:
                tokens.refill(now)
            return {
                "name": self.name,
                "rpm": self.policy.rpm,
                "tpm": self.policy.tpm,
                "requests_available": requests.level if requests is not None else None,
                "tokens_available": tokens.level if tokens is not None else None,
                "blocked_for": max(0.0, self._blocked_until - now),
                "server": {
                    key: {
                        "kind": w.kind,
                        "limit": w.limit,
                        "remaining": w.remaining,
                        "reset_in": w.until - now,
                    }
                    for key, w in self._server.items()
                    if now < w.until
                },
            }

    # -- internals -------------------------------------------------------------------------

    def _waits(self, tokens: int, max_wait: float | None) -> Iterator[float | None]:
        """The sleeps taking capacity needs, one at a time, for the caller to sleep (sync or
        async); ends once the capacity is taken, or yields ``None`` and ends (taking nothing)
        when the next wait would not fit in what is left of ``max_wait``."""
        if not self._constrained:
            return
        budget = self.policy.max_wait_s if max_wait is None else max_wait
        deadline = self._clock() + budget
        slept = 0.0
        while (wait := self._take_or_wait(tokens)) > 0.0:
            # Both bounds: the clock's (real time passing) and the sum slept (a clock that
            # does not advance with sleep cannot loop forever).
            if wait > min(deadline - self._clock(), budget - slept):
                yield None
                return
            yield wait
            slept += wait

    def _take_or_wait(self, tokens: int) -> float:
        """Take the capacity and return 0.0, or take nothing and return the wait (> 0)."""
        with self._lock:
            now = self._clock()
            wait = self._wait(tokens, now)
            if wait == 0.0:
                if self._requests is not None:
                    self._requests.level -= 1.0
                if self._tokens is not None:
                    self._tokens.level -= tokens
                for window in self._server.values():
                    if now < window.until:
                        window.remaining -= 1.0 if window.kind == "requests" else tokens
            return wait

    def _wait(self, tokens: int, now: float) -> float:
        """Seconds until one request of ``tokens`` fits every limit. Lock held."""
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        need = tokens if tokens > 1 else 1  # every call uses some tokens
        wait = self._blocked_until - now
        if self._requests is not None:
            wait = max(wait, self._requests.wait(1.0, now))
        if self._tokens is not None:
            wait = max(wait, self._tokens.wait(need, now))
        if self._server:
            expired = False
            for window in self._server.values():
                if now >= window.until:
                    expired = True
                    continue
                wait = max(wait, window.wait(1.0 if window.kind == "requests" else need, now))
            if expired:
                self._server = {k: w for k, w in self._server.items() if now < w.until}
        if (
            not self._server
            and self._requests is None
            and self._tokens is None
            and now >= self._blocked_until
        ):
            self._constrained = False  # only server advice limited calls, and it has run out
        return wait if wait >= _MIN_WAIT_S else 0.0
