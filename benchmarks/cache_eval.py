"""Precision, hit rate and F1 of semantic-cache hits on the dev question pairs.

Each of the 1,000 pairs of ``../shared/eval/cache_pairs.dev.jsonl`` is its own scope: q1 is
cached, q2 is looked up, and only q1 can answer it. A pair is served as a hit when the
cosine similarity of the embeddings is at or above the threshold and, "with verifier", when
the verifier approves it too. Hit rate = served pairs / all pairs; precision = duplicates /
served pairs; F1 = harmonic mean of precision and recall (duplicates served / duplicates).

Embeddings: the default ``local:wordllama``, ``local:minilm`` (when installed) and any given
with ``--embeddings SPEC`` (``openai:text-embedding-3-small``, ...). Verifiers: the learned
verifier calibrated for the embedder (``memory/data/verifier_<name>.json``); embeddings
without one are verified by the wordllama one (it embeds the texts itself), and also by the
hard vetoes alone. The calibrated threshold of each embedder is marked with ``*``.

    python benchmarks/cache_eval.py [--embeddings SPEC ...] [--thresholds 0.7 0.8 ...]
        [--no-minilm] [--vectors-cache DIR] [--through-cache]

``--through-cache`` also replays the pairs through a real `memory.SemanticCache` (ephemeral,
default verifier and threshold, the pair's index as its ``llm_string``: one scope per pair)
for each calibrated embedder: ``update(q1)``, then ``lookup(q2)``; the table's calibrated
row must match what the cache serves.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # `agency` from a checkout

from fit_verifier import metrics, read_pairs, unit_vectors

from agency.memory import verify
from agency.providers import _minilm

DEFAULT_THRESHOLDS = (0.60, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95)
CALIBRATED = {"local:wordllama": "wordllama", "local:minilm": "minilm"}
"""Embedding specs that have a learned verifier of their own."""


def _decisions(
    verifier: verify.LearnedVerifier, q1: list[str], q2: list[str], vectors: Any
) -> tuple[Any, Any]:
    """(vetoed, approved by the learned verifier) for every pair."""
    n = len(q1)
    vetoed = np.array([verify.veto(a, b) is not None for a, b in zip(q1, q2, strict=True)])
    approved = np.array(
        [
            not vetoed[i]
            and verifier.score(q1[i], q2[i], vectors=(vectors[i], vectors[n + i]))
            >= verifier.threshold
            for i in range(n)
        ]
    )
    return vetoed, approved


def evaluate(
    specs: Sequence[str], thresholds: Sequence[float], cache: Path | None, console: Console
) -> None:
    q1, q2, duplicate = read_pairs("dev")
    n = len(q1)
    verifier_vectors: dict[str, Any] = {}
    for spec in specs:
        vectors = unit_vectors(spec, q1 + q2, cache)
        cosine = (vectors[:n].astype(np.float64) * vectors[n:]).sum(axis=1)
        name = CALIBRATED.get(spec, verify.DEFAULT_EMBEDDER)
        verifier = verify.LearnedVerifier.load(name)
        if name not in verifier_vectors:
            own = f"local:{name}"
            verifier_vectors[name] = vectors if spec == own else unit_vectors(own, q1 + q2, cache)
        vetoed, approved = _decisions(verifier, q1, q2, verifier_vectors[name])
        calibrated = verifier.similarity_threshold if spec in CALIBRATED else None
        table = Table(title=f"{escape(spec)}: {n} dev pairs, one scope per pair (verifier: {name})")
        table.add_column("threshold", justify="right")
        for mode in ("cosine only", "+ vetoes", "+ verifier"):
            for column in ("precision", "hit rate", "F1"):
                table.add_column(f"{mode}\n{column}", justify="right")
        rows = sorted({*thresholds, *([calibrated] if calibrated is not None else [])})
        for t in rows:
            above = cosine >= t
            cells = [f"{t:.2f}{' *' if t == calibrated else ''}"]
            for hits in (above, above & ~vetoed, above & approved):
                precision, hit_rate, f1 = metrics(hits, duplicate)
                cells += [f"{precision:.3f}", f"{hit_rate:.3f}", f"{f1:.3f}"]
            table.add_row(*cells)
        console.print(table)


def through_cache(spec: str, console: Console) -> None:
    """Precision and hit rate of a real `SemanticCache` over the dev pairs."""
    from langchain_core.outputs import Generation

    import agency
    from agency.memory.cache import SemanticCache

    q1, q2, duplicate = read_pairs("dev")
    cache = SemanticCache.ephemeral(embeddings=agency.embeddings(spec))
    cache.update_many((a, f"pair-{i}", [Generation(text=a)]) for i, a in enumerate(q1))
    hits = np.array([cache.lookup(b, f"pair-{i}") is not None for i, b in enumerate(q2)])
    precision, hit_rate, f1 = metrics(hits, duplicate)
    stats = cache.stats()
    console.print(
        f"{spec} through SemanticCache: precision {precision:.3f}, hit rate {hit_rate:.3f}, "
        f"F1 {f1:.3f} (semantic hits {stats.hits_semantic}, exact {stats.hits_exact}, "
        f"rejected by the verifier {stats.rejected_by_verifier}, misses {stats.misses})"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--embeddings", action="append", default=[], metavar="SPEC", help="more embeddings"
    )
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(DEFAULT_THRESHOLDS))
    parser.add_argument("--no-minilm", action="store_true", help="skip local:minilm (slow)")
    parser.add_argument("--vectors-cache", type=Path, default=None, help="keep vectors here")
    parser.add_argument("--through-cache", action="store_true", help="replay via SemanticCache")
    args = parser.parse_args(argv)
    specs = ["local:wordllama"]
    if not args.no_minilm and _minilm.model_dir() is not None:
        specs.append("local:minilm")
    specs += [s for s in args.embeddings if s not in specs]
    console = Console(width=140, emoji=False)
    evaluate(specs, args.thresholds, args.vectors_cache, console)
    if args.through_cache:
        for spec in specs:
            if spec in CALIBRATED:
                through_cache(spec, console)


if __name__ == "__main__":
    main()
