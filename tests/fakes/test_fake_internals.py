"""Unit tests of the fakes' parts: the brain's schema-instance generator (its instances must
validate), the OpenAPI helper, the server harness, the fake's reset."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from jsonschema import Draft202012Validator
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ._brain import PromptValues, instance_for, respond
from ._openapi import SPECS_DIR, request_validator, validate_request
from ._server import serve
from .openai_server import Fail, FakeOpenAI, Reply

SPEC = "openai-openapi.yaml"
MODEL = "gpt-4o-mini"
HELLO = [{"role": "user", "content": "Hello there"}]
MAGIC_TOOL = {
    "type": "function",
    "function": {
        "name": "magic_function",
        "parameters": {
            "type": "object",
            "properties": {"input": {"type": "integer", "exclusiveMinimum": -1000}},
            "required": ["input"],
        },
    },
}


# --------------------------------------------------------------------------- the brain


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {}},
        {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "minimum": 10, "maximum": 20, "multipleOf": 3},
                "b": {"type": "number", "exclusiveMaximum": 0},
                "c": {"type": "string", "enum": ["x", "y"]},
                "d": {"type": "boolean"},
                "e": {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 300}]},
                "f": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "minItems": 3,
                    "uniqueItems": True,
                },
                "g": {"const": "fixed"},
                "h": {"type": "string", "format": "date-time", "maxLength": 30},
                "i": {"type": ["null", "integer"]},
            },
            "required": ["a", "b"],
            "additionalProperties": False,
        },
        {
            "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "string"}}}},
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "maxItems": 1},
                "nested": {"allOf": [{"$ref": "#/$defs/Item"}, {"required": ["n"]}]},
                "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]},
                "map": {
                    "type": "object",
                    "additionalProperties": {"type": "integer"},
                    "minProperties": 2,
                },
            },
        },
    ],
)
def test_instance_for_generates_valid_instances(schema):
    instance = instance_for(schema, PromptValues("Make 'Quux' with 42 and 7, not 3"))
    assert list(Draft202012Validator(schema).iter_errors(instance)) == []


def test_instance_for_takes_values_from_the_prompt():
    schema = {
        "type": "object",
        "properties": {
            "customer_name": {"type": "string"},
            "description": {"type": "string"},
            "a": {"type": "integer"},
            "b": {"type": "integer"},
        },
    }
    prompt = "Create a customer named '你好啊集团' - add 3 + 4"
    assert instance_for(schema, PromptValues(prompt)) == {
        "customer_name": "你好啊集团",
        "description": prompt,
        "a": 3,
        "b": 4,
    }
    values = PromptValues("What's the weather? It's 'sunny' or \"rainy\", maybe `x_y`.")
    assert values.strings == ["sunny", "rainy", "x_y"]


def test_respond_honours_tool_choice_none_and_required():
    body = {"model": MODEL, "messages": HELLO, "tools": [MAGIC_TOOL]}
    assert respond({**body, "tool_choice": "none"}).tool_calls == []
    after_tool = [
        *HELLO,
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {}}]},
        {"role": "tool", "tool_call_id": "c", "content": "42"},
    ]
    assert respond({**body, "messages": after_tool}).content == "The tool returned: 42"
    forced = respond({**body, "messages": after_tool, "tool_choice": "required"})
    assert forced.finish_reason == "tool_calls"
    assert json.loads(forced.tool_calls[0].arguments) == {"input": 0}


# --------------------------------------------------------------------------- plumbing


def test_openapi_helper_reads_the_shared_spec_and_accepts_nullable_nulls():
    assert SPECS_DIR.name == "specs" and SPECS_DIR.parent.name == "shared"
    assert (SPECS_DIR / SPEC).exists()
    body = {"model": MODEL, "messages": HELLO, "max_completion_tokens": None, "stop": None}
    assert validate_request(SPEC, "CreateChatCompletionRequest", body) == []
    assert validate_request(SPEC, "CreateChatCompletionRequest", {**body, "messages": [{}]}) == [
        "messages[0]: 'role' is a required property"
    ]
    assert validate_request(
        SPEC, "CreateChatCompletionRequest", {**body, "messages": [{"role": "usr"}]}
    ) == [
        "messages[0].role: 'usr' is not one of "
        "['developer', 'system', 'user', 'assistant', 'tool', 'function']"
    ]
    assert validate_request(SPEC, "CreateEmbeddingRequest", {"model": "m", "input": 1}) == [
        "input: 1 is not of type 'string'"
    ]
    with pytest.raises(KeyError):
        request_validator(SPEC, "NoSuchSchema")


def test_serve_runs_any_asgi_app_and_releases_the_port():
    app = Starlette(routes=[Route("/ping", lambda request: PlainTextResponse("pong"))])
    with serve(app) as url:
        assert httpx.get(f"{url}/ping", trust_env=False).text == "pong"
        port = int(url.rsplit(":", 1)[1])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_reset_clears_state_and_restores_configuration():
    fake = FakeOpenAI(models=["m1"])
    fake.models.append("m2")
    fake.api_key = "changed"
    fake.script(Reply("x"))
    fake.spec_violations.append("v")
    fake.reset()
    assert (fake.models, fake.api_key, fake.pending_actions, fake.spec_violations) == (
        ["m1"],
        None,
        0,
        [],
    )
    assert fake.Reply is Reply and fake.Fail is Fail
