"""Provider profiles: who a provider is (base URL, auth, env vars), separate from its wire format.

A `ProviderProfile` is plain data. OpenAI-compatible services are profiles over one adapter
(`agency.providers.openai`), so adding one is a few lines in `presets.py`. A `Connection` is a
profile resolved with the caller's parameters and the environment: the base URL, the key (a
`SecretStr`), headers, timeout and retry count that one chat model or embeddings object uses.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias

from pydantic import SecretStr

from agency.errors import AuthenticationError, ConfigError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT_S",
    "Connection",
    "ProviderProfile",
    "Transport",
    "host_url",
]

Transport: TypeAlias = "httpx.BaseTransport | httpx.AsyncBaseTransport"
"""What ``transport=`` accepts: an httpx transport, sync or async (`httpx.MockTransport` is
both). A connection with one gets its own unpooled clients on it."""

DEFAULT_TIMEOUT_S = 60.0
"""Seconds a provider call may take before `Timeout` (connect, read and write each)."""
DEFAULT_MAX_RETRIES = 2
"""Retries after the first attempt for retryable failures (429, 5xx, timeouts, connection)."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class ProviderProfile:
    """Everything that identifies a provider, as data."""

    name: str
    """The spec prefix: ``"groq"`` in ``"groq:llama-3.3-70b-versatile"``."""
    adapter: str
    """Import path ``"module:Class"`` of the wire adapter; imported only when first used."""
    base_url: str | None = None
    """Default API root (``https://api.groq.com/openai/v1``); ``None`` requires ``base_url=``."""
    base_url_env: tuple[str, ...] = ()
    """Environment variables that override ``base_url``, first set wins."""
    api_key_env: tuple[str, ...] = ()
    """Environment variables that hold the key, first set wins."""
    requires_key: bool = True
    """False for local servers (vLLM, LM Studio, llama.cpp, Ollama) that accept no key."""
    auth_header: str = "authorization"
    """Header that carries the key."""
    auth_scheme: str = "Bearer"
    """Prefix before the key in ``auth_header``; empty for raw-key headers like ``api-key``."""
    default_headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """Headers sent on every request (version pins, attribution)."""
    default_model: str | None = None
    """Chat model used when the spec names only the provider (``"openai"``)."""
    default_embedding_model: str | None = None
    """Embedding model used by `agency.embeddings` when the spec names only the provider."""
    quirks: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    """Adapter-specific switches, e.g. ``{"stream_usage": False}`` where the service rejects
    ``stream_options``; each adapter documents the quirks it reads."""
    docs: str = ""
    """Where the provider documents its API (for error messages and the README matrix)."""

    def quirk(self, name: str, default: Any = None) -> Any:
        """Return one quirk switch, or ``default``."""
        return self.quirks.get(name, default)


@dataclass(frozen=True)
class Connection:
    """A profile resolved for one model object: where to send, with which key, how patiently."""

    profile: ProviderProfile
    """The provider this connection talks to."""
    base_url: str
    """API root, without a trailing slash."""
    api_key: SecretStr | None = None
    """The key, or ``None`` for servers that need none. Never printed."""
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """Extra headers (``default_headers`` merged with the caller's)."""
    timeout: float = DEFAULT_TIMEOUT_S
    """Per-request timeout in seconds."""
    max_retries: int = DEFAULT_MAX_RETRIES
    """Retries for retryable failures before the error is raised."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Provider extras (``organization``, ``api_version``, ``deployment``, ...)."""
    transport: Transport | None = field(default=None, repr=False, compare=False)
    """An httpx transport to send through instead of the shared pools (tests, proxies,
    `httpx.MockTransport`); not part of the connection's identity."""

    @property
    def provider(self) -> str:
        """The provider name, for errors and metadata."""
        return self.profile.name

    def __repr__(self) -> str:  # the dataclass repr would be fine, but say so explicitly
        key = "set" if self.api_key else "none"
        return f"Connection({self.profile.name!r}, base_url={self.base_url!r}, api_key={key})"

    def auth_headers(self) -> dict[str, str]:
        """Headers that carry the key, built per request so no client holds it."""
        if self.api_key is None:
            return {}
        secret = self.api_key.get_secret_value()
        scheme = self.profile.auth_scheme
        return {self.profile.auth_header: f"{scheme} {secret}" if scheme else secret}

    def secret(self) -> str | None:
        """The raw key, for redacting messages; never log it."""
        return self.api_key.get_secret_value() if self.api_key else None

    @classmethod
    def resolve(
        cls,
        profile: ProviderProfile,
        *,
        api_key: SecretStr | str | None = None,
        base_url: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        headers: Mapping[str, str] | None = None,
        model: str | None = None,
        require_key: bool = True,
        transport: Transport | None = None,
        **options: Any,
    ) -> Connection:
        """Resolve parameters, then environment variables, then the profile's defaults.

        Raises `ConfigError` when no base URL can be found and `AuthenticationError` when a key
        is required and none is given or set in the environment (naming the variables to set).
        """
        url = base_url or _first_env(profile.base_url_env) or profile.base_url
        if not url:
            raise ConfigError(
                f"provider {profile.name!r} has no default base URL",
                key="base_url",
                fix=f"pass base_url='http://host:port/v1' (e.g. agency.chat_model('{profile.name}:MODEL', base_url=...))",
            )
        if "://" not in url:  # OLLAMA_HOST=0.0.0.0:11434 and similar host[:port] forms
            url = host_url(url, profile.base_url)
        key: SecretStr | None
        if isinstance(api_key, SecretStr):
            key = api_key
        elif api_key:
            key = SecretStr(api_key)
        else:
            env_key = _first_env(profile.api_key_env)
            key = SecretStr(env_key) if env_key else None
        if key is None and profile.requires_key and require_key:
            names = " or ".join(profile.api_key_env) or "api_key="
            raise AuthenticationError(
                f"no API key: set {names}, or pass api_key=",
                provider=profile.name,
                model=model,
            )
        merged = {**profile.default_headers, **(headers or {})}
        return cls(
            profile=profile,
            base_url=url.rstrip("/"),
            api_key=key,
            headers=MappingProxyType(merged),
            timeout=DEFAULT_TIMEOUT_S if timeout is None else float(timeout),
            max_retries=DEFAULT_MAX_RETRIES if max_retries is None else int(max_retries),
            options={k: v for k, v in options.items() if v is not None},
            transport=transport,
        )


def _first_env(names: tuple[str, ...]) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def host_url(host: str, default_url: str | None) -> str:
    """``host[:port]`` as a URL; a missing port is the profile's default port (Ollama's
    ``OLLAMA_HOST=somehost`` means ``http://somehost:11434``)."""
    from urllib.parse import urlsplit

    url = f"http://{host}"
    if urlsplit(url).port is None and default_url:
        port = urlsplit(default_url).port
        if port is not None:
            url = f"http://{host.rstrip('/')}:{port}"
    return url
