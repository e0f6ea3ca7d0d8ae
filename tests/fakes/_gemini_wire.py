"""Wire-level pieces of the fake Gemini API: the brain adapter, response bodies, SSE framing,
error bodies, response headers, the model catalog and embeddings.

Shapes follow the live API (and ``gemini-openapi.json``): JSON bodies pretty-printed with two
spaces; SSE events as ``data: <one-line JSON>`` separated by ``\\r\\n\\r\\n`` (the JSON written with
``","`` and ``": "``, as Google's streaming serializer does), no ``[DONE]``; errors as
``{"error": {"code", "message", "status", "details"?}}``; zero counts left out (proto3).

The deterministic brain of ``_brain`` speaks Chat Completions, so a Gemini request is turned into
that shape (`brain_body`) and its `Answer` back into Gemini parts (`answer_parts`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from typing import Any

from starlette.responses import Response

from ._service import FrameStream

__all__ = [
    "MODELS",
    "STATUS_WORDS",
    "brain_body",
    "default_headers",
    "embed_values",
    "error_body",
    "gemini_sse",
    "json_response",
    "media_tokens",
    "model_record",
    "response_id",
    "signature",
]

STATUS_WORDS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: (
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
        "cookie or other valid authentication credential. See "
        "https://developers.google.com/identity/sign-in/web/devconsole-project.",
    ),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "Requested entity was not found."),
    409: ("ABORTED", "The operation was aborted."),
    429: (
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
    ),
    499: ("CANCELLED", "The operation was cancelled."),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}

_CHAT_METHODS = ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]
_EMBED_METHODS = ["embedContent", "countTextTokens", "countTokens", "asyncBatchEmbedContent"]
# name -> (display name, input limit, output limit, methods, thinking, embedding dims)
MODELS: dict[str, tuple[str, int, int, list[str], bool, int]] = {
    "gemini-2.5-flash": ("Gemini 2.5 Flash", 1_048_576, 65_536, _CHAT_METHODS, True, 0),
    "gemini-2.5-pro": ("Gemini 2.5 Pro", 1_048_576, 65_536, _CHAT_METHODS, True, 0),
    "gemini-2.5-flash-lite": ("Gemini 2.5 Flash-Lite", 1_048_576, 65_536, _CHAT_METHODS, True, 0),
    "gemini-3-pro-preview": ("Gemini 3 Pro Preview", 1_048_576, 65_536, _CHAT_METHODS, True, 0),
    "gemini-2.0-flash": ("Gemini 2.0 Flash", 1_048_576, 8_192, _CHAT_METHODS, False, 0),
    "gemini-embedding-001": ("Gemini Embedding 001", 2_048, 1, _EMBED_METHODS, False, 3072),
    "text-embedding-004": ("Text Embedding 004", 2_048, 1, _EMBED_METHODS[:1], False, 768),
}


def model_record(name: str) -> dict[str, Any]:
    """``models/{name}`` as ``GET /v1beta/models`` lists it."""
    display, inputs, outputs, methods, thinking, dims = MODELS.get(
        name, (name, 1_048_576, 8_192, _CHAT_METHODS, False, 0)
    )
    record: dict[str, Any] = {
        "name": f"models/{name}",
        "version": "001",
        "displayName": display,
        "description": f"Fake {display}",
        "inputTokenLimit": inputs,
        "outputTokenLimit": outputs,
        "supportedGenerationMethods": list(methods),
    }
    if not dims:
        record.update({"temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2})
    if thinking:
        record["thinking"] = True
    return record


def response_id(n: int) -> str:
    digest = hashlib.sha256(f"resp{n}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:23]


def signature(n: int, index: int) -> str:
    """An opaque ``thoughtSignature`` (base64 bytes, like the live ones)."""
    return base64.b64encode(hashlib.sha256(f"sig{n}.{index}".encode()).digest() * 2).decode()


def error_body(
    code: int,
    message: str | None = None,
    status: str | None = None,
    details: list[Any] | None = None,
) -> dict[str, Any]:
    word, default = STATUS_WORDS.get(code, ("UNKNOWN", "Unknown error."))
    error: dict[str, Any] = {"code": code, "message": message or default, "status": status or word}
    if details:
        error["details"] = details
    return {"error": error}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    text = json.dumps(data, indent=2, ensure_ascii=False)
    return Response(text, status, headers=headers, media_type="application/json; charset=UTF-8")


# --------------------------------------------------------------------------- brain mapping
def _from_gemini_schema(schema: Any) -> Any:
    """Gemini `Schema` (upper-case types, int64 strings) as the JSON schema the brain reads."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type":
            out["type"] = str(value).lower()
        elif key in ("minItems", "maxItems", "minLength", "maxLength", "minProperties"):
            out[key] = int(value)
        elif key == "properties":
            out[key] = {k: _from_gemini_schema(v) for k, v in value.items()}
        elif key in ("items",):
            out[key] = _from_gemini_schema(value)
        elif key == "anyOf":
            out[key] = [_from_gemini_schema(v) for v in value]
        elif key not in ("nullable", "format", "propertyOrdering"):
            out[key] = value
    return out


def _openai_part(part: dict[str, Any]) -> dict[str, Any] | None:
    if "text" in part and not part.get("thought"):
        return {"type": "text", "text": part["text"]}
    blob = part.get("inlineData") or part.get("fileData")
    if not isinstance(blob, dict):
        return None
    mime = str(blob.get("mimeType") or "")
    data = str(blob.get("data", "")).replace("-", "+").replace("_", "/")  # URL-safe is valid too
    url = blob.get("fileUri") or f"data:{mime};base64,{data}"
    if mime.startswith("audio/") and "data" in blob:
        return {"type": "input_audio", "input_audio": {"data": data, "format": mime[6:]}}
    if mime.startswith("image/") or not mime:
        return {"type": "image_url", "image_url": {"url": url}}
    name = url.rsplit("/", 1)[-1] if "fileUri" in blob else f"a {mime} file"
    return {"type": "file", "file": {"file_data": url, "filename": name}}


def brain_body(body: dict[str, Any]) -> dict[str, Any]:
    """A Chat Completions body saying what the Gemini request ``body`` says, for `_brain`."""
    messages: list[dict[str, Any]] = []
    system = [p.get("text", "") for p in (body.get("systemInstruction") or {}).get("parts") or []]
    if system:
        messages.append({"role": "system", "content": "\n".join(system)})
    for content in body.get("contents") or []:
        parts = content.get("parts") or []
        if content.get("role") == "model":
            calls = [
                {"id": f"c{i}", "type": "function", "function": {
                    "name": p["functionCall"]["name"],
                    "arguments": json.dumps(p["functionCall"].get("args") or {})}}
                for i, p in enumerate(parts) if "functionCall" in p
            ]  # fmt: skip
            text = "".join(p.get("text", "") for p in parts if not p.get("thought"))
            messages.append({"role": "assistant", "content": text or None,
                             **({"tool_calls": calls} if calls else {})})  # fmt: skip
            continue
        for part in parts:
            if "functionResponse" in part:
                result = part["functionResponse"].get("response")
                messages.append(
                    {"role": "tool", "tool_call_id": "c", "content": json.dumps(result)}
                )
        user = [p for p in map(_openai_part, parts) if p is not None]
        if user:
            messages.append({"role": "user", "content": user})
    out: dict[str, Any] = {"messages": messages}
    tools = []
    for tool in body.get("tools") or []:
        for decl in tool.get("functionDeclarations") or []:
            params = decl.get("parametersJsonSchema") or _from_gemini_schema(decl.get("parameters"))
            tools.append({"type": "function", "function": {
                "name": decl["name"], "parameters": params or {"type": "object", "properties": {}}}})  # fmt: skip
    if tools:
        out["tools"] = tools
        config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        mode, allowed = config.get("mode", "AUTO"), config.get("allowedFunctionNames") or []
        if mode in ("ANY", "VALIDATED") and len(allowed) == 1:
            out["tool_choice"] = {"type": "function", "function": {"name": allowed[0]}}
        elif mode == "ANY" and allowed:
            out["tool_choice"] = {"type": "allowed_tools", "allowed_tools": {"mode": "required",
                                  "tools": [{"type": "function", "function": {"name": n}} for n in allowed]}}  # fmt: skip
        else:
            out["tool_choice"] = {"ANY": "required", "NONE": "none"}.get(mode, "auto")
    config = body.get("generationConfig") or {}
    schema = config.get("responseJsonSchema") or _from_gemini_schema(config.get("responseSchema"))
    if schema:
        out["response_format"] = {"type": "json_schema", "json_schema": {"schema": schema}}
    elif config.get("responseMimeType") == "application/json":
        out["response_format"] = {"type": "json_object"}
    if config.get("stopSequences"):
        out["stop"] = config["stopSequences"]
    if config.get("maxOutputTokens"):
        out["max_tokens"] = config["maxOutputTokens"]
    return out


def media_tokens(body: dict[str, Any]) -> int:
    """258 tokens per image/file part, as Gemini counts a (small) image."""
    return sum(
        258
        for content in body.get("contents") or []
        for part in content.get("parts") or []
        if "inlineData" in part or "fileData" in part
    )


# --------------------------------------------------------------------------- streaming
_PIECE = re.compile(r"(?:\S+\s*){1,4}|\s+")


def text_pieces(text: str) -> list[str]:
    """How the live stream cuts a text: a few words per chunk (the first one shorter)."""
    if not text:
        return [""]
    words = re.findall(r"\S+\s*|\s+", text)
    pieces = ["".join(words[:1])]
    pieces += _PIECE.findall("".join(words[1:]))
    return [p for p in pieces if p] or [text]


def gemini_sse(events: list[Any], *, drop_after: int | None = None) -> FrameStream:
    """``data: <json>\\r\\n\\r\\n`` events; no terminator (the last event carries
    ``finishReason``); ``drop_after``: see ``FrameStream``."""
    spaced = {"ensure_ascii": False, "separators": (",", ": ")}
    frames = [
        f"data: {e if isinstance(e, str) else json.dumps(e, **spaced)}\r\n\r\n" for e in events
    ]
    return FrameStream(frames, headers={"content-disposition": "attachment"}, drop_after=drop_after)


def default_headers(elapsed_ms: int) -> dict[str, str]:
    """The live service's response headers (Google front end, server timing)."""
    return {
        "vary": "Origin, X-Origin, Referer",
        "server": "scaffolding on HTTPServer2",
        "x-xss-protection": "0",
        "x-frame-options": "SAMEORIGIN",
        "x-content-type-options": "nosniff",
        "server-timing": f"gfet4t7; dur={elapsed_ms}",
    }


# --------------------------------------------------------------------------- embeddings
def embed_values(text: str, dims: int, full: int, task: str | None) -> list[float]:
    """A deterministic embedding like gemini-embedding-001's: at full size L2-normalised; a
    shortened one (``outputDimensionality``, Matryoshka-style) is *not* normalised (its norm is
    below 1), as the live docs warn. The task type shifts the vector a little, as it does live.
    """
    from ._openai_wire import embed_text

    vector = embed_text(text, dims, dims)
    if task in ("RETRIEVAL_QUERY", "QUESTION_ANSWERING"):
        bias = embed_text(f"query: {text}", dims, dims)
        mixed = [0.9 * a + 0.1 * b for a, b in zip(vector, bias, strict=True)]
        norm = math.sqrt(sum(v * v for v in mixed)) or 1.0
        vector = [v / norm for v in mixed]
    scale = 1.0 if dims >= full else math.sqrt(0.5 + 0.5 * dims / full)
    return [v * scale for v in vector]
