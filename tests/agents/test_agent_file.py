"""[[agent]] tables: checked when the file loads (file, key path, fix), built on the agency."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fakes.openai_server import FakeOpenAI, Reply
from test_agent import _chat

from agency.app import Agency
from agency.config import load_config
from agency.errors import ConfigError

SERVER = str(Path(__file__).with_name("mcp_server.py"))


def _file(tmp_path: Path, fake: FakeOpenAI, agents: str) -> Path:
    path = tmp_path / "agency.toml"
    path.write_text(
        f"""
[[llm.providers]]
name = "primary"
provider = "openai"
api_key = "sk-test"
base_url = "{fake.base_url}"
text_model = "gpt-4o-mini"
{agents}
""",
        encoding="utf-8",
    )
    return path


def test_agents_from_toml_run_on_the_agency(openai_fake: FakeOpenAI, tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        openai_fake,
        f"""
[[agent]]
name = "forecaster"
role = "general"
instructions = "Answer with the weather."
models = ["primary"]
tools = ["toolbox:get_weather", {{ mcp = {{ command = "{sys.executable}", args = ["{SERVER}"] }} }}]
max_steps = 4
budget_usd = 0.5
description = "Knows the weather."
""",
    )
    agents = Agency.from_config(path).agents()
    forecaster = agents["forecaster"]
    assert forecaster.max_steps == 4 and forecaster.budget_usd == 0.5
    assert sorted(t.name if hasattr(t, "name") else t.__name__ for t in forecaster.tools) == [
        "add",
        "explode",
        "get_weather",
        "shout",
    ]
    openai_fake.script(
        Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}]),
        Reply("Sunny in Oslo."),
    )
    assert forecaster.invoke("Weather in Oslo?").text == "Sunny in Oslo."
    assert "Answer with the weather." in _chat(openai_fake)[0]["messages"][0]["content"]


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ('name = "a"\nmodle = "x"', "agent[0].modle", "did you mean 'model'"),
        ('role = "general"', "agent[0].name", "needs a name"),
        ('name = "a"\nmodels = ["nope:x"]', "agent[0].models[0]", "not a provider entry"),
        (
            'name = "a"\ntools = ["toolbox:missing"]',
            "agent[0].tools[0]",
            "'toolbox' has no 'missing'",
        ),
        ('name = "a"\ntools = [{ mcp = { cmd = "x" } }]', "agent[0].tools[0].mcp", "command"),
        ('name = "a"\nmax_steps = "many"', "agent[0].max_steps", "a number"),
    ],
)
def test_a_bad_agent_table_fails_when_the_file_loads(
    openai_fake: FakeOpenAI, tmp_path: Path, table: str, key: str, words: str
) -> None:
    path = _file(tmp_path, openai_fake, f"[[agent]]\n{table}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key and words in str(info.value)
    assert info.value.source == str(path) and info.value.fix
