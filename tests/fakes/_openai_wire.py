"""Wire-level pieces of the fake OpenAI service: response bodies, errors, headers, embeddings.

Shapes follow the live API (and ``openai-openapi.yaml``): pretty-printed JSON bodies, errors as
``{"error": {"message", "type", "param", "code"}}``, the ``x-request-id`` / ``openai-*`` /
``x-ratelimit-*`` headers on every answer, Azure's content-filter annotations.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from typing import Any

from starlette.responses import Response

from . import _brain
from ._sse import call_id

EMBEDDING_DIMS = {"text-embedding-3-large": 3072}
MODEL_CREATED = 1_715_367_049
NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with "
    "blank username) if you're accessing the API from your browser and are prompted for a "
    "username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)
AZURE_DENIED_MESSAGE = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
    "a valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)
STATUS_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", None, "You are not allowed to perform this request."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    409: ("invalid_request_error", None, "The request conflicts with the current state."),
    422: ("invalid_request_error", None, "The request could not be processed."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
    504: ("server_error", None, "Gateway timeout."),
}


# --------------------------------------------------------------------------- embeddings


@functools.lru_cache(maxsize=4096)
def _full_embedding(text: str, dims: int) -> tuple[float, ...]:
    vector = [0.0] * dims
    normalised = " ".join(text.lower().split())
    padded = f"  {normalised}  "
    features = [(padded[i : i + 3], 1.0) for i in range(len(padded) - 2)]
    features += [(f"w:{word}", 2.0) for word in normalised.split()]
    for feature, weight in features:
        digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
        index = int.from_bytes(digest[:4], "little") % dims
        vector[index] += weight if digest[4] & 1 else -weight
    return tuple(vector)


def embed_text(text: str, dims: int = 1536, full_dims: int = 1536) -> list[float]:
    """Deterministic L2-normalised embedding: hashed character trigrams and words.

    Like the text-embedding-3 models, a shortened embedding (``dims < full_dims``) is the
    full one cut to ``dims`` and re-normalised.
    """
    vector = list(_full_embedding(text, full_dims)[:dims])
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        vector = [0.0] * dims
        vector[int.from_bytes(hashlib.blake2b(text.encode()).digest()[:4], "little") % dims] = 1.0
        norm = 1.0
    return [v / norm for v in vector]


def error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # The live API pretty-prints its JSON bodies (2-space indent) and sends raw UTF-8.
    text = json.dumps(data, indent=2, ensure_ascii=False)
    return Response(text, status, headers=headers, media_type="application/json")


def mask_key(key: str) -> str:
    return key if len(key) <= 8 else f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}"


# --------------------------------------------------------------------------- response bodies


def answer_from_reply(reply: Any) -> _brain.Answer:
    calls = [
        _brain.ToolCall(
            name=call["name"],
            arguments=call["arguments"]
            if isinstance(call["arguments"], str)
            else json.dumps(call["arguments"], ensure_ascii=False),
        )
        for call in reply.tool_calls or []
    ]
    finish = reply.finish_reason or ("tool_calls" if calls else "stop")
    content = reply.content
    if content is None and not calls and reply.refusal is None:
        content = ""
    return _brain.Answer(content, calls, finish, reply.refusal)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def usage_for(answer: _brain.Answer, prompt_tokens: int, reply: Any) -> dict[str, Any]:
    completion = _brain.count_tokens(answer.content or answer.refusal or "")
    completion += sum(_brain.count_tokens(f"{c.name} {c.arguments}") for c in answer.tool_calls)
    cached = reply.cached_tokens if reply else 0
    reasoning = reply.reasoning_tokens if reply else 0
    prompt_tokens = max(prompt_tokens, cached)
    completion += reasoning
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    return _merge(usage, reply.usage) if reply and reply.usage else usage


AZURE_FILTERS = {
    name: {"filtered": False, "severity": "safe"}
    for name in ("hate", "self_harm", "sexual", "violence")
}


def completion_body(
    base: dict[str, Any], answer: _brain.Answer, usage: dict[str, Any], n: int, azure: bool
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.content}
    if answer.tool_calls:
        message["tool_calls"] = [
            {
                "id": call_id(n, i),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for i, call in enumerate(answer.tool_calls)
        ]
    message["refusal"] = answer.refusal
    message["annotations"] = []
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": answer.finish_reason,
    }
    body: dict[str, Any] = {
        "id": base["id"],
        "object": "chat.completion",
        "created": base["created"],
        "model": base["model"],
        "choices": [choice],
        "usage": usage,
        "service_tier": base["service_tier"],
        "system_fingerprint": base["system_fingerprint"],
    }
    if azure:
        choice["content_filter_results"] = AZURE_FILTERS
        body["prompt_filter_results"] = [
            {"prompt_index": 0, "content_filter_results": AZURE_FILTERS}
        ]
    return body


def default_headers(scope: dict[str, Any], request_id: str, elapsed_ms: int) -> dict[str, str]:
    """The live service's response headers: request id, version, timing, and on POSTs the
    ``x-ratelimit-*`` family (``fake.rate_limits`` replaces these)."""
    headers = {
        "x-request-id": request_id,
        "openai-version": "2020-10-01",
        "openai-processing-ms": str(elapsed_ms),
    }
    if scope["path"].startswith("/openai/"):
        headers["apim-request-id"] = request_id[4:]
    if scope["method"] == "POST":
        tokens = scope.get("state", {}).get("fake_tokens", 0)
        headers |= {
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-reset-requests": "6ms",
            "x-ratelimit-limit-tokens": "30000000",
            "x-ratelimit-remaining-tokens": str(30000000 - tokens),
            "x-ratelimit-reset-tokens": "0s",
        }
    return headers
