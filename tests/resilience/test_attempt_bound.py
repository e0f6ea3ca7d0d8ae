"""Property: one call never makes more than ``max_attempts`` provider calls, whatever fails.

In-process scripted adapters (no sockets), so hypothesis can try thousands of fault mixes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fakes.clock import FakeClock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk

import agency
from agency.errors import (
    AllProvidersFailed,
    BadRequest,
    ConnectionFailed,
    MalformedResponse,
    ProviderUnavailable,
    RateLimited,
    Timeout,
)
from agency.resilience.balancing import ProviderState
from agency.resilience.breaker import BreakerPolicy, CircuitBreaker
from agency.resilience.fallback import FallbackChatModel
from agency.resilience.limits import RateLimiter
from agency.resilience.policy import FallbackPolicy
from agency.resilience.pool import ProviderPool
from agency.stats import Stats

OUTCOMES = ["ok", "500", "429", "timeout", "reset", "malformed", "bad", "cut"]


def _error(kind: str, retry_after: float) -> Exception:
    return {
        "500": ProviderUnavailable("boom", status_code=500),
        "429": RateLimited("slow down", status_code=429, retry_after=retry_after),
        "timeout": Timeout("timed out"),
        "reset": ConnectionFailed("reset"),
        "malformed": MalformedResponse("not json"),
        "bad": BadRequest("bad field", status_code=400),
    }[kind]


class Scripted:
    """Stands in for a wire adapter: answers from a script, counts calls."""

    def __init__(self, real: Any, name: str, script: list[tuple[str, float]]) -> None:
        self.real, self.name, self.script, self.calls = real, name, list(script), 0

    def __getattr__(self, key: str) -> Any:
        return getattr(self.real, key)

    def _chunks(self) -> Iterator[ChatGenerationChunk]:
        self.calls += 1
        kind, retry_after = self.script.pop(0) if self.script else ("ok", 0.0)
        if kind == "cut":
            yield ChatGenerationChunk(message=AIMessageChunk(content=f"{self.name} partial "))
            raise ConnectionFailed("stream cut")
        if kind != "ok":
            raise _error(kind, retry_after)
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content=f"answer from {self.name}",
                usage_metadata={"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
                chunk_position="last",
            )
        )

    def chat(self, request: Any, *, stream: bool = False) -> Iterator[ChatGenerationChunk]:
        return self._chunks()

    async def achat(
        self, request: Any, *, stream: bool = False
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks():
            yield chunk


def _pool(
    scripts: list[list[tuple[str, float]]], policy: FallbackPolicy, clock: FakeClock
) -> tuple[ProviderPool, list[Scripted]]:
    states, adapters = {}, []
    for i, script in enumerate(scripts):
        name = f"p{i}"
        model = agency.chat_model(
            "openai-compatible:m", base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=0
        )
        adapter = Scripted(model._adapter, name, script)
        object.__setattr__(model, "_adapter", adapter)
        adapters.append(adapter)
        states[name] = ProviderState(
            name=name,
            model=model,
            breaker=CircuitBreaker(BreakerPolicy(consecutive_failures=3), clock=clock),
            limiter=RateLimiter(clock=clock),
            priority=i,
        )
    pool = ProviderPool(
        states,
        policy=policy,
        stats=Stats(clock=clock),
        clock=clock,
        sleep=clock.sleep,
        asleep=clock.asleep,
    )
    return pool, adapters


scripts_st = st.lists(
    st.lists(
        st.tuples(st.sampled_from(OUTCOMES), st.floats(min_value=0, max_value=100)),
        max_size=8,
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scripts=scripts_st,
    max_attempts=st.integers(min_value=1, max_value=6),
    strategy=st.sampled_from(["priority", "round-robin", "least-loaded", "latency", "weighted"]),
    stream=st.booleans(),
)
def test_attempts_never_exceed_max_attempts(
    scripts: list[list[tuple[str, float]]], max_attempts: int, strategy: Any, stream: bool
) -> None:
    clock = FakeClock()
    policy = FallbackPolicy(strategy=strategy, max_attempts=max_attempts, retry_delay_s=0.5)
    pool, adapters = _pool(scripts, policy, clock)
    llm = FallbackChatModel.over(pool, list(pool.states))
    try:
        text = "".join(c.text for c in llm.stream("hi")) if stream else llm.invoke("hi").text
    except (AllProvidersFailed, BadRequest, ConnectionFailed):
        text = None
    calls = sum(a.calls for a in adapters)
    assert calls <= max_attempts
    if text is not None:
        assert "answer from p" in text
    # Every wait the loop took was bounded by the policy.
    assert all(0 < s <= policy.max_wait_s for s in clock.sleeps)
    # Nothing is left in flight, whatever happened.
    assert all(s.in_flight == 0 for s in pool.states.values())


@settings(max_examples=100, deadline=None)
@given(scripts=scripts_st, max_attempts=st.integers(min_value=1, max_value=6))
async def test_async_attempts_never_exceed_max_attempts(
    scripts: list[list[tuple[str, float]]], max_attempts: int
) -> None:
    clock = FakeClock()
    pool, adapters = _pool(scripts, FallbackPolicy(max_attempts=max_attempts), clock)
    llm = FallbackChatModel.over(pool, list(pool.states))
    with contextlib.suppress(AllProvidersFailed, BadRequest, ConnectionFailed):
        await llm.ainvoke("hi")
    assert sum(a.calls for a in adapters) <= max_attempts
