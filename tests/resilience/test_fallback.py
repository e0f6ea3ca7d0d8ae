"""The fallback loop against fault-injecting fake servers, on a fake clock."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from fakes.clock import FakeClock
from fakes.openai_server import Disconnect, Fail, FakeOpenAI, Malformed, Reply, Stall
from langchain_core.messages import AIMessage, HumanMessage
from pydantic import BaseModel

from agency.app import Agency
from agency.errors import (
    AllProvidersFailed,
    AuthenticationError,
    BadRequest,
    BudgetExceeded,
    CircuitOpen,
    ProviderUnavailable,
    RateLimited,
)
from agency.resilience._splice import CONTINUE_PROMPT
from agency.resilience.breaker import BreakerPolicy

Trio = tuple[FakeOpenAI, FakeOpenAI, FakeOpenAI]
MakeAgency = Callable[..., Agency]


def _chat_requests(fake: FakeOpenAI) -> int:
    return len(fake.bodies("/chat/completions"))


def test_falls_back_on_a_server_error(trio: Trio, make_agency: MakeAgency) -> None:
    primary, backup, _ = trio
    primary.script(Fail(500))
    backup.script(Reply(content="from backup"))
    answer = make_agency().chat_model().invoke("hi")
    assert answer.content == "from backup"
    route = answer.response_metadata["agency"]
    assert route["provider"] == "backup" and route["attempts"] == 2
    assert [f["error"] for f in route["failures"]] == ["ProviderUnavailable"]
    assert (_chat_requests(primary), _chat_requests(backup)) == (1, 1)


@pytest.mark.parametrize(
    "fault",
    [
        Fail(429, headers={"retry-after": "1"}),
        Fail(503),
        Fail(529),
        Disconnect(),
        Malformed("{not json"),
    ],
    ids=["429", "503", "529", "reset", "malformed"],
)
def test_every_provider_fault_falls_back(
    trio: Trio, make_agency: MakeAgency, fault: object
) -> None:
    primary, backup, _ = trio
    primary.script(fault)  # type: ignore[arg-type]
    backup.script(Reply(content="ok"))
    assert make_agency().chat_model().invoke("hi").content == "ok"


def test_a_stall_past_the_timeout_falls_back(trio: Trio, make_agency: MakeAgency) -> None:
    primary, backup, _ = trio
    primary.script(Stall(2.0))
    backup.script(Reply(content="ok"))
    agency = make_agency(providers=[{"timeout": 0.3}, {}])
    answer = agency.chat_model().invoke("hi")
    assert answer.content == "ok"
    assert answer.response_metadata["agency"]["failures"][0]["error"] == "Timeout"


def test_a_bad_request_is_raised_at_once(trio: Trio, make_agency: MakeAgency) -> None:
    primary, backup, _ = trio
    primary.script(Fail(400, message="bad field"))
    with pytest.raises(BadRequest):
        make_agency().chat_model().invoke("hi")
    assert _chat_requests(backup) == 0


def test_all_failures_are_collected(trio: Trio, make_agency: MakeAgency) -> None:
    primary, backup, _ = trio
    primary.script(Fail(503, times=10))
    backup.script(Fail(429, times=10))
    with pytest.raises(AllProvidersFailed) as info:
        make_agency(max_attempts=2).chat_model().invoke("hi")
    error = info.value
    assert [name for name, _ in error.attempts] == ["primary", "backup"]
    assert isinstance(error.exceptions[0], ProviderUnavailable)
    assert isinstance(error.exceptions[1], RateLimited)
    assert "primary: ProviderUnavailable" in str(error)
    with pytest.raises(ExceptionGroup):  # except* works on it
        try:
            raise error
        except* RateLimited as group:
            assert len(group.exceptions) == 1
            raise


def test_max_attempts_bounds_retries_and_fallbacks(trio: Trio, make_agency: MakeAgency) -> None:
    for fake in trio:
        fake.script(Fail(500, times=50))
    breaker = BreakerPolicy(consecutive_failures=100, min_calls=100)
    with pytest.raises(AllProvidersFailed):
        make_agency(3, max_attempts=5, breaker=breaker).chat_model().invoke("hi")
    assert sum(_chat_requests(f) for f in trio) == 5


def test_retry_after_is_honoured_on_the_fake_clock(
    trio: Trio, make_agency: MakeAgency, clock: FakeClock
) -> None:
    primary = trio[0]
    primary.script(Fail(429, headers={"retry-after": "3"}), Reply(content="second time"))
    agency = make_agency(1, max_attempts=2, breaker=BreakerPolicy(consecutive_failures=5))
    answer = agency.chat_model().invoke("hi")
    assert answer.content == "second time"
    assert clock.sleeps and clock.sleeps[-1] == pytest.approx(3.0)


def test_breaker_skips_a_dead_provider_at_no_cost(
    trio: Trio, make_agency: MakeAgency, clock: FakeClock
) -> None:
    with socket.socket() as s:  # a port with nobody listening: connection refused
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    _, backup, _ = trio
    policy = BreakerPolicy(consecutive_failures=2, cooldown_s=30)
    agency = make_agency(providers=[{"base_url": dead}, {}], breaker=policy)
    llm = agency.chat_model()
    for _ in range(5):
        assert isinstance(llm.invoke("hi"), AIMessage)
    assert _chat_requests(backup) == 5
    snapshot = agency.stats().snapshot()["providers"]["primary"]
    assert snapshot["failures_by_kind"].get("connection") == 2
    assert snapshot["failures_by_kind"].get("circuit_open") == 3
    assert agency.health()["primary"]["breaker"]["state"] == "open"
    clock.advance(31)  # cooldown over: one probe goes to the (still dead) primary
    llm.invoke("hi")
    assert agency.stats().snapshot()["providers"]["primary"]["failures_by_kind"]["connection"] == 3


def test_single_provider_breaker_fails_fast_then_recovers(
    trio: Trio, make_agency: MakeAgency, clock: FakeClock
) -> None:
    primary = trio[0]
    primary.script(Fail(503, times=2))
    agency = make_agency(1, max_attempts=1, breaker=BreakerPolicy(consecutive_failures=2))
    llm = agency.chat_model()
    for _ in range(2):
        with pytest.raises(AllProvidersFailed):
            llm.invoke("hi")
    with pytest.raises(AllProvidersFailed) as info:
        llm.invoke("hi")
    assert isinstance(info.value.exceptions[0], CircuitOpen)
    assert _chat_requests(primary) == 2  # the open breaker sent nothing
    clock.advance(BreakerPolicy().cooldown_s + 1)
    assert llm.invoke("hi").content  # the half-open probe succeeds and closes it
    assert agency.health()["primary"]["breaker"]["state"] == "closed"


def test_rule_sends_a_condition_to_named_providers(trio: Trio, make_agency: MakeAgency) -> None:
    primary, backup, third = trio
    primary.script(Fail(429))
    third.script(Reply(content="third answers rate limits"))
    agency = make_agency(3, rules=[{"condition": "rate_limit", "fallback_providers": ["third"]}])
    assert agency.chat_model().invoke("hi").content == "third answers rate limits"
    assert _chat_requests(backup) == 0


def test_auth_falls_back_only_with_a_rule(trio: Trio, make_agency: MakeAgency) -> None:
    primary, backup, _ = trio
    primary.script(Fail(401), Fail(401))
    with pytest.raises(AuthenticationError):
        make_agency().chat_model().invoke("hi")
    assert _chat_requests(backup) == 0
    backup.script(Reply(content="backup key works"))
    agency = make_agency(rules=[{"condition": "auth", "fallback_providers": ["backup"]}])
    assert agency.chat_model().invoke("hi").content == "backup key works"


def test_fallback_keeps_bound_tools(trio: Trio, make_agency: MakeAgency) -> None:
    primary, backup, _ = trio
    primary.script(Fail(500))
    backup.script(Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}]))

    def get_weather(city: str) -> str:
        """Weather in a city."""
        return "sunny"

    llm = make_agency().chat_model().bind_tools([get_weather], tool_choice="get_weather")
    answer = llm.invoke("weather in Paris?")
    assert answer.tool_calls[0]["args"] == {"city": "Paris"}
    for fake in (primary, backup):
        body = fake.bodies()[-1]
        assert body["tools"][0]["function"]["name"] == "get_weather"


def test_fallback_keeps_structured_output(trio: Trio, make_agency: MakeAgency) -> None:
    class Person(BaseModel):
        name: str
        age: int

    primary, backup, _ = trio
    primary.script(Fail(503))
    backup.script(Reply(content='{"name": "Ada", "age": 36}'))
    result = make_agency().chat_model().with_structured_output(Person).invoke("Ada, 36")
    assert result == Person(name="Ada", age=36)
    assert backup.bodies()[-1]["response_format"]["type"] == "json_schema"


def test_stream_fails_over_before_the_first_token(trio: Trio, make_agency: MakeAgency) -> None:
    primary, backup, _ = trio
    primary.script(Fail(503))
    backup.script(Reply(content="a whole streamed answer"))
    chunks = list(make_agency().chat_model().stream("hi"))
    assert "".join(c.text for c in chunks) == "a whole streamed answer"


def _merged(chunks: list) -> AIMessage:  # type: ignore[type-arg]
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    return total  # type: ignore[no-any-return]


def test_stream_continues_after_a_cut(trio: Trio, make_agency: MakeAgency) -> None:
    primary, backup, _ = trio
    primary.script(Disconnect(after_events=4))
    backup.script(Reply(content=" and the rest of it."))
    chunks = list(make_agency().chat_model().stream("Tell me about the sea"))
    merged = _merged(chunks)
    text = merged.text
    failover = merged.response_metadata["agency"]["failover"]
    assert failover and failover[0]["from"] == "primary"
    cut = failover[0]["at_char"]
    partial = text[:cut]
    assert partial and text[cut:] == " and the rest of it."
    sent = backup.bodies()[-1]["messages"]
    assert sent[-2] == {"role": "assistant", "content": partial}
    assert sent[-1]["content"] == CONTINUE_PROMPT


def test_stream_continuation_that_restarts_is_not_duplicated(
    trio: Trio, make_agency: MakeAgency
) -> None:
    primary, backup, _ = trio
    primary.script(Disconnect(after_events=4))
    llm = make_agency().chat_model()
    # Learn what the primary emits before the cut (the fake's answers are deterministic).
    primary.script(Disconnect(after_events=4))
    backup.script(Reply(content="IGNORED"))
    first = _merged(list(llm.stream("Tell me about the sea")))
    partial = first.text[: first.response_metadata["agency"]["failover"][0]["at_char"]]
    backup.script(Reply(content=partial + " then more."))
    again = _merged(list(llm.stream("Tell me about the sea")))
    assert again.text == partial + " then more."


async def test_async_fallback_and_stream_failover(trio: Trio, make_agency: MakeAgency) -> None:
    primary, backup, _ = trio
    primary.script(Fail(500))
    backup.script(Reply(content="async backup"))
    llm = make_agency().chat_model()
    assert (await llm.ainvoke("hi")).content == "async backup"
    primary.script(Disconnect(after_events=4))
    backup.script(Reply(content=" continued."))
    chunks = [c async for c in llm.astream("Tell me about the sea")]
    merged = _merged(chunks)
    assert merged.text.endswith(" continued.")
    assert merged.response_metadata["agency"]["failover"][0]["from"] == "primary"


def test_cost_is_reported_and_budget_refuses_before_sending(
    trio: Trio, make_agency: MakeAgency
) -> None:
    primary = trio[0]
    agency = make_agency(1, budget={"max_cost_total": 0.01})
    answer = agency.chat_model(max_tokens=50).invoke([HumanMessage("hi")])
    cost = answer.response_metadata["cost"]
    usage = answer.usage_metadata
    assert usage is not None
    expected = (usage["input_tokens"] * 0.15 + usage["output_tokens"] * 0.60) / 1_000_000
    assert cost == pytest.approx(expected)
    sent = _chat_requests(primary)
    with pytest.raises(BudgetExceeded) as info:
        agency.chat_model(max_tokens=100_000).invoke("hi")  # worst case 100k x $0.60/M = $0.06
    assert info.value.scope == "total"
    assert _chat_requests(primary) == sent  # refused before anything was sent


def test_rate_limit_sends_the_next_call_elsewhere(
    trio: Trio, make_agency: MakeAgency, clock: FakeClock
) -> None:
    primary, backup, _ = trio
    agency = make_agency(providers=[{"rpm": 1}, {}])
    llm = agency.chat_model()
    llm.invoke("one")
    llm.invoke("two")
    assert (_chat_requests(primary), _chat_requests(backup)) == (1, 1)
    assert clock.sleeps == []  # nobody waited: the backup had room
    clock.advance(61)
    llm.invoke("three")
    assert _chat_requests(primary) == 2


@pytest.mark.parametrize("strategy", ["round-robin", "weighted", "least-loaded", "latency"])
def test_balancing_spreads_calls(trio: Trio, make_agency: MakeAgency, strategy: str) -> None:
    agency = make_agency(3, strategy=strategy)
    llm = agency.chat_model()
    for _ in range(30):
        llm.invoke("hi")
    counts = [_chat_requests(f) for f in trio]
    assert sum(counts) == 30
    if strategy in ("round-robin", "weighted"):
        assert all(c > 0 for c in counts)


def test_cost_strategy_picks_the_cheapest_that_fits(trio: Trio, make_agency: MakeAgency) -> None:
    primary, backup, third = trio
    agency = make_agency(
        3,
        strategy="cost",
        providers=[
            {"text_model": "gpt-4o"},
            {"text_model": "gpt-4o-mini"},
            {"text_model": "gpt-4.1"},
        ],
    )
    agency.chat_model().invoke("hi")
    assert (_chat_requests(primary), _chat_requests(backup), _chat_requests(third)) == (0, 1, 0)


def test_provider_rate_limit_headers_steer_the_next_call(
    trio: Trio, make_agency: MakeAgency, clock: FakeClock
) -> None:
    from fakes.openai_server import RateLimits

    primary, backup, _ = trio
    # The primary answers, but says no request is left for the next 30 seconds.
    primary.rate_limits = RateLimits(remaining_requests=0, reset_requests="30s")
    agency = make_agency()
    llm = agency.chat_model()
    llm.invoke("one")
    llm.invoke("two")
    assert (_chat_requests(primary), _chat_requests(backup)) == (1, 1)
    server = agency.health()["primary"]["limits"]["server"]
    assert [w["remaining"] for w in server.values() if w["kind"] == "requests"] == [0]
    assert clock.sleeps == []
    clock.advance(31)  # the server's window has reset
    llm.invoke("three")
    assert _chat_requests(primary) == 2


def test_streamed_answers_carry_their_cost(trio: Trio, make_agency: MakeAgency) -> None:
    agency = make_agency(1)
    merged = _merged(list(agency.chat_model().stream("hi")))
    usage = merged.usage_metadata
    assert usage is not None and usage["output_tokens"] > 0
    expected = (usage["input_tokens"] * 0.15 + usage["output_tokens"] * 0.60) / 1_000_000
    assert merged.response_metadata["cost"] == pytest.approx(expected)
