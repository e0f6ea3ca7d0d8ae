"""What every fake service shares: the script actions, recording, reset and serving.

``FakeService`` owns the harness; a server subclass keeps only its wire format (routes, request
parsing, response bodies, error shapes) and fills in the hooks:

* ``_routes()``: ``(path, handler, methods)`` triples (every handler runs under ``_guard``,
  which records the request, calls ``_admit`` and turns a crash of the fake into a 500 of the
  wire plus a note in ``internal_errors``);
* ``_fail(request, fail)``: the wire's error answer for a scripted ``Fail``;
* ``_error_response(request, status)``: the wire's answer to a crash (500) or an unknown
  route (404/405);
* optionally ``_admit`` (e.g. authenticate every request), ``_begin`` and
  ``_default_headers`` (the live service's headers on every response, under ``rate_limits``).

Streams go out through ``FrameStream`` (the wire frames its events); ``checked()`` is the
per-test reset-and-check of the fixtures.

Tests script what the next requests get with ``fake.script(*actions)`` (chat) and
``fake.script_embeddings(*actions)``; the shared actions are ``Fail``, ``Stall``,
``Disconnect``, ``Malformed`` and ``StreamError`` (a wire adds its own ``Reply``). The fake is
served on a socket by ``running()`` (for the official SDKs and timeouts) or in-process by
``transport()`` (``_inprocess``; for ``transport=`` on a model).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._inprocess import InProcessTransport
from ._scripting import ActionQueue
from ._server import drop_connection, serve

__all__ = [
    "Disconnect",
    "Dropped",
    "Fail",
    "FakeService",
    "FrameStream",
    "Handler",
    "Malformed",
    "RecordedRequest",
    "Stall",
    "StreamError",
    "seconds_text",
]

Handler = Callable[[Request], Awaitable[Any]]


# --------------------------------------------------------------------------- script actions


@dataclass
class Fail:
    """Answer with the wire's error body and ``status`` (``times`` requests in a row).

    ``message`` defaults by status, per wire. ``retry_after`` (seconds) is how a 429 tells the
    client to wait, in the wire's own form (OpenAI ``retry-after``/``retry-after-ms``, Anthropic
    and Replicate ``retry-after``, Gemini a ``google.rpc.RetryInfo``); None is the wire's
    default. ``body`` holds wire-specific fields of the error object, merged over the defaults
    (OpenAI ``type``/``code``/``param``, Anthropic ``type``, Gemini ``status``/``details``,
    Replicate ``title``). ``headers`` win over every header the wire sets.
    """

    status: int
    message: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    retry_after: float | None = None
    body: dict[str, Any] = field(default_factory=dict)


@dataclass
class Stall:
    """Sleep before answering (client timeouts); then ``then`` or the default behaviour."""

    seconds: float
    then: Any = None


@dataclass
class Disconnect:
    """Cut the connection: a stream after ``after_events`` events (SSE events, NDJSON lines)
    without its normal end; a non-streamed request before any response byte."""

    after_events: int = 0


@dataclass
class Malformed:
    """Send ``body`` raw (for streams: the raw stream text). ``content_type`` defaults to the
    wire's JSON type, or its stream type for a streamed request."""

    body: str
    status: int = 200
    content_type: str | None = None


@dataclass
class StreamError:
    """A stream that fails after ``after_events`` events of the normal answer, the way the
    wire reports a failure once the 200 is out (``message``/``type`` default per wire; a
    non-streamed request gets the error as an HTTP answer where the wire does that)."""

    message: str | None = None
    after_events: int = 1
    type: str | None = None


@dataclass
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None when absent/unparsable
    raw: bytes = b""


class _ResponseHeaders:
    """Adds a fake's ``_default_headers`` and, when set, its ``rate_limits.headers()`` to every
    response, keeping any header the response sets itself (a 429's, ``Fail.headers``); the
    rate-limit values win over the defaults."""

    def __init__(self, app: Any, fake: FakeService) -> None:
        self.app, self.fake = app, fake

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        self.fake._begin(scope.setdefault("state", {}))

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                limits = getattr(self.fake, "rate_limits", None)
                extra = limits.headers() if limits is not None else {}
                elapsed_ms = int((time.perf_counter() - started) * 1000)
                defaults = self.fake._default_headers(scope, elapsed_ms)
                headers = MutableHeaders(scope=message)
                for name, value in {**defaults, **extra}.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Dropped:
    """An ASGI 'response' that cuts the connection before sending anything."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await drop_connection(scope, hard=True)


class FrameStream:
    """ASGI response writing ``frames`` (already framed text: SSE events, NDJSON lines) one at
    a time, ``delay`` seconds apart, then ``terminator`` (``data: [DONE]``...) and the end.

    ``drop_after=N`` cuts the connection after N frames (or all, when there are fewer): no
    terminator, no end of the chunked body, like a server dying mid-stream.
    """

    def __init__(
        self,
        frames: list[str],
        *,
        media_type: str = "text/event-stream",
        headers: dict[str, str] | None = None,
        terminator: str = "",
        drop_after: int | None = None,
        delay: float = 0.0,
    ) -> None:
        self.frames, self.terminator, self.drop_after, self.delay = (
            frames, terminator, drop_after, delay
        )  # fmt: skip
        self.headers = {"content-type": media_type, **(headers or {})}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [(k.encode(), v.encode()) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        cut = self.drop_after is not None
        frames = self.frames[: self.drop_after] if cut else [*self.frames, self.terminator]
        for frame in frames:
            if frame:
                await send({"type": "http.response.body", "body": frame.encode(), "more_body": True})
                await asyncio.sleep(self.delay)
        if cut:
            await drop_connection(scope)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def seconds_text(seconds: float) -> str:
    """``seconds`` as a header value: ``2`` not ``2.0``, ``0.05`` as is."""
    return f"{seconds:g}"


# --------------------------------------------------------------------------- the service


class FakeService:
    """The harness of one fake service. Attributes tests use:

    * ``base_url`` (root URL plus ``url_path``) and ``root_url``, set while ``running()``;
    * ``requests`` (``RecordedRequest``), ``last_request``, ``bodies(path)``, ``pending_actions``;
    * ``spec_violations``: schema and live-API rule violations (should stay empty);
    * ``internal_errors``: bugs of the fake itself (should stay empty).

    The script actions are also reachable as attributes (``fake.Fail(...)``).
    """

    #: Default of ``bodies(path)``: the wire's main endpoint (matched as a path suffix).
    chat_path: ClassVar[str] = "/"
    #: Appended to the server root for ``base_url`` (``/v1`` where the SDK wants it).
    url_path: ClassVar[str] = ""
    #: Default content types of a ``Malformed`` answer.
    json_media_type: ClassVar[str] = "application/json"
    stream_media_type: ClassVar[str] = "text/event-stream"

    Fail = Fail
    Stall = Stall
    Disconnect = Disconnect
    Malformed = Malformed
    StreamError = StreamError

    def __init__(self) -> None:
        self.base_url: str | None = None
        self.root_url: str | None = None
        self._transport: InProcessTransport | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.reset()
        self.app = Starlette(
            routes=[
                Route(path, self._guard(handler), methods=methods)
                for path, handler, methods in self._routes()
            ],
            exception_handlers={404: self._not_found, 405: self._not_found},
        )
        self.app.add_middleware(_ResponseHeaders, fake=self)  # type: ignore[arg-type]

    # ---- the hooks of a wire

    def _routes(self) -> list[tuple[str, Handler, list[str] | None]]:
        raise NotImplementedError

    def _fail(self, request: Request, fail: Fail) -> Response:
        raise NotImplementedError

    def _error_response(self, request: Request, status: int) -> Response:
        """The wire's answer to a crash of the fake (500) or an unknown route (404/405)."""
        return Response(json.dumps({"error": "error"}), status, media_type=self.json_media_type)

    def _begin(self, state: dict[str, Any]) -> None:
        """Run as a request comes in, before routing (e.g. to put a request id in ``state``,
        which handlers see as ``request.state``)."""

    def _default_headers(self, scope: dict[str, Any], elapsed_ms: int) -> dict[str, str]:
        """Headers the live service sends on every response (the response's own win)."""
        return {}

    async def _admit(self, request: Request) -> Response | None:
        """Run for every routed request after recording it; an answer here ends it."""
        return None

    # ---- configuration and inspection

    def reset(self) -> None:
        """Clear the scripts, recorded requests and violations (subclasses also restore their
        configuration, after calling this)."""
        with self._lock:
            self.requests: list[RecordedRequest] = []
            self.spec_violations: list[str] = []
            self.internal_errors: list[str] = []
            self._queues = {"chat": ActionQueue(), "embeddings": ActionQueue()}

    def script(self, *actions: Any) -> None:
        """Queue actions for the next chat requests (one per request; a ``Fail`` with
        ``times=n`` answers n requests)."""
        self._queues["chat"].push(*actions)

    def script_embeddings(self, *actions: Any) -> None:
        """Queue actions for the next embeddings requests."""
        self._queues["embeddings"].push(*actions)

    @property
    def pending_actions(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    @property
    def last_request(self) -> RecordedRequest | None:
        return self.requests[-1] if self.requests else None

    def bodies(self, path: str | None = None) -> list[Any]:
        """Parsed bodies of the recorded requests whose path ends with ``path`` (default: the
        wire's chat endpoint)."""
        suffix = self.chat_path if path is None else path
        return [r.body for r in self.requests if r.path.endswith(suffix)]

    @contextlib.contextmanager
    def checked(self, *, violations: bool = True) -> Iterator[Self]:
        """For one test: reset, yield the fake, then reset again and fail on a bug of the fake
        (``internal_errors``) and, with ``violations``, on a ``spec_violations`` entry."""
        self.reset()
        yield self
        problems = {"internal_errors": list(self.internal_errors)}
        if violations:
            problems["spec_violations"] = list(self.spec_violations)
        self.reset()
        assert not any(problems.values()), f"{type(self).__name__}: {problems}"

    # ---- serving

    def _bind(self, root: str | None) -> None:
        self.root_url = root
        self.base_url = None if root is None else root + self.url_path

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        """Serve on 127.0.0.1 (a free port) for the duration; sets ``base_url``/``root_url``."""
        with serve(self.app) as url:
            self._bind(url)
            try:
                yield self
            finally:
                self._bind(None)

    def transport(self, root: str = "http://fake.test") -> InProcessTransport:
        """An httpx transport (sync and async) answering from this fake in-process, without a
        socket: pass it as ``transport=`` to a model. Any base URL reaches the fake through
        it; when the fake is not ``running()``, ``base_url``/``root_url`` are set from
        ``root``. Client timeouts are not simulated: a ``Stall`` test needs ``running()``."""
        if self._transport is None:
            self._transport = InProcessTransport(self.app)
        if self.root_url is None:
            self._bind(root)
        return self._transport

    # ---- plumbing for the wires

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def _guard(self, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Any:
            try:
                await self._record(request)
                denied = await self._admit(request)
                return denied if denied is not None else await handler(request)
            except Exception as exc:  # a bug of the fake: answer like the service, keep a note
                self.internal_errors.append(f"{request.method} {request.url.path}: {exc!r}")
                return self._error_response(request, 500)

        return endpoint

    async def _record(self, request: Request) -> RecordedRequest:
        """Record ``request`` (once; later calls return the same record)."""
        recorded: RecordedRequest | None = getattr(request.state, "recorded", None)
        if recorded is not None:
            return recorded
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        recorded = RecordedRequest(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            raw=raw,
        )
        request.state.recorded = recorded  # not requests[-1]: requests run concurrently
        self.requests.append(recorded)
        return recorded

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        await self._record(request)
        return self._error_response(request, getattr(exc, "status_code", 404))

    @staticmethod
    def _bearer(request: Request) -> str:
        """The token of an ``Authorization: Bearer <token>`` header ("" without one)."""
        header = request.headers.get("authorization", "")
        return header[7:].strip() if header.lower().startswith("bearer ") else ""

    def _violation(self, request: Request, text: str) -> None:
        self.spec_violations.append(f"{request.method} {request.url.path}: {text}")

    async def _stall(self, request: Request, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(0.05, left))
            if await request.is_disconnected():
                return

    async def _next_action(self, request: Request, kind: str = "chat") -> Any:
        """The next scripted action of ``kind`` (None: unscripted), a ``Stall`` slept off."""
        action = self._queues[kind].pop()
        if isinstance(action, Stall):
            await self._stall(request, action.seconds)
            action = action.then
        return action

    async def _take(
        self, request: Request, kind: str = "chat", *, stream: bool = False
    ) -> tuple[Any, Any]:
        """(answer to send now or None, the action that shapes the answer or None).

        ``Fail``, ``Malformed`` and a ``Disconnect`` of a non-streamed request answer now; a
        ``Reply``, a streamed ``Disconnect`` and a ``StreamError`` are left to the wire."""
        action = await self._next_action(request, kind)
        if isinstance(action, Fail):
            return self._fail(request, action), None
        if isinstance(action, Malformed):
            media = action.content_type or (
                self.stream_media_type if stream else self.json_media_type
            )
            return Response(action.body, action.status, media_type=media), None
        if isinstance(action, Disconnect) and not stream:
            return Dropped(), None
        return None, action
