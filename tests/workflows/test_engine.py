"""agency.workflows against the fake OpenAI server: fallback inside steps, shared breakers,
budgets, parallel branches, interrupts, resume without paying twice, traces."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fakes.openai_server import Disconnect, Fail, FakeOpenAI, Reply, Stall
from wfhelp import asked, chat_requests, models_asked

from agency.app import Agency
from agency.workflows import Step, Workflow, WorkflowError
from agency.workflows._store import RunStore, read_trace, trace_path


def _review_flow(ag: Agency, **review: Any) -> Workflow:
    wf = Workflow("write-and-review", agency=ag, inputs=["topic"])
    wf.add(Step("draft", prompt="DRAFT a poem about {topic}", max_tokens=30))
    wf.add(
        Step(
            "review",
            prompt="REVIEW this poem: {draft}",
            models=["primary", "backup"],
            after=["draft"],
            max_tokens=30,
            **review,
        )
    )
    return wf


# -- fallback inside the step -------------------------------------------------------------------
@pytest.mark.parametrize(
    "fault",
    [Fail(429), Fail(500), Fail(503), Disconnect(after_events=0), Disconnect(after_events=3)],
    ids=["429", "500", "503", "refused-stream", "cut-mid-stream"],
)
def test_a_failing_primary_is_answered_by_the_next_model_of_the_step(
    openai_fake: FakeOpenAI, make_agency: Callable[..., Agency], checkpoint: str, fault: Any
) -> None:
    ag = make_agency()
    openai_fake.script(Reply("A draft about waves."), fault)
    run = _review_flow(ag).run({"topic": "the sea"}, run_id="r1", checkpoint=checkpoint)

    assert run.status == "completed", run.error
    review = run.steps["review"]
    assert review.provider == "backup" and review.attempts == 2
    assert [f["provider"] for f in review.failures] == ["primary"]
    assert models_asked(openai_fake) == ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o"]
    if isinstance(fault, Disconnect) and fault.after_events:
        # Cut mid-answer: the backup is asked to continue it; the step's output is one answer.
        backup_saw = chat_requests(openai_fake)[-1]["messages"]
        assert "A draft about waves." in str(backup_saw[0]["content"])
        assert "cut off" in str(backup_saw[-1]["content"])
        assert run.outputs["review"].startswith("Hello!")
    else:
        assert "A draft about waves." in run.outputs["review"]  # the backup read the draft


def test_a_timeout_falls_back_too(
    openai_fake: FakeOpenAI, make_agency: Callable[..., Agency], checkpoint: str
) -> None:
    ag = make_agency(primary_url=None)
    ag.config.llm.providers[0].timeout = 0.5  # entries are built at Agency(); set before use
    ag = Agency(ag.config)
    openai_fake.script(Reply("draft"), Stall(3.0))
    run = _review_flow(ag).run({"topic": "x"}, run_id="t", checkpoint=checkpoint)
    ag.close()
    assert run.status == "completed", run.error
    assert run.steps["review"].provider == "backup"
    assert run.steps["review"].failures[0]["error"] == "Timeout"


def test_a_dead_provider_opened_in_one_step_is_skipped_by_later_steps_and_branches(
    openai_fake: FakeOpenAI, make_agency: Callable[..., Agency], checkpoint: str
) -> None:
    # The primary is a closed port: connection refused, every time.
    ag = make_agency(primary_url="http://127.0.0.1:9/v1")
    wf = Workflow("chain", agency=ag)
    for i in range(4):
        wf.add(Step(f"s{i}", prompt=f"STEP {i}", after=[f"s{i - 1}"] if i else []))
    wf.add(Step("fan", prompt="BRANCH {item}", map=["a", "b", "c"], after=["s3"]))
    run = wf.run({}, run_id="b", checkpoint=checkpoint)

    assert run.status == "completed", run.error
    errors = {n: [f["error"] for f in r.failures] for n, r in run.steps.items()}
    # The breaker opens after 3 failures in a row: the first three steps pay one failed
    # attempt each; from then on every step and every parallel branch skips it at no cost.
    assert [n for n, e in errors.items() if "ConnectionFailed" in e] == ["s0", "s1", "s2"]
    for name in ("s3", "fan[0]", "fan[1]", "fan[2]"):
        assert errors[name] == ["CircuitOpen"] and run.steps[name].attempts == 1
        assert run.steps[name].provider == "backup"
    assert ag.health()["primary"]["breaker"]["state"] == "open"


# -- budgets ----------------------------------------------------------------------------------
def test_a_run_stops_before_a_step_whose_worst_case_would_break_its_budget(
    openai_fake: FakeOpenAI, make_agency: Callable[..., Agency], checkpoint: str
) -> None:
    ag = make_agency()
    wf = Workflow("budgeted", agency=ag, inputs=["topic"])
    wf.add(Step("one", prompt="ONE {topic}", models=["primary"], max_tokens=20))
    wf.add(Step("two", prompt="TWO {one}", models=["backup"], max_tokens=4000, after=["one"]))
    run = wf.run({"topic": "t"}, run_id="money", checkpoint=checkpoint, budget_usd=0.001)

    assert run.status == "budget_exceeded"
    assert "nothing was sent" in (run.error or "")
    assert asked(openai_fake, "ONE") == 1 and asked(openai_fake, "TWO") == 0  # refused before
    assert 0 < run.cost < 0.001 and run.steps["one"].status == "done"

    again = wf.resume("money", checkpoint=checkpoint, budget_usd=1.0)
    assert again.status == "completed", again.error
    assert asked(openai_fake, "TWO") == 1 and len(chat_requests(openai_fake)) == 2  # no re-pay
    assert again.cost == pytest.approx(run.cost + again.steps["two"].cost)


def test_a_step_budget_refuses_its_own_call(
    openai_fake: FakeOpenAI, make_agency: Callable[..., Agency], checkpoint: str
) -> None:
    wf = Workflow("step-budget", agency=make_agency())
    wf.add(Step("big", prompt="BIG", models=["backup"], max_tokens=8000, budget_usd=0.0001))
    run = wf.run({}, run_id="s", checkpoint=checkpoint)
    assert run.status == "budget_exceeded" and "step's budget" in (run.error or "")
    assert chat_requests(openai_fake) == []


# -- parallel branches ------------------------------------------------------------------------
@pytest.mark.parametrize(("limit", "expected"), [(None, 4), (2, 2)])
def test_map_branches_run_concurrently_within_max_concurrency(
    checkpoint: str, limit: int | None, expected: int
) -> None:
    active, peak = 0, 0

    async def branch(state: dict[str, Any]) -> str:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        return f"done {state['item']}"

    wf = Workflow("fan", agency=Agency(), max_concurrency=limit)
    wf.add(Step("branches", fn=branch, map=[1, 2, 3, 4]))
    run = wf.run({}, run_id="p", checkpoint=checkpoint)
    assert run.status == "completed"
    assert run.outputs["branches"] == ["done 1", "done 2", "done 3", "done 4"]  # in order
    assert peak == expected


# -- human in the loop ------------------------------------------------------------------------
def test_an_interrupt_pauses_the_run_and_resume_answers_it(
    openai_fake: FakeOpenAI, make_agency: Callable[..., Agency], checkpoint: str
) -> None:
    wf = Workflow("approve", agency=make_agency(), inputs=["topic"])
    wf.add(Step("draft", prompt="DRAFT {topic}"))
    wf.add(Step("approve", interrupt=True, prompt="Publish this? {draft}", after=["draft"]))
    wf.add(Step("publish", prompt="PUBLISH {draft}", after=["approve"], when="'yes' in approve"))
    run = wf.run({"topic": "t"}, run_id="h", checkpoint=checkpoint)
    assert run.status == "interrupted"
    assert run.interrupts[0]["step"] == "approve"
    assert run.interrupts[0]["question"].startswith("Publish this? Hello! You said: DRAFT t")

    with pytest.raises(ValueError, match="waits for an answer to step 'approve'"):
        wf.resume("h", checkpoint=checkpoint)
    done = wf.resume("h", checkpoint=checkpoint, answers={"approve": "yes please"})
    assert done.status == "completed" and done.outputs["approve"] == "yes please"
    assert asked(openai_fake, "PUBLISH") == 1 and len(chat_requests(openai_fake)) == 2


def test_interrupts_in_parallel_branches_are_answered_at_once_and_never_fire_again(
    openai_fake: FakeOpenAI, make_agency: Callable[..., Agency], checkpoint: str
) -> None:
    # langgraph #5952 / #8579: interrupts in parallel nodes; a resolved one must not fire
    # again, and the sibling that called a model must not be paid for twice.
    wf = Workflow("two-questions", agency=make_agency())
    wf.add(Step("legal", interrupt=True, prompt="Legal OK?"))
    wf.add(Step("brand", interrupt=True, prompt="Brand OK?"))
    wf.add(Step("sibling", prompt="SIBLING work"))
    wf.add(Step("ship", fn=lambda s: f"{s['legal']}/{s['brand']}", after=["legal", "brand"]))
    run = wf.run({}, run_id="pi", checkpoint=checkpoint)
    assert run.status == "interrupted", run.error
    assert sorted(i["step"] for i in run.interrupts) == ["brand", "legal"]

    done = wf.resume("pi", checkpoint=checkpoint, answers={"legal": "ok", "brand": "fine"})
    assert done.status == "completed", done.error
    assert done.outputs["ship"] == "ok/fine" and done.interrupts == []
    assert asked(openai_fake, "SIBLING") == 1


# -- resume after failures ---------------------------------------------------------------------
def test_a_step_that_failed_after_its_model_answered_is_not_paid_twice_on_resume(
    openai_fake: FakeOpenAI, make_agency: Callable[..., Agency], checkpoint: str
) -> None:
    # The model answered, then the step failed before LangGraph saved its writes (what a crash
    # between the answer and the checkpoint does, langgraph #8039). The journal has the answer.
    calls = {"n": 0}

    def until(state: dict[str, Any]) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the process died here")
        return True

    wf = Workflow("journal", agency=make_agency())
    wf.add(Step("write", prompt="WRITE once"))
    wf.add(Step("check", prompt="CHECK {write}", after=["write"], repeat="write", until=until))
    first = wf.run({}, run_id="j", checkpoint=checkpoint)
    assert first.status == "failed" and "the process died here" in (first.error or "")
    assert asked(openai_fake, "CHECK") == 1

    done = wf.resume("j", checkpoint=checkpoint)
    assert done.status == "completed", done.error
    assert asked(openai_fake, "CHECK") == 1 and len(chat_requests(openai_fake)) == 2
    assert done.steps["check"].replayed
    assert done.cost == pytest.approx(done.steps["write"].cost + done.steps["check"].cost)


def test_a_condition_that_raised_is_evaluated_again_on_resume(
    make_agency: Callable[..., Agency], checkpoint: str
) -> None:
    # langgraph #8834: resuming after a router raised skipped the routing and "completed".
    # Here conditions are evaluated inside nodes, so the failed node runs again on resume.
    flaky = {"n": 0}

    def when(state: dict[str, Any]) -> bool:
        flaky["n"] += 1
        if flaky["n"] == 1:
            raise ConnectionError("feature flag service down")
        return True

    wf = Workflow("flaky-router", agency=make_agency())
    wf.add(Step("a", fn=lambda s: "A"))
    wf.add(Step("b", fn=lambda s: s["a"] + "B", after=["a"], when=when))
    wf.add(Step("c", fn=lambda s: s["b"] + "C", after=["b"]))
    failed = wf.run({}, run_id="r", checkpoint=checkpoint)
    assert failed.status == "failed" and failed.steps["a"].status == "done"
    done = wf.resume("r", checkpoint=checkpoint)
    assert done.status == "completed" and done.outputs["c"] == "ABC"


def test_completed_is_only_said_when_every_step_ran_or_was_skipped(checkpoint: str) -> None:
    from agency.workflows.run import Runner

    wf = Workflow("guard", agency=Agency())
    wf.add(Step("a", fn=lambda s: 1), Step("b", fn=lambda s: 2, after=["a"]))

    class Snapshot:  # what LangGraph returns after #8834's early "normal" end
        values: ClassVar[dict[str, Any]] = {"a": 1, "__steps__": {"a": {"status": "done"}}}
        interrupts: ClassVar[tuple[Any, ...]] = ()

    class Graph:
        async def aget_state(self, config: Any) -> Snapshot:
            return Snapshot()

    run = asyncio.run(Runner(wf, checkpoint=checkpoint)._outcome(Graph(), {}, "x", None))
    assert run.status == "failed" and "steps never ran: ['b']" in (run.error or "")


# -- shapes: routes, loops, nesting, structured output, conditions -----------------------------
def test_a_route_step_runs_only_the_dependent_whose_role_the_router_picks(
    openai_fake: FakeOpenAI, make_agency: Callable[..., Agency], checkpoint: str
) -> None:
    wf = Workflow("triage", agency=make_agency(), inputs=["question"])
    wf.add(Step("triage", route=True, prompt="{question}"))
    for role in ("code", "math", "creative", "general"):
        wf.add(Step(role, prompt=f"{role.upper()}: {{question}}", role=role, after=["triage"]))
    run = wf.run(
        {"question": "Write a Python function that reverses a linked list"},
        run_id="tr",
        checkpoint=checkpoint,
    )
    assert run.status == "completed", run.error
    assert run.outputs["triage"] == "code"
    assert [
        n for n in ("code", "math", "creative", "general") if run.steps[n].status == "done"
    ] == ["code"]
    assert run.steps["math"].reason == "routed to 'code'"
    assert asked(openai_fake, "CODE:") == 1 and len(chat_requests(openai_fake)) == 1


def test_a_loop_repeats_until_its_condition_holds_and_no_longer_than_max_iterations(
    checkpoint: str,
) -> None:
    rounds: list[int] = []

    def review(state: dict[str, Any]) -> str:
        rounds.append(len(rounds))
        return "APPROVED" if len(rounds) == 3 else "needs work"

    wf = Workflow("loop", agency=Agency())
    wf.add(Step("draft", fn=lambda s: f"draft after {s.get('review')}"))
    wf.add(Step("review", fn=review, after=["draft"], repeat="draft", until="'APPROVED' in review"))
    wf.add(Step("publish", fn=lambda s: "published " + s["draft"], after=["review"]))
    run = wf.run({}, run_id="l", checkpoint=checkpoint)
    assert run.status == "completed" and len(rounds) == 3
    assert run.outputs["publish"] == "published draft after needs work"

    capped = Workflow("capped", agency=Agency())
    capped.add(Step("draft", fn=lambda s: "d"))
    capped.add(
        Step(
            "review",
            fn=lambda s: "no",
            after=["draft"],
            repeat="draft",
            until="False",
            max_iterations=2,
        )
    )
    done = capped.run({}, run_id="c", checkpoint=checkpoint)
    assert done.status == "completed" and done.steps["review"].iteration == 1


def test_structured_output_nested_workflows_and_token_events(
    openai_fake: FakeOpenAI, make_agency: Callable[..., Agency], checkpoint: str
) -> None:
    ag = make_agency()
    inner = Workflow("inner", agency=ag, inputs=["topic"])
    inner.add(Step("title", prompt="TITLE for {topic}"))
    schema = {
        "title": "Verdict",
        "type": "object",
        "properties": {"score": {"type": "integer"}, "why": {"type": "string"}},
        "required": ["score", "why"],
        "additionalProperties": False,
    }
    outer = Workflow("outer", agency=ag, inputs=["topic"])
    outer.add(Step("titled", workflow=inner))
    outer.add(Step("verdict", prompt="JUDGE {titled}", structured=schema, after=["titled"]))

    async def collect() -> list[Any]:
        return [
            ev async for ev in outer.astream({"topic": "tides"}, run_id="n", checkpoint=checkpoint)
        ]

    events = asyncio.run(collect())
    run = events[-1].run
    assert run is not None and run.status == "completed", run and run.error
    assert run.outputs["titled"]["title"].startswith("Hello! You said: TITLE for tides")
    assert set(run.outputs["verdict"]) == {"score", "why"}
    assert isinstance(run.outputs["verdict"]["score"], int)
    kinds = [e.kind for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert "token" not in kinds or all(e.step for e in events if e.kind == "token")
    assert RunStore(checkpoint).run("n/titled") is not None  # the nested run is its own run


def test_tokens_stream_as_events(
    openai_fake: FakeOpenAI, make_agency: Callable[..., Agency], checkpoint: str
) -> None:
    wf = Workflow("tokens", agency=make_agency())
    wf.add(Step("say", prompt="SAY something long enough to stream in pieces"))

    async def collect() -> list[Any]:
        return [ev async for ev in wf.astream({}, run_id="tok", checkpoint=checkpoint)]

    events = asyncio.run(collect())
    tokens = [e.data["text"] for e in events if e.kind == "token"]
    assert len(tokens) > 1 and "".join(tokens) == events[-1].run.outputs["say"]


# -- traces and spans ---------------------------------------------------------------------------
def test_each_run_writes_its_events_next_to_the_checkpoint(
    openai_fake: FakeOpenAI, make_agency: Callable[..., Agency], checkpoint: str
) -> None:
    openai_fake.script(Reply("draft"), Fail(429))
    _review_flow(make_agency()).run({"topic": "t"}, run_id="tr1", checkpoint=checkpoint)
    events = read_trace(trace_path(checkpoint, "tr1"))
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert "token" not in kinds and "fallback" in kinds
    finished = [e for e in events if e["event"] == "step_finished" and e["step"] == "review"]
    assert finished[0]["provider"] == "backup" and finished[0]["attempts"] == 2
    assert json.loads(Path(trace_path(checkpoint, "tr1")).read_text().splitlines()[0])
    rows = RunStore(checkpoint).runs()
    assert [(r.run_id, r.status) for r in rows] == [("tr1", "completed")]


def test_steps_are_opentelemetry_spans_when_it_is_installed(
    make_agency: Callable[..., Agency], checkpoint: str
) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    wf = Workflow("spans", agency=make_agency())
    wf.add(Step("a", prompt="A"), Step("b", fn=lambda s: "b", after=["a"]))
    wf.run({}, run_id="sp", checkpoint=checkpoint)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert {"workflow spans", "step a", "step b"} <= set(spans)
    assert spans["step a"].attributes["agency.provider"] == "primary"
    assert spans["step a"].parent.span_id == spans["workflow spans"].context.span_id


# -- the graph is LangGraph's ------------------------------------------------------------------
def test_compile_returns_a_langgraph_graph_that_embeds_in_another(checkpoint: str) -> None:
    from langgraph.graph import START, StateGraph
    from langgraph.graph.state import CompiledStateGraph

    wf = Workflow("inner", agency=Agency())
    wf.add(Step("x", fn=lambda s: "x"), Step("y", fn=lambda s: s["x"] + "y", after=["x"]))
    compiled = wf.compile()
    assert isinstance(compiled, CompiledStateGraph)
    outer = StateGraph(dict)
    outer.add_node("inner", compiled)
    outer.add_edge(START, "inner")
    from agency.workflows._nodes import RunContext, bind, unbind

    token = bind(RunContext("emb", Agency(), RunStore(checkpoint), None, lambda ev: None))
    try:
        result = asyncio.run(outer.compile().ainvoke({}))
    finally:
        unbind(token)
    assert result["y"] == "xy"


@pytest.mark.parametrize(
    ("steps", "where", "words"),
    [
        ([Step("a", fn=len, after=["nope"])], "step[0].after[0]", "'nope' is not a step"),
        (
            [Step("a", fn=len, after=["b"]), Step("b", fn=len, after=["a"])],
            "step[0].after",
            "cycle: a -> b -> a",
        ),
        ([Step("a", prompt="About {missing}")], "step[0].prompt", "{missing} has no source"),
        ([Step("a", fn=len, when="__import__('os')")], "step[0].when", "only len"),
        ([Step("a", fn=len, map="nowhere")], "step[0].map", "neither an input"),
    ],
)
def test_malformed_workflows_name_the_step_and_the_fix(
    steps: list[Step], where: str, words: str
) -> None:
    wf = Workflow("bad", agency=Agency()).add(*steps)
    with pytest.raises(WorkflowError) as info:
        wf.validate()
    assert info.value.where == where and words in info.value.problem and info.value.fix


def test_the_facade_builds_workflows_on_its_own_providers(
    openai_fake: FakeOpenAI, make_agency: Callable[..., Agency], checkpoint: str
) -> None:
    ag = make_agency()
    wf = ag.workflow("facade", inputs=["topic"])
    wf.add(Step("say", prompt="SAY {topic}"))
    run = wf.run({"topic": "hi"}, run_id="f", checkpoint=checkpoint)
    assert run.status == "completed" and run.steps["say"].provider == "primary"
    assert ag.stats().snapshot()["providers"]["primary"]["requests"] == 1  # shared stats


def test_function_steps_retry_and_time_out_with_langgraphs_policies(checkpoint: str) -> None:
    tries = {"n": 0}

    def flaky(state: dict[str, Any]) -> str:
        tries["n"] += 1
        if tries["n"] < 3:
            raise ConnectionError("transient")
        return "ok"

    async def slow(state: dict[str, Any]) -> str:
        await asyncio.sleep(5)
        return "late"

    wf = Workflow("policies", agency=Agency())
    wf.add(Step("flaky", fn=flaky, max_attempts=3))
    run = wf.run({}, run_id="retry", checkpoint=checkpoint)
    assert run.status == "completed" and tries["n"] == 3

    timed = Workflow("timed", agency=Agency())
    timed.add(Step("slow", fn=slow, timeout_s=0.2))
    out = timed.run({}, run_id="slow", checkpoint=checkpoint)
    assert out.status == "failed" and "slow" not in out.outputs


def test_a_cached_step_is_answered_by_the_semantic_cache_the_second_time(
    openai_fake: FakeOpenAI, make_agency: Callable[..., Agency], checkpoint: str
) -> None:
    pytest.importorskip("chromadb", reason="the semantic cache is the memory extra")
    ag = make_agency('\n[llm.cache]\nenabled = true\nbackend = "memory"\n')
    wf = Workflow("cached", agency=ag)
    wf.add(Step("ask", prompt="CACHED question about tides", cache=True, models=["primary"]))
    first = wf.run({}, run_id="c1", checkpoint=checkpoint)
    second = wf.run({}, run_id="c2", checkpoint=checkpoint)
    assert first.status == second.status == "completed"
    assert asked(openai_fake, "CACHED") == 1
    assert second.outputs["ask"] == first.outputs["ask"]
    assert second.steps["ask"].cost == 0.0


def test_a_step_runs_an_agent_and_records_its_cost(
    openai_fake: FakeOpenAI, make_agency: Callable[..., Agency], checkpoint: str
) -> None:
    from agency.agents import Agent

    ag = make_agency()

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"Sunny in {city}"

    openai_fake.script(
        Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}]),
        Reply("Sunny in Oslo today."),
    )
    wf = Workflow("with-agent", agency=ag, inputs=["city"])
    wf.add(
        Step(
            "forecast",
            run=Agent("forecaster", agency=ag, tools=[get_weather]),
            prompt="Weather in {city}?",
        )
    )
    run = wf.run({"city": "Oslo"}, run_id="ag", checkpoint=checkpoint)
    assert run.status == "completed" and run.outputs["forecast"] == "Sunny in Oslo today."
    assert run.steps["forecast"].cost > 0 and run.steps["forecast"].provider == "primary"
    assert chat_requests(openai_fake)[0]["messages"][-1]["content"] == "Weather in Oslo?"
