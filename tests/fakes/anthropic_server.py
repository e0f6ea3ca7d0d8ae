"""A faithful fake of the Anthropic HTTP API (Messages and Models), for tests.

``FakeAnthropic`` holds a Starlette app serving, like api.anthropic.com:

* ``POST /v1/messages`` (JSON, or named SSE events when ``stream`` is true),
* ``POST /v1/messages/count_tokens``,
* ``GET /v1/models`` (cursor pages: ``limit``, ``after_id``, ``before_id``) and
  ``GET /v1/models/{model_id}`` (aliases such as ``claude-sonnet-4-5`` resolve to snapshots),

authenticated by ``x-api-key`` and requiring the ``anthropic-version`` header. Every body is
validated against ``CreateMessageParams`` / ``CountMessageTokensParams`` of
``../shared/specs/anthropic-openapi.yaml`` and against rules the live API enforces beyond it
(``_anthropic_checks``: tool_use/tool_result pairing, thinking, media, cache breakpoints, ...).
A violation answers 400 in Anthropic's error shape and is appended to ``fake.spec_violations``.
Prompt caching is simulated (``_anthropic_wire.PromptCache``).

Per test, ``fake.script(*actions)`` queues what the next message requests get (``Reply``,
``Fail``, ``Stall``, ``Disconnect``, ``Malformed``, ``StreamError``); with the queue empty the
deterministic brain in ``_brain`` answers. ``fake.requests`` records every request.

    with FakeAnthropic().running() as fake:
        client = anthropic.Anthropic(base_url=fake.base_url, api_key="sk-ant-test")
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from . import _brain
from ._anthropic_checks import check_message_request
from ._anthropic_wire import (
    CONTEXT_WINDOW,
    MODELS,
    ModelCard,
    PromptCache,
    answer_blocks,
    brain_body,
    default_headers,
    error_body,
    event_stream,
    json_response,
    message_body,
    model_card,
    new_request_id,
    stream_events,
    usage_body,
)
from ._openapi import error_path, first_error
from ._service import (
    Disconnect,
    Fail,
    FakeService,
    Handler,
    Malformed,
    RecordedRequest,
    Stall,
    StreamError,
    seconds_text,
)

__all__ = [
    "Disconnect",
    "Fail",
    "FakeAnthropic",
    "Malformed",
    "RateLimits",
    "RecordedRequest",
    "Reply",
    "Stall",
    "StreamError",
]

SPEC_FILE = "anthropic-openapi.yaml"
API_VERSIONS = ("2023-06-01", "2023-01-01", "2026-10-21")  # the SDK pins the newest


# --------------------------------------------------------------------------- script actions


@dataclass
class Reply:
    """Answer the next message request with this (streamed if the request streams)."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # [{"name": ..., "arguments": dict}]
    thinking: str | None = None
    stop_reason: str | None = None  # default: tool_use with tool calls, else end_turn
    usage: dict[str, Any] | None = None  # merged over the computed usage


Action = Reply | Fail | Stall | Disconnect | Malformed | StreamError
_ERROR_STATUS = {"overloaded_error": 529, "api_error": 500, "rate_limit_error": 429}


@dataclass
class RateLimits:
    """The documented ``anthropic-ratelimit-*`` headers, set as ``fake.rate_limits`` to send
    them on every response (JSON, SSE and errors). A field set to None omits its header; a
    header the response sets itself (a 429's ``requests-remaining: 0``, ``Fail.headers``) wins.
    A ``*_reset`` is sent as given when a str, else as RFC 3339 that many seconds from now.

    https://docs.anthropic.com/en/api/rate-limits#response-headers
    """

    requests_limit: int | str | None = 4_000
    requests_remaining: int | str | None = 3_999
    requests_reset: float | str | None = 1.0
    tokens_limit: int | str | None = 2_400_000
    tokens_remaining: int | str | None = 2_399_000
    tokens_reset: float | str | None = 1.0
    input_tokens_limit: int | str | None = 2_000_000
    input_tokens_remaining: int | str | None = 1_999_000
    input_tokens_reset: float | str | None = 1.0
    output_tokens_limit: int | str | None = 400_000
    output_tokens_remaining: int | str | None = 400_000
    output_tokens_reset: float | str | None = 1.0

    def headers(self) -> dict[str, str]:
        now = datetime.now(UTC)
        out = {}
        for name, value in asdict(self).items():
            if value is None:
                continue
            if name.endswith("_reset") and not isinstance(value, str):
                value = (now + timedelta(seconds=value)).strftime("%Y-%m-%dT%H:%M:%SZ")
            out["anthropic-ratelimit-" + name.replace("_", "-")] = str(value)
        return out


def _dotted(path: str) -> str:
    return path.replace("[", ".").replace("]", "")


# --------------------------------------------------------------------------- the fake


class FakeAnthropic(FakeService):
    """The fake service (``FakeService`` for the harness). Beyond it: ``base_url`` has no
    ``/v1`` (the SDK and the profile add it); ``models`` (``ModelCard``s), ``api_key``,
    ``context_window``, ``cache``, ``rate_limits`` (``RateLimits`` or None): configuration and
    state, restored by ``reset()``.
    """

    chat_path = "/v1/messages"
    Reply = Reply

    def __init__(self, *, api_key: str | None = None, context_window: int = CONTEXT_WINDOW) -> None:
        self._defaults = {"api_key": api_key, "context_window": context_window}
        self.organization_id = "3f1c2a9e-0000-4000-8000-00000000a11c"
        super().__init__()

    def _routes(self) -> list[tuple[str, Handler, list[str] | None]]:
        return [
            ("/v1/messages", self._messages, ["POST"]),
            ("/v1/messages/count_tokens", self._count_tokens, ["POST"]),
            ("/v1/models", self._list_models, ["GET"]),
            ("/v1/models/{model_id:path}", self._get_model, ["GET"]),
        ]

    def reset(self) -> None:
        """Clear script, cache, recorded requests and violations; restore the configuration."""
        super().reset()
        self.api_key: str | None = self._defaults["api_key"]  # type: ignore[assignment]
        self.context_window: int = self._defaults["context_window"]  # type: ignore[assignment]
        self.models: list[ModelCard] = list(MODELS)
        self.cache = PromptCache()
        self.rate_limits: RateLimits | None = None

    # ---- plumbing

    def _begin(self, state: dict[str, Any]) -> None:
        state["request_id"] = new_request_id(self._next_id())

    def _default_headers(self, scope: dict[str, Any], elapsed_ms: int) -> dict[str, str]:
        return default_headers(scope["method"], scope["state"], self.organization_id)

    def _error_response(self, request: Request, status: int) -> Response:
        if status == 500:
            return self._error(request, 500)
        return self._error(request, 404, "Not Found", "not_found_error")

    def _error(
        self,
        request: Request,
        status: int,
        message: str | None = None,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        body = error_body(status, message, type_, request.state.request_id)
        return json_response(body, status, headers)

    def _fail(self, request: Request, fail: Fail) -> Response:
        headers = {}
        if fail.status == 429:
            headers["retry-after"] = seconds_text(fail.retry_after or 0)
            headers["anthropic-ratelimit-requests-remaining"] = "0"
        type_ = fail.body.get("type")
        return self._error(request, fail.status, fail.message, type_, headers | fail.headers)

    def _card(self, model: str) -> ModelCard | None:
        return next((c for c in self.models if model in (c.id, c.alias)), None)

    def _authorise(self, request: Request) -> Response | None:
        key = request.headers.get("x-api-key")
        key = key or self._bearer(request)
        if not key:
            return self._error(request, 401, "x-api-key header is required")
        if self.api_key is not None and key != self.api_key:
            return self._error(request, 401, "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        if version is None:
            return self._error(request, 400, "anthropic-version: header is required")
        if version not in API_VERSIONS:
            return self._error(request, 400, f"anthropic-version: invalid version {version!r}")
        return None

    async def _preamble(
        self, request: Request, schema: str
    ) -> tuple[dict[str, Any] | None, ModelCard | None, Response | None]:
        """Record, authenticate, parse, validate, resolve the model."""
        recorded = await self._record(request)
        denied = self._authorise(request)
        if denied is not None:
            return None, None, denied
        body = recorded.body
        if not isinstance(body, dict):
            return None, None, self._error(request, 400, "There was an error parsing the body "
                                           "of your request: expected a JSON object")  # fmt: skip
        error = first_error(SPEC_FILE, schema, body)
        if error is not None:
            path = _dotted(error_path(error))
            if error.validator == "required":
                missing = next((k for k in error.validator_value if k not in error.instance), "")
                text = f"{path + '.' if path else ''}{missing}: Field required"
            elif error.validator == "additionalProperties":
                extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
                text = f"{path + '.' if path else ''}{extra[0]}: Extra inputs are not permitted"
            else:
                text = f"{path}: {error.message}"
            self._violation(request, f"{schema}: {text}")
            return None, None, self._error(request, 400, text)
        card = self._card(str(body["model"]))
        if card is None:
            return None, None, self._error(request, 404, f"model: {body['model']}")
        request.state.fake_tokens = _brain.count_tokens(recorded.raw.decode("utf-8", "replace"))
        return body, card, None

    # ---- endpoints

    async def _messages(self, request: Request) -> Any:
        body, card, early = await self._preamble(request, "CreateMessageParams")
        if early is not None:
            return early
        assert body is not None and card is not None
        problem = check_message_request(body, card)
        if problem is not None:
            self._violation(request, f"contract: {problem.message}")
            return self._error(request, problem.status, problem.message, problem.type)
        stream = body.get("stream") is True
        now, action = await self._take(request, stream=stream)
        if now is not None:
            return now
        if isinstance(action, StreamError):
            error_type = action.type or "overloaded_error"
            error = {"type": error_type, "message": action.message or "Overloaded"}
            if not stream:
                status = _ERROR_STATUS.get(error_type, 500)
                return self._error(request, status, error["message"], error_type)
        cache = self.cache.account(card.id, body, card.min_cacheable)
        prompt_tokens = sum(cache[:3])
        if prompt_tokens > self.context_window:
            return self._error(request, 400, f"prompt is too long: {prompt_tokens} tokens > "
                                             f"{self.context_window} maximum")  # fmt: skip
        reply = action if isinstance(action, Reply) else None
        n = self._next_id()
        mind = brain_body(body)
        prompt = _brain.last_user_text(mind["messages"])
        thinking = reply.thinking if reply else None
        if reply is None and (body.get("thinking") or {}).get("type") == "enabled":
            thinking = f"Let me think about: {prompt[:200]}"
        if reply is not None:
            calls = [
                _brain.ToolCall(c["name"], json.dumps(c.get("arguments", {})))
                for c in reply.tool_calls or []
            ]
            answer = _brain.Answer(reply.content, calls)
        else:
            answer = _brain.respond(mind)
            forced = (body.get("tool_choice") or {}).get("type") in ("any", "tool")
            if answer.tool_calls and not forced:  # Claude says what it is about to do
                answer.content = f"I'll use the {answer.tool_calls[0].name} tool."
        blocks = answer_blocks(
            body,
            answer,
            seed=n,
            thinking=thinking,
            stop_reason=reply.stop_reason if reply else None,
        )
        usage = usage_body(blocks, cache, reply.usage if reply else None)
        message_id = "msg_01" + hashlib.sha256(f"msg{n}".encode()).hexdigest()[:22]
        message = message_body(message_id, card.id, blocks, usage)
        if not stream:
            return json_response(message)
        events = stream_events(message)
        if isinstance(action, StreamError):
            return event_stream(events, error=(action.after_events, {"type": "error", "error": error}))
        cut = action.after_events if isinstance(action, Disconnect) else None
        return event_stream(events, drop_after=cut)

    async def _count_tokens(self, request: Request) -> Any:
        body, card, early = await self._preamble(request, "CountMessageTokensParams")
        if early is not None:
            return early
        assert body is not None and card is not None
        uncached, read, written, _ = PromptCache().account(card.id, body, card.min_cacheable)
        return json_response({"input_tokens": uncached + read + written})

    async def _list_models(self, request: Request) -> Response:
        denied = self._authorise(request)
        if denied is not None:
            return denied
        query = request.query_params
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            return self._error(request, 400, "limit: Input should be a valid integer")
        if not 1 <= limit <= 1000:
            return self._error(request, 400, "limit: Input should be between 1 and 1000")
        ids = [card.id for card in self.models]
        for cursor in ("after_id", "before_id"):
            if query.get(cursor) is not None and query[cursor] not in ids:
                return self._error(request, 400, f"{cursor}: unknown model id {query[cursor]}")
        if "before_id" in query:
            end = ids.index(query["before_id"])
            start = max(end - limit, 0)
            more = start > 0
        else:
            start = ids.index(query["after_id"]) + 1 if "after_id" in query else 0
            end = min(start + limit, len(ids))
            more = end < len(ids)
        page = [model_card(card) for card in self.models[start:end]]
        return json_response({
            "data": page, "has_more": more,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        })  # fmt: skip

    async def _get_model(self, request: Request) -> Response:
        denied = self._authorise(request)
        if denied is not None:
            return denied
        card = self._card(request.path_params["model_id"])
        if card is None:
            return self._error(request, 404, f"model: {request.path_params['model_id']}")
        return json_response(model_card(card))
