"""The Voyage AI embeddings adapter against the fake Voyage server (tests/fakes/voyage_server.py),
with the official ``voyageai`` client as the oracle for the vectors, plus LangChain's standard
embeddings suites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import voyageai
from fakes.voyage_server import Disconnect, Fail, FakeVoyage, Malformed, Stall
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

import agency
from agency import errors
from agency.embedding_models import AgencyEmbeddings
from agency.providers import voyage as wire
from agency.providers._wire import openai_embeddings
from agency.providers.voyage import VoyageAdapter

KEY = "pa-test-key"
_BASE: dict[str, str] = {}


@pytest.fixture(scope="module")
def voyage_server() -> Iterator[FakeVoyage]:
    with FakeVoyage(api_key=KEY).running() as fake:
        yield fake


@pytest.fixture(autouse=True)
def fake(voyage_server: FakeVoyage) -> Iterator[FakeVoyage]:
    voyage_server.reset()
    _BASE["url"] = voyage_server.base_url  # type: ignore[assignment]
    yield voyage_server
    assert voyage_server.spec_violations == [], voyage_server.spec_violations
    assert voyage_server.internal_errors == [], voyage_server.internal_errors


def _emb(fake: FakeVoyage, **kw: object) -> AgencyEmbeddings:
    params: dict[str, object] = {"base_url": fake.base_url, "api_key": KEY, "max_retries": 2}
    params.update(kw)
    return agency.embeddings("voyage:voyage-3.5", **params)


def _adapter(emb: AgencyEmbeddings) -> VoyageAdapter:
    adapter = emb._adapter
    assert isinstance(adapter, VoyageAdapter)
    return adapter


class TestVoyageEmbeddingsStandard(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[AgencyEmbeddings]:
        return AgencyEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": "voyage:voyage-3.5", "base_url": _BASE["url"], "api_key": KEY}


class TestVoyageEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[AgencyEmbeddings]:
        return AgencyEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": "voyage:voyage-3.5", "api_key": KEY}

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        return ({"VOYAGE_API_KEY": "pa-from-env"}, {"model": "voyage:voyage-3.5"}, {})


# -- the wire -----------------------------------------------------------------------------------
def test_vectors_match_the_official_client(fake: FakeVoyage) -> None:
    texts = ["the cat sat on the mat", "a dog ran", "ünïcödé ✓"]
    ours = _emb(fake).embed_documents(texts)
    client = voyageai.Client(api_key=KEY, base_url=fake.base_url, max_retries=0)
    official = client.embed(texts, model="voyage-3.5", input_type="document").embeddings
    assert ours == official  # same float32 bytes
    assert fake.bodies()[0] == {
        "input": texts, "model": "voyage-3.5", "input_type": "document", "encoding_format": "base64",
    }  # fmt: skip
    assert fake.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_input_type_reaches_the_wire(fake: FakeVoyage) -> None:
    adapter = _adapter(_emb(fake))
    query = adapter._embed(["cats"], model="voyage-3.5", dimensions=None, input_type="query")
    document = adapter._embed(["cats"], model="voyage-3.5", dimensions=None, input_type="document")
    assert [b.get("input_type") for b in fake.bodies()] == ["query", "document"]
    assert query != document
    client = voyageai.Client(api_key=KEY, base_url=fake.base_url, max_retries=0)
    assert query == client.embed(["cats"], model="voyage-3.5", input_type="query").embeddings


async def test_async_input_type_and_batches(
    fake: FakeVoyage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire.VoyageAdapter, "embed_batch_size", 2)
    adapter = _adapter(_emb(fake))
    vectors = await adapter._aembed(
        ["a", "b", "c"], model="voyage-3.5", dimensions=256, input_type="query"
    )
    assert len(vectors) == 3 and all(len(v) == 256 for v in vectors)
    assert [(len(b["input"]), b["output_dimension"], b["input_type"]) for b in fake.bodies()] == [
        (2, 256, "query"),
        (1, 256, "query"),
    ]
    query = await _emb(fake).aembed_query("a")
    document = (await _emb(fake).aembed_documents(["a"]))[0]
    assert query != document  # Voyage embeds a query and a document differently
    assert [b["input_type"] for b in fake.bodies()[-2:]] == ["query", "document"]


def test_batches_and_dimensions(fake: FakeVoyage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire.VoyageAdapter, "embed_batch_size", 3)
    emb = _emb(fake, dimensions=512)
    texts = [f"text number {i}" for i in range(7)]
    vectors = emb.embed_documents(texts)
    assert len(vectors) == 7 and all(len(v) == 512 for v in vectors)
    assert [len(b["input"]) for b in fake.bodies()] == [3, 3, 1]
    assert all(b["output_dimension"] == 512 for b in fake.bodies())
    assert vectors[4] != emb.embed_query("text number 4")  # query vs document
    assert fake.bodies()[-1]["input_type"] == "query"
    assert emb.embed_documents([]) == []


def test_batch_limit_is_the_apis() -> None:
    assert wire.EMBEDDING_BATCH_SIZE == 1000


# -- failures -----------------------------------------------------------------------------------
def test_errors_are_typed_and_retried_when_retryable(fake: FakeVoyage) -> None:
    fake.script_embeddings(Fail(429, "Rate limit exceeded.", headers={"retry-after": "0"}), Fail(503))
    assert len(_emb(fake).embed_query("x")) == 1024
    assert len(fake.bodies()) == 3
    fake.script_embeddings(Fail(429, "Rate limit exceeded.", headers={"retry-after": "3"}))
    with pytest.raises(errors.RateLimited, match="Rate limit exceeded") as info:
        _emb(fake, max_retries=0).embed_query("x")
    assert info.value.retry_after == 3.0
    with pytest.raises(errors.AuthenticationError, match="API key is invalid") as auth:
        _emb(fake, api_key="pa-wrong-SECRET-1234").embed_query("x")
    assert "SECRET" not in str(auth.value)
    with pytest.raises(errors.BadRequest, match="not supported"):
        agency.embeddings("voyage:voyage-9", base_url=fake.base_url, api_key=KEY).embed_query("x")
    fake.spec_violations.clear()  # the unknown model was the point
    long_text = "word " * 33_000
    with pytest.raises(errors.BadRequest, match="max allowed tokens"):
        _emb(fake).embed_documents([long_text] * 11)


def test_transport_and_malformed_answers(fake: FakeVoyage) -> None:
    fake.script_embeddings(Malformed("{broken"))
    with pytest.raises(errors.MalformedResponse):
        _emb(fake).embed_query("x")
    fake.script_embeddings(Malformed('{"object": "list", "data": [{"embedding": "%%%", "index": 0}]}'))
    with pytest.raises(errors.MalformedResponse, match="base64"):
        _emb(fake).embed_query("x")
    fake.script_embeddings(Disconnect())
    with pytest.raises(errors.ConnectionFailed):
        _emb(fake, max_retries=0).embed_query("x")
    fake.script_embeddings(Stall(1.0))
    with pytest.raises(errors.Timeout):
        _emb(fake, timeout=0.3, max_retries=0).embed_query("x")


@pytest.mark.parametrize(
    "data",
    [
        None,
        {"data": []},
        {"data": [5]},
        {"data": [{"embedding": [1.0], "index": 3}]},
        {"data": [{"embedding": [1.0], "index": 0}, {"embedding": [2.0], "index": 0}]},
        {"data": [{"embedding": ["x"], "index": 0}]},
        {"data": [{"embedding": "AAA=", "index": 0}]},
    ],
)
def test_parse_rejects_malformed_bodies(data: object) -> None:
    count = 2 if isinstance(data, dict) and len(data.get("data", [])) == 2 else 1
    with pytest.raises(errors.MalformedResponse):
        openai_embeddings(data, count, "voyage", "voyage-3.5")


def test_parse_orders_by_index_and_reads_lists() -> None:
    data = {"data": [{"embedding": [2, 2.5], "index": 1}, {"embedding": "AACAPw==", "index": 0}]}
    assert openai_embeddings(data, 2, "voyage", "m") == [[1.0], [2.0, 2.5]]


# -- no chat --------------------------------------------------------------------------------------
def test_chat_is_refused_naming_a_chat_provider(fake: FakeVoyage) -> None:
    caps = VoyageAdapter.capabilities
    assert (caps.chat, caps.streaming, caps.embeddings, caps.usage) == (False, False, True, False)
    llm = agency.chat_model("voyage:voyage-3.5", base_url=fake.base_url, api_key=KEY)
    with pytest.raises(errors.CapabilityError, match="anthropic"):
        llm.invoke("hi")
    with pytest.raises(errors.CapabilityError, match="chat provider"):
        list(llm.stream("hi"))
    with pytest.raises(errors.CapabilityError):
        llm.bind_tools([{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert fake.requests == []


async def test_async_chat_is_refused(fake: FakeVoyage) -> None:
    llm = agency.chat_model("voyage:voyage-3.5", base_url=fake.base_url, api_key=KEY)
    with pytest.raises(errors.CapabilityError, match="embeddings only"):
        await llm.ainvoke("hi")


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOYAGE_API_KEY", raising=False)
    with pytest.raises(errors.AuthenticationError, match="VOYAGE_API_KEY"):
        agency.embeddings("voyage:voyage-3.5")
    monkeypatch.setenv("VOYAGE_API_KEY", "pa-env-SECRET")
    emb = agency.embeddings("voyage")
    assert emb.model == "voyage-3.5"
    assert _adapter(emb)._headers()["authorization"] == "Bearer pa-env-SECRET"
    assert "SECRET" not in repr(emb)
