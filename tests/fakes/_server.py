"""Run any ASGI app with uvicorn on 127.0.0.1 in a background thread.

``serve(app)`` is a context manager yielding ``"http://127.0.0.1:PORT"``. The listening socket
is bound here (port 0, so the OS picks a free port) and handed to uvicorn, so the port is known
before the server starts; the context waits until the server accepts connections and, on exit,
stops it and joins the thread.

Binding is not connecting, so pytest-socket's ``--allow-hosts=127.0.0.1`` does not get in the
way; the readiness probe connects to 127.0.0.1, which that option allows.

The HTTP protocol is uvicorn's h11 one, extended so apps can cut a connection the way a crashed
server or a reset load balancer would: ``await drop_connection(scope)`` (see below).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["ABORT_EXTENSION", "drop_connection", "serve"]

#: Key in ``scope["extensions"]`` of the callable that cuts the client connection.
ABORT_EXTENSION = "fakes.abort"


class _AbortableH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, exposing a connection-cutting coroutine in the ASGI scope."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        inner = self.app

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})[ABORT_EXTENSION] = self._cut
            await inner(scope, receive, send)

        self.app = app

    async def _cut(self, hard: bool) -> None:
        if self.transport is None:
            return
        if hard:
            self.transport.abort()  # discard anything unsent
        else:
            self.transport.close()  # flush what was written, then FIN (no chunked terminator)
        # Wait for connection_lost(): after it uvicorn drops further sends, logs nothing and
        # does not try to complete the response.
        for _ in range(400):
            if self.cycle is None or self.cycle.disconnected or self.cycle.response_complete:
                return
            await asyncio.sleep(0.005)


async def drop_connection(scope: dict[str, Any], *, hard: bool = False) -> None:
    """Close the client connection under the running request, without finishing the response.

    ``hard=True`` discards unsent bytes (use it before any response bytes: the client sees
    "server disconnected without sending a response"); ``hard=False`` flushes what was already
    sent (a stream cut mid-body: no final chunk, no ``[DONE]``). Return from the ASGI app right
    after awaiting this.
    """
    cut = scope.get("extensions", {}).get(ABORT_EXTENSION)
    if cut is None:  # pragma: no cover - only when served by something other than serve()
        raise RuntimeError("drop_connection needs the app to run under tests.fakes._server.serve")
    await cut(hard)


def _wait_accepting(host: str, port: int, thread: threading.Thread, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not thread.is_alive():
            raise RuntimeError(f"fake server thread died before accepting on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fake server on {host}:{port} not accepting") from None
            time.sleep(0.01)


@contextlib.contextmanager
def serve(
    app: Any,
    *,
    host: str = "127.0.0.1",
    startup_timeout: float = 10.0,
    graceful_shutdown: int = 1,
) -> Iterator[str]:
    """Serve ``app`` (any ASGI3 app) on ``host``, a free port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(128)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        http=_AbortableH11Protocol,
        ws="none",
        timeout_graceful_shutdown=graceful_shutdown,
        # Longer than any client keeps an idle connection (httpx 5 s, aiohttp 15 s): a server
        # that closes first races a client reusing the connection ("Server disconnected
        # without sending a response"), as hosted APIs with their long keep-alives do not.
        timeout_keep_alive=30,
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"fake-server-{port}", daemon=True
    )
    thread.start()
    try:
        _wait_accepting(host, port, thread, startup_timeout)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=graceful_shutdown + 5)
        if thread.is_alive():  # pragma: no cover - a handler ignored cancellation
            server.force_exit = True
            thread.join(timeout=5)
        sock.close()
