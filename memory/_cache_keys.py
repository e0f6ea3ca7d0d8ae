"""Requests, keys and vectors of `memory.cache.SemanticCache` (private to it).

Contract:

- `parse` turns a LangChain cache call (``prompt``, ``llm_string``, ``scope_extra``) into a
  `Request`: a chat prompt (LangChain's ``dumps(messages)``) is split into its scope (the
  ``llm_string``, ``scope_extra``, every earlier message and the last message's fields other
  than its text, ids and provider bookkeeping left out) and its last text; any other prompt is
  one plain text with an empty conversation. Scope and key are truncated SHA-256 hex digests;
  the key hashes the scope with the text, normalised (NFKC, whitespace collapsed) when the
  request may be answered semantically (a human text or plain prompt), verbatim otherwise.
- `augment` builds the vector stored for an entry: its unit text vector and a pseudo-random
  unit vector of its scope (`scope_vector`, `SCOPE_DIMS` dimensions), sharing the squared norm
  so that two same-scope stored vectors have cosine ``share + (1 - share) * text cosine``;
  `text_similarity` inverts that. Pure functions; numpy is imported only when vectors are made.
- `answer_payload` is the stored form of an answer (LangChain ``dumps`` of its generations,
  message ids dropped) and `revive_answer` rebuilds it, from langchain-core classes only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.caches import RETURN_VAL_TYPE

if TYPE_CHECKING:
    import numpy as np
    from langchain_core.outputs import Generation

__all__ = [
    "SCOPE_DIMS",
    "Request",
    "answer_payload",
    "augment",
    "digest",
    "is_message",
    "normalise",
    "parse",
    "plain_text",
    "revive_answer",
    "scope_vector",
    "text_similarity",
    "unit",
]

SCOPE_DIMS = 64
"""Dimensions appended to each stored vector: a pseudo-random unit vector of its scope."""
_SCOPE_SHARE = 0.5
"""Share of a stored vector's squared norm given to the scope component."""
_KEY_HEX = 32
"""Hex digits kept of a SHA-256 for ids and scope hashes (128 bits)."""
_VOLATILE_FIELDS = frozenset({"id", "response_metadata", "usage_metadata"})
"""Message fields that do not change what a request asks (ids, provider bookkeeping)."""


@dataclass(frozen=True)
class Request:
    """One cache call, as the cache sees it."""

    scope: str
    """Hash of everything but the last text."""
    text: str
    """The last message's text (semantic path), or its content as JSON (exact path only)."""
    key: str
    """Entry id: hash of scope and normalised text."""
    semantic: bool
    """Whether similar entries may answer it (human text or a plain prompt)."""


def digest(*parts: str) -> str:
    """A truncated SHA-256 of ``parts`` (NUL-separated), in hex."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:_KEY_HEX]


def normalise(text: str) -> str:
    """``text`` in NFKC with its whitespace collapsed to single spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def is_message(obj: Any) -> bool:
    """Whether ``obj`` is a LangChain message serialized by ``dumps`` (parsed JSON)."""
    return (
        isinstance(obj, dict)
        and obj.get("type") == "constructor"
        and isinstance(obj.get("id"), list)
        and "messages" in obj["id"]
        and isinstance(obj.get("kwargs"), dict)
    )


def plain_text(content: Any) -> str | None:
    """A message content's text when it is text only (str, or text blocks), else None."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text" and len(block) <= 2:
            parts.append(str(block.get("text", "")))
        else:
            return None
    return "\n".join(parts)


def parse(prompt: str, llm_string: str, extra: str) -> Request:
    """The `Request` of a cache call (``extra`` is the cache's ``scope_extra``)."""
    messages: Any = None
    if prompt.startswith("[{"):  # cheap test before parsing: chat prompts are JSON lists
        with contextlib.suppress(ValueError):
            messages = json.loads(prompt)
    if not (isinstance(messages, list) and messages and all(map(is_message, messages))):
        scope = digest(llm_string, extra, "")
        return Request(scope, prompt, digest(scope, normalise(prompt)), True)
    canonical = [
        [m["id"][-1], {k: v for k, v in m["kwargs"].items() if k not in _VOLATILE_FIELDS}]
        for m in messages
    ]
    last = canonical[-1][1]
    content = last.pop("content", "")
    text = plain_text(content) if last.get("type") == "human" else None
    semantic = text is not None
    if text is None:
        text = json.dumps(content, sort_keys=True, default=str)
    # The last message's fields other than its text belong to the scope (name, extras).
    scope = digest(llm_string, extra, json.dumps(canonical, sort_keys=True, default=str))
    return Request(scope, text, digest(scope, normalise(text) if semantic else text), semantic)


def unit(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """``values`` as a float32 unit vector (a zero vector stays zero)."""
    import numpy as np

    vec = np.asarray(values, dtype=np.float32)
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec


def scope_vector(scope: str) -> np.ndarray:
    """The pseudo-random unit vector of a scope hash (`SCOPE_DIMS` dimensions)."""
    import numpy as np

    rng = np.random.default_rng(int(scope, 16))
    return unit(rng.standard_normal(SCOPE_DIMS))


def augment(vec: np.ndarray | None, dim: int, scope: str) -> list[float]:
    """The stored vector: text part (zeros when ``vec`` is None) and scope part."""
    import numpy as np

    text = vec if vec is not None else np.zeros(dim, dtype=np.float32)
    both = np.concatenate(
        [text * math.sqrt(1 - _SCOPE_SHARE), scope_vector(scope) * math.sqrt(_SCOPE_SHARE)]
    )
    return [float(v) for v in both]


def text_similarity(stored_score: float) -> float:
    """Cosine of the text parts, from the cosine of two same-scope stored vectors."""
    return (stored_score - _SCOPE_SHARE) / (1 - _SCOPE_SHARE)


# -- answers ----------------------------------------------------------------------------------
_ALLOWED: Literal["core"] = "core"
"""What ``loads`` may build from a stored answer: langchain-core classes only."""


def answer_payload(return_val: RETURN_VAL_TYPE) -> str:
    """The answer as stored: `dumps` of the generations, message ids dropped (a hit is a
    new message; a reused id would make LangGraph's add_messages replace the first one)."""
    from langchain_core.load import dumps
    from langchain_core.outputs import ChatGeneration

    cleaned = [
        g.model_copy(update={"message": g.message.model_copy(update={"id": None})})
        if isinstance(g, ChatGeneration) and g.message.id is not None
        else g
        for g in return_val
    ]
    return dumps(cleaned)


def revive_answer(payload: str) -> list[Generation]:
    """The generations `answer_payload` stored; raises if they cannot be rebuilt."""
    from langchain_core.load import load

    # `load` is wrapped by langchain-core's @beta, which only adds a warning.
    revive = getattr(load, "__wrapped__", load)
    generations: list[Generation] = revive(json.loads(payload), allowed_objects=_ALLOWED)
    return generations
