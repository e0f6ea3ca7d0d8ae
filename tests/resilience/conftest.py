"""Three fake OpenAI services for the resilience tests, and an `Agency` over them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fakes.clock import FakeClock
from fakes.openai_server import FakeOpenAI

from agency.app import Agency
from agency.config import AgencyConfig
from agency.resilience.breaker import BreakerPolicy


@pytest.fixture(scope="session")
def _extra_fakes() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    with FakeOpenAI().running() as b, FakeOpenAI().running() as c:
        yield b, c


@pytest.fixture
def trio(
    openai_fake: FakeOpenAI, _extra_fakes: tuple[FakeOpenAI, FakeOpenAI]
) -> Iterator[tuple[FakeOpenAI, FakeOpenAI, FakeOpenAI]]:
    """Three reset fakes: primary, backup, third."""
    for fake in _extra_fakes:
        fake.reset()
    yield (openai_fake, *_extra_fakes)
    for fake in _extra_fakes:
        problems = list(fake.internal_errors)
        fake.reset()
        assert not problems, f"a fake server failed: {problems}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


MakeAgency = Callable[..., Agency]


@pytest.fixture
def make_agency(trio: tuple[FakeOpenAI, FakeOpenAI, FakeOpenAI], clock: FakeClock) -> MakeAgency:
    """``make_agency(n=2, **fallback)``: an Agency over the first n fakes (openai:gpt-4o-mini
    priced from the table), on the fake clock; keyword groups ``providers=[{...}]`` (merged
    into each entry), ``budget={...}``, ``routing={...}``, ``breaker=BreakerPolicy(...)``."""

    def make(
        n: int = 2,
        *,
        providers: list[dict[str, Any]] | None = None,
        budget: dict[str, Any] | None = None,
        routing: dict[str, list[str]] | None = None,
        breaker: BreakerPolicy | None = None,
        **fallback: Any,
    ) -> Agency:
        names = ["primary", "backup", "third"]
        entries = []
        for i in range(n):
            entry = {
                "name": names[i],
                "provider": "openai",
                "api_key": "sk-test",
                "base_url": trio[i].base_url,
                "text_model": "gpt-4o-mini",
                "priority": i + 1,
            }
            entry.update((providers or [{}] * n)[i])
            entries.append(entry)
        llm: dict[str, Any] = {
            "providers": entries,
            "fallback": {"enabled": True, "retry_delay_ms": 0, **fallback},
        }
        if budget:
            llm["budget"] = budget
        if routing:
            llm["routing"] = routing
        config = AgencyConfig.from_dict({"llm": llm})
        return Agency(
            config,
            breaker_policy=breaker,
            clock=clock,
            sleep=clock.sleep,
            asleep=clock.asleep,
        )

    return make
