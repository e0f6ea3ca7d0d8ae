"""The README's capability matrix is generated from the adapters and must match them."""

from __future__ import annotations

from pathlib import Path

from agency import _capabilities

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_matrix_matches_the_adapters() -> None:
    text = README.read_text(encoding="utf-8")
    block = text[
        text.index(_capabilities.BEGIN) + len(_capabilities.BEGIN) : text.index(_capabilities.END)
    ]
    assert block.strip() == _capabilities.capability_matrix(), (
        "README capability matrix is stale: run python -m agency._capabilities README.md"
    )


def test_matrix_reflects_quirks_and_declarations() -> None:
    assert _capabilities.capabilities_of("openai").embeddings
    assert not _capabilities.capabilities_of("groq").embeddings  # preset quirk
    assert not _capabilities.capabilities_of("perplexity").tools  # preset quirk
    assert not _capabilities.capabilities_of("local").image_inputs
