"""Token alignment: how well each word of one text is matched by some word of the other.

Sentence vectors average their tokens, so one word that changes the question ("in Python"
vs "in Java", "cheapest" vs "fastest") moves the average little. Aligning contextual token
vectors (BERTScore's greedy matching) keeps that word visible: it is the token whose best
match on the other side is poor. `token_features` summarises the alignment of two texts as
the numbers `TOKEN_FEATURES` names, for the learned verifier of `memory.verify`.

Contract:

- Inputs are unit-length token vectors (one row per token, special tokens left out, at least
  one row) with their token ids, as `agency.providers.local.embed_tokens` returns them, and
  the inverse
  document frequency of each token id (rare words weigh more than "the").
- Every feature is symmetric in the two texts, so a verifier built on them judges
  ``(query, candidate)`` and ``(candidate, query)`` alike.
- `Idf` is stored compactly in the verifier's JSON: one byte per vocabulary entry,
  zlib-compressed (most entries are the unseen maximum), base64.
"""

from __future__ import annotations

import base64
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["TOKEN_FEATURES", "Idf", "token_features"]

TOKEN_FEATURES = (
    "idf_f1",
    "idf_min_coverage",
    "idf_max_coverage",
    "idf_max_shortfall",
    "idf_total_shortfall",
    "f1",
    "min_coverage",
    "max_coverage",
    "max_shortfall",
    "total_shortfall",
    "worst_match",
    "worst_match_other_side",
    "two_worst_mean",
    "unmatched_tokens",
    "length_gap",
    "log_length",
)
"""Names of `token_features`' outputs, in order. A side's *coverage* is the (idf-)weighted
mean of its tokens' best similarity on the other side; *shortfall* sums the weighted gap
below `MATCHED`; ``worst_match`` is the lowest best-similarity of any token."""

MATCHED = 0.9
"""Best-match similarity from which a token counts as fully matched (no shortfall)."""
UNMATCHED = 0.6
"""Best-match similarity below which a token counts in ``unmatched_tokens``."""
IDF_STEP = 0.05
"""Resolution of the stored idf: byte ``q`` means idf ``1 + q * IDF_STEP`` (1 to 13.75)."""


@dataclass(frozen=True)
class Idf:
    """Inverse document frequency per token id: ``ln((N + 1) / (df + 1)) + 1``."""

    values: Any
    """float32 array indexed by token id; ids past its end get `unseen`."""
    unseen: float
    """The idf of a token never seen in the fitting corpus (its largest possible value)."""

    @classmethod
    def fit(cls, documents: Sequence[Sequence[int]], vocabulary: int) -> Idf:
        """Idf of each token id over ``documents`` (each a text's token ids), at the stored
        resolution (`IDF_STEP`), so a fitted idf and its JSON form weigh alike."""
        import numpy as np

        df = np.zeros(vocabulary, dtype=np.int64)
        for ids in documents:
            df[np.unique(np.asarray(ids, dtype=np.int64))] += 1
        n = len(documents)
        values = np.log((n + 1) / (df + 1)) + 1.0
        return cls(_dequantize(_quantize(values)), math.log(n + 1) + 1.0)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: one byte per token id, zlib-compressed, base64."""
        packed = zlib.compress(_quantize(self.values).tobytes(), 9)
        return {
            "step": IDF_STEP,
            "unseen": round(self.unseen, 4),
            "zlib": base64.b64encode(packed).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Idf:
        """The inverse of `to_dict`; ``ValueError`` when ``data`` is not what it writes."""
        import numpy as np

        if float(data["step"]) != IDF_STEP:
            raise ValueError(f"idf step {data['step']} is not {IDF_STEP}")
        try:
            raw = zlib.decompress(base64.b64decode(data["zlib"], validate=True))
        except zlib.error as exc:  # base64's own errors are ValueErrors already
            raise ValueError(f"the token idf is not zlib data: {exc}") from exc
        return cls(_dequantize(np.frombuffer(raw, dtype=np.uint8)), float(data["unseen"]))

    def weights(self, ids: Any) -> Any:
        """The idf of each id in ``ids``."""
        import numpy as np

        ids = np.asarray(ids, dtype=np.int64)
        known = ids < len(self.values)
        return np.where(known, self.values[np.where(known, ids, 0)], np.float32(self.unseen))


def _quantize(values: Any) -> Any:
    """Idf values as bytes: ``round((idf - 1) / IDF_STEP)``, clipped to 0-255."""
    import numpy as np

    return np.clip(np.rint((np.asarray(values) - 1.0) / IDF_STEP), 0, 255).astype(np.uint8)


def _dequantize(q: Any) -> Any:
    """The float32 idf values that `_quantize` bytes stand for."""
    import numpy as np

    return 1.0 + q.astype(np.float32) * np.float32(IDF_STEP)


def _side(best: Any, weights: Any) -> tuple[float, float]:
    """(coverage, shortfall) of one text whose tokens best-match at ``best``."""
    import numpy as np

    total = float(weights.sum())
    coverage = float((best * weights).sum()) / total if total > 0 else 1.0
    shortfall = float((weights * np.clip(MATCHED - best, 0.0, None)).sum())
    return coverage, shortfall


def _pair(best_a: Any, best_b: Any, wa: Any, wb: Any) -> list[float]:
    """f1, min/max coverage and max/total shortfall of two sides under weights."""
    cov_a, short_a = _side(best_a, wa)
    cov_b, short_b = _side(best_b, wb)
    low, high = min(cov_a, cov_b), max(cov_a, cov_b)
    f1 = 2 * low * high / (low + high) if low + high > 0 else 0.0
    return [f1, low, high, max(short_a, short_b), short_a + short_b]


def token_features(a: tuple[Any, Any], b: tuple[Any, Any], idf: Idf) -> list[float]:
    """`TOKEN_FEATURES` of two texts given as ``(token ids, unit token vectors)``."""
    import numpy as np

    ids_a, va = a
    ids_b, vb = b
    if len(ids_a) == 0 or len(ids_b) == 0:
        raise ValueError("token_features needs at least one token per text")
    sims = np.asarray(va, dtype=np.float32) @ np.asarray(vb, dtype=np.float32).T
    best_a, best_b = sims.max(axis=1), sims.max(axis=0)
    ones_a, ones_b = np.ones(len(best_a), np.float32), np.ones(len(best_b), np.float32)
    worst_a, worst_b = float(best_a.min()), float(best_b.min())
    lowest = np.sort(np.concatenate([best_a, best_b]))
    return [
        *_pair(best_a, best_b, idf.weights(ids_a), idf.weights(ids_b)),
        *_pair(best_a, best_b, ones_a, ones_b),
        min(worst_a, worst_b),
        max(worst_a, worst_b),
        float(lowest[:2].mean()),
        float((best_a < UNMATCHED).sum() + (best_b < UNMATCHED).sum()),
        float(abs(len(best_a) - len(best_b))),
        math.log1p(len(best_a) + len(best_b)),
    ]
