"""The tables `agency.workflows` owns: ``[workflow]``, ``[[step]]`` and ``[workflows]``.

A workflow file is an ``agency.toml`` that may also hold one workflow::

    [workflow]                      # WorkflowTable
    name = "write-and-review"
    inputs = ["topic"]

    [[step]]                        # one table per step (see STEP_KEYS)
    name = "draft"
    prompt = "Write a short poem about {topic}"

``[workflows]`` (`WorkflowsConfig`) sets defaults for every run: the checkpoint file and the
concurrency. The three are `agency.config.Section`\\ s in the ``agency.config`` entry-point group
(`SECTIONS`), so ``agency.load_config(file)`` checks them while it loads: every key and type of
every step, and (when the file has ``[llm]`` tables) every ``models`` entry against them. What
needs the whole workflow (step names, cycles, placeholders) and the imports (``fn``, nested
``workflow`` files) is checked by `agency.workflows.file.load_workflow`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pydantic import Field

from agency.config import AgencyConfig, ConfigModel, Float, Int, LLMConfig, Section
from agency.errors import ConfigError

__all__ = [
    "SECTIONS",
    "STEP_KEYS",
    "WorkflowTable",
    "WorkflowsConfig",
    "check_models",
    "check_steps",
    "workflows_config",
]


class WorkflowTable(ConfigModel):
    """The ``[workflow]`` table of a workflow file."""

    name: str | None = None
    """The workflow's name (runs are listed under it); default the file's name."""
    description: str | None = None
    """One line on what it does."""
    inputs: list[str] = Field(default_factory=list)
    """State keys the caller supplies (``agency run FILE --input topic=...``)."""
    budget_usd: Float | None = Field(default=None, ge=0)
    """The most one run may cost, in USD."""
    max_concurrency: Int | None = Field(default=None, gt=0)
    """The most steps (and map branches) that run at once."""


class WorkflowsConfig(ConfigModel):
    """The ``[workflows]`` table: defaults for every workflow run."""

    checkpoint: str | None = None
    """Where runs are checkpointed: a SQLite file (default ``.agency/runs.sqlite``) or a
    Postgres URL, ``postgresql://user@host/db`` (``pip install 'agency[postgres]'``), so a
    run started on one machine resumes on another."""
    max_concurrency: Int | None = Field(default=None, gt=0)
    """The most steps that run at once, for workflows that set none."""


_STR = (str,)
_NUMBER = (int, float)
STEP_KEYS: Mapping[str, tuple[tuple[type, ...], str]] = MappingProxyType(
    {
        "name": (_STR, 'a step name such as "draft"'),
        "prompt": (_STR, 'a template such as "Summarise {text}"'),
        "system": (_STR, "a system message (a template too)"),
        "role": (_STR, 'a role of [llm.routing] such as "creative"'),
        "models": ((list,), 'a list of entry names or specs, e.g. ["primary", "local:smollm2"]'),
        "after": ((list,), 'a list of step names, e.g. ["draft"]'),
        "when": (_STR, "a condition such as \"'urgent' in triage\""),
        "route": ((bool,), "true or false"),
        "map": ((list, str), "a list of items, or the name of a list in the state"),
        "repeat": (_STR, "the name of an earlier step to go back to"),
        "until": (_STR, "a condition such as \"'approved' in review\""),
        "max_iterations": ((int,), "a whole number, at least 1"),
        "timeout_s": (_NUMBER, "a number of seconds above 0"),
        "max_attempts": ((int,), "a whole number, at least 1"),
        "budget_usd": (_NUMBER, "a number of USD, 0 or more"),
        "cache": ((bool,), "true or false"),
        "output": (_STR, "a state key"),
        "structured": ((dict,), 'a JSON schema as an inline table, e.g. { type = "object" }'),
        "max_tokens": ((int,), "a whole number, at least 1"),
        "interrupt": ((bool,), "true or false"),
        "fn": (_STR, '"package.module:function" (importable)'),
        "workflow": (_STR, "the path of another workflow file, relative to this one"),
        "agent": (_STR, "the name of an [[agent]] table of this file"),
        "options": ((dict,), "an inline table such as { temperature = 0.2 }"),
    }
)
"""The keys a ``[[step]]`` table may hold: the TOML types each accepts and what to write."""

_LIST_OF_STR = ("models", "after")
_LOWER_BOUNDS = {  # key: (bound, strictly above it)
    "max_iterations": (1, False),
    "max_attempts": (1, False),
    "max_tokens": (1, False),
    "timeout_s": (0, True),
    "budget_usd": (0, False),
}


def _type_name(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names.update({list: "an array", dict: "a table"})
    return names.get(type(value), type(value).__name__)


def check_steps(table: Any, source: str | None = None) -> tuple[Mapping[str, Any], ...]:
    """The ``[[step]]`` tables, each key and type checked; `ConfigError` names the first
    problem with its key path (``step[2].after[0]``) and the fix."""
    if isinstance(table, Mapping) and not table:
        return ()
    if not isinstance(table, list):
        raise ConfigError(
            f"step must be an array of tables, got {_type_name(table)}",
            source=source,
            key="step",
            fix="write each step as its own [[step]] table (two brackets)",
        )
    steps = []
    for i, raw in enumerate(table):
        where = f"step[{i}]"
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"expected a table, got {_type_name(raw)}",
                source=source,
                key=where,
                fix="write each step as a [[step]] table",
            )
        if "name" not in raw:
            raise ConfigError(
                "required key is missing",
                source=source,
                key=f"{where}.name",
                fix=f'add name = "step{i + 1}" (a unique step name)',
            )
        for key, value in raw.items():
            _check_key(where, key, value, source)
        steps.append(MappingProxyType(dict(raw)))
    return tuple(steps)


def _check_key(where: str, key: str, value: Any, source: str | None) -> None:
    if key not in STEP_KEYS:
        close = difflib.get_close_matches(key, list(STEP_KEYS), n=1, cutoff=0.6)
        raise ConfigError(
            f"unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
            source=source,
            key=f"{where}.{key}",
            fix=f"rename it to {close[0]!r}" if close else f"use one of {sorted(STEP_KEYS)}",
        )
    types, expected = STEP_KEYS[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise ConfigError(
            f"expected {expected}, got {_type_name(value)} {value!r}",
            source=source,
            key=f"{where}.{key}",
            fix=f"set {key} to {expected}",
        )
    checked: Any = value  # its type is one of ``types`` now
    if key in _LIST_OF_STR:
        for j, item in enumerate(checked):
            if not isinstance(item, str) or not item.strip():
                raise ConfigError(
                    f"expected a non-empty string, got {_type_name(item)} {item!r}",
                    source=source,
                    key=f"{where}.{key}[{j}]",
                    fix=f"make every item of {key} a non-empty string",
                )
    if key in _LOWER_BOUNDS:
        bound, strict = _LOWER_BOUNDS[key]
        if checked < bound or (strict and checked == bound):
            above = "above" if strict else "at least"
            raise ConfigError(
                f"{value!r} is too small",
                source=source,
                key=f"{where}.{key}",
                fix=f"set {key} to a number {above} {bound}",
            )


def check_models(steps: tuple[Mapping[str, Any], ...], llm: LLMConfig, source: str | None) -> None:
    """Every ``models`` entry names a ``[[llm.providers]]`` entry of ``llm`` or is a
    ``"provider:model"`` spec; `ConfigError` names the first that is neither, with the fix."""
    for i, step in enumerate(steps):
        for j, ref in enumerate(step.get("models") or ()):
            # The check [llm.routing] chains get, so a step's chain reads like a role's.
            if not llm._is_ref(ref):
                problem, fix = llm._unknown_ref(ref)
                raise ConfigError(problem, source=source, key=f"step[{i}].models[{j}]", fix=fix)


def _check_step_section(table: Any, config: AgencyConfig) -> tuple[Mapping[str, Any], ...]:
    steps = check_steps(table, config.source)
    if "llm" in config.model_fields_set:  # else the agency the workflow runs with is elsewhere
        check_models(steps, config.llm, config.source)
    return steps


SECTIONS = [
    Section(("workflow",), WorkflowTable),
    Section(("step",), check=_check_step_section),
    Section(("workflows",), WorkflowsConfig),
]
"""What `agency.config` hands this layer (the ``agency.config`` entry point ``workflows``)."""


def workflows_config(config: AgencyConfig) -> WorkflowsConfig:
    """The ``[workflows]`` table of ``config`` (its defaults when absent)."""
    value: WorkflowsConfig = config.section("workflows")
    return value
