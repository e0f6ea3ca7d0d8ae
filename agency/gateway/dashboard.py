"""The gateway's status page.

    GET /dashboard[?refresh=SECONDS][&key=MASTER_KEY]   one HTML page
    GET /dashboard/data                                  `agency.gateway._manage.summary`, JSON

Both need the master key when auth is on (`agency.gateway._manage.require_master`:
``Authorization: Bearer``, ``x-api-key`` or ``?key=``). A browser passes ``?key=`` once: the
page keeps it in ``sessionStorage`` (this tab only), takes it out of the address bar and sends
it as ``Authorization: Bearer`` on every refresh. Without a key ``/dashboard`` answers its 401
or 403 with the page's empty frame (no data) whose script asks ``/dashboard/data`` with the key
the tab kept, so reloading the page works. ``/dashboard/data`` refused is the gateway's JSON
error.

The page is rendered on the server (providers, totals, top keys, experiments) with the first
summary embedded as JSON; an inline script (``data/dashboard.js``; no build step, nothing from
a CDN) redraws it from ``/dashboard/data`` every ``refresh`` seconds (default 5, from 0.25 to
3600) and draws the traffic charts as inline SVG. Every string from the summary is escaped on
the server (`html.escape`; JSON inside ``<script>`` with ``<``, ``>`` and ``&`` as ``\\u``
escapes) and reaches the DOM in the browser through ``textContent`` only; the
Content-Security-Policy runs no script but the page's own (a nonce per response). The summary
holds no secrets and the page adds none: the master key is never written into it.
"""

from __future__ import annotations

import functools
import html
import math
import re
import secrets
from importlib import resources
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from agency.gateway._core import new_request_id
from agency.gateway._errors import GatewayError
from agency.gateway._manage import require_master, summary
from agency.gateway.app import error_response

__all__ = ["data", "health_of", "page", "parse_refresh", "render_page", "routes"]

DEFAULT_REFRESH_S = 5.0
"""Seconds between the page's refreshes when ``?refresh=`` is not given."""
_REFRESH_RANGE = (0.25, 3600.0)
_DATA_URL = "/dashboard/data"
_DASH = "\u2014"
_FIELD = re.compile(r"\{\{(\w+)\}\}")
# JSON placed inside <script>: no "</script>", "<!--" or entity can end or bend the element.
_SCRIPT_SAFE = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def routes() -> list[Route]:
    """``GET /dashboard`` (`page`) and ``GET /dashboard/data`` (`data`)."""
    return [
        Route("/dashboard", page, methods=["GET"]),
        Route(_DATA_URL, data, methods=["GET"]),
    ]


def _headers(nonce: str | None = None) -> dict[str, str]:
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    policy = (
        f"default-src 'none'; script-src {script}; style-src {script}; connect-src 'self'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return {
        "content-security-policy": policy,
        "cache-control": "no-store",
        "referrer-policy": "no-referrer",
        "x-content-type-options": "nosniff",
        "x-frame-options": "DENY",
    }


def parse_refresh(text: str | None) -> float:
    """Seconds between refreshes from ``?refresh=``; `ValueError` naming the fix when bad."""
    if text is None or text == "":
        return DEFAULT_REFRESH_S
    low, high = _REFRESH_RANGE
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # NaN fails this too
        raise ValueError(
            f"refresh={text!r}: pass the seconds between refreshes, from {low:g} to {high:g}, "
            "e.g. /dashboard?refresh=5"
        )
    return value


async def page(request: Request) -> Response:
    """``GET /dashboard``: the status page (its empty frame, with 401/403, without the key)."""
    try:
        refresh_s = parse_refresh(request.query_params.get("refresh"))
    except ValueError as exc:
        return PlainTextResponse(str(exc), status_code=400, headers=_headers())
    nonce = secrets.token_urlsafe(18)
    try:
        gw = require_master(request)
    except GatewayError as err:
        body = render_page(None, refresh_s=refresh_s, nonce=nonce, refusal=err.message)
        return HTMLResponse(body, status_code=err.status, headers=_headers(nonce))
    first = await run_in_threadpool(summary, gw)
    body = render_page(first, refresh_s=refresh_s, nonce=nonce)
    return HTMLResponse(body, headers=_headers(nonce))


async def data(request: Request) -> Response:
    """``GET /dashboard/data``: `agency.gateway._manage.summary` as JSON (master key)."""
    try:
        gw = require_master(request)
    except GatewayError as err:
        return error_response(err, None, new_request_id())
    found = await run_in_threadpool(summary, gw)
    return Response(orjson.dumps(found), media_type="application/json", headers=_headers())


# -- rendering ------------------------------------------------------------------------------
@functools.cache
def _asset(name: str) -> str:
    return (resources.files("agency.gateway") / "data" / name).read_text(encoding="utf-8")


def _script_json(value: Any) -> str:
    return orjson.dumps(value).decode().translate(_SCRIPT_SAFE)


def health_of(row: dict[str, Any]) -> str:
    """One provider's health from its `agency.Agency.health` row: ``unconfigured``, ``down``
    (breaker open), ``probing`` (half-open), ``degraded`` (closed, its last call failed) or
    ``healthy``. The page's script decides the same way."""
    if "unconfigured" in row:
        return "unconfigured"
    breaker = row.get("breaker") or {}
    state = breaker.get("state")
    if state == "open":
        return "down"
    if state == "half_open":
        return "probing"
    if (breaker.get("consecutive_failures") or 0) > 0:
        return "degraded"
    return "healthy"


def _num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _round(value: float) -> int:
    return math.floor(value + 0.5)  # as JavaScript's Math.round, not Python's half-to-even


def _int(value: Any) -> str:
    return f"{_round(value):,}" if _num(value) else _DASH


def _usd(value: Any) -> str:
    if not _num(value):
        return _DASH
    if value == 0:
        return "$0"
    digits = 2 if abs(value) >= 1 else 4 if abs(value) >= 0.01 else 6
    return f"${value:.{digits}f}"


def _ms(value: Any) -> str:
    if not _num(value):
        return _DASH
    if value == 0:
        return "0 ms"
    if value >= 10_000:
        return f"{value / 1000:.1f} s"
    return f"{value:.1f} ms" if value < 10 else f"{_round(value)} ms"


def _duration(seconds: Any) -> str:
    if not _num(seconds):
        return _DASH
    s = max(0, math.floor(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _seconds(value: Any) -> str:
    if _num(value) and value < 10:
        return f"{value:.1f} s"
    return _duration(value)


def _compact(value: Any) -> str:
    if not _num(value):
        return _DASH
    if abs(value) >= 1e6:
        return f"{value / 1e6:.1f}".removesuffix(".0") + "M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.1f}".removesuffix(".0") + "k"
    return f"{round(value, 1):g}"


def _limits(limits: dict[str, Any] | None) -> str:
    if not limits:
        return _DASH
    parts = []
    if _num(limits.get("rpm")):
        parts.append(f"rpm {_compact(limits['rpm'])}")
    if _num(limits.get("tpm")):
        parts.append(f"tpm {_compact(limits['tpm'])}")
    if _num(limits.get("blocked_for")) and limits["blocked_for"] > 0:
        parts.append(f"blocked {_seconds(limits['blocked_for'])}")
    for name, window in (limits.get("server") or {}).items():
        if _num(window.get("remaining")) and _num(window.get("limit")):
            parts.append(f"{name} {_compact(window['remaining'])}/{_compact(window['limit'])} left")
    return " \u00b7 ".join(parts) if parts else "none"


def _td(text: str, cls: str | None = None, sub: str | None = None) -> str:
    attr = f' class="{cls}"' if cls else ""
    extra = f'<span class="sub">{html.escape(sub)}</span>' if sub else ""
    return f"<td{attr}>{html.escape(text)}{extra}</td>"


def _empty(columns: int, text: str) -> str:
    return f'<tr><td class="empty" colspan="{columns}">{html.escape(text)}</td></tr>'


def _provider_row(name: str, row: dict[str, Any]) -> str:
    health = health_of(row)
    spec = row.get("spec")
    first = f'<td><span class="name">{html.escape(name)}</span>'
    first += f'<span class="sub">{html.escape(str(spec))}</span></td>' if spec else "</td>"
    cells = [first, f'<td><span class="health {health}">{health}</span></td>']
    if health == "unconfigured":
        state = "unconfigured"
        cells.append(_td("not configured", sub=str(row["unconfigured"])))
        cells += [_td(_DASH, None if i == 2 else "num") for i in range(5)]
    else:
        breaker = row.get("breaker") or {}
        state = str(breaker.get("state") or "unknown")
        trips = breaker.get("trips")
        tripped = f" \u00b7 tripped {trips}\u00d7" if isinstance(trips, int) and trips > 0 else ""
        cells += [
            _td(state.replace("_", "-") + tripped, sub=breaker.get("reason") or None),
            _td(_int(breaker.get("failures")), "num"),
            _td(_DASH if state == "closed" else _seconds(breaker.get("retry_in")), "num"),
            _td(_limits(row.get("limits"))),
            _td(_int(row.get("in_flight")), "num"),
            _td(_ms(row.get("latency_ewma_ms")), "num"),
        ]
    down = ' class="down"' if health == "down" else ""
    attrs = (
        f'data-provider="{html.escape(name)}" data-health="{health}" '
        f'data-state="{html.escape(state)}"{down}'
    )
    return f"<tr {attrs}>{''.join(cells)}</tr>"


def _key_row(key: dict[str, Any]) -> str:
    name = key.get("key_name")
    first = _td(str(name), "name") if name is not None else _td("(no key)", "empty")
    return (
        f"<tr>{first}{_td(str(key.get('key_id') or _DASH))}"
        f"{_td(_int(key.get('requests')), 'num')}{_td(_usd(key.get('cost_usd')), 'num')}</tr>"
    )


def _experiment_row(exp: dict[str, Any]) -> str:
    arms = ", ".join(str(a) for a in exp.get("arms") or ())
    state = "running" if exp.get("enabled") else "stopped"
    return (
        f"<tr>{_td(str(exp.get('name')), 'name')}{_td(str(exp.get('model')))}"
        f"{_td(arms)}{_td(state)}</tr>"
    )


def render_page(
    first: dict[str, Any] | None, *, refresh_s: float, nonce: str, refusal: str | None = None
) -> str:
    """The page's HTML: ``first`` (a `agency.gateway._manage.summary`) rendered and embedded
    for the script; ``None`` with ``refusal`` (why the key was refused) renders the empty frame."""
    values: dict[str, str] = {
        "nonce": nonce,
        "css": _asset("dashboard.css"),
        "js": _asset("dashboard.js"),
        "refresh": f"{refresh_s:g} s",
        "config_json": _script_json({"refresh_s": refresh_s, "data_url": _DATA_URL}),
        "initial_json": _script_json(first),
    }
    if first is None:
        hint = f"{refusal or 'the master key is needed'} \u2014 open /dashboard?key=<master key>"
        values |= {"status": html.escape(hint), "status_class": "denied", "uptime": _DASH}
        values |= dict.fromkeys(("requests", "errors", "error_rate", "cost", "in_flight"), _DASH)
        values |= {
            "provider_rows": _empty(8, "no data without the master key"),
            "key_rows": _empty(4, "no data without the master key"),
            "experiment_rows": _empty(4, "no data without the master key"),
        }
    else:
        traffic = first.get("traffic") or {}
        totals = traffic.get("totals") or {}
        requests, errors = totals.get("requests") or 0, totals.get("errors") or 0
        providers = first.get("providers") or {}
        keys = traffic.get("top_keys") or []
        experiments = first.get("experiments") or []
        values |= {
            "status": "loaded",
            "status_class": "live",
            "uptime": _duration(first.get("uptime_s")),
            "requests": _int(requests),
            "errors": _int(errors),
            "error_rate": f"{100 * errors / requests:.1f}%" if requests else _DASH,
            "cost": _usd(totals.get("cost_usd")),
            "in_flight": _int(first.get("in_flight")),
            "provider_rows": "".join(_provider_row(n, r) for n, r in providers.items())
            or _empty(8, "no providers configured"),
            "key_rows": "".join(_key_row(k) for k in keys)
            or _empty(4, "no requests in this window"),
            "experiment_rows": "".join(_experiment_row(e) for e in experiments)
            or _empty(4, "no experiments configured"),
        }
    return _FIELD.sub(lambda m: values[m[1]], _asset("dashboard.html"))
