"""The gateway's ASGI app (Starlette): OpenAI- and Anthropic-compatible routes over one `Gateway`.

    POST /v1/chat/completions   OpenAI Chat Completions, JSON or SSE (also /chat/completions)
    POST /v1/messages           Anthropic Messages, JSON or SSE in Anthropic's event framing
    POST /v1/embeddings         OpenAI Embeddings (float or base64)
    GET  /v1/models             entries, role:<name> chains and auto
    POST /v1/feedback           {"request_id", "score", "comment"?}: a score for an experiment
    GET  /health, /ready        liveness; readiness (some provider's breaker is not open)
    GET  /metrics               Prometheus
    /manage/...                 the management API (master key), see `agency.gateway._manage`
    GET  /dashboard             the status page

Every answer carries ``x-request-id``; JSON answers also ``x-agency-provider``, ``-model``,
``-attempts``, ``-cost-usd`` and ``-cache``. A streamed answer's headers are sent once the
first chunk has arrived, so a failure before it (every provider down, over budget) is a
proper error status, not a broken stream.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from agency.gateway import _anthropic, _embed, _openai
from agency.gateway._core import Gateway, new_request_id
from agency.gateway._errors import GatewayError, from_exception

if TYPE_CHECKING:
    from agency.app import Agency
    from agency.gateway.config import GatewayConfig

__all__ = ["app_from_env", "create_app", "is_loopback"]

_JSON = "application/json"
_log = logging.getLogger("agency.gateway")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost`` (``--no-auth`` needs one)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=_JSON, headers=headers)


def _failure(exc: BaseException) -> GatewayError:
    """``exc`` as the client sees it; a bug of ours (500) is logged with its traceback."""
    err = from_exception(exc)
    if err.failure == "internal":
        _log.error("gateway: internal error answering a request", exc_info=exc)
    return err


def secret_of(request: Request) -> str | None:
    """The key a client sent: ``Authorization: Bearer <key>`` or ``x-api-key``."""
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return request.headers.get("x-api-key") or None


async def read_json(request: Request, gateway: Gateway) -> Any:
    """The request's JSON body; `GatewayError` 413 when too large, 400 when not JSON."""
    limit = int(gateway.config.max_body_mb * 1024 * 1024)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise GatewayError(
            413,
            f"request body over {gateway.config.max_body_mb} MiB",
            "invalid_request_error",
            code="request_too_large",
        )
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(
            400, f"the request body is not valid JSON: {exc}", "invalid_request_error"
        ) from exc


class _Wire:
    """What differs between the OpenAI and Anthropic chat endpoints."""

    def __init__(
        self,
        endpoint: str,
        parse: Callable[[Any], Any],
        error: Callable[..., Any],
        whole: Callable[..., Any],
        writer: Callable[..., Any],
        prefix: str,
    ) -> None:
        self.endpoint, self.parse, self.error = endpoint, parse, error
        self.whole, self.writer, self.prefix = whole, writer, prefix


_OPENAI = _Wire(
    "chat.completions",
    _openai.parse_chat,
    _openai.error_body,
    lambda msg, rid, model: _openai.completion(msg, completion_id=rid, model=model),
    lambda rid, model, call: _openai.ChunkWriter(
        completion_id=rid, model=model, include_usage=call.include_usage
    ),
    "chatcmpl-",
)
_ANTHROPIC = _Wire(
    "messages",
    _anthropic.parse_messages,
    _anthropic.error_body,
    lambda msg, rid, model: _anthropic.message(msg, message_id=rid, model=model),
    lambda rid, model, call: _anthropic.EventWriter(message_id=rid, model=model),
    "msg_",
)


def error_response(err: GatewayError, wire: _Wire | None, request_id: str) -> Response:
    """``err`` in the wire format's error shape, with its headers."""
    body = wire.error(err, request_id) if wire is not None else _openai.error_body(err)
    headers = {"x-request-id": request_id, **err.response_headers()}
    return _json(body, err.status, headers)


async def _chat(request: Request, wire: _Wire) -> Response:
    gw: Gateway = request.app.state.gateway
    rid = new_request_id()
    started = time.perf_counter()
    key, model_asked = None, "?"
    try:
        key = gw.authenticate(secret_of(request))
        call = wire.parse(await read_json(request, gw))
        model_asked = call.model
        ticket, model = gw.open(wire.endpoint, call, key, rid, started)
        if gw.tracing is not None:
            ticket.trace_parent = gw.tracing.parent(request.headers)
    except GatewayError as err:
        gw.refused(wire.endpoint, model_asked, key, rid, err, started)
        return error_response(err, wire, rid)
    headers = {"x-request-id": rid}
    if ticket.arm is not None:
        headers["x-agency-experiment"] = f"{ticket.experiment}:{ticket.arm}"
    if ticket.role is not None:
        headers["x-agency-role"] = ticket.role
    if call.ignored:
        headers["x-agency-ignored-params"] = ",".join(call.ignored)
    answer_id = wire.prefix + rid[4:]
    if not call.stream:
        try:
            answer = await gw.answer(ticket, model, call)
        except Exception as exc:
            return error_response(_failure(exc), wire, rid)
        served = answer.message.response_metadata.get("model_name") or call.model
        body = wire.whole(answer.message, answer_id, served)
        return _json(body, 200, {**headers, **answer.headers()})
    chunks = gw.stream(ticket, model, call)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = None
    except Exception as exc:
        return error_response(_failure(exc), wire, rid)
    # Who is answering (a failover after this first chunk is in the audit log, not here).
    for name in ("provider", "model", "cache"):
        if ticket.route.get(name):
            headers[f"x-agency-{name}"] = ticket.route[name]
    writer = wire.writer(answer_id, call.model, call)
    return StreamingResponse(
        _sse(chunks, first, writer),
        media_type="text/event-stream",
        headers={**headers, "cache-control": "no-cache"},
    )


async def _sse(chunks: AsyncIterator[Any], first: Any, writer: Any) -> AsyncIterator[bytes]:
    try:
        if first is not None:
            yield writer.feed(first)
        async for chunk in chunks:
            out = writer.feed(chunk)
            if out:
                yield out
        yield writer.close()
    except Exception as exc:  # after the first byte the status is sent: the error is an event
        yield writer.error(_failure(exc))
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions``."""
    return await _chat(request, _OPENAI)


async def messages(request: Request) -> Response:
    """``POST /v1/messages``."""
    return await _chat(request, _ANTHROPIC)


async def embeddings(request: Request) -> Response:
    """``POST /v1/embeddings``: an entry's embedding model, or an embeddings spec."""
    gw: Gateway = request.app.state.gateway
    rid = new_request_id()
    started = time.perf_counter()
    key, model = None, "?"
    try:
        key = gw.authenticate(secret_of(request))
        model, texts, encoding, dims = _openai.parse_embeddings(await read_json(request, gw))
        vectors, tokens = await _embed.embed(
            gw, model, texts, dims, key=key, request_id=rid, started=started
        )
    except GatewayError as err:
        gw.refused("embeddings", model, key, rid, err, started)
        return error_response(err, None, rid)
    except Exception as exc:
        failed = _failure(exc)
        gw.refused("embeddings", model, key, rid, failed, started)
        return error_response(failed, None, rid)
    body = _openai.embeddings_response(
        vectors, model=model, encoding=encoding, prompt_tokens=tokens
    )
    return _json(body, 200, {"x-request-id": rid})


async def list_models(request: Request) -> Response:
    """``GET /v1/models``: what this gateway answers to."""
    gw: Gateway = request.app.state.gateway
    rid = new_request_id()
    try:
        gw.authenticate(secret_of(request))
    except GatewayError as err:
        return error_response(err, None, rid)
    created = int(gw.started_at)
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "agency"}
        for name in gw.model_names()
    ]
    return _json({"object": "list", "data": data}, 200, {"x-request-id": rid})


async def get_model(request: Request) -> Response:
    """``GET /v1/models/{model}``: one model this gateway answers to, or 404."""
    gw: Gateway = request.app.state.gateway
    rid = new_request_id()
    name = request.path_params["model"]
    try:
        gw.authenticate(secret_of(request))
        if name not in gw.model_names():
            raise GatewayError(
                404,
                f"The model '{name}' does not exist",
                "invalid_request_error",
                param="model",
                code="model_not_found",
            )
    except GatewayError as err:
        return error_response(err, None, rid)
    body = {"id": name, "object": "model", "created": int(gw.started_at), "owned_by": "agency"}
    return _json(body, 200, {"x-request-id": rid})


async def feedback(request: Request) -> Response:
    """``POST /v1/feedback``: ``{"request_id", "score", "comment"?}`` from the request's key."""
    gw: Gateway = request.app.state.gateway
    rid = new_request_id()
    try:
        key = gw.authenticate(secret_of(request))
        body = await read_json(request, gw)
        target, score = body.get("request_id"), body.get("score")
        if (
            not isinstance(target, str)
            or not isinstance(score, int | float)
            or isinstance(score, bool)
        ):
            raise GatewayError(
                400, 'send {"request_id": "req_...", "score": <number>}', "invalid_request_error"
            )
        # The audit log's flush and SQLite work run off the event loop.
        row = await run_in_threadpool(gw.request_row, target)
        if row is None or (key is not None and row.get("key_id") != key.id):
            raise GatewayError(
                404,
                f"no request {target!r} of this key",
                "invalid_request_error",
                param="request_id",
            )
        await run_in_threadpool(gw.audit.add_feedback, target, float(score), body.get("comment"))
    except GatewayError as err:
        return error_response(err, None, rid)
    return _json({"ok": True, "request_id": target}, 200, {"x-request-id": rid})


async def health(request: Request) -> Response:
    """``GET /health``: the process answers."""
    return _json({"status": "ok"})


async def ready(request: Request) -> Response:
    """``GET /ready``: 200 when some provider may be called (its breaker not open)."""
    gw: Gateway = request.app.state.gateway
    available = gw.agency.available_providers()
    status = 200 if available else 503
    return _json(
        {"status": "ready" if available else "unavailable", "providers": available}, status
    )


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus' text format."""
    from agency.gateway.metrics import CONTENT_TYPE

    gw: Gateway = request.app.state.gateway
    return Response(gw.metrics.render(), media_type=CONTENT_TYPE)


def create_app(gateway: Gateway) -> Starlette:
    """The ASGI app over ``gateway``; its lifespan starts the health probes and, on shutdown,
    stops them and flushes the audit log and key store."""
    from agency.gateway import _manage, dashboard

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        interval = gateway.config.health_interval_s
        if interval > 0:
            gateway.agency.start_health_checks(interval)
        try:
            yield
        finally:
            gateway.agency.stop_health_checks()
            gateway.close()

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
        Route("/v1/feedback", feedback, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *_manage.routes(),
        *dashboard.routes(),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    return app


def build_gateway(
    config_path: str | None = None,
    *,
    auth: bool | None = None,
    agency: Agency | None = None,
    gateway_config: GatewayConfig | None = None,
) -> Gateway:
    """A `Gateway` from a config file (else the environment, else the embedded model)."""
    from agency.app import Agency
    from agency.gateway.config import gateway_config as read_gateway_config

    if agency is None:
        agency = Agency.from_config(config_path) if config_path else Agency.from_env()
    table = gateway_config or read_gateway_config(agency.config)
    return Gateway(agency, table, auth=auth, config_path=config_path)


def app_from_env() -> Starlette:
    """The app for ``uvicorn --factory`` (``agency serve --workers N``): the config file from
    ``AGENCY_GATEWAY_CONFIG``, auth off when ``AGENCY_GATEWAY_NO_AUTH=1``."""
    path = os.environ.get("AGENCY_GATEWAY_CONFIG") or None
    no_auth = os.environ.get("AGENCY_GATEWAY_NO_AUTH") == "1"
    return create_app(build_gateway(path, auth=False if no_auth else None))
