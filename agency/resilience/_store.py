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

Scripts go on the store's own connections (one for sync calls, a few per event loop), packed
by hiredis: no pool, no retry wrapper, about half of redis-py's own time per call.

When Redis does not answer within ``timeout_s``, a warning is logged once and the store is
left alone for ``retry_s``: `run` raises `StoreDown` at once meanwhile, and the caller falls
back as `StatePolicy` says. Scripts are loaded once and sent by SHA (``EVALSHA``); a Redis
that lost them (restarted) gets them again.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
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

__all__ = [
    "COUNTS_LINGER_S",
    "IDLE_CHECK_S",
    "LATE_ANSWER_S",
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

IDLE_CHECK_S = 1.0
"""A connection of ours unused this long is looked at (no round trip: is the socket closed?)
before a command goes on it, so a Redis restart or an idle timeout between two calls costs a
reconnect, not a failed admission. (Nothing is retried: a command whose answer is lost may
have run.)"""

LATE_ANSWER_S = 10.0
"""How long the answer of a command whose caller stopped waiting (cancelled, or past
``timeout_s``) is still awaited, off every caller's path: Redis may run it late, and what
an admission took then is given back (`RedisState.run`'s ``orphaned``)."""

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
        self._timeout = redis.exceptions.TimeoutError
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
        self._conn: Any = None  # our own connection for single commands (see _evalsha)
        # Answers _conn still owes, oldest first: commands whose caller stopped waiting
        # (past timeout_s), each with when it was sent and its ``orphaned`` (None: nobody's).
        # They are read, in order, before the next command's answer.
        self._owed: deque[tuple[float, Callable[[Any], None] | None]] = deque()
        self._own = client is None
        # redis.asyncio clients are bound to their event loop: one per loop.
        self._async_clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._finishing: set[asyncio.Future[None]] = set()  # answers read for cancelled callers
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
        fails gives them back, and so does a caller cancelled before the command left (once it
        has left, Redis runs it: queueing them again would count them twice). The answer of a
        command whose caller was cancelled after it left goes to ``orphaned`` (read off the
        caller's path), so what it took can be given back."""
        if not self.up:
            raise StoreDown
        if not self._shas:
            self._load()
        writes = self._drain() if script == "ADMIT" else []
        keys, args = self._carrying(keys, args, writes)
        sent: list[bool] = []
        try:
            try:
                result = await self._aevalsha(self._shas[script], keys, args, sent, orphaned)
            except self._no_script:  # a restarted server: load the scripts again
                self._load()
                sent.clear()
                result = await self._aevalsha(self._shas[script], keys, args, sent, orphaned)
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

    async def _aevalsha(
        self,
        sha: str,
        keys: Sequence[str],
        args: Sequence[Any],
        sent: list[bool],
        orphaned: Callable[[Any], None] | None = None,
    ) -> Any:
        """One script's answer on an idle connection of the running loop's (a new one when
        none is idle): as `_evalsha`, without the client's pool and retry wrapper. A
        connection is kept for the next call only after a whole answer. ``sent`` gets True
        once the command is in the socket's hands (sending it does not wait: a small command
        is written at once, so no cancel falls between writing it and noting it)."""
        client, idle = self._async_client()
        conn = idle.pop() if idle else client.connection_pool.make_connection()
        try:
            if _idle(conn):
                # (redis-py < 8 names it can_read_destructive)
                check = getattr(conn, "can_read", None) or conn.can_read_destructive
                try:  # closed by the server meanwhile (or stray bytes): start clean
                    if await check():
                        await conn.disconnect()
                except self.errors:
                    await conn.disconnect(nowait=True)
            packed = _command(conn, "EVALSHA", sha, len(keys), *keys, *args)
            # One deadline for both (the client has no socket timeout: redis-py would put
            # the send in a Task of its own, and each read under a timer of its own).
            async with asyncio.timeout(self.policy.timeout_s):
                await conn.send_packed_command(packed, check_health=False)
                sent.append(True)
                result = await conn.read_response(disconnect_on_error=False)
        except self._script_error:
            conn.agency_used = time.monotonic()
            idle.append(conn)  # an answer: the connection is fine
            raise
        except (asyncio.CancelledError, TimeoutError):  # the caller stopped waiting
            if sent:  # Redis runs it: its answer is read off the caller's path, conn kept
                finish = asyncio.ensure_future(self._answer_of(conn, idle, orphaned))
                self._finishing.add(finish)
                finish.add_done_callback(self._finishing.discard)
            else:
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
            raise
        except BaseException:  # a failure: whatever was half done goes with the connection
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            raise
        conn.agency_used = time.monotonic()
        idle.append(conn)
        return result

    async def _answer_of(
        self, conn: Any, idle: list[Any], orphaned: Callable[[Any], None] | None
    ) -> None:
        """Read the answer of a command whose caller stopped waiting (cancelled, or past
        ``timeout_s``) and hand it to ``orphaned``; the connection goes back to ``idle``
        after it (closed if the answer does not come within `LATE_ANSWER_S`: then nobody
        knows what the command took)."""
        try:
            async with asyncio.timeout(LATE_ANSWER_S):
                answer = await conn.read_response(disconnect_on_error=False)
        except self._script_error:
            answer = None  # an answer: the script failed, it took nothing
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            return
        conn.agency_used = time.monotonic()
        idle.append(conn)
        if orphaned is not None and answer is not None:
            _hand_over(orphaned, answer)

    def _async_client(self) -> tuple[Any, list[Any]]:
        """The running loop's client (redis.asyncio is bound to a loop) and its idle
        connections."""
        loop = asyncio.get_running_loop()
        mine = self._async_clients.get(loop)
        if mine is None:
            from redis import asyncio as aioredis

            client = aioredis.Redis.from_url(
                self.policy.url,
                socket_timeout=None,  # `_aevalsha` puts one deadline on send and answer
                socket_connect_timeout=self.policy.timeout_s,
                health_check_interval=0,
            )
            mine = self._async_clients[loop] = (client, [])
        return mine

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
                return [self._evalsha(self._shas[script], keys, args, orphaned)]
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

    def _evalsha(
        self,
        sha: str,
        keys: Sequence[str],
        args: Sequence[Any],
        orphaned: Callable[[Any], None] | None = None,
    ) -> Any:
        """One script's answer (the lock held). On a client we made, it goes on a connection
        of our own: no pool to take it from and give it back to, no retry wrapper (a failure
        is the store's, handled by the caller); that is half of redis-py's time for a call.
        An answer that does not come within ``timeout_s`` is owed: the connection is kept,
        and that answer is read before the next command's and handed to ``orphaned`` (see
        `run`), within `LATE_ANSWER_S`."""
        if not self._own:  # a client given to us (a test's fakeredis): its own way
            return self.client.evalsha(sha, len(keys), *keys, *args)
        if self._conn is None:
            self._conn = self.client.connection_pool.make_connection()
        conn, owed = self._conn, self._owed
        if owed and time.monotonic() - owed[0][0] > LATE_ANSWER_S:
            conn.disconnect()  # those answers are not coming: start clean
            owed.clear()
        sent = False
        try:
            if not owed and _idle(conn):
                try:  # closed by the server meanwhile (or stray bytes): start clean
                    if conn.can_read(timeout=0):
                        conn.disconnect()
                except self.errors:
                    conn.disconnect()
            packed = _command(conn, "EVALSHA", sha, len(keys), *keys, *args)
            conn.send_packed_command(packed, check_health=False)
            sent = True
            owed.append((time.monotonic(), orphaned))  # this one's, until it is read
            while len(owed) > 1:  # late answers of commands before this one come first
                try:
                    late = conn.read_response(disconnect_on_error=False)
                except self._script_error:
                    late = None  # (the script failed: it took nothing)
                _, given = owed.popleft()
                if given is not None and late is not None:
                    _hand_over(given, late)
            try:
                result = conn.read_response(disconnect_on_error=False)
            except self._script_error:
                owed.popleft()  # an answer: the connection is fine
                conn.agency_used = time.monotonic()
                raise
            owed.popleft()
        except self._script_error:
            raise
        except self._timeout:
            if not sent:  # half a command may have gone: start clean
                conn.disconnect()
                owed.clear()
            # Else Redis has the command and may still run it: the connection is kept, and
            # the answers it owes (this one's too) are read before the next command's.
            conn.agency_used = None
            raise
        except BaseException:
            conn.disconnect()  # whatever was half sent or half read goes with it
            conn.agency_used = None
            owed.clear()
            raise
        conn.agency_used = time.monotonic()
        return result

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


def _command(conn: Any, *args: Any) -> Any:
    """A command in Redis's protocol: by hiredis in one C call when it is installed (the
    ``redis`` extra brings it), else by the connection (redis-py encodes each argument in
    Python: ~1.5 µs each)."""
    if _hiredis_pack is not None:
        return [_hiredis_pack(args)]
    return conn.pack_command(*args)


_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - the redis extra installs it
    _hiredis_pack = None


def _idle(conn: Any) -> bool:
    """Whether ``conn`` answered before and has not been used for `IDLE_CHECK_S`."""
    used = getattr(conn, "agency_used", None)
    return used is not None and time.monotonic() - used > IDLE_CHECK_S


def _hand_over(orphaned: Callable[[Any], None], answer: Any) -> None:
    """The answer of a command nobody waited for, to its ``orphaned``: off every caller's
    path, so a failure is logged, never raised."""
    try:
        orphaned(answer)
    except Exception:
        log.exception("state store: giving back what an admission nobody waited for took")


_LIVE: weakref.WeakSet[RedisState] = weakref.WeakSet()


def flush_state(timeout: float | None = None) -> bool:
    """Send what every fleet store of this process has queued (holds given back, verdicts,
    counters) now; False if one did not take it all. Exit does it; a process that may be
    killed once its work is done (a Ray task's worker) calls it at the end of the work."""
    return all([store.flush(timeout) for store in list(_LIVE)])


atexit.register(flush_state)
