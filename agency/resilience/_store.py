"""The fleet's Redis: `StatePolicy` (``[state]``) and `RedisState`, which runs the scripts.

Two ways to reach Redis, so that a call waits for one round trip at most:

- `RedisState.run`: an answer is needed now (a call's admission, a snapshot). The writes
  queued before it go in the same pipeline, ahead of it, so a process reads its own writes.
- `RedisState.later`: a write nobody waits for (a breaker's verdict, a limiter's refund, a
  budget's settlement, counters). A writer thread sends what is queued in one pipeline; a
  write that fails stays queued, in order, until the store answers again, so a hold on the
  budget is always given back. Queued writes are sent at exit too (`flush`).

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
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agency.errors import ConfigError, redact
from agency.resilience import _lua

__all__ = ["MAX_QUEUED_WRITES", "WRITE_LINGER_S", "RedisState", "StatePolicy", "StoreDown"]

log = logging.getLogger("agency.state")

MAX_QUEUED_WRITES = 100_000
"""Writes kept while the store is down; past this the oldest are dropped (with a warning)."""

WRITE_LINGER_S = 0.005
"""How long queued writes wait for a call's admission to carry them before the writer sends
them on its own."""

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
        self._wake = threading.Condition()
        self._io = threading.Lock()  # one pipeline at a time: writes keep their order
        self._writer: threading.Thread | None = None
        # redis.asyncio clients are bound to their event loop: one per loop.
        self._async_clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        _LIVE.add(self)

    def key(self, *parts: str) -> str:
        """A key under the fleet's prefix."""
        return ":".join((self.policy.prefix, *parts))

    @property
    def up(self) -> bool:
        """False while a recent failure keeps the store alone (see ``retry_s``)."""
        return time.monotonic() >= self._down_until

    # -- the two ways in ------------------------------------------------------------------
    def run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """One script's answer, after the queued writes (one round trip); `StoreDown` when
        the store does not answer (at once while it rests)."""
        if not self.up:
            raise StoreDown
        with self._io:
            batch = self._drain()
            batch.append((script, tuple(keys), tuple(args)))
            return self._send(batch)[-1]

    async def arun(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """`run` for async code, on a client of the running loop: awaited, so the loop goes
        on meanwhile. Queued writes are left to the writer thread (they may land after it)."""
        if not self.up:
            raise StoreDown
        if not self._shas:
            self._load()
        client = self._async_client()
        try:
            try:
                result = await client.evalsha(self._shas[script], len(keys), *keys, *args)
            except self._no_script:  # a restarted server: load the scripts again
                self._load()
                result = await client.evalsha(self._shas[script], len(keys), *keys, *args)
        except self._script_error:
            raise  # the script's own error: a bug to see, not a store that is down
        except self.errors as exc:
            self._failed(exc)
            raise StoreDown from exc
        self._answered()
        return result

    def _async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            from redis import asyncio as aioredis

            client = aioredis.Redis.from_url(
                self.policy.url,
                socket_timeout=self.policy.timeout_s,
                socket_connect_timeout=self.policy.timeout_s,
                health_check_interval=0,
            )
            self._async_clients[loop] = client
        return client

    def later(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Queue a write; the writer thread (or the next `run`) sends it."""
        with self._wake:
            self._queue.append((script, tuple(keys), tuple(args)))
            if len(self._queue) > MAX_QUEUED_WRITES:
                self._queue.popleft()
                self._dropped += 1
                if self._dropped == 1:
                    log.warning("state store: over %d writes queued, dropping the oldest",
                                MAX_QUEUED_WRITES)  # fmt: skip
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_forever, name="agency-state-writer", daemon=True
                )
                self._writer.start()
            if len(self._queue) == 1:  # the writer sleeps while the queue is empty
                self._wake.notify()

    def flush(self, timeout: float | None = None) -> bool:
        """Send every queued write now; False if the store did not take them all."""
        deadline = time.monotonic() + (self.policy.timeout_s * 4 if timeout is None else timeout)
        while self.pending and time.monotonic() < deadline:
            if not self.up:
                time.sleep(min(0.05, max(0.0, self._down_until - time.monotonic())))
                continue
            with self._io:
                try:
                    self._send(self._drain(), answer=False)
                except StoreDown:
                    continue
        return not self.pending

    @property
    def pending(self) -> int:
        """Writes queued and not yet sent."""
        with self._wake:
            return len(self._queue)

    # -- plumbing ---------------------------------------------------------------------------
    def _drain(self) -> list[_Command]:
        with self._wake:
            batch = list(self._queue)
            self._queue.clear()
        return batch

    def _requeue(self, batch: list[_Command]) -> None:
        with self._wake:
            self._queue.extendleft(reversed(batch))

    def _send(self, batch: list[_Command], *, answer: bool = True) -> list[Any]:
        """Run ``batch`` in one pipeline (the lock held). With ``answer`` the last command is
        the caller's: its result is returned, its error raised. A batch that does not get
        through goes back to the front of the queue (but the caller's command: `StoreDown`)."""
        try:
            results = self._pipeline(batch, answer) if batch else []
        except self.errors as exc:
            self._requeue(batch[:-1] if answer else batch)
            self._failed(exc)
            raise StoreDown from exc
        self._answered()
        writes = len(batch) - 1 if answer else len(batch)
        for command, result in zip(batch[:writes], results[:writes], strict=True):
            if isinstance(result, Exception):  # a bug in a script: say so, never retry it
                log.error("state store: %s failed: %s", command[0], result)
        if answer and isinstance(results[-1], Exception):
            raise results[-1]
        return results

    def _pipeline(self, batch: list[_Command], answer: bool) -> list[Any]:
        """The queued writes as one BATCH script, then the caller's command (if ``answer``):
        at most two commands a round trip. Results: one per command of ``batch``."""
        if not self._shas:
            self._load()
        writes = batch[:-1] if answer else batch
        keys: list[str] = []
        args: list[Any] = []
        for script, k, a in writes:
            keys += k
            args += (script, len(k), len(a), *a)
        if answer and batch[-1][0] == "ADMIT":
            # The admission runs the queued writes first, in the same script: one command.
            _, k, a = batch[-1]
            result = self._execute([("ADMIT", (*k, *keys), (*a, *args))])[0]
            return [result] * len(batch)
        commands: list[_Command] = [("BATCH", tuple(keys), tuple(args))] if writes else []
        if answer:
            commands.append(batch[-1])
        results = self._execute(commands)
        written = [results[0]] * len(writes) if writes else []
        return [*written, results[-1]] if answer else written

    def _execute(self, commands: list[_Command]) -> list[Any]:
        if len(commands) == 1:  # one command: no pipeline to build
            script, keys, args = commands[0]
            try:
                return [self.client.evalsha(self._shas[script], len(keys), *keys, *args)]
            except self._no_script:
                self._load()
                return self._execute(commands)
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

    def _load(self) -> None:
        self._shas = {name: self.client.script_load(getattr(_lua, name)) for name in _SCRIPTS}

    def _write_forever(self) -> None:
        while True:
            with self._wake:
                while not self._queue:
                    self._wake.wait()
            wait = self._down_until - time.monotonic()
            if wait > 0:
                time.sleep(wait)
                continue
            # Linger: a call starting now takes the queue along with its admission (one
            # round trip instead of two); only writes left behind by a quiet process wait.
            time.sleep(WRITE_LINGER_S)
            if not self.pending:
                continue
            with self._io, contextlib.suppress(StoreDown):
                self._send(self._drain(), answer=False)

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


@atexit.register
def _flush_at_exit() -> None:
    # Holds given back, verdicts and counters sent: a process that ends loses nothing queued.
    for store in list(_LIVE):
        store.flush()
