"""The client's own cost, against an upstream that is not the bottleneck (nginx, `_nginx`).

Every client calls the same nginx on 127.0.0.1 for the same canned OpenAI answers, in one run,
side by side: a raw socket floor, raw ``httpx``, ``httpx`` on the aiohttp transport
(``httpx-aiohttp``), raw ``aiohttp``, the ``openai`` SDK (default and aiohttp clients),
langchain-openai's ``ChatOpenAI``, the agency adapter alone, ``agency.chat_model`` and the
``Agency`` facade over 3 providers. Tables:

1. non-streamed chat at c=1 (p50, p99: clients take turns call by call, so drift hits all
   alike), and at c=50 and c=200 (calls/s, p50, p99, CPU ms per call of this process);
2. streamed chat (`_nginx.STREAM_CHUNKS` chunks): time to first token and time per chunk at
   c=1, streams/s and p50 time to first token at c=50;
3. embeddings of 1 and 100 texts (p50 at c=1);
4. RSS per open stream, 1,000 streams held open at once (each client in a fresh process).

The upstream's own ceiling (wrk) heads the tables. ``--quick`` runs fewer calls.

    python benchmarks/overhead.py [--quick] [--only NAME,...] [--profile c50.prof]
                                  [--litellm-python PATH]  (adds LiteLLM's acompletion)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # `agency` from a checkout

from _nginx import MODEL, STREAM_CHUNKS, Nginx

MESSAGES = [{"role": "user", "content": "Say hello"}]
BODY = {"model": MODEL, "messages": MESSAGES}
HEADERS = {"authorization": "Bearer sk-bench"}
OPEN_STREAMS = 1000


@dataclass
class Client:
    """One client's async operations (None: it has no such operation)."""

    name: str
    chat: Callable[[], Awaitable[Any]]
    stream: Callable[[], AsyncIterator[str]] | None = None
    embed: Callable[[list[str]], Awaitable[Any]] | None = None
    close: Callable[[], Awaitable[Any]] | None = None


# --------------------------------------------------------------------------- clients
def _delta_text(line: str) -> str | None:
    """The content of one OpenAI SSE line, as a raw client parses it (None: no content)."""
    if not line.startswith("data: ") or line == "data: [DONE]":
        return None
    choices = json.loads(line[6:])["choices"]
    return choices[0]["delta"].get("content") if choices else None


def _embed_request(texts: list[str]) -> tuple[str, dict[str, Any]]:
    """The nginx path serving ``len(texts)`` vectors, and the request body."""
    path = "/v1/embeddings" if len(texts) == 1 else "/e100/v1/embeddings"
    return path, {"model": "text-embedding-3-small", "input": texts}


def _raw_socket(base: str) -> Client:
    """The floor: one pre-built request on a kept-alive socket per task, the body read by
    Content-Length; no JSON parsing, no pool."""
    host, port = base.removeprefix("http://").split(":")

    payload = json.dumps(BODY).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer sk-bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def chat() -> bytes:
        conn = idle.pop() if idle else await asyncio.open_connection(host, int(port))
        reader, writer = conn
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
        idle.append(conn)
        return body

    return Client("raw socket (floor)", chat)


def _httpx_client(name: str, client: Any, base: str) -> Client:

    async def chat() -> Any:
        r = await client.post(f"{base}/v1/chat/completions", json=BODY, headers=HEADERS)
        return r.json()["choices"][0]["message"]["content"]

    async def stream() -> AsyncIterator[str]:
        body = {**BODY, "stream": True}
        async with client.stream(
            "POST", f"{base}/stream/v1/chat/completions", json=body, headers=HEADERS
        ) as r:
            async for line in r.aiter_lines():
                text = _delta_text(line)
                if text:
                    yield text

    async def embed(texts: list[str]) -> Any:
        path, body = _embed_request(texts)
        r = await client.post(f"{base}{path}", json=body, headers=HEADERS)
        return [d["embedding"] for d in r.json()["data"]]

    return Client(name, chat, stream, embed, client.aclose)


def _aiohttp(base: str) -> Client:
    session: aiohttp.ClientSession | None = None

    def s() -> aiohttp.ClientSession:
        nonlocal session
        if session is None:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
        return session

    async def chat() -> Any:
        async with s().post(f"{base}/v1/chat/completions", json=BODY, headers=HEADERS) as r:
            return (await r.json())["choices"][0]["message"]["content"]

    async def stream() -> AsyncIterator[str]:
        body = {**BODY, "stream": True}
        async with s().post(f"{base}/stream/v1/chat/completions", json=body, headers=HEADERS) as r:
            async for raw in r.content:
                text = _delta_text(raw.decode().rstrip("\n"))
                if text:
                    yield text

    async def embed(texts: list[str]) -> Any:
        path, body = _embed_request(texts)
        async with s().post(f"{base}{path}", json=body, headers=HEADERS) as r:
            return [d["embedding"] for d in (await r.json())["data"]]

    async def close() -> None:
        if session is not None:
            await session.close()

    return Client("raw aiohttp", chat, stream, embed, close)


FLOOR = "LangChain floor"
MODEL_FLOOR = "LangChain model floor"


class _FloorParts:
    """The least a LangChain chat model's own methods can do on these transports: raw aiohttp
    for a call and raw httpx's line reader for a stream (each the fastest raw row), orjson, and
    the objects ``_agenerate``/``_astream`` must return (an `AIMessage` with usage in a
    `ChatResult`; an `AIMessageChunk` in a `ChatGenerationChunk` per piece). No checks."""

    def __init__(self, base: str, hx: Any) -> None:
        self.base, self.hx = base, hx
        self.session: Any = None

    async def result(self) -> Any:
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
        url = f"{self.base}/v1/chat/completions"
        async with self.session.post(url, json=BODY, headers=HEADERS) as r:
            data = orjson.loads(await r.read())
        choice, usage = data["choices"][0], data["usage"]
        message = AIMessage(
            content=choice["message"]["content"],
            id=data["id"],
            usage_metadata={
                "input_tokens": usage["prompt_tokens"],
                "output_tokens": usage["completion_tokens"],
                "total_tokens": usage["total_tokens"],
            },
            response_metadata={
                "model_name": data["model"],
                "finish_reason": choice["finish_reason"],
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def chunks(self) -> AsyncIterator[Any]:
        body = {**BODY, "stream": True}
        url = f"{self.base}/stream/v1/chat/completions"
        async with self.hx.stream("POST", url, json=body, headers=HEADERS) as r:
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = orjson.loads(line[6:])
                choices = data["choices"]
                text = choices[0]["delta"].get("content") if choices else None
                if text:
                    yield ChatGenerationChunk(message=AIMessageChunk(content=text, id=data["id"]))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        await self.hx.aclose()


def _langchain_floor(base: str, hx: Any) -> Client:
    """`_FloorParts` called directly: LangChain's objects, none of its machinery."""
    parts = _FloorParts(base, hx)

    async def chat() -> Any:
        return (await parts.result()).generations[0].message

    async def stream() -> AsyncIterator[str]:
        async for chunk in parts.chunks():
            yield chunk.text

    return Client(FLOOR, chat, stream, None, parts.close)


def _langchain_model_floor(base: str, hx: Any) -> Client:
    """`_FloorParts` as a `BaseChatModel`'s ``_agenerate``/``_astream``, called as users call
    a model (``ainvoke``/``astream``): the least any LangChain chat model costs that goes
    through LangChain's own ``ainvoke`` (callbacks, input conversion, output checks)."""
    from langchain_core.language_models import BaseChatModel

    parts = _FloorParts(base, hx)

    class FloorModel(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "floor"

        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError("async only")

        async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
            return await parts.result()

        async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            async for chunk in parts.chunks():
                yield chunk

    model = FloorModel()

    async def stream() -> AsyncIterator[str]:
        async for chunk in model.astream("Say hello"):
            if chunk.text:
                yield chunk.text

    return Client(MODEL_FLOOR, lambda: model.ainvoke("Say hello"), stream, None, parts.close)


def _openai(name: str, base: str, aiohttp: bool) -> Client:
    import openai

    kw: dict[str, Any] = {}
    if aiohttp:
        kw["http_client"] = openai.DefaultAioHttpClient()
    one = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="sk-bench", max_retries=0, **kw)
    many = openai.AsyncOpenAI(base_url=f"{base}/e100/v1", api_key="sk-bench", max_retries=0, **kw)
    streaming = openai.AsyncOpenAI(
        base_url=f"{base}/stream/v1", api_key="sk-bench", max_retries=0, **kw
    )

    async def chat() -> Any:
        r = await one.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
        return r.choices[0].message.content

    async def stream() -> AsyncIterator[str]:
        events = await streaming.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        async for event in events:
            if event.choices and event.choices[0].delta.content:
                yield event.choices[0].delta.content

    async def embed(texts: list[str]) -> Any:
        client = one if len(texts) == 1 else many
        r = await client.embeddings.create(model="text-embedding-3-small", input=texts)
        return [d.embedding for d in r.data]

    async def close() -> None:
        for client in (one, many, streaming):
            await client.close()

    return Client(name, chat, stream, embed, close)


def _chat_openai(base: str) -> Client:
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    kw: dict[str, Any] = {"api_key": "sk-bench", "max_retries": 0}
    lc = ChatOpenAI(base_url=f"{base}/v1", model=MODEL, **kw)
    lcs = ChatOpenAI(base_url=f"{base}/stream/v1", model=MODEL, stream_usage=True, **kw)
    # check_embedding_ctx_length=False: otherwise it downloads tiktoken's tables
    e1 = OpenAIEmbeddings(base_url=f"{base}/v1", check_embedding_ctx_length=False, **kw)
    e100 = OpenAIEmbeddings(base_url=f"{base}/e100/v1", check_embedding_ctx_length=False, **kw)

    async def stream() -> AsyncIterator[str]:
        async for chunk in lcs.astream("Say hello"):
            if chunk.text:
                yield chunk.text

    async def embed(texts: list[str]) -> Any:
        return await (e1 if len(texts) == 1 else e100).aembed_documents(texts)

    return Client("langchain-openai ChatOpenAI", lambda: lc.ainvoke("Say hello"), stream, embed)


def _agency_clients(base: str) -> list[Client]:
    from langchain_core.messages import HumanMessage

    import agency
    from agency import Agency, AgencyConfig
    from agency.providers._base import ChatRequest

    def model(path: str) -> Any:
        return agency.chat_model(
            f"openai-compatible:{MODEL}", base_url=f"{base}{path}", api_key="sk-bench",
            max_retries=0,
        )  # fmt: skip

    ours, ours_stream = model("/v1"), model("/stream/v1")
    adapter, stream_adapter = ours._adapter, ours_stream._adapter
    request = ChatRequest(messages=[HumanMessage("Say hello")], model=MODEL)
    e_kw = {"api_key": "sk-bench", "max_retries": 0}
    e1 = agency.embeddings(
        "openai-compatible:text-embedding-3-small", base_url=f"{base}/v1", **e_kw
    )
    e100 = agency.embeddings(
        "openai-compatible:text-embedding-3-small", base_url=f"{base}/e100/v1", **e_kw
    )

    async def a_chat() -> Any:
        return [c async for c in adapter.achat(request, stream=False)]

    async def a_stream() -> AsyncIterator[str]:
        async for chunk in stream_adapter.achat(request, stream=True):
            if chunk.text:
                yield chunk.text

    async def a_embed(texts: list[str]) -> Any:
        return await (e1 if len(texts) == 1 else e100)._adapter.aembed(
            texts, model="text-embedding-3-small"
        )

    async def m_stream() -> AsyncIterator[str]:
        async for chunk in ours_stream.astream("Say hello"):
            if chunk.text:
                yield chunk.text

    async def m_embed(texts: list[str]) -> Any:
        return await (e1 if len(texts) == 1 else e100).aembed_documents(texts)

    def facade(path: str) -> Any:
        entries = [
            {"name": f"p{i}", "provider": "openai-compatible", "api_key": "sk-bench",
             "base_url": f"{base}{path}", "text_model": MODEL, "priority": i}
            for i in range(3)
        ]  # fmt: skip
        llm = {"providers": entries, "fallback": {"enabled": True}}
        return Agency(AgencyConfig.from_dict({"llm": llm})).chat_model()

    chain, chain_stream = facade("/v1"), facade("/stream/v1")

    async def f_stream() -> AsyncIterator[str]:
        async for chunk in chain_stream.astream("Say hello"):
            if chunk.text:
                yield chunk.text

    return [
        Client("agency adapter (no LangChain)", a_chat, a_stream, a_embed),
        Client("agency.chat_model", lambda: ours.ainvoke("Say hello"), m_stream, m_embed),
        Client("Agency facade, 3 providers", lambda: chain.ainvoke("Say hello"), f_stream),
    ]


def clients(base: str) -> list[Client]:
    import httpx

    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    out = [_raw_socket(base), _httpx_client("raw httpx", httpx.AsyncClient(limits=limits), base)]
    try:
        from httpx_aiohttp import AiohttpTransport

        hx = httpx.AsyncClient(transport=AiohttpTransport(), limits=limits)
        out.append(_httpx_client("httpx + aiohttp transport", hx, base))
    except ImportError:
        print("httpx-aiohttp not installed: its row is left out (scripts/setup.sh --bench)")
    out += [
        _aiohttp(base),
        _openai("openai SDK", base, aiohttp=False),
        _openai("openai SDK, aiohttp client", base, aiohttp=True),
        _chat_openai(base),
        _langchain_floor(base, httpx.AsyncClient(limits=limits)),
        _langchain_model_floor(base, httpx.AsyncClient(limits=limits)),
        *_agency_clients(base),
    ]
    return out


# --------------------------------------------------------------------------- measurements
def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def sequential(cs: list[Client], calls: int) -> dict[str, list[float]]:
    """c=1 latencies, the clients taking turns call by call."""
    for _ in range(50):
        for c in cs:
            await c.chat()
    times: dict[str, list[float]] = {c.name: [] for c in cs}
    for _ in range(calls):
        for c in cs:
            t0 = time.perf_counter()
            await c.chat()
            times[c.name].append(time.perf_counter() - t0)
    return times


async def concurrent(
    fn: Callable[[], Awaitable[Any]], calls: int, concurrency: int
) -> tuple[float, list[float], float]:
    """(calls/s, latencies, CPU seconds per call) of ``calls`` calls by ``concurrency`` tasks."""
    await asyncio.gather(*(fn() for _ in range(concurrency)))  # warm-up: the pool fills
    remaining = calls
    latencies: list[float] = []

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            await fn()
            latencies.append(time.perf_counter() - t0)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return calls / wall, latencies, cpu / calls


async def one_stream(fn: Callable[[], AsyncIterator[str]]) -> tuple[float, float]:
    """(time to first token, time per chunk after it) of one stream."""
    t0 = time.perf_counter()
    first = last = 0.0
    n = 0
    async for _ in fn():
        last = time.perf_counter()
        if n == 0:
            first = last
        n += 1
    if n != STREAM_CHUNKS:
        raise RuntimeError(f"{n} chunks, not {STREAM_CHUNKS}")
    return first - t0, (last - first) / (n - 1)


async def streams_concurrent(
    fn: Callable[[], AsyncIterator[str]], streams: int, concurrency: int
) -> tuple[float, list[float]]:
    await asyncio.gather(*(one_stream(fn) for _ in range(concurrency)))
    remaining = streams
    ttft: list[float] = []

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            ttft.append((await one_stream(fn))[0])

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return streams / (time.perf_counter() - t0), ttft


async def langchain_floor(calls: int = 5000) -> float:
    """CPU ms of one ``ainvoke`` of a chat model that returns at once: what any LangChain
    model pays on top of its HTTP client (so the most any of them can reach at c=50)."""
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    class Noop(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "noop"

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                      **kw: Any) -> ChatResult:  # fmt: skip
            return ChatResult(generations=[ChatGeneration(message=AIMessage("hi"))])

        async def _agenerate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                             **kw: Any) -> ChatResult:  # fmt: skip
            return self._generate(messages)

    model = Noop()
    for _ in range(200):
        await model.ainvoke("Say hello")
    cpu = time.process_time()
    for _ in range(calls):
        await model.ainvoke("Say hello")
    return (time.process_time() - cpu) / calls * 1e3


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _hold_streams(client: Client, n: int) -> float:
    """KiB of RSS per stream with ``n`` streams open at once (each read to its first token)."""
    assert client.stream is not None
    await one_stream(client.stream)  # imports, pools, caches
    before = _rss_kib()
    release = asyncio.Event()
    started = 0
    peak = before

    async def hold() -> None:
        nonlocal started
        agen = client.stream()  # type: ignore[misc]
        await agen.__anext__()
        started += 1
        await release.wait()
        await agen.aclose()

    tasks = [asyncio.create_task(hold()) for _ in range(n)]
    while started < n:
        await asyncio.sleep(0.05)
        if any(t.done() and t.exception() for t in tasks):
            raise next(t.exception() for t in tasks if t.done() and t.exception())  # type: ignore[misc]
    peak = _rss_kib()
    release.set()
    await asyncio.gather(*tasks)
    return (peak - before) / n


def memory_child(name: str, base: str) -> None:
    """Run in a fresh process: print the KiB per open stream of client ``name``."""
    client = next(c for c in clients(base) if c.name == name)

    async def measure() -> float:
        try:
            return await _hold_streams(client, OPEN_STREAMS)
        finally:
            if client.close is not None:
                await client.close()

    print(f"{asyncio.run(measure()):.1f}")


# --------------------------------------------------------------------------- report
def _table(title: str, cols: list[str]) -> Table:
    table = Table(title=title)
    for i, col in enumerate(cols):
        table.add_column(col, justify="left" if i == 0 else "right")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    parser.add_argument("--only", default="", help="comma-separated tables: chat,stream,embed,rss")
    parser.add_argument("--profile", help="write a cProfile of agency.chat_model at c=50 here")
    parser.add_argument(
        "--litellm-python", help="a Python with LiteLLM installed: adds its acompletion row"
    )
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    only = set(args.only.split(",")) if args.only else {"chat", "stream", "embed", "rss"}
    seq, conc, nstreams = (300, 1000, 100) if args.quick else (1500, 5000, 400)
    console = Console()
    cpu = platform.processor() or platform.machine()
    console.print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores ({cpu}), "
        f"{platform.system()} {platform.release()}; upstream nginx (1 worker) on 127.0.0.1"
    )
    with Nginx() as up:
        ceilings = {c: up.ceiling("/v1/chat/completions", c) for c in (1, 50, 200)}
        console.print(
            "upstream ceiling (wrk, 1 thread): "
            + ", ".join(f"c={c}: {v:,.0f} calls/s" for c, v in ceilings.items() if v)
        )
        asyncio.run(_measure(console, only, up.base, seq, conc, nstreams, args.profile))
        if args.litellm_python:
            _litellm_table(console, args.litellm_python, up.base, seq, conc, nstreams // 2)
        if "rss" in only:
            _rss_table(console, clients(up.base), up.base)


async def _measure(
    console: Console,
    only: set[str],
    base: str,
    seq: int,
    conc: int,
    nstreams: int,
    profile: str | None,
) -> None:
    """The in-process tables, on one event loop (clients' pools belong to their loop)."""
    cs = clients(base)
    if "chat" in only:
        await _chat_tables(console, cs, seq, conc, profile)
    if "stream" in only:
        await _stream_table(console, cs, nstreams)
    if "embed" in only:
        await _embed_table(console, cs, seq // 5)
    for c in cs:
        if c.close is not None:
            await c.close()


async def _chat_tables(
    console: Console, cs: list[Client], seq: int, conc: int, profile: str | None
) -> None:
    times = await sequential(cs, seq)
    base = statistics.median(times["raw httpx"])
    t = _table("non-streamed chat, c=1 (ms)", ["client", "p50", "p99", "p50 over raw httpx"])
    for c in cs:
        ts = times[c.name]
        t.add_row(c.name, f"{statistics.median(ts) * 1e3:.3f}", f"{_pct(ts, 0.99) * 1e3:.3f}",
                  f"{(statistics.median(ts) - base) * 1e3:+.3f}")  # fmt: skip
    console.print(t)
    for level in (50, 200):
        rows = {c.name: await concurrent(c.chat, conc, level) for c in cs}
        fastest = max(r[0] for name, r in rows.items() if not name.startswith("raw socket"))
        floor, model_floor = rows[FLOOR][0], rows[MODEL_FLOOR][0]
        t = _table(
            f"non-streamed chat, c={level}",
            ["client", "calls/s", "x fastest client", f"x {FLOOR}", f"x {MODEL_FLOOR}",
             "p50 ms", "p99 ms", "CPU ms/call"],
        )  # fmt: skip
        for name, (rate, lat, cpu) in rows.items():
            t.add_row(name, f"{rate:,.0f}", f"{rate / fastest:.2f}", f"{rate / floor:.2f}",
                      f"{rate / model_floor:.2f}", f"{statistics.median(lat) * 1e3:.2f}",
                      f"{_pct(lat, 0.99) * 1e3:.2f}", f"{cpu * 1e3:.3f}")  # fmt: skip
        console.print(t)
        console.print(
            "(x fastest client: against the fastest row other than the raw socket; "
            f"x {FLOOR}: against raw aiohttp plus the AIMessage and ChatResult every LangChain "
            f"chat model returns; x {MODEL_FLOOR}: the same work as a BaseChatModel's "
            "_agenerate, called by ainvoke)"
        )
    floor = await langchain_floor()
    console.print(
        f"LangChain's own ainvoke (a model that returns at once): {floor:.3f} CPU ms a call, "
        "paid by every LangChain chat model on top of its HTTP client"
    )
    if profile:
        import cProfile

        model = next(c for c in cs if c.name == "agency.chat_model")
        with cProfile.Profile() as prof:
            await concurrent(model.chat, conc, 50)
        prof.dump_stats(profile)
        console.print(f"cProfile of agency.chat_model at c=50 written to {profile}")


async def _stream_table(console: Console, cs: list[Client], n: int) -> None:
    t = _table(
        f"streamed chat, {STREAM_CHUNKS} chunks",
        ["client", "c=1 TTFT p50 ms", "c=1 per chunk us", "per chunk over raw httpx",
         f"over {FLOOR}", f"over {MODEL_FLOOR}", "c=50 streams/s", "c=50 TTFT p50 ms"],
    )  # fmt: skip
    rows = {}
    for c in cs:
        if c.stream is None:
            continue
        stream = c.stream

        async def c1(
            stream: Callable[[], AsyncIterator[str]] = stream,
        ) -> list[tuple[float, float]]:
            for _ in range(5):
                await one_stream(stream)
            return [await one_stream(stream) for _ in range(n // 2)]

        single = await c1()
        rate, ttft = await streams_concurrent(stream, n, 50)
        rows[c.name] = (single, rate, ttft)
    base = statistics.median(x[1] for x in rows["raw httpx"][0])
    floor = statistics.median(x[1] for x in rows[FLOOR][0])
    model_floor = statistics.median(x[1] for x in rows[MODEL_FLOOR][0])
    for name, (single, rate, ttft) in rows.items():
        per_chunk = statistics.median(x[1] for x in single)
        t.add_row(name, f"{statistics.median(x[0] for x in single) * 1e3:.3f}",
                  f"{per_chunk * 1e6:.1f}", f"{per_chunk / base:.2f}x",
                  f"{per_chunk / floor:.2f}x", f"{per_chunk / model_floor:.2f}x",
                  f"{rate:,.0f}", f"{statistics.median(ttft) * 1e3:.2f}")  # fmt: skip
    console.print(t)
    console.print(
        f"({FLOOR}: raw httpx's lines plus the AIMessageChunk and ChatGenerationChunk every "
        f"LangChain chat model yields per piece; {MODEL_FLOOR}: the same as a BaseChatModel's "
        "_astream, called by astream)"
    )


async def _embed_table(console: Console, cs: list[Client], n: int) -> None:
    t = _table("embeddings, c=1 p50 ms", ["client", "1 text", "100 texts"])
    for c in cs:
        if c.embed is None:
            continue
        embed = c.embed

        async def run(k: int, embed: Callable[[list[str]], Awaitable[Any]] = embed) -> float:
            texts = [f"text {i}" for i in range(k)]
            for _ in range(5):
                await embed(texts)
            ts = []
            for _ in range(n if k == 1 else max(10, n // 10)):
                t0 = time.perf_counter()
                out = await embed(texts)
                ts.append(time.perf_counter() - t0)
            assert len(out) == k
            return statistics.median(ts)

        t.add_row(c.name, f"{await run(1) * 1e3:.3f}", f"{await run(100) * 1e3:.3f}")
    console.print(t)


def _litellm_table(
    console: Console, python: str, base: str, seq: int, conc: int, streams: int
) -> None:
    """LiteLLM's ``acompletion``, run by ``python`` (benchmarks/_litellm_client.py)."""
    script = Path(__file__).resolve().parent / "_litellm_client.py"
    done = subprocess.run(
        [python, str(script), base, str(seq), str(conc), str(streams)],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    if done.returncode != 0:
        console.print(f"LiteLLM row failed: {done.stderr.strip().splitlines()[-1:]}")
        return
    r = json.loads(done.stdout.strip().splitlines()[-1])
    t = _table(
        f"LiteLLM {r['version']} acompletion (same upstream, its own Python)",
        ["c=1 p50 ms", "c=1 p99 ms", "c=50 calls/s", "c=50 CPU ms/call", "c=200 calls/s",
         "c=200 p99 ms", "stream TTFT ms", "per chunk us"],
    )  # fmt: skip
    t.add_row(f"{r['c1_p50_ms']:.3f}", f"{r['c1_p99_ms']:.3f}", f"{r['c50']['rate']:,.0f}",
              f"{r['c50']['cpu_ms']:.3f}", f"{r['c200']['rate']:,.0f}",
              f"{r['c200']['p99_ms']:.1f}", f"{r['stream_ttft_ms']:.3f}",
              f"{r['stream_chunk_us']:.1f}")  # fmt: skip
    console.print(t)


def _rss_table(console: Console, cs: list[Client], base: str) -> None:
    t = _table(
        f"memory: {OPEN_STREAMS:,} streams open at once (fresh process each)",
        ["client", "KiB per open stream", "x raw httpx"],
    )
    per: dict[str, float] = {}
    for c in cs:
        if c.stream is None:
            continue
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", c.name, base],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        try:
            per[c.name] = float(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            console.print(f"{c.name}: failed: {out.stderr.strip().splitlines()[-1:]}")
    for name, kib in per.items():
        t.add_row(name, f"{kib:.1f}", f"{kib / per['raw httpx']:.2f}")
    console.print(t)


if __name__ == "__main__":
    main()
