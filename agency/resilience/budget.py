"""Spending limits, enforced before a call is sent.

Contract:

- A `BudgetPolicy` sets up to three kinds of limit, in US dollars: ``max_cost_per_request``
  (one call), ``max_cost_total`` (everything a `Budget` ever spends: an Agency's lifetime) and
  ``roles`` (``{"code": 5.0}``: everything calls made for that role spend).
- Before a call, `Budget.reserve` takes the call's worst-case cost (prompt tokens plus
  ``max_tokens`` at the model's price: `agency.pricing.CostEstimate.worst_case`). If it does
  not fit a limit it raises `agency.errors.BudgetExceeded` naming the scope (``"request"``,
  ``"total"`` or ``"role:<name>"``), the cost needed and what the scope had left, and nothing
  is reserved. Otherwise the worst case is held until the call ends.
- After the call, `Reservation.settle` frees the hold and records the real cost;
  `Reservation.release` frees it when the call failed before costing anything. Leaving a
  ``with budget.reserve(...)`` block without settling releases.
- Invariant, under any interleaving of threads: for the total and for every limited role,
  ``spent + reserved <= limit``, as long as each call settles at most what it reserved. That
  holds when the worst case was a true bound; when a provider overruns it (or an unpriced call
  turns out to cost money), `settle` still records the truth, so spending can then exceed a
  limit, and every later reservation is refused until the overrun is absorbed.
- Unknown price (``worst_case=None``): the cost cannot be bounded, and refusing would make an
  unpriced model unusable under any budget. Such a call is allowed, reserves nothing, and is
  counted in ``snapshot()["unpriced_calls"]``; callers that can choose (a fallback chain)
  should prefer priced models when a budget is set.
- Money is kept as integer nanodollars, so sums are exact and the invariant is not at the
  mercy of float rounding. Every method is non-blocking apart from a short lock, so async
  code calls the same methods.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any

from agency.errors import BudgetExceeded, ConfigError

__all__ = ["NANOS_PER_USD", "Budget", "BudgetPolicy", "Reservation"]

NANOS_PER_USD = 1_000_000_000
"""Accounting unit: amounts are rounded to the nearest billionth of a dollar."""

_SCOPE_REQUEST = "request"
_SCOPE_TOTAL = "total"


def _role_scope(role: str) -> str:
    return f"role:{role}"


def _to_nanos(usd: float, what: str) -> int:
    if isinstance(usd, bool) or not isinstance(usd, int | float) or not math.isfinite(usd):
        raise ValueError(f"{what} must be a finite amount of US dollars, not {usd!r}")
    if usd < 0:
        raise ValueError(f"{what} cannot be negative: {usd!r}")
    return round(usd * NANOS_PER_USD)


def _usd(nanos: int) -> float:
    return nanos / NANOS_PER_USD


def _limit(value: Any, key: str) -> None:
    """Validate one configured limit (``None`` is unlimited)."""
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigError(
            f"must be a non-negative number of US dollars, not {value!r}",
            key=key,
            fix="set a limit such as 5.0, or leave it out for no limit",
        )


def _empty_roles() -> Mapping[str, float]:
    return MappingProxyType({})


@dataclass(frozen=True)
class BudgetPolicy:
    """The spending limits of a `Budget`, in US dollars. ``None`` means no limit."""

    max_cost_per_request: float | None = None
    """The most one call may cost in the worst case."""
    max_cost_total: float | None = None
    """The most the `Budget` may spend over its lifetime (all calls, all roles)."""
    roles: Mapping[str, float] = field(default_factory=_empty_roles, hash=False)
    """Per-role lifetime limits, ``{"code": 5.0}``; roles not listed are limited only by the
    total. Stored read-only, so the policy stays immutable (and hashable: roles are left out
    of the hash, which equality still compares)."""

    def __post_init__(self) -> None:
        _limit(self.max_cost_per_request, "budget.max_cost_per_request")
        _limit(self.max_cost_total, "budget.max_cost_total")
        if not isinstance(self.roles, Mapping):
            raise ConfigError(
                f"must be a table of role = limit, not {self.roles!r}",
                key="budget.roles",
                fix="write e.g. roles = { code = 5.0 }",
            )
        for role, value in self.roles.items():
            _limit(value, f"budget.roles.{role}")
        object.__setattr__(self, "roles", MappingProxyType(dict(self.roles)))


class Reservation:
    """A call's hold on the budget, from `Budget.reserve` until `settle` or `release`.

    Closing is once only: `settle` on a closed reservation raises `RuntimeError` (it would
    record a spend nothing reserved, or record one twice), while `release` on a closed one is
    a no-op, so ``finally: reservation.release()`` is always safe. As a context manager, the
    block's end releases a reservation that was not settled (exception or not).
    """

    __slots__ = ("_actual", "_budget", "_closed", "_nanos", "priced", "role")

    def __init__(self, budget: Budget, nanos: int, role: str | None, *, priced: bool) -> None:
        self._budget = budget
        self._nanos = nanos
        self._closed = False
        self._actual: int | None = None
        self.role = role
        """The role the call was made for, if any."""
        self.priced = priced
        """False when the call's price was unknown (nothing was reserved)."""

    @property
    def amount(self) -> float:
        """US dollars held (the worst case; 0 for an unpriced call)."""
        return _usd(self._nanos)

    @property
    def closed(self) -> bool:
        """Whether the reservation was settled or released."""
        return self._closed

    @property
    def actual(self) -> float | None:
        """US dollars recorded by `settle`; ``None`` until settled (or when released)."""
        return None if self._actual is None else _usd(self._actual)

    def settle(self, actual: float | None) -> float:
        """Free the hold and record what the call really cost; returns the recorded amount.

        ``actual=None`` means the cost is unknown (no usage came back): the whole reservation
        is recorded as spent, which can overstate but never understate spending.
        """
        nanos = self._nanos if actual is None else _to_nanos(actual, "actual cost")
        self._budget._close(self, nanos, settled=True)
        return _usd(nanos)

    def release(self) -> None:
        """Free the hold without spending: the call failed before costing anything."""
        self._budget._close(self, 0, settled=False)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"Reservation(amount={self.amount!r}, role={self.role!r}, {state})"


class Budget:
    """Reserve-then-settle accounting against a `BudgetPolicy`; thread-safe."""

    def __init__(self, policy: BudgetPolicy | None = None) -> None:
        self.policy = policy if policy is not None else BudgetPolicy()
        """The limits this budget enforces."""
        p = self.policy
        self._per_request = (
            None
            if p.max_cost_per_request is None
            else _to_nanos(p.max_cost_per_request, "max_cost_per_request")
        )
        self._total = (
            None if p.max_cost_total is None else _to_nanos(p.max_cost_total, "max_cost_total")
        )
        self._role_limits = {r: _to_nanos(v, f"roles.{r}") for r, v in p.roles.items()}
        self._lock = threading.Lock()
        self._spent = 0
        self._reserved = 0
        self._role_spent: defaultdict[str, int] = defaultdict(int)
        self._role_reserved: defaultdict[str, int] = defaultdict(int)
        self._calls = 0
        self._released = 0
        self._refused = 0
        self._unpriced = 0
        self._open = 0
        self._overruns = 0

    # -- reserving --------------------------------------------------------------------------

    def reserve(self, worst_case: float | None, *, role: str | None = None) -> Reservation:
        """Hold ``worst_case`` US dollars for one call, or raise `BudgetExceeded`.

        ``worst_case=None`` (unknown price) is allowed and holds nothing; see the module
        docstring. Raises `ValueError` for a negative or non-finite amount.
        """
        if worst_case is None:
            with self._lock:
                self._unpriced += 1
                self._open += 1
            return Reservation(self, 0, role, priced=False)
        nanos = _to_nanos(worst_case, "worst-case cost")
        with self._lock:
            refusal = self._refusal(nanos, role)
            if refusal is None:
                self._reserved += nanos
                if role is not None:
                    self._role_reserved[role] += nanos
                self._open += 1
            else:
                self._refused += 1
        if refusal is not None:
            raise self._error(nanos, *refusal)
        return Reservation(self, nanos, role, priced=True)

    def fits(self, worst_case: float | None, *, role: str | None = None) -> bool:
        """Whether `reserve` would accept ``worst_case`` now (it may not a moment later)."""
        if worst_case is None:
            return True
        nanos = _to_nanos(worst_case, "worst-case cost")
        with self._lock:
            return self._refusal(nanos, role) is None

    def _refusal(self, nanos: int, role: str | None) -> tuple[str, int, int] | None:
        """``(scope, limit, remaining)`` of the first limit ``nanos`` breaks. Lock held."""
        if self._per_request is not None and nanos > self._per_request:
            return _SCOPE_REQUEST, self._per_request, self._per_request
        if role is not None and role in self._role_limits:
            limit = self._role_limits[role]
            left = limit - self._role_spent[role] - self._role_reserved[role]
            if nanos > left:
                return _role_scope(role), limit, left
        if self._total is not None:
            left = self._total - self._spent - self._reserved
            if nanos > left:
                return _SCOPE_TOTAL, self._total, left
        return None

    def _error(self, nanos: int, scope: str, limit: int, left: int) -> BudgetExceeded:
        needed, remaining = _usd(nanos), _usd(left)
        if scope == _SCOPE_REQUEST:
            message = (
                f"budget exceeded (request): this call may cost up to ${needed:.6f}, over the "
                f"per-request limit of ${_usd(limit):.6f}; lower max_tokens or the prompt, "
                "or pick a cheaper model"
            )
        else:
            message = (
                f"budget exceeded ({scope}): this call may cost up to ${needed:.6f} but only "
                f"${remaining:.6f} of the ${_usd(limit):.6f} limit is left (spent and held "
                "by calls in flight); lower max_tokens or raise the limit"
            )
        return BudgetExceeded(message, scope=scope, needed=needed, remaining=remaining)

    def _close(self, reservation: Reservation, actual: int, *, settled: bool) -> None:
        with self._lock:
            if reservation._closed:
                already = True
            else:
                already = False
                reservation._closed = True
                role, held = reservation.role, reservation._nanos
                self._reserved -= held
                self._spent += actual
                if role is not None:
                    self._role_reserved[role] -= held
                    self._role_spent[role] += actual
                self._open -= 1
                if settled:
                    reservation._actual = actual
                    self._calls += 1
                    self._overruns += actual > held
                else:
                    self._released += 1
        if already and settled:
            raise RuntimeError(f"{reservation!r} was already settled or released")

    # -- reading ----------------------------------------------------------------------------

    def spent(self, role: str | None = None) -> float:
        """US dollars recorded as spent: in total, or by calls made for ``role``."""
        with self._lock:
            return _usd(self._spent if role is None else self._role_spent.get(role, 0))

    def reserved(self, role: str | None = None) -> float:
        """US dollars held by calls in flight: in total, or for ``role``."""
        with self._lock:
            return _usd(self._reserved if role is None else self._role_reserved.get(role, 0))

    def remaining(self, role: str | None = None) -> float | None:
        """The most one call could still reserve (``None``: unlimited).

        Without ``role``, what the total limit has left; with it, the smaller of that and
        the role's own limit. The per-request cap is a separate check, not counted here.
        Negative only after a call overran its reservation.
        """
        with self._lock:
            return self._remaining(role)

    def _remaining(self, role: str | None) -> float | None:
        lefts = []
        if self._total is not None:
            lefts.append(self._total - self._spent - self._reserved)
        if role is not None and role in self._role_limits:
            used = self._role_spent.get(role, 0) + self._role_reserved.get(role, 0)
            lefts.append(self._role_limits[role] - used)
        return _usd(min(lefts)) if lefts else None

    def snapshot(self) -> dict[str, Any]:
        """A consistent picture of the budget (one lock hold), for logs and dashboards."""
        with self._lock:
            roles = sorted(
                set(self._role_limits) | set(self._role_spent) | set(self._role_reserved)
            )
            return {
                "spent": _usd(self._spent),
                "reserved": _usd(self._reserved),
                "remaining": self._remaining(None),
                "limits": {
                    "per_request": self.policy.max_cost_per_request,
                    "total": self.policy.max_cost_total,
                    "roles": dict(self.policy.roles),
                },
                "roles": {
                    role: {
                        "spent": _usd(self._role_spent.get(role, 0)),
                        "reserved": _usd(self._role_reserved.get(role, 0)),
                        "remaining": self._remaining(role),
                        "limit": self.policy.roles.get(role),
                    }
                    for role in roles
                },
                "calls": self._calls,
                "released": self._released,
                "refused": self._refused,
                "unpriced_calls": self._unpriced,
                "open_reservations": self._open,
                "overruns": self._overruns,
            }

    def __repr__(self) -> str:
        return f"Budget(spent={self.spent()!r}, reserved={self.reserved()!r}, {self.policy!r})"
