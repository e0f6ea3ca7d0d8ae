"""`HTTPAdapter`: the HTTP half every remote wire adapter shares.

URLs, auth headers, the pooled clients, JSON calls, SSE and NDJSON streams, and the mapping
of failures into `agency.errors` (through `agency._http`, the one place that classifies them).
A wire adapter subclasses it and writes only its protocol: request bodies and response parsing.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, ClassVar

import httpx

from agency._http import (
    ErrorInfo,
    SSEEvent,
    aiter_ndjson,
    aiter_sse,
    async_client,
    default_error_info,
    error_from_response,
    error_from_transport,
    iter_ndjson,
    iter_sse,
    sync_client,
)
from agency.errors import ConfigError, MalformedResponse, ProviderError
from agency.providers._base import ChatAdapter

__all__ = ["HTTPAdapter"]


class HTTPAdapter(ChatAdapter):
    """Shared HTTP mechanics; subclasses override the hooks they need."""

    request_id_headers: ClassVar[tuple[str, ...]] = (
        "x-request-id",
        "request-id",
        "x-goog-request-id",
        "cf-ray",
    )
    """Response headers that carry the provider's request id."""

    on_response_headers: Callable[[Mapping[str, str]], None] | None = None
    """Called with the headers of every HTTP response (errors too), e.g. by a rate limiter
    that reads ``x-ratelimit-*``; ``None`` (the default) costs nothing."""

    # -- hooks --------------------------------------------------------------------------
    def _url(self, path: str, model: str | None = None) -> str:
        """Absolute URL of ``path`` (which starts with ``/``)."""
        return self.connection.base_url + path

    def _params(self) -> Mapping[str, str] | None:
        """Query parameters sent on every request."""
        return None

    def _headers(self) -> dict[str, str]:
        """Headers for one request: the profile's, the caller's, then the key's."""
        return {**self.connection.headers, **self.connection.auth_headers()}

    def _error_info(self, body: Any, text: str) -> ErrorInfo:
        """Message, type and code of an error body (default: OpenAI's shape and variants)."""
        return default_error_info(body, text)

    # -- plumbing -----------------------------------------------------------------------
    _own_client: httpx.Client | None = None
    _own_aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]

    def _client(self) -> httpx.Client:
        """The shared pooled client, or this adapter's own one on ``connection.transport``.

        An own client is never closed here: closing it would close the caller's transport,
        which may serve other models; the caller owns it."""
        transport = self.connection.transport
        if transport is None:
            return sync_client(self.connection.base_url, self.connection.timeout)
        if self._own_client is None or self._own_client.is_closed:
            if not isinstance(transport, httpx.BaseTransport):
                raise ConfigError(
                    f"{self.provider}: transport {type(transport).__name__} is async-only",
                    fix="pass an httpx.BaseTransport for sync calls (httpx.MockTransport is both)",
                )
            self._own_client = httpx.Client(transport=transport, timeout=self.connection.timeout)
        return self._own_client

    def _aclient(self) -> httpx.AsyncClient:
        """Async twin of `_client`; an own client is kept per event loop, as the pool does."""
        transport = self.connection.transport
        if transport is None:
            return async_client(self.connection.base_url, self.connection.timeout)
        if "_own_aclients" not in self.__dict__:
            self._own_aclients = weakref.WeakKeyDictionary()
        loop = asyncio.get_running_loop()
        client = self._own_aclients.get(loop)
        if client is None or client.is_closed:
            if not isinstance(transport, httpx.AsyncBaseTransport):
                raise ConfigError(
                    f"{self.provider}: transport {type(transport).__name__} is sync-only",
                    fix="pass an httpx.AsyncBaseTransport for async calls",
                )
            client = httpx.AsyncClient(transport=transport, timeout=self.connection.timeout)
            self._own_aclients[loop] = client
        return client

    def _error(self, response: httpx.Response, model: str | None) -> ProviderError:
        return error_from_response(
            response,
            provider=self.provider,
            model=model,
            secret=self.connection.secret(),
            parse=self._error_info,
            request_id_headers=self.request_id_headers,
        )

    def _raise_for(self, response: httpx.Response, model: str | None) -> None:
        if response.status_code >= 400:
            raise self._error(response, model)

    def _request_id(self, response: httpx.Response) -> str | None:
        return next(
            (response.headers[h] for h in self.request_id_headers if h in response.headers), None
        )

    def _json(self, response: httpx.Response, model: str | None) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise MalformedResponse(
                f"response is not JSON: {response.text[:200]!r}",
                provider=self.provider,
                model=model,
                status_code=response.status_code,
                request_id=self._request_id(response),
            ) from exc

    def _transport_error(self, exc: httpx.TransportError, model: str | None) -> ProviderError:
        return error_from_transport(
            exc, provider=self.provider, model=model, secret=self.connection.secret()
        )

    def _send(self, method: str, path: str, model: str | None, body: Any = None, **kw: Any) -> Any:
        """One JSON request; the parsed body of a 2xx answer, else the mapped error."""
        try:
            response = self._client().request(
                method,
                self._url(path, model),
                json=body,
                headers=self._headers(),
                params=self._params(),
                **kw,
            )
        except httpx.TransportError as exc:
            raise self._transport_error(exc, model) from exc
        if self.on_response_headers is not None:
            self.on_response_headers(response.headers)
        self._raise_for(response, model)
        return self._json(response, model)

    async def _asend(
        self, method: str, path: str, model: str | None, body: Any = None, **kw: Any
    ) -> Any:
        """Async twin of `_send`."""
        try:
            response = await self._aclient().request(
                method,
                self._url(path, model),
                json=body,
                headers=self._headers(),
                params=self._params(),
                **kw,
            )
        except httpx.TransportError as exc:
            raise self._transport_error(exc, model) from exc
        if self.on_response_headers is not None:
            self.on_response_headers(response.headers)
        self._raise_for(response, model)
        return self._json(response, model)

    def _stream_lines(
        self, path: str, body: Any, model: str | None, *, sse: bool, **kw: Any
    ) -> Iterator[Any]:
        """SSE events (``sse=True``) or NDJSON lines of a streamed POST, errors mapped."""
        try:
            with self._client().stream(
                "POST",
                self._url(path, model),
                json=body,
                headers=self._headers(),
                params=self._params(),
                **kw,
            ) as response:
                if self.on_response_headers is not None:
                    self.on_response_headers(response.headers)
                if response.status_code >= 400:
                    response.read()
                    raise self._error(response, model)
                yield from (iter_sse(response) if sse else iter_ndjson(response))
        except httpx.TransportError as exc:
            raise self._transport_error(exc, model) from exc

    async def _astream_lines(
        self, path: str, body: Any, model: str | None, *, sse: bool, **kw: Any
    ) -> AsyncIterator[Any]:
        """Async twin of `_stream_lines`."""
        try:
            async with self._aclient().stream(
                "POST",
                self._url(path, model),
                json=body,
                headers=self._headers(),
                params=self._params(),
                **kw,
            ) as response:
                if self.on_response_headers is not None:
                    self.on_response_headers(response.headers)
                if response.status_code >= 400:
                    await response.aread()
                    raise self._error(response, model)
                lines = aiter_sse(response) if sse else aiter_ndjson(response)
                async for item in lines:
                    yield item
        except httpx.TransportError as exc:
            raise self._transport_error(exc, model) from exc

    def _sse(self, path: str, body: Any, model: str | None, **kw: Any) -> Iterator[SSEEvent]:
        """Server-sent events of a streamed POST."""
        return self._stream_lines(path, body, model, sse=True, **kw)

    def _asse(self, path: str, body: Any, model: str | None, **kw: Any) -> AsyncIterator[SSEEvent]:
        """Async twin of `_sse`."""
        return self._astream_lines(path, body, model, sse=True, **kw)

    def _ndjson(self, path: str, body: Any, model: str | None, **kw: Any) -> Iterator[str]:
        """Lines of a newline-delimited JSON stream."""
        return self._stream_lines(path, body, model, sse=False, **kw)

    def _andjson(self, path: str, body: Any, model: str | None, **kw: Any) -> AsyncIterator[str]:
        """Async twin of `_ndjson`."""
        return self._astream_lines(path, body, model, sse=False, **kw)
