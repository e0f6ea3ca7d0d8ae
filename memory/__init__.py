"""memory: agents' vector memory and the semantic cache, on chromadb.

    >>> from memory import VectorMemory, SemanticCache
    >>> mem = VectorMemory("notes")                  # persistent under .agency/memory
    >>> mem.remember("The deploy key rotates on Mondays", {"team": "ops"})
    >>> mem.recall("when does the key rotate?", k=3)

Layer: imports `agency` core and langchain-core, never `agents` or `workflows`; `agency` core
never imports it (the `Agency` facade does, lazily). Submodules load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "CacheStats": "memory.cache",
    "Recollection": "memory.store",
    "SemanticCache": "memory.cache",
    "Verifier": "memory.verify",
    "VectorMemory": "memory.store",
}

__all__ = [
    "CacheStats",
    "Recollection",
    "SemanticCache",
    "VectorMemory",
    "Verifier",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'memory' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
