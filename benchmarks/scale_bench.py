"""What sharing provider state in Redis costs, and that a fleet holds its limits.

    python benchmarks/scale_bench.py [--quick] [--one-cpu]

Upstream: nginx on 127.0.0.1 with canned OpenAI answers (`_nginx`); state: a redis-server
started here (`_redis`). Tables:

1. Per-call cost of ``[state] backend = "redis"`` over the in-process default, for one
   `Agency` entry with an RPM limit and a budget (so breaker, limiter and budget all work on
   every call): sync and async at c=1 (ms a call, and the difference), async at c=50
   (calls/s), and the Redis round trips a call waits for. Two floors beside it: the
   in-process model with a bare PING before each call, and with the admission script itself
   sent by hand (redis-py, none of our code): what one round trip costs here, and what that
   round trip with the script's own work in Redis costs.
2. A simulated fleet: N = 1, 2, 4, 8 processes calling as fast as they can for a few seconds
   under one ``rpm``, with the Redis backend and with the in-process one: the calls the
   upstream received against what the limit allows (the bucket's burst plus its refill).
3. `run_batch` of a one-step workflow over the same upstream: ``local`` (asyncio, one
   process) against ``ray`` (a local cluster of 2 CPUs, its start timed apart), runs/s.

``--one-cpu`` runs table 1 alone, with this process, nginx and redis-server on one CPU: at
c=1 the chain is serial (client, then nginx, then client, then Redis), so one CPU takes
the wake-ups between CPUs out (on a VM each is a halted vCPU woken by the hypervisor) and
leaves the software's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from hiredis import pack_command
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _nginx import MODEL, Nginx
from _redis import RedisServer


def _config(base: str, state: dict[str, Any], *, rpm: int, budget: float) -> dict[str, Any]:
    entry = {
        "name": "p0",
        "provider": "openai",
        "api_key": "sk-bench",
        "text_model": MODEL,
        "base_url": f"{base}/v1",
        "rpm": rpm,
    }
    fallback = {"max_attempts": 1, "max_wait_ms": 0}
    llm = {"providers": [entry], "fallback": fallback, "budget": {"max_cost_total": budget}}
    return {"llm": llm, "state": state}


def _model(config: dict[str, Any]) -> Any:
    from agency import Agency, AgencyConfig

    return Agency(AgencyConfig.from_dict(config)).chat_model()


ROUNDS = 11
"""Per-call figures are the median of this many rounds, memory and Redis taking turns, so a
busy moment of the machine lands on both backends instead of on one."""


class _Prefixed:
    """The in-process model with one bare Redis command before each call, on redis-py's own
    connection and nothing of ours: a PING (the floor of any shared state that costs one
    round trip a call, on this machine, in situ: a blocked process and a woken one cost more
    here than the PING's own time), or the admission script itself (`_AdmitByHand`). The
    command is packed by hiredis, as the store packs its own."""

    def __init__(self, model: Any, redis_url: str, command: Callable[[], tuple[Any, ...]]) -> None:
        import redis

        self.model, self.url, self.command = model, redis_url, command
        self.conn = redis.Redis.from_url(redis_url).connection_pool.make_connection()
        self.aconn: Any = None

    def invoke(self, *args: Any, **kwargs: Any) -> Any:
        self.conn.send_packed_command([pack_command(self.command())], check_health=False)
        self.conn.read_response()
        return self.model.invoke(*args, **kwargs)

    async def ainvoke(self, *args: Any, **kwargs: Any) -> Any:
        if self.aconn is None:
            from redis import asyncio as aioredis

            self.aconn = aioredis.Redis.from_url(self.url).connection_pool.make_connection()
        await self.aconn.send_packed_command([pack_command(self.command())], check_health=False)
        await self.aconn.read_response()
        return await self.model.ainvoke(*args, **kwargs)


class _AdmitByHand:
    """The command a call of `per_call`'s Redis model waits for, written out by hand: the
    admission script (`_lua.ADMIT`) with the same policy, limits and worst case, carrying
    what the previous call queued (its budget settlement, limiter refund and breaker
    success, as one numbered group), on keys of its own. Its hold is given back by the
    settlement it carries next time, so it can run forever; answered "ok" every time."""

    KEYS = ("floor:breaker", "floor:breaker:outcomes", "floor:limiter", "floor:budget")

    def __init__(self, redis_url: str) -> None:
        import redis

        from agency.resilience import _lua
        from agency.resilience.breaker import BreakerPolicy
        from agency.resilience.shared import breaker_args

        self.sha = redis.Redis.from_url(redis_url).script_load(_lua.ADMIT)
        self.policy = breaker_args(BreakerPolicy())  # the entry's (the default policy)
        self.bucket = _lua.ONCE_BUCKET
        self.number = 0

    def __call__(self) -> tuple[Any, ...]:
        nanos, limit, policy = 13_500, 10**18, self.policy
        self.number += 1
        notes = f"floor:once:{self.number // self.bucket}"
        carried = orjson.dumps([[self.number, 5, [
            ["BUDGET", [4], ["close", nanos, "", -1, limit, 3_150]],
            ["LIMITER", [3], ["settle", 10**9, 0, 18]],
            ["BREAKER", [1, 2], ["success", 0.0, policy]],
        ]]])  # fmt: skip
        keys = (*self.KEYS, notes)
        return ("EVALSHA", self.sha, len(keys), *keys, policy, 10**9, 0, 30, nanos, "", -1,
                limit, carried)  # fmt: skip


def per_call(base: str, redis_url: str, calls: int) -> list[tuple[str, float, float, float]]:
    """(backend, sync ms, async ms, async c=50 calls/s) per backend, and two floors: memory
    with a PING a call, and with the admission script by hand (`_Prefixed`; no c=50 figure,
    nan). c=1 figures are medians over `ROUNDS` rounds of ``calls // ROUNDS`` calls, the four
    taking turns."""
    from agency.resilience import _store

    states = {"memory": {}, "redis": {"backend": "redis", "url": redis_url}}
    models = {name: _model(_config(base, state, rpm=10**9, budget=1e9)) for name, state in
              states.items()}  # fmt: skip
    models["memory + a PING"] = _Prefixed(models["memory"], redis_url, lambda: ("PING",))
    models["memory + the script"] = _Prefixed(models["memory"], redis_url, _AdmitByHand(redis_url))
    each = max(calls // ROUNDS, 50)
    sync: dict[str, list[float]] = {name: [] for name in models}
    single: dict[str, list[float]] = {name: [] for name in models}
    rate: dict[str, float] = {}

    async def timed(model: Any, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await model.ainvoke("Say hello", max_tokens=20)
        return (time.perf_counter() - start) / n * 1e3

    async def run() -> None:
        for model in models.values():
            for _ in range(200):
                model.invoke("Say hello", max_tokens=20)
            await timed(model, 200)
        for _ in range(ROUNDS):
            for name, model in models.items():
                start = time.perf_counter()
                for _ in range(each):
                    model.invoke("Say hello", max_tokens=20)
                sync[name].append((time.perf_counter() - start) / each * 1e3)
                single[name].append(await timed(model, each))
        for name, model in models.items():
            if isinstance(model, _Prefixed):
                rate[name] = float("nan")
                continue
            left = calls * 2

            async def worker(model: Any = model) -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    await model.ainvoke("Say hello", max_tokens=20)

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(50)))
            rate[name] = calls * 2 / (time.perf_counter() - start)

    asyncio.run(run())
    for store in list(_store._LIVE):
        store.flush()
    med = statistics.median
    return [(name, med(sync[name]), med(single[name]), rate[name]) for name in models]


def floor(redis_url: str, n: int = 3000) -> tuple[float, float, float]:
    """A PING's round trip alone on one redis-py connection, sync and asyncio (ms), and the
    admission script's own time in the server per call during `per_call` (ms, from INFO
    commandstats)."""
    import redis
    from redis import asyncio as aioredis

    client = redis.Redis.from_url(redis_url)
    server = client.info("commandstats").get("cmdstat_evalsha", {})
    script = server.get("usec_per_call", 0.0) / 1e3
    conn = client.connection_pool.make_connection()
    packed = conn.pack_command("PING")
    for _ in range(300):
        conn.send_packed_command(packed, check_health=False)
        conn.read_response()
    start = time.perf_counter()
    for _ in range(n):
        conn.send_packed_command(packed, check_health=False)
        conn.read_response()
    sync = (time.perf_counter() - start) / n * 1e3
    conn.disconnect()

    async def ping() -> float:
        aconn = aioredis.Redis.from_url(redis_url).connection_pool.make_connection()
        for _ in range(300):
            await aconn.send_packed_command(packed, check_health=False)
            await aconn.read_response()
        start = time.perf_counter()
        for _ in range(n):
            await aconn.send_packed_command(packed, check_health=False)
            await aconn.read_response()
        elapsed = (time.perf_counter() - start) / n * 1e3
        await aconn.disconnect()
        return elapsed

    return sync, asyncio.run(ping()), script


def round_trips(base: str, redis_url: str, calls: int = 300) -> float:
    """Redis round trips one call waits for (sync), counted on the store."""
    from agency.resilience._store import RedisState

    waited = 0
    original = RedisState.run

    def counting(self: RedisState, *args: Any, **kwargs: Any) -> Any:
        nonlocal waited
        waited += 1
        return original(self, *args, **kwargs)

    RedisState.run = counting  # type: ignore[method-assign,assignment]
    try:
        model = _model(_config(base, {"backend": "redis", "url": redis_url}, rpm=10**9, budget=1e9))
        model.invoke("Say hello", max_tokens=20)
        waited = 0
        for _ in range(calls):
            model.invoke("Say hello", max_tokens=20)
    finally:
        RedisState.run = original  # type: ignore[method-assign]
    return waited / calls


_WORKER = """
import json, sys, time
from agency import Agency, AgencyConfig
config, seconds, go = json.loads(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
model = Agency(AgencyConfig.from_dict(config)).chat_model()
print("ready", flush=True)
while not __import__("os").path.exists(go):
    time.sleep(0.005)
ok = refused = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        model.invoke("Say hello", max_tokens=20)
        ok += 1
    except Exception:
        refused += 1
    time.sleep(0.002)
print(json.dumps({"ok": ok, "refused": refused}), flush=True)
"""


def fleet(
    base: str, redis_url: str, n: int, state: dict[str, Any], rpm: int, seconds: float, tmp: Path
) -> int:
    """Calls the upstream received from ``n`` processes under one ``rpm`` (every refusal
    happens before sending, tests/resilience/test_fleet.py)."""
    import redis

    redis.Redis.from_url(redis_url).flushall()
    go = tmp / f"go-{n}-{time.monotonic_ns()}"
    config = json.dumps(_config(base, state, rpm=rpm, budget=1e9))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, config, str(seconds), str(go)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    go.touch()
    total = 0
    for p in procs:
        out, _ = p.communicate(timeout=120)
        total += json.loads(out.strip().splitlines()[-1])["ok"]
    return total


def batch(base: str, redis_url: str, n: int, tmp: Path) -> list[tuple[str, float, float]]:
    """(engine, seconds to start, runs/s) of `run_batch` over ``n`` inputs (workflow steps
    stream their answers: the upstream's SSE path, a few hundred chunks each)."""
    from agency.workflows import run_batch

    flow = tmp / "one_step.toml"
    flow.write_text(
        f"""
[workflow]
name = "one-step"
inputs = ["n"]

[[llm.providers]]
name = "p0"
provider = "openai"
api_key = "sk-bench"
base_url = "{base}/stream/v1"
text_model = "{MODEL}"

[state]
backend = "redis"
url = "{redis_url}"

[[step]]
name = "answer"
prompt = "Say hello to {{n}}"
max_tokens = 20
"""
    )
    rows = []
    for engine in ("local", "ray"):
        started = 0.0
        if engine == "ray":
            import ray

            begin = time.perf_counter()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            started = time.perf_counter() - begin
        inputs = [{"n": f"{engine}-{i}"} for i in range(n)]
        begin = time.perf_counter()
        done = run_batch(
            flow,
            inputs,
            engine=engine,
            concurrency=8,
            progress=False,
            checkpoint=str(tmp / f"{engine}.sqlite"),
        )
        assert done.completed == n, [r["error"] for r in done.results if r["error"]][:3]
        rows.append((engine, started, n / (time.perf_counter() - begin)))
        if engine == "ray":
            ray.shutdown()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, shorter fleets")
    parser.add_argument(
        "--one-cpu", action="store_true", help="the per-call table alone, everything on one CPU"
    )
    args = parser.parse_args()
    calls, seconds = (500, 2.0) if args.quick else (3000, 5.0)
    console = Console()
    if args.one_cpu:  # nginx and redis-server, started below, inherit it
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    console.print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores"
        f"{' (all of this on one)' if args.one_cpu else ''}; nginx and redis-server on "
        "127.0.0.1"
    )
    import tempfile

    with Nginx() as up, RedisServer() as rs, tempfile.TemporaryDirectory() as tmp:
        try:
            tables(args, console, up.base, rs.url, Path(tmp), calls, seconds)
        finally:
            # What the models queued goes now, while this Redis runs (exit is too late).
            from agency.resilience import flush_state

            flush_state()


def tables(
    args: argparse.Namespace,
    console: Console,
    base: str,
    redis_url: str,
    tmp: Path,
    calls: int,
    seconds: float,
) -> None:
    """The three tables (see the module's docstring), on nginx at ``base`` and Redis."""
    rows = per_call(base, redis_url, calls)
    ping_sync, ping_async, script = floor(redis_url)
    waits = round_trips(base, redis_url)
    t = Table(title="per call: one entry with an rpm limit and a budget")
    for col in ("state", "sync c=1 ms", "async c=1 ms", "async c=50 calls/s"):
        t.add_column(col, justify="right" if col != "state" else "left")
    for name, sync, single, rate in rows:
        t.add_row(name, f"{sync:.3f}", f"{single:.3f}", "" if rate != rate else f"{rate:,.0f}")
    (_, s0, a0, _), (_, s1, a1, _), (_, s2, a2, _), (_, s3, a3, _) = rows
    t.add_row("redis - memory", f"{s1 - s0:+.3f}", f"{a1 - a0:+.3f}", "")
    t.add_row("floor: a PING a call", f"{s2 - s0:+.3f}", f"{a2 - a0:+.3f}", "")
    t.add_row("floor: the script by hand", f"{s3 - s0:+.3f}", f"{a3 - a0:+.3f}", "")
    t.add_row("a PING alone", f"{ping_sync:.3f}", f"{ping_async:.3f}", "")
    t.add_row("the script's time in Redis", f"{script:.3f}", f"{script:.3f}", "")
    console.print(t)
    console.print(
        f"Redis round trips a call waits for: {waits:.2f} (the admission; "
        "verdicts, refunds, settlements and counters are queued off the path)"
    )
    if args.one_cpu:
        return

    rpm = 60
    t = Table(title=f"a fleet under one rpm = {rpm}, {seconds:g} s of calls as fast as allowed")
    for col in ("processes", "limit allows", "redis: upstream got", "memory: upstream got"):
        t.add_column(col, justify="right")
    allows = rpm + rpm * seconds / 60
    for n in (1, 2, 4, 8):
        shared = fleet(
            base, redis_url, n, {"backend": "redis", "url": redis_url}, rpm, seconds, tmp
        )
        alone = fleet(base, redis_url, n, {}, rpm, seconds, tmp)
        t.add_row(str(n), f"{allows:.0f}", str(shared), str(alone))
    console.print(t)

    runs = 100 if args.quick else 400
    t = Table(title=f"run_batch: a one-step workflow over {runs} inputs, concurrency 8")
    for col in ("engine", "start s", "runs/s"):
        t.add_column(col, justify="right" if col != "engine" else "left")
    for engine, started, rate in batch(base, redis_url, runs, tmp):
        t.add_row(engine, f"{started:.1f}" if started else "", f"{rate:,.0f}")
    console.print(t)


if __name__ == "__main__":
    main()
