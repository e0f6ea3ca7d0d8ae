"""The fleet's Redis: `StatePolicy` (``[state]``) and `RedisState`, which runs the scripts.

Two ways to reach Redis, so that a call waits for one round trip at most:

- `RedisState.run` / `arun`: an answer is needed now (a call's admission, a snapshot). An
  admission carries the writes queued before it, run first in the same script, so a process
  reads its own writes.
- `RedisState.later`: a write nobody waits for (a breaker's verdict, a limiter's refund, a
  budget's settlement); `RedisState.count`: counters, summed in the process and sent about
  once a second. What no admission takes along, a writer thread sends; a write that fails
  stays queued, in order, until the store answers again, so a hold on the budget is always
  given back. Everything queued is sent at exit too (`flush_state`).

Writes go in numbered groups, and Redis notes each group's number as it runs it
(`_lua.ONCE_BUCKET`): a group sent again because its answer did not come in time (Redis may
have run it all the same) runs at most once, so a settlement never counts twice.

Scripts go on the store's own connections (`_conns`: one for sync calls, a few per event
loop), packed by hiredis: no pool, no retry wrapper, about half of redis-py's own time per
call.

When Redis does not answer within ``timeout_s``, a warning is logged once and the store is
left alone for ``retry_s``: `run` raises `StoreDown` at once meanwhile, and the caller falls
back as `StatePolicy` says. Scripts are loaded once and sent by SHA (``EVALSHA``); a Redis
that lost them (restarted) gets them again.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from agency.errors import ConfigError, redact
from agency.resilience import _lua
from agency.resilience._conns import Connections

__all__ = [
    "COUNTS_LINGER_S",
    "MAX_QUEUED_WRITES",
    "QUIET_S",
    "WRITE_LINGER_S",
    "RedisState",
    "StatePolicy",
    "StoreDown",
    "flush_state",
]

log = logging.getLogger("agency.state")

MAX_QUEUED_WRITES = 100_000
"""Writes kept while the store is down; past this the oldest are dropped (with a warning)."""

WRITE_LINGER_S = 0.005
"""How long queued writes wait for a call's admission to carry them before the writer sends
them on its own."""

QUIET_S = 1.0
"""With nothing queued and no write for this long, the writer stops looking every linger and
sleeps until a write wakes it (an idle process costs nothing)."""

COUNTS_LINGER_S = 1.0
"""How long counters (`RedisState.count`) add up in the process before they are sent: one
write a second instead of one a call; `flush` (and so a fleet snapshot) sends them at once."""

_SCRIPTS = ("ADMIT", "BATCH", "BREAKER", "BUDGET", "LIMITER", "STATS")

OnFailure = Literal["open", "closed"]


@dataclass(frozen=True)
class StatePolicy:
    """Where provider state lives (``[state]``) and what happens when that store fails."""

    backend: Literal["memory", "redis"] = "memory"
    """``"memory"``: each process on its own (the default); ``"redis"``: the fleet shares it."""
    url: str = "redis://127.0.0.1:6379/0"
    """The Redis to share (``redis://[:password@]host:port/db``, ``rediss://`` for TLS)."""
    prefix: str = "agency"
    """Key prefix: fleets with different prefixes share a Redis without seeing each other."""
    timeout_s: float = 0.25
    """Longest a call waits for Redis (connect or answer) before going on without it."""
    retry_s: float = 1.0
    """After a failure, how long the store is left alone before it is tried again."""
    breakers_on_failure: OnFailure = "open"
    """Store down: ``"open"`` uses the process's own breakers; ``"closed"`` skips providers."""
    limiters_on_failure: OnFailure = "open"
    """Store down: ``"open"`` uses the process's own limiters; ``"closed"`` admits nothing."""
    budgets_on_failure: OnFailure = "closed"
    """Store down: ``"closed"`` refuses priced calls (`BudgetExceeded`, scope ``"store"``);
    ``"open"`` counts against the process's own budget."""

    def __post_init__(self) -> None:
        if self.backend not in ("memory", "redis"):
            raise ConfigError(
                f"unknown state backend {self.backend!r}",
                key="state.backend",
                fix='write backend = "memory" or backend = "redis"',
            )
        for name in ("timeout_s", "retry_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"must be > 0, got {getattr(self, name)!r}", key=f"state.{name}")


class StoreDown(Exception):
    """Redis did not answer (internal: the shared classes turn it into their fallback)."""


_Command = tuple[str, tuple[str, ...], tuple[Any, ...]]
_Group = tuple[int, list[_Command]]  # queued writes under one number: run once, in order


class RedisState:
    """One Redis for a fleet: its scripts, its health, its queue of writes.

    ``client`` is a ``redis.Redis`` (a test passes fakeredis); by default one is made from
    ``policy.url`` with ``policy.timeout_s`` on connect and on every answer.
    """

    def __init__(self, policy: StatePolicy, *, client: Any = None) -> None:
        import redis

        self.policy = policy
        self.errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._no_script = redis.exceptions.NoScriptError
        self._script_error = redis.exceptions.ResponseError
        self.client = client or redis.Redis.from_url(
            policy.url,
            socket_timeout=policy.timeout_s,
            socket_connect_timeout=policy.timeout_s,
            health_check_interval=0,
        )
        self._shas: dict[str, str] = {}
        self._down_until = 0.0
        self._warned = False
        self._dropped = 0
        self._queue: deque[_Command] = deque()
        self._again: deque[_Group] = deque()  # groups whose send failed: first, same number
        self._groups = 0  # the last group's number
        # Where Redis notes the groups it ran (this store's own: numbers are per store).
        self._once = self.key("once", secrets.token_hex(6))
        self._counts: dict[str, dict[str, int]] = {}
        self._counted_at = 0.0
        self._lock = threading.Lock()  # the queue and the counters
        self._wake = threading.Condition(self._lock)  # the writer waits on it
        self._io = threading.Lock()  # one pipeline at a time: writes keep their order
        self._writer: threading.Thread | None = None
        self._asleep = False  # the writer waits to be woken (see QUIET_S)
        self._last_write = 0.0  # when `later` or `count` was last called
        self._queued_at = 0.0  # when the oldest queued write came
        self._conns = Connections(policy, self.client, own=client is None)
        _LIVE.add(self)

    def key(self, *parts: str) -> str:
        """A key under the fleet's prefix."""
        return ":".join((self.policy.prefix, *parts))

    @property
    def up(self) -> bool:
        """False while a recent failure keeps the store alone (see ``retry_s``)."""
        return time.monotonic() >= self._down_until

    # -- the two ways in ------------------------------------------------------------------
    def run(
        self,
        script: str,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        orphaned: Callable[[Any], None] | None = None,
    ) -> Any:
        """One script's answer, after the queued writes (one round trip); `StoreDown` when
        the store does not answer (at once while it rests). If the answer comes after
        ``timeout_s``, Redis may have run the command all the same: its answer is read later
        (before the next command's) and goes to ``orphaned``, so what it took can be given
        back."""
        if not self.up:
            raise StoreDown
        with self._io:
            return self._send(self._drain(), (script, tuple(keys), tuple(args)), orphaned)

    async def arun(
        self,
        script: str,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        orphaned: Callable[[Any], None] | None = None,
    ) -> Any:
        """`run` for async code, on a connection of the running loop's: awaited, so the loop
        goes on meanwhile. An admission carries the queued writes as in `run`; a command that
        fails gives them back (Redis runs a group once), and so does a caller cancelled before
        the command left (once it has left, Redis runs it). The answer of a command whose
        caller was cancelled after it left, or that came after ``timeout_s``, goes to
        ``orphaned`` (read off the caller's path), so what it took can be given back."""
        if not self.up:
            raise StoreDown
        if not self._shas:
            self._load()
        writes = self._drain() if script == "ADMIT" else []
        keys, args = self._carrying(keys, args, writes)
        sent: list[bool] = []
        try:
            try:
                result = await self._conns.aevalsha(self._shas[script], keys, args, sent, orphaned)
            except self._no_script:  # a restarted server: load the scripts again
                self._load()
                sent.clear()
                result = await self._conns.aevalsha(self._shas[script], keys, args, sent, orphaned)
        except self._script_error:
            raise  # the script's own error: a bug to see, not a store that is down
        except self.errors as exc:
            self._requeue(writes)  # (a timeout included: Redis runs a group once)
            self._failed(exc)
            raise StoreDown from exc
        except BaseException:  # cancelled
            if not sent:
                self._requeue(writes)
            raise
        self._answered()
        return result

    def later(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Queue a write; the writer thread (or the next `run`) sends it."""
        with self._lock:
            if not self._queue:
                self._queued_at = time.monotonic()
            self._queue.append((script, tuple(keys), tuple(args)))
            if len(self._queue) > MAX_QUEUED_WRITES:
                self._queue.popleft()
                self._dropped += 1
                if self._dropped == 1:
                    log.warning("state store: over %d writes queued, dropping the oldest",
                                MAX_QUEUED_WRITES)  # fmt: skip
            self._woken()

    def count(self, key: str, increments: dict[str, int]) -> None:
        """Add to the counters of hash ``key``; sent within `COUNTS_LINGER_S` as one write."""
        with self._lock:
            first = not self._counts
            counts = self._counts.setdefault(key, {})
            for field, n in increments.items():
                counts[field] = counts.get(field, 0) + n
            if first:  # the first since the last send: they wait COUNTS_LINGER_S from here
                self._counted_at = time.monotonic()
            self._woken()

    def flush(self, timeout: float | None = None) -> bool:
        """Send every queued write now, and wait for any in flight (the writer's); False if
        the store did not take them all."""
        deadline = time.monotonic() + (self.policy.timeout_s * 4 if timeout is None else timeout)
        while True:
            with self._io:  # taken once at least: a send in flight ends first
                if not self.pending:
                    return True
                if self.up and time.monotonic() < deadline:
                    with contextlib.suppress(StoreDown):
                        self._send(self._drain(counts=True))
                    continue
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.05, max(0.0, self._down_until - time.monotonic())))

    @property
    def pending(self) -> int:
        """Writes queued and not yet sent."""
        with self._lock:
            again = sum(len(writes) for _, writes in self._again)
            return len(self._queue) + len(self._counts) + again

    # -- plumbing ---------------------------------------------------------------------------
    def _woken(self) -> None:
        """A write came (the lock held): the writer starts, or wakes if it sleeps. A busy
        process's writer is awake: a write then costs no thread switch (~20 µs here)."""
        self._last_write = time.monotonic()
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._write_forever, name="agency-state-writer", daemon=True
            )
            self._writer.start()
        elif self._asleep:
            self._asleep = False
            self._wake.notify()

    def _drain(self, *, counts: bool = False) -> list[_Group]:
        """The groups sent before that did not get through, then the queued writes as a new
        group, with the counters when ``counts`` or when they have waited `COUNTS_LINGER_S`
        (counters add up: their order does not matter)."""
        with self._lock:
            groups = list(self._again)
            self._again.clear()
            fresh = list(self._queue)
            self._queue.clear()
            if self._counts and (counts or self._counts_due() <= 0):
                for key, fields in self._counts.items():
                    args = tuple(x for field, n in fields.items() if n for x in (field, n))
                    fresh.append(("STATS", (key,), args))
                self._counts.clear()
            if fresh:
                self._groups += 1
                groups.append((self._groups, fresh))
        return groups

    def _counts_due(self) -> float:
        return self._counted_at + COUNTS_LINGER_S - time.monotonic()

    def _requeue(self, groups: list[_Group]) -> None:
        """``groups`` go first next time, under the same numbers (Redis may have run them)."""
        with self._lock:
            self._again.extendleft(reversed(groups))

    def _send(
        self,
        groups: list[_Group],
        command: _Command | None = None,
        orphaned: Callable[[Any], None] | None = None,
    ) -> Any:
        """Run the queued ``groups``, then ``command`` (the caller's), in one round trip (the
        lock held): the command's answer is returned, its error raised. Groups that do not get
        through go back to the front of the queue (the caller's command: `StoreDown`)."""
        if not groups and command is None:
            return None
        try:
            written, result = self._pipeline(groups, command, orphaned)
        except self.errors as exc:
            self._requeue(groups)
            self._failed(exc)
            raise StoreDown from exc
        self._answered()
        if isinstance(written, Exception):  # a bug in a script: say so, never retry it
            log.error("state store: queued writes failed: %s", written)
        if isinstance(result, Exception):
            raise result
        return result

    def _pipeline(
        self,
        groups: list[_Group],
        command: _Command | None,
        orphaned: Callable[[Any], None] | None = None,
    ) -> tuple[Any, Any]:
        """The queued writes as one BATCH script, then ``command``: at most two commands a
        round trip. Results: the writes' (None without any) and the command's. (``orphaned``:
        see `run`; an admission's alone, which goes as one command.)"""
        if not self._shas:
            self._load()
        if command is not None and command[0] == "ADMIT":
            # The admission runs the queued writes first, in the same script: one command.
            keys, args = self._carrying(command[1], command[2], groups)
            result = self._execute([("ADMIT", keys, args)], orphaned)[0]
            return (result if groups else None), result
        commands: list[_Command] = []
        if groups:
            touched: list[str] = []
            packed = self._pack(groups, touched)
            commands.append(("BATCH", tuple(touched), (packed,)))
        if command is not None:
            commands.append(command)
        results = self._execute(commands)
        return (results[0] if groups else None), (results[-1] if command else None)

    def _execute(
        self, commands: list[_Command], orphaned: Callable[[Any], None] | None = None
    ) -> list[Any]:
        if len(commands) == 1:  # one command: no pipeline to build
            script, keys, args = commands[0]
            try:
                return [self._conns.evalsha(self._shas[script], keys, args, orphaned)]
            except self._no_script:
                self._load()
                return self._execute(commands, orphaned)
            except self._script_error as exc:  # the script's own error, not the store's
                return [exc]
        pipe = self.client.pipeline(transaction=False)
        for script, keys, args in commands:
            pipe.evalsha(self._shas[script], len(keys), *keys, *args)
        results: list[Any] = pipe.execute(raise_on_error=False)
        if any(isinstance(r, self._no_script) for r in results):
            # The server lost its scripts (a restart): load them and run again. A script that
            # is missing did not run, and the server lost them all, so none of these ran.
            self._load()
            return self._execute(commands)
        return results

    def _carrying(
        self, keys: Sequence[str], args: Sequence[Any], groups: list[_Group]
    ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        """An admission's keys and arguments with ``groups`` carried along (run first by the
        script, see `_lua.ADMIT`)."""
        if not groups:
            return tuple(keys), tuple(args)
        every = list(keys)
        packed = self._pack(groups, every)
        return tuple(every), (*args, packed)

    def _pack(self, groups: list[_Group], keys: list[str]) -> bytes:
        """``groups`` as the scripts' one JSON argument (see `_lua`'s ``writes``): each
        ``[number, notes key, writes]``, each write ``[script, key indexes, arguments]``, keys
        added to ``keys`` once (the indexes are Lua's, from 1). One argument instead of a few
        per write: Redis and the client encode one string."""
        index = {key: i for i, key in enumerate(keys, 1)}

        def at(key: str) -> int:
            i = index.get(key)
            if i is None:
                keys.append(key)
                i = index[key] = len(keys)
            return i

        packed = [
            (
                number,
                at(f"{self._once}:{number // _lua.ONCE_BUCKET}"),
                [(script, [at(key) for key in k], a) for script, k, a in writes],
            )
            for number, writes in groups
        ]
        return orjson.dumps(packed)

    def _forked(self) -> None:
        """In a forked child: start afresh. Its own connections (the parent's sockets are the
        parent's), its own notes (group numbers are per process), new locks and no writer
        (threads do not survive a fork); what the parent had queued is the parent's to send."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._io = threading.Lock()
        self._writer, self._asleep = None, False
        self._queue.clear()
        self._again.clear()
        self._counts.clear()
        self._once = self.key("once", secrets.token_hex(6))
        self._groups = 0  # (numbered from 1 in the new notes: the first sets their expiry)
        self._conns = Connections(self.policy, self.client, own=self._conns.own)

    def _load(self) -> None:
        self._shas = {name: self.client.script_load(getattr(_lua, name)) for name in _SCRIPTS}

    def _write_forever(self) -> None:
        while True:
            with self._wake:
                while (
                    not self._queue
                    and not self._again
                    and not self._counts
                    and time.monotonic() - self._last_write > QUIET_S
                ):
                    self._asleep = True
                    self._wake.wait()
            wait = self._down_until - time.monotonic()
            if wait > 0:
                time.sleep(wait)
                continue
            # Linger: a call starting now takes the queue along with its admission (one
            # round trip instead of two); only writes left behind by a quiet process wait.
            # Writes younger than a linger are left for the next call too: sending them
            # here would hold the lock the next admission needs for a round trip.
            time.sleep(WRITE_LINGER_S)
            with self._lock:
                if self._queue and time.monotonic() - self._queued_at < WRITE_LINGER_S:
                    continue
            with self._io, contextlib.suppress(StoreDown):
                self._send(self._drain())  # (counters only once they are due)

    def _answered(self) -> None:
        if self._warned:
            self._warned = False
            log.warning("state store %s answers again", redact(self.policy.url))

    def _failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self.policy.retry_s
        if not self._warned:
            self._warned = True
            p = self.policy
            log.warning(
                "state store %s unreachable (%s); going on with local state (breakers %s, "
                "limiters %s, budgets %s); retrying every %gs",
                redact(p.url), type(exc).__name__, p.breakers_on_failure,
                p.limiters_on_failure, p.budgets_on_failure, p.retry_s,
            )  # fmt: skip


_LIVE: weakref.WeakSet[RedisState] = weakref.WeakSet()


def flush_state(timeout: float | None = None) -> bool:
    """Send what every fleet store of this process has queued (holds given back, verdicts,
    counters) now; False if one did not take it all. Exit does it; a process that may be
    killed once its work is done (a Ray task's worker) calls it at the end of the work."""
    return all([store.flush(timeout) for store in list(_LIVE)])


def _forked() -> None:
    for store in list(_LIVE):
        store._forked()


atexit.register(flush_state)
os.register_at_fork(after_in_child=_forked)
