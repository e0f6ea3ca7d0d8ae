"""``"provider:model"`` parsing and the provider registry."""

from __future__ import annotations

import pytest

from agency import _specs
from agency.errors import ConfigError, ProviderNotFound
from agency.providers._profile import ProviderProfile


@pytest.mark.parametrize(
    ("spec", "provider", "model"),
    [
        ("openai:gpt-4o-mini", "openai", "gpt-4o-mini"),
        ("groq:llama-3.3-70b-versatile", "groq", "llama-3.3-70b-versatile"),
        ("openrouter:anthropic/claude-3.5-sonnet", "openrouter", "anthropic/claude-3.5-sonnet"),
        ("local:/models/x:y.gguf", "local", "/models/x:y.gguf"),
        ("  OpenAI:gpt-4o ", "openai", "gpt-4o"),
        ("openai", "openai", None),
        ("local:", "local", None),
    ],
)
def test_parse_spec(spec: str, provider: str, model: str | None) -> None:
    parsed = _specs.parse_spec(spec)
    assert (parsed.provider, parsed.model) == (provider, model)


def test_unknown_provider_suggests_closest() -> None:
    with pytest.raises(ProviderNotFound, match="Did you mean 'openai'"):
        _specs.parse_spec("opnai:gpt-4o")
    assert (
        _specs.suggest_provider("google") == "gemini" or _specs.suggest_provider("google") is None
    )
    assert _specs.suggest_provider("groc") == "groq"


def test_bare_model_uses_default_provider() -> None:
    assert _specs.parse_spec("gpt-4o", default_provider="openai") == _specs.ModelSpec(
        "openai", "gpt-4o"
    )
    with pytest.raises(ProviderNotFound):
        _specs.parse_spec("gpt-4o")


@pytest.mark.parametrize("bad", ["", "   ", None, 3])
def test_empty_spec_is_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="provider:model"):
        _specs.parse_spec(bad)  # type: ignore[arg-type]


def test_every_builtin_preset_is_registered() -> None:
    names = set(_specs.known_providers())
    required = {
        "openai",
        "azure-openai",
        "groq",
        "together",
        "mistral",
        "xai",
        "perplexity",
        "deepseek",
        "openrouter",
        "fireworks",
        "huggingface",
        "vllm",
        "lmstudio",
        "llamacpp",
        "openai-compatible",
        "local",
    }
    assert required <= names
    for name in required - {"local"}:
        assert _specs.get_profile(name).adapter == "agency.providers.openai:OpenAIAdapter"


def test_register_provider_and_duplicates() -> None:
    profile = ProviderProfile(
        name="acme-test", adapter="agency.providers.openai:OpenAIAdapter", base_url="http://x"
    )
    _specs.register_provider(profile)
    try:
        assert _specs.get_profile("acme-test") is profile
        assert _specs.parse_spec("acme-test:m1").provider == "acme-test"
        other = ProviderProfile(name="acme-test", adapter="x:Y")
        with pytest.raises(ConfigError, match="already registered"):
            _specs.register_provider(other)
        _specs.register_provider(other, replace=True)
        assert _specs.get_profile("acme-test") is other
        with pytest.raises(ConfigError, match="not installed"):
            _specs.load_adapter_class(other)
    finally:
        _specs._registry.pop("acme-test", None)


def test_public_api_is_sorted_lazy_and_complete() -> None:
    import agency

    assert agency.__all__ == sorted(agency.__all__) == sorted(agency._EXPORTS)
    for name in agency.__all__:
        assert getattr(agency, name) is not None
    assert callable(agency.chat_model) and callable(agency.embeddings)


def test_import_agency_is_light() -> None:
    """`import agency` loads none of the heavy libraries; they come on first use."""
    import subprocess
    import sys

    code = (
        "import sys, agency; heavy = [m for m in ('httpx', 'langchain_core', 'llama_cpp', 'numpy', "
        "'wordllama', 'pydantic', 'tenacity') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_host_without_scheme_or_port_gets_the_profile_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agency.providers._profile import Connection

    profile = _specs.get_profile("ollama")
    monkeypatch.delenv("OLLAMA_API_URL", raising=False)
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box")
    assert Connection.resolve(profile).base_url == "http://gpu-box:11434"
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:8080")
    assert Connection.resolve(profile).base_url == "http://0.0.0.0:8080"
    monkeypatch.setenv("OLLAMA_HOST", "https://ollama.example")
    assert Connection.resolve(profile).base_url == "https://ollama.example"
