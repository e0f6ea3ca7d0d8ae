"""`Workflow`: steps and their order, compiled to a LangGraph ``StateGraph``.

    >>> wf = Workflow("write-and-review", inputs=["topic"])
    >>> wf.add(Step("draft", prompt="Write a short poem about {topic}", role="creative"))
    >>> wf.add(Step("review", prompt="Review this poem:\\n{draft}", after=["draft"]))
    >>> run = wf.run({"topic": "the sea"}, run_id="r1", checkpoint="runs.sqlite")
    >>> run.outputs["review"], run.cost, run.steps["review"].provider

`compile` returns LangGraph's ``CompiledStateGraph`` (embed it in any LangGraph program). Each
step is a node; ``after`` lists become edges (a step with several waits for all of them); a
``map`` step is three nodes (its list, one branch per item through ``Send``, the gather); a
``repeat`` step ends in an edge back to its loop's first step. Running, resuming and streaming
live in `agency.workflows.run`.
"""

from __future__ import annotations

import operator
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from agency.workflows._nodes import (
    COST,
    INDEX,
    ITEM,
    ITEMS,
    LOOPS,
    MAPPED,
    ROUTES,
    STEPS,
    make_node,
)
from agency.workflows.step import Step, condition_names, evaluate, placeholders, render

if TYPE_CHECKING:
    from agency.workflows._nodes import AgencyLike
    from agency.workflows.run import Event, Run

__all__ = ["Workflow", "WorkflowError"]


class WorkflowError(ValueError):
    """The workflow is not well formed: ``where`` names the step (``step[2].after[0]``)."""

    def __init__(self, problem: str, *, where: str, fix: str) -> None:
        self.problem, self.where, self.fix = problem, where, fix
        super().__init__(f"[{where}]: {problem}\n  fix: {fix}")


def _merge(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    return {**(left or {}), **(right or {})}


def _merge_mapped(
    left: dict[str, dict[int, Any]] | None, right: dict[str, dict[int, Any] | None] | None
) -> dict[str, dict[int, Any]]:
    out = dict(left or {})
    for step, slots in (right or {}).items():
        out[step] = {} if slots is None else {**out.get(step, {}), **slots}  # None: a new round
    return out


class Workflow:
    """Named steps, run as one graph with one `agency.Agency` (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        agency: AgencyLike | None = None,
        inputs: Sequence[str] = (),
        budget_usd: float | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        self.name = name
        """The workflow's name (runs are listed under it)."""
        self.inputs: list[str] = list(inputs)
        """State keys the caller supplies."""
        self.budget_usd = budget_usd
        """The most one run may cost; a step whose worst case would go over is not sent."""
        self.max_concurrency = max_concurrency
        """The most steps (and map branches) that run at once."""
        self.steps: dict[str, Step] = {}
        """The steps, by name, in the order they were added."""
        self._agency = agency
        self._compiled: Any = None  # the graph without a checkpointer, built once
        self._models: tuple[Any, dict[str, Any]] = (None, {})  # (agency, step -> chat model)

    @property
    def agency(self) -> AgencyLike:
        """The `agency.Agency` whose providers, breakers, limits and budget every step shares
        (default ``Agency()``: the embedded model unless configured otherwise)."""
        if self._agency is None:
            from agency._factory import default_agency

            self._agency = default_agency()
        return self._agency

    def add(self, *steps: Step) -> Workflow:
        """Add steps (in order); returns the workflow, so calls chain."""
        for step in steps:
            if step.name in self.steps:
                raise WorkflowError(
                    f"a step named {step.name!r} already exists",
                    where=f"step[{len(self.steps)}].name",
                    fix="give each step a unique name",
                )
            self.steps[step.name] = step
            self._compiled = None
            self._models = (None, {})
        return self

    def models_for(self, agency: Any) -> dict[str, Any]:
        """The chat models of this workflow's steps on ``agency``, built on first use and
        kept across runs (a different agency, or a changed workflow, starts afresh)."""
        if self._models[0] is not agency:
            self._models = (agency, {})
        return self._models[1]

    # -- checking -----------------------------------------------------------------------
    def validate(self) -> None:
        """Raise `WorkflowError` for unknown steps, cycles, placeholders with no source,
        loops that cannot close, and conditions that do not parse."""
        names = list(self.steps)
        keys = {s.key for s in self.steps.values()}
        for i, step in enumerate(self.steps.values()):
            for j, dep in enumerate(step.after):
                if dep not in self.steps:
                    raise WorkflowError(
                        f"{dep!r} is not a step",
                        where=f"step[{i}].after[{j}]",
                        fix=f"name one of {names}",
                    )
            for field_name in ("when", "until"):
                condition = getattr(step, field_name)
                if isinstance(condition, str):
                    try:
                        condition_names(condition)
                    except ValueError as exc:
                        raise WorkflowError(
                            f"{condition!r}: {exc}",
                            where=f"step[{i}].{field_name}",
                            fix="write a comparison of state keys, e.g. \"'yes' in approve\"",
                        ) from None
            if step.repeat is not None:
                self._check_loop(i, step)
            if isinstance(step.map, str) and step.map not in set(self.inputs) | keys:
                raise WorkflowError(
                    f"map names {step.map!r}, which is neither an input nor a step's output",
                    where=f"step[{i}].map",
                    fix=f"list the items (map = [...]) or name one of {sorted(set(self.inputs) | keys)}",
                )
        self._order()  # raises on a cycle
        for i, step in enumerate(self.steps.values()):
            sources = set(self.inputs) | self._before(step) | self._in_loop_with(step)
            if step.map is not None:
                sources.add("item")
            for template in step.templates():
                for name in placeholders(template):
                    if name not in sources:
                        known = sorted(sources)
                        raise WorkflowError(
                            f"placeholder {{{name}}} has no source: no input or earlier step "
                            "writes it",
                            where=f"step[{i}].prompt",
                            fix=f"add {name!r} to the inputs, add the step that writes it to "
                            f"after, or use one of {known}",
                        )

    def _check_loop(self, i: int, step: Step) -> None:
        target = step.repeat
        if target not in self.steps or step.name not in self._after_closure(target):  # type: ignore[arg-type]
            raise WorkflowError(
                f"repeat names {target!r}, which is not a step this one comes after",
                where=f"step[{i}].repeat",
                fix="name an earlier step on this step's path (after = [...]), e.g. the draft",
            )
        for j, other in enumerate(self.steps.values()):
            if step.name in other.after and list(other.after) != [step.name]:
                raise WorkflowError(
                    f"step {other.name!r} waits for the loop step {step.name!r} and for others",
                    where=f"step[{j}].after",
                    fix=f"let {other.name!r} come after {step.name!r} alone",
                )

    def _before(self, step: Step) -> set[str]:
        """Output keys of every step that finishes before ``step`` starts."""
        seen: set[str] = set()
        todo = list(step.after)
        while todo:
            name = todo.pop()
            if name in seen or name not in self.steps:
                continue
            seen.add(name)
            todo += self.steps[name].after
        return {self.steps[n].key for n in seen}

    def _after_closure(self, name: str) -> set[str]:
        """Every step that (transitively) comes after ``name``."""
        out: set[str] = set()
        frontier = {name}
        while frontier:
            nxt = {s.name for s in self.steps.values() if set(s.after) & frontier} - out
            out |= nxt
            frontier = nxt
        return out

    def _loop_of(self, step: Step) -> str | None:
        """The ``repeat`` step whose loop ``step`` is in (between its target and itself)."""
        for loop in self.steps.values():
            if loop.repeat is None:
                continue
            inside = {loop.repeat, loop.name} | (
                self._after_closure(loop.repeat) & self._before_names(loop)
            )
            if step.name in inside:
                return loop.name
        return None

    def _before_names(self, step: Step) -> set[str]:
        seen: set[str] = set()
        todo = list(step.after)
        while todo:
            name = todo.pop()
            if name not in seen and name in self.steps:
                seen.add(name)
                todo += self.steps[name].after
        return seen

    def _in_loop_with(self, step: Step) -> set[str]:
        """Keys a step in a loop may read from later steps of it (empty on the first round)."""
        loop = self._loop_of(step)
        if loop is None:
            return set()
        return {s.key for s in self.steps.values() if self._loop_of(s) == loop}

    def _order(self) -> list[str]:
        """The steps in dependency order; `WorkflowError` names a cycle."""
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                cycle = " -> ".join([*path[path.index(name) :], name])
                index = list(self.steps).index(name)
                raise WorkflowError(
                    f"the steps wait for each other in a cycle: {cycle}",
                    where=f"step[{index}].after",
                    fix="remove one of these after entries (a loop is written with repeat)",
                )
            state[name] = 1
            for dep in self.steps[name].after:
                visit(dep, [*path, name])
            state[name] = 2
            order.append(name)

        for name in self.steps:
            visit(name, [])
        return order

    # -- compiling ----------------------------------------------------------------------
    def state_schema(self) -> type:
        """The LangGraph state: inputs and outputs (last value wins), and our bookkeeping."""
        fields: dict[str, Any] = {key: Any for key in self.inputs}
        fields.update({s.key: Any for s in self.steps.values()})
        fields.update(
            {
                STEPS: Annotated[dict, _merge],
                COST: Annotated[float, operator.add],
                MAPPED: Annotated[dict, _merge_mapped],
                ITEMS: Annotated[dict, _merge],
                LOOPS: Annotated[dict, _merge],
                ROUTES: Annotated[dict, _merge],
            }
        )
        return TypedDict(f"{_identifier(self.name)}State", fields, total=False)  # type: ignore[operator]

    def compile(self, checkpointer: Any = None) -> Any:
        """The LangGraph ``CompiledStateGraph`` of this workflow (with ``checkpointer``).

        The graph is built once (LangGraph inspects every node while compiling: ~0.7 ms a
        step); each call returns a copy carrying its own checkpointer."""
        if self._compiled is None:
            self._compiled = self._build()
        if checkpointer is None:
            return self._compiled
        return self._compiled.copy({"checkpointer": checkpointer})

    def _build(self) -> Any:
        from langgraph.graph import END, START, StateGraph
        from langgraph.types import RetryPolicy, Send, TimeoutPolicy

        self.validate()
        graph: Any = StateGraph(self.state_schema())
        dependents = {n: [s for s in self.steps.values() if n in s.after] for n in self.steps}
        entry = {n: (f"{n}__items" if s.map is not None else n) for n, s in self.steps.items()}
        exit_ = {n: (f"{n}__gather" if s.map is not None else n) for n, s in self.steps.items()}
        for name, step in self.steps.items():
            route_parent = next(
                (d for d in step.after if self.steps[d].route), None
            )  # the route step that chooses whether this one runs
            options: dict[str, Any] = {}
            if step.timeout_s:
                options["timeout"] = TimeoutPolicy(run_timeout=step.timeout_s)
            if step.max_attempts and step.kind in ("fn", "run"):
                options["retry_policy"] = RetryPolicy(max_attempts=step.max_attempts)
            if step.interrupt:
                node: Any = _interrupt_node(step)
            else:
                node = make_node(
                    step,
                    candidates={d.name: d for d in dependents[name]},
                    chosen_by=route_parent,
                    loop=self._loop_of(step),
                )
            graph.add_node(name, node, **options)
            if step.map is not None:
                graph.add_node(entry[name], _items_node(step))
                graph.add_node(exit_[name], _gather_node(step))
                graph.add_conditional_edges(
                    entry[name], _fan_out(step, Send), [name, exit_[name]]
                )
                graph.add_edge(name, exit_[name])
        for name, step in self.steps.items():
            if not step.after:
                graph.add_edge(START, entry[name])
            elif not any(self.steps[d].repeat for d in step.after):
                starts = [exit_[d] for d in step.after]
                graph.add_edge(starts if len(starts) > 1 else starts[0], entry[name])
            if step.repeat is not None:
                following = [entry[d.name] for d in dependents[name]] or [END]
                graph.add_conditional_edges(
                    exit_[name], _loop_router(step, entry[step.repeat], following)
                )
            elif not dependents[name]:
                graph.add_edge(exit_[name], END)
        return graph.compile(name=self.name)

    # -- running (see agency.workflows.run) ---------------------------------------------
    def run(self, inputs: Mapping[str, Any] | None = None, **options: Any) -> Run:
        """Run to the end (or to an interrupt, a budget stop or a failure); see `Runner`."""
        from agency.workflows.run import Runner

        return Runner(self, **_runner_options(options)).run(inputs or {}, **options)

    async def arun(self, inputs: Mapping[str, Any] | None = None, **options: Any) -> Run:
        """The async twin of `run`."""
        from agency.workflows.run import Runner

        return await Runner(self, **_runner_options(options)).arun(inputs or {}, **options)

    def resume(self, run_id: str, **options: Any) -> Run:
        """Continue run ``run_id`` from its checkpoint; finished steps are not sent again.
        ``answers={"step": value}`` answers its interrupts; ``budget_usd`` raises its budget."""
        from agency.workflows.run import Runner

        return Runner(self, **_runner_options(options)).resume(run_id, **options)

    async def aresume(self, run_id: str, **options: Any) -> Run:
        """The async twin of `resume`."""
        from agency.workflows.run import Runner

        return await Runner(self, **_runner_options(options)).aresume(run_id, **options)

    async def astream(
        self, inputs: Mapping[str, Any] | None = None, **options: Any
    ) -> AsyncIterator[Event]:
        """Run, yielding events as they happen: step started/finished/skipped, token,
        fallback, replayed, interrupted, run finished (with the `Run`)."""
        from agency.workflows.run import Runner

        async for item in Runner(self, **_runner_options(options)).astream(inputs or {}, **options):
            yield item


def _runner_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: options.pop(k) for k in ("checkpoint", "agency") if k in options}


def _identifier(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.title()) or "Workflow"


def _interrupt_node(step: Step) -> Any:
    from langgraph.types import interrupt

    def node(state: dict[str, Any]) -> dict[str, Any]:
        # Nothing but the question comes before interrupt(): this node runs again on resume.
        if step.when is not None and not evaluate(step.when, state):
            return {STEPS: {step.name: {"status": "skipped", "reason": "its condition is false"}}}
        question = render(step.prompt, state) if step.prompt else step.name
        answer = interrupt({"step": step.name, "question": question})
        return {step.key: answer, STEPS: {step.name: {"status": "done", "answered": True}}}

    node.__name__ = f"interrupt_{step.name}"
    return node


def _items_node(step: Step) -> Any:
    def node(state: dict[str, Any]) -> dict[str, Any]:
        # The list is worked out here, in a node, so a bad one fails a node (re-run on
        # resume), never the router after it (langgraph #8834).
        if step.when is not None and not evaluate(step.when, state):
            return {ITEMS: {step.name: []}, STEPS: {step.name: {"status": "skipped"}}}
        items = state.get(step.map) if isinstance(step.map, str) else step.map
        if isinstance(items, str) or not isinstance(items, Iterable):
            raise TypeError(
                f"step {step.name!r}: map needs a list, but {step.map!r} is "
                f"{type(items).__name__}"
            )
        return {ITEMS: {step.name: list(items)}, MAPPED: {step.name: None}}

    node.__name__ = f"items_{step.name}"
    return node


def _fan_out(step: Step, send: Any) -> Any:
    def route(state: dict[str, Any]) -> Any:
        items = (state.get(ITEMS) or {}).get(step.name) or []
        if not items:
            return f"{step.name}__gather"
        return [send(step.name, {**state, ITEM: item, INDEX: i}) for i, item in enumerate(items)]

    return route


def _gather_node(step: Step) -> Any:
    def node(state: dict[str, Any]) -> dict[str, Any]:
        records = state.get(STEPS) or {}
        if (records.get(step.name) or {}).get("status") == "skipped":
            return {}
        slots = (state.get(MAPPED) or {}).get(step.name) or {}
        values = [slots[i] for i in sorted(slots)]
        branches = [records.get(f"{step.name}[{i}]", {}) for i in sorted(slots)]
        record = {
            "status": "done",
            "branches": len(values),
            "cost": sum(float(b.get("cost") or 0) for b in branches),
            "attempts": sum(int(b.get("attempts") or 0) for b in branches),
            "provider": ", ".join(sorted({str(b.get("provider")) for b in branches if b})),
        }
        return {step.key: values, STEPS: {step.name: record}}

    node.__name__ = f"gather_{step.name}"
    return node


def _loop_router(step: Step, again: str, following: list[str]) -> Any:
    def route(state: dict[str, Any]) -> Any:
        # Reads only what the loop step's node decided (its until, evaluated there).
        return again if (state.get(LOOPS) or {}).get(f"{step.name}:again") else following

    return route
