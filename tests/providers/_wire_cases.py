"""Malformed wire answers for `test_wire_fuzz`: each wire's canonical valid answer (text, a
tool call, usage), JSON and streamed, and a deterministic mutation generator over them."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from functools import reduce
from typing import Any

_ARGS = '{"city": "Paris"}'

# --------------------------------------------------------------------------- canonical answers
OPENAI_JSON = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "system_fingerprint": "fp_1",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "hi",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": _ARGS},
                    }
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 1},
        "completion_tokens_details": {"reasoning_tokens": 2},
    },
}


def _oa_chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    head = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    return {**head, "choices": [choice], **extra}


OPENAI_STREAM = [
    _oa_chunk({"role": "assistant", "content": "hi"}),
    _oa_chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    ),
    _oa_chunk({"tool_calls": [{"index": 0, "function": {"arguments": _ARGS}}]}),
    _oa_chunk({}, "tool_calls"),
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    },
]

ANTHROPIC_JSON = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [
        {"type": "text", "text": "hi"},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 3,
        "output_tokens": 4,
        "cache_read_input_tokens": 1,
        "cache_creation_input_tokens": 0,
    },
}
ANTHROPIC_STREAM = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": 3, "output_tokens": 1},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": _ARGS},
    },
    {"type": "content_block_stop", "index": 1},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 4},
    },
    {"type": "message_stop"},
]

_GEMINI_USAGE = {
    "promptTokenCount": 3,
    "candidatesTokenCount": 4,
    "totalTokenCount": 7,
    "cachedContentTokenCount": 1,
}
_GEMINI_CALL = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
GEMINI_JSON = {
    "candidates": [
        {
            "content": {"role": "model", "parts": [{"text": "hi"}, _GEMINI_CALL]},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": _GEMINI_USAGE,
    "modelVersion": "gemini-x",
    "responseId": "r1",
}
GEMINI_STREAM = [
    {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "index": 0}],
        "modelVersion": "gemini-x",
        "responseId": "r1",
    },
    {
        "candidates": [
            {"content": {"role": "model", "parts": [_GEMINI_CALL]}, "finishReason": "STOP"}
        ],
        "usageMetadata": _GEMINI_USAGE,
        "modelVersion": "gemini-x",
        "responseId": "r1",
    },
]

_OLLAMA_HEAD = {"model": "llama3.2", "created_at": "2025-01-01T00:00:00Z"}
_OLLAMA_CALL = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
OLLAMA_JSON = {
    **_OLLAMA_HEAD,
    "message": {"role": "assistant", "content": "hi", "tool_calls": [_OLLAMA_CALL]},
    "done": True,
    "done_reason": "stop",
    "total_duration": 10,
    "prompt_eval_count": 3,
    "eval_count": 4,
}
OLLAMA_STREAM = [
    {**_OLLAMA_HEAD, "message": {"role": "assistant", "content": "hi"}, "done": False},
    {
        **_OLLAMA_HEAD,
        "message": {"role": "assistant", "content": "", "tool_calls": [_OLLAMA_CALL]},
        "done": False,
    },
    {
        **_OLLAMA_HEAD,
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 3,
        "eval_count": 4,
    },
]

_COHERE_USAGE = {
    "billed_units": {"input_tokens": 3, "output_tokens": 4},
    "tokens": {"input_tokens": 3, "output_tokens": 4},
}
COHERE_JSON = {
    "id": "c1",
    "finish_reason": "TOOL_CALL",
    "message": {
        "role": "assistant",
        "content": [{"type": "text", "text": "hi"}],
        "tool_plan": "I will look it up",
        "tool_calls": [
            {
                "id": "tc1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": _ARGS},
            }
        ],
    },
    "usage": _COHERE_USAGE,
}
COHERE_STREAM = [
    {"type": "message-start", "id": "c1", "delta": {"message": {"role": "assistant"}}},
    {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "hi"}}}},
    {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will"}}},
    {
        "type": "tool-call-start",
        "index": 0,
        "delta": {
            "message": {
                "tool_calls": {
                    "id": "tc1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            }
        },
    },
    {
        "type": "tool-call-delta",
        "index": 0,
        "delta": {"message": {"tool_calls": {"function": {"arguments": _ARGS}}}},
    },
    {"type": "tool-call-end", "index": 0},
    {"type": "message-end", "delta": {"finish_reason": "TOOL_CALL", "usage": _COHERE_USAGE}},
]

REPLICATE_JSON = {
    "id": "p1",
    "model": "meta/llama",
    "version": "v1",
    "status": "succeeded",
    "output": ["hi", " there"],
    "error": None,
    "metrics": {"input_token_count": 3, "output_token_count": 4, "predict_time": 0.1},
    "urls": {
        "get": "https://mock.invalid/v1/predictions/p1",
        "cancel": "https://mock.invalid/v1/predictions/p1/cancel",
    },
}

REPLICATE_STREAMED = {
    **REPLICATE_JSON,
    "urls": {**REPLICATE_JSON["urls"], "stream": "https://mock.invalid/v1/stream/p1"},
}
REPLICATE_EVENTS = [("output", "hi"), ("output", " there"), ("done", "{}")]
"""``(event, data)`` pairs of a prediction's output stream (text, not JSON, until done)."""
REPLICATE_EVENT_VARIANTS = {
    "done data not JSON": [("output", "hi"), ("done", "{oops")],
    "done data a list": [("output", "hi"), ("done", "[1]")],
    "done with an unknown reason": [("output", "hi"), ("done", '{"reason": 7}')],
    "error event": [("output", "hi"), ("error", '{"detail": "boom"}')],
    "no done event": [("output", "hi")],
}


# --------------------------------------------------------------------------- mutations
CUT = object()
"""Last item of a stream that is cut off: the connection closes with no end marker."""
_WRONG: tuple[Any, ...] = (None, 7, "x", True, [], {})


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def replace_at(doc: Any, path: tuple[Any, ...], value: Any, *, delete: bool = False) -> Any:
    doc = copy.deepcopy(doc)
    if not path:
        return value
    parent = reduce(lambda node, key: node[key], path[:-1], doc)
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def mutations(doc: Any) -> Iterator[tuple[str, Any]]:
    """``(what, mutated document)``: at every path a value of each wrong type, the value
    wrapped in a list (wrong nesting), and the key deleted."""
    for path in _paths(doc):
        original = reduce(lambda node, key: node[key], path, doc)
        for wrong in _WRONG:
            if type(wrong) is not type(original):
                yield f"{list(path)} = {wrong!r}", replace_at(doc, path, wrong)
        yield f"{list(path)} wrapped in a list", replace_at(doc, path, [original])
        if path and isinstance(reduce(lambda node, key: node[key], path[:-1], doc), dict):
            yield f"{list(path)} deleted", replace_at(doc, path, None, delete=True)


def json_bodies(doc: Any) -> Iterator[tuple[str, str]]:
    """Raw bodies: every mutation of ``doc``, then truncated and non-JSON ones."""
    for what, mutated in mutations(doc):
        yield what, json.dumps(mutated)
    text = json.dumps(doc)
    yield "truncated JSON", text[: len(text) // 2]
    yield "empty body", ""
    yield "not JSON", "<html>502 Bad Gateway</html>"


def stream_variants(events: list[Any]) -> Iterator[tuple[str, list[Any]]]:
    """Event lists (a str item is sent as raw data): one event mutated at a time, a non-JSON
    event, and the stream cut off halfway."""
    for i, event in enumerate(events):
        for what, mutated in mutations(event):
            yield f"event {i}: {what}", [*events[:i], mutated, *events[i + 1 :]]
        yield f"event {i} not JSON", [*events[:i], "{not json", *events[i + 1 :]]
        yield f"event {i} truncated", [*events[:i], json.dumps(event)[:9], *events[i + 1 :]]
    yield "cut off halfway", [*events[: len(events) // 2], CUT]


def sse(events: list[Any], *, named: bool = False, done: bool = False) -> str:
    out = []
    if events and events[-1] is CUT:
        events, done = events[:-1], False
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        name = event.get("type") if named and isinstance(event, dict) else None
        out.append((f"event: {name}\n" if isinstance(name, str) else "") + f"data: {data}\n\n")
    if done:
        out.append("data: [DONE]\n\n")
    return "".join(out)


def ndjson(events: list[Any]) -> str:
    lines = [e if isinstance(e, str) else json.dumps(e) for e in events if e is not CUT]
    return "".join(line + "\n" for line in lines)


# --------------------------------------------------------------------------- embeddings
def b64(*values: float) -> str:
    import base64
    import struct

    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


EMBEDDINGS = {
    "openai:text-embedding-3-small": {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5, 1.0]},
            {"object": "embedding", "index": 1, "embedding": [1.5, 2.0]},
        ],
        "model": "m",
    },
    "voyage:voyage-3.5": {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": b64(0.5, 1.0)},
            {"object": "embedding", "index": 1, "embedding": b64(1.5, 2.0)},
        ],
        "model": "voyage-3.5",
    },
    "cohere:embed-v4.0": {"id": "e1", "embeddings": {"float": [[0.5, 1.0], [1.5, 2.0]]}},
    "ollama:nomic-embed-text": {"model": "m", "embeddings": [[0.5, 1.0], [1.5, 2.0]]},
    "gemini:gemini-embedding-001": {"embeddings": [{"values": [0.5, 1.0]}, {"values": [1.5, 2.0]}]},
}
