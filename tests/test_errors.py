"""The exception tree: langchain-core parents, retryability, redaction, pickling."""

from __future__ import annotations

import pickle

import pytest
from langchain_core import exceptions as lc

from agency import errors


@pytest.mark.parametrize(
    ("ours", "theirs", "retryable"),
    [
        (errors.AuthenticationError, lc.ModelAuthenticationError, False),
        (errors.PermissionDenied, lc.ModelPermissionDeniedError, False),
        (errors.ModelNotFound, lc.ModelNotFoundError, False),
        (errors.BadRequest, lc.ModelInvalidRequestError, False),
        (errors.ContextWindowExceeded, lc.ContextOverflowError, False),
        (errors.RateLimited, lc.ModelRateLimitError, True),
        (errors.ProviderUnavailable, lc.ModelAPIError, True),
        (errors.Timeout, lc.ModelTimeoutError, True),
        (errors.ConnectionFailed, lc.ModelConnectionError, True),
        (errors.MalformedResponse, lc.ModelAPIError, False),
    ],
)
def test_tree_matches_langchain(ours: type, theirs: type, retryable: bool) -> None:
    err = ours("boom", provider="p", model="m")
    assert isinstance(err, theirs)
    assert isinstance(err, errors.ProviderError)
    assert isinstance(err, errors.AgencyError)
    assert err.is_retryable is retryable


def test_error_carries_context_and_renders_it() -> None:
    err = errors.RateLimited(
        "slow down",
        retry_after=2.5,
        provider="openai",
        model="gpt-4o",
        status_code=429,
        request_id="req_9",
    )
    assert (err.provider, err.model, err.status_code, err.request_id, err.retry_after) == (
        "openai",
        "gpt-4o",
        429,
        "req_9",
        2.5,
    )
    assert str(err) == "openai:gpt-4o: slow down (status 429, request id req_9)"


def test_error_survives_pickling() -> None:
    err = errors.RateLimited("slow", retry_after=3.0, provider="groq", model="x", status_code=429)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is errors.RateLimited
    assert back.retry_after == 3.0
    assert str(back) == str(err)


def test_redact_masks_given_secret_and_key_shapes() -> None:
    text = "key sk-proj-abcdefgh12345 and Bearer abcdefghijklmnop and my-own-secret-value"
    out = errors.redact(text, "my-own-secret-value")
    assert "abcdefgh12345" not in out
    assert "abcdefghijklmnop" not in out
    assert "my-own-secret-value" not in out
    assert out.count("***") == 3


def test_config_error_names_source_key_and_fix() -> None:
    err = errors.ConfigError(
        "expected a number", source="agency.toml", key="llm.temperature", fix="write 0.7"
    )
    assert "agency.toml" in str(err)
    assert "llm.temperature" in str(err)
    assert "fix: write 0.7" in str(err)


def test_classify_takes_the_most_specific_row() -> None:
    class GatewayNotFound(errors.ModelNotFound):
        pass

    table = errors.ERROR_POLICIES
    assert errors.classify(GatewayNotFound("x")) == table[errors.ModelNotFound]
    assert errors.classify(errors.ContextWindowExceeded("x")) == table[errors.ContextWindowExceeded]
    assert errors.classify(errors.CircuitOpen("x")) != table[errors.ProviderUnavailable]
    # A rate limit from an integration outside agency: a breaker failure, never retried here.
    foreign = errors.classify(lc.ModelRateLimitError("x"))
    assert (foreign.breaker_failure, foreign.retry_same, foreign.fall_back) == (True, False, "no")
    assert errors.classify(KeyError("x")) == errors.ErrorPolicy(False, "no", False, None)


def test_is_retryable_follows_the_table_unless_one_failure_says_otherwise() -> None:
    assert errors.retries_same(errors.Timeout("t"))
    assert not errors.retries_same(errors.ModelNotFound("m"))
    once = errors.Timeout("deterministic")
    once.is_retryable = False
    assert not errors.retries_same(once)
    assert errors.retries_same(errors.Timeout("the next one"))
    group = errors.AllProvidersFailed("all", [errors.ModelNotFound("m"), errors.Timeout("t")])
    assert group.is_retryable


def test_redact_masks_passwords_in_urls() -> None:
    text = "postgresql://agency:s3cr3t@db:5432/runs, redis://:hunter2@cache:6379/0, http://h/x"
    assert errors.redact(text) == (
        "postgresql://agency:***@db:5432/runs, redis://:***@cache:6379/0, http://h/x"
    )
