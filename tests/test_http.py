"""The shared HTTP plumbing: SSE framing, error mapping, the retry loop, client pools."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from agency import _http, errors


def _response(
    status: int, body: object = None, headers: dict[str, str] | None = None, text: str | None = None
) -> httpx.Response:
    if text is not None:
        return httpx.Response(status, text=text, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


# -- SSE -----------------------------------------------------------------------------------
def _sse(raw: str) -> list[_http.SSEEvent]:
    response = httpx.Response(
        200, content=raw.encode(), headers={"content-type": "text/event-stream"}
    )
    return list(_http.iter_sse(response))


def test_sse_frames_multiline_data_comments_and_events() -> None:
    raw = (
        ": keep-alive comment\n\n"
        'event: message_start\ndata: {"a":\ndata: 1}\n\n'
        "data: plain\r\n\r\n"
        "id: 7\ndata:no-space\n\n"
        "data: [DONE]\n\n"
    )
    events = _sse(raw)
    assert [e.event for e in events] == ["message_start", None, None, None]
    assert events[0].data == '{"a":\n1}'
    assert events[1].data == "plain"
    assert (events[2].data, events[2].id) == ("no-space", "7")
    assert events[3].data == "[DONE]"


def test_sse_flushes_an_unterminated_last_event() -> None:
    assert [e.data for e in _sse("data: a\n\ndata: b")] == ["a", "b"]


async def test_async_sse_matches_sync() -> None:
    raw = "event: x\ndata: 1\n\ndata: 2\n\n"

    async def body():  # type: ignore[no-untyped-def]
        for part in (raw[:5], raw[5:17], raw[17:]):
            yield part.encode()

    response = httpx.Response(200, content=body())
    events = [e async for e in _http.aiter_sse(response)]
    assert [(e.event, e.data) for e in events] == [("x", "1"), (None, "2")]


# -- retry-after -----------------------------------------------------------------------------
def test_retry_after_forms() -> None:
    assert _http.retry_after_seconds(httpx.Headers({"retry-after": "3"})) == 3.0
    assert (
        _http.retry_after_seconds(httpx.Headers({"retry-after-ms": "1500", "retry-after": "9"}))
        == 1.5
    )
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (_http.retry_after_seconds(httpx.Headers({"retry-after": future})) or 0) <= 31
    assert _http.retry_after_seconds(httpx.Headers({})) is None
    assert _http.retry_after_seconds(httpx.Headers({"retry-after": "soon"})) is None


# -- error mapping ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (
            401,
            {
                "error": {
                    "message": "bad key",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
            errors.AuthenticationError,
        ),
        (403, {"error": {"message": "no"}}, errors.PermissionDenied),
        (
            404,
            {"error": {"message": "The model `x` does not exist", "code": "model_not_found"}},
            errors.ModelNotFound,
        ),
        (
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 8192 tokens",
                    "code": "context_length_exceeded",
                }
            },
            errors.ContextWindowExceeded,
        ),
        (400, {"error": {"message": "flagged", "code": "content_filter"}}, errors.ContentFiltered),
        (422, {"detail": "bad field"}, errors.BadRequest),
        (429, {"error": {"message": "slow down", "type": "requests"}}, errors.RateLimited),
        (500, {"error": {"message": "oops", "type": "server_error"}}, errors.ProviderUnavailable),
        (503, None, errors.ProviderUnavailable),
        (
            529,
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            errors.ProviderUnavailable,
        ),
        (408, {"error": {"message": "timeout"}}, errors.ProviderUnavailable),
    ],
)
def test_error_from_response_maps_status(status: int, body: object, cls: type) -> None:
    err = _http.error_from_response(
        _response(status, body, {"x-request-id": "req_1"}), provider="p", model="m"
    )
    assert type(err) is cls
    assert (err.status_code, err.request_id, err.provider, err.model) == (status, "req_1", "p", "m")


def test_error_from_response_reads_retry_after_and_redacts() -> None:
    body = {"error": {"message": "Incorrect API key provided: sk-live-abcdef123456789"}}
    err = _http.error_from_response(
        _response(429, body, {"retry-after": "7"}),
        provider="p",
        model=None,
        secret="sk-live-abcdef123456789",
    )
    assert isinstance(err, errors.RateLimited)
    assert err.retry_after == 7.0
    assert "abcdef123456789" not in str(err)


def test_error_from_response_non_json_body() -> None:
    err = _http.error_from_response(
        _response(502, text="<html>Bad Gateway</html>"), provider="p", model=None
    )
    assert isinstance(err, errors.ProviderUnavailable)
    assert "Bad Gateway" in err.message


def test_error_from_transport() -> None:
    assert isinstance(
        _http.error_from_transport(httpx.ReadTimeout("t"), provider="p", model=None), errors.Timeout
    )
    assert isinstance(
        _http.error_from_transport(httpx.ConnectError("refused"), provider="p", model=None),
        errors.ConnectionFailed,
    )
    assert isinstance(
        _http.error_from_transport(httpx.RemoteProtocolError("cut"), provider="p", model=None),
        errors.ConnectionFailed,
    )


# -- the retry loop --------------------------------------------------------------------------
def _run(max_retries: int, failures: list[Exception]) -> tuple[int, list[float]]:
    slept: list[float] = []
    calls = 0
    for attempt in _http.retrying(max_retries, sleep=slept.append):
        with attempt:
            calls += 1
            if failures:
                raise failures.pop(0)
    return calls, slept


def test_retry_honours_retry_after_then_succeeds() -> None:
    calls, slept = _run(
        3, [errors.RateLimited("x", retry_after=4.0), errors.ProviderUnavailable("y")]
    )
    assert calls == 3
    assert slept[0] == 4.0
    base = _http.BACKOFF_INITIAL_S * _http.BACKOFF_MULTIPLIER
    assert base <= slept[1] <= base * (1 + _http.JITTER_FRACTION)


def test_retry_stops_after_max_retries() -> None:
    with pytest.raises(errors.ProviderUnavailable):
        _run(2, [errors.ProviderUnavailable(str(i)) for i in range(5)])


@pytest.mark.parametrize(
    "exc",
    [
        errors.BadRequest("x"),
        errors.AuthenticationError("x"),
        errors.ModelNotFound("x"),
        errors.MalformedResponse("x"),
        ValueError("x"),
    ],
)
def test_never_retries_client_errors(exc: Exception) -> None:
    calls: list[int] = []
    with pytest.raises(type(exc)):
        for attempt in _http.retrying(5, sleep=lambda s: None):
            with attempt:
                calls.append(1)
                raise exc
    assert len(calls) == 1


def test_retry_after_beyond_cap_is_raised_at_once() -> None:
    calls, slept = 0, []
    with pytest.raises(errors.RateLimited):
        for attempt in _http.retrying(5, sleep=slept.append):
            with attempt:
                calls += 1
                raise errors.RateLimited("x", retry_after=_http.MAX_RETRY_AFTER_S + 1)
    assert (calls, slept) == (1, [])


def test_backoff_is_capped() -> None:
    _calls, slept = _run(8, [errors.Timeout("t") for _ in range(8)])
    assert max(slept) <= _http.BACKOFF_MAX_S * (1 + _http.JITTER_FRACTION)


async def test_async_retry_twin() -> None:
    slept: list[float] = []

    async def fake_sleep(s: float) -> None:
        slept.append(s)

    calls = 0
    async for attempt in _http.retrying_async(2, sleep=fake_sleep):
        with attempt:
            calls += 1
            if calls < 3:
                raise errors.ConnectionFailed("x")
    assert calls == 3
    assert len(slept) == 2


# -- pools -----------------------------------------------------------------------------------
def test_sync_client_is_pooled_per_base_url_and_timeout() -> None:
    a = _http.sync_client("http://127.0.0.1:1/v1", 5.0)
    assert _http.sync_client("http://127.0.0.1:1/v1", 5.0) is a
    assert _http.sync_client("http://127.0.0.1:1/v1", 6.0) is not a
    _http.close_clients()
    assert a.is_closed
    assert _http.sync_client("http://127.0.0.1:1/v1", 5.0) is not a


async def test_async_client_is_pooled_per_loop() -> None:
    a = _http.async_client("http://127.0.0.1:1/v1", 5.0)
    assert _http.async_client("http://127.0.0.1:1/v1", 5.0) is a
    await _http.aclose_clients()
    assert a.is_closed


def test_call_with_retry_fast_path_then_policy() -> None:
    slept: list[float] = []
    outcomes: list[object] = [errors.RateLimited("x", retry_after=1.5), errors.Timeout("t"), "ok"]

    def fn() -> str:
        item = outcomes.pop(0)
        if isinstance(item, Exception):
            raise item
        return str(item)

    assert _http.call_with_retry(fn, 2, sleep=slept.append) == "ok"
    assert slept[0] == 1.5 and len(slept) == 2
    # The failed first attempt counts: 1 bare + 2 retries, no more.
    calls: list[int] = []

    def always() -> str:
        calls.append(1)
        raise errors.ProviderUnavailable("down")

    with pytest.raises(errors.ProviderUnavailable):
        _http.call_with_retry(always, 2, sleep=lambda s: None)
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(errors.ProviderUnavailable):
        _http.call_with_retry(always, 0, sleep=lambda s: None)
    assert len(calls) == 1


async def test_call_with_retry_async_counts_attempts() -> None:
    calls: list[int] = []

    async def fn() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise errors.ConnectionFailed("x")
        return len(calls)

    async def nosleep(s: float) -> None:
        return None

    assert await _http.call_with_retry_async(fn, 2, sleep=nosleep) == 3
    calls.clear()
    with pytest.raises(errors.ConnectionFailed):
        await _http.call_with_retry_async(fn, 1, sleep=nosleep)
    assert len(calls) == 2


# -- the retry policy ------------------------------------------------------------------------
def test_retry_policy_numbers_drive_the_loop() -> None:
    policy = _http.RetryPolicy(
        max_retries=4, initial_backoff_s=1.0, backoff_multiplier=3.0, max_backoff_s=5.0, jitter=0
    )
    slept: list[float] = []
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls <= 4:
            raise errors.Timeout("t")
        return "ok"

    assert _http.call_with_retry(flaky, policy, sleep=slept.append) == "ok"
    assert slept == [1.0, 3.0, 5.0, 5.0]


def test_a_bare_count_is_the_default_policy_with_that_many_retries() -> None:
    assert _http.RetryPolicy.of(3) == _http.RetryPolicy(max_retries=3)
    policy = _http.RetryPolicy(max_retries=1)
    assert _http.RetryPolicy.of(policy) is policy


def test_retry_policy_caps_retry_after_and_can_retry_other_classes() -> None:
    patient = _http.RetryPolicy(max_retry_after_s=2.0)
    assert patient.should_retry(errors.RateLimited("x", retry_after=2.0))
    assert not patient.should_retry(errors.RateLimited("x", retry_after=2.5))
    bold = _http.RetryPolicy(retry_on=lambda e: isinstance(e, errors.BadRequest))
    assert bold.should_retry(errors.BadRequest("x"))
    assert not bold.should_retry(errors.Timeout("x"))
    calls, slept = 0, []
    with pytest.raises(errors.BadRequest):
        for attempt in _http.retrying(
            _http.RetryPolicy(max_retries=2, retry_on=bold.retry_on), sleep=slept.append
        ):
            with attempt:
                calls += 1
                raise errors.BadRequest("x")
    assert (calls, len(slept)) == (3, 2)


@pytest.mark.parametrize("status", [408, 409, 520, 524])
def test_statuses_that_mean_unavailable(status: int) -> None:
    err = _http.error_from_response(_response(status, None), provider="p", model=None)
    assert type(err) is errors.ProviderUnavailable
