"""Oracle tests of failure paths: the ``openai`` SDK must map the fake's errors, scripted
failures and broken transports exactly as it maps the live service's; spec and live-API rule
violations must answer 400 and be recorded in ``spec_violations``."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from .openai_server import Disconnect, Fail, Malformed, Reply, Stall
from .test_openai_fake import HELLO, MODEL, _client, _schema_errors
from .test_openai_fake import client as oracle_client

client = oracle_client  # the same SDK-client fixture

# --------------------------------------------------------------------------- errors


def test_rate_limit_error_exposes_retry_after(openai_fake, client):
    openai_fake.script(Fail(429, headers={"retry-after": "2"}))
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    error = caught.value
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == "2"
    assert "retry-after-ms" not in error.response.headers
    assert (error.code, error.type) == ("rate_limit_exceeded", "requests")
    assert error.response.headers["x-request-id"] == error.request_id


def test_sdk_retries_through_scripted_failures(openai_fake):
    openai_fake.script(Fail(429, times=2), Fail(500, headers={"retry-after-ms": "10"}))
    completion = _client(openai_fake, max_retries=3).chat.completions.create(
        model=MODEL, messages=HELLO
    )
    assert (completion.choices[0].message.content or "").startswith("Hello!")
    assert len(openai_fake.requests) == 4
    assert openai_fake.pending_actions == 0


def test_authentication_errors(openai_fake, client):
    openai_fake.api_key = "sk-right"
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    assert caught.value.code == "invalid_api_key"
    assert "sk-right" not in str(caught.value)
    missing = httpx.post(
        f"{openai_fake.base_url}/chat/completions",
        json={"model": MODEL, "messages": HELLO},
        trust_env=False,
    )
    assert missing.status_code == 401
    assert missing.json()["error"]["message"].startswith("You didn't provide an API key")
    ok = _client(openai_fake, api_key="sk-right").chat.completions.create(
        model=MODEL, messages=HELLO
    )
    assert ok.choices[0].message.content


def test_unknown_model_and_server_errors(openai_fake, client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", messages=HELLO)
    assert caught.value.code == "model_not_found"
    openai_fake.script(Fail(500), Fail(400, "nope", body={"code": "custom_code", "param": "messages"}))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=MODEL, messages=HELLO)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    assert (bad.value.message, bad.value.code, bad.value.param) == (
        "Error code: 400 - nope",
        "custom_code",
        "messages",
    )


def test_default_rate_limit_headers_and_unknown_routes(openai_fake, client):
    openai_fake.script(Fail(429))
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    headers = caught.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("0", "20")
    assert headers["x-ratelimit-remaining-requests"] == "0"
    auth = {"Authorization": "Bearer sk-test"}
    missing = httpx.post(f"{openai_fake.base_url}/nope", headers=auth, trust_env=False)
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "Invalid URL (POST /v1/nope)"
    wrong = httpx.get(f"{openai_fake.base_url}/chat/completions", headers=auth, trust_env=False)
    assert wrong.status_code == 405 and wrong.headers["x-request-id"]
    assert [r.path for r in openai_fake.requests[-2:]] == ["/v1/nope", "/v1/chat/completions"]


def test_context_length_exceeded(openai_fake, client):
    openai_fake.context_window = 10
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "word " * 50}]
        )
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == "messages"


def test_spec_violation_is_a_400_and_is_recorded(openai_fake, client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/chat/completions", body={"model": MODEL}, cast_to=httpx.Response)
    assert caught.value.code == "missing_required_parameter"
    assert caught.value.param == "messages"
    assert len(openai_fake.spec_violations) == 1
    assert "'messages' is a required property" in openai_fake.spec_violations[0]
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument"):
        client.chat.completions.create(model=MODEL, messages=HELLO, extra_body={"foo": 1})
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model=MODEL, messages=HELLO, temperature="hot")  # type: ignore[arg-type]
    assert len(openai_fake.spec_violations) == 3
    bad_json = httpx.post(
        f"{openai_fake.base_url}/chat/completions",
        content=b"{not json",
        headers={"Authorization": "Bearer sk-test", "Content-Type": "application/json"},
        trust_env=False,
    )
    assert bad_json.status_code == 400
    assert _schema_errors("ErrorResponse", bad_json.json()) == []


def test_live_api_rules_beyond_the_schema(openai_fake, client):
    orphan_tool = [*HELLO, {"role": "tool", "tool_call_id": "call_1", "content": "x"}]
    with pytest.raises(openai.BadRequestError, match="role 'tool' must be a response"):
        client.chat.completions.create(model=MODEL, messages=orphan_tool)
    unanswered = [
        *HELLO,
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "user", "content": "well?"},
    ]
    with pytest.raises(openai.BadRequestError, match="call_1"):
        client.chat.completions.create(model=MODEL, messages=unanswered)
    with pytest.raises(openai.BadRequestError, match="must contain the word 'json'"):
        client.chat.completions.create(
            model=MODEL, messages=HELLO, response_format={"type": "json_object"}
        )
    loose = {"name": "Loose", "strict": True, "schema": {"type": "object", "properties": {}}}
    with pytest.raises(openai.BadRequestError, match="additionalProperties"):
        client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            response_format={"type": "json_schema", "json_schema": loose},
        )
    untyped = {"type": "function", "function": {"name": "f", "parameters": {"properties": {}}}}
    with pytest.raises(openai.BadRequestError, match='type: \\"object\\"'):
        client.chat.completions.create(model=MODEL, messages=HELLO, tools=[untyped])
    assert len(openai_fake.spec_violations) == 5
    assert all("contract:" in v for v in openai_fake.spec_violations)


# --------------------------------------------------------------------------- broken transport


def test_disconnect_mid_stream_raises_connection_error(openai_fake, client):
    openai_fake.script(Disconnect(after_events=2))
    received = []
    with pytest.raises(openai.APIConnectionError) as caught:
        for chunk in client.chat.completions.create(model=MODEL, messages=HELLO, stream=True):
            received.append(chunk)
    assert len(received) == 2
    assert "incomplete chunked read" in repr(caught.value.__cause__)
    openai_fake.script(Disconnect())
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=MODEL, messages=HELLO)


def test_stall_trips_client_timeout(openai_fake, client):
    openai_fake.script(Stall(5))
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.3).chat.completions.create(model=MODEL, messages=HELLO)
    openai_fake.script(Stall(0.05, then=Reply("late")))
    late = client.chat.completions.create(model=MODEL, messages=HELLO)
    assert late.choices[0].message.content == "late"


def test_malformed_bodies_reach_the_client(openai_fake, client):
    openai_fake.script(Malformed("not json"), Malformed('data: {"broken\n\n'))
    with pytest.raises(json.JSONDecodeError):
        client.chat.completions.create(model=MODEL, messages=HELLO)
    with pytest.raises(json.JSONDecodeError):
        list(client.chat.completions.create(model=MODEL, messages=HELLO, stream=True))
    assert openai_fake.requests[-1].body["stream"] is True
