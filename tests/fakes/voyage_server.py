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

import base64
import json
import struct
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from jsonschema import Draft202012Validator
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from . import _brain
from ._openai_wire import embed_text
from ._service import Disconnect, Fail, FakeService, Handler, Malformed, Stall

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


class FakeVoyage(FakeService):
    """The fake service (``FakeService`` for the harness): ``base_url`` ends in ``/v1``;
    ``api_key`` and ``models`` are configuration restored by ``reset()``;
    ``script_embeddings(...)`` queues actions."""

    chat_path = "/v1/embeddings"
    url_path = "/v1"

    def __init__(self, *, api_key: str | None = None) -> None:
        self._default_key = api_key
        super().__init__()

    def _routes(self) -> list[tuple[str, Handler, list[str] | None]]:
        return [("/v1/embeddings", self._embeddings, ["POST"])]

    def reset(self) -> None:
        super().reset()
        self.api_key = self._default_key
        self.models: dict[str, VoyageModel] = {m.name: m for m in MODELS}

    @staticmethod
    def _detail(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
        return Response(json.dumps({"detail": detail}), status, headers, "application/json")

    def _fail(self, request: Request, fail: Fail) -> Response:
        return self._detail(fail.status, fail.message or "Internal server error.", fail.headers)

    def _error_response(self, request: Request, status: int) -> Response:
        if status == 500:
            return self._detail(500, "Internal server error.")
        return PlainTextResponse(HTTPStatus(status).phrase, status)  # Starlette's default

    def _invalid(self, detail: str) -> Response:
        self.spec_violations.append(f"POST /v1/embeddings: {detail}")
        return self._detail(400, detail)

    async def _embeddings(self, request: Request) -> Any:
        body = request.state.recorded.body
        key = self._bearer(request)
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
        now, _ = await self._take(request, "embeddings")
        if now is not None:
            return now
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
