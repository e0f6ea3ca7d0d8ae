"""langchain-tests' standard cache suites, sync and async, on an in-memory `SemanticCache`
with its default verifier and threshold."""

from __future__ import annotations

import pytest
from langchain_core.caches import BaseCache
from langchain_core.embeddings import Embeddings
from langchain_tests.integration_tests.cache import AsyncCacheTestSuite, SyncCacheTestSuite

import agency
from agency.memory.cache import SemanticCache


@pytest.fixture(scope="module")
def cache_embeddings() -> Embeddings:
    return agency.embeddings("local:wordllama")


class TestSemanticCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, cache_embeddings: Embeddings) -> BaseCache:
        return SemanticCache.ephemeral(embeddings=cache_embeddings)


class TestSemanticCacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self, cache_embeddings: Embeddings) -> BaseCache:
        return SemanticCache.ephemeral(embeddings=cache_embeddings)
