"""Tools the ``[[agent]]`` TOML tests name as "toolbox:function"."""

from __future__ import annotations


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"
