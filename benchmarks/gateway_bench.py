"""Our gateway (``agency serve``) against LiteLLM's proxy and a direct call: one table.

Everything runs on 127.0.0.1 against one fast upstream (nginx, `_gateway_upstream.Upstream`),
side by side in one run, with one client (aiohttp) for all three columns:

- **direct**: client -> upstream;
- **agency serve**: client -> ``agency serve --no-auth`` (one worker) -> upstream;
- **LiteLLM proxy**: client -> ``litellm --config`` (one worker, no database, no master key)
  from its own Python (``--litellm-python``; "n/a" with the reason when it cannot run).

Rows: latency at c=1 (JSON, not streamed; each gateway's calls alternate with direct calls
call by call, so drift hits both alike) and what it adds over direct at p50 and p95;
throughput (req/s) at c=50 and c=200 for a fixed time; RSS (whole process tree, from
/proc/PID/status) idle and its growth with 1,000 streams held open at once against a paced
upstream stream (fresh servers for this, measured first); and failover: a gateway whose first
entry is a closed port and whose second is the upstream, ``[llm.fallback] enabled = true``:
once the breaker is open (warm-up), the p50 asking for the dead entry minus the p50 asking for
the backup. The goals of issue 14 stand next to the numbers.

    python benchmarks/gateway_bench.py [--quick] [--json OUT] [--markdown]
        [--litellm-python PATH | --no-litellm] [--profile OUT.prof]

``--quick`` is a smoke run (tests/gateway/test_gateway_bench.py). ``--profile`` runs our
gateway under cProfile (its numbers are then slower than real) and prints where its time goes.
Every server is a subprocess of this run and is stopped when it ends, however it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gateway_upstream import (
    BACKUP,
    CHAT,
    PRIMARY,
    SLOW,
    Server,
    Upstream,
    agency_server,
    failover_server,
    litellm_problem,
    litellm_server,
)

__all__ = ["FULL", "QUICK", "Sizes", "main"]

MESSAGES = [{"role": "user", "content": "Say hello"}]
HEADERS = {"authorization": "Bearer sk-bench"}
DEFAULT_LITELLM = "/tmp/litellm-venv/bin/python"
COLUMNS = ("direct", "agency", "litellm")


@dataclass(frozen=True)
class Sizes:
    """How much one run measures."""

    c1_calls: int
    """Timed calls per column at c=1 (after `c1_warmup`)."""
    c1_warmup: int
    """Untimed calls per column before the c=1 timing."""
    seconds: float
    """Duration of each throughput run (per column and concurrency)."""
    streams: int
    """Streams held open at once for the memory row."""
    open_timeout: float
    """Seconds allowed for all `streams` to start."""
    failover_calls: int
    """Timed calls per model name in the failover row."""
    sample_s: float
    """Seconds over which the peak RSS of the held streams is taken."""
    settle: bool
    """Wait for the servers to be quiet before each measure (see `_settle`)."""


QUICK = Sizes(c1_calls=60, c1_warmup=20, seconds=0.3, streams=40, open_timeout=30,
              failover_calls=40, sample_s=0.2, settle=False)  # fmt: skip
"""A smoke run: every row, tiny counts."""
FULL = Sizes(c1_calls=2000, c1_warmup=200, seconds=5.0, streams=1000, open_timeout=60,
             failover_calls=1000, sample_s=1.0, settle=True)  # fmt: skip
"""The published run (about 2 minutes on 2 cores)."""


# --------------------------------------------------------------------------- client
async def _post(session: Any, url: str, model: str) -> Any:
    """One non-streamed chat call; the response (body read), or `RuntimeError` if not 200."""
    async with session.post(url, json={"model": model, "messages": MESSAGES},
                            headers=HEADERS) as r:  # fmt: skip
        body = await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url} answered {r.status}: {body[:300]!r}")
        return r


async def _check(session: Any, url: str, model: str) -> None:
    """The canned answer comes back whole through this column."""
    async with session.post(url, json={"model": model, "messages": MESSAGES},
                            headers=HEADERS) as r:  # fmt: skip
        data = await r.json(content_type=None)
    content = data["choices"][0]["message"]["content"] if r.status == 200 else None
    if content != "Hello there!":
        raise RuntimeError(f"{url} (model {model}) answered {r.status}: {str(data)[:300]}")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _c1_pair(
    session: Any, a: tuple[str, str], b: tuple[str, str], sizes: Sizes
) -> tuple[list[float], list[float]]:
    """c=1 seconds of ``a`` and ``b`` ((url, model) each), alternating call by call."""
    for _ in range(sizes.c1_warmup):
        await _post(session, *a)
        await _post(session, *b)
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(sizes.c1_calls):
        for target, times in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            await _post(session, *target)
            times.append(time.perf_counter() - t0)
    return ta, tb


async def _throughput(
    session: Any, url: str, model: str, level: int, seconds: float
) -> dict[str, Any]:
    """``level`` tasks calling back to back for ``seconds`` (then the calls in flight end)."""
    errors: list[str] = []

    async def call() -> float | None:
        t0 = time.perf_counter()
        try:
            await _post(session, url, model)
        except Exception as exc:  # counted, shown: a failing server must not hang the table
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
            return None
        return time.perf_counter() - t0

    await asyncio.gather(*(call() for _ in range(level)))  # both sides' pools fill
    errors.clear()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            took = await call()
            if took is not None:
                latencies.append(took)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(level)))
    wall = time.perf_counter() - t0
    return {
        "rps": len(latencies) / wall,
        "ok": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "p50_ms": statistics.median(latencies) * 1e3 if latencies else None,
        "p99_ms": _pct(latencies, 0.99) * 1e3 if latencies else None,
    }


async def _settle(servers: list[Server], sizes: Sizes, timeout: float = 5.0) -> None:
    """Wait (at most ``timeout`` s) until the servers are quiet: < 5 % of a core each over
    0.2 s, so one column's leftover work is not billed to the next."""
    if not sizes.settle:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = [s.cpu_s() for s in servers]
        await asyncio.sleep(0.2)
        if all(s.cpu_s() - b < 0.01 for s, b in zip(servers, before, strict=True)):
            return


async def _hold(
    session: Any, server: Server, n: int, timeout: float, sample_s: float
) -> dict[str, Any]:
    """Open ``n`` streams of `SLOW` through ``server`` at once, reading them as they come;
    once every one has its first event, the server tree's peak RSS over ``sample_s``
    seconds; then close them."""
    opened = 0
    all_open = asyncio.Event()
    body = {"model": SLOW, "messages": MESSAGES, "stream": True}
    url = f"{server.base}/v1/chat/completions"

    async def one() -> None:
        nonlocal opened
        async with session.post(url, json=body, headers=HEADERS) as r:
            if r.status != 200:
                raise RuntimeError(f"{server.name} answered {r.status}: {await r.text()}"[:300])
            counted = False
            async for line in r.content:
                if not counted and line.startswith(b"data: {"):
                    counted = True
                    opened += 1
                    if opened == n:
                        all_open.set()
        raise RuntimeError(f"a paced stream through {server.name} ended while held")

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    try:
        deadline = time.monotonic() + timeout
        while not all_open.is_set() and time.monotonic() < deadline:
            failed = [t for t in tasks if t.done() and t.exception() is not None]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
            await asyncio.sleep(0.05)
        peak = server.rss_kib()
        end = time.monotonic() + sample_s
        while time.monotonic() < end:
            await asyncio.sleep(0.1)
            peak = max(peak, server.rss_kib())
        return {"opened": opened, "peak_kib": peak}
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _memory(session: Any, server: Server, sizes: Sizes) -> dict[str, Any]:
    """Idle RSS (after a warm-up that ran a few streams) and its growth at ``sizes.streams``
    open streams, MiB."""
    for _ in range(20):
        await _post(session, f"{server.base}/v1/chat/completions", CHAT)
    await _hold(session, server, 10, sizes.open_timeout, 0)  # the stream path's lazy imports
    await _settle([server], sizes)
    await asyncio.sleep(sizes.sample_s / 2)
    idle = server.rss_kib()
    held = await _hold(session, server, sizes.streams, sizes.open_timeout, sizes.sample_s)
    return {
        "idle_mib": idle / 1024,
        "streams": sizes.streams,
        "streams_opened": held["opened"],
        "streams_mib": (held["peak_kib"] - idle) / 1024,
        "per_stream_kib": (held["peak_kib"] - idle) / max(1, held["opened"]),
    }


async def _failover(session: Any, server: Server, sizes: Sizes) -> dict[str, Any]:
    """p50 asking for the dead `PRIMARY` minus p50 asking for `BACKUP`, breaker open."""
    url = f"{server.base}/v1/chat/completions"
    r = None
    for _ in range(max(10, sizes.c1_warmup)):  # 3 refusals in a row open the breaker
        r = await _post(session, url, PRIMARY)
        if r.headers.get("x-agency-provider") != BACKUP:
            raise RuntimeError(f"asking for {PRIMARY}, {r.headers.get('x-agency-provider')} "
                               f"answered, not {BACKUP}")  # fmt: skip
    assert r is not None
    small = Sizes(sizes.failover_calls, sizes.c1_warmup, 0, 0, 0, 0, 0, False)
    dead, live = await _c1_pair(session, (url, PRIMARY), (url, BACKUP), small)
    return {
        "failover_attempts": r.headers.get("x-agency-attempts"),
        "failover_primary_p50_ms": statistics.median(dead) * 1e3,
        "failover_backup_p50_ms": statistics.median(live) * 1e3,
        "failover_added_p50_ms": (statistics.median(dead) - statistics.median(live)) * 1e3,
    }


# --------------------------------------------------------------------------- the run
async def _run(
    up: Upstream, servers: dict[str, Server], mem: dict[str, Server], sizes: Sizes,
    failed: dict[str, str],
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """All rows; ``servers``/``mem`` map a column to its server (main and memory phase);
    a LiteLLM failure is written to ``failed`` (its column shows n/a), ours raises."""
    import aiohttp

    res: dict[str, dict[str, Any]] = {c: {} for c in COLUMNS}
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        targets = {"direct": (f"{up.base}/v1/chat/completions", CHAT)}
        targets |= {c: (f"{s.base}/v1/chat/completions", CHAT) for c, s in servers.items()
                    if c != "failover"}  # fmt: skip

        async def guarded(column: str, work: Any) -> None:
            try:
                await work
            except Exception as exc:
                if column != "litellm":
                    raise
                failed[column] = f"{type(exc).__name__}: {exc}"[:400]

        # memory first, on fresh servers; then those servers go (streams they may still
        # relay after the client left must not load the other rows)
        for column, server in mem.items():
            try:
                res[column] |= await _memory(session, server, sizes)
            except Exception as exc:
                if column != "litellm":
                    raise
                res[column]["memory_error"] = f"{type(exc).__name__}: {exc}"[:400]
            if server is not servers.get(column):
                server.stop()
        for column, target in targets.items():
            if column not in failed:
                await guarded(column, _check(session, *target))
        busy = [s for c, s in servers.items() if c not in failed]
        for column in ("agency", "litellm"):
            if column not in targets or column in failed:
                continue
            await _settle(busy, sizes)
            await guarded(column, _c1_into(res, column, session, targets, sizes))
        for level in (50, 200):
            for column, (url, model) in targets.items():
                if column in failed:
                    continue
                await _settle(busy, sizes)
                out = await _throughput(session, url, model, level, sizes.seconds)
                res[column][f"c{level}"] = out
                if out["ok"] == 0:
                    if column != "litellm":
                        raise RuntimeError(f"{column} served nothing at c={level}: "
                                           f"{out['first_error']}")  # fmt: skip
                    failed[column] = f"no answer at c={level}: {out['first_error']}"
        await _settle(busy, sizes)
        res["agency"] |= await _failover(session, servers["failover"], sizes)
    return res


async def _c1_into(
    res: dict[str, dict[str, Any]], column: str, session: Any,
    targets: dict[str, tuple[str, str]], sizes: Sizes,
) -> None:  # fmt: skip
    direct, server = await _c1_pair(session, targets["direct"], targets[column], sizes)
    d50, d95 = statistics.median(direct) * 1e3, _pct(direct, 0.95) * 1e3
    s50, s95 = statistics.median(server) * 1e3, _pct(server, 0.95) * 1e3
    res[column] |= {"c1_p50_ms": s50, "c1_p95_ms": s95, "c1_added_p50_ms": s50 - d50,
                    "c1_added_p95_ms": s95 - d95, "c1_direct_p50_ms": d50,
                    "c1_direct_p95_ms": d95}  # fmt: skip
    if column == "agency":  # the direct column shows the calls alternated with ours
        res["direct"] |= {"c1_p50_ms": d50, "c1_p95_ms": d95}


# --------------------------------------------------------------------------- report
def _cells(res: dict[str, dict[str, Any]], failed: dict[str, str]) -> list[list[str]]:
    """Rows: measure, direct, agency serve, LiteLLM proxy, goal, met."""

    def get(column: str, key: str, fmt: str, sign: bool = False) -> str:
        if column in failed:
            return "n/a"
        value: Any = res[column]
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            return "—"
        return f"{value:+{fmt}}" if sign else f"{value:{fmt}}"

    def row(label: str, key: str, fmt: str, sign: bool = False, direct: bool = True,
            goal: str = "", met: str = "") -> list[str]:  # fmt: skip
        cols = [get(c, key, fmt, sign) if c != "direct" or direct else "—" for c in COLUMNS]
        return [label, *cols, goal, met]

    ours, lite = res["agency"], res["litellm"]

    def verdict(ok: bool | None, detail: str = "") -> str:
        if ok is None:
            return "n/a"
        return ("yes" if ok else "NO") + (f" ({detail})" if detail else "")

    added = ours.get("c1_added_p50_ms")
    ratio = None
    if "litellm" not in failed and lite.get("c50", {}).get("rps"):
        ratio = ours["c50"]["rps"] / lite["c50"]["rps"]
    fail = ours.get("failover_added_p50_ms")
    streams = ours.get("streams") or lite.get("streams") or 0
    memory = row(f"RSS growth, {streams:,} open streams, MiB", "streams_mib", ".1f",
                 direct=False)  # fmt: skip
    for i, column in enumerate(COLUMNS):
        opened = res[column].get("streams_opened")
        if opened is not None and opened < streams:  # the open timeout ran out
            memory[i + 1] += f" (only {opened:,} open)"
    return [
        row("c=1 p50 latency, ms", "c1_p50_ms", ".3f"),
        row("  added over direct, p50 ms", "c1_added_p50_ms", ".3f", True, False,
            "≤ 1 ms", verdict(None if added is None else added <= 1.0)),
        row("c=1 p95 latency, ms", "c1_p95_ms", ".3f"),
        row("  added over direct, p95 ms", "c1_added_p95_ms", ".3f", True, False),
        row("throughput c=50, req/s", "c50.rps", ",.0f", goal="≥ 3x LiteLLM",
            met=verdict(None if ratio is None else ratio >= 3, f"{ratio:.1f}x" if ratio else "")),
        row("throughput c=200, req/s", "c200.rps", ",.0f"),
        row("RSS idle, MiB", "idle_mib", ".1f", direct=False),
        memory,
        [f"failover, dead primary: added p50 ms (attempts {ours.get('failover_attempts')})",
         "—", get("agency", "failover_added_p50_ms", ".3f", True), "—", "< 5 ms",
         verdict(None if fail is None else fail < 5.0)],
    ]  # fmt: skip


HEAD = ["measure", "direct", "agency serve", "LiteLLM proxy", "goal", "met"]


def _print_table(rows: list[list[str]], markdown: bool, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(140, Console().width))
    table = Table(title=title)
    for i, col in enumerate(HEAD):
        table.add_column(col, justify="left" if i in (0, 4, 5) else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    if markdown:
        print("| " + " | ".join(HEAD) + " |")
        print("|---|" + "---:|" * 3 + "---|---|")
        for r in rows:
            print("| " + " | ".join(c.strip() for c in r) + " |")


def _machine(up: Upstream, litellm_python: str | None) -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": sys.version.split()[0]}
    for pkg in ("agency", "uvicorn", "starlette", "httpx", "aiohttp"):
        try:
            versions[pkg] = version(pkg)
        except Exception:
            versions[pkg] = "?"
    versions["nginx"] = up.version()
    if litellm_python:
        code = "import importlib.metadata as m, sys; print(m.version('litellm'), sys.version.split()[0])"
        done = subprocess.run([litellm_python, "-c", code], capture_output=True, text=True,
                              check=False, timeout=60)  # fmt: skip
        if done.returncode == 0:
            lite, py = done.stdout.split()
            versions["litellm"] = f"{lite} (python {py})"
    return {"cores": os.cpu_count(), "cpu": cpu,
            "system": f"{platform.system()} {platform.release()}", "versions": versions}  # fmt: skip


def _print_profile(path: Path, top: int = 25) -> None:
    import pstats

    if not path.exists():
        print(f"no profile at {path}: the gateway did not exit cleanly")
        return
    stats = pstats.Stats(str(path))
    for key in ("tottime", "cumulative"):
        print(f"\n--- our gateway under cProfile, top {top} by {key} ---")
        stats.sort_stats(key).print_stats(top)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table; returns what ``--json`` writes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument(
        "--litellm-python",
        default=DEFAULT_LITELLM,
        help=f"a Python with LiteLLM's proxy installed (default {DEFAULT_LITELLM})",
    )
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM's column out")
    parser.add_argument("--profile", type=Path, help="run our gateway under cProfile, write "
                        "the profile here and print its top functions")  # fmt: skip
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * sizes.streams + 1024  # client, gateway and upstream sockets, inherited
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    failed: dict[str, str] = {}
    python = None if args.no_litellm else args.litellm_python
    if python is None:
        failed["litellm"] = "left out (--no-litellm)"
    elif (problem := litellm_problem(python)) is not None:
        failed["litellm"] = problem
    t_start = time.monotonic()
    with ExitStack() as stack:
        up = stack.enter_context(Upstream())
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agency-gwbench-")))
        machine = _machine(up, python if "litellm" not in failed else None)
        servers: dict[str, Server] = {
            "agency": agency_server(root / "agency", up, args.profile),
            "failover": failover_server(root / "failover", up),
        }
        if "litellm" not in failed:
            assert python is not None
            servers["litellm"] = litellm_server(python, root / "litellm", up)
        # the memory row runs first on servers of its own, stopped after it (streams they
        # may relay on after their client left must not load the other rows); --quick
        # saves their start-up and uses the main servers
        mem = {c: s for c, s in servers.items() if c != "failover"}
        if not args.quick:
            mem = {"agency": agency_server(root / "agency-mem", up)}
            if "litellm" in servers:
                mem["litellm"] = litellm_server(python, root / "litellm-mem", up)  # type: ignore[arg-type]
        for server in {id(s): s for s in [*servers.values(), *mem.values()]}.values():
            stack.enter_context(server.start())  # stopped when the block ends, however
        for column, server in [*servers.items(), *mem.items()]:
            try:
                server.wait_ready(120 if column == "litellm" else 60)
            except RuntimeError as exc:
                if column != "litellm":
                    raise
                failed["litellm"] = str(exc)[:400]
        if "litellm" in failed:
            for group in (servers, mem):
                if "litellm" in group:
                    group.pop("litellm").stop()
        res = asyncio.run(_run(up, servers, mem, sizes, failed))
        if args.profile:
            servers["agency"].stop(signal.SIGINT, timeout=30)  # cProfile writes on exit
    elapsed = time.monotonic() - t_start
    v = machine["versions"]
    print(f"{machine['cores']} cores ({machine['cpu']}), {machine['system']}; python {v['python']}; "
          f"agency {v['agency']} (uvicorn {v['uvicorn']}, starlette {v['starlette']}); "
          f"LiteLLM {v.get('litellm', 'n/a')}; client aiohttp {v['aiohttp']}; upstream "
          f"{v['nginx']} (1 worker) on 127.0.0.1; one worker per gateway")  # fmt: skip
    title = f"gateway overhead, {'quick' if args.quick else 'full'} run ({elapsed:.0f} s)"
    _print_table(_cells(res, failed), args.markdown, title)
    for column, reason in failed.items():
        print(f"{column}: n/a: {reason}")
    for column in COLUMNS:
        if "memory_error" in res[column]:
            print(f"{column}: memory row failed: {res[column]['memory_error']}")
    if args.profile:
        print("(--profile: our gateway ran under cProfile, so its numbers above are slower "
              "than real)")  # fmt: skip
        _print_profile(args.profile)
    out = {"machine": machine, "sizes": asdict(sizes), "quick": args.quick,
           "elapsed_s": elapsed, "results": res, "failed": failed}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
