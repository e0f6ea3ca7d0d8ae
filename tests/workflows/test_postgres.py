"""Runs checkpointed in Postgres: started by one process, killed, resumed by another.

A real Postgres (the Debian package; ``initdb`` in a temp dir, on a free port of 127.0.0.1,
started and stopped here) holds LangGraph's checkpoints and our run index and call journal,
so the resuming process needs nothing of the first one's disk: what finished is not sent again.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.openai_server import FakeOpenAI, Reply, Stall
from kill9_flow import build
from wfhelp import asked

from agency.workflows._store import RunStore, is_database_url

FLOW = Path(__file__).with_name("kill9_flow.py")
PG_BIN = Path("/usr/lib/postgresql")


def _bin(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for p in sorted(PG_BIN.glob(f"*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        pytest.fail(f"{name} not found: bash scripts/setup.sh --dev installs postgresql")
    return found


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throwaway Postgres; its URL. (As root, the server runs as the postgres user: it
    refuses to run as root.)"""
    root = os.geteuid() == 0
    data = Path(tempfile.mkdtemp(prefix="agency-pg-"))
    as_user: list[str] = ["runuser", "-u", "postgres", "--"] if root else []
    if root:
        shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(
        [*as_user, _bin("initdb"), "-D", str(data / "db"), "-U", "agency", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [
            *as_user,
            _bin("pg_ctl"),
            "-D",
            str(data / "db"),
            "-o",
            options,
            "-w",
            "start",
            "-l",
            str(data / "log"),
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://agency@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, _bin("pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(data, ignore_errors=True)


def test_a_run_killed_on_one_machine_resumes_on_another(
    openai_fake: FakeOpenAI, postgres: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert is_database_url(postgres)
    openai_fake.script(Reply("a"), Reply("b"), Reply("b"), Reply("b"), Stall(60))
    first = tmp_path / "machine-1"
    first.mkdir()
    child = subprocess.Popen(
        [sys.executable, str(FLOW), openai_fake.base_url, postgres, "pg1"],
        cwd=first,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while asked(openai_fake, "STEP C") < 1:
            assert child.poll() is None, f"the child ended early: {child.communicate()}"
            assert time.monotonic() < deadline, "step c was never asked"
            time.sleep(0.02)
        time.sleep(0.3)  # the finished steps reach the checkpoint, as they would in life
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    before = {s: asked(openai_fake, f"STEP {s}") for s in "ABCD"}
    assert before == {"A": 1, "B": 3, "C": 1, "D": 0}

    # "Another machine": a fresh working directory, nothing of the first one's files.
    second = tmp_path / "machine-2"
    second.mkdir()
    monkeypatch.chdir(second)
    openai_fake.reset()
    run = build(openai_fake.base_url).resume("pg1", checkpoint=postgres)
    assert run.status == "completed", run.error
    after = {s: asked(openai_fake, f"STEP {s}") for s in "ABCD"}
    assert after == {"A": 0, "B": 0, "C": 1, "D": 1}  # only the step in flight again
    assert not any(second.rglob("*.sqlite*")) and not any(first.rglob("*.sqlite*"))

    store = RunStore(postgres)
    try:
        row = store.run("pg1")
        assert row is not None and row.status == "completed" and row.workflow == "kill9"
        assert store.calls("pg1") == 6  # a, three branches of b, c, d: each journalled once
    finally:
        store.close()


def test_a_fresh_run_in_postgres_completes_and_is_listed(
    openai_fake: FakeOpenAI, postgres: str
) -> None:
    openai_fake.script(*[Reply(x) for x in "abbbcd"])
    run = build(openai_fake.base_url).run({}, run_id="pg2", checkpoint=postgres)
    assert run.status == "completed" and run.checkpoint == postgres
    store = RunStore(postgres)
    try:
        assert "pg2" in [r.run_id for r in store.runs()]
    finally:
        store.close()
    with pytest.raises(ValueError, match="already exists"):
        build(openai_fake.base_url).run({}, run_id="pg2", checkpoint=postgres)


def test_agency_runs_lists_the_runs_of_a_postgres_checkpoint(
    openai_fake: FakeOpenAI, postgres: str
) -> None:
    from typer.testing import CliRunner

    from agency import cli

    openai_fake.script(*[Reply(x) for x in "abbbcd"])
    build(openai_fake.base_url).run({}, run_id="pg3", checkpoint=postgres)
    result = CliRunner().invoke(cli.app, ["runs", "--checkpoint", postgres])
    assert result.exit_code == 0, result.output
    assert "pg3" in result.output and "completed" in result.output


def test_run_times_keep_their_precision_in_postgres(postgres: str) -> None:
    """Postgres' REAL is 4 bytes: a Unix time in it would lose its seconds."""
    import psycopg

    RunStore(postgres).close()
    with psycopg.connect(postgres) as conn:
        types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'agency_runs' AND column_name IN ('started', 'updated')"
            ).fetchall()
        )
    assert types == {"started": "double precision", "updated": "double precision"}
