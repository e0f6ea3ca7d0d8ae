"""agents: agents (a tool loop with a role, a fallback model, memory and a budget), roles, the
task router that assigns model chains to them, and routed chat models.

    >>> from agency.agents import TaskRouter
    >>> TaskRouter().route("Write a Python function that reverses a list").role
    'code'

Layer: imports `agency` core (and may use `memory`), never `workflows`; `agency` core never
imports it (the `Agency` facade does, lazily). Submodules load on first use.
"""

from __future__ import annotations

from typing import Any

from agency._lazy import export

_EXPORTS: dict[str, str] = {
    "Agent": "agency.agents.agent",
    "AgentBudgetExceeded": "agency.agents.agent",
    "AgentEvent": "agency.agents.agent",
    "AgentResult": "agency.agents.agent",
    "BUILTIN_ROLES": "agency.agents.roles",
    "Role": "agency.agents.roles",
    "RouteDecision": "agency.agents.router",
    "RemoteAgent": "agency.agents.a2a.client",
    "RoutedChatModel": "agency.agents.routed",
    "TaskRouter": "agency.agents.router",
    "amcp_tools": "agency.agents.mcp",
    "mcp_tools": "agency.agents.mcp",
    "Team": "agency.agents.team",
    "TeamResult": "agency.agents.team",
    "roles_from_config": "agency.agents.roles",
}

__all__ = [
    "BUILTIN_ROLES",
    "Agent",
    "AgentBudgetExceeded",
    "AgentEvent",
    "AgentResult",
    "RemoteAgent",
    "Role",
    "RouteDecision",
    "RoutedChatModel",
    "TaskRouter",
    "Team",
    "TeamResult",
    "amcp_tools",
    "mcp_tools",
    "roles_from_config",
]


def __getattr__(name: str) -> Any:
    return export(__name__, _EXPORTS, name)
