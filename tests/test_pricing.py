"""The price table, name resolution, the cost of a call and the estimate before one."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Iterator
from datetime import date
from importlib import resources
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel

from agency import pricing
from agency.errors import ConfigError
from agency.pricing import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    EXPECTED_OUTPUT_TOKENS,
    IMAGE_TOKENS,
    ModelPrice,
    cost_of,
    estimate_cost,
    estimate_tokens,
    price_for,
    priced_models,
    worst_case_cost,
)

FREE_PROVIDERS = ["local", "ollama", "vllm", "lmstudio", "llamacpp"]


def _raw_table() -> dict[str, Any]:
    text = resources.files("agency").joinpath("data", "pricing.toml").read_text("utf-8")
    return tomllib.loads(text)


RAW = _raw_table()
PRICED = [
    (provider, model)
    for provider, table in RAW.items()
    for model, entry in table.get("models", {}).items()
    if "same_as" not in entry
]


@pytest.fixture(autouse=True)
def _heuristic_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count tokens by the heuristic whatever is installed (tiktoken may or may not be)."""
    monkeypatch.setattr(pricing, "_exact_counter", lambda provider, model: None)


def _exact_words(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], int]:
    """Pretend OpenAI models have an exact tokenizer: one token per word."""

    def counter(text: str) -> int:
        return len(text.split())

    def exact(provider: str | None, model: str | None) -> Callable[[str], int] | None:
        return counter if provider in {"openai", "azure-openai"} else None

    monkeypatch.setattr(pricing, "_exact_counter", exact)
    return counter


# --- the data file ----------------------------------------------------------------------------


def test_every_provider_is_dated_and_sourced_or_free_or_an_alias() -> None:
    for name, table in RAW.items():
        if table.get("free"):
            assert "models" not in table, name
            continue
        if "alias_of" in table:
            assert table["alias_of"] in RAW, name
            continue
        if "vendors" in table:
            assert all(target in RAW for target in table["vendors"].values()), name
            continue
        as_of = date.fromisoformat(table["as_of"])
        assert date(2024, 1, 1) <= as_of <= date.today(), name
        assert table["source"].startswith("https://"), name
        assert table["models"], name


@pytest.mark.parametrize(("provider", "model"), PRICED)
def test_every_entry_is_consistent(provider: str, model: str) -> None:
    entry = RAW[provider]["models"][model]
    assert entry["input"] > 0
    assert entry["output"] >= 0
    if "cached_input" in entry:
        assert 0 <= entry["cached_input"] <= entry["input"]
    if "cache_write" in entry:
        assert entry["cache_write"] >= entry["input"]
    if "context_window" in entry and "max_output" in entry:
        assert 0 < entry["max_output"] <= entry["context_window"]
    if "as_of" in entry:
        date.fromisoformat(entry["as_of"])
    long = entry.get("long_context")
    if long is not None:
        assert 0 < long["above"] < entry.get("context_window", math.inf)
        assert long["input"] >= entry["input"]
        assert long["output"] >= entry["output"]
    # Each name resolves to its own entry (no other name shadows it).
    price = price_for(provider, model)
    assert price is not None
    assert (price.input, price.output) == (entry["input"], entry["output"])
    assert price.cached_input == entry.get("cached_input")
    assert price.as_of == entry.get("as_of", RAW[provider].get("as_of"))


def test_brief_models_are_all_priced() -> None:
    wanted = {
        "openai": [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1",
            "gpt-4.1-mini",
            "gpt-4.1-nano",
            "o1",
            "o3",
            "o3-mini",
            "o4-mini",
            "gpt-5",
            "gpt-5-mini",
            "gpt-5-nano",
            "text-embedding-3-small",
            "text-embedding-3-large",
        ],
        "anthropic": [
            "claude-opus-4-1",
            "claude-sonnet-4-5",
            "claude-sonnet-4",
            "claude-3-7-sonnet",
            "claude-3-5-haiku",
            "claude-haiku-4-5",
            "claude-sonnet-4-6",
        ],
        "gemini": [
            "gemini-2.5-pro",
            "gemini-2.5-flash",
            "gemini-2.5-flash-lite",
            "gemini-2.0-flash",
            "gemini-2.0-flash-lite",
            "gemini-embedding-001",
        ],
        "groq": ["llama-3.3-70b-versatile", "llama-3.1-8b-instant"],
        "deepseek": ["deepseek-chat", "deepseek-reasoner"],
        "xai": ["grok-3-mini", "grok-4"],
        "cohere": ["command-r", "command-r-plus", "command-a-03-2025", "embed-v4.0"],
        "mistral": ["mistral-small-latest", "mistral-large-latest", "mistral-embed"],
        "voyage": ["voyage-3.5"],
    }
    missing = [f"{p}:{m}" for p, models in wanted.items() for m in models if not price_for(p, m)]
    assert not missing


def test_deepseek_has_a_cache_hit_price() -> None:
    for model in ("deepseek-chat", "deepseek-reasoner"):
        price = price_for("deepseek", model)
        assert price is not None
        assert price.cached_input is not None
        assert price.cached_input < price.input


def test_priced_models_lists_the_table_after_aliases() -> None:
    assert "gpt-4o-mini" in priced_models("openai")
    assert priced_models("azure-openai") == priced_models("openai")
    assert priced_models("ollama") == []
    assert priced_models("no-such-provider") == []


def test_a_malformed_entry_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="as_of"):
        pricing._parse_provider("x", {"as_of": "2026-13-01", "models": {}})
    with pytest.raises(ConfigError, match="input"):
        pricing._parse_provider("x", {"as_of": "2026-01-01", "models": {"m": {"output": 1}}})
    with pytest.raises(ConfigError, match="non-negative"):
        pricing._parse_provider(
            "x", {"as_of": "2026-01-01", "models": {"m": {"input": -1, "output": 1}}}
        )
    with pytest.raises(ConfigError, match="unknown model"):
        pricing._parse_provider("x", {"as_of": "2026-01-01", "models": {"m": {"same_as": "n"}}})


# --- resolution -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "name", "base"),
    [
        ("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("openai", "gpt-4.1-2025-04-14", "gpt-4.1"),
        ("openai", "o3-pro-2025-06-10", "o3-pro"),
        ("openai", "gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("openai", "GPT-4o-Mini", "gpt-4o-mini"),
        ("openai", "gpt-5-codex", "gpt-5"),
        ("openai", "gpt-5-chat-latest", "gpt-5"),
        ("openai", "codex-mini-latest", "codex-mini"),
        ("anthropic", "claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("anthropic", "claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("anthropic", "claude-opus-4-20250514", "claude-opus-4"),
        ("anthropic", "claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("gemini", "models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("gemini", "gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("cohere", "command-a-03-2025", "command-a"),
        ("cohere", "command-r7b-12-2024", "command-r7b"),
        ("mistral", "mistral-large-latest", "mistral-large"),
        ("mistral", "mistral-large-2512", "mistral-large"),
        ("xai", "grok-4-0709", "grok-4"),
        ("xai", "grok-4-fast-reasoning", "grok-4-fast"),
        ("groq", "moonshotai/kimi-k2-instruct-0905", "moonshotai/kimi-k2-instruct"),
        ("fireworks", "accounts/fireworks/models/llama-v3p1-8b-instruct", "llama-v3p1-8b-instruct"),
        ("fireworks", "accounts/fireworks/models/deepseek-r1-0528", "deepseek-r1"),
        (
            "together",
            "meta-llama/Llama-3.3-70B-Instruct-Turbo",
            "meta-llama/llama-3.3-70b-instruct-turbo",
        ),
    ],
)
def test_dated_and_aliased_names_resolve_to_the_base_model(
    provider: str, name: str, base: str
) -> None:
    assert base in priced_models(provider)
    price = price_for(provider, name)
    assert price is not None
    assert price == price_for(provider, base)


def test_an_exact_snapshot_entry_wins_over_suffix_stripping() -> None:
    # The first gpt-4o snapshot kept its launch price; later ones are gpt-4o's.
    launch, current = price_for("openai", "gpt-4o-2024-05-13"), price_for("openai", "gpt-4o")
    assert launch is not None and current is not None
    assert launch.input > current.input
    assert price_for("openai", "gpt-4o-2024-08-06") == current
    assert price_for("mistral", "mistral-large-2411") != price_for("mistral", "mistral-large")


def test_a_dotted_version_is_a_different_model_not_a_prefix() -> None:
    assert price_for("openai", "gpt-5.1") != price_for("openai", "gpt-5.2")
    assert price_for("openai", "gpt-5.99") is None  # never priced as gpt-5
    assert price_for("openai", "gpt-4oo") is None  # no boundary after the prefix
    assert price_for("openai", "gpt-4o-search-preview") == price_for("openai", "gpt-4o")


def test_provider_aliases_routers_and_unknowns() -> None:
    assert price_for("azure-openai", "gpt-4.1") == price_for("openai", "gpt-4.1")
    assert price_for("openrouter", "openai/gpt-4o-mini") == price_for("openai", "gpt-4o-mini")
    # Routers spell Claude versions with dots; the Anthropic table has dashes.
    sonnet = price_for("anthropic", "claude-sonnet-4-5")
    assert price_for("openrouter", "anthropic/claude-sonnet-4.5") == sonnet
    assert price_for("openrouter", "google/gemini-2.5-pro") == price_for("gemini", "gemini-2.5-pro")
    assert price_for("openrouter", "meta-llama/llama-3.3-70b-instruct:free") == ModelPrice(0, 0)
    assert price_for("openrouter", "unknown-vendor/model") is None
    assert price_for("openai", "no-such-model") is None
    assert price_for("openai", "ft:gpt-4o-mini-2024-07-18:org::abc") is None  # fine-tunes differ
    assert price_for("no-such-provider", "gpt-4o") is None
    assert price_for("openai-compatible", "gpt-4o") is None  # any server: price unknown
    assert price_for("openai", None) is None  # no model named: nothing to price
    assert price_for("ollama", None) == ModelPrice(0, 0)


@pytest.mark.parametrize("provider", FREE_PROVIDERS)
def test_free_providers_price_every_model_at_zero(provider: str) -> None:
    price = price_for(provider, "whatever-model:7b")
    assert price is not None
    assert price.is_free
    usage = {"input_tokens": 12_345, "output_tokens": 678}
    assert cost_of(usage, price) == 0.0


# --- cost of a finished call ----------------------------------------------------------------


def test_cost_of_gpt_4o_mini_with_cached_tokens() -> None:
    # 600 uncached x $0.15 + 400 cached x $0.075 + 200 out x $0.60, per 1M tokens.
    usage = {
        "input_tokens": 1000,
        "output_tokens": 200,
        "total_tokens": 1200,
        "input_token_details": {"cache_read": 400},
    }
    assert cost_of(usage, price_for("openai", "gpt-4o-mini")) == pytest.approx(240 / 1e6)


def test_cost_of_claude_with_cache_reads_writes_and_reasoning() -> None:
    # 1200 plain x $3 + 500 read x $0.30 + 300 written x $3.75 + 1000 out x $15, per 1M.
    # The 400 reasoning tokens are part of output_tokens already: not added again.
    usage = {
        "input_tokens": 2000,
        "output_tokens": 1000,
        "input_token_details": {"cache_read": 500, "cache_creation": 300},
        "output_token_details": {"reasoning": 400},
    }
    price = price_for("anthropic", "claude-sonnet-4-5-20250929")
    assert cost_of(usage, price) == pytest.approx(19_875 / 1e6)


def test_cost_of_deepseek_cache_hits() -> None:
    # 2000 miss x $0.14 + 8000 hit x $0.0028 + 500 out x $0.28, per 1M.
    usage = {
        "input_tokens": 10_000,
        "output_tokens": 500,
        "input_token_details": {"cache_read": 8000},
    }
    assert cost_of(usage, price_for("deepseek", "deepseek-chat")) == pytest.approx(442.4 / 1e6)


def test_cost_of_a_long_prompt_uses_the_long_context_prices() -> None:
    price = price_for("gemini", "gemini-2.5-pro")
    at_limit = {"input_tokens": 200_000, "output_tokens": 1000}
    past_it = {"input_tokens": 250_000, "output_tokens": 1000}
    # 200K x $1.25 + 1K x $10 at the threshold; 250K x $2.50 + 1K x $15 past it.
    assert cost_of(at_limit, price) == pytest.approx(0.26)
    assert cost_of(past_it, price) == pytest.approx(0.64)


def test_cost_of_adds_a_per_request_fee() -> None:
    # 200 tokens x $1 per 1M + Perplexity's $12 per 1000 requests.
    usage = {"input_tokens": 100, "output_tokens": 100}
    assert cost_of(usage, price_for("perplexity", "sonar")) == pytest.approx(0.0122)


def test_cost_of_embeddings_counts_input_only() -> None:
    usage = {"input_tokens": 1_000_000, "output_tokens": 0}
    assert cost_of(usage, price_for("openai", "text-embedding-3-small")) == pytest.approx(0.02)


def test_cost_of_without_price_or_usage_is_none_and_junk_counts_are_clamped() -> None:
    price = price_for("openai", "gpt-4o-mini")
    assert cost_of(None, price) is None
    assert cost_of({"input_tokens": 10, "output_tokens": 10}, None) is None
    # More cache reads than input tokens cannot be billed as more than the input.
    odd = {"input_tokens": 100, "output_tokens": None, "input_token_details": {"cache_read": 900}}
    assert cost_of(odd, price) == pytest.approx(100 * 0.075 / 1e6)
    assert cost_of({}, price) == 0.0


# --- estimates --------------------------------------------------------------------------------


def test_estimate_tokens_grows_with_text() -> None:
    sizes = [estimate_tokens([HumanMessage("word " * n)]) for n in (0, 10, 100, 1000)]
    assert sizes == sorted(sizes)
    assert len(set(sizes)) == len(sizes)
    assert sizes[3] - sizes[2] == pytest.approx(900 * 5 / 4, abs=1)


def test_estimate_tokens_counts_each_message_and_non_ascii_text() -> None:
    one = estimate_tokens([HumanMessage("abcd" * 10)])
    two = estimate_tokens([HumanMessage("abcd" * 5), HumanMessage("abcd" * 5)])
    assert two > one  # per-message framing
    assert estimate_tokens("abcd" * 10) == one  # a string is one user message
    # CJK characters are roughly a token each: far more than 4 per token.
    empty = estimate_tokens("")
    assert estimate_tokens("漢字" * 20) - empty >= 3 * (estimate_tokens("ab" * 20) - empty)


def test_estimate_tokens_counts_tools_schemas() -> None:
    messages = [SystemMessage("Be brief."), HumanMessage("What is the weather in Paris?")]
    small = {
        "type": "function",
        "function": {"name": "t", "parameters": {"type": "object", "properties": {}}},
    }

    class GetWeather(BaseModel):
        """Get the current weather for a city, with units and a detailed forecast."""

        city: str
        units: str = "metric"
        days: int = 1

    base = estimate_tokens(messages)
    with_small = estimate_tokens(messages, tools=[small])
    with_both = estimate_tokens(messages, tools=[small, GetWeather])
    assert base < with_small < with_both


def test_estimate_tokens_counts_images_and_tool_calls() -> None:
    text = HumanMessage(content=[{"type": "text", "text": "What is this?"}])
    image = HumanMessage(
        content=[
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 50_000}},
        ]
    )
    assert estimate_tokens([image]) - estimate_tokens([text]) == IMAGE_TOKENS
    call = AIMessage("", tool_calls=[{"name": "lookup", "args": {"q": "x" * 400}, "id": "1"}])
    reply = ToolMessage("result " * 50, tool_call_id="1")
    assert estimate_tokens([call]) > estimate_tokens([AIMessage("")]) + 90
    assert estimate_tokens([call, reply]) > estimate_tokens([call])


def test_estimate_tokens_uses_an_exact_tokenizer_for_openai(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counter = _exact_words(monkeypatch)
    text = "one two three four five six seven eight nine ten"
    exact = estimate_tokens([HumanMessage(text)], provider="openai", model="gpt-4o")
    heuristic = estimate_tokens([HumanMessage(text)], provider="anthropic", model="claude-3-haiku")
    assert exact - heuristic == counter(text) - math.ceil(len(text) / 4)


def test_tiktoken_unavailable_or_offline_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real lookup: tiktoken may be missing, or unable to download
    n = estimate_tokens([HumanMessage("hello world")], provider="openai", model="gpt-4o")
    assert n > 0


def test_estimate_cost_confidence_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    messages = [HumanMessage("Summarise the plot of Hamlet in two sentences.")]
    heuristic = estimate_cost("anthropic", "claude-3-5-haiku", messages, max_tokens=100)
    assert heuristic.confidence == "medium"
    unknown = estimate_cost("openai-compatible", "my-model", messages, max_tokens=100)
    assert (unknown.confidence, unknown.cost, unknown.worst_case) == ("low", None, None)
    # No max_tokens and no documented maximum: the output bound is a guess.
    guessed = estimate_cost("openai", "gpt-5.5", messages)
    assert guessed.confidence == "low"
    assert guessed.max_output_tokens == DEFAULT_MAX_OUTPUT_TOKENS
    # No max_tokens but a documented maximum: a real (loose) bound.
    ceiling = estimate_cost("anthropic", "claude-3-5-haiku", messages)
    assert (ceiling.confidence, ceiling.max_output_tokens) == ("medium", 8192)
    free = estimate_cost("ollama", "llama3.2", messages)
    assert (free.confidence, free.cost, free.worst_case) == ("high", 0.0, 0.0)

    _exact_words(monkeypatch)
    exact = estimate_cost("openai", "gpt-4o-mini", messages, max_tokens=100)
    assert exact.confidence == "high"
    assert estimate_cost("openai", "gpt-4o-mini", messages).confidence == "medium"
    with_image = [HumanMessage(content=[{"type": "image", "url": "https://example.com/cat.png"}])]
    assert estimate_cost("openai", "gpt-4o-mini", with_image, max_tokens=100).confidence == "medium"


def test_estimate_cost_numbers() -> None:
    messages = [HumanMessage("x" * 4000)]
    estimate = estimate_cost("openai", "gpt-4o-mini", messages, max_tokens=1000)
    prompt = estimate.prompt_tokens
    assert prompt == estimate_tokens(messages)
    assert estimate.cost == pytest.approx((prompt * 0.15 + EXPECTED_OUTPUT_TOKENS * 0.60) / 1e6)
    assert estimate.worst_case == pytest.approx((prompt * 0.15 + 1000 * 0.60) / 1e6)
    assert estimate.price == price_for("openai", "gpt-4o-mini")
    # Anthropic's cache writes cost more than input: the worst case assumes them.
    claude = estimate_cost("anthropic", "claude-haiku-4-5", messages, max_tokens=1000)
    assert claude.worst_case == pytest.approx((claude.prompt_tokens * 1.25 + 1000 * 5.0) / 1e6)
    # A small max_tokens caps the expected output too.
    tiny = estimate_cost("openai", "gpt-4o-mini", messages, max_tokens=10)
    assert tiny.cost == pytest.approx(tiny.worst_case)


PRICES = [price for p, m in PRICED if (price := price_for(p, m)) is not None]


@given(
    price=st.sampled_from(PRICES),
    prompt=st.integers(0, 2_000_000),
    max_out=st.integers(0, 200_000),
    read=st.floats(0, 1),
    write=st.floats(0, 1),
    used=st.floats(0, 1),
)
def test_no_usage_within_the_bounds_costs_more_than_the_worst_case(
    price: ModelPrice, prompt: int, max_out: int, read: float, write: float, used: float
) -> None:
    cache_read = int(prompt * read)
    usage = {
        "input_tokens": prompt,
        "output_tokens": int(max_out * used),
        "input_token_details": {
            "cache_read": cache_read,
            "cache_creation": int((prompt - cache_read) * write),
        },
    }
    actual = cost_of(usage, price)
    assert actual is not None
    assert actual <= worst_case_cost(price, prompt, max_out) * (1 + 1e-12) + 1e-15


def test_worst_case_cost_of_an_unknown_price_is_none() -> None:
    assert worst_case_cost(None, 100, 100) is None


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    price_for.cache_clear()
    yield
    price_for.cache_clear()


def test_price_for_caches_lookups(fresh_cache: None) -> None:
    first = price_for("openai", "gpt-4o-mini-2024-07-18")
    assert price_for("openai", "gpt-4o-mini-2024-07-18") is first
    assert price_for.cache_info().hits >= 1
