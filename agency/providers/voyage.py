"""The Voyage AI embeddings adapter (``voyage:voyage-3.5``): embeddings only, no chat.

Speaks ``POST /v1/embeddings``: ``{"input": [...], "model", "input_type", "output_dimension",
"encoding_format"}`` answered by ``{"object": "list", "data": [{"object": "embedding",
"embedding", "index"}], "model", "usage": {"total_tokens"}}`` (OpenAI's shape, read by
`agency.providers._wire.openai_embeddings`). Vectors are asked for as base64 (little-endian
float32, as the official ``voyageai`` client does: a quarter of the JSON size). Inputs go in
batches of `EMBEDDING_BATCH_SIZE`, the API's limit.

``input_type`` (``"query"`` or ``"document"``) makes Voyage prepend its retrieval prompt; it is
sent when the caller passes one. Errors come as ``{"detail": "..."}``, which
`agency._http.default_error_info` reads. Asked to chat, the adapter raises `CapabilityError`
saying `NO_CHAT_MESSAGE` (it is no `ChatAdapter`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agency.providers._base import Capabilities, InputType
from agency.providers._http_adapter import HTTPAdapter

__all__ = ["EMBEDDING_BATCH_SIZE", "NO_CHAT_MESSAGE", "InputType", "VoyageAdapter"]

EMBEDDING_BATCH_SIZE = 1000
"""Texts per ``/embeddings`` request (Voyage's maximum list length)."""
NO_CHAT_MESSAGE = (
    "Voyage AI serves embeddings only; for chat use a chat provider, "
    'e.g. agency.chat_model("anthropic:claude-sonnet-4-5")'
)


class VoyageAdapter(HTTPAdapter):
    """Voyage AI embeddings over the shared HTTP plumbing (Bearer key from VOYAGE_API_KEY)."""

    capabilities = Capabilities(chat=False, streaming=False, embeddings=True, usage=False)
    chat_hint = NO_CHAT_MESSAGE
    embed_batch_size = EMBEDDING_BATCH_SIZE

    def _embed_body(
        self, batch: Sequence[str], model: str, dimensions: int | None, input_type: str | None
    ) -> dict[str, Any]:
        """``input_type`` ``"query"``/``"document"`` selects Voyage's retrieval prompt;
        ``None`` embeds the texts as they are."""
        body: dict[str, Any] = {"input": list(batch), "model": model, "encoding_format": "base64"}
        if input_type is not None:
            body["input_type"] = input_type
        if dimensions is not None:
            body["output_dimension"] = dimensions
        return body
