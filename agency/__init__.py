"""agency: one integration layer over every major LLM provider, speaking LangChain.

    >>> import agency
    >>> llm = agency.chat_model("local:smollm2")          # no key, no server
    >>> llm = agency.chat_model("openai:gpt-4o-mini")     # OPENAI_API_KEY from the environment
    >>> emb = agency.embeddings("local:wordllama")

Everything heavy (httpx, langchain-core, llama.cpp) is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agency._lazy import export

__version__ = "0.1.0"

# name -> module that defines it; resolved lazily by __getattr__ so `import agency` is light.
_EXPORTS: dict[str, str] = {
    "Agency": "agency.app",
    "AgencyChatModel": "agency.chat_models",
    "AgencyConfig": "agency.config",
    "AgencyEmbeddings": "agency.embedding_models",
    "AgencyError": "agency.errors",
    "AllProvidersFailed": "agency.errors",
    "AuthenticationError": "agency.errors",
    "BadRequest": "agency.errors",
    "BudgetExceeded": "agency.errors",
    "CapabilityError": "agency.errors",
    "CircuitOpen": "agency.errors",
    "ConfigError": "agency.errors",
    "ConnectionFailed": "agency.errors",
    "ContentFiltered": "agency.errors",
    "ContextWindowExceeded": "agency.errors",
    "MalformedResponse": "agency.errors",
    "ModelNotFound": "agency.errors",
    "ModelSpec": "agency._specs",
    "PermissionDenied": "agency.errors",
    "ProviderError": "agency.errors",
    "ProviderNotFound": "agency.errors",
    "ProviderProfile": "agency.providers._profile",
    "ProviderUnavailable": "agency.errors",
    "RateLimited": "agency.errors",
    "Timeout": "agency.errors",
    "alist_models": "agency._factory",
    "chat_model": "agency._factory",
    "embeddings": "agency._factory",
    "is_model_available": "agency._factory",
    "known_providers": "agency._specs",
    "list_models": "agency._factory",
    "load_config": "agency.config",
    "parse_spec": "agency._specs",
    "register_provider": "agency._specs",
}

__all__ = [
    "Agency",
    "AgencyChatModel",
    "AgencyConfig",
    "AgencyEmbeddings",
    "AgencyError",
    "AllProvidersFailed",
    "AuthenticationError",
    "BadRequest",
    "BudgetExceeded",
    "CapabilityError",
    "CircuitOpen",
    "ConfigError",
    "ConnectionFailed",
    "ContentFiltered",
    "ContextWindowExceeded",
    "MalformedResponse",
    "ModelNotFound",
    "ModelSpec",
    "PermissionDenied",
    "ProviderError",
    "ProviderNotFound",
    "ProviderProfile",
    "ProviderUnavailable",
    "RateLimited",
    "Timeout",
    "alist_models",
    "chat_model",
    "embeddings",
    "is_model_available",
    "known_providers",
    "list_models",
    "load_config",
    "parse_spec",
    "register_provider",
]


def __getattr__(name: str) -> Any:
    return export(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from agency._factory import (
        alist_models,
        chat_model,
        embeddings,
        is_model_available,
        list_models,
    )
    from agency._specs import ModelSpec, known_providers, parse_spec, register_provider
    from agency.app import Agency
    from agency.chat_models import AgencyChatModel
    from agency.config import AgencyConfig, load_config
    from agency.embedding_models import AgencyEmbeddings
    from agency.errors import (
        AgencyError,
        AllProvidersFailed,
        AuthenticationError,
        BadRequest,
        BudgetExceeded,
        CapabilityError,
        CircuitOpen,
        ConfigError,
        ConnectionFailed,
        ContentFiltered,
        ContextWindowExceeded,
        MalformedResponse,
        ModelNotFound,
        PermissionDenied,
        ProviderError,
        ProviderNotFound,
        ProviderUnavailable,
        RateLimited,
        Timeout,
    )
    from agency.providers._profile import ProviderProfile
