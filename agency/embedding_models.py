"""`AgencyEmbeddings`: one LangChain `Embeddings` over any provider that embeds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from agency._specs import build_adapter, split_model_fields
from agency.errors import CapabilityError
from agency.providers._base import Adapter

__all__ = ["AgencyEmbeddings"]


class AgencyEmbeddings(BaseModel, Embeddings):
    """Embeddings of any provider, named ``"provider:model"`` (``"local:wordllama"``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    provider: str = ""
    """Registered provider name; parsed from ``model`` when empty."""
    model: str = ""
    """Embedding model at the provider (or a whole ``"provider:model"`` spec)."""
    dimensions: int | None = None
    """Output size, where the model can shorten its vectors."""
    api_key: SecretStr | None = None
    """The key; defaults to the provider's environment variable."""
    base_url: str | None = None
    """API root; defaults to the provider's."""
    timeout: float | None = None
    """Seconds per request."""
    max_retries: int | None = None
    """Retries on retryable failures."""
    deployment: str | None = None
    """Azure OpenAI deployment name."""
    api_version: str | None = None
    """Azure OpenAI ``api-version``."""
    transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = Field(
        default=None, exclude=True, repr=False
    )
    """An httpx transport to send through (e.g. `httpx.MockTransport`) instead of the shared
    pools; never serialized or printed."""

    if TYPE_CHECKING:
        _adapter: Adapter

    @model_validator(mode="before")
    @classmethod
    def _split_spec(cls, values: Any) -> Any:
        return split_model_fields(values, embedding=True) if isinstance(values, dict) else values

    def model_post_init(self, context: Any, /) -> None:
        if not self.model:
            raise CapabilityError(
                f"provider {self.provider!r} has no default embedding model; name one as "
                f'"{self.provider}:MODEL" or use "local:wordllama"'
            )
        adapter = build_adapter(
            self.provider,
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=self.max_retries,
            model=self.model,
            deployment=self.deployment,
            api_version=self.api_version,
            transport=self.transport,
        )
        if not adapter.effective_capabilities().embeddings:
            hint = adapter.embeddings_hint or 'use agency.embeddings("local:wordllama")'
            raise CapabilityError(f"provider {self.provider!r} does not offer embeddings; {hint}")
        # A plain attribute, not a PrivateAttr: see AgencyChatModel.model_post_init.
        object.__setattr__(self, "_adapter", adapter)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order, embedded as documents to be searched."""
        if not texts:
            return []
        return self._adapter.embed(
            texts, model=self.model, dimensions=self.dimensions, input_type="document"
        )

    def embed_query(self, text: str) -> list[float]:
        """The vector of one search query (Cohere, Voyage and Gemini embed queries apart)."""
        return self._adapter.embed(
            [text], model=self.model, dimensions=self.dimensions, input_type="query"
        )[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async twin of `embed_documents`."""
        if not texts:
            return []
        return await self._adapter.aembed(
            texts, model=self.model, dimensions=self.dimensions, input_type="document"
        )

    async def aembed_query(self, text: str) -> list[float]:
        """Async twin of `embed_query`."""
        vectors = await self._adapter.aembed(
            [text], model=self.model, dimensions=self.dimensions, input_type="query"
        )
        return vectors[0]
