"""The one exception tree of `agency`.

Every failure a provider can report is raised as one of these, whatever the wire format.
Each class also subclasses langchain-core's model error for the same condition, so
``except ModelRateLimitError`` and ``err.is_retryable`` mean the same thing in LangChain code
and here::

    AgencyError (Exception)
    ├── ConfigError (ValueError)                          bad TOML, env or parameters
    ├── ProviderNotFound (ValueError)                     unknown "provider:" prefix
    ├── CapabilityError (NotImplementedError)              the provider cannot do this at all
    ├── BudgetExceeded                                    refused before the call: over budget
    ├── AllProvidersFailed (ExceptionGroup, ModelAPIError)  every candidate failed; .exceptions
    └── ProviderError (ModelError)                        a provider call failed
        ├── AuthenticationError (ModelAuthenticationError)        401
        ├── PermissionDenied (ModelPermissionDeniedError)         403
        ├── ModelNotFound (ModelNotFoundError)                    404, model unknown / not pulled
        ├── BadRequest (ModelInvalidRequestError)                 400, 422
        │   ├── ContextWindowExceeded (ContextOverflowError)      prompt too long
        │   └── ContentFiltered                                   refused by a safety filter
        ├── RateLimited (ModelRateLimitError)       [retryable]   429, carries retry_after
        ├── ProviderUnavailable (ModelAPIError)     [retryable]   5xx, 529 overloaded, 408, 409
        │   └── CircuitOpen                         [retryable]   skipped: its breaker is open
        ├── Timeout (ModelTimeoutError)             [retryable]   connect/read timed out
        ├── ConnectionFailed (ModelConnectionError) [retryable]   refused, reset, DNS
        └── MalformedResponse (ModelAPIError)                     a body we cannot parse

Each `ProviderError` carries ``provider``, ``model``, ``status_code``, ``request_id`` and the
provider's own ``message``; none of them ever holds an API key (`redact` scrubs messages).
Adapters map wire failures in one place (`agency._http.error_from_response`) and raise
``from`` the underlying cause.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAPIError,
    ModelAuthenticationError,
    ModelConnectionError,
    ModelError,
    ModelInvalidRequestError,
    ModelNotFoundError,
    ModelPermissionDeniedError,
    ModelRateLimitError,
    ModelTimeoutError,
)

__all__ = [
    "AgencyError",
    "AllProvidersFailed",
    "AuthenticationError",
    "BadRequest",
    "BudgetExceeded",
    "CapabilityError",
    "CircuitOpen",
    "ConfigError",
    "ConnectionFailed",
    "ContentFiltered",
    "ContextWindowExceeded",
    "MalformedResponse",
    "ModelNotFound",
    "PermissionDenied",
    "ProviderError",
    "ProviderNotFound",
    "ProviderUnavailable",
    "RateLimited",
    "Timeout",
    "redact",
]

# Shapes of secrets that providers sometimes echo back in error messages
# ("Incorrect API key provided: sk-abc...").
_SECRET_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-*]{6,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}"),
    re.compile(r"AIza[0-9A-Za-z_\-]{10,}"),
    re.compile(r"gsk_[A-Za-z0-9]{8,}"),
    re.compile(r"r8_[A-Za-z0-9]{8,}"),
]


def redact(text: str, *secrets: str | None) -> str:
    """Return ``text`` with the given secrets and anything shaped like an API key masked."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.lastindex else "") + "***", text)
    return text


class AgencyError(Exception):
    """Base of every error `agency` raises on purpose."""


class ConfigError(AgencyError, ValueError):
    """Configuration is invalid: the message names the source, the key path and the fix."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        key: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.source = source
        self.key = key
        self.fix = fix
        self.problem = message
        parts = []
        if source:
            parts.append(source)
        if key:
            parts.append(f"[{key}]")
        head = ": ".join([" ".join(parts), message]) if parts else message
        super().__init__(head + (f"\n  fix: {fix}" if fix else ""))


class ProviderNotFound(AgencyError, ValueError):
    """The spec names a provider that is not registered."""


class CapabilityError(AgencyError, NotImplementedError):
    """The provider does not offer this capability (e.g. embeddings on Anthropic)."""


class ProviderError(AgencyError, ModelError):
    """A provider call failed. Carries where and why, never a secret."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        self.message = message
        self.provider = provider
        self.model = model
        self.status_code = status_code
        self.request_id = request_id
        self.body = body
        super().__init__(self._render())

    def _render(self) -> str:
        where = ":".join(p for p in (self.provider, self.model) if p)
        bits = [f"{where}: " if where else "", self.message]
        extra = []
        if self.status_code is not None:
            extra.append(f"status {self.status_code}")
        if self.request_id:
            extra.append(f"request id {self.request_id}")
        if extra:
            bits.append(f" ({', '.join(extra)})")
        return "".join(bits)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the keyword fields when pickled (multiprocessing, caches).
        return (_rebuild, (type(self), str(self), self.__dict__.copy()))


def _rebuild(cls: type[ProviderError], rendered: str, state: dict[str, Any]) -> ProviderError:
    err = cls.__new__(cls)
    Exception.__init__(err, rendered)
    err.__dict__.update(state)
    return err


class AuthenticationError(ProviderError, ModelAuthenticationError):
    """The key was missing, wrong or revoked (HTTP 401)."""


class PermissionDenied(ProviderError, ModelPermissionDeniedError):
    """The key is valid but may not do this (HTTP 403)."""


class ModelNotFound(ProviderError, ModelNotFoundError):
    """The model does not exist for this key, or (Ollama) is not pulled (HTTP 404)."""


class BadRequest(ProviderError, ModelInvalidRequestError):
    """The provider rejected the request as invalid (HTTP 400/422). Not retryable."""


class ContextWindowExceeded(BadRequest, ContextOverflowError):
    """The prompt plus ``max_tokens`` does not fit the model's context window."""


class ContentFiltered(BadRequest):
    """The provider's safety system refused the prompt or the answer."""


class RateLimited(ProviderError, ModelRateLimitError):
    """Too many requests or tokens (HTTP 429). ``retry_after`` is in seconds when known."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)


class ProviderUnavailable(ProviderError, ModelAPIError):
    """The provider failed or is overloaded (5xx, 529, 408, 409). Retryable."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)


class Timeout(ProviderError, ModelTimeoutError):
    """Connecting or reading took longer than the configured timeout. Retryable."""


class ConnectionFailed(ProviderError, ModelConnectionError):
    """The provider could not be reached (refused, reset, DNS). Retryable."""


class MalformedResponse(ProviderError, ModelAPIError):
    """The provider answered with something that is not its documented format."""

    is_retryable = False


class CircuitOpen(ProviderUnavailable):
    """The provider was not called: its circuit breaker is open after recent failures.

    ``retry_after`` is the number of seconds until a probe call is allowed.
    """


class BudgetExceeded(AgencyError):
    """The call was refused before anything was sent: its worst-case cost does not fit.

    ``scope`` is ``"request"``, ``"total"`` or ``"role:<name>"``; ``needed`` is the worst-case
    cost of the call and ``remaining`` what the scope had left, both in US dollars.
    """

    def __init__(self, message: str, *, scope: str, needed: float, remaining: float) -> None:
        self.scope = scope
        self.needed = needed
        self.remaining = remaining
        super().__init__(message)


class AllProvidersFailed(ExceptionGroup, AgencyError, ModelAPIError):  # type: ignore[misc]
    """Every candidate of a fallback chain failed; ``exceptions`` holds each failure in order.

    ``attempts`` lists ``(candidate, error)`` pairs; the message says what each one did. It is
    an `ExceptionGroup`, so ``except* RateLimited`` picks out the rate-limit failures.
    """

    attempts: list[tuple[str, BaseException]]

    def __new__(
        cls, message: str, exceptions: Sequence[Exception], attempts: Any = None
    ) -> AllProvidersFailed:
        self = super().__new__(cls, message, exceptions)
        self.attempts = list(attempts) if attempts is not None else [("?", e) for e in exceptions]
        return self

    def __init__(self, message: str, exceptions: Sequence[Exception], attempts: Any = None) -> None:
        super().__init__(message, exceptions)

    @property
    def is_retryable(self) -> bool:  # type: ignore[override]
        """Retryable when any candidate's failure was."""
        return any(getattr(e, "is_retryable", False) for e in self.exceptions)

    def derive(self, excs: Sequence[Exception]) -> AllProvidersFailed:  # type: ignore[override]
        kept = [(n, e) for n, e in self.attempts if e in excs]
        return AllProvidersFailed(self.message, list(excs), kept)

    def __str__(self) -> str:
        lines = [self.message]
        lines += [f"  {name}: {type(err).__name__}: {err}" for name, err in self.attempts]
        return "\n".join(lines)

    def __reduce__(self) -> tuple[Any, ...]:
        return (AllProvidersFailed, (self.message, list(self.exceptions), self.attempts))
