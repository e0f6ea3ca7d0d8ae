r"""Configuration: ``agency.toml``, or environment variables for a quick start.

`load_config` returns one validated `AgencyConfig`. Contracts:

- Every string value may use ``${VAR}`` or ``${VAR:-default}`` (``$${`` is a literal ``${``).
  An unset variable without a default is a `ConfigError`, except in ``api_key``: that key stays
  ``None`` and the variable is remembered, so the error at use time names it.
- Every problem raises ONE `agency.errors.ConfigError` naming the source (file path or
  ``environment``), the key path (``llm.providers[1].temperature``), the bad value and the fix;
  several problems are listed one per line. Unknown keys suggest the closest known key.
- API keys are `pydantic.SecretStr`: never in clear in ``repr``, ``str``, dumps or errors.
- Core owns ``[llm]`` (the models in `agency._config_schema`). The other tables belong to the
  layers that use them (``[memory]``, ``[llm.cache]``: `agency.memory`; ``[agents]``:
  `agency.agents`), declared as `Section`\ s in the ``agency.config`` entry-point group: this
  module hands each its table while loading, so every table is checked at load time while core
  imports no layer above it. ``config.section("memory")`` is the layer's validated value.

The legacy form puts one provider's keys (``provider``, ``api_key``, ``model``/``text_model``,
...) directly under ``[llm]``. This module only imports `agency._config_schema` (one way).
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel, Field, PrivateAttr, ValidationError

from agency._config_schema import (
    _SENSITIVE,
    _VAR,
    BudgetConfig,
    ConfigModel,
    EmbeddingsSpec,
    FallbackConfig,
    FallbackRule,
    Float,
    Int,
    LLMConfig,
    Loc,
    ProviderEntry,
    Section,
    StateConfig,
    config_problem,
)
from agency._specs import get_profile, known_providers, suggest_provider
from agency.errors import ConfigError, redact
from agency.providers._profile import host_url

__all__ = [
    "AgencyConfig",
    "BudgetConfig",
    "ConfigModel",
    "EmbeddingsSpec",
    "FallbackConfig",
    "FallbackRule",
    "Float",
    "Int",
    "LLMConfig",
    "ProviderEntry",
    "Section",
    "config_from_env",
    "config_problem",
    "load_config",
    "sections",
]

SECTION_GROUP = "agency.config"
"""Entry-point group whose entry points load a `Section` (or a list of them)."""


@functools.cache
def _discovered() -> tuple[Section, ...]:
    found: list[Section] = []
    for ep in entry_points(group=SECTION_GROUP):
        loaded = ep.load()
        found += loaded if isinstance(loaded, list | tuple) else [loaded]
    return tuple(s for s in found if isinstance(s, Section))


def sections() -> dict[str, Section]:
    """The tables other layers own, by dotted key path (``"memory"``, ``"llm.cache"``)."""
    return {s.key: s for s in _discovered()}


class AgencyConfig(ConfigModel):
    """The whole configuration. Build it with `load_config`, `from_toml_str` or `from_dict`."""

    llm: LLMConfig = Field(default_factory=lambda: LLMConfig())
    """The ``[llm]`` table."""
    state: StateConfig = Field(default_factory=lambda: StateConfig())
    """The ``[state]`` table: where breakers, limiters and budgets live (one process, or a
    fleet sharing Redis)."""

    _source: str = PrivateAttr(default="<dict>")
    _sections: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> str:
        """Where this configuration came from: a file path, ``environment`` or ``<string>``."""
        return self._source

    def section(self, key: str) -> Any:
        """The value of the table at ``key`` (``"memory"``, ``"llm.cache"``, ``"agents"``), as
        the layer that owns it checked it; an absent table's value is its defaults."""
        if key not in self._sections:
            owner = sections().get(key)
            if owner is None:
                raise ConfigError(
                    f"no installed layer owns the table [{key}]",
                    source=self.source,
                    fix=f"install the layer that reads [{key}] (known: {sorted(sections())})",
                )
            problems: list[tuple[str, str, str]] = []
            value = _section_value(owner, {}, self, problems)
            if problems:
                raise _config_error(problems, self.source, [])
            self._sections[key] = value
        return self._sections[key]

    @classmethod
    def from_toml_str(
        cls, text: str, source: str = "<string>", *, env: Mapping[str, str] | None = None
    ) -> AgencyConfig:
        """Parse TOML text; `ConfigError` names ``source``, the line and the column on bad syntax."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"invalid TOML: {exc}",
                source=source,
                fix="fix the TOML syntax at that line and column "
                "(quote strings, one `key = value` per line)",
            ) from None
        return cls.from_dict(data, source=source, env=env)

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        source: str = "<dict>",
        *,
        env: Mapping[str, str] | None = None,
    ) -> AgencyConfig:
        """Validate parsed TOML-shaped data, expanding ``${VAR}`` from ``env`` (default os.environ)."""
        return _build(data, source, os.environ if env is None else env, expand=True)

    def provider(self, name: str) -> ProviderEntry:
        """The entry named ``name`` (or whose provider is ``name``); `ConfigError` otherwise."""
        entry = self.llm.find(name)
        if entry is None:
            problem, fix = self.llm._unknown_ref(name)
            raise ConfigError(problem, source=self.source, key="llm.providers", fix=fix)
        return entry

    def default(self) -> ProviderEntry:
        """The ``default_provider`` entry, else the one with the lowest ``priority``."""
        if self.llm.default_provider:
            return self.provider(self.llm.default_provider)
        return self.llm.ordered()[0]





# --------------------------------------------------------------------------- building


def _build(
    data: Mapping[str, Any], source: str, env: Mapping[str, str], *, expand: bool
) -> AgencyConfig:
    """Expand, normalise the legacy form, validate; raise one `ConfigError` for all problems."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a table, got {type(data).__name__}", source=source)
    problems: list[tuple[str, str, str]] = []
    unset_keys: dict[Loc, str] = {}
    bad: set[str] = set()
    raw: Any = dict(data)
    if expand:
        raw = _expand(raw, (), env, problems, unset_keys, bad)
    llm = raw.get("llm")
    legacy = isinstance(llm, dict) and "providers" not in llm and bool(set(llm) & _ENTRY_ONLY)
    renamed: set[int] = set()
    if isinstance(llm, dict):
        llm = raw["llm"] = dict(llm)
        if legacy:
            llm["providers"] = [{k: llm.pop(k) for k in list(llm) if k in _ENTRY_ONLY}]
        entries: list[Any] = (
            list(llm["providers"]) if isinstance(llm.get("providers"), list) else []
        )
        if entries:
            llm["providers"] = entries
        for i, entry in enumerate(entries):
            if isinstance(entry, dict) and "model" in entry:
                if "text_model" in entry:
                    where = "llm" if legacy else f"llm.providers[{i}]"
                    problems.append(
                        (
                            f"{where}.model",
                            "both 'model' and 'text_model' are set",
                            "keep only text_model",
                        )
                    )
                entries[i] = {("text_model" if k == "model" else k): v for k, v in entry.items()}
                renamed.add(i)
    tables = _take_sections(raw)
    cfg: AgencyConfig | None = None
    try:
        cfg = AgencyConfig.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            problems += _translate(err, legacy, renamed, bad)
    if cfg is not None:
        cfg._source = source
    for key, section in sections().items():
        if cfg is not None or section.check is None:  # a check needs core's tables
            value = _section_value(section, tables.get(key, {}), cfg, problems, bad)
            if cfg is not None:
                cfg._sections[key] = value
    if problems or cfg is None:
        raise _config_error(problems, source, _secrets({**raw, **tables}))
    for loc, var in unset_keys.items():
        index = loc[2] if not legacy and len(loc) == 4 else 0
        if isinstance(index, int) and index < len(cfg.llm.providers):
            cfg.llm.providers[index]._unset_key = (var, source, _path(loc))
    return cfg


def _take_sections(raw: dict[str, Any]) -> dict[str, Any]:
    """Remove the tables other layers own from ``raw`` (core's own validation skips them)."""
    tables: dict[str, Any] = {}
    for key, section in sections().items():
        *parents, leaf = section.path
        holder: Any = raw
        for part in parents:
            if not isinstance(holder.get(part), dict):
                break
            holder[part] = holder = dict(holder[part])  # a copy: the caller's data stays
        else:
            if leaf in holder:
                tables[key] = holder.pop(leaf)
    return tables


def _section_value(
    section: Section,
    table: Any,
    config: AgencyConfig | None,
    problems: list[tuple[str, str, str]],
    bad: set[str] | None = None,
) -> Any:
    """The layer's value for ``table``; its problems are added to ``problems``."""
    if section.check is not None and config is not None:
        try:
            return section.check(table, config)
        except ConfigError as exc:
            problems.append((exc.key or section.key, exc.problem, exc.fix or "see the docs"))
            return None
    if section.model is None:
        return table
    try:
        return section.model.model_validate(table)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            moved = {**err, "loc": (*section.path, *err["loc"])}
            problems += _translate(moved, False, set(), bad or set())
    return None


_ENTRY_ONLY = set(ProviderEntry.model_fields) - set(LLMConfig.model_fields) | {"model"}
_CORE_MODELS: dict[tuple[str, ...], type[BaseModel]] = {
    (): AgencyConfig,
    ("llm",): LLMConfig,
    ("llm", "providers"): ProviderEntry,
    ("llm", "fallback"): FallbackConfig,
    ("llm", "fallback", "rules"): FallbackRule,
    ("llm", "budget"): BudgetConfig,
}


@functools.cache
def _models() -> dict[tuple[str, ...], type[BaseModel]]:
    """Every table's model by key path (list indices dropped): core's and the sections'."""
    models = dict(_CORE_MODELS)

    def walk(path: tuple[str, ...], model: type[BaseModel]) -> None:
        models[path] = model
        for name, field in model.model_fields.items():
            for arg in (field.annotation, *typing.get_args(field.annotation)):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    walk((*path, name), arg)

    for section in sections().values():
        if section.model is not None:
            walk(section.path, section.model)
    return models


def _known_keys(path: tuple[str, ...]) -> set[str]:
    """The keys a table at ``path`` may hold: its model's fields and the sections under it."""
    model = _models().get(path)
    known = set(model.model_fields) if model else set()
    return known | {s.path[-1] for s in sections().values() if s.path[:-1] == path}


def _expand(
    value: Any,
    loc: Loc,
    env: Mapping[str, str],
    problems: list[tuple[str, str, str]],
    unset_keys: dict[Loc, str],
    bad: set[str],
) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, (*loc, k), env, problems, unset_keys, bad) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, (*loc, i), env, problems, unset_keys, bad) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        got = env.get(m.group(1))
        if got is None or (got == "" and m.group(2) is not None):
            if m.group(2) is not None:
                return m.group(2)
            missing.append(m.group(1))
            return ""
        return got

    out = _VAR.sub(sub, value)
    if "${" in _VAR.sub("", value):
        bad.add(_path(loc))
        problems.append(
            (
                _path(loc),
                "malformed ${...} reference",
                "write ${NAME} or ${NAME:-default} (NAME: letters, digits, _)",
            )
        )
    elif missing and _is_key_loc(loc):
        unset_keys[loc] = missing[0]
        return None
    elif missing:
        bad.add(_path(loc))
        problems.append(
            (
                _path(loc),
                f"environment variable {missing[0]} is not set",
                f"export {missing[0]}=..., or write ${{{missing[0]}:-default}}",
            )
        )
    return out


def _is_key_loc(loc: Loc) -> bool:
    return loc == ("llm", "api_key") or (loc[:2], loc[3:]) == (("llm", "providers"), ("api_key",))


def _secrets(raw: Any, key: str = "") -> list[str]:
    """Every string held under a secret-looking key, to scrub from error messages."""
    if isinstance(raw, dict):
        return [s for k, v in raw.items() for s in _secrets(v, str(k))]
    if isinstance(raw, list):
        return [s for v in raw for s in _secrets(v, key)]
    return [raw] if isinstance(raw, str) and _SENSITIVE.search(key) else []


def _path(loc: Loc) -> str:
    """``("llm", "providers", 1, "temperature")`` -> ``llm.providers[1].temperature``."""
    out = ""
    for part in loc:
        bare = isinstance(part, str) and re.fullmatch(r"[A-Za-z0-9_-]+", part)
        out += (f".{part}" if out else str(part)) if bare else f"[{part!r}]"
    return out


def _display(loc: Loc, legacy: bool, renamed: set[int]) -> Loc:
    """The key path as the user wrote it (legacy keys sit under ``llm``; ``model`` alias)."""
    if len(loc) >= 3 and loc[:2] == ("llm", "providers") and isinstance(loc[2], int):
        if loc[3:] == ("text_model",) and loc[2] in renamed:
            loc = (*loc[:3], "model")
        if legacy and loc[2] == 0:
            loc = ("llm", *loc[3:])
    return loc


_TYPE_WORDS = (
    ("int", "an integer"),
    ("float", "a number"),
    ("string", "a string"),
    ("bool", "true or false"),
    ("dict", "a table"),
    ("model", "a table"),
    ("list", "an array"),
)


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model whose keys sit at ``loc`` (list indices ignored), if any."""
    return _models().get(tuple(p for p in loc if isinstance(p, str)))


def _expected(loc: Loc, kind: str, ctx: Mapping[str, Any]) -> str:
    """Plain words for what the key at ``loc`` accepts, e.g. "a number >= 0 and <= 2"."""
    if kind == "literal_error":
        return f"one of {ctx.get('expected')}"
    words = next((w for prefix, w in _TYPE_WORDS if kind.startswith(prefix)), "a value")
    model = _model_at(loc[:-1]) if loc else None
    info = model.model_fields.get(str(loc[-1])) if model else None
    bounds = [
        f"{op} {getattr(m, attr)}"
        for m in (info.metadata if info else [])
        for attr, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
        if isinstance(m, annotated_types.BaseMetadata) and hasattr(m, attr)
    ]
    return words + (" " + " and ".join(bounds) if bounds else "")


def _show(value: Any) -> str:
    text = (
        "a table"
        if isinstance(value, dict)
        else "an array"
        if isinstance(value, list)
        else repr(value)
    )
    return text if len(text) <= 60 else text[:57] + "..."


def _translate(
    err: Mapping[str, Any], legacy: bool, renamed: set[int], bad: set[str]
) -> list[tuple[str, str, str]]:
    """Turn one pydantic error into ``(key path, problem, fix)`` lines."""
    loc: Loc = tuple(err["loc"])
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "agency_many":
        return [
            (_path(_display(loc + sub, legacy, renamed)), p, f) for sub, p, f in ctx["problems"]
        ]
    shown = _display(loc, legacy, renamed)
    where, leaf = _path(shown), str(shown[-1]) if shown else "value"
    if where in bad:
        return []  # already reported by ${VAR} expansion
    if kind == "agency_value":
        return [(where, ctx["problem"], ctx["fix"])]
    if kind == "extra_forbidden":
        known = _known_keys(tuple(p for p in loc[:-1] if isinstance(p, str)))
        if legacy and loc[:-1] == ("llm",):
            known |= _ENTRY_ONLY
        if loc[:-1] == ("llm",) and leaf in _ENTRY_ONLY:
            return [
                (
                    where,
                    f"{leaf!r} belongs in a provider entry",
                    "move it into each [[llm.providers]] entry, or drop [[llm.providers]] for the single-provider form",
                )
            ]
        close = difflib.get_close_matches(leaf, sorted(known), n=1, cutoff=0.6)
        if close:
            return [
                (
                    where,
                    f"unknown key {leaf!r}; did you mean {close[0]!r}?",
                    f"rename it to {close[0]!r}",
                )
            ]
        return [
            (where, f"unknown key {leaf!r}", f"remove it; known keys: {', '.join(sorted(known))}")
        ]
    if kind == "missing":
        example = '"openai" (or another known provider)' if leaf == "provider" else "..."
        return [(where, "required key is missing", f"add {leaf} = {example}")]
    msg = str(err["msg"])
    msg = msg[0].lower() + msg[1:]
    return [
        (
            where,
            f"{msg}, got {_show(err.get('input'))}",
            f"set {leaf} to {_expected(loc, kind, ctx)}",
        )
    ]


def _config_error(
    problems: list[tuple[str, str, str]], source: str, secrets: list[str]
) -> ConfigError:
    if len(problems) == 1:
        key, problem, fix = problems[0]
        return ConfigError(
            redact(problem, *secrets), source=source, key=key, fix=redact(fix, *secrets)
        )
    lines = [f"  {key}: {problem} -- fix: {fix}" for key, problem, fix in problems]
    text = redact(f"{len(problems)} problems:\n" + "\n".join(lines), *secrets)
    return ConfigError(text, source=source, fix="correct each key listed above")


# --------------------------------------------------------------------------- loading


def load_config(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> AgencyConfig:
    """Load a TOML file; with no path, ``$AGENCY_CONFIG``, then ``./agency.toml``, then env vars.

    ``env`` (default ``os.environ``) supplies ``${VAR}`` values and the quick-start variables.
    Raises one `ConfigError` for a missing/unreadable file, bad TOML or invalid values.
    """
    env = os.environ if env is None else env
    hint = ""
    if path is None:
        if env.get("AGENCY_CONFIG"):
            path, hint = env["AGENCY_CONFIG"], " (named by AGENCY_CONFIG)"
        elif Path("agency.toml").is_file():
            path = Path("agency.toml").resolve()
        else:
            return config_from_env(env)
    source = os.fspath(path)
    try:
        text = Path(source).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file not found{hint}",
            source=source,
            fix="create it (see agency.toml in the docs), pass another path, or "
            "configure with environment variables such as OPENAI_API_KEY",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read config file{hint}: {exc}",
            source=source,
            fix="point at a readable UTF-8 TOML file",
        ) from None
    return AgencyConfig.from_toml_str(text, source, env=env)


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def config_from_env(env: Mapping[str, str] | None = None) -> AgencyConfig:
    """The quick-start form, from environment variables (default ``os.environ``).

    One entry per provider whose key variable is set (or, for key-less local servers, whose
    base-URL variable is set), with ``<PROVIDER>_MODEL`` / ``<PROVIDER>_EMBEDDING_MODEL``;
    ``DEFAULT_LLM_PROVIDER`` picks the default (and gets an entry even without a key).
    ``ENABLE_LOAD_BALANCING`` + ``LOAD_BALANCING_STRATEGY`` (default round-robin) and
    ``ENABLE_COST_OPTIMIZATION`` (wins: strategy "cost") fill ``fallback``;
    ``MAX_COST_PER_REQUEST`` fills ``budget``; ``ENABLE_LLM_CACHING`` and ``LLM_CACHE_TTL`` fill
    ``cache``. With nothing set: one ``local`` entry (smollm2 + wordllama), no key needed.
    Bad values raise one `ConfigError` naming each variable.
    """
    env = os.environ if env is None else env
    problems: list[tuple[str, str, str]] = []

    def get(var: str) -> str:
        return env.get(var, "").strip()

    def flag(var: str) -> bool:
        if get(var).lower() not in _TRUE | _FALSE:
            problems.append(
                (var, f"expected true or false, got {get(var)!r}", f"set {var}=true or {var}=false")
            )
        return get(var).lower() in _TRUE

    def number(var: str, example: str, *, positive: bool = False) -> float | None:
        try:
            got = float(get(var)) if get(var) else None
        except ValueError:
            got = -1.0
        if got is not None and (got < 0 or (positive and got == 0)):
            want = "a number > 0" if positive else "a number >= 0"
            problems.append(
                (
                    var,
                    f"expected {want}, got {get(var)!r}",
                    f"set {var} to {want}, e.g. {var}={example}",
                )
            )
            return None
        return got

    known = known_providers()
    default = get("DEFAULT_LLM_PROVIDER").lower() or None
    if default is not None and default not in known:
        hint = suggest_provider(default)
        mean = f"; did you mean {hint!r}?" if hint else ""
        problems.append(
            (
                "DEFAULT_LLM_PROVIDER",
                f"unknown provider {default!r}{mean} Known providers: {', '.join(known)}",
                f"set DEFAULT_LLM_PROVIDER={hint or 'local'}",
            )
        )
        default = None
    entries: list[dict[str, Any]] = []
    for name in known:
        profile, prefix = get_profile(name), name.upper().replace("-", "_")
        key = next((get(v) for v in profile.api_key_env if get(v)), None)
        url = next((get(v) for v in profile.base_url_env if get(v)), None)
        if key or (url and not profile.requires_key) or name == default:
            entry = {
                "provider": name,
                "api_key": key,
                "text_model": get(f"{prefix}_MODEL"),
                "embedding_model": get(f"{prefix}_EMBEDDING_MODEL"),
                "base_url": url if not url or "://" in url else host_url(url, profile.base_url),
            }
            entries.append({k: v for k, v in entry.items() if v})
    llm: dict[str, Any] = {"providers": entries, "default_provider": default}
    strategy = get("LOAD_BALANCING_STRATEGY").lower() or None
    allowed = typing.get_args(FallbackConfig.model_fields["strategy"].annotation)
    if strategy is not None and strategy not in allowed:
        problems.append(
            (
                "LOAD_BALANCING_STRATEGY",
                f"unknown strategy {strategy!r}",
                f"use one of {', '.join(allowed)}",
            )
        )
        strategy = None
    cost_first, balance = flag("ENABLE_COST_OPTIMIZATION"), flag("ENABLE_LOAD_BALANCING")
    chosen = "cost" if cost_first else strategy or ("round-robin" if balance else "priority")
    llm["fallback"] = {"enabled": cost_first or balance, "strategy": chosen}
    llm["budget"] = {"max_cost_per_request": number("MAX_COST_PER_REQUEST", "0.05")}
    llm["cache"] = {
        "enabled": flag("ENABLE_LLM_CACHING"),
        "ttl_s": number("LLM_CACHE_TTL", "3600", positive=True),
    }
    if problems:
        raise _config_error(problems, "environment", [])
    return _build({"llm": llm}, "environment", env, expand=False)
