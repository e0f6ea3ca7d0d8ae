"""A minimal OpenAI-shaped chat server that injects faults, for the resilience benchmark.

Run in its own process (so its CPU does not share the client's GIL): ``serve(port, rate, seed)``.
``GET /count`` returns how many chat requests arrived. With probability ``rate`` a request gets one of the faults below, chosen uniformly; otherwise a
canned ``chat.completion`` (or its SSE stream). Faults follow OpenAI's documented shapes:

    429         rate_limit_exceeded, ``retry-after: 1`` and ``x-ratelimit-*`` headers
    500 / 503   server_error bodies
    529         overloaded (as Anthropic-style gateways send it)
    malformed   200 with a body that is not JSON
    stall       no answer for STALL_S (clients time out first)
    reset       the connection is dropped after the status line
    cut         (streams) the SSE stream stops mid-answer, without [DONE]
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

STALL_S = 2.0
FAULTS = ("429", "500", "503", "529", "malformed", "stall", "reset", "cut")

_ANSWER = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "All good here.", "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
}
_PIECES = ["All ", "good ", "here", "."]


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
    data = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        data["usage"] = usage
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def make_app(rate: float, seed: int) -> Callable[..., Awaitable[None]]:
    """The ASGI app: faults with probability ``rate`` (seeded, so runs repeat)."""
    rng = random.Random(seed)
    served = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal served
        if scope["type"] != "http":
            return
        if scope["path"] == "/count":  # how many chat requests arrived (for the benchmark)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send(
                {"type": "http.response.body", "body": json.dumps({"requests": served}).encode()}
            )
            return
        served += 1
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        stream = b'"stream": true' in body or b'"stream":true' in body
        fault = rng.choice(FAULTS) if rng.random() < rate else None
        if fault == "cut" and not stream:
            fault = "reset"

        async def respond(status: int, payload: bytes, headers: list[Any] | None = None) -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json"), *(headers or [])],
                }
            )
            await send({"type": "http.response.body", "body": payload})

        def error(kind: str, message: str) -> bytes:
            return json.dumps({"error": {"message": message, "type": kind, "code": kind}}).encode()

        if fault == "429":
            await respond(
                429,
                error("rate_limit_exceeded", "Rate limit reached for requests"),
                [(b"retry-after", b"1"), (b"x-ratelimit-remaining-requests", b"0")],
            )
        elif fault in ("500", "503"):
            await respond(int(fault), error("server_error", "The server had an error"))
        elif fault == "529":
            await respond(529, error("overloaded_error", "Overloaded"))
        elif fault == "malformed":
            await respond(200, b'{"id": "chatcmpl-bench", "choices": [')
        elif fault == "stall":
            await asyncio.sleep(STALL_S)
            await respond(200, json.dumps(_ANSWER).encode())
        elif fault == "reset":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"500"),
                    ],
                }
            )
            raise ConnectionResetError("injected reset")  # uvicorn drops the connection
        elif stream:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            events = [_chunk({"role": "assistant", "content": ""})]
            events += [_chunk({"content": p}) for p in _PIECES]
            if fault == "cut":
                for event in events[:3]:
                    await send({"type": "http.response.body", "body": event, "more_body": True})
                raise ConnectionResetError("injected cut")
            events.append(_chunk({}, "stop"))
            events.append(_chunk({}, usage=_ANSWER["usage"]))
            events.append(b"data: [DONE]\n\n")
            await send({"type": "http.response.body", "body": b"".join(events)})
        else:
            await respond(200, json.dumps(_ANSWER).encode(), [(b"x-request-id", b"req_bench")])

    return app


def serve(port: int, rate: float, seed: int) -> None:
    """Serve until killed (run it in a subprocess)."""
    import logging

    import uvicorn

    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
    uvicorn.run(
        make_app(rate, seed),
        host="127.0.0.1",
        port=port,
        log_level="critical",
        access_log=False,
        lifespan="off",
    )
