"""The front door: build chat models and embeddings from ``"provider:model"`` specs."""

from __future__ import annotations

from typing import Any

from agency._specs import build_adapter, parse_spec
from agency.chat_models import AgencyChatModel
from agency.embedding_models import AgencyEmbeddings
from agency.errors import ModelNotFound, ProviderError
from agency.providers._base import ModelInfo

__all__ = [
    "FACADE_GROUP",
    "alist_models",
    "chat_model",
    "default_agency",
    "embeddings",
    "is_model_available",
    "list_models",
]

FACADE_GROUP = "agency.facade"
"""Entry-point group naming the facade class (``agency.app:Agency``) that `default_agency`
builds: the layers below the top default to it without importing it."""


def chat_model(spec: str, **params: Any) -> AgencyChatModel:
    """A LangChain chat model for ``spec`` (``"openai:gpt-4o-mini"``, ``"local:smollm2"``).

    ``params``: ``api_key`` (str or `SecretStr`; else the provider's env var), ``base_url``,
    ``temperature``, ``max_tokens``, ``timeout``, ``max_retries``, ``streaming``, and provider
    extras (``organization``; Azure ``deployment``, ``api_version``; ``model_kwargs``).
    """
    parsed = parse_spec(spec)
    return AgencyChatModel(provider=parsed.provider, model_name=parsed.model or "", **params)


def embeddings(spec: str = "local:wordllama", **params: Any) -> AgencyEmbeddings:
    """LangChain embeddings for ``spec``; ``"local:wordllama"`` needs no key and no network."""
    parsed = parse_spec(spec)
    return AgencyEmbeddings(provider=parsed.provider, model=parsed.model or "", **params)


def _adapter_for(spec_or_provider: str, params: dict[str, Any]) -> tuple[Any, str | None]:
    parsed = parse_spec(spec_or_provider)
    return build_adapter(parsed.provider, **params), parsed.model


def list_models(spec_or_provider: str, **params: Any) -> list[ModelInfo]:
    """The models a provider offers (``"openai"``, ``"ollama"``, ``"local"``)."""
    adapter, _ = _adapter_for(spec_or_provider, params)
    return adapter.list_models()  # type: ignore[no-any-return]


async def alist_models(spec_or_provider: str, **params: Any) -> list[ModelInfo]:
    """Async twin of `list_models`."""
    adapter, _ = _adapter_for(spec_or_provider, params)
    return await adapter.alist_models()  # type: ignore[no-any-return]


def is_model_available(spec: str, **params: Any) -> bool:
    """Whether ``"provider:model"`` is listed by its provider (False when it is unreachable)."""
    adapter, model = _adapter_for(spec, params)
    try:
        ids = {m.id for m in adapter.list_models()}
    except ModelNotFound:
        return False
    except ProviderError:
        return False
    if not model:
        return bool(ids)
    # Ollama lists "llama3.2:latest" for what users call "llama3.2".
    return model in ids or f"{model}:latest" in ids


def default_agency(config: Any = None) -> Any:
    """A new facade, ``agency.Agency(config)`` (with no config: the embedded default model
    unless configured otherwise), for a lower layer given none. The class comes from the ``agency.facade`` entry point, so
    `agency.workflows` (say) can default to it while importing only core: the facade sits
    above every layer and imports them, never the other way round."""
    from importlib.metadata import entry_points

    found = list(entry_points(group=FACADE_GROUP))
    if not found:
        raise RuntimeError(
            f"no facade is registered in the {FACADE_GROUP!r} entry-point group: "
            "reinstall agency (pip install -e .) or pass agency= explicitly"
        )
    return found[0].load()(config)
