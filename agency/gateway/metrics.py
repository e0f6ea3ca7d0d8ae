"""``GET /metrics``: the gateway's numbers in Prometheus' text format (`prometheus-client`).

Counted per request as it settles: ``agency_gateway_requests_total`` (endpoint, model asked,
provider that answered, status), ``agency_gateway_failures_total`` (kind), the latency
histogram ``agency_gateway_request_seconds``, ``agency_gateway_tokens_total`` (direction),
``agency_gateway_cost_usd_total`` and ``agency_gateway_cache_hits_total``. Read at scrape time
from the agency: ``agency_gateway_breaker_state`` per provider (0 closed, 1 half-open, 2 open),
``agency_gateway_provider_in_flight``; ``agency_gateway_in_flight`` counts the gateway's own.
Each `GatewayMetrics` has its own registry, so several gateways live in one process (tests);
with ``--workers N`` the counts of every worker are summed (prometheus-client's multiprocess
mode, `MULTIPROC_ENV`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agency.gateway._core import Answer, Gateway, Ticket

__all__ = ["BREAKER_STATES", "CONTENT_TYPE", "LATENCY_BUCKETS_S", "MULTIPROC_ENV", "GatewayMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus' text exposition format."""
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Histogram buckets: a cache hit's milliseconds to a long generation's minute."""
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
"""The gauge's value per breaker state."""
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Set by ``agency serve --workers N`` (before any worker imports prometheus-client): the
workers write their counts there, and any worker's ``/metrics`` sums them."""


_MAX_CHILDREN = 10_000  # label sets whose metric children are kept at hand


class _Live(Collector):
    """Breaker states and loads, read from the agency when Prometheus scrapes."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def collect(self) -> Iterator[GaugeMetricFamily]:
        breaker = GaugeMetricFamily(
            "agency_gateway_breaker_state",
            "Circuit breaker per provider: 0 closed, 1 half-open, 2 open.",
            labels=["provider"],
        )
        load = GaugeMetricFamily(
            "agency_gateway_provider_in_flight",
            "Calls in flight per provider.",
            labels=["provider"],
        )
        for name, row in self._gateway.agency.health().items():
            if "breaker" not in row:
                continue
            state = str(row["breaker"].get("state", "closed")).replace("-", "_")
            breaker.add_metric([name], BREAKER_STATES.get(state, 0))
            load.add_metric([name], row.get("in_flight") or 0)
        yield breaker
        yield load


class GatewayMetrics:
    """The counters and histograms of one gateway (see the module docstring)."""

    def __init__(self, gateway: Gateway) -> None:
        self.registry = CollectorRegistry()
        """Where this gateway's metrics live."""
        r = self.registry
        self.requests = Counter(
            "agency_gateway_requests",
            "Requests answered.",
            ["endpoint", "model", "provider", "status"],
            registry=r,
        )
        self.failures = Counter(
            "agency_gateway_failures", "Failed requests by kind.", ["kind"], registry=r
        )
        self.latency = Histogram(
            "agency_gateway_request_seconds",
            "Time to the whole answer.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.tokens = Counter(
            "agency_gateway_tokens", "Tokens by direction.", ["direction", "provider"], registry=r
        )
        self.cost = Counter(
            "agency_gateway_cost_usd", "Cost of answered requests, USD.", ["provider"], registry=r
        )
        self.cache_hits = Counter("agency_gateway_cache_hits", "Semantic cache hits.", registry=r)
        self.in_flight = Gauge(
            "agency_gateway_in_flight",
            "Requests in flight at the gateway.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._live = _Live(gateway)
        r.register(self._live)
        self._children: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}

    def observe(
        self,
        ticket: Ticket,
        answer: Answer | None,
        status: int,
        failure: str | None,
        seconds: float,
    ) -> None:
        """Count one settled request."""
        provider = (answer.provider if answer else None) or "none"
        labels = (ticket.endpoint, ticket.model_asked, provider, status)
        children = self._children.get(labels)
        if children is None:  # labels() looks its child up by name each time: keep them
            children = (
                self.requests.labels(ticket.endpoint, ticket.model_asked, provider, str(status)),
                self.latency.labels(ticket.endpoint),
            )
            if len(self._children) < _MAX_CHILDREN:
                self._children[labels] = children
        children[0].inc()
        children[1].observe(seconds)
        if failure is not None:
            self.failures.labels(failure).inc()
        if answer is None:
            return
        usage: Any = answer.message.usage_metadata or {}
        if usage:
            self.tokens.labels("input", provider).inc(usage.get("input_tokens") or 0)
            self.tokens.labels("output", provider).inc(usage.get("output_tokens") or 0)
        if answer.cost:
            self.cost.labels(provider).inc(answer.cost)
        if answer.cache == "hit":
            self.cache_hits.inc()

    def render(self) -> bytes:
        """The text exposition of every metric: this process's, or with ``--workers N`` (when
        ``PROMETHEUS_MULTIPROC_DIR`` is set) every worker's, summed."""
        if not os.environ.get(MULTIPROC_ENV):
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        fleet = CollectorRegistry()
        multiprocess.MultiProcessCollector(fleet)
        fleet.register(self._live)  # breakers live in Redis: any worker reads the fleet's
        return generate_latest(fleet)
