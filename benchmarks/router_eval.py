"""Evaluate the task router on the labelled dev prompts: accuracy, macro-F1, latency.

Reads ``../shared/eval/router_eval.dev.jsonl`` (never copied into the repository) and prints,
for each router, accuracy, macro-F1, per-class precision / recall / F1, the confusion matrix
and p50 / p95 latency of one ``TaskRouter.route(task)`` call (embedding included):

1. nearest examples: the built-in roles' own example tasks, nothing fitted on the dev file;
2. the learned router, stratified 5-fold cross-validated: parameters fitted by
   ``benchmarks/fit_router.py``'s code on 4/5 of the prompts, the other 1/5 routed by a real
   `TaskRouter` holding them, pooled over the folds;
3. the same with a custom ``legal`` role added (examples written for this script): how many
   dev prompts it takes from the built-in roles, and how it routes legal tasks of its own;
4. with ``--llm SPEC`` (e.g. ``local:smollm2``): the LLM-assisted path, cross-validated the
   same way; tasks below the fold's calibrated ``llm_threshold`` are classified by the model.

    python benchmarks/router_eval.py [--folds 5] [--llm local:smollm2] [--llm-threshold T]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))  # fit_router beside this file
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `agency` from a checkout

import fit_router
from fit_router import CLASSES

from agency.agents import _features
from agency.agents.roles import BUILTIN_ROLES, Role
from agency.agents.router import RouteDecision, TaskRouter, learned_parameters

LEGAL = Role(
    name="legal",
    description="Law: contracts, tenants' and employees' rights, liability, courts, "
    "intellectual property and compliance.",
    system_prompt="You are a careful legal assistant; say when a lawyer is needed.",
    examples=(
        "Is a verbal agreement legally binding if nothing was signed?",
        "What should a non-disclosure agreement include to be enforceable?",
        "My landlord kept my security deposit without explanation; what are my rights?",
        "Can my employer fire me for posting about the company on social media?",
        "Draft a clause limiting liability for indirect damages in a software license.",
        "What is the difference between a misdemeanor and a felony?",
        "How do I register a trademark for my small business name?",
        "Explain the statute of limitations for breach of contract claims.",
    ),
)
"""A custom role, to show one takes part in routing with no code change."""
LEGAL_TASKS = (
    "Is it legal to record a phone call without telling the other person?",
    "Who owns the copyright of a photo I took of a painting in a museum?",
    "Can I break my apartment lease early if I lose my job?",
    "What does 'force majeure' mean in a supply contract?",
    "Do I need a lawyer to file for a divorce if we both agree?",
    "Can a company use my name in its advertising without my permission?",
)
"""Legal tasks (written for this script) the custom role should win."""


def percentile_us(seconds: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1e6, q)) if seconds else float("nan")


def report(
    console: Console,
    title: str,
    y: Any,
    pred: Any,
    latencies: Sequence[float],
    labels: Sequence[str] = CLASSES,
) -> None:
    """Summary, per-class precision / recall / F1 and the confusion matrix (rows: truth)."""
    n_true = len(CLASSES)
    matrix = _features.confusion(y, pred, len(labels))[:n_true]
    f1s = []
    per_class = Table(title=f"{title}: per class")
    for column in ("role", "precision", "recall", "F1", "support"):
        per_class.add_column(column, justify="left" if column == "role" else "right")
    for c, name in enumerate(CLASSES):
        tp, predicted, support = matrix[c, c], matrix[:, c].sum(), matrix[c].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        f1s.append(f1)
        per_class.add_row(name, f"{precision:.3f}", f"{recall:.3f}", f"{f1:.3f}", str(support))
    summary = Table(title=title)
    for column in ("prompts", "accuracy", "macro-F1", "p50 route", "p95 route"):
        summary.add_column(column, justify="right")
    summary.add_row(
        str(len(y)),
        f"{float(np.mean(np.asarray(y) == np.asarray(pred))):.3f}",
        f"{float(np.mean(f1s)):.3f}",
        f"{percentile_us(latencies, 50):.0f} us",
        f"{percentile_us(latencies, 95):.0f} us",
    )
    confusion = Table(title=f"{title}: confusion (rows: label, columns: routed to)")
    confusion.add_column("label")
    for name in labels:
        confusion.add_column(name, justify="right")
    for c, name in enumerate(CLASSES):
        confusion.add_row(name, *(str(v) for v in matrix[c]))
    console.print(summary, per_class, confusion)


def route_each(
    router: TaskRouter, texts: Sequence[str], roles: Sequence[str] = CLASSES
) -> tuple[list[int], list[float], list[RouteDecision]]:
    """Route one task at a time (as a service would), timing every call."""
    pred, latencies, decisions = [], [], []
    for text in texts:
        started = time.perf_counter()
        decision = router.route(text)
        latencies.append(time.perf_counter() - started)
        pred.append(list(roles).index(decision.role))
        decisions.append(decision)
    return pred, latencies, decisions


def cross_validated(
    texts: Sequence[str],
    dev: fit_router.Inputs,
    sims: Any,
    examples: fit_router.Inputs,
    folds: int,
    make_router: Callable[[dict[str, Any]], TaskRouter],
    roles: Sequence[str] = CLASSES,
    on_fold: Callable[[int], None] | None = None,
) -> tuple[Any, list[float], list[RouteDecision]]:
    """Pooled out-of-fold predictions of routers built on parameters fitted per fold."""
    y = dev.y
    pred = np.zeros(len(y), dtype=int)
    latencies = [0.0] * len(y)
    decisions: list[RouteDecision | None] = [None] * len(y)
    for k, fold in enumerate(_features.stratified_folds(y, folds, fit_router.SEED)):
        train = np.setdiff1d(np.arange(len(y)), fold)
        router = make_router(fit_router.fit_parameters(dev.take(train), sims[train], examples))
        fold_pred, fold_latencies, fold_decisions = route_each(
            router, [texts[i] for i in fold], roles
        )
        pred[fold] = fold_pred
        for i, latency, decision in zip(fold, fold_latencies, fold_decisions, strict=True):
            latencies[i], decisions[i] = latency, decision
        if on_fold:
            on_fold(k)
    return pred, latencies, [d for d in decisions if d is not None]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--llm", default=None, help='a chat model spec, e.g. "local:smollm2"')
    parser.add_argument(
        "--llm-threshold", type=float, default=None, help="default: each fold's calibrated one"
    )
    args = parser.parse_args(argv)
    console = Console(emoji=False, width=110)
    texts, y = fit_router.read_dev()
    dev = fit_router.inputs(texts, y)
    examples = fit_router.builtin_examples()
    sims = fit_router.example_similarities(texts)
    shipped = learned_parameters()

    # 1. Nearest examples, nothing fitted.
    nearest = TaskRouter(
        BUILTIN_ROLES, parameters=fit_router.similarity_only(shipped["similarity"]["scale"])
    )
    route_each(nearest, texts[:20])  # warm-up: first calls load and compile
    pred, latencies, _ = route_each(nearest, texts)
    report(console, "nearest examples (built-in examples, no fitting)", y, pred, latencies)

    # 2. The learned router, cross-validated.
    def progress(k: int) -> None:
        console.print(f"[dim]fold {k + 1}/{args.folds} done[/dim]")

    pred, latencies, decisions = cross_validated(
        texts, dev, sims, examples, args.folds, lambda p: TaskRouter(parameters=p), on_fold=progress
    )
    report(console, f"learned router ({args.folds}-fold cross-validated)", y, pred, latencies)
    confidence = np.array([d.confidence for d in decisions])
    console.print(
        f"mean confidence {confidence.mean():.3f}; accuracy {np.mean(pred == y):.3f}; "
        f"shipped llm_threshold {shipped['llm_threshold']}"
    )
    batch_router = TaskRouter()
    started = time.perf_counter()
    batch_router.route_batch(texts)
    per_task = (time.perf_counter() - started) / len(texts)
    console.print(f"route_batch over all {len(texts)} prompts: {per_task * 1e6:.0f} us per task")

    # 3. A custom role added with no code change.
    roles = (*CLASSES, LEGAL.name)
    pred, latencies, _ = cross_validated(
        texts,
        dev,
        sims,
        examples,
        args.folds,
        lambda p: TaskRouter({**BUILTIN_ROLES, LEGAL.name: LEGAL}, parameters=p),
        roles=roles,
    )
    report(
        console,
        "learned router + custom 'legal' role (cross-validated)",
        y,
        pred,
        latencies,
        roles,
    )
    legal_router = TaskRouter({**BUILTIN_ROLES, LEGAL.name: LEGAL})
    won = [legal_router.route(t) for t in LEGAL_TASKS]
    console.print(
        f"custom role: {int(np.sum(pred == len(CLASSES)))} of {len(texts)} dev prompts routed to "
        f"'legal'; {sum(d.role == LEGAL.name for d in won)} of {len(LEGAL_TASKS)} legal tasks "
        f"(written for this script) routed to it: {[d.role for d in won]}"
    )

    # 4. The LLM-assisted path.
    if args.llm:
        evaluate_llm(console, args, texts, dev, sims, examples)


def evaluate_llm(
    console: Console,
    args: argparse.Namespace,
    texts: list[str],
    dev: fit_router.Inputs,
    sims: Any,
    examples: fit_router.Inputs,
) -> None:
    """Cross-validated routers that ask ``args.llm`` below the threshold."""
    import agency

    llm = agency.chat_model(args.llm, temperature=0)

    def make(params: dict[str, Any]) -> TaskRouter:
        return TaskRouter(parameters=params, llm=llm, llm_threshold=args.llm_threshold)

    def progress(k: int) -> None:
        console.print(f"[dim]LLM fold {k + 1}/{args.folds} done[/dim]")

    y = dev.y
    pred, latencies, decisions = cross_validated(
        texts, dev, sims, examples, args.folds, make, on_fold=progress
    )
    report(console, f"LLM-assisted router, {args.llm} ({args.folds}-fold CV)", y, pred, latencies)
    asked = [i for i, d in enumerate(decisions) if d.path == "llm" or "LLM failed" in d.reason]
    answered = [i for i in asked if decisions[i].path == "llm"]
    llm_right = sum(int(pred[i] == y[i]) for i in answered)
    offline_right = sum(int(CLASSES.index(_offline_role(decisions[i])) == y[i]) for i in answered)
    llm_latency = [latencies[i] for i in asked]
    console.print(
        f"LLM asked for {len(asked)} of {len(texts)} prompts ({len(asked) / len(texts):.1%}); "
        f"it answered {len(answered)} (failures kept the offline choice: "
        f"{len(asked) - len(answered)}); on those it answered, LLM right {llm_right}, offline "
        f"would have been right {offline_right}; LLM-path latency p50 "
        f"{percentile_us(llm_latency, 50) / 1000:.0f} ms, p95 "
        f"{percentile_us(llm_latency, 95) / 1000:.0f} ms"
    )


def _offline_role(decision: RouteDecision) -> str:
    """The offline choice behind an LLM decision (the highest offline score)."""
    return max(decision.scores, key=decision.scores.__getitem__)


if __name__ == "__main__":
    main()
