"""What a model costs: the price table, the cost of a finished call, an estimate before one.

- Prices live in ``agency/data/pricing.toml`` (package data, parsed once on first use): US
  dollars per 1M tokens, one table per provider dated (``as_of``) and sourced (``source``).
- `price_for` resolves ``(provider, model)``: the exact name (case-insensitive); then without
  a dated or ``-latest`` suffix (``gpt-4o-mini-2024-07-18``, ``claude-3-5-haiku-20241022``,
  ``command-a-03-2025``); then the longest known name it starts with at a ``-``/``:``/``@``/
  ``_`` boundary (``gpt-5-codex`` is ``gpt-5``; ``gpt-5.1`` never is). Providers may be
  aliases (``azure-openai`` -> ``openai``), routers (``openrouter``: ``"openai/gpt-4o"`` is
  priced by the OpenAI table, dotted Claude versions included) or free (``local``,
  ``ollama``, ``vllm``, ``lmstudio``, ``llamacpp``: ``ModelPrice(0, 0)``). Anything else
  unknown is ``None``: no price is ever invented.
- `cost_of` prices LangChain's ``UsageMetadata``: cache reads at the cached price, cache
  writes at the cache-write price, the rest of the prompt at the input price, output tokens
  (reasoning included) at the output price; a prompt past a long-context threshold at the
  long-context prices, as providers bill it.
- `estimate_tokens` / `estimate_cost` size a call beforehand with no tokenizer dependency
  (about 4 ASCII characters per token, one per non-ASCII character, fixed framing per
  message, a fixed amount per image or media part); OpenAI models are counted exactly when
  ``tiktoken`` is importable and its encoding loads. `CostEstimate` carries the expected
  cost, the worst case (what budgets reserve, see `worst_case_cost`) and a confidence.
"""

from __future__ import annotations

import functools
import json
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from importlib import resources
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, overload

from agency.errors import ConfigError

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "EXPECTED_OUTPUT_TOKENS",
    "IMAGE_TOKENS",
    "REPLY_PRIMING_TOKENS",
    "TOKENS_PER_MESSAGE",
    "CostEstimate",
    "ModelPrice",
    "cost_of",
    "estimate_cost",
    "estimate_tokens",
    "price_for",
    "priced_models",
    "worst_case_cost",
]

TOKENS_PER_MILLION = 1_000_000
"""Prices are quoted per this many tokens."""
CHARS_PER_TOKEN = 4
"""ASCII characters per token in the heuristic: OpenAI's rule of thumb for English text."""
TOKENS_PER_MESSAGE = 4
"""Framing per message: OpenAI documents 3 tokens (``<|start|>``, role separator,
``<|end|>``) plus the role name itself, about 1 token."""
TOKENS_PER_NAME = 1
"""Extra framing when a message carries a ``name``."""
REPLY_PRIMING_TOKENS = 3
"""Every reply is primed with ``<|start|>assistant<|message|>`` (OpenAI's count)."""
IMAGE_TOKENS = 1600
"""Tokens counted per image (and per other media part: audio, file, video): Anthropic's
ceiling for an image (about 1.15 megapixels / 750 pixels per token). It is above OpenAI's
765 for a 1024x1024 high-detail image and Gemini's 258 per 768x768 tile, so the estimate errs
high for most images; it cannot know a PDF's page count or an audio clip's length."""
DEFAULT_MAX_OUTPUT_TOKENS = 4096
"""Output bound assumed when neither ``max_tokens`` nor the model's documented maximum is
known (the default of most OpenAI-compatible servers). The estimate is then ``"low"``."""
EXPECTED_OUTPUT_TOKENS = 256
"""Output tokens the *expected* cost assumes (capped by the output bound): a typical chat
answer. Reasoning models often write more; budgets use the worst case, never this."""

_PACKAGE = "agency"
_RESOURCE = ("data", "pricing.toml")
_SOURCE_NAME = "agency/data/pricing.toml"
_OPENAI_FAMILY = frozenset({"openai", "azure-openai"})
"""Providers whose models tiktoken's encodings describe."""
_FALLBACK_ENCODING = "o200k_base"
"""Encoding of OpenAI models tiktoken does not know by name yet (every model since gpt-4o)."""
_PREFIX_BOUNDARIES = frozenset("-:@_")
"""A known name matches as a prefix only when the rest starts here: ``gpt-5-codex`` is a
``gpt-5``, but ``gpt-5.1`` is not (a dot starts a new version, priced differently)."""
_SUFFIXES = tuple(
    re.compile(pattern)
    for pattern in (
        r"-\d{4}-\d{2}-\d{2}$",  # OpenAI snapshots: gpt-4o-2024-08-06
        r"-\d{8}$",  # Anthropic: claude-3-5-haiku-20241022
        r"-latest$",  # moving aliases: mistral-large-latest
        r"-\d{2}-\d{4}$",  # Cohere: command-r-08-2024
        r"-preview-\d{2}-(?:\d{2}|\d{4})$",  # Gemini: gemini-2.5-flash-preview-05-20
        r"-\d{4}$",  # mmdd / yymm: gpt-4-0613, mistral-large-2411, grok-4-0709
        r"-\d{3}$",  # Gemini versions: gemini-2.0-flash-001
    )
)
"""Dated and alias suffixes removed, one at a time, until a known name is found."""
_DOTTED_VERSION = re.compile(r"(\d)\.(\d)")
_IMAGE_PARTS = frozenset({"image", "image_url", "input_image"})
_MEDIA_PARTS = frozenset(
    {"audio", "input_audio", "file", "input_file", "video", "document", "media", "pdf"}
)
_BULKY_KEYS = frozenset({"base64", "data", "source", "image_url", "url", "file_data"})
"""Keys whose presence marks an unknown content part as media (their text is not prompt)."""
_LONG_KEYS = frozenset({"above", "input", "output", "cached_input", "cache_write"})
_MODEL_KEYS = (_LONG_KEYS - {"above"}) | {
    *("request_fee", "context_window", "max_output", "long_context", "same_as", "as_of")
}
_PROVIDER_KEYS = frozenset({"as_of", "source", "free", "alias_of", "vendors", "models"})


@dataclass(frozen=True)
class ModelPrice:
    """The price of one model. Rates are US dollars per 1M tokens."""

    input: float
    """Prompt tokens that are neither cache reads nor cache writes."""
    output: float
    """Completion tokens, reasoning tokens included (0 for embedding models)."""
    cached_input: float | None = None
    """Prompt tokens read from the provider's cache; ``None``: billed as ``input``."""
    cache_write: float | None = None
    """Prompt tokens written to the cache (Anthropic's 5-minute write, OpenAI's GPT-5.6);
    ``None``: billed as ``input``."""
    request_fee: float = 0.0
    """US dollars per request on top of tokens (Perplexity's search fee)."""
    context_window: int | None = None
    """Prompt plus output tokens the model accepts, when documented."""
    max_output: int | None = None
    """The most output tokens one call can produce, when documented."""
    long_context_above: int | None = None
    """Prompts longer than this many tokens are billed at ``long_context``."""
    long_context: ModelPrice | None = None
    """The prices of a long-context request (the whole request, not only the excess)."""
    as_of: str = ""
    """``YYYY-MM-DD``: when the provider's pricing page showed these prices."""

    def for_prompt(self, input_tokens: int) -> ModelPrice:
        """The prices that apply to a request with this many prompt tokens."""
        if (
            self.long_context is not None
            and self.long_context_above is not None
            and input_tokens > self.long_context_above
        ):
            return self.long_context
        return self

    @property
    def is_free(self) -> bool:
        """Whether every token and request costs nothing (local models)."""
        rates = (self.input, self.output, self.cached_input, self.cache_write, self.request_fee)
        return all(not rate for rate in rates) and self.long_context is None


@dataclass(frozen=True)
class CostEstimate:
    """What a call will cost, worked out before it is made. Costs are US dollars."""

    prompt_tokens: int
    """Estimated prompt tokens (messages, framing and tool schemas)."""
    max_output_tokens: int
    """The output bound used: ``max_tokens``, else the model's maximum, else
    `DEFAULT_MAX_OUTPUT_TOKENS`."""
    cost: float | None
    """Expected cost: the prompt at the input price plus ``min(max_output_tokens,
    EXPECTED_OUTPUT_TOKENS)`` output tokens. ``None`` when the price is unknown."""
    worst_case: float | None
    """Upper bound: the prompt at the dearest input-side rate (input or cache write) plus
    ``max_output_tokens`` at the output price, plus any request fee. Budgets reserve this.
    ``None`` when the price is unknown."""
    confidence: Literal["high", "medium", "low"]
    """``"high"``: exact token count, known price, explicit ``max_tokens`` (or a free model);
    ``"medium"``: known price and a real output bound, but heuristic tokens (or media parts) or
    the model's own maximum as the bound; ``"low"``: unknown price, or the output bound is a
    guess (`DEFAULT_MAX_OUTPUT_TOKENS`)."""
    price: ModelPrice | None = field(default=None, compare=False)
    """The price the estimate used, for pricing the call's real usage afterwards."""


# --- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Provider:
    models: Mapping[str, ModelPrice]
    as_of: str = ""
    source: str = ""
    free: bool = False
    alias_of: str | None = None
    vendors: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def _bad(key: str, problem: str) -> ConfigError:
    return ConfigError(
        problem, source=_SOURCE_NAME, key=key, fix="correct the entry in the pricing table"
    )


def _rate(raw: Mapping[str, Any], name: str, key: str, *, required: bool = False) -> Any:
    """A non-negative price (``None`` when absent and optional)."""
    value = raw.get(name)
    if value is None and required:
        raise _bad(key, f"missing {name!r}")
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0
    ):
        raise _bad(key, f"{name!r} must be a non-negative number, not {value!r}")
    return None if value is None else float(value)


def _count_field(raw: Mapping[str, Any], name: str, key: str) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(key, f"{name!r} must be a positive integer, not {value!r}")
    return value


def _check_date(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise _bad(key, f"'as_of' must be a 'YYYY-MM-DD' string, not {value!r}")
    try:
        date.fromisoformat(value)
    except ValueError:
        raise _bad(key, f"'as_of' must be a 'YYYY-MM-DD' date, not {value!r}") from None
    return value


def _parse_model(raw: Mapping[str, Any], key: str, as_of: str) -> ModelPrice:
    unknown = set(raw) - _MODEL_KEYS
    if unknown:
        raise _bad(key, f"unknown fields {sorted(unknown)}")
    base = ModelPrice(
        input=_rate(raw, "input", key, required=True),
        output=_rate(raw, "output", key, required=True),
        cached_input=_rate(raw, "cached_input", key),
        cache_write=_rate(raw, "cache_write", key),
        request_fee=_rate(raw, "request_fee", key) or 0.0,
        context_window=_count_field(raw, "context_window", key),
        max_output=_count_field(raw, "max_output", key),
        as_of=_check_date(raw["as_of"], key) if "as_of" in raw else as_of,
    )
    long, lkey = raw.get("long_context"), f"{key}.long_context"
    if long is None:
        return base
    if not isinstance(long, Mapping) or set(long) - _LONG_KEYS or "above" not in long:
        raise _bad(lkey, f"must be a table of 'above' (prompt tokens) and {sorted(_LONG_KEYS)}")
    # The tier shares the model's limits and request fee; only token rates change.
    tier = replace(
        base,
        input=_rate(long, "input", lkey, required=True),
        output=_rate(long, "output", lkey, required=True),
        cached_input=_rate(long, "cached_input", lkey),
        cache_write=_rate(long, "cache_write", lkey),
    )
    above = _count_field(long, "above", lkey)
    return replace(base, long_context_above=above, long_context=tier)


def _parse_provider(name: str, raw: Any) -> _Provider:
    if not isinstance(raw, Mapping):
        raise _bad(name, "each provider must be a table")
    unknown = set(raw) - _PROVIDER_KEYS
    if unknown:
        raise _bad(name, f"unknown fields {sorted(unknown)}")
    as_of = _check_date(raw["as_of"], name) if "as_of" in raw else ""
    raw_models = raw.get("models", {})
    if not isinstance(raw_models, Mapping):
        raise _bad(f"{name}.models", "must be a table")
    models: dict[str, ModelPrice] = {}
    aliases: dict[str, str] = {}
    for model, entry in raw_models.items():
        key = f"{name}.models.{model}"
        if not isinstance(entry, Mapping):
            raise _bad(key, "must be a table")
        if "same_as" in entry:
            if set(entry) != {"same_as"}:
                raise _bad(key, "'same_as' cannot be combined with prices")
            aliases[model.lower()] = str(entry["same_as"]).lower()
        else:
            models[model.lower()] = _parse_model(entry, key, as_of)
    for model, target in aliases.items():
        if target not in models:
            raise _bad(f"{name}.models.{model}", f"'same_as' names unknown model {target!r}")
        models[model] = models[target]
    vendors = raw.get("vendors", {})
    if not isinstance(vendors, Mapping):
        raise _bad(f"{name}.vendors", "must be a table of prefix = provider")
    alias_of = raw.get("alias_of")
    if not raw.get("free") and alias_of is None and not vendors and not as_of:
        raise _bad(name, "missing 'as_of' (the date of the prices)")
    return _Provider(
        models=MappingProxyType(models),
        as_of=as_of,
        source=str(raw.get("source", "")),
        free=bool(raw.get("free", False)),
        alias_of=str(alias_of).lower() if alias_of is not None else None,
        vendors=MappingProxyType({str(k).lower(): str(v).lower() for k, v in vendors.items()}),
    )


@functools.cache
def _table() -> Mapping[str, _Provider]:
    """The parsed pricing file (once per process)."""
    text = resources.files(_PACKAGE).joinpath(*_RESOURCE).read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(exc), source=_SOURCE_NAME) from exc
    table = {name.lower(): _parse_provider(name, entry) for name, entry in raw.items()}
    for name, provider in table.items():
        targets = [provider.alias_of] if provider.alias_of else []
        for target in [*targets, *provider.vendors.values()]:
            if target not in table:
                raise _bad(name, f"refers to unknown provider {target!r}")
    return MappingProxyType(table)


def _provider(name: str) -> _Provider | None:
    table = _table()
    entry = table.get(name.strip().lower())
    seen: set[str] = set()
    # Follow aliases; the loop guard keeps a bad file from hanging a call.
    while entry is not None and entry.alias_of is not None and entry.alias_of not in seen:
        seen.add(entry.alias_of)
        entry = table.get(entry.alias_of)
    return entry


def _candidates(name: str) -> list[str]:
    """``name``, then each shorter form without a dated suffix; the same for the part after
    the last ``/`` (``models/gemini-2.5-flash``, ``accounts/fireworks/models/...``)."""
    out: list[str] = []
    starts = [name, name.rsplit("/", 1)[1]] if "/" in name else [name]
    for current in starts:
        while current and current not in out:
            out.append(current)
            for pattern in _SUFFIXES:
                shorter = pattern.sub("", current)
                if shorter != current:
                    current = shorter
                    break
            else:
                break
    return out


def _resolve(models: Mapping[str, ModelPrice], name: str) -> ModelPrice | None:
    candidates = _candidates(name)
    if _DOTTED_VERSION.search(name) and not any("." in known for known in models):
        # A table without dotted names (Anthropic's) also answers routers' dotted spellings:
        # "claude-3.5-sonnet" is "claude-3-5-sonnet".
        candidates += _candidates(_DOTTED_VERSION.sub(r"\1-\2", name))
    for candidate in candidates:
        if candidate in models:
            return models[candidate]
    for candidate in candidates:
        # The character after a prefix ("" when it is the whole name) must be a boundary.
        known = [k for k in models if candidate[len(k) : len(k) + 1] in _PREFIX_BOUNDARIES]
        known = [k for k in known if candidate.startswith(k)]
        if known:
            return models[max(known, key=len)]
    return None


@functools.lru_cache(maxsize=4096)
def price_for(provider: str, model: str | None) -> ModelPrice | None:
    """The price of ``model`` at ``provider``, or ``None`` when it is not known.

    Free providers give ``ModelPrice(0, 0)`` for any model (``None`` included: the
    provider's default); see the module docstring for how dated and aliased names resolve.
    """
    entry = _provider(provider)
    if entry is None:
        return None
    if entry.free:
        return ModelPrice(0.0, 0.0, as_of=entry.as_of)
    if model is None:
        return None
    name = model.strip().lower()
    if entry.vendors and "/" in name:
        vendor, _, upstream = name.partition("/")
        if upstream.endswith(":free"):  # OpenRouter's free variants
            return ModelPrice(0.0, 0.0, as_of=entry.as_of)
        if vendor in entry.vendors:
            return price_for(entry.vendors[vendor], upstream)
    return _resolve(entry.models, name)


def priced_models(provider: str) -> list[str]:
    """Sorted names in ``provider``'s price table (after aliases; empty for free or unknown
    providers and routers)."""
    entry = _provider(provider)
    return sorted(entry.models) if entry is not None else []


# --- cost of a finished call ----------------------------------------------------------------


def _tokens(value: Any) -> int:
    """A token count from usage, tolerating ``None`` and junk (counted as 0)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return 0
    return int(value)


def cost_of(usage: Mapping[str, Any] | None, price: ModelPrice | None) -> float | None:
    """US dollars a call cost, from LangChain's ``UsageMetadata`` (or ``None`` if either is).

    ``input_tokens`` include the cache reads and writes that ``input_token_details`` reports
    (LangChain's convention, followed by every adapter here); each part is priced at its own
    rate. ``output_tokens`` already include reasoning tokens, so those are not added again.
    """
    if usage is None or price is None:
        return None
    prompt = _tokens(usage.get("input_tokens"))
    output = _tokens(usage.get("output_tokens"))
    details = usage.get("input_token_details") or {}
    cache_read = min(_tokens(details.get("cache_read")), prompt)
    cache_write = min(_tokens(details.get("cache_creation")), prompt - cache_read)
    plain = prompt - cache_read - cache_write
    tier = price.for_prompt(prompt)
    read_rate = tier.input if tier.cached_input is None else tier.cached_input
    write_rate = tier.input if tier.cache_write is None else tier.cache_write
    per_million = plain * tier.input + cache_read * read_rate + cache_write * write_rate
    return (per_million + output * tier.output) / TOKENS_PER_MILLION + tier.request_fee


# --- estimates before a call ----------------------------------------------------------------


def _heuristic_count(text: str) -> int:
    """About 4 ASCII characters per token; a non-ASCII character (CJK, emoji, accents) is
    often a token of its own, so each counts as one: errs high rather than low."""
    if not text:
        return 0
    if text.isascii():
        return math.ceil(len(text) / CHARS_PER_TOKEN)
    ascii_chars = len(text.encode("ascii", "ignore"))
    return math.ceil(ascii_chars / CHARS_PER_TOKEN) + (len(text) - ascii_chars)


@functools.cache
def _encoding(name: str) -> Callable[[str], int] | None:
    """tiktoken's counter for an encoding, or ``None`` when it cannot be had. The first load
    may fetch the encoding file (tiktoken caches it on disk); any failure, offline included,
    is remembered and the heuristic is used instead."""
    try:
        import tiktoken

        encoding = tiktoken.get_encoding(name)
    except Exception:  # optional speed-up: import, network or cache failures all mean "no"
        return None
    return lambda text: len(encoding.encode(text, disallowed_special=()))


def _exact_counter(provider: str | None, model: str | None) -> Callable[[str], int] | None:
    """An exact counter for OpenAI models when tiktoken is available, else ``None``."""
    if model is None or provider is None or provider.strip().lower() not in _OPENAI_FAMILY:
        return None
    try:
        from tiktoken.model import encoding_name_for_model
    except ImportError:
        return None
    try:
        name = encoding_name_for_model(model)
    except KeyError:
        name = _FALLBACK_ENCODING
    return _encoding(name)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _tool_schema(tool: Any) -> Any:
    """A tool as the JSON the provider receives (dicts as given; tools and classes converted)."""
    if isinstance(tool, Mapping):
        return tool
    try:
        from langchain_core.utils.function_calling import convert_to_openai_tool

        return convert_to_openai_tool(tool)
    except Exception:  # an unconvertible tool still costs its text
        return str(tool)


def _count_part(part: Any, count: Callable[[str], int]) -> tuple[int, bool]:
    """Tokens of one content part, and whether it was media (counted by a fixed amount)."""
    if isinstance(part, str):
        return count(part), False
    if not isinstance(part, Mapping):
        return count(str(part)), False
    kind = part.get("type")
    if kind == "text" and isinstance(part.get("text"), str):
        return count(part["text"]), False
    if kind in _IMAGE_PARTS or kind in _MEDIA_PARTS:
        return IMAGE_TOKENS, True
    if kind not in {"tool_use", "tool_call", "function_call"} and _BULKY_KEYS & set(part):
        return IMAGE_TOKENS, True
    return count(_json(dict(part))), False


def _fields(message: Any) -> tuple[Any, Any, Any]:
    """``(content, tool_calls, name)`` of a message, a ``{"role", "content"}`` dict, a
    ``(role, content)`` pair or a bare string (the shapes LangChain accepts as messages)."""
    if isinstance(message, str):
        return message, None, None
    if isinstance(message, Mapping):
        return message.get("content"), message.get("tool_calls"), message.get("name")
    if isinstance(message, tuple) and len(message) == 2:
        return message[1], None, None
    get = functools.partial(getattr, message)
    return get("content", None), get("tool_calls", None), get("name", None)


def _count_message(message: Any, count: Callable[[str], int]) -> tuple[int, bool]:
    content, tool_calls, name = _fields(message)
    parts: Iterable[Any] = [content] if isinstance(content, str) else content or []
    counted = [_count_part(part, count) for part in parts]
    tokens = TOKENS_PER_MESSAGE + sum(n for n, _ in counted)
    media = any(is_media for _, is_media in counted)
    for call in tool_calls or []:
        if isinstance(call, Mapping):
            tokens += count(str(call.get("name", ""))) + count(_json(call.get("args", {})))
    if name:
        tokens += TOKENS_PER_NAME + count(str(name))
    return tokens, media


def _count(
    messages: Sequence[BaseMessage] | str,
    tools: Sequence[Any] | None,
    count: Callable[[str], int],
) -> tuple[int, bool]:
    items: Sequence[Any] = [messages] if isinstance(messages, str) else messages
    counted = [_count_message(message, count) for message in items]
    schemas = sum(count(_json(_tool_schema(tool))) for tool in tools or ())
    total = REPLY_PRIMING_TOKENS + sum(n for n, _ in counted) + schemas
    return total, any(is_media for _, is_media in counted)


def estimate_tokens(
    messages: Sequence[BaseMessage] | str,
    *,
    tools: Sequence[Any] | None = None,
    provider: str | None = None,
    model: str | None = None,
) -> int:
    """Prompt tokens of ``messages`` (a string is one user message) plus ``tools``' schemas.

    Heuristic unless ``provider``/``model`` name an OpenAI model and ``tiktoken`` is usable;
    see the module docstring and the constants for the rules.
    """
    exact = _exact_counter(provider, model)
    return _count(messages, tools, exact or _heuristic_count)[0]


@overload
def worst_case_cost(price: ModelPrice, prompt_tokens: int, max_output_tokens: int) -> float: ...
@overload
def worst_case_cost(price: None, prompt_tokens: int, max_output_tokens: int) -> None: ...
def worst_case_cost(
    price: ModelPrice | None, prompt_tokens: int, max_output_tokens: int
) -> float | None:
    """The most a call can cost, US dollars (``None`` for an unknown price): every prompt
    token at the dearest input-side rate (input, or cache write where that is higher), the
    long-context tier when the prompt is past it, ``max_output_tokens`` at the output price,
    and any per-request fee. This is what budgets should reserve."""
    if price is None:
        return None
    tier = price.for_prompt(prompt_tokens)
    input_rate = max(tier.input, tier.cache_write or 0.0)
    per_million = max(0, prompt_tokens) * input_rate + max(0, max_output_tokens) * tier.output
    return per_million / TOKENS_PER_MILLION + tier.request_fee


def estimate_cost(
    provider: str,
    model: str,
    messages: Sequence[BaseMessage] | str,
    *,
    max_tokens: int | None = None,
    tools: Sequence[Any] | None = None,
) -> CostEstimate:
    """Tokens, expected and worst-case cost of a call, and how far to trust them."""
    price = price_for(provider, model)
    exact = _exact_counter(provider, model)
    prompt, media = _count(messages, tools, exact or _heuristic_count)
    if max_tokens is not None:
        bound = max(0, max_tokens)
    elif price is not None and price.max_output is not None:
        bound = price.max_output
    else:
        bound = DEFAULT_MAX_OUTPUT_TOKENS
    if price is None:
        return CostEstimate(prompt, bound, None, None, "low", None)
    tier = price.for_prompt(prompt)
    expected = (
        prompt * tier.input + min(bound, EXPECTED_OUTPUT_TOKENS) * tier.output
    ) / TOKENS_PER_MILLION + tier.request_fee
    worst = worst_case_cost(price, prompt, bound)
    confidence: Literal["high", "medium", "low"]
    if price.is_free:
        confidence = "high"  # nothing to get wrong: zero whatever the tokens
    elif max_tokens is None and price.max_output is None:
        confidence = "low"
    elif exact is not None and not media and max_tokens is not None:
        confidence = "high"
    else:
        confidence = "medium"
    return CostEstimate(prompt, bound, expected, worst, confidence, price)
