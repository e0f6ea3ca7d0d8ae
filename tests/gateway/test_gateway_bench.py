"""A smoke run of ``benchmarks/gateway_bench.py --quick``: real nginx, real ``agency serve``
subprocesses (and LiteLLM's proxy when /tmp/litellm-venv can run it), every row of the table
filled, the JSON written, no server left behind. No timing is asserted."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "gateway_bench.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

from _gateway_upstream import litellm_problem  # noqa: E402

LITELLM = "/tmp/litellm-venv/bin/python"
ROWS = [
    "c=1 p50 latency, ms",
    "added over direct, p50 ms",
    "c=1 p95 latency, ms",
    "added over direct, p95 ms",
    "throughput c=50, req/s",
    "throughput c=200, req/s",
    "RSS idle, MiB",
    "RSS growth, 40 open streams, MiB",
    "failover, dead primary: added p50 ms (attempts ",  # the label ends with the count
]
NUMBER = re.compile(r"^[+-]?[\d,]+(\.\d+)?$")

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
    reason="nginx is not installed (bash scripts/setup.sh --bench)",
)


def _markdown(stdout: str) -> dict[str, list[str]]:
    """The ``--markdown`` table: `ROWS` entry -> [direct, agency, litellm, goal, met]."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("| ") and not line.startswith("| measure"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            label = next((r for r in ROWS if cells[0].startswith(r)), cells[0])
            rows[label] = cells[1:]
    return rows


def _our_pids() -> set[int]:
    """Processes running in or from the benchmark's temp dirs (none may outlive it)."""
    out = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue  # ended meanwhile, or not ours to read
        if "agency-gwbench-" in cmd + cwd:
            out.add(int(proc.name))
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any], bool]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    with_litellm = litellm_problem(LITELLM) is None
    args = ["--litellm-python", LITELLM] if with_litellm else ["--no-litellm"]
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--markdown", "--json", str(out), *args],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text()), with_litellm


def test_every_row_has_our_number(run: tuple[str, dict[str, Any], bool]) -> None:
    stdout, _, _ = run
    table = _markdown(stdout)
    assert list(table) == ROWS
    for label in ROWS:
        assert NUMBER.match(table[label][1]), (label, table[label])
    for label in ROWS[:6]:  # latency and throughput have a direct column
        if not label.startswith("added"):
            assert NUMBER.match(table[label][0]), (label, table[label])
    assert table[ROWS[1]][3] == "≤ 1 ms"
    assert table[ROWS[-1]][3] == "< 5 ms"
    assert table[ROWS[-1]][4].startswith(("yes", "NO"))


def test_litellm_column(run: tuple[str, dict[str, Any], bool]) -> None:
    """Numbers when /tmp/litellm-venv runs LiteLLM's proxy, else n/a with the reason."""
    stdout, data, with_litellm = run
    table = _markdown(stdout)
    if not with_litellm:
        assert table["throughput c=50, req/s"][2] == "n/a"
        assert "litellm" in data["failed"]
        assert "litellm: n/a:" in stdout
        return
    assert data["failed"] == {}
    for label in ROWS[:8]:
        assert NUMBER.match(table[label][2]), (label, table[label])
    lite = data["results"]["litellm"]
    assert lite["c50"]["ok"] > 0 and lite["c50"]["errors"] == 0
    assert lite["streams_opened"] == 40
    assert table["throughput c=50, req/s"][4].startswith(("yes", "NO"))


def test_json_results(run: tuple[str, dict[str, Any], bool]) -> None:
    _, data, _ = run
    assert data["quick"] is True
    assert data["machine"]["cores"] == os.cpu_count()
    ours = data["results"]["agency"]
    for level in ("c50", "c200"):
        assert ours[level]["ok"] > 0 and ours[level]["errors"] == 0, ours[level]
    assert ours["streams_opened"] == ours["streams"] == 40
    # the breaker was open: the dead primary was not tried, the backup answered at once
    assert ours["failover_attempts"] == "1"
    assert data["results"]["direct"]["c1_p50_ms"] > 0


def test_no_server_outlives_the_run(run: tuple[str, dict[str, Any], bool]) -> None:
    assert _our_pids() == set()
