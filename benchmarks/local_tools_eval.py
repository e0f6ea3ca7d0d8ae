"""How well the embedded model chooses between calling a tool and answering (auto mode).

Runs ``agency.chat_model("local:smollm2").bind_tools(tools)`` (``tool_choice`` left to the
model, as an agent loop binds them) over the labelled prompts in ``benchmarks/data/``:
``local_auto_tools.dev.jsonl`` (20 prompts, the set the prompt format was chosen on) and
``local_auto_tools.test.jsonl`` (36 prompts written with it, before any run, and not tuned on).
Each row has the tools offered (OpenAI function format), the user's prompt and ``expect``: the
tool that should be called, or null when the model should answer in words.

Prints per split: precision / recall / F1 of both classes (call, answer), accuracy, how often
a call names the expected tool, how many calls are valid (arguments validate against the
tool's JSON schema with ``jsonschema``: the grammar promises 100%), and p50 / p95 latency of
one call per outcome. ``--show`` prints every prompt with its outcome; ``--call-bias`` runs with another
``AUTO_TOOLS_CALL_BIAS`` (sweep it on dev, never on test).

    python benchmarks/local_tools_eval.py [--split dev|test|both] [--show] [--call-bias B]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `agency` from a checkout

import agency
from agency.providers import _local_tools

DATA = Path(__file__).resolve().parent / "data"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def evaluate(split: str, show: bool, console: Console) -> dict[str, Any]:
    """Run one split; return its counts and latencies."""
    rows = [json.loads(line) for line in (DATA / f"local_auto_tools.{split}.jsonl").open()]
    llm = agency.chat_model("local:smollm2", temperature=0)
    llm.invoke("Hi")  # load the model outside the timings
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0, "right_tool": 0, "valid": 0}
    latency: dict[str, list[float]] = {"call": [], "answer": []}
    for row in rows:
        schemas = {t["function"]["name"]: t["function"]["parameters"] for t in row["tools"]}
        started = time.perf_counter()
        message = llm.bind_tools(row["tools"]).invoke(row["prompt"])
        elapsed = time.perf_counter() - started
        calls = message.tool_calls
        latency["call" if calls else "answer"].append(elapsed)
        expected = row["expect"]
        if calls:
            call = calls[0]
            try:
                jsonschema.validate(call["args"], schemas[call["name"]])
                counts["valid"] += 1
            except (jsonschema.ValidationError, KeyError):
                pass
            counts["tp" if expected else "fp"] += 1
            counts["right_tool"] += call["name"] == expected
        else:
            counts["fn" if expected else "tn"] += 1
        if show:
            got = f"{calls[0]['name']}({json.dumps(calls[0]['args'])})" if calls else message.text
            mark = "ok" if bool(calls) == bool(expected) else "XX"
            console.print(f"{mark} {row['prompt'][:60]!r:64} expect={expected} got={got[:70]!r}")
    return {"split": split, "n": len(rows), **counts, "latency": latency}


def report(results: list[dict[str, Any]], console: Console) -> None:
    """Print one table row per split and class."""
    bias = _local_tools.AUTO_TOOLS_CALL_BIAS
    table = Table(title=f"local:smollm2, tool_choice left to the model (call bias {bias})")
    for col in ("split", "class", "n", "precision", "recall", "F1", "p50 s", "p95 s"):
        table.add_column(col, justify="left" if col in ("split", "class") else "right")
    for r in results:
        call = _prf(r["tp"], r["fp"], r["fn"])
        answer = _prf(r["tn"], r["fn"], r["fp"])
        for name, (p, rec, f1), n, lat in (
            ("call a tool", call, r["tp"] + r["fn"], r["latency"]["call"]),
            ("answer", answer, r["tn"] + r["fp"], r["latency"]["answer"]),
        ):
            table.add_row(
                r["split"], name, str(n), f"{p:.2f}", f"{rec:.2f}", f"{f1:.2f}",
                f"{statistics.median(lat) if lat else 0:.2f}", f"{_pct(lat, 0.95):.2f}",
            )  # fmt: skip
    console.print(table)
    for r in results:
        calls = r["tp"] + r["fp"]
        accuracy = (r["tp"] + r["tn"]) / r["n"]
        console.print(
            f"{r['split']}: accuracy {accuracy:.2f} ({r['tp'] + r['tn']}/{r['n']}); "
            f"calls naming the expected tool {r['right_tool']}/{r['tp']}; "
            f"valid calls {r['valid']}/{calls} (arguments validate against the tool's schema)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("dev", "test", "both"), default="both")
    parser.add_argument("--show", action="store_true", help="print every prompt's outcome")
    parser.add_argument(
        "--call-bias",
        type=float,
        default=_local_tools.AUTO_TOOLS_CALL_BIAS,
        help="AUTO_TOOLS_CALL_BIAS to run with (calibrate on dev only)",
    )
    args = parser.parse_args()
    _local_tools.AUTO_TOOLS_CALL_BIAS = args.call_bias
    console = Console()
    splits = ("dev", "test") if args.split == "both" else (args.split,)
    report([evaluate(s, args.show, console) for s in splits], console)


if __name__ == "__main__":
    main()
