"""A2A over real uvicorn on 127.0.0.1: a2a-sdk's own client against our served runnables (1.0
and 0.3), our RemoteAgent against an agent built only from a2a-sdk's server classes, auth,
cancel, multi-turn, asking back, errors, and an app mounted under a path prefix."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

pytest.importorskip("a2a", reason="A2A is the a2a extra")

from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.helpers.proto_helpers import get_message_text, new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    CancelTaskRequest,
    GetTaskRequest,
    InvalidParamsError,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskState,
)
from fakes._server import serve
from fakes.openai_server import FakeOpenAI, Reply
from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableLambda
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from test_agent import _agency
from toolbox import get_weather

from agency.agents.a2a import A2A_PROTOCOL_VERSION, RemoteAgent, to_a2a_app
from agency.agents.agent import Agent, AgentEvent, AgentResult
from agency.errors import (
    AuthenticationError,
    MalformedResponse,
    ProviderUnavailable,
    Timeout,
)

# ------------------------------------------------------------------------------ helpers


def _turns(messages: list[BaseMessage]) -> int:
    return sum(isinstance(m, HumanMessage) for m in messages)


async def _echo(messages: list[BaseMessage]) -> AsyncIterator[AIMessageChunk]:
    """Streams 'you said: <text> (turn N)' word by word; N counts the user's turns."""
    for word in f"you said: {messages[-1].text} (turn {_turns(messages)})".split(" "):
        yield AIMessageChunk(content=word + " ")


ECHO = RunnableLambda(_echo, name="echo")


class Slow:
    """A runnable whose model call takes a minute: says when it started and whether it was
    cancelled (threading events: the server runs on its own thread and loop)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.cancelled = threading.Event()
        self.finished = threading.Event()

    async def astream(self, messages: Any) -> AsyncIterator[AIMessageChunk]:
        yield AIMessageChunk(content="thinking")
        self.started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        self.finished.set()
        yield AIMessageChunk(content=" done")


class Counter:
    """Counts its runs (the auth tests check that nothing ran)."""

    def __init__(self) -> None:
        self.calls = 0

    async def astream(self, messages: Any) -> AsyncIterator[str]:
        self.calls += 1
        yield "counted"


async def _asker(messages: list[BaseMessage]) -> AsyncIterator[AIMessageChunk]:
    """Asks for the city first (input_required), then answers with it."""
    if _turns(messages) == 1:
        yield AIMessageChunk(content="Which city?", response_metadata={"input_required": True})
    else:
        yield AIMessageChunk(content=f"Sunny in {messages[-1].text}.")


async def _broken(messages: list[BaseMessage]) -> AsyncIterator[str]:
    raise ProviderUnavailable("every provider is down", provider="openai", status_code=503)
    yield ""  # pragma: no cover - makes this an async generator


@contextlib.contextmanager
def served(
    runnable: Any, prefix: str = "", wrap: Callable[[Any], Any] | None = None, **kw: Any
) -> Iterator[str]:
    """Serve ``to_a2a_app(runnable)`` on a free port (mounted at ``prefix`` if given, wrapped
    by ``wrap``); yield the agent's URL. The app is built once the port is known, so the card
    names it."""
    holder: dict[str, Any] = {}

    async def late(scope: Any, receive: Any, send: Any) -> None:
        await holder["app"](scope, receive, send)

    with serve(late) as base:
        url = base + prefix
        app: Any = to_a2a_app(runnable, url=url, **kw)
        app = Starlette(routes=[Mount(prefix, app)]) if prefix else app
        holder["app"] = wrap(app) if wrap else app
        yield url


class Recorder:
    """ASGI middleware recording each JSON-RPC request's method and A2A-Version header."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls: list[tuple[str, str | None]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        messages, more = [], True
        while more:
            message = await receive()
            messages.append(message)
            more = message.get("more_body", False)
        body = json.loads(b"".join(m.get("body", b"") for m in messages))
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.calls.append((body.get("method"), headers.get("a2a-version")))
        pending = iter(messages)

        async def replay() -> Any:
            return next(pending, None) or await receive()

        await self.app(scope, replay, send)


def _message(text: str, **ids: str) -> SendMessageRequest:
    return SendMessageRequest(
        message=Message(
            role=Role.ROLE_USER, message_id=f"m-{text[:8]}", parts=[Part(text=text)], **ids
        )
    )


def _artifact_text(task: Any) -> str:
    return "".join(p.text for a in task.artifacts for p in a.parts)


async def _sdk_client(url: str, *, streaming: bool, legacy: bool = False, **http: Any) -> Any:
    """a2a-sdk's client for the agent at ``url``; ``legacy`` keeps only the card's 0.3
    interface, so the client speaks 0.3 as it would to a 0.3-only peer."""
    client = httpx.AsyncClient(**http)
    card = await A2ACardResolver(client, url).get_agent_card()
    if legacy:
        keep = [i for i in card.supported_interfaces if i.protocol_version == "0.3"]
        del card.supported_interfaces[:]
        card.supported_interfaces.extend(keep)
    return ClientFactory(ClientConfig(httpx_client=client, streaming=streaming)).create(card)


# ------------------------------------------------------------------------------ serve: a2a-sdk's client
async def test_the_card_is_at_the_well_known_path_in_both_shapes() -> None:
    with served(ECHO, description="Echoes you.", version="2.1.0") as url:
        async with httpx.AsyncClient() as http:
            raw = (await http.get(url + "/.well-known/agent-card.json")).json()
            legacy_path = (await http.get(url + "/.well-known/agent.json")).json()
            card = await A2ACardResolver(http, url).get_agent_card()
    # 1.0 fields: interfaces per version, each on the same endpoint
    assert [(i["protocolVersion"], i["url"]) for i in raw["supportedInterfaces"]] == [
        (A2A_PROTOCOL_VERSION, url + "/"),
        ("0.3", url + "/"),
    ]
    # 0.3 fields, merged in by a2a-sdk: a 0.3 client finds the same endpoint, labelled 0.3
    assert (raw["url"], raw["protocolVersion"], raw["preferredTransport"]) == (
        url + "/",
        "0.3",
        "JSONRPC",
    )
    assert legacy_path == raw
    assert card.name == "echo" and card.description == "Echoes you." and card.version == "2.1.0"
    assert card.capabilities.streaming is True
    assert list(card.default_input_modes) == ["text/plain"]
    assert [s.id for s in card.skills] == ["echo"]
    assert not card.security_schemes


async def test_sdk_client_sends_streams_gets_and_lists_in_1_0() -> None:
    with served(ECHO) as url:
        client = await _sdk_client(url, streaming=False)
        [reply] = [r async for r in client.send_message(_message("hello"))]
        task = reply.task
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert _artifact_text(task) == "you said: hello (turn 1) "

        streaming = await _sdk_client(url, streaming=True)
        events = [r async for r in streaming.send_message(_message("stream me"))]
        kinds = [e.WhichOneof("payload") for e in events]
        chunks = [e.artifact_update for e in events if e.HasField("artifact_update")]
        assert kinds[0] == "task" and len(chunks) == 6  # one per word
        assert "".join(p.text for c in chunks for p in c.artifact.parts) == (
            "you said: stream me (turn 1) "
        )
        assert [c.append for c in chunks] == [False, True, True, True, True, True]
        assert [c.last_chunk for c in chunks] == [False, False, False, False, False, True]
        assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED

        got = await client.get_task(GetTaskRequest(id=chunks[0].task_id))
        assert got.status.state == TaskState.TASK_STATE_COMPLETED
        assert _artifact_text(got) == "you said: stream me (turn 1) "
        listed = await client.list_tasks(ListTasksRequest())
        assert {t.id for t in listed.tasks} == {task.id, got.id}
        await client.close()
        await streaming.close()


async def test_sdk_client_in_0_3_mode_uses_the_0_3_methods() -> None:
    recorders: list[Recorder] = []
    with served(ECHO, wrap=lambda app: recorders.append(Recorder(app)) or recorders[0]) as url:
        client = await _sdk_client(url, streaming=False, legacy=True)
        [reply] = [r async for r in client.send_message(_message("old peer"))]
        assert _artifact_text(reply.task) == "you said: old peer (turn 1) "
        got = await client.get_task(GetTaskRequest(id=reply.task.id))
        assert got.status.state == TaskState.TASK_STATE_COMPLETED

        streaming = await _sdk_client(url, streaming=True, legacy=True)
        events = [r async for r in streaming.send_message(_message("old stream"))]
        text = "".join(
            p.text
            for e in events
            if e.HasField("artifact_update")
            for p in e.artifact_update.artifact.parts
        )
        assert text == "you said: old stream (turn 1) "
        assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
        await client.close()
        await streaming.close()
    assert recorders[0].calls == [
        ("message/send", "0.3"),
        ("tasks/get", "0.3"),
        ("message/stream", "0.3"),
    ]


async def test_a_request_without_the_version_header_is_0_3() -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "message/send",
        "params": {
            "message": {
                "kind": "message",
                "role": "user",
                "messageId": "raw-1",
                "parts": [{"kind": "text", "text": "no header"}],
            }
        },
    }
    with served(ECHO) as url:
        async with httpx.AsyncClient() as http:
            reply = (await http.post(url + "/", json=body)).json()
    result = reply["result"]
    assert result["kind"] == "task" and result["status"]["state"] == "completed"  # 0.3 shapes
    assert result["artifacts"][0]["parts"][0]["kind"] == "text"
    assert "".join(p["text"] for a in result["artifacts"] for p in a["parts"]) == (
        "you said: no header (turn 1) "
    )


@pytest.mark.parametrize("legacy", [False, True], ids=["1.0", "0.3"])
async def test_cancel_stops_the_running_model_call(legacy: bool) -> None:
    slow = Slow()
    with served(slow) as url:
        client = await _sdk_client(url, streaming=False, legacy=legacy)
        sending = asyncio.create_task(_collect(client, _message("take your time")))
        assert await asyncio.to_thread(slow.started.wait, 10)
        task_id = await _running_task_id(url)

        canceled = await client.cancel_task(CancelTaskRequest(id=task_id))

        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        assert await asyncio.to_thread(slow.cancelled.wait, 10)  # the model call saw it
        assert not slow.finished.is_set()
        got = await client.get_task(GetTaskRequest(id=task_id))
        assert got.status.state == TaskState.TASK_STATE_CANCELED
        [reply] = await asyncio.wait_for(sending, 10)  # the blocked send returns too
        assert reply.task.status.state == TaskState.TASK_STATE_CANCELED
        await client.close()


async def _collect(client: Any, request: SendMessageRequest) -> list[Any]:
    return [r async for r in client.send_message(request)]


async def _running_task_id(url: str) -> str:
    """The one task of the agent at ``url``, found with a 1.0 ListTasks."""
    client = await _sdk_client(url, streaming=False)
    try:
        tasks = (await client.list_tasks(ListTasksRequest())).tasks
        assert len(tasks) == 1
        return str(tasks[0].id)
    finally:
        await client.close()


async def test_a_failing_runnable_fails_its_task_and_an_empty_message_is_invalid_params() -> None:
    with served(RunnableLambda(_broken)) as url:
        client = await _sdk_client(url, streaming=False)
        [reply] = [r async for r in client.send_message(_message("anything"))]  # no hang
        status = reply.task.status
        assert status.state == TaskState.TASK_STATE_FAILED
        assert get_message_text(status.message).startswith("ProviderUnavailable: ")
        assert status.message.metadata["error"] == "ProviderUnavailable"
        assert status.message.metadata["retryable"] is True

        empty = SendMessageRequest(
            message=Message(role=Role.ROLE_USER, message_id="e", parts=[Part(url="http://x/y.png")])
        )
        with pytest.raises(InvalidParamsError):
            [r async for r in client.send_message(empty)]
        await client.close()


# ------------------------------------------------------------------------------ auth
@pytest.mark.parametrize(
    ("setting", "good", "bad"),
    [
        ({"api_key": "k-123"}, {"X-API-Key": "k-123"}, {"X-API-Key": "wrong"}),
        (
            {"bearer_token": "t-456"},
            {"Authorization": "Bearer t-456"},
            {"Authorization": "Bearer x"},
        ),
    ],
    ids=["api-key", "bearer"],
)
async def test_auth_refuses_before_anything_runs(
    setting: dict[str, str], good: dict[str, str], bad: dict[str, str]
) -> None:
    counter = Counter()
    with served(counter, **setting) as url:
        async with httpx.AsyncClient() as http:
            card = (await http.get(url + "/.well-known/agent-card.json")).json()  # public
            for headers in ({}, bad):
                refused = await http.post(
                    url + "/",
                    json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage"},
                    headers=headers,
                )
                assert refused.status_code == 401
        assert counter.calls == 0
        [scheme] = card["securitySchemes"]
        assert card["securityRequirements"] == [{"schemes": {scheme: {}}}]

        with pytest.raises(AuthenticationError):
            RemoteAgent(url).invoke("hi")
        assert counter.calls == 0

        client = await _sdk_client(url, streaming=True, headers=good)
        events = [r async for r in client.send_message(_message("let me in"))]
        assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
        assert RemoteAgent(url, headers=good).invoke("again").text == "counted"
        assert counter.calls == 2
        await client.close()


# ------------------------------------------------------------------------------ turns
def test_multi_turn_keeps_context_and_input_required_continues_the_task() -> None:
    with served(ECHO) as url:
        remote = RemoteAgent(url)
        first = remote.invoke("one")
        context = {"configurable": {"context_id": first.response_metadata["context_id"]}}
        second = remote.invoke("two", context)
        other = remote.invoke("elsewhere")
    assert first.text == "you said: one (turn 1) "
    assert second.text == "you said: two (turn 2) "  # the server kept the context's history
    assert other.text == "you said: elsewhere (turn 1) "
    assert other.response_metadata["context_id"] != first.response_metadata["context_id"]

    with served(RunnableLambda(_asker)) as url:
        remote = RemoteAgent(url)
        question = remote.invoke("What is the weather?")
        meta = question.response_metadata
        assert question.text == "Which city?"
        assert meta["input_required"] is True and meta["state"] == "TASK_STATE_INPUT_REQUIRED"
        ids = {"task_id": meta["task_id"], "context_id": meta["context_id"]}
        answer = remote.invoke("Paris", {"configurable": ids})
    assert answer.text == "Sunny in Paris."
    assert answer.response_metadata["input_required"] is False
    assert answer.response_metadata["task_id"] == meta["task_id"]  # the same task, continued
    assert answer.response_metadata["state"] == "TASK_STATE_COMPLETED"


# ------------------------------------------------------------------------------ our Agent
async def test_an_agent_streams_its_tokens_over_a2a(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(
        Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}]),
        Reply("Cold in Oslo today."),
    )
    agent = Agent(
        "weather", agency=_agency(openai_fake), tools=[get_weather], description="Weather."
    )
    with served(agent) as url:
        remote = RemoteAgent(url)
        chunks = [c async for c in remote.astream("Oslo?")]
        card = await remote.aget_card()
    assert "".join(c.text for c in chunks) == "Cold in Oslo today."
    assert len([c for c in chunks if c.text]) >= 2  # token by token, not one final blob
    assert card.name == "weather" and card.description == "Weather."
    assert list(card.skills[0].tags) == ["general"]


async def test_agent_events_without_tokens_answer_with_the_final_text() -> None:
    class Quiet:
        name = "quiet"

        async def astream_agent(self, messages: Any) -> AsyncIterator[AgentEvent]:
            yield AgentEvent("tool_call", "quiet", {"name": "look"})
            result = AgentResult(text="found it", messages=list(messages))
            yield AgentEvent("final", "quiet", {"text": "found it"}, result)

    with served(Quiet()) as url:
        assert (await RemoteAgent(url).ainvoke("look")).text == "found it"


# ------------------------------------------------------------------------------ use: RemoteAgent
class SdkEcho(AgentExecutor):
    """An executor written here, on a2a-sdk's classes only: streams 'echo: <text>' in two
    artifact chunks."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        task = context.current_task or new_task_from_user_message(context.message)
        if context.current_task is None:
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        await updater.add_artifact([Part(text="echo: ")], artifact_id="a", last_chunk=False)
        await updater.add_artifact(
            [Part(text=context.get_user_input())], artifact_id="a", append=True, last_chunk=True
        )
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


def _sdk_app(url: str, card_json: dict[str, Any] | None, *, streaming: bool) -> Recorder:
    """An A2A app at ``url`` made of a2a-sdk's server classes and `SdkEcho`, none of our
    serving code; ``card_json`` replaces the served card (e.g. a 0.3-shaped one)."""
    card = AgentCard(
        name="sdk-echo",
        description="Echoes, on a2a-sdk alone.",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=url + "/", protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=streaming),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
    )
    handler = DefaultRequestHandler(
        agent_executor=SdkEcho(), task_store=InMemoryTaskStore(), agent_card=card
    )
    card_routes = (
        [Route("/.well-known/agent-card.json", lambda r: JSONResponse(card_json))]
        if card_json is not None
        else create_agent_card_routes(card)
    )
    rpc = create_jsonrpc_routes(handler, rpc_url="/", enable_v0_3_compat=True)
    return Recorder(Starlette(routes=[*card_routes, *rpc]))


@contextlib.contextmanager
def sdk_served(
    card_json: Callable[[str], dict[str, Any]] | None = None, *, streaming: bool = True
) -> Iterator[tuple[str, Recorder]]:
    """Serve `_sdk_app`; yield its URL and the recorder of its JSON-RPC calls."""
    holder: dict[str, Any] = {}

    async def late(scope: Any, receive: Any, send: Any) -> None:
        await holder["app"](scope, receive, send)

    with serve(late) as url:
        holder["app"] = _sdk_app(url, card_json(url) if card_json else None, streaming=streaming)
        yield url, holder["app"]


async def test_remote_agent_talks_to_an_sdk_server() -> None:
    with sdk_served() as (url, recorder):
        remote = RemoteAgent(url)
        chunks = [c async for c in remote.astream("hi")]
        assert [c.text for c in chunks] == ["echo: ", "hi", ""]
        assert chunks[-1].response_metadata["state"] == "TASK_STATE_COMPLETED"
        assert chunks[-1].response_metadata["agent"] == "sdk-echo"
        assert (await remote.ainvoke("async")).text == "echo: async"
        assert remote.invoke("sync").text == "echo: sync"
        assert "".join(c.text for c in remote.stream("sync stream")) == "echo: sync stream"
        tool = remote.as_tool()
        assert tool.name == "ask_sdk-echo" and tool.description == "Echoes, on a2a-sdk alone."
        assert await tool.ainvoke({"task": "as a tool"}) == "echo: as a tool"
    assert {m for m, _ in recorder.calls} == {"SendStreamingMessage"}
    assert {v for _, v in recorder.calls} == {A2A_PROTOCOL_VERSION}


async def test_remote_agent_sends_without_streaming_when_the_card_says_so() -> None:
    with sdk_served(streaming=False) as (url, recorder):
        assert (await RemoteAgent(url).ainvoke("plain")).text == "echo: plain"
    assert recorder.calls == [("SendMessage", A2A_PROTOCOL_VERSION)]


async def test_remote_agent_reads_a_0_3_card_and_speaks_0_3() -> None:
    def legacy_card(url: str) -> dict[str, Any]:
        return {
            "name": "old-echo",
            "description": "A 0.3 peer.",
            "url": url + "/",
            "version": "0.9.0",
            "protocolVersion": "0.3.0",
            "preferredTransport": "JSONRPC",
            "capabilities": {"streaming": True},
            "defaultInputModes": ["text/plain"],
            "defaultOutputModes": ["text/plain"],
            "skills": [],
        }

    with sdk_served(legacy_card) as (url, recorder):
        remote = RemoteAgent(url)
        assert (await remote.ainvoke("old")).text == "echo: old"
        assert remote.name == "old-echo"
    assert recorder.calls == [("message/stream", "0.3")]


async def test_remote_agent_cancels_the_remote_task_on_timeout() -> None:
    slow = Slow()
    with served(slow) as url:
        with pytest.raises(Timeout):
            await RemoteAgent(url, timeout=1.0).ainvoke("slowly")
        assert await asyncio.to_thread(slow.cancelled.wait, 10)
        client = await _sdk_client(url, streaming=False)
        [task] = (await client.list_tasks(ListTasksRequest())).tasks
        assert task.status.state == TaskState.TASK_STATE_CANCELED
        await client.close()


# ------------------------------------------------------------------------------ peer failures
def _peer(card: Response | None, rpc: Response) -> Starlette:
    good = {
        "name": "peer",
        "description": "x",
        "version": "1",
        "supportedInterfaces": [
            {"url": "", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
        ],
        "capabilities": {"streaming": False},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [],
    }

    async def card_endpoint(request: Request) -> Response:
        if card is not None:
            return card
        good["supportedInterfaces"][0]["url"] = str(request.base_url)
        return JSONResponse(good)

    return Starlette(
        routes=[
            Route("/.well-known/agent-card.json", card_endpoint),
            Route("/", lambda r: rpc, methods=["POST"]),
        ]
    )


@pytest.mark.parametrize(
    ("card", "rpc", "error"),
    [
        (None, PlainTextResponse("upstream down", status_code=503), ProviderUnavailable),
        (PlainTextResponse("maintenance", status_code=502), None, ProviderUnavailable),
        (JSONResponse({"name": 5, "skills": "not a list"}), None, MalformedResponse),
        (PlainTextResponse("<html>not json</html>"), None, MalformedResponse),
        (None, JSONResponse({"jsonrpc": "2.0", "id": 1, "resultat": {}}), MalformedResponse),
    ],
    ids=["rpc-503", "card-502", "card-wrong-fields", "card-not-json", "reply-not-jsonrpc"],
)
async def test_peer_failures_are_our_error_tree(
    card: Response | None, rpc: Response | None, error: type[Exception]
) -> None:
    peer = _peer(card, rpc or PlainTextResponse("unused", status_code=500))
    with serve(peer) as url, pytest.raises(error) as caught:
        await RemoteAgent(url).ainvoke("hello")
    assert caught.value.provider == "a2a"  # type: ignore[attr-defined]


def test_a_failed_remote_task_is_provider_unavailable() -> None:
    with served(RunnableLambda(_broken)) as url, pytest.raises(ProviderUnavailable) as caught:
        RemoteAgent(url).invoke("anything")
    assert "every provider is down" in str(caught.value)


# ------------------------------------------------------------------------------ path prefix
async def test_an_app_mounted_under_a_prefix_serves_card_and_methods() -> None:
    with served(ECHO, prefix="/agents/echo") as url:
        async with httpx.AsyncClient() as http:
            card = (await http.get(url + "/.well-known/agent-card.json")).json()
        assert card["supportedInterfaces"][0]["url"] == url + "/"
        assert (await RemoteAgent(url).ainvoke("prefixed")).text == "you said: prefixed (turn 1) "
        for legacy in (False, True):
            client = await _sdk_client(url, streaming=True, legacy=legacy)
            events = [r async for r in client.send_message(_message("sdk prefixed"))]
            assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
            await client.close()


# ------------------------------------------------------------------------------ CLI
def test_cli_card_and_send() -> None:
    from typer.testing import CliRunner

    from agency.cli import app

    runner = CliRunner()
    with served(RunnableLambda(_asker), api_key="k-1") as url:
        shown = runner.invoke(app, ["a2a", "card", url])
        assert shown.exit_code == 0, shown.output
        card = json.loads(shown.stdout)
        assert card["supportedInterfaces"][0]["protocolVersion"] == A2A_PROTOCOL_VERSION

        refused = runner.invoke(app, ["a2a", "send", url, "weather?"])
        assert refused.exit_code == 1 and "401" in refused.stderr

        asked = runner.invoke(app, ["a2a", "send", url, "weather?", "-H", "X-API-Key: k-1"])
        assert asked.exit_code == 0, asked.output
        assert asked.stdout == "Which city?\n" and "--task-id" in asked.stderr
        task_id = asked.stderr.split("--task-id ")[1].split(")")[0]
        context_id = asked.stderr.split("context ")[1].split()[0]
        ids = ["--task-id", task_id, "--context-id", context_id]
        answered = runner.invoke(
            app, ["a2a", "send", url, "Rome", "--stream", "-H", "X-API-Key: k-1", *ids]
        )
    assert answered.exit_code == 0, answered.output
    assert answered.stdout == "Sunny in Rome.\n"
    assert "TASK_STATE_COMPLETED" in answered.stderr


def test_cli_serve_runs_an_agent_of_a_file(openai_fake: FakeOpenAI, tmp_path: Any) -> None:
    import socket
    import subprocess
    import sys
    import time

    openai_fake.script(Reply("Served from the file."))
    agents_file = tmp_path / "agents.toml"
    agents_file.write_text(
        f"""
[[llm.providers]]
name = "primary"
provider = "openai"
api_key = "sk-test"
base_url = "{openai_fake.base_url}"
text_model = "gpt-4o-mini"

[[agent]]
name = "helper"
description = "Helps."
"""
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "agency.cli", "a2a", "serve", str(agents_file)]
    proc = subprocess.Popen(
        [*command, "--agent", "helper", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/.well-known/agent-card.json", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "agency a2a serve did not start"
                time.sleep(0.2)
        remote = RemoteAgent(url)
        assert remote.invoke("hello").text == "Served from the file."
        card = remote.get_card()
        assert (card.name, card.description) == ("helper", "Helps.")
        assert card.supported_interfaces[0].url == url + "/"
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    missing = subprocess.run(
        [*command, "--agent", "nobody"], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2
    assert "no [[agent]] named 'nobody'" in missing.stderr and "helper" in missing.stderr


async def test_remote_agent_follows_a_task_left_running_to_its_end() -> None:
    """A peer (hand-written 1.0 JSON-RPC) answers SendMessage with a WORKING task; RemoteAgent
    polls GetTask until the task completes."""
    calls: list[str] = []

    async def rpc(request: Request) -> Response:
        body = await request.json()
        calls.append(body["method"])
        task: dict[str, Any] = {"id": "t-1", "contextId": "c-1"}
        if body["method"] == "GetTask" and calls.count("GetTask") >= 2:
            task["status"] = {"state": "TASK_STATE_COMPLETED"}
            task["artifacts"] = [{"artifactId": "a", "parts": [{"text": "done at last"}]}]
        else:
            task["status"] = {"state": "TASK_STATE_WORKING"}
        result = {"task": task} if body["method"] == "SendMessage" else task
        return JSONResponse({"jsonrpc": "2.0", "id": body["id"], "result": result})

    peer = _peer(None, PlainTextResponse("unused"))
    peer.router.routes[-1] = Route("/", rpc, methods=["POST"])
    with serve(peer) as url:
        answer = await RemoteAgent(url).ainvoke("long job")
    assert answer.text == "done at last"
    assert answer.response_metadata["state"] == "TASK_STATE_COMPLETED"
    assert calls == ["SendMessage", "GetTask", "GetTask"]
