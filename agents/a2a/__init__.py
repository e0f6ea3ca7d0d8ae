"""A2A (Agent2Agent protocol) over the official ``a2a-sdk``: serve any LangChain `Runnable`
as an A2A agent, and use any A2A agent as a `Runnable`.

    >>> from agency.agents.a2a import to_a2a_app, RemoteAgent   # doctest: +SKIP
    >>> app = to_a2a_app(agent, url="http://127.0.0.1:8000")   # an ASGI app for uvicorn
    >>> RemoteAgent("http://127.0.0.1:8000").invoke("hello").text

The protocol spoken is `A2A_PROTOCOL_VERSION` (JSON-RPC methods ``SendMessage``,
``SendStreamingMessage``, ``GetTask``, ``ListTasks``, ``CancelTask``, ``SubscribeToTask``);
the server also answers the 0.3 names (``message/send``, ``message/stream``, ``tasks/get``,
``tasks/cancel``, ``tasks/resubscribe``) of a request sent without an ``A2A-Version`` header,
and its card carries both the 1.0 fields and the 0.3 ones. Needs the ``a2a`` extra.
"""

from __future__ import annotations

from typing import Any

from agency._lazy import export

A2A_PROTOCOL_VERSION = "1.0"
"""The A2A protocol version we serve and speak (cards, the ``A2A-Version`` header)."""
A2A_LEGACY_VERSION = "0.3"
"""The older version also served on the same endpoint, for peers that still speak it."""

_EXPORTS: dict[str, str] = {
    "RemoteAgent": "agency.agents.a2a.client",
    "RunnableExecutor": "agency.agents.a2a.server",
    "agent_card": "agency.agents.a2a.server",
    "to_a2a_app": "agency.agents.a2a.server",
}

__all__ = [
    "A2A_LEGACY_VERSION",
    "A2A_PROTOCOL_VERSION",
    "RemoteAgent",
    "RunnableExecutor",
    "agent_card",
    "to_a2a_app",
]


def __getattr__(name: str) -> Any:
    return export(__name__, _EXPORTS, name)
