"""A fake of the Voyage AI embeddings API (``POST /v1/embeddings``), for tests.

There is no official Voyage OpenAPI spec in ``../shared/specs``: requests are validated against
``REQUEST_SCHEMA``, written from the API reference (https://docs.voyageai.com/reference/
embeddings-api) and checked in ``test_voyage_fake`` against the bodies the official
``voyageai`` client builds. A violation answers 400 ``{"detail": ...}`` (Voyage's error shape)
and is appended to ``fake.spec_violations``.

Behaviour, as documented: at most 1000 inputs; ``input_type`` ``query``/``document`` prepends
Voyage's retrieval prompt before embedding (so query and document vectors differ);
``output_dimension`` only on the models that offer 256/512/1024/2048 (a shortened vector is the
full one cut and re-normalised); ``output_dtype`` ``float``/``int8``/``uint8``/``binary``/
``ubinary``; ``encoding_format: "base64"`` packs the vector (float32 or the integer type, little
endian, as the client decodes it with numpy); ``truncation: false`` rejects texts over the
context length; a per-request token budget per model.

    with FakeVoyage().running() as fake:
        client = voyageai.Client(api_key="pa-test", base_url=fake.base_url)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import _brain
from ._openai_wire import embed_text
from ._scripting import ActionQueue
from ._server import drop_connection, serve

__all__ = [
    "MODELS",
    "REQUEST_SCHEMA",
    "Disconnect",
    "Fail",
    "FakeVoyage",
    "Malformed",
    "Stall",
    "VoyageModel",
]

REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["input", "model"],
    "additionalProperties": False,
    "properties": {
        "input": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1000},
            ]
        },
        "model": {"type": "string"},
        "input_type": {"enum": [None, "query", "document"]},
        "truncation": {"type": "boolean"},
        "output_dimension": {"type": ["integer", "null"]},
        "output_dtype": {"enum": [None, "float", "int8", "uint8", "binary", "ubinary"]},
        "encoding_format": {"enum": [None, "base64"]},
    },
}
_VALIDATOR = Draft202012Validator(REQUEST_SCHEMA)
PROMPTS = {
    "query": "Represent the query for retrieving supporting documents: ",
    "document": "Represent the document for retrieval: ",
}
CONTEXT_LENGTH = 32_000


@dataclass(frozen=True)
class VoyageModel:
    name: str
    default_dims: int
    flexible: bool  # 256/512/1024/2048 dimensions and the quantized dtypes
    batch_tokens: int  # token budget of one request


MODELS: tuple[VoyageModel, ...] = (
    VoyageModel("voyage-3-large", 1024, True, 120_000),
    VoyageModel("voyage-3.5", 1024, True, 320_000),
    VoyageModel("voyage-3.5-lite", 1024, True, 1_000_000),
    VoyageModel("voyage-code-3", 1024, True, 120_000),
    VoyageModel("voyage-finance-2", 1024, False, 120_000),
    VoyageModel("voyage-law-2", 1024, False, 120_000),
    VoyageModel("voyage-code-2", 1536, False, 120_000),
    VoyageModel("voyage-multilingual-2", 1024, False, 120_000),
    VoyageModel("voyage-3", 1024, False, 120_000),
    VoyageModel("voyage-3-lite", 512, False, 120_000),
    VoyageModel("voyage-2", 1024, False, 320_000),
)
_FLEX_DIMS = (256, 512, 1024, 2048)


@dataclass
class Fail:
    """Answer with an HTTP error ``{"detail": message}``."""

    status: int
    detail: str = "Internal server error."
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1


@dataclass
class Stall:
    """Sleep before answering; then ``then`` or the default behaviour."""

    seconds: float
    then: Fail | Malformed | None = None


@dataclass
class Malformed:
    """Send ``body`` raw with this status."""

    body: str
    status: int = 200


@dataclass
class Disconnect:
    """Cut the connection before any response byte."""


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def _quantize(vector: list[float], dtype: str) -> tuple[list[Any], str]:
    """(values, struct code) of ``vector`` in ``dtype`` (binary types pack 8 signs a byte)."""
    if dtype == "float":
        return vector, "f"
    if dtype in ("int8", "uint8"):
        ints = [max(-128, min(127, round(v * 127))) for v in vector]
        return (ints, "b") if dtype == "int8" else ([i + 128 for i in ints], "B")
    packed = []
    for start in range(0, len(vector), 8):
        byte = 0
        for bit in vector[start : start + 8]:
            byte = (byte << 1) | (bit > 0)
        packed.append(byte)
    return (packed, "B") if dtype == "ubinary" else ([b - 128 for b in packed], "b")


class FakeVoyage:
    """The fake service: ``base_url`` (``http://127.0.0.1:PORT/v1``), ``requests``,
    ``bodies()``, ``spec_violations``, ``internal_errors``; ``api_key`` and ``models`` are
    configuration restored by ``reset()``; ``script(...)`` queues actions."""

    def __init__(self, *, api_key: str | None = None) -> None:
        self._default_key = api_key
        self.base_url: str | None = None
        self._lock = threading.Lock()
        self.reset()
        self.app = Starlette(routes=[Route("/v1/embeddings", self._endpoint, methods=["POST"])])

    def reset(self) -> None:
        with self._lock:
            self.api_key = self._default_key
            self.models: dict[str, VoyageModel] = {m.name: m for m in MODELS}
            self.requests: list[RecordedRequest] = []
            self.spec_violations: list[str] = []
            self.internal_errors: list[str] = []
            self._script = ActionQueue()

    def script(self, *actions: Fail | Stall | Malformed | Disconnect) -> None:
        self._script.push(*actions)

    def bodies(self) -> list[Any]:
        return [r.body for r in self.requests]

    @contextlib.contextmanager
    def running(self) -> Iterator[FakeVoyage]:
        with serve(self.app) as url:
            self.base_url = f"{url}/v1"
            try:
                yield self
            finally:
                self.base_url = None

    @staticmethod
    def _detail(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
        return Response(json.dumps({"detail": detail}), status, headers, "application/json")

    def _invalid(self, detail: str) -> Response:
        self.spec_violations.append(f"POST /v1/embeddings: {detail}")
        return self._detail(400, detail)

    async def _endpoint(self, request: Request) -> Any:
        try:
            return await self._embeddings(request)
        except Exception as exc:  # a bug of the fake: answer like the service, keep a note
            self.internal_errors.append(repr(exc))
            return self._detail(500, "Internal server error.")

    async def _embeddings(self, request: Request) -> Any:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(RecordedRequest("POST", request.url.path, headers, body))
        auth = headers.get("authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not key or (self.api_key is not None and key != self.api_key):
            return self._detail(401, "Provided API key is invalid.")
        if body is None:
            return self._invalid("Request body is not valid JSON.")
        errors = sorted(_VALIDATOR.iter_errors(body), key=lambda e: list(map(str, e.path)))
        if errors:
            path = ".".join(map(str, errors[0].absolute_path)) or "body"
            return self._invalid(f"Invalid request: {path}: {errors[0].message}")
        model = self.models.get(body["model"])
        if model is None:
            return self._invalid(
                f"Model {body['model']} is not supported. Supported models are "
                f"{sorted(self.models)}."
            )
        action = self._script.pop()
        if isinstance(action, Stall):
            deadline = time.monotonic() + action.seconds
            while deadline > time.monotonic() and not await request.is_disconnected():
                await asyncio.sleep(0.02)
            action = action.then
        if isinstance(action, Fail):
            return self._detail(action.status, action.detail, action.headers)
        if isinstance(action, Malformed):
            return Response(action.body, action.status, media_type="application/json")
        if isinstance(action, Disconnect):
            return _Dropped()
        return self._answer(body, model)

    def _answer(self, body: dict[str, Any], model: VoyageModel) -> Response:
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        dims, dtype = body.get("output_dimension"), body.get("output_dtype") or "float"
        if dims is not None and (not model.flexible or dims not in _FLEX_DIMS):
            allowed = list(_FLEX_DIMS) if model.flexible else [None]
            return self._invalid(f"Model {model.name} does not support output_dimension={dims}. "
                                 f"Supported values: {allowed}.")  # fmt: skip
        if dtype != "float" and not model.flexible:
            return self._invalid(f"Model {model.name} only supports output_dtype=float.")
        prompt = PROMPTS.get(body.get("input_type") or "", "")
        counts = [_brain.count_tokens(prompt + text) for text in texts]
        if body.get("truncation") is False and max(counts) > CONTEXT_LENGTH:
            return self._detail(400, f"Input at index {counts.index(max(counts))} exceeds the "
                                     f"context length of {CONTEXT_LENGTH} tokens and truncation "
                                     "is disabled.")  # fmt: skip
        used = sum(min(c, CONTEXT_LENGTH) for c in counts)
        if used > model.batch_tokens:
            return self._detail(400, f"Request to model '{model.name}' failed. The max allowed "
                                     f"tokens per submitted batch is {model.batch_tokens}. Your "
                                     f"batch has {used} tokens after truncation. Please lower "
                                     "the number of tokens in the batch.")  # fmt: skip
        full = 2048 if model.flexible else model.default_dims
        data = []
        for index, text in enumerate(texts):
            vector = embed_text(prompt + text, dims or model.default_dims, full)
            values, code = _quantize(vector, dtype)
            encoded: Any = values
            if body.get("encoding_format") == "base64":
                packed = struct.pack(f"<{len(values)}{code}", *values)
                encoded = base64.b64encode(packed).decode("ascii")
            data.append({"object": "embedding", "embedding": encoded, "index": index})
        answer = {
            "object": "list",
            "data": data,
            "model": model.name,
            "usage": {"total_tokens": used},
        }
        return Response(json.dumps(answer), 200, media_type="application/json")


class _Dropped:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await drop_connection(scope, hard=True)
