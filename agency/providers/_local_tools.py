"""Tool calls on the embedded model: forced calls, constrained by a grammar.

A 135M model cannot judge whether a question needs a tool, but given the tools' JSON
schemas as a grammar it fills in a call's arguments well. So the local provider answers a
forced ``tool_choice`` ("required"/"any"/a tool's name) with a grammar-constrained JSON
object ``{"name", "arguments"}`` and turns it into a LangChain tool call; after a tool's
result, with the choice left to the model, it answers in text.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from langchain_core.messages import AIMessageChunk, SystemMessage, ToolMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk

from agency.errors import BadRequest, CapabilityError, MalformedResponse
from agency.providers._base import ChatRequest

__all__ = ["as_forced_tool_request", "as_tool_call", "calls_tool"]


def calls_tool(request: ChatRequest) -> bool:
    """Whether this answer is a tool call: tools are bound, ``tool_choice`` is not "none",
    and the conversation does not end with a tool's result (after which, with the choice
    left to the model, the answer is text: the call it asked for has been made)."""
    if not request.tools or request.tool_choice == "none":
        return False
    last = request.messages[-1] if request.messages else None
    return not (isinstance(last, ToolMessage) and request.tool_choice in (None, "auto"))


def as_forced_tool_request(request: ChatRequest, where: dict[str, Any]) -> ChatRequest:
    """A request with tools as a grammar-constrained JSON answer naming one tool and its
    arguments. Only forced calls (``tool_choice`` "required"/"any"/a tool) are offered: a
    135M model cannot judge *whether* to call a tool, but constrained to the tools' schemas
    it fills in the arguments well."""
    if not calls_tool(request):
        return replace(request, tools=None, tool_choice=None, parallel_tool_calls=None)
    choice = request.tool_choice
    tools = [t.get("function", t) for t in request.tools or ()]
    if isinstance(choice, Mapping):
        wanted = (choice.get("function") or {}).get("name")
        tools = [t for t in tools if t.get("name") == wanted]
        if not tools:
            raise BadRequest(f"tool_choice names {wanted!r}, which is not among the tools", **where)
    elif choice not in ("required", "any"):
        raise CapabilityError(
            f"{where['provider']}:{where['model']} makes forced tool calls only: pass "
            "tool_choice='any' or a tool's name to bind_tools (a 135M model cannot decide "
            "on its own whether a tool is needed)"
        )
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
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    menu = "\n".join(f"- {t['name']}: {t.get('description') or ''}" for t in tools)
    instruction = {
        "role": "system",
        "content": f"Call a tool. Tools:\n{menu}\nAnswer with JSON: the tool's name and its arguments.",
    }
    return replace(
        request,
        messages=[
            *request.messages[:-1],
            SystemMessage(instruction["content"]),
            request.messages[-1],
        ],
        tools=None,
        tool_choice=None,
        parallel_tool_calls=None,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "tool_call", "schema": schema},
        },
    )


def as_tool_call(chunk: ChatGenerationChunk, provider: str, model: str) -> ChatGenerationChunk:
    """The grammar-constrained ``{"name", "arguments"}`` answer as a LangChain tool call."""
    text = chunk.message.text
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
