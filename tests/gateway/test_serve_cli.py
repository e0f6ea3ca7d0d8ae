"""``agency serve`` as people run it: a real process on uvicorn, keys made with ``agency keys``
in another process, the embedded model when nothing is configured, refusals that say why."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fakes.openai_server import FakeOpenAI, Stall
from langchain_core.messages import HumanMessage
from servers import free_port

AGENCY = str(Path(sys.executable).with_name("agency"))


@contextmanager
def serving(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [AGENCY, "serve", "--port", str(port), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"agency serve did not start: {proc.stderr.read() if proc.stderr else ''}"
                )
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def _toml(fake: FakeOpenAI, extra: str = "") -> str:
    """One entry, "main", on ``fake``; probes off; ``extra`` TOML appended."""
    return f"""
[[llm.providers]]
name = "main"
provider = "openai"
api_key = "sk-upstream"
base_url = "{fake.base_url}"
text_model = "gpt-4o-mini"

[gateway]
health_interval_s = 0

{extra}"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENCY, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_serve_with_keys_made_by_the_cli(tmp_path: Path) -> None:
    with FakeOpenAI().running() as fake:
        (tmp_path / "agency.toml").write_text(_toml(fake))
        with serving(["--config", "agency.toml"], tmp_path) as url:
            made = _cli("keys", "create", "--name", "team-a", "--budget-usd", "5", cwd=tmp_path)
            assert made.returncode == 0, made.stderr
            key = made.stdout.strip()
            assert key.startswith("sk-agency-") and "only once" in made.stderr
            client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
            out = client.chat.completions.create(
                model="main", messages=[{"role": "user", "content": "hi gateway"}]
            )
            assert out.choices[0].message.content == "Hello! You said: hi gateway"
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=url + "/v1", api_key="sk-nope", max_retries=0).models.list()
            revoked = _cli("keys", "revoke", "team-a", cwd=tmp_path)
            assert revoked.returncode == 0
            deadline = time.monotonic() + 5  # the server notices another process's revoke
            while time.monotonic() < deadline:
                try:
                    client.models.list()
                except openai.PermissionDeniedError:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError("the revoked key still works")
        # Stopped with Ctrl-C: the audit log was flushed on the way out.
        audit = _cli("audit", "--json", cwd=tmp_path)
        assert audit.returncode == 0
        assert '"provider": "main"' in audit.stdout or '"provider":"main"' in audit.stdout


def test_refusals_say_why(tmp_path: Path) -> None:
    open_to_all = _cli("serve", "--no-auth", "--host", "0.0.0.0", cwd=tmp_path)
    assert open_to_all.returncode == 2 and "loopback" in open_to_all.stderr
    workers = _cli("serve", "--workers", "2", cwd=tmp_path)
    assert workers.returncode == 2 and "redis" in workers.stderr
    (tmp_path / "bad.toml").write_text("[gateway]\nport = 'four'\n")
    bad = _cli("serve", "--config", "bad.toml", cwd=tmp_path)
    assert bad.returncode == 2 and "gateway.port" in bad.stderr and "bad.toml" in bad.stderr


@pytest.mark.local
def test_serve_with_no_config_serves_the_embedded_model(tmp_path: Path) -> None:
    env = {k: "" for k in os.environ if k.endswith("_API_KEY") or k == "DEFAULT_LLM_PROVIDER"}
    with serving(["--no-auth"], tmp_path, env) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        models = [m.id for m in client.models.list().data]
        assert "local" in models[0]
        out = client.chat.completions.create(
            model=models[0], max_tokens=8, messages=[{"role": "user", "content": "Say hi"}]
        )
        assert out.choices[0].message.content
        assert out.usage is not None and out.usage.completion_tokens > 0


def test_workers_share_key_budgets_through_redis(tmp_path: Path, redis_server: Any) -> None:
    """Two worker processes, one key with room for about five calls: twenty concurrent calls
    never spend more than the key's budget, which lives in Redis (read back from there)."""
    with FakeOpenAI().running() as fake:
        state = f'[state]\nbackend = "redis"\nurl = "{redis_server.url}"\ntimeout_s = 2.0\n'
        (tmp_path / "agency.toml").write_text(_toml(fake, state))
        from agency import Agency
        from agency.gateway.app import build_gateway

        probe = build_gateway(str(tmp_path / "agency.toml"))
        model, _ = probe.model_for("main", [])
        worst = probe.agency.worst_case(model, [HumanMessage("hello")], 50)
        probe.close()
        assert worst is not None
        budget = worst * 5.5
        made = _cli("keys", "create", "--name", "fleet", "--budget-usd", str(budget), cwd=tmp_path)
        key = made.stdout.strip()
        fake.script(*[Stall(0.3)] * 20)  # late answers: every admission happens while five hold
        with serving(["--config", "agency.toml", "--workers", "2"], tmp_path) as url:

            async def burst() -> list[int]:
                async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                    replies = await asyncio.gather(
                        *[
                            client.post(
                                "/v1/chat/completions",
                                headers={"authorization": f"Bearer {key}"},
                                json={
                                    "model": "main",
                                    "max_tokens": 50,
                                    "messages": [{"role": "user", "content": "hello"}],
                                },
                            )
                            for _ in range(20)
                        ]
                    )
                return [r.status_code for r in replies]

            codes = asyncio.run(burst())
            assert codes.count(200) == 5 and codes.count(429) == 15
            # Whichever worker answers the scrape, /metrics counts the fleet's requests.
            for _ in range(4):
                text = httpx.get(url + "/metrics", timeout=10).text
                counted = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("agency_gateway_requests_total{")
                )
                assert counted == 20
        answered = codes.count(200)
        assert len(fake.requests) == answered
        with Agency.from_config(tmp_path / "agency.toml") as ag:
            spent = ag.budget("key:" + _key_id(tmp_path), budget).spent()
        assert 0 < spent <= budget


def _key_id(cwd: Path) -> str:
    shown = _cli("keys", "list", cwd=cwd).stdout
    return next(word for word in shown.split() if word.startswith("vk_"))
