"""``/dashboard`` of `agency serve`: the status page, in a real headless Chromium (Playwright).

The gateway runs over fake OpenAI upstreams (``tests/fakes``) and is served by uvicorn; the
browser is the system's Chromium (``/usr/bin/chromium``), never one Playwright downloads. The
browser tests skip, saying why, when Playwright or that Chromium is missing. The screenshot of
the live test goes to ``tests/gateway/artifacts/dashboard.png``.
"""

from __future__ import annotations

import contextlib
import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fakes._server import serve
from fakes.openai_server import FakeOpenAI

from agency import Agency
from agency.config import AgencyConfig
from agency.gateway._core import Gateway
from agency.gateway.app import build_gateway, create_app
from agency.gateway.config import ArmConfig, ExperimentConfig, GatewayConfig
from agency.gateway.dashboard import health_of, parse_refresh, render_page

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the browser tests skip
    sync_playwright = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
MASTER = "mk-dashboard-test-5f2c9a"
EVIL_PROVIDER = "<script>window.__pwned = 1</script>"
EVIL_KEY = '<img src=x onerror="window.__pwned = 2">'
EVIL_EXPERIMENT = "</td><b>bold</b>"
WAIT_MS = 15_000


# -- setup ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _gateway(
    tmp_path: Path,
    entries: dict[str, str],
    *,
    auth: bool,
    experiments: list[ExperimentConfig] | None = None,
) -> Iterator[tuple[Gateway, str]]:
    """A gateway over ``entries`` (name -> fake base URL, in priority order), fallback on,
    health probes every 0.5 s, served on 127.0.0.1; yields it and its base URL."""
    providers = [
        {
            "name": name,
            "provider": "openai",
            "api_key": "sk-test",
            "base_url": base_url,
            "text_model": "gpt-4o-mini",
            "priority": i + 1,
        }
        for i, (name, base_url) in enumerate(entries.items())
    ]
    config = AgencyConfig.from_dict(
        {"llm": {"providers": providers, "fallback": {"enabled": True, "retry_delay_ms": 0}}}
    )
    table = GatewayConfig(
        auth=auth,
        data_dir=str(tmp_path / "data"),
        health_interval_s=0.5,
        experiments=experiments or [],
    )
    gw = build_gateway(agency=Agency(config), auth=auth, gateway_config=table)
    # serve() runs uvicorn with lifespan="off": start (and stop) what the app's lifespan would.
    gw.agency.start_health_checks(table.health_interval_s)
    try:
        with serve(create_app(gw)) as url:
            yield gw, url
    finally:
        gw.agency.close()
        gw.close()


def _chat(url: str, model: str, secret: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {secret}"} if secret else {}
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """The system's headless Chromium, driven by Playwright."""
    if sync_playwright is None:
        pytest.skip("the Python package playwright is not installed")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (these tests never download a browser)")
    with sync_playwright() as pw:
        found = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield found
        found.close()


@contextlib.contextmanager
def _tab(browser: Browser, *, bypass_csp: bool = False) -> Iterator[tuple[Page, list[str]]]:
    """A fresh tab, and the console errors and uncaught exceptions it reports."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=bypass_csp)
    tab = context.new_page()
    problems: list[str] = []

    def on_console(message: Any) -> None:
        if message.type == "error":
            problems.append(f"console.error: {message.text}")

    tab.on("console", on_console)
    tab.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    try:
        yield tab, problems
    finally:
        context.close()


# -- the live page ------------------------------------------------------------------------------
def test_dashboard_follows_a_failover_without_reloading(tmp_path: Path, browser: Browser) -> None:
    with (
        _tab(browser) as (tab, problems),
        FakeOpenAI().running() as fake_b,
        contextlib.ExitStack() as primary_up,
    ):
        fake_a = primary_up.enter_context(FakeOpenAI().running())
        with _gateway(
            tmp_path, {"primary": fake_a.base_url, "backup": fake_b.base_url}, auth=False
        ) as (_gw, url):
            for _ in range(3):
                answer = _chat(url, "primary")
                assert answer.status_code == 200, answer.text
                assert answer.headers["x-agency-provider"] == "primary"
            assert _chat(url, "no-such-model").status_code == 404

            tab.goto(f"{url}/dashboard?refresh=0.5")
            primary = tab.locator('#providers tr[data-provider="primary"]')
            backup = tab.locator('#providers tr[data-provider="backup"]')
            for row in (primary, backup):
                expect(row).to_have_attribute("data-state", "closed")
                expect(row).to_have_attribute("data-health", "healthy")
                expect(row.locator(".health")).to_have_text("healthy")
            expect(tab.locator("#total-requests")).to_have_text("4")
            expect(tab.locator("#total-errors")).to_have_text("1")
            expect(tab.locator("#status")).to_contain_text("live")
            assert tab.locator("#chart-requests rect.bar-ok").count() >= 1
            assert tab.locator("#chart-requests rect.bar-err").count() >= 1
            assert tab.locator("#chart-latency path.line-p95").count() == 1
            tab.evaluate("window.__sameDocument = true")  # gone if the page reloads

            primary_up.close()  # fake A stops: its port refuses connections
            for _ in range(3):
                answer = _chat(url, "primary")
                assert answer.status_code == 200, answer.text
                assert answer.headers["x-agency-provider"] == "backup"

            expect(primary).to_have_attribute("data-state", "open", timeout=WAIT_MS)
            expect(primary).to_have_attribute("data-health", "down")
            expect(primary.locator(".health")).to_have_text("down")
            expect(backup).to_have_attribute("data-health", "healthy")
            expect(tab.locator("#total-requests")).to_have_text("7", timeout=WAIT_MS)
            assert tab.evaluate("window.__sameDocument") is True
            assert int(tab.evaluate("document.body.dataset.refreshes")) >= 1

            ARTIFACTS.mkdir(exist_ok=True)
            tab.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            # Checked while the gateway still answers (the page keeps polling after).
            assert problems == []


# -- auth and escaping ----------------------------------------------------------------------------
def _hostile_experiment() -> ExperimentConfig:
    arms = [ArmConfig(name=name, chain=[EVIL_PROVIDER]) for name in ("a", "<i>b</i>")]
    return ExperimentConfig(name=EVIL_EXPERIMENT, model="exp-model", arms=arms)


@contextlib.contextmanager
def _hostile_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Auth on, a master key, and a provider, a key and an experiment named like markup; one
    request made with that key. Yields the base URL."""
    monkeypatch.setenv("AGENCY_MASTER_KEY", MASTER)
    with FakeOpenAI().running() as fake:
        entries = {EVIL_PROVIDER: fake.base_url}
        experiments = [_hostile_experiment()]
        with _gateway(tmp_path, entries, auth=True, experiments=experiments) as (gw, url):
            secret, _key = gw.keys.create(EVIL_KEY)
            answer = _chat(url, EVIL_PROVIDER, secret)
            assert answer.status_code == 200, answer.text
            yield url


def test_dashboard_needs_the_master_key_and_escapes_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _hostile_gateway(tmp_path, monkeypatch) as url:
        assert httpx.get(f"{url}/dashboard/data").status_code == 401
        wrong = httpx.get(f"{url}/dashboard/data", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert MASTER not in wrong.text

        found = httpx.get(f"{url}/dashboard/data", params={"key": MASTER})
        assert found.status_code == 200
        data = found.json()
        assert list(data["providers"]) == [EVIL_PROVIDER]
        assert [k["key_name"] for k in data["traffic"]["top_keys"]] == [EVIL_KEY]
        bearer = httpx.get(f"{url}/dashboard/data", headers={"authorization": f"Bearer {MASTER}"})
        assert bearer.status_code == 200

        # Without the key: the empty frame, with the status, and no data in it.
        frame = httpx.get(f"{url}/dashboard")
        assert frame.status_code == 401
        assert frame.headers["content-type"].startswith("text/html")
        for name in (EVIL_PROVIDER, EVIL_KEY):
            assert name not in frame.text and html.escape(name) not in frame.text
        assert "no data without the master key" in frame.text

        full = httpx.get(f"{url}/dashboard", params={"key": MASTER, "refresh": "2"})
        assert full.status_code == 200
        body = full.text
        for name in (EVIL_PROVIDER, EVIL_KEY, EVIL_EXPERIMENT):
            assert html.escape(name) in body  # rendered on the server, as text
            assert name not in body  # neither as markup nor inside the embedded JSON
        assert MASTER not in body
        policy = full.headers["content-security-policy"]
        assert "script-src 'nonce-" in policy and "unsafe-inline" not in policy
        assert full.headers["cache-control"] == "no-store"

        bad = httpx.get(f"{url}/dashboard", params={"key": MASTER, "refresh": "soon"})
        assert bad.status_code == 400
        assert "refresh='soon'" in bad.text and "/dashboard?refresh=5" in bad.text


def test_dashboard_in_a_browser_shows_names_as_text_and_keeps_the_key_out_of_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, browser: Browser
) -> None:
    # Without the Content-Security-Policy: markup from a name, were it parsed, would run, so
    # this checks the page's own escaping, not the policy behind it.
    with (
        _tab(browser, bypass_csp=True) as (tab, problems),
        _hostile_gateway(tmp_path, monkeypatch) as url,
    ):
        tab.goto(f"{url}/dashboard?refresh=0.5&key={MASTER}")
        # A refresh came back: the page sent the key itself (Authorization: Bearer).
        expect(tab.locator("body")).to_have_attribute(
            "data-refreshes", re.compile(r"^[1-9]"), timeout=WAIT_MS
        )
        assert MASTER not in tab.url and tab.url.endswith("/dashboard?refresh=0.5")
        assert tab.evaluate("sessionStorage.getItem('agency.dashboard.key')") == MASTER

        expect(tab.locator("#providers tbody .name")).to_have_text(EVIL_PROVIDER)
        expect(tab.locator("#keys tbody td.name")).to_have_text(EVIL_KEY)
        expect(tab.locator("#experiments tbody td.name")).to_have_text(EVIL_EXPERIMENT)
        expect(tab.locator("#experiments tbody td").nth(2)).to_have_text("a, <i>b</i>")
        assert tab.locator("main script, main img, main b, main i").count() == 0
        assert tab.evaluate("window.__pwned") is None
        assert problems == []

        # Reloaded without ?key=, the server answers 401 with the empty frame (the browser
        # logs that status, nothing else may appear); the key the tab kept fills it.
        tab.reload()
        expect(tab.locator("#providers tbody .name")).to_have_text(EVIL_PROVIDER, timeout=WAIT_MS)
        expect(tab.locator("#status")).to_contain_text("live")
        assert len(problems) == 1 and "status of 401" in problems[0], problems


# -- server-side rendering ------------------------------------------------------------------------
def test_health_and_the_server_rendered_rows_for_every_state() -> None:
    def provider(state: str, consecutive: int = 0) -> dict[str, Any]:
        breaker = {
            "state": state,
            "failures": consecutive,
            "consecutive_failures": consecutive,
            "retry_in": 7.5 if state == "open" else 0.0,
            "trips": 0,
            "reason": "",
        }
        return {
            "spec": "openai:gpt-4o-mini",
            "breaker": breaker,
            "limits": {"rpm": 500},
            "in_flight": 2,
            "latency_ewma_ms": 1234.5,
        }

    providers = {
        "ok": provider("closed"),
        "flaky": provider("closed", consecutive=1),
        "probing": provider("half_open", consecutive=3),
        "dead": provider("open", consecutive=3),
        "nokey": {"unconfigured": "no API key: set <OPENAI_API_KEY>"},
    }
    assert {n: health_of(r) for n, r in providers.items()} == {
        "ok": "healthy",
        "flaky": "degraded",
        "probing": "probing",
        "dead": "down",
        "nokey": "unconfigured",
    }
    first = {
        "now": 1.0e9,
        "uptime_s": 3725.0,
        "in_flight": 2,
        "providers": providers,
        "traffic": None,
        "experiments": [],
    }
    body = render_page(first, refresh_s=5.0, nonce="n0nce", refusal=None)
    assert 'data-provider="dead" data-health="down" data-state="open" class="down"' in body
    assert 'data-provider="probing" data-health="probing" data-state="half_open"' in body
    assert 'data-provider="nokey" data-health="unconfigured"' in body
    assert "no API key: set &lt;OPENAI_API_KEY&gt;" in body
    assert ">7.5 s<" in body and ">rpm 500<" in body and ">1235 ms<" in body
    assert ">1 h 2 min<" in body  # uptime
    assert body.count('nonce="n0nce"') == 2  # the one style and the one script
    with pytest.raises(ValueError, match=r"refresh='0'.*from 0.25 to 3600"):
        parse_refresh("0")
    assert parse_refresh(None) == 5.0 and parse_refresh("0.5") == 0.5
