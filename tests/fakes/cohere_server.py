"""A faithful fake of Cohere's HTTP API (v2 chat and embed, v1 models), for tests.

``FakeCohere`` holds a Starlette app serving, like api.cohere.com:

* ``POST /v2/chat`` (JSON, or server-sent events when ``stream`` is true),
* ``POST /v2/embed`` (``float``, ``int8``, ``uint8``, ``base64`` embedding types,
  ``output_dimension`` for embed-v4.0, at most 96 texts),
* ``GET /v1/models`` (``page_size``, ``page_token``, ``endpoint`` filter) and
  ``GET /v1/models/{model}``,

authenticated by ``Authorization: Bearer <key>``. Every chat and embed body is validated against
the inline request-body schemas of ``../shared/specs/cohere-openapi.prism-fixed.yaml``
(discriminators honoured, see ``_openapi_paths``), then against rules the live API enforces
beyond the schema (unknown fields, ``tool_choice`` without tools, tool results that answer no
call, at most 5 stop sequences, images only for vision models, tools only for models with
tool use). A violation answers 400
``{"id", "message": "invalid request: ..."}`` and is appended to ``fake.spec_violations``.

``fake.script(*actions)`` queues what the next chat requests get (``Reply``, ``Fail``, ``Stall``,
``Disconnect``, ``Malformed``, ``StreamError``); ``script_embed`` does the same for embed. With
the queue empty the deterministic brain (``_brain``) answers.

    with FakeCohere().running() as fake:
        client = cohere.ClientV2(api_key="test", base_url=fake.base_url)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import struct
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import _brain
from ._cohere_wire import (
    CATALOGUE,
    CohereSSE,
    Disconnect,
    Fail,
    Malformed,
    Reply,
    Stall,
    StreamError,
    answer_for,
    chat_body,
    chat_events,
    error_body,
    prompt_tokens,
    tool_plan_for,
    usage_body,
)
from ._openai_wire import Dropped, embed_text
from ._openapi import error_path
from ._openapi_paths import body_properties, first_body_error
from ._scripting import ActionQueue
from ._server import serve

__all__ = [
    "SPEC_FILE",
    "Disconnect",
    "Fail",
    "FakeCohere",
    "Malformed",
    "RecordedRequest",
    "Reply",
    "Stall",
    "StreamError",
]

SPEC_FILE = "cohere-openapi.prism-fixed.yaml"
MAX_STOP_SEQUENCES = 5

Action = Reply | Fail | Stall | Disconnect | Malformed | StreamError


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None when absent/unparsable


class _Invalid(Exception):
    """A request the live API refuses (400 ``invalid request: ...``)."""


class FakeCohere:
    """The fake service. ``base_url`` (``http://127.0.0.1:PORT``) is set while ``running()``;
    ``requests``, ``spec_violations``, ``internal_errors`` are inspected by tests; ``api_key``
    (None accepts any key) and ``models`` are configuration restored by ``reset()``."""

    Reply = Reply
    Fail = Fail
    Stall = Stall
    Disconnect = Disconnect
    Malformed = Malformed
    StreamError = StreamError

    def __init__(self, *, api_key: str | None = None) -> None:
        self._default_key = api_key
        self.base_url: str | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.reset()
        self.app = Starlette(
            routes=[
                Route("/v2/chat", self._guard(self._chat), methods=["POST"]),
                Route("/v2/embed", self._guard(self._embed), methods=["POST"]),
                Route("/v1/models", self._guard(self._list_models), methods=["GET"]),
                Route("/v1/models/{model:path}", self._guard(self._get_model), methods=["GET"]),
            ],
            exception_handlers={404: self._not_found, 405: self._not_found},
        )

    # ---- configuration and inspection
    def reset(self) -> None:
        """Clear scripts, recorded requests and violations; restore the configuration."""
        with self._lock:
            self.api_key: str | None = self._default_key
            self.models: dict[str, dict[str, Any]] = {k: dict(v) for k, v in CATALOGUE.items()}
            self.requests: list[RecordedRequest] = []
            self.spec_violations: list[str] = []
            self.internal_errors: list[str] = []
            self._chat_script = ActionQueue()
            self._embed_script = ActionQueue()

    def script(self, *actions: Action) -> None:
        """Queue actions for the next chat requests (``Fail(times=n)`` answers n requests)."""
        self._chat_script.push(*actions)

    def script_embed(self, *actions: Action) -> None:
        """Queue actions for the next embed requests."""
        self._embed_script.push(*actions)

    @property
    def last_request(self) -> RecordedRequest | None:
        return self.requests[-1] if self.requests else None

    def bodies(self, path: str = "/v2/chat") -> list[Any]:
        """Parsed bodies of the recorded requests to ``path``."""
        return [r.body for r in self.requests if r.path == path]

    @contextlib.contextmanager
    def running(self) -> Iterator[FakeCohere]:
        """Serve on 127.0.0.1 (a free port) for the duration; sets ``base_url``."""
        with serve(self.app) as url:
            self.base_url = url
            try:
                yield self
            finally:
                self.base_url = None

    # ---- plumbing
    def _trace_id(self) -> str:
        with self._lock:
            return str(uuid.UUID(int=next(self._ids) * 7919 + 2**64))

    def _json(
        self, data: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        merged = {"x-debug-trace-id": self._trace_id(), **(headers or {})}
        return Response(json.dumps(data), status, headers=merged, media_type="application/json")

    def _error(self, status: int, message: str | None = None, **headers: str) -> Response:
        trace = self._trace_id()
        return self._json(
            error_body(status, message, trace), status, {"x-debug-trace-id": trace, **headers}
        )

    def _guard(
        self, handler: Callable[[Request], Awaitable[Any]]
    ) -> Callable[[Request], Awaitable[Any]]:
        async def endpoint(request: Request) -> Any:
            try:
                return await handler(request)
            except Exception as exc:  # a bug of the fake: answer like the service, keep a note
                self.internal_errors.append(f"{request.method} {request.url.path}: {exc!r}")
                return self._error(500)

        return endpoint

    async def _record(self, request: Request) -> RecordedRequest:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        recorded = RecordedRequest(
            request.method, request.url.path, dict(request.query_params),
            {k.lower(): v for k, v in request.headers.items()}, body,
        )  # fmt: skip
        self.requests.append(recorded)
        return recorded

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        await self._record(request)
        return self._error(404, f"{request.method} {request.url.path} not found")

    def _authorise(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not token:
            return self._error(401, "no api key supplied")
        if self.api_key is not None and token != self.api_key:
            return self._error(401, "invalid api token")
        return None

    def _invalid(self, request: Request, problem: str) -> Response:
        self.spec_violations.append(f"{request.method} {request.url.path}: {problem}")
        return self._error(400, f"invalid request: {problem}")

    async def _preamble(self, request: Request) -> tuple[dict[str, Any] | None, Response | None]:
        """Record, authenticate, parse and validate against the spec. (body, early answer)."""
        recorded = await self._record(request)
        denied = self._authorise(request)
        if denied is not None:
            return None, denied
        body = recorded.body
        if not isinstance(body, dict):
            return None, self._invalid(request, "the body is not a JSON object")
        path = request.url.path
        error = first_body_error(SPEC_FILE, path, body)
        if error is not None:
            where = error_path(error)
            return None, self._invalid(request, f"{where + ': ' if where else ''}{error.message}")
        unknown = sorted(set(body) - body_properties(SPEC_FILE, path))
        if unknown:
            return None, self._invalid(request, f"unknown field `{unknown[0]}`")
        return body, None

    def _model(self, name: str, endpoint: str) -> Response | None:
        card = self.models.get(name)
        if card is None or endpoint not in card["endpoints"]:
            return self._error(
                404,
                f"model '{name}' not found, make sure the correct model ID was used and that "
                "you have access to the model.",
            )
        return None

    async def _stall(self, request: Request, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(0.05, left))
            if await request.is_disconnected():
                return

    async def _scripted(
        self, request: Request, queue: ActionQueue, stream: bool
    ) -> tuple[Any, Any]:
        """(response to send now or None, the action that shapes the answer or None)."""
        action = queue.pop()
        if isinstance(action, Stall):
            await self._stall(request, action.seconds)
            action = action.then
        if isinstance(action, Fail):
            headers = dict(action.headers)
            return self._error(action.status, action.message, **headers), None
        if isinstance(action, Malformed):
            media = action.content_type or ("text/event-stream" if stream else "application/json")
            return Response(action.body, action.status, media_type=media), None
        if isinstance(action, Disconnect) and not stream:
            return Dropped(), None
        return None, action

    # ---- chat
    def _check_chat(self, body: dict[str, Any]) -> None:
        """Rules of the live API beyond the schema; raises `_Invalid`."""
        messages = body["messages"]
        if not messages:
            raise _Invalid("messages must not be empty")
        if body.get("tool_choice") and not body.get("tools"):
            raise _Invalid("tool_choice requires tools to be specified")
        if len(body.get("stop_sequences") or []) > MAX_STOP_SEQUENCES:
            raise _Invalid(f"stop_sequences can contain at most {MAX_STOP_SEQUENCES} items")
        card = self.models[body["model"]]
        vision = bool(card.get("_vision"))
        if body.get("tools") and "tools" not in card.get("features", []):
            raise _Invalid(f"tools are not supported for model '{body['model']}'")
        calls: set[str] = set()
        for i, message in enumerate(messages):
            content = message.get("content")
            if message["role"] == "assistant":
                if not message.get("tool_calls") and content is None:
                    raise _Invalid(
                        f"messages[{i}]: an assistant message needs content or tool_calls"
                    )
                calls |= {c["id"] for c in message.get("tool_calls") or []}
            if message["role"] == "tool" and message["tool_call_id"] not in calls:
                raise _Invalid(
                    f"messages[{i}]: tool_call_id {message['tool_call_id']!r} answers no tool call"
                )
            if (
                isinstance(content, list)
                and not vision
                and any(isinstance(p, dict) and p.get("type") == "image_url" for p in content)
            ):
                raise _Invalid(f"image content is not supported for model '{body['model']}'")

    async def _chat(self, request: Request) -> Any:
        body, early = await self._preamble(request)
        if early is not None:
            return early
        assert body is not None
        missing = self._model(body["model"], "chat")
        if missing is not None:
            return missing
        try:
            self._check_chat(body)
        except _Invalid as problem:
            return self._invalid(request, str(problem))
        stream = body.get("stream") is True
        now, action = await self._scripted(request, self._chat_script, stream)
        if now is not None:
            return now
        reply = action if isinstance(action, Reply) else None
        limit = self.models[body["model"]]["context_length"]
        if reply is None and (used := prompt_tokens(body)) > limit:
            return self._error(
                400,
                f"too many tokens: total number of tokens in the prompt cannot exceed {limit} - "
                f"received {used}. Try using a shorter prompt, or enabling prompt truncating.",
            )
        answer = answer_for(body, reply)
        plan = tool_plan_for(answer, reply)
        usage = usage_body(body, answer, plan, reply)
        seed = next(self._ids)
        chat_id = str(uuid.UUID(int=seed * 104729 + 2**100))
        thinking = reply.thinking if reply is not None else None
        if not stream:
            return self._json(chat_body(chat_id, answer, plan, usage, seed, thinking))
        events = chat_events(chat_id, answer, plan, usage, seed, thinking)
        cut = None
        if isinstance(action, Disconnect):
            cut = action.after_events
        elif isinstance(action, StreamError):
            end = {
                "type": "message-end",
                "delta": {"error": action.message, "finish_reason": "ERROR"},
            }
            events = [*events[: action.after_events], end]
        return CohereSSE(events, drop_after=cut, headers={"x-debug-trace-id": self._trace_id()})

    # ---- embed
    async def _embed(self, request: Request) -> Any:
        body, early = await self._preamble(request)
        if early is not None:
            return early
        assert body is not None
        missing = self._model(body["model"], "embed")
        if missing is not None:
            return missing
        now, _ = await self._scripted(request, self._embed_script, stream=False)
        if now is not None:
            return now
        texts = body.get("texts")
        if not texts:
            return self._invalid(request, "one of texts, images or inputs must be specified")
        full, allowed = self.models[body["model"]]["_dims"]
        dims = body.get("output_dimension")
        if dims is not None and dims not in allowed:
            return self._invalid(
                request,
                f"output_dimension {dims} is not supported for model '{body['model']}'"
                + (f"; use one of {list(allowed)}" if allowed else ""),
            )
        vectors = [embed_text(t, dims or full, full) for t in texts]
        out: dict[str, Any] = {}
        for kind in body.get("embedding_types") or ["float"]:
            if kind == "float":
                out["float"] = vectors
            elif kind in ("int8", "uint8"):
                shift = 0 if kind == "int8" else 128
                out[kind] = [
                    [max(-128, min(127, round(x * 127 * 8))) + shift for x in v] for v in vectors
                ]
            elif kind == "base64":
                out["base64"] = [
                    base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode("ascii")
                    for v in vectors
                ]
            else:
                return self._invalid(
                    request, f"embedding type {kind!r} is not offered by this fake"
                )
        billed = sum(_brain.count_tokens(t) for t in texts)
        return self._json(
            {
                "id": self._trace_id(),
                "texts": texts,
                "embeddings": out,
                "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": billed}},
                "response_type": "embeddings_by_type",
            }
        )

    # ---- models
    def _card(self, name: str) -> dict[str, Any]:
        card = self.models[name]
        return {
            "name": name,
            "endpoints": card["endpoints"],
            "finetuned": False,
            "context_length": card["context_length"],
            "tokenizer_url": f"https://storage.googleapis.com/cohere-public/tokenizers/{name}.json",
            "default_endpoints": [],
            "features": list(card.get("features", [])),
            "is_deprecated": False,
        }

    async def _list_models(self, request: Request) -> Response:
        await self._record(request)
        denied = self._authorise(request)
        if denied is not None:
            return denied
        query = request.query_params
        names = sorted(self.models)
        if query.get("endpoint"):
            names = [n for n in names if query["endpoint"] in self.models[n]["endpoints"]]
        try:
            size = int(float(query.get("page_size", "20")))
            start = int(query.get("page_token") or 0)
        except ValueError:
            return self._error(400, "invalid request: page_size and page_token")
        if not 1 <= size <= 1000:
            return self._error(400, "invalid request: page_size must be between 1 and 1000")
        page = names[start : start + size]
        data: dict[str, Any] = {"models": [self._card(n) for n in page]}
        if start + size < len(names):
            data["next_page_token"] = str(start + size)
        return self._json(data)

    async def _get_model(self, request: Request) -> Response:
        await self._record(request)
        denied = self._authorise(request)
        if denied is not None:
            return denied
        name = request.path_params["model"]
        if name not in self.models:
            return self._error(404, f"model '{name}' not found")
        return self._json(self._card(name))
