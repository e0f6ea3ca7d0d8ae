"""The tables `agency.memory` owns: ``[memory]`` (`MemoryConfig`) and ``[llm.cache]``
(`CacheConfig`).

They are declared as `agency.config.Section`\\ s in the ``agency.config`` entry-point group
(`SECTIONS`), so `agency.config` checks them at load time without importing this layer; read
them back with `memory_config` and `cache_config`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from agency.config import (
    AgencyConfig,
    ConfigModel,
    EmbeddingsSpec,
    Float,
    Int,
    Section,
    config_problem,
)

__all__ = ["SECTIONS", "CacheConfig", "MemoryConfig", "cache_config", "memory_config"]


class CacheConfig(ConfigModel):
    """Response cache (``[llm.cache]``)."""

    enabled: bool = False
    """Whether responses are cached."""
    backend: str = "chroma"
    """Cache backend name."""
    path: str | None = None
    """Where the backend stores data."""
    threshold: Float | None = Field(default=None, ge=0, le=1)
    """Similarity (0 to 1) above which a semantic cache hit counts."""
    ttl_s: Float | None = Field(default=None, gt=0)
    """Seconds an entry lives."""
    max_entries: Int | None = Field(default=None, gt=0)
    """Cap on cached entries."""
    embeddings: EmbeddingsSpec | None = None
    """``"provider:model"`` of the embeddings lookups compare (default ``local:wordllama``);
    ``"local:minilm"`` is stronger and brings its own calibrated threshold and verifier."""



class MemoryConfig(ConfigModel):
    """Vector memory (``[memory]``): where `Agency.memory` keeps its namespaces."""

    mode: Literal["persistent", "ephemeral", "server"] = "persistent"
    """``persistent``: chromadb files under ``path``; ``ephemeral``: in this process only;
    ``server``: a ``chroma run`` server at ``host``:``port``, shared by processes and machines."""
    path: str | None = None
    """Directory of the persistent store; ``.agency/memory`` (in the working directory) when unset."""
    host: str = "127.0.0.1"
    """Host of the ``chroma run`` server (``mode = "server"``)."""
    port: Int = Field(default=8000, gt=0, lt=65536)
    """Port of the ``chroma run`` server (``mode = "server"``)."""
    embeddings: EmbeddingsSpec | None = None
    """``"provider:model"`` of the embeddings memories are stored and searched with; by default
    those of the default provider entry (``local:wordllama`` with no key configured)."""

    @model_validator(mode="after")
    def _path_is_persistent(self) -> MemoryConfig:
        if self.path is not None and self.mode != "persistent":
            raise config_problem(
                f'path applies to mode = "persistent" only, not {self.mode!r}',
                'remove path, or set mode = "persistent"',
            )
        return self


SECTIONS = [Section(("memory",), MemoryConfig), Section(("llm", "cache"), CacheConfig)]
"""What `agency.config` hands this layer (the ``agency.config`` entry point ``memory``)."""


def memory_config(config: AgencyConfig) -> MemoryConfig:
    """The ``[memory]`` table of ``config`` (its defaults when absent)."""
    value: MemoryConfig = config.section("memory")
    return value


def cache_config(config: AgencyConfig) -> CacheConfig:
    """The ``[llm.cache]`` table of ``config`` (its defaults when absent)."""
    value: CacheConfig = config.section("llm.cache")
    return value
