"""The circuit breaker, driven by a fake clock: transitions, timing, probes, classification."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest
from fakes.clock import FakeClock
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from agency.errors import (
    AllProvidersFailed,
    AuthenticationError,
    BadRequest,
    BudgetExceeded,
    CircuitOpen,
    ConfigError,
    ConnectionFailed,
    ContentFiltered,
    ContextWindowExceeded,
    MalformedResponse,
    ModelNotFound,
    PermissionDenied,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    Timeout,
)
from agency.resilience.breaker import BreakerPolicy, CircuitBreaker, counts_as_failure


def make(**policy: Any) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker(BreakerPolicy(**policy), clock=clock, name="p"), clock


# Rate rule effectively off: only the consecutive-failure rule can trip.
NO_RATE = {"min_calls": 10_000}
# Consecutive rule effectively off: only the failure-rate rule can trip.
NO_RUN = {"consecutive_failures": 10_000}


def trip(breaker: CircuitBreaker) -> None:
    while breaker.state == "closed":
        breaker.record_failure()


# -- closed -> open ---------------------------------------------------------------------------


def test_starts_closed_and_allows() -> None:
    breaker, _ = make()
    assert breaker.state == "closed"
    assert breaker.allow() and breaker.allow()
    assert breaker.retry_in() == 0.0
    snap = breaker.snapshot()
    assert snap["state"] == "closed" and snap["trips"] == 0 and snap["opened_at"] is None


def test_consecutive_failures_open_it() -> None:
    breaker, clock = make(consecutive_failures=3, **NO_RATE)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    assert breaker.retry_in() == 30.0
    snap = breaker.snapshot()
    assert snap["trips"] == 1 and snap["opened_at"] == clock.now
    assert "3 failures in a row" in snap["reason"]


def test_a_success_breaks_the_run() -> None:
    breaker, _ = make(consecutive_failures=3, **NO_RATE)
    for outcome in "FFSFF":
        breaker.record_failure() if outcome == "F" else breaker.record_success()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"


def test_a_run_spread_over_more_than_window_s_is_not_a_run() -> None:
    breaker, clock = make(consecutive_failures=3, window_s=10.0, **NO_RATE)
    breaker.record_failure()
    breaker.record_failure()
    clock.advance(10.5)
    breaker.record_failure()
    assert breaker.state == "closed"
    assert breaker.snapshot()["consecutive_failures"] == 1
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "open"


def test_failure_rate_needs_min_calls() -> None:
    breaker, _ = make(min_calls=5, failure_rate=0.5, **NO_RUN)
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state == "closed"  # 4/4 failed, but fewer than min_calls outcomes
    breaker.record_failure()
    assert breaker.state == "open"
    assert "5 of the last 5" in breaker.snapshot()["reason"]


def test_failure_rate_over_the_window() -> None:
    breaker, _ = make(min_calls=5, failure_rate=0.5, **NO_RUN)
    for outcome in "SFSFS":  # 2 of 5
        breaker.record_failure() if outcome == "F" else breaker.record_success()
    assert breaker.state == "closed"
    breaker.record_failure()  # 3 of 6 = 0.5
    assert breaker.state == "open"


def test_window_keeps_only_the_last_outcomes() -> None:
    # Over the whole history 3 of 7 failed (>= 0.4), but the last 4 outcomes hold only one.
    breaker, _ = make(window=4, min_calls=4, failure_rate=0.4, **NO_RUN)
    for outcome in "FFSSSS":
        breaker.record_failure() if outcome == "F" else breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed"
    snap = breaker.snapshot()
    assert (snap["failures"], snap["successes"]) == (1, 3)
    breaker.record_failure()  # S S F F: 2 of 4
    assert breaker.state == "open"


def test_outcomes_older_than_window_s_are_forgotten() -> None:
    breaker, clock = make(window_s=10.0, min_calls=3, failure_rate=0.5, **NO_RUN)
    breaker.record_failure()
    breaker.record_failure()
    clock.advance(11.0)
    assert breaker.snapshot()["failures"] == 0
    breaker.record_failure()
    assert breaker.state == "closed"  # one outcome in the window: below min_calls
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "open"


# -- open -> half_open -> closed / open ---------------------------------------------------------


def test_open_until_cooldown_then_half_open() -> None:
    breaker, clock = make(cooldown_s=30.0)
    trip(breaker)
    clock.advance(29.9)
    assert breaker.state == "open"
    assert not breaker.allow()
    assert breaker.retry_in() == pytest.approx(0.1)
    clock.advance(0.1)
    assert breaker.state == "half_open"
    assert breaker.retry_in() == 0.0
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one probe at a time
    assert breaker.snapshot()["probes_in_flight"] == 1


def test_probe_success_closes_and_resets() -> None:
    breaker, clock = make(cooldown_s=10.0, consecutive_failures=2, **NO_RATE)
    trip(breaker)
    clock.advance(10.0)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    snap = breaker.snapshot()
    assert (snap["failures"], snap["successes"], snap["consecutive_failures"]) == (0, 0, 0)
    assert breaker.allow() and breaker.allow()
    # The window was cleared: it takes a full run again to trip.
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.retry_in() == 10.0  # cooldown back to the base


def test_probe_failure_doubles_the_cooldown_up_to_the_cap() -> None:
    breaker, clock = make(cooldown_s=30.0, max_cooldown_s=200.0)
    trip(breaker)
    waits = []
    for _ in range(5):
        waits.append(breaker.retry_in())
        clock.advance(waits[-1])
        assert breaker.allow()
        breaker.record_failure()
        assert breaker.state == "open"
    assert waits == [30.0, 60.0, 120.0, 200.0, 200.0]
    assert breaker.retry_in() == 200.0
    clock.advance(199.0)
    assert not breaker.allow()
    assert breaker.snapshot()["trips"] == 6


def test_probe_success_resets_the_doubled_cooldown() -> None:
    breaker, clock = make(cooldown_s=5.0)
    trip(breaker)
    clock.advance(5.0)
    breaker.allow()
    breaker.record_failure()
    assert breaker.retry_in() == 10.0
    clock.advance(10.0)
    breaker.allow()
    breaker.record_success()
    trip(breaker)
    assert breaker.retry_in() == 5.0


def test_half_open_probe_limit() -> None:
    breaker, clock = make(half_open_probes=2)
    trip(breaker)
    clock.advance(30.0)
    assert [breaker.allow() for _ in range(3)] == [True, True, False]
    assert breaker.retry_in() == 30.0  # every slot taken: the cooldown as an estimate
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow()


def test_release_gives_the_probe_slot_back() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(30.0)
    assert breaker.allow()
    assert not breaker.allow()
    breaker.release()  # e.g. the probe raised BadRequest: no verdict
    assert breaker.state == "half_open"
    assert breaker.allow()
    breaker.release()
    breaker.release()  # extra releases never create slots
    assert breaker.allow()
    assert not breaker.allow()


def test_release_while_closed_changes_nothing() -> None:
    breaker, _ = make(consecutive_failures=2, **NO_RATE)
    breaker.record_failure()
    breaker.release()
    breaker.record_failure()
    assert breaker.state == "open"


def test_results_of_calls_admitted_before_the_trip_are_ignored() -> None:
    breaker, _ = make()
    trip(breaker)
    until = breaker.retry_in()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.retry_in() == until
    assert breaker.snapshot()["trips"] == 1


# -- retry-after ------------------------------------------------------------------------------


def test_retry_after_opens_for_that_long() -> None:
    breaker, clock = make(cooldown_s=30.0)
    breaker.record_failure(retry_after=7.0)  # one failure: no rule tripped, the 429 did
    assert breaker.state == "open"
    assert breaker.retry_in() == 7.0
    clock.advance(6.99)
    assert not breaker.allow()
    clock.advance(0.01)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"


def test_open_for_is_capped_and_never_shortens() -> None:
    breaker, clock = make(max_retry_after_s=100.0)
    breaker.open_for(1e9)
    assert breaker.retry_in() == 100.0
    breaker.open_for(5.0)
    assert breaker.retry_in() == 100.0
    clock.advance(50.0)
    breaker.open_for(80.0)
    assert breaker.retry_in() == 80.0
    assert breaker.snapshot()["trips"] == 1


@pytest.mark.parametrize("seconds", [0.0, -3.0, math.nan])
def test_open_for_nothing_does_nothing(seconds: float) -> None:
    breaker, _ = make()
    breaker.open_for(seconds)
    breaker.record_failure(retry_after=seconds)
    assert breaker.state == "closed"


def test_retry_after_longer_than_the_trip_cooldown_wins() -> None:
    breaker, _ = make(consecutive_failures=1, cooldown_s=30.0, **NO_RATE)
    breaker.record_failure(retry_after=45.0)
    assert breaker.retry_in() == 45.0
    breaker2, _ = make(consecutive_failures=1, cooldown_s=30.0, **NO_RATE)
    breaker2.record_failure(retry_after=2.0)
    assert breaker2.retry_in() == 30.0


def test_open_for_during_half_open_reopens() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(30.0)
    assert breaker.allow()
    breaker.open_for(12.0)
    assert breaker.state == "open" and breaker.retry_in() == 12.0
    assert breaker.snapshot()["trips"] == 2


# -- concurrency --------------------------------------------------------------------------------


def test_concurrent_allow_in_half_open_takes_exactly_the_probe_slots() -> None:
    breaker, clock = make(half_open_probes=3)
    trip(breaker)
    clock.advance(30.0)
    n_threads = 16
    barrier = threading.Barrier(n_threads)
    results: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        got = [breaker.allow() for _ in range(50)]
        with lock:
            results.extend(got)

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 3


# -- classification -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (RateLimited("slow down", retry_after=2.0), True),
        (ProviderUnavailable("503"), True),
        (Timeout("read timed out"), True),
        (ConnectionFailed("refused"), True),
        (MalformedResponse("not json"), True),
        (AuthenticationError("bad key"), True),
        (PermissionDenied("no"), True),
        (ModelNotFound("no such model"), True),
        (ProviderError("something else"), True),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (BadRequest("bad"), False),
        (ContextWindowExceeded("too long"), False),
        (ContentFiltered("filtered"), False),
        (CircuitOpen("skipped", retry_after=3.0), False),
        (AllProvidersFailed("all failed", [Timeout("t")]), False),
        (BudgetExceeded("over", scope="total", needed=1.0, remaining=0.5), False),
        (ValueError("a bug"), False),
        (KeyboardInterrupt(), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_counts_as_failure(exc: BaseException, expected: bool) -> None:
    assert counts_as_failure(exc) is expected


@pytest.mark.parametrize(
    "bad",
    [
        {"window": 0},
        {"min_calls": 0},
        {"failure_rate": 0.0},
        {"failure_rate": 1.5},
        {"consecutive_failures": 0},
        {"cooldown_s": -1.0},
        {"cooldown_s": 10.0, "max_cooldown_s": 5.0},
        {"half_open_probes": 0},
        {"window_s": 0.0},
        {"max_retry_after_s": math.inf},
    ],
)
def test_policy_rejects_nonsense(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        BreakerPolicy(**bad)


# -- the state machine against a reference model -------------------------------------------


class _Model:
    """The breaker's rules written the plain way: a list of outcomes filtered on demand."""

    def __init__(self, policy: BreakerPolicy) -> None:
        self.p = policy
        self.state = "closed"
        self.open_until = -math.inf
        self.cooldown = policy.cooldown_s
        self.probes = 0
        self.outcomes: list[tuple[float, bool]] = []
        self.run = 0
        self.last_failure = -math.inf
        self.trips = 0

    def refresh(self, now: float) -> None:
        if self.state == "open" and now >= self.open_until:
            self.state, self.probes = "half_open", 0

    def window(self, now: float) -> list[bool]:
        recent = self.outcomes[-self.p.window :]
        return [failed for t, failed in recent if t >= now - self.p.window_s]

    def open(self, now: float, seconds: float) -> None:
        self.state, self.open_until, self.probes = "open", now + seconds, 0
        self.trips += 1

    def allow(self, now: float) -> bool:
        self.refresh(now)
        if self.state == "closed":
            return True
        if self.state == "half_open" and self.probes < self.p.half_open_probes:
            self.probes += 1
            return True
        return False

    def success(self, now: float) -> None:
        self.refresh(now)
        if self.state == "closed":
            self.outcomes.append((now, False))
            self.run = 0
        elif self.state == "half_open":
            self.state, self.outcomes, self.run, self.probes = "closed", [], 0, 0
            self.cooldown, self.last_failure = self.p.cooldown_s, -math.inf

    def failure(self, now: float, retry_after: float | None) -> None:
        self.refresh(now)
        if self.state == "closed":
            self.run = self.run + 1 if now - self.last_failure <= self.p.window_s else 1
            self.last_failure = now
            self.outcomes.append((now, True))
            window = self.window(now)
            rate_hit = len(window) >= self.p.min_calls and sum(window) / len(window) >= (
                self.p.failure_rate
            )
            if self.run >= self.p.consecutive_failures or rate_hit:
                self.open(now, self.cooldown)
        elif self.state == "half_open":
            self.cooldown = min(self.cooldown * 2, self.p.max_cooldown_s)
            self.open(now, self.cooldown)
        if retry_after is not None:
            self.open_for(now, retry_after)

    def open_for(self, now: float, seconds: float) -> None:
        self.refresh(now)
        if seconds <= 0:
            return
        seconds = min(seconds, self.p.max_retry_after_s)
        if self.state == "open":
            self.open_until = max(self.open_until, now + seconds)
        else:
            self.open(now, seconds)

    def retry_in(self, now: float) -> float:
        self.refresh(now)
        if self.state == "open":
            return self.open_until - now
        if self.state == "half_open" and self.probes >= self.p.half_open_probes:
            return self.cooldown
        return 0.0


# Quarter seconds: exact in binary, so model and breaker agree to the bit.
_TIMES = st.integers(min_value=0, max_value=400).map(lambda q: q / 4)


class BreakerMachine(RuleBasedStateMachine):
    """Random traffic and clock moves; the breaker must match the model and keep invariants."""

    @initialize(
        window=st.integers(1, 8),
        window_s=st.sampled_from([5.0, 20.0, 60.0]),
        min_calls=st.integers(1, 6),
        failure_rate=st.sampled_from([0.25, 0.5, 0.75, 1.0]),
        consecutive=st.integers(1, 5),
        cooldown=st.sampled_from([1.0, 5.0, 30.0]),
        growth_cap=st.sampled_from([1.0, 4.0, 10.0]),
        probes=st.integers(1, 3),
        max_retry_after=st.sampled_from([10.0, 100.0]),
    )
    def setup(
        self,
        window: int,
        window_s: float,
        min_calls: int,
        failure_rate: float,
        consecutive: int,
        cooldown: float,
        growth_cap: float,
        probes: int,
        max_retry_after: float,
    ) -> None:
        self.policy = BreakerPolicy(
            window=window,
            window_s=window_s,
            min_calls=min_calls,
            failure_rate=failure_rate,
            consecutive_failures=consecutive,
            cooldown_s=cooldown,
            max_cooldown_s=cooldown * growth_cap,
            half_open_probes=probes,
            max_retry_after_s=max_retry_after,
        )
        self.clock = FakeClock()
        self.breaker = CircuitBreaker(self.policy, clock=self.clock)
        self.model = _Model(self.policy)
        self.last_trips = 0

    @rule(seconds=_TIMES)
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def allow(self) -> None:
        was_open = self.breaker.state == "open"
        got = self.breaker.allow()
        assert got == self.model.allow(self.clock.now)
        if was_open:
            assert not got, "an open breaker let a call through before its cooldown ended"

    @rule()
    def success(self) -> None:
        self.breaker.record_success()
        self.model.success(self.clock.now)

    @rule(retry_after=st.none() | _TIMES)
    def failure(self, retry_after: float | None) -> None:
        before = self.breaker.state
        self.breaker.record_failure(retry_after=retry_after)
        self.model.failure(self.clock.now, retry_after)
        if before == "closed" and self.breaker.state == "closed":
            snap = self.breaker.snapshot()
            assert snap["consecutive_failures"] < self.policy.consecutive_failures
            total = snap["failures"] + snap["successes"]
            assert total < self.policy.min_calls or (
                snap["failures"] < self.policy.failure_rate * total
            )
        if before == "half_open":
            assert self.breaker.state == "open", "a failed probe must reopen the breaker"

    @precondition(lambda self: self.breaker.state == "half_open")
    @rule()
    def release(self) -> None:
        self.breaker.release()
        self.model.probes = max(0, self.model.probes - 1)

    @rule(seconds=_TIMES)
    def open_for(self, seconds: float) -> None:
        self.breaker.open_for(seconds)
        self.model.open_for(self.clock.now, seconds)

    @invariant()
    def matches_the_model(self) -> None:
        now = self.clock.now
        self.model.refresh(now)
        state = self.breaker.state
        assert state in ("closed", "open", "half_open")
        assert state == self.model.state
        assert self.breaker.retry_in() == max(0.0, self.model.retry_in(now))
        snap = self.breaker.snapshot()
        assert snap["trips"] == self.model.trips
        assert snap["probes_in_flight"] <= self.policy.half_open_probes
        if state == "closed":
            window = self.model.window(now)
            assert (snap["failures"], snap["successes"]) == (sum(window), len(window) - sum(window))
        if state == "open":
            assert (
                0
                < snap["retry_in"]
                <= max(self.policy.max_cooldown_s, self.policy.max_retry_after_s)
            )

    @invariant()
    def trips_never_decrease(self) -> None:
        trips = self.breaker.snapshot()["trips"]
        assert trips >= self.last_trips
        self.last_trips = trips


BreakerMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
test_breaker_state_machine = BreakerMachine.TestCase


# -- an operator's override -------------------------------------------------------------------


def test_force_open_holds_it_open_past_the_retry_after_cap_then_probes() -> None:
    breaker, clock = make()
    breaker.force("open", 7200.0)  # beyond max_retry_after_s: an operator's word is not capped
    assert breaker.state == "open" and not breaker.allow()
    assert breaker.snapshot()["reason"] == "forced open"
    clock.advance(7199.0)
    assert breaker.state == "open"
    clock.advance(2.0)
    assert breaker.state == "half_open" and breaker.allow()  # then the usual probe decides


def test_force_closed_forgets_the_failures() -> None:
    breaker, _ = make(**NO_RATE)
    trip(breaker)
    assert breaker.state == "open"
    breaker.force("closed")
    snap = breaker.snapshot()
    assert breaker.state == "closed" and breaker.allow()
    assert snap["consecutive_failures"] == 0 and snap["failures"] == 0
    assert snap["reason"] == "forced closed"
