"""`Agent`: a role, instructions, a model, tools, memory and a budget, as a LangChain Runnable.

    >>> from agency.agents import Agent
    >>> coder = Agent("coder", role="code", tools=[run_tests], max_steps=8, budget_usd=0.05)
    >>> result = coder.invoke("Fix the failing test in utils.py")
    >>> result.text, result.cost, result.steps, result.provider, result.tool_calls

The tool loop is LangChain v1's ``create_agent`` (a LangGraph graph: `graph` embeds as a
node or subgraph in any LangGraph program, with checkpointing). What we add costs the loop as
little as it can (``benchmarks/agents_bench.py``: LangChain's middleware machinery alone adds
about 0.6 ms a step, so it is used only for the budget):

- the model is by default the role's chain from the `agency.Agency` (``[llm.routing]``), so
  every model call of the loop falls back across providers and every agent of one agency
  shares breakers, rate limits, budget and stats; ``model=`` takes a ``"provider:model"`` spec,
  an entry name, or any `BaseChatModel`;
- ``max_steps`` bounds the model calls of one run (LangGraph's step limit; the run stops with
  what it had, ``stopped = "max_steps"``);
- a tool that raises answers the model with a bounded error message, never ends the run
  (each tool is wrapped so);
- ``budget_usd`` refuses the next model call whose worst case would go over: the run raises
  `AgentBudgetExceeded` (an `agency.errors.BudgetExceeded`) carrying the partial result;
- ``memory`` (a `VectorMemory`): the ``recall`` most relevant memories are put in the context
  before answering, and the exchange is remembered after (``remember``: ``"answer"``,
  ``"exchange"`` or ``"none"``); agents may share one namespace.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import Runnable, RunnableConfig

from agency._aio import run_sync
from agency.errors import BudgetExceeded

__all__ = ["Agent", "AgentBudgetExceeded", "AgentEvent", "AgentResult"]

MAX_TOOL_ERROR_CHARS = 500
"""A tool's error goes back to the model cut to this many characters."""


@dataclass(frozen=True)
class AgentResult:
    """What one run of an agent produced."""

    text: str
    """The final answer."""
    messages: list[BaseMessage]
    """The whole conversation of the run (input, model turns, tool results)."""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """Every tool call the model made: ``{"name", "args", "id"}``."""
    cost: float = 0.0
    """USD for the run's model calls."""
    usage: dict[str, int] = field(default_factory=dict)
    """Tokens: ``input_tokens``, ``output_tokens``, ``total_tokens``."""
    steps: int = 0
    """Model calls made."""
    provider: str | None = None
    """The provider that gave the final answer."""
    agent: str = ""
    """The agent's name."""
    stopped: str | None = None
    """``"max_steps"`` when the run hit its bound before a final answer; else ``None``."""


@dataclass(frozen=True)
class AgentEvent:
    """One thing an agent did: ``token``, ``tool_call``, ``tool_result``, ``handoff`` or
    ``final`` (whose ``result`` is the `AgentResult`)."""

    kind: Literal["token", "tool_call", "tool_result", "handoff", "final"]
    agent: str
    data: dict[str, Any]
    result: AgentResult | None = None


class AgentBudgetExceeded(BudgetExceeded):
    """The agent's next model call would have gone over ``budget_usd``; nothing was sent.
    ``partial`` is what the run had produced."""

    def __init__(self, message: str, *, needed: float, remaining: float, partial: AgentResult):
        super().__init__(message, scope="agent", needed=needed, remaining=remaining)
        self.partial = partial


class Agent(Runnable[Any, AgentResult]):
    """An agent: see the module docstring. Input: a string, messages, or ``{"messages": [...]}``."""

    name: str
    """Unique among the agents that work together; tools and events carry it."""

    def __init__(
        self,
        name: str,
        role: str = "general",
        instructions: str | None = None,
        model: Any = None,
        tools: Sequence[Any] = (),
        memory: Any = None,
        agency: Any = None,
        max_steps: int = 8,
        budget_usd: float | None = None,
        description: str | None = None,
        recall: int = 3,
        remember: Literal["answer", "exchange", "none"] = "exchange",
    ) -> None:
        self.name = name
        self.role = role
        self.instructions = instructions
        self.tools = list(tools)
        self.memory = memory
        self.max_steps = max_steps
        self.budget_usd = budget_usd
        self.description = description or f"The {name} agent ({role})."
        self.recall = recall
        self.remember = remember
        self._agency = agency
        self._model_spec = model
        self._graph: Any = None

    # -- pieces ------------------------------------------------------------------------
    @property
    def agency(self) -> Any:
        """The agency whose providers, breakers, limits, budget and stats the agent uses."""
        if self._agency is None:
            from agency._factory import default_agency

            self._agency = default_agency()
        return self._agency

    @property
    def model(self) -> Any:
        """The chat model of the loop (see the module docstring)."""
        spec = self._model_spec
        if spec is None:
            routing = getattr(getattr(self.agency, "config", None), "llm", None)
            role = self.role if routing is not None and self.role in routing.routing else None
            return self.agency.chat_model(role=role)
        if isinstance(spec, str):
            return self.agency.chat_model(models=[spec])
        return spec

    def system_prompt(self) -> str:
        """The role's system prompt, then the agent's instructions."""
        from agency.agents.roles import BUILTIN_ROLES

        role = BUILTIN_ROLES.get(self.role)
        parts = [role.system_prompt if role else "", self.instructions or ""]
        return "\n\n".join(p for p in parts if p).strip() or "You are a helpful assistant."

    @property
    def graph(self) -> Any:
        """LangChain's ``create_agent`` graph of this agent (a LangGraph graph)."""
        if self._graph is None:
            from langchain.agents import create_agent

            middleware: list[Any] = []
            if self.budget_usd is not None:
                middleware.append(_BudgetMiddleware(self))
            self._graph = create_agent(
                self.model,
                tools=[_forgiving(tool) for tool in self.tools],
                system_prompt=self.system_prompt(),
                middleware=middleware,
                name=self.name,
            )
        return self._graph

    def as_tool(
        self,
        args_schema: Any = None,
        *,
        name: str | None = None,
        description: str | None = None,
        arg_types: Any = None,
    ) -> Any:
        """This agent as a LangChain tool another agent can call (delegation): it takes one
        string, the task, and answers with the agent's final text."""
        from langchain_core.tools import StructuredTool

        async def ask(task: str) -> str:
            return (await self.ainvoke(task)).text

        def ask_sync(task: str) -> str:
            return self.invoke(task).text

        return StructuredTool.from_function(
            func=ask_sync,
            coroutine=ask,
            name=name or f"ask_{self.name}",
            description=description or self.description,
        )

    # -- running ------------------------------------------------------------------------
    def invoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AgentResult:
        """Run to a final answer (or to ``max_steps``)."""
        return run_sync(self.ainvoke(input, config, **kwargs))

    async def ainvoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AgentResult:
        """The async twin of `invoke`."""
        # No one listens to events here: LangGraph's plain invoke skips the per-token
        # callback handler that streaming installs on every model call (~1 ms a step).
        from langgraph.errors import GraphRecursionError

        messages = await self._prepare(_messages_of(input))
        state: dict[str, Any] = {"messages": messages}
        stopped = None
        try:
            async for state in self.graph.astream(  # noqa: B007 (the last state is the result)
                {"messages": messages}, self._bounded(config), stream_mode="values"
            ):
                pass
        except GraphRecursionError:
            stopped = "max_steps"
        result = replace(self._result(list(state["messages"])), stopped=stopped)
        await self._remember(messages, result)
        return result

    def _bounded(self, config: RunnableConfig | None) -> RunnableConfig:
        # A model step and its tool step are two LangGraph steps; the last answer is one more.
        return {**(config or {}), "recursion_limit": 2 * self.max_steps}

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[AgentResult]:
        """LangChain's ``stream``: the final result (use `astream_agent` for every event)."""
        yield self.invoke(input, config)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[AgentResult]:
        """LangChain's ``astream``: the final result (use `astream_agent` for every event)."""
        yield await self.ainvoke(input, config)

    async def astream_agent(
        self, input: Any, config: RunnableConfig | None = None
    ) -> AsyncIterator[AgentEvent]:
        """Run, yielding events as they happen: tokens, tool calls, tool results, the final
        result (its ``result``)."""
        from langgraph.errors import GraphRecursionError

        messages = await self._prepare(_messages_of(input))
        produced: list[BaseMessage] = []
        stream = self.graph.astream(
            {"messages": messages}, self._bounded(config), stream_mode=["messages", "updates"]
        )
        stopped = None
        try:
            async for mode, payload in stream:
                if mode == "messages":
                    chunk, _meta = payload
                    text = getattr(chunk, "text", "")
                    if text and not isinstance(chunk, ToolMessage):
                        yield AgentEvent("token", self.name, {"text": text})
                    continue
                for update in (payload or {}).values():
                    for message in (
                        (update or {}).get("messages", []) if isinstance(update, dict) else []
                    ):
                        produced.append(message)
                        if isinstance(message, AIMessage):
                            for call in message.tool_calls:
                                yield AgentEvent("tool_call", self.name, dict(call))
                        elif isinstance(message, ToolMessage):
                            yield AgentEvent(
                                "tool_result",
                                self.name,
                                {
                                    "name": message.name,
                                    "content": message.text,
                                    "status": message.status,
                                },
                            )
        except GraphRecursionError:
            stopped = "max_steps"
        result = replace(self._result([*messages, *produced]), stopped=stopped)
        await self._remember(messages, result)
        yield AgentEvent("final", self.name, {"text": result.text, "cost": result.cost}, result)

    # -- memory ---------------------------------------------------------------------------
    async def _prepare(self, messages: list[BaseMessage]) -> list[BaseMessage]:
        if self.memory is None or self.recall <= 0:
            return messages
        query = next((m.text for m in reversed(messages) if isinstance(m, HumanMessage)), "")
        found = await asyncio.to_thread(self.memory.recall, query, k=self.recall) if query else []
        if not found:
            return messages
        notes = "\n".join(f"- {r.text}" for r in found)
        return [SystemMessage(f"Relevant memories:\n{notes}"), *messages]

    async def _remember(self, messages: list[BaseMessage], result: AgentResult) -> None:
        if self.memory is None or self.remember == "none" or not result.text:
            return
        question = next((m.text for m in reversed(messages) if isinstance(m, HumanMessage)), "")
        text = result.text if self.remember == "answer" else f"Q: {question}\nA: {result.text}"
        meta = {"agent": self.name, "role": self.role}
        await asyncio.to_thread(self.memory.remember, text, meta)

    def _result(self, messages: list[BaseMessage]) -> AgentResult:
        return summarize(self.name, messages)


def summarize(agent: str, messages: list[BaseMessage]) -> AgentResult:
    """An `AgentResult` from a run's messages (cost and usage summed over its model turns)."""
    answers = [m for m in messages if isinstance(m, AIMessage)]
    usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    cost = 0.0
    for message in answers:
        for key in usage:
            counts: dict[str, Any] = dict(message.usage_metadata or {})
            usage[key] += int(counts.get(key, 0))
        cost += float(message.response_metadata.get("cost") or 0.0)
    final = answers[-1] if answers else None
    route = final.response_metadata.get("agency") or {} if final is not None else {}
    return AgentResult(
        text=final.text if final is not None else "",
        messages=list(messages),
        tool_calls=[dict(c) for m in answers for c in m.tool_calls],
        cost=cost,
        usage=usage,
        steps=len(answers),
        provider=route.get("provider"),
        agent=agent,
    )


def _messages_of(value: Any) -> list[BaseMessage]:
    if isinstance(value, str):
        return [HumanMessage(value)]
    if isinstance(value, dict) and "messages" in value:
        value = value["messages"]
    if isinstance(value, BaseMessage):
        return [value]
    if isinstance(value, list):
        return [HumanMessage(v) if isinstance(v, str) else v for v in value]
    raise TypeError(f"an agent takes a string, messages or {{'messages': [...]}}, not {value!r}")


def _tool_error(exc: Exception) -> str:
    return f"The tool failed: {type(exc).__name__}: {str(exc)[:MAX_TOOL_ERROR_CHARS]}"


def _forgiving(tool: Any) -> Any:
    """``tool`` as a LangChain tool whose exceptions become its (bounded) answer to the model."""
    from langchain_core.tools import BaseTool, StructuredTool
    from langchain_core.tools import tool as as_tool

    base: BaseTool = tool if isinstance(tool, BaseTool) else as_tool(tool)
    pair = base.response_format == "content_and_artifact"

    def answer(message: Any) -> Any:
        return (message.content, message.artifact) if pair else message.content

    def failed(exc: Exception) -> Any:
        return (_tool_error(exc), None) if pair else _tool_error(exc)

    def call(**kwargs: Any) -> Any:
        try:
            return answer(base.invoke(_call(base, kwargs)))
        except Exception as exc:
            return failed(exc)

    async def acall(**kwargs: Any) -> Any:
        try:
            return answer(await base.ainvoke(_call(base, kwargs)))
        except Exception as exc:
            return failed(exc)

    return StructuredTool(
        name=base.name,
        description=base.description,
        args_schema=base.args_schema or {"type": "object", "properties": {}},
        func=call,
        coroutine=acall,
        return_direct=base.return_direct,
        response_format=base.response_format,
    )


def _call(tool: Any, args: dict[str, Any]) -> dict[str, Any]:
    # A tool call, so the tool answers with a ToolMessage (content and artifact both).
    return {"name": tool.name, "args": args, "id": "agency-call", "type": "tool_call"}


class _BudgetMiddleware(AgentMiddleware):
    """Refuses a model call whose worst case would take the run over the agent's budget."""

    def __init__(self, agent: Agent) -> None:
        super().__init__()
        self.agent = agent

    def wrap_model_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        self._check(request)
        return handler(request)

    async def awrap_model_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        self._check(request)
        return await handler(request)

    def _check(self, request: Any) -> None:
        budget = self.agent.budget_usd
        assert budget is not None
        messages = list(request.messages)
        spent = summarize(self.agent.name, messages).cost
        system = [request.system_message] if request.system_message is not None else []
        worst = _worst_case(self.agent.agency, request.model, [*system, *messages])
        if worst is not None and spent + worst > budget:
            raise AgentBudgetExceeded(
                f"agent {self.agent.name!r}: ${spent:.6f} spent plus the next call's worst case "
                f"${worst:.6f} is over its budget ${budget:.6f}; nothing was sent",
                needed=worst,
                remaining=budget - spent,
                partial=summarize(self.agent.name, messages),
            )


def _worst_case(agency: Any, model: Any, messages: list[BaseMessage]) -> float | None:
    """The most one call of ``model`` can cost (``None`` when it cannot be bounded)."""
    bound = getattr(model, "bound", model)  # a model with tools bound
    if hasattr(agency, "worst_case") and hasattr(bound, "chain"):
        value: float | None = agency.worst_case(bound, messages, None)
        return value
    provider, name = getattr(bound, "provider", None), getattr(bound, "model", None)
    if not isinstance(provider, str) or not isinstance(name, str):
        return None
    from agency.pricing import estimate_cost

    return estimate_cost(
        provider, name, messages, max_tokens=getattr(bound, "max_tokens", None)
    ).worst_case
