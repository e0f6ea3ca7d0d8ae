"""The house's layers: the import-linter contract, what it covers, and the README's picture of it.

`scripts/test.sh` runs ``lint-imports`` (the contract in ``pyproject.toml``); these tests make
sure that contract means what the README says: every module of ``agency`` sits in a layer, a
lower layer importing a higher one breaks it, no module below the top imports the package root
(whose ``__init__`` re-exports the facade), and the README's layer picture is generated from it.

``python tests/test_layers.py --write`` regenerates the README's picture.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BEGIN = "<!-- layers:begin (generated from pyproject.toml by python tests/test_layers.py --write) -->"
END = "<!-- layers:end -->"

# What each layer is, for the README; the names come from the contract.
ROLES = {
    "app": "the top: the `Agency` facade, the CLI and the gateway compose the rest, lazily",
    "workflows": "workflows: steps and graphs of steps, compiled to LangGraph",
    "agents": "roles and the task router; agents, teams, MCP tools and A2A",
    "memory": "vector memory on chromadb, the semantic cache",
    "core": "core: providers, LangChain models, resilience, config, errors, pricing",
}


def _contract() -> dict[str, object]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    (contract,) = config["tool"]["importlinter"]["contracts"]
    assert contract["type"] == "layers" and contract["containers"] == ["agency"]
    return dict(contract)


def _layers() -> list[list[str]]:
    """The contract's layers, top first, each a list of module names under ``agency``."""
    layers = []
    for layer in _contract()["layers"]:  # type: ignore[attr-defined]
        names = re.split(r"\s*[:|]\s*", str(layer).strip().strip("()"))
        layers.append(names)
    return layers


def render() -> str:
    """The README's picture of the layers, top first."""
    rows = []
    layers = _layers()
    for i, names in enumerate(layers):
        modules = ", ".join(f"agency.{n}" for n in names)
        if len(names) > 4:
            modules = f"agency.{{{', '.join(names)}}}"
        role = ROLES["core" if i == len(layers) - 1 else names[0]]
        rows.append(f"{role}\n    {modules}")
    body = "\n".join(f"{i + 1}. {row}" for i, row in enumerate(rows))
    return f"{BEGIN}\n```text\n{body}\n```\n{END}"


def test_every_module_of_agency_is_in_a_layer() -> None:
    """A new core module that no layer names would escape the contract: list it."""
    placed = {name for names in _layers() for name in names}
    present = {
        p.stem if p.is_file() else p.name
        for p in (ROOT / "agency").iterdir()
        if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))
        and p.name not in ("__init__.py", "__main__.py")
    }
    assert present <= placed, f"add {sorted(present - placed)} to a layer in pyproject.toml"


def test_below_the_top_nothing_imports_the_package_root() -> None:
    """``agency/__init__`` re-exports `Agency`: a lower layer importing it closes a circle."""
    graph = grimp.build_graph("agency")
    top = {f"agency.{name}" for name in _layers()[0]}
    importers = graph.find_modules_that_directly_import("agency")
    below = {m for m in importers if not any(m == t or m.startswith(t + ".") for t in top)}
    assert not below, f"import the core module itself (e.g. agency._factory), not agency: {below}"
    assert not graph.find_shortest_chains(importer="agency.memory", imported="agency.agents")


def test_the_contract_breaks_when_a_lower_layer_imports_a_higher_one(tmp_path: Path) -> None:
    """The contract is not vacuous: the same tree with one upward import fails lint-imports."""
    tree = tmp_path / "src"
    shutil.copytree(ROOT / "agency", tree / "agency", symlinks=False)
    errors = tree / "agency" / "errors.py"
    errors.write_text(errors.read_text("utf-8") + "\n\ndef _up() -> None:\n    import agency.memory.cache\n")
    (tmp_path / "pyproject.toml").write_text(
        (ROOT / "pyproject.toml").read_text("utf-8"), encoding="utf-8"
    )
    env = {**os.environ, "PYTHONPATH": str(tree)}
    lint = Path(sys.executable).with_name("lint-imports")
    broken = subprocess.run(
        [str(lint), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert broken.returncode != 0, broken.stdout
    assert "agency.errors -> agency.memory.cache" in broken.stdout
    errors.write_text(errors.read_text("utf-8").rsplit("\n\ndef _up", 1)[0])
    kept = subprocess.run(
        [str(lint), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert kept.returncode == 0, kept.stdout


def test_the_shared_design_draws_the_same_layers() -> None:
    """``../shared/design.md`` (the team's picture) stacks the layers as the contract does."""
    design = ROOT.parent / "shared" / "design.md"
    if not design.is_file():
        pytest.skip("../shared/design.md sits beside the repository only in checkouts and CI")
    text = design.read_text("utf-8")
    picture = text.split("```", 2)[1]  # the first drawing: the layers, top first
    rows = [line.split()[0] for line in picture.strip().splitlines()]
    # Its rows name folders: agency/app.py (top), workflows/, agents/, memory/, agency/ (core).
    drawn = [row.strip("/,").removeprefix("agency/").removesuffix(".py") for row in rows]
    layers = [names[0] for names in _layers()]
    assert drawn[: len(layers) - 1] == layers[:-1]
    assert rows[len(layers) - 1] == "agency/", "core (the rest of agency/) is the bottom layer"
    assert "agency.memory, agency.agents, agency.workflows" in text


def test_readme_shows_the_contracts_layers() -> None:
    text = README.read_text("utf-8")
    assert BEGIN in text and END in text
    shown = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert shown == render(), "run: .venv/bin/python tests/test_layers.py --write"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        text = README.read_text("utf-8")
        start, end = text.index(BEGIN), text.index(END) + len(END)
        README.write_text(text[:start] + render() + text[end:], encoding="utf-8")
    else:
        print(render())
        pytest.main([__file__])
