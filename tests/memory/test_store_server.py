"""VectorMemory in server mode against a real ``chroma run`` server on 127.0.0.1.

The server is chromadb's own CLI, started as a subprocess on a free port over a temporary
directory; two `VectorMemory` objects (two HTTP clients) show that memory is shared. Skipped
only when the ``chroma`` executable is missing.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_tests.integration_tests.vectorstores import VectorStoreIntegrationTests

from agency.memory.store import Recollection, VectorMemory

_HOST = "127.0.0.1"
_STARTUP_DEADLINE_S = 60.0
_POLL_INTERVAL_S = 0.05
_STOP_TIMEOUT_S = 15.0
_EMBEDDING_SIZE = 16

_CHROMA = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
pytestmark = pytest.mark.skipif(
    _CHROMA is None, reason="the `chroma` executable (chromadb's CLI) is not installed"
)


@dataclass
class _Server:
    process: subprocess.Popen[bytes]
    port: int

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((_HOST, 0))
        return int(probe.getsockname()[1])


def _start(path: Path) -> _Server:
    assert _CHROMA is not None
    port = _free_port()
    process = subprocess.Popen(
        [_CHROMA, "run", "--path", str(path), "--host", _HOST, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = _Server(process, port)
    deadline = time.monotonic() + _STARTUP_DEADLINE_S
    # Waiting for readiness, not timing anything: poll the heartbeat until it answers.
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chroma run exited with {process.returncode}")
        try:
            if httpx.get(f"http://{_HOST}:{port}/api/v2/heartbeat", timeout=1).is_success:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(_POLL_INTERVAL_S)
    server.stop()
    raise RuntimeError(f"chroma run did not answer within {_STARTUP_DEADLINE_S} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Server]:
    running = _start(tmp_path_factory.mktemp("chroma-server"))
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


def _memory(server: _Server, namespace: str, emb: Embeddings) -> VectorMemory:
    return VectorMemory(namespace, mode="server", host=_HOST, port=server.port, embeddings=emb)


def test_two_clients_share_one_memory(server: _Server, namespace: str, emb: Embeddings) -> None:
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
    server: _Server, namespace: str, emb: Embeddings
) -> None:
    mem = _memory(server, namespace, emb)
    other = mem.namespace(f"{namespace}-other")
    mem.remember_many(["a", "b", "c"], ids=["1", "2", "3"])
    other.remember("z", id="1")
    assert (mem.count(), other.count()) == (3, 1)
    assert other.get(["1"])[0].text == "z"
    mem.clear()
    assert (mem.count(), other.count()) == (0, 1)


async def test_async_twins_over_http(server: _Server, namespace: str, emb: Embeddings) -> None:
    mem = _memory(server, namespace, emb)
    ids = await mem.aremember_many([f"note {i}" for i in range(5)], [{"i": i} for i in range(5)])
    assert await mem.acount() == 5
    got = await mem.arecall("note 3", k=1)
    assert got[0].id == ids[3]
    await mem.aforget(where={"i": {"$gte": 2}})
    assert [r.id for r in await mem.aget(ids)] == ids[:2]


def test_memory_outlives_the_server_process(tmp_path: Path, emb: Embeddings) -> None:
    first = _start(tmp_path)
    try:
        entry = VectorMemory("durable", mode="server", port=first.port, embeddings=emb).remember(
            "kept across restarts", {"n": 1}
        )
    finally:
        first.stop()
    second = _start(tmp_path)
    try:
        mem = VectorMemory("durable", mode="server", port=second.port, embeddings=emb)
        assert mem.get([entry]) == [Recollection(entry, "kept across restarts", {"n": 1})]
    finally:
        second.stop()


class TestVectorMemoryServerStandard(VectorStoreIntegrationTests):
    """LangChain's standard suite over HTTP: one fresh namespace per test."""

    @pytest.fixture
    def vectorstore(self, server: _Server) -> Iterator[VectorMemory]:  # type: ignore[override]
        name = f"std-{uuid.uuid4().hex}"
        store = _memory(server, name, self.get_embeddings())
        try:
            yield store
        finally:
            store.client.delete_collection(name)
