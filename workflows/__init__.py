"""workflows: multi-agent workflows on LangGraph, where fallback runs inside every step.

    >>> from agency.workflows import Workflow, Step
    >>> wf = Workflow("write-and-review", inputs=["topic"])
    >>> wf.add(Step("draft", prompt="Write a short poem about {topic}", role="creative"))
    >>> wf.add(Step("review", prompt="Review this poem:\\n{draft}", after=["draft"]))
    >>> run = wf.run({"topic": "the sea"}, run_id="r1", checkpoint="runs.sqlite")
    >>> wf.resume("r1", checkpoint="runs.sqlite")     # after a crash: only what is left runs

Layer: imports `agency` core, `agency.memory`, `agency.agents`, langchain-core and LangGraph;
nothing below imports it (the `Agency` facade and the CLI load it lazily). LangGraph loads on
first use, so ``import agency.workflows`` stays light.
"""

from __future__ import annotations

from typing import Any

from agency._lazy import export

_EXPORTS: dict[str, str] = {
    "DEFAULT_CHECKPOINT": "agency.workflows.run",
    "Event": "agency.workflows.run",
    "Run": "agency.workflows.run",
    "Runner": "agency.workflows.run",
    "Step": "agency.workflows.step",
    "StepRecord": "agency.workflows.run",
    "Workflow": "agency.workflows.graph",
    "WorkflowError": "agency.workflows.graph",
    "WorkflowFailed": "agency.workflows.run",
    "BatchResult": "agency.workflows.batch",
    "run_batch": "agency.workflows.batch",
}

__all__ = [
    "DEFAULT_CHECKPOINT",
    "BatchResult",
    "Event",
    "Run",
    "Runner",
    "Step",
    "StepRecord",
    "Workflow",
    "WorkflowError",
    "WorkflowFailed",
    "run_batch",
]


def __getattr__(name: str) -> Any:
    return export(__name__, _EXPORTS, name)
