"""One table (`agency.errors.ERROR_POLICIES`) says what each failure means; the adapter retry
loop, the fallback loop and the circuit breaker all do what it says, against the OpenAI fake."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from fakes.openai_server import Action, Disconnect, Fail, FakeOpenAI, Malformed, Stall
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agency import _http, errors
from agency.app import Agency
from agency.errors import AllProvidersFailed, ModelNotFound, classify, retries_same
from agency.resilience.breaker import BreakerPolicy, counts_as_failure
from agency.resilience.policy import condition_of

Trio = tuple[FakeOpenAI, FakeOpenAI, FakeOpenAI]
MakeAgency = Callable[..., Agency]

# Breakers that never trip, so the counts below are the table's alone and every recorded
# failure stays in the window; an open breaker (test_breaker.py) turns later attempts into
# free skips. For the same reason the 429s below say "retry-after: 0": a longer one holds the
# breaker open that long.
_PATIENT = BreakerPolicy(consecutive_failures=1000, min_calls=1000)
_TIMEOUT_S = 0.2  # the client timeout when the fake stalls (else the default: a loaded machine)


def _chat_requests(fake: FakeOpenAI) -> int:
    return len(fake.bodies("/chat/completions"))


@dataclass(frozen=True)
class Fault:
    """How the fake produces one error class, every time it is asked."""

    cls: type[errors.ProviderError]
    action: Action

    def script(self, fake: FakeOpenAI, times: int) -> None:
        fake.script(*[self.action] * times)


FAULTS = [
    Fault(errors.RateLimited, Fail(429, retry_after=0.0)),
    Fault(errors.ProviderUnavailable, Fail(503)),
    Fault(errors.ProviderUnavailable, Fail(529)),
    Fault(errors.Timeout, Stall(2.0)),
    Fault(errors.ConnectionFailed, Disconnect()),
    Fault(errors.MalformedResponse, Malformed("{not json")),
    Fault(errors.ModelNotFound, Fail(404, body={"code": "model_not_found"})),
    Fault(errors.AuthenticationError, Fail(401)),
    Fault(errors.PermissionDenied, Fail(403)),
    Fault(errors.ContextWindowExceeded, Fail(400, body={"code": "context_length_exceeded"})),
    Fault(errors.ContentFiltered, Fail(400, body={"code": "content_filter"})),
    Fault(errors.BadRequest, Fail(400, message="bad field")),
]
# Raised by no provider: CircuitOpen is a skip the loop makes itself, AllProvidersFailed its
# verdict, a bare ProviderError no adapter's mapping.
_NOT_FROM_A_PROVIDER = {errors.CircuitOpen, errors.AllProvidersFailed, errors.ProviderError}


def test_every_provider_error_class_is_driven_by_the_fake() -> None:
    table_classes = {c for c in errors.ERROR_POLICIES if issubclass(c, errors.AgencyError)}
    assert table_classes - _NOT_FROM_A_PROVIDER == {f.cls for f in FAULTS}


def _expected(
    fault: Fault, providers: int, max_attempts: int, rule: bool
) -> tuple[int, int, bool]:
    """Requests (primary, backup) the table predicts when every answer is this fault, and
    whether the call falls back at all."""
    kind = classify(fault.cls)
    falls = kind.fall_back == "yes" or (kind.fall_back == "by_rule" and rule)
    # A rule for the condition decides about the original (retry_original is off here).
    again = kind.retry_same and not rule
    if not falls:
        return 1, 0, False
    if providers == 1:
        return (max_attempts if again else 1), 0, True
    if not again:
        return 1, min(1, max_attempts - 1), True
    # Both are asked again in turn: primary, backup, primary, ...
    return math.ceil(max_attempts / 2), max_attempts // 2, True


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fault=st.sampled_from(FAULTS),
    providers=st.sampled_from([1, 2]),
    max_attempts=st.integers(1, 4),
    rule=st.booleans(),
)
def test_requests_per_provider_match_the_table(
    trio: Trio,
    make_agency: MakeAgency,
    fault: Fault,
    providers: int,
    max_attempts: int,
    rule: bool,
) -> None:
    for fake in trio:
        fake.reset()
    primary, backup, _ = trio
    for fake in (primary, backup):
        fault.script(fake, times=max_attempts)
    condition = classify(fault.cls).condition
    rules = [{"condition": condition}] if rule and condition else []
    agency = make_agency(
        providers,
        providers=[{"timeout": _TIMEOUT_S} if fault.cls is errors.Timeout else {}] * providers,
        breaker=_PATIENT,
        max_attempts=max_attempts,
        rules=rules,
    )
    expected_primary, expected_backup, falls = _expected(
        fault, providers, max_attempts, bool(rules)
    )

    with pytest.raises((fault.cls, AllProvidersFailed)) as caught:
        agency.chat_model().invoke("hi")

    assert (_chat_requests(primary), _chat_requests(backup)) == (expected_primary, expected_backup)
    failures = caught.value.exceptions if falls else [caught.value]
    if falls:
        assert isinstance(caught.value, AllProvidersFailed)
    assert all(type(e) is fault.cls for e in failures), caught.value
    health = agency.health()
    counted = health["primary"]["breaker"]["failures"]
    assert counted == (expected_primary if classify(fault.cls).breaker_failure else 0)


# -- the bug of issue #11: a 404 model_not_found was retried on the same provider -------------
def _two_entries_without_the_model(make_agency: MakeAgency) -> Agency:
    return make_agency(
        2, max_attempts=4, providers=[{"text_model": "gpt-nope"}, {"text_model": "gpt-nope"}]
    )


def test_model_not_found_is_asked_once_per_provider(trio: Trio, make_agency: MakeAgency) -> None:
    primary, backup, _ = trio
    with pytest.raises(AllProvidersFailed) as caught:
        _two_entries_without_the_model(make_agency).chat_model().invoke("hi")
    assert (_chat_requests(primary), _chat_requests(backup)) == (1, 1)
    assert [type(e) for e in caught.value.exceptions] == [ModelNotFound, ModelNotFound]
    assert [name for name, _ in caught.value.attempts] == ["primary", "backup"]


async def test_model_not_found_is_asked_once_per_provider_async(
    trio: Trio, make_agency: MakeAgency
) -> None:
    primary, backup, _ = trio
    with pytest.raises(AllProvidersFailed):
        await _two_entries_without_the_model(make_agency).chat_model().ainvoke("hi")
    assert (_chat_requests(primary), _chat_requests(backup)) == (1, 1)


def test_a_retry_original_rule_does_not_retry_a_404(trio: Trio, make_agency: MakeAgency) -> None:
    primary, backup, _ = trio
    agency = make_agency(
        2,
        max_attempts=4,
        providers=[{"text_model": "gpt-nope"}, {"text_model": "gpt-nope"}],
        rules=[{"condition": "unavailable", "retry_original": True}],
    )
    with pytest.raises(AllProvidersFailed):
        agency.chat_model().invoke("hi")
    assert (_chat_requests(primary), _chat_requests(backup)) == (1, 1)


def test_one_failure_may_opt_out_of_retries(trio: Trio, make_agency: MakeAgency) -> None:
    deterministic = errors.ProviderUnavailable("in-process failure")
    deterministic.is_retryable = False
    assert not retries_same(deterministic)
    assert retries_same(errors.ProviderUnavailable("5xx"))
    assert make_agency(1)._pool.policy.retry_delay(deterministic) is None


# -- every reader agrees with the table ------------------------------------------------------
@pytest.mark.parametrize("cls", list(errors.ERROR_POLICIES), ids=lambda c: c.__name__)
def test_readers_agree_with_the_table(cls: type[BaseException]) -> None:
    row = errors.ERROR_POLICIES[cls]
    assert classify(cls) == row
    if issubclass(cls, errors.ProviderError):
        exc: BaseException = cls("x")
        assert exc.is_retryable is row.retry_same
        assert _http.RetryPolicy().should_retry(exc) is row.retry_same
    elif issubclass(cls, ExceptionGroup):
        exc = cls("all", [errors.BadRequest("x")])
    else:
        exc = cls()
    assert counts_as_failure(exc) is row.breaker_failure
    assert condition_of(exc) == row.condition


@settings(max_examples=30, deadline=None)
@given(fault=st.sampled_from(FAULTS), max_retries=st.integers(0, 4))
def test_adapter_attempts_match_the_table(fault: Fault, max_retries: int) -> None:
    calls = 0
    slept: list[float] = []

    def fail() -> None:
        nonlocal calls
        calls += 1
        raise fault.cls("x", provider="p", model="m")

    policy = _http.RetryPolicy(max_retries=max_retries, initial_backoff_s=0.0)
    with pytest.raises(fault.cls):
        _http.call_with_retry(fail, policy, sleep=slept.append)
    assert calls == (max_retries + 1 if classify(fault.cls).retry_same else 1)
    assert len(slept) == calls - 1
