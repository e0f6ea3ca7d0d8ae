"""The workflow files of examples/ load and run to completion on the embedded model (offline)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agency.app import Agency
from agency.config import AgencyConfig
from agency.workflows.file import load_workflow
from agency.workflows.run import Run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def local_agency() -> Iterator[Agency]:
    """The default config: the embedded model, no key (one agency: the model loads once)."""
    ag = Agency(AgencyConfig())
    yield ag
    ag.close()


def _run(name: str, inputs: dict[str, str], agency: Agency, tmp_path: Path) -> Run:
    wf = load_workflow(EXAMPLES / name, agency=agency)
    run = wf.run(inputs, run_id=name, checkpoint=str(tmp_path / "runs.sqlite"))
    assert run.status == "completed", run.error
    return run


def _nonempty(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def test_every_example_is_covered() -> None:
    names = sorted(p.name for p in EXAMPLES.glob("*.toml"))
    assert names == ["review_loop.toml", "triage.toml", "write_and_review.toml"]


@pytest.mark.local
def test_write_and_review(local_agency: Agency, tmp_path: Path) -> None:
    run = _run("write_and_review.toml", {"topic": "the sea"}, local_agency, tmp_path)
    assert _nonempty(run.outputs["draft"]) and _nonempty(run.outputs["final"])
    reviews = run.outputs["reviews"]
    assert isinstance(reviews, list) and len(reviews) == 3, "one review per reviewer kind"
    assert all(_nonempty(r) for r in reviews)
    for step in ("draft", "reviews", "final"):
        assert run.steps[step].status == "done" and run.steps[step].provider == "local"
    assert run.steps["reviews"].attempts == 3, "three branches, one call each"


@pytest.mark.local
@pytest.mark.parametrize(
    "question",
    ["What is 17 * 23?", "Write a Python function that reverses a list."],
)
def test_triage_runs_exactly_one_branch(
    local_agency: Agency, tmp_path: Path, question: str
) -> None:
    run = _run("triage.toml", {"question": question}, local_agency, tmp_path)
    branches = ("code", "math", "creative", "general")
    done = [b for b in branches if run.steps[b].status == "done"]
    skipped = [b for b in branches if run.steps[b].status == "skipped"]
    assert len(done) == 1 and len(skipped) == 3, {b: run.steps[b].status for b in branches}
    assert run.outputs["triage"] == done[0], "the route step's output names the branch it chose"
    assert _nonempty(run.outputs[done[0]])
    assert all(b not in run.outputs for b in skipped)


@pytest.mark.local
def test_review_loop(local_agency: Agency, tmp_path: Path) -> None:
    run = _run("review_loop.toml", {"topic": "autumn"}, local_agency, tmp_path)
    assert _nonempty(run.outputs["draft"]) and _nonempty(run.outputs["review"])
    rounds = run.steps["review"].iteration + 1
    assert 1 <= rounds <= 3, "max_iterations bounds the loop"
    if "APPROVED" not in run.outputs["review"]:
        assert rounds == 3, "an unapproved draft is redone until max_iterations"
