"""LiteLLM's ``acompletion`` against the benchmark's nginx, in the Python that has LiteLLM.

Run by ``benchmarks/overhead.py --litellm-python PATH`` (LiteLLM's dependencies would move
ours, so it lives in its own environment); prints one JSON object with the same measures as
the other clients' rows. Standard library and litellm only.

    PATH/python benchmarks/_litellm_client.py BASE_URL SEQUENTIAL CONCURRENT STREAMS
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from importlib.metadata import version

import litellm

litellm.suppress_debug_info = True
MESSAGES = [{"role": "user", "content": "Say hello"}]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(base: str, sequential: int, concurrent: int, streams: int) -> dict[str, object]:
    kw = {"model": "openai/gpt-4o-mini", "api_key": "sk-bench", "messages": MESSAGES}

    async def chat() -> None:
        await litellm.acompletion(api_base=f"{base}/v1", **kw)

    async def stream() -> tuple[float, float, int]:
        t0 = time.perf_counter()
        first = last = 0.0
        n = 0
        events = await litellm.acompletion(api_base=f"{base}/stream/v1", stream=True, **kw)
        async for event in events:
            if event.choices and event.choices[0].delta.content:
                last = time.perf_counter()
                first = first or last
                n += 1
        return first - t0, (last - first) / max(1, n - 1), n

    for _ in range(50):
        await chat()
    times = []
    for _ in range(sequential):
        t0 = time.perf_counter()
        await chat()
        times.append(time.perf_counter() - t0)
    out: dict[str, object] = {
        "version": version("litellm"),
        "c1_p50_ms": statistics.median(times) * 1e3,
        "c1_p99_ms": _pct(times, 0.99) * 1e3,
    }
    for level in (50, 200):
        await asyncio.gather(*(chat() for _ in range(level)))
        left = [concurrent]
        latencies: list[float] = []

        async def worker(left: list[int], latencies: list[float]) -> None:
            while left[0] > 0:
                left[0] -= 1
                t0 = time.perf_counter()
                await chat()
                latencies.append(time.perf_counter() - t0)

        cpu, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(left, latencies) for _ in range(level)))
        wall = time.perf_counter() - t0
        out[f"c{level}"] = {
            "rate": concurrent / wall,
            "p50_ms": statistics.median(latencies) * 1e3,
            "p99_ms": _pct(latencies, 0.99) * 1e3,
            "cpu_ms": (time.process_time() - cpu) / concurrent * 1e3,
        }
    for _ in range(3):
        await stream()
    single = [await stream() for _ in range(streams)]
    out["stream_ttft_ms"] = statistics.median(s[0] for s in single) * 1e3
    out["stream_chunk_us"] = statistics.median(s[1] for s in single) * 1e6
    out["stream_chunks"] = single[0][2]
    return out


if __name__ == "__main__":
    base, seq, conc, streams = sys.argv[1], *map(int, sys.argv[2:5])
    print(json.dumps(asyncio.run(main(base, seq, conc, streams))))
