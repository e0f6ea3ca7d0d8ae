"""The audit log of `agency serve`: `AuditLog`, one SQLite row per request.

The ``requests`` and ``feedback`` tables below are a contract: reports (``agency experiments
report``, the dashboard, ``agency audit``) read these column names.

- `AuditLog.record` never waits for the disk: it appends to a queue that a writer thread
  empties every ``flush_interval_s`` (or sooner, when the queue holds ``max_batch`` records)
  in one transaction (``executemany``). `AuditLog.flush` returns once everything recorded
  before it is on disk; `AuditLog.close` flushes. Records still queued at interpreter exit are
  written by an ``atexit`` hook.
- A record holds only its fixed fields (`AuditRecord`): no place for a provider key or an
  ``Authorization`` header. ``prompt`` and ``response`` stay ``NULL`` unless the caller passes
  them (keys created with ``log_prompts``, or ``[gateway] log_prompts``).
- The first record of a request id wins; a later one with the same id is ignored.
- Readers (`query`, `summary`, feedback) use their own connection: WAL mode, so they never
  block the writer nor wait for it.
"""

from __future__ import annotations

import atexit
import logging
import math
import operator
import sqlite3
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["AuditLog", "AuditLogError", "AuditRecord", "parse_since", "percentile"]

_log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
  request_id TEXT PRIMARY KEY, time REAL NOT NULL, key_id TEXT, key_name TEXT,
  endpoint TEXT NOT NULL, model_asked TEXT NOT NULL, provider TEXT, model TEXT,
  attempts INTEGER NOT NULL DEFAULT 0, input_tokens INTEGER, output_tokens INTEGER,
  cached_tokens INTEGER, cost_usd REAL, latency_ms REAL NOT NULL,
  cache_hit INTEGER NOT NULL DEFAULT 0, stream INTEGER NOT NULL DEFAULT 0,
  status INTEGER NOT NULL, error_kind TEXT, experiment TEXT, arm TEXT, user TEXT,
  prompt TEXT, response TEXT);
CREATE TABLE IF NOT EXISTS feedback (request_id TEXT NOT NULL, time REAL NOT NULL,
  score REAL NOT NULL, comment TEXT);
CREATE INDEX IF NOT EXISTS requests_time ON requests(time);
CREATE INDEX IF NOT EXISTS requests_key_id ON requests(key_id);
CREATE INDEX IF NOT EXISTS requests_experiment ON requests(experiment);
CREATE INDEX IF NOT EXISTS feedback_request_id ON feedback(request_id);
"""


class AuditLogError(RuntimeError):
    """The audit log could not do what was asked (closed, or the disk refused a write)."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One request, as one row of ``requests`` (same names)."""

    request_id: str
    """The ``x-request-id`` of the request (primary key)."""
    time: float
    """Unix seconds when the request arrived."""
    endpoint: str
    """``/v1/chat/completions``, ``/v1/messages``, ``/v1/embeddings``."""
    model_asked: str
    """The model name in the request (``role:code``, ``auto``, a spec, an entry name)."""
    latency_ms: float
    """From arrival to the last byte sent."""
    status: int
    """HTTP status returned."""
    key_id: str | None = None
    """Virtual key id (``vk_...``); ``None`` without auth."""
    key_name: str | None = None
    """Virtual key name."""
    provider: str | None = None
    """Provider that answered; ``None`` when none did."""
    model: str | None = None
    """Model that answered."""
    attempts: int = 0
    """Provider calls made (fallbacks and retries included)."""
    input_tokens: int | None = None
    """Prompt tokens billed."""
    output_tokens: int | None = None
    """Completion tokens billed."""
    cached_tokens: int | None = None
    """Prompt tokens served from the provider's prompt cache."""
    cost_usd: float | None = None
    """USD the request cost; ``None`` when unknown."""
    cache_hit: bool = False
    """Whether the gateway's semantic cache answered."""
    stream: bool = False
    """Whether the answer was streamed (SSE)."""
    error_kind: str | None = None
    """Why it failed (``rate_limit``, ``budget``, ``auth``, ...); ``None`` on success."""
    experiment: str | None = None
    """The experiment the request took part in."""
    arm: str | None = None
    """Its arm in that experiment."""
    user: str | None = None
    """The request's ``user`` field (an end-user id chosen by the client)."""
    prompt: str | None = None
    """Prompt text, only for keys that opted in."""
    response: str | None = None
    """Answer text, only for keys that opted in."""


_COLUMNS = tuple(f.name for f in fields(AuditRecord))
_INSERT = (
    f"INSERT OR IGNORE INTO requests ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
_ROW = operator.attrgetter(*_COLUMNS)
_MAX_KEPT = 100_000  # records kept for a retry while the disk refuses writes
_QUANTILES = (0.50, 0.95)


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ascending ``sorted_values``, interpolating linearly between
    neighbours (numpy's default); ``None`` for no values."""
    if not sorted_values:
        return None
    pos = q * (len(sorted_values) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


# Ranks (0-based, ascending latency) linear interpolation reads for each quantile: floor and
# floor + 1 of q * (n - 1); CAST truncates, which is floor for these non-negative values.
_RANK_TESTS = tuple(
    f"rn = CAST({q} * (n - 1) AS INTEGER) OR rn = CAST({q} * (n - 1) AS INTEGER) + 1"
    for q in _QUANTILES
)


def _ranked_percentile(at_rank: dict[tuple[int, int], float], b: int, n: int, q: float) -> float:
    """`percentile` of bucket ``b`` (``n`` rows) from the values at the ranks it reads."""
    pos = q * (n - 1)
    low = int(pos)
    lo_value = at_rank[(b, low)]
    hi_value = at_rank.get((b, low + 1), lo_value)
    return lo_value + (hi_value - lo_value) * (pos - low)


def _as_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    item = dict(zip(_COLUMNS, row, strict=True))
    item["cache_hit"] = bool(item["cache_hit"])
    item["stream"] = bool(item["stream"])
    return item


class _Barrier:
    """Queued by `AuditLog.flush`: set once every record queued before it was written."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: str | None = None


class AuditLog:
    """The audit log in one SQLite file (see the module docstring)."""

    def __init__(
        self, path: str | Path, *, flush_interval_s: float = 0.25, max_batch: int = 2000
    ) -> None:
        """Open (creating its folder and tables) the log at ``path``; the writer thread starts
        with the first record."""
        if not flush_interval_s > 0:
            raise ValueError(f"flush_interval_s={flush_interval_s!r}: pass seconds above 0")
        self.path = Path(path)
        """The SQLite file."""
        self.flush_interval_s = float(flush_interval_s)
        self.max_batch = max(1, int(max_batch))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._read = self._connect()
        self._read.executescript(_SCHEMA)
        self._read_lock = threading.Lock()
        self._queue: deque[AuditRecord | _Barrier] = deque()
        self._wake = threading.Event()
        self._start_lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self._closed = False
        _LIVE.add(self)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    # -- writing --------------------------------------------------------------------------
    def record(self, rec: AuditRecord) -> None:
        """Queue ``rec`` for the writer thread; returns at once (never touches the disk).

        Raises `AuditLogError` once the log is closed, `TypeError` for anything but an
        `AuditRecord`.
        """
        if not isinstance(rec, AuditRecord):
            raise TypeError(f"AuditLog.record takes an AuditRecord, not {type(rec).__name__}")
        if self._closed:
            raise AuditLogError(f"the audit log {self.path} is closed: open a new AuditLog")
        self._queue.append(rec)
        if self._writer is None:
            self._start()
        if len(self._queue) >= self.max_batch:
            self._wake.set()

    def flush(self, timeout: float | None = 30.0) -> None:
        """Return once every record made before this call is on disk.

        Raises `AuditLogError` if the disk refused the write (the records are kept and tried
        again) or ``timeout`` seconds passed.
        """
        if self._writer is None or self._closed:
            return  # nothing was ever recorded, or close() wrote it all
        barrier = _Barrier()
        self._queue.append(barrier)
        self._wake.set()
        if not barrier.done.wait(timeout):
            raise AuditLogError(f"the audit log {self.path} did not flush in {timeout} s")
        if barrier.error is not None:
            raise AuditLogError(barrier.error)

    def add_feedback(self, request_id: str, score: float, comment: str | None = None) -> bool:
        """Store a score for a recorded request; ``False`` when no request has this id.

        A request recorded but not yet written is found (the log is flushed first when the id
        is not on disk). Raises `ValueError` for a score that is not a finite number.
        """
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise ValueError(f"score={score!r}: pass a number, e.g. 1.0")
        if not math.isfinite(score):
            raise ValueError(f"score={score!r}: pass a finite number")
        if not self._has_request(request_id):
            self.flush()
            if not self._has_request(request_id):
                return False
        with self._read_lock:
            self._read.execute(
                "INSERT INTO feedback (request_id, time, score, comment) VALUES (?,?,?,?)",
                (request_id, time.time(), float(score), comment),
            )
        return True

    def close(self) -> None:
        """Write everything queued, stop the writer and close the file (idempotent)."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._wake.set()
            if self._writer is not None:
                self._writer.join()
            with self._read_lock:
                self._read.close()
            _LIVE.discard(self)

    # -- reading --------------------------------------------------------------------------
    def query(
        self,
        *,
        key: str | None = None,
        since: float | None = None,
        until: float | None = None,
        model: str | None = None,
        status: int | None = None,
        experiment: str | None = None,
        limit: int | None = 100,
    ) -> list[dict[str, Any]]:
        """Rows on disk (`flush` first for the latest), newest first, as dicts of the columns
        (``cache_hit`` and ``stream`` as bools).

        ``key`` matches ``key_id`` or ``key_name``; ``since`` is inclusive, ``until``
        exclusive (unix seconds); ``model`` matches the model asked for or the one that
        answered; ``limit=None``: all.
        """
        where: list[str] = []
        args: list[Any] = []
        if key is not None:
            where.append("(key_id = ? OR key_name = ?)")
            args += [key, key]
        if since is not None:
            where.append("time >= ?")
            args.append(since)
        if until is not None:
            where.append("time < ?")
            args.append(until)
        if model is not None:
            where.append("(model_asked = ? OR model = ?)")
            args += [model, model]
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if experiment is not None:
            where.append("experiment = ?")
            args.append(experiment)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM requests"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time DESC, rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(max(0, int(limit)))
        with self._read_lock:
            rows = self._read.execute(sql, args).fetchall()
        return [_as_dict(row) for row in rows]

    def get(self, request_id: str) -> dict[str, Any] | None:
        """The row of ``request_id`` on disk (`flush` first for a request just recorded), as
        `query` gives it; ``None`` when there is none."""
        with self._read_lock:
            row = self._read.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM requests WHERE request_id = ?", (request_id,)
            ).fetchone()
        return None if row is None else _as_dict(row)

    def feedback_scores(self, experiment: str | None = None) -> dict[str, float]:
        """Mean feedback score per request id (of ``experiment``'s requests when given)."""
        if experiment is None:
            sql = "SELECT request_id, AVG(score) FROM feedback GROUP BY request_id"
            args: tuple[Any, ...] = ()
        else:
            sql = (
                "SELECT f.request_id, AVG(f.score) FROM feedback f "
                "JOIN requests r ON r.request_id = f.request_id "
                "WHERE r.experiment = ? GROUP BY f.request_id"
            )
            args = (experiment,)
        with self._read_lock:
            rows = self._read.execute(sql, args).fetchall()
        return {request_id: float(mean) for request_id, mean in rows}

    def summary(self, *, since: float, bucket_s: float = 60.0, top: int = 10) -> dict[str, Any]:
        """Traffic since ``since`` for the dashboard.

        ``series``: one entry per ``bucket_s``-second bucket that had requests, ascending;
        buckets start at multiples of ``bucket_s`` since the epoch (stable from one refresh to
        the next), so the first may begin before ``since`` (only rows at or after ``since``
        count). Percentiles interpolate linearly; ``tokens`` is input plus output; errors are
        statuses >= 400. ``top_keys``: by cost, then requests, at most ``top``.
        """
        if not bucket_s > 0:
            raise ValueError(f"bucket_s={bucket_s!r}: pass seconds above 0")
        bucket_s = float(bucket_s)
        with self._read_lock:
            rows = self._read.execute(
                "SELECT CAST(time / ? AS INTEGER) AS b, COUNT(*), SUM(status >= 400), "
                "TOTAL(cost_usd), TOTAL(input_tokens) + TOTAL(output_tokens) "
                "FROM requests WHERE time >= ? GROUP BY b ORDER BY b",
                (bucket_s, since),
            ).fetchall()
            # Only the rows at the ranks the percentiles need leave SQLite (a few per bucket),
            # not every latency of the window.
            ranked = self._read.execute(
                "SELECT b, rn, latency_ms FROM (SELECT CAST(time / ? AS INTEGER) AS b, "
                "latency_ms, ROW_NUMBER() OVER w - 1 AS rn, COUNT(*) OVER w AS n "
                "FROM requests WHERE time >= ? WINDOW w AS (PARTITION BY CAST(time / ? AS INTEGER) "
                "ORDER BY latency_ms ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)) "
                f"WHERE {' OR '.join(_RANK_TESTS)}",
                (bucket_s, since, bucket_s),
            ).fetchall()
            keys = self._read.execute(
                "SELECT key_id, key_name, COUNT(*) AS n, TOTAL(cost_usd) AS cost FROM requests "
                "WHERE time >= ? GROUP BY key_id, key_name ORDER BY cost DESC, n DESC LIMIT ?",
                (since, max(0, int(top))),
            ).fetchall()
        at_rank: dict[tuple[int, int], float] = {(b, rn): lat for b, rn, lat in ranked}
        series = []
        for b, n, errors, cost, tokens in rows:
            p50, p95 = (_ranked_percentile(at_rank, b, n, q) for q in _QUANTILES)
            series.append(
                {
                    "t": b * bucket_s,
                    "requests": n,
                    "errors": int(errors or 0),
                    "p50_ms": p50,
                    "p95_ms": p95,
                    "cost_usd": float(cost),
                    "tokens": int(tokens),
                }
            )
        return {
            "since": float(since),
            "bucket_s": bucket_s,
            "series": series,
            "top_keys": [
                {"key_id": kid, "key_name": kname, "requests": n, "cost_usd": float(cost)}
                for kid, kname, n, cost in keys
            ],
            "totals": {
                "requests": sum(s["requests"] for s in series),
                "errors": sum(s["errors"] for s in series),
                "cost_usd": sum(s["cost_usd"] for s in series),
            },
        }

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r}, queued={len(self._queue)})"

    # -- internals ------------------------------------------------------------------------
    def _has_request(self, request_id: str) -> bool:
        with self._read_lock:
            row = self._read.execute(
                "SELECT 1 FROM requests WHERE request_id = ?", (request_id,)
            ).fetchone()
        return row is not None

    def _start(self) -> None:
        with self._start_lock:
            if self._writer is None:
                thread = threading.Thread(target=self._write_loop, name="agency-audit", daemon=True)
                thread.start()
                self._writer = thread

    def _write_loop(self) -> None:
        db = self._connect()
        kept: list[AuditRecord] = []  # refused by the disk last time: first in the next batch
        try:
            while True:
                self._wake.wait(self.flush_interval_s)
                self._wake.clear()
                closing = self._closed
                batch, barriers = kept, []
                kept = []
                while self._queue:
                    item = self._queue.popleft()
                    if isinstance(item, _Barrier):
                        barriers.append(item)
                    else:
                        batch.append(item)
                try:
                    error = self._write(db, batch) if batch else None
                except Exception as exc:  # a bug must not strand flush() callers
                    _log.exception("audit log %s: writer failed", self.path)
                    error = f"the audit writer failed: {type(exc).__name__}: {exc}"
                if error is not None:
                    kept = batch[-_MAX_KEPT:]
                    if len(batch) > _MAX_KEPT:
                        _log.warning(
                            "audit log %s: dropped %d records", self.path, len(batch) - _MAX_KEPT
                        )
                for barrier in barriers:
                    barrier.error = error
                    barrier.done.set()
                if closing and not self._queue:
                    return
        finally:
            db.close()

    def _write(self, db: sqlite3.Connection, batch: list[AuditRecord]) -> str | None:
        """Write ``batch`` in one transaction; the error text when the disk refused it (then
        the caller keeps the batch). A record SQLite rejects (a field of the wrong type, a
        ``None`` status) is dropped with a warning, not retried forever with its batch."""
        try:
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(_INSERT, [_ROW(rec) for rec in batch])
                db.execute("COMMIT")
            except sqlite3.OperationalError:
                raise
            except sqlite3.Error:  # one bad record: write the others one by one
                if db.in_transaction:
                    db.execute("ROLLBACK")
                db.execute("BEGIN IMMEDIATE")
                for rec in batch:
                    try:
                        db.execute(_INSERT, _ROW(rec))
                    except sqlite3.OperationalError:
                        raise
                    except sqlite3.Error as exc:
                        _log.warning("audit record %r dropped: %s", rec.request_id, exc)
                db.execute("COMMIT")
        except sqlite3.OperationalError as exc:  # locked, disk full, read-only: try again
            if db.in_transaction:
                db.execute("ROLLBACK")
            message = f"could not write {len(batch)} audit records to {self.path}: {exc}"
            _log.warning("%s (kept, tried again)", message)
            return message + " (kept, tried again at the next flush)"
        return None


_LIVE: weakref.WeakSet[AuditLog] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Write every open log's queue at interpreter exit."""
    for log in list(_LIVE):
        try:
            log.close()
        except (AuditLogError, sqlite3.Error) as exc:
            _log.warning("audit log %s: %s", log.path, exc)


def parse_since(text: str, now: float | None = None) -> float:
    """A window's start as unix seconds: a duration back from now (``1h``, ``30m``, ``2d``)
    or a local date or time (``2026-12-01``, ``2026-12-01T08:00``); `ValueError` otherwise."""
    from agency.gateway.keys import KeyStoreError, parse_expiry

    try:
        return (time.time() if now is None else now) - parse_expiry(text)
    except KeyStoreError:
        pass
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(
            f"since {text!r}: write a duration such as 30m, 1h, 2d, or a date or time such "
            "as 2026-12-01 or 2026-12-01T08:00"
        ) from None
