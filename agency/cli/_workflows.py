"""What the workflow commands (``agency run``, ``resume``, ``runs``) share: reading a workflow
file with its agency, the progress display, and printing a run's outcome (private to the CLI).

Model text goes to stdout unchanged (``sys.stdout.write``, never rich, which wraps at the
console's width); the progress display, notes and errors go to stderr.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

_err = Console(stderr=True)

EXIT_CODES = {"completed": 0, "failed": 1, "interrupted": 3, "budget_exceeded": 4}
"""``agency run``/``resume`` exit codes by run status; 2 is a bad file, option or run id."""
USAGE_ERROR = 2


def fail(reason: str, code: int = USAGE_ERROR) -> NoReturn:
    """One line on stderr, then exit ``code``."""
    text = escape(" ".join(reason.split()))  # a reason may hold [brackets]: not markup
    _err.print(f"[red]error:[/red] {text}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def reason(exc: Exception) -> str:
    """``exc`` as one line; a `ConfigError` as ``file [key]: problem (fix: ...)``."""
    from agency.errors import ConfigError

    if isinstance(exc, ConfigError):
        where = " ".join(p for p in (exc.source, f"[{exc.key}]" if exc.key else "") if p)
        fix = f" (fix: {exc.fix})" if exc.fix else ""
        return f"{where}: {exc.problem}{fix}" if where else f"{exc.problem}{fix}"
    return str(exc)


def parse_inputs(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a dict; a value in ``[...]`` or ``{...}`` that parses as JSON is
    that JSON (a list to map over), anything else the text as written."""
    values: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--input {pair!r}: write KEY=VALUE, e.g. --input topic='the sea'")
        if value[:1] in ("[", "{"):
            try:
                values[key.strip()] = json.loads(value)
                continue
            except json.JSONDecodeError:
                pass  # not JSON: the text as written
        values[key.strip()] = value
    return values


def open_workflow(file: str, config: str | None, checkpoint: str | None) -> tuple[Any, Any, str]:
    """The workflow of ``file``, its `Agency` and the checkpoint path."""
    from agency.app import Agency
    from agency.workflows.config import workflows_config
    from agency.workflows.file import agency_config_for, read_workflow_file, workflow_from_config
    from agency.workflows.run import DEFAULT_CHECKPOINT

    file_config = read_workflow_file(file)
    agency_config = agency_config_for(file_config, config)
    ag = Agency(agency_config)
    try:
        wf = workflow_from_config(file_config, agency=ag)
    except Exception:
        ag.close()
        raise
    checkpoint = (
        checkpoint
        or workflows_config(file_config).checkpoint
        or workflows_config(agency_config).checkpoint
        or DEFAULT_CHECKPOINT
    )
    return wf, ag, checkpoint


def default_checkpoint(config: str | None) -> str:
    """``[workflows] checkpoint`` of the configuration (``config``, else `load_config`'s
    defaults), else ``.agency/runs.sqlite``."""
    from agency.config import load_config
    from agency.workflows.config import workflows_config
    from agency.workflows.run import DEFAULT_CHECKPOINT

    return workflows_config(load_config(config)).checkpoint or DEFAULT_CHECKPOINT


class Progress:
    """One line per step (state, provider, attempts, tokens, cost, time), from run events:
    a live table on a terminal, else a plain line as each step ends (both on stderr)."""

    _DONE = ("done", "skipped", "failed", "waiting")
    _ENDS = ("step_finished", "step_skipped", "step_failed", "interrupted")

    def __init__(self, wf: Any, console: Console) -> None:
        self.console = console
        self.order = list(wf.steps)
        self.rows: dict[str, dict[str, Any]] = {name: {"state": "pending"} for name in wf.steps}
        self.shown: set[str] = set()
        self.touched: set[str] = set()  # steps this invocation ran (map steps by a branch)

    def event(self, ev: Any) -> None:
        if ev.step is None:
            return
        row = self.rows.setdefault(ev.step, {"state": "pending"})
        self.touched.add(ev.step.partition("[")[0])
        data = ev.data
        if ev.kind == "step_started":
            row.update(state="running", started=ev.time, tokens=0)
            base = self.rows.get(ev.step.partition("[")[0])
            if base is not None and base["state"] == "pending":  # a map step's first branch
                base.update(state="running", started=ev.time)
        elif ev.kind == "token":
            row["tokens"] = int(row.get("tokens") or 0) + 1  # chunks until the usage arrives
        elif ev.kind == "replayed":
            row["replayed"] = True
        elif ev.kind == "step_finished":
            row.update(_row_of(data), state="done")
        elif ev.kind == "step_skipped":
            row.update(state="skipped", note=data.get("reason"))
        elif ev.kind == "step_failed":
            row.update(state="failed", note=f"{data.get('error')}: {data.get('message')}")
        elif ev.kind == "interrupted":
            row.update(state="waiting", note=data.get("question"))
        if not self.console.is_terminal and ev.kind in self._ENDS:
            self._line(ev.step)

    def finish(self, run: Any) -> None:
        """Take each step's final record from the run (map steps are gathered only there)."""
        for name, record in run.steps.items():
            row = self.rows.setdefault(name, {"state": "pending"})
            if record.status in ("done", "skipped"):
                row.update(_row_of(record.__dict__), state=record.status)
        for name in self.order:  # a map step: its branches' tokens, its slowest branch's time
            branches = [r for label, r in self.rows.items() if label.startswith(f"{name}[")]
            if branches and self.rows[name]["state"] == "done":
                tokens = sum(int(r.get("tokens") or 0) for r in branches)
                self.rows[name]["tokens"] = tokens or None
                self.rows[name]["seconds"] = max(float(r.get("seconds") or 0) for r in branches)
        if not self.console.is_terminal:
            for name in self._ordered():
                ended = self.rows[name]["state"] in self._DONE
                if ended and name in self.touched and name not in self.shown:
                    self._line(name)

    def _ordered(self) -> list[str]:
        def key(label: str) -> tuple[int, int]:
            base, _, index = label.partition("[")
            position = self.order.index(base) if base in self.order else len(self.order)
            return position, int(index.rstrip("]") or -1) if index else -1

        return sorted(self.rows, key=key)

    def _cells(self, name: str) -> list[str]:
        row = self.rows[name]
        seconds = row.get("seconds")
        if seconds is None and row.get("started") and row["state"] == "running":
            seconds = time.time() - row["started"]
        state = row["state"] + (" (replayed)" if row.get("replayed") else "")
        return [
            name,
            state,
            str(row.get("provider") or "-"),
            str(row.get("attempts") or "-"),
            str(row.get("tokens") or "-"),
            f"${row['cost']:.6f}" if row.get("cost") else "-",
            f"{seconds:.2f}s" if seconds is not None else "-",
        ]

    def _line(self, name: str) -> None:
        self.shown.add(name)
        cells = self._cells(name)
        note = self.rows[name].get("note")
        text = "  ".join(cells) + (f"  ({note})" if note else "")
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def __rich__(self) -> Table:
        table = Table("step", "state", "provider", "attempts", "tokens", "cost", "time")
        for name in self._ordered():
            table.add_row(*self._cells(name))
        return table


def _row_of(record: Mapping[str, Any]) -> dict[str, Any]:
    tokens = int(record.get("input_tokens") or 0) + int(record.get("output_tokens") or 0)
    row = {k: record.get(k) for k in ("provider", "attempts", "cost", "seconds")}
    row = {k: v for k, v in row.items() if v is not None}
    if tokens:
        row["tokens"] = tokens
    if record.get("replayed"):
        row["replayed"] = True
    return row


def drive(
    wf: Any,
    ag: Any,
    checkpoint: str,
    source: str,
    *,
    run_id: str,
    json_out: bool,
    inputs: Mapping[str, Any] | None = None,
    **options: Any,
) -> None:
    """Run (or resume) with the progress display, print the outcome, exit with its code."""
    import asyncio

    from agency.workflows.run import Runner

    runner = Runner(wf, checkpoint=checkpoint, agency=ag, source=source)
    progress = Progress(wf, _err)

    async def consume() -> Any:
        run = None
        async for ev in runner.astream(inputs, run_id=run_id, **options):
            progress.event(ev)
            run = ev.run or run
        return run

    try:
        if _err.is_terminal:
            from rich.live import Live

            with Live(progress, console=_err, refresh_per_second=8):
                run = asyncio.run(consume())
                progress.finish(run)
        else:
            run = asyncio.run(consume())
            progress.finish(run)
    except KeyboardInterrupt:
        _err.print(
            f"stopped; resume with: {resume_command(run_id, checkpoint)}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    except ValueError as exc:  # a missing input, a run id taken, no such run to resume
        fail(str(exc))
    finally:
        ag.close()
    report(wf, run, json_out)


def resume_command(run_id: str, checkpoint: str, extra: str = "") -> str:
    """The shell command that resumes ``run_id`` (quoted for copy and paste)."""
    return f"agency resume {shlex.quote(run_id)} --checkpoint {shlex.quote(checkpoint)}{extra}"


def report(wf: Any, run: Any, json_out: bool) -> None:
    """Print the run's outcome (stdout: its JSON or its final text; stderr: what to do next)
    and exit with its `EXIT_CODES` code."""
    if json_out:
        steps = {
            name: {
                "provider": r.provider,
                "attempts": r.attempts,
                "cost": r.cost,
                "status": r.status,
            }
            for name, r in run.steps.items()
        }
        body = {
            "run_id": run.run_id,
            "status": run.status,
            "outputs": run.outputs,
            "steps": steps,
            "cost": run.cost,
            "error": run.error,
            "interrupts": run.interrupts,
        }
        sys.stdout.write(json.dumps(body, ensure_ascii=False, default=str) + "\n")
    elif run.status == "completed":
        print_outputs(wf, run.outputs)
    checkpoint = run.checkpoint or ""
    if run.status == "interrupted":
        for item in run.interrupts:
            step = str(item.get("step"))
            _err.print(f"{step} asks: {item.get('question')}", markup=False, highlight=False)
        answers = "".join(
            f" --input {shlex.quote(str(i.get('step')) + '=<answer>')}" for i in run.interrupts
        )
        _err.print(
            f"run {run.run_id} waits; answer with: "
            f"{resume_command(run.run_id, checkpoint, answers)}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    elif run.status == "budget_exceeded":
        _err.print(
            f"resume with a bigger budget: {resume_command(run.run_id, checkpoint)} --budget USD",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    code = EXIT_CODES.get(run.status, 1)
    if run.status == "interrupted":  # not an error: the question and the command are above
        raise typer.Exit(code)
    if code:
        fail(f"run {run.run_id} {run.status}: {run.error}", code)
    _err.print(f"[dim]run {run.run_id} completed, ${run.cost:.6f}[/dim]", highlight=False)


def print_outputs(wf: Any, outputs: Mapping[str, Any]) -> None:
    """The final output: the leaf steps' (those no step comes after) that ran; their text as
    the model wrote it, under a ``## step`` line when there are several."""
    leaves = [n for n in wf.steps if not any(n in s.after for s in wf.steps.values())]
    shown = [n for n in leaves if n in outputs] or [n for n in list(outputs)[-1:]]
    for name in shown:
        value = outputs[name]
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2)
        if len(shown) > 1:
            sys.stdout.write(f"## {name}\n")
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def trace_line(ev: Mapping[str, Any]) -> str:
    """A trace event for a terminal: time, event, step, then its data as ``key=value``."""
    stamp = datetime.fromtimestamp(float(ev.get("time") or 0)).strftime("%H:%M:%S.%f")[:-3]
    rest = " ".join(
        f"{k}={v}"
        for k, v in ev.items()
        if k not in ("event", "step", "time") and v not in (None, [], "")
    )
    return f"{stamp}  {ev.get('event')}  {ev.get('step') or '-'}  {rest}".rstrip()
