"""``agency keys ...`` and ``agency audit``, run through typer's CliRunner in a temporary
working directory; effects are checked in the real SQLite files."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from agency.cli._keys import audit, keys_app
from agency.gateway.audit import AuditLog, AuditRecord, parse_since
from agency.gateway.keys import KeyStore

runner = CliRunner()


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGENCY_CONFIG", raising=False)
    cli = typer.Typer()
    cli.add_typer(keys_app, name="keys")
    cli.command("audit")(audit)
    return cli


def run(app: typer.Typer, *args: str) -> Result:
    return runner.invoke(app, list(args))


def table(result: Result) -> list[dict[str, str]]:
    """The tab-separated table a pipe gets, as dicts by header."""
    header, *rows = [line.split("\t") for line in result.stdout.splitlines()]
    return [dict(zip(header, row, strict=True)) for row in rows]


def test_create_prints_the_secret_alone_and_it_verifies(app: typer.Typer) -> None:
    result = run(
        app,
        "keys",
        "create",
        "--name",
        "team-a",
        "--budget-usd",
        "5",
        "--rpm",
        "60",
        "--models",
        "role:code, auto",
        "--expires",
        "30d",
        "--log-prompts",
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    secret = lines[0]
    assert "shown only once" in result.stderr
    store = KeyStore(".agency/keys.sqlite")
    try:
        key = store.verify(secret)
        assert key is not None and key.name == "team-a" and key.id in result.stderr
        assert (key.budget_usd, key.rpm, key.models, key.log_prompts) == (
            5.0,
            60,
            ("role:code", "auto"),
            True,
        )
        assert key.expires_at == pytest.approx(key.created_at + 30 * 86400)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--expires", "soon"], "--expires"),
        (["--models", "role:code,"], "--models"),
        (["--budget-usd", "-1"], "--budget-usd"),
        (["--rpm", "0"], "--rpm"),
    ],
)
def test_create_rejects_bad_options(app: typer.Typer, args: list[str], message: str) -> None:
    result = run(app, "keys", "create", "--name", "a", *args)
    assert result.exit_code == 2
    assert message in result.stderr and result.stdout == ""
    assert not Path(".agency/keys.sqlite").exists()


def test_duplicate_name_fails_cleanly(app: typer.Typer) -> None:
    assert run(app, "keys", "create", "--name", "team-a").exit_code == 0
    result = run(app, "keys", "create", "--name", "team-a")
    assert result.exit_code == 2
    assert "team-a" in result.stderr and "exists" in result.stderr and result.stdout == ""


def test_list_show_revoke(app: typer.Typer) -> None:
    assert "no keys yet" in run(app, "keys", "list").stderr
    run(app, "keys", "create", "--name", "team-a", "--budget-usd", "2.5")
    run(app, "keys", "create", "--name", "team-b", "--models", "auto")
    rows = table(run(app, "keys", "list"))
    assert [(r["name"], r["status"], r["budget"], r["models"]) for r in rows] == [
        ("team-a", "active", "2.5", "any"),
        ("team-b", "active", "-", "auto"),
    ]
    id_b = rows[1]["id"]
    shown = run(app, "keys", "show", "team-b")
    assert shown.exit_code == 0
    fields = dict(line.split("\t", 1) for line in shown.stdout.splitlines())
    assert fields["id"] == id_b and fields["status"] == "active" and fields["models"] == "auto"

    revoked = run(app, "keys", "revoke", id_b)
    assert revoked.exit_code == 0 and id_b in revoked.stderr
    rows = table(run(app, "keys", "list"))
    assert [(r["name"], r["status"]) for r in rows] == [("team-a", "active"), ("team-b", "revoked")]
    store = KeyStore(".agency/keys.sqlite")
    try:
        assert store.get(id_b).status() == "revoked"  # type: ignore[union-attr]
    finally:
        store.close()


def test_unknown_key_exits_1(app: typer.Typer) -> None:
    for command in ("show", "revoke"):
        result = run(app, "keys", command, "nobody")
        assert result.exit_code == 1 and "nobody" in result.stderr
    run(app, "keys", "create", "--name", "team-a")
    for command in ("show", "revoke"):
        result = run(app, "keys", command, "nobody")
        assert result.exit_code == 1
        assert "no key 'nobody'" in result.stderr and "agency keys list" in result.stderr


def test_config_decides_where_the_files_live(app: typer.Typer) -> None:
    Path("agency.toml").write_text('[gateway]\ndata_dir = "from-cwd"\n')
    Path("other.toml").write_text('[gateway]\ndata_dir = "from-flag"\n')
    run(app, "keys", "create", "--name", "a")
    run(app, "keys", "create", "--name", "b", "--config", "other.toml")
    assert [r["name"] for r in table(run(app, "keys", "list"))] == ["a"]
    assert [r["name"] for r in table(run(app, "keys", "list", "-c", "other.toml"))] == ["b"]
    assert Path("from-cwd/keys.sqlite").is_file() and Path("from-flag/keys.sqlite").is_file()
    assert not Path(".agency").exists()


def test_bad_config_exits_2(app: typer.Typer) -> None:
    Path("bad.toml").write_text('[gateway]\nport = "x"\n')
    for args in (["keys", "list"], ["keys", "create", "--name", "a"], ["audit"]):
        result = run(app, *args, "--config", "bad.toml")
        assert result.exit_code == 2
        assert "bad.toml" in result.stderr and "gateway.port" in result.stderr
    missing = run(app, "keys", "list", "--config", "nope.toml")
    assert missing.exit_code == 2 and "not found" in missing.stderr


def _record_requests() -> None:
    log = AuditLog(".agency/audit.sqlite")
    now = time.time()
    common: dict[str, Any] = {"endpoint": "/v1/chat/completions", "latency_ms": 12.5}
    log.record(
        AuditRecord(
            "req-old",
            now - 7200,
            model_asked="auto",
            status=200,
            key_id="vk_aaaaaaaaaaaa",
            key_name="team-a",
            **common,
        )
    )
    log.record(
        AuditRecord(
            "req-a",
            now - 60,
            model_asked="role:code",
            status=200,
            key_id="vk_aaaaaaaaaaaa",
            key_name="team-a",
            provider="openai",
            model="gpt-4o-mini",
            input_tokens=10,
            output_tokens=3,
            cost_usd=0.0025,
            attempts=1,
            **common,
        )
    )
    log.record(
        AuditRecord(
            "req-b",
            now - 30,
            model_asked="auto",
            status=429,
            error_kind="rate_limit",
            key_id="vk_bbbbbbbbbbbb",
            key_name="team-b",
            **common,
        )
    )
    log.close()


def test_audit_prints_recorded_rows(app: typer.Typer) -> None:
    assert "no requests recorded yet" in run(app, "audit").stderr
    _record_requests()
    rows = table(run(app, "audit"))
    assert [r["request_id"] for r in rows] == ["req-b", "req-a", "req-old"]
    assert rows[1]["answered_by"] == "openai:gpt-4o-mini" and rows[1]["tokens"] == "10+3"
    assert rows[1]["cost_usd"] == "0.0025" and rows[0]["status"] == "429 rate_limit"
    assert [r["request_id"] for r in table(run(app, "audit", "--key", "team-a"))] == [
        "req-a",
        "req-old",
    ]
    assert [r["request_id"] for r in table(run(app, "audit", "--since", "1h"))] == [
        "req-b",
        "req-a",
    ]
    assert [r["request_id"] for r in table(run(app, "audit", "--model", "auto"))] == [
        "req-b",
        "req-old",
    ]
    assert [r["request_id"] for r in table(run(app, "audit", "--limit", "1"))] == ["req-b"]

    as_json = run(app, "audit", "--json", "--key", "vk_bbbbbbbbbbbb")
    assert as_json.exit_code == 0
    (obj,) = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert obj["request_id"] == "req-b" and obj["status"] == 429 and obj["cache_hit"] is False

    assert "no requests match" in run(app, "audit", "--key", "nobody").stderr


def test_audit_rejects_a_bad_since(app: typer.Typer) -> None:
    result = run(app, "audit", "--since", "yesterday")
    assert result.exit_code == 2 and "--since 'yesterday'" in result.stderr


def test_parse_since() -> None:
    assert parse_since("1h", now=10_000.0) == 10_000.0 - 3600
    assert parse_since("2026-12-01") == time.mktime((2026, 12, 1, 0, 0, 0, 0, 0, -1))
    assert parse_since("2026-12-01T08:30") == time.mktime((2026, 12, 1, 8, 30, 0, 0, 0, -1))
    with pytest.raises(ValueError, match="30m, 1h, 2d"):
        parse_since("later")


def test_create_names_model_names_the_config_cannot_serve(app: typer.Typer, tmp_path: Path) -> None:
    (tmp_path / "agency.toml").write_text(
        '[[llm.providers]]\nname = "main"\nprovider = "openai"\napi_key = "sk-x"\n'
        '[llm.routing]\ncode = ["main"]\n'
    )
    fine = run(app, "keys", "create", "--name", "ok", "--models", "main,role:code,auto,groq:x")
    assert fine.exit_code == 0 and "note:" not in fine.stderr
    odd = run(app, "keys", "create", "--name", "odd", "--models", "role:nope,mian")
    assert odd.exit_code == 0  # said, not refused: the config may change before the key is used
    assert "role:nope, mian is not a model name" in odd.stderr
