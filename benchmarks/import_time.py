"""`import agency` next to `import langchain_core`: fresh interpreters, best of N runs.

    python benchmarks/import_time.py [--runs 10]

The target: `import agency` takes at most twice as long as `import langchain_core`
(heavy modules load on first use, not at import).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

STATEMENTS = {
    "python (nothing)": "pass",
    "import langchain_core": "import langchain_core",
    "import agency": "import agency",
    "agency.chat_model (first use)": "import agency; agency.chat_model('openai:gpt-4o-mini', api_key='sk-test')",
}


def best_of(statement: str, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    times = {name: best_of(stmt, args.runs) for name, stmt in STATEMENTS.items()}
    table = Table(title=f"import time, best of {args.runs} fresh interpreters")
    table.add_column("statement")
    table.add_column("seconds", justify="right")
    table.add_column("vs import langchain_core", justify="right")
    for name, seconds in times.items():
        table.add_row(name, f"{seconds:.3f}", f"{seconds / times['import langchain_core']:.2f}x")
    Console().print(table)
    ratio = times["import agency"] / times["import langchain_core"]
    print(f"import agency / import langchain_core = {ratio:.2f} (target <= 2.0)")


if __name__ == "__main__":
    main()
