"""What a run leaves beside LangGraph's checkpoints: the run index, the call journal, traces.

A checkpoint is a SQLite file (the default) or a Postgres URL (``postgresql://...``: runs
started on one machine resume on another). LangGraph's checkpoints are in it
(``langgraph-checkpoint-sqlite`` / ``-postgres``); beside them, two tables of ours, in
``<checkpoint>.index`` for SQLite (a file of their own: our writes never wait for the
checkpointer's connection, nor it for ours), in the same database for Postgres:

- ``agency_runs``: one row per run (workflow, status, cost, times, error), for ``agency runs``;
- ``agency_calls``: the call journal. A model call's answer is committed here the moment it
  arrives, keyed by what was asked (run, step, branch, iteration, messages, chain). A step that
  runs again after a crash (LangGraph re-runs a node whose writes were not saved, see langgraph
  #8039) finds its answer here and does not pay for it twice; only a call whose answer had not
  arrived when the process died is sent again.

Traces: each run's events, one JSON object a line, in ``<checkpoint>.traces/<run_id>.jsonl``
(for Postgres, in ``.agency/runs.traces/`` of the machine that ran the step).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RunRow", "RunStore", "call_key", "is_database_url", "trace_path"]



def is_database_url(checkpoint: str | Path) -> bool:
    """Whether ``checkpoint`` names a Postgres database rather than a SQLite file."""
    return str(checkpoint).startswith(("postgres://", "postgresql://"))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agency_runs (
    run_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    cost REAL NOT NULL DEFAULT 0,
    started REAL NOT NULL,
    updated REAL NOT NULL,
    error TEXT,
    source TEXT
);
CREATE TABLE IF NOT EXISTS agency_calls (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    step TEXT NOT NULL,
    answer TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (run_id, key)
);
"""


# Postgres' REAL is 4 bytes (a time.time() would lose its seconds): the same tables with 8.
_PG_SCHEMA = _SCHEMA.replace(" REAL ", " DOUBLE PRECISION ")


@dataclass(frozen=True)
class RunRow:
    """One run as ``agency runs`` lists it."""

    run_id: str
    workflow: str
    status: str
    cost: float
    started: float
    updated: float
    error: str | None
    source: str | None
    """The workflow file the run came from (``agency resume`` reads it again)."""


def call_key(*parts: Any) -> str:
    """A stable key for one model call: a hash of what was asked."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def trace_path(checkpoint: str | Path, run_id: str) -> Path:
    """Where run ``run_id``'s events are written."""
    if is_database_url(checkpoint):
        return Path(".agency") / "runs.traces" / f"{run_id}.jsonl"
    path = Path(checkpoint)
    return path.with_name(path.name + ".traces") / f"{run_id}.jsonl"


class RunStore:
    """The run index and call journal of ``checkpoint`` (a SQLite file or a Postgres URL).
    Thread-safe."""

    def __init__(self, checkpoint: str | Path) -> None:
        self._pg = is_database_url(checkpoint)
        self.path: Path | None = None
        """The SQLite file of the index and the journal, beside the checkpoint (None for
        Postgres: the same database)."""
        if self._pg:
            import psycopg

            self._lock = threading.Lock()
            self._db: Any = psycopg.connect(str(checkpoint), autocommit=True)
            self._db.execute(_PG_SCHEMA)
            return
        checkpoint = Path(checkpoint)
        self.path = checkpoint.with_name(checkpoint.name + ".index")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=NORMAL: a commit survives the process being killed (what the
        # journal is for), at a fraction of a full fsync's cost; only a power cut may lose the
        # last commits, and then the call is made again.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        with self._lock:
            cursor = self._db.cursor()
            yield _Placeholders(cursor) if self._pg else cursor

    # -- runs ---------------------------------------------------------------------------
    def start(self, run_id: str, workflow: str, source: str | None = None) -> None:
        """Record that ``run_id`` started (or was resumed)."""
        now = time.time()
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO agency_runs (run_id, workflow, status, started, updated, source) "
                "VALUES (?, ?, 'running', ?, ?, ?) ON CONFLICT(run_id) DO UPDATE SET "
                "status = 'running', updated = excluded.updated, error = NULL, "
                "source = COALESCE(excluded.source, agency_runs.source)",
                (run_id, workflow, now, now, source),
            )

    def finish(
        self, run_id: str, status: str, cost: float | None, error: str | None = None
    ) -> None:
        """Record how ``run_id`` ended this time (``cost`` None keeps the last one known)."""
        with self._cursor() as cur:
            cur.execute(
                "UPDATE agency_runs SET status = ?, cost = COALESCE(?, cost), updated = ?, "
                "error = ? "
                "WHERE run_id = ?",
                (status, cost, time.time(), error, run_id),
            )

    def run(self, run_id: str) -> RunRow | None:
        """The row of ``run_id``, if there is one."""
        with self._cursor() as cur:
            row = cur.execute(
                "SELECT run_id, workflow, status, cost, started, updated, error, source "
                "FROM agency_runs WHERE run_id = ?",
                (run_id,),
            ).fetchone()
        return RunRow(*row) if row else None

    def runs(self) -> list[RunRow]:
        """Every run, newest first."""
        with self._cursor() as cur:
            rows = cur.execute(
                "SELECT run_id, workflow, status, cost, started, updated, error, source "
                "FROM agency_runs ORDER BY started DESC"
            ).fetchall()
        return [RunRow(*row) for row in rows]

    # -- the call journal ---------------------------------------------------------------
    def recall(self, run_id: str, key: str) -> Mapping[str, Any] | None:
        """The answer journalled for this call, if it arrived before."""
        with self._cursor() as cur:
            row = cur.execute(
                "SELECT answer FROM agency_calls WHERE run_id = ? AND key = ?", (run_id, key)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def journal(self, run_id: str, key: str, step: str, answer: Mapping[str, Any]) -> None:
        """Commit a call's answer (before the step returns, so a crash cannot lose it)."""
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO agency_calls (run_id, key, step, answer, created) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id, key) DO UPDATE SET "
                "step = excluded.step, answer = excluded.answer, created = excluded.created",
                (run_id, key, step, json.dumps(answer, default=str), time.time()),
            )

    def calls(self, run_id: str) -> int:
        """How many calls of ``run_id`` are journalled."""
        with self._cursor() as cur:
            (count,) = cur.execute(
                "SELECT COUNT(*) FROM agency_calls WHERE run_id = ?", (run_id,)
            ).fetchone()
        return int(count)


class _Placeholders:
    """A psycopg cursor that takes SQLite's ``?`` placeholders (one SQL text for both)."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self._cursor.execute(sql.replace("?", "%s"), params)


class TraceWriter:
    """Appends a run's events to its JSONL trace, one line each, flushed as written."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, event: Mapping[str, Any]) -> None:
        """One event."""
        line = json.dumps(event, default=str, ensure_ascii=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._file.close()


def read_trace(path: Path) -> list[dict[str, Any]]:
    """The events of a trace file (a torn last line, from a crash, is left out)."""
    events: list[dict[str, Any]] = []
    if not path.exists():
        return events
    for line in path.read_text("utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
