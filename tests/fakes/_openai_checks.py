"""Request rules the live OpenAI API enforces beyond its OpenAPI schema.

Each check returns ``None`` or an ``ApiError`` worded like the live API's answer. The fake
answers those with 400 and records them in ``spec_violations`` (prefixed ``contract:``), since
a client that trips them is broken against the real service too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ._brain import text_of

__all__ = ["ApiError", "check_chat_request", "check_strict_schema"]

_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


@dataclass
class ApiError:
    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None


def check_strict_schema(schema: Any, context: tuple[str, ...] = ()) -> str | None:
    """Why ``schema`` is not usable with ``strict: true`` (None when it is).

    Strict mode needs, for every object: ``additionalProperties: false`` and ``required``
    naming every property. Checked through properties, items, anyOf and $defs.
    """
    if not isinstance(schema, dict):
        return None
    where = f"In context=({', '.join(repr(c) for c in context)}{',' if len(context) == 1 else ''})"
    properties = schema.get("properties")
    if schema.get("type") == "object" or isinstance(properties, dict):
        if schema.get("additionalProperties") is not False:
            return f"{where}, 'additionalProperties' is required to be supplied and to be false."
        missing = [k for k in properties or {} if k not in (schema.get("required") or [])]
        if missing:
            return (
                f"{where}, 'required' is required to be supplied and to be an array including "
                f"every key in properties. Missing '{missing[0]}'."
            )
    children: list[tuple[tuple[str, ...], Any]] = []
    for name, sub in (properties or {}).items():
        children.append(((*context, "properties", name), sub))
    for key in ("$defs", "definitions"):
        for name, sub in (schema.get(key) or {}).items():
            children.append(((*context, key, name), sub))
    if isinstance(schema.get("items"), dict):
        children.append(((*context, "items"), schema["items"]))
    for key in ("anyOf", "allOf"):
        for index, sub in enumerate(schema.get(key) or []):
            children.append(((*context, key, str(index)), sub))
    for child_context, sub in children:
        problem = check_strict_schema(sub, child_context)
        if problem:
            return problem
    return None


def _check_tools(body: dict[str, Any]) -> ApiError | None:
    tools = body.get("tools") or []
    names: list[str] = []
    for index, tool in enumerate(tools):
        if tool.get("type") != "function":
            continue
        function = tool.get("function") or {}
        name = function.get("name", "")
        names.append(name)
        if not _NAME.fullmatch(name):
            return ApiError(
                400,
                f"Invalid 'tools[{index}].function.name': string does not match pattern. "
                "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                param=f"tools[{index}].function.name",
                code="invalid_value",
            )
        parameters = function.get("parameters")
        if parameters is not None and parameters.get("type") != "object":
            return ApiError(
                400,
                f"Invalid schema for function '{name}': schema must be a JSON Schema of "
                f"'type: \"object\"', got 'type: \"{parameters.get('type')}\"'.",
                param=f"tools[{index}].function.parameters",
                code="invalid_function_parameters",
            )
        if function.get("strict"):
            problem = check_strict_schema(function.get("parameters") or {"type": "object"})
            if problem:
                return ApiError(
                    400,
                    f"Invalid schema for function '{name}': {problem}",
                    param=f"tools[{index}].function.parameters",
                    code="invalid_function_parameters",
                )
    choice = body.get("tool_choice")
    if choice is not None and not tools:
        return ApiError(
            400,
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            param="tool_choice",
        )
    if body.get("parallel_tool_calls") is not None and not tools:
        return ApiError(
            400,
            "Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed when "
            "'tools' are specified.",
            param="parallel_tool_calls",
        )
    if isinstance(choice, dict) and choice.get("type") == "function":
        wanted = (choice.get("function") or {}).get("name")
        if wanted not in names:
            return ApiError(
                400,
                f"Invalid value for 'tool_choice': function '{wanted}' not found in 'tools'.",
                param="tool_choice",
            )
    return None


def _check_history(messages: list[dict[str, Any]]) -> ApiError | None:
    pending: set[str] = set()
    pending_at = -1
    open_ids: set[str] = set()  # ids of the latest assistant tool_calls
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in open_ids:
                return ApiError(
                    400,
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    param=f"messages.[{index}].role",
                )
            pending.discard(call_id)
            continue
        if pending:
            break
        open_ids = set()
        if role == "assistant" and message.get("tool_calls"):
            open_ids = {str(c.get("id")) for c in message["tool_calls"] if isinstance(c, dict)}
            pending, pending_at = set(open_ids), index
    if pending:
        return ApiError(
            400,
            "An assistant message with 'tool_calls' must be followed by tool messages responding "
            "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
            + ", ".join(sorted(pending)),
            param=f"messages.[{pending_at}].role",
        )
    return None


def check_chat_request(body: dict[str, Any]) -> ApiError | None:
    """The first live-API rule a (schema-valid) chat request breaks, or None."""
    if body.get("stream_options") is not None and body.get("stream") is not True:
        return ApiError(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    problem = _check_tools(body)
    if problem:
        return problem
    messages = body.get("messages") or []
    problem = _check_history(messages)
    if problem:
        return problem
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_object":
        texts = " ".join(text_of(m.get("content")) for m in messages).lower()
        if "json" not in texts:
            return ApiError(
                400,
                "'messages' must contain the word 'json' in some form, to use 'response_format' "
                "of type 'json_object'.",
                param="messages",
            )
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        name = spec.get("name", "")
        if not _NAME.fullmatch(name):
            return ApiError(
                400,
                "Invalid 'response_format.json_schema.name': string does not match pattern. "
                "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                param="response_format.json_schema.name",
                code="invalid_value",
            )
        if spec.get("strict"):
            problem_text = check_strict_schema(spec.get("schema") or {"type": "object"})
            if problem_text:
                return ApiError(
                    400,
                    f"Invalid schema for response_format '{name}': {problem_text}",
                    param="response_format",
                )
    return None
