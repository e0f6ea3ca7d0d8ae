"""What the workflow engine costs and what it buys, against fake OpenAI servers on 127.0.0.1.

    python benchmarks/workflow_bench.py [--runs 200] [--overhead-runs 100] [--concurrency 10]

1. Per-step overhead: the same chain of steps (each one call of the same agency chat model,
   streamed, as the engine calls it) run by our `Workflow` and by a hand-written LangGraph
   ``StateGraph`` (without a checkpointer, and with the same ``AsyncSqliteSaver`` ours uses),
   at 2 and 10 steps: the slope is the cost of a step, the rest the fixed cost of a run. The
   goal is under 1 ms a step over LangGraph.
2. Soak: ``--runs`` runs of a 5-step workflow; the primary server fails 30% of requests (429
   with retry-after, 500, 503), a backup is healthy. Our workflow falls back across the two; the
   same workflow as a plain LangGraph graph (``ChatOpenAI`` on the primary, SDK retries off,
   LangGraph's default ``RetryPolicy`` on every node) has no backup. The servers count requests
   and successes per (run, step): the goal is 200/200 runs completed and no step asked again
   after a success.
3. Resume after ``kill -9``: a child process runs the workflow (each answer held 0.2 s), is
   SIGKILLed while a chosen step waits for its answer, and the run is resumed here; the server
   counts what each step asked after the kill (finished steps: 0) and the resume is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypedDict

sys.path.insert(0, str(Path(__file__).parent))

from _faulty_server import _ANSWER, _PIECES, _chunk
from overhead import _free_port, _wait

STEPS = ("s1", "s2", "s3", "s4", "s5")
SHORT, LONG = 2, 10  # chain lengths of the overhead measurement (per step = the slope)
MAX_TOKENS = 16
FAULTS = ("429", "500", "503")
HELD_S = 0.2  # how long the resume server holds each answer
_MARK = re.compile(r"\[([^\]/]+)/([^\]]+)\]")  # "[run/step]" at the start of every prompt


# ------------------------------------------------------------------------- the fake server
def make_app(rate: float, seed: int, delay_s: float) -> Callable[..., Awaitable[None]]:
    """An OpenAI chat server: with probability ``rate`` a 429/500/503, else an answer (a stream
    when asked) after ``delay_s``. ``GET /count``: requests and successes per ``run/step``
    (read from the prompt's ``[run/step]`` mark); ``POST /reset`` zeroes them and the seed."""
    state: dict[str, Any] = {"rng": random.Random(seed), "asked": Counter(), "ok": Counter()}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return

        async def respond(status: int, body: bytes, headers: list[Any] | None = None) -> None:
            head = [(b"content-type", b"application/json"), *(headers or [])]
            await send({"type": "http.response.start", "status": status, "headers": head})
            await send({"type": "http.response.body", "body": body})

        if scope["path"] == "/count":
            counts = {"asked": state["asked"], "ok": state["ok"]}
            return await respond(200, json.dumps(counts).encode())
        if scope["path"] == "/reset":
            state.update(rng=random.Random(seed), asked=Counter(), ok=Counter())
            return await respond(200, b"{}")
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        request = json.loads(body)
        text = " ".join(str(m.get("content")) for m in request["messages"])
        found = _MARK.search(text)
        key = f"{found[1]}/{found[2]}" if found else "?"
        state["asked"][key] += 1
        rng: random.Random = state["rng"]
        if rng.random() < rate:
            fault = rng.choice(FAULTS)
            kind = "rate_limit_exceeded" if fault == "429" else "server_error"
            error = {"error": {"message": "injected", "type": kind, "code": kind}}
            headers = [(b"retry-after", b"1")] if fault == "429" else []
            return await respond(int(fault), json.dumps(error).encode(), headers)
        if delay_s:
            await asyncio.sleep(delay_s)
        state["ok"][key] += 1
        if request.get("stream"):
            events = [_chunk({"role": "assistant", "content": ""})]
            events += [_chunk({"content": p}) for p in _PIECES]
            events += [_chunk({}, "stop"), _chunk({}, usage=_ANSWER["usage"]), b"data: [DONE]\n\n"]
            head = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            await send({"type": "http.response.body", "body": b"".join(events)})
        else:
            await respond(200, json.dumps(_ANSWER).encode())

    return app


def _serve(port: int, rate: float, seed: int, delay_s: float) -> None:
    import logging

    import uvicorn

    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
    app = make_app(rate, seed, delay_s)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="critical", lifespan="off")


def _start(rate: float = 0.0, seed: int = 7, delay_s: float = 0.0) -> tuple[Any, str]:
    port = _free_port()
    proc = multiprocessing.Process(target=_serve, args=(port, rate, seed, delay_s), daemon=True)
    proc.start()
    _wait(port)
    return proc, f"http://127.0.0.1:{port}/v1"


def _counts(*urls: str) -> tuple[Counter[str], Counter[str]]:
    """Requests and successes per ``run/step``, summed over the servers."""
    import httpx

    asked: Counter[str] = Counter()
    ok: Counter[str] = Counter()
    for url in urls:
        data = httpx.get(url.removesuffix("/v1") + "/count").json()
        asked.update(data["asked"])
        ok.update(data["ok"])
    return asked, ok


def _reset(*urls: str) -> None:
    import httpx

    for url in urls:
        httpx.post(url.removesuffix("/v1") + "/reset")


# ------------------------------------------------------------------------- the workflows
def _agency(*entries: tuple[str, str]) -> Any:
    from agency import Agency, AgencyConfig

    providers = [
        {
            "name": name,
            "provider": "openai-compatible",
            "api_key": "sk-bench",
            "base_url": url,
            "text_model": "gpt-4o-mini",
            "priority": i + 1,
            "timeout": 10,
        }
        for i, (name, url) in enumerate(entries)
    ]
    fallback = {"enabled": True, "max_attempts": 3, "retry_delay_ms": 0}
    return Agency(AgencyConfig.from_dict({"llm": {"providers": providers, "fallback": fallback}}))


def _names(n: int) -> tuple[str, ...]:
    return tuple(f"s{i + 1}" for i in range(n))


def _prompt(i: int) -> str:
    """Step ``i``'s prompt: the run's mark, then the previous step's answer."""
    previous = "rid" if i == 0 else f"s{i}"
    return f"[{{rid}}/s{i + 1}] Say hi, then add a word to: {{{previous}}}"


def our_workflow(agency: Any, n: int = len(STEPS)) -> Any:
    """``n`` steps in a chain, each reading the one before (``rid`` marks the run)."""
    from agency.workflows import Step, Workflow

    wf = Workflow(f"bench{n}", agency=agency, inputs=["rid"])
    names = _names(n)
    for i, step in enumerate(names):
        after = [names[i - 1]] if i else []
        wf.add(Step(step, prompt=_prompt(i), after=after, max_tokens=MAX_TOKENS))
    return wf


def langgraph_graph(
    call: Callable[[str], Awaitable[str]], n: int = len(STEPS), retry: Any = None
) -> Any:
    """The same ``n`` steps as a hand-written LangGraph graph; ``call`` asks the model. (The
    state is a plain dict: LangGraph keeps every key a node returns under a ``total=False``
    TypedDict only when declared, so the keys are declared here.)"""
    from langgraph.graph import END, START, StateGraph

    names = _names(n)
    state = TypedDict("state", {"rid": str, **{s: str for s in names}}, total=False)  # type: ignore[misc]
    graph = StateGraph(state)

    def node(i: int) -> Callable[[dict[str, str]], Awaitable[dict[str, str]]]:
        async def run(state: dict[str, str]) -> dict[str, str]:
            return {names[i]: await call(_prompt(i).format(**state))}

        return run

    for i, step in enumerate(names):
        graph.add_node(step, node(i), retry_policy=retry)
        graph.add_edge(START if i == 0 else names[i - 1], step)
    graph.add_edge(names[-1], END)
    return graph


def _streamed(model: Any) -> Callable[[str], Awaitable[str]]:
    """Ask as the engine does: a streamed answer, joined."""

    async def call(prompt: str) -> str:
        from langchain_core.messages import HumanMessage

        parts = [chunk.text async for chunk in model.astream([HumanMessage(prompt)])]
        return "".join(parts)

    return call


# ------------------------------------------------------------------------- 1. overhead
async def overhead(url: str, runs: int, folder: str) -> dict[str, dict[int, float]]:
    """Median seconds per run of each engine, for chains of SHORT and LONG steps."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    ag = _agency(("main", url))
    call = _streamed(ag.chat_model(max_tokens=MAX_TOKENS))
    kinds = ("ours", "langgraph", "langgraph+sqlite")
    samples: dict[tuple[str, int], list[float]] = {(k, n): [] for k in kinds for n in (SHORT, LONG)}
    async with AsyncSqliteSaver.from_conn_string(os.path.join(folder, "lg.sqlite")) as saver:
        engines: dict[tuple[str, int], Any] = {}
        for n in (SHORT, LONG):
            engines["ours", n] = our_workflow(ag, n)
            engines["langgraph", n] = langgraph_graph(call, n).compile()
            engines["langgraph+sqlite", n] = langgraph_graph(call, n).compile(checkpointer=saver)
        checkpoint = os.path.join(folder, "ours.sqlite")

        async def one(kind: str, n: int, i: int) -> None:
            rid = f"{kind[:2]}{n}x{i}"
            engine = engines[kind, n]
            started = time.perf_counter()
            if kind == "ours":
                run = await engine.arun({"rid": rid}, run_id=rid, checkpoint=checkpoint)
                assert run.status == "completed", run.error
            elif kind == "langgraph":
                await engine.ainvoke({"rid": rid})
            else:
                await engine.ainvoke({"rid": rid}, {"configurable": {"thread_id": rid}})
            if i >= 0:
                samples[kind, n].append(time.perf_counter() - started)

        order = list(samples)
        for i in range(5):  # warm-up: imports, connections, SQLite files
            for kind, n in order:
                await one(kind, n, -1 - i)
        for i in range(runs):  # interleaved and rotated, so drift hits all alike
            shift = i % len(order)
            for kind, n in order[shift:] + order[:shift]:
                await one(kind, n, i)
    ag.close()
    medians: dict[str, dict[int, float]] = {k: {} for k in kinds}
    for (kind, n), times in samples.items():
        medians[kind][n] = statistics.median(times)
    return medians


# ------------------------------------------------------------------------- 2. soak
async def _many(runs: int, concurrency: int, one: Callable[[int], Awaitable[bool]]) -> list[bool]:
    gate = asyncio.Semaphore(concurrency)

    async def bounded(i: int) -> bool:
        async with gate:
            return await one(i)

    return await asyncio.gather(*(bounded(i) for i in range(runs)))


def _repeats(asked: Counter[str], ok: Counter[str], runs: list[str]) -> dict[str, int]:
    keys = [f"{rid}/{step}" for rid in runs for step in STEPS]
    return {
        "requests": sum(asked[k] for k in keys),
        "beyond_one": sum(max(0, asked[k] - 1) for k in keys),
        "after_success": sum(max(0, ok[k] - 1) for k in keys),
    }


async def soak(primary: str, backup: str, runs: int, concurrency: int, folder: str) -> list[Any]:
    from langchain_openai import ChatOpenAI
    from langgraph.types import RetryPolicy

    rows = []
    _reset(primary, backup)
    ag = _agency(("primary", primary), ("backup", backup))
    wf = our_workflow(ag)
    checkpoint = os.path.join(folder, "soak.sqlite")
    errors: Counter[str] = Counter()

    async def ours(i: int) -> bool:
        run = await wf.arun({"rid": f"w{i}"}, run_id=f"w{i}", checkpoint=checkpoint)
        errors[str(run.error)[:80]] += run.status != "completed"
        return bool(run.status == "completed")

    started = time.perf_counter()
    done = await _many(runs, concurrency, ours)
    wall = time.perf_counter() - started
    ag.close()
    asked, ok = _counts(primary, backup)
    rows.append(
        (
            "agency Workflow (fallback)",
            sum(done),
            wall,
            _repeats(asked, ok, [f"w{i}" for i in range(runs)]),
        )
    )

    _reset(primary, backup)
    model = ChatOpenAI(
        model="gpt-4o-mini",
        base_url=primary,
        api_key="sk-bench",
        max_retries=0,
        max_tokens=MAX_TOKENS,
    )

    async def call(prompt: str) -> str:
        return str((await model.ainvoke(prompt)).text)

    graph = langgraph_graph(call, retry=RetryPolicy()).compile()

    async def plain(i: int) -> bool:
        try:
            await graph.ainvoke({"rid": f"g{i}"})
        except Exception as exc:  # a run that exhausted its retries
            errors[f"langgraph: {type(exc).__name__}"] += 1
            return False
        return True

    started = time.perf_counter()
    done = await _many(runs, concurrency, plain)
    wall = time.perf_counter() - started
    asked, ok = _counts(primary, backup)
    rows.append(
        (
            "LangGraph + RetryPolicy",
            sum(done),
            wall,
            _repeats(asked, ok, [f"g{i}" for i in range(runs)]),
        )
    )
    return [rows, errors]


# ------------------------------------------------------------------------- 3. kill -9
def _child(url: str, checkpoint: str, run_id: str) -> None:
    """The child process: run the workflow to the end (it is killed before that)."""
    run = our_workflow(_agency(("main", url))).run(
        {"rid": run_id}, run_id=run_id, checkpoint=checkpoint
    )
    print(run.status, flush=True)


def kill_and_resume(url: str, folder: str, during: str) -> dict[str, Any]:
    checkpoint = os.path.join(folder, "kill.sqlite")
    run_id = f"k{during}"
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", url, checkpoint, run_id],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    try:
        while _counts(url)[0][f"{run_id}/{during}"] < 1:  # the step is waiting for its answer
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the child ended early: {child.communicate()[1]!r}")
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    before = _counts(url)[0]
    _reset(url)
    ag = _agency(("main", url))
    wf = our_workflow(ag)
    started = time.perf_counter()
    run = wf.resume(run_id, checkpoint=checkpoint)
    seconds = time.perf_counter() - started
    ag.close()
    after = _counts(url)[0]
    return {
        "status": run.status,
        "before": [before[f"{run_id}/{s}"] for s in STEPS],
        "after": [after[f"{run_id}/{s}"] for s in STEPS],
        "seconds": seconds,
        "killed": child.returncode == -signal.SIGKILL,
    }


# ------------------------------------------------------------------------- report
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="soak runs")
    parser.add_argument("--overhead-runs", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=10, help="soak runs at once")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    folder = tempfile.mkdtemp(prefix="workflow_bench_")
    servers = []
    try:
        server, healthy = _start()
        servers.append(server)
        medians = asyncio.run(overhead(healthy, args.overhead_runs, folder))
        title = f"1. engine overhead: chains of {SHORT} and {LONG} steps, median of {args.overhead_runs} runs"
        table = Table(title=title)
        columns = (
            "engine",
            f"ms per run, {SHORT} steps",
            f"ms per run, {LONG} steps",
            "ms per step (slope)",
            "ms per run (fixed)",
            "ours over it per step",
            "ours over it per 5-step run",
        )
        for column in columns:
            table.add_column(column, justify="right" if column != "engine" else "left")

        def slope(kind: str) -> float:
            return (medians[kind][LONG] - medians[kind][SHORT]) / (LONG - SHORT)

        def per_run(kind: str, n: int) -> float:
            return medians[kind][SHORT] + slope(kind) * (n - SHORT)

        for kind in medians:
            fixed = medians[kind][SHORT] - SHORT * slope(kind)
            ours = kind == "ours"
            table.add_row(
                kind,
                f"{medians[kind][SHORT] * 1000:.2f}",
                f"{medians[kind][LONG] * 1000:.2f}",
                f"{slope(kind) * 1000:.3f}",
                f"{fixed * 1000:.2f}",
                "-" if ours else f"{(slope('ours') - slope(kind)) * 1000:+.3f}",
                "-" if ours else f"{(per_run('ours', 5) - per_run(kind, 5)) / 5 * 1000:+.3f} /step",
            )
        console.print(table)
        console.print(
            "  goal: under 1 ms per step over LangGraph. 'per step' is the slope between the two "
            "chain lengths; the last column spreads the fixed per-run cost over 5 steps too."
        )

        server, primary = _start(rate=0.3, seed=11)
        servers.append(server)
        server, backup = _start()
        servers.append(server)
        rows, errors = asyncio.run(soak(primary, backup, args.runs, args.concurrency, folder))
        table = Table(
            title=f"2. soak: {args.runs} runs x {len(STEPS)} steps, primary 30% 429/500/503"
        )
        for column in (
            "engine",
            "runs completed",
            "model requests",
            "beyond one per step",
            "asked again after a success",
            "wall s",
        ):
            table.add_column(column, justify="right" if column != "engine" else "left")
        for name, completed, wall, counts in rows:
            table.add_row(
                name,
                f"{completed}/{args.runs}",
                str(counts["requests"]),
                str(counts["beyond_one"]),
                str(counts["after_success"]),
                f"{wall:.1f}",
            )
        console.print(table)
        for error, n in errors.most_common(5):
            if n:
                console.print(f"  failed runs: {n} x {error}", markup=False)
        console.print("  goal: 200/200 completed, 0 asked again after a success")

        server, slow = _start(delay_s=HELD_S)
        servers.append(server)
        table = Table(title=f"3. kill -9 mid-step, then resume (each answer held {HELD_S} s)")
        for column in (
            "killed during",
            "requests before",
            "requests on resume",
            "status",
            "resume s",
            "resume s, less the held answers",
        ):
            table.add_column(column)
        for during in STEPS[1:]:
            result = kill_and_resume(slow, folder, during)
            assert result["killed"], "the child was not killed by SIGKILL"
            table.add_row(
                during,
                " ".join(map(str, result["before"])),
                " ".join(map(str, result["after"])),
                result["status"],
                f"{result['seconds']:.2f}",
                f"{result['seconds'] - HELD_S * sum(result['after']):.3f}",
            )
        console.print(table)
        console.print(
            f"  requests per step s1..s5; goal: 0 for the steps finished before the kill. "
            f"Resume time includes {HELD_S} s per step asked."
        )
    finally:
        for server in servers:
            server.terminate()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(*sys.argv[2:5])
    else:
        main()
