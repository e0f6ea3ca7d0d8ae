"""``agency run``, ``agency resume`` and ``agency runs`` on workflow files, and pipe safety:
what goes to stdout is the model's text unchanged; progress and notes go to stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fakes.openai_server import FakeOpenAI, Reply
from typer.testing import CliRunner

from agency import cli

HELPERS = Path(__file__).parent / "workflows"
runner = CliRunner()

SHOUT = """
[workflow]
name = "shouty"
inputs = ["topic"]

[[step]]
name = "shout"
fn = "cli_steps:shout"

[[step]]
name = "decorate"
fn = "cli_steps:decorate"
after = ["shout"]
"""

APPROVAL = """
[workflow]
name = "approval"
inputs = ["topic"]

[[step]]
name = "shout"
fn = "cli_steps:shout"

[[step]]
name = "approve"
interrupt = true
prompt = "Publish {shout}?"
after = ["shout"]

[[step]]
name = "decorate"
fn = "cli_steps:decorate"
after = ["approve"]
"""

MODEL = """
[[llm.providers]]
name = "primary"
provider = "openai"
api_key = "sk-test"
base_url = "{base_url}"
text_model = "gpt-4o-mini"

[workflow]
name = "priced"
inputs = ["topic"]
budget_usd = 0.000001

[[step]]
name = "draft"
prompt = "Write about {topic}"
max_tokens = 50
"""


@pytest.fixture(autouse=True)
def helpers_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """``fn = "cli_steps:..."`` imports tests/workflows/cli_steps.py."""
    monkeypatch.syspath_prepend(str(HELPERS))


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., str]:
    def write(text: str, name: str = "wf.toml") -> str:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write


@pytest.fixture
def checkpoint(tmp_path: Path) -> str:
    return str(tmp_path / "runs" / "runs.sqlite")


def _one_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


# -- agency run -------------------------------------------------------------------------------
def test_run_json_prints_one_object_and_nothing_else(
    write: Callable[..., str], checkpoint: str
) -> None:
    result = runner.invoke(
        cli.app,
        ["run", write(SHOUT), "--input", "topic=the sea", "--checkpoint", checkpoint, "--json"],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1, "exactly one line: one JSON object"
    body = json.loads(result.stdout)
    assert body["status"] == "completed" and body["cost"] == 0.0
    assert body["outputs"] == {"shout": "THE SEA!", "decorate": "*THE SEA!*"}
    assert body["steps"]["decorate"] == {
        "provider": None,
        "attempts": 0,
        "cost": 0.0,
        "status": "done",
    }
    assert set(body) >= {"run_id", "status", "outputs", "steps", "cost"}
    assert "decorate" in result.stderr, "the progress display goes to stderr"


def test_run_prints_the_last_steps_text_and_progress_on_stderr(
    write: Callable[..., str], checkpoint: str
) -> None:
    result = runner.invoke(
        cli.app,
        ["run", write(SHOUT), "-i", "topic=rain", "--checkpoint", checkpoint, "--run-id", "r7"],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "*RAIN!*\n"
    progress = result.stderr.splitlines()
    assert progress[0].split()[:2] == ["shout", "done"]
    assert progress[1].split()[:2] == ["decorate", "done"]
    assert "run r7 completed" in result.stderr


def test_several_leaf_steps_print_under_their_names(
    write: Callable[..., str], checkpoint: str
) -> None:
    text = SHOUT.split('[[step]]\nname = "decorate"')[0] + (
        '[[step]]\nname = "shape"\nfn = "cli_steps:structured"\n'
    )
    result = runner.invoke(
        cli.app, ["run", write(text), "-i", "topic=big sea", "--checkpoint", checkpoint]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("## shout\nBIG SEA!\n## shape\n")
    shape = result.stdout.split("## shape\n", 1)[1]
    assert json.loads(shape) == {"topic": "big sea", "words": 2}


def test_inputs_in_brackets_are_json(write: Callable[..., str], checkpoint: str) -> None:
    text = '[workflow]\ninputs = ["topic"]\n[[step]]\nname = "shape"\nfn = "cli_steps:structured"\n'
    result = runner.invoke(
        cli.app,
        ["run", write(text), "-i", 'topic=["a", "b"]', "--checkpoint", checkpoint, "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outputs"]["shape"] == {"topic": ["a", "b"], "words": 2}


def test_a_malformed_file_exits_2_with_one_line(write: Callable[..., str], checkpoint: str) -> None:
    path = write(SHOUT.replace('after = ["shout"]', 'after = ["shuot"]'))
    result = runner.invoke(cli.app, ["run", path, "-i", "topic=x", "--checkpoint", checkpoint])
    assert result.exit_code == 2 and result.stdout == ""
    line = _one_line(result.stderr)
    assert path in line and "[step[1].after[0]]" in line and "'shuot' is not a step" in line
    assert "fix: name one of ['shout', 'decorate']" in line


def test_a_missing_input_exits_2(write: Callable[..., str], checkpoint: str) -> None:
    result = runner.invoke(cli.app, ["run", write(SHOUT), "--checkpoint", checkpoint])
    assert result.exit_code == 2
    assert "needs the inputs ['topic']: add --input topic=..." in _one_line(result.stderr)
    bad = runner.invoke(cli.app, ["run", write(SHOUT), "-i", "topic", "--checkpoint", checkpoint])
    assert bad.exit_code == 2 and "write KEY=VALUE" in _one_line(bad.stderr)


def test_a_failed_step_exits_1(write: Callable[..., str], checkpoint: str) -> None:
    path = write(SHOUT.replace("cli_steps:decorate", "cli_steps:boom"))
    args = ["run", path, "-i", "topic=x", "--checkpoint", checkpoint, "--run-id", "f1"]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 1 and result.stdout == ""
    line = _one_line(result.stderr)
    assert "run f1 failed" in line and "boom: the step broke" in line
    as_json = runner.invoke(cli.app, [*args[:-1], "f2", "--json"])
    assert as_json.exit_code == 1
    body = json.loads(as_json.stdout)
    assert body["status"] == "failed" and body["outputs"] == {"shout": "X!"}
    taken = runner.invoke(cli.app, args)
    assert taken.exit_code == 2 and "already exists" in _one_line(taken.stderr)


def test_an_interrupt_exits_3_and_resume_answers_it(
    write: Callable[..., str], checkpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write(APPROVAL)
    first = runner.invoke(
        cli.app, ["run", path, "-i", "topic=sea", "--checkpoint", checkpoint, "--run-id", "h1"]
    )
    assert first.exit_code == 3 and first.stdout == ""
    assert "approve asks: Publish SEA!?" in first.stderr
    assert f"agency resume h1 --checkpoint {checkpoint} --input 'approve=<answer>'" in first.stderr

    unanswered = runner.invoke(cli.app, ["resume", "h1", "--checkpoint", checkpoint])
    assert unanswered.exit_code == 2
    assert "waits for an answer to step 'approve'" in _one_line(unanswered.stderr)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # resume finds the file through the run index, by its path
    done = runner.invoke(
        cli.app, ["resume", "h1", "--checkpoint", checkpoint, "--input", "approve=yes", "--json"]
    )
    assert done.exit_code == 0, done.output
    body = json.loads(done.stdout)
    assert body["status"] == "completed"
    assert body["outputs"]["decorate"] == "*SEA!* (yes)"


def test_budget_exceeded_exits_4_and_resumes_with_a_bigger_budget(
    write: Callable[..., str], checkpoint: str, openai_fake: FakeOpenAI
) -> None:
    path = write(MODEL.replace("{base_url}", openai_fake.base_url))
    stopped = runner.invoke(
        cli.app, ["run", path, "-i", "topic=sea", "--checkpoint", checkpoint, "--run-id", "b1"]
    )
    assert stopped.exit_code == 4
    assert "budget_exceeded" in _one_line(stopped.stderr)
    assert "--budget USD" in stopped.stderr
    assert openai_fake.requests == [], "nothing was sent"

    openai_fake.script(Reply("a poem about the sea"))
    resumed = runner.invoke(
        cli.app, ["resume", "b1", "--checkpoint", checkpoint, "--budget", "1", "--json"]
    )
    assert resumed.exit_code == 0, resumed.output
    body = json.loads(resumed.stdout)
    assert body["outputs"]["draft"] == "a poem about the sea"
    assert body["steps"]["draft"]["provider"] == "primary"
    assert body["steps"]["draft"]["attempts"] == 1 and body["cost"] > 0
    assert len(openai_fake.bodies()) == 1


def test_resume_of_an_unknown_run_or_checkpoint(checkpoint: str, tmp_path: Path) -> None:
    nowhere = runner.invoke(cli.app, ["resume", "r1", "--checkpoint", str(tmp_path / "no.sqlite")])
    assert nowhere.exit_code == 2 and "no runs at" in _one_line(nowhere.stderr)
    assert not (tmp_path / "no.sqlite").exists(), "looking does not create the file"


# -- agency runs ------------------------------------------------------------------------------
def test_runs_lists_runs_and_prints_a_trace(write: Callable[..., str], checkpoint: str) -> None:
    for run_id in ("a1", "a2"):
        result = runner.invoke(
            cli.app,
            ["run", write(SHOUT), "-i", "topic=x", "--checkpoint", checkpoint, "--run-id", run_id],
        )
        assert result.exit_code == 0, result.output
    listed = runner.invoke(cli.app, ["runs", "--checkpoint", checkpoint])
    assert listed.exit_code == 0
    lines = [line.split("\t") for line in listed.stdout.splitlines()]
    assert lines[0] == ["id", "workflow", "status", "cost", "started", "duration"]
    assert sorted(row[0] for row in lines[1:]) == ["a1", "a2"]
    assert all(row[1:4] == ["shouty", "completed", "0.000000"] for row in lines[1:])

    trace = runner.invoke(cli.app, ["runs", "--checkpoint", checkpoint, "--trace", "a1"])
    assert trace.exit_code == 0
    events = [json.loads(line) for line in trace.stdout.splitlines()]
    kinds = [(e["event"], e["step"]) for e in events]
    assert kinds[0] == ("run_started", None) and kinds[-1] == ("run_finished", None)
    assert ("step_finished", "decorate") in kinds

    unknown = runner.invoke(cli.app, ["runs", "--checkpoint", checkpoint, "--trace", "zz"])
    assert unknown.exit_code == 1 and "no trace of run 'zz'" in _one_line(unknown.stderr)


def test_runs_without_a_checkpoint_says_so(tmp_path: Path) -> None:
    result = runner.invoke(cli.app, ["runs", "--checkpoint", str(tmp_path / "none.sqlite")])
    assert result.exit_code == 0 and result.stdout == ""
    assert "no runs yet" in result.stderr


# -- pipe safety ------------------------------------------------------------------------------
def test_chat_no_stream_writes_a_long_line_unwrapped(
    openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cli_steps import LONG

    code = "def f():\n    return '" + LONG + "'\n"
    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", "sk-test")
    openai_fake.script(Reply(content=code))
    result = runner.invoke(
        cli.app,
        [
            "chat",
            "write f",
            "--no-stream",
            "-m",
            "openai-compatible:gpt-4o-mini",
            "--base-url",
            openai_fake.base_url,
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == code, "the answer as the model wrote it: not wrapped, not restyled"


def test_run_through_a_real_pipe_keeps_the_text_whole(
    write: Callable[..., str], checkpoint: str
) -> None:
    from cli_steps import LONG

    path = write('[[step]]\nname = "long"\nfn = "cli_steps:long_line"\n')
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HELPERS), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "agency.cli", "run", path, "--checkpoint", checkpoint],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == LONG + "\n"
    assert "long  done" in done.stderr
