"""agency.agents.Team: router, supervisor, handoff, sequential and parallel teams on the fake
OpenAI server; events say which agent did what, the result what the team cost."""

from __future__ import annotations

import asyncio
from typing import Any

from fakes.openai_server import FakeOpenAI, Reply
from test_agent import _agency, _chat

from agency.agents.agent import Agent, AgentEvent
from agency.agents.team import Team, TeamResult


def _members(fake: FakeOpenAI) -> list[Agent]:
    ag = _agency(fake)
    return [
        Agent("coder", role="code", agency=ag, description="Writes and fixes code."),
        Agent("poet", role="creative", agency=ag, description="Writes poems and stories."),
        Agent("helper", role="general", agency=ag, description="Answers anything else."),
    ]


def test_a_router_team_sends_the_task_to_the_member_whose_role_fits(
    openai_fake: FakeOpenAI,
) -> None:
    team = Team(_members(openai_fake), mode="router")
    result = team.invoke("Write a Python function that reverses a linked list")
    assert isinstance(result, TeamResult) and result.agents == ["coder"]
    assert len(_chat(openai_fake)) == 1
    system = _chat(openai_fake)[0]["messages"][0]["content"]
    assert "code" in system.lower()  # the code role's system prompt


def test_a_supervisor_delegates_to_members_and_composes_the_answer(
    openai_fake: FakeOpenAI,
) -> None:
    openai_fake.script(
        Reply(tool_calls=[{"name": "ask_coder", "arguments": {"task": "a sort function"}}]),
        Reply("def sort(xs): return sorted(xs)"),
        Reply("Your team wrote: def sort(xs): return sorted(xs)"),
    )
    result = Team(_members(openai_fake), mode="supervisor").invoke("I need a sort function")
    assert result.agents == ["coder", "supervisor"]
    assert result.text.startswith("Your team wrote")
    assert result.cost == sum(r.cost for r in result.results) > 0
    assert "ask_poet" in str(_chat(openai_fake)[0]["tools"])


def test_a_handoff_team_transfers_the_conversation_a_bounded_number_of_times(
    openai_fake: FakeOpenAI,
) -> None:
    openai_fake.script(
        Reply(tool_calls=[{"name": "transfer_to_poet", "arguments": {}}]),
        Reply("Roses are red."),
    )
    team = Team(_members(openai_fake), mode="handoff", max_handoffs=1)

    async def collect() -> list[Any]:
        return [e async for e in team.astream_team("A poem please")]

    events = asyncio.run(collect())
    result = events[-1]
    assert isinstance(result, TeamResult) and result.agents == ["coder", "poet"]
    assert result.text == "Roses are red."
    handoffs = [e for e in events if isinstance(e, AgentEvent) and e.kind == "handoff"]
    assert [(h.agent, h.data["to"]) for h in handoffs] == [("coder", "poet")]
    # With max_handoffs=1 the poet has no transfer tools left: the chain is bounded.
    assert "transfer_to" not in str(_chat(openai_fake)[1].get("tools", ""))


def test_sequential_and_parallel_teams(openai_fake: FakeOpenAI) -> None:
    members = _members(openai_fake)[:2]
    chained = Team(members, mode="sequential").invoke("tides")
    assert chained.agents == ["coder", "poet"]
    assert chained.text == "Hello! You said: Hello! You said: tides"  # the poet got the coder's

    openai_fake.reset()
    together = Team(members, mode="parallel").invoke("tides")
    assert together.agents == ["coder", "poet"] and len(_chat(openai_fake)) == 2
    assert together.text == "coder: Hello! You said: tides\n\npoet: Hello! You said: tides"
