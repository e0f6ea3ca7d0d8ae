"""`RoutedChatModel` and the `Agency` routing entry points, against the fake OpenAI server."""

from __future__ import annotations

from fakes.openai_server import FakeOpenAI, Reply
from langchain_core.messages import HumanMessage, SystemMessage

import agency
from agency import Agency
from agency.agents.routed import RoutedChatModel
from agency.agents.router import TaskRouter
from agency.config import AgencyConfig

CODE_TASK = "Write a Python function that reverses a linked list in place."
STORY_TASK = "Write a short story about a lighthouse keeper who befriends a whale."


def _routed(fake: FakeOpenAI, asked: list[str]) -> RoutedChatModel:
    def model_for(role: str) -> agency.AgencyChatModel:
        asked.append(role)
        return agency.chat_model(
            "openai-compatible:gpt-4o-mini", base_url=fake.base_url, api_key="sk-test"
        )

    return RoutedChatModel(router=TaskRouter(), models=model_for)


def test_each_call_goes_to_its_role_with_the_role_prompt(openai_fake: FakeOpenAI) -> None:
    asked: list[str] = []
    llm = _routed(openai_fake, asked)
    answer = llm.invoke([HumanMessage(CODE_TASK)])
    route = answer.response_metadata["route"]
    assert route["role"] == "code" and 0 < route["confidence"] <= 1 and route["reason"]
    sent = openai_fake.bodies()[-1]["messages"]
    assert sent[0]["role"] == "system"
    assert sent[0]["content"] == TaskRouter().roles["code"].system_prompt
    llm.invoke([HumanMessage(STORY_TASK)])
    llm.invoke([HumanMessage(CODE_TASK)])
    assert asked == ["code", "creative"]  # one model per role, reused


def test_a_given_system_prompt_is_kept(openai_fake: FakeOpenAI) -> None:
    llm = _routed(openai_fake, [])
    llm.invoke([SystemMessage("You are terse."), HumanMessage(CODE_TASK)])
    sent = openai_fake.bodies()[-1]["messages"]
    assert [m["content"] for m in sent if m["role"] == "system"] == ["You are terse."]


async def test_async_and_streaming_routes(openai_fake: FakeOpenAI) -> None:
    llm = _routed(openai_fake, [])
    answer = await llm.ainvoke([HumanMessage(STORY_TASK)])
    assert answer.response_metadata["route"]["role"] == "creative"
    chunks = [c async for c in llm.astream([HumanMessage(CODE_TASK)])]
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert merged.response_metadata["route"]["role"] == "code"
    assert merged.text


def test_tools_bound_on_the_routed_model_reach_the_role_model(openai_fake: FakeOpenAI) -> None:
    def run_tests(path: str) -> str:
        """Run the test suite at a path."""
        return "ok"

    openai_fake.script(Reply(tool_calls=[{"name": "run_tests", "arguments": {"path": "src"}}]))
    llm = _routed(openai_fake, []).bind_tools([run_tests], tool_choice="run_tests")
    answer = llm.invoke(CODE_TASK)
    assert answer.tool_calls[0]["args"] == {"path": "src"}
    assert openai_fake.bodies()[-1]["tools"][0]["function"]["name"] == "run_tests"


def test_agency_routes_roles_to_their_chains(openai_fake: FakeOpenAI) -> None:
    config = AgencyConfig.from_dict(
        {
            "llm": {
                "providers": [
                    {
                        "name": "main",
                        "provider": "openai",
                        "api_key": "sk-test",
                        "base_url": openai_fake.base_url,
                        "text_model": "gpt-4o-mini",
                    }
                ],
                "routing": {"code": ["openai:gpt-4o"]},
            }
        }
    )
    ag = Agency(config)
    assert ag.model_for(CODE_TASK).chain == ["openai:gpt-4o"]
    assert ag.model_for(STORY_TASK).chain == ["main"]
    assert ag.router().model_for(CODE_TASK).chain == ["openai:gpt-4o"]  # type: ignore[attr-defined]
    llm = ag.routed_model()
    llm.invoke(CODE_TASK)
    llm.invoke(STORY_TASK)
    assert [b["model"] for b in openai_fake.bodies()] == ["gpt-4o", "gpt-4o-mini"]
    roles = ag.stats().snapshot()["roles"]
    assert roles["code"]["successes"] == 1
    assert ag.router().stats()["roles"]["code"]["count"] >= 1


def test_a_router_without_models_says_how_to_get_them() -> None:
    import pytest

    with pytest.raises(ValueError, match=r"Agency\.router"):
        TaskRouter().model_for(CODE_TASK)
