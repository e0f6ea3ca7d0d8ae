"""Budgets: refusal before the call, reserve-then-settle accounting, threads, a property."""

from __future__ import annotations

import random
import threading
from types import MappingProxyType

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from agency.errors import BudgetExceeded, ConfigError
from agency.resilience.budget import NANOS_PER_USD, Budget, BudgetPolicy, Reservation

EPS = 1e-9


def test_a_call_over_the_per_request_limit_is_refused() -> None:
    budget = Budget(BudgetPolicy(max_cost_per_request=0.10))
    with pytest.raises(BudgetExceeded) as info:
        budget.reserve(0.25)
    err = info.value
    assert (err.scope, err.needed, err.remaining) == ("request", 0.25, 0.10)
    assert "per-request limit of $0.100000" in str(err)
    assert budget.reserved() == 0.0
    assert budget.reserve(0.10).amount == 0.10  # exactly the limit fits
    assert budget.snapshot()["refused"] == 1


def test_the_total_refusal_names_exactly_what_is_left() -> None:
    budget = Budget(BudgetPolicy(max_cost_total=1.0))
    first = budget.reserve(0.3)
    assert first.settle(0.25) == 0.25
    held = budget.reserve(0.5)
    with pytest.raises(BudgetExceeded) as info:
        budget.reserve(0.3)
    err = info.value
    assert err.scope == "total"
    assert err.needed == 0.3
    assert err.remaining == pytest.approx(0.25, abs=1e-12)  # 1.0 - 0.25 spent - 0.5 held
    assert "only $0.250000 of the $1.000000 limit is left" in str(err)
    held.release()
    assert budget.remaining() == 0.75
    budget.reserve(0.3).settle(0.3)
    assert budget.spent() == pytest.approx(0.55)


def test_role_limits_are_independent_and_the_total_still_applies() -> None:
    budget = Budget(BudgetPolicy(max_cost_total=3.0, roles={"code": 1.0, "chat": 0.5}))
    budget.reserve(0.9, role="code").settle(0.9)
    budget.reserve(0.5, role="chat")
    with pytest.raises(BudgetExceeded) as chat:
        budget.reserve(0.01, role="chat")
    assert (chat.value.scope, chat.value.remaining) == ("role:chat", 0.0)
    budget.reserve(0.1, role="code")  # code's own room is untouched by chat
    with pytest.raises(BudgetExceeded) as code:
        budget.reserve(0.01, role="code")
    assert code.value.scope == "role:code"
    # A role with no limit of its own is held only by the total (3.0 - 1.5 used).
    with pytest.raises(BudgetExceeded) as other:
        budget.reserve(1.6, role="summaries")
    assert other.value.scope == "total"
    assert other.value.remaining == pytest.approx(1.5)
    budget.reserve(1.5, role="summaries")
    assert budget.spent("code") == pytest.approx(0.9)
    assert budget.reserved("code") == pytest.approx(0.1)
    assert budget.reserved("chat") == 0.5
    assert budget.remaining("chat") == 0.0
    assert budget.remaining("summaries") == pytest.approx(0.0, abs=EPS)


def test_remaining_is_the_tighter_of_role_and_total() -> None:
    budget = Budget(BudgetPolicy(max_cost_total=1.0, roles={"code": 5.0}))
    assert budget.remaining("code") == 1.0
    with pytest.raises(BudgetExceeded) as info:
        budget.reserve(2.0, role="code")
    assert info.value.scope == "total"
    assert Budget().remaining() is None
    assert Budget().remaining("any") is None


def test_settle_and_release_accounting() -> None:
    budget = Budget(BudgetPolicy(max_cost_total=10.0))
    a = budget.reserve(1.0, role="x")
    b = budget.reserve(2.0)
    c = budget.reserve(3.0)
    assert (budget.reserved(), budget.spent(), budget.reserved("x")) == (6.0, 0.0, 1.0)
    a.settle(0.4)
    b.release()
    assert c.settle(None) == 3.0  # unknown real cost: the whole hold counts as spent
    assert (budget.reserved(), budget.spent(), budget.spent("x")) == (0.0, 3.4, 0.4)
    assert (a.actual, b.actual, c.actual) == (0.4, None, 3.0)
    snap = budget.snapshot()
    assert (snap["calls"], snap["released"], snap["open_reservations"]) == (2, 1, 0)
    assert snap["remaining"] == pytest.approx(6.6)
    assert snap["roles"]["x"] == {"spent": 0.4, "reserved": 0.0, "remaining": 6.6, "limit": None}


def test_a_reservation_closes_once() -> None:
    budget = Budget(BudgetPolicy(max_cost_total=1.0))
    r = budget.reserve(0.5)
    r.settle(0.2)
    r.release()  # after settling: a no-op, so `finally: release()` is safe
    with pytest.raises(RuntimeError, match="already settled"):
        r.settle(0.2)
    assert budget.spent() == 0.2
    released = budget.reserve(0.1)
    released.release()
    with pytest.raises(RuntimeError):
        released.settle(0.1)
    assert (budget.spent(), budget.reserved()) == (0.2, 0.0)


def test_the_context_manager_releases_unless_settled() -> None:
    budget = Budget(BudgetPolicy(max_cost_total=1.0))
    with pytest.raises(ZeroDivisionError), budget.reserve(0.5) as r:
        assert isinstance(r, Reservation)
        _ = 1 / 0
    assert (budget.reserved(), budget.spent()) == (0.0, 0.0)
    with budget.reserve(0.5) as r:
        r.settle(0.3)
    with budget.reserve(0.5):
        pass
    assert (budget.reserved(), budget.spent()) == (0.0, 0.3)


def test_unpriced_calls_are_allowed_reserve_nothing_and_are_counted() -> None:
    budget = Budget(BudgetPolicy(max_cost_per_request=0.01, max_cost_total=0.01))
    r = budget.reserve(None)
    assert (r.amount, r.priced) == (0.0, False)
    assert budget.fits(None)
    assert budget.snapshot()["unpriced_calls"] == 1
    r.settle(None)
    assert budget.spent() == 0.0


def test_an_overrun_is_recorded_and_blocks_later_calls() -> None:
    budget = Budget(BudgetPolicy(max_cost_total=1.0))
    budget.reserve(0.5).settle(1.2)  # the provider produced more than the worst case
    assert budget.spent() == 1.2
    assert budget.remaining() == pytest.approx(-0.2)
    assert budget.snapshot()["overruns"] == 1
    assert not budget.fits(0.0001)
    with pytest.raises(BudgetExceeded):
        budget.reserve(0.0001)


def test_fits_does_not_reserve() -> None:
    budget = Budget(BudgetPolicy(max_cost_total=1.0, roles={"a": 0.2}))
    assert budget.fits(1.0)
    assert not budget.fits(1.01)
    assert not budget.fits(0.3, role="a")
    assert budget.reserved() == 0.0


@pytest.mark.parametrize("bad", [-0.01, float("nan"), float("inf")])
def test_bad_amounts_are_value_errors(bad: float) -> None:
    budget = Budget()
    with pytest.raises(ValueError):
        budget.reserve(bad)
    r = budget.reserve(0.1)
    with pytest.raises(ValueError):
        r.settle(bad)
    assert not r.closed


def test_policy_validation_and_immutability() -> None:
    with pytest.raises(ConfigError, match="max_cost_total"):
        BudgetPolicy(max_cost_total=-1)
    with pytest.raises(ConfigError, match=r"roles\.code"):
        BudgetPolicy(roles={"code": float("nan")})
    with pytest.raises(ConfigError, match="roles"):
        BudgetPolicy(roles=[("code", 1.0)])  # type: ignore[arg-type]
    source = {"code": 5.0}
    policy = BudgetPolicy(max_cost_total=10.0, roles=source)
    source["code"] = 50.0  # the policy kept its own copy
    assert policy.roles["code"] == 5.0
    assert isinstance(policy.roles, MappingProxyType)
    assert policy == BudgetPolicy(max_cost_total=10.0, roles={"code": 5.0})
    assert hash(policy) == hash(BudgetPolicy(max_cost_total=10.0, roles={"code": 5.0}))


def test_a_zero_limit_admits_only_free_calls() -> None:
    budget = Budget(BudgetPolicy(max_cost_total=0.0))
    budget.reserve(0.0).settle(0.0)
    with pytest.raises(BudgetExceeded):
        budget.reserve(1e-6)


# --- property: the invariant under any sequence -----------------------------------------------

LIMIT_TOTAL = 1.0
ROLE_LIMITS = {"a": 0.4, "b": 0.7}
ROLES = [None, "a", "b", "c"]


def _nanos(usd: float) -> int:
    return round(usd * NANOS_PER_USD)


class BudgetMachine(RuleBasedStateMachine):
    """Random reserve / settle (actual <= held) / release sequences against a model."""

    open_reservations = Bundle("open_reservations")

    @initialize()
    def start(self) -> None:
        policy = BudgetPolicy(
            max_cost_per_request=0.5, max_cost_total=LIMIT_TOTAL, roles=ROLE_LIMITS
        )
        self.budget = Budget(policy)
        self.settled: dict[str | None, int] = {}

    @rule(target=open_reservations, amount=st.floats(0, 0.6), role=st.sampled_from(ROLES))
    def reserve(self, amount: float, role: str | None) -> Reservation | None:
        before = self.budget.snapshot()
        fits = self.budget.fits(amount, role=role)
        try:
            r = self.budget.reserve(amount, role=role)
        except BudgetExceeded as err:
            assert not fits
            assert err.needed == pytest.approx(amount, abs=EPS)
            assert err.needed > err.remaining
            assert self.budget.snapshot()["reserved"] == before["reserved"]
            return None
        assert fits
        return r

    @rule(r=consumes(open_reservations), fraction=st.floats(0, 1))
    def settle(self, r: Reservation | None, fraction: float) -> None:
        if r is None:
            return
        actual = r.amount * fraction
        r.settle(actual)
        self.settled[r.role] = self.settled.get(r.role, 0) + _nanos(actual)

    @rule(r=consumes(open_reservations))
    def release(self, r: Reservation | None) -> None:
        if r is not None:
            r.release()

    @invariant()
    def within_limits(self) -> None:
        snap = self.budget.snapshot()
        assert snap["spent"] + snap["reserved"] <= LIMIT_TOTAL + EPS
        for role, limit in ROLE_LIMITS.items():
            row = snap["roles"].get(role)
            if row is not None:
                assert row["spent"] + row["reserved"] <= limit + EPS

    @invariant()
    def spent_is_the_sum_of_settled_actuals(self) -> None:
        total = sum(self.settled.values())
        assert _nanos(self.budget.spent()) == total
        for role in ("a", "b", "c"):
            assert _nanos(self.budget.spent(role)) == self.settled.get(role, 0)


TestBudgetMachine = BudgetMachine.TestCase
TestBudgetMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# --- threads --------------------------------------------------------------------------------


def test_concurrent_reservations_never_overspend() -> None:
    limit, threads, per_thread = 5.0, 16, 200
    budget = Budget(BudgetPolicy(max_cost_total=limit))
    start = threading.Barrier(threads + 1)
    done = threading.Event()
    refused = [0] * threads
    recorded = [0.0] * threads
    bad_errors: list[BaseException] = []
    violations: list[dict[str, float]] = []

    def worker(i: int) -> None:
        rng = random.Random(i)
        start.wait()
        for _ in range(per_thread):
            worst = rng.uniform(0.0, 0.05)
            try:
                r = budget.reserve(worst)
            except BudgetExceeded as err:
                if err.scope != "total" or not err.needed > err.remaining:
                    bad_errors.append(err)
                refused[i] += 1
                continue
            if rng.random() < 0.1:
                r.release()
            else:
                recorded[i] += r.settle(rng.uniform(0.0, worst))

    def watcher() -> None:
        start.wait()
        while not done.is_set():
            snap = budget.snapshot()
            if snap["spent"] + snap["reserved"] > limit + EPS:
                violations.append(snap)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    watch = threading.Thread(target=watcher)
    for t in [*pool, watch]:
        t.start()
    for t in pool:
        t.join(timeout=60)
    done.set()
    watch.join(timeout=60)

    snap = budget.snapshot()
    assert not bad_errors
    assert not violations
    assert snap["spent"] <= limit
    assert snap["reserved"] == 0.0
    assert snap["open_reservations"] == 0
    assert snap["refused"] == sum(refused) > 0  # the limit was reached
    assert snap["calls"] + snap["released"] + snap["refused"] == threads * per_thread
    assert snap["spent"] == pytest.approx(sum(recorded), abs=threads * per_thread * EPS)
    assert snap["spent"] > limit / 2
