"""Virtual keys at the gateway: who may call, which models, how often, for how much; every
refusal comes before any provider is called."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import openai
import pytest
from fakes.openai_server import Stall
from gateway_harness import Running

CHAT = {"model": "primary", "messages": [{"role": "user", "content": "hello"}]}


def _post(
    run: Running, key: str | None, body: dict | None = None, **headers: str
) -> httpx.Response:
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return httpx.post(run.url + "/v1/chat/completions", json=body or CHAT, headers=headers)


def test_no_key_bad_key_revoked_expired(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    assert _post(run, None).status_code == 401
    assert _post(run, "sk-agency-000000000000-forged").status_code == 401
    assert _post(run, "not-even-close").json()["error"]["code"] == "invalid_api_key"
    good = run.key("good")
    assert _post(run, good).status_code == 200
    # x-api-key works as well as Authorization (the Anthropic SDK's header).
    assert _post(run, None, **{"x-api-key": good}).status_code == 200
    run.gw.keys.revoke("good")
    refused = _post(run, good)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "key_revoked"
    short = run.key("short", expires_in_s=0.2)
    assert _post(run, short).status_code == 200
    time.sleep(0.3)
    assert _post(run, short).json()["error"]["code"] == "key_expired"
    # Two answered; nothing refused reached the upstream.
    assert len(run.primary.requests) == 3


def test_model_allow_list(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    key = run.key("coder", models=("role:code",))
    refused = _post(run, key)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    ok = _post(run, key, {**CHAT, "model": "role:code"})
    assert ok.status_code == 200
    assert len(run.primary.requests) + len(run.backup.requests) == 1


def test_rpm_limit_says_when_to_come_back(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    key = run.key("slow", rpm=2)
    assert [_post(run, key).status_code for _ in range(2)] == [200, 200]
    over = _post(run, key)
    assert over.status_code == 429
    assert over.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(over.headers["retry-after"]) <= 60
    assert len(run.primary.requests) == 2
    # Another key has its own allowance.
    assert _post(run, run.key("other", rpm=2)).status_code == 200


def test_budget_refuses_before_the_call_and_sdks_do_not_retry(
    start_gateway: Callable[..., Running],
) -> None:
    run = start_gateway()
    key = run.key("tiny", budget_usd=0.0)
    client = openai.OpenAI(base_url=run.url + "/v1", api_key=key, max_retries=2)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert caught.value.code == "insufficient_quota"
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert not run.primary.requests
    run.gw.audit.flush()
    rows = run.gw.audit.query(key="tiny")
    assert len(rows) == 1  # one request: the SDK did not retry
    assert rows[0]["status"] == 429 and rows[0]["error_kind"] == "budget"


def test_budget_never_overspent_under_concurrency(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway()
    body = {**CHAT, "max_tokens": 50}
    # The worst case of one call: what the gateway reserves for it.
    model, _ = run.gw.model_for("primary", [])
    from langchain_core.messages import HumanMessage

    worst = run.gw.agency.worst_case(model, [HumanMessage("hello")], 50)
    assert worst is not None and worst > 0
    budget = worst * 5.5  # room for five calls at their worst, never six
    key = run.key("shared", budget_usd=budget)
    # Answers come late, so all twenty are admitted (or refused) while the first five hold.
    run.primary.script(*[Stall(0.3)] * 20)

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=run.url, timeout=30) as client:
            replies = await asyncio.gather(
                *[
                    client.post(
                        "/v1/chat/completions",
                        json=body,
                        headers={"authorization": f"Bearer {key}"},
                    )
                    for _ in range(20)
                ]
            )
        return [r.status_code for r in replies]

    codes = asyncio.run(burst())
    # Twenty arrive together, each holding its worst case until it settles: five fit at once.
    assert codes.count(200) == 5 and codes.count(429) == 15
    stored = run.gw.keys.get("shared")
    assert stored is not None
    assert 0 < stored.spent_usd <= budget
    # Spend follows the answers' real cost (below the worst case), so once settled, more fit.
    assert len(run.primary.requests) == codes.count(200)


def test_no_auth_mode_and_management_needs_master(start_gateway: Callable[..., Running]) -> None:
    run = start_gateway(auth=False)
    assert _post(run, None).status_code == 200
    run2 = start_gateway()
    assert httpx.get(run2.url + "/manage/providers").status_code == 401
    wrong = httpx.get(run2.url + "/manage/providers", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401
    from gateway_harness import MASTER

    ok = httpx.get(run2.url + "/manage/providers", headers={"authorization": f"Bearer {MASTER}"})
    assert ok.status_code == 200 and set(ok.json()) == {"primary", "backup"}
    # A virtual key is not the master key.
    user = httpx.get(run2.url + "/manage/keys", headers={"authorization": f"Bearer {run2.key()}"})
    assert user.status_code == 401
    no_master = start_gateway(master_key=None)
    refused = httpx.get(no_master.url + "/manage/stats")
    assert refused.status_code == 403 and "AGENCY_MASTER_KEY" in refused.json()["error"]["message"]


def test_secrets_stay_out_of_audit_metrics_and_errors(
    start_gateway: Callable[..., Running],
) -> None:
    run = start_gateway()
    key = run.key("careful")
    _post(run, key)
    _post(run, "sk-agency-deadbeef0000-wrong")
    run.gw.audit.flush()
    dump = repr(run.gw.audit.query(limit=None))
    metrics = httpx.get(run.url + "/metrics").text
    for text in (dump, metrics):
        assert key not in text and "sk-upstream" not in text
    # Prompts are not kept unless the key opts in.
    assert all(row["prompt"] is None for row in run.gw.audit.query(limit=None))
    keeper = run.key("keeper", log_prompts=True)
    _post(run, keeper)
    run.gw.audit.flush()
    kept = run.gw.audit.query(key="keeper")[0]
    assert "hello" in kept["prompt"] and kept["response"]


def test_a_failed_call_gives_its_hold_back(start_gateway: Callable[..., Running]) -> None:
    from fakes.openai_server import Fail

    run = start_gateway()
    key = run.key("holder", budget_usd=1.0)
    run.primary.script(*[Fail(500)] * 3)
    down = _post(run, key, {**CHAT, "model": "role:cheap"})
    assert down.status_code == 503
    stored = run.gw.keys.get("holder")
    assert stored is not None
    budget = run.gw._budgets[stored.id]
    assert budget.remaining() == pytest.approx(1.0)  # nothing billed, nothing held
    assert _post(run, key).status_code == 200
    assert 0 < budget.spent() < 0.001  # the real cost, not the worst case
