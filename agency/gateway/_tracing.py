"""Optional OpenTelemetry traces of the gateway's requests (``[gateway] otel = true``).

One span per request, named ``chat <model>`` / ``embeddings <model>``, from its arrival to its
settling, child of the caller's ``traceparent`` when one is sent. Attributes follow the GenAI
semantic conventions where they have a name (``gen_ai.operation.name``,
``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` /
``output_tokens``) plus ``agency.*`` for what the gateway adds (provider entry, attempts, cost,
cache, experiment arm, key id — never a key, never prompt text) and ``http.response.status_code``.

The gateway only uses the OpenTelemetry API (a library's part); `agency serve` installs the
SDK's tracer provider with an OTLP/HTTP exporter when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set
(`configure_from_env`). ``pip install "agency[otel]"``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agency.errors import ConfigError

if TYPE_CHECKING:
    from agency.gateway._core import Answer, Ticket

__all__ = ["Tracing", "configure_from_env"]


def _require() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        raise ConfigError(
            "[gateway] otel = true needs OpenTelemetry",
            key="gateway.otel",
            fix='pip install "agency[otel]", or set otel = false',
        ) from None
    return trace


class Tracing:
    """Spans for settled requests, on ``tracer`` (default: the global provider's)."""

    def __init__(self, tracer: Any = None) -> None:
        trace = _require()
        from opentelemetry.propagate import extract

        self._trace = trace
        self._extract = extract
        self.tracer = tracer or trace.get_tracer("agency.gateway")
        """The OpenTelemetry tracer spans are made on."""

    def parent(self, headers: Mapping[str, str]) -> Any:
        """The caller's trace context (``traceparent``), or None."""
        if "traceparent" not in headers:
            return None
        return self._extract(dict(headers))

    def record(
        self, ticket: Ticket, answer: Answer | None, status: int, failure: str | None
    ) -> None:
        """One finished span for ``ticket``."""
        operation = "embeddings" if ticket.endpoint == "embeddings" else "chat"
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": ticket.model_asked,
            "http.response.status_code": status,
            "agency.request_id": ticket.request_id,
            "agency.endpoint": ticket.endpoint,
            "agency.stream": ticket.stream,
        }
        if ticket.key is not None:
            attributes["agency.key_id"] = ticket.key.id
        if ticket.arm is not None:
            attributes["agency.experiment"] = ticket.experiment
            attributes["agency.arm"] = ticket.arm
        if ticket.role is not None:
            attributes["agency.role"] = ticket.role
        if answer is not None:
            usage: Any = answer.message.usage_metadata or {}
            attributes.update(
                {
                    "agency.provider": answer.provider or "",
                    "agency.attempts": answer.attempts,
                    "agency.cache": answer.cache,
                    "gen_ai.usage.input_tokens": int(usage.get("input_tokens") or 0),
                    "gen_ai.usage.output_tokens": int(usage.get("output_tokens") or 0),
                }
            )
            if answer.model:
                attributes["gen_ai.response.model"] = answer.model
            if answer.cost is not None:
                attributes["agency.cost_usd"] = answer.cost
        if failure is not None:
            attributes["error.type"] = failure
        span = self.tracer.start_span(
            f"{operation} {ticket.model_asked}",
            context=ticket.trace_parent,
            kind=self._trace.SpanKind.SERVER,
            start_time=ticket.wall_start_ns,
            attributes=attributes,
        )
        if status >= 400:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, failure or ""))
        span.end()


def configure_from_env() -> bool:
    """Install the SDK's tracer provider exporting over OTLP/HTTP when
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (and the SDK is installed); True when it did."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": "agency-gateway"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True
