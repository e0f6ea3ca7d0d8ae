"""VectorMemory in-process: recall order and scores, filters, forgetting, upserts, metadata,
namespaces, the three modes' wiring, persistence (reopen and kill -9), threads and asyncio.

Most tests use `_BagOfWords` embeddings (one axis per known word) so cosine scores are exact
numbers worked out by hand; one test runs the default wordllama embeddings for real.
"""

from __future__ import annotations

import asyncio
import gc
import math
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

import agency.memory._chroma as chroma
import agency.memory.store as store
from agency.errors import ConnectionFailed
from agency.memory.store import JSON_KEYS_FIELD, Recollection, VectorMemory

_VOCABULARY = ("apple", "banana", "cherry", "date", "elder", "fig")


class _BagOfWords(Embeddings):
    """Counts of each vocabulary word: cosine scores are easy to compute by hand."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def _vector(self, text: str) -> list[float]:
        words = text.lower().split()
        vector = [float(words.count(word)) for word in _VOCABULARY]
        # An all-zero vector has no direction; give unknown texts a tiny constant one.
        return vector if any(vector) else [1e-3] * len(_VOCABULARY)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            self.calls += 1
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        with self._lock:
            self.calls += 1
        return self._vector(text)


@pytest.fixture
def emb() -> _BagOfWords:
    return _BagOfWords()


@pytest.fixture
def mem(emb: _BagOfWords) -> VectorMemory:
    return VectorMemory.ephemeral("fruit", embeddings=emb)


def _ids(recollections: list[Recollection]) -> list[str]:
    return [r.id for r in recollections]


# -- recall -----------------------------------------------------------------------------------


def test_recall_orders_best_first_with_cosine_scores(mem: VectorMemory) -> None:
    mem.remember("apple", id="a")
    mem.remember("apple banana", id="ab")
    mem.remember("cherry", id="c")
    got = mem.recall("apple", k=3)
    assert _ids(got) == ["a", "ab", "c"]
    assert [r.score for r in got] == pytest.approx([1.0, 1 / math.sqrt(2), 0.0], abs=1e-5)
    assert got[1] == Recollection("ab", "apple banana", {}, got[1].score)


def test_recall_k_limits_and_empty_memory(mem: VectorMemory) -> None:
    assert mem.recall("apple") == []
    mem.remember_many(["apple", "banana", "cherry", "date", "elder"])
    assert len(mem.recall("apple")) == store.DEFAULT_K
    assert len(mem.recall("apple", k=1)) == 1
    assert len(mem.recall("apple", k=50)) == 5
    with pytest.raises(ValueError, match="k must be at least 1"):
        mem.recall("apple", k=0)
    with pytest.raises(ValueError, match="query text or an embedding"):
        mem.recall()


def test_explicit_embeddings_skip_the_model(mem: VectorMemory, emb: _BagOfWords) -> None:
    mem.remember("looks like cherry", embedding=[0, 0, 1, 0, 0, 0], id="x")
    mem.remember_many(["one", "two"], ids=["p", "q"], embeddings=[[1, 0, 0, 0, 0, 0]] * 2)
    got = mem.recall(embedding=[0, 0, 1, 0, 0, 0], k=1)
    assert emb.calls == 0
    assert got[0].id == "x"
    assert got[0].score == pytest.approx(1.0, abs=1e-5)
    # The stored vector is the one given, not the text's: "looks like cherry" embeds to
    # the cherry axis anyway, so query with the apple axis to tell them apart.
    assert set(_ids(mem.recall(embedding=[1, 0, 0, 0, 0, 0], k=2))) == {"p", "q"}


# -- filters ----------------------------------------------------------------------------------


@pytest.fixture
def tagged(mem: VectorMemory) -> VectorMemory:
    mem.remember("apple", {"team": "ops", "n": 1}, id="1")
    mem.remember("apple banana", {"team": "ops", "n": 2}, id="2")
    mem.remember("apple cherry", {"team": "dev", "n": 3}, id="3")
    return mem


def test_filter_single_key(tagged: VectorMemory) -> None:
    assert _ids(tagged.recall("apple", k=10, filter={"team": "dev"})) == ["3"]


def test_filter_plain_multi_key_means_all(tagged: VectorMemory) -> None:
    assert _ids(tagged.recall("apple", k=10, filter={"team": "ops", "n": 2})) == ["2"]


def test_filter_operators_pass_through(tagged: VectorMemory) -> None:
    got = tagged.recall("apple", k=10, filter={"n": {"$gte": 2}})
    assert _ids(got) == ["2", "3"]
    assert _ids(tagged.recall("apple", k=10, filter={"$or": [{"n": 1}, {"n": 3}]})) == ["1", "3"]


def test_empty_filter_is_no_filter(tagged: VectorMemory) -> None:
    assert len(tagged.recall("apple", k=10, filter={})) == 3


def test_json_encoded_values_are_not_filterable(mem: VectorMemory) -> None:
    mem.remember("apple", {"tags": ["x"]}, id="1")
    assert mem.recall("apple", filter={"tags": "x"}) == []


# -- forget, clear, upsert ----------------------------------------------------------------------


def test_forget_by_ids_ignores_unknown(tagged: VectorMemory) -> None:
    tagged.forget(["1", "missing"])
    assert tagged.count() == 2
    assert _ids(tagged.get(["1", "2", "3"])) == ["2", "3"]
    tagged.forget([])
    assert tagged.count() == 2


def test_forget_by_where_and_by_both(tagged: VectorMemory) -> None:
    tagged.forget(["1", "3"], where={"team": "ops"})  # only "1" matches both
    assert _ids(tagged.get(["1", "2", "3"])) == ["2", "3"]
    tagged.forget(where={"team": "dev"})
    assert _ids(tagged.get(["1", "2", "3"])) == ["2"]


def test_forget_needs_something(tagged: VectorMemory) -> None:
    with pytest.raises(ValueError, match="clear"):
        tagged.forget()
    assert tagged.count() == 3


def test_clear_empties_only_this_namespace(tagged: VectorMemory) -> None:
    other = tagged.namespace("other")
    other.remember("fig", id="f")
    tagged.clear()
    assert tagged.count() == 0
    assert tagged.recall("apple") == []
    assert other.count() == 1
    tagged.remember("apple", id="again")  # the collection is still usable
    assert tagged.count() == 1


def test_remember_replaces_an_entry_whole(mem: VectorMemory) -> None:
    mem.remember("apple", {"a": 1, "b": [1, 2], "c": "keep?"}, id="x")
    mem.remember("cherry", {"a": 2}, id="x")
    assert mem.count() == 1
    assert mem.get(["x"]) == [Recollection("x", "cherry", {"a": 2})]
    assert mem.collection.get(ids=["x"])["metadatas"] == [{"a": 2}]  # the JSON marker went too
    assert mem.recall("cherry", k=1)[0].score == pytest.approx(1.0, abs=1e-5)
    mem.remember("date", id="x")  # no metadata at all: every old key goes
    assert mem.get(["x"])[0].metadata == {}


def test_repeated_id_in_one_batch_keeps_the_last(mem: VectorMemory) -> None:
    ids = mem.remember_many(["apple", "banana", "cherry"], ids=["x", "y", "x"])
    assert ids == ["x", "y", "x"]
    assert mem.count() == 2
    assert mem.get(["x"])[0].text == "cherry"


def test_generated_ids_are_unique_strings(mem: VectorMemory) -> None:
    ids = mem.remember_many(["apple"] * 5, ids=[None, "given", None, None, None])
    assert ids[1] == "given"
    assert len(set(ids)) == 5
    assert all(isinstance(i, str) and i for i in ids)


def test_get_keeps_the_order_asked_and_skips_missing(tagged: VectorMemory) -> None:
    got = tagged.get(["3", "nope", "1", "3"])
    assert _ids(got) == ["3", "1"]
    assert all(r.score == 1.0 for r in got)
    assert tagged.get([]) == []


def test_batches_larger_than_chromadb_allows(
    mem: VectorMemory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mem._backend, "_max_batch", 3)
    ids = mem.remember_many([f"apple {i}" for i in range(10)], ids=[str(i) for i in range(10)])
    assert mem.count() == 10
    assert len(mem.get(ids)) == 10
    mem.forget(ids[:7])
    assert mem.count() == 3
    mem.clear()
    assert mem.count() == 0


def test_argument_errors(mem: VectorMemory) -> None:
    with pytest.raises(ValueError, match="2 texts but 1 metadatas"):
        mem.remember_many(["a", "b"], [{}])
    with pytest.raises(ValueError, match="1 ids"):
        mem.remember_many(["a", "b"], ids=["x"])
    with pytest.raises(TypeError, match="texts must be str"):
        mem.remember_many([b"bytes"])  # type: ignore[list-item]
    assert mem.remember_many([]) == []
    assert mem.count() == 0


# -- metadata ---------------------------------------------------------------------------------


def test_metadata_round_trips(mem: VectorMemory) -> None:
    metadata: dict[str, Any] = {
        "s": "text é ✓",
        "i": -7,
        "f": 2.5,
        "b": True,
        "none": None,
        "list": [1, "two", None],
        "dict": {"nested": {"deep": [1.5]}},
        "big": 2**70,
        "prefix": '["looks like json"]',
    }
    mem.remember("apple", metadata, id="x")
    assert mem.get(["x"])[0].metadata == metadata
    assert mem.recall("apple", k=1)[0].metadata == metadata
    assert mem.similarity_search("apple", k=1)[0].metadata == metadata


def test_non_finite_floats_round_trip(mem: VectorMemory) -> None:
    mem.remember("apple", {"nan": math.nan, "inf": math.inf}, id="x")
    got = mem.get(["x"])[0].metadata
    assert math.isnan(got["nan"])
    assert got["inf"] == math.inf


def test_empty_metadata(mem: VectorMemory) -> None:
    mem.remember("apple", {}, id="x")
    mem.remember_many(["banana"], [{}], ids=["y"])
    assert [r.metadata for r in mem.get(["x", "y"])] == [{}, {}]


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        ({"when": object()}, "'when'"),
        ({"when": {1, 2}}, "'when'"),
        ({JSON_KEYS_FIELD: "x"}, "reserved"),
        ({"chroma:document": "x"}, "reserved"),
        ({1: "x"}, "non-empty strings"),
        ({"": "x"}, "non-empty strings"),
    ],
)
def test_bad_metadata_names_the_key(
    mem: VectorMemory, metadata: dict[Any, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        mem.remember("apple", metadata)
    assert mem.count() == 0


# -- namespaces -------------------------------------------------------------------------------


def test_namespaces_are_isolated_and_share_the_client(mem: VectorMemory) -> None:
    other = mem.namespace("vegetables")
    mem.remember("apple", id="1")
    other.remember("apple", id="1", metadata={"kind": "veg"})
    assert other.client is mem.client
    assert other.embeddings is mem.embeddings
    assert (mem.name, other.name) == ("fruit", "vegetables")
    assert mem.get(["1"])[0].metadata == {}
    assert other.get(["1"])[0].metadata == {"kind": "veg"}
    other.forget(["1"])
    assert (mem.count(), other.count()) == (1, 0)
    assert mem.namespace("vegetables").count() == 0


@pytest.mark.parametrize(
    "name", ["ab", "_abc", "abc-", "a..b", "has space", "192.168.0.1", "ünï", "x" * 513, ""]
)
def test_bad_namespace_names_say_the_rule_and_a_fix(mem: VectorMemory, name: str) -> None:
    with pytest.raises(ValueError, match="3-512 characters") as caught:
        mem.namespace(name)
    suggestion = str(caught.value).rsplit("such as ", 1)[1].split("'")[1]
    chroma._check_namespace(suggestion)  # the suggested fix is itself valid


@given(st.text(max_size=600))
def test_suggested_names_are_always_valid(name: str) -> None:
    chroma._check_namespace(chroma._suggest_name(name))


def test_good_namespace_names() -> None:
    for name in ("abc", "a.b", "Notes_2024-01", "x" * 512):
        chroma._check_namespace(name)


# -- modes and clients --------------------------------------------------------------------------


def test_ephemeral_memories_are_isolated(emb: _BagOfWords) -> None:
    first = VectorMemory.ephemeral("same", embeddings=emb)
    second = VectorMemory.ephemeral("same", embeddings=emb)
    first.remember("apple")
    assert (first.count(), second.count()) == (1, 0)
    assert (first.mode, first.path) == ("ephemeral", None)


def test_ephemeral_storage_is_dropped_with_the_last_user(emb: _BagOfWords) -> None:
    first = VectorMemory.ephemeral("gone", embeddings=emb)
    sibling = first.namespace("sibling")
    sibling.remember("apple")
    database = first.client.database
    del first
    gc.collect()
    assert sibling.count() == 1  # a namespace keeps the shared storage alive
    del sibling
    gc.collect()
    with pytest.raises(Exception, match="not found"):
        chroma._ephemeral_admin().get_database(database)


def test_persistent_default_path_is_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emb: _BagOfWords
) -> None:
    monkeypatch.chdir(tmp_path)
    mem = VectorMemory("notes", embeddings=emb)
    mem.remember("apple")
    assert mem.mode == "persistent"
    assert mem.path == (tmp_path / ".agency" / "memory").resolve()
    assert (mem.path / "chroma.sqlite3").is_file()


def test_one_client_per_directory(tmp_path: Path, emb: _BagOfWords) -> None:
    first = VectorMemory("one", path=tmp_path, embeddings=emb)
    second = VectorMemory("two", path=str(tmp_path / "." / ""), embeddings=emb)
    assert first.client is second.client
    first.remember("apple", id="x")
    assert VectorMemory("one", path=tmp_path, embeddings=emb).get(["x"])[0].text == "apple"


def test_reopen_after_the_client_is_released(tmp_path: Path, emb: _BagOfWords) -> None:
    mem = VectorMemory("notes", path=tmp_path, embeddings=emb)
    mem.remember("apple banana", {"n": 1}, id="x")
    mem.namespace("other").remember("cherry", id="y")
    key = str(tmp_path.resolve())
    del mem
    gc.collect()
    assert key not in chroma._persistent_backends  # closed, so the next open reads the disk
    reopened = VectorMemory("notes", path=tmp_path, embeddings=emb)
    assert reopened.get(["x"]) == [Recollection("x", "apple banana", {"n": 1})]
    assert reopened.recall("apple banana", k=1)[0].score == pytest.approx(1.0, abs=1e-5)
    assert reopened.namespace("other").count() == 1


_KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, sys.argv[2])
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from agency.memory.store import VectorMemory

    mem = VectorMemory("durable", path=sys.argv[1], embeddings=DeterministicFakeEmbedding(size=8))
    ids = mem.remember_many([f"entry {i}" for i in range(20)], [{"i": i} for i in range(20)])
    ids.append(mem.remember("the last one", {"i": 20}))
    print(" ".join(ids), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_writes_survive_kill_9(tmp_path: Path) -> None:
    root = str(Path(store.__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path), root],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    ids = done.stdout.split()
    assert len(ids) == 21
    embeddings = DeterministicFakeEmbedding(size=8)
    mem = VectorMemory("durable", path=tmp_path, embeddings=embeddings)
    assert mem.count() == 21
    got = mem.get(ids)
    assert [r.text for r in got] == [f"entry {i}" for i in range(20)] + ["the last one"]
    assert [r.metadata["i"] for r in got] == list(range(21))
    best = mem.recall("the last one", k=1)[0]  # the vector index came back too
    assert (best.id, best.score) == (ids[-1], pytest.approx(1.0, abs=1e-5))


def test_server_mode_without_a_server_says_how_to_start_one(emb: _BagOfWords) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionFailed, match="chroma run"):
        VectorMemory(mode="server", port=port, embeddings=emb)


def test_a_given_client_is_used_as_is(emb: _BagOfWords) -> None:
    import chromadb

    client = chromadb.EphemeralClient(settings=chroma._settings())
    mem = VectorMemory("given-client", embeddings=emb, client=client)
    mem.remember("apple", id="x")
    assert mem.client is client
    assert client.get_collection("given-client").get(ids=["x"])["documents"] == ["apple"]
    mem.clear()


def test_bad_constructor_arguments(emb: _BagOfWords, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        VectorMemory(mode="cloud", embeddings=emb)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="path applies to mode='persistent' only"):
        VectorMemory(mode="ephemeral", path=tmp_path, embeddings=emb)


def test_default_embeddings_are_local_wordllama() -> None:
    mem = VectorMemory.ephemeral("semantic")
    assert mem.embeddings.model == "wordllama"  # type: ignore[attr-defined]
    mem.remember("The deploy key rotates every Monday morning", id="key")
    mem.remember("Lunch is served at noon in the cafeteria", id="lunch")
    mem.remember("The cat sleeps on the sofa all afternoon", id="cat")
    got = mem.recall("when does the deploy key rotate?", k=3)
    assert got[0].id == "key"
    assert got[0].score > got[1].score


# -- threads and asyncio ------------------------------------------------------------------------


def test_threads_write_and_read_concurrently(mem: VectorMemory) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        try:
            start.wait()
            for i in range(15):
                mem.remember(f"apple {worker} {i}", {"worker": worker}, id=f"{worker}-{i}")
                assert len(mem.recall("apple", k=3)) >= 1
                mem.namespace("shared-ns").remember("fig", id=f"{worker}-{i}")
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert mem.count() == 120
    assert mem.namespace("shared-ns").count() == 120
    assert len(mem.get([f"{w}-{i}" for w in range(8) for i in range(15)])) == 120


def test_concurrent_replacements_never_merge_metadata(mem: VectorMemory) -> None:
    # Threads replace the same entries with disjoint keys. chromadb alone merges metadata on
    # upsert, so a write landing between another's read and write would leave two keys; each
    # entry must end up with exactly one writer's metadata. (Without the per-namespace write
    # lock this fails often, not always: it is a race.)
    contested = [f"c{i}" for i in range(25)]
    keys = ("north", "south", "east", "west")
    start = threading.Barrier(len(keys))

    def write(key: str, order: list[str]) -> None:
        start.wait()
        for round_ in range(2):
            for entry_id in order:
                mem.remember("apple", {key: round_}, id=entry_id)

    threads = [
        threading.Thread(target=write, args=(key, contested[:: 1 if n % 2 else -1]))
        for n, key in enumerate(keys)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(len(r.metadata) == 1 for r in mem.get(contested))


async def test_asyncio_tasks(mem: VectorMemory) -> None:
    ids = await asyncio.gather(
        *(mem.aremember(f"apple {i}", {"i": i}, id=f"t{i}") for i in range(30))
    )
    recalled = await asyncio.gather(*(mem.arecall("apple", k=2) for _ in range(10)))
    assert sorted(ids) == sorted(f"t{i}" for i in range(30))
    assert all(len(r) == 2 for r in recalled)
    assert await mem.acount() == 30
    many = await mem.aremember_many(["banana", "cherry"], ids=["b", "c"])
    assert many == ["b", "c"]
    assert [r.text for r in await mem.aget(["c", "b"])] == ["cherry", "banana"]
    await mem.aforget(where={"i": {"$lt": 15}})
    assert await mem.acount() == 17
    await mem.aclear()
    assert await mem.acount() == 0


# -- LangChain surface ------------------------------------------------------------------------


def test_scores_distance_and_relevance(mem: VectorMemory) -> None:
    mem.remember("apple", id="a")
    mem.remember("apple banana", id="ab")
    mem.remember("cherry", id="c")
    scored = mem.similarity_search_with_score("apple", k=3)
    assert [d.id for d, _ in scored] == ["a", "ab", "c"]
    assert [s for _, s in scored] == pytest.approx([0.0, 1 - 1 / math.sqrt(2), 1.0], abs=1e-5)
    relevance = mem.similarity_search_with_relevance_scores("apple", k=3)
    assert [s for _, s in relevance] == pytest.approx([1.0, 1 / math.sqrt(2), 0.0], abs=1e-5)
    by_vector = mem.similarity_search_by_vector([0, 0, 1, 0, 0, 0], k=1)
    assert by_vector == [Document(id="c", page_content="cherry", metadata={})]


def test_relevance_is_clamped_for_opposite_vectors(mem: VectorMemory) -> None:
    mem.remember("opposite", embedding=[-1, 0, 0, 0, 0, 0], id="neg")
    [(_, relevance)] = mem.similarity_search_with_relevance_scores("apple", k=1)
    assert relevance == 0.0
    assert mem.recall("apple", k=1)[0].score == pytest.approx(-1.0, abs=1e-5)


def test_add_documents_honours_document_ids(mem: VectorMemory) -> None:
    docs = [Document(page_content="apple", id="given"), Document(page_content="banana")]
    ids = mem.add_documents(docs)
    assert ids[0] == "given"
    assert mem.get_by_ids(ids) == [
        Document(id="given", page_content="apple"),
        Document(id=ids[1], page_content="banana"),
    ]
    assert docs[1].id is None


def test_delete_variants(tagged: VectorMemory) -> None:
    assert tagged.delete(["1"]) is True
    assert tagged.delete(where={"team": "dev"}) is True
    assert _ids(tagged.get(["1", "2", "3"])) == ["2"]
    tagged.delete()  # LangChain: no ids means everything
    assert tagged.count() == 0


def test_from_texts_and_from_documents(emb: _BagOfWords) -> None:
    built = VectorMemory.from_texts(
        ["apple", "cherry"], emb, [{"n": 1}, {"n": 2}], ids=["a", "c"], mode="ephemeral"
    )
    assert built.get(["c"]) == [Recollection("c", "cherry", {"n": 2})]
    from_docs = VectorMemory.from_documents(
        [Document(page_content="fig", id="f")], emb, mode="ephemeral", namespace="docs"
    )
    assert (from_docs.name, _ids(from_docs.get(["f"]))) == ("docs", ["f"])


def test_as_retriever(tagged: VectorMemory) -> None:
    docs = tagged.as_retriever(search_kwargs={"k": 1, "filter": {"team": "dev"}}).invoke("apple")
    assert [d.id for d in docs] == ["3"]


def test_recollection_to_document_and_repr(mem: VectorMemory) -> None:
    entry = Recollection("x", "apple", {"n": 1}, 0.5)
    assert entry.to_document() == Document(id="x", page_content="apple", metadata={"n": 1})
    assert "fruit" in repr(mem) and "ephemeral" in repr(mem)
