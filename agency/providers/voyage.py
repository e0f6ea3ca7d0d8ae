"""The Voyage AI embeddings adapter (``voyage:voyage-3.5``): embeddings only, no chat.

Speaks ``POST /v1/embeddings``: ``{"input": [...], "model", "input_type", "output_dimension",
"encoding_format"}`` answered by ``{"object": "list", "data": [{"object": "embedding",
"embedding", "index"}], "model", "usage": {"total_tokens"}}``. Vectors are asked for as base64
(little-endian float32, as the official ``voyageai`` client does: a quarter of the JSON size)
and plain lists are read too. Inputs go in batches of `EMBEDDING_BATCH_SIZE`, the API's limit.

``input_type`` (``"query"`` or ``"document"``) makes Voyage prepend its retrieval prompt; it is
sent when the caller passes one (see `VoyageAdapter._embed`). Errors come as
``{"detail": "..."}``, which `agency._http.default_error_info` reads.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Literal

from langchain_core.outputs import ChatGenerationChunk

from agency.errors import CapabilityError, MalformedResponse
from agency.providers._base import Capabilities, ChatRequest
from agency.providers._http_adapter import HTTPAdapter

__all__ = [
    "EMBEDDING_BATCH_SIZE",
    "NO_CHAT_MESSAGE",
    "InputType",
    "VoyageAdapter",
    "parse_embeddings",
]

EMBEDDING_BATCH_SIZE = 1000
"""Texts per ``/embeddings`` request (Voyage's maximum list length)."""
NO_CHAT_MESSAGE = (
    "Voyage AI serves embeddings only; for chat use a chat provider, "
    'e.g. agency.chat_model("anthropic:claude-sonnet-4-5")'
)

InputType = Literal["query", "document"]
"""What the texts are for: search queries, or the documents searched."""


def _malformed(model: str, what: str) -> MalformedResponse:
    return MalformedResponse(f"unexpected response shape: {what}", provider="voyage", model=model)


def _vector(raw: Any, model: str) -> list[float]:
    if isinstance(raw, str):  # base64 of little-endian float32
        try:
            packed = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _malformed(model, "embedding is not base64") from exc
        if len(packed) % 4:
            raise _malformed(model, "base64 embedding is not a float32 array")
        return list(struct.unpack(f"<{len(packed) // 4}f", packed))
    if isinstance(raw, list) and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in raw
    ):
        return [float(x) for x in raw]
    raise _malformed(model, "embedding is neither a number list nor base64")


def parse_embeddings(data: Any, count: int, model: str) -> list[list[float]]:
    """The vectors of an embeddings response, ordered by ``index``; `MalformedResponse` when
    they do not cover the ``count`` inputs exactly."""
    items = data.get("data") if isinstance(data, Mapping) else None
    if not isinstance(items, list) or len(items) != count:
        raise _malformed(model, f"expected {count} embeddings in data[]")
    out: list[list[float] | None] = [None] * count
    for pos, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise _malformed(model, "an embedding item is not an object")
        index = item.get("index", pos)
        if not isinstance(index, int) or not 0 <= index < count or out[index] is not None:
            raise _malformed(model, "embedding indexes do not cover the inputs")
        out[index] = _vector(item.get("embedding"), model)
    return out  # type: ignore[return-value]  # every slot filled: len(items) == count, no repeats


class VoyageAdapter(HTTPAdapter):
    """Voyage AI embeddings over the shared HTTP plumbing (Bearer key from VOYAGE_API_KEY)."""

    capabilities = Capabilities(chat=False, streaming=False, embeddings=True, usage=False)

    # -- chat: not offered --------------------------------------------------------------
    def _stream(self, request: ChatRequest) -> Iterator[ChatGenerationChunk]:
        raise CapabilityError(NO_CHAT_MESSAGE)

    async def _astream(self, request: ChatRequest) -> AsyncIterator[ChatGenerationChunk]:  # type: ignore[override]
        raise CapabilityError(NO_CHAT_MESSAGE)
        yield  # pragma: no cover - makes this an async generator like the contract says

    # -- embeddings -------------------------------------------------------------------
    @staticmethod
    def _body(
        texts: Sequence[str], model: str, dimensions: int | None, input_type: InputType | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"input": list(texts), "model": model, "encoding_format": "base64"}
        if input_type is not None:
            body["input_type"] = input_type
        if dimensions is not None:
            body["output_dimension"] = dimensions
        return body

    def _embed(
        self,
        texts: Sequence[str],
        *,
        model: str,
        dimensions: int | None,
        input_type: InputType | None = None,
    ) -> list[list[float]]:
        """One vector per text, in order. ``input_type`` ``"query"``/``"document"`` selects
        Voyage's retrieval prompt; ``None`` embeds the texts as they are."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), EMBEDDING_BATCH_SIZE):
            batch = texts[start : start + EMBEDDING_BATCH_SIZE]
            body = self._body(batch, model, dimensions, input_type)
            vectors += parse_embeddings(
                self._send("POST", "/embeddings", model, body), len(batch), model
            )
        return vectors

    async def _aembed(
        self,
        texts: Sequence[str],
        *,
        model: str,
        dimensions: int | None,
        input_type: InputType | None = None,
    ) -> list[list[float]]:
        """Async twin of `_embed`."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), EMBEDDING_BATCH_SIZE):
            batch = texts[start : start + EMBEDDING_BATCH_SIZE]
            body = self._body(batch, model, dimensions, input_type)
            data = await self._asend("POST", "/embeddings", model, body)
            vectors += parse_embeddings(data, len(batch), model)
        return vectors
