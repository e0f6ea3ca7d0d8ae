"""`agency.stats.Stats`: counts, tokens, cost, latency percentiles, state, views."""

from __future__ import annotations

import subprocess
import sys
import threading
import types
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table

from agency import errors
from agency.stats import DEFAULT_MAX_LATENCY_SAMPLES, Stats, failure_kind


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _usage(inp: int, out: int, cache_read: int = 0, reasoning: int = 0) -> dict[str, Any]:
    """A LangChain ``UsageMetadata`` dict."""
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "total_tokens": inp + out,
        "input_token_details": {"cache_read": cache_read, "cache_creation": 7},
        "output_token_details": {"reasoning": reasoning},
    }


# --------------------------------------------------------------------------- failure kinds


@pytest.mark.parametrize(
    ("cls", "kind"),
    [
        (errors.RateLimited, "rate_limited"),
        (errors.ProviderUnavailable, "unavailable"),
        (errors.Timeout, "timeout"),
        (errors.ConnectionFailed, "connection"),
        (errors.CircuitOpen, "circuit_open"),
        (errors.MalformedResponse, "malformed"),
        (errors.BadRequest, "bad_request"),
        (errors.ContextWindowExceeded, "context_window"),
        (errors.ContentFiltered, "content_filter"),
        (errors.AuthenticationError, "auth"),
        (errors.PermissionDenied, "permission_denied"),
        (errors.ModelNotFound, "model_not_found"),
        (errors.BudgetExceeded, "budget_exceeded"),
        (errors.AllProvidersFailed, "all_providers_failed"),
    ],
)
def test_failure_kind_of_agency_errors(cls: type[BaseException], kind: str) -> None:
    assert failure_kind(cls) == kind


def test_failure_kind_of_instances_subclasses_and_foreign_errors() -> None:
    class MyThrottle(errors.RateLimited):
        pass

    class HTTPStatusProblem(Exception):
        pass

    assert failure_kind(errors.RateLimited("slow down", retry_after=1.0)) == "rate_limited"
    assert failure_kind(errors.CircuitOpen("open")) == "circuit_open"  # not its base's kind
    assert failure_kind(MyThrottle("x")) == "rate_limited"
    assert failure_kind(ValueError("x")) == "value_error"
    assert failure_kind(HTTPStatusProblem()) == "http_status_problem"
    assert failure_kind(httpx.ReadTimeout("x")) == "read_timeout"
    assert failure_kind(TimeoutError()) == "timeout_error"  # the builtin is not agency's


# --------------------------------------------------------------------------- counting


def test_counts_per_provider_role_and_total() -> None:
    stats = Stats(clock=FakeClock())
    stats.record(provider="openai", role="fast", ok=True, usage=_usage(10, 5, 3, 2), cost=0.25)
    stats.record(provider="openai", role="fast", ok=False, error=errors.RateLimited("429"))
    stats.record(provider="openai", role="fast", ok=True, retry=True, usage=_usage(4, 1))
    stats.record(
        provider="anthropic", role="fast", ok=False, error=errors.Timeout("t"), fallback=True
    )
    stats.record(provider="anthropic", ok=True, fallback=True, cost=0.5)
    snap = stats.snapshot()

    assert set(snap) == {"providers", "roles", "total"}
    openai = snap["providers"]["openai"]
    assert (openai["requests"], openai["successes"], openai["failures"]) == (3, 2, 1)
    assert openai["failures_by_kind"] == {"rate_limited": 1}
    assert (openai["retries"], openai["fallbacks"]) == (1, 0)
    assert (openai["input_tokens"], openai["output_tokens"]) == (14, 6)
    assert (openai["cached_tokens"], openai["reasoning_tokens"]) == (3, 2)
    assert openai["cost"] == pytest.approx(0.25)

    anthropic = snap["providers"]["anthropic"]
    assert (anthropic["requests"], anthropic["successes"], anthropic["failures"]) == (2, 1, 1)
    assert anthropic["failures_by_kind"] == {"timeout": 1}
    assert anthropic["fallbacks"] == 2
    assert isinstance(anthropic["cost"], float)
    assert anthropic["cost"] == pytest.approx(0.5)

    assert list(snap["roles"]) == ["fast"]  # role=None is counted in no role
    fast = snap["roles"]["fast"]
    assert (fast["requests"], fast["failures"], fast["cost"]) == (4, 2, pytest.approx(0.25))
    assert fast["failures_by_kind"] == {"rate_limited": 1, "timeout": 1}

    total = snap["total"]
    assert (total["requests"], total["successes"], total["failures"]) == (5, 3, 2)
    assert (total["retries"], total["fallbacks"]) == (1, 2)
    assert total["cost"] == pytest.approx(0.75)


def test_failure_without_error_is_unknown_and_success_with_error_is_refused() -> None:
    stats = Stats()
    stats.record(provider="p", ok=False)
    assert stats.snapshot()["providers"]["p"]["failures_by_kind"] == {"unknown": 1}
    with pytest.raises(ValueError, match="no error"):
        stats.record(provider="p", ok=True, error=errors.Timeout("t"))
    assert stats.snapshot()["total"]["requests"] == 1


def test_usage_with_missing_or_null_details_counts_what_is_there() -> None:
    stats = Stats()
    stats.record(provider="p", ok=True, usage={"input_tokens": 3, "output_tokens": 2})
    stats.record(
        provider="p",
        ok=True,
        usage={"input_tokens": 1, "output_tokens": None, "input_token_details": None},
    )
    stats.record(provider="p", ok=True, usage=None)
    row = stats.snapshot()["providers"]["p"]
    assert (row["input_tokens"], row["output_tokens"]) == (4, 2)
    assert (row["cached_tokens"], row["reasoning_tokens"]) == (0, 0)
    assert row["cost"] == 0.0


def test_empty_snapshot_has_zeroed_total_and_no_latency() -> None:
    snap = Stats().snapshot()
    assert snap["providers"] == {} and snap["roles"] == {}
    assert snap["total"]["requests"] == 0
    assert snap["total"]["latency_p50_ms"] is None
    assert snap["total"]["latency_p95_ms"] is None
    assert snap["total"]["last_success_age_s"] is None


def test_rejects_an_empty_reservoir() -> None:
    with pytest.raises(ValueError, match="max_latency_samples"):
        Stats(max_latency_samples=0)
    assert DEFAULT_MAX_LATENCY_SAMPLES == 2048


# --------------------------------------------------------------------------- latency


def _is_nearest_rank(value: float, samples: list[float], percent: int) -> bool:
    """The defining property of the nearest-rank percentile: an observed sample with at least
    ``percent``% of the samples at or below it, and fewer than that strictly below it."""
    need = percent / 100 * len(samples)
    at_or_below = sum(1 for s in samples if s <= value)
    below = sum(1 for s in samples if s < value)
    return value in samples and at_or_below >= need and below < need


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=600, allow_nan=False), min_size=1, max_size=80))
def test_percentiles_are_nearest_rank(latencies: list[float]) -> None:
    stats = Stats()
    for latency in latencies:
        stats.record(provider="p", ok=True, latency_s=latency)
    row = stats.snapshot()["providers"]["p"]
    for key, percent in (("latency_p50_ms", 50), ("latency_p95_ms", 95)):
        # The sample(s) reported: same ``s * 1000.0`` computation, so equality is exact.
        matches = {s for s in latencies if s * 1000.0 == row[key]}
        assert matches, (key, row[key])
        assert all(_is_nearest_rank(s, latencies, percent) for s in matches)
    assert row["latency_p50_ms"] <= row["latency_p95_ms"]


def test_percentiles_of_known_samples() -> None:
    stats = Stats()
    for ms in range(1, 101):  # 1..100 ms in a shuffled order (37 is coprime to 100)
        stats.record(provider="p", ok=True, latency_s=((ms * 37) % 100 + 1) / 1000)
    row = stats.snapshot()["providers"]["p"]
    assert row["latency_p50_ms"] == pytest.approx(50.0)
    assert row["latency_p95_ms"] == pytest.approx(95.0)


def test_latency_reservoir_keeps_only_the_most_recent_samples() -> None:
    stats = Stats(max_latency_samples=3)
    for seconds in range(1, 11):  # 1 s .. 10 s; only 8, 9, 10 stay
        stats.record(provider="p", role="r", ok=True, latency_s=float(seconds))
    stats.record(provider="p", ok=True)  # no latency: not a sample
    snap = stats.snapshot()
    for row in (snap["providers"]["p"], snap["roles"]["r"], snap["total"]):
        assert row["latency_p50_ms"] == 9000.0
        assert row["latency_p95_ms"] == 10000.0
    assert snap["providers"]["p"]["requests"] == 11


def test_single_sample_is_both_percentiles() -> None:
    stats = Stats()
    stats.record(provider="p", ok=False, error=errors.Timeout("t"), latency_s=0.25)
    row = stats.snapshot()["providers"]["p"]
    assert row["latency_p50_ms"] == row["latency_p95_ms"] == 250.0


# --------------------------------------------------------------------------- clock, state, reset


def test_ages_follow_the_injected_clock() -> None:
    clock = FakeClock(100.0)
    stats = Stats(clock=clock)
    stats.record(provider="p", ok=True)
    clock.now = 130.0
    stats.record(provider="p", ok=False, error=errors.ConnectionFailed("c"))
    clock.now = 145.5
    row = stats.snapshot()["providers"]["p"]
    assert row["last_success_age_s"] == pytest.approx(45.5)
    assert row["last_failure_age_s"] == pytest.approx(15.5)


def test_state_provider_is_merged_into_provider_rows_only() -> None:
    calls: list[str] = []

    def state(name: str) -> dict[str, Any]:
        calls.append(name)
        return {"breaker": "open" if name == "a" else "closed", "failures": 9}

    stats = Stats()
    stats.set_state_provider(state)
    stats.record(provider="a", role="r", ok=False, error=errors.ProviderUnavailable("503"))
    stats.record(provider="b", ok=True)
    snap = stats.snapshot()
    assert sorted(calls) == ["a", "b"]
    assert snap["providers"]["a"]["breaker"] == "open"
    assert snap["providers"]["b"]["breaker"] == "closed"
    # A state field named like a counter is renamed; the counter stays true.
    assert snap["providers"]["a"]["failures"] == 1
    assert snap["providers"]["a"]["state_failures"] == 9
    assert "breaker" not in snap["roles"]["r"] and "breaker" not in snap["total"]
    stats.set_state_provider(None)
    assert "breaker" not in stats.snapshot()["providers"]["a"]


def test_a_raising_state_provider_does_not_break_the_snapshot() -> None:
    def state(name: str) -> dict[str, Any]:
        raise RuntimeError(f"no breaker for {name}")

    stats = Stats()
    stats.set_state_provider(state)
    stats.record(provider="a", ok=True)
    row = stats.snapshot()["providers"]["a"]
    assert row["state_error"] == "RuntimeError: no breaker for a"
    assert row["requests"] == 1


def test_reset_forgets_counts_but_keeps_the_state_provider() -> None:
    stats = Stats()
    stats.set_state_provider(lambda name: {"breaker": "closed"})
    stats.record(provider="a", role="r", ok=True, latency_s=1.0, cost=1.0)
    stats.reset()
    snap = stats.snapshot()
    assert snap["providers"] == {} and snap["roles"] == {}
    assert snap["total"]["requests"] == 0 and snap["total"]["latency_p50_ms"] is None
    stats.record(provider="a", ok=True)
    assert stats.snapshot()["providers"]["a"]["breaker"] == "closed"
    assert repr(stats) == "Stats(providers=1, requests=1)"


def test_snapshot_is_detached_from_later_records() -> None:
    stats = Stats()
    stats.record(provider="a", ok=False, error=errors.Timeout("t"))
    snap = stats.snapshot()
    snap["providers"]["a"]["failures_by_kind"]["timeout"] = 99
    stats.record(provider="a", ok=False, error=errors.Timeout("t"))
    assert snap["providers"]["a"]["requests"] == 1
    assert stats.snapshot()["providers"]["a"]["failures_by_kind"] == {"timeout": 2}


# --------------------------------------------------------------------------- invariants


_ATTEMPTS = st.lists(
    st.tuples(
        st.sampled_from(["openai", "anthropic", "groq"]),
        st.sampled_from([None, "fast", "smart"]),
        st.sampled_from([None, errors.RateLimited, errors.Timeout, errors.CircuitOpen]),
        st.integers(0, 1000),
        st.booleans(),
        st.booleans(),
    ),
    max_size=60,
)


@settings(max_examples=100, deadline=None)
@given(_ATTEMPTS)
def test_rows_add_up(attempts: list[tuple[Any, ...]]) -> None:
    stats = Stats()
    for provider, role, error_cls, tokens, retry, fallback in attempts:
        error = None if error_cls is None else error_cls("x")
        stats.record(
            provider=provider,
            role=role,
            ok=error is None,
            error=error,
            usage={"input_tokens": tokens, "output_tokens": tokens // 2},
            retry=retry,
            fallback=fallback,
        )
    snap = stats.snapshot()
    total = snap["total"]
    assert total["requests"] == len(attempts)
    for field in ("requests", "successes", "failures", "retries", "fallbacks", "input_tokens"):
        assert total[field] == sum(row[field] for row in snap["providers"].values())
        assert total[field] >= sum(row[field] for row in snap["roles"].values())
    for row in [total, *snap["providers"].values(), *snap["roles"].values()]:
        assert row["requests"] == row["successes"] + row["failures"]
        assert sum(row["failures_by_kind"].values()) == row["failures"]
    roled = sum(1 for a in attempts if a[1] is not None)
    assert sum(row["requests"] for row in snap["roles"].values()) == roled


def test_concurrent_records_are_all_counted() -> None:
    stats = Stats()
    threads_n, per_thread = 8, 2000
    start = threading.Barrier(threads_n)

    def work(i: int) -> None:
        start.wait()
        for _ in range(per_thread):
            stats.record(
                provider=f"p{i % 2}", role="r", ok=True, usage=_usage(1, 1), cost=1.0, retry=True
            )

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snap = stats.snapshot()
    expected = threads_n * per_thread
    assert snap["total"]["requests"] == snap["total"]["retries"] == expected
    assert snap["total"]["input_tokens"] == expected
    assert snap["total"]["cost"] == float(expected)
    assert snap["roles"]["r"]["requests"] == expected
    assert snap["providers"]["p0"]["requests"] == snap["providers"]["p1"]["requests"]


# --------------------------------------------------------------------------- views


def _sample_stats() -> Stats:
    stats = Stats()
    stats.set_state_provider(lambda name: {"breaker": "half_open"})
    stats.record(provider="openai", role="fast", ok=True, latency_s=0.2, usage=_usage(10, 4))
    stats.record(provider="openai", role="fast", ok=False, error=errors.RateLimited("x"))
    stats.record(provider="groq", role="cheap", ok=False, error=errors.Timeout("t"))
    return stats


def test_to_pandas_without_pandas_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # makes ``import pandas`` fail
    with pytest.raises(ImportError, match="pip install pandas"):
        _sample_stats().to_pandas()


def test_to_pandas_builds_flat_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Against a stand-in pandas that records what it is given."""
    made: dict[str, Any] = {}
    fake = types.ModuleType("pandas")

    def index(values: list[str], name: str) -> tuple[str, list[str]]:
        return (name, values)

    def data_frame(records: list[dict[str, Any]], index: Any) -> str:
        made.update(records=records, index=index)
        return "frame"

    fake.Index = index  # type: ignore[attr-defined]
    fake.DataFrame = data_frame  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pandas", fake)

    stats = _sample_stats()
    assert stats.to_pandas() == "frame"
    assert made["index"] == ("provider", ["openai", "groq"])
    openai, groq = made["records"]
    assert "failures_by_kind" not in openai
    assert (openai["failures_rate_limited"], openai["failures_timeout"]) == (1, 0)
    assert (groq["failures_rate_limited"], groq["failures_timeout"]) == (0, 1)
    assert openai["breaker"] == "half_open" and openai["input_tokens"] == 10

    stats.to_pandas(by="role")
    assert made["index"] == ("role", ["fast", "cheap"])
    assert "breaker" not in made["records"][0]
    with pytest.raises(ValueError, match="by must be"):
        stats.to_pandas(by="model")  # type: ignore[arg-type]


def test_to_pandas_with_real_pandas() -> None:
    pandas = pytest.importorskip("pandas")
    frame = _sample_stats().to_pandas()
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame.index) == ["openai", "groq"] and frame.index.name == "provider"
    assert frame.loc["openai", "requests"] == 2
    assert frame.loc["groq", "failures_timeout"] == 1


def test_rich_table_shows_providers_roles_total_and_state() -> None:
    stats = _sample_stats()
    table = stats.__rich__()
    assert isinstance(table, Table)
    console = Console(record=True, width=300, color_system=None)
    console.print(stats)  # rich finds __rich__ itself
    text = console.export_text()
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if "│" in line}
    assert {"openai", "groq", "fast", "cheap", "total"} <= set(lines)
    assert "rate_limited 1" in lines["openai"] and "breaker=half_open" in lines["openai"]
    assert "timeout 1" in lines["groq"]
    assert "200.0" in lines["openai"]  # p50 ms
    assert "breaker" not in lines["fast"]
    cells = [cell.strip() for cell in lines["total"].split("│")]
    assert cells[2:5] == ["3", "1", "2"]  # requests, ok, failed


def test_html_table_escapes_everything() -> None:
    stats = Stats()
    stats.set_state_provider(lambda name: {"note": "<b>&"})
    stats.record(provider="<script>alert(1)</script>", role="r&d", ok=True, latency_s=0.01)
    page = stats._repr_html_()
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "r&amp;d" in page and "note=&lt;b&gt;&amp;" in page
    assert page.startswith("<table>") and page.count("<tr>") == 4  # head, provider, role, total
    assert "10.0" in page  # p50 ms


def test_importing_stats_loads_neither_pandas_nor_rich() -> None:
    code = (
        "import sys, agency.stats; s = agency.stats.Stats(); s.record(provider='p', ok=True); "
        "s.snapshot(); print(sorted(m for m in ('pandas', 'rich', 'rich.table') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
