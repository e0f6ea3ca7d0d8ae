"""The ``agency`` command line: ``agency chat "prompt"``, ``agency models [PROVIDER]`` and
``agency providers`` (health and statistics of the configured providers).

With no model given and no key configured, ``chat`` runs on the embedded ``local:smollm2``
and says so, so it works on a fresh machine with no network.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app", "default_spec", "main"]

app = typer.Typer(
    name="agency",
    help="Talk to any LLM provider, or to the embedded model, from the terminal.",
    no_args_is_help=True,
    add_completion=False,
)
_out = Console()
_err = Console(stderr=True)

LOCAL_DEFAULT = "local:smollm2"
"""What ``agency chat`` uses when nothing else is configured."""


def default_spec() -> tuple[str, str]:
    """The model ``chat`` uses when none is given, and why.

    ``AGENCY_MODEL`` wins; then ``DEFAULT_LLM_PROVIDER`` with ``<PROVIDER>_MODEL``; then the
    first provider whose key is set (OpenAI, Anthropic-style env names); else the embedded model.
    """
    from agency._specs import get_profile, known_providers

    if os.environ.get("AGENCY_MODEL"):
        return os.environ["AGENCY_MODEL"], "from AGENCY_MODEL"
    preferred = os.environ.get("DEFAULT_LLM_PROVIDER")
    names = ([preferred] if preferred else []) + [n for n in known_providers() if n != preferred]
    for name in names:
        if name not in known_providers():
            continue
        profile = get_profile(name)
        if name == "local" or not profile.requires_key or not profile.base_url:
            continue
        if any(os.environ.get(var) for var in profile.api_key_env):
            model = (
                os.environ.get(f"{name.upper().replace('-', '_')}_MODEL") or profile.default_model
            )
            if model:
                return f"{name}:{model}", f"{profile.api_key_env[0]} is set"
    return LOCAL_DEFAULT, "no API key configured: using the embedded model (no network needed)"


@app.command()
def chat(
    prompt: Annotated[str, typer.Argument(help="What to ask.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help='Spec "provider:model".')
    ] = None,
    system: Annotated[str | None, typer.Option("--system", "-s", help="A system prompt.")] = None,
    stream: Annotated[
        bool, typer.Option("--stream/--no-stream", help="Print tokens as they come.")
    ] = True,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", help="Cap on generated tokens.")
    ] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", "-t")] = None,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="API root for the provider.")
    ] = None,
) -> None:
    """Send one prompt and print the answer."""
    from agency._factory import chat_model
    from agency.errors import AgencyError

    if model is None:
        model, why = default_spec()
        _err.print(f"[dim]model: {model} ({why})[/dim]")
    messages: list[tuple[str, str]] = []
    if system:
        messages.append(("system", system))
    messages.append(("human", prompt))
    params: dict[str, object] = {}
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    if temperature is not None:
        params["temperature"] = temperature
    if base_url:
        params["base_url"] = base_url
    try:
        llm = chat_model(model, **params)
        if stream:
            for chunk in llm.stream(messages):
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
            sys.stdout.write("\n")
        else:
            _out.print(llm.invoke(messages).text, markup=False, highlight=False)
    except AgencyError as exc:
        _err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from None


@app.command()
def models(
    provider: Annotated[
        str | None, typer.Argument(help="Provider name; all providers when omitted.")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="API root for the provider.")
    ] = None,
) -> None:
    """List the models a provider offers (or the known providers)."""
    from agency._factory import list_models
    from agency._specs import get_profile, known_providers
    from agency.errors import AgencyError

    if provider is None:
        table = Table("provider", "default model", "key variable", "base URL")
        for name in known_providers():
            profile = get_profile(name)
            table.add_row(
                name,
                profile.default_model or "-",
                ", ".join(profile.api_key_env) or "-",
                profile.base_url or "(base_url= required)",
            )
        _out.print(table)
        return
    try:
        found = list_models(provider, **({"base_url": base_url} if base_url else {}))
    except AgencyError as exc:
        _err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    table = Table("model", "owned by", "context")
    for info in sorted(found, key=lambda m: m.id):
        table.add_row(
            f"{provider}:{info.id}", info.owned_by or "-", str(info.context_window or "-")
        )
    _out.print(table)


@app.command()
def providers(
    config: Annotated[
        str | None,
        typer.Option(
            "--config", "-c", help="agency.toml; else the environment, else the embedded model."
        ),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Probe each provider with a models call.")
    ] = True,
) -> None:
    """Health and statistics of the configured providers."""
    from agency.app import Agency
    from agency.errors import AgencyError

    try:
        ag = Agency.from_config(config) if config else Agency.from_env()
        health = ag.health(check=check)
    except AgencyError as exc:
        _err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    table = Table("provider", "model", "reachable", "breaker", "limits", "latency ms")
    for name, row in health.items():
        if "unconfigured" in row:
            table.add_row(name, "-", "[red]no[/red]", "-", row["unconfigured"], "-")
            continue
        limits = row["limits"]
        shown = ", ".join(
            f"{k}={v}" for k, v in limits.items() if v is not None and k in ("rpm", "tpm")
        )
        reachable = row.get("reachable")
        table.add_row(
            name,
            row["spec"],
            "-" if reachable is None else ("[green]yes[/green]" if reachable else "[red]no[/red]"),
            row["breaker"]["state"],
            shown or "-",
            "-" if row["latency_ewma_ms"] is None else f"{row['latency_ewma_ms']:.0f}",
        )
    _out.print(table)
    _out.print(ag.stats())
    ag.close()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
