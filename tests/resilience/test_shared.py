"""The shared state classes against the in-process ones, on fakeredis (its Lua is real Lua):
the same rules give the same answers, two "processes" (two objects on one store) see one
state, and a store that fails does what `StatePolicy` says. The fleet of real processes on a
real redis-server is in test_fleet.py."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from typing import Any

import fakeredis
import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agency.config import AgencyConfig
from agency.errors import BudgetExceeded, ConfigError
from agency.resilience.breaker import BreakerPolicy, CircuitBreaker
from agency.resilience.budget import Budget, BudgetPolicy
from agency.resilience.limits import RateLimiter, RateLimitPolicy
from agency.resilience.shared import (
    RedisState,
    SharedBreaker,
    SharedBudget,
    SharedLimiter,
    SharedStats,
    StatePolicy,
)


class Flaky:
    """A Redis client that can be switched off: every round trip then raises ConnectionError."""

    def __init__(self) -> None:
        self.inner = fakeredis.FakeRedis()
        self.down = False
        self.attempts = 0  # round trips tried

    def script_load(self, source: str) -> Any:
        return self.inner.script_load(source)

    def evalsha(self, *args: Any) -> Any:
        self.attempts += 1
        if self.down:
            raise redis.ConnectionError("Connection refused")
        return self.inner.evalsha(*args)

    def pipeline(self, transaction: bool = False) -> Any:
        pipe, flaky = self.inner.pipeline(transaction=transaction), self

        class Pipe:
            def evalsha(self, *args: Any) -> None:
                pipe.evalsha(*args)

            def execute(self, raise_on_error: bool = True) -> Any:
                flaky.attempts += 1
                if flaky.down:
                    raise redis.ConnectionError("Connection refused")
                return pipe.execute(raise_on_error=raise_on_error)

            def hgetall(self, key: str) -> None:
                pipe.hgetall(key)

        return Pipe()


def _store(client: Any = None, **policy: Any) -> RedisState:
    return RedisState(
        StatePolicy(backend="redis", **policy), client=client or fakeredis.FakeRedis()
    )


# ------------------------------------------------------------------------- breakers
_SLOW = BreakerPolicy(cooldown_s=200.0, window=6, min_calls=4, consecutive_failures=3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.sampled_from(["allow", "fail", "ok", "release"]), max_size=25))
def test_a_shared_breaker_follows_the_breakers_rules(ops: list[str]) -> None:
    local = CircuitBreaker(_SLOW, name="p")
    shared = SharedBreaker(_store(), _SLOW, name="p")
    for op in ops:
        answers = []
        for breaker in (local, shared):
            if op == "allow":
                answers.append(breaker.allow())
            elif op == "fail":
                breaker.record_failure()
            elif op == "ok":
                breaker.record_success()
            else:
                breaker.release()
        assert answers[:1] == answers[1:]
        a, b = local.snapshot(), shared.snapshot()
        keys = ("state", "failures", "successes", "consecutive_failures", "trips", "reason")
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}, op


def test_one_half_open_probe_for_the_whole_fleet() -> None:
    store = _store()
    policy = BreakerPolicy(cooldown_s=0.2, consecutive_failures=2)
    fleet = [SharedBreaker(store, policy, name="p") for _ in range(4)]
    fleet[0].record_failure()
    fleet[1].record_failure()  # two processes' failures add up: open for everyone
    assert [b.allow() for b in fleet] == [False] * 4
    assert 0 < fleet[3].retry_in() <= 0.2
    time.sleep(0.25)
    assert sum(b.allow() for b in fleet) == 1  # one probe across the fleet
    fleet[2].record_failure()  # the probe failed: open again, cooldown doubled
    assert fleet[0].snapshot()["cooldown_s"] == pytest.approx(0.4)
    assert not any(b.allow() for b in fleet)


def test_retry_after_from_one_process_holds_every_process() -> None:
    store = _store()
    a, b = (SharedBreaker(store, BreakerPolicy(), name="p") for _ in range(2))
    a.record_failure(retry_after=30.0)
    assert b.state == "open" and 29 < b.retry_in() <= 30
    assert b.snapshot()["reason"] == "retry-after 30s"


# ------------------------------------------------------------------------- limiters
def test_one_rpm_bucket_for_the_fleet() -> None:
    store = _store()
    fleet = [SharedLimiter(store, RateLimitPolicy(rpm=5), name="p") for _ in range(3)]
    taken = sum(limiter.try_acquire() for _ in range(4) for limiter in fleet)
    assert taken == 5  # a process-local bucket each would have let 12 through
    assert 11 < fleet[0].wait_time() <= 12  # one request refills in 60/5 s


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(asks=st.lists(st.integers(min_value=0, max_value=400), max_size=20))
def test_a_shared_limiter_admits_what_a_local_one_admits(asks: list[int]) -> None:
    policy = RateLimitPolicy(rpm=10, tpm=1000)
    local, shared = RateLimiter(policy), SharedLimiter(_store(), policy, name="p")
    for tokens in asks:
        assert local.try_acquire(tokens) == shared.try_acquire(tokens)
    a, b = local.snapshot(), shared.snapshot()
    assert b["requests_available"] == pytest.approx(a["requests_available"], abs=0.05)
    assert b["tokens_available"] == pytest.approx(a["tokens_available"], abs=5)


def test_headers_seen_by_one_process_limit_all() -> None:
    store = _store()
    seer, other = (SharedLimiter(store, RateLimitPolicy(), name="p") for _ in range(2))
    assert other.try_acquire(100)
    seer.observe_headers(
        {
            "X-RateLimit-Remaining-Tokens": "150",
            "x-ratelimit-reset-tokens": "20s",
            "x-ratelimit-limit-tokens": "10000",
        }
    )
    assert other.try_acquire(100)  # 150 left: 100 fit
    assert not other.try_acquire(100)  # 50 left
    assert 19 < other.wait_time(100) <= 20
    other.settle(100, 20)  # used 20 of the 100 held: 80 back
    assert other.try_acquire(100)
    seer.observe_headers({"retry-after": "7"})
    assert 6 < other.wait_time() <= 7
    assert other.snapshot()["server"]["tokens"]["limit"] == 10000


# ------------------------------------------------------------------------- budgets
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["reserve", "settle", "release"]),
            st.sampled_from([None, "code"]),
            st.integers(min_value=0, max_value=40),
        ),
        max_size=30,
    )
)
def test_a_shared_budget_refuses_what_a_local_one_refuses(
    ops: list[tuple[str, str | None, int]],
) -> None:
    policy = BudgetPolicy(max_cost_per_request=0.3, max_cost_total=1.0, roles={"code": 0.4})
    budgets = (Budget(policy), SharedBudget(_store(), policy))
    held: list[list[Any]] = [[], []]
    for op, role, cents in ops:
        outcomes = []
        for i, budget in enumerate(budgets):
            if op == "reserve":
                try:
                    held[i].append(budget.reserve(cents / 100, role=role))
                    outcomes.append("held")
                except BudgetExceeded as exc:
                    outcomes.append(f"{exc.scope} {exc.remaining:.6f}")
            elif held[i]:
                r = held[i].pop(0)
                r.settle(r.amount * 0.5) if op == "settle" else r.release()
        assert outcomes[:1] == outcomes[1:]
        for role_ in (None, "code"):
            assert budgets[1].spent(role_) == pytest.approx(budgets[0].spent(role_))
            assert budgets[1].reserved(role_) == pytest.approx(budgets[0].reserved(role_))
            assert budgets[1].remaining(role_) == pytest.approx(budgets[0].remaining(role_))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(ops=[("admit", None, 30)] * 3 + [("release", None, 0), ("admit", None, 30)])
@example(ops=[("admit", "code", 30), ("settle", None, 0), ("admit", "code", 25)])
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["admit", "settle", "release"]),
            st.sampled_from([None, "code"]),
            st.integers(min_value=0, max_value=30),  # (over 0.3: refused before any round trip)
        ),
        max_size=30,
    )
)
def test_an_admission_carrying_settlements_holds_what_a_local_budget_holds(
    ops: list[tuple[str, str | None, int]],
) -> None:
    """The admission script runs the queued settlements and releases first, their budget
    changes summed with its own hold (one write per field): the verdicts and the books are
    those of a local budget doing each step in turn."""
    from agency.resilience.shared import Fleet

    policy = BudgetPolicy(max_cost_per_request=0.3, max_cost_total=1.0, roles={"code": 0.4})
    store = _store()
    local, shared = Budget(policy), SharedBudget(store, policy)
    fleet = Fleet(
        SharedBreaker(store, BreakerPolicy(), name="p"),
        SharedLimiter(store, RateLimitPolicy(rpm=10**6), name="p"),
    )
    held: list[list[Any]] = [[], []]
    for op, role, cents in ops:
        if op == "admit":
            try:
                held[0].append(local.reserve(cents / 100, role=role))
                expected = "held"
            except BudgetExceeded as exc:
                expected = f"{exc.scope} {exc.remaining:.6f}"
            verdict = fleet.admit(10, cents / 100, role, shared)
            assert verdict is not None
            if verdict.kind == "ok":
                assert verdict.reservation is not None
                held[1].append(verdict.reservation)
                got = "held"
            else:
                assert verdict.kind == "budget" and verdict.error is not None
                got = f"{verdict.error.scope} {verdict.error.remaining:.6f}"
            assert got == expected
        else:
            for hold in (h.pop(0) for h in held if h):
                hold.settle(hold.amount * 0.5) if op == "settle" else hold.release()
    for role_ in (None, "code"):
        assert shared.spent(role_) == pytest.approx(local.spent(role_))
        assert shared.reserved(role_) == pytest.approx(local.reserved(role_))
    books = {k.decode(): int(v) for k, v in store.client.hgetall("agency:budget").items()}
    assert books.get("open", 0) == len(held[1])
    assert books.get("refused", 0) == local.snapshot()["refused"]


def test_two_processes_share_one_budget() -> None:
    store = _store()
    a, b = (
        SharedBudget(store, BudgetPolicy(max_cost_total=1.0)),
        SharedBudget(store, BudgetPolicy(max_cost_total=1.0)),
    )
    held = a.reserve(0.7)
    with pytest.raises(BudgetExceeded, match=r"total.*\$0\.300000"):
        b.reserve(0.5)
    held.settle(0.2)
    b.reserve(0.5).settle(0.5)
    assert a.spent() == b.spent() == pytest.approx(0.7)
    assert a.snapshot()["shared"] and a.snapshot()["spent"] == pytest.approx(0.7)


# ------------------------------------------------------------------------- stats
def test_the_fleets_counters_add_up() -> None:
    store = _store()
    for ok in (True, True, False):
        SharedStats(store).record(
            "p", ok=ok, usage={"input_tokens": 3, "output_tokens": 4}, cost=0.25
        )
    assert SharedStats(store).snapshot(["p", "q"]) == {
        "p": {
            "calls": 3,
            "ok": 2,
            "failed": 1,
            "input_tokens": 9,
            "output_tokens": 12,
            "cost": 0.75,
        },
        "q": {"calls": 0, "ok": 0, "failed": 0, "input_tokens": 0, "output_tokens": 0, "cost": 0.0},
    }


def test_counters_add_up_in_the_process_and_go_as_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call's counters are not a write each: they add up per provider and go as one write
    per provider after COUNTS_LINGER_S (or at once on a flush, as a snapshot does)."""
    from agency.resilience import _store as store_module

    monkeypatch.setattr(store_module, "COUNTS_LINGER_S", 0.2)
    server = fakeredis.FakeServer()
    store = _store(fakeredis.FakeRedis(server=server))
    sent: list[str] = []
    send = store._send

    def spy(groups: list[Any], command: Any = None) -> Any:
        sent.extend(write[0] for _, writes in groups for write in writes)
        return send(groups, command)

    monkeypatch.setattr(store, "_send", spy)
    stats = SharedStats(store)
    for i in range(50):
        stats.record("p" if i % 2 else "q", ok=True, usage={"input_tokens": 2}, cost=0.001)
    assert store.pending == 2 and sent == []  # two providers' sums, nothing sent yet
    reader = SharedStats(_store(fakeredis.FakeRedis(server=server)))  # another process
    deadline = time.monotonic() + 2
    while reader.snapshot(["p"])["p"]["calls"] < 25:  # the writer sends them in their turn
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert sent == ["STATS", "STATS"]
    assert reader.snapshot(["p", "q"])["p"] == {
        "calls": 25, "ok": 25, "failed": 0, "input_tokens": 50, "output_tokens": 0,
        "cost": pytest.approx(0.025),
    }  # fmt: skip
    stats.record("p", ok=False, usage=None, cost=None)
    assert stats.snapshot(["p"])["p"]["failed"] == 1  # a snapshot sends this process's first


# ------------------------------------------------------------------------- store down
def test_a_store_that_fails_warns_once_rests_and_the_fleet_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = Flaky()
    store = _store(client, retry_s=0.2)
    breaker = SharedBreaker(store, BreakerPolicy(consecutive_failures=2), name="p")
    limiter = SharedLimiter(store, RateLimitPolicy(rpm=2), name="p")
    budget = SharedBudget(store, BudgetPolicy(max_cost_total=1.0))
    client.down = True
    with caplog.at_level(logging.WARNING, logger="agency.state"):
        assert breaker.allow() and limiter.try_acquire()  # fail open: the local state
        breaker.record_failure()
        breaker.record_failure()
        assert not breaker.allow()  # ... which still works as a breaker
        with pytest.raises(BudgetExceeded) as refused:
            budget.reserve(0.1)  # fail closed
        assert refused.value.scope == "store"
        assert budget.reserve(None).priced is False  # unpriced calls need no store
    assert client.attempts == 1  # the store rests for retry_s after a failure: one try
    warnings = [r for r in caplog.records if r.name == "agency.state"]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
    time.sleep(0.25)
    client.down = False
    assert budget.reserve(0.1).amount == pytest.approx(0.1)
    assert breaker.allow()  # the shared breaker never saw the local failures


def test_holds_taken_in_the_store_are_given_back_there_once_it_answers() -> None:
    client = Flaky()
    store = _store(client, retry_s=0.05)
    budget = SharedBudget(store, BudgetPolicy(max_cost_total=1.0))
    first, second = budget.reserve(0.4), budget.reserve(0.4)
    client.down = True
    first.settle(0.1)  # queued; the writer's try fails: kept, in order
    second.release()
    time.sleep(0.1)
    assert store.pending == 2
    client.down = False
    assert store.flush(timeout=2.0)  # once the store rests no more, they go through
    other = SharedBudget(store, BudgetPolicy(max_cost_total=1.0))
    assert other.spent() == pytest.approx(0.1) and other.reserved() == 0


def test_closed_on_failure_breakers_skip_and_limiters_admit_nothing() -> None:
    client = Flaky()
    store = _store(
        client,
        breakers_on_failure="closed",
        limiters_on_failure="closed",
        budgets_on_failure="open",
    )
    client.down = True
    assert not SharedBreaker(store, BreakerPolicy(), name="p").allow()
    assert not SharedLimiter(store, RateLimitPolicy(), name="p").try_acquire()
    assert SharedBudget(store, BudgetPolicy(max_cost_total=1.0)).reserve(0.5).amount == 0.5


def test_an_unreachable_redis_fails_fast() -> None:
    store = RedisState(StatePolicy(backend="redis", url="redis://127.0.0.1:1/0", timeout_s=0.1))
    start = time.monotonic()
    assert SharedBreaker(store, BreakerPolicy(), name="p").allow()
    assert time.monotonic() - start < 0.5


# ------------------------------------------------------------------------- config
def test_state_config_errors_name_the_field_and_the_fix(tmp_path: Any) -> None:
    path = tmp_path / "agency.toml"
    path.write_text('[state]\nbackend = "etcd"\n')
    with pytest.raises(ConfigError) as bad:
        AgencyConfig.from_toml_str(path.read_text(), str(path))
    assert "state.backend" in str(bad.value) and str(path) in str(bad.value)
    with pytest.raises(ConfigError, match=r"(?s)state\.url.*redis://host:6379/0"):
        AgencyConfig.from_dict({"state": {"url": "localhost:6379"}})
    with pytest.raises(ConfigError, match="timeout_s"):
        AgencyConfig.from_dict({"state": {"timeout_s": 0}})


def test_a_redis_password_stays_out_of_reprs_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    config = AgencyConfig.from_dict(
        {"state": {"backend": "redis", "url": "redis://:hunter2@10.0.0.5:6379/0"}}
    )
    assert "hunter2" not in repr(config) and "hunter2" not in str(config.model_dump())
    store = RedisState(StatePolicy(backend="redis", url="redis://:hunter2@127.0.0.1:1/0"))
    store._failed(ConnectionError("refused"))
    assert "hunter2" not in caplog.text and "redis://:***@127.0.0.1:1/0" in caplog.text


def test_the_memory_backend_imports_nothing_new() -> None:
    code = (
        "import sys\nfrom agency import Agency\nAgency()\n"
        "print(sorted(m for m in sys.modules if m == 'redis' or m == 'agency.resilience.shared'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_forced_breaker_holds_for_the_whole_fleet() -> None:
    store = _store()
    a, b = (SharedBreaker(store, BreakerPolicy(max_retry_after_s=60.0), name="p") for _ in range(2))
    local = CircuitBreaker(BreakerPolicy(max_retry_after_s=60.0), name="p")
    for breaker in (a, local):
        breaker.force("open", 600.0)
    assert b.state == "open" and 599 < b.retry_in() <= 600  # not capped at max_retry_after_s
    assert b.snapshot()["reason"] == local.snapshot()["reason"] == "forced open"
    b.record_failure()
    a.force("closed")
    assert a.state == "closed" and b.allow()
    assert b.snapshot()["consecutive_failures"] == 0


def test_a_named_shared_budget_is_seeded_once() -> None:
    store = _store()
    first = SharedBudget(store, BudgetPolicy(max_cost_total=1.0), name="budget:key:a")
    first.seed(0.75)  # what the key had spent before (kept on disk)
    second = SharedBudget(store, BudgetPolicy(max_cost_total=1.0), name="budget:key:a")
    second.seed(0.10)  # a later process: the fleet's number stands
    assert second.spent() == pytest.approx(0.75)
    with pytest.raises(BudgetExceeded):
        second.reserve(0.30)
    second.reserve(0.20).settle(0.20)
    assert first.spent() == pytest.approx(0.95)
    other = SharedBudget(store, BudgetPolicy(max_cost_total=1.0), name="budget:key:b")
    assert other.spent() == 0.0  # another name, another budget
