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

Per test, ``fake.script(*actions)`` queues what the next chat requests get (``Reply`` and the
shared actions of ``_service``), ``script_embeddings`` the embeddings ones; with the queue empty
the deterministic brain in ``_brain`` answers. ``fake.requests`` records every request.

    with FakeOpenAI().running() as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="sk-test")
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
from dataclasses import asdict, dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from . import _brain
from ._openai_checks import ApiError, check_chat_request
from ._openai_wire import (
    AZURE_DENIED_MESSAGE,
    EMBEDDING_DIMS,
    MODEL_CREATED,
    NO_KEY_MESSAGE,
    STATUS_DEFAULTS,
    answer_from_reply,
    completion_body,
    default_headers,
    embed_text,
    error_body,
    json_response,
    mask_key,
    usage_for,
)
from ._openapi import component_properties, error_path, first_error, format_error
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
from ._sse import chat_chunks, sse_response

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
    "StreamError",
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


Action = Reply | Fail | Stall | Disconnect | Malformed


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


class FakeOpenAI(FakeService):
    """The fake service (``FakeService`` for the harness). Beyond it:

    * ``base_url`` ends in ``/v1``; ``root_url`` (no path) is the Azure endpoint;
    * ``models``, ``api_key``, ``azure_api_key``, ``azure_deployments``, ``context_window``,
      ``rate_limits`` (``RateLimits`` or None): configuration (restored by ``reset()``).
    """

    chat_path = "/chat/completions"
    url_path = "/v1"
    Reply = Reply

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
        super().__init__()

    def _routes(self) -> list[tuple[str, Handler, list[str] | None]]:
        azure = "/openai/deployments/{deployment}"
        return [
            ("/v1/chat/completions", self._chat, ["POST"]),
            ("/v1/embeddings", self._embeddings, ["POST"]),
            ("/v1/models", self._list_models, ["GET"]),
            ("/v1/models/{model:path}", self._get_model, ["GET"]),
            (f"{azure}/chat/completions", self._chat, ["POST"]),
            (f"{azure}/embeddings", self._embeddings, ["POST"]),
        ]

    def reset(self) -> None:
        """Clear script, recorded requests and violations; restore the configuration."""
        super().reset()
        self.models: list[str] = list(self._defaults["models"])
        self.api_key: str | None = self._defaults["api_key"]
        self.azure_api_key: str | None = self._defaults["azure_api_key"]
        self.azure_deployments: list[str] | None = self._defaults["azure_deployments"]
        self.context_window: int = self._defaults["context_window"]
        self.reject_unknown_params: bool = self._defaults["reject_unknown_params"]
        self.rate_limits: RateLimits | None = None

    # ---- plumbing

    def _begin(self, state: dict[str, Any]) -> None:
        state["request_id"] = "req_" + hashlib.sha256(f"req{self._next_id()}".encode()).hexdigest()[:32]

    def _default_headers(self, scope: dict[str, Any], elapsed_ms: int) -> dict[str, str]:
        return default_headers(scope, scope["state"]["request_id"], elapsed_ms)

    def _error_response(self, request: Request, status: int) -> Response:
        if status == 500:
            return self._error(500, "The server had an error processing your request.")
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

    def _fail(self, request: Request, fail: Fail) -> Response:
        headers = {}
        if fail.status == 429:
            if not {"retry-after", "retry-after-ms"} & {k.lower() for k in fail.headers}:
                wait = 0.02 if fail.retry_after is None else fail.retry_after
                headers["retry-after"] = str(int(wait))
                headers["retry-after-ms"] = str(int(wait * 1000))
            headers["x-ratelimit-remaining-requests"] = "0"
        fields = fail.body
        return self._error(
            fail.status, fail.message, type_=fields.get("type"), param=fields.get("param"),
            code=fields.get("code", ""), headers=headers | fail.headers,
        )  # fmt: skip

    def _authorise(self, request: Request, azure: bool) -> Response | None:
        token = self._bearer(request)
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
        recorded = await self._record(request)  # already recorded by the guard
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
        now, action = await self._take(request, stream=stream)
        if now is not None:
            return now
        reply = action if isinstance(action, Reply) else None
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
            cut = action.after_events if isinstance(action, Disconnect) else None
            return sse_response(chunks, drop_after=cut)
        return json_response(completion_body(completion, answer, usage, n, azure))

    async def _embeddings(self, request: Request) -> Any:
        body, early = await self._preamble(request, "CreateEmbeddingRequest")
        if early is not None:
            return early
        assert body is not None
        now, _ = await self._take(request, "embeddings")
        if now is not None:
            return now
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
        denied = self._authorise(request, azure=False)
        if denied is not None:
            return denied
        return json_response({"object": "list", "data": [self._model_card(m) for m in self.models]})

    async def _get_model(self, request: Request) -> Response:
        denied = self._authorise(request, azure=False)
        if denied is not None:
            return denied
        model = request.path_params["model"]
        if model not in self.models:
            return self._error(
                404, f"The model '{model}' does not exist", param="model", code="model_not_found"
            )
        return json_response(self._model_card(model))
