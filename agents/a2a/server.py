"""Serve a LangChain `Runnable` (an `Agent`, a `Team`, a chat model, a `RunnableLambda`) as an
A2A agent, with a2a-sdk's own server classes.

`to_a2a_app` returns a Starlette (ASGI) app: the Agent Card at ``/.well-known/agent-card.json``
(also at the pre-0.3 ``/.well-known/agent.json``), and the JSON-RPC endpoint at the app's root,
which answers the 1.0 methods and, for requests without an ``A2A-Version`` header, the 0.3 ones.
Mounted under a path prefix (``Mount("/agents/coder", app)``), card and endpoint move with it:
give ``url`` the prefixed address.

What the served agent does with one A2A message (`RunnableExecutor`):

- **Input.** The conversation of the message's ``contextId`` so far, then the message's text,
  as LangChain messages (``input_format="messages"``, what chat models and `Agent` take), as
  ``{"messages": [...]}`` (``"dict"``, a LangGraph graph's state) or as one string
  (``"text"``: a transcript, ``User:``/``Assistant:`` lines, when there is history).
- **Output.** Tokens stream as one artifact named ``answer`` (``append`` chunks, the last one
  ``lastChunk``). Tokens are read from ``astream_agent`` events when the runnable has it (an
  `Agent`), else from ``astream`` chunks: an ``AIMessageChunk``, a ``str``, or anything with a
  ``text`` attribute (an `AgentResult`; a `Team`'s result comes whole, as one chunk: its
  members' tokens are not the team's answer). The task then completes.
- **Asking back.** When the answer's message carries ``response_metadata["input_required"]``
  (a chat model's last chunk, or the last message of an `AgentResult`), or the streamed object
  has ``input_required = True``, the task goes to ``TASK_STATE_INPUT_REQUIRED`` with the answer
  as its status message; the client's next message with that ``taskId`` continues it.
- **Multi-turn.** Each ``contextId`` keeps its history (user text and answers) in memory, the
  most recent `MAX_CONTEXTS` contexts, `MAX_HISTORY` messages each.
- **Cancel.** ``CancelTask`` cancels the asyncio task running the model call, then marks the
  task ``TASK_STATE_CANCELED``.
- **Errors.** A message with no text part is refused with A2A's ``InvalidParamsError``
  (JSON-RPC -32602) before anything runs; a runnable that raises fails its task
  (``TASK_STATE_FAILED``) with a status message ``"<ErrorClass>: <message>"`` and metadata
  ``{"error": "<ErrorClass>", "retryable": bool}``.
- **Auth.** With ``api_key`` (header ``X-API-Key``) and/or ``bearer_token``
  (``Authorization: Bearer ...``), the card declares those security schemes and a JSON-RPC
  request without a valid credential is answered 401 before it is parsed: nothing runs.
  The card itself stays public (clients read it to learn how to authenticate).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal
from uuid import uuid4

from a2a.helpers.proto_helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    APIKeySecurityScheme,
    HTTPAuthSecurityScheme,
    InvalidParamsError,
    Part,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agency.agents.a2a import A2A_LEGACY_VERSION, A2A_PROTOCOL_VERSION

__all__ = [
    "API_KEY_HEADER",
    "MAX_CONTEXTS",
    "MAX_HISTORY",
    "RunnableExecutor",
    "agent_card",
    "to_a2a_app",
]

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
"""The header an ``api_key`` is sent in."""
MAX_CONTEXTS = 1000
"""Contexts whose history the server keeps; the least recently used is forgotten first."""
MAX_HISTORY = 50
"""Messages of history kept per context (the oldest go first)."""
LEGACY_CARD_PATH = "/.well-known/agent.json"
"""Where pre-0.3 clients look for the card; served as well, the same card."""

InputFormat = Literal["messages", "dict", "text"]


# ------------------------------------------------------------------------------ executor
class RunnableExecutor(AgentExecutor):
    """a2a-sdk's `AgentExecutor` for a LangChain runnable: see the module docstring."""

    def __init__(self, runnable: Any, *, input_format: InputFormat = "messages") -> None:
        self.runnable = runnable
        self.input_format = input_format
        self._histories: OrderedDict[str, list[BaseMessage]] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._runs: dict[str, asyncio.Task[None]] = {}
        self._cancelled: set[str] = set()

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Run the runnable on the message; stream its tokens; finish, ask back or fail."""
        text = context.get_user_input()
        if not text.strip():
            raise InvalidParamsError(message="the message has no text part: send text")
        task = context.current_task
        if task is None:
            assert context.message is not None  # a SendMessage always has one
            task = new_task_from_user_message(context.message)
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        run = asyncio.create_task(self._answer(text, task.context_id, updater))
        self._runs[task.id] = run
        try:
            await run
        except asyncio.CancelledError:
            current = asyncio.current_task()
            # CancelTask cancelled `run` (cancel() already wrote CANCELED): end normally.
            # Anything else (the server shutting down) propagates.
            if task.id not in self._cancelled or (current is not None and current.cancelling()):
                raise
        except Exception as exc:
            logger.warning("A2A task %s failed: %s: %s", task.id, type(exc).__name__, exc)
            retryable = bool(getattr(exc, "is_retryable", False))
            await updater.failed(
                updater.new_agent_message(
                    [Part(text=f"{type(exc).__name__}: {exc}")],
                    metadata={"error": type(exc).__name__, "retryable": retryable},
                )
            )
        finally:
            run.cancel()
            self._runs.pop(task.id, None)
            self._cancelled.discard(task.id)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Cancel the task's model call (its asyncio task), then mark the task canceled."""
        task_id = context.task_id or ""
        run = self._runs.get(task_id)
        if run is not None:
            self._cancelled.add(task_id)
            run.cancel()
        await TaskUpdater(event_queue, task_id, context.context_id or "").cancel()

    # -- one answer ---------------------------------------------------------------------
    async def _answer(self, text: str, context_id: str, updater: TaskUpdater) -> None:
        lock = self._locks.setdefault(context_id, asyncio.Lock())
        async with lock:  # one turn at a time per conversation: history stays in order
            history = self._history(context_id)
            question = HumanMessage(text)
            artifact_id = uuid4().hex
            pieces: list[str] = []
            pending: str | None = None  # held back so the last chunk can say lastChunk
            asks_back = False
            async for delta, item in _stream(self.runnable, self._input([*history, question])):
                asks_back = asks_back or _asks_back(item)
                if not delta:
                    continue
                if pending is not None:
                    await self._chunk(updater, artifact_id, pending, first=not pieces, last=False)
                    pieces.append(pending)
                pending = delta
            await self._chunk(updater, artifact_id, pending or "", first=not pieces, last=True)
            pieces.append(pending or "")
            answer = "".join(pieces)
            history.extend([question, AIMessage(answer)])
            del history[:-MAX_HISTORY]
            if asks_back:
                await updater.requires_input(updater.new_agent_message([Part(text=answer)]))
            else:
                await updater.complete()

    @staticmethod
    async def _chunk(
        updater: TaskUpdater, artifact_id: str, text: str, *, first: bool, last: bool
    ) -> None:
        await updater.add_artifact(
            [Part(text=text)],
            artifact_id=artifact_id,
            name="answer",
            append=not first,
            last_chunk=last,
        )

    def _history(self, context_id: str) -> list[BaseMessage]:
        history = self._histories.pop(context_id, None)
        if history is None:
            history = []
            while len(self._histories) >= MAX_CONTEXTS:
                forgotten, _ = self._histories.popitem(last=False)
                self._locks.pop(forgotten, None)
        self._histories[context_id] = history  # most recently used last
        return history

    def _input(self, messages: list[BaseMessage]) -> Any:
        if self.input_format == "dict":
            return {"messages": messages}
        if self.input_format == "text":
            if len(messages) == 1:
                return messages[0].text
            return "\n".join(
                f"{'User' if isinstance(m, HumanMessage) else 'Assistant'}: {m.text}"
                for m in messages
            )
        return messages


async def _stream(runnable: Any, payload: Any) -> AsyncIterator[tuple[str, Any]]:
    """(new text, the object it came from) for everything the runnable streams."""
    if hasattr(runnable, "astream_agent"):  # an Agent: token events, then the final result
        streamed = False
        async for event in runnable.astream_agent(payload):
            if event.kind == "token":
                streamed = True
                yield str(event.data.get("text", "")), event
            elif event.kind == "final":
                result = event.result
                yield ("" if streamed else str(getattr(result, "text", ""))), result
        return
    async for chunk in runnable.astream(payload):
        yield _text_of(chunk), chunk


def _text_of(chunk: Any) -> str:
    if isinstance(chunk, str):
        return chunk
    text = getattr(chunk, "text", None)
    if isinstance(text, str):  # langchain-core 1's message .text (a str, also callable)
        return str(text)
    return text() if callable(text) else ""  # langchain-core < 1: text() was a method


def _asks_back(item: Any) -> bool:
    """Whether ``item`` (a chunk, a message, an `AgentResult`) says the agent asks back."""
    if getattr(item, "input_required", False) is True:
        return True
    message = item
    messages = getattr(item, "messages", None)
    if isinstance(messages, list) and messages:
        message = messages[-1]
    metadata = getattr(message, "response_metadata", None)
    return isinstance(metadata, Mapping) and bool(metadata.get("input_required"))


# ------------------------------------------------------------------------------ card
def agent_card(
    runnable: Any,
    *,
    url: str,
    name: str | None = None,
    description: str | None = None,
    version: str = "0.1.0",
    skills: Sequence[AgentSkill | Mapping[str, Any]] | None = None,
    api_key: bool = False,
    bearer_token: bool = False,
) -> AgentCard:
    """The Agent Card of ``runnable`` served at ``url`` (its JSON-RPC endpoint is ``url`` with
    a trailing ``/``): one JSON-RPC interface per protocol version served (1.0 first), streaming,
    text in and out, ``skills`` (dicts take `AgentSkill`'s fields; by default one skill from the
    runnable's name, description and role) and the security schemes of the credentials set."""
    endpoint = url.rstrip("/") + "/"
    name = name or str(getattr(runnable, "name", None) or type(runnable).__name__)
    description = description or str(getattr(runnable, "description", None) or f"The {name} agent.")
    card = AgentCard(
        name=name,
        description=description,
        version=version,
        supported_interfaces=[
            AgentInterface(url=endpoint, protocol_binding="JSONRPC", protocol_version=v)
            for v in (A2A_PROTOCOL_VERSION, A2A_LEGACY_VERSION)
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            s if isinstance(s, AgentSkill) else AgentSkill(**dict(s))
            for s in (
                skills if skills is not None else [_default_skill(runnable, name, description)]
            )
        ],
    )
    if api_key:
        card.security_schemes["apiKey"].CopyFrom(
            SecurityScheme(
                api_key_security_scheme=APIKeySecurityScheme(location="header", name=API_KEY_HEADER)
            )
        )
    if bearer_token:
        card.security_schemes["bearer"].CopyFrom(
            SecurityScheme(http_auth_security_scheme=HTTPAuthSecurityScheme(scheme="bearer"))
        )
    for scheme in card.security_schemes:  # either credential is enough
        card.security_requirements.append(SecurityRequirement(schemes={scheme: StringList()}))
    return card


def _default_skill(runnable: Any, name: str, description: str) -> AgentSkill:
    role = getattr(runnable, "role", None)
    examples: Sequence[str] = ()
    if isinstance(role, str):
        from agency.agents.roles import BUILTIN_ROLES

        if role in BUILTIN_ROLES:
            examples = BUILTIN_ROLES[role].examples[:3]
    return AgentSkill(
        id=name,
        name=name,
        description=description,
        tags=[role] if isinstance(role, str) else ["general"],
        examples=list(examples),
    )


# ------------------------------------------------------------------------------ app
def to_a2a_app(
    runnable: Any,
    *,
    url: str,
    name: str | None = None,
    description: str | None = None,
    version: str = "0.1.0",
    skills: Sequence[AgentSkill | Mapping[str, Any]] | None = None,
    api_key: str | None = None,
    bearer_token: str | None = None,
    input_format: InputFormat = "messages",
) -> Starlette:
    """``runnable`` as an A2A agent: a Starlette app built from a2a-sdk's request handler,
    JSON-RPC route (1.0 and 0.3 methods) and card routes, running a `RunnableExecutor`.

    ``url`` is where clients reach the app (with its path prefix when mounted under one); the
    card advertises it. ``name`` and ``description`` default to the runnable's own. See the
    module docstring for input formats, streaming, asking back, cancel, errors and auth.
    """
    card = agent_card(
        runnable,
        url=url,
        name=name,
        description=description,
        version=version,
        skills=skills,
        api_key=api_key is not None,
        bearer_token=bearer_token is not None,
    )
    executor = RunnableExecutor(runnable, input_format=input_format)
    handler = DefaultRequestHandler(
        agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=card
    )
    rpc = create_jsonrpc_routes(handler, rpc_url="/", enable_v0_3_compat=True)
    if api_key is not None or bearer_token is not None:
        check = _credential_check(api_key, bearer_token)
        rpc = [Route(r.path, _guarded(r.endpoint, check), methods=["POST"]) for r in rpc]
    app = Starlette(
        routes=[
            *create_agent_card_routes(card),
            *create_agent_card_routes(card, card_url=LEGACY_CARD_PATH),
            *rpc,
        ]
    )
    app.state.a2a_card = card
    app.state.a2a_executor = executor
    return app


def _credential_check(api_key: str | None, bearer_token: str | None) -> Callable[[Request], bool]:
    def check(request: Request) -> bool:
        if api_key is not None:
            sent = request.headers.get(API_KEY_HEADER, "")
            if sent and hmac.compare_digest(sent.encode(), api_key.encode()):
                return True
        if bearer_token is not None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                token.strip().encode(), bearer_token.encode()
            ):
                return True
        return False

    return check


def _guarded(
    endpoint: Callable[[Request], Awaitable[Response]], check: Callable[[Request], bool]
) -> Callable[[Request], Awaitable[Response]]:
    async def guarded(request: Request) -> Response:
        if not check(request):
            # Before the body is read: nothing is parsed, no task is created, nothing runs.
            return JSONResponse(
                {"error": "unauthorized: send the API key or bearer token the agent card names"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="a2a"'},
            )
        return await endpoint(request)

    return guarded
