"""The in-process index of `memory.cache.SemanticCache` (private to it).

Contract:

- `Index` holds everything a local lookup needs: the entries by id in LRU order (oldest
  first) and, per scope, a `ScopeIndex` of the unit text vectors of its semantic entries. It
  is not thread-safe: the cache's lock is held around every call.
- `Entry` keeps an answer zlib-compressed (`new_entry` compresses, ``payload`` inflates).
- `ScopeIndex` searches one list of vectors while small, then k-means inverted lists (IVF):
  it re-partitions (`kmeans`) whenever the scope doubles or deleted rows outnumber live ones, and
  probes the ``_NPROBE`` nearest lists. `ScopeIndex.search` returns at most `CANDIDATES`
  ``(cosine, key, vector)`` hits at or above a floor, best first. An approximate search can
  miss a neighbour (a lost hit), never return a wrong key.
- numpy is imported only when vectors are handled.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "CANDIDATES",
    "Entry",
    "Index",
    "InvertedList",
    "ScopeIndex",
    "kmeans",
    "new_entry",
]

CANDIDATES = 3
"""Semantic candidates tried per lookup, best first."""
_BUCKET_TARGET = 512
"""Mean entries per inverted list of a scope once it is partitioned."""
_NPROBE = 8
"""Inverted lists searched per semantic lookup. With 512-entry lists, 70k entries of one scope
and near neighbours at cosine 0.82-0.93: 99% recall@1 and 0.8 ms (1024 / 8: 99%, 1.5 ms;
256 / 8: 97.5%, 0.6 ms). A neighbour missed is a lost hit, never a wrong answer."""
_KMEANS_ITERS = 4
_KMEANS_SAMPLE = 32
"""Training vectors per centroid when a scope is re-partitioned."""
_ASSIGN_CHUNK = 8192
_SCORE_CHUNK = 1024
"""Rows per matrix-vector product: above ~2k rows OpenBLAS goes multi-threaded, which cost
up to 50x more (7 ms instead of 0.15 ms for 3k rows) on a busy 2-CPU machine."""
_ANSWER_ZLIB_LEVEL = 1
"""Answers are kept in memory zlib-compressed (JSON compresses 3-5x; inflating is ~10 us)."""
_MIN_ROWS = 16


@dataclass(slots=True)
class Entry:
    """One cached answer and what it answers (its vector lives in a `ScopeIndex`)."""

    scope: str
    text: str
    created: float
    semantic: bool
    answer: bytes

    @property
    def payload(self) -> str:
        """The answer as stored (`langchain_core.load.dumps` text)."""
        return zlib.decompress(self.answer).decode()


def new_entry(scope: str, text: str, created: float, semantic: bool, payload: str) -> Entry:
    """An `Entry` holding ``payload`` compressed."""
    return Entry(
        scope, text, created, semantic, zlib.compress(payload.encode(), _ANSWER_ZLIB_LEVEL)
    )


class InvertedList:
    """One inverted list: a growing matrix of unit vectors and their keys (None = deleted)."""

    __slots__ = ("keys", "vecs")

    def __init__(self, dim: int, rows: int = _MIN_ROWS) -> None:
        import numpy as np

        self.vecs = np.zeros((max(rows, _MIN_ROWS), dim), dtype=np.float32)
        self.keys: list[str | None] = []

    def add(self, key: str, vec: np.ndarray) -> int:
        import numpy as np

        row = len(self.keys)
        if row == len(self.vecs):
            grown = np.zeros((2 * row, self.vecs.shape[1]), dtype=np.float32)
            grown[:row] = self.vecs
            self.vecs = grown
        self.vecs[row] = vec
        self.keys.append(key)
        return row


class ScopeIndex:
    """Vectors of one scope: one list while small, then k-means inverted lists (IVF)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.centroids: np.ndarray | None = None
        self.lists = [InvertedList(dim)]
        self.where: dict[str, tuple[int, int]] = {}
        self.dead = 0
        self.built_for = 0

    def add(self, key: str, vec: np.ndarray) -> None:
        import numpy as np

        if key in self.where:  # same key, same text, same vector
            return
        pick = 0 if self.centroids is None else int(np.argmax(self.centroids @ vec))
        self.where[key] = (pick, self.lists[pick].add(key, vec))
        # Re-partition each time the scope doubles: amortised O(1) per insert.
        if len(self.where) >= 2 * max(self.built_for, _BUCKET_TARGET):
            self._partition()

    def remove(self, key: str) -> None:
        pos = self.where.pop(key, None)
        if pos is None:
            return
        lst = self.lists[pos[0]]
        lst.vecs[pos[1]] = 0.0
        lst.keys[pos[1]] = None
        self.dead += 1
        if self.dead > max(len(self.where), _BUCKET_TARGET):
            self._partition()

    def search(self, query: np.ndarray, floor: float) -> list[tuple[float, str, np.ndarray]]:
        import numpy as np

        probe: Any = range(len(self.lists))
        if self.centroids is not None and len(self.lists) > _NPROBE:
            probe = np.argpartition(-(self.centroids @ query), _NPROBE)[:_NPROBE]
        found: list[tuple[float, str, np.ndarray]] = []
        for index in probe:
            lst = self.lists[int(index)]
            if not lst.keys:
                continue
            count = len(lst.keys)
            scores = np.concatenate(
                [
                    lst.vecs[i : min(i + _SCORE_CHUNK, count)] @ query
                    for i in range(0, count, _SCORE_CHUNK)
                ]
            )
            rows = np.flatnonzero(scores >= floor)
            if len(rows) > CANDIDATES:
                rows = rows[np.argpartition(-scores[rows], CANDIDATES)[:CANDIDATES]]
            for row in rows:
                key = lst.keys[int(row)]
                if key is not None:
                    found.append((float(scores[row]), key, lst.vecs[int(row)].copy()))
        found.sort(key=lambda hit: hit[0], reverse=True)
        return found[:CANDIDATES]

    @classmethod
    def built(cls, keys: list[str], vecs: np.ndarray) -> ScopeIndex:
        """An index of these keys and unit vectors, partitioned once."""
        index = cls(vecs.shape[1])
        index._fill(keys, vecs)
        return index

    def _partition(self) -> None:
        import numpy as np

        keys = list(self.where)
        self._fill(keys, np.stack([self.lists[b].vecs[r] for b, r in self.where.values()]))

    def _fill(self, keys: list[str], vecs: np.ndarray) -> None:
        import numpy as np

        count = len(keys)
        self.built_for, self.dead = count, 0
        n_lists = max(1, count // _BUCKET_TARGET)
        assign = np.zeros(count, dtype=np.int64)
        self.centroids = None
        if n_lists > 1:
            self.centroids = kmeans(vecs, n_lists)
            for start in range(0, count, _ASSIGN_CHUNK):
                chunk = vecs[start : start + _ASSIGN_CHUNK] @ self.centroids.T
                assign[start : start + _ASSIGN_CHUNK] = np.argmax(chunk, axis=1)
        sizes = np.bincount(assign, minlength=n_lists)
        self.lists = [InvertedList(self.dim, int(size) * 5 // 4) for size in sizes]
        self.where = {}
        for key, vec, pick in zip(keys, vecs, assign.tolist(), strict=True):
            self.where[key] = (pick, self.lists[pick].add(key, vec))


def kmeans(vecs: np.ndarray, k: int) -> np.ndarray:
    """Spherical k-means centroids of ``vecs`` (a few Lloyd steps on a sample)."""
    import numpy as np

    rng = np.random.default_rng(len(vecs))
    sample = vecs[rng.choice(len(vecs), min(len(vecs), k * _KMEANS_SAMPLE), replace=False)]
    centroids = sample[rng.choice(len(sample), k, replace=False)].copy()
    for _ in range(_KMEANS_ITERS):
        assign = np.argmax(sample @ centroids.T, axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assign, sample)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        filled = norms[:, 0] > 0  # an empty cluster keeps its centroid
        centroids[filled] = sums[filled] / norms[filled]
    return centroids


class Index:
    """Everything a local lookup needs, in memory. The caller holds the cache's lock."""

    def __init__(self) -> None:
        self.entries: OrderedDict[str, Entry] = OrderedDict()  # LRU order, oldest first
        self.scopes: dict[str, ScopeIndex] = {}

    def put(self, key: str, entry: Entry, vec: np.ndarray | None) -> None:
        self.entries[key] = entry
        self.entries.move_to_end(key)
        if entry.semantic and vec is not None:
            scope = self.scopes.get(entry.scope)
            if scope is None:
                scope = self.scopes[entry.scope] = ScopeIndex(len(vec))
            scope.add(key, vec)

    def remove(self, key: str) -> Entry | None:
        entry = self.entries.pop(key, None)
        if entry is not None and entry.scope in self.scopes:
            scope = self.scopes[entry.scope]
            scope.remove(key)
            if not scope.where:
                del self.scopes[entry.scope]
        return entry
