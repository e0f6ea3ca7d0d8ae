"""Deterministic ``fn`` steps for the workflow file and CLI tests (``fn = "cli_steps:..."``).

tests/workflows is on ``sys.path`` under pytest; subprocess tests put it on ``PYTHONPATH``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LONG = "x" * 150 + " " + "y" * 150
"""One line far wider than any terminal: printed whole, it proves nothing wraps it."""


def shout(state: Mapping[str, Any]) -> str:
    """The topic in capitals."""
    return f"{state['topic']}".upper() + "!"


def decorate(state: Mapping[str, Any]) -> str:
    """The shout between stars, then the approval if there is one."""
    approval = state.get("approve")
    return f"*{state['shout']}*" + (f" ({approval})" if approval else "")


def long_line(state: Mapping[str, Any]) -> str:
    """`LONG`, for the pipe test."""
    return LONG


def boom(state: Mapping[str, Any]) -> str:
    """Always fails."""
    raise RuntimeError("boom: the step broke")


def structured(state: Mapping[str, Any]) -> dict[str, Any]:
    """A dict output (printed as JSON)."""
    return {"topic": state["topic"], "words": len(str(state["topic"]).split())}


NOT_CALLABLE = 42
