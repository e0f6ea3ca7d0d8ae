"""What each step does when LangGraph runs its node (private to `agency.workflows`).

Every decision that could fail is made inside a node, never in a LangGraph router function:
a step's ``when``, a route's choice, a loop's ``until``, a map's list. A node that raises is
re-run on resume; a router that raises is skipped on resume (langgraph #8834). Routers here
only read a value a node already wrote.

A node returns its output under the step's key, its `record` under ``__steps__`` and what it
cost under ``__cost__`` (a sum). Model answers go through the run's call journal first
(`agency.workflows._store`), so a node that runs again after a crash does not pay twice.
"""

from __future__ import annotations

import contextvars
import inspect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from agency.errors import BudgetExceeded, Timeout
from agency.workflows._store import RunStore, call_key
from agency.workflows.step import Step, evaluate, render


class AgencyLike(Protocol):
    """What a workflow asks of its agency (`agency.Agency` is one; the top layer builds it)."""

    def chat_model(self, role: str | None = None, *, models: Any = None, **params: Any) -> Any:
        """A fallback chat model over a role's chain or over ``models``."""

    def worst_case(self, model: Any, messages: Any, max_tokens: int | None) -> float | None:
        """The most one call of ``model`` can cost."""

    def router(self) -> Any:
        """The task router over the configured roles."""

    def cache(self) -> Any:
        """The semantic cache."""

__all__ = ["AgencyLike", "RunContext", "current", "make_node"]

STEPS, COST, MAPPED, ITEMS, LOOPS, ROUTES = (
    "__steps__",
    "__cost__",
    "__mapped__",
    "__items__",
    "__loops__",
    "__routes__",
)
ITEM, INDEX = "__item__", "__index__"


@dataclass
class RunContext:
    """What the nodes of one run share: the agency, the journal, the budget, the event sink."""

    run_id: str
    agency: AgencyLike
    store: RunStore
    budget_usd: float | None
    emit: Callable[[dict[str, Any]], None]
    extra: dict[str, Any] = field(default_factory=dict)


_CURRENT: contextvars.ContextVar[RunContext] = contextvars.ContextVar("agency_workflow_run")


def current() -> RunContext:
    """The run whose node is executing (set by the runner; LangGraph copies the context)."""
    return _CURRENT.get()


def bind(ctx: RunContext) -> contextvars.Token[RunContext]:
    """Make ``ctx`` the current run."""
    return _CURRENT.set(ctx)


def unbind(token: contextvars.Token[RunContext]) -> None:
    """Undo `bind`."""
    _CURRENT.reset(token)


def event(kind: str, step: str | None = None, /, **data: Any) -> dict[str, Any]:
    """One event as the stream and the trace carry it."""
    return {"event": kind, "step": step, "time": time.time(), **data}


def _emit(kind: str, step: str, /, **data: Any) -> None:
    current().emit(event(kind, step, **data))


def make_node(
    step: Step,
    *,
    candidates: Mapping[str, Step],
    chosen_by: str | None,
    loop: str | None,
) -> Any:
    """The async LangGraph node of ``step``.

    ``chosen_by``: the route step whose choice decides whether this step runs; ``candidates``:
    this step's dependents when it is a route step, by name; ``loop``: the ``repeat`` step
    whose loop this step is in (its round tells the calls of one round from the next).
    """

    async def node(state: dict[str, Any]) -> dict[str, Any]:
        label = step.name if INDEX not in state else f"{step.name}[{state[INDEX]}]"
        iteration = int((state.get(LOOPS) or {}).get(loop or step.name, 0))
        if chosen_by is not None and state.get(ROUTES, {}).get(chosen_by) != step.name:
            return _skip(step, label, f"routed to {state.get(ROUTES, {}).get(chosen_by)!r}")
        if step.when is not None and INDEX not in state and not evaluate(step.when, state):
            return _skip(step, label, "its condition is false")
        _emit("step_started", label, kind=step.kind, iteration=iteration)
        started = time.monotonic()
        try:
            update = await _run(step, label, state, candidates, iteration)
        except Exception as exc:
            _emit("step_failed", label, error=type(exc).__name__, message=str(exc)[:500])
            raise
        record = update[STEPS][label]
        record.setdefault("status", "done")
        record["seconds"] = round(time.monotonic() - started, 4)
        record["iteration"] = iteration
        _emit("step_finished", label, **{k: v for k, v in record.items() if k != "status"})
        return update

    node.__name__ = f"step_{step.name}"
    return node


def _skip(step: Step, label: str, why: str) -> dict[str, Any]:
    _emit("step_skipped", label, reason=why)
    return {STEPS: {label: {"status": "skipped", "reason": why}}}


async def _run(
    step: Step,
    label: str,
    state: dict[str, Any],
    candidates: Mapping[str, Step],
    iteration: int,
) -> dict[str, Any]:
    kind = step.kind
    if INDEX in state:  # a map branch: its element reads as {item} / state["item"]
        state = {**state, "item": state[ITEM]}
    if kind == "prompt":
        return await _prompt(step, label, state, iteration)
    if kind == "route":
        return await _route(step, label, state, candidates)
    if kind == "fn":
        assert step.fn is not None
        value = step.fn(dict(state))
        if inspect.isawaitable(value):
            value = await value
        return _done(step, label, state, value, {})
    if kind == "run":
        given = render(step.prompt, state) if step.prompt else dict(state)
        value = await step.run.ainvoke(given)
        record: dict[str, Any] = {}
        if hasattr(value, "cost"):  # an agent's or a team's result: what it cost, who answered
            record = {"cost": float(value.cost or 0.0), "provider": getattr(value, "provider", None)}
            record["agents"] = getattr(value, "agents", None) or [getattr(value, "agent", "")]
        return _done(step, label, state, _plain(value), record)
    if kind == "workflow":
        return await _nested(step, label, state)
    raise AssertionError(f"interrupt steps are built by the graph, not here: {kind}")


def _done(
    step: Step, label: str, state: Mapping[str, Any], value: Any, record: dict[str, Any]
) -> dict[str, Any]:
    """The update for a finished step (a map branch writes its slot, not the key)."""
    cost = float(record.get("cost") or 0.0)
    update: dict[str, Any] = {STEPS: {label: record}, COST: cost}
    if INDEX in state:
        update[MAPPED] = {step.name: {int(state[INDEX]): value}}
    else:
        update[step.key] = value
    if step.until is not None and INDEX not in state:
        loops = dict(state.get(LOOPS) or {})
        view = {**state, step.key: value}
        round_ = iteration_of(state, step)
        again = not evaluate(step.until, view) and round_ + 1 < step.max_iterations
        loops[step.name] = round_ + (1 if again else 0)
        loops[f"{step.name}:again"] = again
        update[LOOPS] = loops
        record["loop"] = "again" if again else "done"
    return update


def iteration_of(state: Mapping[str, Any], step: Step) -> int:
    """How many times ``step``'s loop has gone round."""
    return int((state.get(LOOPS) or {}).get(step.name, 0))


def _plain(value: Any) -> Any:
    """A result LangGraph can checkpoint: messages and agent results become their text,
    models dicts."""
    if isinstance(getattr(value, "text", None), str):
        return value.text
    if hasattr(value, "model_dump"):
        return value.model_dump()
    return value


# -- prompt steps ---------------------------------------------------------------------------
async def _prompt(step: Step, label: str, state: dict[str, Any], iteration: int) -> dict[str, Any]:
    from langchain_core.messages import HumanMessage, SystemMessage

    ctx = current()
    messages: list[Any] = []
    if step.system:
        messages.append(SystemMessage(render(step.system, state)))
    messages.append(HumanMessage(render(step.prompt or "", state)))
    params: dict[str, Any] = dict(step.options)
    if step.max_tokens is not None:
        params["max_tokens"] = step.max_tokens
    if step.max_attempts is not None:
        params["max_attempts"] = step.max_attempts
    if step.cache is not None:
        params["cache"] = ctx.agency.cache() if step.cache else False
    # One model per step and agency, kept across runs: LangChain serializes a model for its
    # callbacks once per instance (~0.5 ms), so a new one per call would pay that every step.
    models = ctx.extra.setdefault("models", {})
    model = models.get(step.name)
    if model is None:
        model = models[step.name] = ctx.agency.chat_model(
            role=step.role, models=step.models, **params
        )
    key = call_key(
        ctx.run_id,
        step.name,
        state.get(INDEX),
        iteration,
        [m.model_dump(include={"type", "content"}) for m in messages],
        model.chain,
        _schema_name(step.structured),
    )
    # The journal has a file of its own (only this process's store writes it), so its reads and
    # its short WAL commits run on the loop without waiting for the checkpointer.
    journalled = ctx.store.recall(ctx.run_id, key)
    if journalled is not None:
        record = dict(journalled["record"], replayed=True)
        _emit("replayed", label, provider=record.get("provider"), cost=record.get("cost"))
        # Its cost was counted when it was paid; the run's sum still needs it once.
        return _done(step, label, state, journalled["value"], record)
    _check_budget(step, label, state, model, messages)
    # timeout_s is LangGraph's TimeoutPolicy on this node (see graph.py).
    value, record = await _call(step, label, model, messages)
    ctx.store.journal(ctx.run_id, key, label, {"value": value, "record": record})
    return _done(step, label, state, value, record)


def _schema_name(schema: Any) -> Any:
    if schema is None or isinstance(schema, dict):
        return schema
    return getattr(schema, "__name__", repr(schema))


def _check_budget(
    step: Step, label: str, state: Mapping[str, Any], model: Any, messages: list[Any]
) -> None:
    """Refuse the call before it is sent when its worst case would break a budget."""
    ctx = current()
    limits = [b for b in (step.budget_usd, ctx.budget_usd) if b is not None]
    if not limits:
        return
    worst = ctx.agency.worst_case(model, messages, step.max_tokens)
    if worst is None:
        return  # an unpriced model cannot be bounded; the agency's own budget still holds
    spent = float(state.get(COST) or 0.0)
    if step.budget_usd is not None and worst > step.budget_usd:
        raise BudgetExceeded(
            f"step {label!r}: its worst case ${worst:.6f} is over the step's budget "
            f"${step.budget_usd:.6f}; nothing was sent",
            scope=f"step:{step.name}",
            needed=worst,
            remaining=step.budget_usd,
        )
    if ctx.budget_usd is not None and spent + worst > ctx.budget_usd:
        raise BudgetExceeded(
            f"step {label!r}: ${spent:.6f} spent plus its worst case ${worst:.6f} is over the "
            f"run's budget ${ctx.budget_usd:.6f}; nothing was sent (resume with a bigger budget)",
            scope="run",
            needed=worst,
            remaining=ctx.budget_usd - spent,
        )


async def _call(
    step: Step, label: str, model: Any, messages: list[Any]
) -> tuple[Any, dict[str, Any]]:
    """Stream the model's answer (token events), or ask for a structured one."""
    if step.structured is not None:
        structured = model.with_structured_output(step.structured, include_raw=True)
        result = await structured.ainvoke(messages)
        if result.get("parsing_error") is not None:
            raise result["parsing_error"]
        return _plain(result["parsed"]), _record(result["raw"].response_metadata, result["raw"])
    if model.cache not in (None, False):
        # LangChain's caches answer invoke, not streams: a cached step is asked whole.
        message = await model.ainvoke(messages)
        return message.text, _record(message.response_metadata, message)
    merged = None
    tokens = current().extra.get("tokens", True)
    async for chunk in model.astream(messages):
        if tokens and chunk.text:
            _emit("token", label, text=chunk.text)
        merged = chunk if merged is None else merged + chunk
    if merged is None:
        raise Timeout(f"step {label!r}: the model sent nothing")
    return merged.text, _record(merged.response_metadata, merged)


def _record(metadata: Mapping[str, Any], message: Any) -> dict[str, Any]:
    route = metadata.get("agency") or {}
    usage = getattr(message, "usage_metadata", None) or {}
    for failure in route.get("failures", []):
        current().emit(event("fallback", None, **failure))
    return {
        "provider": route.get("provider"),
        "model": route.get("model"),
        "attempts": route.get("attempts", 1),
        "failures": route.get("failures", []),
        "cost": float(metadata.get("cost") or 0.0),
        "input_tokens": int(usage.get("input_tokens", 0)),
        "output_tokens": int(usage.get("output_tokens", 0)),
        "cache": metadata.get("cache"),
    }


# -- route steps ----------------------------------------------------------------------------
async def _route(
    step: Step, label: str, state: dict[str, Any], candidates: Mapping[str, Step]
) -> dict[str, Any]:
    from agency.agents.roles import FALLBACK_ROLE

    ctx = current()
    text = render(step.prompt, state) if step.prompt else _first_input(state)
    decision = await ctx.agency.router().aroute(text)
    by_role = {s.role: name for name, s in candidates.items() if s.role}
    chosen = by_role.get(decision.role) or by_role.get(FALLBACK_ROLE) or next(iter(candidates))
    record = {"role": decision.role, "confidence": decision.confidence, "chosen": chosen}
    update = _done(step, label, state, chosen, record)
    update[ROUTES] = {step.name: chosen}
    return update


def _first_input(state: Mapping[str, Any]) -> str:
    for key, value in state.items():
        if not key.startswith("__") and isinstance(value, str):
            return value
    return ""


# -- nested workflows -----------------------------------------------------------------------
async def _nested(step: Step, label: str, state: dict[str, Any]) -> dict[str, Any]:
    ctx = current()
    inner = step.workflow
    inputs = {name: state.get(name) for name in inner.inputs}
    run = await inner.arun(
        inputs,
        run_id=f"{ctx.run_id}/{label}",
        checkpoint=ctx.extra.get("checkpoint"),
        budget_usd=None if ctx.budget_usd is None else ctx.budget_usd - float(state.get(COST) or 0),
        agency=ctx.agency,
    )
    run.raise_for_status()
    record = {"cost": run.cost, "run_id": run.run_id, "provider": "workflow"}
    return _done(step, label, state, run.outputs, record)
