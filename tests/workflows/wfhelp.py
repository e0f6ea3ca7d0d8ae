"""Helpers the workflow tests share (tests/workflows is on sys.path, not a package)."""

from __future__ import annotations

from typing import Any

from fakes.openai_server import FakeOpenAI


def chat_requests(fake: FakeOpenAI) -> list[dict[str, Any]]:
    """The bodies of the chat requests the fake received, in order."""
    return [r.body for r in fake.requests if r.path.endswith("/chat/completions")]


def asked(fake: FakeOpenAI, text: str) -> int:
    """How many chat requests carried ``text`` in their last message."""
    return sum(1 for body in chat_requests(fake) if text in str(body["messages"][-1]["content"]))


def models_asked(fake: FakeOpenAI) -> list[str]:
    """The model of each chat request, in order."""
    return [body["model"] for body in chat_requests(fake)]
