"""``agency serve``: the OpenAI- and Anthropic-compatible gateway on uvicorn.

    agency serve                                  # the embedded model, keys required
    agency serve --config agency.toml --port 4000 --workers 4
    agency serve --no-auth                        # loopback only: no keys asked

The gateway loads only when the command runs (``agency --help`` stays fast).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["serve"]

_err = Console(stderr=True)


def _fail(reason: str, code: int = 2) -> typer.Exit:
    _err.print(f"[red]error:[/red] {escape(reason)}", soft_wrap=True)
    return typer.Exit(code)


def serve(
    config: Annotated[
        str | None,
        typer.Option(
            "--config", "-c", help="agency.toml; else the environment, else the embedded model."
        ),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Interface (default [gateway] host, 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default [gateway] port, 4000).")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1, help='Worker processes (more than one needs [state] backend = "redis").'
        ),
    ] = 1,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve without virtual keys (loopback hosts only).")
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "warning",
) -> None:
    """Serve the configured providers as an OpenAI- and Anthropic-compatible API."""
    import uvicorn

    from agency.errors import AgencyError
    from agency.gateway._tracing import configure_from_env
    from agency.gateway.app import build_gateway, create_app, is_loopback

    configure_from_env()  # OTLP export of [gateway] otel spans, when its endpoint is set
    try:
        gateway = build_gateway(config, auth=False if no_auth else None)
    except AgencyError as exc:
        raise _fail(str(exc)) from None
    table = gateway.config
    host = host or table.host
    port = port or table.port
    if not gateway.auth and not is_loopback(host):
        gateway.close()
        raise _fail(
            f"--no-auth (or [gateway] auth = false) serves anyone who can reach {host}; "
            "use a loopback host such as 127.0.0.1, or create keys with "
            "`agency keys create`"
        )
    if workers > 1 and gateway.agency.config.state.backend != "redis":
        gateway.close()
        raise _fail(
            '--workers > 1 needs [state] backend = "redis" in the config, so breakers, '
            "limits and budgets hold across the workers; or run one worker"
        )
    auth = "virtual keys" if gateway.auth else "no auth"
    _err.print(
        f"agency gateway on http://{host}:{port} ({auth}; providers: "
        f"{', '.join(gateway.model_names())}); dashboard: /dashboard",
        soft_wrap=True,
        highlight=False,
    )
    if workers == 1:
        uvicorn.run(create_app(gateway), host=host, port=port, log_level=log_level)
        return
    gateway.close()
    # Each worker builds its own gateway from the same file; Redis makes them one, and
    # their metrics are summed through files in one directory (prometheus-client's way).
    from agency.gateway.metrics import MULTIPROC_ENV

    metrics_dir = tempfile.mkdtemp(prefix="agency-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    if config:
        os.environ["AGENCY_GATEWAY_CONFIG"] = os.path.abspath(config)
    if no_auth:
        os.environ["AGENCY_GATEWAY_NO_AUTH"] = "1"
    try:
        uvicorn.run(
            "agency.gateway.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
