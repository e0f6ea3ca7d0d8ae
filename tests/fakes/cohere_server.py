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
``Disconnect``, ``Malformed``, ``StreamError``); ``script_embeddings`` does the same for
embed. With the queue empty the deterministic brain (``_brain``) answers.

    with FakeCohere().running() as fake:
        client = cohere.ClientV2(api_key="test", base_url=fake.base_url)
"""

from __future__ import annotations

import base64
import json
import struct
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from . import _brain
from ._cohere_wire import (
    CATALOGUE,
    Reply,
    answer_for,
    chat_body,
    chat_events,
    cohere_sse,
    error_body,
    prompt_tokens,
    tool_plan_for,
    usage_body,
)
from ._openai_wire import embed_text
from ._openapi import error_path
from ._openapi_paths import body_properties, first_body_error
from ._service import (
    Disconnect,
    Fail,
    FakeService,
    Handler,
    Malformed,
    RecordedRequest,
    Stall,
    StreamError,
)

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


class _Invalid(Exception):
    """A request the live API refuses (400 ``invalid request: ...``)."""


class FakeCohere(FakeService):
    """The fake service (``FakeService`` for the harness). Beyond it: ``api_key`` (None accepts
    any key) and ``models`` are configuration restored by ``reset()``."""

    chat_path = "/v2/chat"
    Reply = Reply

    def __init__(self, *, api_key: str | None = None) -> None:
        self._default_key = api_key
        super().__init__()

    def _routes(self) -> list[tuple[str, Handler, list[str] | None]]:
        return [
            ("/v2/chat", self._chat, ["POST"]),
            ("/v2/embed", self._embed, ["POST"]),
            ("/v1/models", self._list_models, ["GET"]),
            ("/v1/models/{model:path}", self._get_model, ["GET"]),
        ]

    def reset(self) -> None:
        """Clear scripts, recorded requests and violations; restore the configuration."""
        super().reset()
        self.api_key: str | None = self._default_key
        self.models: dict[str, dict[str, Any]] = {k: dict(v) for k, v in CATALOGUE.items()}

    # ---- plumbing
    def _trace_id(self) -> str:
        return str(uuid.UUID(int=self._next_id() * 7919 + 2**64))

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

    def _fail(self, request: Request, fail: Fail) -> Response:
        return self._error(fail.status, fail.message, **fail.headers)

    def _error_response(self, request: Request, status: int) -> Response:
        if status == 500:
            return self._error(500)
        return self._error(404, f"{request.method} {request.url.path} not found")

    def _authorise(self, request: Request) -> Response | None:
        token = self._bearer(request)
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
        recorded = await self._record(request)  # already recorded by the guard
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
        now, action = await self._take(request, stream=stream)
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
        seed = self._next_id()
        chat_id = str(uuid.UUID(int=seed * 104729 + 2**100))
        thinking = reply.thinking if reply is not None else None
        if not stream:
            return self._json(chat_body(chat_id, answer, plan, usage, seed, thinking))
        events = chat_events(chat_id, answer, plan, usage, seed, thinking)
        cut = None
        if isinstance(action, Disconnect):
            cut = action.after_events
        elif isinstance(action, StreamError):
            error = action.message or "internal server error, please try again later"
            end = {"type": "message-end", "delta": {"error": error, "finish_reason": "ERROR"}}
            events = [*events[: action.after_events], end]
        return cohere_sse(events, drop_after=cut, headers={"x-debug-trace-id": self._trace_id()})

    # ---- embed
    async def _embed(self, request: Request) -> Any:
        body, early = await self._preamble(request)
        if early is not None:
            return early
        assert body is not None
        missing = self._model(body["model"], "embed")
        if missing is not None:
            return missing
        now, _ = await self._take(request, "embeddings")
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
        denied = self._authorise(request)
        if denied is not None:
            return denied
        name = request.path_params["model"]
        if name not in self.models:
            return self._error(404, f"model '{name}' not found")
        return self._json(self._card(name))
