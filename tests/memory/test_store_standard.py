"""VectorMemory against langchain-tests' `VectorStoreIntegrationTests` (sync and async).

The suite hands its own deterministic fake embeddings (`get_embeddings`); the fixtures pass
them through, so these runs never touch wordllama. Ephemeral mode gets the whole suite; a
persistent variant (one directory per test) runs it again against the on-disk path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_tests.integration_tests.vectorstores import VectorStoreIntegrationTests

from agency.memory.store import VectorMemory


class TestVectorMemoryEphemeral(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self) -> Iterator[VectorMemory]:  # type: ignore[override]
        """A fresh in-memory store: each ephemeral VectorMemory is isolated."""
        store = VectorMemory.ephemeral("standard", embeddings=self.get_embeddings())
        try:
            yield store
        finally:
            store.clear()


class TestVectorMemoryPersistent(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> Iterator[VectorMemory]:  # type: ignore[override]
        """A fresh on-disk store in this test's own directory."""
        store = VectorMemory("standard", path=tmp_path, embeddings=self.get_embeddings())
        try:
            yield store
        finally:
            store.clear()
