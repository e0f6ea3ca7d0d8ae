"""The `Agency` facade: construction from config and environment, health, costs, stats, CLI."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fakes.openai_server import Fail, FakeOpenAI, Reply
from langchain_core.messages import HumanMessage
from typer.testing import CliRunner

from agency import Agency, BudgetExceeded
from agency.cli import app as cli_app
from agency.errors import AuthenticationError


def _toml(fake: FakeOpenAI, extra: str = "") -> str:
    return f"""
[[llm.providers]]
name = "main"
provider = "openai"
api_key = "sk-test"
base_url = "{fake.base_url}"
text_model = "gpt-4o-mini"
priority = 1
rpm = 500
tpm = 200000

[[llm.providers]]
name = "spare"
provider = "openai"
api_key = "sk-test"
base_url = "{fake.base_url}"
text_model = "gpt-4o"
priority = 2
weight = 3

[llm.fallback]
enabled = true
strategy = "priority"
max_attempts = 3
retry_delay_ms = 0

[llm.routing]
code = ["spare", "openai:gpt-4o-mini"]
{extra}
"""


def test_from_config_file_routes_roles(tmp_path: Path, openai_fake: FakeOpenAI) -> None:
    path = tmp_path / "agency.toml"
    path.write_text(_toml(openai_fake))
    with Agency.from_config(path) as ag:
        assert ag.chain() == ["main", "spare"]
        assert ag.chain("code") == ["spare", "openai:gpt-4o-mini"]
        openai_fake.script(Fail(503), Reply(content="from the spec"))
        answer = ag.chat_model(role="code").invoke("write code")
        assert answer.content == "from the spec"
        # The spec in the chain borrowed the openai entry's key and base_url.
        assert [b["model"] for b in openai_fake.bodies()] == ["gpt-4o", "gpt-4o-mini"]
        roles = ag.stats().snapshot()["roles"]
        assert roles["code"]["requests"] == 2 and roles["code"]["successes"] == 1


def test_from_env_quick_start(openai_fake: FakeOpenAI) -> None:
    env = {
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": openai_fake.base_url,
        "OPENAI_MODEL": "gpt-4o-mini",
        "MAX_COST_PER_REQUEST": "0.001",
    }
    ag = Agency.from_env(env)
    assert ag.chain() == ["openai"]
    assert ag.chat_model(max_tokens=100).invoke("hi").content
    with pytest.raises(BudgetExceeded) as info:  # worst case 10k x $0.60/M = $0.006
        ag.chat_model(max_tokens=10_000).invoke("hi")
    assert info.value.scope == "request"


def test_missing_key_leaves_the_entry_out_with_a_warning(
    openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    extra = """
[[llm.providers]]
name = "claude"
provider = "anthropic"
api_key = "${ANTHROPIC_API_KEY}"
"""
    from agency.config import AgencyConfig

    config = AgencyConfig.from_toml_str(
        _toml(openai_fake).replace("[llm.fallback]", extra + "\n[llm.fallback]")
    )
    with pytest.warns(RuntimeWarning, match="claude"):
        ag = Agency(config)
    assert "claude" in ag.unconfigured and "ANTHROPIC_API_KEY" in ag.unconfigured["claude"]
    assert ag.health()["claude"] == {"unconfigured": ag.unconfigured["claude"]}
    assert "claude" not in ag.chain()


def test_health_check_and_available_providers(openai_fake: FakeOpenAI) -> None:
    from agency.config import AgencyConfig

    ag = Agency(AgencyConfig.from_toml_str(_toml(openai_fake)))
    health = ag.health(check=True)
    assert health["main"]["reachable"] is True
    assert health["main"]["breaker"]["state"] == "closed"
    assert health["main"]["limits"]["rpm"] == 500
    assert ag.available_providers() == ["main", "spare"]
    openai_fake.api_key = "sk-other"  # now every call to it fails with 401
    assert ag.health(check=True)["main"]["reachable"] is False


def test_estimate_cost_before_the_call(openai_fake: FakeOpenAI) -> None:
    from agency.config import AgencyConfig

    ag = Agency(AgencyConfig.from_toml_str(_toml(openai_fake)))
    short = ag.estimate_cost([HumanMessage("hi")], max_tokens=100)
    long = ag.estimate_cost([HumanMessage("hi " * 2000)], max_tokens=100)
    assert 0 < short.prompt_tokens < long.prompt_tokens
    assert short.worst_case is not None and long.worst_case is not None
    assert short.worst_case < long.worst_case
    assert short.confidence in ("high", "medium")


def test_budget_is_never_overspent_under_concurrency(openai_fake: FakeOpenAI) -> None:
    from agency.config import AgencyConfig

    config = AgencyConfig.from_toml_str(_toml(openai_fake, "[llm.budget]\nmax_cost_total = 0.0005"))
    ag = Agency(config)
    llm = ag.chat_model(max_tokens=200)  # worst case about $0.00013 at gpt-4o-mini prices
    outcomes: list[str] = []

    def worker() -> None:
        for _ in range(5):
            try:
                llm.invoke("hi")
                outcomes.append("ok")
            except BudgetExceeded:
                outcomes.append("refused")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    budget = ag._pool.budget
    assert budget is not None
    assert "refused" in outcomes and "ok" in outcomes
    assert budget.spent() <= 0.0005
    assert budget.reserved() == 0


def test_auth_failure_is_reported_per_provider(openai_fake: FakeOpenAI) -> None:
    from agency.config import AgencyConfig

    ag = Agency(AgencyConfig.from_toml_str(_toml(openai_fake)))
    openai_fake.script(Fail(401))
    with pytest.raises(AuthenticationError):
        ag.chat_model().invoke("hi")
    assert ag.stats().snapshot()["providers"]["main"]["failures_by_kind"] == {"auth": 1}


async def test_async_context_manager(openai_fake: FakeOpenAI) -> None:
    from agency.config import AgencyConfig

    async with Agency(AgencyConfig.from_toml_str(_toml(openai_fake))) as ag:
        assert (await ag.chat_model().ainvoke("hi")).content
    html = ag.stats()._repr_html_()
    assert "main" in html


def test_cli_providers_prints_health(tmp_path: Path, openai_fake: FakeOpenAI) -> None:
    path = tmp_path / "agency.toml"
    path.write_text(_toml(openai_fake))
    result = CliRunner().invoke(cli_app, ["providers", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "main" in result.output and "spare" in result.output
    assert "closed" in result.output and "rpm=500" in result.output


@pytest.mark.local
def test_embedded_defaults_need_no_key() -> None:
    with Agency() as ag:
        assert ag.chain() == ["local"]
        answer = ag.chat_model(max_tokens=8).invoke("Say hi")
        assert isinstance(answer.content, str) and answer.content
        assert answer.response_metadata["cost"] == 0.0
        assert len(ag.embeddings().embed_query("hello")) == 256


def test_interval_health_checks_probe_in_the_background(openai_fake: FakeOpenAI) -> None:
    from agency.config import AgencyConfig

    ag = Agency(AgencyConfig.from_toml_str(_toml(openai_fake)))
    probed = threading.Event()
    original = ag.health

    def health(*, check: bool = False) -> dict:  # type: ignore[type-arg]
        report = original(check=check)
        if check:
            probed.set()
        return report

    ag.health = health  # type: ignore[method-assign]
    ag.start_health_checks(interval_s=0.01)
    try:
        assert probed.wait(timeout=10), "no background probe within 10 s"
    finally:
        ag.stop_health_checks()
    assert any(r.path.endswith("/models") for r in openai_fake.requests)


def test_configured_cache_serves_repeats(openai_fake: FakeOpenAI) -> None:
    from agency.config import AgencyConfig

    extra = '[llm.cache]\nenabled = true\nbackend = "memory"'
    ag = Agency(AgencyConfig.from_toml_str(_toml(openai_fake, extra)))
    llm = ag.chat_model()
    first = llm.invoke("What is the capital of France?")
    second = llm.invoke("What is the capital of France?")
    assert second.content == first.content
    assert second.response_metadata["cache"] == "exact"
    assert len(openai_fake.bodies()) == 1
    assert ag.stats().snapshot()["providers"]["cache"]["successes"] == 1
    assert ag.cache().stats().hits_exact == 1


def test_memory_namespaces_follow_the_memory_table(tmp_path: Path) -> None:
    from agency.config import AgencyConfig

    store = tmp_path / "mem"
    toml = f'[memory]\npath = "{store.as_posix()}"\nembeddings = "local:wordllama"\n'
    ag = Agency(AgencyConfig.from_toml_str(toml))
    notes = ag.memory("notes")
    assert ag.memory("notes") is notes and ag.memory("other") is not notes
    assert notes.mode == "persistent" and notes.path == store.resolve()
    notes.remember("The deploy key rotates on Mondays", {"team": "ops"}, id="k1")
    assert ag.memory("other").count() == 0  # namespaces are separate collections
    again = Agency(AgencyConfig.from_toml_str(toml)).memory("notes")  # a later process
    assert [r.id for r in again.recall("when does the key rotate?", k=1)] == ["k1"]


def test_memory_embeds_with_the_agency_embeddings_by_default(openai_fake: FakeOpenAI) -> None:
    from agency.config import AgencyConfig

    ag = Agency(AgencyConfig.from_toml_str(_toml(openai_fake, '[memory]\nmode = "ephemeral"')))
    mem = ag.memory()
    assert mem.mode == "ephemeral"
    mem.remember("Lunch is at noon")
    paths = [r.path for r in openai_fake.requests]
    assert any(p.endswith("/embeddings") for p in paths)  # the configured provider embedded it
    assert mem.recall("when is lunch?", k=1)[0].text == "Lunch is at noon"


def test_a_budget_of_its_own_counts_what_was_spent_before() -> None:
    ag = Agency()
    budget = ag.budget("key:vk_1", 5.0, spent_usd=4.5)
    assert budget.remaining() == pytest.approx(0.5)
    with pytest.raises(BudgetExceeded):
        budget.reserve(0.6)
    budget.reserve(0.4).settle(0.4)
    assert budget.remaining() == pytest.approx(0.1)
