"""``agency experiments``: the A/B tests of providers configured for `agency serve`, and their
reports from the gateway's audit log.

    agency experiments list [--config agency.toml] [--json]
    agency experiments report cheap-vs-strong [--config agency.toml] [--json]

The configuration is ``--config FILE``, else ``$AGENCY_CONFIG``, else ``./agency.toml`` when
present, else the defaults (`agency.config.load_config`); the experiments are its
``[[gateway.experiments]]`` tables, the audit log ``<[gateway] data_dir>/audit.sqlite``.
``report`` only reads that file (a missing one means no requests yet, not an error).

Tables go to stdout on a terminal; to a pipe, ``list`` writes tab-separated lines and
``report`` the same table at a fixed width; ``--json`` writes one JSON document. Exit 0 on
success, 1 for an unknown experiment, 2 for a bad configuration file or option.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # loaded when a command runs: `agency --help` stays fast
    from agency.gateway.config import ExperimentConfig, GatewayConfig

__all__ = ["experiments_app"]

experiments_app = typer.Typer(
    name="experiments",
    help="A/B tests of providers (gateway.experiments in agency.toml): list them, report on them.",
    no_args_is_help=True,
)
_err = Console(stderr=True)
_PIPE_WIDTH = 160  # a report written to a file keeps its table whole

ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config", "-c", help="agency.toml (default: ./agency.toml if present, else defaults)."
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout, nothing else.")
]


def _fail(reason: str, code: int = 1) -> NoReturn:
    _err.print(f"[red]error:[/red] {escape(' '.join(reason.split()))}", soft_wrap=True)
    raise typer.Exit(code)


def _note(text: str) -> None:
    _err.print(text, markup=False, highlight=False, soft_wrap=True)


def _gateway(config: str | None) -> tuple[GatewayConfig, str]:
    """The ``[gateway]`` table of the configuration and where it came from."""
    from agency.cli._workflows import reason
    from agency.config import load_config
    from agency.gateway.config import gateway_config

    try:
        cfg = load_config(config)
        return gateway_config(cfg), cfg.source
    except (ValueError, OSError) as exc:  # ConfigError is a ValueError
        _fail(reason(exc), 2)


def _arms(exp: ExperimentConfig) -> str:
    return "; ".join(f"{a.name} (weight {a.weight:g}): {' > '.join(a.chain)}" for a in exp.arms)


@experiments_app.command("list")
def list_experiments(config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """The configured experiments: name, model, sticky, arms with their weights and chains."""
    gw, source = _gateway(config)
    if json_out:
        data = [exp.model_dump(mode="json") for exp in gw.experiments]
        sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
        return
    if not gw.experiments:
        _note(f"no experiments configured in {source}: add a [[gateway.experiments]] table")
        return
    out = Console()
    header = ["name", "model", "sticky", "enabled", "arms"]
    rows = [
        [exp.name, exp.model, exp.sticky, "yes" if exp.enabled else "no", _arms(exp)]
        for exp in gw.experiments
    ]
    if out.is_terminal:
        table = Table(*header)
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))  # names are not markup
        out.print(table)
    else:  # a pipe or a file: tab-separated, never wrapped
        for fields in [header, *rows]:
            sys.stdout.write("\t".join(fields) + "\n")


@experiments_app.command("report")
def report(
    name: Annotated[str, typer.Argument(help="The experiment (see `agency experiments list`).")],
    json_out: JsonOption = False,
    config: ConfigOption = None,
    confidence: Annotated[
        float, typer.Option("--confidence", help="Confidence level of intervals and tests.")
    ] = 0.95,
) -> None:
    """Per arm: requests, error rate, p50/p95 latency, cost per request and mean feedback, each
    with a confidence interval; then which differences with the first arm are significant."""
    from agency.gateway.experiments import build_report, render_report, report_from_audit

    gw, source = _gateway(config)
    exp = next((e for e in gw.experiments if e.name == name), None)
    if exp is None:
        known = ", ".join(repr(e.name) for e in gw.experiments)
        _fail(
            f"no experiment {name!r} in {source}: "
            + (f"the configured ones are {known}" if known else
               "none is configured (add a [[gateway.experiments]] table)")
        )  # fmt: skip
    if not 0 < confidence < 1:
        _fail(f"--confidence {confidence}: give a level between 0 and 1, e.g. 0.95", 2)
    arms = [a.name for a in exp.arms]
    path = gw.path("audit.sqlite")
    if path.is_file():
        from agency.gateway.audit import AuditLog

        audit = AuditLog(path)
        try:
            result = report_from_audit(audit, name, arms=arms, confidence=confidence)
        finally:
            audit.close()
    else:
        _note(f"no audit log at {path} yet (the gateway writes it as it serves requests)")
        result = build_report(name, [], {}, arms=arms, confidence=confidence)
    if json_out:
        document: dict[str, Any] = {
            **result.to_dict(),
            "model": exp.model,
            "sticky": exp.sticky,
            "enabled": exp.enabled,
        }
        sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")
        return
    out = Console()
    if not out.is_terminal:
        out = Console(width=_PIPE_WIDTH)
    state = "" if exp.enabled else " (stopped)"
    out.print(
        Text(f"{exp.model}, sticky per {exp.sticky}{state}; arms: {_arms(exp)}", style="dim"),
        soft_wrap=True,
    )
    out.print(render_report(result))
