"""Client-side rate limits: token buckets, provider headers, waiting, threads (fake clocks only)."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from fakes.clock import FakeClock
from hypothesis import given, settings
from hypothesis import strategies as st

from agency.errors import ConfigError
from agency.resilience.limits import (
    DEFAULT_RESET_S,
    MAX_RETRY_AFTER_S,
    RateLimiter,
    RateLimitPolicy,
    parse_duration,
)

# 2024-01-01T00:00:00Z: the fixed wall-clock "now" for timestamp headers.
WALL_NOW = datetime(2024, 1, 1, tzinfo=UTC).timestamp()


def make(**policy: Any) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    start = clock.now
    limiter = RateLimiter(
        RateLimitPolicy(**policy),
        clock=clock,
        wall_clock=lambda: WALL_NOW + (clock.now - start),
        sleep=clock.sleep,
        asleep=clock.asleep,
        name="p",
    )
    return limiter, clock


def drain(limiter: RateLimiter, tokens: int = 0, cap: int = 100_000) -> int:
    """Take everything available now; return how many calls fit."""
    n = 0
    while n < cap and limiter.try_acquire(tokens):
        n += 1
    return n


# -- no limits ---------------------------------------------------------------------------------


def test_no_policy_no_headers_never_blocks() -> None:
    limiter, _ = make()
    assert limiter.wait_time(10**9) == 0.0
    assert all(limiter.try_acquire(10**6) for _ in range(1000))
    assert limiter.acquire(10**9, max_wait=0.0)
    snap = limiter.snapshot()
    assert snap["requests_available"] is None and snap["server"] == {}


# -- requests bucket -------------------------------------------------------------------------


def test_rpm_bucket_starts_full_and_refills() -> None:
    limiter, clock = make(rpm=60)
    assert drain(limiter) == 60
    assert limiter.wait_time() == pytest.approx(1.0)
    clock.advance(0.5)
    assert limiter.wait_time() == pytest.approx(0.5)
    assert not limiter.try_acquire()
    clock.advance(0.5)
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    clock.advance(10.0)
    assert drain(limiter) == 10


def test_bucket_never_fills_past_capacity() -> None:
    limiter, clock = make(rpm=5)
    clock.advance(3600.0)
    assert limiter.snapshot()["requests_available"] == 5.0
    assert drain(limiter) == 5


def test_wait_time_takes_nothing() -> None:
    limiter, _ = make(rpm=2)
    for _ in range(10):
        assert limiter.wait_time() == 0.0
    assert drain(limiter) == 2


@settings(max_examples=150, deadline=None)
@given(
    rpm=st.integers(1, 30),
    steps=st.lists(
        st.tuples(st.floats(0.0, 20.0, allow_nan=False), st.integers(0, 8), st.booleans()),
        max_size=60,
    ),
)
def test_rpm_bound_holds_over_every_interval(
    rpm: int, steps: list[tuple[float, int, bool]]
) -> None:
    """The token-bucket guarantee: over any interval of w seconds at most rpm + rpm*w/60 calls
    go out (so at most 2*rpm in any 60 s window, and on average rpm per minute), whether
    callers poll with try_acquire or wait with acquire."""
    limiter, clock = make(rpm=rpm)
    granted: list[float] = []
    for dt, attempts, blocking in steps:
        clock.advance(dt)
        for _ in range(attempts):
            fits_now = limiter.wait_time() == 0.0
            ok = limiter.acquire(max_wait=5.0) if blocking else limiter.try_acquire()
            if not blocking:
                assert ok == fits_now
            if ok:
                granted.append(clock.now)
    rate = rpm / 60.0
    for i, start in enumerate(granted):
        for j in range(i, len(granted)):
            assert j - i + 1 <= rpm + rate * (granted[j] - start) + 1e-6
    if granted:
        span = granted[-1] - granted[0]
        assert len(granted) <= rpm + rate * span + 1e-6


# -- tokens bucket ---------------------------------------------------------------------------


def test_tpm_bucket_and_settle_refunds() -> None:
    limiter, clock = make(tpm=1200)  # refills 20 tokens/s
    assert limiter.try_acquire(700)
    assert not limiter.try_acquire(700)
    assert limiter.wait_time(700) == pytest.approx(10.0)  # 200 short at 20/s
    limiter.settle(reserved_tokens=700, used_tokens=100)  # 600 back
    assert limiter.snapshot()["tokens_available"] == pytest.approx(1100.0)
    assert limiter.try_acquire(700)
    limiter.settle(reserved_tokens=700, used_tokens=1000)  # 300 more than reserved
    assert limiter.snapshot()["tokens_available"] == pytest.approx(100.0)
    clock.advance(1.0)
    assert limiter.snapshot()["tokens_available"] == pytest.approx(120.0)


def test_refund_never_overfills() -> None:
    limiter, _ = make(tpm=1000)
    assert limiter.try_acquire(10)
    limiter.settle(reserved_tokens=500, used_tokens=0)
    assert limiter.snapshot()["tokens_available"] == 1000.0


def test_a_request_larger_than_tpm_waits_for_a_full_bucket_then_goes_into_debt() -> None:
    limiter, clock = make(tpm=600)  # 10 tokens/s
    assert limiter.try_acquire(100)
    assert limiter.wait_time(5000) == pytest.approx(10.0)  # until full again, not forever
    clock.advance(10.0)
    assert limiter.try_acquire(5000)
    assert limiter.snapshot()["tokens_available"] == pytest.approx(-4400.0)
    # Even a call that asks for no tokens needs one token of room: the debt is waited out.
    assert limiter.wait_time(0) == pytest.approx(440.1)


def test_rpm_and_tpm_both_apply() -> None:
    limiter, _ = make(rpm=100, tpm=1000)
    assert drain(limiter, tokens=300) == 3  # tokens run out first
    limiter2, _ = make(rpm=2, tpm=10**6)
    assert drain(limiter2, tokens=1) == 2  # requests run out first


def test_negative_tokens_are_refused() -> None:
    limiter, _ = make(rpm=10)
    with pytest.raises(ValueError):
        limiter.try_acquire(-1)


# -- waiting ---------------------------------------------------------------------------------


def test_acquire_sleeps_exactly_what_is_needed() -> None:
    limiter, clock = make(rpm=60)
    drain(limiter)
    assert limiter.acquire()
    assert clock.sleeps == [pytest.approx(1.0)]
    assert limiter.acquire()
    assert clock.sleeps == [pytest.approx(1.0), pytest.approx(1.0)]


def test_acquire_refuses_at_once_past_max_wait() -> None:
    limiter, clock = make(rpm=6, max_wait_s=5.0)  # one request per 10 s
    drain(limiter)
    assert not limiter.acquire()  # needs 10 s > the policy's 5 s
    assert not limiter.acquire(max_wait=9.9)
    assert clock.sleeps == []
    assert limiter.acquire(max_wait=10.0)
    assert clock.sleeps == [pytest.approx(10.0)]


def test_acquire_gives_up_when_others_keep_taking_the_capacity() -> None:
    clock = FakeClock()

    def contended_sleep(seconds: float) -> None:
        clock.sleep(seconds)
        assert limiter.try_acquire()  # another caller takes the slot that just refilled

    limiter = RateLimiter(RateLimitPolicy(rpm=60), clock=clock, sleep=contended_sleep)
    drain(limiter)
    assert not limiter.acquire(max_wait=1.5)  # slept 1 s, then needs 1 s more: 0.5 s left
    assert clock.sleeps == [pytest.approx(1.0)]
    clock.sleeps.clear()
    assert not limiter.acquire(max_wait=0.5)
    assert clock.sleeps == []


async def test_aacquire_waits_with_the_async_sleep() -> None:
    limiter, clock = make(rpm=30)  # one request per 2 s
    drain(limiter)
    assert await limiter.aacquire()
    assert clock.sleeps == [pytest.approx(2.0)]
    assert not await limiter.aacquire(max_wait=1.0)
    assert clock.sleeps == [pytest.approx(2.0)]


def test_acquire_ends_even_if_the_clock_never_moves() -> None:
    clock = FakeClock()
    slept: list[float] = []
    limiter = RateLimiter(RateLimitPolicy(rpm=60), clock=clock, sleep=slept.append)
    drain(limiter)
    assert not limiter.acquire(max_wait=3.5)
    assert sum(slept) <= 3.5


# -- threads ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "tokens", "expected"), [({"rpm": 50}, 0, 50), ({"tpm": 1000}, 7, 142)]
)
def test_threads_take_exactly_the_capacity(
    policy: dict[str, int], tokens: int, expected: int
) -> None:
    limiter, _ = make(**policy)  # the clock stands still: no refill during the test
    n_threads = 16
    barrier = threading.Barrier(n_threads)
    taken: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        got = sum(limiter.try_acquire(tokens) for _ in range(40))
        with lock:
            taken.append(got)

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(taken) == expected


# -- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0s", 0.0),
        ("2m59.56s", 179.56),
        ("7.66s", 7.66),
        ("250us", 250e-6),
        ("250µs", 250e-6),
        (" 12ms ", 0.012),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "s", "1x", "1s2", "-1s", "1 s", "abc"])
def test_parse_duration_rejects(text: str) -> None:
    assert parse_duration(text) is None


# -- provider headers -----------------------------------------------------------------------


def test_openai_headers_bound_calls_without_a_local_policy() -> None:
    limiter, clock = make()
    limiter.observe_headers(
        {
            "X-RateLimit-Limit-Requests": "5000",
            "X-RateLimit-Remaining-Requests": "2",
            "X-RateLimit-Reset-Requests": "6m0s",
        }
    )
    assert drain(limiter) == 2
    assert limiter.wait_time() == pytest.approx(360.0)
    clock.advance(359.0)
    assert not limiter.try_acquire()
    clock.advance(1.0)
    assert drain(limiter, cap=1000) == 1000  # reset passed: nothing bounds calls any more
    assert limiter.snapshot()["server"] == {}


def test_httpx_headers_are_read_too() -> None:
    limiter, _ = make()
    headers = httpx.Headers(
        {"x-ratelimit-remaining-tokens": "500", "x-ratelimit-reset-tokens": "20ms"}
    )
    limiter.observe_headers(headers)
    assert limiter.try_acquire(400)
    assert not limiter.try_acquire(200)
    assert limiter.wait_time(200) == pytest.approx(0.02)
    assert limiter.try_acquire(100)


def test_server_remaining_clamps_the_local_bucket() -> None:
    limiter, clock = make(rpm=100)
    limiter.observe_headers(
        {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "10s"}
    )
    assert drain(limiter) == 3
    clock.advance(10.0)
    # The local bucket governs again: 97 left plus 10 s of refill, capped at its capacity.
    assert limiter.snapshot()["requests_available"] == 100.0
    assert drain(limiter) == 100


def test_server_remaining_never_raises_the_local_limit() -> None:
    limiter, _ = make(rpm=2)
    limiter.observe_headers(
        {"x-ratelimit-remaining-requests": "1000", "x-ratelimit-reset-requests": "1m"}
    )
    assert drain(limiter) == 2


def test_tokens_refunded_to_the_server_window_only_up_to_what_it_reported() -> None:
    limiter, _ = make()
    limiter.observe_headers(
        {"x-ratelimit-remaining-tokens": "1000", "x-ratelimit-reset-tokens": "1m"}
    )
    assert limiter.try_acquire(800)
    limiter.settle(reserved_tokens=800, used_tokens=300)
    assert limiter.snapshot()["server"]["tokens"]["remaining"] == 700
    limiter.settle(reserved_tokens=5000, used_tokens=0)
    assert limiter.snapshot()["server"]["tokens"]["remaining"] == 1000


def test_anthropic_headers_with_rfc3339_resets() -> None:
    limiter, clock = make()
    limiter.observe_headers(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "10",
            "anthropic-ratelimit-requests-reset": "2024-01-01T00:00:30Z",
            "anthropic-ratelimit-input-tokens-limit": "40000",
            "anthropic-ratelimit-input-tokens-remaining": "1000",
            "anthropic-ratelimit-input-tokens-reset": "2024-01-01T01:00:12+01:00",  # 12 s
            "anthropic-ratelimit-output-tokens-remaining": "8000",
            "anthropic-ratelimit-output-tokens-reset": "2024-01-01T00:00:05.5Z",
        }
    )
    server = limiter.snapshot()["server"]
    assert server["anthropic-requests"]["reset_in"] == pytest.approx(30.0)
    assert server["anthropic-requests"]["limit"] == 50
    assert server["anthropic-input-tokens"]["reset_in"] == pytest.approx(12.0)
    assert server["anthropic-output-tokens"]["reset_in"] == pytest.approx(5.5)
    assert limiter.try_acquire(900)
    assert limiter.wait_time(200) == pytest.approx(12.0)  # input tokens bind
    clock.advance(12.0)
    assert drain(limiter) == 9  # then the request count does
    assert limiter.wait_time() == pytest.approx(18.0)


def test_missing_reset_holds_for_the_default() -> None:
    limiter, clock = make()
    limiter.observe_headers({"x-ratelimit-remaining-requests": "0"})
    assert limiter.wait_time() == pytest.approx(DEFAULT_RESET_S)
    clock.advance(DEFAULT_RESET_S)
    assert limiter.try_acquire()


def test_missing_reset_holds_until_the_retry_after_sent_with_it() -> None:
    limiter, clock = make()
    # What a 429 typically carries: retry-after(-ms) and a bare "remaining: 0".
    limiter.observe_headers(
        {"retry-after": "0", "retry-after-ms": "20", "x-ratelimit-remaining-requests": "0"}
    )
    assert limiter.wait_time() == pytest.approx(0.02)
    clock.advance(0.02)
    assert limiter.try_acquire()


def test_reset_as_seconds_or_unix_time() -> None:
    limiter, _ = make()
    limiter.observe_headers(
        {
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "7",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": str(WALL_NOW + 20),
        }
    )
    server = limiter.snapshot()["server"]
    assert server["requests"]["reset_in"] == pytest.approx(7.0)
    assert server["tokens"]["reset_in"] == pytest.approx(20.0)
    assert limiter.wait_time(1) == pytest.approx(20.0)


def test_retry_after_blocks_everything_until_then() -> None:
    limiter, clock = make(rpm=1000)
    limiter.observe_headers({"Retry-After": "5"})
    assert limiter.wait_time() == pytest.approx(5.0)
    assert not limiter.try_acquire()
    clock.advance(5.0)
    assert limiter.try_acquire()


def test_back_to_unlimited_once_the_retry_after_has_passed() -> None:
    limiter, clock = make()
    limiter.block_for(3.0)
    assert not limiter.try_acquire()
    clock.advance(3.0)
    assert drain(limiter, tokens=10**6, cap=500) == 500


def test_retry_after_ms_is_preferred() -> None:
    limiter, _ = make()
    limiter.observe_headers({"retry-after": "3", "retry-after-ms": "1500"})
    assert limiter.wait_time() == pytest.approx(1.5)


def test_retry_after_as_an_http_date() -> None:
    limiter, _ = make()
    when = datetime.fromtimestamp(WALL_NOW + 42, tz=UTC)
    limiter.observe_headers({"retry-after": format_datetime(when, usegmt=True)})
    assert limiter.wait_time() == pytest.approx(42.0)


def test_retry_after_is_capped_and_block_for_works_alike() -> None:
    limiter, _ = make()
    limiter.observe_headers({"retry-after": "99999999"})
    assert limiter.wait_time() == pytest.approx(MAX_RETRY_AFTER_S)
    limiter2, clock = make()
    limiter2.block_for(2.5)
    assert limiter2.wait_time() == pytest.approx(2.5)
    clock.advance(2.5)
    assert limiter2.try_acquire()


@pytest.mark.parametrize(
    "headers",
    [
        {"x-ratelimit-remaining-requests": "lots", "x-ratelimit-reset-requests": "1s"},
        {"x-ratelimit-remaining-requests": "-3"},
        {"x-ratelimit-remaining-requests": "nan"},
        {"retry-after": "whenever"},
        {"content-type": "application/json"},
        {},
    ],
)
def test_garbage_headers_change_nothing(headers: dict[str, str]) -> None:
    limiter, _ = make()
    limiter.observe_headers(headers)
    assert limiter.wait_time() == 0.0
    assert drain(limiter, cap=100) == 100


def test_a_malformed_reset_falls_back_to_the_default() -> None:
    limiter, _ = make()
    limiter.observe_headers(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "soon"}
    )
    assert limiter.wait_time() == pytest.approx(DEFAULT_RESET_S)


def test_new_headers_replace_old_ones() -> None:
    limiter, _ = make()
    limiter.observe_headers(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "30s"}
    )
    limiter.observe_headers(
        {"x-ratelimit-remaining-requests": "4", "x-ratelimit-reset-requests": "30s"}
    )
    assert drain(limiter) == 4


@settings(max_examples=150, deadline=None)
@given(
    remaining=st.integers(0, 20),
    reset=st.floats(0.5, 120.0),
    rpm=st.none() | st.integers(1, 40),
    steps=st.lists(st.tuples(st.floats(0.0, 10.0), st.integers(0, 6)), max_size=40),
)
def test_server_remaining_is_never_exceeded_before_reset(
    remaining: int, reset: float, rpm: int | None, steps: list[tuple[float, int]]
) -> None:
    limiter, clock = make(rpm=rpm)
    limiter.observe_headers(
        {
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": f"{reset}s",
        }
    )
    until = clock.now + reset
    before_reset = 0
    for dt, attempts in steps:
        clock.advance(dt)
        for _ in range(attempts):
            if limiter.try_acquire() and clock.now < until:
                before_reset += 1
    assert before_reset <= remaining
    if rpm is not None:
        assert before_reset <= rpm + rpm / 60 * reset


# -- policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", [{"rpm": 0}, {"tpm": -5}, {"max_wait_s": -1.0}, {"max_wait_s": math.nan}]
)
def test_policy_rejects_nonsense(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        RateLimitPolicy(**bad)


def test_snapshot_reports_limits_and_availability() -> None:
    limiter, _ = make(rpm=10, tpm=100)
    limiter.try_acquire(40)
    limiter.observe_headers(
        {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "2s"}
    )
    snap = limiter.snapshot()
    assert snap["rpm"] == 10 and snap["tpm"] == 100
    assert snap["requests_available"] == 9.0 and snap["tokens_available"] == 60.0
    assert snap["server"]["requests"] == {
        "kind": "requests",
        "limit": None,
        "remaining": 3.0,
        "reset_in": pytest.approx(2.0),
    }
    assert snap["blocked_for"] == 0.0
