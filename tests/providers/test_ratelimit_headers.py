"""Rate-limit response headers reach `HTTPAdapter.on_response_headers`.

The fakes send the providers' documented rate-limit headers with the values set in
``fake.rate_limits`` (``RateLimits``) on every response; these tests check that a chat model's
adapter hands those headers to its ``on_response_headers`` hook on invoke, stream, ainvoke,
astream and on a 429, for OpenAI-compatible and Anthropic. The official SDKs are the oracle
that the fakes' headers are well-formed HTTP: their raw responses expose the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import anthropic
import openai
import pytest
from fakes.anthropic_server import Fail as AnthropicFail
from fakes.anthropic_server import FakeAnthropic
from fakes.anthropic_server import RateLimits as AnthropicRateLimits
from fakes.openai_server import Fail as OpenAIFail
from fakes.openai_server import FakeOpenAI
from fakes.openai_server import RateLimits as OpenAIRateLimits

import agency
from agency import errors
from agency.chat_models import AgencyChatModel

OPENAI_SPEC = "openai-compatible:gpt-4o-mini"
ANTHROPIC_SPEC = "anthropic:claude-haiku-4-5"
ANTHROPIC_MODEL = "claude-haiku-4-5"

# Distinctive values, none equal to the fakes' built-in defaults, so a match proves they came
# from ``fake.rate_limits``.
OPENAI_LIMITS = OpenAIRateLimits(
    limit_requests=60,
    limit_tokens=150_000,
    remaining_requests=42,
    remaining_tokens=149_321,
    reset_requests="1s",
    reset_tokens="6m0s",
)
OPENAI_EXPECTED = {
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-limit-tokens": "150000",
    "x-ratelimit-remaining-requests": "42",
    "x-ratelimit-remaining-tokens": "149321",
    "x-ratelimit-reset-requests": "1s",
    "x-ratelimit-reset-tokens": "6m0s",
}
ANTHROPIC_LIMITS = AnthropicRateLimits(
    requests_limit=50,
    requests_remaining=17,
    requests_reset="2031-02-03T04:05:06Z",
    tokens_limit=90_000,
    tokens_remaining=88_000,
    tokens_reset="2031-02-03T04:05:07Z",
    input_tokens_limit=80_000,
    input_tokens_remaining=79_000,
    input_tokens_reset="2031-02-03T04:05:08Z",
    output_tokens_limit=16_000,
    output_tokens_remaining=15_000,
    output_tokens_reset="2031-02-03T04:05:09Z",
)
ANTHROPIC_EXPECTED = {
    "anthropic-ratelimit-requests-limit": "50",
    "anthropic-ratelimit-requests-remaining": "17",
    "anthropic-ratelimit-requests-reset": "2031-02-03T04:05:06Z",
    "anthropic-ratelimit-tokens-limit": "90000",
    "anthropic-ratelimit-tokens-remaining": "88000",
    "anthropic-ratelimit-tokens-reset": "2031-02-03T04:05:07Z",
    "anthropic-ratelimit-input-tokens-limit": "80000",
    "anthropic-ratelimit-input-tokens-remaining": "79000",
    "anthropic-ratelimit-input-tokens-reset": "2031-02-03T04:05:08Z",
    "anthropic-ratelimit-output-tokens-limit": "16000",
    "anthropic-ratelimit-output-tokens-remaining": "15000",
    "anthropic-ratelimit-output-tokens-reset": "2031-02-03T04:05:09Z",
}


# --------------------------------------------------------------------------- fixtures/helpers


@pytest.fixture(scope="module")
def _anthropic_server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic().running() as fake:
        yield fake


@pytest.fixture
def anthropic_fake(_anthropic_server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    _anthropic_server.reset()
    yield _anthropic_server
    problems = _anthropic_server.spec_violations + _anthropic_server.internal_errors
    _anthropic_server.reset()
    assert problems == []


@pytest.fixture
def oai(openai_fake: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """The session's fake OpenAI; no spec violation allowed."""
    yield openai_fake
    assert openai_fake.spec_violations == []


class _Recorder:
    """An ``on_response_headers`` hook keeping a plain-dict copy of every call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []

    def __call__(self, headers: Mapping[str, str]) -> None:
        # httpx.Headers is case-insensitive; keys are lower-cased here for plain lookups.
        self.calls.append({k.lower(): v for k, v in headers.items()})


def _hooked(model: AgencyChatModel) -> _Recorder:
    recorder = _Recorder()
    model._adapter.on_response_headers = recorder  # type: ignore[attr-defined]
    return recorder


def _openai_model(fake: FakeOpenAI) -> AgencyChatModel:
    return agency.chat_model(OPENAI_SPEC, base_url=fake.base_url, api_key="sk-test", max_retries=0)


def _anthropic_model(fake: FakeAnthropic) -> AgencyChatModel:
    return agency.chat_model(
        ANTHROPIC_SPEC, base_url=fake.base_url, api_key="sk-ant-test", max_retries=0
    )


def _subset(headers: Mapping[str, str], expected: Mapping[str, str]) -> dict[str, str | None]:
    return {name: headers.get(name) for name in expected}


async def _call(model: AgencyChatModel, how: str) -> str:
    """One call by ``how``; the reply text (so a test can see the call really worked)."""
    if how == "invoke":
        return str(model.invoke("hello").content)
    if how == "ainvoke":
        return str((await model.ainvoke("hello")).content)
    if how == "stream":
        return "".join(chunk.text for chunk in model.stream("hello"))
    assert how == "astream"
    return "".join([chunk.text async for chunk in model.astream("hello")])


HOW = ["invoke", "stream", "ainvoke", "astream"]


# --------------------------------------------------------------------------- OpenAI-compatible


@pytest.mark.parametrize("how", HOW)
async def test_openai_hook_sees_configured_headers(oai: FakeOpenAI, how: str) -> None:
    oai.rate_limits = OPENAI_LIMITS
    model = _openai_model(oai)
    recorder = _hooked(model)
    assert await _call(model, how)
    assert len(recorder.calls) == 1
    assert _subset(recorder.calls[0], OPENAI_EXPECTED) == OPENAI_EXPECTED


@pytest.mark.parametrize("how", HOW)
async def test_openai_hook_sees_headers_of_a_429(oai: FakeOpenAI, how: str) -> None:
    oai.rate_limits = OPENAI_LIMITS
    oai.script(OpenAIFail(429, retry_after=3))
    model = _openai_model(oai)
    recorder = _hooked(model)
    with pytest.raises(errors.RateLimited):
        await _call(model, how)
    assert len(recorder.calls) == 1
    seen = recorder.calls[0]
    # The 429's own header wins over the configured value; the rest are the configured ones.
    assert seen["x-ratelimit-remaining-requests"] == "0"
    assert seen["retry-after"] == "3"
    rest = {k: v for k, v in OPENAI_EXPECTED.items() if k != "x-ratelimit-remaining-requests"}
    assert _subset(seen, rest) == rest


def test_openai_partial_limits_omit_none_fields_and_cover_gets(oai: FakeOpenAI) -> None:
    # GET /models gets no rate-limit header from the fake's defaults; only the configured ones.
    client = openai.OpenAI(base_url=oai.base_url, api_key="sk-test", max_retries=0)
    assert "x-ratelimit-limit-requests" not in client.models.with_raw_response.list().headers
    oai.rate_limits = OpenAIRateLimits(limit_tokens=None, remaining_tokens=None, reset_tokens=None)
    headers = client.models.with_raw_response.list().headers
    assert headers["x-ratelimit-limit-requests"] == "10000"
    assert headers["x-ratelimit-reset-requests"] == "6ms"
    assert "x-ratelimit-limit-tokens" not in headers
    assert "x-ratelimit-reset-tokens" not in headers


def test_openai_default_is_unchanged_and_reset_restores_it(oai: FakeOpenAI) -> None:
    assert oai.rate_limits is None
    model = _openai_model(oai)
    recorder = _hooked(model)
    model.invoke("hello")
    oai.rate_limits = OPENAI_LIMITS
    oai.reset()
    assert oai.rate_limits is None
    model.invoke("hello")
    # Both calls carry the fake's built-in values (a POST), not the configured ones.
    for seen in recorder.calls:
        assert seen["x-ratelimit-limit-requests"] == "10000"
        assert seen["x-ratelimit-reset-requests"] == "6ms"
    assert len(recorder.calls) == 2


def test_openai_sdk_oracle_reads_the_same_values(oai: FakeOpenAI) -> None:
    oai.rate_limits = OPENAI_LIMITS
    client = openai.OpenAI(base_url=oai.base_url, api_key="sk-test", max_retries=0)
    messages: Any = [{"role": "user", "content": "hello"}]
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    assert raw.parse().choices[0].message.content
    assert _subset(raw.headers, OPENAI_EXPECTED) == OPENAI_EXPECTED
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=messages, stream=True
    ) as streamed:
        assert _subset(streamed.headers, OPENAI_EXPECTED) == OPENAI_EXPECTED
        assert any(line.startswith("data: ") for line in streamed.iter_lines())
    oai.script(OpenAIFail(429))
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert caught.value.response.headers["x-ratelimit-reset-tokens"] == "6m0s"
    assert caught.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_openai_hook_and_sdk_agree(oai: FakeOpenAI) -> None:
    oai.rate_limits = OPENAI_LIMITS
    model = _openai_model(oai)
    recorder = _hooked(model)
    model.invoke("hello")
    client = openai.OpenAI(base_url=oai.base_url, api_key="sk-test", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
    )
    names = [n for n in raw.headers if n.startswith("x-ratelimit-")]
    assert sorted(names) == sorted(OPENAI_EXPECTED)
    assert {n: raw.headers[n] for n in names} == _subset(recorder.calls[0], OPENAI_EXPECTED)


# --------------------------------------------------------------------------- Anthropic


@pytest.mark.parametrize("how", HOW)
async def test_anthropic_hook_sees_configured_headers(
    anthropic_fake: FakeAnthropic, how: str
) -> None:
    anthropic_fake.rate_limits = ANTHROPIC_LIMITS
    model = _anthropic_model(anthropic_fake)
    recorder = _hooked(model)
    assert await _call(model, how)
    assert len(recorder.calls) == 1
    assert _subset(recorder.calls[0], ANTHROPIC_EXPECTED) == ANTHROPIC_EXPECTED


@pytest.mark.parametrize("how", HOW)
async def test_anthropic_hook_sees_headers_of_a_429(
    anthropic_fake: FakeAnthropic, how: str
) -> None:
    anthropic_fake.rate_limits = ANTHROPIC_LIMITS
    anthropic_fake.script(AnthropicFail(429, retry_after=7))
    model = _anthropic_model(anthropic_fake)
    recorder = _hooked(model)
    with pytest.raises(errors.RateLimited):
        await _call(model, how)
    assert len(recorder.calls) == 1
    seen = recorder.calls[0]
    assert seen["anthropic-ratelimit-requests-remaining"] == "0"
    assert seen["retry-after"] == "7"
    rest = {
        k: v for k, v in ANTHROPIC_EXPECTED.items() if k != "anthropic-ratelimit-requests-remaining"
    }
    assert _subset(seen, rest) == rest


def test_anthropic_numeric_reset_is_rfc3339_from_now(anthropic_fake: FakeAnthropic) -> None:
    anthropic_fake.rate_limits = AnthropicRateLimits(
        requests_reset=30, tokens_reset=None, input_tokens_reset="soon"
    )
    model = _anthropic_model(anthropic_fake)
    recorder = _hooked(model)
    before = datetime.now(UTC).replace(microsecond=0)
    model.invoke("hello")
    after = datetime.now(UTC)
    seen = recorder.calls[0]
    reset = datetime.fromisoformat(seen["anthropic-ratelimit-requests-reset"])
    assert seen["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert before.timestamp() + 30 <= reset.timestamp() <= after.timestamp() + 30
    assert seen["anthropic-ratelimit-input-tokens-reset"] == "soon"  # strings go verbatim
    # None omits the configured header; the fake's built-in one (a POST) shows through.
    assert "anthropic-ratelimit-tokens-reset" in seen
    assert seen["anthropic-ratelimit-requests-limit"] == "4000"


def test_anthropic_default_is_unchanged_and_reset_restores_it(
    anthropic_fake: FakeAnthropic,
) -> None:
    client = anthropic.Anthropic(base_url=anthropic_fake.base_url, api_key="k", max_retries=0)
    assert anthropic_fake.rate_limits is None
    assert (
        "anthropic-ratelimit-requests-limit" not in client.models.with_raw_response.list().headers
    )
    anthropic_fake.rate_limits = ANTHROPIC_LIMITS
    listed = client.models.with_raw_response.list().headers
    assert _subset(listed, ANTHROPIC_EXPECTED) == ANTHROPIC_EXPECTED
    anthropic_fake.reset()
    assert anthropic_fake.rate_limits is None
    assert (
        "anthropic-ratelimit-requests-limit" not in client.models.with_raw_response.list().headers
    )


def test_anthropic_sdk_oracle_reads_the_same_values(anthropic_fake: FakeAnthropic) -> None:
    anthropic_fake.rate_limits = ANTHROPIC_LIMITS
    client = anthropic.Anthropic(base_url=anthropic_fake.base_url, api_key="k", max_retries=0)
    create: Callable[..., Any] = client.messages.with_raw_response.create
    raw = create(
        model=ANTHROPIC_MODEL, max_tokens=64, messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.parse().content
    assert _subset(raw.headers, ANTHROPIC_EXPECTED) == ANTHROPIC_EXPECTED
    anthropic_fake.script(AnthropicFail(429))
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(
            model=ANTHROPIC_MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
    headers = caught.value.response.headers
    assert headers["anthropic-ratelimit-tokens-reset"] == "2031-02-03T04:05:07Z"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
