"""Request rules the live Anthropic API enforces beyond its OpenAPI schema.

Each check returns ``None`` or an ``ApiError`` worded like the live API's 400 answer. The fake
answers those and records them in ``spec_violations`` (prefixed ``contract:``): a client that
trips them is broken against the real service too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._anthropic_wire import ModelCard, decode_base64, thinking_signature

__all__ = ["ApiError", "check_message_request"]

_MAGIC = {
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff",
    "image/gif": b"GIF8",
    "image/webp": b"RIFF",
}
_MAX_IMAGE_BYTES = 5 * 1024 * 1024
_THINKING = ("thinking", "redacted_thinking")


@dataclass
class ApiError:
    status: int
    message: str
    type: str = "invalid_request_error"


def _blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _check_media(where: str, block: dict[str, Any]) -> ApiError | None:
    source = block.get("source") or {}
    if source.get("type") != "base64":
        return None
    raw = decode_base64(str(source.get("data", "")))
    media = source.get("media_type")
    if raw is None:
        return ApiError(400, f"{where}.source.base64.data: invalid base64 data")
    if block["type"] == "document":
        if not raw.startswith(b"%PDF-"):
            return ApiError(400, f"{where}.source.base64.data: The PDF specified was not valid.")
        return None
    if len(raw) > _MAX_IMAGE_BYTES:
        return ApiError(400, f"{where}.source.base64: image exceeds 5 MB maximum: {len(raw)} bytes")
    actual = next((m for m, magic in _MAGIC.items() if raw.startswith(magic)), None)
    if actual != media:
        return ApiError(
            400,
            f"{where}.source.base64.data: The image was specified using the {media} media type, "
            f"but the image appears to be a {actual or 'unsupported'} image",
        )
    return None


def _check_turns(messages: list[dict[str, Any]]) -> ApiError | None:
    if not messages:
        return ApiError(400, "messages: at least one message is required")
    for i, message in enumerate(messages):
        content = message["content"]
        final_assistant = i == len(messages) - 1 and message["role"] == "assistant"
        if not content and not final_assistant:
            return ApiError(
                400,
                f"messages.{i}: all messages must have non-empty content except for the "
                "optional final assistant message",
            )
        blocks = _blocks(content)
        for j, block in enumerate(blocks):
            if block.get("type") == "text" and not block["text"].strip() and content != "":
                return ApiError(400, f"messages.{i}.content.{j}.text: text content blocks must "
                                     "contain non-whitespace text")  # fmt: skip
            if block.get("type") in ("image", "document"):
                problem = _check_media(f"messages.{i}.content.{j}.{block['type']}", block)
                if problem:
                    return problem
            if block.get("type") == "tool_result":
                for k, inner in enumerate(_blocks(block.get("content") or [])):
                    if inner.get("type") in ("image", "document"):
                        where = f"messages.{i}.content.{j}.content.{k}.{inner['type']}"
                        problem = _check_media(where, inner)
                        if problem:
                            return problem
        last = blocks[-1] if blocks else {}
        if final_assistant and last.get("type") == "text" and last["text"] != last["text"].rstrip():
            return ApiError(
                400, "messages: final assistant content cannot end with trailing whitespace"
            )
    return None


def _check_tool_pairs(messages: list[dict[str, Any]]) -> ApiError | None:
    open_ids: list[str] = []
    seen: set[str] = set()
    for i, message in enumerate(messages):
        blocks = _blocks(message["content"])
        if message["role"] == "user":
            results = [b for b in blocks if b.get("type") == "tool_result"]
            kinds = [b.get("type") == "tool_result" for b in blocks]
            for j, block in enumerate(results):
                if block["tool_use_id"] not in open_ids:
                    return ApiError(
                        400,
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {block['tool_use_id']}. Each `tool_result` block "
                        "must have a corresponding `tool_use` block in the previous message.",
                    )
            missing = [t for t in open_ids if t not in {b["tool_use_id"] for b in results}]
            if missing:
                return ApiError(
                    400,
                    f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                    "corresponding `tool_result` block in the next message.",
                )
            if kinds != sorted(kinds, reverse=True):
                return ApiError(
                    400,
                    f"messages.{i}: `tool_result` blocks must come first in the content of a "
                    "user message, before any other block",
                )
            open_ids = []
        else:
            ids = [b["id"] for b in blocks if b.get("type") == "tool_use"]
            if seen & set(ids) or len(set(ids)) != len(ids):
                return ApiError(400, f"messages.{i}: `tool_use` ids must be unique")
            seen |= set(ids)
            open_ids = ids if i < len(messages) - 1 else []
    return None


def _check_tools(body: dict[str, Any]) -> ApiError | None:
    tools = body.get("tools") or []
    names = [t.get("name") for t in tools]
    if len(set(names)) != len(names):
        return ApiError(400, "tools: Tool names must be unique.")
    choice = body.get("tool_choice")
    if choice is not None and not tools and choice.get("type") != "none":
        return ApiError(
            400, "tool_choice: tool_choice may only be specified while providing tools."
        )
    if choice and choice.get("type") == "tool" and choice.get("name") not in names:
        return ApiError(400, f"tool_choice.name: Tool '{choice.get('name')}' not found in tools")
    return None


def _check_thinking(body: dict[str, Any]) -> ApiError | None:
    thinking = body.get("thinking") or {}
    if thinking.get("type") != "enabled":
        return None
    if thinking["budget_tokens"] >= body["max_tokens"]:
        return ApiError(400, "`max_tokens` must be greater than `thinking.budget_tokens`. Please "
                             "consult our documentation at https://docs.claude.com/en/docs/"
                             "build-with-claude/extended-thinking#max-tokens-and-context-window-"
                             "size")  # fmt: skip
    if body.get("temperature", 1) != 1:
        return ApiError(400, "`temperature` may only be set to 1 when thinking is enabled.")
    if (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
        return ApiError(400, "Thinking may not be enabled when tool_choice forces tool use.")
    messages = body["messages"]
    last_assistant = next(
        (i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "assistant"), None
    )
    for i, message in enumerate(messages):
        for j, block in enumerate(_blocks(message["content"])):
            if block.get("type") == "thinking" and block.get("signature") != thinking_signature(
                block.get("thinking", "")
            ):
                return ApiError(400, f"messages.{i}.content.{j}: Invalid `signature` in "
                                     "`thinking` block")  # fmt: skip
    final = _blocks(messages[-1]["content"])
    continuing = any(b.get("type") == "tool_result" for b in final)
    if continuing and last_assistant is not None:
        first = _blocks(messages[last_assistant]["content"])[0]
        if first.get("type") not in _THINKING:
            return ApiError(
                400,
                f"messages.{last_assistant}.content.0.type: Expected `thinking` or "
                f"`redacted_thinking`, but found `{first.get('type')}`. When `thinking` is "
                "enabled, a final `assistant` message must start with a thinking block "
                "(preceeding the lastmost set of `tool_use` and `tool_result` blocks). We "
                "recommend you include thinking blocks from previous turns. To avoid this "
                "requirement, disable `thinking`.",
            )
    return None


def _count_cache_control(body: dict[str, Any]) -> int:
    count = sum(1 for t in body.get("tools") or [] if t.get("cache_control"))
    system = body.get("system")
    count += sum(1 for b in system if b.get("cache_control")) if isinstance(system, list) else 0
    for message in body["messages"]:
        for block in _blocks(message["content"]):
            count += bool(block.get("cache_control"))
            if block.get("type") == "tool_result" and isinstance(block.get("content"), list):
                count += sum(1 for b in block["content"] if b.get("cache_control"))
    return count


def check_message_request(body: dict[str, Any], card: ModelCard) -> ApiError | None:
    """The first live-API rule a (schema-valid) Messages request breaks, or None."""
    if body["max_tokens"] > card.max_output:
        return ApiError(400, f"max_tokens: {body['max_tokens']} > {card.max_output}, which is the "
                             "maximum allowed number of output tokens for "
                             f"{card.id}")  # fmt: skip
    if card.exclusive_sampling and "temperature" in body and "top_p" in body:
        return ApiError(400, "`temperature` and `top_p` cannot both be specified for this model. "
                             "Please use only one.")  # fmt: skip
    if any(not s.strip() for s in body.get("stop_sequences") or []):
        return ApiError(400, "stop_sequences: each stop sequence must contain non-whitespace")
    cached = _count_cache_control(body)
    if cached > 4:
        return ApiError(400, "A maximum of 4 blocks with cache_control may be provided. "
                             f"Found {cached}.")  # fmt: skip
    return (
        _check_turns(body["messages"])
        or _check_tool_pairs(body["messages"])
        or _check_tools(body)
        or _check_thinking(body)
    )
