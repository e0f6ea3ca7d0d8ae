"""A persistent `SemanticCache` killed (SIGKILL) in the middle of a burst of writes reopens
cleanly with every entry whose `update` had returned, and stays usable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration

from agency.memory.cache import SemanticCache

ACKS_BEFORE_KILL = 25
"""Acknowledged writes the test waits for before killing the writer."""
LLM = "durability-llm"

_WRITER = textwrap.dedent(
    """
    import sys
    from langchain_core.load import dumps
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.outputs import ChatGeneration
    from agency.memory.cache import SemanticCache

    path, first, llm = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    cache = SemanticCache(path=path, verifier=None, threshold=0.99)
    number = first
    while True:
        prompt = dumps([HumanMessage(f"durable question number {number}")])
        answer = [ChatGeneration(message=AIMessage(f"answer {number}"))]
        cache.update(prompt, llm, answer)
        print(number, flush=True)  # acknowledged: update has returned
        number += 1
    """
)


def _prompt(number: int) -> str:
    return dumps([HumanMessage(f"durable question number {number}")])


def _write_until_killed(path: Path, first: int) -> list[int]:
    """Run a writer process, read ACKS_BEFORE_KILL acknowledgements, SIGKILL it mid-burst."""
    env = dict(os.environ)  # the writer imports agency.memory as installed, like a user would
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), str(first), LLM],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    acked: list[int] = []
    try:
        assert writer.stdout is not None
        for line in writer.stdout:
            acked.append(int(line))
            if len(acked) == ACKS_BEFORE_KILL:
                os.kill(writer.pid, signal.SIGKILL)  # the next write is under way
                break
    finally:
        writer.kill()
        writer.wait()
        if writer.stdout is not None:
            # Lines printed between our last read and the kill were acknowledged too.
            acked.extend(int(line) for line in writer.stdout.read().split())
    assert writer.returncode == -signal.SIGKILL
    assert len(acked) >= ACKS_BEFORE_KILL, "the writer died before writing"
    return acked


def test_killed_writer_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    acked = _write_until_killed(tmp_path, 0)
    # A second writer opens the crashed store, writes more, and is killed in turn.
    acked += _write_until_killed(tmp_path, 1000)
    cache = SemanticCache(path=tmp_path, verifier=None, threshold=0.99)
    for number in acked:
        found = cache.lookup(_prompt(number), LLM)
        assert found is not None, f"acknowledged entry {number} was lost"
        generation = found[0]
        assert isinstance(generation, ChatGeneration)
        assert generation.text == f"answer {number}"
        assert generation.message.response_metadata["cache"] == "exact"
    assert cache.count() >= len(acked)
    # Still usable: write and read back.
    cache.update(_prompt(-1), LLM, [ChatGeneration(message=AIMessage("after the crash"))])
    found = cache.lookup(_prompt(-1), LLM)
    assert found is not None and found[0].text == "after the crash"
