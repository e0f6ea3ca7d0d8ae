"""``agency experiments list|report``, driven through typer's runner over a real audit log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from agency.cli._experiments import experiments_app
from agency.gateway.audit import AuditLog, AuditRecord

runner = CliRunner()
app = typer.Typer()
app.add_typer(experiments_app)

CONFIG = """
[gateway]
data_dir = "{data}"

[[gateway.experiments]]
name = "cheap-vs-strong"
model = "role:code"
sticky = "key"
arms = [
  {{ name = "a", chain = ["openai"], weight = 1 }},
  {{ name = "b", chain = ["groq", "openai"], weight = 3 }},
]

[[gateway.experiments]]
name = "stopped"
model = "auto"
sticky = "user"
enabled = false
arms = [{{ name = "x", chain = ["openai"] }}, {{ name = "y", chain = ["anthropic"] }}]
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, no ``$AGENCY_CONFIG``."""
    monkeypatch.delenv("AGENCY_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def configured(workdir: Path) -> Path:
    """``agency.toml`` with two experiments in the working directory; data under ``data/``."""
    (workdir / "agency.toml").write_text(CONFIG.format(data=(workdir / "data").as_posix()))
    return workdir


def _fill_audit(path: Path) -> None:
    """400 requests of cheap-vs-strong (b fails far more often), feedback on a third, and
    requests of another experiment that must not count."""
    rng = np.random.default_rng(0)
    log = AuditLog(path, flush_interval_s=0.01)
    try:
        for i in range(400):
            arm = "a" if i % 2 else "b"
            failed = rng.random() < (0.02 if arm == "a" else 0.25)
            log.record(AuditRecord(
                request_id=f"r{i}", time=1_700_000_000.0 + i, endpoint="/v1/chat/completions",
                model_asked="role:code", latency_ms=float(rng.lognormal(6, 0.4)),
                status=502 if failed else 200, key_id=f"vk_{i % 7}", cost_usd=0.001,
                experiment="cheap-vs-strong", arm=arm,
            ))
        for i in range(20):
            log.record(AuditRecord(
                request_id=f"s{i}", time=1_700_000_500.0, endpoint="/v1/chat/completions",
                model_asked="auto", latency_ms=5.0, status=500, experiment="stopped", arm="x",
            ))
        log.flush()
        for i in range(0, 400, 3):
            assert log.add_feedback(f"r{i}", 1.0 if i % 2 else 0.5)
    finally:
        log.close()


def test_list_shows_each_experiment_with_its_arms(configured: Path) -> None:
    result = runner.invoke(app, ["experiments", "list"])
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert lines == [
        ["name", "model", "sticky", "enabled", "arms"],
        ["cheap-vs-strong", "role:code", "key", "yes",
         "a (weight 1): openai; b (weight 3): groq > openai"],
        ["stopped", "auto", "user", "no", "x (weight 1): openai; y (weight 1): anthropic"],
    ]
    as_json = json.loads(runner.invoke(app, ["experiments", "list", "--json"]).stdout)
    assert [e["name"] for e in as_json] == ["cheap-vs-strong", "stopped"]
    assert as_json[0]["arms"][1] == {"name": "b", "chain": ["groq", "openai"], "weight": 3.0}


def test_list_without_any_experiment_says_how_to_add_one(workdir: Path) -> None:
    result = runner.invoke(app, ["experiments", "list"])
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "no experiments configured" in result.stderr
    assert "[[gateway.experiments]]" in result.stderr


def test_report_reads_the_audit_log_and_states_what_is_significant(configured: Path) -> None:
    _fill_audit(configured / "data" / "audit.sqlite")
    result = runner.invoke(app, ["experiments", "report", "cheap-vs-strong"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "experiment cheap-vs-strong (95% intervals)" in out
    assert "arms: a (weight 1): openai; b (weight 3): groq > openai" in out
    assert "b: error rate higher than a (" in out
    assert "no significant difference in latency" in out
    assert "no significant difference in cost per request" in out  # all cost 0.001
    assert "b: feedback lower than a (0.5 vs 1, p<0.001)" in out


def test_report_as_json(configured: Path) -> None:
    _fill_audit(configured / "data" / "audit.sqlite")
    result = runner.invoke(
        app, ["experiments", "report", "cheap-vs-strong", "--json", "--confidence", "0.9"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["name"] == "cheap-vs-strong" and report["confidence"] == 0.9
    assert report["model"] == "role:code" and report["sticky"] == "key"
    a, b = report["arms"]
    assert (a["name"], a["requests"], b["name"], b["requests"]) == ("a", 200, "b", 200)
    assert a["feedback"]["n"] + b["feedback"]["n"] == len(range(0, 400, 3))
    assert a["cost_usd"]["value"] == pytest.approx(0.001) and a["cost_unknown"] == 0
    error_rate = next(c for c in report["comparisons"] if c["metric"] == "error_rate")
    assert error_rate["significant"] is True and error_rate["higher"] is True
    assert error_rate["p_value"] < 0.1


def test_report_with_config_option_and_no_audit_log_yet(workdir: Path) -> None:
    config = workdir / "elsewhere.toml"
    config.write_text(CONFIG.format(data=(workdir / "nothing-here").as_posix()))
    result = runner.invoke(app, ["experiments", "report", "stopped", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "no audit log at" in result.stderr
    assert "no requests recorded for this experiment" in result.stdout
    assert "(stopped)" in result.stdout
    assert not (workdir / "nothing-here").exists()  # a report never creates the log


def test_unknown_experiment_names_the_known_ones(configured: Path) -> None:
    result = runner.invoke(app, ["experiments", "report", "nope"])
    assert result.exit_code == 1
    assert "no experiment 'nope'" in result.stderr
    assert "'cheap-vs-strong', 'stopped'" in result.stderr


def test_unknown_experiment_without_any_configured(workdir: Path) -> None:
    result = runner.invoke(app, ["experiments", "report", "nope"])
    assert result.exit_code == 1
    assert "none is configured" in result.stderr


def test_bad_config_file_exits_2_with_the_problem(workdir: Path) -> None:
    bad = workdir / "bad.toml"
    bad.write_text('[[gateway.experiments]]\nname = "e"\nmodel = "m"\narms = []\n')
    result = runner.invoke(app, ["experiments", "list", "--config", str(bad)])
    assert result.exit_code == 2
    assert "bad.toml" in result.stderr and "arms" in result.stderr
    missing = runner.invoke(app, ["experiments", "list", "--config", str(workdir / "no.toml")])
    assert missing.exit_code == 2 and "not found" in missing.stderr
