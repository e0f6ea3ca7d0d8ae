"""The ``agency`` command line: ``agency chat "prompt"``, ``agency models [PROVIDER]``,
``agency providers`` (health and statistics of the configured providers), and workflows:
``agency run FILE``, ``agency resume ID`` and ``agency runs``.

What any command prints to a pipe or a file is the model's text unchanged (never wrapped);
progress, tables and notes go to stderr, or to stdout only when it is a terminal.

With no model given and no key configured, ``chat`` runs on the embedded ``local:smollm2``
and says so, so it works on a fresh machine with no network.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agency.cli import _a2a as a2a_cli
from agency.cli import _experiments as experiments_cli
from agency.cli import _keys as keys_cli
from agency.cli import _serve as serve_cli
from agency.cli import _workflows as wf_cli
from agency.errors import redact

__all__ = ["app", "default_spec", "main"]

app = typer.Typer(
    name="agency",
    help="Talk to any LLM provider, or to the embedded model, from the terminal.",
    no_args_is_help=True,
    add_completion=False,
)
_out = Console()
_err = Console(stderr=True)

LOCAL_DEFAULT = "local:smollm2"
"""What ``agency chat`` uses when nothing else is configured."""


def default_spec() -> tuple[str, str]:
    """The model ``chat`` uses when none is given, and why.

    ``AGENCY_MODEL`` wins; then ``DEFAULT_LLM_PROVIDER`` with ``<PROVIDER>_MODEL``; then the
    first provider whose key is set (OpenAI, Anthropic-style env names); else the embedded model.
    """
    from agency._specs import get_profile, known_providers

    if os.environ.get("AGENCY_MODEL"):
        return os.environ["AGENCY_MODEL"], "from AGENCY_MODEL"
    preferred = os.environ.get("DEFAULT_LLM_PROVIDER")
    names = ([preferred] if preferred else []) + [n for n in known_providers() if n != preferred]
    for name in names:
        if name not in known_providers():
            continue
        profile = get_profile(name)
        if name == "local" or not profile.requires_key or not profile.base_url:
            continue
        if any(os.environ.get(var) for var in profile.api_key_env):
            model = (
                os.environ.get(f"{name.upper().replace('-', '_')}_MODEL") or profile.default_model
            )
            if model:
                return f"{name}:{model}", f"{profile.api_key_env[0]} is set"
    return LOCAL_DEFAULT, "no API key configured: using the embedded model (no network needed)"


@app.command()
def chat(
    prompt: Annotated[str, typer.Argument(help="What to ask.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help='Spec "provider:model".')
    ] = None,
    system: Annotated[str | None, typer.Option("--system", "-s", help="A system prompt.")] = None,
    stream: Annotated[
        bool, typer.Option("--stream/--no-stream", help="Print tokens as they come.")
    ] = True,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", help="Cap on generated tokens.")
    ] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", "-t")] = None,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="API root for the provider.")
    ] = None,
) -> None:
    """Send one prompt and print the answer."""
    from agency._factory import chat_model
    from agency.errors import AgencyError

    if model is None:
        model, why = default_spec()
        _err.print(f"[dim]model: {model} ({why})[/dim]")
    messages: list[tuple[str, str]] = []
    if system:
        messages.append(("system", system))
    messages.append(("human", prompt))
    params: dict[str, object] = {}
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    if temperature is not None:
        params["temperature"] = temperature
    if base_url:
        params["base_url"] = base_url
    try:
        llm = chat_model(model, **params)
        if stream:
            for chunk in llm.stream(messages):
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
            sys.stdout.write("\n")
        else:
            # Model text goes out unchanged: rich would wrap it at the console's width.
            answer = llm.invoke(messages).text
            sys.stdout.write(answer if answer.endswith("\n") else answer + "\n")
    except AgencyError as exc:
        _err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from None


@app.command()
def models(
    provider: Annotated[
        str | None, typer.Argument(help="Provider name; all providers when omitted.")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="API root for the provider.")
    ] = None,
) -> None:
    """List the models a provider offers (or the known providers)."""
    from agency._factory import list_models
    from agency._specs import get_profile, known_providers
    from agency.errors import AgencyError

    if provider is None:
        table = Table("provider", "default model", "key variable", "base URL")
        for name in known_providers():
            profile = get_profile(name)
            table.add_row(
                name,
                profile.default_model or "-",
                ", ".join(profile.api_key_env) or "-",
                profile.base_url or "(base_url= required)",
            )
        _out.print(table)
        return
    try:
        found = list_models(provider, **({"base_url": base_url} if base_url else {}))
    except AgencyError as exc:
        _err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    table = Table("model", "owned by", "context")
    for info in sorted(found, key=lambda m: m.id):
        table.add_row(
            f"{provider}:{info.id}", info.owned_by or "-", str(info.context_window or "-")
        )
    _out.print(table)


@app.command()
def providers(
    config: Annotated[
        str | None,
        typer.Option(
            "--config", "-c", help="agency.toml; else the environment, else the embedded model."
        ),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Probe each provider with a models call.")
    ] = True,
) -> None:
    """Health and statistics of the configured providers."""
    from agency.app import Agency
    from agency.errors import AgencyError

    try:
        ag = Agency.from_config(config) if config else Agency.from_env()
        health = ag.health(check=check)
    except AgencyError as exc:
        _err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    table = Table("provider", "model", "reachable", "breaker", "limits", "latency ms")
    for name, row in health.items():
        if "unconfigured" in row:
            table.add_row(name, "-", "[red]no[/red]", "-", row["unconfigured"], "-")
            continue
        limits = row["limits"]
        shown = ", ".join(
            f"{k}={v}" for k, v in limits.items() if v is not None and k in ("rpm", "tpm")
        )
        reachable = row.get("reachable")
        table.add_row(
            name,
            row["spec"],
            "-" if reachable is None else ("[green]yes[/green]" if reachable else "[red]no[/red]"),
            row["breaker"]["state"],
            shown or "-",
            "-" if row["latency_ewma_ms"] is None else f"{row['latency_ewma_ms']:.0f}",
        )
    _out.print(table)
    _out.print(ag.stats())
    ag.close()


# -- workflows ------------------------------------------------------------------------------
_InputOption = Annotated[
    list[str] | None,
    typer.Option(
        "--input",
        "-i",
        help="KEY=VALUE, repeatable (a value in [...] or {...} is read as JSON). On resume, "
        "STEP=ANSWER answers an interrupt step.",
    ),
]
_CheckpointOption = Annotated[
    str | None,
    typer.Option(
        "--checkpoint",
        help="SQLite file of the runs (default: [workflows] checkpoint, else .agency/runs.sqlite).",
    ),
]
_ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config", "-c", help="agency.toml, for a workflow file that has no [llm] tables."
    ),
]
_BudgetOption = Annotated[
    float | None, typer.Option("--budget", help="USD the whole run may cost (over the file's).")
]
_JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")
]


@app.command("run")
def run_workflow(
    file: Annotated[str, typer.Argument(help="The workflow file (TOML).")],
    inputs: _InputOption = None,
    config: _ConfigOption = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Name the run (default: a random id).")
    ] = None,
    checkpoint: _CheckpointOption = None,
    budget: _BudgetOption = None,
    json_out: _JsonOption = False,
    batch: Annotated[
        str | None,
        typer.Option("--batch", help="Run once per line of this JSON-lines file of inputs."),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option("--out", help="--batch: append each run's result here (JSON lines)."),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="--batch: runs at a time.")
    ] = 8,
    ray: Annotated[
        bool, typer.Option("--ray", help="--batch: run as Ray tasks (a local cluster).")
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="--batch --ray: join this Ray cluster instead."),
    ] = None,
) -> None:
    """Run a workflow file: progress on stderr, the final output on stdout.

    Exit 0 when it completes; 1 failed, 3 waits for an answer (interrupt), 4 over budget,
    2 a bad file or option. With --batch: once per input, results to --out as they finish;
    running it again skips the inputs already in --out (exit 1 if a run failed).
    """
    import uuid

    if batch is not None:
        _run_batch(file, batch, out, config, checkpoint, concurrency, ray, ray_address)
        return
    values = wf_cli.parse_inputs(inputs)
    try:
        wf, ag, checkpoint = wf_cli.open_workflow(file, config, checkpoint)
    except (ValueError, OSError) as exc:  # ConfigError is a ValueError
        wf_cli.fail(wf_cli.reason(exc))
    missing = [k for k in wf.inputs if k not in values]
    if missing:
        ag.close()
        example = " ".join(f"--input {k}=..." for k in missing)
        wf_cli.fail(f"{file}: the workflow needs the inputs {missing}: add {example}")
    source = str(Path(file).resolve())
    run_id = run_id or uuid.uuid4().hex[:12]
    wf_cli.drive(
        wf,
        ag,
        checkpoint,
        source,
        run_id=run_id,
        json_out=json_out,
        inputs=values,
        budget_usd=budget,
    )


def _run_batch(
    file: str,
    batch: str,
    out: str | None,
    config: str | None,
    checkpoint: str | None,
    concurrency: int,
    ray: bool,
    ray_address: str | None,
) -> None:
    from agency.workflows.batch import run_batch

    try:
        done = run_batch(
            file, batch, engine="ray" if ray or ray_address else "local",
            concurrency=concurrency, out=out, checkpoint=checkpoint, config=config,
            address=ray_address,
        )
    except (ValueError, OSError, TypeError, ImportError) as exc:  # ConfigError is a ValueError
        wf_cli.fail(wf_cli.reason(exc))
    where = f"; results in {done.out}" if done.out else ""
    _err.print(
        f"{done.completed} completed, {done.failed} failed, {done.skipped} already done{where}",
        markup=False, highlight=False,
    )
    if out is None:
        for record in done.results:
            sys.stdout.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    raise typer.Exit(1 if done.failed else 0)


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(help="The run to continue (see `agency runs`).")],
    inputs: _InputOption = None,
    config: _ConfigOption = None,
    checkpoint: _CheckpointOption = None,
    budget: _BudgetOption = None,
    json_out: _JsonOption = False,
) -> None:
    """Continue a stopped, failed, over-budget or waiting run from its checkpoint.

    Steps that finished are not run, nor paid for, again; --input STEP=ANSWER answers an
    interrupt step; --budget raises the run's budget.
    """
    from agency.workflows._store import RunStore, is_database_url

    answers = wf_cli.parse_inputs(inputs)
    try:
        checkpoint = checkpoint or wf_cli.default_checkpoint(config)
    except ValueError as exc:
        wf_cli.fail(wf_cli.reason(exc))
    if not is_database_url(checkpoint) and not Path(checkpoint).is_file():
        wf_cli.fail(f"no runs at {redact(checkpoint)}: pass --checkpoint with the file the run used")
    store = RunStore(checkpoint)
    try:
        row = store.run(run_id)
    finally:
        store.close()
    if row is None:
        wf_cli.fail(
            f"no run {run_id!r} in {redact(checkpoint)}: see `agency runs --checkpoint ...`"
        )
    if not row.source:
        wf_cli.fail(f"run {run_id!r} was not started from a file: use Workflow.resume")
    try:
        wf, ag, checkpoint = wf_cli.open_workflow(row.source, config, checkpoint)
    except (ValueError, OSError) as exc:
        wf_cli.fail(wf_cli.reason(exc))
    wf_cli.drive(
        wf,
        ag,
        checkpoint,
        row.source,
        run_id=run_id,
        json_out=json_out,
        resume=True,
        answers=answers,
        budget_usd=budget,
    )


@app.command()
def runs(
    checkpoint: _CheckpointOption = None,
    trace: Annotated[
        str | None, typer.Option("--trace", help="Print this run's events instead.")
    ] = None,
    config: _ConfigOption = None,
) -> None:
    """The runs of a checkpoint file: id, workflow, status, cost, started, duration."""
    from agency.workflows._store import RunStore, is_database_url, read_trace, trace_path

    try:
        checkpoint = checkpoint or wf_cli.default_checkpoint(config)
    except ValueError as exc:
        wf_cli.fail(wf_cli.reason(exc))
    if trace is not None:
        events = read_trace(trace_path(checkpoint, trace))
        if not events:
            wf_cli.fail(f"no trace of run {trace!r} beside {redact(checkpoint)}", 1)
        for ev in events:
            if _out.is_terminal:
                line = wf_cli.trace_line(ev)
                _out.print(line, markup=False, highlight=False, soft_wrap=True)
            else:
                sys.stdout.write(json.dumps(ev, ensure_ascii=False, default=str) + "\n")
        return
    if not is_database_url(checkpoint) and not Path(checkpoint).is_file():
        _err.print(f"no runs yet ({checkpoint} does not exist)", markup=False, highlight=False)
        return
    store = RunStore(checkpoint)
    try:
        rows = store.runs()
    finally:
        store.close()
    cells = [
        [
            r.run_id,
            r.workflow,
            r.status,
            f"{r.cost:.6f}",
            datetime.fromtimestamp(r.started).isoformat(sep=" ", timespec="seconds"),
            f"{r.updated - r.started:.1f}s",
        ]
        for r in rows
    ]
    header = ["id", "workflow", "status", "cost", "started", "duration"]
    if _out.is_terminal:
        table = Table(*header)
        for row_cells in cells:
            table.add_row(*row_cells)
        _out.print(table)
    else:  # a pipe or a file: tab-separated, never wrapped
        for fields in [header, *cells]:
            sys.stdout.write("\t".join(fields) + "\n")


app.add_typer(a2a_cli.app, name="a2a")
app.command("serve")(serve_cli.serve)
app.add_typer(experiments_cli.experiments_app, name="experiments")
app.add_typer(keys_cli.keys_app, name="keys")
app.command("audit")(keys_cli.audit)


def main() -> None:
    """Console-script entry point."""
    app()
