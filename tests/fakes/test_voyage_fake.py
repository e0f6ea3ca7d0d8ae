"""Oracle tests: the official ``voyageai`` client (sync on requests, async on aiohttp), pointed at
``FakeVoyage``, must accept its answers, and the bodies it builds must pass the fake's request
schema (there is no official Voyage OpenAPI spec to validate against)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import httpx
import pytest
import voyageai
import voyageai.error

from .voyage_server import PROMPTS, Disconnect, Fail, FakeVoyage, Malformed

MODEL = "voyage-3.5"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeVoyage]:
    with FakeVoyage(api_key="pa-test").running() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeVoyage) -> Iterator[FakeVoyage]:
    with server.checked() as fake:
        yield fake


@pytest.fixture
def client(fake: FakeVoyage) -> voyageai.Client:
    return voyageai.Client(api_key="pa-test", base_url=fake.base_url, max_retries=0)


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(v * v for v in vector))


def test_client_bodies_pass_the_schema_and_vectors_decode(
    fake: FakeVoyage, client: voyageai.Client
) -> None:
    result = client.embed(["the cat sat", "a dog ran"], model=MODEL, input_type="document")
    assert len(result.embeddings) == 2 and len(result.embeddings[0]) == 1024
    assert abs(_norm(result.embeddings[0]) - 1.0) < 1e-5
    assert result.total_tokens > 0
    # The client always sends every argument (None as null) and asks for base64 vectors.
    assert fake.bodies() == [
        {
            "input": ["the cat sat", "a dog ran"],
            "model": MODEL,
            "input_type": "document",
            "truncation": True,
            "output_dtype": None,
            "output_dimension": None,
            "encoding_format": "base64",
        }
    ]
    assert fake.requests[0].headers["authorization"] == "Bearer pa-test"
    assert fake.requests[0].path == "/v1/embeddings"


def test_input_type_prompt_dimensions_and_dtypes(fake: FakeVoyage, client: voyageai.Client) -> None:
    query = client.embed(["cats"], model=MODEL, input_type="query").embeddings[0]
    document = client.embed(["cats"], model=MODEL, input_type="document").embeddings[0]
    plain = client.embed(["cats"], model=MODEL).embeddings[0]
    assert query != document != plain
    assert plain == pytest.approx(
        client.embed([PROMPTS["query"][:0] + "cats"], model=MODEL).embeddings[0]
    )
    short = client.embed(["cats"], model=MODEL, output_dimension=256).embeddings[0]
    assert len(short) == 256 and abs(_norm(short) - 1.0) < 1e-5
    int8 = client.embed(["cats and dogs"], model=MODEL, output_dtype="int8").embeddings[0]
    assert all(isinstance(v, int) and -128 <= v <= 127 for v in int8) and any(int8)
    ubinary = client.embed(["cats and dogs"], model=MODEL, output_dtype="ubinary").embeddings[0]
    assert len(ubinary) == 128 and all(0 <= v <= 255 for v in ubinary)


def test_plain_json_vectors_without_base64(fake: FakeVoyage) -> None:
    body = {"input": "hello", "model": MODEL}
    answer = httpx.post(
        f"{fake.base_url}/embeddings", json=body, headers={"authorization": "Bearer pa-test"}
    ).json()
    assert answer["object"] == "list" and answer["model"] == MODEL
    [item] = answer["data"]
    assert item["object"] == "embedding" and item["index"] == 0 and len(item["embedding"]) == 1024
    assert answer["usage"] == {"total_tokens": 1}


async def test_async_client(fake: FakeVoyage) -> None:
    client = voyageai.AsyncClient(api_key="pa-test", base_url=fake.base_url, max_retries=0)
    result = await client.embed(["x", "y"], model=MODEL, input_type="query")
    assert len(result.embeddings) == 2 and result.embeddings[0] != result.embeddings[1]


def test_errors_are_the_client_types(fake: FakeVoyage, client: voyageai.Client) -> None:
    fake.script_embeddings(Fail(429, "Rate limit exceeded."))
    with pytest.raises(voyageai.error.RateLimitError, match="Rate limit exceeded"):
        client.embed(["x"], model=MODEL)
    with pytest.raises(voyageai.error.AuthenticationError):
        voyageai.Client(api_key="pa-wrong", base_url=fake.base_url, max_retries=0).embed(
            ["x"], model=MODEL
        )
    fake.script_embeddings(Fail(503, "The server is overloaded."))
    with pytest.raises(voyageai.error.ServiceUnavailableError):
        client.embed(["x"], model=MODEL)
    fake.script_embeddings(Malformed("{broken"))
    with pytest.raises(voyageai.error.APIError):
        client.embed(["x"], model=MODEL)
    fake.script_embeddings(Disconnect())
    with pytest.raises(voyageai.error.APIConnectionError):
        client.embed(["x"], model=MODEL)


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"input_type": "search"}, "input_type"),
        ({"input": ["x"] * 1001}, "input"),
        ({"model": "voyage-9"}, "Model voyage-9 is not supported"),
        ({"output_dimension": 300}, "does not support output_dimension=300"),
        (
            {"model": "voyage-law-2", "output_dimension": 256},
            "does not support output_dimension=256",
        ),
        ({"model": "voyage-2", "output_dtype": "int8"}, "only supports output_dtype=float"),
        ({"dimensions": 256}, "dimensions"),
    ],
)
def test_request_validation(fake: FakeVoyage, change: dict[str, object], detail: str) -> None:
    body = {"input": ["x"], "model": MODEL, **change}
    response = httpx.post(
        f"{fake.base_url}/embeddings", json=body, headers={"authorization": "Bearer pa-test"}
    )
    assert response.status_code == 400 and detail in response.json()["detail"]
    assert len(fake.spec_violations) == 1
    fake.spec_violations.clear()


def test_token_limits(fake: FakeVoyage) -> None:
    headers = {"authorization": "Bearer pa-test"}
    long_text = "word " * 33_000
    cut = httpx.post(
        f"{fake.base_url}/embeddings",
        json={"input": [long_text], "model": MODEL, "truncation": False},
        headers=headers,
    )
    assert cut.status_code == 400 and "context length" in cut.json()["detail"]
    over = httpx.post(
        f"{fake.base_url}/embeddings",
        json={"input": ["word " * 30_000] * 11, "model": MODEL},
        headers=headers,
    )
    assert (
        over.status_code == 400
        and "max allowed tokens per submitted batch is 320000" in over.json()["detail"]
    )
