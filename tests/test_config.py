"""agency.config: TOML and environment configuration, validation errors, secret hygiene."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from agency.config import (
    AgencyConfig,
    BudgetConfig,
    FallbackConfig,
    ProviderEntry,
    config_from_env,
    load_config,
)
from agency.errors import ConfigError
from agency.memory.config import CacheConfig, MemoryConfig

SECRET = "sk-test-SECRET123"

EXAMPLE = """
[llm]
default_provider = "openai"
timeout = 60
max_retries = 2

[[llm.providers]]
name = "openai-main"
provider = "openai"
api_key = "${OPENAI_API_KEY}"
base_url = "https://api.openai.com/v1"
text_model = "gpt-4o-mini"
embedding_model = "text-embedding-3-small"
max_tokens = 1024
temperature = 0.7
priority = 1

[[llm.providers]]
provider = "groq"
api_key = "${GROQ_API_KEY}"
text_model = "${GROQ_MODEL:-llama-3.3-70b-versatile}"
weight = 3
rpm = 30
timeout = 10
headers = { "X-Title" = "agency", Authorization = "Bearer hdr-SECRET456" }

[llm.fallback]
enabled = true
strategy = "weighted"
rules = [{ condition = "rate_limit", fallback_providers = ["groq", "mistral:mistral-small-latest"] }]

[llm.routing]
planner = ["openai-main", "groq"]
coder = ["deepseek:deepseek-chat"]

[llm.cache]
enabled = true
threshold = 0.9

[llm.budget]
max_cost_per_request = 0.05
roles = { planner = 1.5 }

[agents.roles.researcher]
description = "${RESEARCH_DESCRIPTION:-Finds and cites sources}"
examples = ["Find papers on tides", "Cite three sources on bees", "Survey work on caching"]
"""


def write(tmp_path: Path, text: str, name: str = "agency.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> tuple[str, Path]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    return str(info.value), path


# --------------------------------------------------------------------------- valid files


def test_example_parses_with_env_expansion(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    cfg = load_config(path, env={"OPENAI_API_KEY": SECRET})

    assert cfg.source == str(path)
    main, groq = cfg.llm.providers
    assert (main.name, main.provider, main.text_model) == ("openai-main", "openai", "gpt-4o-mini")
    assert isinstance(main.api_key, SecretStr) and main.api_key.get_secret_value() == SECRET
    assert (main.max_tokens, main.temperature, main.priority) == (1024, 0.7, 1)
    assert main.timeout == 60 and main.max_retries == 2  # inherited from [llm]
    assert groq.name == "groq" and groq.text_model == "llama-3.3-70b-versatile"  # ${VAR:-default}
    assert (groq.weight, groq.rpm, groq.timeout, groq.priority) == (3, 30, 10, 100)
    assert groq.api_key is None and groq.unset_api_key_env == "GROQ_API_KEY"
    assert cfg.llm.fallback == FallbackConfig.model_validate(
        {
            "enabled": True,
            "strategy": "weighted",
            "rules": [
                {
                    "condition": "rate_limit",
                    "fallback_providers": ["groq", "mistral:mistral-small-latest"],
                }
            ],
        }
    )
    assert cfg.llm.routing == {
        "planner": ["openai-main", "groq"],
        "coder": ["deepseek:deepseek-chat"],
    }
    assert cfg.section("llm.cache") == CacheConfig(enabled=True, threshold=0.9)
    assert cfg.llm.budget == BudgetConfig(max_cost_per_request=0.05, roles={"planner": 1.5})
    researcher = cfg.section("agents")["roles"]["researcher"]
    assert researcher["description"] == "Finds and cites sources"  # ${VAR:-default}
    assert cfg.section("memory") == MemoryConfig()  # an absent table is its defaults


def test_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk_fromprocessenv1")  # read when the entry is used
    cfg = load_config(
        write(tmp_path, EXAMPLE), env={"OPENAI_API_KEY": SECRET, "GROQ_MODEL": "qwen"}
    )
    main = cfg.default()
    assert main is cfg.provider("openai-main") is cfg.provider("openai")  # name, then provider
    assert main.spec == "openai:gpt-4o-mini"
    assert main.embedding_spec == "openai:text-embedding-3-small"
    params = main.model_params()
    assert params.pop("api_key").get_secret_value() == SECRET
    assert params == {
        "base_url": "https://api.openai.com/v1",
        "temperature": 0.7,
        "max_tokens": 1024,
        "timeout": 60.0,
        "max_retries": 2,
    }
    emb = main.embedding_params()
    assert set(emb) == {"api_key", "base_url", "timeout", "max_retries"}
    groq = cfg.provider("groq")
    assert groq.spec == "groq:qwen"
    groq_params = groq.model_params()
    assert groq_params["default_headers"]["X-Title"] == "agency"
    assert groq_params["api_key"].get_secret_value() == "gsk_fromprocessenv1"
    with pytest.raises(ConfigError, match="did you mean 'groq'"):
        cfg.provider("grok")


def test_default_is_lowest_priority_without_default_provider() -> None:
    cfg = AgencyConfig.from_dict(
        {
            "llm": {
                "providers": [
                    {"provider": "groq", "priority": 5},
                    {"provider": "mistral", "priority": 2},
                ]
            }
        },
        env={},
    )
    assert cfg.default().name == "mistral"
    assert cfg.llm.ordered()[-1].name == "groq"
    assert cfg.default().spec == "mistral:mistral-small-latest"  # the profile's default model


def test_unset_api_key_is_reported_at_use_time(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = AgencyConfig.from_toml_str(
        '[[llm.providers]]\nprovider = "openai"\napi_key = "${MY_OPENAI_KEY}"\n',
        source="inline",
        env={},
    )
    entry = cfg.default()
    assert entry.api_key is None and entry.unset_api_key_env == "MY_OPENAI_KEY"
    monkeypatch.delenv("MY_OPENAI_KEY", raising=False)
    with pytest.raises(ConfigError, match="MY_OPENAI_KEY") as info:
        entry.model_params()
    assert "export MY_OPENAI_KEY" in str(info.value)
    assert info.value.source == "inline" and info.value.key == "llm.providers[0].api_key"
    monkeypatch.setenv("MY_OPENAI_KEY", SECRET)  # set later: picked up when used
    assert entry.model_params()["api_key"].get_secret_value() == SECRET


def test_expansion_reads_process_env_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENCY_TEST_MODEL", "gpt-4.1")
    cfg = AgencyConfig.from_toml_str(
        '[llm]\nprovider = "openai"\ntext_model = "${AGENCY_TEST_MODEL}"\n'
    )
    assert cfg.default().text_model == "gpt-4.1"
    literal = AgencyConfig.from_dict(
        {"agents": {"roles": {"code": {"description": "cost $${X}"}}}}, env={}
    )
    assert literal.section("agents")["roles"]["code"]["description"] == "cost ${X}"


def test_legacy_single_provider_form(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            """
[llm]
provider = "groq"
api_key = "${GROQ_API_KEY}"
model = "llama-3.1-8b-instant"
embedding_model = "none-yet"
max_tokens = 256
temperature = 0.2
timeout = 30
""",
        ),
        env={"GROQ_API_KEY": "gsk_abcdefgh12345"},
    )
    (entry,) = cfg.llm.providers
    assert (entry.name, entry.provider, entry.text_model) == (
        "groq",
        "groq",
        "llama-3.1-8b-instant",
    )
    assert (entry.max_tokens, entry.temperature, entry.timeout) == (256, 0.2, 30)
    assert entry.api_key is not None and entry.api_key.get_secret_value() == "gsk_abcdefgh12345"
    assert cfg.llm.timeout == 30 and cfg.default() is entry


def test_empty_file_defaults_to_local(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[memory]\nmode = 'ephemeral'\n"), env={})
    assert [e.spec for e in cfg.llm.providers] == ["local:smollm2"]
    assert cfg.default().embedding_spec == "local:wordllama"
    assert cfg.section("memory") == MemoryConfig(mode="ephemeral")


def test_memory_table_is_checked(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, "[memory]\npath = 'data/mem'\nembeddings = 'local:minilm'\n"), env={}
    )
    assert cfg.section("memory") == MemoryConfig(path="data/mem", embeddings="local:minilm")
    bad = {
        "[memory]\nbackend = 'chroma'\n": ("[memory.backend]", "known keys: embeddings, host"),
        "[memory]\nmode = 'disk'\n": ("[memory.mode]", "'persistent', 'ephemeral' or 'server'"),
        "[memory]\nmode = 'server'\npath = 'x'\n": ("[memory]", 'set mode = "persistent"'),
        "[memory]\nport = 70000\n": ("[memory.port]", "< 65536"),
        "[memory]\nembeddings = 'nope:x'\n": ("[memory.embeddings]", "provider:model"),
    }
    for text, (where, fix) in bad.items():
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, text), env={})
        message = str(info.value)
        assert "agency.toml" in message and where in message and fix in message, message


# --------------------------------------------------------------------------- errors


def assert_names(message: str, path: Path, key: str) -> None:
    assert str(path) in message
    assert key in message
    assert "fix" in message


def test_typo_key_suggests_closest(tmp_path: Path) -> None:
    msg, path = error_for(tmp_path, '[[llm.providers]]\nprovider = "openai"\ntempreature = 0.5\n')
    assert_names(msg, path, "llm.providers[0].tempreature")
    assert "did you mean 'temperature'?" in msg


def test_typo_in_reserved_section(tmp_path: Path) -> None:
    msg, path = error_for(tmp_path, "[llm.cache]\nenabeld = true\n")
    assert_names(msg, path, "llm.cache.enabeld")
    assert "did you mean 'enabled'?" in msg


def test_wrong_type(tmp_path: Path) -> None:
    msg, path = error_for(tmp_path, '[[llm.providers]]\nprovider = "openai"\nmax_tokens = "lots"\n')
    assert_names(msg, path, "llm.providers[0].max_tokens")
    assert "'lots'" in msg and "an integer > 0" in msg


def test_bool_is_not_a_number(tmp_path: Path) -> None:
    msg, path = error_for(tmp_path, '[llm]\nprovider = "openai"\nmax_tokens = true\n')
    assert_names(msg, path, "llm.max_tokens")
    assert "true" in msg


def test_temperature_out_of_range(tmp_path: Path) -> None:
    msg, path = error_for(
        tmp_path,
        '[[llm.providers]]\nprovider = "openai"\n'
        '[[llm.providers]]\nname = "b"\nprovider = "openai"\ntemperature = 3.5\n',
    )
    assert_names(msg, path, "llm.providers[1].temperature")
    assert "3.5" in msg and ">= 0 and <= 2" in msg


def test_unknown_provider_suggests(tmp_path: Path) -> None:
    msg, path = error_for(tmp_path, '[[llm.providers]]\nprovider = "opnai"\n')
    assert_names(msg, path, "llm.providers[0].provider")
    assert "unknown provider 'opnai'" in msg and "did you mean 'openai'?" in msg
    assert "groq" in msg and "local" in msg  # known providers are listed


def test_missing_provider(tmp_path: Path) -> None:
    msg, path = error_for(tmp_path, '[[llm.providers]]\ntext_model = "gpt-4o"\n')
    assert_names(msg, path, "llm.providers[0].provider")
    assert "required key is missing" in msg and "providers[0].name" not in msg  # name defaults


def test_duplicate_names(tmp_path: Path) -> None:
    msg, path = error_for(
        tmp_path,
        '[[llm.providers]]\nprovider = "openai"\n'
        '[[llm.providers]]\nprovider = "openai"\ntext_model = "gpt-4o"\n',
    )
    assert_names(msg, path, "llm.providers[1].name")
    assert "duplicate name 'openai'" in msg and "unique name" in msg


def test_bad_default_provider(tmp_path: Path) -> None:
    msg, path = error_for(
        tmp_path, '[llm]\ndefault_provider = "gorq"\n[[llm.providers]]\nprovider = "groq"\n'
    )
    assert_names(msg, path, "llm.default_provider")
    assert "'gorq'" in msg and "did you mean 'groq'?" in msg


def test_bad_routing_entry(tmp_path: Path) -> None:
    msg, path = error_for(
        tmp_path,
        '[[llm.providers]]\nprovider = "groq"\n[llm.routing]\nplanner = ["groq", "opnai:gpt-4o"]\n',
    )
    assert_names(msg, path, "llm.routing.planner[1]")
    assert "'opnai:gpt-4o'" in msg and "did you mean 'openai'?" in msg
    assert "planner[0]" not in msg


def test_bad_fallback_values(tmp_path: Path) -> None:
    msg, path = error_for(
        tmp_path,
        '[llm.fallback]\nstrategy = "fastest"\nmax_attempts = 0\n'
        'rules = [{ condition = "oops" }]\n',
    )
    assert str(path) in msg and "3 problems" in msg
    for key in (
        "llm.fallback.strategy",
        "llm.fallback.max_attempts",
        "llm.fallback.rules[0].condition",
    ):
        assert key in msg
    assert "'round-robin'" in msg


def test_several_problems_in_one_error(tmp_path: Path) -> None:
    msg, path = error_for(
        tmp_path,
        '[[llm.providers]]\nprovider = "opnai"\ntemperature = -1\nbase_url = "api.example.com"\n',
    )
    lines = msg.splitlines()
    assert "3 problems" in lines[0] and str(path) in lines[0]
    for key in ("provider", "temperature", "base_url"):
        (line,) = [ln for ln in lines if f"llm.providers[0].{key}:" in ln]
        assert "fix:" in line


def test_unset_variable_outside_api_key(tmp_path: Path) -> None:
    msg, path = error_for(tmp_path, '[llm]\nprovider = "openai"\nbase_url = "${MY_BASE_URL}"\n')
    assert_names(msg, path, "llm.base_url")
    assert "MY_BASE_URL is not set" in msg and "${MY_BASE_URL:-default}" in msg
    assert "not a URL" not in msg  # one problem, reported once


def test_malformed_reference(tmp_path: Path) -> None:
    msg, path = error_for(tmp_path, '[llm]\nprovider = "openai"\ntext_model = "${bad-name}"\n')
    assert_names(msg, path, "llm.text_model")
    assert "malformed" in msg


def test_api_key_under_llm_with_provider_list(tmp_path: Path) -> None:
    msg, path = error_for(
        tmp_path, f'[llm]\napi_key = "{SECRET}"\n[[llm.providers]]\nprovider = "openai"\n'
    )
    assert_names(msg, path, "llm.api_key")
    assert "[[llm.providers]]" in msg and SECRET not in msg


def test_toml_syntax_error(tmp_path: Path) -> None:
    msg, path = error_for(tmp_path, f'[llm]\napi_key = "{SECRET}"\nprovider = = "openai"\n')
    assert str(path) in msg
    assert "line 3" in msg and "column" in msg
    assert "fix the TOML syntax" in msg
    assert SECRET not in msg


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg and "not found" in msg
    assert "agency.toml" in msg and "environment variables" in msg


def test_agency_config_env_var_points_at_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    with pytest.raises(ConfigError, match="AGENCY_CONFIG") as info:
        load_config(env={"AGENCY_CONFIG": str(path)})
    assert str(path) in str(info.value)


def test_load_config_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(env={}).source == "environment"
    write(tmp_path, '[llm]\nprovider = "groq"\n')
    assert load_config(env={}).default().provider == "groq"
    other = write(tmp_path, '[llm]\nprovider = "mistral"\n', name="other.toml")
    assert load_config(env={"AGENCY_CONFIG": str(other)}).default().provider == "mistral"


# --------------------------------------------------------------------------- secrets


def test_secrets_never_in_repr_or_dumps(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, EXAMPLE), env={"OPENAI_API_KEY": SECRET})
    for text in (
        repr(cfg),
        str(cfg),
        cfg.model_dump_json(),
        str(cfg.model_dump()),
        repr(cfg.default()),
        str(cfg.default().model_params()),
    ):
        assert SECRET not in text
        assert "hdr-SECRET456" not in text  # auth-like headers are masked too
    assert "**********" in cfg.model_dump_json()


def test_secret_not_in_error_messages(tmp_path: Path) -> None:
    msg, path = error_for(
        tmp_path,
        f"""
[[llm.providers]]
provider = "openai"
api_key = "{SECRET}"
temperature = "hot"
[[llm.providers]]
provider = "openai"
api_kye = "{SECRET}"
""",
    )
    assert str(path) in msg and "llm.providers[0].temperature" in msg
    assert "llm.providers[1].api_kye" in msg and "did you mean 'api_key'?" in msg
    assert SECRET not in msg and "SECRET123" not in msg


def test_secret_from_env_not_in_error(tmp_path: Path) -> None:
    msg, _ = error_for(
        tmp_path,
        '[llm]\nprovider = "openai"\napi_key = "${K}"\nmax_tokens = 0\n',
        env={"K": "plainsecretvalue99"},
    )
    assert "plainsecretvalue99" not in msg and "llm.max_tokens" in msg


# --------------------------------------------------------------------------- environment


def test_env_empty_defaults_to_local() -> None:
    cfg = config_from_env({})
    (entry,) = cfg.llm.providers
    assert (entry.provider, entry.text_model, entry.embedding_model) == (
        "local",
        "smollm2",
        "wordllama",
    )
    assert entry.spec == "local:smollm2" and entry.model_params() == {}
    assert cfg.source == "environment" and cfg.llm.fallback.enabled is False


def test_env_quick_start() -> None:
    cfg = config_from_env(
        {
            "OPENAI_API_KEY": SECRET,
            "OPENAI_MODEL": "gpt-4.1-mini",
            "OPENAI_EMBEDDING_MODEL": "text-embedding-3-large",
            "AZURE_OPENAI_API_KEY": "az-key-0000",
            "AZURE_OPENAI_ENDPOINT": "https://me.openai.azure.com",
            "AZURE_OPENAI_MODEL": "gpt-4o",
            "VLLM_BASE_URL": "localhost:8000/v1",
            "DEFAULT_LLM_PROVIDER": "azure-openai",
            "ENABLE_LOAD_BALANCING": "true",
            "LOAD_BALANCING_STRATEGY": "weighted",
            "MAX_COST_PER_REQUEST": "0.25",
            "ENABLE_LLM_CACHING": "yes",
            "LLM_CACHE_TTL": "3600",
        }
    )
    assert sorted(e.name for e in cfg.llm.providers) == ["azure-openai", "openai", "vllm"]
    openai = cfg.provider("openai")
    assert openai.spec == "openai:gpt-4.1-mini"
    assert openai.embedding_spec == "openai:text-embedding-3-large"
    assert openai.api_key is not None and openai.api_key.get_secret_value() == SECRET
    azure = cfg.default()
    assert azure.name == "azure-openai" and azure.spec == "azure-openai:gpt-4o"
    assert azure.base_url == "https://me.openai.azure.com"
    assert cfg.provider("vllm").base_url == "http://localhost:8000/v1"
    assert (cfg.llm.fallback.enabled, cfg.llm.fallback.strategy) == (True, "weighted")
    assert cfg.llm.budget.max_cost_per_request == 0.25
    cache = cfg.section("llm.cache")
    assert (cache.enabled, cache.ttl_s) == (True, 3600)
    assert SECRET not in repr(cfg) and SECRET not in cfg.model_dump_json()


def test_env_cost_optimization_and_default_without_key() -> None:
    cfg = config_from_env({"ENABLE_COST_OPTIMIZATION": "1", "DEFAULT_LLM_PROVIDER": "groq"})
    assert (cfg.llm.fallback.enabled, cfg.llm.fallback.strategy) == (True, "cost")
    assert cfg.default().provider == "groq" and cfg.default().api_key is None


def test_env_default_local_alongside_keys() -> None:
    cfg = config_from_env({"DEFAULT_LLM_PROVIDER": "local", "GROQ_API_KEY": "gsk_abcdefgh12345"})
    assert sorted(e.name for e in cfg.llm.providers) == ["groq", "local"]
    assert cfg.default().spec == "local:smollm2"


def test_env_uses_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "DEFAULT_LLM_PROVIDER", "MAX_COST_PER_REQUEST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MISTRAL_API_KEY", "mistral-key-1234")
    monkeypatch.setenv("MISTRAL_MODEL", "mistral-large-latest")
    assert config_from_env().provider("mistral").spec == "mistral:mistral-large-latest"


def test_env_bad_values_name_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_env(
            {
                "MAX_COST_PER_REQUEST": "abc",
                "ENABLE_LLM_CACHING": "maybe",
                "DEFAULT_LLM_PROVIDER": "opnai",
                "LOAD_BALANCING_STRATEGY": "fastest",
            }
        )
    msg = str(info.value)
    assert msg.startswith("environment") and "4 problems" in msg
    assert "MAX_COST_PER_REQUEST: expected a number >= 0, got 'abc'" in msg
    assert (
        "ENABLE_LLM_CACHING" in msg
        and "DEFAULT_LLM_PROVIDER" in msg
        and "did you mean 'openai'?" in msg
    )
    assert "LOAD_BALANCING_STRATEGY" in msg and "round-robin" in msg


def test_env_single_bad_value() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_env({"LLM_CACHE_TTL": "0"})
    assert info.value.key == "LLM_CACHE_TTL" and info.value.source == "environment"
    assert info.value.fix is not None and "LLM_CACHE_TTL" in info.value.fix


def test_direct_model_construction_validates() -> None:
    entry = ProviderEntry(provider="OpenAI", api_key=SecretStr(SECRET))
    assert entry.name == "openai" and entry.provider == "openai"
    assert SECRET not in repr(entry)
    with pytest.raises(ValueError, match="did you mean 'openai'"):
        ProviderEntry(provider="opnai")


def test_config_entry_drives_a_working_model(tmp_path: Path, openai_fake) -> None:  # type: ignore[no-untyped-def]
    """A provider entry from TOML builds a model that really talks to its server."""
    import agency

    path = tmp_path / "agency.toml"
    path.write_text(
        f"""
[[llm.providers]]
name = "fake"
provider = "openai"
api_key = "${{FAKE_KEY}}"
base_url = "{openai_fake.base_url}"
text_model = "gpt-4o-mini"
max_tokens = 7
temperature = 0.25
""",
        encoding="utf-8",
    )
    cfg = agency.load_config(path, env={"FAKE_KEY": "sk-test"})
    entry = cfg.default()
    llm = agency.chat_model(entry.spec, **entry.model_params())
    assert llm.invoke("hello config").text
    body = openai_fake.bodies()[-1]
    assert (body["model"], body["max_completion_tokens"], body["temperature"]) == (
        "gpt-4o-mini",
        7,
        0.25,
    )
    assert openai_fake.requests[-1].headers["authorization"] == "Bearer sk-test"


def test_env_quick_start_native_providers() -> None:
    """The native providers' documented variables configure them with no file."""
    cfg = config_from_env(
        {
            "ANTHROPIC_API_KEY": "sk-ant-test",
            "GEMINI_API_KEY": "gm-test",
            "OLLAMA_HOST": "gpu-box",
            "OLLAMA_MODEL": "llama3.2:3b",
            "COHERE_API_KEY": "co-test",
            "REPLICATE_API_TOKEN": "r8-test",
            "VOYAGE_API_KEY": "pa-test",
        }
    )
    names = {e.name for e in cfg.llm.providers}
    assert {"anthropic", "gemini", "ollama", "cohere", "replicate", "voyage"} <= names
    ollama = cfg.provider("ollama")
    assert ollama.base_url == "http://gpu-box:11434" and ollama.spec == "ollama:llama3.2:3b"
    assert cfg.provider("gemini").api_key.get_secret_value() == "gm-test"  # type: ignore[union-attr]
    assert cfg.provider("anthropic").spec == "anthropic:claude-sonnet-4-6"


def test_the_readme_examples_load(tmp_path: Path) -> None:
    """Every TOML block of the README is a configuration that loads, as users will paste it."""
    import re

    readme = Path(__file__).resolve().parents[1] / "README.md"
    blocks = re.findall(r"```toml\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 2
    env = {"OPENAI_API_KEY": SECRET, "ANTHROPIC_API_KEY": "sk-ant-test", "GROQ_API_KEY": "gsk_t"}
    for i, block in enumerate(blocks):
        cfg = load_config(write(tmp_path, block, f"readme{i}.toml"), env=env)
        assert cfg.llm.providers, f"README TOML block {i} configures no provider"
