"""HTTP plumbing shared by every adapter: pooled clients, the one retry loop, SSE/NDJSON
readers and the one place HTTP failures become `agency.errors`.

The retry loop reads a `RetryPolicy`, whose defaults are the named constants below; which
failures it retries is `agency.errors.ERROR_POLICIES`' ``retry_same`` column. Retries happen
only before the first byte of an answer reaches the caller: a stream that has started is never
replayed (the resilience layer continues it on another provider instead).
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import importlib.util
import json
import os
import random
import ssl
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)

import agency.errors as errors
from agency.errors import ProviderError, redact

__all__ = [
    "BACKOFF_INITIAL_S",
    "BACKOFF_MAX_S",
    "BACKOFF_MULTIPLIER",
    "DEFAULT_MAX_RETRIES",
    "JITTER_FRACTION",
    "MAX_RETRY_AFTER_S",
    "TRANSPORT_ENV",
    "ErrorInfo",
    "RetryPolicy",
    "SSEEvent",
    "aclose_clients",
    "aiter_ndjson",
    "aiter_sse",
    "async_client",
    "async_request",
    "async_transport",
    "call_with_retry",
    "call_with_retry_async",
    "close_clients",
    "default_error_info",
    "error_from_response",
    "error_from_transport",
    "iter_ndjson",
    "iter_sse",
    "retry_after_seconds",
    "retrying",
    "retrying_async",
    "sync_client",
]

T = TypeVar("T")

BACKOFF_INITIAL_S = 0.5
"""First backoff delay, doubled each retry."""
BACKOFF_MULTIPLIER = 2.0
"""Growth factor of the exponential backoff."""
BACKOFF_MAX_S = 8.0
"""Ceiling of one computed backoff delay (a provider's ``Retry-After`` may exceed it)."""
JITTER_FRACTION = 0.25
"""Up to this fraction of the delay is added at random, so clients do not retry in step."""
MAX_RETRY_AFTER_S = 120.0
"""A ``Retry-After`` longer than this is not waited for: the error is raised at once."""
DEFAULT_MAX_RETRIES = 2
"""Retries after the first attempt when a model is used alone."""
# Below 500, the statuses that mean "the provider could not serve this now" rather than
# "this request is wrong": 408 Request Timeout, 409 Conflict (a busy resource).
_UNAVAILABLE_4XX = frozenset({408, 409})


@dataclass(frozen=True)
class RetryPolicy:
    """How an adapter retries one request on the same provider (after LangGraph's
    ``langgraph.types.RetryPolicy``): exponential backoff with jitter, or the provider's
    ``Retry-After`` when it gave one."""

    max_retries: int = DEFAULT_MAX_RETRIES
    """Attempts after the first; 0 sends the request once."""
    initial_backoff_s: float = BACKOFF_INITIAL_S
    """Delay before the first retry."""
    backoff_multiplier: float = BACKOFF_MULTIPLIER
    """Each further retry waits this many times longer."""
    max_backoff_s: float = BACKOFF_MAX_S
    """Ceiling of one computed delay (a provider's ``Retry-After`` may exceed it)."""
    jitter: float = JITTER_FRACTION
    """Up to this fraction of the delay is added at random, so clients do not retry in step."""
    max_retry_after_s: float = MAX_RETRY_AFTER_S
    """A ``Retry-After`` longer than this is not waited for: the failure is raised at once."""
    retry_on: Callable[[BaseException], bool] = field(default=errors.retries_same)
    """Which failures are retried; by default the ``retry_same`` column of
    `agency.errors.ERROR_POLICIES` (with a failure's own ``is_retryable`` override)."""

    @classmethod
    def of(cls, retries: int | RetryPolicy) -> RetryPolicy:
        """``retries`` as a policy: a bare count (the models' ``max_retries=``) gets the
        default numbers."""
        return retries if isinstance(retries, RetryPolicy) else cls(max_retries=retries)

    def should_retry(self, exc: BaseException) -> bool:
        """Whether ``exc`` is retried, budget aside: the table says so and any ``Retry-After``
        is within `max_retry_after_s`."""
        if not self.retry_on(exc):
            return False
        wait = getattr(exc, "retry_after", None)
        return wait is None or wait <= self.max_retry_after_s

    def delay(self, exc: BaseException | None, retry_number: int) -> float:
        """Seconds before retry number ``retry_number`` (1 for the first) after ``exc``."""
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return float(retry_after)
        delay = min(
            self.initial_backoff_s * self.backoff_multiplier ** (retry_number - 1),
            self.max_backoff_s,
        )
        return delay + random.uniform(0, delay * self.jitter)


TRANSPORT_ENV = "AGENCY_HTTP_TRANSPORT"
"""Environment variable choosing the async transport: "aiohttp" or "httpx" (`async_transport`)."""
# 1,000 connections, as the openai SDK allows: 1,000 streams open at once must not wait on the
# pool. All of them may stay alive: idle ones close after httpx's 5 s keep-alive expiry, and
# at c=200 a smaller keep-alive set reconnects on nearly every call (benchmarks/overhead.py).
_POOL_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)


# --------------------------------------------------------------------------- clients
_sync_clients: dict[tuple[Any, ...], httpx.Client] = {}
# Async clients are bound to the loop they were first used on.
_async_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[Any, ...], httpx.AsyncClient]
] = weakref.WeakKeyDictionary()
_clients_lock = threading.Lock()


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # httpx builds (and loads the CA bundle into) a new SSL context for every client: 20-100 ms
    # each. One shared context makes a client for a new base URL cheap, which is what the first
    # call to a fallback provider pays (benchmarks/resilience.py).
    return httpx.create_ssl_context()


def _client_options(timeout: float) -> dict[str, Any]:
    # What every pooled client, sync or async, is built with.
    return {
        "timeout": httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        "limits": _POOL_LIMITS,
        "verify": _ssl_context(),
    }


def sync_client(base_url: str, timeout: float) -> httpx.Client:
    """The pooled client for this base URL and timeout. Keys are sent per request, never
    stored on the client, so one pool serves every key."""
    key = (base_url, timeout)
    client = _sync_clients.get(key)
    if client is None or client.is_closed:
        with _clients_lock:
            client = _sync_clients.get(key)
            if client is None or client.is_closed:
                client = httpx.Client(**_client_options(timeout))
                _sync_clients[key] = client
    return client


def async_client(base_url: str, timeout: float) -> httpx.AsyncClient:
    """The pooled async client for this base URL and timeout on the running event loop."""
    loop = asyncio.get_running_loop()
    per_loop = _async_clients.get(loop)
    if per_loop is None:
        per_loop = _async_clients.setdefault(loop, {})
    aiohttp = _use_aiohttp()
    key = (base_url, timeout, aiohttp)
    client = per_loop.get(key)
    if client is None or client.is_closed:
        options = _client_options(timeout)
        if aiohttp:
            from agency import _aiohttp

            transport = _aiohttp.transport(options["limits"], options["verify"])
            client = httpx.AsyncClient(transport=transport, **options)
            _direct[client] = transport
            # aiohttp reports a session its loop outlived as an error; asyncio.run (and every
            # runner) cancels the tasks left when its work is done: this one then closes it.
            # (A loop closed by hand with tasks pending keeps its pool until the process ends.)
            closer = loop.create_task(_close_when_cancelled(client), name="agency: close pool")
            _closers.add(closer)  # a pending task only weakly held would be collected
            closer.add_done_callback(_closers.discard)
        else:
            client = httpx.AsyncClient(**options)
        per_loop[key] = client
    return client


_closers: set[asyncio.Task[None]] = set()
# Pooled clients on aiohttp, and their transport: whole JSON requests skip httpx's machinery.
_direct: weakref.WeakKeyDictionary[httpx.AsyncClient, Any] = weakref.WeakKeyDictionary()
_JSON_REQUEST = frozenset({"method", "url", "json", "headers", "params"})


async def async_request(client: httpx.AsyncClient, **args: Any) -> httpx.Response:
    """``client.request(**args)``, read whole. On a pooled aiohttp client a plain JSON request
    (method, url, json, headers, params) goes straight to aiohttp's session: same response and
    errors, without httpx's request and response machinery (benchmarks/overhead.py)."""
    transport = _direct.get(client)
    if transport is None or not args.keys() <= _JSON_REQUEST:
        return await client.request(**args)
    return await transport.send_json(  # type: ignore[no-any-return]
        args["method"], args["url"], args.get("json"), args.get("headers") or {},
        args.get("params"), client.timeout,
    )  # fmt: skip


async def _close_when_cancelled(client: httpx.AsyncClient) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        await client.aclose()


def async_transport() -> str:
    """The async transport in use: "aiohttp" (``httpx-aiohttp`` installed, the default) or
    "httpx" (without it, or with ``AGENCY_HTTP_TRANSPORT=httpx``)."""
    return "aiohttp" if _use_aiohttp() else "httpx"


def _use_aiohttp() -> bool:
    choice = os.environ.get(TRANSPORT_ENV, "").strip().lower()
    if choice not in ("", "aiohttp", "httpx"):
        raise errors.ConfigError(
            f"{TRANSPORT_ENV}={choice!r} is not a transport",
            key=TRANSPORT_ENV,
            fix='set it to "aiohttp" or "httpx", or unset it (aiohttp when installed)',
        )
    if choice == "httpx":
        return False
    if _aiohttp_installed():
        return True
    if choice == "aiohttp":
        raise errors.ConfigError(
            f"{TRANSPORT_ENV}=aiohttp but httpx-aiohttp is not installed",
            key=TRANSPORT_ENV,
            fix="pip install 'agency[aiohttp]' (or unset it to use plain httpx)",
        )
    return False


@functools.cache
def _aiohttp_installed() -> bool:
    return importlib.util.find_spec("httpx_aiohttp") is not None


def close_clients() -> None:
    """Close every pooled sync client (async ones close with `aclose_clients`)."""
    with _clients_lock:
        clients = list(_sync_clients.values())
        _sync_clients.clear()
    for client in clients:
        client.close()


async def aclose_clients() -> None:
    """Close the pooled async clients of the running loop, and the sync ones."""
    loop = asyncio.get_running_loop()
    for client in list(_async_clients.pop(loop, {}).values()):
        await client.aclose()
    close_clients()


# --------------------------------------------------------------------------- errors
@dataclass(frozen=True)
class ErrorInfo:
    """What an adapter's error parser pulled out of an error body."""

    message: str
    """The provider's human-readable message."""
    type: str | None = None
    """The provider's error type or status word (``rate_limit_error``, ``RESOURCE_EXHAUSTED``)."""
    code: str | None = None
    """The provider's machine code (``context_length_exceeded``)."""


def default_error_info(body: Any, text: str) -> ErrorInfo:
    """OpenAI's shape ``{"error": {"message", "type", "code"}}`` and common variants."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("msg") or err.get("detail") or json.dumps(err)[:500]
            code = err.get("code")
            return ErrorInfo(
                str(msg), _str_or_none(err.get("type") or err.get("status")), _str_or_none(code)
            )
        if isinstance(err, str):
            return ErrorInfo(err)
        if "detail" in body:
            return ErrorInfo(str(body["detail"]))
    return ErrorInfo(text[:500] or "(empty body)")


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(parsed.timestamp() - time.time(), 0.0)


_CONTEXT_MARKERS = (
    "prompt is too long",
    "context_length_exceeded",
    "context length",
    "context window",
    "too many tokens",
    "maximum context",
)
_FILTER_MARKERS = ("content_filter", "content_policy", "safety", "responsible_ai_policy")


def error_from_response(
    response: httpx.Response,
    *,
    provider: str,
    model: str | None,
    secret: str | None = None,
    parse: Callable[[Any, str], ErrorInfo] | None = None,
    request_id_headers: tuple[str, ...] = (
        "x-request-id",
        "request-id",
        "x-goog-request-id",
        "cf-ray",
    ),
) -> ProviderError:
    """Map a failed HTTP response to the error tree. The body must already be read."""
    text = response.text
    try:
        body: Any = json.loads(text) if text else None
    except ValueError:
        body = None
    info = (parse or default_error_info)(body, text)
    message = redact(info.message, secret)
    request_id = next(
        (response.headers[h] for h in request_id_headers if h in response.headers), None
    )
    kw: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "status_code": response.status_code,
        "request_id": request_id,
        "body": None,  # bodies may echo prompts; keep the message only
    }
    status = response.status_code
    haystack = f"{info.type} {info.code} {info.message}".lower()
    retry_after = retry_after_seconds(response.headers)
    if status == 429 or (info.type or "").upper() == "RESOURCE_EXHAUSTED":
        return errors.RateLimited(message, retry_after=retry_after, **kw)
    if status == 401:
        return errors.AuthenticationError(message, **kw)
    if status == 403:
        return errors.PermissionDenied(message, **kw)
    if status == 404:
        return errors.ModelNotFound(message, **kw)
    if status in (400, 413, 422):
        if any(m in haystack for m in _CONTEXT_MARKERS) or status == 413:
            return errors.ContextWindowExceeded(message, **kw)
        if any(m in haystack for m in _FILTER_MARKERS):
            return errors.ContentFiltered(message, **kw)
        return errors.BadRequest(message, **kw)
    if status in _UNAVAILABLE_4XX or status >= 500:
        return errors.ProviderUnavailable(message, retry_after=retry_after, **kw)
    return errors.BadRequest(message, **kw)


def error_from_transport(
    exc: Exception, *, provider: str, model: str | None, secret: str | None = None
) -> ProviderError:
    """Map an httpx transport failure (timeout, refused, reset) to the error tree."""
    message = redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, secret)
    kw: dict[str, Any] = {"provider": provider, "model": model}
    if isinstance(exc, httpx.TimeoutException):
        return errors.Timeout(message, **kw)
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return errors.ConnectionFailed(f"connection dropped: {message}", **kw)
    return errors.ConnectionFailed(message, **kw)


# --------------------------------------------------------------------------- retries
def _loop_args(policy: RetryPolicy) -> dict[str, Any]:
    """What tenacity's sync and async loops share: the policy's stop, predicate and wait."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return policy.delay(exc, state.attempt_number)

    return {
        "stop": stop_after_attempt(max(policy.max_retries, 0) + 1),
        "retry": retry_if_exception(policy.should_retry),
        "wait": wait,
        "reraise": True,
    }


def retrying(
    retries: int | RetryPolicy, *, sleep: Callable[[float], None] = time.sleep
) -> Retrying:
    """The retry loop: ``for attempt in retrying(policy): with attempt: ...``.

    ``retries`` is a `RetryPolicy`, or a bare ``max_retries`` count with the default numbers.
    """
    return Retrying(sleep=sleep, **_loop_args(RetryPolicy.of(retries)))


def retrying_async(
    retries: int | RetryPolicy, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
) -> AsyncRetrying:
    """Async twin of `retrying`."""
    return AsyncRetrying(sleep=sleep, **_loop_args(RetryPolicy.of(retries)))


def _retries_after(exc: ProviderError, policy: RetryPolicy) -> bool:
    # The bare first attempt's failure: is it worth setting up the loop at all?
    return policy.max_retries > 0 and policy.should_retry(exc)


def call_with_retry(
    fn: Callable[[], T], retries: int | RetryPolicy, *, sleep: Callable[[float], None] = time.sleep
) -> T:
    """``fn()`` under the retry policy. The first attempt runs bare (no tenacity set-up on the
    hot path); a retryable failure is handed to `retrying` as its first attempt, so backoff,
    ``Retry-After`` and the attempt count are exactly the policy's."""
    policy = RetryPolicy.of(retries)
    try:
        return fn()
    except ProviderError as exc:
        if not _retries_after(exc, policy):
            raise
        first: ProviderError | None = exc
    for attempt in retrying(policy, sleep=sleep):
        with attempt:
            if first is not None:
                failed, first = first, None
                raise failed
            return fn()
    raise AssertionError("unreachable")  # pragma: no cover


async def call_with_retry_async(
    fn: Callable[[], Awaitable[T]],
    retries: int | RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Async twin of `call_with_retry`."""
    policy = RetryPolicy.of(retries)
    try:
        return await fn()
    except ProviderError as exc:
        if not _retries_after(exc, policy):
            raise
        first: ProviderError | None = exc
    async for attempt in retrying_async(policy, sleep=sleep):
        with attempt:
            if first is not None:
                failed, first = first, None
                raise failed
            return await fn()
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------- streams
@dataclass(frozen=True)
class SSEEvent:
    """One server-sent event: ``event`` is ``None`` for the default type ("message")."""

    data: str
    event: str | None = None
    id: str | None = None


class _SSEDecoder:
    """The WHATWG event-stream parser: fields per line, dispatch on a blank line."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None

    def feed(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data and self._event is None:
                return None
            event = SSEEvent("\n".join(self._data), self._event, self._id)
            self._data, self._event = [], None
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None

    def flush(self) -> SSEEvent | None:
        return self.feed("") if self._data else None


def iter_sse(response: httpx.Response) -> Iterator[SSEEvent]:
    """Server-sent events from a streamed response."""
    decoder = _SSEDecoder()
    for line in response.iter_lines():
        event = decoder.feed(line.rstrip("\r"))
        if event is not None:
            yield event
    tail = decoder.flush()
    if tail is not None:
        yield tail


async def aiter_sse(response: httpx.Response) -> AsyncIterator[SSEEvent]:
    """Async twin of `iter_sse`."""
    decoder = _SSEDecoder()
    async for line in response.aiter_lines():
        event = decoder.feed(line.rstrip("\r"))
        if event is not None:
            yield event
    tail = decoder.flush()
    if tail is not None:
        yield tail


def iter_ndjson(response: httpx.Response) -> Iterator[str]:
    """Non-empty lines of a newline-delimited JSON stream (Ollama)."""
    for line in response.iter_lines():
        if line.strip():
            yield line


async def aiter_ndjson(response: httpx.Response) -> AsyncIterator[str]:
    """Async twin of `iter_ndjson`."""
    async for line in response.aiter_lines():
        if line.strip():
            yield line
