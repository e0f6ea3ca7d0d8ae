"""Resilience of the `Agency` facade against local fault-injecting servers.

    python benchmarks/resilience.py [--calls 5000] [--concurrency 50] [--fault-rate 0.3]
                                    [--litellm-python PATH]

1. Soak: ``--calls`` calls (one in five streamed) over three providers, two of which inject
   ``--fault-rate`` mixed faults (429 with retry-after, 500, 503, 529, malformed JSON, a stall
   past the timeout, a connection reset, an SSE stream cut mid-answer). Every call must be
   answered, with attempts per call never above ``max_attempts``; the servers' own request
   counts are checked against the attempts the facade reports.
2. Dead primary (connection refused): latency the dead primary adds to the first call, and to
   calls once its breaker is open, next to the same facade without it.
3. The same scenario through LiteLLM's Router, when LiteLLM is importable here or in the
   interpreter given by ``--litellm-python`` (it runs in that process, against the same servers).
4. The facade's per-call overhead at concurrency 1 and 50, next to raw httpx and a bare
   ``agency.chat_model``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _faulty_server import serve
from overhead import _free_port, _wait

MESSAGES = [{"role": "user", "content": "Say hello"}]
MAX_ATTEMPTS = 4


def _start(rate: float, seed: int) -> tuple[multiprocessing.Process, str]:
    port = _free_port()
    proc = multiprocessing.Process(target=serve, args=(port, rate, seed), daemon=True)
    proc.start()
    _wait(port)
    return proc, f"http://127.0.0.1:{port}/v1"


def _dead_url() -> str:
    return f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there: connection refused


def _entry(name: str, url: str, priority: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "openai-compatible",
        "api_key": "sk-bench",
        "base_url": url,
        "text_model": "gpt-4o-mini",
        "priority": priority,
        **extra,
    }


def _agency(entries: list[dict[str, Any]], **fallback: Any) -> Any:
    from agency import Agency, AgencyConfig

    llm = {
        "providers": entries,
        "fallback": {"enabled": True, "max_attempts": MAX_ATTEMPTS, **fallback},
    }
    return Agency(AgencyConfig.from_dict({"llm": llm}))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


# ---------------------------------------------------------------------------- 1. soak
async def _soak(urls: list[str], calls: int, concurrency: int) -> dict[str, Any]:
    ag = _agency(
        [
            _entry(n, u, i + 1, timeout=0.5)
            for i, (n, u) in enumerate(zip(("flaky-a", "flaky-b", "steady"), urls, strict=True))
        ],
        strategy="round-robin",
        retry_delay_ms=20,
    )
    llm = ag.chat_model()
    gate = asyncio.Semaphore(concurrency)
    attempts: list[int] = []
    latencies: list[float] = []
    unanswered: list[str] = []
    failovers = 0

    async def one(i: int) -> None:
        nonlocal failovers
        async with gate:
            started = time.perf_counter()
            try:
                if i % 5 == 0:
                    merged: Any = None
                    async for chunk in llm.astream(MESSAGES):
                        merged = chunk if merged is None else merged + chunk
                    message = merged
                else:
                    message = await llm.ainvoke(MESSAGES)
            except Exception as exc:  # counted, and shown below
                unanswered.append(f"{type(exc).__name__}: {exc}"[:300])
                return
            latencies.append(time.perf_counter() - started)
            route = message.response_metadata["agency"]
            attempts.append(route["attempts"])
            failovers += bool(route["failover"])

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(calls)))
    wall = time.perf_counter() - started
    snapshot = ag.stats().snapshot()
    await ag.aclose()
    return {
        "wall": wall,
        "attempts": attempts,
        "latencies": latencies,
        "unanswered": unanswered,
        "failovers": failovers,
        "stats": snapshot,
    }


def _server_requests(url: str) -> int:
    import httpx

    return int(httpx.get(url.removesuffix("/v1") + "/count").json()["requests"])


# ---------------------------------------------------------------------------- 2. dead primary
def _dead_primary(steady: str, calls: int) -> dict[str, float]:
    import agency

    def p50(fn: Callable[[], Any], n: int) -> float:
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t)
        return statistics.median(samples)

    bare = agency.chat_model("openai-compatible:gpt-4o-mini", base_url=steady, api_key="sk-bench")
    healthy = _agency([_entry("backup", steady, 1)]).chat_model()
    for _ in range(200):
        bare.invoke(MESSAGES)
        healthy.invoke(MESSAGES)
    firsts = []
    for _ in range(30):
        ag = _agency([_entry("primary", _dead_url(), 1), _entry("backup", steady, 2)])
        llm = ag.chat_model()
        t = time.perf_counter()
        llm.invoke(MESSAGES)
        firsts.append(time.perf_counter() - t)
    ag = _agency([_entry("primary", _dead_url(), 1), _entry("backup", steady, 2)])
    llm = ag.chat_model()
    while ag.health()["primary"]["breaker"]["state"] != "open":
        llm.invoke(MESSAGES)
    dead_open, healthy_p50, bare_p50 = [], [], []
    for _ in range(calls):  # interleaved, so drift hits all three alike
        dead_open.append(p50(lambda: llm.invoke(MESSAGES), 1))
        healthy_p50.append(p50(lambda: healthy.invoke(MESSAGES), 1))
        bare_p50.append(p50(lambda: bare.invoke(MESSAGES), 1))
    base = statistics.median(healthy_p50)
    return {
        "bare": statistics.median(bare_p50),
        "healthy": base,
        "first_added": statistics.median(firsts) - base,
        "first_added_max": max(firsts) - base,
        "open_added": statistics.median(dead_open) - base,
    }


# ---------------------------------------------------------------------------- 3. LiteLLM
_LITELLM = r"""
import json, statistics, sys, time, warnings
warnings.filterwarnings("ignore")
import litellm
from litellm import Router
litellm.suppress_debug_info = True
dead, steady, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
msgs = [{"role": "user", "content": "Say hello"}]
def deployment(name, url):
    return {"model_name": name, "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": url, "api_key": "sk-bench"}}
def router():
    return Router(model_list=[deployment("primary", dead), deployment("backup", steady)],
                  fallbacks=[{"primary": ["backup"]}], num_retries=0)
def timed(fn):
    t = time.perf_counter(); fn(); return time.perf_counter() - t
healthy = Router(model_list=[deployment("backup", steady)], num_retries=0)
for _ in range(100): healthy.completion(model="backup", messages=msgs)
firsts = []
for _ in range(10):
    r = router()
    firsts.append(timed(lambda: r.completion(model="primary", messages=msgs)))
r = router()
for _ in range(5): r.completion(model="primary", messages=msgs)
dead_s, healthy_s = [], []
for _ in range(calls):
    dead_s.append(timed(lambda: r.completion(model="primary", messages=msgs)))
    healthy_s.append(timed(lambda: healthy.completion(model="backup", messages=msgs)))
base = statistics.median(healthy_s)
from importlib.metadata import version
print(json.dumps({"version": version("litellm"),
    "healthy": base, "first_added": statistics.median(firsts) - base,
    "first_added_max": max(firsts) - base, "open_added": statistics.median(dead_s) - base}))
"""


def _litellm(python: str | None, steady: str, calls: int) -> dict[str, Any] | str:
    interpreter = python or sys.executable
    probe = subprocess.run([interpreter, "-c", "import litellm"], capture_output=True)
    if probe.returncode != 0:
        return "LiteLLM is not installed (pass --litellm-python PATH to a Python that has it)"
    run = subprocess.run(
        [interpreter, "-c", _LITELLM, _dead_url(), steady, str(calls)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "LITELLM_LOG": "CRITICAL"},
    )
    if run.returncode != 0:
        return f"LiteLLM run failed: {run.stderr[-500:]}"
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------------------- 4. overhead
def _overhead(steady: str, calls: int, concurrent_calls: int) -> dict[str, tuple[float, float]]:
    import httpx

    import agency

    hx = httpx.Client(timeout=30)
    headers = {"authorization": "Bearer sk-bench"}
    bare = agency.chat_model("openai-compatible:gpt-4o-mini", base_url=steady, api_key="sk-bench")
    facade = _agency([_entry("steady", steady, 1)]).chat_model()
    chain3 = _agency(
        [_entry("a", steady, 1), _entry("b", steady, 2), _entry("c", steady, 3)]
    ).chat_model()

    def raw() -> Any:
        return hx.post(
            f"{steady}/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES},
            headers=headers,
        ).json()

    sync = {
        "raw httpx": raw,
        "agency.chat_model (bare)": lambda: bare.invoke(MESSAGES),
        "Agency facade, 1 provider": lambda: facade.invoke(MESSAGES),
        "Agency facade, 3 providers": lambda: chain3.invoke(MESSAGES),
    }
    samples: dict[str, list[float]] = {k: [] for k in sync}
    for i in range(calls + 200):
        for name, fn in sync.items():
            t = time.perf_counter()
            fn()
            if i >= 200:
                samples[name].append(time.perf_counter() - t)

    ahx = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200))

    async def araw() -> Any:
        r = await ahx.post(
            f"{steady}/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES},
            headers=headers,
        )
        return r.json()

    asyncs = {
        "raw httpx": araw,
        "agency.chat_model (bare)": lambda: bare.ainvoke(MESSAGES),
        "Agency facade, 1 provider": lambda: facade.ainvoke(MESSAGES),
        "Agency facade, 3 providers": lambda: chain3.ainvoke(MESSAGES),
    }

    async def throughput(fn: Callable[[], Any]) -> float:
        gate = asyncio.Semaphore(50)

        async def one() -> None:
            async with gate:
                await fn()

        t = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(concurrent_calls)))
        return concurrent_calls / (time.perf_counter() - t)

    async def all_throughputs() -> dict[str, float]:
        for fn in asyncs.values():
            await throughput(fn)  # warm-up
        return {name: await throughput(fn) for name, fn in asyncs.items()}

    rates = asyncio.run(all_throughputs())
    return {name: (statistics.median(samples[name]), rates[name]) for name in sync}


# ---------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--fault-rate", type=float, default=0.3)
    parser.add_argument("--dead-calls", type=int, default=500)
    parser.add_argument("--overhead-calls", type=int, default=1000)
    parser.add_argument("--litellm-python", default=None)
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    console = Console()
    servers = [_start(args.fault_rate, 1), _start(args.fault_rate, 2), _start(0.0, 3)]
    urls = [url for _, url in servers]
    try:
        soak = asyncio.run(_soak(urls, args.calls, args.concurrency))
        served = sum(_server_requests(u) for u in urls)
        attempts = soak["attempts"]
        table = Table(
            title=f"1. soak: {args.calls} calls, c={args.concurrency}, two of three providers fault {args.fault_rate:.0%}"
        )
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_row("answered", f"{len(attempts)} / {args.calls}")
        table.add_row("unanswered", str(len(soak["unanswered"])))
        table.add_row(
            "attempts per call: max (bound)", f"{max(attempts, default=0)} ({MAX_ATTEMPTS})"
        )
        table.add_row(
            "attempts per call: mean", f"{statistics.mean(attempts):.3f}" if attempts else "-"
        )
        table.add_row("requests the servers saw / attempts reported", f"{served} / {sum(attempts)}")
        table.add_row("streams continued after a cut", str(soak["failovers"]))
        lat = sorted(soak["latencies"])
        if lat:
            table.add_row(
                "latency p50 / p95 ms",
                f"{_ms(lat[len(lat) // 2])} / {_ms(lat[int(len(lat) * 0.95)])}",
            )
        table.add_row("wall time s", f"{soak['wall']:.1f}")
        for name, row in sorted(soak["stats"]["providers"].items()):
            kinds = dict(row["failures_by_kind"])
            skipped = kinds.pop("circuit_open", 0)
            faults = ", ".join(f"{k}={v}" for k, v in sorted(kinds.items()))
            table.add_row(
                f"{name}: sent / failed / skipped (breaker open)",
                f"{row['requests'] - skipped} / {row['failures'] - skipped} / {skipped}",
            )
            if faults:
                table.add_row(f"{name}: failures by kind", faults)
        console.print(table)
        for line in soak["unanswered"][:5]:
            console.print(f"  unanswered: {line}", markup=False)

        dead = _dead_primary(urls[2], args.dead_calls)
        lite = _litellm(args.litellm_python, urls[2], min(args.dead_calls, 300))
        table = Table(
            title="2-3. primary dead (connection refused), backup healthy: latency it adds"
        )
        for col in (
            "client",
            "healthy p50 ms",
            "first call +ms (median / max)",
            "breaker open: +ms per call",
        ):
            table.add_column(col, justify="right" if col != "client" else "left")
        table.add_row(
            "agency Agency",
            _ms(dead["healthy"]),
            f"{_ms(dead['first_added'])} / {_ms(dead['first_added_max'])}",
            _ms(dead["open_added"]),
        )
        if isinstance(lite, dict):
            table.add_row(
                f"LiteLLM Router {lite['version']}",
                _ms(lite["healthy"]),
                f"{_ms(lite['first_added'])} / {_ms(lite['first_added_max'])}",
                _ms(lite["open_added"]),
            )
        console.print(table)
        if not isinstance(lite, dict):
            console.print(f"  LiteLLM: {lite}")
        console.print("  targets: first call < 5 ms, once the breaker is open < 0.2 ms")

        over = _overhead(urls[2], args.overhead_calls, 2000)
        bare = over["agency.chat_model (bare)"][0]
        table = Table(title="4. per-call overhead against one healthy local server")
        for col in ("client", "c=1 p50 ms", "vs bare chat_model ms", "c=50 calls/s"):
            table.add_column(col, justify="right" if col != "client" else "left")
        for name, (p50, rate) in over.items():
            table.add_row(name, _ms(p50), f"{(p50 - bare) * 1000:+.3f}", f"{rate:.0f}")
        console.print(table)
        console.print("  target: the facade within 0.5 ms of a bare chat_model")
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.join(5)


if __name__ == "__main__":
    main()
