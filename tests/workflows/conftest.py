"""Workflows against the fake OpenAI server: two entries (primary, backup) of one agency."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_server import FakeOpenAI

from agency.app import Agency
from agency.config import AgencyConfig


def agency_toml(fake: FakeOpenAI, extra: str = "", *, primary_url: str | None = None) -> str:
    """Two OpenAI entries on the fake: ``primary`` (gpt-4o-mini) first, ``backup`` (gpt-4o)."""
    return f"""
[[llm.providers]]
name = "primary"
provider = "openai"
api_key = "sk-test"
base_url = "{primary_url or fake.base_url}"
text_model = "gpt-4o-mini"
priority = 1
timeout = 5

[[llm.providers]]
name = "backup"
provider = "openai"
api_key = "sk-test"
base_url = "{fake.base_url}"
text_model = "gpt-4o"
priority = 2

[llm.fallback]
enabled = true
max_attempts = 3
retry_delay_ms = 0
{extra}
"""


@pytest.fixture
def make_agency(openai_fake: FakeOpenAI) -> Callable[..., Agency]:
    made: list[Agency] = []

    def make(extra: str = "", **kwargs: Any) -> Agency:
        ag = Agency(AgencyConfig.from_toml_str(agency_toml(openai_fake, extra, **kwargs)))
        made.append(ag)
        return ag

    yield make  # type: ignore[misc]
    for ag in made:
        ag.close()


@pytest.fixture
def checkpoint(tmp_path: Path) -> str:
    return str(tmp_path / "runs.sqlite")
