"""Running a `Workflow`: runs, resumes, events, traces. Contracts:

- A run's state is checkpointed in SQLite (or Postgres, for a ``postgresql://`` checkpoint:
  runs then resume on any machine that reaches it) after every step (LangGraph ``durability="sync"``),
  its model answers in the call journal as they arrive (`agency.workflows._store`). `resume`
  continues from the checkpoint: steps that finished are not run again, and a step that runs
  again after a crash finds its answer in the journal instead of paying twice.
- A run ends ``completed``, ``interrupted`` (an ``interrupt`` step waits for an answer),
  ``budget_exceeded`` (the next call's worst case would have gone over; nothing was sent),
  ``failed`` (a step failed on every provider, or raised) or ``cancelled`` (Ctrl-C, a
  cancelled task; a process killed outright stays ``running`` in the index). All but
  ``completed`` resume.
- ``completed`` is only said when every step finished or was skipped by its own condition; a
  run that LangGraph ends early (langgraph #8834) is ``failed``, naming the steps never run.
- Events (`Event`) stream from `astream`; all but tokens are written, one JSON a line, to
  ``<checkpoint>.traces/<run_id>.jsonl``; with ``opentelemetry`` installed, each step is a span.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agency._aio import run_sync
from agency.errors import BudgetExceeded, redact
from agency.workflows._nodes import COST, STEPS, RunContext, bind, event, unbind
from agency.workflows._store import RunStore, TraceWriter, is_database_url, trace_path

if TYPE_CHECKING:
    from agency.workflows._nodes import AgencyLike
    from agency.workflows.graph import Workflow

__all__ = ["DEFAULT_CHECKPOINT", "Event", "Run", "Runner", "StepRecord"]

DEFAULT_CHECKPOINT = ".agency/runs.sqlite"
"""Where runs are checkpointed unless told otherwise (relative to the working directory)."""

Status = Literal["completed", "interrupted", "budget_exceeded", "failed", "cancelled", "running"]


@dataclass(frozen=True)
class StepRecord:
    """What one step did in a run."""

    status: str = "pending"
    """``done``, ``skipped`` or ``pending`` (not run yet)."""
    provider: str | None = None
    """The provider entry (or spec) that answered; for a map step, each branch's."""
    model: str | None = None
    """The ``provider:model`` that answered."""
    attempts: int = 0
    """Attempts of its model call, retries and fallbacks together."""
    failures: tuple[Mapping[str, Any], ...] = ()
    """Each failed attempt: provider, error class, message."""
    cost: float = 0.0
    """USD."""
    input_tokens: int = 0
    """Prompt tokens."""
    output_tokens: int = 0
    """Answer tokens."""
    seconds: float = 0.0
    """Wall time of the step."""
    iteration: int = 0
    """The loop round it ran in (0 first)."""
    replayed: bool = False
    """Its answer came from the call journal (paid by an earlier attempt of the run)."""
    reason: str | None = None
    """Why it was skipped."""

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> StepRecord:
        """From the record a node wrote."""
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        if "failures" in known:
            known["failures"] = tuple(known["failures"])
        return cls(**known)


@dataclass
class Run:
    """The outcome of running (or resuming) a workflow."""

    run_id: str
    workflow: str
    status: Status
    outputs: dict[str, Any] = field(default_factory=dict)
    """Each finished step's output, by step name."""
    steps: dict[str, StepRecord] = field(default_factory=dict)
    """Each step's record (map branches as ``name[i]``)."""
    cost: float = 0.0
    """USD for the whole run, across resumes."""
    error: str | None = None
    """Why it stopped, when it did not complete."""
    interrupts: list[dict[str, Any]] = field(default_factory=list)
    """The questions of the ``interrupt`` steps it waits on: ``{"step", "question"}``."""
    checkpoint: str | None = None
    """Where it is checkpointed: a SQLite file or a Postgres URL."""

    def raise_for_status(self) -> Run:
        """Raise `WorkflowFailed` unless the run completed; returns the run."""
        if self.status != "completed":
            raise WorkflowFailed(self)
        return self


class WorkflowFailed(RuntimeError):
    """A run that did not complete; ``run`` says how far it got."""

    def __init__(self, run: Run) -> None:
        self.run = run
        super().__init__(f"run {run.run_id!r} {run.status}: {run.error}")


@dataclass(frozen=True)
class Event:
    """One thing that happened in a run.

    ``kind``: ``run_started``, ``step_started``, ``token``, ``step_finished``,
    ``step_skipped``, ``step_failed``, ``fallback``, ``replayed``, ``interrupted``,
    ``run_finished``. ``data`` holds the rest (provider, attempts, cost, text, ...); the
    ``run_finished`` event's ``run`` is the `Run`.
    """

    kind: str
    step: str | None
    data: Mapping[str, Any]
    time: float
    run: Run | None = None


class Runner:
    """Runs one workflow with one checkpoint file and one `Agency`."""

    def __init__(
        self,
        workflow: Workflow,
        *,
        checkpoint: str | Path | None = None,
        agency: AgencyLike | None = None,
        source: str | None = None,
    ) -> None:
        self.workflow = workflow
        self.checkpoint = str(checkpoint or DEFAULT_CHECKPOINT)
        self.agency = agency or workflow.agency
        self.source = source

    # -- sync faces ---------------------------------------------------------------------
    def run(self, inputs: Mapping[str, Any], **options: Any) -> Run:
        """Run to the end, an interrupt, a budget stop or a failure."""
        return run_sync(self.arun(inputs, **options))

    def resume(self, run_id: str, **options: Any) -> Run:
        """Continue ``run_id``."""
        return run_sync(self.aresume(run_id, **options))

    # -- async --------------------------------------------------------------------------
    async def arun(self, inputs: Mapping[str, Any], **options: Any) -> Run:
        """The async twin of `run`."""
        return await _last_run(self.astream(inputs, tokens=False, **options))

    async def aresume(self, run_id: str, **options: Any) -> Run:
        """The async twin of `resume`."""
        return await _last_run(
            self.astream(None, run_id=run_id, resume=True, tokens=False, **options)
        )

    async def astream(
        self,
        inputs: Mapping[str, Any] | None,
        *,
        run_id: str | None = None,
        budget_usd: float | None = None,
        max_concurrency: int | None = None,
        answers: Mapping[str, Any] | None = None,
        resume: bool = False,
        tokens: bool = True,
    ) -> AsyncIterator[Event]:
        """Run (or with ``resume``, continue ``run_id``), yielding events as they happen
        (``tokens=False`` leaves out the token events: `run` has no one to show them to, and
        each costs a trip through LangGraph's stream)."""
        wf = self.workflow
        run_id = run_id or uuid.uuid4().hex[:12]
        if not is_database_url(self.checkpoint):
            Path(self.checkpoint).parent.mkdir(parents=True, exist_ok=True)
        store = RunStore(self.checkpoint)
        trace = TraceWriter(trace_path(self.checkpoint, run_id))
        spans = _Spans(wf.name, run_id)
        budget = budget_usd if budget_usd is not None else wf.budget_usd
        ctx = RunContext(
            run_id=run_id,
            agency=self.agency,
            store=store,
            budget_usd=budget,
            emit=_node_emit,
            extra={
                "checkpoint": self.checkpoint,
                "models": wf.models_for(self.agency),
                "tokens": tokens,
            },
        )
        config: dict[str, Any] = {
            "configurable": {"thread_id": run_id},
            "recursion_limit": 25 + 8 * sum(s.max_iterations for s in wf.steps.values()),
        }
        if max_concurrency or wf.max_concurrency:
            config["max_concurrency"] = max_concurrency or wf.max_concurrency

        def record(ev: dict[str, Any], run: Run | None = None) -> Event:
            if ev["event"] != "token":
                trace.write(ev)
                spans.observe(ev)
            data = {k: v for k, v in ev.items() if k not in ("event", "step", "time")}
            return Event(ev["event"], ev.get("step"), data, ev["time"], run)

        token = bind(ctx)
        try:
            async with _saver(self.checkpoint) as saver:
                graph = wf.compile(checkpointer=saver)
                command: Any = dict(inputs or {})
                if resume:
                    command = await _resume_command(graph, config, run_id, answers)
                else:
                    missing = [k for k in wf.inputs if k not in command]
                    if missing:
                        raise ValueError(f"inputs missing: {missing} (the workflow needs {wf.inputs})")
                    if (await graph.aget_state(config)).values:
                        raise ValueError(
                            f"run {run_id!r} already exists in {redact(self.checkpoint)}: "
                            "resume it, "
                            "or choose another run id"
                        )
                await asyncio.to_thread(store.start, run_id, wf.name, self.source)
                yield record(event("run_started", None, run_id=run_id, resumed=resume))
                error: BaseException | None = None
                try:
                    async for mode, payload in graph.astream(
                        command, config, stream_mode=["custom", "updates"], durability="sync"
                    ):
                        if mode == "custom":
                            yield record(payload)
                        elif "__interrupt__" in payload:
                            for item in payload["__interrupt__"]:
                                value = item.value if isinstance(item.value, dict) else {}
                                yield record(event("interrupted", value.get("step"), **value))
                except Exception as exc:  # the run stops; its checkpoint stays for resume
                    error = exc
                except (asyncio.CancelledError, KeyboardInterrupt):
                    # Ctrl-C or a cancelled task: say so in the index, off the loop (the
                    # checkpointer may hold the write lock until the loop lets it finish),
                    # then let the cancellation go on.
                    note = (run_id, "cancelled", None, "cancelled; resume to finish it")
                    with contextlib.suppress(Exception):
                        await asyncio.shield(asyncio.to_thread(store.finish, *note))
                    raise
                run = await self._outcome(graph, config, run_id, error)
                await asyncio.to_thread(store.finish, run_id, run.status, run.cost, run.error)
                yield record(
                    event("run_finished", None, status=run.status, cost=run.cost, error=run.error),
                    run,
                )
        finally:
            unbind(token)
            spans.close()
            trace.close()
            store.close()

    async def _outcome(
        self, graph: Any, config: dict[str, Any], run_id: str, error: BaseException | None
    ) -> Run:
        wf = self.workflow
        snapshot = await graph.aget_state(config)
        values = snapshot.values or {}
        records = {k: StepRecord.of(v) for k, v in (values.get(STEPS) or {}).items()}
        outputs = {
            name: values.get(step.key)
            for name, step in wf.steps.items()
            if records.get(name, StepRecord()).status == "done"
        }
        interrupts = [
            dict(i.value) if isinstance(i.value, dict) else {"question": i.value}
            for i in snapshot.interrupts
        ]
        run = Run(
            run_id=run_id,
            workflow=wf.name,
            status="completed",
            outputs=outputs,
            steps=records,
            cost=float(values.get(COST) or 0.0),
            interrupts=interrupts,
            checkpoint=self.checkpoint,
        )
        if error is not None:
            run.status = "budget_exceeded" if isinstance(error, BudgetExceeded) else "failed"
            run.error = f"{type(error).__name__}: {error}"
        elif interrupts:
            run.status = "interrupted"
            run.error = "waiting for: " + ", ".join(str(i.get("step")) for i in interrupts)
        else:
            never = [n for n in wf.steps if records.get(n, StepRecord()).status == "pending"]
            if never:  # LangGraph ended without them (e.g. langgraph #8834): not completed
                run.status = "failed"
                run.error = f"steps never ran: {never}; resume to run them"
        return run


@contextlib.asynccontextmanager
async def _saver(checkpoint: str) -> AsyncIterator[Any]:
    """LangGraph's checkpointer for ``checkpoint``: SQLite for a file, Postgres for a URL
    (``langgraph-checkpoint-postgres``; its tables are made on first use)."""
    if is_database_url(checkpoint):
        try:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        except ImportError as exc:
            raise ImportError(
                "a postgres:// checkpoint needs langgraph-checkpoint-postgres: "
                "pip install 'agency[postgres]'"
            ) from exc
        async with AsyncPostgresSaver.from_conn_string(checkpoint) as saver:
            await saver.setup()
            yield saver
        return
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with AsyncSqliteSaver.from_conn_string(checkpoint) as saver:
        yield saver


async def _resume_command(
    graph: Any, config: dict[str, Any], run_id: str, answers: Mapping[str, Any] | None
) -> Any:
    from langgraph.types import Command

    snapshot = await graph.aget_state(config)
    if not snapshot.values and not snapshot.next:
        raise ValueError(f"no run {run_id!r} in this checkpoint")
    if not snapshot.interrupts:
        return None  # continue from the last checkpoint: only what is left runs
    answers = dict(answers or {})
    resume_map = {}
    for item in snapshot.interrupts:
        step = item.value.get("step") if isinstance(item.value, dict) else None
        if step not in answers:
            raise ValueError(
                f"run {run_id!r} waits for an answer to step {step!r}: "
                f"{item.value.get('question') if isinstance(item.value, dict) else item.value}"
            )
        resume_map[item.id] = answers[step]
    # One Command answers every pending interrupt at once, by id, so an interrupt resolved in
    # one parallel branch never fires again while another waits (langgraph #5952).
    return Command(resume=resume_map)


def _node_emit(ev: dict[str, Any]) -> None:
    from langgraph.config import get_stream_writer

    get_stream_writer()(ev)


async def _last_run(events: AsyncIterator[Event]) -> Run:
    run: Run | None = None
    async for ev in events:
        if ev.run is not None:
            run = ev.run
    assert run is not None
    return run


class _Spans:
    """One OpenTelemetry span per run and per step, when ``opentelemetry`` is installed."""

    def __init__(self, workflow: str, run_id: str) -> None:
        self._open: dict[str, Any] = {}
        try:
            from opentelemetry import trace
        except ImportError:
            self._tracer = None
            return
        self._tracer = trace.get_tracer("agency.workflows")
        self._root = self._tracer.start_span(
            f"workflow {workflow}", attributes={"agency.run_id": run_id}
        )
        self._ctx = trace.set_span_in_context(self._root)

    def observe(self, ev: Mapping[str, Any]) -> None:
        if self._tracer is None or not ev.get("step"):
            return
        step, kind = str(ev["step"]), ev["event"]
        if kind == "step_started":
            self._open[step] = self._tracer.start_span(f"step {step}", context=self._ctx)
        elif kind in ("step_finished", "step_failed", "step_skipped") and step in self._open:
            span = self._open.pop(step)
            for key in ("provider", "attempts", "cost", "input_tokens", "output_tokens"):
                if ev.get(key) is not None:
                    span.set_attribute(f"agency.{key}", ev[key])
            span.set_attribute("agency.outcome", kind)
            span.end()

    def close(self) -> None:
        if self._tracer is None:
            return
        for span in self._open.values():
            span.end()
        self._root.end()

