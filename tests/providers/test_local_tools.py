"""The embedded model's tool modes and grammars, without loading the model."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGenerationChunk

from agency.errors import BadRequest, MalformedResponse
from agency.providers import _local_tools as lt
from agency.providers._base import ChatRequest

WHERE: dict[str, Any] = {"provider": "local", "model": "smollm2"}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
ASK = [HumanMessage("Add 2 and 3.")]
AFTER_RESULT = [
    *ASK,
    AIMessage("", tool_calls=[{"name": "add", "args": {"a": 2, "b": 3}, "id": "c1"}]),
    ToolMessage("5", tool_call_id="c1"),
]


def _request(messages: list[Any] = ASK, **kw: Any) -> ChatRequest:
    return ChatRequest(messages=messages, model="smollm2", **kw)


def _chunk(text: str) -> ChatGenerationChunk:
    usage = {"input_tokens": 300, "output_tokens": 4, "total_tokens": 304}
    message = AIMessageChunk(content=text, usage_metadata=usage)  # type: ignore[arg-type]
    return ChatGenerationChunk(message=message)


@pytest.mark.parametrize(
    ("kw", "messages", "mode"),
    [
        ({}, ASK, "none"),
        ({"tools": [ADD], "tool_choice": "none"}, ASK, "none"),
        ({"tools": [ADD]}, ASK, "auto"),
        ({"tools": [ADD], "tool_choice": "auto"}, ASK, "auto"),
        ({"tools": [ADD]}, AFTER_RESULT, "none"),
        ({"tools": [ADD], "tool_choice": "required"}, ASK, "forced"),
        ({"tools": [ADD], "tool_choice": "any"}, AFTER_RESULT, "forced"),
        ({"tools": [ADD], "tool_choice": {"type": "function", "function": {"name": "add"}}}, ASK,
         "forced"),
    ],
)  # fmt: skip
def test_tool_mode(kw: dict[str, Any], messages: list[Any], mode: str) -> None:
    assert lt.tool_mode(_request(messages, **kw)) == mode


def test_the_choosing_pass_asks_in_smollm2s_format_and_keeps_the_callers_instructions() -> None:
    request = _request(
        [SystemMessage("Be terse."), *ASK],
        tools=[ADD],
        max_tokens=20,
        extra_body={"top_k": 5, "repeat_penalty": 1.3},
    )
    choosing, constraint = lt.as_auto_tool_request(request, WHERE)
    assert constraint is not None
    system, *rest = choosing.messages
    assert isinstance(system, SystemMessage)
    assert "<tools>" in system.text and '"name": "add"' in system.text
    assert system.text.endswith("Be terse.")
    assert rest == ASK
    assert choosing.tools is None and choosing.tool_choice is None
    assert choosing.response_format is None
    assert choosing.max_tokens == lt.AUTO_TOOLS_MAX_TOKENS  # a call needs more than 20
    assert choosing.extra_body == {"top_k": 5, "repeat_penalty": 1.0}


def test_the_choice_parses_to_a_call_or_none() -> None:
    assert lt.parse_auto_answer(_chunk("<tool_call>[]</tool_call>"), "local", "m") is None
    call = lt.parse_auto_answer(
        _chunk('<tool_call>[{"name": "add", "arguments": {"a": 2, "b": 3}}]</tool_call>'),
        "local",
        "m",
    )
    assert call is not None
    message = call.message
    assert isinstance(message, AIMessageChunk)
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert message.tool_calls[0]["id"]
    assert message.text == "" and message.usage_metadata is not None
    assert message.usage_metadata["input_tokens"] == 300
    assert call.generation_info == {"finish_reason": "tool_calls"}


@pytest.mark.parametrize(
    "text",
    ["Sure! 5", "<tool_call>[{]</tool_call>", '<tool_call>[{"name": "add"}]</tool_call>'],
)
def test_an_answer_outside_the_grammar_is_a_malformed_response(text: str) -> None:
    with pytest.raises(MalformedResponse) as info:
        lt.parse_auto_answer(_chunk(text), "local", "m")
    assert info.value.provider == "local"


def test_call_opening_tokens_are_those_starting_with_a_brace() -> None:
    vocab = [(1, b"{"), (2, b'{"'), (3, b" {"), (4, b"]"), (5, b"}"), (6, b"{\n")]
    assert lt.call_opening_tokens(vocab) == [1, 2, 6]


def test_forced_choice_is_a_json_schema_of_the_named_tool() -> None:
    other = {**ADD, "function": {**ADD["function"], "name": "sub"}}
    choice = {"type": "function", "function": {"name": "sub"}}
    forced = lt.as_forced_tool_request(_request(tools=[ADD, other], tool_choice=choice), WHERE)
    assert forced.tools is None and forced.response_format is not None
    schema = forced.response_format["json_schema"]["schema"]
    assert schema["properties"]["name"] == {"const": "sub"}
    with pytest.raises(BadRequest, match="'mul', which is not among the tools"):
        lt.as_forced_tool_request(
            _request(tools=[ADD], tool_choice={"function": {"name": "mul"}}), WHERE
        )


def test_json_strings_in_grammars_exclude_control_characters() -> None:
    # llama-cpp-python's converter admits raw control characters in strings; if its output
    # ever changes, the replacement in `_gbnf` would silently stop applying.
    text = lt._gbnf({"type": "object", "properties": {"s": {"type": "string"}}})
    assert lt._STRICT_CHAR in text and lt._LOOSE_CHAR not in text


def test_free_strings_get_a_length_bound_and_bounded_ones_keep_theirs() -> None:
    schema = {
        "type": "object",
        "properties": {
            "free": {"type": "string"},
            "short": {"type": "string", "maxLength": 5},
            "kind": {"type": "string", "enum": ["a", "b"]},
            "list": {"type": "array", "items": {"type": "string"}},
        },
    }
    before = json.dumps(schema)
    capped = lt.cap_strings(schema)["properties"]
    assert capped["free"]["maxLength"] == lt.JSON_MAX_STRING_CHARS
    assert capped["short"]["maxLength"] == 5 and "maxLength" not in capped["kind"]
    assert capped["list"]["items"]["maxLength"] == lt.JSON_MAX_STRING_CHARS
    assert json.dumps(schema) == before  # the caller's schema is left alone


def test_a_schema_the_converter_rejects_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="cannot turn the JSON schema into a grammar"):
        lt.grammar({"type": "object", "properties": {"x": {"$ref": "#/nowhere"}}}, WHERE)


def test_tool_calls_and_results_are_told_as_a_note() -> None:
    history = [
        *ASK,
        AIMessage(
            "Let me add.",
            tool_calls=[
                {"name": "add", "args": {"a": 2, "b": 3}, "id": "c1"},
                {"name": "div", "args": {"a": 1, "b": 0}, "id": "c2"},
            ],
        ),
        ToolMessage("5", tool_call_id="c1"),
        ToolMessage("division by zero", tool_call_id="c2", status="error"),
        HumanMessage("And 3 and 4?"),
    ]
    out = lt.tool_results_as_notes(history)
    assert [type(m).__name__ for m in out] == [
        "HumanMessage", "AIMessage", "SystemMessage", "HumanMessage"
    ]  # fmt: skip
    assert out[1].text == "Let me add." and not getattr(out[1], "tool_calls", None)
    assert out[2].text == (
        "The add tool returned: 5\nThe div tool failed with: division by zero\n"
        "Answer the user's question with it."
    )
    assert lt.tool_results_as_notes(ASK) == ASK
