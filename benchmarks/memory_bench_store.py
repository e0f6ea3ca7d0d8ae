"""What VectorMemory costs: bulk inserts, single durable writes, and recall latency.

`measure(memory, n_entries, queries)` fills an (empty) memory with ``n_entries`` synthetic
notes and times, on the wall clock: the bulk insert (``remember_many`` in batches), single
``remember`` calls (each one a committed write), ``recall`` with the memory's embeddings, and
``recall`` with a precomputed query vector (the store alone). It returns a flat dict, so
other benchmarks (the semantic cache's) can reuse it. Run directly for a table over the
ephemeral and persistent modes with the default wordllama embeddings:

    python benchmarks/memory_bench_store.py [--entries 10000] [--queries 200]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from agency.memory.store import VectorMemory

BATCH = 256
SINGLE_WRITES = 20
K = 4
SEED = 7
P95 = 0.95
_WORDS = [
    "deploy",
    "key",
    "rotate",
    "monday",
    "server",
    "backup",
    "invoice",
    "customer",
    "ticket",
    "cache",
    "latency",
    "model",
    "prompt",
    "budget",
    "retry",
    "region",
    "token",
    "cluster",
    "alert",
    "dashboard",
    "report",
    "release",
]


def synthetic_texts(n: int, seed: int = SEED) -> list[str]:
    """``n`` short, varied notes (deterministic for a seed)."""
    rng = random.Random(seed)
    return [f"note {i}: {' '.join(rng.choices(_WORDS, k=8))}" for i in range(n)]


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(
    memory: VectorMemory,
    n_entries: int,
    queries: Sequence[str],
    *,
    batch: int = BATCH,
    single_writes: int = SINGLE_WRITES,
    k: int = K,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Fill ``memory`` and time it; latencies in milliseconds, rates per second."""
    texts = synthetic_texts(n_entries)
    started = clock()
    for start in range(0, n_entries, batch):
        chunk = texts[start : start + batch]
        memory.remember_many(chunk, [{"n": start + i} for i in range(len(chunk))])
    insert_s = clock() - started

    singles: list[float] = []
    for i in range(single_writes):
        started = clock()
        memory.remember(f"single write {i}", {"single": True})
        singles.append((clock() - started) * 1000)

    recalls: list[float] = []
    vectors = [memory.embeddings.embed_query(q) for q in queries]
    for query in queries:
        started = clock()
        memory.recall(query, k=k)
        recalls.append((clock() - started) * 1000)
    by_vector: list[float] = []
    for vector in vectors:
        started = clock()
        memory.recall(embedding=vector, k=k)
        by_vector.append((clock() - started) * 1000)

    return {
        "entries": memory.count(),
        "insert_s": insert_s,
        "inserts_per_s": n_entries / insert_s if insert_s else float("inf"),
        "remember_ms_median": statistics.median(singles) if singles else None,
        "recall_ms_median": statistics.median(recalls) if recalls else None,
        "recall_ms_p95": _percentile(recalls, P95) if recalls else None,
        "recall_by_vector_ms_median": statistics.median(by_vector) if by_vector else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    queries = [t.split(": ", 1)[1] for t in synthetic_texts(args.queries, seed=SEED + 1)]
    with tempfile.TemporaryDirectory() as directory:
        memories = {
            "ephemeral": VectorMemory.ephemeral("bench"),
            "persistent": VectorMemory("bench", path=directory),
        }
        print(f"{args.entries} entries, {args.queries} queries, k={K}")
        for mode, memory in memories.items():
            row = measure(memory, args.entries, queries)
            cells = ", ".join(
                f"{key}={value:.2f}" if isinstance(value, float) else f"{key}={value}"
                for key, value in row.items()
            )
            print(f"{mode:>10}: {cells}")


if __name__ == "__main__":
    main()
