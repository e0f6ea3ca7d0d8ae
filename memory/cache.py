"""`SemanticCache`: a LangChain `BaseCache` that answers repeated and paraphrased requests.

    >>> cache = SemanticCache()                                  # persistent, .agency/cache
    >>> llm = agency.chat_model("openai:gpt-4o-mini", cache=cache)
    >>> llm.invoke("How do I reset my password?")                # asks the provider, stores
    >>> llm.invoke("how can I reset my password")                # served: "semantic" hit
    >>> with cache.bypass(no_cache=True):                        # this call asks the provider
    ...     llm.invoke("How do I reset my password?")

Contract:

- Scope. An entry's scope is the whole request that produced it except its last message: the
  ``llm_string`` (model, parameters, bound tools; an `Agency` role is among the identifying
  parameters), the system prompt, every earlier turn, the last message's fields other than its
  text, and ``scope_extra``. Scopes are hashed; entries of two scopes never answer each other.
  Chat prompts are LangChain's ``dumps(messages)``; any other prompt string is one plain text.
- Lookup. Exact path first: the hash of the scope and the normalised last text (NFKC,
  whitespace collapsed) is the entry id; no embedding call. Then the semantic path, for a last
  message that is human text (or a plain prompt) only: its embedding is compared with the
  scope's entries, and a candidate serves when its cosine similarity is at or above
  ``threshold`` *and* the ``verifier`` approves *and*, with ``confirm_with``, that chat model
  answers YES to "do these two questions ask for the same answer?". The best
  ``CANDIDATES`` candidates are tried in order. Hits carry ``response_metadata["cache"]`` =
  ``"exact"`` or ``"semantic"`` on chat messages; a hit costs nothing, so ``"cost"`` is 0.0
  and the original cost moves to ``"cached_cost"`` (and into ``stats().cost_saved``).
- Defaults: ``verifier="default"`` is `memory.verify.LearnedVerifier` for ``embedder`` and
  ``threshold=None`` its calibrated `default_threshold`; ``verifier=None`` trusts the threshold.
  ``embedder=None`` takes the calibration of the embeddings in use when they are
  ``local:wordllama`` or ``local:minilm``, else wordllama's (its verifier embeds for itself).
- Lifetime. ``ttl_s``: an entry older than that (by ``clock``, wall time by default, so it
  holds across restarts) is a miss and is deleted when met. ``max_entries``: past it, the least
  recently used entries (stored or hit in this process; else oldest stored) are evicted.
- Bypass. LangChain has no per-call cache flags: ``with cache.bypass(no_cache=..., no_store=...)``
  sets a context variable, so it covers the calls made in that context, asyncio tasks created
  inside, ``asyncio.to_thread`` and LangChain's ``batch`` executors (they copy the context);
  a raw ``threading.Thread`` started inside does not inherit it (Python's rule).
- Storage: a `VectorMemory` namespace (chromadb). In ``persistent`` and ``ephemeral`` mode this
  process is the only writer, so an in-process index answers lookups (ids in LRU order, texts,
  zlib-compressed answers, per-scope unit vectors in k-means inverted lists: about 2.3 KB per
  entry with 256-dimensional embeddings, 7 KB at peak while loading) and chromadb is the
  durable copy, read once on first use (~0.2 ms per entry). In ``server`` mode every lookup
  asks the server (other processes write too). Stored vectors carry a scope component
  (``SCOPE_DIMS`` dimensions) so that the server's unfiltered nearest-neighbour query ranks
  same-scope entries first; the scope is then checked exactly. Answers are stored with
  ``langchain_core.load.dumps`` and restored as langchain-core objects only.
- Durable: ``update`` returns after chromadb committed the entry (see `memory.store`), so in
  persistent mode it survives ``kill -9``. Safe under threads and asyncio tasks: one lock
  guards the index (held for microseconds; a re-partition of a large scope holds it longer),
  another orders writes so that chromadb and the index agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache

from agency.memory._cache_index import CANDIDATES, Entry, Index, ScopeIndex, new_entry
from agency.memory._cache_keys import (
    SCOPE_DIMS,
    Request,
    answer_payload,
    augment,
    parse,
    revive_answer,
    text_similarity,
    unit,
)

if TYPE_CHECKING:
    import numpy as np
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel
    from langchain_core.outputs import Generation

    from agency.memory.config import CacheConfig
    from agency.memory.store import Mode, Recollection, VectorMemory
    from agency.memory.verify import Verifier

__all__ = [
    "CANDIDATES",
    "DEFAULT_NAMESPACE",
    "DEFAULT_PATH",
    "SCOPE_DIMS",
    "CacheStats",
    "SemanticCache",
]

DEFAULT_PATH = ".agency/cache"
"""Where a persistent cache lives unless told otherwise."""
DEFAULT_NAMESPACE = "llm-cache"
"""The chromadb collection holding the entries."""
_LOAD_PAGE = 5000
"""Entries read per request when the index is loaded from chromadb."""
_REMOTE_K = 8
"""Nearest entries asked of a chromadb server per semantic lookup (then scope-checked)."""
_REMOTE_EVICT_SLACK = 0.1
"""In server mode, eviction trims to this fraction below ``max_entries`` (it lists all ids)."""
_SERVER_PORT = 8000

Kind = Literal["exact", "semantic"]


@dataclass(frozen=True)
class CacheStats:
    """Counters of one `SemanticCache` since it was built (a snapshot)."""

    hits_exact: int = 0
    """Lookups answered by the exact path."""
    hits_semantic: int = 0
    """Lookups answered by a similar entry."""
    misses: int = 0
    """Lookups that returned nothing (rejections and expiries included; bypasses not)."""
    rejected_by_verifier: int = 0
    """Candidates at or above the threshold that the verifier turned down."""
    rejected_by_llm: int = 0
    """Candidates the verifier approved and ``confirm_with`` turned down."""
    stores: int = 0
    """Entries written by ``update``."""
    evictions: int = 0
    """Entries removed to respect ``max_entries``."""
    expired: int = 0
    """Entries found past ``ttl_s`` and deleted."""
    cost_saved: float = 0.0
    """Sum of the original ``response_metadata["cost"]`` of the answers served."""

    @property
    def hits(self) -> int:
        """Exact and semantic hits."""
        return self.hits_exact + self.hits_semantic

    @property
    def hit_rate(self) -> float:
        """Hits per lookup (0.0 before any lookup)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


# -- the cache -------------------------------------------------------------------------------


class SemanticCache(BaseCache):
    """Exact and semantic LLM response cache over a `VectorMemory`; see the module docstring."""

    def __init__(
        self,
        memory: VectorMemory | None = None,
        *,
        mode: Mode = "persistent",
        path: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = _SERVER_PORT,
        namespace: str = DEFAULT_NAMESPACE,
        embeddings: Embeddings | None = None,
        embedder: str | None = None,
        threshold: float | None = None,
        verifier: Verifier | Literal["default"] | None = "default",
        confirm_with: BaseChatModel | None = None,
        ttl_s: float | None = None,
        max_entries: int | None = None,
        scope_extra: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``memory``: an existing namespace to use; otherwise one is opened from ``mode``,
        ``path`` (default `DEFAULT_PATH`), ``host``/``port``, ``namespace``, ``embeddings``.
        ``embedder`` names the calibration of the default verifier and threshold (see
        `memory.verify`); by default, that of the ``embeddings`` when they have one."""
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold}")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if memory is None:
            from agency.memory.store import VectorMemory

            if mode == "persistent" and path is None:
                path = DEFAULT_PATH
            memory = VectorMemory(
                namespace, embeddings=embeddings, path=path, mode=mode, host=host, port=port
            )
        self.memory = memory
        """The namespace holding the entries."""
        self._embeddings = memory.embeddings
        self._embedder = embedder or _calibration_of(self._embeddings)
        self._threshold = threshold
        self._verifier = verifier
        self._confirm_with = confirm_with
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._scope_extra = scope_extra
        self._clock = clock
        self._local = memory.mode != "server"
        self._index = Index()
        self._loaded = not self._local
        self._dim: int | None = None
        self._share_vectors = False
        self._policy_ready = False
        self._lock = threading.Lock()  # the index and the counters
        self._write_lock = threading.Lock()  # orders chromadb writes with index updates
        self._counts: dict[str, float] = dict.fromkeys(CacheStats.__dataclass_fields__, 0)
        self._bypass: contextvars.ContextVar[tuple[bool, bool]] = contextvars.ContextVar(
            f"semantic_cache_bypass_{id(self)}", default=(False, False)
        )

    @classmethod
    def ephemeral(cls, **kwargs: Any) -> SemanticCache:
        """An in-memory cache (``kwargs`` as for the constructor)."""
        return cls(mode="ephemeral", **kwargs)

    @classmethod
    def from_config(
        cls, config: CacheConfig, embeddings: Embeddings | None = None, **kwargs: Any
    ) -> SemanticCache:
        """The cache ``[llm.cache]`` describes (``enabled`` is the caller's switch).

        ``backend``: ``"chroma"`` (persistent at ``path``, default `DEFAULT_PATH`),
        ``"memory"``/``"ephemeral"`` (in memory), or ``"server"`` with ``path`` read as
        ``host:port`` or ``http://host:port`` of a ``chroma run`` server. ``embeddings``
        (a spec) is used unless an `Embeddings` object is passed.
        """
        if embeddings is None and config.embeddings:
            from agency._factory import embeddings as make_embeddings

            embeddings = make_embeddings(config.embeddings)
        options: dict[str, Any] = {
            "embeddings": embeddings,
            "threshold": config.threshold,
            "ttl_s": config.ttl_s,
            "max_entries": config.max_entries,
            **kwargs,
        }
        backend = config.backend.lower()
        if backend in ("chroma", "persistent"):
            return cls(mode="persistent", path=config.path, **options)
        if backend in ("memory", "ephemeral"):
            return cls(mode="ephemeral", **options)
        if backend == "server":
            host, port = _host_port(config.path or "")
            return cls(mode="server", host=host, port=port, **options)
        from agency.errors import ConfigError

        raise ConfigError(
            f"unknown cache backend {config.backend!r}",
            key="llm.cache.backend",
            fix='use "chroma", "memory" or "server"',
        )

    # -- the public surface -------------------------------------------------------------------
    @contextlib.contextmanager
    def bypass(self, *, no_cache: bool = True, no_store: bool = False) -> Iterator[None]:
        """Within this block (this context), skip lookups (``no_cache``) and/or writes
        (``no_store``) of this cache; an inner block replaces an outer one's flags."""
        token = self._bypass.set((no_cache, no_store))
        try:
            yield
        finally:
            self._bypass.reset(token)

    def stats(self) -> CacheStats:
        """A snapshot of the counters."""
        with self._lock:
            counts = dict(self._counts)
        cost = counts.pop("cost_saved")
        return CacheStats(**{k: int(v) for k, v in counts.items()}, cost_saved=cost)

    def count(self) -> int:
        """How many entries the cache holds (expired ones not yet met included). Not
        ``__len__``: an empty cache must not be falsy where code tests ``if cache:``."""
        if not self._local:
            return self.memory.count()
        self._ensure_loaded()
        with self._lock:
            return len(self._index.entries)

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The cached answer for this request (exact, then semantic), or None."""
        if self._bypass.get()[0]:
            return None
        self._ensure_loaded()
        request = parse(prompt, llm_string, self._scope_extra)
        found = self._exact(request)
        if found is not None:
            return self._serve(found, "exact")
        if request.semantic:
            found = self._semantic(request)
            if found is not None:
                return self._serve(found, "semantic")
        self._count("misses")
        return None

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store the answer to this request; durable when this returns."""
        self.update_many([(prompt, llm_string, return_val)])

    def update_many(self, items: Iterable[tuple[str, str, RETURN_VAL_TYPE]]) -> int:
        """Store several ``(prompt, llm_string, return_val)`` answers in one batch (one
        embedding call, batched chromadb writes), e.g. to prefill; returns how many.

        An answer that cannot be restored from its serialized form (objects outside
        langchain-core) is not stored."""
        if self._bypass.get()[1]:
            return 0
        self._ensure_loaded()
        latest: dict[str, tuple[Request, str]] = {}
        for prompt, llm_string, return_val in items:  # a repeated request: the last one wins
            request = parse(prompt, llm_string, self._scope_extra)
            payload = answer_payload(return_val)
            try:
                revive_answer(payload)
            except Exception:  # not restorable (content outside langchain-core): not cached
                continue
            latest[request.key] = (request, payload)
        if not latest:
            return 0
        rows = list(latest.values())
        texts = [request.text for request, _ in rows if request.semantic]
        embedded = iter(self._embed(texts) if texts else [])
        now = self._clock()
        stored: list[tuple[str, Entry, np.ndarray | None]] = []
        vectors, metadatas = [], []
        for request, payload in rows:
            vec = next(embedded) if request.semantic else None
            text = request.text if request.semantic else ""
            entry = new_entry(request.scope, text, now, request.semantic, payload)
            stored.append((request.key, entry, vec))
            vectors.append(augment(vec, self._dimension(), request.scope))
            metadatas.append(
                {
                    "scope": request.scope,
                    "created": now,
                    "semantic": request.semantic,
                    "answer": payload,
                }
            )
        with self._write_lock:
            self.memory.remember_many(
                [entry.text for _, entry, _ in stored],
                metadatas,
                ids=[key for key, _, _ in stored],
                embeddings=vectors,
            )
            victims: list[str] = []
            with self._lock:
                self._counts["stores"] += len(stored)
                if self._local:
                    for key, entry, vec in stored:
                        self._index.put(key, entry, vec)
                    while self._max_entries and len(self._index.entries) > self._max_entries:
                        victims.append(next(iter(self._index.entries)))
                        self._index.remove(victims[-1])
                    self._counts["evictions"] += len(victims)
            if victims:
                self.memory.forget(victims)
        if not self._local and self._max_entries:
            self._trim_remote(self._max_entries)
        return len(stored)

    def _embed(self, texts: list[str]) -> list[np.ndarray]:
        # embed_documents on both sides: questions are matched with questions (symmetric).
        vectors = [unit(v) for v in self._embeddings.embed_documents(texts)]
        self._dim = len(vectors[0])
        return vectors

    def clear(self, **kwargs: Any) -> None:
        """Forget every entry (the counters stay)."""
        with self._write_lock:
            self.memory.clear()
            with self._lock:
                self._index = Index()

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Async `lookup` (in a worker thread; the bypass context goes along)."""
        return await asyncio.to_thread(self.lookup, prompt, llm_string)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Async `update`."""
        await asyncio.to_thread(self.update, prompt, llm_string, return_val)

    async def aclear(self, **kwargs: Any) -> None:
        """Async `clear`."""
        await asyncio.to_thread(self.clear)

    # -- lookups ---------------------------------------------------------------------------
    def _exact(self, request: Request) -> str | None:
        if not self._local:
            rows = self.memory.get([request.key])
            if not rows or rows[0].metadata.get("scope") != request.scope:
                return None
            return self._live_payload(rows[0])
        with self._lock:
            entry = self._index.entries.get(request.key)
            if entry is None:
                return None
            expired = self._expired(entry)
            if not expired:
                self._index.entries.move_to_end(request.key)
                return entry.payload
        self._expire(request.key, entry)
        return None

    def _semantic(self, request: Request) -> str | None:
        if self._local:
            with self._lock:
                if request.scope not in self._index.scopes:
                    return None  # nothing to compare with: no embedding call
        threshold, verifier = self._policy()
        query = self._embed([request.text])[0]
        for score, key, text, payload, vec in self._candidates(request, query, threshold):
            if verifier is not None:
                if vec is not None and self._share_vectors:  # spares it two embeddings
                    judge: Any = verifier
                    ok, _why = judge.approve(request.text, text, score, vectors=(query, vec))
                else:
                    ok, _why = verifier.approve(request.text, text, score)
                if not ok:
                    self._count("rejected_by_verifier")
                    continue
            if self._confirm_with is not None and not self._confirmed(request.text, text):
                self._count("rejected_by_llm")
                continue
            with self._lock:  # a hit makes the entry recently used
                if key in self._index.entries:
                    self._index.entries.move_to_end(key)
            return payload
        return None

    def _candidates(
        self, request: Request, query: np.ndarray, threshold: float
    ) -> list[tuple[float, str, str, str, np.ndarray | None]]:
        """(similarity, key, text, answer, text vector if at hand) of live candidates, best
        first."""
        out: list[tuple[float, str, str, str, np.ndarray | None]] = []
        if not self._local:
            self._dim = len(query)
            vector = augment(query, len(query), request.scope)
            for row in self.memory.recall(embedding=vector, k=_REMOTE_K):
                similarity = text_similarity(row.score)
                meta = row.metadata
                if meta.get("scope") != request.scope or not meta.get("semantic"):
                    continue
                payload = self._live_payload(row) if similarity >= threshold else None
                if payload is not None:
                    out.append((similarity, row.id, row.text, payload, None))
            return out[:CANDIDATES]
        expired: list[tuple[str, Entry]] = []
        with self._lock:
            scope = self._index.scopes.get(request.scope)
            found = scope.search(query, threshold) if scope is not None else []
            for score, key, vec in found:
                entry = self._index.entries[key]
                if self._expired(entry):
                    expired.append((key, entry))
                    continue
                out.append((score, key, entry.text, entry.payload, vec))
        for key, entry in expired:
            self._expire(key, entry)
        return out

    def _policy(self) -> tuple[float, Verifier | None]:
        """The threshold and verifier, loading the defaults on first use."""
        if not self._policy_ready:
            from agency.memory.verify import LearnedVerifier, default_threshold

            if self._verifier == "default":
                self._verifier = LearnedVerifier.load(self._embedder)
            if self._threshold is None:
                self._threshold = default_threshold(self._embedder)
            # A learned verifier embeds both texts with its embedder; when that is ours, it
            # gets the vectors we already hold instead.
            ours = (
                getattr(self._embeddings, "provider", ""),
                getattr(self._embeddings, "model", ""),
            )
            self._share_vectors = isinstance(self._verifier, LearnedVerifier) and ours == (
                "local",
                self._verifier.embedder,
            )
            self._policy_ready = True
        assert self._threshold is not None and self._verifier != "default"
        return self._threshold, self._verifier

    def _confirmed(self, query: str, candidate: str) -> bool:
        from agency.memory.verify import confirm

        assert self._confirm_with is not None
        # The judge must not read or fill this cache (it may share it).
        with self.bypass(no_cache=True, no_store=True):
            return confirm(self._confirm_with, query, candidate)

    # -- entries -------------------------------------------------------------------------------
    def _expired(self, entry: Entry | Mapping[str, Any]) -> bool:
        if self._ttl_s is None:
            return False
        created = entry.created if isinstance(entry, Entry) else entry.get("created", 0.0)
        return bool(self._clock() - float(created) > self._ttl_s)

    def _expire(self, key: str, entry: Entry | None) -> None:
        with self._write_lock:
            with self._lock:
                # Only if no update replaced it meanwhile.
                if entry is not None and self._index.entries.get(key) is not entry:
                    return
                self._index.remove(key)
                self._counts["expired"] += 1
            self.memory.forget([key])

    def _live_payload(self, row: Recollection) -> str | None:
        """A server row's answer, or None (and deleted) when it has expired."""
        if self._expired(row.metadata):
            self._expire(row.id, None)
            return None
        answer = row.metadata.get("answer")
        return answer if isinstance(answer, str) else None

    def _serve(self, payload: str, kind: Kind) -> list[Generation]:
        from langchain_core.outputs import ChatGeneration

        generations = revive_answer(payload)
        saved = 0.0
        for generation in generations:
            if isinstance(generation, ChatGeneration):
                meta = dict(generation.message.response_metadata)
                cost = meta.get("cost")
                if isinstance(cost, int | float) and not isinstance(cost, bool):
                    saved += float(cost)
                    meta["cached_cost"] = cost
                meta["cost"], meta["cache"] = 0.0, kind  # a hit spends nothing
                generation.message.response_metadata = meta
        with self._lock:
            self._counts["hits_exact" if kind == "exact" else "hits_semantic"] += 1
            self._counts["cost_saved"] += saved
        return generations

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _dimension(self) -> int:
        if self._dim is None:
            self._embed(["dimension"])
        assert self._dim is not None
        return self._dim

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._write_lock:
            if not self._loaded:
                self._load()
                self._loaded = True

    def _load(self) -> None:
        """Build the index from chromadb (once; the caller holds the write lock)."""
        import numpy as np

        rows: list[tuple[str, Entry, Any]] = []
        offset = 0
        while True:
            page = self.memory.collection.get(
                include=["documents", "embeddings", "metadatas"], limit=_LOAD_PAGE, offset=offset
            )
            if not page["ids"]:
                break
            offset += len(page["ids"])
            for key, text, vec, meta in zip(
                page["ids"], page["documents"], page["embeddings"], page["metadatas"], strict=True
            ):
                meta = meta or {}
                entry = new_entry(
                    str(meta.get("scope", "")),
                    text or "",
                    float(meta.get("created", 0.0)),
                    bool(meta.get("semantic")),
                    str(meta.get("answer", "")),
                )
                rows.append((key, entry, vec))
        rows.sort(key=lambda row: row[1].created)  # the LRU order starts oldest first
        expired = [key for key, entry, _ in rows if self._expired(entry)]
        index = Index()
        by_scope: dict[str, tuple[list[str], list[Any]]] = {}
        for key, entry, vec in rows:
            if not self._expired(entry):
                index.entries[key] = entry
                if entry.semantic:
                    keys, vecs = by_scope.setdefault(entry.scope, ([], []))
                    keys.append(key)
                    vecs.append(vec[: len(vec) - SCOPE_DIMS])
        for scope, (keys, vecs) in by_scope.items():  # each scope partitioned once
            matrix = np.asarray(vecs, dtype=np.float32)
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            index.scopes[scope] = ScopeIndex.built(keys, matrix / np.maximum(norms, 1e-12))
            self._dim = matrix.shape[1]
        with self._lock:
            self._index = index
            self._counts["expired"] += len(expired)
        if expired:
            self.memory.forget(expired)

    def _trim_remote(self, cap: int) -> None:
        """Server mode: evict the oldest entries once over ``cap`` (lists every entry)."""
        count = self.memory.count()
        if count <= cap:
            return
        with self._write_lock:
            listing = self.memory.collection.get(include=["metadatas"])
            order = sorted(
                zip(listing["ids"], listing["metadatas"], strict=True),
                key=lambda row: float((row[1] or {}).get("created", 0.0)),
            )
            drop = len(order) - int(cap * (1 - _REMOTE_EVICT_SLACK))
            victims = [key for key, _ in order[: max(drop, 0)]]
            if victims:
                self.memory.forget(victims)
        self._count_n("evictions", len(victims))

    def _count_n(self, name: str, n: int) -> None:
        with self._lock:
            self._counts[name] += n


def _calibration_of(embeddings: Embeddings) -> str:
    """The verifier calibration for ``embeddings``: its own if it has one, else the default."""
    from agency.memory.verify import CALIBRATED_EMBEDDERS, DEFAULT_EMBEDDER

    model = getattr(embeddings, "model", "")
    if getattr(embeddings, "provider", "") == "local" and model in CALIBRATED_EMBEDDERS:
        return str(model)
    return DEFAULT_EMBEDDER


def _host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``http://host:port`` (default 127.0.0.1:8000)."""
    rest = address.split("://", 1)[-1].rstrip("/")
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    return host or "127.0.0.1", int(port) if port else _SERVER_PORT
