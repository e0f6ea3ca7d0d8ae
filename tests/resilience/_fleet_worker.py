"""One process of a fleet (tests/resilience/test_fleet.py): an `Agency` from the JSON config in
argv[1], calling as fast as it may for argv[2] seconds once the test says go.

Prints one JSON line: outcomes by exception type, and this process's view of the budget.
Barrier: it writes ``<dir>/ready-<pid>`` when its Agency is built, then waits for ``<dir>/go``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

from agency import Agency, AgencyConfig
from agency.resilience.breaker import BreakerPolicy


def main() -> None:
    spec = json.loads(sys.argv[1])
    seconds, barrier = float(sys.argv[2]), Path(sys.argv[3])
    agency = Agency(
        AgencyConfig.from_dict(spec["config"]),
        breaker_policy=BreakerPolicy(**spec.get("breaker", {})),
    )
    model = agency.chat_model()
    (barrier / f"ready-{os.getpid()}").touch()
    while not (barrier / "go").exists():
        time.sleep(0.005)
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and sum(outcomes.values()) < spec.get("max_calls", 10**6):
        try:
            model.invoke("Say hello", max_tokens=spec.get("max_tokens", 50))
            outcomes["ok"] += 1
        except Exception as exc:  # the outcome is what is counted
            outcomes[type(exc).__name__] += 1
        time.sleep(spec.get("pause_s", 0.0))
    budget = agency._pool.budget
    print(
        json.dumps(
            {
                "outcomes": outcomes,
                "spent": None if budget is None else budget.spent(),
            }
        )
    )


if __name__ == "__main__":
    main()
