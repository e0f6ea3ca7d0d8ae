"""The statistics of an experiment's report (`agency.gateway.experiments`), numpy only.

Intervals: Wilson's for a proportion, Student's t for a mean, bootstrap percentile intervals
for latency quantiles (order-statistic intervals past `_BOOTSTRAP_MAX` values). Tests: a
two-proportion z-test or Fisher's exact test, Mann-Whitney U (normal approximation with tie and
continuity corrections) or a permutation test for small samples, Welch's t-test; the t
distribution through the regularized incomplete beta function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np

__all__ = [
    "Estimate",
    "mann_whitney",
    "mean_estimate",
    "proportions",
    "quantile_estimates",
    "welch",
    "wilson",
]

_BOOTSTRAP_MAX = 20_000  # above it, order-statistic intervals: resampling would cost seconds
_BOOTSTRAP_CELLS = 2_000_000  # resampled values held at once (memory bound of the bootstrap)
_PERMUTATIONS = 4_000
_SMALL_RANK_SAMPLE = 10


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval."""

    value: float | None
    """The estimate; ``None`` when there is no data."""
    low: float | None
    """Lower bound of the interval; ``None`` when the data are too few for one."""
    high: float | None
    """Upper bound of the interval; ``None`` when the data are too few for one."""
    n: int
    """How many observations it rests on."""


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _normal_p(z: float) -> float:
    return 2.0 * (1.0 - NormalDist().cdf(abs(z)))


def wilson(errors: int, n: int, confidence: float) -> Estimate:
    if n == 0:
        return Estimate(None, None, None, 0)
    p, z = errors / n, _z(confidence)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # Exact bounds at the edges: rounding would leave 1e-17 where the formula gives 0.
    low = 0.0 if errors == 0 else max(0.0, centre - half)
    return Estimate(p, low, 1.0 if errors == n else min(1.0, centre + half), n)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for aa in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _t_p(t: float, df: float) -> float:
    """Two-sided p-value of ``t`` under Student's t with ``df`` degrees of freedom."""
    return _betainc(df / 2, 0.5, df / (df + t * t))


@lru_cache(maxsize=256)
def _t_quantile(confidence: float, df: float) -> float:
    """The t with ``P(|T| <= t) = confidence`` (bisection on `_t_p`, which falls with t)."""
    alpha, low, high = 1 - confidence, 0.0, 1.0
    while _t_p(high, df) > alpha:
        low, high = high, high * 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_p(mid, df) > alpha else (low, mid)
        if high - low < 1e-12 * high:
            break
    return (low + high) / 2


def mean_estimate(x: np.ndarray, confidence: float) -> Estimate:
    n = len(x)
    if n == 0:
        return Estimate(None, None, None, 0)
    mean = float(x.mean())
    if n < 2:
        return Estimate(mean, None, None, n)
    half = _t_quantile(confidence, float(n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n)


def quantile_estimates(
    x: np.ndarray, confidence: float, rng: np.random.Generator, resamples: int
) -> tuple[Estimate, Estimate]:
    """p50 and p95 of ``x`` with bootstrap percentile intervals."""
    n, qs = len(x), np.array([0.5, 0.95])
    if n == 0:
        return Estimate(None, None, None, 0), Estimate(None, None, None, 0)
    points = np.quantile(x, qs)
    if n < 2:
        return tuple(Estimate(float(p), None, None, n) for p in points)  # type: ignore[return-value]
    alpha = 1 - confidence
    if n > _BOOTSTRAP_MAX:
        # Order statistics around rank n*q: P(X_(j) <= Q_q <= X_(k)) ~ confidence (binomial).
        ordered, z = np.sort(x), _z(confidence)
        spread = z * np.sqrt(n * qs * (1 - qs))
        lows = ordered[np.clip(np.floor(n * qs - spread).astype(int) - 1, 0, n - 1)]
        highs = ordered[np.clip(np.ceil(n * qs + spread).astype(int), 0, n - 1)]
    else:
        stats = np.empty((resamples, len(qs)))
        chunk = max(1, min(resamples, _BOOTSTRAP_CELLS // n))
        for start in range(0, resamples, chunk):
            rows = min(chunk, resamples - start)
            sample = x[rng.integers(0, n, size=(rows, n))]
            stats[start : start + rows] = np.quantile(sample, qs, axis=1).T
        lows, highs = np.quantile(stats, [alpha / 2, 1 - alpha / 2], axis=0)
    # Widened to hold the estimate when the resampled tails miss it (small skewed samples).
    return tuple(  # type: ignore[return-value]
        Estimate(float(p), float(min(lo, p)), float(max(hi, p)), n)
        for p, lo, hi in zip(points, lows, highs, strict=True)
    )


def _fisher(a: int, n1: int, c: int, n2: int) -> float:
    """Two-sided Fisher's exact test of ``a`` of ``n1`` against ``c`` of ``n2``."""
    k, total = a + c, n1 + n2

    def log_p(x: int) -> float:
        return (
            math.lgamma(n1 + 1) - math.lgamma(x + 1) - math.lgamma(n1 - x + 1)
            + math.lgamma(n2 + 1) - math.lgamma(k - x + 1) - math.lgamma(n2 - k + x + 1)
            - math.lgamma(total + 1) + math.lgamma(k + 1) + math.lgamma(total - k + 1)
        )  # fmt: skip

    observed = log_p(a)
    p = sum(
        math.exp(lp)
        for lp in map(log_p, range(max(0, k - n2), min(k, n1) + 1))
        if lp <= observed + 1e-7  # tables as or less likely than the one seen
    )
    return min(1.0, p)


def proportions(a: int, n1: int, c: int, n2: int) -> tuple[float, str]:
    k, total = a + c, n1 + n2
    if min(n1, n2) * min(k, total - k) / total < 5:  # the smallest expected count
        return _fisher(a, n1, c, n2), "Fisher's exact test"
    pooled = k / total
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return _normal_p((a / n1 - c / n2) / se), "two-proportion z-test"


def mann_whitney(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[float, str, bool]:
    """p-value, test name and whether ``x`` tends higher than ``y``."""
    n1, n2 = len(x), len(y)
    both = np.concatenate([x, y])
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]  # average rank of each tie group
    centre = n1 * (n1 + n2 + 1) / 2
    deviation = float(ranks[:n1].sum()) - centre
    if min(n1, n2) < _SMALL_RANK_SAMPLE:
        shuffled = rng.permuted(np.broadcast_to(ranks, (_PERMUTATIONS, len(ranks))), axis=1)
        extreme = np.abs(shuffled[:, :n1].sum(axis=1) - centre) >= abs(deviation) - 1e-9
        p = (1 + int(extreme.sum())) / (_PERMUTATIONS + 1)
        return p, "Mann-Whitney U (permutation)", deviation > 0
    total = n1 + n2
    ties = float((counts.astype(float) ** 3 - counts).sum())
    var = n1 * n2 / 12 * ((total + 1) - ties / (total * (total - 1)))
    if var <= 0:
        return 1.0, "Mann-Whitney U", False
    z = max(abs(deviation) - 0.5, 0.0) / math.sqrt(var)  # continuity correction
    return _normal_p(z), "Mann-Whitney U (normal approximation)", deviation > 0


def welch(x: np.ndarray, y: np.ndarray) -> float:
    v1, v2 = float(x.var(ddof=1)) / len(x), float(y.var(ddof=1)) / len(y)
    diff = float(x.mean() - y.mean())
    if v1 + v2 == 0:
        return 1.0 if diff == 0 else 0.0  # no spread at all: any difference is certain
    df = (v1 + v2) ** 2 / (v1 * v1 / (len(x) - 1) + v2 * v2 / (len(y) - 1))
    return _t_p(diff / math.sqrt(v1 + v2), df)
