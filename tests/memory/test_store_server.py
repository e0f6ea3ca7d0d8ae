"""VectorMemory in server mode against a real ``chroma run`` server on 127.0.0.1.

The server is chromadb's own CLI (`servers.ChromaServer`), started as a subprocess on a free
port over a temporary directory; two `VectorMemory` objects (two HTTP clients) show that
memory is shared.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_tests.integration_tests.vectorstores import VectorStoreIntegrationTests
from servers import ChromaServer

from agency.memory.store import Recollection, VectorMemory

_HOST = "127.0.0.1"
_EMBEDDING_SIZE = 16


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    running = ChromaServer(tmp_path_factory.mktemp("chroma-server"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def emb() -> Embeddings:
    return DeterministicFakeEmbedding(size=_EMBEDDING_SIZE)


@pytest.fixture
def namespace() -> str:
    return f"ns-{uuid.uuid4().hex}"


def _memory(server: ChromaServer, namespace: str, emb: Embeddings) -> VectorMemory:
    return VectorMemory(namespace, mode="server", host=_HOST, port=server.port, embeddings=emb)


def test_two_clients_share_one_memory(
    server: ChromaServer, namespace: str, emb: Embeddings
) -> None:
    writer = _memory(server, namespace, emb)
    reader = _memory(server, namespace, emb)
    assert writer.client is not reader.client
    assert writer.mode == "server" and writer.path is None
    entry = writer.remember("the deploy key rotates on Mondays", {"team": "ops", "tags": ["k"]})
    assert reader.count() == 1
    assert reader.get([entry]) == [
        Recollection(entry, "the deploy key rotates on Mondays", {"team": "ops", "tags": ["k"]})
    ]
    best = reader.recall("the deploy key rotates on Mondays", k=1, filter={"team": "ops"})[0]
    assert (best.id, best.score) == (entry, pytest.approx(1.0, abs=1e-5))
    reader.remember("replaced", {"team": "dev"}, id=entry)
    assert writer.get([entry])[0].metadata == {"team": "dev"}
    reader.forget([entry])
    assert writer.count() == 0


def test_namespaces_on_the_server_are_isolated(
    server: ChromaServer, namespace: str, emb: Embeddings
) -> None:
    mem = _memory(server, namespace, emb)
    other = mem.namespace(f"{namespace}-other")
    mem.remember_many(["a", "b", "c"], ids=["1", "2", "3"])
    other.remember("z", id="1")
    assert (mem.count(), other.count()) == (3, 1)
    assert other.get(["1"])[0].text == "z"
    mem.clear()
    assert (mem.count(), other.count()) == (0, 1)


async def test_async_twins_over_http(server: ChromaServer, namespace: str, emb: Embeddings) -> None:
    mem = _memory(server, namespace, emb)
    ids = await mem.aremember_many([f"note {i}" for i in range(5)], [{"i": i} for i in range(5)])
    assert await mem.acount() == 5
    got = await mem.arecall("note 3", k=1)
    assert got[0].id == ids[3]
    await mem.aforget(where={"i": {"$gte": 2}})
    assert [r.id for r in await mem.aget(ids)] == ids[:2]


def test_memory_outlives_the_server_process(tmp_path: Path, emb: Embeddings) -> None:
    first = ChromaServer(tmp_path)
    try:
        entry = VectorMemory("durable", mode="server", port=first.port, embeddings=emb).remember(
            "kept across restarts", {"n": 1}
        )
    finally:
        first.stop()
    second = ChromaServer(tmp_path)
    try:
        mem = VectorMemory("durable", mode="server", port=second.port, embeddings=emb)
        assert mem.get([entry]) == [Recollection(entry, "kept across restarts", {"n": 1})]
    finally:
        second.stop()


class TestVectorMemoryServerStandard(VectorStoreIntegrationTests):
    """LangChain's standard suite over HTTP: one fresh namespace per test."""

    @pytest.fixture
    def vectorstore(self, server: ChromaServer) -> Iterator[VectorMemory]:  # type: ignore[override]
        name = f"std-{uuid.uuid4().hex}"
        store = _memory(server, name, self.get_embeddings())
        try:
            yield store
        finally:
            store.client.delete_collection(name)
