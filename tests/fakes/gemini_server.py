"""A faithful fake of the Google AI Gemini API (``v1beta``), for tests.

``FakeGemini`` holds a Starlette app serving, like generativelanguage.googleapis.com:

* ``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent`` (SSE with
  ``?alt=sse``, else one JSON array of the chunks),
* ``POST /v1beta/models/{model}:embedContent`` and ``:batchEmbedContents`` (at most 100),
* ``GET /v1beta/models`` (``pageSize``/``pageToken``, default page 50) and
  ``GET /v1beta/models/{model}``,

authenticated by ``x-goog-api-key`` (or ``?key=``). ``/v1/...`` answers the same. Every body is
validated against ``GenerateContentRequest`` / ``EmbedContentRequest`` /
``BatchEmbedContentsRequest`` of ``../shared/specs/gemini-openapi.prism-fixed.json``, against
the proto parser's unknown-field rule and the live service's semantic rules (``_gemini_checks``);
a violation answers 400 in Google's error shape and is appended to ``fake.spec_violations``.

Per test, ``fake.script(*actions)`` queues what the next generate requests get (``Reply``,
``Fail``, ``Stall``, ``Disconnect``, ``Malformed``); with the queue empty the deterministic brain
of ``_brain`` answers. ``fake.requests`` records every request.

    with FakeGemini().running() as fake:
        client = genai.Client(api_key="test", http_options=types.HttpOptions(
            base_url=fake.base_url, api_version="v1beta"))
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from . import _brain
from ._gemini_checks import (
    SPEC_FILE,
    ApiError,
    check_embed,
    check_generate,
    normalize,
    unknown_field_error,
)
from ._gemini_responses import generate_chunks, generate_response
from ._gemini_wire import (
    MODELS,
    brain_body,
    default_headers,
    embed_values,
    error_body,
    gemini_sse,
    json_response,
    media_tokens,
    model_record,
)
from ._openapi import format_error, most_relevant, request_validator
from ._service import (
    Disconnect,
    Fail,
    FakeService,
    Handler,
    Malformed,
    RecordedRequest,
    Stall,
    seconds_text,
)

__all__ = [
    "DEFAULT_MODELS",
    "Disconnect",
    "Fail",
    "FakeGemini",
    "Malformed",
    "RecordedRequest",
    "Reply",
    "Stall",
]

DEFAULT_MODELS = tuple(MODELS)
NO_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
BAD_KEY = "API key not valid. Please pass a valid API key."


@dataclass
class Reply:
    """Answer the next generate request with this (streamed if the request streams)."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # [{"name", "args": dict, "id"?: str}]
    finish_reason: str | None = None  # a Gemini word; default STOP
    usage: dict[str, Any] | None = None  # merged over the computed usageMetadata
    cached_tokens: int = 0
    thoughts_tokens: int = 0
    thought: str | None = None  # thought summary, sent when thinkingConfig.includeThoughts
    block_reason: str | None = None  # the prompt is blocked: no candidates, promptFeedback


Action = Reply | Fail | Stall | Disconnect | Malformed


def quota_details(retry_delay: str | None, model: str) -> list[dict[str, Any]]:
    """The ``details`` of a live 429: Help, QuotaFailure and (when known) RetryInfo."""
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [
                {
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }
            ],
        },
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                    "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                    "quotaDimensions": {"location": "global", "model": model},
                    "quotaValue": "10",
                }
            ],
        },
    ]
    if retry_delay is not None:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
        )
    return details


class FakeGemini(FakeService):
    """The fake service (``FakeService`` for the harness). Beyond it: ``base_url`` has no
    version (the SDK's ``base_url``); configuration restored by ``reset()``: ``models``,
    ``api_key`` (None: any key), ``page_size_cap`` (largest page served), ``input_token_limit``
    (None: the model's).
    """

    chat_path = "Content"
    Reply = Reply

    def __init__(self, *, models: tuple[str, ...] = DEFAULT_MODELS, api_key: str | None = None):
        self._defaults: dict[str, Any] = {"models": list(models), "api_key": api_key}
        super().__init__()

    def _routes(self) -> list[tuple[str, Handler, list[str] | None]]:
        return [
            ("/{version:str}/models", self._list_models, ["GET"]),
            ("/{version:str}/{name:path}", self._resource, ["GET", "POST"]),
        ]

    def reset(self) -> None:
        """Clear script, recorded requests and violations; restore the configuration."""
        super().reset()
        self.models: list[str] = list(self._defaults["models"])
        self.api_key: str | None = self._defaults["api_key"]
        self.page_size_cap = 1000
        self.input_token_limit: int | None = None

    # ---- plumbing

    def _default_headers(self, scope: dict[str, Any], elapsed_ms: int) -> dict[str, str]:
        return default_headers(elapsed_ms)

    def _error_response(self, request: Request, status: int) -> Response:
        if status == 500:
            return json_response(error_body(500), 500)
        # Google's front end answers unknown URLs with an HTML page, not JSON.
        html = (
            "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 404 (Not "
            "Found)!!1</title>\n  <p><b>404.</b> <ins>That\u2019s an error.</ins>\n  <p>The requested "
            f"URL <code>{request.url.path}</code> was not found on this server.  "
            "<ins>That\u2019s all we know.</ins>\n"
        )
        return HTMLResponse(html, 404)

    def _error(self, error: ApiError) -> Response:
        return json_response(
            error_body(error.status, error.message, error.status_word, error.details), error.status
        )

    def _fail(self, request: Request, fail: Fail) -> Response:
        fields = dict(fail.body)
        if "details" not in fields and fail.status == 429:
            model = request.path_params.get("name", "").removeprefix("models/").partition(":")[0]
            delay = 0.02 if fail.retry_after is None else fail.retry_after
            fields["details"] = quota_details(f"{seconds_text(delay)}s", model)
        body = error_body(fail.status, fail.message, fields.get("status"), fields.get("details"))
        return json_response(body, fail.status, fail.headers)

    def _authorise(self, request: Request) -> Response | None:
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if not key:
            return self._error(ApiError(403, NO_KEY, "PERMISSION_DENIED"))
        if self.api_key is not None and key != self.api_key:
            details = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                },
                {
                    "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                    "locale": "en-US",
                    "message": BAD_KEY,
                },
            ]
            return self._error(ApiError(400, BAD_KEY, details=details))
        return None

    def _validate(self, request: Request, schema: str, body: Any) -> tuple[Any, Response | None]:
        """(body under JSON names, early 400): unknown fields, then the spec schema. A problem
        is recorded in ``spec_violations``."""
        body, unknown = normalize(schema, body)
        if unknown:
            self._violation(request, f"{schema}: unknown field {unknown[0]}")
            return body, self._error(unknown_field_error(unknown[0]))
        validator = request_validator(SPEC_FILE, schema)
        errors = sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))
        if errors:
            text = format_error(most_relevant(errors[0]))
            self._violation(request, f"{schema}: {text}")
            return body, self._error(ApiError(400, f"Invalid JSON payload received. {text}"))
        return body, None

    def _model_missing(self, model: str, version: str, method: str) -> Response | None:
        if model in self.models and method in model_record(model)["supportedGenerationMethods"]:
            return None
        return self._error(
            ApiError(
                404,
                f"models/{model} is not found for API version {version}, or is not supported "
                f"for {method}. Call ListModels to see the list of available models and their "
                "supported methods.",
                "NOT_FOUND",
            )
        )

    # ---- endpoints

    async def _resource(self, request: Request) -> Any:
        version, name = request.path_params["version"], request.path_params["name"]
        if version not in ("v1beta", "v1") or not name.startswith("models/"):
            return await self._not_found(request, Exception())
        model, _, method = name[len("models/") :].partition(":")
        if request.method == "GET" and not method:
            if (denied := self._authorise(request)) is not None:
                return denied
            if model not in self.models:
                return self._error(
                    ApiError(
                        404,
                        f"Model is not found: models/{model} for api version {version}",
                        "NOT_FOUND",
                    )
                )
            return json_response(model_record(model))
        handlers = {
            "generateContent": self._generate,
            "streamGenerateContent": self._generate,
            "embedContent": self._embed,
            "batchEmbedContents": self._embed,
        }
        if request.method != "POST" or method not in handlers:
            return await self._not_found(request, Exception())
        if (denied := self._authorise(request)) is not None:
            return denied
        recorded = await self._record(request)
        if recorded.body is None:
            return self._error(
                ApiError(
                    400,
                    "Invalid JSON payload received. Unexpected end of string. Expected an object key or }.",
                )
            )
        return await handlers[method](request, recorded.body, model, method, version)

    async def _generate(
        self, request: Request, body: Any, model: str, method: str, version: str
    ) -> Any:
        body, problem = self._validate(request, "GenerateContentRequest", body)
        if problem is not None:
            return problem
        if (rule := check_generate(body, model)) is not None:
            self._violation(request, f"contract: {rule.message.strip()}")
            return self._error(rule)
        if (missing := self._model_missing(model, version, "generateContent")) is not None:
            return missing
        stream = method == "streamGenerateContent"
        now, action = await self._take(request, stream=stream)
        if now is not None:
            return now
        reply = action if isinstance(action, Reply) else None
        chat = brain_body(body)
        prompt_tokens = _brain.prompt_token_count(chat) + media_tokens(body)
        limit = self.input_token_limit or model_record(model)["inputTokenLimit"]
        if reply is None and prompt_tokens > limit:
            return self._error(
                ApiError(
                    400,
                    f"The input token count ({prompt_tokens}) exceeds the maximum number of tokens allowed ({limit}).",
                )
            )
        n = self._next_id()
        if not stream:
            return json_response(generate_response(body, chat, reply, model, prompt_tokens, n))
        chunks = generate_chunks(body, chat, reply, model, prompt_tokens, n)
        if request.query_params.get("alt") != "sse":  # without alt=sse: one JSON array
            return json_response(chunks)
        cut = action.after_events if isinstance(action, Disconnect) else None
        return gemini_sse(chunks, drop_after=cut)

    async def _embed(
        self, request: Request, body: Any, model: str, method: str, version: str
    ) -> Any:
        batch = method == "batchEmbedContents"
        schema = "BatchEmbedContentsRequest" if batch else "EmbedContentRequest"
        body, problem = self._validate(request, schema, body)
        if problem is not None:
            return problem
        items = body["requests"] if batch else [body]
        if batch and len(items) > 100:
            rule: ApiError | None = ApiError(
                400,
                "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch\n",
            )
        else:
            rule = next(
                (
                    e
                    for i, item in enumerate(items)
                    if (
                        e := check_embed(
                            item,
                            f"requests[{i}]." if batch else "",
                            f"models/{model}" if batch else None,
                        )
                    )
                    is not None
                ),
                None,
            )
        if rule is not None:
            self._violation(request, f"contract: {rule.message.strip()}")
            return self._error(rule)
        if (missing := self._model_missing(model, version, "embedContent")) is not None:
            return missing
        now, _ = await self._take(request, "embeddings")
        if now is not None:
            return now
        full = MODELS.get(model, ("", 0, 0, [], False, 768))[5]
        vectors = []
        for item in items:
            dims = item.get("outputDimensionality") or full
            if dims > full:
                return self._error(
                    ApiError(400, f"* {schema}.output_dimensionality: must be at most {full}\n")
                )
            text = " ".join(p.get("text", "") for p in item["content"]["parts"])
            vectors.append({"values": embed_values(text, dims, full, item.get("taskType"))})
        return json_response({"embeddings": vectors} if batch else {"embedding": vectors[0]})

    async def _list_models(self, request: Request) -> Response:
        if (denied := self._authorise(request)) is not None:
            return denied
        try:
            size = int(request.query_params.get("pageSize") or 50)
            token = request.query_params.get("pageToken")
            start = (
                int(base64.urlsafe_b64decode(token).decode().removeprefix("offset:"))
                if token
                else 0
            )
        except ValueError:
            return self._error(ApiError(400, "Invalid page token or size."))
        size = max(1, min(size, self.page_size_cap))
        names = self.models[start : start + size]
        page: dict[str, Any] = {"models": [model_record(m) for m in names]}
        if start + size < len(self.models):
            # Opaque, like the live tokens (and "="-padded: clients must URL-encode it).
            page["nextPageToken"] = base64.urlsafe_b64encode(
                f"offset:{start + size}".encode()
            ).decode()
        return json_response(page)
