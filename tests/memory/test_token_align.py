"""Token alignment features of the MiniLM verifier, on hand-made token vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agency.memory._token_align import IDF_STEP, MATCHED, TOKEN_FEATURES, Idf, token_features

DIMS = 8


def _tokens(*rows: list[float], ids: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    vectors = np.array(rows, dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.array(ids if ids is not None else range(len(rows))), vectors


def _axis(i: int) -> list[float]:
    return [1.0 if j == i else 0.0 for j in range(DIMS)]


def _named(values: list[float]) -> dict[str, float]:
    assert len(values) == len(TOKEN_FEATURES)
    return dict(zip(TOKEN_FEATURES, values, strict=True))


FLAT = Idf(np.ones(16, dtype=np.float32), 1.0)


def test_identical_texts_align_perfectly() -> None:
    text = _tokens(_axis(0), _axis(1), _axis(2))
    x = _named(token_features(text, text, FLAT))
    assert x["f1"] == x["idf_f1"] == pytest.approx(1.0)
    assert x["min_coverage"] == pytest.approx(1.0) and x["worst_match"] == pytest.approx(1.0)
    assert x["max_shortfall"] == x["total_shortfall"] == 0.0
    assert x["unmatched_tokens"] == 0.0 and x["length_gap"] == 0.0
    assert x["log_length"] == pytest.approx(math.log1p(6))


def test_one_changed_word_shows_as_the_worst_match() -> None:
    # "learn python fast" vs "learn java fast": java (axis 3) matches nothing on the other side.
    a = _tokens(_axis(0), _axis(1), _axis(2))
    b = _tokens(_axis(0), _axis(3), _axis(2))
    x = _named(token_features(a, b, FLAT))
    assert x["worst_match"] == pytest.approx(0.0) == x["worst_match_other_side"]
    assert x["unmatched_tokens"] == 2.0  # python on one side, java on the other
    assert x["min_coverage"] == pytest.approx(2 / 3)
    assert x["max_shortfall"] == pytest.approx(MATCHED)  # one token short by MATCHED
    assert x["total_shortfall"] == pytest.approx(2 * MATCHED)
    # An extra word on one side only: the other side is fully covered.
    c = _tokens(_axis(0), _axis(1), _axis(2), _axis(4))
    y = _named(token_features(a, c, FLAT))
    assert y["max_coverage"] == pytest.approx(1.0) and y["min_coverage"] == pytest.approx(0.75)
    assert y["worst_match_other_side"] == pytest.approx(1.0) and y["length_gap"] == 1.0


def test_rare_words_weigh_more_under_idf() -> None:
    idf = Idf(np.array([1.0, 1.0, 9.0, 1.0, 9.0], dtype=np.float32), 12.0)
    base = _tokens(_axis(0), _axis(1), _axis(2), ids=[0, 1, 2])
    common_changed = _tokens(_axis(0), _axis(5), _axis(2), ids=[0, 3, 2])  # "the" -> "a"
    rare_changed = _tokens(_axis(0), _axis(1), _axis(6), ids=[0, 1, 4])  # "python" -> "java"
    common = _named(token_features(base, common_changed, idf))
    rare = _named(token_features(base, rare_changed, idf))
    # Unweighted, both pairs differ by one token alike; idf tells them apart.
    assert common["f1"] == pytest.approx(rare["f1"])
    assert common["idf_f1"] > rare["idf_f1"]
    assert common["idf_total_shortfall"] < rare["idf_total_shortfall"]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 6),
    st.integers(0, 2**32 - 1),
)
def test_features_are_symmetric(n: int, m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = _tokens(*rng.normal(size=(n, DIMS)).tolist(), ids=rng.integers(0, 20, n).tolist())
    b = _tokens(*rng.normal(size=(m, DIMS)).tolist(), ids=rng.integers(0, 20, m).tolist())
    idf = Idf(rng.uniform(1, 5, 16).astype(np.float32), 6.0)  # ids 16-19 are unseen
    assert token_features(a, b, idf) == pytest.approx(token_features(b, a, idf), abs=1e-6)


def test_a_text_without_tokens_is_refused() -> None:
    empty = (np.array([], dtype=np.int64), np.zeros((0, DIMS), dtype=np.float32))
    with pytest.raises(ValueError, match="at least one token"):
        token_features(empty, _tokens(_axis(0)), FLAT)


# -- idf -------------------------------------------------------------------------------------
def test_idf_counts_documents_and_round_trips_through_json() -> None:
    documents = [[1, 2, 2], [1, 3], [1]]
    idf = Idf.fit(documents, vocabulary=5)
    expected = [math.log(4 / (df + 1)) + 1 for df in (0, 3, 1, 1, 0)]
    assert idf.values.tolist() == pytest.approx(expected, abs=IDF_STEP / 2)
    assert idf.unseen == pytest.approx(math.log(4) + 1)
    again = Idf.from_dict(idf.to_dict())
    assert again.values.tolist() == idf.values.tolist() and again.unseen == pytest.approx(
        idf.unseen, abs=1e-4
    )
    weights = again.weights([1, 4, 99])  # 99 is past the vocabulary: unseen
    assert weights.tolist() == pytest.approx([idf.values[1], idf.values[4], again.unseen])


def test_a_damaged_idf_is_refused() -> None:
    data = Idf.fit([[0]], vocabulary=3).to_dict()
    with pytest.raises(ValueError, match="step"):
        Idf.from_dict(data | {"step": 0.1})
    with pytest.raises(ValueError, match="zlib"):
        Idf.from_dict(data | {"zlib": "aGVsbG8="})  # base64 of "hello"
    with pytest.raises(ValueError):
        Idf.from_dict(data | {"zlib": "not base64!"})
