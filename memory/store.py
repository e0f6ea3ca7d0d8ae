"""Vector memory over chromadb: one API in three modes, and a LangChain `VectorStore`.

    >>> mem = VectorMemory("notes")                       # persistent under .agency/memory
    >>> mem.remember("The deploy key rotates on Mondays", {"team": "ops"})
    >>> [r.text for r in mem.recall("when does the key rotate?", k=3)]
    >>> scratch = VectorMemory.ephemeral()                # in memory, gone with the object
    >>> shared = VectorMemory("notes", mode="server", host="10.0.0.5", port=8000)

Contract:

- Modes. ``"persistent"`` (default): ``chromadb.PersistentClient`` under ``path`` (default
  ``.agency/memory``, resolved against the working directory); one client per directory per
  process, closed when no `VectorMemory` uses it any more. ``"ephemeral"``: in memory, each
  object isolated (chromadb has one in-memory system per process, so each ephemeral memory
  gets its own database there, dropped with its last user). ``"server"``:
  ``chromadb.HttpClient(host, port)`` to a ``chroma run`` server, to share memory across
  processes and machines. Or pass any chromadb ``client=``. Telemetry is off.
- A namespace is a cosine-space collection; ``namespace(name)`` shares client and embeddings.
  A name breaking chromadb's rules raises `ValueError` stating the rule and a valid name.
- Embeddings: any LangChain `Embeddings`, default ``agency.embeddings("local:wordllama")``.
  chromadb's embedding function is never used (it downloads a model); vectors are passed.
- ``remember`` upserts and replaces an existing id whole (chromadb alone would merge the
  old metadata in, so keys the new metadata lacks are deleted in the same write).
- Scores: `Recollection.score` is the cosine similarity, ``1 - distance`` (1 = same
  direction). ``similarity_search_with_score`` returns the cosine *distance* (lower is
  closer), as LangChain's base class documents; relevance scores are ``1 - distance``
  clamped to [0, 1].
- Metadata: str, 64-bit int, finite float and bool are stored as is and can be filtered on.
  Other JSON-serializable values (None, lists, dicts, NaN, big ints) are stored JSON-encoded
  and decoded on read: they round-trip but ``filter`` cannot match them. Anything else, a
  non-string key or a reserved key (``agency:json``, ``chroma:*``) raises `ValueError`
  naming the key. Empty metadata is fine.
- Filters are chromadb ``where`` clauses; a plain multi-key dict means all of its keys.
- Durable: a write returns once chromadb has committed it to SQLite (its write-ahead log is
  a SQLite table; the vector index is rebuilt from it on open): it survives kill -9.
- Safe under threads and asyncio tasks: chromadb serializes its calls, ``remember``'s
  read-then-write holds a per-namespace lock, async twins run in a worker thread.
- ``import agency.memory.store`` leaves chromadb (about 1 s) to the first client.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from agency.memory._chroma import (
    _INCLUDE_GET,
    _INCLUDE_QUERY,
    _MODES,
    JSON_KEYS_FIELD,
    _Backend,
    _check_namespace,
    _clamped_cosine_relevance,
    _decode_metadata,
    _encode_metadata,
    _ephemeral_backend,
    _persistent_backend,
    _rows,
    _server_backend,
    _vector,
    _where,
)

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_PATH",
    "JSON_KEYS_FIELD",
    "Mode",
    "Recollection",
    "VectorMemory",
]

Mode = Literal["persistent", "ephemeral", "server"]

DEFAULT_NAMESPACE = "default"
DEFAULT_PATH = ".agency/memory"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_K = 4


@dataclass(frozen=True)
class Recollection:
    """One remembered entry, as `VectorMemory.recall` and `VectorMemory.get` return it."""

    id: str
    """The entry's id (given to ``remember`` or generated there)."""
    text: str
    """The remembered text."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Its metadata, decoded (JSON-encoded values come back as they went in)."""
    score: float = 1.0
    """Cosine similarity to the query (1 = same direction); 1.0 from ``get``."""

    def to_document(self) -> Document:
        """This entry as a LangChain `Document` (``id``, ``page_content``, ``metadata``)."""
        return Document(id=self.id, page_content=self.text, metadata=dict(self.metadata))


# -- clients -------------------------------------------------------------------------------


class VectorMemory(VectorStore):
    """Vector memory in one chromadb collection (a namespace); see the module docstring."""

    def __init__(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        embeddings: Embeddings | None = None,
        path: str | os.PathLike[str] | None = None,
        mode: Mode = "persistent",
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        client: Any | None = None,
    ) -> None:
        _check_namespace(namespace)
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}")
        if path is not None and mode != "persistent" and client is None:
            raise ValueError(f"path applies to mode='persistent' only, not {mode!r}")
        resolved: Path | None = None
        if client is not None:
            backend = _Backend(client, "given client")
        elif mode == "persistent":
            resolved = Path(path if path is not None else DEFAULT_PATH).expanduser().resolve()
            backend = _persistent_backend(resolved)
        elif mode == "ephemeral":
            backend = _ephemeral_backend()
        else:
            backend = _server_backend(host, port)
        self._setup(backend, namespace, embeddings, mode, resolved)

    def _setup(
        self,
        backend: _Backend,
        namespace: str,
        embeddings: Embeddings | None,
        mode: Mode,
        path: Path | None,
    ) -> None:
        if embeddings is None:
            from agency._factory import embeddings as make_embeddings

            embeddings = make_embeddings("local:wordllama")
        self._backend = backend
        self._name = namespace
        self._embeddings = embeddings
        self._mode: Mode = mode
        self._path = path
        self._collection = backend.collection(namespace)
        self._write_lock = backend.write_lock(namespace)

    @classmethod
    def ephemeral(
        cls, namespace: str = DEFAULT_NAMESPACE, *, embeddings: Embeddings | None = None
    ) -> Self:
        """An in-memory `VectorMemory`, isolated from every other one."""
        return cls(namespace, embeddings=embeddings, mode="ephemeral")

    def namespace(self, name: str) -> Self:
        """Another namespace (collection) on the same client, with the same embeddings."""
        _check_namespace(name)
        other = type(self).__new__(type(self))
        other._setup(self._backend, name, self._embeddings, self._mode, self._path)
        return other

    # -- properties ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """This namespace's name (its chromadb collection)."""
        return self._name

    @property
    def mode(self) -> Mode:
        """``"persistent"``, ``"ephemeral"`` or ``"server"``."""
        return self._mode

    @property
    def path(self) -> Path | None:
        """The persistent directory (absolute), or None in the other modes."""
        return self._path

    @property
    def client(self) -> Any:
        """The underlying chromadb client."""
        return self._backend.client

    @property
    def collection(self) -> Any:
        """The underlying chromadb collection (its embedding function is None)."""
        return self._collection

    @property
    def embeddings(self) -> Embeddings:
        """The embeddings used for texts and queries."""
        return self._embeddings

    def __repr__(self) -> str:
        return f"VectorMemory({self._name!r}, mode={self._mode!r}, {self._backend.description})"

    # -- the memory API -----------------------------------------------------------------------
    def remember(
        self,
        text: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        embedding: Sequence[float] | None = None,
    ) -> str:
        """Store ``text`` (upsert: an existing ``id`` is replaced whole); returns its id."""
        return self.remember_many(
            [text],
            [metadata] if metadata is not None else None,
            ids=[id],
            embeddings=[embedding] if embedding is not None else None,
        )[0]

    def remember_many(
        self,
        texts: Iterable[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        ids: Sequence[str | None] | None = None,
        embeddings: Sequence[Sequence[float]] | None = None,
    ) -> list[str]:
        """Store several texts in batches; ids default to fresh UUIDs; returns the ids.

        With a repeated id the last occurrence wins, as if stored one after the other.
        """
        texts = list(texts)
        for label, given in (("metadatas", metadatas), ("ids", ids), ("embeddings", embeddings)):
            if given is not None and len(given) != len(texts):
                raise ValueError(f"got {len(texts)} texts but {len(given)} {label}")
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"texts must be str, got {type(text).__name__}")
        given_ids = list(ids) if ids is not None else [None] * len(texts)
        out_ids = [str(i) if i is not None else uuid.uuid4().hex for i in given_ids]
        if not texts:
            return []
        encoded = [_encode_metadata(m) for m in (metadatas or [None] * len(texts))]
        vectors = (
            [_vector(e) for e in embeddings]
            if embeddings is not None
            else [_vector(e) for e in self._embeddings.embed_documents(texts)]
        )
        last = {entry_id: index for index, entry_id in enumerate(out_ids)}
        keep = sorted(last.values())
        maybe_existing = {out_ids[i] for i, given in enumerate(given_ids) if given is not None}
        step = self._backend.max_batch()
        for start in range(0, len(keep), step):
            chunk = keep[start : start + step]
            self._upsert(
                [out_ids[i] for i in chunk],
                [texts[i] for i in chunk],
                [encoded[i] for i in chunk],
                [vectors[i] for i in chunk],
                maybe_existing,
            )
        return out_ids

    def _upsert(
        self,
        ids: list[str],
        texts: list[str],
        metadatas: list[dict[str, Any]],
        vectors: list[list[float]],
        maybe_existing: set[str],
    ) -> None:
        check = [i for i in ids if i in maybe_existing]
        # Held across the read and the write: chromadb merges metadata on upsert, so keys the
        # old entry had and the new one lacks are deleted (set to None) in the same write.
        with self._write_lock:
            if check:
                old = self._collection.get(ids=check, include=["metadatas"])
                previous = {
                    entry_id: meta or {}
                    for entry_id, meta in zip(old["ids"], old["metadatas"] or [], strict=False)
                }
                for entry_id, meta in zip(ids, metadatas, strict=True):
                    for key in previous.get(entry_id, {}):
                        meta.setdefault(key, None)
            self._collection.upsert(
                ids=ids,
                documents=texts,
                embeddings=vectors,
                # chromadb rejects an empty dict; None means "no metadata".
                metadatas=[meta or None for meta in metadatas],
            )

    def recall(
        self,
        query: str | None = None,
        k: int = DEFAULT_K,
        filter: Mapping[str, Any] | None = None,
        *,
        embedding: Sequence[float] | None = None,
    ) -> list[Recollection]:
        """The ``k`` entries closest to ``query`` (or ``embedding``), best first."""
        if embedding is None:
            if query is None:
                raise ValueError("recall needs a query text or an embedding")
            embedding = self._embeddings.embed_query(query)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        result = self._collection.query(
            query_embeddings=[_vector(embedding)],
            n_results=k,
            where=_where(filter),
            include=_INCLUDE_QUERY,
        )
        return [
            Recollection(entry_id, text or "", _decode_metadata(meta), 1.0 - float(distance))
            for entry_id, text, meta, distance in _rows(result, nested=True)
        ]

    def get(self, ids: Sequence[str]) -> list[Recollection]:
        """The entries with these ids, in the order asked (score 1.0); missing ids skipped."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        found: dict[str, Recollection] = {}
        step = self._backend.max_batch()
        for start in range(0, len(wanted), step):
            result = self._collection.get(ids=wanted[start : start + step], include=_INCLUDE_GET)
            for entry_id, text, meta, _ in _rows(result, nested=False):
                found[entry_id] = Recollection(entry_id, text or "", _decode_metadata(meta))
        return [found[i] for i in wanted if i in found]

    def forget(
        self, ids: Sequence[str] | None = None, *, where: Mapping[str, Any] | None = None
    ) -> None:
        """Delete by ids, by a ``where`` filter, or both (entries matching both).

        Unknown ids are ignored. To delete everything, call `clear`.
        """
        if ids is None and not where:
            raise ValueError("forget needs ids or a where filter; clear() forgets everything")
        clause = _where(where)
        if ids is None:
            self._collection.delete(where=clause)
            return
        unique = list(dict.fromkeys(ids))
        step = self._backend.max_batch()
        for start in range(0, len(unique), step):
            self._collection.delete(ids=unique[start : start + step], where=clause)

    def count(self) -> int:
        """How many entries this namespace holds."""
        return int(self._collection.count())

    def clear(self) -> None:
        """Forget every entry of this namespace (the collection itself stays)."""
        # Deleting ids rather than the collection keeps every handle on it valid.
        step = self._backend.max_batch()
        while True:
            ids = self._collection.get(limit=step, include=[])["ids"]
            if not ids:
                return
            self._collection.delete(ids=list(ids))

    # -- async twins ------------------------------------------------------------------------
    async def aremember(
        self,
        text: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        embedding: Sequence[float] | None = None,
    ) -> str:
        """Async `remember` (runs in a worker thread)."""
        return await asyncio.to_thread(self.remember, text, metadata, id=id, embedding=embedding)

    async def aremember_many(
        self,
        texts: Iterable[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        ids: Sequence[str | None] | None = None,
        embeddings: Sequence[Sequence[float]] | None = None,
    ) -> list[str]:
        """Async `remember_many`."""
        return await asyncio.to_thread(
            self.remember_many, list(texts), metadatas, ids=ids, embeddings=embeddings
        )

    async def arecall(
        self,
        query: str | None = None,
        k: int = DEFAULT_K,
        filter: Mapping[str, Any] | None = None,
        *,
        embedding: Sequence[float] | None = None,
    ) -> list[Recollection]:
        """Async `recall`."""
        return await asyncio.to_thread(self.recall, query, k, filter, embedding=embedding)

    async def aget(self, ids: Sequence[str]) -> list[Recollection]:
        """Async `get`."""
        return await asyncio.to_thread(self.get, ids)

    async def aforget(
        self, ids: Sequence[str] | None = None, *, where: Mapping[str, Any] | None = None
    ) -> None:
        """Async `forget`."""
        await asyncio.to_thread(self.forget, ids, where=where)

    async def acount(self) -> int:
        """Async `count`."""
        return await asyncio.to_thread(self.count)

    async def aclear(self) -> None:
        """Async `clear`."""
        await asyncio.to_thread(self.clear)

    # -- LangChain VectorStore ------------------------------------------------------------------
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """`remember_many` under LangChain's name (``Document.id`` is honoured upstream)."""
        return self.remember_many(texts, metadatas, ids=ids)

    def similarity_search(
        self,
        query: str,
        k: int = DEFAULT_K,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """The ``k`` documents closest to ``query``."""
        return [r.to_document() for r in self.recall(query, k, filter)]

    def similarity_search_with_score(
        self,
        query: str,
        k: int = DEFAULT_K,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """(document, cosine distance) pairs, closest first: lower is more similar."""
        return [(r.to_document(), 1.0 - r.score) for r in self.recall(query, k, filter)]

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = DEFAULT_K,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """The ``k`` documents closest to ``embedding``."""
        return [r.to_document() for r in self.recall(None, k, filter, embedding=embedding)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return _clamped_cosine_relevance

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete by ids and/or ``where=``; with neither, delete everything (LangChain's rule)."""
        where = kwargs.get("where") or kwargs.get("filter")
        if ids is None and not where:
            self.clear()
        else:
            self.forget(ids, where=where)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Documents for the ids found, in the order asked."""
        return [entry.to_document() for entry in self.get(ids)]

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> Self:
        """A `VectorMemory` (``kwargs`` go to the constructor) holding ``texts``."""
        store = cls(embeddings=embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store
