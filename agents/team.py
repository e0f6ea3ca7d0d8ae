"""`Team`: agents working together in one of five ways, as a LangChain Runnable.

    >>> team = Team([coder, mathematician, writer], mode="router")
    >>> result = team.invoke("Prove that sqrt(2) is irrational")
    >>> result.text, result.agents, result.cost

Modes:

- ``router``: the `TaskRouter` sends the task to the member whose ``role`` fits (custom roles
  too); the general member (or the first) takes what fits no one;
- ``supervisor``: a supervising agent gets every member as a tool (delegation) and composes
  the answer;
- ``handoff``: the first member answers or transfers the conversation to another member with a
  ``transfer_to_<name>`` tool; at most ``max_handoffs`` transfers;
- ``sequential``: each member works on the previous member's answer;
- ``parallel``: every member answers the task at once; the answers are gathered in order.

Every member's events are streamed with its name (`astream_team`), and the result says which
agents worked and what the whole team cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import HumanMessage
from langchain_core.runnables import Runnable, RunnableConfig

from agency._aio import run_sync
from agency.agents.agent import Agent, AgentEvent, AgentResult

__all__ = ["Team", "TeamResult"]

Mode = Literal["router", "supervisor", "handoff", "sequential", "parallel"]


@dataclass(frozen=True)
class TeamResult:
    """What a team produced."""

    text: str
    """The team's answer (parallel: each member's, one paragraph per member)."""
    results: list[AgentResult] = field(default_factory=list)
    """Each member run, in the order they ran (the supervisor's last)."""
    agents: list[str] = field(default_factory=list)
    """The names of the agents that worked, in order."""
    cost: float = 0.0
    """USD for every model call of the team."""


class Team(Runnable[Any, TeamResult]):
    """Agents working together; see the module docstring."""

    name: str
    """The team's name (in its events)."""

    def __init__(
        self,
        agents: Sequence[Agent],
        mode: Mode = "router",
        *,
        supervisor: Agent | None = None,
        router: Any = None,
        max_handoffs: int = 3,
        name: str = "team",
    ) -> None:
        if not agents:
            raise ValueError("a team needs at least one agent")
        names = [a.name for a in agents]
        if len(set(names)) != len(names):
            raise ValueError(f"agent names must be unique in a team: {names}")
        self.members = {a.name: a for a in agents}
        self.mode = mode
        self.max_handoffs = max_handoffs
        self.name = name
        self._router = router
        self._supervisor = supervisor

    # -- running ------------------------------------------------------------------------
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> TeamResult:
        """Run the team on ``input`` (a task string or messages)."""
        return run_sync(self.ainvoke(input, config))

    async def ainvoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> TeamResult:
        """The async twin of `invoke`."""
        result: TeamResult | None = None
        async for event in self.astream_team(input, config):
            if isinstance(event, TeamResult):
                result = event
        assert result is not None
        return result

    async def astream_team(
        self, input: Any, config: RunnableConfig | None = None
    ) -> AsyncIterator[AgentEvent | TeamResult]:
        """Every member's events (with its name) as they happen, then the `TeamResult`."""
        runner = {
            "router": self._route,
            "supervisor": self._supervise,
            "handoff": self._handoff,
            "sequential": self._sequence,
            "parallel": self._parallel,
        }[self.mode]
        results: list[AgentResult] = []
        async for item in runner(input, config, results):
            yield item
        text = (
            "\n\n".join(f"{r.agent}: {r.text}" for r in results)
            if self.mode == "parallel"
            else (results[-1].text if results else "")
        )
        yield TeamResult(
            text=text,
            results=results,
            agents=[r.agent for r in results],
            cost=sum(r.cost for r in results),
        )

    async def _run(
        self, agent: Agent, task: Any, config: Any, results: list[AgentResult]
    ) -> AsyncIterator[AgentEvent]:
        async for event in agent.astream_agent(task, config):
            if event.result is not None:
                results.append(event.result)
            yield event

    async def _route(
        self, task: Any, config: Any, results: list[AgentResult]
    ) -> AsyncIterator[Any]:
        from agency.agents.roles import FALLBACK_ROLE

        router = self._router or next(iter(self.members.values())).agency.router()
        decision = await router.aroute(_text_of(task))
        by_role = {a.role: a for a in self.members.values()}
        member = by_role.get(decision.role) or by_role.get(FALLBACK_ROLE)
        member = member or next(iter(self.members.values()))
        yield AgentEvent(
            "handoff",
            self.name,
            {"to": member.name, "role": decision.role, "confidence": decision.confidence},
        )
        async for event in self._run(member, task, config, results):
            yield event

    async def _supervise(
        self, task: Any, config: Any, results: list[AgentResult]
    ) -> AsyncIterator[Any]:
        tools = [_member_tool(member, results) for member in self.members.values()]
        boss = self._supervisor or Agent(
            "supervisor",
            instructions=(
                "You lead a team. Split the task, delegate each part to the team member whose "
                "tool fits it, then compose one answer from what they return."
            ),
            agency=next(iter(self.members.values())).agency,
        )
        async for event in self._run(_with_tools(boss, tools), task, config, results):
            yield event

    async def _handoff(
        self, task: Any, config: Any, results: list[AgentResult]
    ) -> AsyncIterator[Any]:
        current = next(iter(self.members.values()))
        conversation = task
        for hop in range(self.max_handoffs + 1):
            transfer = [
                _transfer_tool(other.name, other.description)
                for other in self.members.values()
                if other.name != current.name and hop < self.max_handoffs
            ]
            member = _with_tools(current, transfer)
            async for event in self._run(member, conversation, config, results):
                yield event
            target = next(
                (
                    c["name"].removeprefix("transfer_to_")
                    for c in results[-1].tool_calls
                    if c["name"].startswith("transfer_to_")
                ),
                None,
            )
            if target not in self.members:
                return
            yield AgentEvent("handoff", current.name, {"to": target, "hop": hop + 1})
            current = self.members[target]
            conversation = [
                HumanMessage(_text_of(task)),
                HumanMessage(f"(The {results[-1].agent} agent handed this over to you.)"),
            ]

    async def _sequence(
        self, task: Any, config: Any, results: list[AgentResult]
    ) -> AsyncIterator[Any]:
        current = task
        for member in self.members.values():
            async for event in self._run(member, current, config, results):
                yield event
            current = results[-1].text

    async def _parallel(
        self, task: Any, config: Any, results: list[AgentResult]
    ) -> AsyncIterator[Any]:
        members = list(self.members.values())
        done = await asyncio.gather(*(m.ainvoke(task, config) for m in members))
        for result in done:
            results.append(result)
            yield AgentEvent(
                "final", result.agent, {"text": result.text, "cost": result.cost}, result
            )


def _text_of(task: Any) -> str:
    if isinstance(task, str):
        return task
    messages = task.get("messages", []) if isinstance(task, dict) else task
    for message in reversed(list(messages)):
        text = getattr(message, "text", None) or (message if isinstance(message, str) else "")
        if text:
            return str(text)
    return ""


def _member_tool(member: Agent, results: list[AgentResult]) -> Any:
    """``member`` as a tool whose runs are counted in the team's results."""
    from langchain_core.tools import StructuredTool

    async def ask(task: str) -> str:
        result = await member.ainvoke(task)
        results.append(result)
        return result.text

    return StructuredTool.from_function(
        coroutine=ask, name=f"ask_{member.name}", description=member.description
    )


def _transfer_tool(name: str, description: str) -> Any:
    from langchain_core.tools import StructuredTool

    def transfer() -> str:
        return f"Transferred to {name}."

    return StructuredTool.from_function(
        func=transfer,
        name=f"transfer_to_{name}",
        description=f"Hand the conversation to {name}: {description}",
        return_direct=True,
    )


def _with_tools(agent: Agent, extra: list[Any]) -> Agent:
    """A copy of ``agent`` with ``extra`` tools besides its own."""
    if not extra:
        return agent
    return Agent(
        agent.name,
        role=agent.role,
        instructions=agent.instructions,
        model=agent._model_spec,
        tools=[*agent.tools, *extra],
        memory=agent.memory,
        agency=agent.agency,
        max_steps=agent.max_steps,
        budget_usd=agent.budget_usd,
        description=agent.description,
    )
