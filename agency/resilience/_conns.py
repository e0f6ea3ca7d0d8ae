"""Our own connections to one Redis (`Connections`): one for sync commands, a few per event
loop for async ones, and the answers a connection still owes.

No pool to take a connection from and give it back to, no retry wrapper (a failure is the
store's, handled by `agency.resilience._store`): about half of redis-py's own time a call.
Commands are packed by hiredis. A command whose caller stopped waiting (past ``timeout_s``,
or an async caller cancelled) may still run in Redis: its connection is kept and its answer
read later (sync: before the next command's; async: off the caller's path), within
`LATE_ANSWER_S`, and handed to the caller's ``orphaned``, so what it took can be given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agency.resilience._store import StatePolicy

__all__ = ["IDLE_CHECK_S", "LATE_ANSWER_S", "Connections"]

log = logging.getLogger("agency.state")

IDLE_CHECK_S = 1.0
"""A connection of ours unused this long is looked at (no round trip: is the socket closed?)
before a command goes on it, so a Redis restart or an idle timeout between two calls costs a
reconnect, not a failed admission. (Nothing is retried: a command whose answer is lost may
have run.)"""

LATE_ANSWER_S = 10.0
"""How long the answer of a command whose caller stopped waiting (cancelled, or past
``timeout_s``) is still awaited, off every caller's path: Redis may run it late, and what
an admission took then is given back (`RedisState.run`'s ``orphaned``)."""


class Connections:
    """The store's connections to ``client``'s Redis (``own``: made by the store; a client
    given to it, a test's fakeredis, is used its own way)."""

    def __init__(self, policy: StatePolicy, client: Any, *, own: bool) -> None:
        import redis

        self.policy, self.client, self.own = policy, client, own
        self.errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._timeout = redis.exceptions.TimeoutError
        self._script_error = redis.exceptions.ResponseError
        self._conn: Any = None  # the one for sync commands (the store's lock held)
        # Answers _conn still owes, oldest first: commands whose caller stopped waiting
        # (past timeout_s), each with when it was sent and its ``orphaned`` (None: nobody's).
        # They are read, in order, before the next command's answer.
        self._owed: deque[tuple[float, Callable[[Any], None] | None]] = deque()
        # redis.asyncio clients are bound to their event loop: one per loop.
        self._async_clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._finishing: set[asyncio.Future[None]] = set()  # late answers being read

    def evalsha(
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
        `RedisState.run`), within `LATE_ANSWER_S`."""
        if not self.own:  # a client given to us (a test's fakeredis): its own way
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

    async def aevalsha(
        self,
        sha: str,
        keys: Sequence[str],
        args: Sequence[Any],
        sent: list[bool],
        orphaned: Callable[[Any], None] | None = None,
    ) -> Any:
        """One script's answer on an idle connection of the running loop's (a new one when
        none is idle): as `evalsha`, without the client's pool and retry wrapper. A
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
                socket_timeout=None,  # `aevalsha` puts one deadline on send and answer
                socket_connect_timeout=self.policy.timeout_s,
                health_check_interval=0,
            )
            mine = self._async_clients[loop] = (client, [])
        return mine


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
