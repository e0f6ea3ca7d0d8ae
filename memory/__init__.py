"""memory: agents' vector memory and the semantic cache, on chromadb.

    >>> from agency.memory import VectorMemory, SemanticCache
    >>> mem = VectorMemory("notes")                  # persistent under .agency/memory
    >>> mem.remember("The deploy key rotates on Mondays", {"team": "ops"})
    >>> mem.recall("when does the key rotate?", k=3)

Layer: imports `agency` core and langchain-core, never `agents` or `workflows`; `agency` core
never imports it (the `Agency` facade does, lazily). Submodules load on first use.
"""

from __future__ import annotations

from typing import Any

from agency._lazy import export

_EXPORTS: dict[str, str] = {
    "CacheStats": "agency.memory.cache",
    "Recollection": "agency.memory.store",
    "SemanticCache": "agency.memory.cache",
    "Verifier": "agency.memory.verify",
    "VectorMemory": "agency.memory.store",
}

__all__ = [
    "CacheStats",
    "Recollection",
    "SemanticCache",
    "VectorMemory",
    "Verifier",
]


def __getattr__(name: str) -> Any:
    return export(__name__, _EXPORTS, name)
