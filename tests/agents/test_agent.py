"""agency.agents.Agent against the fake OpenAI server: its tool loop is LangChain's create_agent,
its model the agency's fallback chain; bounds, budgets, memory, delegation and events."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fakes.openai_server import Fail, FakeOpenAI, Reply

from agency.agents.agent import Agent, AgentBudgetExceeded, AgentResult
from agency.app import Agency
from agency.config import AgencyConfig


def _agency(fake: FakeOpenAI) -> Agency:
    return Agency(
        AgencyConfig.from_toml_str(
            f"""
[[llm.providers]]
name = "primary"
provider = "openai"
api_key = "sk-test"
base_url = "{fake.base_url}"
text_model = "gpt-4o-mini"
priority = 1

[[llm.providers]]
name = "backup"
provider = "openai"
api_key = "sk-test"
base_url = "{fake.base_url}"
text_model = "gpt-4o"
priority = 2

[llm.fallback]
enabled = true
retry_delay_ms = 0
"""
        )
    )


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny and 21C in {city}"


def _chat(fake: FakeOpenAI) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests if r.path.endswith("/chat/completions")]


def test_the_agent_calls_its_tool_and_answers(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(
        Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}]),
        Reply("It is sunny in Paris."),
    )
    agent = Agent("weather", agency=_agency(openai_fake), tools=[get_weather])
    result = agent.invoke("What is the weather in Paris?")

    assert isinstance(result, AgentResult) and result.text == "It is sunny in Paris."
    assert [c["name"] for c in result.tool_calls] == ["get_weather"]
    assert result.steps == 2 and result.provider == "primary" and result.cost > 0
    assert result.usage["total_tokens"] > 0
    tool_turn = _chat(openai_fake)[1]["messages"][-1]
    assert tool_turn["role"] == "tool" and "Sunny and 21C in Paris" in tool_turn["content"]
    assert "get_weather" in str(_chat(openai_fake)[0]["tools"])


def test_a_tool_error_goes_back_to_the_model_and_the_run_goes_on(openai_fake: FakeOpenAI) -> None:
    def broken(city: str) -> str:
        """Always fails."""
        raise RuntimeError("the weather service is down " + "x" * 2000)

    openai_fake.script(
        Reply(tool_calls=[{"name": "broken", "arguments": {"city": "Oslo"}}]),
        Reply("Sorry, I could not check."),
    )
    result = Agent("w", agency=_agency(openai_fake), tools=[broken]).invoke("Weather in Oslo?")
    assert result.text == "Sorry, I could not check."
    told = _chat(openai_fake)[1]["messages"][-1]["content"]
    assert "RuntimeError: the weather service is down" in told
    assert len(told) < 700  # bounded


def test_max_steps_bounds_the_loop(openai_fake: FakeOpenAI) -> None:
    call = Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Rome"}}])
    openai_fake.script(*[call] * 10)
    agent = Agent("loopy", agency=_agency(openai_fake), tools=[get_weather], max_steps=3)
    result = agent.invoke("weather?")
    assert result.steps == 3 and len(_chat(openai_fake)) == 3 and result.stopped == "max_steps"


def test_a_budget_refuses_the_call_that_would_go_over_with_the_partial_result(
    openai_fake: FakeOpenAI,
) -> None:
    call = Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Rome"}}])
    openai_fake.script(*[call] * 20)
    ag = _agency(openai_fake)
    budget = 0.0008
    model = ag.chat_model(models=["primary"], max_tokens=1000)  # worst case ~$0.0006 a call
    agent = Agent("thrifty", model=model, agency=ag, tools=[get_weather], budget_usd=budget)
    agent.max_steps = 20
    with pytest.raises(AgentBudgetExceeded) as info:
        agent.invoke("Weather in Rome?")
    sent = len(_chat(openai_fake))
    partial = info.value.partial
    assert 1 <= sent < 20 and partial.steps == sent  # the refused call was never sent
    assert 0 < partial.cost <= budget < partial.cost + info.value.needed


def test_every_model_call_of_the_loop_falls_back(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(
        Fail(500),
        Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Lima"}}]),
        Fail(503),
        Reply("Warm in Lima."),
    )
    result = Agent("w", agency=_agency(openai_fake), tools=[get_weather]).invoke("Lima?")
    assert result.text == "Warm in Lima." and result.provider == "backup"
    assert [b["model"] for b in _chat(openai_fake)] == ["gpt-4o-mini", "gpt-4o"] * 2


def test_memory_is_recalled_before_and_kept_after(openai_fake: FakeOpenAI) -> None:
    pytest.importorskip("chromadb", reason="vector memory is the memory extra")
    from agency.memory import VectorMemory

    memory = VectorMemory.ephemeral("team-notes")
    memory.remember("The deploy key rotates on Mondays.")
    agent = Agent("ops", agency=_agency(openai_fake), memory=memory, recall=1)
    result = agent.invoke("When does the deploy key rotate?")
    first = _chat(openai_fake)[0]["messages"]
    assert any("deploy key rotates on Mondays" in str(m["content"]) for m in first)
    kept = memory.recall("When does the deploy key rotate?", k=3)
    assert any(result.text in r.text and r.metadata.get("agent") == "ops" for r in kept)


def test_an_agent_delegates_to_another_as_a_tool(openai_fake: FakeOpenAI) -> None:
    ag = _agency(openai_fake)
    coder = Agent("coder", role="code", agency=ag, description="Writes Python code.")
    lead = Agent("lead", agency=ag, tools=[coder.as_tool()])
    openai_fake.script(
        Reply(tool_calls=[{"name": "ask_coder", "arguments": {"task": "reverse a list"}}]),
        Reply("def rev(xs): return xs[::-1]"),
        Reply("Here is the code: def rev(xs): return xs[::-1]"),
    )
    result = lead.invoke("I need a function that reverses a list")
    assert result.text.startswith("Here is the code")
    assert _chat(openai_fake)[1]["messages"][-1]["content"] == "reverse a list"  # coder's task
    assert "Writes Python code." in str(_chat(openai_fake)[0]["tools"])


def test_events_stream_as_they_happen(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(
        Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Kyiv"}}]),
        Reply("Mild in Kyiv today."),
    )
    agent = Agent("w", agency=_agency(openai_fake), tools=[get_weather])

    async def collect() -> list[Any]:
        return [e async for e in agent.astream_agent("Kyiv?")]

    events = asyncio.run(collect())
    kinds = [e.kind for e in events]
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("final")
    assert "".join(e.data["text"] for e in events if e.kind == "token") == "Mild in Kyiv today."
    assert events[-1].result is not None and events[-1].result.text == "Mild in Kyiv today."


def test_an_agent_is_a_runnable_and_a_langgraph_graph(openai_fake: FakeOpenAI) -> None:
    from langgraph.graph.state import CompiledStateGraph

    agent = Agent("plain", agency=_agency(openai_fake))
    results = agent.batch(["one", "two"])
    assert [r.text for r in results] == ["Hello! You said: one", "Hello! You said: two"]
    assert isinstance(agent.graph, CompiledStateGraph)
    state = agent.graph.invoke({"messages": [("user", "three")]})
    assert state["messages"][-1].content == "Hello! You said: three"
