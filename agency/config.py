"""Building an `AgencyConfig`: ``${VAR}`` expansion, validation errors turned into one
`ConfigError` with key paths and fixes, loading files, and the environment quick start.

Split from `agency.config` (the models) to keep both modules readable; import the public
names from `agency.config`.
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import (
    BaseModel,
    ValidationError,
)

from agency._specs import get_profile, known_providers, suggest_provider
from agency.config import (
    _SENSITIVE,
    _VAR,
    AgencyConfig,
    BudgetConfig,
    CacheConfig,
    FallbackConfig,
    FallbackRule,
    LLMConfig,
    Loc,
    MemoryConfig,
    ProviderEntry,
)
from agency.errors import ConfigError, redact
from agency.providers._profile import host_url

__all__ = ["config_from_env", "load_config"]


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
    cfg: AgencyConfig | None = None
    try:
        cfg = AgencyConfig.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            problems += _translate(err, legacy, renamed, bad)
    if problems or cfg is None:
        raise _config_error(problems, source, _secrets(raw))
    cfg._source = source
    for loc, var in unset_keys.items():
        index = loc[2] if not legacy and len(loc) == 4 else 0
        if isinstance(index, int) and index < len(cfg.llm.providers):
            cfg.llm.providers[index]._unset_key = (var, source, _path(loc))
    return cfg


_ENTRY_ONLY = set(ProviderEntry.model_fields) - set(LLMConfig.model_fields) | {"model"}
_MODELS: dict[tuple[str, ...], type[BaseModel]] = {
    (): AgencyConfig,
    ("llm",): LLMConfig,
    ("llm", "providers"): ProviderEntry,
    ("llm", "fallback"): FallbackConfig,
    ("llm", "fallback", "rules"): FallbackRule,
    ("llm", "cache"): CacheConfig,
    ("llm", "budget"): BudgetConfig,
    ("memory",): MemoryConfig,
}


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
    return _MODELS.get(tuple(p for p in loc if isinstance(p, str)))


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
        parent = _model_at(loc[:-1])
        known = set(parent.model_fields) if parent else set()
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
