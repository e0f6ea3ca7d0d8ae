"""Provider state shared by many processes through Redis: breakers, limiters, budgets, stats.

A provider's rate limits and a team's budget belong to the account, not to a process. With
``[state] backend = "redis"`` every process of an `Agency` (gateway workers, notebook kernels,
batch workers on other machines) keeps its breakers, limiters, budget and counters in one
Redis, updated by atomic scripts (`agency.resilience._lua`) on Redis's clock:

- `SharedBreaker`: a provider opened by one process is skipped by all from their next call;
  one half-open probe at a time across the fleet.
- `SharedLimiter`: one RPM/TPM bucket per provider entry for the fleet, tightened by the
  rate-limit headers any process sees.
- `SharedBudget`: reserve-then-settle against fleet-wide totals; never overspent.
- `SharedStats`: the fleet's counters per provider, beside each process's own `Stats`.

Each is the in-process class with its state moved: same methods, same rules. When Redis does
not answer within ``timeout_s`` a warning is logged once, the store is left alone for
``retry_s`` (no call waits on it), and each kind of state does what `StatePolicy` says:
``"open"`` goes on with the process's own state (limiters and breakers by default: calls keep
flowing), ``"closed"`` refuses (budgets by default: money is never spent unaccounted). Holds
taken in Redis are given back there once it answers again. Only entry names and numbers are
stored; keys and prompts never reach Redis.

With ``backend = "memory"`` (the default) none of this is imported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agency.errors import BudgetExceeded
from agency.resilience._store import RedisState, StatePolicy, StoreDown
from agency.resilience.breaker import (
    COOLDOWN_GROWTH,
    FORCED_OPEN_S,
    BreakerPolicy,
    BreakerState,
    CircuitBreaker,
)
from agency.resilience.budget import Budget, BudgetPolicy, Reservation, _to_nanos, _usd
from agency.resilience.limits import (
    MAX_RETRY_AFTER_S,
    RateLimiter,
    RateLimitPolicy,
    parse_limit_headers,
)

__all__ = [
    "Fleet",
    "RedisState",
    "SharedBreaker",
    "SharedBudget",
    "SharedLimiter",
    "SharedStats",
    "StatePolicy",
    "StoreDown",
    "Verdict",
    "breaker_args",
]


# --------------------------------------------------------------------------- breakers
@functools.cache
def breaker_args(p: BreakerPolicy) -> str:
    """A breaker policy as the scripts take it: one argument, its numbers joined by ``|``."""
    numbers = (p.window, p.window_s, p.min_calls, p.failure_rate, p.consecutive_failures,
               p.cooldown_s, p.max_cooldown_s, p.half_open_probes, p.max_retry_after_s,
               COOLDOWN_GROWTH)  # fmt: skip
    return "|".join(repr(n) for n in numbers)


class SharedBreaker(CircuitBreaker):
    """A `CircuitBreaker` whose state is the fleet's (see the module docstring)."""

    __slots__ = ("_keys", "_store")

    def __init__(self, store: RedisState, policy: BreakerPolicy, *, name: str) -> None:
        super().__init__(policy, name=name)
        self._store = store
        self._keys = (store.key("breaker", name), store.key("breaker", name, "outcomes"))

    def _run(self, op: str, seconds: float = 0.0) -> list[Any]:
        args = (op, seconds, breaker_args(self.policy))
        return [_text(v) for v in self._store.run("BREAKER", self._keys, args)]

    def _closed_on_failure(self) -> bool:
        return self._store.policy.breakers_on_failure == "closed"

    @property
    def state(self) -> BreakerState:
        try:
            return self._run("read")[1]  # type: ignore[return-value]
        except StoreDown:
            return "open" if self._closed_on_failure() else super().state

    def allow(self) -> bool:
        try:
            return self._run("allow")[0] == "1"
        except StoreDown:
            return False if self._closed_on_failure() else super().allow()

    def retry_in(self) -> float:
        try:
            out = self._run("read")
        except StoreDown:
            return self._store.policy.retry_s if self._closed_on_failure() else super().retry_in()
        if out[1] == "half_open" and int(out[4]) >= self.policy.half_open_probes:
            return float(out[3])
        return float(out[2]) if out[1] == "open" else 0.0

    def snapshot(self) -> dict[str, Any]:
        try:
            out = self._run("read")
        except StoreDown:
            return {**super().snapshot(), "shared": False}
        return {
            "name": self.name,
            "state": out[1],
            "failures": int(out[8]),
            "successes": int(out[9]),
            "consecutive_failures": int(out[5]),
            "opened_ago_s": float(out[10]) if out[10] else None,
            "retry_in": float(out[2]) if out[1] == "open" else 0.0,
            "cooldown_s": float(out[3]),
            "probes_in_flight": int(out[4]),
            "trips": int(out[6]),
            "reason": out[7],
            "shared": True,
        }

    def record_success(self) -> None:
        self._report("success", super().record_success)

    def record_failure(self, retry_after: float | None = None) -> None:
        self._report(
            "failure",
            lambda: super(SharedBreaker, self).record_failure(retry_after),
            retry_after or 0.0,
        )

    def release(self) -> None:
        self._report("release", super().release)

    def open_for(self, seconds: float) -> None:
        self._report("open_for", lambda: super(SharedBreaker, self).open_for(seconds), seconds)

    def force(self, state: Literal["open", "closed"], seconds: float = FORCED_OPEN_S) -> None:
        self._report(
            f"force_{state}", lambda: super(SharedBreaker, self).force(state, seconds), seconds
        )
        self._store.flush()  # an operator's order is seen by the fleet at once

    def _report(self, op: str, local: Callable[[], None], seconds: float = 0.0) -> None:
        """A verdict nobody waits for: queued for the store; while it rests, the local state."""
        if self._store.up:
            self._store.later("BREAKER", self._keys, (op, seconds, breaker_args(self.policy)))
        else:
            local()


# --------------------------------------------------------------------------- limiters
class SharedLimiter(RateLimiter):
    """A `RateLimiter` whose buckets and server windows are the fleet's."""

    def __init__(self, store: RedisState, policy: RateLimitPolicy, *, name: str, **kw: Any) -> None:
        super().__init__(policy, name=name, **kw)
        self._store = store
        self._key = (store.key("limiter", name),)
        self._constrained = True  # another process may have learnt a limit: always ask

    def _run(self, op: str, tokens: float, *extra: Any) -> Any:
        args = (op, self.policy.rpm or 0, self.policy.tpm or 0, tokens, *extra)
        return self._store.run("LIMITER", self._key, args)

    def _take_or_wait(self, tokens: int) -> float:
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        try:
            return float(_text(self._run("take", tokens)))
        except StoreDown:
            if self._store.policy.limiters_on_failure == "closed":
                return self._store.policy.retry_s
            return super()._take_or_wait(tokens)

    def wait_time(self, tokens: int = 0) -> float:
        try:
            return float(_text(self._run("wait", tokens)))
        except StoreDown:
            if self._store.policy.limiters_on_failure == "closed":
                return self._store.policy.retry_s
            return super().wait_time(tokens)

    def _later(self, op: str, tokens: float, *extra: Any) -> None:
        args = (op, self.policy.rpm or 0, self.policy.tpm or 0, tokens, *extra)
        self._store.later("LIMITER", self._key, args)

    def settle(self, reserved_tokens: int, used_tokens: int) -> None:
        refund = reserved_tokens - used_tokens
        if refund == 0:
            return
        if self._store.up:
            self._later("settle", refund)
        else:
            super().settle(reserved_tokens, used_tokens)

    def block_for(self, seconds: float) -> None:
        if not seconds > 0:
            return
        if self._store.up:
            self._later("block", min(seconds, MAX_RETRY_AFTER_S))
        else:
            super().block_for(seconds)

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        if not headers:
            return
        retry_after, found = parse_limit_headers(headers, self._wall_clock())
        if not found and retry_after is None:
            return
        if not self._store.up:
            super().observe_headers(headers)
            return
        windows = [
            value
            for family, kind, remaining, limit, reset in found
            for value in (family, kind, remaining, -1 if limit is None else limit, reset)
        ]
        self._later("observe", 0, -1 if retry_after is None else retry_after, *windows)

    def snapshot(self) -> dict[str, Any]:
        try:
            out = [_text(v) for v in self._run("read", 0)]
        except StoreDown:
            return {**super().snapshot(), "shared": False}
        server = {}
        for item in out[3:]:
            family, kind, remaining, limit, reset_in = item.split("|")
            server[family] = {
                "kind": kind,
                "limit": None if float(limit) < 0 else float(limit),
                "remaining": float(remaining),
                "reset_in": float(reset_in),
            }
        return {
            "name": self.name,
            "rpm": self.policy.rpm,
            "tpm": self.policy.tpm,
            "requests_available": float(out[0]) if self.policy.rpm else None,
            "tokens_available": float(out[1]) if self.policy.tpm else None,
            "blocked_for": float(out[2]),
            "server": server,
            "shared": True,
        }


# --------------------------------------------------------------------------- budgets
class _SharedReservation(Reservation):
    """A hold taken in the store (given back there, even after an outage)."""

    __slots__ = ()


class SharedBudget(Budget):
    """A `Budget` whose spending and holds are the fleet's; the per-request cap is checked
    locally (it needs no shared state)."""

    def __init__(
        self, store: RedisState, policy: BudgetPolicy | None = None, *, name: str = "budget"
    ) -> None:
        super().__init__(policy)
        self._store = store
        self._key = (store.key(name),)

    def seed(self, spent_usd: float) -> None:
        """Count ``spent_usd`` as spent before, unless the fleet already keeps this budget's
        spending (the first process to see it seeds it; later ones leave it)."""
        self._store.run("BUDGET", self._key, ("seed", 0, "", -1, -1, _to_nanos(spent_usd, "spent")))

    def _limits(self, role: str | None) -> tuple[str, int, int]:
        role_limit = self._role_limits.get(role, -1) if role is not None else -1
        return role or "", role_limit, -1 if self._total is None else self._total

    def reserve(self, worst_case: float | None, *, role: str | None = None) -> Reservation:
        if worst_case is None:
            return super().reserve(None, role=role)
        nanos = _to_nanos(worst_case, "worst-case cost")
        if self._per_request is not None and nanos > self._per_request:
            return super().reserve(worst_case, role=role)  # refused locally, as before
        try:
            refusal = self._store.run("BUDGET", self._key, ("reserve", nanos, *self._limits(role)))
        except StoreDown:
            if self._store.policy.budgets_on_failure == "open":
                return super().reserve(worst_case, role=role)
            with self._lock:
                self._refused += 1
            raise BudgetExceeded(
                "budget exceeded (store): the shared budget's store is unreachable, and "
                '[state] budgets_on_failure = "closed" refuses priced calls until it answers',
                scope="store",
                needed=_usd(nanos),
                remaining=0.0,
            ) from None
        if refusal:
            scope, limit, left = (_text(v) for v in refusal)
            with self._lock:
                self._refused += 1
            raise self._error(nanos, scope, int(limit), int(left))
        return self._held(nanos, role)

    def _held(self, nanos: int, role: str | None) -> Reservation:
        """The reservation of a hold the store has taken."""
        reservation = _SharedReservation(self, nanos, role, priced=True)
        with self._lock:
            self._open += 1
        return reservation

    def _close(self, reservation: Reservation, actual: int, *, settled: bool) -> None:
        if not isinstance(reservation, _SharedReservation):
            super()._close(reservation, actual, settled=settled)
            return
        with self._lock:
            if reservation._closed:
                if settled:
                    raise RuntimeError(f"{reservation!r} was already settled or released")
                return
            reservation._closed = True
            self._open -= 1
            if settled:
                reservation._actual = actual
                self._calls += 1
                self._overruns += actual > reservation._nanos
            else:
                self._released += 1
        # Queued, never dropped: the hold is given back in the store even after an outage.
        args = ("close", reservation._nanos, *self._limits(reservation.role), actual)
        self._store.later("BUDGET", self._key, args)

    def _fleet(self) -> dict[str, int]:
        raw = self._store.run("BUDGET", self._key, ("read", 0, "", -1, -1))
        return {_text(raw[i]): int(raw[i + 1]) for i in range(0, len(raw), 2)}

    def spent(self, role: str | None = None) -> float:
        try:
            return _usd(self._fleet().get("spent" if role is None else f"spent:{role}", 0))
        except StoreDown:
            return super().spent(role)

    def reserved(self, role: str | None = None) -> float:
        try:
            return _usd(self._fleet().get("reserved" if role is None else f"reserved:{role}", 0))
        except StoreDown:
            return super().reserved(role)

    def remaining(self, role: str | None = None) -> float | None:
        try:
            fleet = self._fleet()
        except StoreDown:
            return super().remaining(role)
        lefts = []
        if self._total is not None:
            lefts.append(self._total - fleet.get("spent", 0) - fleet.get("reserved", 0))
        if role is not None and role in self._role_limits:
            used = fleet.get(f"spent:{role}", 0) + fleet.get(f"reserved:{role}", 0)
            lefts.append(self._role_limits[role] - used)
        return _usd(min(lefts)) if lefts else None

    def snapshot(self) -> dict[str, Any]:
        local = super().snapshot()
        try:
            fleet = self._fleet()
        except StoreDown:
            return {**local, "shared": False}
        roles = {k.partition(":")[2] for k in fleet if ":" in k}
        return {
            **local,
            "spent": _usd(fleet.get("spent", 0)),
            "reserved": _usd(fleet.get("reserved", 0)),
            "remaining": self.remaining(),
            "roles": {
                r: {
                    "spent": _usd(fleet.get(f"spent:{r}", 0)),
                    "reserved": _usd(fleet.get(f"reserved:{r}", 0)),
                    "remaining": self.remaining(r),
                    "limit": self.policy.roles.get(r),
                }
                for r in sorted(roles)
            },
            "fleet_refused": fleet.get("refused", 0),
            "fleet_open_reservations": fleet.get("open", 0),
            "shared": True,
        }


# --------------------------------------------------------------------------- admission
@dataclass(frozen=True)
class Verdict:
    """What the fleet says about one attempt (see `Fleet.admit`)."""

    kind: Literal["ok", "breaker", "limiter", "budget"]
    """``ok``: go; otherwise who said no."""
    wait: float = 0.0
    """``breaker``: seconds until a probe may go; ``limiter``: seconds until there is room."""
    reservation: Reservation | None = None
    """``ok`` with a budget: the hold on it (settle or release it after the call)."""
    error: BudgetExceeded | None = None
    """``budget``: the refusal, as `Budget.reserve` raises it."""


class Fleet:
    """One provider entry's admission for a fleet: its breaker lets the call through, its
    limiter has room and the budget holds the worst case, checked and taken in one round
    trip (all three or none). After the call, the objects' own methods queue the rest."""

    def __init__(self, breaker: SharedBreaker, limiter: SharedLimiter) -> None:
        self.breaker, self.limiter = breaker, limiter
        self._store = breaker._store

    def admit(
        self, tokens: int, worst_case: float | None, role: str | None, budget: Budget | None
    ) -> Verdict | None:
        """The verdict; ``None`` when the store does not answer (then the breaker, limiter and
        budget decide one by one, each as ``[state]`` says for a store that is down)."""
        ask = self._ask(tokens, worst_case, role, budget)
        if not isinstance(ask, tuple):
            return ask
        keys, args, nanos = ask
        orphaned = self._orphaned(tokens, nanos, role, budget)
        try:
            out = self._store.run("ADMIT", keys, args, orphaned=orphaned)
        except StoreDown:
            return None
        return self._verdict(out, nanos, role, budget)

    async def aadmit(
        self, tokens: int, worst_case: float | None, role: str | None, budget: Budget | None
    ) -> Verdict | None:
        """The async twin of `admit`: the round trip is awaited, the event loop goes on."""
        ask = self._ask(tokens, worst_case, role, budget)
        if not isinstance(ask, tuple):
            return ask
        keys, args, nanos = ask
        orphaned = self._orphaned(tokens, nanos, role, budget)
        try:
            out = await self._store.arun("ADMIT", keys, args, orphaned=orphaned)
        except StoreDown:
            return None
        return self._verdict(out, nanos, role, budget)

    def _orphaned(
        self, tokens: int, nanos: int, role: str | None, budget: Budget | None
    ) -> Callable[[Any], None]:
        """What to do with the answer of an admission nobody waited for (its caller was
        cancelled, or gave up after ``timeout_s``, and Redis ran it all the same): nothing
        was sent upstream, so what it took is given back."""

        def orphaned(raw: Any) -> None:
            verdict = self._verdict(raw, nanos, role, budget)
            if verdict.kind != "ok":
                return
            # Queued for Redis even while the store rests (after a timeout it does): what
            # the script took is in Redis, so that is where it goes back.
            if _text(raw[1]) == "half_open":
                args = ("release", 0.0, breaker_args(self.breaker.policy))
                self._store.later("BREAKER", self.breaker._keys, args)
            if tokens:
                self.limiter._later("settle", tokens)
            if verdict.reservation is not None:
                verdict.reservation.release()  # (queued in any case)

        return orphaned

    def _ask(
        self, tokens: int, worst_case: float | None, role: str | None, budget: Budget | None
    ) -> Verdict | tuple[tuple[str, ...], tuple[Any, ...], int] | None:
        """The script's keys, arguments and the nanodollars held; or the verdict without one
        (over the per-request cap; ``None`` for a process-local budget)."""
        nanos, limits, key = -1, ("", -1, -1), self._store.key("budget")
        if isinstance(budget, SharedBudget) and worst_case is not None:
            nanos = _to_nanos(worst_case, "worst-case cost")
            if budget._per_request is not None and nanos > budget._per_request:
                try:
                    budget.reserve(worst_case, role=role)  # refused locally, no round trip
                except BudgetExceeded as exc:
                    return Verdict("budget", error=exc)
            limits = budget._limits(role)
        elif budget is not None and not isinstance(budget, SharedBudget):
            return None  # a process-local budget: the per-object path
        keys = (*self.breaker._keys, *self.limiter._key, key)
        p = self.limiter.policy
        args = (breaker_args(self.breaker.policy), p.rpm or 0, p.tpm or 0, tokens, nanos, *limits)
        return keys, args, nanos

    def _verdict(self, raw: Any, nanos: int, role: str | None, budget: Budget | None) -> Verdict:
        out = [_text(v) for v in raw]
        if out[0] == "breaker":
            return Verdict("breaker", wait=float(out[1]))
        if out[0] == "limiter":
            return Verdict("limiter", wait=float(out[1]))
        assert budget is None or isinstance(budget, SharedBudget)
        if out[0] == "budget":
            assert budget is not None
            with budget._lock:
                budget._refused += 1
            return Verdict("budget", error=budget._error(nanos, out[1], int(out[2]), int(out[3])))
        if budget is None:
            return Verdict("ok")
        if nanos < 0:  # unpriced: nothing to hold, counted where Budget counts it
            return Verdict("ok", reservation=budget.reserve(None, role=role))
        return Verdict("ok", reservation=budget._held(nanos, role))


# --------------------------------------------------------------------------- stats
class SharedStats:
    """The fleet's counters per provider (calls, failures, tokens, cost): each process adds
    its own, sent about once a second (`COUNTS_LINGER_S`); `snapshot` reads the fleet's."""

    FIELDS = ("calls", "ok", "failed", "input_tokens", "output_tokens", "cost_nanos")

    def __init__(self, store: RedisState) -> None:
        self._store = store

    def record(
        self, provider: str, *, ok: bool, usage: Mapping[str, Any] | None, cost: float | None
    ) -> None:
        """Count one attempt against ``provider`` (queued: nobody waits for it)."""
        usage = usage or {}
        counts = {
            "calls": 1,
            "ok" if ok else "failed": 1,
            "input_tokens": int(usage.get("input_tokens") or 0),
            "output_tokens": int(usage.get("output_tokens") or 0),
            "cost_nanos": round((cost or 0.0) * 1e9),
        }
        self._store.count(self._store.key("stats", provider), counts)

    def snapshot(self, providers: Sequence[str]) -> dict[str, dict[str, float]]:
        """``{provider: {field: value}}`` for the fleet; ``{}`` while the store is down."""
        if not self._store.up or not self._store.flush():
            return {}
        out: dict[str, dict[str, float]] = {}
        try:
            pipe = self._store.client.pipeline(transaction=False)
            for name in providers:
                pipe.hgetall(self._store.key("stats", name))
            rows = pipe.execute()
        except self._store.errors:
            return {}
        for name, row in zip(providers, rows, strict=True):
            values = {_text(k): int(v) for k, v in row.items()}
            out[name] = {f: values.get(f, 0) for f in self.FIELDS}
            out[name]["cost"] = out[name].pop("cost_nanos") / 1e9
        return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
