"""One workflow over many inputs: `run_batch`, in this process (asyncio) or fanned out on Ray.

    >>> from agency.workflows import run_batch
    >>> done = run_batch("triage.toml", "inputs.jsonl", engine="ray", out="results.jsonl")

Contract:

- Each input gets a run id: its ``"run_id"`` field when it has one (taken out of the inputs),
  else ``batch-`` and a hash of the workflow's name and the input (the same input, the same id).
- Results are appended to ``out`` as runs finish, one JSON line each (``run_id``, ``status``,
  ``outputs``, ``cost``, ``error``, ``inputs``), flushed each time: a driver that crashes loses
  nothing already written.
- Running a batch again skips every run id already in ``out``. A run that had started (its
  checkpoint has it) is resumed, not started again: the steps it finished are not sent again
  (the call journal, `agency.workflows.run`).
- ``engine="local"``: asyncio in this process, ``concurrency`` runs at a time.
  ``engine="ray"``: every run is a Ray task (``concurrency`` in flight); ``address`` joins a
  cluster, else a local one is started (``num_cpus``, no dashboard). LangChain models do not
  pickle (their HTTP clients), so each Ray worker builds the workflow and its `Agency` from the
  file (once per worker process): keys come from the worker's environment or the file, and
  never travel through Ray. With ``[state] backend = "redis"`` the workers share rate limits,
  breakers and the budget; with a Postgres checkpoint they may run on several machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["BatchResult", "batch_run_id", "read_inputs", "run_batch"]

Engine = Literal["local", "ray"]


@dataclass
class BatchResult:
    """What one `run_batch` call did."""

    results: list[dict[str, Any]] = field(default_factory=list)
    """The runs finished by this call, in the order they finished."""
    skipped: int = 0
    """Inputs whose run id was already in ``out`` (finished by an earlier call)."""
    out: Path | None = None
    """The JSON-lines file of results, when one was given."""

    @property
    def completed(self) -> int:
        """Runs of this call that completed."""
        return sum(r["status"] == "completed" for r in self.results)

    @property
    def failed(self) -> int:
        """Runs of this call that did not complete."""
        return len(self.results) - self.completed


def batch_run_id(workflow: str, inputs: Mapping[str, Any]) -> str:
    """The run id of an input without one: stable across calls and machines."""
    text = json.dumps([workflow, inputs], sort_keys=True, default=str, separators=(",", ":"))
    return "batch-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def read_inputs(source: Iterable[Mapping[str, Any]] | str | Path) -> list[dict[str, Any]]:
    """Inputs from a JSON-lines file (one object a line; blank lines skipped) or an iterable;
    `ValueError` naming the line of one that is not a JSON object."""
    if not isinstance(source, str | Path):
        return [dict(item) for item in source]
    rows = []
    for number, line in enumerate(Path(source).read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}:{number}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise ValueError(f"{source}:{number}: expected a JSON object of inputs")
        rows.append(row)
    return rows


def _done(out: Path | None) -> set[str]:
    """Run ids already in ``out`` (a torn last line, from a crash, does not count)."""
    if out is None or not out.exists():
        return set()
    ids = set()
    for line in out.read_text("utf-8").splitlines():
        try:
            ids.add(json.loads(line)["run_id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return ids


def _result(run_id: str, inputs: Mapping[str, Any], run: Any) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "status": run.status,
        "outputs": run.outputs,
        "cost": run.cost,
        "error": run.error,
        "inputs": dict(inputs),
    }


def _failure(run_id: str, inputs: Mapping[str, Any], error: BaseException | str) -> dict[str, Any]:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return {
        "run_id": run_id,
        "status": "failed",
        "outputs": {},
        "cost": 0.0,
        "error": text,
        "inputs": dict(inputs),
    }


def _started(checkpoint: str, run_id: str) -> bool:
    from agency.workflows._store import RunStore, is_database_url

    if not is_database_url(checkpoint) and not Path(checkpoint + ".index").exists():
        return False
    store = RunStore(checkpoint)
    try:
        return store.run(run_id) is not None
    finally:
        store.close()


# -- in a worker ------------------------------------------------------------------------------
_ATTEMPTS = 4
"""Tries of one run whose failure was the checkpoint's, not the run's (see `_transient`)."""
_BACKOFF_S = 0.25
"""Seconds before the next try, times the tries so far."""


class _NotCheckpointed(Exception):
    """The run was recorded as started but died before its first checkpoint: start it."""


def _resumed(resume: Callable[..., Any], run_id: str, checkpoint: str) -> Any:
    try:
        return resume(run_id, checkpoint=checkpoint)
    except ValueError as exc:
        if "no run" in str(exc):
            raise _NotCheckpointed from exc
        raise


async def _aresumed(aresume: Callable[..., Any], run_id: str, checkpoint: str) -> Any:
    try:
        return await aresume(run_id, checkpoint=checkpoint)
    except ValueError as exc:
        if "no run" in str(exc):
            raise _NotCheckpointed from exc
        raise


def _transient(exc: BaseException) -> bool:
    """A failure of the checkpoint rather than of the run: a SQLite file busy with another
    worker's write, or the run started meanwhile by a task of a killed driver (then the next
    try resumes it)."""
    text = str(exc)
    return "database is locked" in text or "already exists" in text



_OPENED: dict[tuple[str, str | None], Any] = {}


def _open(source: str, config: str | None) -> Any:
    """The workflow of ``source`` with its Agency, built once per process."""
    wf = _OPENED.get((source, config))
    if wf is None:
        from agency.workflows.file import load_workflow

        wf = _OPENED[(source, config)] = load_workflow(source, config=config)
    return wf


def _one(
    source: str, config: str | None, inputs: dict[str, Any], run_id: str, checkpoint: str
) -> dict[str, Any]:
    """One run (or the resumption of one that had started), as a Ray task runs it. What the
    run queued for the fleet's store is sent before its result returns: Ray kills a job's
    workers when its driver ends."""
    try:
        return _attempts(source, config, inputs, run_id, checkpoint)
    finally:
        from agency.resilience import flush_state

        flush_state()


def _attempts(
    source: str, config: str | None, inputs: dict[str, Any], run_id: str, checkpoint: str
) -> dict[str, Any]:
    wf = _open(source, config)
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            run = None
            if _started(checkpoint, run_id):
                with contextlib.suppress(_NotCheckpointed):
                    run = _resumed(wf.resume, run_id, checkpoint)
            if run is None:
                run = wf.run(inputs, run_id=run_id, checkpoint=checkpoint)
        except Exception as exc:  # one run's failure is its result, not the batch's
            if attempt < _ATTEMPTS and _transient(exc):
                time.sleep(_BACKOFF_S * attempt)
                continue
            return _failure(run_id, inputs, exc)
        return _result(run_id, inputs, run)
    raise AssertionError("unreachable")  # pragma: no cover


# -- the driver -------------------------------------------------------------------------------
def run_batch(
    workflow: Any,
    inputs: Iterable[Mapping[str, Any]] | str | Path,
    *,
    engine: Engine = "local",
    concurrency: int = 8,
    out: str | Path | None = None,
    checkpoint: str | None = None,
    config: str | Path | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    progress: bool | None = None,
) -> BatchResult:
    """Run ``workflow`` (a workflow file, or for ``engine="local"`` also a `Workflow`) once
    per input; see the module docstring. ``checkpoint`` defaults to the workflow's
    ``[workflows] checkpoint``, else ``.agency/runs.sqlite``; ``config`` is the agency.toml for
    a file without ``[llm]`` tables. ``progress`` (default: when stderr is a terminal) shows a
    bar on stderr."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    source, name, wf = _source(workflow, config, engine)
    checkpoint = _checkpoint(checkpoint, source, config)
    out_path = None if out is None else Path(out).resolve()
    result = BatchResult(out=out_path)
    done = _done(out_path)
    todo: list[tuple[str, dict[str, Any]]] = []
    for row in read_inputs(inputs):
        run_id = str(row.pop("run_id", None) or batch_run_id(name, row))
        if run_id in done:
            result.skipped += 1
        else:
            done.add(run_id)  # a duplicate input runs once
            todo.append((run_id, row))
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    if todo:
        asyncio.run(_prepare(checkpoint))
    with _Writer(out_path, len(todo), progress) as write:

        def finished(record: dict[str, Any]) -> None:
            result.results.append(record)
            write(record)

        if engine == "ray":
            assert source is not None
            _on_ray(
                source, _path(config), todo, checkpoint, concurrency, address, num_cpus, finished
            )
        elif engine == "local":
            asyncio.run(_locally(wf, todo, checkpoint, concurrency, finished))
        else:
            raise ValueError(f"engine must be 'local' or 'ray', not {engine!r}")
    return result


def _path(value: str | Path | None) -> str | None:
    return None if value is None else str(Path(value).resolve())


def _source(
    workflow: Any, config: str | Path | None, engine: Engine
) -> tuple[str | None, str, Any]:
    """(the file, the workflow's name, the Workflow for the local engine)."""
    if isinstance(workflow, str | Path):
        source = str(Path(workflow).resolve())
        wf = _open(source, _path(config))
        return source, wf.name, wf
    if engine == "ray":
        raise TypeError(
            "engine='ray' runs a workflow file (each Ray worker builds it and its Agency: "
            "models do not pickle); pass the path of the workflow's TOML file"
        )
    return None, workflow.name, workflow


def _checkpoint(checkpoint: str | None, source: str | None, config: str | Path | None) -> str:
    from agency.workflows._store import is_database_url
    from agency.workflows.config import workflows_config
    from agency.workflows.file import read_workflow_file
    from agency.workflows.run import DEFAULT_CHECKPOINT

    if checkpoint is None and source is not None:
        checkpoint = workflows_config(read_workflow_file(source)).checkpoint
    checkpoint = checkpoint or DEFAULT_CHECKPOINT
    # Workers may run elsewhere (another working directory): a file is named absolutely.
    return checkpoint if is_database_url(checkpoint) else str(Path(checkpoint).resolve())


async def _prepare(checkpoint: str) -> None:
    """Make the checkpoint's tables once, before the runs: many runs creating them at once
    (switching a new SQLite file to WAL among them) would find the database locked."""
    from agency.workflows._store import RunStore, is_database_url
    from agency.workflows.run import _saver

    if not is_database_url(checkpoint):
        Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
    async with _saver(checkpoint) as saver:
        if hasattr(saver, "setup"):
            await saver.setup()
    RunStore(checkpoint).close()


async def _locally(
    wf: Any,
    todo: list[tuple[str, dict[str, Any]]],
    checkpoint: str,
    concurrency: int,
    finished: Callable[[dict[str, Any]], None],
) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(run_id: str, inputs: dict[str, Any]) -> None:
        async with gate:
            for attempt in range(1, _ATTEMPTS + 1):
                try:
                    run = None
                    if await asyncio.to_thread(_started, checkpoint, run_id):
                        with contextlib.suppress(_NotCheckpointed):
                            run = await _aresumed(wf.aresume, run_id, checkpoint)
                    if run is None:
                        run = await wf.arun(inputs, run_id=run_id, checkpoint=checkpoint)
                    record = _result(run_id, inputs, run)
                except Exception as exc:  # one run's failure is its result
                    if attempt < _ATTEMPTS and _transient(exc):
                        await asyncio.sleep(_BACKOFF_S * attempt)
                        continue
                    record = _failure(run_id, inputs, exc)
                break
            finished(record)

    await asyncio.gather(*(one(run_id, inputs) for run_id, inputs in todo))


def _on_ray(
    source: str,
    config: str | None,
    todo: list[tuple[str, dict[str, Any]]],
    checkpoint: str,
    concurrency: int,
    address: str | None,
    num_cpus: int | None,
    finished: Callable[[dict[str, Any]], None],
) -> None:
    try:
        import ray
    except ImportError as exc:
        raise ImportError("engine='ray' needs Ray: pip install 'agency[ray]'") from exc
    if not ray.is_initialized():
        ray.init(
            address=address,
            num_cpus=None if address else num_cpus,
            include_dashboard=False,
            log_to_driver=False,
        )
    task = ray.remote(num_cpus=1, max_retries=0)(_one)
    pending: dict[Any, tuple[str, dict[str, Any]]] = {}
    queue: Iterator[tuple[str, dict[str, Any]]] = iter(todo)

    def collect(block: bool) -> None:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=None if block else 0)
        for ref in ready:
            run_id, inputs = pending.pop(ref)
            try:
                finished(ray.get(ref))
            except Exception as exc:  # the task itself died (a worker crash)
                finished(_failure(run_id, inputs, exc))

    for run_id, inputs in queue:
        while len(pending) >= concurrency:
            collect(block=True)
        pending[task.remote(source, config, inputs, run_id, checkpoint)] = (run_id, inputs)
    while pending:
        collect(block=True)


class _Writer:
    """Appends results to ``out`` (flushed, fsynced) and moves the progress bar."""

    def __init__(self, out: Path | None, total: int, progress: bool | None) -> None:
        self._file = None if out is None else out.open("a", encoding="utf-8")
        show = sys.stderr.isatty() if progress is None else progress
        self._bar: Any = None
        if show and total:
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(console=Console(stderr=True), transient=False)
            self._task = self._bar.add_task("runs", total=total)

    def __enter__(self) -> Callable[[dict[str, Any]], None]:
        if self._bar is not None:
            self._bar.start()
        return self.write

    def write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        if self._bar is not None:
            self._bar.advance(self._task)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
        if self._file is not None:
            self._file.close()
