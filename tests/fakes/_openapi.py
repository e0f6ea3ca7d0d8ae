"""Validate request bodies against a provider's official OpenAPI spec.

Specs live in ``../shared/specs/`` next to the repository (never copied into the project).
``request_validator(spec_file, schema_name)`` returns a JSON Schema 2020-12 validator for
``#/components/schemas/<schema_name>``, with every ``$ref`` resolved inside the spec document
(registered whole as one ``referencing`` resource). Parsed specs are cached per process.

Two adjustments, both in memory:

* A YAML spec with a ``.json`` twin is read from the twin (20x faster to parse). For
  ``openai-openapi.yaml`` the twin was checked to hold identical components, bar a YAML-parsed
  date in one unrelated example.
* ``nullable: true`` (an OpenAPI 3.0 keyword that 3.1 dropped, still present ~110 times in the
  OpenAI spec, e.g. on ``max_completion_tokens``, ``stop``, ``stream``) is rewritten to
  ``anyOf: [<schema>, {type: null}]``. A plain 3.1 reading would ignore the keyword and reject
  the ``null`` values the live API accepts; the owners' ``*.prism-fixed.yaml`` does the same.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = [
    "SPECS_DIR",
    "component_properties",
    "error_path",
    "first_error",
    "format_error",
    "load_spec",
    "most_relevant",
    "request_validator",
    "validate_request",
]

SPECS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "specs"


@functools.cache
def load_spec(spec_file: str) -> dict[str, Any]:
    """The parsed spec document (cached; do not mutate)."""
    path = SPECS_DIR / spec_file
    twin = path.with_suffix(".json")
    if path.suffix in {".yaml", ".yml"} and twin.exists():
        path = twin
    if not path.exists():
        raise FileNotFoundError(f"spec {spec_file!r} not found under {SPECS_DIR}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)


def _nullable_to_anyof(node: Any) -> Any:
    if isinstance(node, list):
        return [_nullable_to_anyof(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable_to_anyof(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


def _base_uri(spec_file: str) -> str:
    return f"https://specs.invalid/{spec_file}"


@functools.cache
def _registry(spec_file: str) -> Registry:
    document = _nullable_to_anyof(load_spec(spec_file))
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    return Registry().with_resource(_base_uri(spec_file), resource)


@functools.cache
def request_validator(spec_file: str, schema_name: str) -> Draft202012Validator:
    """A validator for ``#/components/schemas/<schema_name>`` of ``spec_file``."""
    if schema_name not in load_spec(spec_file).get("components", {}).get("schemas", {}):
        raise KeyError(f"{spec_file} has no component schema {schema_name!r}")
    schema = {"$ref": f"{_base_uri(spec_file)}#/components/schemas/{schema_name}"}
    return Draft202012Validator(schema, registry=_registry(spec_file))


def error_path(error: ValidationError) -> str:
    """``messages[0].content`` style path of an error (empty at the root)."""
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _branch_score(errors: list[ValidationError]) -> tuple[int, int, int, int]:
    # A branch whose discriminator (a direct property constrained by enum/const, e.g. "role",
    # "type") or whose top-level type does not match is a worse explanation than one failing
    # deeper down; prefer the deepest failure, then the fewest errors.
    discriminator = any(
        e.validator in {"enum", "const"} and len(e.relative_path) == 1 for e in errors
    )
    wrong_type = any(e.validator == "type" and not e.relative_path for e in errors)
    depth = max(len(e.absolute_path) for e in errors)
    return (int(discriminator), int(wrong_type), -depth, len(errors))


def most_relevant(error: ValidationError) -> ValidationError:
    """Descend through failed ``oneOf``/``anyOf`` into the branch that was probably meant."""
    while error.context:
        branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        scored = [(_branch_score(errors), errors) for errors in branches.values()]
        if all(score[0] for score, _ in scored):  # no branch's discriminator matched
            return _merged_discriminator_error(error, [errors for _, errors in scored])
        chosen = min(scored, key=lambda item: item[0])[1]
        error = max(chosen, key=lambda e: len(e.absolute_path))
    return error


def _merged_discriminator_error(
    parent: ValidationError, branches: list[list[ValidationError]]
) -> ValidationError:
    allowed: list[Any] = []
    first: ValidationError | None = None
    for errors in branches:
        for sub in errors:
            if sub.validator in {"enum", "const"} and len(sub.relative_path) == 1:
                first = first or sub
                values = sub.validator_value if sub.validator == "enum" else [sub.validator_value]
                allowed += [value for value in values if value not in allowed]
    if first is None:  # pragma: no cover - guarded by the caller
        return parent
    return ValidationError(
        f"{first.instance!r} is not one of {allowed!r}",
        validator="enum",
        validator_value=allowed,
        instance=first.instance,
        path=list(first.absolute_path),
    )


def format_error(error: ValidationError, limit: int = 400) -> str:
    """One line: ``<path>: <message>`` with long instance reprs cut."""
    message = error.message
    if len(message) > limit:
        message = message[: limit - 3] + "..."
    path = error_path(error)
    return f"{path}: {message}" if path else message


def validate_request(spec_file: str, schema_name: str, body: Any) -> list[str]:
    """Messages of every violation of ``schema_name`` by ``body`` (empty when valid).

    A failed ``oneOf``/``anyOf`` (e.g. one bad message among the message variants) is reported
    by its most relevant nested cause (see ``most_relevant``).
    """
    validator = request_validator(spec_file, schema_name)
    errors = sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))
    return [format_error(most_relevant(error)) for error in errors]


def first_error(spec_file: str, schema_name: str, body: Any) -> ValidationError | None:
    """The most relevant violation, or None."""
    validator = request_validator(spec_file, schema_name)
    error = best_match(validator.iter_errors(body))
    return None if error is None else most_relevant(error)


@functools.cache
def component_properties(spec_file: str, schema_name: str) -> frozenset[str]:
    """Top-level property names a component schema declares (through ``allOf``/``$ref``)."""
    schemas = load_spec(spec_file)["components"]["schemas"]
    names: set[str] = set()

    def walk(schema: dict[str, Any]) -> None:
        ref = schema.get("$ref", "")
        if ref.startswith("#/components/schemas/"):
            walk(schemas[ref.rsplit("/", 1)[1]])
        names.update(schema.get("properties", {}))
        for part in schema.get("allOf", []):
            walk(part)

    walk(schemas[schema_name])
    return frozenset(names)
