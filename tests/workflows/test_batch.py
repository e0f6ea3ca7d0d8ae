"""`run_batch` / ``agency run --batch``: one workflow over many inputs, in this process or on a
Ray cluster (a real one: ``ray start --head`` on 127.0.0.1, two CPUs), with the fleet's
provider state in a real redis-server. The fake OpenAI's request log is the proof of what was
sent, and of what was not sent again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.openai_server import FakeOpenAI, Reply
from servers import RedisServer, free_port
from wfhelp import asked, chat_requests

from agency.workflows import Step, Workflow, run_batch
from agency.workflows.batch import batch_run_id, read_inputs


def _flow_file(tmp_path: Path, fake: FakeOpenAI, state: str = "") -> Path:
    path = tmp_path / "item.toml"
    path.write_text(
        f"""
[workflow]
name = "item"
inputs = ["n"]

[[llm.providers]]
name = "main"
provider = "openai"
api_key = "sk-test"
base_url = "{fake.base_url}"
text_model = "gpt-4o-mini"

[[step]]
name = "answer"
prompt = "ITEM <{{n}}>"
max_tokens = 8
{state}
"""
    )
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_local_batch_writes_every_result_and_skips_them_the_second_time(
    openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    flow = _flow_file(tmp_path, openai_fake)
    inputs = tmp_path / "inputs.jsonl"
    rows = [{"n": i} for i in range(12)] + [{"n": 3}, {"n": 99, "run_id": "mine"}]
    inputs.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    out = tmp_path / "results.jsonl"
    done = run_batch(flow, inputs, out=out, concurrency=4, checkpoint=str(tmp_path / "r.sqlite"))
    assert (done.completed, done.failed, done.skipped) == (13, 0, 1), [
        r["error"] for r in done.results if r["error"]
    ]  # {"n": 3} twice: once
    records = _lines(out)
    assert len(records) == 13 and {r["status"] for r in records} == {"completed"}
    assert {r["run_id"] for r in records} == {batch_run_id("item", {"n": i}) for i in range(12)} | {
        "mine"
    }
    assert next(r for r in records if r["run_id"] == "mine")["inputs"] == {"n": 99}
    assert len(chat_requests(openai_fake)) == 13

    again = run_batch(flow, inputs, out=out, checkpoint=str(tmp_path / "r.sqlite"))
    assert (again.completed, again.skipped) == (0, 14) and len(chat_requests(openai_fake)) == 13


def test_a_run_that_had_started_is_resumed_not_sent_again(
    openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    flow = _flow_file(tmp_path, openai_fake)
    checkpoint = str(tmp_path / "r.sqlite")
    out = tmp_path / "results.jsonl"
    run_batch(flow, [{"n": 1}, {"n": 2}], out=out, checkpoint=checkpoint)
    out.write_text(out.read_text().splitlines()[0] + "\n")  # the driver died before line 2
    again = run_batch(flow, [{"n": 1}, {"n": 2}], out=out, checkpoint=checkpoint)
    assert (again.completed, again.skipped) == (1, 1)
    assert asked(openai_fake, "ITEM <2>") == 1  # finished in its checkpoint: not paid twice
    assert [r["status"] for r in _lines(out)] == ["completed", "completed"]


def test_a_workflow_object_runs_locally_and_ray_asks_for_a_file(
    openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    from agency import Agency, AgencyConfig

    agency = Agency(
        AgencyConfig.from_dict(
            {
                "llm": {
                    "providers": [
                        {
                            "name": "m",
                            "provider": "openai",
                            "api_key": "sk-test",
                            "base_url": openai_fake.base_url,
                        }
                    ]
                }
            }
        )
    )
    wf = Workflow("obj", inputs=["n"], agency=agency)
    wf.add(Step("answer", prompt="OBJ {n}"))
    openai_fake.script(Reply("x"), Reply("y"))
    done = run_batch(wf, [{"n": 1}, {"n": 2}], checkpoint=str(tmp_path / "r.sqlite"))
    assert done.completed == 2 and sorted(r["outputs"]["answer"] for r in done.results) == [
        "x",
        "y",
    ]
    with pytest.raises(TypeError, match="workflow file"):
        run_batch(wf, [{"n": 1}], engine="ray")


def test_bad_inputs_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "inputs.jsonl"
    path.write_text('{"n": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"inputs.jsonl:2: expected a JSON object"):
        read_inputs(path)
    path.write_text('{"n": 1}\n{"n": \n')
    with pytest.raises(ValueError, match=r"inputs.jsonl:2: not JSON"):
        read_inputs(path)


# ------------------------------------------------------------------------- Ray
# The cluster and its drivers agree on no token auth: a ~/.ray/auth_token left by another
# local cluster would otherwise be sent to one that expects none.
_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``ray start --head`` with two CPUs on 127.0.0.1; its address."""
    ray = Path(sys.executable).with_name("ray")
    port = free_port()
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, **_RAY_ENV}
    subprocess.run(
        [
            str(ray),
            "start",
            "--head",
            "--num-cpus=2",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=120,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(ray), "stop", "--force"], capture_output=True, env=env, timeout=60)


def test_a_batch_on_ray_survives_its_driver_being_killed(
    openai_fake: FakeOpenAI, ray_cluster: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    state = f'\n[state]\nbackend = "redis"\nurl = "{redis_server.url}"\ntimeout_s = 2.0\n'
    flow = _flow_file(tmp_path, openai_fake, state)
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(200)))
    out = tmp_path / "results.jsonl"
    command = [
        sys.executable,
        "-m",
        "agency.cli",
        "run",
        str(flow),
        "--batch",
        str(inputs),
        "--out",
        str(out),
        "--ray-address",
        ray_cluster,
        "--concurrency",
        "4",
        "--checkpoint",
        str(tmp_path / "runs.sqlite"),
    ]
    env = {**os.environ, **_RAY_ENV}
    driver = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 180
    while not out.exists() or len(out.read_text().splitlines()) < 40:
        assert driver.poll() is None, driver.communicate()
        assert time.monotonic() < deadline, "the batch made no progress"
        time.sleep(0.05)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait(timeout=30)
    written = {r["run_id"]: r for r in _lines(out)}
    assert 40 <= len(written) < 200
    asked_then = {n: asked(openai_fake, f"ITEM <{n}>") for n in range(200)}

    again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr
    assert f"{len(written)} already done" in again.stderr
    records = _lines(out)
    failures = [r["error"] for r in records if r["status"] != "completed"]
    assert len(records) == 200 and not failures, failures
    assert {r["run_id"] for r in records} == {batch_run_id("item", {"n": i}) for i in range(200)}
    for n in range(200):
        if batch_run_id("item", {"n": n}) in written:
            assert asked(openai_fake, f"ITEM <{n}>") == asked_then[n]  # finished: not again
        assert asked(openai_fake, f"ITEM <{n}>") <= 2  # at most a run in flight at the kill
    # The fleet's counters: each Ray worker sends its sums within COUNTS_LINGER_S.
    deadline = time.monotonic() + 5
    while int(redis_server.client().hget("agency:stats:main", "calls") or 0) < 200 - len(written):
        assert time.monotonic() < deadline, "the workers' counters never reached Redis"
        time.sleep(0.05)


def test_a_run_recorded_but_never_checkpointed_is_started(
    openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    """A worker killed between recording a run and its first checkpoint: the next try
    starts it (there is nothing to resume)."""
    from agency.workflows._store import RunStore

    flow = _flow_file(tmp_path, openai_fake)
    checkpoint = str(tmp_path / "r.sqlite")
    run_batch(flow, [{"n": 0}], checkpoint=checkpoint)  # makes the files
    store = RunStore(checkpoint)
    store.start(batch_run_id("item", {"n": 7}), "item")
    store.close()
    done = run_batch(flow, [{"n": 7}], checkpoint=checkpoint)
    assert done.completed == 1 and asked(openai_fake, "ITEM <7>") == 1
