"""agency installs next to the packages whose import names our folders share.

`agents` is the OpenAI Agents SDK's import name (``openai-agents``) and `workflows` LlamaIndex's
(``llama-index-workflows``); our folders install as ``agency.agents`` and ``agency.workflows``.
Both SDKs are dev dependencies, so they sit in the same environment as ``agency``; a fresh
interpreter, started outside the repository (its root must not be on ``sys.path``, as it is not
for a user), imports every public name of all of them and uses each a little.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("agents", reason="openai-agents is a dev dependency (setup.sh --dev)")
pytest.importorskip("workflows", reason="llama-index-workflows is a dev dependency")

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys

    import agents                      # the OpenAI Agents SDK
    import workflows                   # LlamaIndex workflows
    import agency, agency.agents, agency.memory

    theirs = {name: getattr(agents, name) for name in agents.__all__}
    from workflows import Context, Workflow, step
    from workflows.events import StartEvent, StopEvent
    ours = {
        pkg.__name__: {name: getattr(pkg, name) for name in pkg.__all__}
        for pkg in (agency, agency.agents, agency.memory)
    }

    @agents.function_tool
    def add(a: int, b: int) -> int:
        \"\"\"Add two numbers.\"\"\"
        return a + b

    helper = agents.Agent(name="helper", instructions="Be brief.", tools=[add])

    class Echo(Workflow):
        @step
        async def echo(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result=ev.get("text").upper())

    async def run_echo():
        return await Echo(timeout=10).run(text="sea")

    echoed = asyncio.run(run_echo())
    role = agency.agents.TaskRouter  # lazily resolved names really load
    print(json.dumps({
        "agents_file": agents.__file__,
        "workflows_file": workflows.__file__,
        "agency_agents_file": agency.agents.__file__,
        "agency_memory_file": agency.memory.__file__,
        "their_names": len(theirs),
        "our_names": {k: len(v) for k, v in ours.items()},
        "tool": helper.tools[0].name,
        "echoed": echoed,
        "router": role.__module__,
        "top_level_memory": __import__("importlib.util").util.find_spec("memory") is not None,
    }))
    """
)


def test_openai_agents_llamaindex_workflows_and_agency_import_side_by_side(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=tmp_path,  # not the repository: its folders must not shadow anything
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert "site-packages" in seen["agents_file"]  # the SDK's package, not our folder
    assert "site-packages" in seen["workflows_file"]
    assert Path(seen["agency_agents_file"]).parent.name == "agents"
    assert Path(seen["agency_agents_file"]).parent.parent.name == "agency"
    assert Path(seen["agency_memory_file"]).parent.parent.name == "agency"
    assert seen["their_names"] > 50
    assert seen["our_names"]["agency"] >= 30
    assert seen["our_names"]["agency.agents"] >= 5 and seen["our_names"]["agency.memory"] >= 4
    assert seen["tool"] == "add" and seen["echoed"] == "SEA"
    assert seen["router"] == "agency.agents.router"
    assert seen["top_level_memory"] is False  # we install no top-level `memory` either
