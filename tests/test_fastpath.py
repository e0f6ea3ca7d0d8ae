"""`invoke` skips LangChain's callback machinery only when nothing observes the call, and the
answer is the same either way."""

from __future__ import annotations

from typing import Any

import pytest
from fakes.openai_server import FakeOpenAI, Reply
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import BaseCallbackHandler, get_usage_metadata_callback
from langchain_core.globals import set_debug, set_llm_cache
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel

import agency
from agency import _fastpath
from agency.chat_models import AgencyChatModel


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[str] = []

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        self.events.append("start")

    def on_llm_end(self, *args: Any, **kwargs: Any) -> None:
        self.events.append("end")


def _model(fake: FakeOpenAI, **params: Any) -> AgencyChatModel:
    model = agency.chat_model(
        "openai-compatible:gpt-4o-mini", base_url=fake.base_url, api_key="sk-test", **params
    )
    assert isinstance(model, AgencyChatModel)
    return model


# Values that differ between any two responses of the same server.
_PER_RESPONSE = {"id", "created", "system_fingerprint", "request_id"}


def _comparable(message: AIMessage) -> dict[str, Any]:
    data = message.model_dump(exclude={"id"})
    for call in data["tool_calls"]:
        call["id"] = "call"
    data["additional_kwargs"].pop("tool_calls", None)
    metadata = data["response_metadata"]
    data["response_metadata"] = {
        k: ("varies" if k in _PER_RESPONSE else v) for k, v in metadata.items()
    }
    return data


def test_quiet_call_is_the_default(openai_fake: FakeOpenAI) -> None:
    assert _fastpath.quiet_call(_model(openai_fake), RunnableConfig(), {})


async def test_fast_and_full_paths_answer_alike(openai_fake: FakeOpenAI) -> None:
    model = _model(openai_fake)
    tools = model.bind_tools(
        [
            {
                "type": "function",
                "function": {"name": "f", "parameters": {"type": "object", "properties": {}}},
            }
        ]
    )
    for runnable in (model, tools):
        reply = Reply(
            content="same", tool_calls=[{"name": "f", "arguments": {"x": 1}}], cached_tokens=2
        )
        openai_fake.script(reply, reply, reply, reply)
        fast = runnable.invoke([HumanMessage("hi")])
        full = runnable.invoke([HumanMessage("hi")], {"callbacks": [Recorder()]})
        afast = await runnable.ainvoke([HumanMessage("hi")])
        afull = await runnable.ainvoke([HumanMessage("hi")], {"callbacks": [Recorder()]})
        assert isinstance(fast, AIMessage) and fast.tool_calls
        assert _comparable(fast) == _comparable(full) == _comparable(afast) == _comparable(afull)
        assert fast.usage_metadata and fast.usage_metadata["input_token_details"]["cache_read"] == 2


def test_callbacks_in_config_or_on_model_see_the_call(openai_fake: FakeOpenAI) -> None:
    in_config = Recorder()
    _model(openai_fake).invoke("hi", {"callbacks": [in_config]})
    on_model = Recorder()
    _model(openai_fake, callbacks=[on_model]).invoke("hi")
    assert in_config.events == on_model.events == ["start", "end"]


def test_usage_callback_context_sees_the_call(openai_fake: FakeOpenAI) -> None:
    with get_usage_metadata_callback() as usage:
        _model(openai_fake).invoke("hi")
    assert usage.usage_metadata["gpt-4o-mini"]["total_tokens"] > 0


def test_global_cache_is_honoured(openai_fake: FakeOpenAI) -> None:
    set_llm_cache(InMemoryCache())
    try:
        model = _model(openai_fake)
        first = model.invoke("cache me")
        second = model.invoke("cache me")
    finally:
        set_llm_cache(None)
    assert first.content == second.content
    assert len([r for r in openai_fake.requests if r.path.endswith("/chat/completions")]) == 1


def test_debug_and_tracing_take_the_full_path(
    openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model(openai_fake)
    set_debug(True)
    try:
        assert not _fastpath.quiet_call(model, RunnableConfig(), {})
    finally:
        set_debug(False)
    monkeypatch.setenv("LANGSMITH_TRACING", "true")
    assert not _fastpath.quiet_call(model, RunnableConfig(), {})
    monkeypatch.setenv("LANGSMITH_TRACING", "false")
    assert _fastpath.quiet_call(model, RunnableConfig(), {})


def test_structured_output_on_the_fast_path(openai_fake: FakeOpenAI) -> None:
    class Answer(BaseModel):
        value: int

    openai_fake.script(Reply(content='{"value": 7}'))
    result = _model(openai_fake).with_structured_output(Answer, method="json_schema").invoke("7?")
    assert result == Answer(value=7)


def test_messages_without_id_get_a_run_id() -> None:
    result = ChatResult(
        generations=[
            ChatGeneration(message=AIMessage("x"), generation_info={"finish_reason": "stop"})
        ]
    )
    message = _fastpath.finish_result(result)
    assert message.id is not None and message.id.startswith("lc_run-")
    assert message.response_metadata["finish_reason"] == "stop"


def test_the_fast_path_is_on_only_for_verified_langchain_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import langchain_core

    monkeypatch.delenv(_fastpath.FASTPATH_ENV, raising=False)
    installed = ".".join(langchain_core.__version__.split(".")[:2])
    assert installed in _fastpath.VERIFIED_LANGCHAIN_CORE  # CI tests what it ships with
    assert _fastpath.enabled("1.8.4") and _fastpath.enabled("1.6.0")
    assert not _fastpath.enabled("1.5.6")  # agency.errors needs 1.6's error classes
    assert not _fastpath.enabled("1.9.0") and not _fastpath.enabled("2.0.0")  # not yet verified
    monkeypatch.setenv(_fastpath.FASTPATH_ENV, "force")
    assert _fastpath.enabled("1.9.0")
    monkeypatch.setenv(_fastpath.FASTPATH_ENV, "off")
    assert not _fastpath.enabled("1.8.4") and _fastpath._load() is None


def test_an_unverified_release_takes_the_full_path(
    openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(_fastpath.FASTPATH_ENV, raising=False)
    monkeypatch.setattr(_fastpath, "VERIFIED_LANGCHAIN_CORE", frozenset({"0.9"}))
    assert _fastpath._load() is None  # what import time decides on such a release
    monkeypatch.setattr(_fastpath, "_HELPERS", None)
    model = _model(openai_fake)
    assert not _fastpath.quiet_call(model, RunnableConfig(), {})
    full = Recorder()
    with monkeypatch.context() as patch:  # the full path is the one that builds run managers
        seen: list[str] = []
        original = AgencyChatModel._generate

        def spy(
            self: AgencyChatModel,
            messages: Any,
            stop: Any = None,
            run_manager: Any = None,
            **kwargs: Any,
        ) -> Any:
            seen.append("run_manager" if run_manager is not None else "direct")
            return original(self, messages, stop=stop, run_manager=run_manager, **kwargs)

        patch.setattr(AgencyChatModel, "_generate", spy)
        assert model.invoke("hi").content
        model.invoke("hi", {"callbacks": [full]})
    assert seen == ["run_manager", "run_manager"] and full.events == ["start", "end"]


def _comparable_chunks(chunks: list[Any]) -> list[dict[str, Any]]:
    out = []
    for chunk in chunks:
        data = _comparable(chunk)
        for call in data["tool_call_chunks"]:
            call["id"] = "call" if call["id"] else None
        data["has_id"] = chunk.id is not None and chunk.id.startswith(("lc_run-", "chatcmpl"))
        out.append(data)
    return out


async def test_fast_and_full_streams_are_alike(openai_fake: FakeOpenAI) -> None:
    model = _model(openai_fake)
    tools = model.bind_tools(
        [
            {
                "type": "function",
                "function": {"name": "f", "parameters": {"type": "object", "properties": {}}},
            }
        ]
    )
    for runnable in (model, tools):
        reply = Reply(content="one two three", tool_calls=[{"name": "f", "arguments": {"x": 1}}])
        openai_fake.script(reply, reply, reply, reply)
        recorder = Recorder()
        fast = list(runnable.stream([HumanMessage("hi")]))
        full = list(runnable.stream([HumanMessage("hi")], {"callbacks": [recorder]}))
        afast = [c async for c in runnable.astream([HumanMessage("hi")])]
        afull = [
            c async for c in runnable.astream([HumanMessage("hi")], {"callbacks": [Recorder()]})
        ]
        assert recorder.events == ["start", "end"]  # the full path ran there
        assert len(fast) > 3 and fast[-1].chunk_position == "last"
        assert (
            _comparable_chunks(fast)
            == _comparable_chunks(full)
            == _comparable_chunks(afast)
            == _comparable_chunks(afull)
        )
        assert len({c.id for c in fast}) == len({c.id for c in full})  # ids assigned alike


def test_an_empty_stream_is_langchains_error() -> None:
    with pytest.raises(ValueError, match="No generation chunks were returned"):
        _fastpath.last_chunk(None, "lc_run--x")


def _chunk(content: Any = "", info: dict[str, Any] | None = None, **fields: Any) -> Any:
    from langchain_core.messages import AIMessageChunk
    from langchain_core.outputs import ChatGenerationChunk

    return ChatGenerationChunk(
        message=AIMessageChunk(content=content, **fields), generation_info=info
    )


_USAGE = {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
_ANSWER = {"content": "hi", "info": {"finish_reason": "stop"}, "usage_metadata": _USAGE,
           "response_metadata": {"model_name": "m"}, "id": "chatcmpl-1", "chunk_position": "last"}  # fmt: skip
_ROUTE = {
    "response_metadata": {"cost": 0.1, "agency": {"provider": "p0"}},
    "chunk_position": "last",
}


@pytest.mark.parametrize(
    "chunks",
    [
        [_ANSWER],  # a non-streamed answer
        [_ANSWER, _ROUTE],  # the fallback chain's: the answer, then its route and cost
        [{**_ANSWER, "info": {}}, _ROUTE],  # no generation info
        [{**_ANSWER, "id": None}, _ROUTE],
        [_ANSWER, {"content": " more"}, _ROUTE],  # text after the first: the general merge
        [
            _ANSWER,
            {"response_metadata": {"model_name": "x"}},
        ],  # a key twice: merged LangChain's way
        [_ANSWER, {**_ROUTE, "usage_metadata": _USAGE}],
        [{**_ANSWER, "content": [{"type": "text", "text": "hi"}]}, _ROUTE],  # content blocks
        [_ANSWER, {**_ROUTE, "info": {"x": 1}}],
    ],
)
def test_merging_chunks_in_hand_answers_as_generate_from_stream(
    chunks: list[dict[str, Any]],
) -> None:
    from langchain_core.language_models.chat_models import generate_from_stream

    from agency.chat_models import merge_chunks

    def build() -> list[Any]:
        return [_chunk(**{**c, "info": c.get("info")}) for c in chunks]

    ours, theirs = merge_chunks(build()), generate_from_stream(iter(build()))
    assert ours == theirs
    assert ours.generations[0].message.model_dump() == theirs.generations[0].message.model_dump()
