"""The ``agency`` command line, driven through typer's runner."""

from __future__ import annotations

import pytest
from fakes.openai_server import Fail, FakeOpenAI, Reply
from typer.testing import CliRunner

from agency import cli

runner = CliRunner()


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from agency._specs import get_profile, known_providers

    for name in known_providers():
        for var in get_profile(name).api_key_env:
            monkeypatch.delenv(var, raising=False)
    for var in ("AGENCY_MODEL", "DEFAULT_LLM_PROVIDER"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.usefixtures("no_keys")
def test_default_spec_is_local_without_keys() -> None:
    spec, why = cli.default_spec()
    assert spec == "local:smollm2"
    assert "no API key" in why


@pytest.mark.usefixtures("no_keys")
def test_default_spec_follows_keys_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk-test")
    assert cli.default_spec()[0] == "groq:llama-3.3-70b-versatile"
    monkeypatch.setenv("GROQ_MODEL", "llama-3.1-8b-instant")
    assert cli.default_spec()[0] == "groq:llama-3.1-8b-instant"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("DEFAULT_LLM_PROVIDER", "openai")
    assert cli.default_spec() == ("openai:gpt-4o-mini", "OPENAI_API_KEY is set")
    monkeypatch.setenv("AGENCY_MODEL", "mistral:mistral-large-latest")
    assert cli.default_spec()[0] == "mistral:mistral-large-latest"


def test_chat_streams_and_not(openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", "sk-test")
    args = [
        "chat",
        "Tell me about SSE",
        "--model",
        "openai-compatible:gpt-4o-mini",
        "--base-url",
        openai_fake.base_url,
    ]
    streamed = runner.invoke(cli.app, [*args, "--system", "Be terse"])
    assert streamed.exit_code == 0, streamed.output
    assert "Tell me about SSE" in streamed.stdout
    body = openai_fake.bodies()[-1]
    assert body["stream"] is True and body["messages"][0] == {
        "role": "system",
        "content": "Be terse",
    }
    openai_fake.script(Reply(content="plain answer"))
    plain = runner.invoke(cli.app, [*args, "--no-stream"])
    assert plain.exit_code == 0 and plain.stdout.strip() == "plain answer"
    assert "stream" not in openai_fake.bodies()[-1]


def test_chat_reports_errors_without_traceback(
    openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", "sk-test")
    openai_fake.script(Fail(401))
    result = runner.invoke(
        cli.app,
        ["chat", "hi", "-m", "openai-compatible:gpt-4o-mini", "--base-url", openai_fake.base_url],
    )
    assert result.exit_code == 1
    assert "error:" in result.stderr and "Traceback" not in result.output
    bad = runner.invoke(cli.app, ["chat", "hi", "-m", "opnai:gpt-4o"])
    assert bad.exit_code == 1 and "Did you mean 'openai'" in bad.stderr


def test_models_lists_providers_and_a_providers_models(
    openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    all_providers = runner.invoke(cli.app, ["models"])
    assert all_providers.exit_code == 0
    for name in ("openai", "groq", "azure-openai", "local"):
        assert name in all_providers.stdout
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    listed = runner.invoke(cli.app, ["models", "openai", "--base-url", openai_fake.base_url])
    assert listed.exit_code == 0, listed.output
    assert "openai:gpt-4o-mini" in listed.stdout
