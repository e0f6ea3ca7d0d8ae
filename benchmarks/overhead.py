"""Per-call overhead of agency's chat model next to raw httpx, the openai SDK and ChatOpenAI.

All four clients call the same local server (a minimal OpenAI-shaped ASGI app in its own
process, so its CPU does not share the client's GIL) and get the same canned answer. Prints
per-call latency (p50, mean) at concurrency 1, and throughput at concurrency 50.

    python benchmarks/overhead.py [--calls 2000] [--concurrent-calls 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rich.console import Console
from rich.table import Table

ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello there!",
                    "refusal": None,
                    "annotations": [],
                },
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": 3,
            "total_tokens": 12,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "system_fingerprint": "fp_bench",
    }
).encode()
MESSAGES = [{"role": "user", "content": "Say hello"}]


async def _app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"x-request-id", b"req_bench")],
        }
    )
    await send({"type": "http.response.body", "body": ANSWER})


def _serve(port: int) -> None:
    import uvicorn

    uvicorn.run(
        _app, host="127.0.0.1", port=port, log_level="error", access_log=False, lifespan="off"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int) -> None:
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("benchmark server did not start")


def _clients(
    base: str,
) -> tuple[dict[str, Callable[[], Any]], dict[str, Callable[[], Awaitable[Any]]]]:
    import httpx
    import openai
    from langchain_openai import ChatOpenAI

    import agency

    hx = httpx.Client(timeout=30)
    ahx = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200))
    headers = {"authorization": "Bearer sk-test"}
    oai = openai.OpenAI(base_url=base, api_key="sk-test", max_retries=0)
    aoai = openai.AsyncOpenAI(base_url=base, api_key="sk-test", max_retries=0)
    lc = ChatOpenAI(base_url=base, api_key="sk-test", model="gpt-4o-mini", max_retries=0)  # type: ignore[arg-type]
    ours = agency.chat_model(
        "openai-compatible:gpt-4o-mini", base_url=base, api_key="sk-test", max_retries=0
    )

    def raw() -> Any:
        r = hx.post(
            f"{base}/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES},
            headers=headers,
        )
        return r.json()["choices"][0]["message"]["content"]

    async def araw() -> Any:
        r = await ahx.post(
            f"{base}/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES},
            headers=headers,
        )
        return r.json()["choices"][0]["message"]["content"]

    from langchain_core.messages import HumanMessage

    from agency.providers._base import ChatRequest

    request = ChatRequest(messages=[HumanMessage("Say hello")], model="gpt-4o-mini")
    adapter = ours._adapter

    sync = {
        "raw httpx": raw,
        "agency adapter (no LangChain)": lambda: list(adapter.chat(request, stream=False)),
        "openai SDK": lambda: oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES),  # type: ignore[arg-type]
        "langchain-openai ChatOpenAI": lambda: lc.invoke("Say hello"),
        "agency.chat_model": lambda: ours.invoke("Say hello"),
    }

    async def aadapter() -> Any:
        return [chunk async for chunk in adapter.achat(request, stream=False)]

    asyn = {
        "raw httpx": araw,
        "agency adapter (no LangChain)": aadapter,
        "openai SDK": lambda: aoai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES),  # type: ignore[arg-type]
        "langchain-openai ChatOpenAI": lambda: lc.ainvoke("Say hello"),
        "agency.chat_model": lambda: ours.ainvoke("Say hello"),
    }
    return sync, asyn


def _interleaved(fns: dict[str, Callable[[], Any]], calls: int) -> dict[str, list[float]]:
    """Per-call times, the clients taking turns call by call, so drift on a shared machine
    (frequency, other processes) hits each of them alike."""
    for _ in range(min(100, calls)):  # warm-up: connections, imports, caches
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(calls):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


async def _concurrent(fn: Callable[[], Awaitable[Any]], calls: int, concurrency: int) -> float:
    await asyncio.gather(*(fn() for _ in range(concurrency)))  # warm-up
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await fn()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return calls / (time.perf_counter() - t0)


def _langchain_floor() -> float:
    """ms per `invoke` of a chat model that does nothing: what any LangChain model pays."""
    import timeit

    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    class Noop(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "noop"

        def _generate(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> ChatResult:
            return ChatResult(generations=[ChatGeneration(message=AIMessage("hi"))])

    model = Noop()
    return min(timeit.repeat(lambda: model.invoke("Say hello"), number=500, repeat=5)) / 500 * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls per client")
    parser.add_argument(
        "--concurrent-calls", type=int, default=5000, help="calls per client at concurrency 50"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; the best p50 counts"
    )
    args = parser.parse_args()

    port = _free_port()
    server = multiprocessing.Process(target=_serve, args=(port,), daemon=True)
    server.start()
    try:
        _wait(port)
        base = f"http://127.0.0.1:{port}/v1"
        sync, asyn = _clients(base)
        p50: dict[str, float] = {}
        mean: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, times in _interleaved(sync, args.calls).items():
                p50[name] = min(p50.get(name, 1e9), statistics.median(times) * 1e3)
                mean[name] = min(mean.get(name, 1e9), statistics.fmean(times) * 1e3)
        throughput = {}
        for name, afn in asyn.items():
            throughput[name] = asyncio.run(_concurrent(afn, args.concurrent_calls, 50))

        table = Table(
            title=f"chat completion against one local server (python {sys.version.split()[0]}, {os.cpu_count()} cores)"
        )
        for col in (
            "client",
            "c=1 p50 ms",
            "c=1 mean ms",
            "overhead vs httpx (p50) ms",
            "c=50 calls/s",
        ):
            table.add_column(col, justify="right" if col != "client" else "left")
        base_p50 = p50["raw httpx"]
        for name in sync:
            table.add_row(
                name,
                f"{p50[name]:.3f}",
                f"{mean[name]:.3f}",
                f"{p50[name] - base_p50:+.3f}",
                f"{throughput[name]:.0f}",
            )
        Console().print(table)
        floor = _langchain_floor()
        print(
            f"LangChain's own BaseChatModel.invoke machinery (a model whose _generate returns at once): {floor:.3f} ms per call"
        )
        over = p50["agency.chat_model"] - base_p50
        print(
            f"agency overhead over raw httpx at concurrency 1: {over:.3f} ms per call (target <= 0.3 ms)"
        )
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    main()
