"""`agency.gateway.audit`: one SQLite row per request, written off the request path."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agency.gateway.audit import AuditLog, AuditLogError, AuditRecord, percentile


def rec(request_id: str, t: float, **kw: Any) -> AuditRecord:
    base: dict[str, Any] = {
        "endpoint": "/v1/chat/completions",
        "model_asked": "role:code",
        "latency_ms": 10.0,
        "status": 200,
    }
    return AuditRecord(request_id=request_id, time=t, **(base | kw))


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    al = AuditLog(tmp_path / "data" / "audit.sqlite")
    yield al
    al.close()


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["request_id"] for r in rows]


def test_query_filters_newest_first(log: AuditLog) -> None:
    log.record(rec("r1", 100.0, key_id="vk_aaaaaaaaaaaa", key_name="team-a", model="gpt"))
    log.record(rec("r2", 200.0, key_id="vk_bbbbbbbbbbbb", key_name="team-b", status=429,
                   error_kind="rate_limit", experiment="exp1", arm="a"))
    log.record(rec("r3", 300.0, key_id="vk_aaaaaaaaaaaa", key_name="team-a", model_asked="auto",
                   experiment="exp1", arm="b", provider="groq", model="llama"))
    log.record(rec("r4", 400.0, model_asked="openai:gpt-4o", cache_hit=True, stream=True))
    log.flush()
    assert ids(log.query()) == ["r4", "r3", "r2", "r1"]
    assert ids(log.query(key="vk_aaaaaaaaaaaa")) == ["r3", "r1"]
    assert ids(log.query(key="team-b")) == ["r2"]
    assert ids(log.query(since=200.0)) == ["r4", "r3", "r2"]
    assert ids(log.query(until=300.0)) == ["r2", "r1"]
    assert ids(log.query(since=200.0, until=400.0)) == ["r3", "r2"]
    assert ids(log.query(model="auto")) == ["r3"]
    assert ids(log.query(model="llama")) == ["r3"]  # the model that answered matches too
    assert ids(log.query(status=429)) == ["r2"]
    assert ids(log.query(experiment="exp1")) == ["r3", "r2"]
    assert ids(log.query(limit=2)) == ["r4", "r3"]
    assert ids(log.query(limit=None)) == ["r4", "r3", "r2", "r1"]
    row = log.query(key="team-b")[0]
    assert row["error_kind"] == "rate_limit" and row["arm"] == "a" and row["status"] == 429
    assert row["prompt"] is None and row["response"] is None
    newest = log.query(limit=1)[0]
    assert newest["cache_hit"] is True and newest["stream"] is True and newest["key_id"] is None
    assert log.get("r4") == newest and log.get("nope") is None


def test_the_columns_are_the_contract(log: AuditLog) -> None:
    log.record(rec("r1", 1.0, prompt="hi", response="hello", input_tokens=3, output_tokens=4,
                   cached_tokens=1, cost_usd=0.5, attempts=2, user="u1"))
    log.flush()
    db = sqlite3.connect(log.path)
    cols = [r[1] for r in db.execute("PRAGMA table_info(requests)")]
    row = dict(zip(cols, db.execute("SELECT * FROM requests").fetchone(), strict=True))
    feedback_cols = [r[1] for r in db.execute("PRAGMA table_info(feedback)")]
    indexes = {r[0] for r in db.execute("SELECT sql FROM sqlite_master WHERE type='index'")}
    db.close()
    assert cols == [
        "request_id", "time", "key_id", "key_name", "endpoint", "model_asked", "provider",
        "model", "attempts", "input_tokens", "output_tokens", "cached_tokens", "cost_usd",
        "latency_ms", "cache_hit", "stream", "status", "error_kind", "experiment", "arm", "user",
        "prompt", "response",
    ]
    assert feedback_cols == ["request_id", "time", "score", "comment"]
    assert any("(time)" in (s or "") for s in indexes)
    assert any("(key_id)" in (s or "") for s in indexes)
    assert any("(experiment)" in (s or "") for s in indexes)
    assert row["prompt"] == "hi" and row["response"] == "hello" and row["user"] == "u1"
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (3, 4, 1)
    assert row["attempts"] == 2 and row["cost_usd"] == 0.5


def test_no_field_for_credentials() -> None:
    with pytest.raises(TypeError):
        rec("r1", 1.0, authorization="Bearer sk-x")
    with pytest.raises(TypeError):
        rec("r1", 1.0, api_key="sk-x")


def test_record_does_not_wait_for_the_disk(log: AuditLog) -> None:
    """While another connection holds SQLite's write lock the writer is stuck, yet `record`
    returns; everything lands once the lock is released."""
    blocker = sqlite3.connect(log.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        done = threading.Event()

        def produce() -> None:
            for i in range(200):
                log.record(rec(f"r{i}", float(i)))
            done.set()

        producer = threading.Thread(target=produce)
        producer.start()
        producer.join(5.0)
        assert done.is_set()
        time.sleep(log.flush_interval_s * 2)  # the writer has tried, and waits on the lock
        assert log.query(limit=None) == []
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    log.flush()
    assert len(log.query(limit=None)) == 200


def test_a_full_batch_is_written_without_flush(tmp_path: Path) -> None:
    al = AuditLog(tmp_path / "audit.sqlite", flush_interval_s=60.0, max_batch=5)
    try:
        for i in range(4):
            al.record(rec(f"r{i}", float(i)))
        al.record(rec("r4", 4.0))  # the fifth wakes the writer long before its 60 s tick
        deadline = time.monotonic() + 2.0
        while len(al.query(limit=None)) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(al.query(limit=None)) == 5
    finally:
        al.close()


def test_writes_from_many_threads_all_land(log: AuditLog) -> None:
    def produce(n: int) -> None:
        for i in range(250):
            log.record(rec(f"t{n}-{i}", float(i), key_name=f"k{n}"))

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.flush()
    rows = log.query(limit=None)
    assert len(rows) == 2000 and len(set(ids(rows))) == 2000
    assert len(log.query(key="k3", limit=None)) == 250


def test_a_bad_record_does_not_sink_its_batch(log: AuditLog) -> None:
    log.record(rec("ok1", 1.0))
    log.record(rec("bad", 2.0, status=None))  # NOT NULL: SQLite refuses it
    log.record(rec("ok2", 3.0))
    log.record(rec("ok1", 4.0, status=500))  # a repeated id: the first record wins
    log.flush()
    rows = log.query()
    assert ids(rows) == ["ok2", "ok1"] and rows[1]["status"] == 200


def test_feedback(log: AuditLog) -> None:
    log.record(rec("r1", 1.0, experiment="exp1", arm="a"))
    log.record(rec("r2", 2.0, experiment="exp2", arm="a"))
    # not flushed: add_feedback finds a request recorded a moment ago
    assert log.add_feedback("r1", 1.0, "good")
    assert log.add_feedback("r1", 0.0)
    assert log.add_feedback("r2", 0.25)
    assert not log.add_feedback("nope", 1.0)
    assert log.feedback_scores() == {"r1": 0.5, "r2": 0.25}
    assert log.feedback_scores("exp1") == {"r1": 0.5}
    assert log.feedback_scores("exp3") == {}
    with pytest.raises(ValueError, match="finite"):
        log.add_feedback("r1", float("nan"))
    with pytest.raises(ValueError, match="number"):
        log.add_feedback("r1", "5")  # type: ignore[arg-type]


def test_percentile_interpolates_linearly() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([float(v) for v in range(1, 101)], 0.95) == pytest.approx(95.05)


def test_summary_on_known_data(log: AuditLog) -> None:
    # bucket [600, 660): latencies 1..10 (one error); bucket [720, 780): 100 and 200
    for i in range(10):
        log.record(rec(f"a{i}", 600.0 + i, latency_ms=float(i + 1), cost_usd=0.01,
                       input_tokens=10, output_tokens=5, key_id="vk_a", key_name="a",
                       status=500 if i == 0 else 200))
    log.record(rec("b0", 725.0, latency_ms=100.0, cost_usd=1.0, key_id="vk_b", key_name="b"))
    log.record(rec("b1", 730.0, latency_ms=200.0, status=429, input_tokens=7))
    log.record(rec("old", 100.0, latency_ms=5000.0, cost_usd=50.0, key_id="vk_c"))  # before since
    log.flush()
    s = log.summary(since=590.0, bucket_s=60.0, top=2)
    assert s["since"] == 590.0 and s["bucket_s"] == 60.0
    first, second = s["series"]
    assert first["t"] == 600.0 and first["requests"] == 10 and first["errors"] == 1
    assert first["p50_ms"] == pytest.approx(5.5) and first["p95_ms"] == pytest.approx(9.55)
    assert first["cost_usd"] == pytest.approx(0.1) and first["tokens"] == 150
    assert second == {"t": 720.0, "requests": 2, "errors": 1, "p50_ms": pytest.approx(150.0),
                      "p95_ms": pytest.approx(195.0), "cost_usd": 1.0, "tokens": 7}
    assert s["top_keys"] == [
        {"key_id": "vk_b", "key_name": "b", "requests": 1, "cost_usd": 1.0},
        {"key_id": "vk_a", "key_name": "a", "requests": 10, "cost_usd": pytest.approx(0.1)},
    ]
    assert s["totals"] == {"requests": 12, "errors": 2, "cost_usd": pytest.approx(1.1)}
    one = log.summary(since=0.0, bucket_s=1000.0)
    assert [b["requests"] for b in one["series"]] == [13]
    assert one["series"][0]["p50_ms"] == pytest.approx(7.0)  # median of 13 values
    assert {k["key_id"] for k in one["top_keys"]} == {"vk_a", "vk_b", "vk_c", None}
    empty = log.summary(since=10_000.0)
    assert empty["series"] == [] and empty["top_keys"] == []
    assert empty["totals"] == {"requests": 0, "errors": 0, "cost_usd": 0.0}


def test_summary_percentiles_match_the_reference(log: AuditLog) -> None:
    latencies = [float((i * 37) % 101) for i in range(57)]
    for i, lat in enumerate(latencies):
        log.record(rec(f"r{i}", 60.0 + i / 100, latency_ms=lat))
    log.flush()
    (bucket,) = log.summary(since=0.0)["series"]
    assert bucket["p50_ms"] == pytest.approx(percentile(sorted(latencies), 0.5))
    assert bucket["p95_ms"] == pytest.approx(percentile(sorted(latencies), 0.95))


def test_close_flushes_and_reopen_keeps_rows(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    al = AuditLog(path, flush_interval_s=60.0)
    for i in range(3):
        al.record(rec(f"r{i}", float(i)))
    al.close()
    al.close()  # idempotent
    with pytest.raises(AuditLogError, match="closed"):
        al.record(rec("late", 9.0))
    reopened = AuditLog(path)
    try:
        assert ids(reopened.query()) == ["r2", "r1", "r0"]
        reopened.record(rec("r3", 3.0))
        reopened.flush()
        assert ids(reopened.query(limit=1)) == ["r3"]
    finally:
        reopened.close()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="flush_interval_s"):
        AuditLog(tmp_path / "a.sqlite", flush_interval_s=0)
    al = AuditLog(tmp_path / "b.sqlite")
    try:
        with pytest.raises(TypeError, match="AuditRecord"):
            al.record({"request_id": "x"})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="bucket_s"):
            al.summary(since=0.0, bucket_s=0)
    finally:
        al.close()
