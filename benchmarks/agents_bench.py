"""What an `agency.agents.Agent` adds to LangChain's own agent loop, and what memory costs.

    python benchmarks/agents_bench.py [--runs 200] [--tool-steps 3]

1. Loop overhead: the same scripted chat model (in process, no network: each run makes
   ``--tool-steps`` tool calls, then answers) driven by LangChain's ``create_agent`` directly
   and by our `Agent` (the same ``create_agent`` plus our middleware: the step bound, tool
   errors to the model, the budget check, events and the result summary). Reported per model
   step (a step = one model call and its tool call); the goal is within 0.3 ms of the bare loop.
2. Memory's share: the same agent with a `VectorMemory` (ephemeral chromadb, the embedded
   wordllama embeddings) recalling 3 memories before and keeping the exchange after.

The A2A round trip (our server against a bare a2a-sdk server) is measured by
``benchmarks/a2a_bench.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from rich.console import Console
from rich.table import Table


class ScriptedModel(BaseChatModel):
    """Calls ``lookup`` until it has ``steps`` tool results, then answers; costs nothing."""

    steps: int = 3

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kw: Any) -> ChatResult:
        done = sum(isinstance(m, ToolMessage) for m in messages)
        if done < self.steps:
            call = {"name": "lookup", "args": {"key": f"k{done}"}, "id": f"c{done}"}
            message = AIMessage("", tool_calls=[call], response_metadata={"cost": 0.0})
        else:
            message = AIMessage("done", response_metadata={"cost": 0.0})
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(self, messages: list[BaseMessage], stop: Any = None, **kw: Any) -> Any:
        return self._generate(messages, stop)


def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


async def _time(make: Any, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await make()
        samples.append(time.perf_counter() - start)
    return samples


async def main(runs: int, tool_steps: int) -> None:
    from langchain.agents import create_agent

    from agency.agents import Agent
    from agency.app import Agency

    model = ScriptedModel(steps=tool_steps)
    bare = create_agent(model, tools=[lookup])
    agency = Agency()
    ours = Agent("bench", model=model, tools=[lookup], agency=agency, max_steps=50)
    budgeted = Agent("bench", model=model, tools=[lookup], agency=agency, budget_usd=1.0)
    steps = tool_steps + 1
    rows: list[tuple[str, list[float]]] = []
    for name, call in (
        ("create_agent (bare LangChain)", lambda: bare.ainvoke({"messages": [("user", "go")]})),
        ("agency Agent", lambda: ours.ainvoke("go")),
        ("agency Agent + budget", lambda: budgeted.ainvoke("go")),
    ):
        await _time(call, 10)  # warm up
        rows.append((name, await _time(call, runs)))

    console = Console()
    table = Table(title=f"Agent loop: {runs} runs of {steps} model steps ({tool_steps} tool calls)")
    for col in ("loop", "p50 ms/run", "p99 ms/run", "ms/step", "over bare, ms/step"):
        table.add_column(col, justify="right" if col != "loop" else "left")
    base = statistics.median(rows[0][1]) / steps
    for name, samples in rows:
        p50 = statistics.median(samples)
        p99 = sorted(samples)[int(len(samples) * 0.99) - 1]
        table.add_row(
            name,
            f"{p50 * 1e3:.2f}",
            f"{p99 * 1e3:.2f}",
            f"{p50 / steps * 1e3:.3f}",
            f"{(p50 / steps - base) * 1e3:+.3f}",
        )
    console.print(table)

    try:
        from agency.memory import VectorMemory
    except ImportError:  # pragma: no cover - the memory extra
        console.print("memory: chromadb is not installed (pip install agency[memory])")
        return
    memory = VectorMemory.ephemeral("bench-notes")
    for i in range(200):
        memory.remember(f"Fact number {i}: the value of k{i % 7} is {i}.")
    remembering = Agent("bench", model=model, tools=[lookup], agency=agency, memory=memory)
    plain = await _time(lambda: ours.ainvoke("what is k3?"), runs // 4 or 1)
    with_memory = await _time(lambda: remembering.ainvoke("what is k3?"), runs // 4 or 1)
    share = 1 - statistics.median(plain) / statistics.median(with_memory)
    mem = Table(title="Memory recall and keep (chromadb ephemeral, wordllama, 200 memories)")
    for col in ("agent", "p50 ms/run", "memory's share"):
        mem.add_column(col)
    mem.add_row("no memory", f"{statistics.median(plain) * 1e3:.2f}", "-")
    mem.add_row(
        "recall 3 + keep the exchange",
        f"{statistics.median(with_memory) * 1e3:.2f}",
        f"{share:.0%} of a run ({share * steps:.1f} steps' worth)",
    )
    console.print(mem)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--tool-steps", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.tool_steps))
