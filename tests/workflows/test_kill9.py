"""kill -9 in the middle of a run, then resume: what finished is never sent again.

A real child process runs the workflow against the fake OpenAI server; the test waits until a
chosen request is in flight (the fake holds it), SIGKILLs the child, and resumes the run from
the same checkpoint in this process. The fake's request log is the proof.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes.openai_server import FakeOpenAI, Reply, Stall
from kill9_flow import build
from wfhelp import asked

FLOW = Path(__file__).with_name("kill9_flow.py")


def _wait_for(fake: FakeOpenAI, text: str, child: subprocess.Popen[str], count: int = 1) -> None:
    deadline = time.monotonic() + 60
    while asked(fake, text) < count:
        assert child.poll() is None, f"the child ended early: {child.communicate()}"
        assert time.monotonic() < deadline, f"{text!r} was never asked"
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("hold", "script", "in_flight"),
    [
        # killed while step c waits for its answer: a and every branch of b are done
        ("STEP C", [Reply("a"), Reply("b"), Reply("b"), Reply("b"), Stall(60)], "STEP C"),
        # killed inside the map: two branches answered, the third is held
        ("STEP B", [Reply("a"), Reply("b"), Reply("b"), Stall(60)], "STEP B"),
    ],
    ids=["during-a-step", "inside-parallel-branches"],
)
def test_a_killed_run_resumes_without_paying_for_finished_steps(
    openai_fake: FakeOpenAI, tmp_path: Path, hold: str, script: list[object], in_flight: str
) -> None:
    checkpoint = str(tmp_path / "runs.sqlite")
    openai_fake.script(*script)
    child = subprocess.Popen(
        [sys.executable, str(FLOW), openai_fake.base_url, checkpoint, "k9"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(openai_fake, hold, child, count=3 if hold == "STEP B" else 1)
        time.sleep(0.3)  # let the finished work reach the checkpoint, as it would in life
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    before = {s: asked(openai_fake, f"STEP {s}") for s in "ABCD"}

    openai_fake.reset()  # the held request is gone with the process; answer normally now
    run = build(openai_fake.base_url).resume("k9", checkpoint=checkpoint)

    assert run.status == "completed", run.error
    after = {s: asked(openai_fake, f"STEP {s}") for s in "ABCD"}
    assert after["A"] == 0  # finished before the kill: never sent again
    if in_flight == "STEP C":
        assert before == {"A": 1, "B": 3, "C": 1, "D": 0}
        assert after == {"A": 0, "B": 0, "C": 1, "D": 1}  # only the step in flight again
    else:
        assert before == {"A": 1, "B": 3, "C": 0, "D": 0}
        assert after == {"A": 0, "B": 1, "C": 1, "D": 1}  # only the held branch again
    assert len(run.outputs["b"]) == 3 and all(run.outputs["b"])
