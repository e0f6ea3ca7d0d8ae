"""What the gateway answers when a request fails: one `GatewayError`, rendered per wire format.

`from_exception` maps `agency.errors` onto HTTP: the client's own mistakes keep their 4xx
(a bad request, a prompt over the context window), a budget refusal is 429 ``insufficient_quota``
that SDKs must not retry (``x-should-retry: false``), rate limits are 429 with ``retry-after``,
every candidate down is 503 with ``retry-after`` when a breaker says when, a timeout is 504 and
any other upstream failure 502. A failure's ``kind`` is what the audit log and ``/metrics``
count (``rate_limit``, ``budget``, ``unavailable``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from agency.errors import (
    AllProvidersFailed,
    AuthenticationError,
    BadRequest,
    BudgetExceeded,
    CapabilityError,
    CircuitOpen,
    ConfigError,
    ContentFiltered,
    ContextWindowExceeded,
    ModelNotFound,
    PermissionDenied,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    Timeout,
)

__all__ = ["GatewayError", "from_exception"]


@dataclass
class GatewayError(Exception):
    """A failed request: its HTTP status and what the client is told."""

    status: int
    """HTTP status."""
    message: str
    """What went wrong and, where it helps, what to do."""
    kind: str = "api_error"
    """OpenAI's error ``type`` (``invalid_request_error``, ``rate_limit_error``, ...)."""
    param: str | None = None
    """The request field at fault."""
    code: str | None = None
    """A stable code: ``invalid_api_key``, ``insufficient_quota``, ``model_not_found``, ..."""
    retry_after: float | None = None
    """Seconds after which the same request may succeed (sent as ``retry-after``)."""
    retry: bool | None = None
    """Whether SDKs should retry (sent as ``x-should-retry`` when not None)."""
    failure: str = "error"
    """What the audit log and metrics count: ``rate_limit``, ``budget``, ``auth``, ..."""
    headers: dict[str, str] = field(default_factory=dict)
    """Further response headers."""

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def response_headers(self) -> dict[str, str]:
        """``retry-after`` (whole seconds, rounded up), ``x-should-retry`` and the rest."""
        out = dict(self.headers)
        if self.retry_after is not None:
            out["retry-after"] = str(max(1, math.ceil(self.retry_after)))
            out["retry-after-ms"] = str(max(1, math.ceil(self.retry_after * 1000)))
        if self.retry is not None:
            out["x-should-retry"] = "true" if self.retry else "false"
        return out


def _min_retry(errors: Sequence[BaseException]) -> float | None:
    waits = [w for e in errors if (w := getattr(e, "retry_after", None)) is not None]
    return min(waits) if waits else None


def _one(exc: BaseException) -> GatewayError:
    text = str(exc)
    if isinstance(exc, BudgetExceeded):
        return GatewayError(
            429,
            f"budget exceeded: {text}",
            "insufficient_quota",
            code="insufficient_quota",
            retry=False,
            failure="budget",
        )
    if isinstance(exc, RateLimited):
        return GatewayError(
            429,
            text,
            "rate_limit_error",
            code="rate_limit_exceeded",
            retry_after=exc.retry_after,
            failure="rate_limit",
        )
    if isinstance(exc, ContextWindowExceeded):
        return GatewayError(
            400,
            text,
            "invalid_request_error",
            code="context_length_exceeded",
            param="messages",
            failure="context_window",
        )
    if isinstance(exc, ContentFiltered):
        return GatewayError(
            400, text, "invalid_request_error", code="content_filter", failure="content_filter"
        )
    if isinstance(exc, BadRequest):
        return GatewayError(400, text, "invalid_request_error", failure="bad_request")
    if isinstance(exc, CapabilityError | ConfigError):
        return GatewayError(400, text, "invalid_request_error", failure="bad_request")
    if isinstance(exc, AuthenticationError | PermissionDenied):
        # The gateway's upstream key failed: not the client's doing.
        return GatewayError(
            502,
            f"upstream refused the gateway's key: {text}",
            "api_error",
            code="upstream_auth",
            failure="auth",
        )
    if isinstance(exc, Timeout):
        return GatewayError(504, text, "api_error", code="timeout", failure="timeout")
    if isinstance(exc, ProviderUnavailable):
        return GatewayError(
            503,
            text,
            "api_error",
            code="unavailable",
            retry_after=exc.retry_after,
            failure="unavailable",
        )
    if isinstance(exc, ModelNotFound):
        return GatewayError(
            502, text, "api_error", code="upstream_model_not_found", failure="unavailable"
        )
    if isinstance(exc, ProviderError):
        return GatewayError(502, text, "api_error", code="upstream_error", failure="unavailable")
    return GatewayError(
        500, f"internal error: {type(exc).__name__}", "api_error", failure="internal"
    )


def from_exception(exc: BaseException) -> GatewayError:
    """The `GatewayError` for a failure raised by the facade (see the module docstring)."""
    if isinstance(exc, GatewayError):
        return exc
    if not isinstance(exc, AllProvidersFailed):
        return _one(exc)
    errors = list(exc.exceptions)
    mapped = [_one(e) for e in errors]
    # The client's own mistake (the same request fails everywhere) says so; all rate limited
    # says when to come back; otherwise the chain is down.
    for err in mapped:
        if err.status == 400:
            return err
    # A candidate skipped because its breaker holds a provider's retry-after is the same
    # story as the rate limit that opened it.
    called = [m for m, e in zip(mapped, errors, strict=True) if not isinstance(e, CircuitOpen)]
    if called and all(m.failure == "rate_limit" for m in called):
        out = called[0]
        out.retry_after = _min_retry(errors)
        return out
    text = " ".join(str(exc).split())
    status = 504 if all(m.failure == "timeout" for m in mapped) else 503
    return GatewayError(
        status,
        text,
        "api_error",
        code="all_providers_failed",
        retry_after=_min_retry(errors),
        failure=mapped[-1].failure,
    )
