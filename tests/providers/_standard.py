"""The langchain-tests capability switches, derived from what the adapters declare.

``CapabilitySwitches`` goes first in a standard-suite class's bases (``ChatModelUnitTests``,
``ChatModelIntegrationTests``); it answers the suite's switches from the ``Capabilities`` of
the class's ``provider`` (``agency._capabilities.capabilities_of``, the same source as the
README matrix), so a suite tests what the adapter claims. A suite class
overrides a switch only for a real limit of the model it runs or of the fake, saying why.
"""

from __future__ import annotations

from functools import cache
from typing import ClassVar

from agency._capabilities import capabilities_of
from agency.providers._base import Capabilities

__all__ = ["CapabilitySwitches"]


class CapabilitySwitches:
    """Switch name -> ``Capabilities`` field, for the suite class it is mixed into."""

    provider: ClassVar[str]
    """The provider whose model the suite runs (the part before ``:`` of its model spec)."""

    @property
    def capabilities(self) -> Capabilities:
        """The declared capabilities of ``provider``."""
        return _capabilities(self.provider)

    @property
    def has_tool_calling(self) -> bool:
        return self.capabilities.tools

    @property
    def has_tool_choice(self) -> bool:
        return self.capabilities.tool_choice

    @property
    def has_structured_output(self) -> bool:
        # AgencyChatModel.with_structured_output uses a tool, the JSON mode or a JSON schema.
        caps = self.capabilities
        return caps.tools or caps.json_mode or caps.json_schema

    @property
    def supports_json_mode(self) -> bool:
        return self.capabilities.json_mode

    @property
    def supports_image_inputs(self) -> bool:
        return self.capabilities.image_inputs

    @property
    def supports_image_urls(self) -> bool:
        # Every adapter that takes images takes them by URL too, unless its suite says not.
        return self.supports_image_inputs

    @property
    def supports_anthropic_inputs(self) -> bool:
        # Anthropic-style content blocks (text, image, tool_use, tool_result) are converted by
        # AgencyChatModel for every provider; the standard test needs tool calling.
        return self.has_tool_calling

    @property
    def returns_usage_metadata(self) -> bool:
        return self.capabilities.usage


@cache
def _capabilities(provider: str) -> Capabilities:
    return capabilities_of(provider)
