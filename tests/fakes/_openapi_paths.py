"""Validate bodies against OpenAPI schemas declared inline under ``paths`` (Cohere's request
bodies are), with OpenAPI ``discriminator`` semantics honoured.

``_openapi`` validates ``#/components/schemas/<name>`` only. Cohere's spec declares its
``/v2/chat`` and ``/v2/embed`` request bodies inline under the path, and relies on OpenAPI's
``discriminator`` to pick a ``oneOf`` branch. Plain JSON Schema ignores ``discriminator``, so a
``oneOf`` whose branches overlap fails even for valid bodies: ``{"type": "json_object"}``
matches both ``ChatTextResponseFormatV2`` and ``JsonResponseFormatV2`` (both type fields are the
same enum), and every stream event matches several ``allOf`` event shapes. This module rewrites,
in memory, each ``oneOf`` that has a ``discriminator.mapping`` into what the discriminator
means: the property must be one of the mapped values, and the value selects the one schema the
instance must satisfy (``if``/``then`` per mapped value). ``nullable`` is rewritten as in
``_openapi``. The spec files themselves are never copied or modified.
"""

from __future__ import annotations

import functools
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from ._openapi import _nullable_to_anyof, format_error, load_spec, most_relevant

__all__ = [
    "body_properties",
    "component_validator",
    "first_body_error",
    "path_body_validator",
    "validate_body",
    "validate_component",
]


def _discriminated(node: dict[str, Any]) -> dict[str, Any]:
    """``oneOf`` + ``discriminator.mapping`` as an explicit selection by the property."""
    disc = node["discriminator"]
    prop = disc["propertyName"]
    mapping: dict[str, str] = disc["mapping"]
    rest = {k: v for k, v in node.items() if k not in ("oneOf", "discriminator")}
    selected = [
        {
            "if": {"properties": {prop: {"const": value}}, "required": [prop]},
            "then": {"$ref": target},
        }
        for value, target in mapping.items()
    ]
    return {
        **rest,
        "type": "object",
        "required": [prop],
        "properties": {prop: {"enum": list(mapping)}},
        "allOf": [*rest.get("allOf", []), *selected],
    }


def _rewrite(node: Any, base: str) -> Any:
    if isinstance(node, list):
        return [_rewrite(item, base) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _rewrite(value, base) for key, value in node.items()}
    if isinstance(out.get("$ref"), str) and out["$ref"].startswith("#"):
        out["$ref"] = base + out["$ref"]
    disc = out.get("discriminator")
    if "oneOf" in out and isinstance(disc, dict) and isinstance(disc.get("mapping"), dict):
        disc = dict(disc)
        disc["mapping"] = {
            value: (base + target if target.startswith("#") else target)
            for value, target in disc["mapping"].items()
        }
        out["discriminator"] = disc
        return _discriminated(out)
    return out


def _base_uri(spec_file: str) -> str:
    return f"https://specs.invalid/discriminated/{spec_file}"


@functools.cache
def _document(spec_file: str) -> dict[str, Any]:
    document = _nullable_to_anyof(load_spec(spec_file))
    return _rewrite(document, _base_uri(spec_file))  # type: ignore[no-any-return]


@functools.cache
def _registry(spec_file: str) -> Registry:
    resource = Resource.from_contents(_document(spec_file), default_specification=DRAFT202012)
    return Registry().with_resource(_base_uri(spec_file), resource)


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@functools.cache
def path_body_validator(
    spec_file: str, path: str, method: str = "post", media: str = "application/json"
) -> Draft202012Validator:
    """A validator for the request body schema of ``method path`` (inline or referenced)."""
    operation = load_spec(spec_file)["paths"][path][method]
    if media not in operation.get("requestBody", {}).get("content", {}):
        raise KeyError(f"{spec_file}: {method.upper()} {path} has no {media} request body")
    pointer = _pointer("paths", path, method, "requestBody", "content", media, "schema")
    schema = {"$ref": f"{_base_uri(spec_file)}#/{pointer}"}
    return Draft202012Validator(schema, registry=_registry(spec_file))


@functools.cache
def component_validator(spec_file: str, schema_name: str) -> Draft202012Validator:
    """A discriminator-aware validator for ``#/components/schemas/<schema_name>``."""
    if schema_name not in load_spec(spec_file).get("components", {}).get("schemas", {}):
        raise KeyError(f"{spec_file} has no component schema {schema_name!r}")
    schema = {"$ref": f"{_base_uri(spec_file)}#/components/schemas/{schema_name}"}
    return Draft202012Validator(schema, registry=_registry(spec_file))


def _messages(validator: Draft202012Validator, instance: Any) -> list[str]:
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    return [format_error(most_relevant(error)) for error in errors]


def validate_body(spec_file: str, path: str, body: Any, method: str = "post") -> list[str]:
    """Every violation of the request body schema of ``method path`` (empty when valid)."""
    return _messages(path_body_validator(spec_file, path, method), body)


def first_body_error(
    spec_file: str, path: str, body: Any, method: str = "post"
) -> ValidationError | None:
    """The most relevant violation of the request body schema, or None."""
    error = best_match(path_body_validator(spec_file, path, method).iter_errors(body))
    return None if error is None else most_relevant(error)


def validate_component(spec_file: str, schema_name: str, instance: Any) -> list[str]:
    """Every violation of a component schema (responses, events), discriminators honoured."""
    return _messages(component_validator(spec_file, schema_name), instance)


@functools.cache
def body_properties(spec_file: str, path: str, method: str = "post") -> frozenset[str]:
    """Top-level property names the request body schema of ``method path`` declares."""
    operation = load_spec(spec_file)["paths"][path][method]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = load_spec(spec_file)["components"]["schemas"][name]
    return frozenset(schema.get("properties", {}))
