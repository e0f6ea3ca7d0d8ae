"""The script of a fake server: actions queued by a test, taken one per request."""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["ActionQueue"]


class ActionQueue:
    """Thread-safe FIFO of scripted actions; an action with ``times=n`` answers n requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[list[Any]] = []  # [action, requests it still answers]

    def push(self, *actions: Any) -> None:
        """Queue ``actions`` after those already queued."""
        with self._lock:
            self._entries += [[a, getattr(a, "times", 1)] for a in actions]

    def pop(self) -> Any:
        """The action for the next request, or ``None`` when the script is used up."""
        with self._lock:
            if not self._entries:
                return None
            entry = self._entries[0]
            entry[1] -= 1
            if entry[1] <= 0:
                self._entries.pop(0)
            return entry[0]

    def __len__(self) -> int:
        return len(self._entries)
