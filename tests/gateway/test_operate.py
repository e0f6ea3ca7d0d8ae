"""Running the gateway: fallback and breakers behind it, upstream errors mapped, the management
API (breakers forced, reload, keys, audit), /metrics, /health and /ready, experiments."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
from fakes.openai_server import Disconnect, Fail, Stall
from gateway_harness import MASTER, Running

from agency.resilience.breaker import BreakerPolicy

CHAT = {"model": "primary", "messages": [{"role": "user", "content": "hello"}]}
ADMIN = {"authorization": f"Bearer {MASTER}"}
QUICK_BREAKER = BreakerPolicy(consecutive_failures=2, cooldown_s=60)


def _post(run: Running, body: dict | None = None, key: str | None = None) -> httpx.Response:
    key = key or run.key(f"k{len(run.gw.keys.list())}")
    return httpx.post(
        run.url + "/v1/chat/completions",
        json=body or CHAT,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_failover_to_backup_then_breaker_skips_primary(
    start_gateway: Callable[..., Running],
) -> None:
    run = start_gateway(breaker=QUICK_BREAKER)
    run.primary.script(Fail(503), Fail(503))
    first = _post(run)
    assert first.status_code == 200
    assert first.headers["x-agency-provider"] == "backup"
    assert first.headers["x-agency-attempts"] == "2"
    second = _post(run)
    assert second.headers["x-agency-provider"] == "backup"
    # Two failures in a row opened primary's breaker: the third call does not try it.
    health = httpx.get(run.url + "/manage/providers", headers=ADMIN).json()
    assert health["primary"]["breaker"]["state"] == "open"
    before = len(run.primary.requests)
    third = _post(run)
    assert third.headers["x-agency-attempts"] == "1" and len(run.primary.requests) == before
    metrics = httpx.get(run.url + "/metrics").text
    assert 'agency_gateway_breaker_state{provider="primary"} 2.0' in metrics
    assert 'agency_gateway_breaker_state{provider="backup"} 0.0' in metrics


def test_upstream_errors_become_gateway_errors(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    cheap = {**CHAT, "model": "role:cheap"}  # primary alone: nothing to fall back to
    run.primary.script(*[Fail(429, retry_after=1)] * 3)
    limited = _post(run, cheap)
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert int(limited.headers["retry-after"]) >= 1
    run.primary.reset()
    run.primary.script(*[Fail(500)] * 3)
    down = _post(run, cheap)
    assert down.status_code == 503
    assert down.json()["error"]["code"] == "all_providers_failed"
    run.gw.audit.flush()
    kinds = [r["error_kind"] for r in run.gw.audit.query(limit=2)]
    assert kinds == ["unavailable", "rate_limit"]


def test_stream_failure_after_first_token_is_an_error_event(
    start_gateway: Callable[..., Running],
) -> None:
    run = start_gateway()
    # Every attempt breaks mid-stream (the facade splices a broken stream onto the next
    # attempt; here each one breaks too), so the 200 is out when the chain gives up.
    run.primary.script(*[Disconnect(after_events=3)] * 4)
    body = {**CHAT, "model": "role:cheap", "stream": True}
    with httpx.stream(
        "POST",
        run.url + "/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {run.key()}"},
    ) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "error" in json.loads(events[-2])


def test_force_breaker_ready_and_health(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    assert httpx.get(run.url + "/health").json() == {"status": "ok"}
    assert httpx.get(run.url + "/ready").status_code == 200
    forced = httpx.post(
        run.url + "/manage/providers/primary/breaker",
        headers=ADMIN,
        json={"state": "open", "seconds": 600},
    )
    assert forced.json()["breaker"]["state"] == "open"
    answer = _post(run)
    assert answer.headers["x-agency-provider"] == "backup" and not run.primary.requests
    httpx.post(run.url + "/manage/providers/backup/breaker", headers=ADMIN, json={"state": "open"})
    not_ready = httpx.get(run.url + "/ready")
    assert not_ready.status_code == 503 and not_ready.json()["providers"] == []
    all_open = _post(run)
    assert all_open.status_code == 503 and int(all_open.headers["retry-after"]) > 0
    for name in ("primary", "backup"):
        httpx.post(
            run.url + f"/manage/providers/{name}/breaker", headers=ADMIN, json={"state": "closed"}
        )
    assert _post(run).headers["x-agency-provider"] == "primary"
    bad = httpx.post(
        run.url + "/manage/providers/nope/breaker", headers=ADMIN, json={"state": "open"}
    )
    assert bad.status_code == 404 and "primary" in bad.json()["error"]["message"]


def test_reload_keeps_serving_and_refuses_a_bad_file(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    key = run.key()
    text = run.path.read_text()
    run.path.write_text(
        text.replace('cheap = ["primary"]', 'cheap = ["primary"]\nfast = ["backup"]')
    )
    reloaded = httpx.post(run.url + "/manage/reload", headers=ADMIN)
    assert reloaded.status_code == 200
    models = httpx.get(run.url + "/v1/models", headers={"authorization": f"Bearer {key}"}).json()
    assert "role:fast" in [m["id"] for m in models["data"]]
    assert _post(run, {**CHAT, "model": "role:fast"}, key).headers["x-agency-provider"] == "backup"
    run.path.write_text(text.replace("[llm.fallback]", "[llm.fallback]\nbogus = 1"))
    refused = httpx.post(run.url + "/manage/reload", headers=ADMIN)
    assert refused.status_code == 400 and "bogus" in refused.json()["error"]["message"]
    # The running config stayed, and the key still works.
    assert _post(run, {**CHAT, "model": "role:fast"}, key).status_code == 200


def test_reload_lets_requests_in_flight_finish(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    key = run.key()
    run.primary.script(Stall(1.0))

    async def both() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=run.url, timeout=30) as client:
            slow = asyncio.create_task(
                client.post(
                    "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"}
                )
            )
            while not run.primary.requests:  # the slow call reached the upstream
                await asyncio.sleep(0.01)
            reload = await client.post("/manage/reload", headers=ADMIN)
            return await slow, reload

    slow, reload = asyncio.run(both())
    assert reload.status_code == 200
    assert slow.status_code == 200 and slow.json()["choices"][0]["message"]["content"]
    assert _post(run, key=key).status_code == 200  # and the new config serves


def test_keys_and_audit_over_the_api(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    made = httpx.post(
        run.url + "/manage/keys",
        headers=ADMIN,
        json={
            "name": "team-a",
            "budget_usd": 5,
            "rpm": 60,
            "models": ["primary"],
            "expires": "30d",
        },
    ).json()
    secret = made["key"]
    assert made["name"] == "team-a" and made["status"] == "active"
    assert _post(run, key=secret).status_code == 200
    listed = httpx.get(run.url + "/manage/keys", headers=ADMIN).json()["keys"]
    assert [k["name"] for k in listed] == ["team-a"] and "key" not in listed[0]
    assert secret not in json.dumps(listed)
    rows = httpx.get(run.url + "/manage/audit?key=team-a&since=1h", headers=ADMIN).json()["rows"]
    assert len(rows) == 1 and rows[0]["provider"] == "primary" and rows[0]["cost_usd"] > 0
    gone = httpx.delete(run.url + f"/manage/keys/{made['id']}", headers=ADMIN).json()
    assert gone["status"] == "revoked"
    assert _post(run, key=secret).status_code == 403
    stats = httpx.get(run.url + "/manage/stats", headers=ADMIN).json()
    assert stats["providers"]["primary"]["successes"] >= 1


def test_metrics_count_requests_tokens_cost(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    for _ in range(3):
        _post(run)
    _post(run, {**CHAT, "model": "nope"})
    text = httpx.get(run.url + "/metrics").text
    assert (
        'agency_gateway_requests_total{endpoint="chat.completions",model="primary",'
        'provider="primary",status="200"} 3.0'
    ) in text
    assert 'agency_gateway_failures_total{kind="error"} 1.0' in text or ('status="404"' in text)
    assert 'agency_gateway_request_seconds_count{endpoint="chat.completions"} 4.0' in text
    assert 'agency_gateway_tokens_total{direction="output",provider="primary"}' in text
    assert "agency_gateway_cost_usd_total" in text


EXPERIMENT = """
[[gateway.experiments]]
name = "ab"
model = "role:cheap"
sticky = "key"
arms = [{ name = "a", chain = ["primary"] }, { name = "b", chain = ["backup"] }]
"""


def test_experiment_arms_sticky_feedback_report(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway(EXPERIMENT)
    seen: dict[str, set[str]] = {}
    ids: list[tuple[str, str]] = []
    for i in range(12):
        key = run.key(f"user{i}")
        for _ in range(2):
            r = _post(run, {**CHAT, "model": "role:cheap"}, key)
            arm = r.headers["x-agency-experiment"].split(":")[1]
            seen.setdefault(key, set()).add(arm)
            # The arm's chain answered.
            assert r.headers["x-agency-provider"] == {"a": "primary", "b": "backup"}[arm]
            ids.append((key, r.headers["x-request-id"]))
    assert all(len(arms) == 1 for arms in seen.values())  # sticky per key
    assert {a for arms in seen.values() for a in arms} == {"a", "b"}
    key, rid = ids[0]
    ok = httpx.post(
        run.url + "/v1/feedback",
        json={"request_id": rid, "score": 4},
        headers={"authorization": f"Bearer {key}"},
    )
    assert ok.status_code == 200
    other = httpx.post(
        run.url + "/v1/feedback",
        json={"request_id": rid, "score": 1},
        headers={"authorization": f"Bearer {ids[-1][0]}"},
    )
    assert other.status_code == 404  # only the request's own key scores it
    report = httpx.get(run.url + "/manage/experiments/ab", headers=ADMIN).json()
    arms = {a["name"]: a for a in report["arms"]}
    assert arms["a"]["requests"] + arms["b"]["requests"] == 24
    assert report["verdicts"]


def test_auto_routes_by_the_last_user_message(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    r = _post(
        run,
        {
            "model": "auto",
            "messages": [
                {
                    "role": "user",
                    "content": "Write a Python function that parses ISO dates and fix the bug in it",
                }
            ],
        },
    )
    assert r.status_code == 200
    assert r.headers["x-agency-role"] == "code"


def test_semantic_cache_hit_skips_the_provider(
    start_gateway: Callable[..., Running], tmp_path
) -> None:  # type: ignore[no-untyped-def]
    run = start_gateway(f'[llm.cache]\nenabled = true\npath = "{tmp_path / "cache"}"\n')
    body = {**CHAT, "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    key = run.key()
    first = _post(run, body, key)
    assert first.headers["x-agency-cache"] == "miss"
    second = _post(run, body, key)
    assert second.headers["x-agency-cache"] == "hit"
    assert (
        second.json()["choices"][0]["message"]["content"]
        == first.json()["choices"][0]["message"]["content"]
    )
    assert len(run.primary.requests) == 1


def test_otel_spans_per_request(start_gateway: Callable[..., Running]) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agency.gateway._tracing import Tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    run = start_gateway()
    run.gw.tracing = Tracing(provider.get_tracer("test"))
    key = run.key("traced")
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    r = httpx.post(
        run.url + "/v1/chat/completions",
        json=CHAT,
        headers={
            "authorization": f"Bearer {key}",
            "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
        },
    )
    assert r.status_code == 200
    _post(run, {**CHAT, "model": "nope"}, key)
    ok, refused = exporter.get_finished_spans()
    assert ok.name == "chat primary" and format(ok.context.trace_id, "032x") == trace_id
    attrs = dict(ok.attributes or {})
    assert attrs["agency.provider"] == "primary" and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["gen_ai.response.model"] == "openai:gpt-4o-mini"
    assert attrs["agency.key_id"].startswith("vk_") and key not in repr(attrs)
    assert ok.end_time > ok.start_time
    assert refused.attributes["http.response.status_code"] == 404
    assert refused.status.status_code.name == "ERROR"


def test_semantic_cache_hit_streams_too(start_gateway: Callable[..., Running], tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = start_gateway(f'[llm.cache]\nenabled = true\npath = "{tmp_path / "cache"}"\n')
    key = run.key()
    body = {**CHAT, "messages": [{"role": "user", "content": "Name three primary colours."}]}
    answer = _post(run, body, key).json()
    assert "choices" in answer, answer
    first = answer["choices"][0]["message"]["content"]
    with httpx.stream(
        "POST",
        run.url + "/v1/chat/completions",
        json={**body, "stream": True},
        headers={"authorization": f"Bearer {key}"},
    ) as r:
        assert r.headers["x-agency-cache"] == "hit" and r.headers["x-agency-provider"] == "cache"
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == first and len(run.primary.requests) == 1


def test_a_bug_of_ours_is_a_500_and_logged(start_gateway: Callable[..., Running], caplog) -> None:  # type: ignore[no-untyped-def]
    run = start_gateway()

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    run.gw.answer = broken  # type: ignore[method-assign,assignment]
    with caplog.at_level("ERROR", logger="agency.gateway"):
        r = _post(run)
    assert r.status_code == 500 and r.json()["error"]["message"] == "internal error: RuntimeError"
    assert any(rec.exc_info and "boom" in str(rec.exc_info[1]) for rec in caplog.records)
