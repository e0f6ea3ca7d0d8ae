"""httpx transports that answer from a fake's ASGI app in-process, without a socket.

Unlike httpx's own ``ASGITransport`` they also honour ``drop_connection`` (a scripted
``Disconnect``): a cut before the response starts raises ``httpx.RemoteProtocolError`` as a
server closing the socket does, and a cut mid-stream yields what was sent and then raises the
same error from the body iterator. The app runs to completion before the response is
returned (the fakes' streams are finite), so client timeouts are not simulated.

Only client-side behaviour differs from a socket: no timeouts, no connection pool.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx

from ._server import ABORT_EXTENSION

__all__ = ["InProcessTransport"]

_NO_RESPONSE = "Server disconnected without sending a response."
_CUT_BODY = "peer closed connection without sending complete message body"


@dataclass
class _Outcome:
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    cut: bool = False


async def _run(app: Any, request: httpx.Request, body: bytes) -> _Outcome:
    """Run ``app`` on ``request``; what it sent, and whether it cut the connection."""
    outcome = _Outcome()
    finished = asyncio.Event()
    body_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await finished.wait()  # like a client that stays connected until the answer is in
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if outcome.cut:
            return
        if message["type"] == "http.response.start":
            outcome.status = message["status"]
            outcome.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            outcome.chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                finished.set()

    async def cut(hard: bool) -> None:
        outcome.cut = True
        finished.set()

    url = request.url
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": url.scheme,
        "path": unquote(url.path),
        "raw_path": url.raw_path.split(b"?")[0],
        "query_string": url.query,
        "root_path": "",
        "headers": [(k.lower(), v) for k, v in request.headers.raw],
        "client": ("127.0.0.1", 50000),
        "server": (url.host, url.port or (443 if url.scheme == "https" else 80)),
        "extensions": {ABORT_EXTENSION: cut},
    }
    await app(scope, receive, send)
    if outcome.status is None:
        raise httpx.RemoteProtocolError(_NO_RESPONSE, request=request)
    return outcome


class _SyncBody(httpx.SyncByteStream):
    def __init__(self, outcome: _Outcome, request: httpx.Request) -> None:
        self.outcome, self.request = outcome, request

    def __iter__(self) -> Iterator[bytes]:
        yield from self.outcome.chunks
        if self.outcome.cut:
            raise httpx.RemoteProtocolError(_CUT_BODY, request=self.request)


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, outcome: _Outcome, request: httpx.Request) -> None:
        self.outcome, self.request = outcome, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.outcome.chunks:
            yield chunk
        if self.outcome.cut:
            raise httpx.RemoteProtocolError(_CUT_BODY, request=self.request)


class InProcessTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """An httpx transport, sync and async (like ``httpx.MockTransport``), running an ASGI app.

    Async requests run the app on the caller's event loop; sync ones on a private loop in a
    daemon thread (started on first use), so they also work from inside a running loop."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def _private_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, name="fake-inprocess", daemon=True
                ).start()
            return self._loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        future = asyncio.run_coroutine_threadsafe(
            _run(self.app, request, body), self._private_loop()
        )
        outcome = future.result()
        return httpx.Response(
            outcome.status or 500, headers=outcome.headers, stream=_SyncBody(outcome, request)
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        outcome = await _run(self.app, request, body)
        return httpx.Response(
            outcome.status or 500, headers=outcome.headers, stream=_AsyncBody(outcome, request)
        )

    def close(self) -> None:
        """Nothing to release per client: the fake outlives the clients that use it."""
