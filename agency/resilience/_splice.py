"""Joining a continuation onto a stream that was cut, without repeating text.

When a stream fails after emitting text, the next provider is asked to continue the answer
(the partial answer is sent as the assistant's turn, followed by `CONTINUE_PROMPT`). Models do
not always obey: some restart from the top, some repeat the last few words. `Splice` holds back
the start of the continuation until it can tell, then drops what the caller already has.
"""

from __future__ import annotations

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

__all__ = ["CONTINUE_PROMPT", "HOLD_CHARS", "MIN_OVERLAP", "Splice", "continuation_messages"]

CONTINUE_PROMPT = (
    "Your previous answer was cut off. Continue it exactly where it stopped, even mid-word. "
    "Do not repeat any of it and do not add a preamble."
)
"""The user turn that asks the next provider to continue a cut answer."""

HOLD_CHARS = 200
"""Most characters of a continuation held back to detect a restart or an overlap."""
MIN_OVERLAP = 4
"""Shortest repeated tail that is dropped; shorter matches are likely legitimate text."""


def continuation_messages(messages: list[BaseMessage], partial: str) -> list[BaseMessage]:
    """``messages`` plus the partial answer and a request to continue it."""
    return [*messages, AIMessage(partial), HumanMessage(CONTINUE_PROMPT)]


class Splice:
    """Feeds continuation text through, minus what repeats ``emitted``."""

    def __init__(self, emitted: str) -> None:
        self.emitted = emitted
        self._held = ""
        self._decided = False
        self._skip: int | None = None  # position in `emitted` while skipping a restart

    def feed(self, text: str) -> str:
        """The part of ``text`` to pass on now (possibly empty while deciding)."""
        if self._decided:
            return self._skip_restart(text) if self._skip is not None else text
        self._held += text
        if len(self._held) < min(len(self.emitted), HOLD_CHARS):
            return ""
        return self._decide()

    def flush(self) -> str:
        """What is still held back, at the end of the continuation."""
        return "" if self._decided else self._decide()

    def _decide(self) -> str:
        self._decided = True
        held, emitted = self._held, self.emitted
        n = min(len(held), len(emitted))
        if n >= MIN_OVERLAP and held[:n] == emitted[:n]:
            # Restarted from the top: drop the part the caller already has.
            if len(held) >= len(emitted):
                return held[len(emitted) :]
            self._skip = len(held)
            return ""
        for size in range(n, MIN_OVERLAP - 1, -1):
            if emitted.endswith(held[:size]):
                return held[size:]
        return held

    def _skip_restart(self, text: str) -> str:
        assert self._skip is not None
        rest = self.emitted[self._skip :]
        same = 0
        for a, b in zip(text, rest, strict=False):
            if a != b:
                break
            same += 1
        self._skip += same
        if same < len(text) or self._skip >= len(self.emitted):
            self._skip = None  # diverged or caught up: pass everything on from here
        return text[same:]
