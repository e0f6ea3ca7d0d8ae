"""JSON schema to Gemini's OpenAPI-subset `Schema`, for function declarations.

Split from `agency.providers.gemini`; the conversion rules are Gemini's, documented at
``Schema`` in the Gemini API reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["gemini_declaration", "gemini_schema"]

_INT64 = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")
_KEEP = ("description", "title", "pattern", "minimum", "maximum", "default")
_FORMATS = {"STRING": ("enum", "date-time"), "INTEGER": ("int32", "int64")}
_FORMATS["NUMBER"] = ("float", "double")


# --------------------------------------------------------------------------- schemas
def gemini_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """JSON schema as Gemini's OpenAPI-subset `Schema`: upper-case types, ``$ref``/``allOf``
    inlined, null branches as ``nullable``, int64 bounds as strings, string enums with
    ``format: enum``, keywords the subset lacks dropped.

    Raises ``ValueError`` for what the subset cannot say (free-form or recursive objects,
    tuples, untyped arrays): send such schemas as ``parametersJsonSchema``.
    """
    return _convert(dict(schema), dict(schema), 0)


def _deref(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    for _ in range(32):
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return node
        target: Any = root if ref.startswith("#") else None
        for part in ref.lstrip("#").strip("/").split("/"):
            key = part.replace("~1", "/").replace("~0", "~")
            target = target.get(key) if isinstance(target, dict) and key else target
        if not isinstance(target, dict):
            raise ValueError(f"unresolvable $ref {ref!r}")
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    raise ValueError("$ref chain too deep")


def _convert(node: Any, root: dict[str, Any], depth: int) -> dict[str, Any]:
    if depth > 24 or not isinstance(node, dict):
        raise ValueError("recursive schema" if depth > 24 else "boolean schema")
    node = _deref(node, root)
    if "allOf" in node:  # pydantic wraps a described $ref in a one-element allOf
        if len(node["allOf"]) != 1:
            raise ValueError("allOf of several schemas")
        node = {**_deref(node["allOf"][0], root), **{k: v for k, v in node.items() if k != "allOf"}}
    out = {key: node[key] for key in _KEEP if node.get(key) is not None}
    # int64 fields are JSON strings in the proto mapping the API (and its spec) uses
    out.update({key: str(node[key]) for key in _INT64 if isinstance(node.get(key), int)})
    kinds = node.get("type")
    branches = node.get("anyOf") or node.get("oneOf")
    if isinstance(kinds, list):
        branches = [{**node, "type": kind} for kind in kinds]
    if node.get("nullable") is True:
        out["nullable"] = True
    if branches:
        real = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
        if len(real) < len(branches):
            out["nullable"] = True
        if len(real) == 1:
            return {**_convert(real[0], root, depth + 1), **out}
        return {**out, "anyOf": [_convert(b, root, depth + 1) for b in real]}
    kind = str(kinds or "").upper() or (
        "OBJECT" if "properties" in node else "ARRAY" if "items" in node else "STRING"
    )
    values = node.get("enum", [node["const"]] if "const" in node else None)
    if values is not None and all(isinstance(v, str) for v in values):
        kind, out["format"], out["enum"] = "STRING", "enum", list(values)
    elif node.get("format") in _FORMATS.get(kind, ()):
        out["format"] = node["format"]
    out["type"] = kind
    if kind == "OBJECT":
        props = node.get("properties") or {}
        if not props:
            raise ValueError("object without properties")
        out["properties"] = {k: _convert(v, root, depth + 1) for k, v in props.items()}
        if required := list(dict.fromkeys(r for r in node.get("required", []) if r in props)):
            out["required"] = required
    elif kind == "ARRAY":
        if "prefixItems" in node or not isinstance(node.get("items"), dict):
            raise ValueError("tuple or untyped array")
        out["items"] = _convert(node["items"], root, depth + 1)
    return out


def gemini_declaration(tool: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI-format function tool as a Gemini ``functionDeclaration``."""
    fn = tool.get("function", tool)
    decl: dict[str, Any] = {"name": fn["name"], "description": fn.get("description") or ""}
    params = dict(fn.get("parameters") or {})
    extra = params.get("additionalProperties")
    if params.get("properties") or extra is True or isinstance(extra, dict) or (
        {"$ref", "anyOf", "oneOf", "allOf"} & set(params)
    ):  # fmt: skip
        try:
            decl["parameters"] = gemini_schema(params)
        except ValueError:
            decl["parametersJsonSchema"] = params
    # else the function takes no arguments, and Gemini rejects an OBJECT without properties
    return decl
