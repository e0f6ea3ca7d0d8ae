"""What serving through `to_a2a_app` costs over a bare a2a-sdk server, per A2A round trip.

    python benchmarks/a2a_bench.py [--runs 300] [--words 4]

Three servers, each real uvicorn on 127.0.0.1 in its own process, answer the same way: the task,
"working", the answer ``--words`` words streamed as chunks of one artifact (``append``, the last
``lastChunk``), then "completed".

- **ours**: `to_a2a_app` over a `RunnableLambda` that streams the words at once (our executor:
  conversation history, a lock per context, cancel bookkeeping, the card with 1.0 and 0.3
  interfaces);
- **bare**: an `AgentExecutor` written here on a2a-sdk's own server classes
  (``DefaultRequestHandler``, ``InMemoryTaskStore``, ``create_jsonrpc_routes``) doing only the
  above;
- **bare+lc**: the bare executor taking its chunks from the same `RunnableLambda`'s
  ``astream``: what LangChain's Runnable machinery (config, callbacks) costs by itself, so the
  gap between it and ours is what our executor adds.

The same client (a2a-sdk's, over one keep-alive httpx client per server) measures ``send`` (a
blocking SendMessage, until the completed task is back) and ``stream`` to first token
(SendStreamingMessage, until the first artifact chunk arrives). Rounds alternate between the
servers so drift on a shared machine hits both alike. Goal: ours within 10% of bare.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from rich.console import Console
from rich.table import Table

WORDS = ("the", "answer", "is", "forty-two", "and", "that", "is", "all")


def _answer(words: int) -> list[str]:
    return [w + " " for w in (WORDS * (words // len(WORDS) + 1))[:words]]


# ------------------------------------------------------------------------------ servers
def _ours(url: str, words: int) -> Any:
    from langchain_core.messages import AIMessageChunk, BaseMessage
    from langchain_core.runnables import RunnableLambda

    from agency.agents.a2a import to_a2a_app

    pieces = _answer(words)

    async def instant(messages: list[BaseMessage]) -> AsyncIterator[AIMessageChunk]:
        for piece in pieces:
            yield AIMessageChunk(content=piece)

    return to_a2a_app(RunnableLambda(instant, name="instant"), url=url)


def _bare(url: str, words: int, *, runnable: bool = False) -> Any:
    from a2a.helpers.proto_helpers import new_task_from_user_message
    from a2a.server.agent_execution import AgentExecutor, RequestContext
    from a2a.server.events import EventQueue
    from a2a.server.request_handlers import DefaultRequestHandler
    from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
    from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
    from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Part
    from langchain_core.messages import AIMessageChunk, HumanMessage
    from langchain_core.runnables import RunnableLambda
    from starlette.applications import Starlette

    pieces = _answer(words)

    async def instant(messages: Any) -> AsyncIterator[AIMessageChunk]:
        for piece in pieces:
            yield AIMessageChunk(content=piece)

    lc = RunnableLambda(instant, name="instant")

    async def chunks(text: str) -> AsyncIterator[str]:
        if not runnable:
            for piece in pieces:
                yield piece
            return
        async for chunk in lc.astream([HumanMessage(text)]):
            yield chunk.text

    class Instant(AgentExecutor):
        async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
            assert context.message is not None
            task = context.current_task
            if task is None:
                task = new_task_from_user_message(context.message)
                await event_queue.enqueue_event(task)
            updater = TaskUpdater(event_queue, task.id, task.context_id)
            await updater.start_work()
            i = 0
            async for piece in chunks(context.get_user_input()):
                await updater.add_artifact(
                    [Part(text=piece)],
                    artifact_id="answer",
                    name="answer",
                    append=i > 0,
                    last_chunk=i == len(pieces) - 1,
                )
                i += 1
            await updater.complete()

        async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
            await TaskUpdater(event_queue, context.task_id or "", context.context_id or "").cancel()

    card = AgentCard(
        name="instant",
        description="Answers at once, on a2a-sdk alone.",
        version="0.1.0",
        supported_interfaces=[
            AgentInterface(url=url + "/", protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="instant", name="instant", description="Answers.", tags=["general"])],
    )
    handler = DefaultRequestHandler(
        agent_executor=Instant(), task_store=InMemoryTaskStore(), agent_card=card
    )
    rpc = create_jsonrpc_routes(handler, rpc_url="/", enable_v0_3_compat=True)
    return Starlette(routes=[*create_agent_card_routes(card), *rpc])


def _bare_runnable(url: str, words: int) -> Any:
    return _bare(url, words, runnable=True)


SERVERS: dict[str, Callable[[str, int], Any]] = {
    "bare": _bare,
    "bare+lc": _bare_runnable,
    "ours": _ours,
}


def _serve(kind: str, port: int, words: int) -> None:
    import uvicorn

    app = SERVERS[kind](f"http://127.0.0.1:{port}", words)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"benchmark server on port {port} did not start")


# ------------------------------------------------------------------------------ client
async def _clients(url: str) -> tuple[Any, Any, Any]:
    import httpx
    from a2a.client import A2ACardResolver, ClientConfig, ClientFactory

    http = httpx.AsyncClient(timeout=30)
    card = await A2ACardResolver(http, url).get_agent_card()
    send = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
    stream = ClientFactory(ClientConfig(httpx_client=http, streaming=True)).create(card)
    return http, send, stream


def _request(text: str) -> Any:
    from uuid import uuid4

    from a2a.types import Message, Part, Role, SendMessageRequest

    return SendMessageRequest(
        message=Message(role=Role.ROLE_USER, message_id=uuid4().hex, parts=[Part(text=text)])
    )


async def _send(client: Any, expected: str) -> float:
    request = _request("what is the answer?")
    start = time.perf_counter()
    replies = [r async for r in client.send_message(request)]
    elapsed = time.perf_counter() - start
    text = "".join(p.text for a in replies[-1].task.artifacts for p in a.parts)
    assert text == expected, f"unexpected answer {text!r}"
    return elapsed


async def _first_token(client: Any) -> float:
    request = _request("what is the answer?")
    start = time.perf_counter()
    first: float | None = None
    async for event in client.send_message(request):  # read to the end: a whole round trip
        if first is None and event.HasField("artifact_update"):
            first = time.perf_counter() - start
    assert first is not None, "no artifact chunk streamed"
    return first


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


async def _measure(urls: dict[str, str], runs: int, warmup: int, words: int) -> dict[str, Any]:
    expected = "".join(_answer(words))
    clients = {kind: await _clients(url) for kind, url in urls.items()}
    timings: dict[tuple[str, str], list[float]] = {
        (kind, what): [] for kind in urls for what in ("send", "stream")
    }
    probes: dict[str, Callable[[Any], Awaitable[float]]] = {
        "send": lambda c: _send(c[1], expected),
        "stream": lambda c: _first_token(c[2]),
    }
    try:
        for i in range(warmup + runs):
            order = list(urls) if i % 2 == 0 else list(reversed(urls))
            for what, probe in probes.items():
                for kind in order:
                    elapsed = await probe(clients[kind])
                    if i >= warmup:
                        timings[(kind, what)].append(elapsed)
    finally:
        for http, _, _ in clients.values():
            await http.aclose()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--words", type=int, default=4, help="chunks in each answer")
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    ports = {kind: _free_port() for kind in SERVERS}
    procs = [
        ctx.Process(target=_serve, args=(kind, port, args.words), daemon=True)
        for kind, port in ports.items()
    ]
    for proc in procs:
        proc.start()
    try:
        for port in ports.values():
            _wait(port)
        urls = {kind: f"http://127.0.0.1:{port}" for kind, port in ports.items()}
        timings = asyncio.run(_measure(urls, args.runs, args.warmup, args.words))
    finally:
        for proc in procs:
            proc.terminate()
            proc.join(timeout=5)

    table = Table(
        title=f"A2A round trip, {args.runs} runs each, {args.words} chunks, uvicorn on 127.0.0.1"
    )
    table.add_column("")
    for kind in SERVERS:
        table.add_column(f"{kind} p50", justify="right")
    for kind in SERVERS:
        table.add_column(f"{kind} p99", justify="right")
    table.add_column("ours/bare p50", justify="right")
    labels = {"send": "send (completed task), ms", "stream": "stream to first token, ms"}
    for what, label in labels.items():
        ratio = statistics.median(timings[("ours", what)]) / statistics.median(
            timings[("bare", what)]
        )
        table.add_row(
            label,
            *(f"{_pct(timings[(kind, what)], 0.5):.2f}" for kind in SERVERS),
            *(f"{_pct(timings[(kind, what)], 0.99):.2f}" for kind in SERVERS),
            f"{ratio:.3f}",
        )
    Console(width=140).print(table)
    print("goal: ours within 10% of bare (p50 ratio <= 1.10)")


if __name__ == "__main__":
    main()
