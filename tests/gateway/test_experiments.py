"""A/B tests of providers: arm assignment, and the statistics of `agency.gateway.experiments`."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections import Counter
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from agency.gateway.config import ArmConfig, ExperimentConfig
from agency.gateway.experiments import (
    Estimate,
    ExperimentReport,
    Experiments,
    build_report,
    render_report,
)


def _exp(
    name: str = "cheap-vs-strong",
    weights: tuple[float, ...] = (1.0, 1.0),
    sticky: str = "key",
    model: str = "role:code",
    enabled: bool = True,
) -> ExperimentConfig:
    arms = [
        ArmConfig(name=chr(ord("a") + i), chain=[f"p{i}"], weight=w) for i, w in enumerate(weights)
    ]
    return ExperimentConfig(name=name, model=model, arms=arms, sticky=sticky, enabled=enabled)  # type: ignore[arg-type]


# -- assignment -------------------------------------------------------------------------------
def test_match_takes_the_first_enabled_experiment_for_the_model() -> None:
    off = _exp("off", enabled=False)
    first, second, other = _exp("first"), _exp("second"), _exp("other", model="auto")
    experiments = Experiments([off, first, second, other])
    assert experiments.match("role:code") is first
    assert experiments.match("auto") is other
    assert experiments.match("openai:gpt-4o") is None
    assert experiments.names == ("off", "first", "second", "other")
    assert list(experiments) == [off, first, second, other]
    assert experiments.get("off") is off and experiments.get("nope") is None


def test_assignment_is_sticky_per_key_and_ignores_the_request() -> None:
    exp = _exp()
    experiments = Experiments([exp])
    for key in (f"key-{i}" for i in range(200)):
        arms = {experiments.assign(exp, key_id=key, user=None, request_id=f"r{j}").name
                for j in range(5)}
        assert len(arms) == 1
        # A fresh index (another process, a restart) gives the same arm.
        again = Experiments([exp]).assign(exp, key_id=key, user="u", request_id="other")
        assert again.name == arms.pop()


def test_sticky_user_falls_back_to_the_key_then_to_the_request() -> None:
    exp = _exp(sticky="user")
    ex = Experiments([exp])
    users = [f"user-{i}" for i in range(300)]
    by_user = [ex.assign(exp, key_id="k1", user=u, request_id="r").name for u in users]
    assert len(set(by_user)) == 2  # the user, not the shared key, decides
    for i, user in enumerate(users):
        assert ex.assign(exp, key_id=f"k{i}", user=user, request_id=f"r{i}").name == by_user[i]
    # No user: the key decides (the same as a sticky="key" experiment of the same name).
    as_key = _exp(sticky="key")
    for i in range(100):
        expected = ex.assign(as_key, key_id=f"k{i}", user=None, request_id="x").name
        assert ex.assign(exp, key_id=f"k{i}", user=None, request_id=f"r{i}").name == expected
        # Neither: the request id decides.
        assert (
            ex.assign(exp, key_id=None, user=None, request_id=f"k{i}").name
            == ex.assign(as_key, key_id=f"k{i}", user=None, request_id="unused").name
        )


def test_sticky_request_draws_each_request_anew() -> None:
    exp = _exp(sticky="request")
    ex = Experiments([exp])
    arms = {ex.assign(exp, key_id="k1", user="u1", request_id=f"r{i}").name for i in range(100)}
    assert arms == {"a", "b"}


def test_experiments_with_other_names_shuffle_independently() -> None:
    one, two = _exp("one"), _exp("two")
    ex = Experiments([one, two])
    keys = [f"k{i}" for i in range(4000)]
    pairs = Counter(
        (ex.assign(one, key_id=k, user=None, request_id="r").name,
         ex.assign(two, key_id=k, user=None, request_id="r").name)
        for k in keys
    )
    # Independent halves: each of the four combinations near 1,000 (sd ~27).
    assert set(pairs) == {("a", "a"), ("a", "b"), ("b", "a"), ("b", "b")}
    assert all(abs(count - 1000) < 5 * math.sqrt(4000 * 0.25 * 0.75) for count in pairs.values())


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.0, 3.0), (1.0, 1.0, 2.0), (0.1, 5.0, 2.5)])
def test_shares_follow_the_weights(weights: tuple[float, ...]) -> None:
    exp = _exp(weights=weights)
    ex = Experiments([exp])
    n = 20_000
    counts = Counter(ex.assign(exp, key_id=f"id-{i}", user=None, request_id="r").name
                     for i in range(n))
    for i, weight in enumerate(weights):
        share = weight / sum(weights)
        sigma = math.sqrt(n * share * (1 - share))
        assert abs(counts[chr(ord("a") + i)] - n * share) < 5 * sigma, (counts, weights)


def test_assignment_does_not_depend_on_pythons_hash_seed() -> None:
    code = (
        "from agency.gateway.config import ArmConfig, ExperimentConfig\n"
        "from agency.gateway.experiments import Experiments\n"
        "exp = ExperimentConfig(name='e', model='m', arms=[ArmConfig(name='a', chain=['x']),"
        " ArmConfig(name='b', chain=['y'], weight=2)])\n"
        "ex = Experiments([exp])\n"
        "print(''.join(ex.assign(exp, key_id=f'k{i}', user=None, request_id='r').name"
        " for i in range(64)))\n"
    )
    seen = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    exp = ExperimentConfig(
        name="e", model="m",
        arms=[ArmConfig(name="a", chain=["x"]), ArmConfig(name="b", chain=["y"], weight=2)],
    )
    here = "".join(
        Experiments([exp]).assign(exp, key_id=f"k{i}", user=None, request_id="r").name
        for i in range(64)
    )
    assert seen == {here}
    assert set(here) == {"a", "b"}


# -- the report -------------------------------------------------------------------------------
def _rows(
    rng: np.random.Generator,
    arm: str,
    n: int,
    *,
    error_rate: float = 0.05,
    latency_log_mean: float = 6.0,
    cost_scale: float = 0.001,
    score_mean: float = 0.6,
    feedback_share: float = 0.5,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """``n`` audit rows of ``arm`` and the feedback scores of some of them."""
    rows, scores = [], {}
    for i in range(n):
        rid = f"{arm}-{i}"
        rows.append({
            "request_id": rid, "experiment": "x", "arm": arm,
            "status": 502 if rng.random() < error_rate else 200,
            "latency_ms": float(rng.lognormal(latency_log_mean, 0.5)),
            "cost_usd": float(rng.gamma(2.0, cost_scale)),
        })
        if rng.random() < feedback_share:
            scores[rid] = float(rng.normal(score_mean, 0.25))
    return rows, scores


def _estimates(report: ExperimentReport) -> list[Estimate]:
    return [
        e
        for arm in report.arms
        for e in (arm.error_rate, arm.latency_p50_ms, arm.latency_p95_ms, arm.cost_usd,
                  arm.feedback)
    ]


def test_a_planted_difference_is_found_on_every_metric() -> None:
    rng = np.random.default_rng(7)
    a_rows, a_fb = _rows(rng, "a", 800, error_rate=0.03)
    b_rows, b_fb = _rows(
        rng, "b", 800, error_rate=0.12, latency_log_mean=6.4, cost_scale=0.0015, score_mean=0.75
    )
    report = build_report("x", a_rows + b_rows, {**a_fb, **b_fb})
    assert [arm.name for arm in report.arms] == ["a", "b"]
    assert all(c.significant and c.higher for c in report.comparisons)
    assert {c.metric for c in report.comparisons} == {"error_rate", "latency", "cost", "feedback"}
    tests = {c.metric: c.test for c in report.comparisons}
    assert tests["error_rate"] == "two-proportion z-test"
    assert tests["latency"] == "Mann-Whitney U (normal approximation)"
    assert tests["cost"] == tests["feedback"] == "Welch's t-test"
    verdicts = "\n".join(report.verdicts)
    assert re.search(r"^b: error rate higher than a \(\d+\.\d% vs \d\.\d%, p[<=]0\.\d{3}\)$",
                     verdicts, re.M), verdicts
    assert re.search(r"^b: latency higher than a \(p50 \d+ ms vs \d+ ms, p", verdicts, re.M)
    assert re.search(r"^b: cost per request higher than a \(\$0\.00\d+ vs \$", verdicts, re.M)
    assert re.search(r"^b: feedback higher than a \(", verdicts, re.M)
    # The other way round, the control is higher: "lower".
    flipped = build_report("x", a_rows + b_rows, {**a_fb, **b_fb}, arms=["b", "a"])
    assert all(c.significant and c.higher is False for c in flipped.comparisons)
    assert any(v.startswith("a: error rate lower than b") for v in flipped.verdicts)


def test_aa_experiments_reject_at_about_alpha() -> None:
    """50 seeded A/A experiments: each test's false-positive rate near 5 %, never far above."""
    rejected: Counter[str] = Counter()
    for seed in range(50):
        rng = np.random.default_rng(1000 + seed)
        a_rows, a_fb = _rows(rng, "a", 150, error_rate=0.1)
        b_rows, b_fb = _rows(rng, "b", 150, error_rate=0.1)
        report = build_report("x", a_rows + b_rows, {**a_fb, **b_fb}, seed=seed, resamples=200)
        for c in report.comparisons:
            assert c.p_value is not None and 0 < c.p_value <= 1
            rejected[c.metric] += c.significant
    # Binomial(50, 0.05): mean 2.5, sd 1.5; 9 or more has probability ~0.002 per metric.
    assert all(count <= 8 for count in rejected.values()), rejected
    # Over all 200 tests: mean 10; a test that never rejects (or always does) fails here.
    assert 2 <= sum(rejected.values()) <= 22, rejected


def test_identical_data_are_not_significant_and_say_so() -> None:
    rng = np.random.default_rng(3)
    rows, fb = _rows(rng, "a", 300)
    twin = [{**row, "arm": "b", "request_id": "b" + row["request_id"]} for row in rows]
    fb_b = {"b" + k: v for k, v in fb.items()}
    report = build_report("x", rows + twin, {**fb, **fb_b})
    assert all(c.p_value is not None and c.p_value > 0.9 for c in report.comparisons)
    assert not any(c.significant for c in report.comparisons)
    assert report.verdicts == (
        "no significant difference in error rate",
        "no significant difference in latency",
        "no significant difference in cost per request",
        "no significant difference in feedback",
    )


@pytest.mark.parametrize(
    ("errors", "n", "low", "high"),
    [  # Newcombe (1998), Stat. Med. 17:857, table I, method 3 (Wilson score)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
    ],
)
def test_wilson_interval_matches_the_literature(
    errors: int, n: int, low: float, high: float
) -> None:
    rows = [{"request_id": f"r{i}", "arm": "a", "status": 500 if i < errors else 200}
            for i in range(n)]
    rate = build_report("x", rows, {}).arms[0].error_rate
    assert rate.value == pytest.approx(errors / n)
    assert rate.low == pytest.approx(low, abs=5e-5)
    assert rate.high == pytest.approx(high, abs=5e-5)
    assert rate.n == n


def test_small_counts_use_fishers_exact_test() -> None:
    rows = [{"request_id": f"a{i}", "arm": "a", "status": 200} for i in range(10)]
    rows += [{"request_id": f"b{i}", "arm": "b", "status": 500 if i < 5 else 200}
             for i in range(10)]
    comparison = build_report("x", rows, {}).comparisons[0]
    assert comparison.metric == "error_rate" and comparison.test == "Fisher's exact test"
    # Two-sided: (C(10,0)C(10,5) + C(10,5)C(10,0)) / C(20,5) = 504 / 15504.
    assert comparison.p_value == pytest.approx(504 / 15504)
    assert comparison.significant
    assert comparison.summary == "b: error rate higher than a (50.0% vs 0.0%, p=0.033)"


def test_mean_interval_is_students_t() -> None:
    rows = [{"request_id": f"r{i}", "arm": "a", "status": 200, "cost_usd": float(c)}
            for i, c in enumerate([1, 2, 3, 4, 5])]
    rows.append({"request_id": "r9", "arm": "a", "status": 200, "cost_usd": None})
    arm = build_report("x", rows, {}).arms[0]
    # mean 3, s = 1.5811, t(0.975, 4) = 2.7764: 3 -/+ 1.9633
    assert (arm.cost_usd.value, arm.cost_usd.n) == (3.0, 5)
    assert arm.cost_usd.low == pytest.approx(1.0367, abs=1e-4)
    assert arm.cost_usd.high == pytest.approx(4.9633, abs=1e-4)
    assert arm.cost_unknown == 1 and arm.requests == 6


def test_intervals_contain_their_estimates() -> None:
    rng = np.random.default_rng(11)
    for n in (2, 3, 5, 17, 200):
        rows, fb = _rows(rng, "a", n, error_rate=0.3, feedback_share=1.0)
        more, fb_b = _rows(rng, "b", n, error_rate=0.0, feedback_share=1.0)
        for row in rows:  # heavy tails: one very slow request in three
            if rng.random() < 0.3:
                row["latency_ms"] *= 50
        report = build_report("x", rows + more, {**fb, **fb_b}, seed=n)
        for e in _estimates(report):
            if e.n >= 2:
                assert e.low is not None and e.high is not None and e.value is not None
                assert e.low <= e.value <= e.high, (n, e)


def test_latency_is_of_successful_requests_and_small_samples_are_permuted() -> None:
    rows = [{"request_id": f"a{i}", "arm": "a", "status": 200, "latency_ms": 100.0 + i}
            for i in range(9)]
    rows += [{"request_id": f"b{i}", "arm": "b", "status": 200, "latency_ms": 200.0 + i}
             for i in range(9)]
    rows.append({"request_id": "a-fail", "arm": "a", "status": 504, "latency_ms": 30_000.0})
    report = build_report("x", rows, {})
    a = report.arms[0]
    assert a.latency_p50_ms.value == 104.0 and a.latency_p50_ms.n == 9
    latency = next(c for c in report.comparisons if c.metric == "latency")
    assert latency.test == "Mann-Whitney U (permutation)"
    # Complete separation: the exact p is 2/C(18,9); 4,000 permutations bound it by 1/4001.
    assert latency.p_value == pytest.approx(1 / 4001)
    assert latency.significant and latency.higher


def test_large_samples_use_order_statistic_intervals() -> None:
    rng = np.random.default_rng(5)
    rows = [{"request_id": f"r{i}", "arm": "a", "status": 200, "latency_ms": float(v)}
            for i, v in enumerate(rng.uniform(0, 1000, 30_000))]
    arm = build_report("x", rows, {}).arms[0]
    p50, p95 = arm.latency_p50_ms, arm.latency_p95_ms
    assert p50.low is not None and p50.high is not None
    assert p95.low is not None and p95.high is not None
    assert p50.low < 500 < p50.high and p50.high - p50.low < 25  # sd of the median ~ 2.9
    assert p95.low < 950 < p95.high and p95.high - p95.low < 10


def test_empty_and_tiny_arms_show_na_and_render() -> None:
    rows = [{"request_id": "a1", "arm": "a", "status": 200, "latency_ms": 10.0,
             "cost_usd": 0.001}]
    report = build_report("x", rows, {"a1": 1.0}, arms=["a", "b"])
    a, b = report.arms
    assert b.requests == 0 and b.error_rate == Estimate(None, None, None, 0)
    assert b.latency_p50_ms.value is None and b.cost_usd.value is None
    assert a.latency_p50_ms == Estimate(10.0, None, None, 1)
    assert a.cost_usd == Estimate(0.001, None, None, 1) and a.feedback.n == 1
    assert all(c.p_value is None and not c.significant for c in report.comparisons)
    assert "not enough data to compare latency" in report.verdicts
    console = Console(record=True, width=200)
    console.print(render_report(report))
    text = console.export_text()
    assert "n/a" in text and "not enough data to compare error rate" in text
    json.dumps(report.to_dict())


def test_no_rows_at_all() -> None:
    report = build_report("x", [], {})
    assert report.arms == () and report.comparisons == ()
    assert report.verdicts == ("no requests recorded for this experiment",)
    console = Console(record=True, width=120)
    console.print(render_report(report))
    assert "no requests recorded" in console.export_text()


def test_rows_of_other_experiments_and_without_arm_are_left_out() -> None:
    rows: list[dict[str, Any]] = [
        {"request_id": "1", "experiment": "x", "arm": "a", "status": 200},
        {"request_id": "2", "experiment": "y", "arm": "a", "status": 500},
        {"request_id": "3", "experiment": "x", "arm": None, "status": 500},
    ]
    report = build_report("x", rows, {})
    assert [(a.name, a.requests, a.errors) for a in report.arms] == [("a", 1, 0)]
    assert report.unassigned == 1


def test_same_seed_same_report_and_bad_confidence_is_refused() -> None:
    rng = np.random.default_rng(2)
    rows, fb = _rows(rng, "a", 60)
    more, fb_b = _rows(rng, "b", 60)
    first = build_report("x", rows + more, {**fb, **fb_b}, seed=4)
    assert build_report("x", rows + more, {**fb, **fb_b}, seed=4) == first
    narrow = build_report("x", rows + more, {**fb, **fb_b}, seed=4, confidence=0.8)
    assert narrow.arms[0].cost_usd.low > first.arms[0].cost_usd.low  # type: ignore[operator]
    with pytest.raises(ValueError, match="confidence=95"):
        build_report("x", rows, fb, confidence=95)


def test_render_shows_arms_tests_and_verdicts() -> None:
    rng = np.random.default_rng(9)
    rows, fb = _rows(rng, "[bold]a", 100)  # a name that looks like markup is shown as written
    more, fb_b = _rows(rng, "b", 100, error_rate=0.4)
    report = build_report("x", rows + more, {**fb, **fb_b})
    console = Console(record=True, width=220)
    console.print(render_report(report))
    text = console.export_text()
    assert "experiment x (95% intervals)" in text and "[bold]a" in text
    assert "two-proportion z-test" in text and "Welch's t-test" in text
    assert "b: error rate higher than [bold]a" in text
