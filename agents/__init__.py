"""agents: roles, the task router that assigns model chains to them, and routed chat models.

    >>> from agency.agents import TaskRouter
    >>> TaskRouter().route("Write a Python function that reverses a list").role
    'code'

Layer: imports `agency` core (and may use `memory`), never `workflows`; `agency` core never
imports it (the `Agency` facade does, lazily). Submodules load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "BUILTIN_ROLES": "agency.agents.roles",
    "Role": "agency.agents.roles",
    "RouteDecision": "agency.agents.router",
    "RoutedChatModel": "agency.agents.routed",
    "TaskRouter": "agency.agents.router",
    "roles_from_config": "agency.agents.roles",
}

__all__ = [
    "BUILTIN_ROLES",
    "Role",
    "RouteDecision",
    "RoutedChatModel",
    "TaskRouter",
    "roles_from_config",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agency.agents' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
