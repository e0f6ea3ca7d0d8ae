"""``agency keys create|list|show|revoke`` and ``agency audit``: the gateway's virtual keys and
audit log from the shell (private to the CLI; registered by `agency.cli`).

The files are ``[gateway] data_dir``'s ``keys.sqlite`` and ``audit.sqlite``, read from
``--config FILE``, else ``$AGENCY_CONFIG``, else ``./agency.toml``, else the defaults
(``.agency/``). A running gateway notices keys created or revoked here within half a second.

``keys create`` prints the secret alone on stdout (``KEY=$(agency keys create --name x)``);
notes go to stderr. Tables go to stdout as rich tables on a terminal, tab-separated lines to
a pipe or a file. Exit 1: no such key; 2: a bad option or config.
"""

from __future__ import annotations

import json
import math
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agency.cli._workflows import fail, reason

if TYPE_CHECKING:
    from agency.gateway.config import GatewayConfig
    from agency.gateway.keys import VirtualKey

__all__ = ["audit", "keys_app"]

keys_app = typer.Typer(
    name="keys",
    help="Virtual keys of the gateway (agency serve): create, list, show, revoke.",
    no_args_is_help=True,
    add_completion=False,
)
_out = Console()
_err = Console(stderr=True)

_ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        help="agency.toml whose [gateway] data_dir holds the keys and the audit log "
        "(default: ./agency.toml if present, else .agency/).",
    ),
]
_KeyArgument = Annotated[str, typer.Argument(help="The key's id (vk_...) or name.")]


def _gateway(config: str | None) -> GatewayConfig:
    """The ``[gateway]`` table of ``config`` (see the module docstring); exit 2 when bad."""
    from agency.config import load_config
    from agency.gateway.config import gateway_config

    try:
        return gateway_config(load_config(config))
    except (ValueError, OSError) as exc:  # ConfigError is a ValueError
        fail(reason(exc))


def _unknown_models(names: list[str], config: str | None) -> list[str]:
    """The names no request could be served under by this config (said, not refused: the
    config may change before the key is used)."""
    from agency.config import load_config

    llm = load_config(config).llm
    known = {e.name for e in llm.ordered()} | {f"role:{r}" for r in llm.routing} | {"auto"}
    return [n for n in names if n not in known and ":" not in n.removeprefix("role:")]


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds")


def _usd(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}".rstrip("0").rstrip(".") or "0"


def _print_rows(header: list[str], rows: list[list[str]]) -> None:
    """A rich table on a terminal, tab-separated lines (never wrapped) otherwise."""
    if _out.is_terminal:
        table = Table()
        for i, name in enumerate(header):  # ids stay whole: they are what one copies
            table.add_column(name, no_wrap=name in ("id", "request_id") or i == 0)
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))  # a name may hold [brackets]
        _out.print(table)
    else:
        for fields in [header, *rows]:
            sys.stdout.write("\t".join(fields) + "\n")


def _key_cells(key: VirtualKey, now: float) -> list[str]:
    return [
        key.id,
        key.name,
        key.status(now),
        _usd(key.budget_usd),
        _usd(key.spent_usd),
        "-" if key.rpm is None else str(key.rpm),
        ",".join(key.models) or "any",
        _when(key.expires_at),
    ]


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", "-n", help="A name unique among live keys.")],
    budget_usd: Annotated[
        float | None, typer.Option("--budget-usd", help="USD the key may spend in all.")
    ] = None,
    rpm: Annotated[int | None, typer.Option("--rpm", help="Requests per minute allowed.")] = None,
    models: Annotated[
        str | None,
        typer.Option(
            "--models", help="Comma-separated model names it may ask for (role:code,auto)."
        ),
    ] = None,
    expires: Annotated[
        str | None, typer.Option("--expires", help="Lifetime: 45s, 90m, 12h, 30d, 2w.")
    ] = None,
    log_prompts: Annotated[
        bool, typer.Option("--log-prompts", help="Keep prompt and answer text in the audit log.")
    ] = False,
    config: _ConfigOption = None,
) -> None:
    """Create a key and print its secret (once: only a salted hash is kept)."""
    from agency.gateway.keys import KeyStore, KeyStoreError, parse_expiry

    model_names: list[str] = []
    if models is not None:
        model_names = [m.strip() for m in models.split(",")]
        if not all(model_names):
            fail(f"--models {models!r}: write model names separated by commas, e.g. role:code,auto")
    try:
        expires_in_s = None if expires is None else parse_expiry(expires)
    except KeyStoreError as exc:
        fail(f"--expires: {exc}")
    if budget_usd is not None and not (math.isfinite(budget_usd) and budget_usd >= 0):
        fail(f"--budget-usd {budget_usd}: pass 0 or more USD")
    if rpm is not None and rpm <= 0:
        fail(f"--rpm {rpm}: pass a whole number of requests per minute above 0")
    table = _gateway(config)
    unknown = _unknown_models(model_names, config)
    if unknown:
        _err.print(
            f"note: {', '.join(unknown)} is not a model name of this config (entries, role:<name> "
            "of [llm.routing], auto, or a provider:model spec): requests for it will get 404",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    store = KeyStore(table.path("keys.sqlite"))
    try:
        secret, key = store.create(
            name,
            budget_usd=budget_usd,
            rpm=rpm,
            models=model_names,
            expires_in_s=expires_in_s,
            log_prompts=log_prompts,
        )
    except KeyStoreError as exc:
        fail(str(exc))
    finally:
        store.close()
    sys.stdout.write(secret + "\n")
    sys.stdout.flush()
    _err.print(
        f"created {key.id} ({key.name}) in {store.path}. The key above is shown only once: "
        "store it now (only a salted hash is kept).",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@keys_app.command("list")
def list_keys(config: _ConfigOption = None) -> None:
    """Every key: id, name, status, budget, spent, rpm, models, expires."""
    from agency.gateway.keys import KeyStore

    path = _gateway(config).path("keys.sqlite")
    if not path.is_file():
        _err.print(f"no keys yet ({path} does not exist)", markup=False, highlight=False)
        return
    store = KeyStore(path)
    try:
        keys = store.list()
    finally:
        store.close()
    now = time.time()
    header = ["id", "name", "status", "budget", "spent", "rpm", "models", "expires"]
    _print_rows(header, [_key_cells(k, now) for k in keys])


@keys_app.command("show")
def show(key: _KeyArgument, config: _ConfigOption = None) -> None:
    """One key's fields, one per line."""
    found = _lookup(key, config)
    lines = {
        "id": found.id,
        "name": found.name,
        "status": found.status(),
        "created": _when(found.created_at),
        "budget_usd": _usd(found.budget_usd),
        "spent_usd": _usd(found.spent_usd),
        "rpm": "-" if found.rpm is None else str(found.rpm),
        "models": ",".join(found.models) or "any",
        "expires": _when(found.expires_at),
        "revoked": _when(found.revoked_at),
        "log_prompts": "yes" if found.log_prompts else "no",
    }
    for field, value in lines.items():
        sys.stdout.write(f"{field}\t{value}\n")


@keys_app.command("revoke")
def revoke(key: _KeyArgument, config: _ConfigOption = None) -> None:
    """Revoke a key: a running gateway refuses it within half a second."""
    from agency.gateway.keys import KeyStore, UnknownKeyError

    path = _gateway(config).path("keys.sqlite")
    if not path.is_file():
        fail(f"no key {key!r}: there are no keys yet ({path} does not exist)", 1)
    store = KeyStore(path)
    try:
        revoked = store.revoke(key)
    except UnknownKeyError as exc:
        fail(str(exc), 1)
    finally:
        store.close()
    _err.print(
        f"revoked {revoked.id} ({revoked.name}) at {_when(revoked.revoked_at)}",
        markup=False,
        highlight=False,
    )


def _lookup(key: str, config: str | None) -> VirtualKey:
    from agency.gateway.keys import KeyStore

    path = _gateway(config).path("keys.sqlite")
    if not path.is_file():
        fail(f"no key {key!r}: there are no keys yet ({path} does not exist)", 1)
    store = KeyStore(path)
    try:
        found = store.get(key)
    finally:
        store.close()
    if found is None:
        fail(f"no key {key!r}: see `agency keys list` for ids and names", 1)
    return found


_AUDIT_HEADER = [
    "time", "request_id", "key", "model_asked", "answered_by", "status", "attempts", "tokens",
    "cost_usd", "latency_ms", "cache",
]  # fmt: skip


def _audit_cells(row: dict[str, Any]) -> list[str]:
    answered = f"{row['provider']}:{row['model']}" if row["provider"] else "-"
    tokens = [row["input_tokens"], row["output_tokens"]]
    return [
        _when(row["time"]),
        row["request_id"],
        row["key_name"] or row["key_id"] or "-",
        row["model_asked"],
        answered,
        str(row["status"]) + (f" {row['error_kind']}" if row["error_kind"] else ""),
        str(row["attempts"]),
        "-" if all(t is None for t in tokens) else f"{tokens[0] or 0}+{tokens[1] or 0}",
        _usd(row["cost_usd"]),
        f"{row['latency_ms']:.1f}",
        "hit" if row["cache_hit"] else "-",
    ]


def audit(
    key: Annotated[
        str | None, typer.Option("--key", "-k", help="Only this key (id or name).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="From this long ago (1h, 30m, 2d) or this date (2026-12-01)."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Only requests asking for or served by it.")
    ] = None,
    status: Annotated[int | None, typer.Option("--status", help="Only this HTTP status.")] = None,
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="Only this experiment's requests.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="At most this many rows.")
    ] = 50,
    json_out: Annotated[
        bool, typer.Option("--json", help="One JSON object per request (JSON lines).")
    ] = False,
    config: _ConfigOption = None,
) -> None:
    """The gateway's audit log, newest first: one row per request."""
    from agency.gateway.audit import AuditLog, parse_since

    try:
        start = None if since is None else parse_since(since)
    except ValueError as exc:
        fail(f"--{exc}")
    path = _gateway(config).path("audit.sqlite")
    if not Path(path).is_file():
        _err.print(f"no requests recorded yet ({path} does not exist)", markup=False)
        return
    log = AuditLog(path)
    try:
        rows = log.query(
            key=key, since=start, model=model, status=status, experiment=experiment, limit=limit
        )
    finally:
        log.close()
    if json_out:
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    if not rows:
        _err.print("no requests match", markup=False)
        return
    _print_rows(_AUDIT_HEADER, [_audit_cells(r) for r in rows])
