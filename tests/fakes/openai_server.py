"""A faithful fake of the OpenAI HTTP API (and its Azure OpenAI variant), for tests.

``FakeOpenAI`` holds a Starlette app serving, like api.openai.com:

* ``POST /v1/chat/completions`` (JSON, or SSE when ``stream`` is true),
* ``POST /v1/embeddings`` (``float`` or ``base64`` encoding, ``dimensions``),
* ``GET /v1/models`` and ``GET /v1/models/{id}``,
* Azure: ``POST /openai/deployments/{deployment}/chat/completions|embeddings?api-version=...``
  authenticated by ``api-key`` (or a bearer token).

Every chat/embeddings body is validated against ``CreateChatCompletionRequest`` /
``CreateEmbeddingRequest`` of the official spec (``../shared/specs/openai-openapi.yaml``) and
against rules the live API enforces beyond it (unknown arguments, tool-message ordering, strict
schemas, ...; see ``_openai_checks``). A violation answers 400 in OpenAI's error shape and is
appended to ``fake.spec_violations``.

Per test, ``fake.script(*actions)`` queues what the next chat requests get (``Reply``, ``Fail``,
``Stall``, ``Disconnect``, ``Malformed``); with the queue empty the deterministic brain in
``_brain`` answers. ``fake.requests`` records every request.

    with FakeOpenAI().running() as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="sk-test")
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import _brain
from ._openai_checks import ApiError, check_chat_request
from ._openai_wire import (
    AZURE_DENIED_MESSAGE,
    EMBEDDING_DIMS,
    MODEL_CREATED,
    NO_KEY_MESSAGE,
    STATUS_DEFAULTS,
    Dropped,
    HeadersMiddleware,
    answer_from_reply,
    completion_body,
    embed_text,
    error_body,
    json_response,
    mask_key,
    usage_for,
)
from ._openapi import component_properties, error_path, first_error, format_error
from ._scripting import ActionQueue
from ._server import RateLimitMiddleware, serve
from ._sse import SSEResponse, chat_chunks

__all__ = [
    "DEFAULT_MODELS",
    "Disconnect",
    "Fail",
    "FakeOpenAI",
    "Malformed",
    "RateLimits",
    "RecordedRequest",
    "Reply",
    "Stall",
    "embed_text",
]

SPEC_FILE = "openai-openapi.yaml"
DEFAULT_MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
)


# --------------------------------------------------------------------------- script actions


@dataclass
class Reply:
    """Answer the next chat request with this message (streamed if the request streams)."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # [{"name": ..., "arguments": dict | str}]
    finish_reason: str | None = None  # default: "tool_calls" with tool calls, else "stop"
    usage: dict[str, Any] | None = None  # merged over the computed usage
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    refusal: str | None = None


@dataclass
class Fail:
    """Answer with an error; ``type``/``code``/``message`` default by status (None = default)."""

    status: int
    message: str | None = None
    type: str | None = None
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    retry_after: float = 0.02  # 429 without explicit retry headers: retry-after(-ms) from this


@dataclass
class Stall:
    """Sleep before answering (client timeouts); then ``then`` or the default behaviour."""

    seconds: float
    then: Reply | Fail | Disconnect | Malformed | None = None


@dataclass
class Disconnect:
    """Cut the connection: a stream after ``after_chunks`` SSE events (no ``[DONE]``); a
    non-streamed request before any response byte."""

    after_chunks: int = 0


@dataclass
class Malformed:
    """Send ``body`` raw (for streams: the raw SSE text). ``content_type`` defaults to JSON, or
    ``text/event-stream`` for a streamed request."""

    body: str
    status: int = 200
    content_type: str | None = None


Action = Reply | Fail | Stall | Disconnect | Malformed
_Fail = Fail  # FakeOpenAI.Fail shadows the name inside the class body


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None when absent/unparsable
    raw: bytes = b""


@dataclass
class RateLimits:
    """The documented ``x-ratelimit-*`` headers, set as ``fake.rate_limits`` to send them on
    every response (JSON, SSE and errors). A field set to None omits its header; a header the
    response sets itself (a 429's ``remaining-requests: 0``, ``Fail.headers``) wins.

    https://platform.openai.com/docs/guides/rate-limits#rate-limits-in-headers
    """

    limit_requests: int | str | None = 10_000
    limit_tokens: int | str | None = 30_000_000
    remaining_requests: int | str | None = 9_999
    remaining_tokens: int | str | None = 29_999_000
    reset_requests: str | None = "6ms"  # a duration: "1s", "6m0s", "17ms"
    reset_tokens: str | None = "0s"

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-" + name.replace("_", "-"): str(value)
            for name, value in asdict(self).items()
            if value is not None
        }


# --------------------------------------------------------------------------- the fake


class FakeOpenAI:
    """The fake service. Attributes tests use:

    * ``base_url`` (``http://127.0.0.1:PORT/v1``) / ``root_url`` (no ``/v1``; Azure endpoint),
      set while ``running()`` (or by the ``openai_fake`` fixture);
    * ``requests``: list of ``RecordedRequest``; ``last_request``; ``bodies(path_suffix)``;
    * ``spec_violations``: list of str (schema and live-API rule violations);
    * ``internal_errors``: list of str (bugs of the fake itself; should stay empty);
    * ``models``, ``api_key``, ``azure_api_key``, ``azure_deployments``, ``context_window``,
      ``rate_limits`` (``RateLimits`` or None): configuration (restored by ``reset()``).

    The script actions are also reachable as attributes (``fake.Reply(...)``, ``fake.Fail``).
    """

    Reply = Reply
    Fail = Fail
    Stall = Stall
    Disconnect = Disconnect
    Malformed = Malformed

    def __init__(
        self,
        *,
        models: list[str] | tuple[str, ...] = DEFAULT_MODELS,
        api_key: str | None = None,
        azure_api_key: str | None = None,
        azure_deployments: list[str] | None = None,
        context_window: int = 128_000,
        reject_unknown_params: bool = True,
    ) -> None:
        self._defaults: dict[str, Any] = {
            "models": list(models),
            "api_key": api_key,
            "azure_api_key": azure_api_key,
            "azure_deployments": list(azure_deployments) if azure_deployments else None,
            "context_window": context_window,
            "reject_unknown_params": reject_unknown_params,
        }
        self.base_url: str | None = None
        self.root_url: str | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.reset()
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._guard(self._chat), methods=["POST"]),
                Route("/v1/embeddings", self._guard(self._embeddings), methods=["POST"]),
                Route("/v1/models", self._guard(self._list_models), methods=["GET"]),
                Route("/v1/models/{model:path}", self._guard(self._get_model), methods=["GET"]),
                Route(
                    "/openai/deployments/{deployment}/chat/completions",
                    self._guard(self._chat),
                    methods=["POST"],
                ),
                Route(
                    "/openai/deployments/{deployment}/embeddings",
                    self._guard(self._embeddings),
                    methods=["POST"],
                ),
            ],
            exception_handlers={404: self._not_found, 405: self._not_found},
        )
        # Added first, so it runs inside HeadersMiddleware and its headers win.
        self.app.add_middleware(RateLimitMiddleware, fake=self)  # type: ignore[arg-type]
        self.app.add_middleware(HeadersMiddleware, fake=self)  # type: ignore[arg-type]

    # ---- configuration and inspection

    def reset(self) -> None:
        """Clear script, recorded requests and violations; restore the configuration."""
        with self._lock:
            self.models: list[str] = list(self._defaults["models"])
            self.api_key: str | None = self._defaults["api_key"]
            self.azure_api_key: str | None = self._defaults["azure_api_key"]
            self.azure_deployments: list[str] | None = self._defaults["azure_deployments"]
            self.context_window: int = self._defaults["context_window"]
            self.reject_unknown_params: bool = self._defaults["reject_unknown_params"]
            self.rate_limits: RateLimits | None = None
            self.requests: list[RecordedRequest] = []
            self.spec_violations: list[str] = []
            self.internal_errors: list[str] = []
            self._chat_script = ActionQueue()
            self._embedding_script = ActionQueue()

    def script(self, *actions: Action) -> None:
        """Queue actions for the next chat completion requests (one per request; a ``Fail``
        with ``times=n`` answers n requests)."""
        self._chat_script.push(*actions)

    def script_embeddings(self, *actions: Action) -> None:
        """Queue actions for the next embeddings requests (``Reply`` is not meaningful)."""
        self._embedding_script.push(*actions)

    @property
    def pending_actions(self) -> int:
        return len(self._chat_script) + len(self._embedding_script)

    @property
    def last_request(self) -> RecordedRequest | None:
        return self.requests[-1] if self.requests else None

    def bodies(self, path_suffix: str = "/chat/completions") -> list[Any]:
        """Parsed bodies of the recorded requests whose path ends with ``path_suffix``."""
        return [r.body for r in self.requests if r.path.endswith(path_suffix)]

    @contextlib.contextmanager
    def running(self) -> Iterator[FakeOpenAI]:
        """Serve on 127.0.0.1 (free port) for the duration; sets ``base_url``/``root_url``."""
        with serve(self.app) as url:
            self.root_url, self.base_url = url, f"{url}/v1"
            try:
                yield self
            finally:
                self.root_url = self.base_url = None

    # ---- plumbing

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def _guard(
        self, handler: Callable[[Request], Awaitable[Any]]
    ) -> Callable[[Request], Awaitable[Any]]:
        async def endpoint(request: Request) -> Any:
            try:
                return await handler(request)
            except Exception as exc:  # a bug of the fake: answer like the service, keep a note
                self.internal_errors.append(f"{request.method} {request.url.path}: {exc!r}")
                return self._error(500, "The server had an error processing your request.")

        return endpoint

    async def _record(self, request: Request) -> RecordedRequest:
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
        self.requests.append(recorded)
        return recorded

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        await self._record(request)
        status = getattr(exc, "status_code", 404)
        what = "Invalid method for URL" if status == 405 else "Invalid URL"
        return self._error(status, f"{what} ({request.method} {request.url.path})", code=None)

    def _error(
        self,
        status: int,
        message: str | None = None,
        *,
        type_: str | None = None,
        param: str | None = None,
        code: str | None = "",
        headers: dict[str, str] | None = None,
    ) -> Response:
        d_type, d_code, d_message = STATUS_DEFAULTS.get(status, ("server_error", None, "Error."))
        body = error_body(
            message or d_message, type_ or d_type, param, d_code if code == "" else code
        )
        return json_response(body, status, headers)

    def _api_error(self, error: ApiError) -> Response:
        return self._error(
            error.status, error.message, type_=error.type, param=error.param, code=error.code
        )

    def _fail(self, fail: _Fail) -> Response:
        headers = dict(fail.headers)
        if fail.status == 429:
            if not {"retry-after", "retry-after-ms"} & {k.lower() for k in headers}:
                headers["retry-after"] = str(int(fail.retry_after))
                headers["retry-after-ms"] = str(int(fail.retry_after * 1000))
            headers.setdefault("x-ratelimit-remaining-requests", "0")
        return self._error(
            fail.status, fail.message, type_=fail.type, param=fail.param,
            code=fail.code if fail.code is not None else "", headers=headers,
        )  # fmt: skip

    def _authorise(self, request: Request, azure: bool) -> Response | None:
        bearer = request.headers.get("authorization", "")
        token = bearer[7:].strip() if bearer.lower().startswith("bearer ") else ""
        if azure:
            given = request.headers.get("api-key") or token
            if not given or (self.azure_api_key and given != self.azure_api_key):
                return json_response(
                    {"error": {"code": "401", "message": AZURE_DENIED_MESSAGE}}, 401
                )
            return None
        if not token:
            return self._error(401, NO_KEY_MESSAGE, code=None)
        if self.api_key is not None and token != self.api_key:
            return self._error(
                401,
                f"Incorrect API key provided: {mask_key(token)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return None

    def _violation(self, request: Request, text: str) -> None:
        self.spec_violations.append(f"{request.method} {request.url.path}: {text}")

    def _validate(self, request: Request, schema: str, body: Any) -> Response | None:
        """Spec schema, then unknown arguments; a problem is recorded and answered with 400."""
        error = first_error(SPEC_FILE, schema, body)
        if error is not None:
            text = format_error(error)
            self._violation(request, f"{schema}: {text}")
            param = error_path(error) or None
            if error.validator == "required":
                missing = next((k for k in error.validator_value if k not in error.instance), "")
                param = missing or param
            code = {"required": "missing_required_parameter", "type": "invalid_type"}.get(
                str(error.validator)
            )
            return self._error(400, f"Invalid request ({schema}): {text}", param=param, code=code)
        if self.reject_unknown_params and isinstance(body, dict):
            unknown = sorted(set(body) - component_properties(SPEC_FILE, schema))
            if unknown:
                self._violation(request, f"{schema}: unrecognized argument(s) {unknown}")
                return self._error(
                    400, f"Unrecognized request argument supplied: {unknown[0]}", code=None
                )
        return None

    async def _preamble(
        self, request: Request, schema: str
    ) -> tuple[dict[str, Any] | None, Response | None]:
        """Record, authenticate, parse and validate. Returns (body, early response)."""
        recorded = await self._record(request)
        deployment = request.path_params.get("deployment")
        azure = deployment is not None
        if azure and not request.query_params.get("api-version"):
            return None, json_response(
                {"error": {"code": "404", "message": "Resource not found"}}, 404
            )
        denied = self._authorise(request, azure)
        if denied is not None:
            return None, denied
        if recorded.body is None:
            return None, self._error(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you "
                "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
                "but what was sent was not valid JSON.)",
                code=None,
            )
        body = recorded.body
        if azure:
            if self.azure_deployments is not None and deployment not in self.azure_deployments:
                message = (
                    "The API deployment for this resource does not exist. If you created the "
                    "deployment within the last 5 minutes, please wait a moment and try again."
                )
                return None, json_response(
                    {"error": {"code": "DeploymentNotFound", "message": message}}, 404
                )
            if isinstance(body, dict):  # Azure takes the model from the deployment
                body = {"model": deployment, **body}
        problem = self._validate(request, schema, body)
        if problem is not None:
            return None, problem
        request.state.fake_tokens = _brain.count_tokens(recorded.raw.decode("utf-8", "replace"))
        if not azure and body["model"] not in self.models:
            return None, self._error(
                404,
                f"The model `{body['model']}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
        return body, None

    async def _stall(self, request: Request, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(0.05, left))
            if await request.is_disconnected():
                return

    async def _scripted(
        self, request: Request, queue: ActionQueue, stream: bool
    ) -> tuple[Any, Any]:
        """(response to send now or None, Reply or None) from the script queue."""
        action = queue.pop()
        if isinstance(action, Stall):
            await self._stall(request, action.seconds)
            action = action.then
        if isinstance(action, Fail):
            return self._fail(action), None
        if isinstance(action, Malformed):
            media = action.content_type or ("text/event-stream" if stream else "application/json")
            return Response(action.body, action.status, media_type=media), None
        if isinstance(action, Disconnect):
            return (Dropped() if not stream else action), None
        return None, action

    # ---- endpoints

    async def _chat(self, request: Request) -> Any:
        body, early = await self._preamble(request, "CreateChatCompletionRequest")
        if early is not None:
            return early
        assert body is not None
        problem = check_chat_request(body)
        if problem is not None:
            self._violation(request, f"contract: {problem.message}")
            return self._api_error(problem)
        stream = body.get("stream") is True
        now, reply = await self._scripted(request, self._chat_script, stream)
        if now is not None and not isinstance(now, Disconnect):
            return now
        prompt_tokens = _brain.prompt_token_count(body)
        if reply is None and prompt_tokens > self.context_window:
            return self._error(
                400,
                f"This model's maximum context length is {self.context_window} tokens. However, "
                f"your messages resulted in {prompt_tokens} tokens. Please reduce the length of "
                "the messages.",
                param="messages",
                code="context_length_exceeded",
            )
        answer = _brain.respond(body) if reply is None else answer_from_reply(reply)
        usage = usage_for(answer, prompt_tokens, reply)
        azure = "deployment" in request.path_params
        n = self._next_id()
        completion = {
            "id": "chatcmpl-" + hashlib.sha256(f"chat{n}".encode()).hexdigest()[:29],
            "created": int(time.time()),
            "model": body["model"],
            "service_tier": body.get("service_tier") if body.get("service_tier") not in
            (None, "auto") else "default",
            "system_fingerprint": "fp_" + hashlib.sha256(body["model"].encode()).hexdigest()[:10],
        }  # fmt: skip
        if stream:
            options = body.get("stream_options") or {}
            chunks = chat_chunks(
                completion,
                answer,
                usage if options.get("include_usage") else None,
                call_id_seed=n,
                obfuscate=options.get("include_obfuscation", True) and not azure,
                azure=azure,
            )
            cut = now.after_chunks if isinstance(now, Disconnect) else None
            return SSEResponse(chunks, drop_after=cut)
        return json_response(completion_body(completion, answer, usage, n, azure))

    async def _embeddings(self, request: Request) -> Any:
        body, early = await self._preamble(request, "CreateEmbeddingRequest")
        if early is not None:
            return early
        assert body is not None
        now, _ = await self._scripted(request, self._embedding_script, stream=False)
        if now is not None:
            return Dropped() if isinstance(now, Disconnect) else now
        model, raw_input = body["model"], body["input"]
        if isinstance(raw_input, str) or (raw_input and isinstance(raw_input[0], int)):
            raw_input = [raw_input]
        texts = [x if isinstance(x, str) else " ".join(map(str, x)) for x in raw_input]
        if any(not text for text in texts):
            return self._error(
                400,
                "'$.input' is invalid. Please check the API reference: "
                "https://platform.openai.com/docs/api-reference.",
                code=None,
            )
        full = EMBEDDING_DIMS.get(model, 1536)
        dims = body.get("dimensions")
        if dims is not None and model == "text-embedding-ada-002":
            return self._error(400, "This model does not support specifying dimensions.", code=None)
        if dims is not None and dims > full:
            return self._error(
                400, f"This model does not support dimensions larger than {full}.",
                param="dimensions", code=None,
            )  # fmt: skip
        counts = [_brain.count_tokens(text) for text in texts]
        if max(counts) > 8192:
            return self._error(
                400,
                f"This model's maximum context length is 8192 tokens, however you requested "
                f"{max(counts)} tokens ({max(counts)} in your prompt; 0 for the completion). "
                "Please reduce your prompt; or completion length.",
                code=None,
            )
        base64_format = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = embed_text(text, dims or full, full)
            encoded: Any = vector
            if base64_format:
                packed = struct.pack(f"<{len(vector)}f", *vector)
                encoded = base64.b64encode(packed).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        usage = {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}
        return json_response({"object": "list", "data": data, "model": model, "usage": usage})

    def _model_card(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": MODEL_CREATED, "owned_by": "system"}

    async def _list_models(self, request: Request) -> Response:
        await self._record(request)
        denied = self._authorise(request, azure=False)
        if denied is not None:
            return denied
        return json_response({"object": "list", "data": [self._model_card(m) for m in self.models]})

    async def _get_model(self, request: Request) -> Response:
        await self._record(request)
        denied = self._authorise(request, azure=False)
        if denied is not None:
            return denied
        model = request.path_params["model"]
        if model not in self.models:
            return self._error(
                404, f"The model '{model}' does not exist", param="model", code="model_not_found"
            )
        return json_response(self._model_card(model))
