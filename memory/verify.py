"""Verifiers: the second opinion a semantic-cache hit needs besides cosine similarity.

Cosine similarity of sentence embeddings cannot tell "convert 10 miles to km" from
"convert 10 km to miles", nor "how" from "why": near misses score as high as paraphrases.
A cache hit therefore needs similarity at or above a threshold *and* a `Verifier`'s approval.
Contract:

- ``approve(query, candidate, similarity) -> (ok, reason)``; ``reason`` says why a pair was
  rejected ("different numbers: 10 vs 12") or, when approved, what vouched for it.
- `RuleVerifier` applies the hard vetoes only. They are always on in every verifier here, and
  reject a pair when the two texts
    * contain different numbers ("10" and "10.0" are the same number; "ten" is 10),
    * disagree on negation (one says not/no/never/n't/without/cannot, the other does not),
    * use opposite words (enable/disable, increase/decrease, buy/sell, before/after, ...),
    * ask different kinds of question (how vs why, when vs where, who vs how, ...), judged
      from the question word that opens each (``"what is the reason"`` counts as why and
      ``"what is the best way to"`` as how; a plain what/which goes with any kind),
    * name different entities: each names one the other does not mention ("Lake Van" vs
      "Lake Victoria"; names are runs of capitalized words not opening a sentence, matched
      by their last word, up to plurals, short suffixes and one typo),
    * put the same entities or words in a different order around an asymmetric connective
      ("10 miles to km" vs "10 km to miles"; "India ... to Pakistan" vs "Pakistan ... to
      India"); a symmetric one ("and", "or", "vs", "between") may join them in any order.
- `LearnedVerifier` adds a logistic regression over lexical overlap `features` and, per
  embedder, the element-wise product of the two texts' unit vectors (wordllama) or the
  alignment of their contextual token vectors (`TOKEN_FEATURES`, MiniLM), fitted
  on labelled question pairs (``benchmarks/fit_verifier.py``); a pair passes when its
  probability of being a duplicate reaches the shipped decision threshold. Its parameters
  live in ``memory/data/verifier_<embedder>.json`` with the cosine threshold calibrated for
  that embedder (`default_threshold`), because cosine scales differ per model.
- `confirm` asks a chat model whether two questions ask for the same answer (YES/NO): the
  semantic cache's optional third opinion (``confirm_with=``); a model that fails says no.
- The rules (in ``memory._rules``) are pure Python; parsed texts and the learned verifier's
  vectors are cached per process (a cache lookup re-checks the same query). numpy and the embedder load on first use.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from agency.memory._rules import FEATURES, features, veto
from agency.memory._token_align import TOKEN_FEATURES, Idf, token_features

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

__all__ = [
    "CALIBRATED_EMBEDDERS",
    "CONFIRM_HUMAN",
    "CONFIRM_SYSTEM",
    "DEFAULT_EMBEDDER",
    "FEATURES",
    "TOKEN_EMBEDDERS",
    "TOKEN_FEATURES",
    "LearnedVerifier",
    "RuleVerifier",
    "Verifier",
    "confirm",
    "default_threshold",
    "features",
    "veto",
]

DEFAULT_EMBEDDER = "wordllama"
"""The embedder whose calibration `LearnedVerifier.load` and `default_threshold` use by default."""
CALIBRATED_EMBEDDERS = ("minilm", "wordllama")
"""Local embedders with a shipped calibration (``memory/data/verifier_<name>.json``)."""
TOKEN_EMBEDDERS = frozenset({"minilm"})
"""Embedders with contextual token vectors, which token-alignment features need."""


# --------------------------------------------------------------------------- verifiers
@runtime_checkable
class Verifier(Protocol):
    """Decides whether a cached entry may answer a query it is similar to."""

    def approve(self, query: str, candidate: str, similarity: float) -> tuple[bool, str]:
        """``(ok, reason)`` for serving ``candidate``'s answer to ``query``."""
        ...


@dataclass(frozen=True)
class RuleVerifier:
    """The hard vetoes alone: approves every pair no rule rejects (see the module docstring)."""

    def approve(self, query: str, candidate: str, similarity: float) -> tuple[bool, str]:
        """``(False, why)`` when a veto applies, else ``(True, "no rule against it")``."""
        reason = veto(query, candidate)
        return (False, reason) if reason else (True, "no rule against it")


@dataclass(frozen=True)
class LearnedVerifier:
    """Hard vetoes, then a logistic regression fitted on labelled question pairs.

    Its inputs are `features` (lexical overlap and the cosine of the two texts' unit vectors
    under its own embedder) plus, as the fitted file says, either or both of:

    - ``vector_weights``: the element-wise product of the two unit vectors (a learned,
      per-dimension weighting of cosine similarity), the wordllama verifier's choice;
    - ``token_weights``: `TOKEN_FEATURES`, how well each token of one text is matched by a
      token of the other (contextual token vectors, idf-weighted), the MiniLM verifier's
      choice: one changed word stays visible there while an averaged vector blurs it.

    It embeds the texts itself, so it judges pairs the same way whatever embeddings the cache
    searches with; ``similarity`` is reported, not used. A caller holding this embedder's
    vectors passes them as ``vectors=`` to skip that embedding (token vectors come from the
    embedder, which keeps those of the texts it encoded last: a query just embedded is free).
    """

    embedder: str
    """The embeddings it was fitted with: ``"wordllama"`` is ``agency.embeddings("local:wordllama")``."""
    weights: tuple[float, ...]
    """One weight per name in `FEATURES`."""
    vector_weights: tuple[float, ...]
    """One weight per embedding dimension, on the product of the two unit vectors; empty when
    the product is not an input."""
    bias: float
    """The intercept."""
    threshold: float
    """Approve when the duplicate probability is at least this."""
    similarity_threshold: float
    """The cosine threshold (of this embedder) calibrated with it: `default_threshold`."""
    token_weights: tuple[float, ...] = ()
    """One weight per name in `TOKEN_FEATURES`; empty when token alignment is not an input."""
    idf: Idf | None = None
    """Token idf for the alignment features; required with ``token_weights``."""

    def __post_init__(self) -> None:
        if len(self.weights) != len(FEATURES):
            raise ValueError(f"{len(self.weights)} weights for {len(FEATURES)} features")
        if self.token_weights:
            if len(self.token_weights) != len(TOKEN_FEATURES):
                raise ValueError(
                    f"{len(self.token_weights)} token weights for {len(TOKEN_FEATURES)} features"
                )
            if self.idf is None:
                raise ValueError("token weights need the token idf")
            if self.embedder not in TOKEN_EMBEDDERS:
                raise ValueError(
                    f"embedder {self.embedder!r} has no token vectors; "
                    f"token features need one of {sorted(TOKEN_EMBEDDERS)}"
                )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LearnedVerifier:
        """The verifier stored as ``data`` (the JSON `benchmarks/fit_verifier.py` writes)."""
        if tuple(data["features"]) != FEATURES:
            raise ValueError(f"verifier features {data['features']} are not {list(FEATURES)}")
        tokens = data.get("token_features")
        if tokens is not None and tuple(tokens) != TOKEN_FEATURES:
            raise ValueError(f"verifier token features {tokens} are not {list(TOKEN_FEATURES)}")
        return cls(
            embedder=str(data["embedder"]),
            weights=tuple(float(w) for w in data["weights"]),
            vector_weights=tuple(float(w) for w in data.get("vector_weights", ())),
            bias=float(data["bias"]),
            threshold=float(data["threshold"]),
            similarity_threshold=float(data["similarity_threshold"]),
            token_weights=tuple(float(w) for w in data.get("token_weights", ())),
            idf=Idf.from_dict(data["token_idf"]) if "token_idf" in data else None,
        )

    @classmethod
    def load(cls, embedder: str = DEFAULT_EMBEDDER) -> LearnedVerifier:
        """The verifier shipped for ``embedder`` (``"wordllama"`` or ``"minilm"``)."""
        return cls.from_dict(_shipped(embedder))

    @functools.cached_property
    def _vector_weights(self) -> Any:
        import numpy as np

        return np.asarray(self.vector_weights, dtype=np.float64)

    def score(
        self,
        query: str,
        candidate: str,
        similarity: float | None = None,
        *,
        vectors: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> float:
        """Probability (0-1) that the two texts ask the same thing; vetoes are not applied."""
        import numpy as np

        if vectors is None:
            u, v = _unit_vector(self.embedder, query), _unit_vector(self.embedder, candidate)
        else:
            u, v = _unit(vectors[0]), _unit(vectors[1])
        if v.shape != u.shape:
            raise ValueError(f"the two vectors differ in size: {u.shape[0]} and {v.shape[0]}")
        if self.vector_weights and u.shape != self._vector_weights.shape:
            raise ValueError(
                f"the {self.embedder} verifier needs {len(self.vector_weights)}-dimensional "
                f"vectors, not {u.shape[0]}"
            )
        product = u * v
        cosine = float(product.sum())
        z = self.bias + float(np.dot(self.weights, features(query, candidate, cosine)))
        if self.vector_weights:
            z += float(product @ self._vector_weights)
        if self.token_weights:
            assert self.idf is not None  # __post_init__ checked
            a, b = _token_vectors(self.embedder, query, candidate)
            z += float(np.dot(self.token_weights, token_features(a, b, self.idf)))
        return 1.0 / (1.0 + math.exp(-max(min(z, _LOGIT_CAP), -_LOGIT_CAP)))

    def approve(
        self,
        query: str,
        candidate: str,
        similarity: float,
        *,
        vectors: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> tuple[bool, str]:
        """Rejected by any veto or by a duplicate probability below `threshold`."""
        reason = veto(query, candidate)
        if reason:
            return False, reason
        p = self.score(query, candidate, similarity, vectors=vectors)
        if p < self.threshold:
            return False, f"duplicate probability {p:.2f} < {self.threshold:.2f}"
        return True, f"duplicate probability {p:.2f} (similarity {similarity:.2f})"


_LOGIT_CAP = 60.0
"""exp() of more than this overflows nothing but says nothing more either."""
_VECTOR_CACHE = 4096
"""Unit vectors kept per process: a cache re-verifies the same query and entries."""


def _unit(vector: Sequence[float]) -> Any:
    import numpy as np

    array = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(array))
    return array / norm if norm > 0 else array


@functools.cache
def _embeddings(embedder: str) -> Any:
    from agency._factory import embeddings

    return embeddings(f"local:{embedder}")


@functools.lru_cache(maxsize=_VECTOR_CACHE)
def _unit_vector(embedder: str, text: str) -> Any:
    vector = _unit(_embeddings(embedder).embed_query(text))
    vector.flags.writeable = False  # shared by every caller of the cache
    return vector


def _token_vectors(embedder: str, *texts: str) -> list[tuple[Any, Any]]:
    """``(ids, unit token vectors)`` per text; the embedder keeps recent texts' tokens, so a
    query the cache just embedded is not encoded again."""
    from agency.providers.local import embed_tokens

    return embed_tokens(list(texts), embedder)


@functools.cache
def _shipped(embedder: str) -> dict[str, Any]:
    name = f"verifier_{embedder}.json"
    try:
        text = resources.files(__package__ or "agency.memory").joinpath("data", name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(
            f"no verifier is calibrated for embedder {embedder!r} (no memory/data/{name}); "
            f"use {DEFAULT_EMBEDDER!r} or 'minilm', or RuleVerifier"
        ) from None
    data: dict[str, Any] = json.loads(text)
    return data


def default_threshold(embedder: str = DEFAULT_EMBEDDER) -> float:
    """The cosine threshold calibrated, with the learned verifier, for ``embedder``."""
    return float(_shipped(embedder)["similarity_threshold"])


CONFIRM_SYSTEM = (
    "You decide whether a cached answer may be reused. Reply with one word: YES if both "
    "questions ask for the same answer, NO otherwise."
)
"""The system prompt `confirm` sends."""
CONFIRM_HUMAN = (
    "Question 1: {query}\nQuestion 2: {candidate}\nDo these two questions ask for the same answer?"
)
"""The question `confirm` asks, with ``{query}`` and ``{candidate}``."""


def confirm(llm: BaseChatModel, query: str, candidate: str) -> bool:
    """Whether ``llm`` answers YES (its first word, any case and punctuation) to "do these
    two questions ask for the same answer?"; any exception it raises counts as no."""
    from langchain_core.messages import HumanMessage, SystemMessage

    messages = [
        SystemMessage(CONFIRM_SYSTEM),
        HumanMessage(CONFIRM_HUMAN.format(query=query, candidate=candidate)),
    ]
    try:
        reply = llm.invoke(messages)
    except Exception:  # a judge that fails has not confirmed anything
        return False
    words = str(reply.text).strip().split()
    return bool(words) and words[0].strip(".,!:;*\"'").upper() == "YES"
