"""Oracle tests: the official ``replicate`` SDK (``replicate.Client``) pointed at
``FakeReplicate`` must work: ``run`` (by name and by version), ``predictions.create`` with
``wait``/``reload``/``cancel``, ``stream`` (server-sent events), the async twins, and its
error types. The fake's request validation must catch what Replicate refuses."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
import replicate
from replicate.exceptions import ModelError, ReplicateError

from ._replicate_wire import MODELS
from .replicate_server import Disconnect, Fail, FakeReplicate, Reply

LLAMA = "meta/meta-llama-3-8b-instruct"
LLAMA_VERSION = MODELS[LLAMA]["version"]
E5 = "beautyyuyanli/multilingual-e5-large"
E5_VERSION = MODELS[E5]["version"]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeReplicate]:
    with FakeReplicate().running() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeReplicate) -> Iterator[FakeReplicate]:
    with server.checked(violations=False) as fake:
        yield fake


@pytest.fixture
def client(fake: FakeReplicate) -> replicate.Client:
    client = replicate.Client(api_token="r8_test", base_url=fake.base_url)
    client.poll_interval = 0.02
    return client


def test_run_by_name_in_sync_mode(fake, client):
    output = client.run(LLAMA, input={"prompt": "Hello there", "max_tokens": 64})
    assert "".join(output) == "Hello! You said: Hello there"
    create = fake.last_create
    assert create.path == f"/v1/models/{LLAMA}/predictions"
    assert (
        create.headers["prefer"] == "wait" and create.headers["authorization"] == "Bearer r8_test"
    )
    assert create.body == {"input": {"prompt": "Hello there", "max_tokens": 64}}
    assert fake.spec_violations == []


def test_run_by_version_reads_the_version_and_iterates(fake, client):
    output = client.run(f"{LLAMA}:{LLAMA_VERSION}", input={"prompt": "hi"})
    assert not isinstance(output, list)  # the Output schema says "iterator": a generator
    assert "".join(output) == "Hello! You said: hi"
    paths = [r.path for r in fake.requests]
    assert "/v1/predictions" in paths
    assert f"/v1/models/{LLAMA}/versions/{LLAMA_VERSION}" in paths
    assert fake.last_create.body == {"input": {"prompt": "hi"}, "version": LLAMA_VERSION}


def test_create_then_poll_a_running_prediction(fake, client):
    fake.script(Reply(content="one two three four five six", seconds=0.4))
    prediction = client.predictions.create(model=LLAMA, input={"prompt": "x"})
    assert prediction.status == "starting" and prediction.output is None
    assert prediction.urls["get"] == f"{fake.base_url}/v1/predictions/{prediction.id}"
    assert prediction.urls["stream"].startswith(fake.base_url)
    time.sleep(0.25)
    prediction.reload()
    assert prediction.status == "processing"
    assert 0 < len(prediction.output) < 11
    prediction.wait()
    assert prediction.status == "succeeded"
    assert "".join(prediction.output) == "one two three four five six"
    assert prediction.metrics["output_token_count"] == 6
    assert prediction.metrics["predict_time"] >= 0.4
    assert prediction.completed_at and prediction.started_at


def test_prefer_wait_returns_a_running_prediction_after_n_seconds(fake, client):
    fake.script(Reply(seconds=1.6))
    started = time.monotonic()
    # (predictions.create(model=...) drops ``wait``; the models namespace passes it on)
    prediction = client.models.predictions.create(model=LLAMA, input={"prompt": "x"}, wait=1)
    assert 0.9 < time.monotonic() - started < 1.5
    assert prediction.status == "processing"
    assert fake.last_create.headers["prefer"] == "wait=1"
    prediction.cancel()
    assert prediction.status == "canceled"


def test_stream_events(fake, client):
    events = list(client.stream(LLAMA, input={"prompt": "two\nlines"}))
    kinds = [e.event.value for e in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"output"}
    assert "".join(str(e) for e in events) == "Hello! You said: two\nlines"
    assert all(e.id for e in events) and events[-1].data == "{}"
    assert fake.last_create.body["stream"] is True


def test_stream_of_failed_and_cancelled_predictions(fake, client):
    fake.script(Reply(status="failed", error="CUDA out of memory", after_tokens=2))
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        list(client.stream(LLAMA, input={"prompt": "x"}))
    fake.script(Reply(status="canceled", after_tokens=1))
    events = list(client.stream(LLAMA, input={"prompt": "x"}))
    assert [e.event.value for e in events] == ["output", "done"]
    assert json.loads(events[-1].data) == {"reason": "canceled"}
    fake.script(Disconnect(after_events=2))
    with pytest.raises(httpx.RemoteProtocolError):
        list(client.stream(LLAMA, input={"prompt": "x"}))


def test_failed_prediction_raises_model_error(fake, client):
    fake.script(Reply(status="failed", error="the model crashed"))
    with pytest.raises(ModelError, match="the model crashed") as info:
        client.run(LLAMA, input={"prompt": "x"})
    assert info.value.prediction.status == "failed"


def test_embedding_model_by_version(fake, client):
    vectors = client.run(f"{E5}:{E5_VERSION}", input={"texts": json.dumps(["a", "b"])})
    assert len(vectors) == 2 and len(vectors[0]) == 1024 and vectors[0] != vectors[1]
    fake.script(Reply())
    with pytest.raises(ModelError, match="JSONDecodeError"):
        client.run(f"{E5}:{E5_VERSION}", input={"texts": "not json"})


async def test_async_run_and_stream(fake, client):
    output = await client.async_run(LLAMA, input={"prompt": "async"})
    assert "".join(output) == "Hello! You said: async"
    tokens = [str(e) async for e in await client.async_stream(LLAMA, input={"prompt": "yo"})]
    assert "".join(tokens) == "Hello! You said: yo"


@pytest.mark.parametrize(
    ("status", "title"),
    [(401, "Unauthenticated"), (402, "Payment required"), (429, "Request was throttled"),
     (500, "Internal server error")],
)  # fmt: skip
def test_errors_are_problem_details(fake, client, status, title):
    fake.script(Fail(status))
    with pytest.raises(ReplicateError) as info:
        client.predictions.create(model=LLAMA, input={"prompt": "x"})
    assert (info.value.status, info.value.title) == (status, title)
    assert info.value.detail


def test_auth_and_unknown_models(fake, client):
    fake.api_key = "r8_right"
    with pytest.raises(ReplicateError) as denied:
        client.run(LLAMA, input={"prompt": "x"})
    assert denied.value.status == 401
    fake.api_key = None
    with pytest.raises(ReplicateError) as missing:
        client.run("meta/no-such-model", input={"prompt": "x"})
    assert missing.value.status == 404
    with pytest.raises(ReplicateError) as community:
        client.run(E5, input={"texts": "[]"})
    assert community.value.status == 404 and "version" in community.value.detail


def test_invalid_inputs_are_refused_and_recorded(fake, client):
    with pytest.raises(ReplicateError) as info:
        client.run(LLAMA, input={"prompt": "x", "temperature": 9})
    assert info.value.status == 422 and info.value.title == "Input validation failed"
    assert "input.temperature" in info.value.detail
    with pytest.raises(ReplicateError):
        client.run(LLAMA, input={"prompt": "x", "stop": ["a"]})  # stop_sequences is the name
    headers = {"authorization": "Bearer r8_test"}
    bad = httpx.post(f"{fake.base_url}/v1/predictions", json={"input": {}}, headers=headers)
    assert bad.status_code == 422 and "version" in bad.json()["detail"]
    extra = httpx.post(
        f"{fake.base_url}/v1/models/{LLAMA}/predictions",
        json={"input": {"prompt": "x"}, "max_tokens": 5},
        headers=headers,
    )
    assert extra.status_code == 422
    assert extra.headers["content-type"] == "application/problem+json"
    assert len(fake.spec_violations) == 4
