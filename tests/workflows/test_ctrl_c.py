"""Ctrl-C (SIGINT) in the middle of a run: the run index says ``cancelled``, and it resumes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from agency.app import Agency
from agency.workflows import Step, Workflow
from agency.workflows._store import RunStore


def test_ctrl_c_marks_the_run_cancelled_and_resume_finishes_it(tmp_path: Path) -> None:
    checkpoint, ready = str(tmp_path / "runs.sqlite"), tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("ctrl_c_flow.py")), checkpoint, str(ready)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.02)
    child.send_signal(signal.SIGINT)
    child.wait(timeout=30)
    assert child.returncode != 0
    row = RunStore(checkpoint).run("cx")
    assert row is not None and row.status == "cancelled", row

    fixed = Workflow("ctrl-c", agency=Agency())  # the same steps; the slow one now answers
    fixed.add(
        Step("first", fn=lambda s: "again?"), Step("slow", fn=lambda s: "done", after=["first"])
    )
    run = fixed.resume("cx", checkpoint=checkpoint)
    assert run.status == "completed" and run.outputs == {"first": "one", "slow": "done"}
