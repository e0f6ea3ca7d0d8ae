"""The gateway's management API: operators' routes, behind the master key.

    GET    /manage/providers                 health, breaker and limits per provider
    POST   /manage/providers/{name}/breaker  {"state": "open"|"closed", "seconds"?}
    GET    /manage/stats                     `Agency.stats().snapshot()`
    POST   /manage/reload                    re-read the config; requests in flight finish
    GET    /manage/keys, POST /manage/keys   list; create ({"name", "budget_usd"?, "rpm"?,
                                             "models"?, "expires"?, "log_prompts"?})
    GET    /manage/keys/{id}, DELETE ...     show; revoke
    GET    /manage/experiments[/{name}]      configured experiments; one's report
    GET    /manage/audit                     ?key=&since=&until=&model=&status=&limit=
    GET    /manage/summary                   what the dashboard draws

The master key comes from ``AGENCY_MASTER_KEY`` (``Authorization: Bearer`` or ``x-api-key``);
without one, management is open only when the gateway runs without auth (``--no-auth``, on a
loopback address), and refused otherwise.
"""

from __future__ import annotations

import dataclasses
import hmac
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agency.gateway._core import Gateway, new_request_id
from agency.gateway._errors import GatewayError
from agency.gateway.audit import parse_since
from agency.resilience.breaker import FORCED_OPEN_S

__all__ = ["require_master", "routes", "summary"]


def require_master(request: Request) -> Gateway:
    """The gateway, if the request carries the master key (or auth is off); else 401/403."""
    from agency.gateway.app import secret_of

    gw: Gateway = request.app.state.gateway
    if not gw.auth:
        return gw
    if gw.master_key is None:
        raise GatewayError(
            403,
            "management needs AGENCY_MASTER_KEY set where the gateway runs",
            "permission_error",
            code="no_master_key",
        )
    sent = secret_of(request) or request.query_params.get("key") or ""
    if not hmac.compare_digest(sent.encode(), gw.master_key.encode()):
        raise GatewayError(
            401, "management needs the master key", "invalid_request_error", code="invalid_api_key"
        )
    return gw


def _key_json(key: Any) -> dict[str, Any]:
    row = dataclasses.asdict(key)
    row["models"] = list(key.models)
    row["status"] = key.status()
    return row


def _handler(fn: Any) -> Any:
    """The route of ``fn(gw, request, body)``: the master key checked, the JSON body (``{}``
    when none) read, and ``fn`` run in a worker thread, since management work (audit flushes,
    SQLite reads, a reload building a new `Agency`) must not hold up the requests being
    served on the event loop."""

    async def endpoint(request: Request) -> Response:
        from agency.gateway.app import _json, error_response, read_json

        try:
            gw = require_master(request)
            body: Any = {}
            if request.method == "POST" and await request.body():
                body = await read_json(request, gw)
                if not isinstance(body, dict):
                    raise GatewayError(400, "send a JSON object", "invalid_request_error")
            return _json(await run_in_threadpool(fn, gw, request, body))
        except GatewayError as err:
            return error_response(err, None, new_request_id())

    endpoint.__name__ = fn.__name__
    endpoint.__doc__ = fn.__doc__
    return endpoint


def providers(gw: Gateway, request: Request, body: dict[str, Any]) -> Any:
    """Health, breaker and limits per provider."""
    return gw.agency.health()


def breaker(gw: Gateway, request: Request, body: dict[str, Any]) -> Any:
    """Force a provider's breaker open (for ``seconds``) or closed."""
    name = request.path_params["name"]
    state = body.get("state")
    if state not in ("open", "closed"):
        raise GatewayError(
            400,
            'send {"state": "open"} or {"state": "closed"}',
            "invalid_request_error",
            param="state",
        )
    seconds = float(body.get("seconds") or FORCED_OPEN_S)
    try:
        snapshot = gw.agency.force_breaker(name, state, seconds)
    except KeyError as exc:
        raise GatewayError(404, str(exc.args[0]), "invalid_request_error") from exc
    return {"provider": name, "breaker": snapshot}


def stats(gw: Gateway, request: Request, body: dict[str, Any]) -> Any:
    """The agency's live statistics."""
    return gw.agency.stats().snapshot()


def reload(gw: Gateway, request: Request, body: dict[str, Any]) -> Any:
    """Re-read the configuration; see `Gateway.reload`."""
    try:
        gw.reload()
    except Exception as exc:
        raise GatewayError(
            400, f"reload refused, the running config stays: {exc}", "invalid_request_error"
        ) from exc
    return {"reloaded": True, "providers": sorted(gw.agency.health())}


def keys(gw: Gateway, request: Request, body: dict[str, Any]) -> Any:
    """List keys (GET) or create one (POST; the secret is in the answer, once)."""
    if request.method == "GET":
        return {"keys": [_key_json(k) for k in gw.keys.list()]}
    from agency.gateway.keys import KeyStoreError, parse_expiry

    try:
        expires = body.get("expires")
        secret, key = gw.keys.create(
            str(body.get("name") or ""),
            budget_usd=body.get("budget_usd"),
            rpm=body.get("rpm"),
            models=tuple(body.get("models") or ()),
            expires_in_s=parse_expiry(expires) if expires else None,
            log_prompts=bool(body.get("log_prompts")),
        )
    except (KeyStoreError, ValueError) as exc:
        raise GatewayError(400, str(exc), "invalid_request_error") from exc
    return {"key": secret, **_key_json(key)}


def key(gw: Gateway, request: Request, body: dict[str, Any]) -> Any:
    """Show (GET) or revoke (DELETE) one key."""
    from agency.gateway.keys import UnknownKeyError

    ref = request.path_params["ref"]
    if request.method == "DELETE":
        try:
            return _key_json(gw.keys.revoke(ref))
        except UnknownKeyError as exc:
            raise GatewayError(404, str(exc), "invalid_request_error") from exc
    found = gw.keys.get(ref)
    if found is None:
        raise GatewayError(404, f"no key {ref!r}", "invalid_request_error")
    return _key_json(found)


def experiments(gw: Gateway, request: Request, body: dict[str, Any]) -> Any:
    """Configured experiments, or (with a name) one experiment's report."""
    name = request.path_params.get("name")
    configs = {e.name: e for e in gw.config.experiments}
    if name is None:
        return {"experiments": [e.model_dump() for e in configs.values()]}
    if name not in configs:
        raise GatewayError(
            404, f"no experiment {name!r} (known: {sorted(configs)})", "invalid_request_error"
        )
    from agency.gateway.experiments import report_from_audit

    gw.audit.flush()
    return dataclasses.asdict(report_from_audit(gw.audit, name))


def _moment(text: str | None) -> float | None:
    """Unix seconds as given, or `parse_since`'s ``1h`` / ``2026-12-01``."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return parse_since(text)


def audit(gw: Gateway, request: Request, body: dict[str, Any]) -> Any:
    """Audit rows, newest first: ``?key=&since=1h&until=&model=&status=&limit=100``."""
    q = request.query_params
    try:
        status = int(q["status"]) if "status" in q else None
        limit = int(q.get("limit", "100"))
        since, until = (_moment(q.get(n)) for n in ("since", "until"))
    except ValueError as exc:
        raise GatewayError(400, f"bad query: {exc}", "invalid_request_error") from exc
    gw.audit.flush()
    rows = gw.audit.query(
        key=q.get("key"), since=since, until=until, model=q.get("model"), status=status, limit=limit
    )
    return {"rows": rows}


def summary(gw: Gateway, *, window_s: float = 3600.0) -> dict[str, Any]:
    """What the dashboard draws: providers, traffic over ``window_s``, top keys, experiments."""
    now = time.time()
    gw.audit.flush()
    traffic = gw.audit.summary(since=now - window_s, bucket_s=60.0)
    return {
        "now": now,
        "uptime_s": now - gw.started_at,
        "in_flight": gw.in_flight,
        "providers": gw.agency.health(),
        "traffic": traffic,
        "experiments": [
            {
                "name": e.name,
                "model": e.model,
                "arms": [a.name for a in e.arms],
                "enabled": e.enabled,
            }
            for e in gw.config.experiments
        ],
    }


def summary_route(gw: Gateway, request: Request, body: dict[str, Any]) -> Any:
    """The dashboard's data (see `summary`)."""
    return summary(gw)


def routes() -> list[Route]:
    """The management routes."""
    h = _handler
    return [
        Route("/manage/providers", h(providers), methods=["GET"]),
        Route("/manage/providers/{name}/breaker", h(breaker), methods=["POST"]),
        Route("/manage/stats", h(stats), methods=["GET"]),
        Route("/manage/reload", h(reload), methods=["POST"]),
        Route("/manage/keys", h(keys), methods=["GET", "POST"]),
        Route("/manage/keys/{ref}", h(key), methods=["GET", "DELETE"]),
        Route("/manage/experiments", h(experiments), methods=["GET"]),
        Route("/manage/experiments/{name}", h(experiments), methods=["GET"]),
        Route("/manage/audit", h(audit), methods=["GET"]),
        Route("/manage/summary", h(summary_route), methods=["GET"]),
    ]
