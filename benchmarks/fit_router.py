"""Fit the task router's learned parameters and write ``agents/data/router.json``.

Reads ``../shared/eval/router_eval.dev.jsonl`` (589 prompts labelled code / math / creative /
general; see its README) and nothing else; the prompts never enter the repository, only the
fitted numbers do.

What is fitted, on all dev prompts (``python benchmarks/fit_router.py``):

- two multinomial logistic regressions (`agency.agents._features.fit_softmax`, L2 = `L2`): over the
  unit wordllama embedding (first `agency.agents._features.EMBED_CHARS` characters) plus the cheap
  signals, and over the signals alone (used with other embeddings). The built-in roles' own
  example tasks (written for this project, in `agency.agents.roles`) are added as training rows:
  the dev file has few short math or code questions, and they teach the model those forms;
- each one's temperature, on its stratified 5-fold out-of-fold logits, so that ``confidence``
  is a calibrated probability;
- the similarity scale: ``softmax(scale * mean cosine to the top-k examples)`` over the
  built-in roles' own example tasks, by likelihood on the dev labels;
- ``llm_threshold``: the `LLM_SHARE` quantile of the out-of-fold confidence, so a configured
  LLM sees the least certain tenth of tasks (where about half of the offline errors are).

``--cv 5`` first prints the stratified cross-validated macro-F1 of every feature set tried
(embedding, signals, both, plus similarities to the examples, plus hashed word n-grams) over
an L2 grid; the shipped set and `L2` were chosen from that table. Out-of-fold scores never
score the example rows (they only ever train).

    python benchmarks/fit_router.py [--cv 5] [--repeats 1] [--dry-run]
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `agency` from a checkout

from agency.agents import _features
from agency.agents.roles import BUILTIN_ROLES
from agency.agents.router import DEFAULT_EMBEDDINGS, FULL_MODEL, SIGNALS_MODEL, TaskRouter

ROOT = Path(__file__).resolve().parent.parent
EVAL_FILE = ROOT.parent / "shared" / "eval" / "router_eval.dev.jsonl"
OUT = ROOT / "agents" / "data" / "router.json"

CLASSES = ("code", "math", "creative", "general")
"""The built-in roles, in the order the learned weights are stored."""
L2 = 30.0
"""Ridge penalty on standardized weights: 10-100 cross-validate alike; 30 is in the middle."""
L2_GRID = (3.0, 10.0, 30.0, 100.0)
FOLDS = 5
"""Folds for the out-of-fold logits behind the temperature and the LLM threshold."""
TOP_K = 3
"""Examples per role averaged in the similarity score (top-1 and top-5 cross-validated lower)."""
SCALE_GRID = np.arange(1.0, 80.5, 0.5)
LLM_SHARE = 0.10
"""Share of (dev) tasks the default ``llm_threshold`` sends to a configured LLM."""
SIGNIFICANT = 5
"""Significant digits kept per stored number (predictions move by < 1e-4)."""
NGRAM_BUCKETS = 1024
"""Hashed word uni- and bigram buckets of the n-gram feature set tried in the CV table."""
SEED = 0

_NGRAM_TOKEN = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")


def read_dev(path: Path = EVAL_FILE) -> tuple[list[str], Any]:
    """Prompts and label indices (into `CLASSES`) of the dev file."""
    if not path.is_file():
        sys.exit(f"{path} is missing: the router is fitted on ../shared/eval (see its README)")
    rows = [
        json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()
    ]
    return [r["prompt"] for r in rows], np.array([CLASSES.index(r["role"]) for r in rows])


def embed(texts: Sequence[str]) -> Any:
    """Unit wordllama vectors of the texts' first `EMBED_CHARS` characters (as the router)."""
    import agency

    embeddings = agency.embeddings(DEFAULT_EMBEDDINGS)
    return _features.unit_rows(
        embeddings.embed_documents([t[: _features.EMBED_CHARS] for t in texts])
    )


def example_similarities(texts: Sequence[str]) -> Any:
    """(n, 4): each text's mean cosine to the top-k built-in examples of each role."""
    router = TaskRouter(BUILTIN_ROLES, parameters=similarity_only(1.0))
    return np.array([[row[c] for c in CLASSES] for row in router.similarities(texts)])


def similarity_only(scale: float, top_k: int = TOP_K) -> dict[str, Any]:
    """Router parameters with no learned model: nearest examples decide alone."""
    empty = {"classes": [], "embedding": False}
    return {
        "embeddings": DEFAULT_EMBEDDINGS,
        "models": {FULL_MODEL: empty, SIGNALS_MODEL: empty},
        "similarity": {"scale": scale, "top_k": top_k},
        "llm_threshold": 0.0,
    }


def ngrams(texts: Sequence[str], buckets: int = NGRAM_BUCKETS) -> Any:
    """Binary hashed word uni- and bigrams (CRC-32 buckets): a feature set tried, not shipped."""
    out = np.zeros((len(texts), buckets))
    for i, text in enumerate(texts):
        words = _NGRAM_TOKEN.findall(text[: _features.MAX_CHARS].lower())[: _features.MAX_TOKENS]
        grams = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
        out[i, [zlib.crc32(g.encode()) % buckets for g in grams]] = 1.0
    return out


def fit_scale(sims: Any, y: Any) -> float:
    """The similarity scale maximizing the likelihood of the labels (grid search)."""
    losses = [
        -np.log(np.maximum(_features.softmax(s * sims)[np.arange(len(y)), y], 1e-12)).mean()
        for s in SCALE_GRID
    ]
    return float(SCALE_GRID[int(np.argmin(losses))])


def llm_threshold(probs: Any, y: Any) -> tuple[float, float, float, float]:
    """(threshold, share below it, offline accuracy below it, share of errors below it).

    The threshold is the `LLM_SHARE` quantile of the out-of-fold confidence: the least
    certain tenth of tasks, where the offline router makes about half of its mistakes.
    """
    confidence, right = probs.max(axis=1), probs.argmax(axis=1) == y
    threshold = round(float(np.quantile(confidence, LLM_SHARE)), 2)
    below = confidence < threshold
    errors = int((~right).sum())
    return (
        threshold,
        float(below.mean()),
        float(right[below].mean()) if below.any() else 1.0,
        float((below & ~right).sum() / errors) if errors else 0.0,
    )


def _round(values: Any) -> Any:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 0:
        return float(f"{float(array):.{SIGNIFICANT}g}")
    return [_round(v) for v in array]


@dataclass(frozen=True)
class Inputs:
    """What the two learned models read for some labelled texts."""

    full: Any
    """(n, dims + signals): unit embedding, then signals."""
    signals: Any
    """(n, signals)."""
    y: Any
    """(n,) label indices into `CLASSES`."""

    def take(self, index: Any) -> Inputs:
        """The rows at ``index``."""
        return Inputs(self.full[index], self.signals[index], self.y[index])


def inputs(texts: Sequence[str], y: Any, units: Any | None = None) -> Inputs:
    """`Inputs` of ``texts`` (embedded here unless ``units`` are given)."""
    signals = _features.design(None, texts)
    units = embed(texts) if units is None else units
    return Inputs(np.hstack([units, signals]), signals, np.asarray(y))


def builtin_examples() -> Inputs:
    """The built-in roles' own example tasks, added to every training set."""
    texts = [e for c in CLASSES for e in BUILTIN_ROLES[c].examples]
    y = [CLASSES.index(c) for c in CLASSES for _ in BUILTIN_ROLES[c].examples]
    return inputs(texts, y)


def fit_model(
    x: Any, y: Any, extra: tuple[Any, Any] | None, embedding: bool, seed: int = SEED
) -> tuple[dict[str, Any], Any]:
    """One learned model as stored, and its calibrated out-of-fold probabilities on ``x``."""
    folds = _features.stratified_folds(y, FOLDS, seed)
    oof = _features.cross_validated_logits(x, y, len(CLASSES), L2, folds, extra=extra)
    temperature = _features.fit_temperature(oof, y)
    all_x = x if extra is None else np.concatenate((x, extra[0]))
    all_y = y if extra is None else np.concatenate((y, extra[1]))
    weights, bias = _features.fit_softmax(all_x, all_y, len(CLASSES), L2)
    model = {
        "classes": list(CLASSES),
        "embedding": embedding,
        "weights": _round(weights.T),
        "bias": _round(bias),
        "temperature": _round(temperature),
        "means": _round(all_x.mean(axis=0)),
        "l2": L2,
    }
    return model, _features.softmax(oof / temperature)


def fit_parameters(dev: Inputs, sims: Any, examples: Inputs | None) -> dict[str, Any]:
    """Everything `agency.agents.router.TaskRouter` reads, fitted on ``dev`` (plus ``examples``)."""
    extra_full = None if examples is None else (examples.full, examples.y)
    extra_signals = None if examples is None else (examples.signals, examples.y)
    full, oof = fit_model(dev.full, dev.y, extra_full, embedding=True)
    only_signals, _ = fit_model(dev.signals, dev.y, extra_signals, embedding=False)
    threshold, share, accuracy, caught = llm_threshold(oof, dev.y)
    predicted = oof.argmax(axis=1)
    return {
        "format": 1,
        "embeddings": DEFAULT_EMBEDDINGS,
        "embed_chars": _features.EMBED_CHARS,
        "signals": list(_features.SIGNALS),
        "models": {FULL_MODEL: full, SIGNALS_MODEL: only_signals},
        "similarity": {"scale": fit_scale(sims, dev.y), "top_k": TOP_K},
        "llm_threshold": threshold,
        "calibration": {
            "prompts": len(dev.y),
            "example_rows": 0 if examples is None else len(examples.y),
            "oof_macro_f1": round(_features.macro_f1(dev.y, predicted, len(CLASSES)), 4),
            "oof_accuracy": round(float((predicted == dev.y).mean()), 4),
            "below_llm_threshold": round(share, 4),
            "oof_accuracy_below_llm_threshold": round(accuracy, 4),
            "oof_errors_below_llm_threshold": round(caught, 4),
        },
    }


def cv_table(
    console: Console,
    texts: Sequence[str],
    dev: Inputs,
    sims: Any,
    examples: Inputs,
    k: int,
    repeats: int,
) -> None:
    """Cross-validated macro-F1 of each feature set over the L2 grid (mean over repeats)."""
    units = dev.full[:, : -len(_features.SIGNALS)]
    grams = ngrams(texts)
    y = dev.y
    with_examples = (examples.full, examples.y)
    sets: dict[str, tuple[Any, tuple[Any, Any] | None]] = {
        "embedding": (units, None),
        "signals": (dev.signals, None),
        "embedding + signals": (dev.full, None),
        "embedding + signals + built-in examples as rows (shipped)": (dev.full, with_examples),
        "embedding + signals + example similarities": (np.hstack([dev.full, sims]), None),
        f"embedding + signals + word n-grams ({NGRAM_BUCKETS})": (
            np.hstack([dev.full, grams]),
            None,
        ),
        f"word n-grams ({NGRAM_BUCKETS})": (grams, None),
    }
    table = Table(title=f"stratified {k}-fold cross-validated macro-F1 ({repeats} repeat(s))")
    table.add_column("feature set")
    table.add_column("inputs", justify="right")
    for l2 in L2_GRID:
        table.add_column(f"L2={l2:g}", justify="right")
    fold_sets = [_features.stratified_folds(y, k, SEED + r) for r in range(repeats)]
    nearest = _features.macro_f1(y, sims.argmax(axis=1), len(CLASSES))
    table.add_row(
        f"nearest examples (top-{TOP_K}, built-in, no fit)", "-", *[f"{nearest:.3f}"] * len(L2_GRID)
    )
    for name, (x, extra) in sets.items():
        cells = []
        for l2 in L2_GRID:
            scores = [
                _features.macro_f1(
                    y,
                    _features.cross_validated_logits(
                        x, y, len(CLASSES), l2, folds, extra=extra
                    ).argmax(1),
                    len(CLASSES),
                )
                for folds in fold_sets
            ]
            cells.append(
                f"{np.mean(scores):.3f}" + (f" ±{np.std(scores):.3f}" if repeats > 1 else "")
            )
        table.add_row(name, str(x.shape[1]), *cells)
        console.print(f"[dim]{name} done[/dim]")
    console.print(table)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv", type=int, default=0, help="print the CV table with this many folds")
    parser.add_argument("--repeats", type=int, default=1, help="CV repeats with other fold seeds")
    parser.add_argument("--dry-run", action="store_true", help="report, do not write the JSON")
    args = parser.parse_args(argv)
    console = Console(emoji=False, width=120)
    texts, y = read_dev()
    dev = inputs(texts, y)
    examples = builtin_examples()
    sims = example_similarities(texts)
    if args.cv:
        cv_table(console, texts, dev, sims, examples, args.cv, args.repeats)
    params = fit_parameters(dev, sims, examples)
    text = json.dumps(params, separators=(",", ":")) + "\n"
    calibration = params["calibration"]
    console.print(
        f"out-of-fold macro-F1 {calibration['oof_macro_f1']:.3f}, accuracy "
        f"{calibration['oof_accuracy']:.3f}; temperature "
        f"{params['models'][FULL_MODEL]['temperature']} (signals only: "
        f"{params['models'][SIGNALS_MODEL]['temperature']}); similarity scale "
        f"{params['similarity']['scale']}; llm_threshold {params['llm_threshold']} "
        f"({calibration['below_llm_threshold']:.1%} of prompts below it, offline accuracy "
        f"there {calibration['oof_accuracy_below_llm_threshold']:.2f}, "
        f"{calibration['oof_errors_below_llm_threshold']:.0%} of the offline errors)"
    )
    if args.dry_run:
        console.print(f"[dim]dry run: {OUT} not written ({len(text)} bytes)[/dim]")
        return
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    console.print(f"wrote {OUT.relative_to(ROOT)} ({len(text)} bytes)")


if __name__ == "__main__":
    main()
