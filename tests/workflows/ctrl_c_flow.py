"""A workflow whose second step waits forever, for the Ctrl-C test.

python ctrl_c_flow.py CHECKPOINT READY_FILE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from agency.app import Agency
from agency.workflows import Step, Workflow


def build(ready: Path | None = None) -> Workflow:
    async def slow(state: dict[str, Any]) -> str:
        if ready is not None:
            ready.write_text("waiting")
        await asyncio.sleep(600)
        return "late"

    wf = Workflow("ctrl-c", agency=Agency())
    wf.add(Step("first", fn=lambda s: "one"), Step("slow", fn=slow, after=["first"]))
    return wf


if __name__ == "__main__":
    checkpoint, ready = sys.argv[1], Path(sys.argv[2])
    build(ready).run({}, run_id="cx", checkpoint=checkpoint)
