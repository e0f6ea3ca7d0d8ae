"""The task router: offline routing, custom roles, the LLM path, batches, stats, shipped file.

Every task here was written for these tests (none comes from the evaluation data); they
embed with the real local wordllama model (no network).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from agency.agents import _features
from agency.agents.roles import BUILTIN_ROLES, Role, roles_from_config
from agency.agents.router import RouteDecision, TaskRouter, learned_parameters

ROOT = Path(__file__).resolve().parents[2]
DEV_FILE = ROOT.parent / "shared" / "eval" / "router_eval.dev.jsonl"
MAX_SHIPPED_BYTES = 40_000
"""The shipped parameters must stay small: tens of KB, not a model."""
CV_FLOOR = 0.80
"""Cross-validated macro-F1 on a small dev subsample must clear this (the full file: ~0.94)."""
CV_SAMPLE_PER_ROLE = 40

CLEAR: dict[str, list[str]] = {
    "code": [
        "Write a Python function that reverses a linked list.",
        "Fix the bug in this code:\n```python\nfor i in range(10)\n    print(i)\n```",
        "How do I read a CSV file into a pandas DataFrame and drop empty rows?",
        "Write a JavaScript function that debounces another function.",
        "Write a SQL query to find duplicate email addresses in a users table.",
        'def is_palindrome(s: str) -> bool:\n    """Return True if s reads the same backwards."""',
        "Write a regex that matches US phone numbers.",
    ],
    "math": [
        "Solve the system: 2x + y = 7 and x - y = 2.",
        "A rectangle has a perimeter of 30 cm and a length of 9 cm. What is its area?",
        "If I flip a fair coin 5 times, what is the probability of exactly 3 heads?",
        "Sara buys 4 notebooks at $2.50 each and pays with a $20 bill. How much change does "
        "she get?",
        "Prove that there are infinitely many prime numbers.",
        "Calculate the sum of the first 100 positive integers.",
    ],
    "creative": [
        "Write a poem about the ocean at night.",
        "Write a short story about a dragon who is afraid of fire.",
        "Write song lyrics about a summer road trip.",
        "Write a funny limerick about a forgetful wizard.",
        "Write a bedtime story for a five-year-old about a brave little turtle.",
        "Create a monologue for a villain who believes he is the hero.",
    ],
    "general": [
        "What is the capital of Canada?",
        "Why is the sky blue?",
        "who painted the mona lisa",
        "What are the health benefits of green tea?",
        "What is the difference between weather and climate?",
        "When did the Roman Empire fall?",
    ],
}
"""Clear tasks of each built-in role."""

LEGAL = Role(
    name="legal",
    description="Law: contracts, tenants' and workers' rights, liability and courts.",
    system_prompt="You are a careful legal assistant.",
    examples=(
        "Is a verbal agreement legally binding if nothing was signed?",
        "What must a non-disclosure agreement contain to be enforceable?",
        "My landlord kept my deposit without a reason; what are my rights?",
        "Can my employer fire me for a post on social media?",
        "Draft a clause that limits liability for indirect damages.",
        "What is the difference between a misdemeanor and a felony?",
        "How do I register a trademark for my shop's name?",
        "What is the statute of limitations for breach of contract?",
    ),
)
LEGAL_TASKS = [
    "Is it legal to record a phone call without telling the other person?",
    "Can I break my apartment lease early if I lose my job?",
    "Do I need a lawyer to file for divorce if we both agree?",
    "Can a company use my name in its ads without my permission?",
]


@pytest.fixture(scope="module")
def router() -> TaskRouter:
    return TaskRouter()


# -- fakes -------------------------------------------------------------------------------
class FakeClassifier(GenericFakeChatModel):
    """Answers each call with the next scripted message; binds tools like a real model.

    LangChain's own ``with_structured_output`` runs over it: the tool call it returns is
    parsed into the router's schema, so a wrong role name fails parsing for real.
    """

    calls: int = 0

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kwargs: Any) -> Any:
        return self.bind(tools=tools, tool_choice=tool_choice, **kwargs)

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        self.calls += 1
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kw)


class BrokenClassifier(FakeClassifier):
    """A model whose every call fails."""

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        self.calls += 1
        raise RuntimeError("the classifier is down")


def _says(*roles: str) -> Iterator[AIMessage]:
    return iter(
        AIMessage(content="", tool_calls=[{"name": "RoleChoice", "args": {"role": r}, "id": "1"}])
        for r in roles
    )


def _llm_router(llm: Any, threshold: float, roles: dict[str, Role] | None = None) -> TaskRouter:
    return TaskRouter(roles, llm=llm, llm_threshold=threshold)


# -- offline routing ----------------------------------------------------------------------
@pytest.mark.parametrize(("role", "task"), [(r, t) for r, ts in CLEAR.items() for t in ts])
def test_clear_tasks_go_to_their_role(router: TaskRouter, role: str, task: str) -> None:
    decision = router.route(task)
    assert decision.role == role, decision.reason
    assert decision.path == "offline"
    assert decision.confidence == decision.scores[role] == max(decision.scores.values())
    assert math.isclose(sum(decision.scores.values()), 1.0, rel_tol=1e-9)
    assert decision.confidence > 0.5


def test_reasons_name_signals_and_the_nearest_examples(router: TaskRouter) -> None:
    labels = {label for pair in _features.SIGNAL_LABELS.values() for label in pair}
    for tasks in CLEAR.values():
        for decision in router.route_batch(tasks):
            assert "nearest examples: " in decision.reason
            named = decision.reason.split("; nearest examples: ")[0]
            assert named == "its wording" or all(part in labels for part in named.split(" and ")), (
                decision.reason
            )
    fenced = router.route("```python\nimport os\nprint(os.getcwd())\n```\nWhat does this print?")
    assert fenced.role == "code"
    story = router.route("Write a short story about a lighthouse keeper and a storm.")
    assert story.reason.startswith("a request for a story, poem or script")


def test_an_empty_task_goes_to_the_fallback_role(router: TaskRouter) -> None:
    for task in ("", "   \n"):
        decision = router.route(task)
        assert decision.role == "general"
        assert decision.reason == "empty task: the fallback role"
        assert decision.scores == dict.fromkeys(BUILTIN_ROLES, 0.25)


def test_batch_equals_single_and_aroute_equals_route(router: TaskRouter) -> None:
    tasks = [t for ts in CLEAR.values() for t in ts] + ["", "Hello!"]
    batch = router.route_batch(tasks)
    for task, together in zip(tasks, batch, strict=True):
        alone = router.route(task)
        assert together.role == alone.role
        assert together.reason == alone.reason
        assert together.scores == pytest.approx(alone.scores, abs=1e-6)


async def test_aroute_and_aroute_batch_match_route(router: TaskRouter) -> None:
    tasks = [CLEAR["math"][0], CLEAR["creative"][0], CLEAR["general"][0]]
    for task, together in zip(tasks, await router.aroute_batch(tasks), strict=True):
        alone = await router.aroute(task)
        assert alone.role == together.role == router.route(task).role
        assert alone.scores == pytest.approx(router.route(task).scores, abs=1e-6)


# -- custom roles -------------------------------------------------------------------------
def test_a_custom_role_wins_its_tasks_with_no_code_change() -> None:
    legal_router = TaskRouter({**BUILTIN_ROLES, "legal": LEGAL})
    assert legal_router.learned_roles == ("code", "math", "creative", "general")
    for task in LEGAL_TASKS:
        decision = legal_router.route(task)
        assert decision.role == "legal", (task, decision)
        assert "legal" in decision.reason
    # ...and the built-in roles keep theirs.
    for role, tasks in CLEAR.items():
        assert [d.role for d in legal_router.route_batch(tasks)] == [role] * len(tasks)


def test_a_custom_role_from_toml_takes_part_in_routing() -> None:
    table = {
        "roles": {
            "legal": {
                "description": LEGAL.description,
                "examples": list(LEGAL.examples),
                "system_prompt": "Cite the law.",
            }
        }
    }
    legal_router = TaskRouter(roles_from_config(table))
    assert legal_router.route(LEGAL_TASKS[0]).role == "legal"
    assert legal_router.roles["legal"].system_prompt == "Cite the law."


def test_from_config_reads_roles_and_chains() -> None:
    from agency.config import AgencyConfig

    examples = ", ".join(json.dumps(e) for e in LEGAL.examples)
    config = AgencyConfig.from_toml_str(
        f"""
[llm.routing]
legal = ["openai:gpt-4o"]

[agents.roles.legal]
description = "{LEGAL.description}"
examples = [{examples}]
"""
    )
    legal_router = TaskRouter.from_config(config)
    assert list(legal_router.roles) == [*BUILTIN_ROLES, "legal"]
    assert legal_router.roles["legal"].chain == ("openai:gpt-4o",)
    assert legal_router.route(LEGAL_TASKS[2]).role == "legal"
    assert legal_router.llm is None


def test_custom_roles_alone_route_by_their_examples() -> None:
    cooking = Role(
        "cooking",
        "Recipes and cooking.",
        "You are a chef.",
        (
            "How long should I boil an egg for a runny yolk?",
            "Give me a recipe for banana bread.",
            "What can I use instead of buttermilk in pancakes?",
        ),
    )
    only_custom = TaskRouter({"legal": LEGAL, "cooking": cooking})
    assert only_custom.learned_roles == ()
    assert only_custom.route("How do I make a simple tomato sauce for pasta?").role == "cooking"
    assert only_custom.route(LEGAL_TASKS[1]).role == "legal"
    assert only_custom.route("").role == "legal"  # no "general": the first role


def test_other_embeddings_use_the_signals_only_model() -> None:
    fake = TaskRouter(embeddings=DeterministicFakeEmbedding(size=32))
    assert fake.route(CLEAR["code"][0]).role == "code"
    assert fake.route(CLEAR["creative"][0]).role == "creative"


def test_roles_are_checked() -> None:
    with pytest.raises(ValueError, match="at least one role"):
        TaskRouter({})
    with pytest.raises(ValueError, match="holds the role named"):
        TaskRouter({"law": LEGAL})
    with pytest.raises(ValueError, match="example tasks"):
        TaskRouter({"legal": Role("legal", "Law.", "p", ())})


# -- the LLM path -------------------------------------------------------------------------
def test_the_llm_decides_below_the_threshold_and_not_above(router: TaskRouter) -> None:
    task = "Hello!"
    offline = router.route(task)
    below = FakeClassifier(messages=_says("creative"))
    decision = _llm_router(below, offline.confidence + 0.01).route(task)
    assert below.calls == 1
    assert decision.path == "llm" and decision.role == "creative"
    assert decision.scores == pytest.approx(offline.scores, abs=1e-6)
    assert decision.confidence == pytest.approx(offline.scores["creative"], abs=1e-6)
    assert decision.reason.startswith("LLM chose creative; offline ")

    above = FakeClassifier(messages=_says("creative"))
    decision = _llm_router(above, offline.confidence - 0.01).route(task)
    assert above.calls == 0
    assert decision.path == "offline" and decision.role == offline.role


def test_the_llm_is_offered_every_role_and_its_description() -> None:
    seen: list[Any] = []

    class Recording(FakeClassifier):
        def _generate(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> Any:
            seen.append((messages, kw.get("tools")))
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kw)

    legal_router = _llm_router(
        Recording(messages=_says("legal")), 1.01, {**BUILTIN_ROLES, "legal": LEGAL}
    )
    assert legal_router.route("Is this contract fair to me?").role == "legal"
    messages, tools = seen[0]
    for role in legal_router.roles.values():
        assert f"- {role.name}: {role.description}" in messages[0].content
    assert messages[1].content == "Is this contract fair to me?"
    schema = tools[0].model_json_schema()["properties"]["role"]  # the structured-output schema
    assert schema["enum"] == [*BUILTIN_ROLES, "legal"]


@pytest.mark.parametrize(
    "llm",
    [
        BrokenClassifier(messages=_says()),
        FakeClassifier(messages=_says("astrology")),  # not a role: the schema rejects it
    ],
    ids=["error", "unknown-role"],
)
def test_llm_failures_keep_the_offline_decision(router: TaskRouter, llm: FakeClassifier) -> None:
    task = "Hello!"
    offline = router.route(task)
    routed = _llm_router(llm, 1.01)
    decision = routed.route(task)
    assert llm.calls == 1
    assert decision.path == "offline"
    assert decision.role == offline.role
    assert decision.confidence == pytest.approx(offline.confidence)
    assert "LLM failed" in decision.reason
    assert routed.stats()["llm_errors"] == 1
    assert routed.stats()["paths"] == {"offline": 1, "llm": 0}


async def test_aroute_and_batches_use_the_llm_too() -> None:
    llm = FakeClassifier(messages=_says("math", "code", "creative"))
    routed = _llm_router(llm, 1.01)
    assert (await routed.aroute("Hello!")).role == "math"
    both = routed.route_batch(["Hi there", "Good morning"])
    assert sorted(d.role for d in both) == ["code", "creative"]
    assert all(d.path == "llm" for d in both)
    assert llm.calls == 3
    failing = _llm_router(BrokenClassifier(messages=_says()), 1.01)
    decisions = await failing.aroute_batch(["Hi there", "Good morning"])
    assert all(d.path == "offline" and "LLM failed" in d.reason for d in decisions)
    assert failing.stats()["llm_errors"] == 2


def test_the_default_threshold_is_the_calibrated_one(router: TaskRouter) -> None:
    assert router.llm_threshold == learned_parameters()["llm_threshold"]
    assert 0.3 < router.llm_threshold < 1.0


# -- stats --------------------------------------------------------------------------------
def test_stats_count_roles_paths_and_confidence() -> None:
    counted = TaskRouter()
    decisions = [counted.route(t) for t in CLEAR["math"]] + [counted.route(CLEAR["code"][0])]
    stats = counted.stats()
    assert stats["routed"] == len(decisions)
    assert stats["roles"]["math"]["count"] == len(CLEAR["math"])
    assert stats["roles"]["code"]["count"] == 1
    assert stats["roles"]["creative"] == {"count": 0, "mean_confidence": 0.0}
    math_confidence = [d.confidence for d in decisions if d.role == "math"]
    assert stats["roles"]["math"]["mean_confidence"] == pytest.approx(
        sum(math_confidence) / len(math_confidence)
    )
    assert stats["mean_confidence"] == pytest.approx(
        sum(d.confidence for d in decisions) / len(decisions)
    )
    assert stats["paths"] == {"offline": len(decisions), "llm": 0}
    counted.reset_stats()
    assert counted.stats()["routed"] == 0


def test_stats_are_exact_under_threads() -> None:
    counted = TaskRouter()
    tasks = [t for ts in CLEAR.values() for t in ts] * 4
    with ThreadPoolExecutor(max_workers=8) as pool:
        decisions = list(pool.map(counted.route, tasks))
    stats = counted.stats()
    assert stats["routed"] == len(tasks)
    for role in BUILTIN_ROLES:
        assert stats["roles"][role]["count"] == sum(d.role == role for d in decisions)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=300))
def test_any_text_gets_a_distribution_over_the_roles(router: TaskRouter, text: str) -> None:
    values = _features.signals(text)
    assert len(values) == len(_features.SIGNALS)
    assert all(math.isfinite(v) for v in values)
    decision = router.route(text)
    assert isinstance(decision, RouteDecision)
    assert decision.role in router.roles
    assert math.isclose(sum(decision.scores.values()), 1.0, rel_tol=1e-9)
    assert all(0.0 <= p <= 1.0 for p in decision.scores.values())


# -- the shipped parameters and the benchmark's code --------------------------------------
def test_the_shipped_parameters_load_match_the_code_and_are_small() -> None:
    raw = resources.files("agency.agents").joinpath("data", "router.json").read_bytes()
    assert len(raw) < MAX_SHIPPED_BYTES
    params = json.loads(raw)
    assert params == learned_parameters()
    assert params["signals"] == list(_features.SIGNALS)  # refit after changing the signals
    assert params["embed_chars"] == _features.EMBED_CHARS
    full, signals_only = params["models"]["embedding+signals"], params["models"]["signals"]
    for model, width in (
        (full, 256 + len(_features.SIGNALS)),
        (signals_only, len(_features.SIGNALS)),
    ):
        assert model["classes"] == list(BUILTIN_ROLES)
        assert [len(row) for row in model["weights"]] == [width] * 4
        assert len(model["means"]) == width and len(model["bias"]) == 4
        assert model["temperature"] > 0


def _fit_router() -> ModuleType:
    path = ROOT / "benchmarks" / "fit_router.py"
    spec = importlib.util.spec_from_file_location("fit_router_under_test", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not DEV_FILE.is_file(), reason=f"no evaluation data at {DEV_FILE}")
def test_cross_validated_macro_f1_on_a_dev_subsample_clears_a_floor() -> None:
    import numpy as np

    fit_router = _fit_router()
    texts, y = fit_router.read_dev(DEV_FILE)
    rng = np.random.default_rng(0)
    picked = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), CV_SAMPLE_PER_ROLE, replace=False) for c in range(4)]
    )
    dev = fit_router.inputs([texts[i] for i in picked], y[picked])
    examples = fit_router.builtin_examples()
    folds = _features.stratified_folds(dev.y, 5, fit_router.SEED)
    logits = _features.cross_validated_logits(
        dev.full, dev.y, 4, fit_router.L2, folds, extra=(examples.full, examples.y)
    )
    assert _features.macro_f1(dev.y, logits.argmax(axis=1), 4) > CV_FLOOR
