"""Workflow files: one TOML file holds a workflow, and may hold the agency's ``[llm]`` tables.

    >>> wf = load_workflow("examples/write_and_review.toml")
    >>> wf.run({"topic": "the sea"}).outputs["final"]

The keys are those of `agency.workflows.config` (``[workflow]``, ``[[step]]``, ``[workflows]``)
next to any table of ``agency.toml``. Contracts:

- A malformed file raises ONE `agency.errors.ConfigError` naming the file, the key path
  (``step[2].after[0]``), what is wrong and the fix: unknown keys (with the closest known
  one), bad types, unknown step names, cycles, placeholders with no source, ``models`` entries
  that are neither a ``[[llm.providers]]`` entry of the agency nor a ``provider:model`` spec,
  ``fn`` targets that do not import, nested workflow files that are missing or include each
  other. Nothing runs and nothing is sent before the whole file is checked.
- The agency: the one given; else one built from the file when it has ``[llm]`` tables; else
  from ``config`` (an `AgencyConfig` or a path); else from `agency.config.load_config`'s
  defaults (``$AGENCY_CONFIG``, ``./agency.toml``, the environment, the embedded model).
- ``fn = "package.module:function"`` is imported (the module must be importable);
  ``agent = "name"`` runs the ``[[agent]]`` table of that name in this file (given the
  step's ``prompt``), built on this workflow's agency;
  ``workflow = "other.toml"`` is a nested workflow, its path relative to this file, run with
  this workflow's agency (one set of breakers and one budget).
- String values may use ``${VAR}`` like every value of ``agency.toml``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agency._factory import default_agency
from agency.agents.agent_file import resolve_callable
from agency.config import AgencyConfig, load_config
from agency.errors import ConfigError
from agency.workflows.config import WorkflowTable, check_models, workflows_config
from agency.workflows.graph import Workflow, WorkflowError
from agency.workflows.step import Step

__all__ = [
    "agency_config_for",
    "load_workflow",
    "read_workflow_file",
    "workflow_from_config",
    "workflow_from_dict",
]

PathLike = str | os.PathLike[str]


def read_workflow_file(path: PathLike) -> AgencyConfig:
    """The file's tables, every one checked (``[[step]]`` keys and types; ``models`` against
    the file's own ``[llm]`` when it has one); `ConfigError` otherwise."""
    source = os.fspath(path)
    if not Path(source).is_file():
        raise ConfigError(
            "workflow file not found",
            source=source,
            fix="check the path (relative paths start from the working directory)",
        )
    return load_config(source)


def agency_config_for(
    file_config: AgencyConfig, config: AgencyConfig | PathLike | None = None
) -> AgencyConfig:
    """The configuration a workflow file's agency is built from: the file itself when it has
    ``[llm]`` tables, else ``config`` (a config or a path), else `load_config`'s defaults."""
    if "llm" in file_config.model_fields_set:
        return file_config
    if isinstance(config, AgencyConfig):
        return config
    return load_config(config)


def load_workflow(
    path: PathLike, *, agency: Any = None, config: AgencyConfig | PathLike | None = None
) -> Workflow:
    """The `Workflow` of the file at ``path``, checked whole; `ConfigError` on any problem
    (see the module docstring for which agency it runs with)."""
    return _build(read_workflow_file(path), agency, config, ())


def workflow_from_config(
    file_config: AgencyConfig, *, agency: Any = None, config: AgencyConfig | PathLike | None = None
) -> Workflow:
    """The `Workflow` of a workflow file already read with `read_workflow_file`."""
    return _build(file_config, agency, config, ())


def workflow_from_dict(
    data: Mapping[str, Any],
    source: str = "<dict>",
    *,
    agency: Any = None,
    config: AgencyConfig | PathLike | None = None,
) -> Workflow:
    """The `Workflow` of TOML-shaped ``data`` (``source`` names it in errors; nested workflow
    paths are relative to its folder when it is a file path, else to the working directory)."""
    return _build(AgencyConfig.from_dict(data, source), agency, config, ())


def _build(
    file_config: AgencyConfig,
    agency: Any,
    config: AgencyConfig | PathLike | None,
    stack: tuple[Path, ...],
) -> Workflow:
    source = file_config.source
    if agency is None:
        agency = default_agency(agency_config_for(file_config, config))
    table: WorkflowTable = file_config.section("workflow")
    raw_steps: tuple[Mapping[str, Any], ...] = file_config.section("step")
    if not raw_steps:
        raise ConfigError(
            "the workflow has no steps",
            source=source,
            key="step",
            fix='add a [[step]] table with a name and a prompt, e.g. name = "draft"',
        )
    agency_config = getattr(agency, "config", None)
    if isinstance(agency_config, AgencyConfig):
        check_models(raw_steps, agency_config.llm, source)
    else:
        agency_config = file_config
    settings = workflows_config(file_config)
    here = _folder(source)
    wf = Workflow(
        table.name or (Path(source).stem if here else "workflow"),
        agency=agency,
        inputs=table.inputs,
        budget_usd=table.budget_usd,
        max_concurrency=table.max_concurrency
        or settings.max_concurrency
        or workflows_config(agency_config).max_concurrency,
    )
    own = (*stack, Path(source).resolve()) if here else stack
    agents = _Agents(file_config, agency)
    try:
        for i, raw in enumerate(raw_steps):
            wf.add(_step(i, raw, source, here or Path.cwd(), agency, own, agents))
        wf.validate()
    except WorkflowError as exc:
        raise ConfigError(exc.problem, source=source, key=exc.where, fix=exc.fix) from None
    _check_nested_inputs(wf, source)
    return wf


def _folder(source: str) -> Path | None:
    """The folder of ``source`` when it names a file."""
    path = Path(source)
    return path.parent if path.is_file() else None


# Step() refuses a few combinations itself; each message maps to its key and fix.
_STEP_PROBLEMS: tuple[tuple[str, str, str], ...] = (
    ("step name", "name", "use a letter or '_' first, then letters, digits, '_' or '-'"),
    (
        "must run exactly one of",
        "",
        "keep exactly one of prompt, fn, workflow, interrupt = true or route = true",
    ),
    ("models is empty", "models", 'name at least one model, e.g. models = ["local:smollm2"]'),
    ("repeat and until", "repeat", "set both repeat (the step to go back to) and until"),
)


def _step(
    i: int,
    raw: Mapping[str, Any],
    source: str,
    here: Path,
    agency: Any,
    stack: tuple[Path, ...],
    agents: _Agents,
) -> Step:
    fields = dict(raw)
    if "agent" in fields:
        fields["run"] = agents.get(fields.pop("agent"), f"step[{i}].agent")
    for key in ("after", "models"):
        if key in fields:
            fields[key] = tuple(fields[key])
    if "fn" in fields:
        fields["fn"] = resolve_callable(fields["fn"], where=f"step[{i}].fn", source=source)
    if "workflow" in fields:
        fields["workflow"] = _nested(
            fields["workflow"], source, f"step[{i}].workflow", here, agency, stack
        )
    try:
        return Step(**fields)
    except ValueError as exc:
        key, fix = "", "see the [[step]] keys in the README"
        for needle, field_name, known_fix in _STEP_PROBLEMS:
            if needle in str(exc):
                key, fix = field_name, known_fix
                break
        where = f"step[{i}].{key}" if key else f"step[{i}]"
        raise ConfigError(str(exc), source=source, key=where, fix=fix) from None


class _Agents:
    """The ``[[agent]]`` tables of a file, each built (once) when a step names it."""

    def __init__(self, file_config: AgencyConfig, agency: Any) -> None:
        from agency.config import sections

        self.source, self.agency = file_config.source, agency
        owned = "agent" in sections()  # agency.agents registers [[agent]]
        self.tables = list(file_config.section("agent")) if owned else []
        self.built: dict[str, Any] = {}

    def get(self, name: str, where: str) -> Any:
        if name not in self.built:
            table = next((t for t in self.tables if t.get("name") == name), None)
            if table is None:
                names = [t.get("name") for t in self.tables]
                raise ConfigError(
                    f"no [[agent]] named {name!r} in this file",
                    source=self.source,
                    key=where,
                    fix=f"name one of {names}"
                    if names
                    else "add an [[agent]] table with that name",
                )
            from agency.agents.agent_file import build_agents

            self.built.update(build_agents([table], self.agency))
        return self.built[name]


def _nested(
    value: str, source: str, where: str, here: Path, agency: Any, stack: tuple[Path, ...]
) -> Workflow:
    """The workflow of another file, relative to ``here``, with the same agency."""
    path = here / value
    if not path.is_file():
        raise ConfigError(
            f"no workflow file {value!r} (looked for {path})",
            source=source,
            key=where,
            fix=f"give the path of a workflow file relative to {here}",
        )
    if path.resolve() in stack:
        cycle = " -> ".join(p.name for p in (*stack, path.resolve()))
        raise ConfigError(
            f"workflow files include each other in a cycle: {cycle}",
            source=source,
            key=where,
            fix="remove one of these workflow entries",
        )
    return _build(read_workflow_file(path), agency, None, stack)


def _check_nested_inputs(wf: Workflow, source: str) -> None:
    """Each nested workflow's inputs are inputs or step outputs of this one."""
    known = set(wf.inputs) | {s.key for s in wf.steps.values()}
    for i, step in enumerate(wf.steps.values()):
        if step.workflow is None:
            continue
        for name in step.workflow.inputs:
            if name not in known:
                raise ConfigError(
                    f"the nested workflow needs the input {name!r}, which no input or step "
                    "of this workflow provides",
                    source=source,
                    key=f"step[{i}].workflow",
                    fix=f"add {name!r} to [workflow] inputs, or a step with that name or output",
                )
