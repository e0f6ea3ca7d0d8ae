"""Packages whose public names load on first use, so importing the package stays light.

A package keeps ``_EXPORTS`` (public name -> defining module) and a literal ``__all__``, and
delegates its module ``__getattr__`` to `export`::

    def __getattr__(name: str) -> Any:
        return export(__name__, _EXPORTS, name)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["export"]


def export(package: str, exports: Mapping[str, str], name: str) -> Any:
    """``name`` from its module in ``exports``, cached in ``package``'s namespace; an unknown
    name raises `AttributeError` as a missing module attribute does."""
    module = exports.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    setattr(sys.modules[package], name, value)
    return value
