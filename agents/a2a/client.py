"""Use any A2A agent as a LangChain `Runnable`: `RemoteAgent`, over a2a-sdk's client.

    >>> remote = RemoteAgent("http://127.0.0.1:8000")              # doctest: +SKIP
    >>> remote.invoke("Summarise A2A in one line").text
    >>> async for chunk in remote.astream("..."): print(chunk.text, end="")
    >>> coder_tool = remote.as_tool()                                # for another agent

It reads the agent's card (``/.well-known/agent-card.json``, else the older
``/.well-known/agent.json``; the 1.0 shape or the 0.3 one), talks the protocol version the
card offers (1.0 preferred, 0.3 for older peers: a2a-sdk's client picks the transport), streams
when the card says it can, and follows the task to a final state (polling ``GetTask`` when a
response leaves it running). Past ``timeout`` seconds it cancels the remote task and raises
`agency.errors.Timeout`.

Output: an ``AIMessage`` (``AIMessageChunk`` pieces from ``stream``/``astream``) whose
``response_metadata`` holds ``task_id``, ``context_id``, ``state`` (``"TASK_STATE_..."``),
``agent`` (the card's name) and ``input_required`` (the agent asked back: reply with the same
``task_id`` and ``context_id``). Input: a string, a message, messages or ``{"messages": [...]}``
(the last message's text is sent: the remote agent keeps the conversation by ``contextId``).
Continue a conversation with ``config={"configurable": {"context_id": ..., "task_id": ...}}``.

Failures are our error tree, so a team or a workflow can fall back to a local agent:
HTTP statuses as for any provider (401 `AuthenticationError`, 5xx `ProviderUnavailable`, ...),
`Timeout`, `ConnectionFailed`, `MalformedResponse` (a card or reply we cannot read), a task
that ends ``FAILED`` or ``CANCELED`` `ProviderUnavailable`, ``REJECTED`` `BadRequest`,
``AUTH_REQUIRED`` `AuthenticationError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import re
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any
from uuid import uuid4

import httpx
from a2a.client import A2AClientError, A2AClientTimeoutError, Client, ClientConfig, ClientFactory
from a2a.client.card_resolver import parse_agent_card
from a2a.helpers.proto_helpers import get_message_text
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    InternalError,
    InvalidAgentResponseError,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, VERSION_HEADER
from a2a.utils.errors import A2AError
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig

from agency import errors
from agency._aio import run_sync
from agency._http import error_from_response, error_from_transport
from agency.agents.a2a import A2A_PROTOCOL_VERSION

__all__ = ["RemoteAgent"]

LEGACY_CARD_PATH = "/.well-known/agent.json"
POLL_INTERVAL = 0.2
"""Seconds between ``GetTask`` polls while following a task the response left running."""
CANCEL_TIMEOUT = 5.0
"""Seconds a cancel sent on timeout may take before we stop waiting for it."""

_FINAL = {
    TaskState.TASK_STATE_COMPLETED,
    TaskState.TASK_STATE_FAILED,
    TaskState.TASK_STATE_CANCELED,
    TaskState.TASK_STATE_REJECTED,
    TaskState.TASK_STATE_INPUT_REQUIRED,
    TaskState.TASK_STATE_AUTH_REQUIRED,
}
"""States where a call ends: terminal, or interrupted (the agent waits for the caller)."""


class RemoteAgent(Runnable[Any, AIMessage]):
    """A remote A2A agent as a `Runnable`: see the module docstring."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        timeout: float = 120.0,
        name: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.headers = dict(headers or {})
        self.timeout = timeout
        self._name = name
        self._card: AgentCard | None = None

    @property
    def name(self) -> str:  # type: ignore[override]
        """The given name, else the card's once read, else the host."""
        if self._name:
            return self._name
        if self._card is not None and self._card.name:
            return self._card.name
        return httpx.URL(self.url).host or "remote"

    # -- the card ---------------------------------------------------------------------
    async def aget_card(self, *, refresh: bool = False) -> AgentCard:
        """The agent's card (read once, then kept; ``refresh=True`` reads it again)."""
        if self._card is None or refresh:
            async with self._http() as http:
                self._card = await self._fetch_card(http)
        return self._card

    def get_card(self, *, refresh: bool = False) -> AgentCard:
        """`aget_card` from sync code."""
        return run_sync(self.aget_card(refresh=refresh))

    async def _fetch_card(self, http: httpx.AsyncClient) -> AgentCard:
        response = None
        for path in (AGENT_CARD_WELL_KNOWN_PATH, LEGACY_CARD_PATH):
            try:
                response = await http.get(self.url + path)
            except httpx.HTTPError as exc:
                raise error_from_transport(exc, provider="a2a", model=self.url) from exc
            if response.status_code != 404:
                break
        assert response is not None
        if response.status_code >= 400:
            raise error_from_response(response, provider="a2a", model=self.url)
        try:
            return parse_agent_card(response.json())
        except Exception as exc:  # not JSON, not an object, fields of the wrong type
            raise errors.MalformedResponse(
                f"the agent card at {response.url} is not a valid A2A card: {exc}",
                provider="a2a",
                model=self.url,
            ) from exc

    def _http(self) -> httpx.AsyncClient:
        headers = {VERSION_HEADER: A2A_PROTOCOL_VERSION, **self.headers}
        return httpx.AsyncClient(headers=headers, timeout=self.timeout)

    # -- running ----------------------------------------------------------------------
    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[AIMessageChunk]:
        """Send ``input``; yield the answer's text as it comes, then one empty chunk whose
        ``response_metadata`` says how the task ended."""
        configurable = (config or {}).get("configurable", {})
        async with self._http() as http:
            if self._card is None:
                self._card = await self._fetch_card(http)
            try:
                client = ClientFactory(ClientConfig(httpx_client=http)).create(self._card)
            except ValueError as exc:  # the card offers no interface this client speaks
                raise errors.MalformedResponse(
                    f"the agent card of {self.url} offers no usable interface: {exc}",
                    provider="a2a",
                    model=self.url,
                ) from exc
            message = Message(
                role=Role.ROLE_USER,
                message_id=uuid4().hex,
                parts=[Part(text=_text_of_input(input))],
                context_id=configurable.get("context_id") or None,
                task_id=configurable.get("task_id") or None,
            )
            follower = _Follower(client)
            finished = False
            try:
                async with asyncio.timeout(self.timeout):
                    async for text in follower.run(SendMessageRequest(message=message)):
                        yield AIMessageChunk(content=text)
                finished = True
            except TimeoutError:
                raise errors.Timeout(
                    f"the remote agent did not finish within {self.timeout} s (task canceled)",
                    provider="a2a",
                    model=self.url,
                ) from None
            except A2AError as exc:
                raise self._error(exc) from exc
            finally:
                if not finished and follower.task_id:
                    await follower.cancel()
        yield AIMessageChunk(content="", response_metadata=self._ending(follower))

    def _ending(self, follower: _Follower) -> dict[str, Any]:
        state = follower.state
        why = follower.status_text or "no reason given"
        kw: dict[str, Any] = {"provider": "a2a", "model": self.url}
        if state in (TaskState.TASK_STATE_FAILED, TaskState.TASK_STATE_CANCELED):
            raise errors.ProviderUnavailable(
                f"the remote task ended {TaskState.Name(state)}: {why}", **kw
            )
        if state == TaskState.TASK_STATE_REJECTED:
            raise errors.BadRequest(f"the remote agent rejected the task: {why}", **kw)
        if state == TaskState.TASK_STATE_AUTH_REQUIRED:
            raise errors.AuthenticationError(f"the remote agent requires auth: {why}", **kw)
        return {
            "task_id": follower.task_id,
            "context_id": follower.context_id,
            "state": TaskState.Name(state) if state is not None else None,
            "agent": self._card.name if self._card is not None else None,
            "input_required": state == TaskState.TASK_STATE_INPUT_REQUIRED,
        }

    def _error(self, exc: A2AError) -> errors.ProviderError:
        kw: dict[str, Any] = {"provider": "a2a", "model": self.url}
        cause = exc.__cause__
        if isinstance(exc, A2AClientTimeoutError):
            return errors.Timeout(str(exc), **kw)
        if isinstance(cause, httpx.HTTPStatusError):
            return error_from_response(cause.response, **kw)
        if isinstance(cause, httpx.HTTPError):
            return error_from_transport(cause, **kw)
        if isinstance(exc, InternalError):
            return errors.ProviderUnavailable(f"the remote agent failed: {exc}", **kw)
        if isinstance(exc, InvalidAgentResponseError | A2AClientError):
            return errors.MalformedResponse(f"unreadable reply: {exc}", **kw)
        return errors.BadRequest(f"{type(exc).__name__}: {exc}", **kw)

    async def ainvoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        """Send ``input`` and wait for the task to end; the answer as one ``AIMessage``."""
        text: list[str] = []
        metadata: dict[str, Any] = {}
        async for chunk in self.astream(input, config):
            text.append(chunk.text)
            metadata = dict(chunk.response_metadata) or metadata
        return AIMessage(content="".join(text), response_metadata=metadata, name=self.name)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AIMessage:
        """`ainvoke` from sync code."""
        return run_sync(self.ainvoke(input, config))

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[AIMessageChunk]:
        """`astream` from sync code: chunks as they come (the stream runs on its own thread)."""
        return _iterate_in_thread(self.astream(input, config))

    def as_tool(
        self,
        args_schema: Any = None,
        *,
        name: str | None = None,
        description: str | None = None,
        arg_types: Any = None,
    ) -> Any:
        """This remote agent as a LangChain tool: it takes one string, the task, and answers
        with the agent's text. Name and description come from the card unless given."""
        from langchain_core.tools import StructuredTool

        if name is None or description is None:
            card = self.get_card()
            name = name or "ask_" + (
                re.sub(r"[^A-Za-z0-9_-]+", "_", card.name).strip("_") or "remote"
            )
            description = description or card.description or f"The A2A agent at {self.url}."

        async def ask(task: str) -> str:
            return (await self.ainvoke(task)).text

        def ask_sync(task: str) -> str:
            return self.invoke(task).text

        return StructuredTool.from_function(
            func=ask_sync, coroutine=ask, name=name[:64], description=description
        )


class _Follower:
    """Follows one task through the responses of a send: text deltas out, state kept."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.task_id: str | None = None
        self.context_id: str | None = None
        self.state: int | None = None
        self.status_text = ""
        self._seen: dict[str, str] = {}  # artifact id -> its text so far

    async def run(self, request: SendMessageRequest) -> AsyncIterator[str]:
        async for response in self.client.send_message(request):
            for text in self._read(response):
                yield text
        while self.task_id and self.state not in _FINAL:  # left running: poll it
            await asyncio.sleep(POLL_INTERVAL)
            task = await self.client.get_task(GetTaskRequest(id=self.task_id))
            for text in self._task(task):
                yield text
        if self.state == TaskState.TASK_STATE_INPUT_REQUIRED and not any(self._seen.values()):
            yield self.status_text  # the question came in the status message only

    def _read(self, response: StreamResponse) -> list[str]:
        kind = response.WhichOneof("payload")
        if kind == "task":
            return self._task(response.task)
        if kind == "message":
            self.state = TaskState.TASK_STATE_COMPLETED
            self.context_id = response.message.context_id or self.context_id
            return [get_message_text(response.message, "")]
        if kind == "status_update":
            update = response.status_update
            self._where(update.task_id, update.context_id)
            self.state = update.status.state
            if update.status.HasField("message"):
                self.status_text = get_message_text(update.status.message, "")
            return []
        if kind == "artifact_update":
            update = response.artifact_update
            self._where(update.task_id, update.context_id)
            art = update.artifact
            new = "".join(p.text for p in art.parts)
            old = self._seen.get(art.artifact_id, "") if update.append else ""
            self._seen[art.artifact_id] = old + new
            return [new] if new else []
        return []

    def _task(self, task: Task) -> list[str]:
        self._where(task.id, task.context_id)
        self.state = task.status.state
        if task.status.HasField("message"):
            self.status_text = get_message_text(task.status.message, "")
        out = []
        for art in task.artifacts:
            full = "".join(p.text for p in art.parts)
            seen = self._seen.get(art.artifact_id, "")
            if full.startswith(seen) and len(full) > len(seen):
                out.append(full[len(seen) :])
            self._seen[art.artifact_id] = full
        return out

    def _where(self, task_id: str, context_id: str) -> None:
        self.task_id = task_id or self.task_id
        self.context_id = context_id or self.context_id

    async def cancel(self) -> None:
        """Best effort: ask the agent to cancel the task (on timeout or when abandoned)."""
        if self.task_id is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.shield(
                asyncio.wait_for(
                    self.client.cancel_task(CancelTaskRequest(id=self.task_id)), CANCEL_TIMEOUT
                )
            )


def _text_of_input(input: Any) -> str:
    if isinstance(input, str):
        return input
    if isinstance(input, Mapping) and "messages" in input:
        input = input["messages"]
    if isinstance(input, BaseMessage):
        return input.text
    if isinstance(input, list | tuple) and input:
        last = input[-1]
        return last.text if isinstance(last, BaseMessage) else str(last)
    raise errors.BadRequest(
        f"RemoteAgent takes a string, messages or {{'messages': [...]}}, not {type(input).__name__}"
    )


def _iterate_in_thread(agen: AsyncIterator[AIMessageChunk]) -> Iterator[AIMessageChunk]:
    """Items of ``agen`` for sync code, as they come: the loop runs on a helper thread."""
    items: queue.Queue[tuple[str, Any]] = queue.Queue()

    async def pump() -> None:
        try:
            async for item in agen:
                items.put(("item", item))
        except BaseException as exc:
            items.put(("error", exc))
        else:
            items.put(("done", None))

    thread = threading.Thread(target=asyncio.run, args=(pump(),), name="a2a-stream", daemon=True)
    thread.start()
    while True:
        kind, value = items.get()
        if kind == "item":
            yield value  # a consumer that stops here leaves the daemon thread to finish alone
        elif kind == "error":
            thread.join()
            raise value
        else:
            thread.join()
            return
