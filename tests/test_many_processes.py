"""The semantic cache and vector memory of many processes in one ``chroma run`` server.

Two OS processes with the same configuration (``[llm.cache] backend = "server"`` and
``[memory] mode = "server"`` pointing at one real chromadb server on 127.0.0.1): what the
first one cached and remembered, the second one finds, and its cached answer costs no
request to the provider.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.openai_server import FakeOpenAI, Reply
from servers import ChromaServer

_PROCESS = """
import json, sys
from agency import Agency, AgencyConfig
config, remember = json.loads(sys.argv[1]), sys.argv[2] == "remember"
ag = Agency(AgencyConfig.from_dict(config))
answer = ag.chat_model().invoke("What is the capital of France?")
notes = ag.memory("notes")
if remember:
    notes.remember("The deploy key rotates on Mondays", {"team": "ops"})
found = notes.recall("when does the deploy key rotate?", k=1)
print(json.dumps({"text": answer.text, "cache": answer.response_metadata.get("cache"),
                  "recalled": [r.text for r in found]}))
"""


@pytest.fixture(scope="module")
def chroma(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    server = ChromaServer(tmp_path_factory.mktemp("chroma"))
    try:
        yield server
    finally:
        server.stop()


def _process(config: dict[str, object], remember: bool, cwd: Path) -> dict[str, object]:
    """One process, in a directory of its own: it shares no file with the other."""
    cwd.mkdir()
    argv = [sys.executable, "-c", _PROCESS, json.dumps(config), "remember" if remember else "-"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_two_processes_share_the_semantic_cache_and_vector_memory(
    openai_fake: FakeOpenAI, chroma: ChromaServer, tmp_path: Path
) -> None:
    where = f"127.0.0.1:{chroma.port}"
    entry = {
        "name": "main",
        "provider": "openai",
        "api_key": "sk-test",
        "base_url": openai_fake.base_url,
        "text_model": "gpt-4o-mini",
    }
    config = {
        "llm": {
            "providers": [entry],
            "cache": {"enabled": True, "backend": "server", "path": where},
        },
        "memory": {"mode": "server", "host": "127.0.0.1", "port": chroma.port},
    }
    openai_fake.script(Reply("Paris."))
    first = _process(config, remember=True, cwd=tmp_path / "one")
    assert first["text"] == "Paris." and first["cache"] is None
    assert first["recalled"] == ["The deploy key rotates on Mondays"]
    sent = len(openai_fake.bodies())

    second = _process(config, remember=False, cwd=tmp_path / "two")
    assert second["text"] == "Paris." and second["cache"] == "exact"
    assert len(openai_fake.bodies()) == sent  # the provider was not asked again
    assert second["recalled"] == ["The deploy key rotates on Mondays"]
