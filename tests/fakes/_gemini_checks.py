"""Request rules the live Gemini API enforces beyond the JSON schemas of its OpenAPI spec.

``unknown_fields`` is the proto JSON parser's rule (an unknown field is a 400, whereas the spec's
schemas allow extra keys); ``check_generate`` / ``check_embed`` are the service's semantic
checks (non-empty turns, one data field per part, function call/response pairing, valid
function declarations, ``thoughtSignature`` on Gemini 3 function calls, ...). Each returns
``None`` or an ``ApiError`` worded like the live API's answer; the fake answers it with 400 and
records it in ``spec_violations``, since a client that trips it is broken against the real
service too.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from ._openapi import load_spec

__all__ = [
    "ApiError",
    "check_embed",
    "check_generate",
    "normalize",
    "snake",
    "unknown_field_error",
]

SPEC_FILE = "gemini-openapi.prism-fixed.json"
_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}")
_DATA_FIELDS = (
    "text",
    "inlineData",
    "functionCall",
    "functionResponse",
    "fileData",
    "executableCode",
    "codeExecutionResult",
)
_GEMINI_3 = re.compile(r"^gemini-3")


@dataclass
class ApiError:
    status: int
    message: str
    status_word: str = "INVALID_ARGUMENT"
    details: list[dict[str, Any]] | None = None


def snake(name: str) -> str:
    """``functionDeclarations`` -> ``function_declarations`` (the API names fields so)."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _path(parts: list[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{snake(part)}" if out else snake(part))
    return out


def _resolve(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    for _ in range(16):
        ref = schema.get("$ref", "")
        if ref.startswith("#/components/schemas/"):
            schema = {
                **schemas[ref.rsplit("/", 1)[1]],
                **{k: v for k, v in schema.items() if k != "$ref"},
            }
        elif len(schema.get("allOf", [])) == 1:
            schema = {**schema["allOf"][0], **{k: v for k, v in schema.items() if k != "allOf"}}
        else:
            return schema
    return schema


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def normalize(schema_name: str, body: Any) -> tuple[Any, list[str]]:
    """``(body with proto field names as JSON names, unknown fields)``.

    The proto JSON parser takes a field by its JSON name (``functionDeclarations``) or its proto
    name (``function_declarations``; google-genai sends nested ones so) and rejects any other
    key, whereas the spec's schemas allow extra keys. Unknown fields are listed as
    ``"tools[0].function_declarations[0]|additionalProperties"``; free-form objects (``args``,
    ``responseJsonSchema``) declare no properties and take anything as is.
    """
    schemas = load_spec(SPEC_FILE)["components"]["schemas"]
    found: list[str] = []

    def walk(schema: dict[str, Any], value: Any, where: list[str | int]) -> Any:
        schema = _resolve(schema, schemas)
        if isinstance(value, dict):
            props = schema.get("properties")
            extra = schema.get("additionalProperties")
            out = {}
            for key, item in value.items():
                name = key if isinstance(props, dict) and key in props else _camel(key)
                if isinstance(props, dict) and name in props:
                    out[name] = walk(props[name], item, [*where, name])
                elif isinstance(extra, dict):
                    out[key] = walk(extra, item, [*where, key])
                else:
                    if isinstance(props, dict) and extra is None:
                        found.append(f"{_path(where)}|{key}")
                    out[key] = item
            return out
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            return [walk(schema["items"], item, [*where, i]) for i, item in enumerate(value)]
        return value

    return walk({"$ref": f"#/components/schemas/{schema_name}"}, body, []), found


def unknown_field_error(entry: str) -> ApiError:
    where, name = entry.split("|", 1)
    at = f" at '{where}'" if where else ""
    return ApiError(
        400,
        f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.',
        details=[
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [
                    {
                        "field": where,
                        "description": f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.',
                    }
                ],
            }
        ],
    )


def _bad(field: str, problem: str, request: str = "GenerateContentRequest") -> ApiError:
    return ApiError(400, f"* {request}.{field}: {problem}\n")


def _check_schema(schema: Any, where: str) -> ApiError | None:
    """Gemini `Schema` rules: a type, non-empty OBJECT properties, ARRAY items, STRING enums."""
    if not isinstance(schema, dict):
        return None
    kind = str(schema.get("type", "")).upper()
    if not kind and not schema.get("anyOf"):
        return _bad(f"{where}.type", "must be specified")
    if kind == "OBJECT" and not schema.get("properties"):
        return _bad(f"{where}.properties", "should be non-empty for OBJECT type")
    if kind == "ARRAY" and not isinstance(schema.get("items"), dict):
        return _bad(f"{where}.items", "missing field.")
    if schema.get("enum") and kind != "STRING":
        return _bad(f"{where}.enum", "only allowed for STRING type")
    for name, sub in (schema.get("properties") or {}).items():
        if (error := _check_schema(sub, f"{where}.properties[{name}]")) is not None:
            return error
    for index, sub in enumerate(schema.get("anyOf") or []):
        if (error := _check_schema(sub, f"{where}.any_of[{index}]")) is not None:
            return error
    return _check_schema(schema.get("items"), f"{where}.items") if kind == "ARRAY" else None


def _check_part(part: dict[str, Any], where: str) -> ApiError | None:
    fields = [f for f in _DATA_FIELDS if f in part]
    if not fields:
        return _bad(f"{where}.data", "required oneof field 'data' must have one initialized field")
    if len(fields) > 1:
        return ApiError(
            400,
            f"Invalid value at '{where}' (oneof), oneof field 'data' is already set. "
            f"Cannot set '{snake(fields[1])}'",
        )
    if part.get("text") == "":
        return ApiError(
            400,
            "Unable to submit request because it has an empty text parameter. "
            "Add a value to the parameter and try again.",
        )
    blob = part.get("inlineData")
    if isinstance(blob, dict):
        data = str(blob.get("data", ""))
        try:  # proto JSON takes standard or URL-safe base64 (google-genai sends the latter)
            standard = data.replace("-", "+").replace("_", "/")
            base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        except (binascii.Error, ValueError):
            return ApiError(
                400,
                f"Invalid value at '{where}.inline_data.data' (TYPE_BYTES), "
                f'Base64 decoding failed for "{data[:40]}"',
            )
        if not blob.get("mimeType"):
            return _bad(f"{where}.inline_data.mime_type", "mime_type must be specified")
    return None


def _check_turns(contents: list[Any], model: str) -> ApiError | None:
    last_user_text = max(
        (
            i
            for i, c in enumerate(contents)
            if c.get("role", "user") == "user" and any("text" in p for p in c.get("parts", []))
        ),
        default=-1,
    )
    for i, content in enumerate(contents):
        where = f"contents[{i}]"
        role = content.get("role", "user")
        if role not in ("user", "model", "function"):
            return ApiError(400, "Please use a valid role: user, model.")
        parts = content.get("parts") or []
        if not parts:
            return _bad(f"{where}.parts", "contents.parts must not be empty.")
        for j, part in enumerate(parts):
            if (error := _check_part(part, f"{where}.parts[{j}]")) is not None:
                return error
        calls = [p for p in parts if "functionCall" in p]
        if not calls:
            continue
        previous = contents[i - 1] if i else None
        if previous is None or previous.get("role", "user") == "model":
            return ApiError(
                400,
                "Please ensure that function call turn comes immediately after a user turn or "
                "after a function response turn.",
            )
        following = contents[i + 1] if i + 1 < len(contents) else None
        responses = [p for p in (following or {}).get("parts", []) if "functionResponse" in p]
        if following is not None and len(responses) != len(calls):
            return ApiError(
                400,
                "Please ensure that the number of function response parts is equal to the number "
                "of function call parts of the function call turn.",
            )
        # Gemini 3 validates thought signatures on the current turn's function calls.
        if _GEMINI_3.match(model) and i > last_user_text and "thoughtSignature" not in calls[0]:
            position = parts.index(calls[0]) + 1
            return ApiError(
                400,
                "Function call is missing a thought_signature in functionCall parts. This is "
                "required for tools to work correctly, and missing thought_signature may lead "
                "to degraded model performance. Additional data, function call "
                f"`default_api:{calls[0]['functionCall'].get('name')}` , position {position}. "
                "Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for "
                "more details.",
            )
    return None


def _check_tools(body: dict[str, Any]) -> ApiError | None:
    names: list[str] = []
    for i, tool in enumerate(body.get("tools") or []):
        for j, decl in enumerate(tool.get("functionDeclarations") or []):
            where = f"tools[{i}].function_declarations[{j}]"
            name = str(decl.get("name", ""))
            if not _NAME.fullmatch(name):
                return _bad(
                    f"{where}.name",
                    "Invalid function name. Must start with a letter or an underscore. Must be "
                    "alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or "
                    "dashes (-), with a maximum length of 64.",
                )
            if name in names:
                return _bad(f"{where}.name", f"Duplicate function declaration name: {name}")
            names.append(name)
            if "parameters" in decl and "parametersJsonSchema" in decl:
                return _bad(
                    f"{where}.parameters_json_schema",
                    "parameters and parameters_json_schema are mutually exclusive",
                )
            if (error := _check_schema(decl.get("parameters"), f"{where}.parameters")) is not None:
                return error
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    allowed = config.get("allowedFunctionNames")
    where = "tool_config.function_calling_config.allowed_function_names"
    if allowed and config.get("mode") not in ("ANY", "VALIDATED"):
        return _bad(where, "allowed_function_names should only be set when the Mode is ANY.")
    unknown = [n for n in allowed or [] if n not in names]
    if unknown:
        return _bad(where, f"function {unknown[0]} is not declared")
    return None


def check_generate(body: dict[str, Any], model: str) -> ApiError | None:
    """The first live-API rule ``body`` (already schema-valid) breaks, or None."""
    contents = body.get("contents")
    if not contents:
        return _bad("contents", "contents is not specified")
    for part in (body.get("systemInstruction") or {}).get("parts") or []:
        if set(part) - {"text"}:
            return _bad("system_instruction.parts", "system instruction must be text only")
    if (error := _check_turns(contents, model)) is not None:
        return error
    if (error := _check_tools(body)) is not None:
        return error
    config = body.get("generationConfig") or {}
    mime = config.get("responseMimeType")
    if "responseSchema" in config and "responseJsonSchema" in config:
        return _bad(
            "generation_config.response_json_schema",
            "response_schema and response_json_schema are mutually exclusive",
        )
    if ("responseSchema" in config or "responseJsonSchema" in config) and mime not in (
        "application/json",
        "text/x.enum",
    ):
        return _bad(
            "generation_config.response_mime_type",
            "a response schema needs response_mime_type 'application/json'",
        )
    if (
        error := _check_schema(config.get("responseSchema"), "generation_config.response_schema")
    ) is not None:
        return error
    if len(config.get("stopSequences") or []) > 5:
        return _bad("generation_config.stop_sequences", "at most 5 stop sequences are allowed")
    temperature = config.get("temperature")
    if temperature is not None and not 0 <= temperature <= 2:
        return _bad("generation_config.temperature", "temperature must be in the range [0.0, 2.0]")
    return None


def check_embed(request: dict[str, Any], where: str, model_name: str | None) -> ApiError | None:
    """Rules for one ``EmbedContentRequest`` (``where`` prefixes field paths)."""
    request_name = "BatchEmbedContentsRequest" if where else "EmbedContentRequest"
    if model_name is not None and request.get("model") not in (None, model_name):
        return _bad(
            f"{where}model",
            f"model '{request.get('model')}' does not match the batch's model '{model_name}'",
            request_name,
        )
    parts = (request.get("content") or {}).get("parts") or []
    if not parts:
        return _bad(f"{where}content.parts", "contents.parts must not be empty.", request_name)
    if not any(str(p.get("text") or "").strip() for p in parts):
        return _bad(f"{where}content", "text content is empty", request_name)
    return None
