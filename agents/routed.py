"""`RoutedChatModel`: a LangChain chat model that sends each call to the model of its role.

Each call is routed by its last human message (`agents.router.TaskRouter`); the role's chat
model answers (with an `Agency`, the role's fallback chain from ``[llm.routing]``); the inner call is a run of its own (LLM
run managers have no child managers to nest it under). Swap it in
for any model and LangChain or LangGraph code gets routing with no other change. The answer's
``response_metadata["route"]`` says which role, with what confidence, why, and which path
(offline or LLM) decided.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

from agency._structured import StructuredOutputMixin
from agency.chat_models import arelay, relay
from agency.providers._base import Capabilities

__all__ = ["RoutedChatModel"]

# What a routed model offers to bind: the role's model decides for real (a model that cannot
# call tools fails that call, and a fallback chain skips it).
_ROUTED_CAPABILITIES = Capabilities(
    tools=True, tool_choice=True, parallel_tool_calls=True, json_mode=True, json_schema=True
)


def _last_human_text(messages: list[BaseMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message.text
    return messages[-1].text if messages else ""


class RoutedChatModel(StructuredOutputMixin, BaseChatModel):
    """Routes every call to the chat model of the role its last human message belongs to.

    ``RoutedChatModel(router=TaskRouter(...), models=lambda role: ...)``; usually built by
    `agency.Agency.routed_model`, whose ``models`` is ``Agency.chat_model(role=...)``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    router: Any
    """The `TaskRouter` that picks the role."""
    models: Callable[[str], BaseChatModel]
    """Role name -> its chat model (called once per role, then reused)."""
    role_prompts: bool = True
    """Prepend the role's system prompt when the conversation has no system message."""

    provider: str = "routed"
    """A label for messages."""

    @property
    def _llm_type(self) -> str:
        return "agency-routed"

    @property
    def capabilities(self) -> Capabilities:
        """What can be bound (see the note on `_ROUTED_CAPABILITIES`)."""
        return _ROUTED_CAPABILITIES

    def model_post_init(self, context: Any, /) -> None:
        object.__setattr__(self, "_cache", {})
        object.__setattr__(self, "_lock", threading.Lock())

    # -- routing ----------------------------------------------------------------------
    def _model(self, role: str) -> BaseChatModel:
        cache: dict[str, BaseChatModel] = self._cache  # type: ignore[attr-defined]
        model = cache.get(role)
        if model is None:
            with self._lock:  # type: ignore[attr-defined]
                model = cache.get(role)
                if model is None:
                    model = cache[role] = self.models(role)
        return model

    def _prepare(self, messages: list[BaseMessage], decision: Any) -> list[BaseMessage]:
        if not self.role_prompts or any(isinstance(m, SystemMessage) for m in messages):
            return messages
        role = self.router.roles.get(decision.role)
        prompt = getattr(role, "system_prompt", "")
        return [SystemMessage(prompt), *messages] if prompt else messages

    @staticmethod
    def _route_metadata(decision: Any) -> dict[str, Any]:
        return {
            "role": decision.role,
            "confidence": decision.confidence,
            "reason": decision.reason,
            "path": decision.path,
        }

    # -- calls ------------------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        decision = self.router.route(_last_human_text(messages))
        answer = self._model(decision.role).invoke(
            self._prepare(messages, decision), stop=stop, **kwargs
        )
        return self._result(answer, decision)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        decision = await self.router.aroute(_last_human_text(messages))
        answer = await self._model(decision.role).ainvoke(
            self._prepare(messages, decision), stop=stop, **kwargs
        )
        return self._result(answer, decision)

    def _result(self, answer: BaseMessage, decision: Any) -> ChatResult:
        if not isinstance(answer, AIMessage):
            answer = AIMessage(content=answer.content)
        answer.response_metadata = {
            **answer.response_metadata,
            "route": self._route_metadata(decision),
        }
        return ChatResult(generations=[ChatGeneration(message=answer)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        decision = self.router.route(_last_human_text(messages))
        model = self._model(decision.role)
        chunks = model.stream(self._prepare(messages, decision), stop=stop, **kwargs)
        yield from relay((ChatGenerationChunk(message=c) for c in chunks), run_manager)
        yield self._route_chunk(decision)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        decision = await self.router.aroute(_last_human_text(messages))
        model = self._model(decision.role)
        prepared = self._prepare(messages, decision)
        stream = model.astream(prepared, stop=stop, **kwargs)
        chunks = (ChatGenerationChunk(message=c) async for c in stream)
        async for out in arelay(chunks, run_manager):
            yield out
        yield self._route_chunk(decision)

    def _route_chunk(self, decision: Any) -> ChatGenerationChunk:
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="", response_metadata={"route": self._route_metadata(decision)}
            )
        )
