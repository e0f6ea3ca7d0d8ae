"""LangChain messages and requests in Anthropic's Messages API shape.

Split from `agency.providers.anthropic` (which owns responses, streams and the adapter):
the system prompt apart, alternating user/assistant turns, tool results inside user turns,
media as ``image``/``document`` blocks, tools and ``tool_choice`` in Anthropic's form.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from agency.errors import CapabilityError
from agency.providers._base import ChatRequest

__all__ = ["DEFAULT_MAX_TOKENS", "build_messages_body", "wire_messages"]

DEFAULT_MAX_TOKENS = 4096
"""``max_tokens`` sent when the caller sets none (the API requires one)."""

_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_DATA_URL = re.compile(r"^data:(?P<mime>[^;,]+)(?:;[^,]*)?;base64,(?P<data>.*)$", re.S)
_IMAGE_MAGIC = {
    "iVBOR": "image/png",
    "/9j/": "image/jpeg",
    "R0lGOD": "image/gif",
    "UklGR": "image/webp",
}
# LangChain's own output blocks: their content travels in tool_calls / thinking_blocks.
_SKIPPED_OUTPUT_BLOCKS = frozenset(
    {"reasoning", "tool_call", "tool_call_chunk", "invalid_tool_call"}
)
_NOT_IN_ASSISTANT_TURN = _SKIPPED_OUTPUT_BLOCKS | {"tool_use", "image", "image_url", "file"}


# --------------------------------------------------------------------------- requests
def _tool_id(raw: Any) -> str:
    """The id as sent: other providers' ids (``functions.f:0``) are hashed, the same way on
    the ``tool_use`` and its ``tool_result``."""
    text = "" if raw is None else str(raw)
    if _TOOL_ID.match(text):
        return text
    return "toolu_" + hashlib.sha256(text.encode()).hexdigest()[:24]


def _text(text: Any, block: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    # The API rejects empty and whitespace-only text blocks.
    if not isinstance(text, str) or not text.strip():
        return None
    out: dict[str, Any] = {"type": "text", "text": text}
    if block is not None and block.get("cache_control"):
        out["cache_control"] = block["cache_control"]
    return out


def _source_from_url(url: str) -> dict[str, Any]:
    match = _DATA_URL.match(url)
    if match:
        return {"type": "base64", "media_type": match["mime"], "data": match["data"]}
    return {"type": "url", "url": url}


def _data_block(block: Mapping[str, Any]) -> dict[str, Any]:
    """A LangChain image/file/text-plain block (v1, or v0 ``source_type``) as an Anthropic
    ``image`` or ``document`` block."""
    kind = block.get("type")
    mime = block.get("mime_type")
    source_type = block.get("source_type")
    source: dict[str, Any]
    if kind == "text-plain" or source_type == "text":
        source = {"type": "text", "media_type": "text/plain", "data": str(block.get("text", ""))}
    elif "base64" in block or source_type == "base64":
        data = str(block.get("base64") or block.get("data") or "")
        if kind == "file" and mime == "text/plain":
            try:
                text = base64.b64decode(data).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise ValueError("a text/plain file block is not base64 UTF-8 text") from exc
            source = {"type": "text", "media_type": "text/plain", "data": text}
        else:
            sniffed = next((m for p, m in _IMAGE_MAGIC.items() if data.startswith(p)), "image/png")
            media = mime or ("application/pdf" if kind == "file" else sniffed)
            source = {"type": "base64", "media_type": media, "data": data}
    elif "url" in block:
        source = _source_from_url(str(block["url"]))
    elif "file_id" in block or source_type == "id":
        source = {"type": "file", "file_id": str(block.get("file_id") or block.get("id"))}
    else:
        raise ValueError(f"a {kind!r} content block needs base64, url or file_id")
    out: dict[str, Any] = {"type": "image" if kind == "image" else "document", "source": source}
    extras = block.get("extras") if isinstance(block.get("extras"), Mapping) else {}
    keys = ("cache_control",) if kind == "image" else ("cache_control", "citations", "title")
    for key in keys:
        value = block.get(key, extras.get(key))  # type: ignore[union-attr]
        if value is not None:
            out[key] = value
    return out


def _user_block(block: Any) -> dict[str, Any] | None:
    """One block of user (or tool-result) content in Anthropic's shape; None drops it."""
    if isinstance(block, str):
        return _text(block)
    if not isinstance(block, Mapping):
        raise ValueError(f"content blocks must be str or dict, not {type(block).__name__}")
    kind = block.get("type")
    if kind == "text":
        return _text(block.get("text"), block)
    if kind == "image_url":
        raw = block.get("image_url")
        url = raw.get("url") if isinstance(raw, Mapping) else raw
        return {"type": "image", "source": _source_from_url(str(url or ""))}
    if kind == "image" and isinstance(block.get("source"), Mapping):  # Anthropic-native
        return {k: v for k, v in block.items() if k in ("type", "source", "cache_control")}
    if kind in ("image", "file", "text-plain"):
        return _data_block(block)
    if kind in ("audio", "input_audio", "video"):
        raise CapabilityError(f"Anthropic models do not accept {kind} input")
    if kind == "tool_result":
        return _native_tool_result(block)
    if kind in _SKIPPED_OUTPUT_BLOCKS or kind in ("thinking", "redacted_thinking"):
        return None
    if kind == "non_standard":
        value = block.get("value")
        return dict(value) if isinstance(value, Mapping) else None
    return {k: v for k, v in block.items() if k != "index"}  # other native blocks, as given


def _result_content(content: Any) -> tuple[Any, Any]:
    """(tool_result content, cache_control hoisted from its blocks: the API allows it only on
    the tool_result itself)."""
    if isinstance(content, str):
        return (content or None), None
    blocks, cache = [], None
    for raw in content or []:
        block = _user_block(raw)
        if block is not None:
            cache = block.pop("cache_control", None) or cache
            blocks.append(block)
    return (blocks or None), cache


def _tool_result(
    tool_use_id: Any, content: Any, is_error: bool, cache_control: Any = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "tool_result", "tool_use_id": _tool_id(tool_use_id)}
    result, hoisted = _result_content(content)
    if result is not None:
        out["content"] = result
    if is_error:
        out["is_error"] = True
    if cache_control or hoisted:
        out["cache_control"] = cache_control or hoisted
    return out


def _native_tool_result(block: Mapping[str, Any]) -> dict[str, Any]:
    return _tool_result(
        block.get("tool_use_id"), block.get("content"), bool(block.get("is_error")),
        block.get("cache_control"),
    )  # fmt: skip


def _tool_message_blocks(message: ToolMessage) -> list[dict[str, Any]]:
    content = message.content
    if isinstance(content, list) and content and all(
        isinstance(b, Mapping) and b.get("type") == "tool_result" for b in content
    ):  # fmt: skip
        return [_native_tool_result(b) for b in content]  # type: ignore[arg-type]
    return [_tool_result(message.tool_call_id, content, message.status == "error")]


def _tool_use(call_id: Any, name: Any, args: Any) -> dict[str, Any]:
    args = args if isinstance(args, Mapping) else {}
    return {"type": "tool_use", "id": _tool_id(call_id), "name": str(name), "input": dict(args)}


def _assistant_blocks(message: AIMessage) -> list[dict[str, Any]]:
    """Thinking first, then text and native blocks, then every tool call as ``tool_use``
    (tool_calls win over ``tool_use`` blocks with the same id in the content)."""
    call_ids = {call.get("id") for call in message.tool_calls}
    thinking: list[Mapping[str, Any]] = []
    blocks: list[dict[str, Any]] = []
    content = message.content
    for item in [content] if isinstance(content, str) else content:
        block = {"type": "text", "text": item} if isinstance(item, str) else item
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "text":
            text = _text(block.get("text"), block)
            blocks += [text] if text else []
        elif kind in ("thinking", "redacted_thinking"):
            thinking.append(block)
        elif kind == "tool_use" and block.get("id") not in call_ids:
            raw = block.get("input")
            try:
                raw = raw or json.loads(str(block.get("partial_json") or "{}"))
            except ValueError:
                raw = {}
            blocks.append(_tool_use(block.get("id"), block.get("name", ""), raw))
        elif kind and kind not in _NOT_IN_ASSISTANT_TURN:
            blocks.append({k: v for k, v in block.items() if k != "index"})
    saved = message.additional_kwargs.get("thinking_blocks")
    if not thinking and isinstance(saved, list):
        thinking = [b for b in saved if isinstance(b, Mapping)]
    keep = ("type", "thinking", "signature", "data", "cache_control")
    # The API rejects thinking without its signature (it checks the thinking was its own).
    signed = [
        {k: v for k, v in b.items() if k in keep}
        for b in thinking
        if b.get("signature") or (b.get("type") == "redacted_thinking" and b.get("data"))
    ]
    calls = [_tool_use(c.get("id"), c["name"], c.get("args")) for c in message.tool_calls]
    return signed + blocks + calls


def _system_blocks(message: BaseMessage) -> list[dict[str, Any]]:
    content = message.content
    items = [content] if isinstance(content, str) else content
    blocks = []
    for block in items:
        if isinstance(block, str):
            text = _text(block)
        elif isinstance(block, Mapping) and block.get("type") == "text":
            text = _text(block.get("text"), block)
        else:
            raise ValueError("Anthropic system prompts hold text only")
        if text is not None:
            blocks.append(text)
    return blocks


def _role(message: BaseMessage) -> str:
    kinds = ((SystemMessage, "system"), (AIMessage, "assistant"), (ToolMessage, "tool"))
    role = next((r for cls, r in kinds if isinstance(message, cls)), None)
    role = role or ("user" if isinstance(message, HumanMessage) else getattr(message, "role", ""))
    if role not in ("system", "assistant", "tool", "user"):
        raise ValueError(f"Anthropic cannot take a {type(message).__name__} message")
    return str(role)


def wire_messages(
    messages: Sequence[BaseMessage],
) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """(``system``, ``messages``) of a Messages API request for a LangChain conversation."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = _role(message)
        if role == "system":
            system += _system_blocks(message)
            continue
        if role == "assistant":
            ai = message if isinstance(message, AIMessage) else AIMessage(message.content)
            blocks = _assistant_blocks(ai)
        elif role == "tool":
            blocks = _tool_message_blocks(message)  # type: ignore[arg-type]
            role = "user"
        else:
            content = message.content
            items = [content] if isinstance(content, str) else content
            blocks = [b for b in map(_user_block, items) if b is not None]
        if not blocks:  # the API rejects empty turns
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":  # tool results must open the user turn
            turn["content"].sort(key=lambda b: b.get("type") != "tool_result")
    if turns and turns[-1]["role"] == "assistant":
        last = turns[-1]["content"][-1]
        if last.get("type") == "text":  # a final assistant turn may not end in whitespace
            last["text"] = last["text"].rstrip()
    for turn in turns:
        content = turn["content"]
        if (
            len(content) == 1
            and set(content[0]) == {"type", "text"}
            and content[0]["type"] == "text"
        ):
            turn["content"] = content[0]["text"]
    plain = len(system) == 1 and set(system[0]) == {"type", "text"}
    return (system[0]["text"] if plain else system or None), turns


def _wire_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    if "input_schema" in tool and "name" in tool:  # already Anthropic's shape
        return dict(tool)
    fn = tool.get("function")
    if tool.get("type") != "function" or not isinstance(fn, Mapping) or not fn.get("name"):
        raise ValueError(f"not a function tool: {dict(tool)!r}")
    schema = dict(fn.get("parameters") or {"type": "object", "properties": {}})
    schema.setdefault("type", "object")
    out: dict[str, Any] = {"name": fn["name"], "input_schema": schema}
    if fn.get("description"):
        out["description"] = fn["description"]
    return out


def _wire_tool_choice(choice: Any, parallel: bool | None) -> dict[str, Any] | None:
    words = {"auto": "auto", "none": "none", "required": "any", "any": "any"}
    out: dict[str, Any] | None
    if choice is None or isinstance(choice, str):  # a word, or a bare tool name
        word = words.get(choice) if choice else None
        out = {"type": word} if word else ({"type": "tool", "name": choice} if choice else None)
    elif isinstance(choice, Mapping):
        fn = choice.get("function") if choice.get("type") == "function" else None
        out = (
            {"type": "tool", "name": str(fn.get("name"))}
            if isinstance(fn, Mapping)
            else dict(choice)
        )
    else:
        raise ValueError(f"unsupported tool_choice {choice!r}")
    if parallel is False and (out or {}).get("type") != "none":
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


def build_messages_body(request: ChatRequest, *, stream: bool) -> dict[str, Any]:
    """The JSON body of ``POST /v1/messages`` for ``request``."""
    if request.response_format is not None:
        raise CapabilityError(
            "Anthropic has no response_format; use with_structured_output(schema), "
            "which forces a tool call"
        )
    system, messages = wire_messages(request.messages)
    body: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "max_tokens": DEFAULT_MAX_TOKENS if request.max_tokens is None else request.max_tokens,
    }
    optional = {
        "system": system, "temperature": request.temperature, "top_p": request.top_p,
        "stop_sequences": list(request.stop) if request.stop else None,
    }  # fmt: skip
    body.update({k: v for k, v in optional.items() if v is not None})
    if request.tools:
        body["tools"] = [_wire_tool(t) for t in request.tools]
        choice = _wire_tool_choice(request.tool_choice, request.parallel_tool_calls)
        if choice is not None:
            body["tool_choice"] = choice
    if stream:
        body["stream"] = True
    body.update(request.extra_body)
    return body
