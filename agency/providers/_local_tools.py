"""Grammars of the embedded model: JSON answers and tool calls.

llama.cpp constrains sampling with a GBNF grammar, so the local provider can promise what a
135M model could not keep on its own:

- ``response_format`` json_object / json_schema: the answer is JSON (of the schema).
- A **forced** ``tool_choice`` ("required"/"any"/a tool's name): the answer is one JSON object
  ``{"name", "arguments"}`` of an offered tool, arguments valid for its schema.
- **auto** (``tool_choice`` "auto" or unset, tools bound): the model *chooses*. It is asked in
  the function-calling format SmolLM2 was trained on, ``<tool_call>[...]</tool_call>``, under a
  grammar that admits exactly one valid call of an offered tool or the empty list, with a
  calibrated bias against calling (`AUTO_TOOLS_CALL_BIAS`: unbiased, it always calls). An empty
  list means "no tool": the answer is then written by a second pass without the tool prompt
  (which tells the model to refuse what no tool does), so plain answers are as good as with no
  tools bound. ``benchmarks/local_tools_eval.py`` measures the choice on a labelled set.
- After a tool's result, with the choice left to the model, the answer is text: one call per
  user turn, which keeps a small model from calling the same tool in a loop. Calls and results
  in the history are told to the model as a system note (`tool_results_as_notes`).
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk

from agency.errors import BadRequest, MalformedResponse
from agency.providers._base import ChatRequest

__all__ = [
    "AUTO_TOOLS_CALL_BIAS",
    "AUTO_TOOLS_MAX_TOKENS",
    "JSON_MAX_STRING_CHARS",
    "as_auto_tool_request",
    "as_forced_tool_request",
    "as_tool_call",
    "call_opening_tokens",
    "json_constraint",
    "parse_auto_answer",
    "tool_mode",
    "tool_results_as_notes",
    "without_tools",
]

JSON_MAX_STRING_CHARS = 200
"""``maxLength`` given to schema strings that set none: a small model in a grammar can loop
inside one string until ``max_tokens`` cuts the JSON off; a bound keeps the answer parseable."""
AUTO_TOOLS_MAX_TOKENS = 512
"""Token bound of the choosing pass: room for a call whose strings are all at
`JSON_MAX_STRING_CHARS`; the empty list takes a handful."""
AUTO_TOOLS_CALL_BIAS = -1.25
"""Logit added to every token that opens a call (``{``...) in the choosing pass. After
``<tool_call>[`` the grammar allows only a call or ``]``, and SmolLM2-135M ranks the call first
on nearly every prompt: without the bias it always calls. The margin between the two separates
"call" from "answer" far better than chance; this offset is its threshold, chosen on the dev
split of ``benchmarks/local_tools_eval.py`` only (the test split reports how it holds)."""

# SmolLM2's function-calling system prompt (from its model card): the format it was trained on,
# which is what makes its choice between a call and "[]" better than chance (see the benchmark).
_AUTO_PROMPT = (
    "You are an expert in composing functions. You are given a question and a set of possible "
    "functions. Based on the question, you will need to make one or more function/tool calls to "
    "achieve the purpose. If none of the functions can be used, point it out and refuse to "
    "answer. If the given question lacks the parameters required by the function, also point "
    "it out.\n\nYou have access to the following tools:\n<tools>{tools}</tools>\n\n"
    "The output MUST strictly adhere to the following format, and NO other text MUST be "
    "included.\nThe example format is as follows. Please make sure the parameter type is "
    "correct. If no function call is needed, please make the tool calls an empty list '[]'.\n"
    '<tool_call>[\n{{"name": "func_name1", "arguments": {{"argument1": "value1", "argument2": '
    '"value2"}}}},\n... (more tool calls as required)\n]</tool_call>'
)
_CALL_OPEN, _CALL_CLOSE = "<tool_call>[", "]</tool_call>"
_JSON_OBJECT_PROMPT = (
    "Respond with one JSON object. Use the keys the user asks for as top-level keys."
)
_JSON_SCHEMA_PROMPT = "Respond with one JSON object that matches this JSON schema:\n"
# llama-cpp-python's converter lets raw control characters into JSON strings, which strict
# JSON (and so every parser downstream) rejects; llama.cpp's own converter excludes them.
_LOOSE_CHAR = 'char ::= [^"\\\\]'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F]'
_ROOT = re.compile(r"(?<![\w-])root(?![\w-])")


# --------------------------------------------------------------------------- grammars
def cap_strings(schema: Any) -> Any:
    """A copy of ``schema`` whose free-text strings have a `JSON_MAX_STRING_CHARS` bound."""
    if isinstance(schema, list):
        return [cap_strings(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: cap_strings(v) for k, v in schema.items()}
    free = not any(k in out for k in ("maxLength", "enum", "const", "format", "pattern"))
    if out.get("type") == "string" and free:
        out["maxLength"] = JSON_MAX_STRING_CHARS
    return out


def _gbnf(schema: Any) -> str:
    from llama_cpp import llama_grammar

    text: str = llama_grammar.json_schema_to_gbnf(json.dumps(cap_strings(schema)))
    return text.replace(_LOOSE_CHAR, _STRICT_CHAR)


@functools.lru_cache(maxsize=64)
def _compile(gbnf: str) -> Any:
    from llama_cpp import llama_grammar

    return llama_grammar.LlamaGrammar.from_string(gbnf, verbose=False)


def grammar(schema: Any, where: dict[str, Any]) -> Any:
    """The llama.cpp grammar of a JSON schema (compact whitespace), cached by its text."""
    try:
        return _compile(_gbnf(schema))
    except Exception as exc:  # the converter rejects some schema features
        raise BadRequest(f"cannot turn the JSON schema into a grammar: {exc}", **where) from exc


def json_constraint(
    response_format: Mapping[str, Any] | None, messages: list[dict[str, Any]], where: dict[str, Any]
) -> tuple[Any | None, list[dict[str, Any]]]:
    """The grammar for ``response_format`` and the messages with a JSON instruction added.

    The grammar alone guarantees JSON; the instruction is what makes a 135M model fill it
    with an answer instead of looping inside the first string.
    """
    kind = (response_format or {}).get("type")
    if kind in (None, "text"):
        return None, messages
    if kind == "json_object":
        # `{"type": "object"}` compiles to llama.cpp's compact JSON grammar: any object, no
        # newlines (the default JSON grammar lets the model indent itself into nesting).
        schema: Any = (response_format or {}).get("schema") or {"type": "object"}
        instruction = _JSON_OBJECT_PROMPT
    elif kind == "json_schema":
        spec = (response_format or {}).get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise BadRequest("response_format json_schema needs json_schema.schema", **where)
        instruction = _JSON_SCHEMA_PROMPT + json.dumps(schema)
    else:
        raise BadRequest(f"unsupported response_format type {kind!r}", **where)
    constraint = grammar(schema, where)
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{instruction}"}
        return constraint, [first, *messages[1:]]
    return constraint, [{"role": "system", "content": instruction}, *messages]


# --------------------------------------------------------------------------- tool modes
def tool_mode(request: ChatRequest) -> Literal["none", "forced", "auto"]:
    """How this answer treats the bound tools.

    "none": no tools, ``tool_choice="none"``, or the choice is the model's and the
    conversation ends with a tool's result (the call it asked for has been made: it answers).
    "auto": tools bound with ``tool_choice`` "auto" or unset. "forced": any other choice.
    """
    if not request.tools or request.tool_choice == "none":
        return "none"
    if request.tool_choice in (None, "auto"):
        last = request.messages[-1] if request.messages else None
        return "none" if isinstance(last, ToolMessage) else "auto"
    return "forced"


def tool_results_as_notes(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """``messages`` with tool calls and their results told as a system note after them.

    Chat templates render a call as an empty assistant turn and a ``tool`` turn SmolLM2 does
    not read as an answer to use: it then asks the question back. Told "The get_weather tool
    returned: ...", it answers with the result. The assistant's own words are kept.
    """
    names: dict[str | None, str] = {}
    out: list[BaseMessage] = []
    notes: list[str] = []

    def flush() -> None:
        if notes:
            out.append(SystemMessage("\n".join([*notes, "Answer the user's question with it."])))
            notes.clear()

    for message in messages:
        if isinstance(message, AIMessage) and message.tool_calls:
            names.update({call["id"]: call["name"] for call in message.tool_calls})
            if message.text:
                out.append(AIMessage(message.text))
        elif isinstance(message, ToolMessage):
            name = names.get(message.tool_call_id) or message.name or "tool"
            verb = "failed with" if message.status == "error" else "returned"
            notes.append(f"The {name} tool {verb}: {message.text}")
        else:
            flush()
            out.append(message)
    flush()
    return out


def without_tools(request: ChatRequest) -> ChatRequest:
    """``request`` with its tools dropped: the answer is text."""
    return replace(request, tools=None, tool_choice=None, parallel_tool_calls=None)


def _call_schema(tools: list[Mapping[str, Any]]) -> Any:
    """The JSON schema of one call ``{"name", "arguments"}`` of any of ``tools``."""
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["name"]},
                "arguments": t.get("parameters") or {"type": "object", "properties": {}},
            },
            "required": ["name", "arguments"],
        }
        for t in tools
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def as_forced_tool_request(request: ChatRequest, where: dict[str, Any]) -> ChatRequest:
    """A forced choice as a grammar-constrained JSON answer naming one tool and its
    arguments (the named tool's, when ``tool_choice`` names one)."""
    choice = request.tool_choice
    tools = [t.get("function", t) for t in request.tools or ()]
    if isinstance(choice, Mapping):
        wanted = (choice.get("function") or {}).get("name")
        tools = [t for t in tools if t.get("name") == wanted]
        if not tools:
            raise BadRequest(f"tool_choice names {wanted!r}, which is not among the tools", **where)
    menu = "\n".join(f"- {t['name']}: {t.get('description') or ''}" for t in tools)
    instruction = (
        f"Call a tool. Tools:\n{menu}\nAnswer with JSON: the tool's name and its arguments."
    )
    return replace(
        without_tools(request),
        messages=[*request.messages[:-1], SystemMessage(instruction), request.messages[-1]],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "tool_call", "schema": _call_schema(tools)},
        },
    )


def as_auto_tool_request(request: ChatRequest, where: dict[str, Any]) -> tuple[ChatRequest, Any]:
    """The choosing pass of auto mode: the request in SmolLM2's function-calling format and
    the grammar that admits ``<tool_call>[`` one valid call, or nothing, ``]</tool_call>``."""
    tools = [t.get("function", t) for t in request.tools or ()]
    call = _ROOT.sub("tool-call", _gbnf(_call_schema(tools)))
    gbnf = f'{call}\nroot ::= "{_CALL_OPEN}" tool-call? "{_CALL_CLOSE}"\n'
    try:
        constraint = _compile(gbnf)
    except Exception as exc:
        raise BadRequest(f"cannot turn the tools' schemas into a grammar: {exc}", **where) from exc
    prompt = _AUTO_PROMPT.format(tools=json.dumps(tools))
    # The caller's own instructions stay, after the format the model was trained on.
    own = [m.text for m in request.messages if isinstance(m, SystemMessage)]
    system = SystemMessage("\n\n".join([prompt, *own]))
    rest = [m for m in request.messages if not isinstance(m, SystemMessage)]
    choosing = replace(
        without_tools(request),
        messages=[system, *rest],
        max_tokens=AUTO_TOOLS_MAX_TOKENS,
        response_format=None,
        # No repeat penalty: the prompt's own example ends in "]</tool_call>", and a penalty
        # on "]" would tip every choice towards calling a tool.
        extra_body={**request.extra_body, "repeat_penalty": 1.0},
    )
    return choosing, constraint


def call_opening_tokens(vocab: Iterable[tuple[int, bytes]]) -> list[int]:
    """The ids among ``(id, text)`` whose text starts a call's JSON object (``{``)."""
    return [token for token, text in vocab if text.startswith(b"{")]


def parse_auto_answer(
    chunk: ChatGenerationChunk, provider: str, model: str
) -> ChatGenerationChunk | None:
    """The choosing pass's answer as a tool call, or None when the model chose no tool."""
    text = chunk.message.text
    if not (text.startswith(_CALL_OPEN) and text.endswith(_CALL_CLOSE)):
        raise MalformedResponse(
            f"the tool choice is not the text its grammar requires: {text[:200]!r}",
            provider=provider,
            model=model,
        )
    inner = text[len(_CALL_OPEN) : -len(_CALL_CLOSE)]
    return as_tool_call(chunk, provider, model, inner) if inner else None


def as_tool_call(
    chunk: ChatGenerationChunk, provider: str, model: str, text: str | None = None
) -> ChatGenerationChunk:
    """A grammar-constrained ``{"name", "arguments"}`` answer (``text``, by default the
    chunk's) as a LangChain tool call, with the chunk's usage and metadata."""
    text = chunk.message.text if text is None else text
    try:
        data = json.loads(text)
        name, args = data["name"], data["arguments"]
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedResponse(
            f"the tool call is not the JSON its grammar requires: {text[:200]!r}",
            provider=provider,
            model=model,
        ) from exc
    message = chunk.message
    meta = {**message.response_metadata, "finish_reason": "tool_calls"}
    call = tool_call_chunk(
        name=name, args=json.dumps(args), id=f"call_{uuid.uuid4().hex[:24]}", index=0
    )
    new = AIMessageChunk(
        content="",
        tool_call_chunks=[call],
        usage_metadata=getattr(message, "usage_metadata", None),
        response_metadata=meta,
        id=message.id,
        chunk_position="last",
    )
    return ChatGenerationChunk(message=new, generation_info={"finish_reason": "tool_calls"})
