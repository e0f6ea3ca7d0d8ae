"""The local provider's embeddings: wordllama (the default) and MiniLM, in this process.

Contract (the provider's side is `agency.providers.local.LocalAdapter`):

- ``_embed_sync(texts, model, dimensions, provider)`` returns one vector per text:
  ``"wordllama"`` (`DEFAULT_EMBEDDING_MODEL`) gives its own vectors, not rescaled, at any
  Matryoshka size of `WORDLLAMA_DIMENSIONS` (a prefix of the 1024-wide vector); ``"minilm"``
  gives unit-length 384-wide vectors (`agency.providers._minilm`). Another model raises
  `ModelNotFound`; a size the model cannot give raises `ConfigError`.
- `embed_tokens` gives MiniLM's contextual token vectors, for token-level comparisons.
- Weights load from disk only (never downloaded) and stay cached per process.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agency.errors import ConfigError, ModelNotFound
from agency.providers import _minilm

__all__ = ["DEFAULT_EMBEDDING_MODEL", "WORDLLAMA_DIMENSIONS", "embed_tokens"]

DEFAULT_EMBEDDING_MODEL = "wordllama"
"""The embedding model of ``"local"``: wordllama ``l2_supercat``, weights inside its wheel."""
WORDLLAMA_DIMENSIONS = (64, 128, 256, 512, 1024)
"""Matryoshka sizes of wordllama; 64-256 come from the weights in its wheel."""
_WORDLLAMA_SHIPPED_DIM = 256
_INSTALL_LOCAL = "pip install 'agency[local]'"


@contextlib.contextmanager
def _root_logging_kept() -> Iterator[None]:
    """The root logger as it was: wordllama calls ``logging.basicConfig(level=INFO)`` when
    imported, which would configure logging for the whole program (a handler on stderr, every
    library's INFO lines) behind the user's back."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


@functools.lru_cache(maxsize=4)
def _wordllama(dim: int) -> Any:
    """The wordllama model with ``dim``-wide weights, from disk only (never downloaded)."""
    try:
        with _root_logging_kept():
            import wordllama
    except ImportError as exc:
        what = "the local provider's embeddings need wordllama, which is not installed"
        raise ConfigError(what, key="local", fix=_INSTALL_LOCAL) from exc
    package_dir = Path(wordllama.__file__).parent  # holds weights/l2_supercat_256.safetensors
    last: Exception | None = None
    # The wheel's folder first; wider weights can only come from wordllama's own cache.
    for cache_dir in (package_dir, wordllama.WordLlama.DEFAULT_CACHE_DIR):
        try:
            return wordllama.WordLlama.load(cache_dir=cache_dir, dim=dim, disable_download=True)
        except FileNotFoundError as exc:
            last = exc
    raise ConfigError(
        f"wordllama weights for {dim} dimensions are not on disk ({last})",
        key="dimensions",
        fix=f"use dimensions 64, 128 or {_WORDLLAMA_SHIPPED_DIM} (shipped in the wheel), or put "
        f"l2_supercat_{dim}.safetensors in {wordllama.WordLlama.DEFAULT_CACHE_DIR / 'weights'}",
    )


def _embed_sync(
    texts: Sequence[str], model: str, dimensions: int | None, provider: str
) -> list[list[float]]:
    if dimensions is None and model == DEFAULT_EMBEDDING_MODEL and type(texts) is list:
        # The common case, kept lean: a single query is ~70 us of wordllama work, and every
        # microsecond here counts against the 10% overhead budget (benchmarks/local_overhead.py).
        vectors = _wordllama(_WORDLLAMA_SHIPPED_DIM).embed(texts)
        return (vectors if len(texts) == 1 else vectors.astype(np.float64)).tolist()  # type: ignore[no-any-return]
    if model == _minilm.MODEL_NAME:
        return _embed_minilm(texts, dimensions)
    if model != DEFAULT_EMBEDDING_MODEL:
        what = f"unknown local embedding model {model!r}; use 'wordllama' or 'minilm'"
        raise ModelNotFound(what, provider=provider, model=model)
    if dimensions is not None and dimensions not in WORDLLAMA_DIMENSIONS:
        what = f"wordllama cannot produce {dimensions}-dimensional vectors"
        raise ConfigError(what, key="dimensions", fix=f"use one of {WORDLLAMA_DIMENSIONS}")
    size = dimensions or _WORDLLAMA_SHIPPED_DIM
    batch = texts if isinstance(texts, list) else list(texts)  # wordllama takes lists only
    vectors = _wordllama(max(size, _WORDLLAMA_SHIPPED_DIM)).embed(batch)
    if size < vectors.shape[1]:
        vectors = vectors[:, :size]  # Matryoshka: a prefix of the vector is a smaller embedding
    # wordllama's own vectors, not rescaled to unit length: compare them by cosine (as wordllama
    # does). Normalizing here would cost more than the 10% overhead budget of a single query.
    # float64 first: the same values, and tolist() of a 100x256 batch is ~30% faster from it.
    return vectors.astype(np.float64).tolist()  # type: ignore[no-any-return]


def _embed_minilm(texts: Sequence[str], dimensions: int | None) -> list[list[float]]:
    """MiniLM vectors (unit length, 384 wide: not a Matryoshka model, so no shortening)."""
    if dimensions is not None and dimensions != _minilm.DIMENSIONS:
        what = f"minilm produces {_minilm.DIMENSIONS}-dimensional vectors only, not {dimensions}"
        raise ConfigError(what, key="dimensions", fix="leave dimensions unset for local:minilm")
    return _minilm.embed(texts).astype(np.float64).tolist()  # type: ignore[no-any-return]


def embed_tokens(texts: Sequence[str], model: str = _minilm.MODEL_NAME) -> list[tuple[Any, Any]]:
    """Per text, ``(token ids, unit-length token vectors)`` of a local contextual model.

    Only ``"minilm"`` has contextual token vectors; the shapes and the special-token rule
    are those of `agency.providers._minilm.embed_tokens`. Another ``model`` raises
    `ModelNotFound`; a missing weights package raises `ConfigError`.
    """
    if model != _minilm.MODEL_NAME:
        what = f"local model {model!r} has no contextual token vectors; use 'minilm'"
        raise ModelNotFound(what, provider="local", model=model)
    return _minilm.embed_tokens(texts)
