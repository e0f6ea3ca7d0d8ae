"""The table `agency.gateway` owns: ``[gateway]`` (`GatewayConfig`) with its experiments.

    [gateway]
    host = "127.0.0.1"
    port = 4000
    auth = true                     # virtual keys required (``agency keys create``)
    data_dir = ".agency"            # keys.sqlite and audit.sqlite live here

    [[gateway.experiments]]         # an A/B test of providers for one model name
    name = "cheap-vs-strong"
    model = "role:code"             # requests asking for this model take part
    sticky = "key"                  # one arm per virtual key ("user": per OpenAI `user` field)
    arms = [
      { name = "a", chain = ["openai"], weight = 1 },
      { name = "b", chain = ["groq", "openai"], weight = 1 },
    ]

It is a `agency.config.Section` in the ``agency.config`` entry-point group (`SECTIONS`), so
``agency.load_config(file)`` checks it with the file, key path and fix, without core importing
the gateway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from agency.config import AgencyConfig, ConfigModel, Float, Int, Section, config_problem

__all__ = ["SECTIONS", "ArmConfig", "ExperimentConfig", "GatewayConfig", "gateway_config"]


class ArmConfig(ConfigModel):
    """One arm of an experiment: the chain its requests use."""

    name: str = Field(min_length=1)
    """The arm's name in reports (``"a"``, ``"control"``)."""
    chain: list[str] = Field(min_length=1)
    """Entry names or ``"provider:model"`` specs, tried in order (fallback along it)."""
    weight: Float = Field(default=1.0, gt=0)
    """Share of traffic, relative to the other arms' weights."""


class ExperimentConfig(ConfigModel):
    """An A/B test of providers (``[[gateway.experiments]]``)."""

    name: str = Field(min_length=1)
    """The experiment's name (``agency experiments report NAME``)."""
    model: str = Field(min_length=1)
    """The model name requests ask for to take part: an entry name, a spec, ``role:<name>``
    or ``auto``."""
    arms: list[ArmConfig] = Field(min_length=2)
    """At least two arms."""
    sticky: Literal["key", "user", "request"] = "key"
    """What keeps its arm: each virtual key (``key``), each end user (the request's ``user``
    field, else its key), or nothing (``request``: every request drawn anew)."""
    enabled: bool = True
    """Whether requests are assigned arms (a stopped experiment keeps its records)."""

    @model_validator(mode="after")
    def _unique_arms(self) -> ExperimentConfig:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise config_problem(
                f"arm names repeat in experiment {self.name!r}: {names}",
                fix="give every arm of an experiment its own name",
            )
        return self


class GatewayConfig(ConfigModel):
    """The ``[gateway]`` table: how `agency serve` listens and where it keeps its data."""

    host: str = "127.0.0.1"
    """Interface to listen on (``--host`` overrides)."""
    port: Int = Field(default=4000, gt=0, lt=65536)
    """Port to listen on (``--port`` overrides)."""
    auth: bool = True
    """Whether requests need a virtual key; ``false`` is allowed on a loopback host only
    (``--no-auth``)."""
    data_dir: str = ".agency"
    """Directory of ``keys.sqlite`` and ``audit.sqlite`` (relative to the working directory)."""
    log_prompts: bool = False
    """Keep prompt and answer text in the audit log for every key (else per key, opted in)."""
    health_interval_s: Float = Field(default=15.0, ge=0)
    """Seconds between probes of every provider (a cheap model listing fed to its breaker);
    ``0`` turns them off."""
    otel: bool = False
    """Record an OpenTelemetry span per request (``pip install "agency[otel]"``); `agency
    serve` exports them over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set."""
    max_body_mb: Float = Field(default=16.0, gt=0)
    """Largest request body accepted, MiB (images travel inline)."""
    experiments: list[ExperimentConfig] = Field(default_factory=list)
    """A/B tests of providers."""

    @model_validator(mode="after")
    def _unique_experiments(self) -> GatewayConfig:
        names = [e.name for e in self.experiments]
        if len(set(names)) != len(names):
            raise config_problem(
                f"experiment names repeat: {names}",
                fix="give every [[gateway.experiments]] table its own name",
            )
        return self

    def path(self, filename: str) -> Path:
        """``data_dir / filename``."""
        return Path(self.data_dir) / filename


SECTIONS = [Section(("gateway",), GatewayConfig)]
"""What `agency.config` hands this layer (the ``agency.config`` entry point ``gateway``)."""


def gateway_config(config: AgencyConfig) -> GatewayConfig:
    """The ``[gateway]`` table of ``config`` (its defaults when absent)."""
    value: GatewayConfig = config.section("gateway")
    return value
