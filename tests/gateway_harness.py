"""A gateway on real uvicorn over two fake OpenAI upstreams ("primary" and "backup"); the
fixtures are re-exported by tests/gateway/conftest.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes._server import serve
from fakes.openai_server import FakeOpenAI

from agency import Agency
from agency.config import AgencyConfig
from agency.gateway._core import Gateway
from agency.gateway.app import create_app
from agency.gateway.config import gateway_config
from agency.resilience.breaker import BreakerPolicy

MASTER = "sk-master-test-0123456789"


def agency_toml(primary: FakeOpenAI, backup: FakeOpenAI, extra: str = "") -> str:
    """Two entries on two fakes, fallback on, roles ``code`` and ``cheap``."""
    return f"""
[[llm.providers]]
name = "primary"
provider = "openai"
api_key = "sk-upstream-primary"
base_url = "{primary.base_url}"
text_model = "gpt-4o-mini"
priority = 1

[[llm.providers]]
name = "backup"
provider = "openai"
api_key = "sk-upstream-backup"
base_url = "{backup.base_url}"
text_model = "gpt-4o"
priority = 2

[llm.fallback]
enabled = true
max_attempts = 3
retry_delay_ms = 0

[llm.routing]
code = ["backup", "primary"]
cheap = ["primary"]
{extra}
"""


@dataclass
class Running:
    """A served gateway: its URL, the `Gateway`, the fakes behind it."""

    url: str
    gw: Gateway
    primary: FakeOpenAI
    backup: FakeOpenAI
    path: Path

    def key(self, name: str | None = None, **options: Any) -> str:
        """A new virtual key's secret (named ``team<n>`` unless named)."""
        name = name or f"team{len(self.gw.keys.list())}"
        secret, _ = self.gw.keys.create(name, **options)
        return secret


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    with FakeOpenAI().running() as primary, FakeOpenAI().running() as backup:
        yield primary, backup


@pytest.fixture
def start_gateway(
    upstreams: tuple[FakeOpenAI, FakeOpenAI], tmp_path: Path
) -> Iterator[Callable[..., Running]]:
    """``start_gateway(extra_toml="", auth=True, master_key=MASTER)`` -> `Running`."""
    primary, backup = upstreams
    primary.reset()
    backup.reset()
    stack: list[Any] = []

    def start(
        extra: str = "",
        *,
        auth: bool = True,
        master_key: str | None = MASTER,
        breaker: BreakerPolicy | None = None,
    ) -> Running:
        path = tmp_path / "agency.toml"
        path.write_text(
            agency_toml(
                primary,
                backup,
                f'[gateway]\ndata_dir = "{tmp_path}"\nhealth_interval_s = 0\n{extra}',
            )
        )
        config = AgencyConfig.from_toml_str(path.read_text(), str(path))
        agency = Agency(config, breaker_policy=breaker)
        gw = Gateway(
            agency, gateway_config(config), auth=auth, master_key=master_key, config_path=str(path)
        )
        ctx = serve(create_app(gw))
        url = ctx.__enter__()
        stack.append((ctx, gw))
        return Running(url, gw, primary, backup, path)

    yield start
    # serve() runs uvicorn without the lifespan: close what the app's shutdown would.
    for ctx, gw in reversed(stack):
        ctx.__exit__(None, None, None)
        gw.close()
