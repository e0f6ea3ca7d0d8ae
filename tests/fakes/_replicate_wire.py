"""Wire-level pieces of the fake Replicate service: script actions, the model catalogue with
each model's Cog input/output schemas, the create-prediction request schema, problem+json
errors, prediction ids, tokens and metrics, and the prediction event stream.

No Replicate OpenAPI document is among ``../shared/specs``; the request schema below is written
from Replicate's HTTP API reference (https://replicate.com/docs/reference/http, "Create a
prediction": ``input`` required, ``version`` for ``/v1/predictions``, ``stream``, ``webhook``,
``webhook_completed``, ``webhook_events_filter``) and the model inputs from the models' own
Cog schemas as ``GET /v1/models/{owner}/{name}/versions/{id}`` publishes them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from . import _service
from ._service import FrameStream

__all__ = [
    "CREATE_SCHEMA",
    "MODELS",
    "Malformed",
    "Reply",
    "prediction_id",
    "problem",
    "replicate_sse",
    "tokens_of",
]

_WEBHOOK_EVENTS = {"type": "array", "items": {"enum": ["start", "output", "logs", "completed"]}}
CREATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "input": {"type": "object"},
        "version": {"type": "string", "minLength": 1},
        "stream": {"type": "boolean"},
        "webhook": {"type": "string", "format": "uri"},
        "webhook_completed": {"type": "string", "format": "uri"},
        "webhook_events_filter": _WEBHOOK_EVENTS,
    },
    "additionalProperties": False,
}
"""The body of ``POST /v1/predictions`` and ``POST /v1/models/{owner}/{name}/predictions``."""

_LLAMA_INPUT: dict[str, Any] = {
    "type": "object",
    "title": "Input",
    "properties": {
        "prompt": {"type": "string", "default": ""},
        "system_prompt": {"type": "string", "default": "You are a helpful assistant"},
        "max_tokens": {"type": "integer", "default": 512, "minimum": 1},
        "min_tokens": {"type": "integer", "default": 0, "minimum": 0},
        "max_new_tokens": {"type": "integer", "minimum": 1},
        "min_new_tokens": {"type": "integer", "minimum": 0},
        "temperature": {"type": "number", "default": 0.6, "minimum": 0, "maximum": 5},
        "top_p": {"type": "number", "default": 0.9, "minimum": 0, "maximum": 1},
        "top_k": {"type": "integer", "default": 50, "minimum": 0},
        "presence_penalty": {"type": "number", "default": 0},
        "frequency_penalty": {"type": "number", "default": 0},
        "length_penalty": {"type": "number", "default": 1, "minimum": 0, "maximum": 5},
        "stop_sequences": {"type": "string", "default": "<|end_of_text|>,<|eot_id|>"},
        "prompt_template": {"type": "string"},
        "seed": {"type": "integer"},
        "log_performance_metrics": {"type": "boolean", "default": False},
    },
    "additionalProperties": False,
}
_LLAMA_OUTPUT = {
    "type": "array",
    "items": {"type": "string"},
    "title": "Output",
    "x-cog-array-type": "iterator",
    "x-cog-array-display": "concatenate",
}
_E5_INPUT: dict[str, Any] = {
    "type": "object",
    "title": "Input",
    "properties": {
        "texts": {"type": "string", "default": "[]", "description": "text to embed, formatted "
                  "as JSON list of strings (e.g. [\"hello\", \"world\"])"},
        "batch_size": {"type": "integer", "default": 32, "minimum": 1},
        "normalize_embeddings": {"type": "boolean", "default": True},
    },
    "additionalProperties": False,
}  # fmt: skip
_E5_OUTPUT = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}

MODELS: dict[str, dict[str, Any]] = {
    "meta/meta-llama-3-8b-instruct": {
        "official": True, "kind": "chat", "input": _LLAMA_INPUT, "output": _LLAMA_OUTPUT,
        "version": "5a6809ca6288247d06daf6365557e5e429063f32a21146b2a807c682652136b8",
    },
    "meta/meta-llama-3-70b-instruct": {
        "official": True, "kind": "chat", "input": _LLAMA_INPUT, "output": _LLAMA_OUTPUT,
        "version": "fbfb20b472b2f3bdd101412a9f70a0ed4fc0ced78a77ff00970ee7a2383c575d",
    },
    "beautyyuyanli/multilingual-e5-large": {
        "official": False, "kind": "embed", "input": _E5_INPUT, "output": _E5_OUTPUT, "dims": 1024,
        "version": "a06276a89f1a902d5fc225a9ca32b6e8e6292b7f3b136518878da97c458e2bad",
    },
}  # fmt: skip
"""Model name -> official (runs by name), kind, Cog Input/Output schemas, latest version."""


# --------------------------------------------------------------------------- script actions
_UNSET: Any = object()


@dataclass
class Reply:
    """Shape the next prediction: its text (default: the brain's), raw ``output`` (overrides
    the text), final ``status`` (``failed``/``canceled``/``aborted`` with ``error``), how many
    ``seconds`` it runs, ``metrics`` merged over the computed ones, for a failed or cancelled
    stream how many tokens are sent first (``after_tokens``), whether it offers a stream URL,
    and a ``Malformed`` answer for its first poll or its stream (``broken``)."""

    content: str | None = None
    output: Any = _UNSET
    status: str = "succeeded"
    error: str | None = None
    seconds: float = 0.0
    metrics: dict[str, Any] | None = None
    after_tokens: int = 2
    stream_url: bool = True
    broken: Malformed | None = None  # sent instead of the first poll ("get") or the stream


@dataclass
class Malformed(_service.Malformed):
    """Send ``body`` raw as the answer to the create request (``where="create"``), the first
    poll (``"get"``) or the event stream (``"stream"``)."""

    where: str = "create"


_TITLES = {
    400: "Bad request",
    401: "Unauthenticated",
    402: "Payment required",
    403: "Forbidden",
    404: "Not found",
    422: "Input validation failed",
    429: "Request was throttled",
    500: "Internal server error",
    503: "Service unavailable",
}
_DETAILS = {
    401: "You did not pass a valid authentication token",
    402: "You have insufficient credit to run this model. Go to https://replicate.com/account/"
    "billing#billing to purchase credit. Once you purchase credit, please wait a few minutes "
    "before trying again.",
    404: "The requested resource could not be found.",
    429: "Request was throttled. Your rate limit for creating predictions is reduced while you "
    "have less than $5.0 in credit. Expected available in 1 second.",
    500: "An unexpected error occurred.",
    503: "Service is temporarily unavailable.",
}


def problem(status: int, detail: str | None = None, title: str | None = None,
            **extra: Any) -> dict[str, Any]:  # fmt: skip
    """An RFC 7807 problem body as Replicate sends it."""
    body = {
        "title": title or _TITLES.get(status, "Error"),
        "detail": detail or _DETAILS.get(status, "Something went wrong."),
        "status": status,
    }
    return {**body, **extra}


def prediction_id(seed: int) -> str:
    """A 26-character lower-case base32 id, like Replicate's."""
    digest = hashlib.sha256(f"prediction{seed}".encode()).digest()
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    number = int.from_bytes(digest[:17], "big")
    return "".join(alphabet[(number >> (5 * i)) & 31] for i in range(26))


_TOKEN = re.compile(r"\s*\w+|\s*[^\w\s]|\s+")


def tokens_of(text: str) -> list[str]:
    """The output tokens of an answer: words and marks with their leading spaces."""
    return _TOKEN.findall(text)


def replicate_sse(
    events: list[tuple[str, str]], *, created: int, delay: float = 0.0,
    drop_after: int | None = None,
) -> FrameStream:  # fmt: skip
    """The prediction's events (``output`` tokens, then ``error`` and/or ``done``), each with an
    ``id``; an output token with newlines spans several ``data:`` lines. ``events`` are
    (event, data) pairs; ``delay`` spreads them over the prediction's run time; ``drop_after``:
    see ``FrameStream``."""
    frames = [
        f"event: {event}\nid: {created}:{index}\n"
        + "".join(f"data: {line}\n" for line in data.split("\n"))
        + "\n"
        for index, (event, data) in enumerate(events)
    ]
    return FrameStream(
        frames, headers={"cache-control": "no-cache"}, drop_after=drop_after, delay=delay
    )


def embed_input_texts(value: Any) -> list[str]:
    """The e5 model's ``texts`` input: a JSON list of strings (else the model fails)."""
    texts = json.loads(value)
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must be a JSON list of strings")
    return texts
