"""Third-party providers through the ``agency.providers`` entry-point group.

The plugin here is a real installed distribution (a ``.dist-info`` with ``entry_points.txt``
on ``sys.path``), discovered by `importlib.metadata` exactly as a pip-installed one would be.
Its adapter speaks a protocol of its own (an echo), so the test shows the whole path:
entry point -> profile -> lazy adapter import -> LangChain model.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import agency
from agency import _specs

PLUGIN = '''
from collections.abc import AsyncIterator, Iterator

from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk

from agency import ProviderProfile
from agency.providers._base import Capabilities, ChatAdapter, ChatRequest


class EchoAdapter(ChatAdapter):
    """Answers with the last message, reversed, one word per chunk."""

    capabilities = Capabilities(usage=False)

    def _stream(self, request: ChatRequest) -> Iterator[ChatGenerationChunk]:
        words = str(request.messages[-1].content)[::-1].split(" ")
        for i, word in enumerate(words):
            text = word if i == 0 else " " + word
            yield ChatGenerationChunk(message=AIMessageChunk(content=text))

    async def _astream(self, request: ChatRequest) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._stream(request):
            yield chunk


def profiles():
    return [
        ProviderProfile(name="echo", adapter="agency_echo_plugin:EchoAdapter", base_url="in-process://echo",
                        requires_key=False, default_model="mirror"),
    ]
'''


@pytest.fixture
def installed_plugin(tmp_path: Path) -> Iterator[None]:
    (tmp_path / "agency_echo_plugin.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    dist = tmp_path / "agency_echo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: agency-echo-plugin\nVersion: 0.1\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        "[agency.providers]\necho = agency_echo_plugin:profiles\n", encoding="utf-8"
    )
    saved = dict(_specs._registry)
    sys.path.insert(0, str(tmp_path))
    _specs._loaded = False
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("agency_echo_plugin", None)
        _specs._registry.clear()
        _specs._registry.update(saved)
        _specs._loaded = True


@pytest.mark.usefixtures("installed_plugin")
def test_entry_point_provider_works_end_to_end() -> None:
    assert "echo" in agency.known_providers()
    llm = agency.chat_model("echo")
    assert llm.model == "mirror"
    assert llm.invoke("hello big world").text == "dlrow gib olleh"
    assert [c.text for c in llm.stream("a b") if c.text] == ["b", " a"]


def test_broken_plugin_warns_and_others_still_work(tmp_path: Path) -> None:
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        "[agency.providers]\nbroken = no_such_module_xyz:profiles\n", encoding="utf-8"
    )
    saved = dict(_specs._registry)
    sys.path.insert(0, str(tmp_path))
    _specs._loaded = False
    try:
        with pytest.warns(UserWarning, match="broken"):
            names = agency.known_providers()
        assert "openai" in names and "broken" not in names
    finally:
        sys.path.remove(str(tmp_path))
        _specs._registry.clear()
        _specs._registry.update(saved)
        _specs._loaded = True
