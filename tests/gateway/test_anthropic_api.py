"""``POST /v1/messages``: Anthropic's SDK and langchain-anthropic's ChatAnthropic against the
gateway (an OpenAI upstream behind it), JSON and streamed, tools included."""

from __future__ import annotations

import json
from collections.abc import Callable

import anthropic
import httpx
import pytest
from fakes._openapi import validate_request
from fakes.openai_server import Reply
from gateway_harness import Running
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import HumanMessage

WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="


SPEC = "anthropic-openapi.yaml"


def _valid(schema: str, body: object) -> None:
    assert validate_request(SPEC, schema, body) == [], body


def _client(run: Running) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=run.url, api_key=run.key(), max_retries=0)


def test_message_json(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    raw = _client(run).messages.with_raw_response.create(
        model="primary",
        max_tokens=64,
        system="be brief",
        messages=[{"role": "user", "content": "hello anthropic"}],
    )
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].type == "text"
    assert msg.content[0].text == "Hello! You said: hello anthropic"
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    assert raw.headers["x-agency-provider"] == "primary"
    _valid("Message", json.loads(raw.http_response.text))
    sent = run.primary.requests[-1].body
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    assert sent.get("max_completion_tokens", sent.get("max_tokens")) == 64


def test_stream_events(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    with _client(run).messages.stream(
        model="primary", max_tokens=64, messages=[{"role": "user", "content": "stream it"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Hello! You said: stream it"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    # The framing itself: event names in Anthropic's order.
    with httpx.stream(
        "POST",
        run.url + "/v1/messages",
        headers={"x-api-key": run.key("raw")},
        json={
            "model": "primary",
            "max_tokens": 20,
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        },
    ) as r:
        lines = list(r.iter_lines())
    names = [line[7:] for line in lines if line.startswith("event: ")]
    for line in lines:
        if line.startswith("data: "):
            event = json.loads(line[6:])
            if event["type"] != "ping":
                _valid("MessageStreamEvent", event)
    assert names[:2] == ["message_start", "ping"]
    assert names[2] == "content_block_start" and "content_block_delta" in names
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_and_results(start_gateway: Callable[..., Running], stream: bool) -> None:
    run = start_gateway()
    run.primary.script(Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Rome"}}]))
    client = _client(run)
    args = {
        "model": "primary",
        "max_tokens": 100,
        "tools": [WEATHER],
        "tool_choice": {"type": "any"},
        "messages": [{"role": "user", "content": "weather in Rome?"}],
    }
    if stream:
        with client.messages.stream(**args) as s:  # type: ignore[arg-type]
            msg = s.get_final_message()
    else:
        msg = client.messages.create(**args)  # type: ignore[arg-type]
    assert msg.stop_reason == "tool_use"
    use = next(b for b in msg.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Rome"}
    sent = run.primary.requests[-1].body
    assert sent["tool_choice"] == "required"
    assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
    # The result goes back as Anthropic has it: a tool_result block in the next user turn.
    client.messages.create(
        model="primary",
        max_tokens=50,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "weather in Rome?"},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": use.id,
                        "name": "get_weather",
                        "input": {"city": "Rome"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "content": "sunny"},
                    {"type": "text", "text": "and tomorrow?"},
                ],
            },
        ],
    )
    sent = run.primary.requests[-1].body["messages"]
    assert sent[1]["tool_calls"][0]["id"] == use.id
    assert sent[2] == {"role": "tool", "tool_call_id": use.id, "content": "sunny"}
    assert sent[3] == {"role": "user", "content": "and tomorrow?"}


def test_images_reach_the_upstream(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    _client(run).messages.create(
        model="primary",
        max_tokens=20,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
                    },
                    {"type": "text", "text": "what is it?"},
                ],
            }
        ],
    )
    parts = run.primary.requests[-1].body["messages"][0]["content"]
    assert parts[0]["image_url"]["url"] == f"data:image/png;base64,{PNG_B64}"


def test_chatanthropic_invoke_and_stream(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    llm = ChatAnthropic(
        model="role:cheap",
        base_url=run.url,
        api_key=run.key(),  # type: ignore[call-arg,arg-type]
        max_retries=0,
        max_tokens=64,
    )
    answer = llm.invoke([HumanMessage("hi claude-ish")])
    assert answer.content == "Hello! You said: hi claude-ish" or answer.text == (
        "Hello! You said: hi claude-ish"
    )
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] > 0
    text = "".join(c.text for c in llm.stream("streaming claude-ish"))
    assert text == "Hello! You said: streaming claude-ish"
    run.primary.script(Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}]))
    called = llm.bind_tools([WEATHER]).invoke("weather in Oslo")
    assert called.tool_calls[0]["name"] == "get_weather"
    assert called.tool_calls[0]["args"] == {"city": "Oslo"}


def test_errors_in_anthropic_shape(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    r = httpx.post(
        run.url + "/v1/messages",
        headers={"x-api-key": run.key()},
        json={"model": "primary", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 400
    assert r.json()["type"] == "error"
    _valid("ErrorResponse", r.json())
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in r.json()["error"]["message"]
    bad_key = anthropic.Anthropic(base_url=run.url, api_key="sk-agency-nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad_key.messages.create(
            model="primary", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert json.loads(r.text)["error"]["message"]
