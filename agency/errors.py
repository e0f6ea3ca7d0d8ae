"""The one exception tree of `agency`.

Every failure a provider can report is raised as one of these, whatever the wire format.
Each class also subclasses langchain-core's model error for the same condition, so
``except ModelRateLimitError`` and ``err.is_retryable`` mean the same thing in LangChain code
and here (``is_retryable`` comes from `ERROR_POLICIES`, below)::

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
        ├── RateLimited (ModelRateLimitError)                     429, carries retry_after
        ├── ProviderUnavailable (ModelAPIError)                   5xx, 529 overloaded, 408, 409
        │   └── CircuitOpen                                       skipped: its breaker is open
        ├── Timeout (ModelTimeoutError)                           connect/read timed out
        ├── ConnectionFailed (ModelConnectionError)               refused, reset, DNS
        └── MalformedResponse (ModelAPIError)                     a body we cannot parse

Each `ProviderError` carries ``provider``, ``model``, ``status_code``, ``request_id`` and the
provider's own ``message``; none of them ever holds an API key (`redact` scrubs messages).
Adapters map wire failures in one place (`agency._http.error_from_response`) and raise
``from`` the underlying cause: the HTTP status decides the class.

What each class *means* is one table, `ERROR_POLICIES`, read by the adapters' retry loop
(`agency._http.RetryPolicy`), langchain-core's ``is_retryable`` (set on each class from it),
the fallback loop (`agency.resilience.fallback`) and the circuit breaker
(`agency.resilience.breaker.counts_as_failure`). `classify` looks a failure up by its MRO,
most specific class first::

    class                  retry same  fall back  breaker failure  condition
    RateLimited            yes         yes        yes              rate_limit
    CircuitOpen            yes         yes        no (not called)  unavailable
    ProviderUnavailable    yes         yes        yes              unavailable
    Timeout                yes         yes        yes              timeout
    ConnectionFailed       yes         yes        yes              unavailable
    MalformedResponse      no          yes        yes              unavailable
    ModelNotFound          no          yes        yes              unavailable
    AuthenticationError    no          by rule    yes              auth
    PermissionDenied       no          by rule    yes              auth
    ContextWindowExceeded  no          by rule    no               context_window
    ContentFiltered        no          by rule    no               content_filter
    BadRequest             no          no         no               -
    AllProvidersFailed     no          no         no               -
    ProviderError (other)  no          no         yes              -
    langchain-core ModelInvalidRequestError / ContextOverflowError:   breaker no
    langchain-core ModelError, builtin TimeoutError / ConnectionError: breaker yes
    anything else (bugs, BudgetExceeded, ConfigError, cancellation):  all no

*Retry same*: the same provider may be asked again (the adapter's backoff loop; later in the
same call in the fallback loop), waiting ``Retry-After`` when given. A provider that answered
garbage (`MalformedResponse`) or lacks the model (`ModelNotFound`) answers the same request the
same way again, so neither is retried in place; both fall back, because another entry may
have the model or a sane reply. One failure may opt out of retries by setting
``is_retryable = False`` on the instance (an in-process failure that would only repeat).
*Fall back*: another provider is tried; "by rule" only where a ``[[llm.fallback.rules]]``
rule names the condition; "no" is raised at once (the request itself is wrong, every provider
would refuse it). *Breaker failure*: evidence the provider (or this entry's key or model) is
unusable; the caller's own mistakes (a prompt too long, a filtered prompt) are not, or one bad
request would take a healthy provider out for everyone. *Condition*: the name
``[[llm.fallback.rules]]`` use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

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
    "ERROR_POLICIES",
    "AgencyError",
    "AllProvidersFailed",
    "AuthenticationError",
    "BadRequest",
    "BudgetExceeded",
    "CapabilityError",
    "CircuitOpen",
    "Condition",
    "ConfigError",
    "ConnectionFailed",
    "ContentFiltered",
    "ContextWindowExceeded",
    "ErrorPolicy",
    "FallBack",
    "MalformedResponse",
    "ModelNotFound",
    "PermissionDenied",
    "ProviderError",
    "ProviderNotFound",
    "ProviderUnavailable",
    "RateLimited",
    "Timeout",
    "classify",
    "redact",
    "retries_same",
]

# Shapes of secrets that providers sometimes echo back in error messages
# ("Incorrect API key provided: sk-abc...").
_SECRET_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-*]{6,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}"),
    re.compile(r"AIza[0-9A-Za-z_\-]{10,}"),
    re.compile(r"gsk_[A-Za-z0-9]{8,}"),
    re.compile(r"r8_[A-Za-z0-9]{8,}"),
    re.compile(r"(://[^/:@\s]*:)[^@/\s]+(?=@)"),  # a password in a URL (Redis, Postgres)
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
    """The provider rejected the request as invalid (HTTP 400/422)."""


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
    """The provider failed or is overloaded (5xx, 529, 408, 409)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)


class Timeout(ProviderError, ModelTimeoutError):
    """Connecting or reading took longer than the configured timeout."""


class ConnectionFailed(ProviderError, ModelConnectionError):
    """The provider could not be reached (refused, reset, DNS)."""


class MalformedResponse(ProviderError, ModelAPIError):
    """The provider answered with something that is not its documented format."""


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


# --------------------------------------------------------------------------- what errors mean
Condition = Literal[
    "rate_limit", "unavailable", "timeout", "context_window", "content_filter", "auth"
]
"""The failure names ``[[llm.fallback.rules]]`` speak of."""

FallBack = Literal["yes", "by_rule", "no"]
"""Whether a failure moves on to another provider: always, only where a rule names its
condition, or never (raised at once)."""


@dataclass(frozen=True)
class ErrorPolicy:
    """What one class of failure means to every loop that handles failures."""

    retry_same: bool
    """Ask the same provider again (after backoff or ``Retry-After``)."""
    fall_back: FallBack
    """Move on to another provider: ``"yes"``, ``"by_rule"`` or ``"no"``."""
    breaker_failure: bool
    """Record it on the provider's circuit breaker (else the call is released unjudged)."""
    condition: Condition | None
    """The name rules match it by; ``None``: no rule can name it."""


_UNKNOWN = ErrorPolicy(False, "no", False, None)

ERROR_POLICIES: Mapping[type[BaseException], ErrorPolicy] = MappingProxyType(
    {
        RateLimited: ErrorPolicy(True, "yes", True, "rate_limit"),
        CircuitOpen: ErrorPolicy(True, "yes", False, "unavailable"),
        ProviderUnavailable: ErrorPolicy(True, "yes", True, "unavailable"),
        Timeout: ErrorPolicy(True, "yes", True, "timeout"),
        ConnectionFailed: ErrorPolicy(True, "yes", True, "unavailable"),
        MalformedResponse: ErrorPolicy(False, "yes", True, "unavailable"),
        ModelNotFound: ErrorPolicy(False, "yes", True, "unavailable"),
        AuthenticationError: ErrorPolicy(False, "by_rule", True, "auth"),
        PermissionDenied: ErrorPolicy(False, "by_rule", True, "auth"),
        ContextWindowExceeded: ErrorPolicy(False, "by_rule", False, "context_window"),
        ContentFiltered: ErrorPolicy(False, "by_rule", False, "content_filter"),
        BadRequest: ErrorPolicy(False, "no", False, None),
        AllProvidersFailed: _UNKNOWN,  # an aggregate: each member was judged on its own
        ProviderError: ErrorPolicy(False, "no", True, None),
        # Failures of integrations outside `agency` (the langchain-core bases) and raw network
        # errors no adapter wrapped: they only ever reach a circuit breaker.
        ModelInvalidRequestError: _UNKNOWN,
        ContextOverflowError: _UNKNOWN,
        ModelError: ErrorPolicy(False, "no", True, None),
        TimeoutError: ErrorPolicy(False, "no", True, None),
        ConnectionError: ErrorPolicy(False, "no", True, None),
    }
)
"""The one table of what each failure means; see the module docstring. Look rows up with
`classify` (by MRO), never by exact class."""


def classify(exc: BaseException | type[BaseException]) -> ErrorPolicy:
    """The `ERROR_POLICIES` row of ``exc`` (an exception or a class): its most specific class
    in the table; anything not in it gets the all-"no" row."""
    cls = exc if isinstance(exc, type) else type(exc)
    # Only failures get here, and an MRO is a handful of classes: no cache needed.
    return next((ERROR_POLICIES[k] for k in cls.__mro__ if k in ERROR_POLICIES), _UNKNOWN)


def retries_same(exc: BaseException) -> bool:
    """Whether the same provider may be asked again after ``exc``: the table's ``retry_same``,
    unless this one failure was marked ``is_retryable = False`` (or True) on the instance."""
    override = getattr(exc, "__dict__", {}).get("is_retryable")
    return classify(exc).retry_same if override is None else bool(override)


# langchain-core's flag, on every class of ours, says what the table says.
for _cls, _policy in ERROR_POLICIES.items():
    if issubclass(_cls, ProviderError):
        _cls.is_retryable = _policy.retry_same
del _cls, _policy
