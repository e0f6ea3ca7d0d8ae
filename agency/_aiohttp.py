"""aiohttp under httpx's API: the async transport when ``httpx-aiohttp`` is installed.

httpcore's connection pool scans every connection for every request, so at 50 concurrent
calls plain ``httpx.AsyncClient`` spends most of its CPU choosing a connection (917 calls/s
against nginx on 2 cores, 164 at c=200); aiohttp's pool does not (4,000 and 3,100 through
this transport; `benchmarks/overhead.py`). Adapters keep speaking httpx: responses, streams
and error types are httpx's (`agency._http.async_request` sends a whole JSON request straight
on the session with `AiohttpTransport.send_json`), and plain httpx stays the transport when
the extra is missing or ``AGENCY_HTTP_TRANSPORT=httpx`` (see `agency._http.async_client`).

httpx-aiohttp maps aiohttp's errors to httpx's by a table in which a refused connection and a
server hanging up both become ``ConnectTimeout``; `AiohttpTransport` re-raises them from their
aiohttp cause as the httpx error plain httpx raises for the same event, so the error tree and
the retry policy see the same failures on either transport.

Imported lazily: aiohttp costs ~60 ms of import time that only async callers pay.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import httpx
import httpx_aiohttp
import orjson

__all__ = ["AiohttpTransport", "transport"]


def _as_httpx(exc: BaseException) -> BaseException:
    """The httpx error plain httpx raises where aiohttp raised ``exc`` (else ``exc``)."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS handshake
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, aiohttp.ClientOSError):
        return httpx.ReadError(message)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message)
    if isinstance(exc, aiohttp.ClientError):
        return httpx.TransportError(message)
    return exc


def _mapped(exc: BaseException) -> BaseException | None:
    """The httpx error to raise for ``exc`` caught around the library (its aiohttp cause,
    mapped), or None: ``exc`` is already the right one."""
    cause = exc if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError) else exc.__cause__
    if isinstance(cause, aiohttp.ClientError | asyncio.TimeoutError):
        mapped = _as_httpx(cause)
        if mapped is not cause:
            mapped.__cause__ = cause
            return mapped
    return None


class _Stream(httpx.AsyncByteStream):
    """A response body whose read errors are mapped like the request's."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except (TimeoutError, aiohttp.ClientError, httpx.TransportError) as exc:
            mapped = _mapped(exc)
            if mapped is None:
                raise
            raise mapped from mapped.__cause__

    async def aclose(self) -> None:
        # Closing before the body is read closes the connection: the provider stops generating.
        await self._inner.aclose()


class AiohttpTransport(httpx_aiohttp.AiohttpTransport):
    """httpx-aiohttp's transport with httpx's error types, and proxies from the environment
    as plain httpx honours them (``HTTPS_PROXY``, ``NO_PROXY``)."""

    def get_client(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections or 0,
            keepalive_timeout=self.limits.keepalive_expiry,
            ssl=self.ssl_context,
        )
        # trust_env reads the proxy variables on every request (0.3 ms a call on loopback):
        # only when one is set does the session need it.
        proxied = bool(urllib.request.getproxies())
        return aiohttp.ClientSession(connector=connector, trust_env=proxied)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except (TimeoutError, aiohttp.ClientError, httpx.TransportError) as exc:
            mapped = _mapped(exc)
            if mapped is None:
                raise
            raise mapped from mapped.__cause__
        response.stream = _Stream(response.stream)  # type: ignore[arg-type]
        return response

    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session (made on first use, on the running loop)."""
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        return self.client

    async def send_json(
        self, method: str, url: str, body: Any, headers: Mapping[str, str], params: Any,
        timeout: httpx.Timeout,
    ) -> httpx.Response:  # fmt: skip
        """One JSON request read whole, straight on the aiohttp session.

        What `httpx.AsyncClient.request` would return, without its request and response
        machinery (more CPU than aiohttp itself at 50 concurrent calls, benchmarks/overhead.py);
        errors are httpx's, as from `handle_async_request`.
        """
        data = None if body is None else orjson.dumps(body)
        # httpx's default: what httpx.Response below decodes (aiohttp might offer more).
        sent = {"accept-encoding": "gzip, deflate", **headers}
        if data is not None:
            sent = {"content-type": "application/json", **sent}
        limits = aiohttp.ClientTimeout(
            sock_connect=timeout.connect, sock_read=timeout.read, connect=timeout.pool
        )
        try:
            async with self.session().request(
                method, url, data=data, headers=sent, params=params, timeout=limits,
                allow_redirects=False, auto_decompress=False,
            ) as response:  # fmt: skip
                content = await response.read()
                if "content-encoding" in response.headers:
                    return httpx.Response(
                        response.status, headers=response.raw_headers, content=content
                    )
                # Nothing to decode: httpx's read (decoder, chunker) would copy the body
                # through three layers (8.6 us against 1.5 on this path, benchmarks/overhead.py).
                plain = httpx.Response(
                    response.status, headers=response.raw_headers, stream=httpx.ByteStream(content)
                )
                plain._content = content
                plain.is_stream_consumed = plain.is_closed = True
                return plain
        except (TimeoutError, aiohttp.ClientError) as exc:
            mapped = _mapped(exc)
            if mapped is None:
                raise
            raise mapped from exc


def transport(limits: httpx.Limits, verify: Any) -> AiohttpTransport:
    """A transport with the pool ``limits`` and TLS context ``verify`` of `agency._http`."""
    return AiohttpTransport(verify=verify, limits=limits)
