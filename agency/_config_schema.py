"""The configuration's models: the tables core owns, and how other layers add theirs.

Core owns ``[llm]`` (`LLMConfig`: ``[[llm.providers]]`` entries, ``[llm.fallback]``,
``[llm.routing]``, ``[llm.budget]``). Every other table belongs to the layer that uses it
(``[memory]`` and ``[llm.cache]`` to `agency.memory`, ``[agents]`` to `agency.agents`, ...):
that layer declares a `Section` (the key path and a `ConfigModel` or a checking function) in
the ``agency.config`` entry-point group, and `agency.config` hands it its table at load time.
Core never imports those layers; they import the pieces here (`ConfigModel`, `Int`, `Float`,
`EmbeddingsSpec`, `config_problem`) to build their models with the same error messages.

`agency.config` builds and loads `AgencyConfig` from these; import public names from there.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from agency._specs import get_profile, known_providers, parse_spec, suggest_provider
from agency.errors import ConfigError, ProviderNotFound
from agency.providers._profile import ProviderProfile

Loc = tuple[str | int, ...]
_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SENSITIVE = re.compile(r"(?i)(^|[_-])(key|api_?key|token|secret|password|authorization)$")
_LOCAL = {"provider": "local", "text_model": "smollm2", "embedding_model": "wordllama"}


def config_problem(problem: str, fix: str) -> PydanticCustomError:
    """A validation error that `agency.config` reports with ``problem`` and ``fix`` as written."""
    return PydanticCustomError("agency_value", "{problem}", {"problem": problem, "fix": fix})


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise config_problem(
            f"expected a number, got {str(value).lower()}", "write a number, not true/false"
        )
    return value


Int = Annotated[int, BeforeValidator(_no_bool)]
Float = Annotated[float, BeforeValidator(_no_bool)]


class ConfigModel(BaseModel):
    """Base of every configuration table: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class ProviderEntry(ConfigModel):
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
            raise config_problem(
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
            raise config_problem(f"{value!r} is not a URL", f"write it with a scheme: 'https://{value}'")
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


class FallbackRule(ConfigModel):
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


class FallbackConfig(ConfigModel):
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
    max_wait_ms: Int = Field(default=30_000, ge=0)
    """Longest one call sleeps at once (a rate limiter, a ``Retry-After``) before it gives
    up on an entry."""
    rules: list[FallbackRule] = Field(default_factory=list)
    """Per-failure rules."""


def _embeddings_spec(value: str) -> str:
    """``value`` if it is a valid ``"provider:model"`` embeddings spec."""
    try:
        parse_spec(value)
    except (ConfigError, ProviderNotFound) as exc:
        raise config_problem(
            f"{value!r} is not a 'provider:model' embeddings spec ({exc})",
            'write embeddings = "local:minilm" or another "provider:model"',
        ) from exc
    return value


EmbeddingsSpec = Annotated[str, AfterValidator(_embeddings_spec)]
"""A ``"provider:model"`` embeddings spec, checked when the configuration loads."""


class BudgetConfig(ConfigModel):
    """Spending limits (``[llm.budget]``), in US dollars."""

    max_cost_per_request: Float | None = Field(default=None, ge=0)
    """Most one request may cost."""
    max_cost_total: Float | None = Field(default=None, ge=0)
    """Most all requests together may cost."""
    roles: dict[str, Float] = Field(default_factory=dict)
    """Per-role limit, role name to dollars."""


class StateConfig(ConfigModel):
    """Where provider state lives (``[state]``): breakers, limiters, budget and counters.
    The fields and their meaning are `agency.resilience.shared.StatePolicy`'s."""

    backend: Literal["memory", "redis"] = "memory"
    """``"memory"``: each process on its own; ``"redis"``: every process of the fleet shares."""
    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    """The Redis the fleet shares (a secret: it may carry a password)."""
    prefix: str = Field(default="agency", min_length=1)
    """Key prefix in Redis."""
    timeout_s: Float = Field(default=0.25, gt=0)
    """Longest a call waits for Redis before going on without it."""
    retry_s: Float = Field(default=1.0, gt=0)
    """After a failure, how long Redis is left alone before it is tried again."""
    breakers_on_failure: Literal["open", "closed"] = "open"
    """Redis down: ``"open"`` uses the process's own breakers, ``"closed"`` skips providers."""
    limiters_on_failure: Literal["open", "closed"] = "open"
    """Redis down: ``"open"`` uses the process's own limiters, ``"closed"`` admits nothing."""
    budgets_on_failure: Literal["open", "closed"] = "closed"
    """Redis down: ``"closed"`` refuses priced calls, ``"open"`` uses the process's budget."""

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise config_problem("not a Redis URL", "write it as 'redis://host:6379/0'")
        return value


class LLMConfig(ConfigModel):
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



@dataclass(frozen=True)
class Section:
    """A table of the configuration that a layer above core owns and checks.

    Declared in the ``agency.config`` entry-point group (an entry point that loads a `Section`
    or a list of them); `agency.config` hands the layer its raw table at load time, so a bad key
    fails there, with the file, the key path and the fix, though core never imports the layer.
    """

    path: tuple[str, ...]
    """Where the table sits: ``("memory",)`` for ``[memory]``, ``("llm", "cache")``."""
    model: type[ConfigModel] | None = None
    """A model validated with core's error messages; the table's value is an instance (an
    absent table is validated as an empty one, so the model's defaults apply)."""
    check: Callable[[Any, Any], Any] | None = None
    """Instead of ``model``: ``check(table, config)`` returns the table's value or raises
    `agency.errors.ConfigError` (``config`` is the `AgencyConfig` with core's tables loaded)."""

    @property
    def key(self) -> str:
        """The dotted key path, e.g. ``"llm.cache"``."""
        return ".".join(self.path)
