"""Fixtures of the gateway tests (see tests/gateway_harness.py)."""

from gateway_harness import start_gateway, upstreams

__all__ = ["start_gateway", "upstreams"]
