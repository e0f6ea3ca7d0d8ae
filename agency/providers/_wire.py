"""The edge where wire data becomes Python: checks every adapter shares.

Whatever a provider sends, what leaves an adapter is a LangChain chunk or an `agency.errors`
exception: a body of the wrong shape is `MalformedResponse`, never a ``KeyError``, a
``TypeError`` or pydantic's ``ValidationError`` from LangChain's message classes. Each wire
parses its answers inside `parsing` (one place per wire), and builds tool-call pieces,
counts and vectors with the checked constructors here.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeGuard

from langchain_core.messages.tool import ToolCallChunk, tool_call_chunk
from pydantic import ValidationError

from agency.errors import AgencyError, MalformedResponse

loads_json: Callable[[str | bytes], Any]
try:  # 3x faster than json on a 100-vector embeddings body (benchmarks/overhead.py)
    from orjson import loads as loads_json
except ImportError:  # pragma: no cover - orjson comes with langsmith, langchain-core's dep
    loads_json = json.loads

__all__ = [
    "count",
    "integer",
    "json_payload",
    "malformed",
    "number_vectors",
    "openai_embeddings",
    "openai_tool_calls",
    "parsing",
    "text_or_none",
    "tool_piece",
]

# What parsing a body of the wrong shape raises when a check was missed: mapped by
# `parsing`, never passed on. (ValueError covers json, binascii and pydantic errors.)
_SHAPE_ERRORS = (ValidationError, KeyError, TypeError, IndexError, AttributeError, ValueError,
                 struct.error, binascii.Error)  # fmt: skip


def malformed(
    provider: str | None,
    model: str | None,
    what: str,
    *,
    request_id: str | None = None,
    status_code: int | None = None,
) -> MalformedResponse:
    """The error for an answer that is not the provider's documented format."""
    return MalformedResponse(
        f"unexpected response shape: {what}",
        provider=provider,
        model=model,
        request_id=request_id,
        status_code=status_code,
    )


@contextmanager
def parsing(provider: str | None, model: str | None) -> Iterator[None]:
    """Run a wire's parsing: a shape error a check missed becomes `MalformedResponse` (raised
    ``from`` it, so the cause stays visible); our own errors (`AgencyError`) pass through."""
    try:
        yield
    except AgencyError:
        raise
    except _SHAPE_ERRORS as exc:
        raise malformed(provider, model, f"{type(exc).__name__}: {exc}"[:300]) from exc


def count(value: Any) -> int:
    """A token count: the integer, or 0 for anything else (absent, null, a string, a bool)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def integer(value: Any) -> TypeGuard[int]:
    """Whether ``value`` is a JSON integer (``True`` is not one, though Python says so)."""
    return isinstance(value, int) and not isinstance(value, bool)


def text_or_none(value: Any, what: str, provider: str | None, model: str | None) -> str | None:
    """``value`` if it is a string or absent (``None``); else `MalformedResponse` naming
    ``what``. For ids and names that LangChain merges across chunks as strings."""
    if value is None or isinstance(value, str):
        return value
    raise malformed(provider, model, f"{what} is not a string")


def json_payload(data: str, provider: str | None, model: str | None, what: str) -> Any:
    """One SSE ``data:`` or NDJSON line parsed; `MalformedResponse` when it is not JSON."""
    try:
        return loads_json(data)
    except ValueError as exc:
        raise malformed(provider, model, f"{what} is not JSON: {data[:200]!r}") from exc


def tool_piece(
    *,
    name: Any = None,
    args: Any = None,
    id: Any = None,  # LangChain's field name
    index: Any = None,
    provider: str | None,
    model: str | None,
) -> ToolCallChunk:
    """A LangChain tool-call chunk from wire values, each checked: ``name``, ``id`` and
    ``args`` strings (``args`` may be a JSON object, sent as its text) and ``index`` an int,
    or absent."""
    if args is not None and not isinstance(args, str):
        if not isinstance(args, Mapping):
            raise malformed(provider, model, "tool-call arguments are neither text nor an object")
        args = json.dumps(args)
    for field, value in (("name", name), ("id", id)):
        if value is not None and not isinstance(value, str):
            raise malformed(provider, model, f"tool-call {field} is not a string")
    if index is not None and not integer(index):
        raise malformed(provider, model, "tool-call index is not an integer")
    return tool_call_chunk(name=name, args=args, id=id, index=index)


def openai_tool_calls(
    raw: Any, provider: str | None, model: str | None, *, streamed: bool = False
) -> list[ToolCallChunk]:
    """Chat-completions ``tool_calls`` (``[{"id", "function": {"name", "arguments"}}]``, also
    Cohere's) as tool-call pieces. A whole answer's calls are indexed by position; a streamed
    delta's carry their own ``index``."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise malformed(provider, model, "tool_calls is not a list")
    pieces = []
    for pos, call in enumerate(raw):
        if not isinstance(call, Mapping):
            raise malformed(provider, model, "a tool call is not an object")
        fn = call.get("function") or {}
        if not isinstance(fn, Mapping):
            raise malformed(provider, model, "tool_call.function is not an object")
        # Some compatible servers send the arguments as an object: tool_piece takes both.
        index = call.get("index", pos) if streamed else pos
        pieces.append(tool_piece(name=fn.get("name"), args=fn.get("arguments"), id=call.get("id"),
                                 index=index, provider=provider, model=model))  # fmt: skip
    return pieces


def _numbers(vector: Any) -> list[float] | None:
    # The element types are collected in C (9x faster than a per-element isinstance on 100
    # vectors of 1,536); a list of floats is returned as parsed. bool is its own type here.
    if not isinstance(vector, list):
        return None
    kinds = set(map(type, vector))
    if kinds <= {float}:
        return vector
    if kinds <= {float, int}:
        return [float(x) for x in vector]
    return None


def number_vectors(
    vectors: Any, expected: int, provider: str | None, model: str | None, where: str
) -> list[list[float]]:
    """``expected`` lists of numbers (``where`` names them in the error)."""
    if not isinstance(vectors, list) or len(vectors) != expected:
        raise malformed(provider, model, f"expected {expected} vectors in {where}")
    out = []
    for vector in vectors:
        numbers = _numbers(vector)
        if numbers is None:
            raise malformed(provider, model, f"a vector in {where} is not a list of numbers")
        out.append(numbers)
    return out


def _vector(raw: Any, provider: str | None, model: str | None) -> list[float]:
    if isinstance(raw, str):  # encoding_format "base64": little-endian float32
        try:
            packed = base64.b64decode(raw, validate=True)
            # struct.error when the byte length is not a whole number of float32s
            return list(struct.unpack(f"<{len(packed) // 4}f", packed))
        except (binascii.Error, struct.error) as exc:
            raise malformed(provider, model, "base64 embedding is not a float32 array") from exc
    numbers = _numbers(raw)
    if numbers is None:
        raise malformed(provider, model, "embedding is neither a number list nor base64")
    return numbers


def openai_embeddings(
    data: Any, expected: int, provider: str | None, model: str | None
) -> list[list[float]]:
    """The vectors of an OpenAI-shaped embeddings answer (``{"data": [{"embedding",
    "index"}]}``, float lists or base64), ordered by ``index``; `MalformedResponse` unless
    they cover the ``expected`` inputs exactly once each."""
    items = data.get("data") if isinstance(data, Mapping) else None
    if not isinstance(items, list) or len(items) != expected:
        raise malformed(provider, model, f"expected {expected} embeddings in data[]")
    out: list[list[float] | None] = [None] * expected
    for pos, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise malformed(provider, model, "an embedding item is not an object")
        index = item.get("index", pos)
        if not integer(index) or not 0 <= index < expected or out[index] is not None:
            raise malformed(provider, model, "embedding indexes do not cover the inputs")
        out[index] = _vector(item.get("embedding"), provider, model)
    return out  # type: ignore[return-value]  # every slot filled: len(items) == expected, no repeats
