"""Agents defined in TOML: ``[[agent]]`` tables, in the same file as a workflow and ``[llm]``.

```toml
[[agent]]
name = "researcher"
role = "general"
instructions = "Find facts and cite them."
models = ["primary", "local:smollm2"]        # or model = "openai:gpt-4o-mini"
tools = ["mypkg.tools:search", { mcp = { command = "python", args = ["files.py"] } },
         { mcp = { url = "http://127.0.0.1:8931/mcp" } }]
memory = "research-notes"                    # a namespace of Agency.memory
max_steps = 6
budget_usd = 0.05
description = "Finds facts."
```

`SECTIONS` registers the ``agent`` array with `agency.config`, so a bad table fails when the
file loads, naming the file, the key path (``agent[1].tools[0]``) and the fix. `build_agents`
turns the checked tables into `Agent`\\ s on an agency.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from agency.config import AgencyConfig, Section
from agency.errors import ConfigError

__all__ = ["SECTIONS", "build_agents", "resolve_callable"]

_KEYS = (
    "name",
    "role",
    "instructions",
    "model",
    "models",
    "tools",
    "memory",
    "max_steps",
    "budget_usd",
    "description",
)


def resolve_callable(target: str, *, where: str, source: str | None = None) -> Any:
    """The callable ``"package.module:function"`` names (a tool, a step's ``fn``);
    `ConfigError` names the key and suggests a close name when it is missing."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(
            f"{target!r} does not name a function",
            source=source,
            key=where,
            fix=f'write {where.rsplit(".", 1)[-1].split("[")[0]} = "package.module:function"',
        )
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as exc:  # an import that fails in any way is the file's problem
        raise ConfigError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {exc}",
            source=source,
            key=where,
            fix="make the module importable (installed, or its folder on PYTHONPATH)",
        ) from None
    for part in attr.split("."):
        if not hasattr(found, part):
            names = [n for n in dir(found) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1, cutoff=0.6)
            raise ConfigError(
                f"{module_name!r} has no {attr!r}"
                + (f"; did you mean {close[0]!r}?" if close else ""),
                source=source,
                key=where,
                fix=f"name a function defined in {module_name}",
            )
        found = getattr(found, part)
    if not callable(found):
        raise ConfigError(
            f"{target!r} is a {type(found).__name__}, not a function",
            source=source,
            key=where,
            fix="name a function (for a step: def fn(state) -> output)",
        )
    return found


def _check(tables: Any, config: AgencyConfig) -> list[dict[str, Any]]:
    """The ``[[agent]]`` tables, checked whole while the configuration loads."""
    source = config.source
    if tables == {}:
        return []  # no [[agent]] in the file
    if not isinstance(tables, list):
        raise ConfigError(
            "expected [[agent]] tables", source=source, key="agent", fix="write [[agent]] tables"
        )
    seen: set[str] = set()
    for i, table in enumerate(tables):
        where = f"agent[{i}]"
        if not isinstance(table, Mapping):
            raise ConfigError("expected a table", source=source, key=where, fix="write [[agent]]")
        for key in table:
            if key not in _KEYS:
                close = difflib.get_close_matches(str(key), _KEYS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"unknown key {key!r}{hint}",
                    source=source,
                    key=f"{where}.{key}",
                    fix=f"use only {', '.join(_KEYS)}",
                )
        name = table.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(
                "an agent needs a name", source=source, key=f"{where}.name", fix='name = "..."'
            )
        if name in seen:
            raise ConfigError(
                f"a second agent named {name!r}",
                source=source,
                key=f"{where}.name",
                fix="give each agent a unique name",
            )
        seen.add(name)
        if "model" in table and "models" in table:
            raise ConfigError(
                "both model and models are set",
                source=source,
                key=f"{where}.models",
                fix="keep one: model = one spec, models = a fallback chain",
            )
        for j, ref in enumerate(
            table.get("models") or ([table["model"]] if "model" in table else [])
        ):
            if not config.llm._is_ref(str(ref)):
                problem, fix = config.llm._unknown_ref(str(ref))
                raise ConfigError(problem, source=source, key=f"{where}.models[{j}]", fix=fix)
        for j, tool in enumerate(table.get("tools") or []):
            here = f"{where}.tools[{j}]"
            if isinstance(tool, str):
                resolve_callable(tool, where=here, source=source)
            elif not (isinstance(tool, Mapping) and set(tool) == {"mcp"}):
                raise ConfigError(
                    f"a tool is 'package.module:function' or {{mcp = ...}}, not {tool!r}",
                    source=source,
                    key=here,
                    fix='write "pkg.module:function" or { mcp = { command = "..." } }',
                )
            else:
                from agency.agents.mcp import connection

                connection(tool["mcp"], where=f"{here}.mcp")
        for key, kind in (("max_steps", int), ("budget_usd", (int, float))):
            if key in table and (isinstance(table[key], bool) or not isinstance(table[key], kind)):
                raise ConfigError(
                    f"{key} must be a number, got {table[key]!r}",
                    source=source,
                    key=f"{where}.{key}",
                    fix=f"set {key} to a number",
                )
    return [dict(t) for t in tables]


SECTIONS = [Section(("agent",), check=_check)]
"""What `agency.config` hands this layer (the ``agency.config`` entry point ``agent_tables``)."""


def build_agents(tables: Sequence[Mapping[str, Any]], agency: Any) -> dict[str, Any]:
    """The `Agent` of each checked ``[[agent]]`` table, by name, on ``agency``."""
    from agency.agents.agent import Agent
    from agency.agents.mcp import mcp_tools

    agents: dict[str, Any] = {}
    for i, table in enumerate(tables):
        tools: list[Any] = []
        servers: dict[str, Any] = {}
        for j, tool in enumerate(table.get("tools") or []):
            if isinstance(tool, str):
                tools.append(resolve_callable(tool, where=f"agent[{i}].tools[{j}]"))
            else:
                servers[f"{table['name']}-{j}"] = tool["mcp"]
        if servers:
            tools += mcp_tools(servers)
        models = table.get("models") or ([table["model"]] if table.get("model") else None)
        memory = table.get("memory")
        agents[table["name"]] = Agent(
            table["name"],
            role=table.get("role", "general"),
            instructions=table.get("instructions"),
            model=agency.chat_model(models=models) if models else None,
            tools=tools,
            memory=agency.memory(memory) if memory else None,
            agency=agency,
            max_steps=int(table.get("max_steps", 8)),
            budget_usd=table.get("budget_usd"),
            description=table.get("description"),
        )
    return agents
