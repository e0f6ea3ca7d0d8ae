"""``agency a2a``: serve an agent over A2A, read any A2A agent's card, send it a message.

    agency a2a serve agents.toml --agent researcher --port 8000
    agency a2a serve --model local:smollm2                 # a bare chat model as an agent
    agency a2a card http://127.0.0.1:8000
    agency a2a send http://127.0.0.1:8000 "Summarise A2A" --stream

The answer's text goes to stdout unchanged; notes (task state, the ids to continue with) go to
stderr. a2a-sdk loads only when a command runs, so ``agency --help`` stays fast and works
without the ``a2a`` extra.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["app"]

app = typer.Typer(
    name="a2a",
    help="Serve an agent over the A2A protocol, or talk to any A2A agent.",
    no_args_is_help=True,
)
_err = Console(stderr=True)

HeaderOption = Annotated[
    list[str] | None,
    typer.Option("--header", "-H", help='A request header, "Name: value" (repeatable).'),
]


def _fail(reason: str, code: int = 1) -> NoReturn:
    _err.print(f"[red]error:[/red] {escape(' '.join(reason.split()))}", soft_wrap=True)
    raise typer.Exit(code)


def _needs_extra() -> None:
    try:
        import a2a  # noqa: F401
    except ImportError:
        _fail('A2A needs the a2a extra: pip install "agency[a2a]"', 2)


def _headers(pairs: list[str] | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition(":")
        if not sep or not name.strip():
            _fail(f'--header {pair!r}: write "Name: value", e.g. -H "X-API-Key: k-123"', 2)
        headers[name.strip()] = value.strip()
    return headers


def _runnable(file: Path | None, agent: str | None, model: str | None, config: str | None) -> Any:
    """The agent ``agent`` of ``file``'s ``[[agent]]`` tables, or the chat model ``model``."""
    from agency.app import Agency
    from agency.config import load_config

    if (agent is None) == (model is None):
        _fail("give one of --agent NAME (with FILE) or --model SPEC", 2)
    if model is not None:
        return Agency(load_config(config)).chat_model(model)
    if file is None:
        _fail("--agent needs FILE, the TOML file with its [[agent]] table", 2)
    file_config = load_config(file)
    agency_config = file_config if "llm" in file_config.model_fields_set else load_config(config)
    from agency.agents.agent_file import build_agents

    agents = build_agents(file_config.section("agent") or [], Agency(agency_config))
    if agent not in agents:
        known = ", ".join(sorted(agents)) or "none"
        _fail(f"{file}: no [[agent]] named {agent!r} (agents there: {known})", 2)
    return agents[agent]


@app.command()
def serve(
    file: Annotated[
        Path | None, typer.Argument(help="TOML file with [[agent]] tables.", exists=True)
    ] = None,
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="The agent to serve.")] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help='Serve a chat model: "provider:model".')
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    url: Annotated[
        str | None,
        typer.Option(help="The public URL the card advertises (default: http://HOST:PORT)."),
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="agency.toml (when FILE has no [llm]).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="AGENCY_A2A_API_KEY", help="Require this key in X-API-Key."),
    ] = None,
    bearer_token: Annotated[
        str | None,
        typer.Option(envvar="AGENCY_A2A_BEARER_TOKEN", help="Require this bearer token."),
    ] = None,
) -> None:
    """Serve one agent (or a chat model) as an A2A agent, on uvicorn."""
    _needs_extra()
    import uvicorn

    from agency.agents.a2a import A2A_PROTOCOL_VERSION, to_a2a_app
    from agency.errors import AgencyError

    try:
        runnable = _runnable(file, agent, model, config)
    except AgencyError as exc:
        _fail(str(exc), 2)
    public = url or f"http://{host}:{port}"
    application = to_a2a_app(
        runnable,
        url=public,
        name=agent or (model or "").replace(":", "-") or None,
        api_key=api_key,
        bearer_token=bearer_token,
    )
    _err.print(
        f"A2A {A2A_PROTOCOL_VERSION} (and 0.3) agent at {public} "
        f"(card: {public}/.well-known/agent-card.json)",
        highlight=False,
        soft_wrap=True,
    )
    uvicorn.run(application, host=host, port=port, log_level="warning")


@app.command()
def card(
    url: Annotated[str, typer.Argument(help="The agent's base URL.")],
    header: HeaderOption = None,
) -> None:
    """Print an agent's card as 1.0 JSON (a 0.3 card is read and converted)."""
    _needs_extra()
    from google.protobuf.json_format import MessageToDict

    from agency.agents.a2a import RemoteAgent
    from agency.errors import AgencyError

    try:
        got = RemoteAgent(url, _headers(header)).get_card()
    except AgencyError as exc:
        _fail(str(exc))
    sys.stdout.write(json.dumps(MessageToDict(got), indent=2) + "\n")


@app.command()
def send(
    url: Annotated[str, typer.Argument(help="The agent's base URL.")],
    message: Annotated[str, typer.Argument(help="What to send.")],
    stream: Annotated[bool, typer.Option("--stream", help="Print text as it comes.")] = False,
    header: HeaderOption = None,
    context_id: Annotated[
        str | None, typer.Option(help="Continue this conversation (contextId).")
    ] = None,
    task_id: Annotated[
        str | None, typer.Option(help="Answer the task that asked for input (taskId).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds before the task is canceled.")] = 120.0,
) -> None:
    """Send a message to any A2A agent and print its answer."""
    _needs_extra()
    from agency.agents.a2a import RemoteAgent
    from agency.errors import AgencyError

    remote = RemoteAgent(url, _headers(header), timeout=timeout)
    config: Any = {"configurable": {"context_id": context_id, "task_id": task_id}}
    metadata: dict[str, Any] = {}
    try:
        if stream:
            for chunk in remote.stream(message, config):
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
                metadata = dict(chunk.response_metadata) or metadata
        else:
            answer = remote.invoke(message, config)
            sys.stdout.write(answer.text)
            metadata = dict(answer.response_metadata)
    except AgencyError as exc:
        _fail(str(exc))
    sys.stdout.write("\n")
    note = f"{metadata.get('state')}  context {metadata.get('context_id')}"
    if metadata.get("input_required"):
        note += f"  (the agent asks back: reply with --task-id {metadata.get('task_id')})"
    _err.print(note, highlight=False, soft_wrap=True)
