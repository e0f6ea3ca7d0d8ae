"""The deterministic "model" behind the fake chat endpoints.

Given a Chat Completions request body it decides, without randomness:

* tools offered (and ``tool_choice`` not ``"none"``) and the conversation does not end with tool
  results (or a call is forced): call the forced tool, else the tools the last user message
  names (several only if it names several and ``parallel_tool_calls`` is not false), else the
  first tool. Arguments are a JSON instance of the tool's parameter schema, filled from the last
  user message: numbers in order for integers/numbers ("magic_function(3)" -> 3), quoted strings
  in order for strings, then the message text itself (see ``instance_for``);
* after tool results: a text answer quoting them;
* ``response_format`` ``json_schema``: an instance of the schema; ``json_object``: an object
  keyed by the quoted identifiers of the prompt ("'setup' and 'punchline'");
* otherwise: ``"Hello! You said: <last user message>"`` (images/audio/files described).

``stop`` truncates at the first stop string; ``max_completion_tokens``/``max_tokens`` truncate to
that many whitespace-separated tokens (``finish_reason="length"``).
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Answer",
    "PromptValues",
    "ToolCall",
    "count_tokens",
    "instance_for",
    "last_user_text",
    "prompt_token_count",
    "respond",
    "text_of",
]

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w])")
_QUOTED = re.compile(
    r"(?<!\w)'([^'\n]+?)'(?!\w)|\"([^\"\n]+?)\"|`([^`\n]+?)`|“([^”\n]+?)”|「([^」\n]+?)」"
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass
class ToolCall:
    name: str
    arguments: str  # a JSON text, as on the wire


@dataclass
class Answer:
    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"
    refusal: str | None = None


def count_tokens(text: str) -> int:
    """A rough token count: words and punctuation marks."""
    return len(_TOKEN.findall(text))


def _data_url_size(url: str) -> int | None:
    if not url.startswith("data:") or "," not in url:
        return None
    payload = url.split(",", 1)[1]
    try:
        return len(base64.b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return len(payload)


def _describe_part(part: dict[str, Any]) -> str:
    kind = part.get("type")
    if kind == "text":
        return str(part.get("text", ""))
    if kind == "image_url":
        url = str((part.get("image_url") or {}).get("url", ""))
        size = _data_url_size(url)
        return (
            f"I see an image ({size} bytes)." if size is not None else f"I see an image at {url}."
        )
    if kind == "input_audio":
        data = str((part.get("input_audio") or {}).get("data", ""))
        return f"I hear audio ({len(data) * 3 // 4} bytes)."
    if kind == "file":
        info = part.get("file") or {}
        size = _data_url_size(str(info.get("file_data", "")))
        name = info.get("filename") or info.get("file_id") or "a file"
        return f"I see {name} ({size} bytes)." if size is not None else f"I see {name}."
    if kind == "refusal":
        return str(part.get("refusal", ""))
    return ""


def text_of(content: Any) -> str:
    """The text of a message ``content`` (a string or a list of content parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [_describe_part(p) if isinstance(p, dict) else str(p) for p in content]
        return " ".join(t for t in texts if t)
    return str(content)


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return text_of(message.get("content")).strip()
    return ""


def prompt_token_count(body: dict[str, Any]) -> int:
    """Rough prompt size: message texts, tool-call arguments, tool schemas, 4 per message."""
    total = 3
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        total += 4 + count_tokens(text_of(message.get("content")))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {} if isinstance(call, dict) else {}
            total += count_tokens(f"{function.get('name', '')} {function.get('arguments', '')}")
    for tool in body.get("tools") or []:
        total += count_tokens(json.dumps(tool))
    return total


class PromptValues:
    """Values taken, in order, from a prompt to fill a schema instance."""

    def __init__(self, text: str) -> None:
        self.text = text.strip()
        self.numbers = [float(n) for n in _NUMBER.findall(text)]
        self.strings = [
            next(g for g in m.groups() if g is not None) for m in _QUOTED.finditer(text)
        ]
        lowered = self.text.lower()
        self.boolean = not re.search(r"\b(false|no|not)\b", lowered)

    def number(self) -> float | None:
        return self.numbers.pop(0) if self.numbers else None

    def string(self) -> str:
        if self.strings:
            return self.strings.pop(0)
        return self.text[:200] or "ok"


_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com",
    "url": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
}


def _resolve(schema: Any, root: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < 32:
        ref = schema["$ref"]
        target: Any = root if ref.startswith("#") else {}
        for part in ref.lstrip("#").strip("/").split("/") if ref not in ("#", "") else []:
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part, {}) if isinstance(target, dict) else {}
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **rest} if isinstance(target, dict) else rest
        seen += 1
    return schema if isinstance(schema, dict) else {}


def _merge_all_of(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    merged = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        part = _resolve(part, root)
        if "allOf" in part:
            part = _merge_all_of(part, root)
        for key, value in part.items():
            if key == "properties":
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required":
                merged["required"] = list(dict.fromkeys([*merged.get("required", []), *value]))
            else:
                merged.setdefault(key, value)
    return merged


def _bounded(value: float, schema: dict[str, Any], integer: bool) -> float:
    step = 1 if integer else 0.5
    low, high = schema.get("minimum"), schema.get("maximum")
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        low = max(low if low is not None else -math.inf, schema["exclusiveMinimum"] + step)
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        high = min(high if high is not None else math.inf, schema["exclusiveMaximum"] - step)
    if low is not None and value < low:
        value = math.ceil(low) if integer else low
    if high is not None and value > high:
        value = math.floor(high) if integer else high
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int | float) and multiple > 0:
        value = math.ceil(value / multiple) * multiple
        if high is not None and value > high:
            value -= multiple
    return value


def _string(schema: dict[str, Any], values: PromptValues) -> str:
    fmt = schema.get("format")
    text = _FORMATS[fmt] if fmt in _FORMATS else values.string()
    min_length, max_length = schema.get("minLength", 0), schema.get("maxLength")
    if len(text) < min_length:
        text += "x" * (min_length - len(text))
    if max_length is not None:
        text = text[:max_length]
    return text


def instance_for(
    schema: Any, values: PromptValues | None = None, root: dict[str, Any] | None = None
) -> Any:
    """A JSON instance valid for ``schema`` (JSON Schema as used by tools/structured outputs).

    Every declared property is filled (required and optional), the first non-null branch of an
    ``anyOf``/``oneOf`` is taken, enums give their first value, ``const`` its value, numbers are
    kept inside their bounds. Values come from ``values`` (see ``PromptValues``).
    """
    values = values if values is not None else PromptValues("")
    root = root if root is not None else (schema if isinstance(schema, dict) else {})
    schema = _resolve(schema, root)
    if "allOf" in schema:
        schema = _merge_all_of(schema, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return next((v for v in schema["enum"] if v is not None), schema["enum"][0])
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            branches = [_resolve(b, root) for b in schema[key]]
            chosen = next((b for b in branches if b.get("type") != "null"), branches[0])
            merged = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
            return instance_for({**merged, **chosen}, values, root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        if "properties" in schema or "required" in schema:
            kind = "object"
        elif "items" in schema or "prefixItems" in schema:
            kind = "array"
        else:
            kind = "string"
    if "default" in schema and schema["default"] is not None and kind != "object":
        return schema["default"]
    if kind == "object":
        return _object(schema, values, root)
    if kind == "array":
        return _array(schema, values, root)
    if kind in ("integer", "number"):
        found = values.number()
        value = _bounded(found if found is not None else 0, schema, kind == "integer")
        return round(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return values.boolean
    if kind == "null":
        return None
    return _string(schema, values)


def _object(schema: dict[str, Any], values: PromptValues, root: dict[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties") or {}
    out = {name: instance_for(sub, values, root) for name, sub in properties.items()}
    for name in schema.get("required", []):
        if name not in out:
            out[name] = values.string()
    extra = schema.get("additionalProperties")
    index = 0
    while len(out) < schema.get("minProperties", 0) and extra is not False:
        index += 1
        sub = extra if isinstance(extra, dict) else {"type": "string"}
        out[f"key_{index}"] = instance_for(sub, values, root)
    return out


def _array(schema: dict[str, Any], values: PromptValues, root: dict[str, Any]) -> list[Any]:
    prefix = schema.get("prefixItems") or []
    out = [instance_for(sub, values, root) for sub in prefix]
    count = max(schema.get("minItems", 0), 1)
    if schema.get("maxItems") is not None:
        count = min(count, schema["maxItems"])
    items = schema.get("items")
    if items is not False:
        while len(out) < count:
            item = instance_for(items if isinstance(items, dict) else {}, values, root)
            if schema.get("uniqueItems") and item in out:
                item = (
                    item + len(out)
                    if isinstance(item, int | float) and not isinstance(item, bool)
                    else f"{item} {len(out) + 1}"
                )
            out.append(item)
    return out


def _json_object_keys(text: str) -> list[str]:
    keys = []
    for match in _QUOTED.finditer(text):
        word = next(g for g in match.groups() if g is not None)
        if _IDENTIFIER.fullmatch(word) and word not in keys:
            keys.append(word)
    return keys


def _pick_tools(
    body: dict[str, Any], tools: list[dict[str, Any]], prompt: str
) -> list[dict[str, Any]]:
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        return [t for t in tools if t.get("name") == name][:1] or tools[:1]
    mentioned = [t for t in tools if re.search(rf"\b{re.escape(str(t.get('name')))}\b", prompt)]
    if len(mentioned) > 1 and body.get("parallel_tool_calls") is not False:
        return mentioned
    return mentioned[:1] or tools[:1]


def _tool_functions(body: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """Callable functions and whether a call is forced."""
    tools = [
        t.get("function") or {}
        for t in body.get("tools") or []
        if isinstance(t, dict) and t.get("type") == "function"
    ]
    choice = body.get("tool_choice")
    forced = choice == "required" or (isinstance(choice, dict) and choice.get("type") == "function")
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        names = {(t.get("function") or {}).get("name") for t in allowed.get("tools") or []}
        tools = [t for t in tools if t.get("name") in names]
        forced = allowed.get("mode") == "required"
    if choice == "none":
        return [], False
    return tools, forced


def _truncate(answer: Answer, body: dict[str, Any]) -> Answer:
    if answer.content is None:
        return answer
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]
    cut = min((answer.content.find(s) for s in stops if s and s in answer.content), default=-1)
    if cut >= 0:
        answer.content, answer.finish_reason = answer.content[:cut], "stop"
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and limit > 0 and len(answer.content.split()) > limit:
        answer.content = " ".join(answer.content.split()[:limit])
        answer.finish_reason = "length"
    return answer


def respond(body: dict[str, Any]) -> Answer:
    """The default answer to a (valid) Chat Completions request body."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    prompt = last_user_text(messages)
    tools, forced = _tool_functions(body)
    trailing: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        trailing.insert(0, text_of(message.get("content")))
    if tools and (forced or not trailing):
        calls = [
            ToolCall(
                name=str(tool.get("name")),
                arguments=json.dumps(
                    instance_for(
                        tool.get("parameters") or {"type": "object"}, PromptValues(prompt)
                    ),
                    ensure_ascii=False,
                ),
            )
            for tool in _pick_tools(body, tools, prompt)
        ]
        return Answer(content=None, tool_calls=calls, finish_reason="tool_calls")
    response_format = body.get("response_format") or {}
    if trailing:
        content = "The tool returned: " + "; ".join(trailing)
    elif response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") or {"type": "object"}
        content = json.dumps(instance_for(schema, PromptValues(prompt)), ensure_ascii=False)
    elif response_format.get("type") == "json_object":
        keys = _json_object_keys(prompt) or ["answer"]
        topic = prompt[:120] or "ok"
        content = json.dumps({key: f"{key}: {topic}" for key in keys}, ensure_ascii=False)
    else:
        content = f"Hello! You said: {prompt[:500]}" if prompt else "Hello! How can I help you?"
    return _truncate(Answer(content=content), body)
