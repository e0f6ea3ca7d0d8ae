"""Configuration: ``agency.toml``, or environment variables for a quick start.

`load_config` returns one validated `AgencyConfig`. Contracts:

- Every string value may use ``${VAR}`` or ``${VAR:-default}`` (``$${`` is a literal ``${``).
  An unset variable without a default is a `ConfigError`, except in ``api_key``: that key stays
  ``None`` and the variable is remembered, so the error at use time names it.
- Every problem raises ONE `agency.errors.ConfigError` naming the source (file path or
  ``environment``), the key path (``llm.providers[1].temperature``), the bad value and the fix;
  several problems are listed one per line. Unknown keys suggest the closest known key.
- API keys are `pydantic.SecretStr`: never in clear in ``repr``, ``str``, dumps or errors.

Shape: ``[llm]`` (default_provider, timeout, max_retries), ``[[llm.providers]]`` entries
(`ProviderEntry`), ``[llm.fallback]``, ``[llm.routing]``, ``[llm.cache]``, ``[llm.budget]``, and
raw ``[agents]``, ``[memory]``, ``[workflows]`` tables. The legacy form puts one provider's keys
(``provider``, ``api_key``, ``model``/``text_model``, ...) directly under ``[llm]``.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from agency._specs import get_profile, known_providers, parse_spec, suggest_provider
from agency.errors import ConfigError, ProviderNotFound, redact
from agency.providers._profile import ProviderProfile

__all__ = [
    "AgencyConfig",
    "BudgetConfig",
    "CacheConfig",
    "FallbackConfig",
    "FallbackRule",
    "LLMConfig",
    "ProviderEntry",
    "config_from_env",
    "load_config",
]

Loc = tuple[str | int, ...]
_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SENSITIVE = re.compile(r"(?i)(^|[_-])(key|api_?key|token|secret|password|authorization)$")
_LOCAL = {"provider": "local", "text_model": "smollm2", "embedding_model": "wordllama"}


def _problem(problem: str, fix: str) -> PydanticCustomError:
    return PydanticCustomError("agency_value", "{problem}", {"problem": problem, "fix": fix})


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise _problem(
            f"expected a number, got {str(value).lower()}", "write a number, not true/false"
        )
    return value


Int = Annotated[int, BeforeValidator(_no_bool)]
Float = Annotated[float, BeforeValidator(_no_bool)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderEntry(_Model):
    """One configured provider: a registered provider plus its key, models and limits."""

    name: str = ""
    """Unique label of this entry; empty means ``provider``."""
    provider: str
    """A registered provider name (see `agency._specs.known_providers`)."""
    api_key: SecretStr | None = None
    """The key; ``None`` uses the provider's environment variables at use time. Never printed."""
    base_url: str | None = None
    """API root override, e.g. ``https://api.openai.com/v1``."""
    text_model: str | None = None
    """Chat model; ``None`` means the provider's default model."""
    embedding_model: str | None = None
    """Embedding model; ``None`` means the provider's default embedding model."""
    max_tokens: Int | None = Field(default=None, gt=0)
    """Default cap on generated tokens."""
    temperature: Float | None = Field(default=None, ge=0, le=2)
    """Default sampling temperature, 0 to 2."""
    priority: Int = 100
    """Order among entries: lower is tried first."""
    weight: Int = Field(default=1, ge=1)
    """Share of traffic for weighted load balancing."""
    rpm: Int | None = Field(default=None, gt=0)
    """Requests per minute this entry may send."""
    tpm: Int | None = Field(default=None, gt=0)
    """Tokens per minute this entry may use."""
    timeout: Float | None = Field(default=None, gt=0)
    """Per-request timeout in seconds; inherits ``llm.timeout``."""
    max_retries: Int | None = Field(default=None, ge=0)
    """Retries for retryable failures; inherits ``llm.max_retries``."""
    organization: str | None = None
    """OpenAI organization id."""
    api_version: str | None = None
    """API version (Azure OpenAI)."""
    deployment: str | None = None
    """Deployment name (Azure OpenAI)."""
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    """Extra HTTP headers; values of auth-like headers are masked in dumps."""

    _unset_key: tuple[str, str, str] | None = PrivateAttr(default=None)  # var, source, key path

    @model_validator(mode="before")
    @classmethod
    def _empty_key(cls, data: Any) -> Any:
        return (
            {**data, "api_key": None}
            if isinstance(data, dict) and data.get("api_key") == ""
            else data
        )

    @model_validator(mode="after")
    def _default_name(self) -> ProviderEntry:
        self.name = self.name or self.provider
        return self

    @field_validator("provider", mode="before")
    @classmethod
    def _known_provider(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        name = value.strip().lower()
        known = known_providers()
        if name not in known:
            hint = suggest_provider(name)
            mean = f"; did you mean {hint!r}?" if hint else ""
            raise _problem(
                f"unknown provider {value!r}{mean} Known providers: {', '.join(known)}",
                f"set provider = {hint!r}"
                if hint
                else "use a known provider, or install its plugin",
            )
        return name

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise _problem(f"{value!r} is not a URL", f"write it with a scheme: 'https://{value}'")
        return value

    @field_serializer("headers")
    def _mask_headers(self, headers: dict[str, str]) -> dict[str, str]:
        return {k: "**********" if _SENSITIVE.search(k) else v for k, v in headers.items()}

    @property
    def profile(self) -> ProviderProfile:
        """The registered `ProviderProfile` of ``provider``."""
        return get_profile(self.provider)

    @property
    def unset_api_key_env(self) -> str | None:
        """The variable ``api_key`` referenced that was unset at load time, if any."""
        return self._unset_key[0] if self._unset_key else None

    @property
    def spec(self) -> str:
        """``"provider:text_model"`` (the provider's default model when none is set)."""
        model = self.text_model or self.profile.default_model
        return f"{self.provider}:{model}" if model else self.provider

    @property
    def embedding_spec(self) -> str:
        """``"provider:embedding_model"`` (the provider's default when none is set)."""
        model = self.embedding_model or self.profile.default_embedding_model
        return f"{self.provider}:{model}" if model else self.provider

    def resolve_api_key(self, env: Mapping[str, str] | None = None) -> SecretStr | None:
        """The key, re-reading a ``${VAR}`` that was unset at load time from ``env``.

        Raises `ConfigError` naming that variable when it is still unset and the provider
        requires a key. ``None`` otherwise means "let the provider read its own variables".
        """
        if self.api_key is not None or self._unset_key is None:
            return self.api_key
        var, source, key = self._unset_key
        value = (os.environ if env is None else env).get(var)
        if value:
            return SecretStr(value)
        if self.profile.requires_key:
            raise ConfigError(
                f"provider entry {self.name!r} has no API key: ${{{var}}} is not set",
                source=source,
                key=key,
                fix=f"export {var}=... and retry",
            )
        return None

    def model_params(self) -> dict[str, Any]:
        """Keyword arguments for ``agency.chat_model(self.spec, **params)``; only those set.

        ``api_key`` (a `SecretStr`, see `resolve_api_key`), ``base_url``, ``temperature``,
        ``max_tokens``, ``timeout``, ``max_retries``, ``organization``, ``api_version``,
        ``deployment`` and ``default_headers`` (from ``headers``).
        """
        params = self.embedding_params()
        params.update(self._pick("temperature", "max_tokens", "organization"))
        if self.headers:
            params["default_headers"] = dict(self.headers)
        return params

    def embedding_params(self) -> dict[str, Any]:
        """Keyword arguments for ``agency.embeddings(self.embedding_spec, **params)``.

        ``api_key``, ``base_url``, ``timeout``, ``max_retries``, ``api_version`` and
        ``deployment``; only those set.
        """
        params = self._pick("base_url", "timeout", "max_retries", "api_version", "deployment")
        key = self.resolve_api_key()
        return {"api_key": key, **params} if key is not None else params

    def _pick(self, *names: str) -> dict[str, Any]:
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


class FallbackRule(_Model):
    """What to do when one kind of failure happens."""

    condition: Literal[
        "rate_limit", "unavailable", "timeout", "context_window", "content_filter", "auth"
    ]
    """The failure this rule handles."""
    fallback_providers: list[str] = Field(default_factory=list)
    """Entry names or ``"provider:model"`` specs to try next, in order."""
    retry_original: bool = False
    """Retry the failing provider before falling back."""
    retry_delay_ms: Int = Field(default=0, ge=0)
    """Milliseconds to wait before retrying the original."""


class FallbackConfig(_Model):
    """Fallback and load balancing across provider entries (``[llm.fallback]``)."""

    enabled: bool = False
    """Whether failures fall back to other entries."""
    strategy: Literal["priority", "round-robin", "weighted", "least-loaded", "latency", "cost"] = (
        "priority"
    )
    """How the next entry is chosen."""
    max_attempts: Int = Field(default=4, ge=1)
    """Attempts in total, across entries, for one request."""
    retry_delay_ms: Int = Field(default=1000, ge=0)
    """Milliseconds between attempts."""
    rules: list[FallbackRule] = Field(default_factory=list)
    """Per-failure rules."""


class CacheConfig(_Model):
    """Response cache (``[llm.cache]``)."""

    enabled: bool = False
    """Whether responses are cached."""
    backend: str = "chroma"
    """Cache backend name."""
    path: str | None = None
    """Where the backend stores data."""
    threshold: Float | None = Field(default=None, ge=0, le=1)
    """Similarity (0 to 1) above which a semantic cache hit counts."""
    ttl_s: Float | None = Field(default=None, gt=0)
    """Seconds an entry lives."""
    max_entries: Int | None = Field(default=None, gt=0)
    """Cap on cached entries."""


class BudgetConfig(_Model):
    """Spending limits (``[llm.budget]``), in US dollars."""

    max_cost_per_request: Float | None = Field(default=None, ge=0)
    """Most one request may cost."""
    max_cost_total: Float | None = Field(default=None, ge=0)
    """Most all requests together may cost."""
    roles: dict[str, Float] = Field(default_factory=dict)
    """Per-role limit, role name to dollars."""


class LLMConfig(_Model):
    """The ``[llm]`` table: provider entries and how they are used together."""

    default_provider: str | None = None
    """Entry name (or provider of an entry) used by default; else the lowest ``priority``."""
    timeout: Float | None = Field(default=None, gt=0)
    """Default per-request timeout in seconds for entries that set none."""
    max_retries: Int | None = Field(default=None, ge=0)
    """Default retry count for entries that set none."""
    providers: list[ProviderEntry] = Field(default_factory=list)
    """Provider entries; when empty, one ``local`` entry (runs with no key)."""
    fallback: FallbackConfig = Field(default_factory=lambda: FallbackConfig())
    """Fallback and load balancing."""
    routing: dict[str, list[str]] = Field(default_factory=dict)
    """Role name to a chain of entry names or ``"provider:model"`` specs."""
    cache: CacheConfig = Field(default_factory=lambda: CacheConfig())
    """Response cache."""
    budget: BudgetConfig = Field(default_factory=lambda: BudgetConfig())
    """Spending limits."""

    @model_validator(mode="after")
    def _check(self) -> LLMConfig:
        if not self.providers:
            self.providers = [ProviderEntry.model_validate(_LOCAL)]
        for entry in self.providers:
            if entry.timeout is None:
                entry.timeout = self.timeout
            if entry.max_retries is None:
                entry.max_retries = self.max_retries
        problems: list[tuple[Loc, str, str]] = []
        seen: dict[str, int] = {}
        for i, entry in enumerate(self.providers):
            if entry.name in seen:
                problems.append(
                    (
                        ("providers", i, "name"),
                        f"duplicate name {entry.name!r} (also llm.providers[{seen[entry.name]}])",
                        "give each [[llm.providers]] entry a unique name",
                    )
                )
            seen.setdefault(entry.name, i)
        if self.default_provider is not None and self.find(self.default_provider) is None:
            problems.append((("default_provider",), *self._unknown_ref(self.default_provider)))
        for role, chain in self.routing.items():
            problems += [
                (("routing", role, k), *self._unknown_ref(ref))
                for k, ref in enumerate(chain)
                if not self._is_ref(ref)
            ]
        for r, rule in enumerate(self.fallback.rules):
            problems += [
                (("fallback", "rules", r, "fallback_providers", k), *self._unknown_ref(ref))
                for k, ref in enumerate(rule.fallback_providers)
                if not self._is_ref(ref)
            ]
        if problems:
            raise PydanticCustomError(
                "agency_many", "{summary}", {"summary": problems[0][1], "problems": problems}
            )
        return self

    def find(self, name: str) -> ProviderEntry | None:
        """The entry named ``name``, else the first (by priority) whose provider is ``name``."""
        for entry in self.providers:
            if entry.name == name:
                return entry
        return next((e for e in self.ordered() if e.provider == name.lower()), None)

    def ordered(self) -> list[ProviderEntry]:
        """Entries by ``priority``, lowest first (stable for ties)."""
        return sorted(self.providers, key=lambda e: e.priority)

    def _is_ref(self, ref: str) -> bool:
        if self.find(ref) is not None:
            return True
        try:
            parse_spec(ref)
        except (ConfigError, ProviderNotFound):
            return False
        return True

    def _unknown_ref(self, ref: str) -> tuple[str, str]:
        names = sorted({e.name for e in self.providers} | {e.provider for e in self.providers})
        close = difflib.get_close_matches(ref, names, n=1, cutoff=0.6)
        hint = close[0] if close else suggest_provider(ref.partition(":")[0].lower())
        mean = f"; did you mean {hint!r}?" if hint else ""
        return (
            f"{ref!r} is not a provider entry or a 'provider:model' spec{mean}",
            f"use one of the entry names {names} or a spec like 'openai:gpt-4o-mini'",
        )


class AgencyConfig(_Model):
    """The whole configuration. Build it with `load_config`, `from_toml_str` or `from_dict`."""

    llm: LLMConfig = Field(default_factory=lambda: LLMConfig())
    """The ``[llm]`` table."""
    agents: dict[str, Any] = Field(default_factory=dict)
    """The raw ``[agents]`` table (reserved)."""
    memory: dict[str, Any] = Field(default_factory=dict)
    """The raw ``[memory]`` table (reserved)."""
    workflows: dict[str, Any] = Field(default_factory=dict)
    """The raw ``[workflows]`` table (reserved)."""

    _source: str = PrivateAttr(default="<dict>")

    @property
    def source(self) -> str:
        """Where this configuration came from: a file path, ``environment`` or ``<string>``."""
        return self._source

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
_EXTRA_URL_ENV = {"ollama": ("OLLAMA_API_URL", "OLLAMA_HOST", "OLLAMA_BASE_URL")}


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
        url = next(
            (get(v) for v in profile.base_url_env + _EXTRA_URL_ENV.get(name, ()) if get(v)), None
        )
        if key or (url and not profile.requires_key) or name == default:
            entry = {
                "provider": name,
                "api_key": key,
                "text_model": get(f"{prefix}_MODEL"),
                "embedding_model": get(f"{prefix}_EMBEDDING_MODEL"),
                "base_url": url if not url or "://" in url else f"http://{url}",
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
