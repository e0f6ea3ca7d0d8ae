"""A faithful fake of Replicate's predictions API, for tests.

``FakeReplicate`` holds a Starlette app serving, like api.replicate.com:

* ``POST /v1/models/{owner}/{name}/predictions`` (official models, run by name) and
  ``POST /v1/predictions`` (any model, by ``version``), honouring ``Prefer: wait[=N]``
  (sync mode: hold the request until the prediction ends or N seconds pass, 60 at most);
* ``GET /v1/predictions/{id}`` and ``POST /v1/predictions/{id}/cancel``;
* ``GET /v1/streams/{id}``: the prediction's server-sent events (``output`` tokens with ids,
  ``error`` with ``{"detail"}``, ``done`` with ``{}`` or ``{"reason": "canceled"|"error"}``);
* ``GET /v1/models/{owner}/{name}/versions/{id}`` (the version's Cog schemas, which the SDK's
  ``run`` reads for ``owner/name:version`` references).

Every URL in a prediction points at this server. A prediction runs for ``Reply.seconds``
(default 0), then ends ``succeeded`` (or as scripted); polled while running it reports
``starting``/``processing`` with the tokens produced so far. Create bodies are validated against
``CREATE_SCHEMA`` and inputs against the model's Cog ``Input`` schema; a problem is answered with
422 problem+json and appended to ``fake.spec_violations``. Auth is ``Authorization: Bearer
<token>`` (or the older ``Token <token>``).

    with FakeReplicate().running() as fake:
        client = replicate.Client(api_token="test", base_url=fake.base_url)
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from starlette.requests import Request
from starlette.responses import Response

from . import _brain
from ._openai_wire import embed_text
from ._openapi import error_path
from ._replicate_wire import (
    _UNSET,
    CREATE_SCHEMA,
    MODELS,
    Malformed,
    Reply,
    embed_input_texts,
    prediction_id,
    problem,
    replicate_sse,
    tokens_of,
)
from ._service import (
    Disconnect,
    Fail,
    FakeService,
    Handler,
    RecordedRequest,
    Stall,
    seconds_text,
)

__all__ = ["Disconnect", "Fail", "FakeReplicate", "Malformed", "RecordedRequest", "Reply", "Stall"]

MAX_WAIT_S = 60
Action = Reply | Fail | Stall | Disconnect | Malformed


@dataclass
class _Prediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    created: float
    tokens: list[str]  # chat output, token by token
    output: Any  # final output of non-chat models
    status: str  # final status
    error: str | None
    seconds: float
    after_tokens: int
    input_tokens: int
    stream_url: bool
    canceled_at: float | None = None
    pending: dict[str, Any] = field(default_factory=dict)  # "get"/"stream" -> Malformed, "cut"


def _iso(moment: float) -> str:
    stamp = datetime.datetime.fromtimestamp(moment, datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class FakeReplicate(FakeService):
    """The fake service (``FakeService`` for the harness; one script for every create request,
    chat and embeddings; a ``Disconnect`` cuts the prediction's event stream, a ``Malformed``
    answers where its ``where`` says). Beyond it: ``predictions``; ``api_key`` (None accepts any token) is
    configuration restored by ``reset()``."""

    chat_path = "/predictions"
    Reply = Reply
    Malformed = Malformed

    def __init__(self, *, api_key: str | None = None) -> None:
        self._default_key = api_key
        super().__init__()

    def _routes(self) -> list[tuple[str, Handler, list[str] | None]]:
        return [
            ("/v1/models/{owner}/{name}/predictions", self._create, ["POST"]),
            ("/v1/predictions", self._create, ["POST"]),
            ("/v1/predictions/{id}", self._get, ["GET"]),
            ("/v1/predictions/{id}/cancel", self._cancel, ["POST"]),
            ("/v1/streams/{id}", self._stream, ["GET"]),
            ("/v1/models/{owner}/{name}/versions/{version}", self._version, None),
        ]

    def reset(self) -> None:
        """Clear the script, predictions, recorded requests and violations."""
        super().reset()
        self.api_key: str | None = self._default_key
        self.predictions: dict[str, _Prediction] = {}

    @property
    def last_create(self) -> RecordedRequest | None:
        creates = [
            r for r in self.requests if r.method == "POST" and r.path.endswith("/predictions")
        ]
        return creates[-1] if creates else None

    # ---- plumbing
    async def _admit(self, request: Request) -> Response | None:
        if request.url.path.startswith("/v1/streams/"):
            return None  # the stream URL is a capability URL
        return self._authorise(request)

    def _fail(self, request: Request, fail: Fail) -> Response:
        headers = {"retry-after": "0"} if fail.status == 429 else {}
        if fail.status == 429 and fail.retry_after is not None:
            headers["retry-after"] = seconds_text(fail.retry_after)
        title = fail.body.get("title")
        return self._problem(fail.status, fail.message, title, headers | fail.headers)

    def _error_response(self, request: Request, status: int) -> Response:
        return self._problem(500 if status == 500 else 404)

    def _problem(self, status: int, detail: str | None = None, title: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> Response:  # fmt: skip
        body = json.dumps(problem(status, detail, title, **extra))
        return Response(body, status, headers=headers, media_type="application/problem+json")

    def _authorise(self, request: Request) -> Response | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token") or not token.strip():
            return self._problem(401)
        if self.api_key is not None and token.strip() != self.api_key:
            return self._problem(401)
        return None

    def _invalid(self, request: Request, problem_text: str, title: str) -> Response:
        self.spec_violations.append(f"{request.method} {request.url.path}: {problem_text}")
        field_name = problem_text.split(":", 1)[0]
        return self._problem(
            422, f"- {problem_text}\n", title,
            invalid_fields=[{"type": "invalid", "field": field_name, "description": problem_text}],
        )  # fmt: skip

    # ---- predictions
    def _view(self, p: _Prediction, now: float | None = None) -> dict[str, Any]:
        """The prediction as the API shows it at ``now``."""
        now = time.time() if now is None else now
        end = p.created + p.seconds
        if p.canceled_at is not None and p.canceled_at < end:
            status, end = "canceled", p.canceled_at
        elif now >= end:
            status = p.status
        else:
            status = "starting" if now - p.created < p.seconds / 4 else "processing"
        running = max(0.0, min(now, end) - p.created)
        done = status in ("succeeded", "failed", "canceled", "aborted")
        if p.output is not _UNSET:
            output = p.output if status == "succeeded" else None
            produced = 0
        else:
            share = 1.0 if p.seconds == 0 else running / p.seconds
            produced = int(len(p.tokens) * share) if status != "succeeded" else len(p.tokens)
            if status in ("failed", "canceled", "aborted"):
                produced = min(produced, p.after_tokens)
            output = p.tokens[:produced] if status != "starting" else None
        root = self.base_url
        urls = {
            "cancel": f"{root}/v1/predictions/{p.id}/cancel",
            "get": f"{root}/v1/predictions/{p.id}",
            "web": f"https://replicate.com/p/{p.id}",
        }
        if p.stream_url and p.output is _UNSET:
            urls["stream"] = f"{root}/v1/streams/{p.id}"
        view: dict[str, Any] = {
            "id": p.id, "model": p.model, "version": p.version, "input": p.input, "logs": "",
            "output": output, "data_removed": False,
            "error": p.error if status in ("failed", "aborted") else None,
            "status": status, "created_at": _iso(p.created), "urls": urls,
        }  # fmt: skip
        if status != "starting":
            view["started_at"] = _iso(p.created + 0.001)
        if done:
            view["completed_at"] = _iso(end)
            metrics: dict[str, Any] = {
                "predict_time": round(running, 4),
                "total_time": round(running, 4),
            }
            if p.output is _UNSET:
                metrics |= {"input_token_count": p.input_tokens, "output_token_count": produced,
                            "time_to_first_token": 0.001,
                            "tokens_per_second": round(produced / max(running, 0.001), 2)}  # fmt: skip
            view["metrics"] = metrics | p.pending.get("metrics", {})
        return view

    def _check(self, request: Request, body: Any) -> tuple[str, dict[str, Any]] | Response:
        """(model name, card) of a valid create request, else the error answer."""
        error = best_match(Draft202012Validator(CREATE_SCHEMA).iter_errors(body))
        if error is not None:
            where = error_path(error) or "body"
            return self._invalid(request, f"{where}: {error.message}", "Invalid request")
        owner, name = request.path_params.get("owner"), request.path_params.get("name")
        if owner is not None:
            if "version" in body:
                return self._invalid(
                    request, "version: not allowed when running a model by name", "Invalid request"
                )
            model = f"{owner}/{name}"
            card = MODELS.get(model)
            if card is None:
                return self._problem(404)
            if not card["official"]:
                return self._problem(
                    404, f"Model {model} is not an official model; create the prediction with "
                    "a version (POST /v1/predictions)",
                )  # fmt: skip
        else:
            if "version" not in body:
                return self._invalid(request, "version: version is required", "Invalid request")
            found = [(m, c) for m, c in MODELS.items() if c["version"] == body["version"]]
            if not found:
                return self._problem(422, "Invalid version or not permitted", "Invalid version")
            model, card = found[0]
        error = best_match(Draft202012Validator(card["input"]).iter_errors(body["input"]))
        if error is not None:
            where = "input" + (f".{error_path(error)}" if error_path(error) else "")
            return self._invalid(request, f"{where}: {error.message}", "Input validation failed")
        return model, card

    def _answer(
        self, model: str, card: dict[str, Any], inputs: dict[str, Any], reply: Reply | None
    ) -> tuple[list[str], Any, int, str | None]:
        """(tokens, raw output or _UNSET, input tokens, model error or None)."""
        if card["kind"] == "embed":
            try:
                texts = embed_input_texts(inputs.get("texts", "[]"))
            except ValueError as exc:
                return [], _UNSET, 0, f"{type(exc).__name__}: {exc}"
            output = [embed_text(t, card["dims"], card["dims"]) for t in texts]
            return [], (reply.output if reply and reply.output is not _UNSET else output), 0, None
        messages = []
        if inputs.get("system_prompt"):
            messages.append({"role": "system", "content": inputs["system_prompt"]})
        messages.append({"role": "user", "content": inputs.get("prompt", "")})
        stops = [s for s in str(inputs.get("stop_sequences", "")).split(",") if s]
        text = reply.content if reply and reply.content is not None else _brain.respond(
            {"messages": messages, "stop": stops}
        ).content or ""  # fmt: skip
        limit = inputs.get("max_tokens", inputs.get("max_new_tokens"))
        tokens = tokens_of(text)[:limit] if isinstance(limit, int) else tokens_of(text)
        prompt_size = sum(_brain.count_tokens(str(m["content"])) for m in messages)
        raw = reply.output if reply is not None else _UNSET
        return tokens, raw, prompt_size, None

    async def _create(self, request: Request) -> Any:
        body = request.state.recorded.body
        if not isinstance(body, dict):
            return self._problem(400, "The request body is not valid JSON.")
        action = await self._next_action(request)
        if isinstance(action, Fail):
            return self._fail(request, action)
        if isinstance(action, Malformed) and action.where == "create":
            return Response(
                action.body, action.status, media_type=action.content_type or "application/json"
            )
        checked = self._check(request, body)
        if isinstance(checked, Response):
            return checked
        model, card = checked
        reply = action if isinstance(action, Reply) else None
        tokens, raw, prompt_size, model_error = self._answer(model, card, body["input"], reply)
        seed = self._next_id()
        prediction = _Prediction(
            id=prediction_id(seed), model=model, version=body.get("version", card["version"]),
            input=body["input"], created=time.time(), tokens=tokens, output=raw,
            status="failed" if model_error else (reply.status if reply else "succeeded"),
            error=model_error or (reply.error if reply else None),
            seconds=reply.seconds if reply else 0.0, after_tokens=reply.after_tokens if reply else 0,
            input_tokens=prompt_size, stream_url=reply.stream_url if reply else True,
        )  # fmt: skip
        if reply is not None and reply.metrics:
            prediction.pending["metrics"] = reply.metrics
        if isinstance(action, Malformed):
            prediction.pending[action.where] = action
        if reply is not None and reply.broken is not None:
            prediction.pending[reply.broken.where] = reply.broken
        if isinstance(action, Disconnect):
            prediction.pending["cut"] = action.after_events
        self.predictions[prediction.id] = prediction
        wait = self._prefer_wait(request.headers.get("prefer", ""))
        if wait:
            deadline = time.monotonic() + wait
            while (
                time.time() < prediction.created + prediction.seconds
                and time.monotonic() < deadline
            ):
                await asyncio.sleep(0.01)
            return self._json(self._view(prediction), 201)
        return self._json(self._view(prediction, now=prediction.created), 201)

    @staticmethod
    def _prefer_wait(header: str) -> int:
        for part in header.split(","):
            name, _, value = part.strip().partition("=")
            if name == "wait":
                return min(int(value), MAX_WAIT_S) if value.isdigit() else MAX_WAIT_S
        return 0

    def _json(self, data: Any, status: int = 200) -> Response:
        return Response(json.dumps(data), status, media_type="application/json")

    async def _get(self, request: Request) -> Response:
        p = self.predictions.get(request.path_params["id"])
        if p is None:
            return self._problem(404)
        bad = p.pending.pop("get", None)
        if bad is not None:
            return Response(bad.body, bad.status, media_type=bad.content_type or "application/json")
        return self._json(self._view(p))

    async def _cancel(self, request: Request) -> Response:
        p = self.predictions.get(request.path_params["id"])
        if p is None:
            return self._problem(404)
        if p.canceled_at is None and time.time() < p.created + p.seconds:
            p.canceled_at = time.time()
        return self._json(self._view(p))

    async def _stream(self, request: Request) -> Any:
        p = self.predictions.get(request.path_params["id"])
        if p is None or not p.stream_url:
            return self._problem(404)
        bad = p.pending.pop("stream", None)
        if bad is not None:
            return Response(
                bad.body, bad.status, media_type=bad.content_type or "text/event-stream"
            )
        final = self._view(p, now=p.created + p.seconds)
        sent = p.tokens if final["status"] == "succeeded" else p.tokens[: p.after_tokens]
        events = [("output", token) for token in sent]
        if final["status"] == "succeeded":
            events.append(("done", "{}"))
        elif final["status"] == "canceled":
            events.append(("done", json.dumps({"reason": "canceled"})))
        else:
            events += [("error", json.dumps({"detail": p.error or "prediction failed"})),
                       ("done", json.dumps({"reason": "error"}))]  # fmt: skip
        delay = p.seconds / max(len(events), 1)
        created = int(p.created)
        return replicate_sse(events, created=created, delay=delay, drop_after=p.pending.get("cut"))

    async def _version(self, request: Request) -> Response:
        params = request.path_params
        card = MODELS.get(f"{params['owner']}/{params['name']}")
        if card is None or card["version"] != params["version"]:
            return self._problem(404)
        schemas = {"Input": card["input"], "Output": card["output"]}
        return self._json(
            {
                "id": card["version"],
                "created_at": "2024-04-17T21:44:13.482460Z",
                "cog_version": "0.9.9",
                "openapi_schema": {"openapi": "3.0.2", "info": {"title": "Cog", "version": "0.1.0"},
                                   "paths": {}, "components": {"schemas": schemas}},
            }
        )  # fmt: skip
