"""When nobody listens, `invoke` can skip LangChain's callback machinery.

`BaseChatModel.invoke` builds a callback manager, run managers, tracing payloads and an
`LLMResult` on every call: about 0.2 ms, most of our per-call overhead (measured in
`benchmarks/overhead.py`). With no handler, tracer, cache or rate limiter attached, all of
that work has no observer, so `AgencyChatModel.invoke` calls `_generate` directly and applies
the same post-processing LangChain would (normalized input messages, the response metadata
merge, a run id for messages without one). The moment anything listens, the full path runs.

`quiet_call` answers "does anything listen?" from the same sources LangChain's
`CallbackManager.configure` reads. It leans on private langchain-core names, so it is on only
for the langchain-core minor versions in `VERIFIED_LANGCHAIN_CORE`, those the equality tests
(``tests/test_fastpath.py``: fast and full paths answer alike) have passed against; on any other
version, or if those names move, it answers False and every call takes the full path.
``scripts/fastpath_newest.sh`` (run by CI) runs the equality tests against the newest
langchain-core release with `FASTPATH_ENV` ``=force``, which says when to extend the list.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel, LanguageModelInput
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
    from langchain_core.outputs import ChatGenerationChunk, ChatResult
    from langchain_core.runnables import RunnableConfig

__all__ = [
    "FASTPATH_ENV",
    "VERIFIED_LANGCHAIN_CORE",
    "QuietInvokeMixin",
    "enabled",
    "finish_chunk",
    "finish_result",
    "last_chunk",
    "normalize_messages",
    "quiet_call",
    "quiet_input",
]

VERIFIED_LANGCHAIN_CORE: frozenset[str] = frozenset({"1.6", "1.7", "1.8"})
"""langchain-core minor versions the equality tests passed against (each run with
``scripts/fastpath_newest.sh VERSION``); the fast path is off on any other."""
FASTPATH_ENV = "AGENCY_FASTPATH"
"""``off`` turns the fast path off; ``force`` turns it on for an unverified langchain-core
(what ``scripts/fastpath_newest.sh`` does to test a new release; not for production)."""

_TRACING_ENV = (
    "LANGCHAIN_TRACING_V2",
    "LANGSMITH_TRACING",
    "LANGSMITH_TRACING_V2",
    "LANGCHAIN_TRACING",
    "LANGCHAIN_HANDLER",
)


def _env_on(name: str) -> bool:
    return os.environ.get(name, "").lower() not in ("", "false", "0")


def enabled(version: str | None = None) -> bool:
    """Whether the fast path may run on langchain-core ``version`` (default: the installed one)."""
    setting = os.environ.get(FASTPATH_ENV, "").strip().lower()
    if setting in ("off", "0", "false"):
        return False
    if setting == "force":
        return True
    if version is None:
        from langchain_core import __version__

        version = str(__version__)
    minor = ".".join(version.split(".")[:2])
    return minor in VERIFIED_LANGCHAIN_CORE


def _load() -> tuple[Callable[..., Any], ...] | None:
    if not enabled():
        return None
    try:
        from langchain_core.globals import get_debug, get_llm_cache
        from langchain_core.language_models._utils import _normalize_messages
        from langchain_core.tracers.context import _configure_hooks, tracing_v2_callback_var
        from langchain_core.utils._gateway import GATEWAY_METADATA_RESPONSE_KEY
        from langchain_core.utils.utils import LC_ID_PREFIX
        from langsmith.run_helpers import get_tracing_context
    except ImportError:  # pragma: no cover - depends on the installed langchain-core
        return None

    def hooks_active() -> bool:
        for var, _inheritable, _cls, env_var in _configure_hooks:
            if var.get() is not None:
                return True
            if env_var and _env_on(env_var):
                return True
        return False

    global _ID_PREFIX, _GATEWAY_KEY
    _ID_PREFIX, _GATEWAY_KEY = LC_ID_PREFIX, GATEWAY_METADATA_RESPONSE_KEY
    return (
        get_debug,
        get_llm_cache,
        _normalize_messages,
        tracing_v2_callback_var.get,
        get_tracing_context,
        hooks_active,
    )


_ID_PREFIX = "lc_run-"
_GATEWAY_KEY = "lc_gateway_metadata"
_HELPERS = _load()


def quiet_call(model: BaseChatModel, config: RunnableConfig, kwargs: dict[str, Any]) -> bool:
    """True when this call has no observer: no callbacks, tracer, debug, cache or limiter."""
    if _HELPERS is None:
        return False
    get_debug, get_llm_cache, _norm, tracer_var, tracing_context, hooks_active = _HELPERS
    if config.get("callbacks") or config.get("run_id") or model.callbacks or model.verbose:
        return False
    if model.rate_limiter is not None or model.output_version == "v1":
        return False
    if model.cache is not None and model.cache is not False:
        return False
    if model.cache is None and get_llm_cache() is not None:
        return False
    if get_debug() or tracer_var() is not None or hooks_active():
        return False
    if any(_env_on(name) for name in _TRACING_ENV):
        return False
    context = tracing_context()
    return not (context.get("enabled") or context.get("parent") is not None)


def normalize_messages(messages: list[BaseMessage]) -> list[BaseMessage]:
    """LangChain's normalization of input messages (v1 content blocks to provider form)."""
    assert _HELPERS is not None
    return list(_HELPERS[2](messages))


def finish_result(result: ChatResult) -> Any:
    """The first message, post-processed exactly as `_generate_with_cache` would."""
    run_id = None
    for idx, generation in enumerate(result.generations):
        message = generation.message
        if message.id is None:
            run_id = run_id or uuid.uuid4()
            message.id = f"{_ID_PREFIX}-{run_id}-{idx}"
        info = generation.generation_info or {}
        if _GATEWAY_KEY in info:
            info = {k: v for k, v in info.items() if k != _GATEWAY_KEY}
        message.response_metadata = {**info, **message.response_metadata}
    if len(result.generations) == 1 and result.llm_output is not None:
        first = result.generations[0].message
        first.response_metadata = {**result.llm_output, **first.response_metadata}
    return result.generations[0].message


def finish_chunk(chunk: ChatGenerationChunk, run_id: str) -> AIMessageChunk:
    """A streamed chunk's message, post-processed exactly as `BaseChatModel.stream` would."""
    message = chunk.message
    if message.id is None:
        message.id = run_id
    info = chunk.generation_info or {}
    if _GATEWAY_KEY in info:
        info = {k: v for k, v in info.items() if k != _GATEWAY_KEY}
    message.response_metadata = {**info, **message.response_metadata}
    return message  # type: ignore[return-value]


def last_chunk(previous: AIMessageChunk | None, run_id: str) -> AIMessageChunk | None:
    """The empty ``chunk_position="last"`` chunk LangChain adds when the stream had none;
    `ValueError` (LangChain's) when the stream yielded nothing."""
    from langchain_core.messages import AIMessageChunk

    if previous is None:
        raise ValueError("No generation chunks were returned")
    if previous.chunk_position:
        return None
    content: Any = "" if isinstance(previous.content, str) else []
    return AIMessageChunk(content=content, chunk_position="last", id=run_id)


def quiet_input(model: Any, input: LanguageModelInput, kwargs: dict[str, Any]) -> list[Any]:
    """The call's messages as the full path would pass them to ``_generate``/``_stream``
    (``kwargs`` lose the tracing-only structured output keys)."""
    kwargs.pop("ls_structured_output_format", None)
    kwargs.pop("structured_output_format", None)
    return normalize_messages(model._convert_input(input).to_messages())


def _stream_run_id() -> str:
    return f"{_ID_PREFIX}-{uuid.uuid4()}"


class QuietInvokeMixin:
    """`invoke`/`ainvoke` and `stream`/`astream` with the fast path; mix in before
    `BaseChatModel`. Streams skip the callback manager and LangChain's final merge of every
    chunk (about 3 us a chunk, `benchmarks/overhead.py`)."""

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        """LangChain's `stream`, with the fast path of `invoke`."""
        from langchain_core.runnables.config import ensure_config

        model: Any = self
        config = ensure_config(config)
        streams = model._should_stream(async_api=False, **{**kwargs, "stream": True})
        if not streams or not quiet_call(model, config, kwargs):
            yield from super().stream(input, config, stop=stop, **kwargs)  # type: ignore[misc]
            return
        messages = quiet_input(model, input, kwargs)
        run_id, message = _stream_run_id(), None
        for chunk in model._stream(messages, stop=stop, **kwargs):
            message = finish_chunk(chunk, run_id)
            yield message
        last = last_chunk(message, run_id)
        if last is not None:
            yield last

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        """The async twin of `stream`, with the same fast path."""
        from langchain_core.runnables.config import ensure_config

        model: Any = self
        config = ensure_config(config)
        streams = model._should_stream(async_api=True, **{**kwargs, "stream": True})
        if not streams or not quiet_call(model, config, kwargs):
            async for piece in super().astream(input, config, stop=stop, **kwargs):  # type: ignore[misc]
                yield piece
            return
        messages = quiet_input(model, input, kwargs)
        run_id, message = _stream_run_id(), None
        async for chunk in model._astream(messages, stop=stop, **kwargs):
            message = finish_chunk(chunk, run_id)
            yield message
        last = last_chunk(message, run_id)
        if last is not None:
            yield last

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        """LangChain's `invoke`; with no callback, tracer, cache or limiter attached it skips
        the callback machinery that would have nothing to report to."""
        from langchain_core.runnables.config import ensure_config

        model: Any = self
        config = ensure_config(config)
        if not quiet_call(model, config, kwargs):
            return super().invoke(input, config, stop=stop, **kwargs)  # type: ignore[misc,no-any-return]
        messages = quiet_input(model, input, kwargs)
        return finish_result(model._generate(messages, stop=stop, **kwargs))  # type: ignore[no-any-return]

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        """The async twin of `invoke`, with the same fast path."""
        from langchain_core.runnables.config import ensure_config

        model: Any = self
        config = ensure_config(config)
        if not quiet_call(model, config, kwargs):
            return await super().ainvoke(input, config, stop=stop, **kwargs)  # type: ignore[misc,no-any-return]
        messages = quiet_input(model, input, kwargs)
        return finish_result(await model._agenerate(messages, stop=stop, **kwargs))  # type: ignore[no-any-return]
