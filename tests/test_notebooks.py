"""The notebooks run top to bottom (nbclient), on the embedded model, offline."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
EXPECTED = {
    "01_quickstart.ipynb": ("dogs vs dogs", "sunny"),
    "02_memory_and_cache.ipynb": (
        "The deploy key rotates on Mondays",
        "None -> semantic",
        "refuse  'How do I disable dark mode?'",
        "opposite words: disable vs enable",
        "serve   'How can I enable the dark mode?'",
        "hits_semantic=1",
        "How can I learn Python fast? -> hit",
        "How do kids learn Python quickly? -> miss",
    ),
    "03_roles_and_routing.ipynb": (
        "code      ",
        "math      ",
        "creative  ",
        "'legal'",
        "'role': 'creative'",
    ),
    "04_workflows.ipynb": (
        "status=completed",
        "reviews: 2",
        "draft answered by local after 2 attempts",
        "failed: primary  ConnectionFailed",
        "failures={'connection': 1}",
        "interrupted: Publish this announcement?",
        "done so far: ['draft']",
        "model calls on resume: 1",
        "{'draft': 'done', 'approve': 'done', 'headline': 'done'}",
        "<Figure size 900x300 with 2 Axes>",
    ),
    "05_agents.ipynb": (
        "Relevant memories:\n- The user lives in Paris.",
        "memories kept: 4",
        "'Write a Python function that reverses a list'     -> ['coder']",
        "'Solve 3x + 5 = 20 for x'                          -> ['mathematician']",
        "'Write a haiku about autumn leaves'                -> ['writer']",
        "'supervisor']",
        "A2A card: poet - Writes very short poems.  (2 interfaces)",
        "remote answered: ",
        "tool: ask_poet - Writes very short poems.",
        "the tool, called directly over A2A: ",
        "host called: ",
    ),
}
"""Outputs each notebook must show: what its prose promises."""


@pytest.mark.local
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), (
        "commit notebooks without outputs"
    )
    # The kernel is a subprocess: pytest-socket does not reach it, and it needs no network.
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs
    )
    missing = [marker for marker in EXPECTED[path.name] if marker not in text]
    assert not missing, f"{path.name} did not show {missing}:\n{text}"


def test_there_is_a_quickstart_and_every_notebook_is_checked() -> None:
    assert any(p.name == "01_quickstart.ipynb" for p in NOTEBOOKS)
    assert sorted(EXPECTED) == [p.name for p in NOTEBOOKS]
