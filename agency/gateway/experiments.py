"""A/B tests of providers: which arm a request takes, and what the audit log says about the arms.

Assignment (`Experiments`) runs per request: `Experiments.match` finds the first enabled
experiment for the model a request asks for, `Experiments.assign` picks its arm. The arm is a
pure function of the experiment's name and a sticky id (``sticky="key"``: the virtual key's id;
``"user"``: the request's ``user`` field, else the key's id; ``"request"``: the request id; an
absent or empty id falls back to the request id): a BLAKE2b hash of both, read as a number in
[0, 1), lands in the arm whose share of the cumulative weights covers it. So an id keeps its arm
across requests, processes and restarts, and arms get traffic in proportion to their weights.
Changing the weights or the arms moves some ids to another arm; renaming the experiment
reshuffles all of them.

The report (`build_report`, `report_from_audit`, `render_report`) takes the audit rows of one
experiment and gives, per arm, at ``confidence`` (default 95 %):

- the error rate (status >= 400) with a Wilson score interval;
- p50 and p95 latency (ms, successful requests) with bootstrap percentile intervals (seeded);
  above 20,000 requests, the distribution-free order-statistic interval instead;
- the mean cost per request (requests without a cost are left out and counted) and the mean
  feedback score, each with a Student t interval.

Every arm is compared with the first arm (the control): error rate by a two-proportion z-test, or
Fisher's exact test when an expected count is below 5; latency by the Mann-Whitney U test
(normal approximation with tie and continuity corrections; a seeded permutation test when an arm
has fewer than 10); cost and feedback by Welch's t-test (t distribution with Welch-Satterthwaite
degrees of freedom). A difference is significant when p < 1 - confidence; with more than two
arms, each comparison is tested on its own (no multiple-comparison correction: read the
p-values). Too little data gives ``None`` ("n/a"), never an error.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from itertools import accumulate
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text

from agency.gateway.config import ArmConfig, ExperimentConfig

__all__ = [
    "ArmReport",
    "Comparison",
    "Estimate",
    "ExperimentReport",
    "Experiments",
    "build_report",
    "render_report",
    "report_from_audit",
]

Metric = Literal["error_rate", "latency", "cost", "feedback"]
METRICS: tuple[Metric, ...] = ("error_rate", "latency", "cost", "feedback")
_LABELS: dict[Metric, str] = dict(
    error_rate="error rate", latency="latency", cost="cost per request", feedback="feedback"
)
_BOOTSTRAP_MAX = 20_000  # above it, order-statistic intervals: resampling would cost seconds
_BOOTSTRAP_CELLS = 2_000_000  # resampled values held at once (memory bound of the bootstrap)
_PERMUTATIONS = 4_000
_SMALL_RANK_SAMPLE = 10


# -- assignment -------------------------------------------------------------------------------
class _Prepared:
    """What `Experiments.assign` needs of one experiment, computed once."""

    __slots__ = ("arms", "config", "cumulative", "hasher", "total")

    def __init__(self, exp: ExperimentConfig) -> None:
        self.config = exp
        self.arms = tuple(exp.arms)
        self.cumulative = tuple(accumulate(arm.weight for arm in exp.arms))
        self.total = self.cumulative[-1]
        name = exp.name.encode()
        # A length prefix keeps (name, id) pairs apart whatever bytes either holds.
        self.hasher = hashlib.blake2b(len(name).to_bytes(4, "big") + name, digest_size=8)


class Experiments:
    """The configured experiments, ready to assign arms to requests (cheap per call)."""

    def __init__(self, configs: Sequence[ExperimentConfig]) -> None:
        """Index ``configs`` (``GatewayConfig.experiments``) by name and by model."""
        self._configs = tuple(configs)
        self._prepared = {exp.name: _Prepared(exp) for exp in self._configs}
        self._by_model: dict[str, ExperimentConfig] = {}
        for exp in self._configs:
            if exp.enabled:
                self._by_model.setdefault(exp.model, exp)

    def __iter__(self) -> Iterator[ExperimentConfig]:
        """Every experiment, enabled or not, in configuration order."""
        return iter(self._configs)

    def __len__(self) -> int:
        """How many experiments are configured."""
        return len(self._configs)

    @property
    def names(self) -> tuple[str, ...]:
        """The experiments' names, in configuration order."""
        return tuple(exp.name for exp in self._configs)

    def get(self, name: str) -> ExperimentConfig | None:
        """The experiment called ``name`` (enabled or not), or ``None``."""
        prepared = self._prepared.get(name)
        return prepared.config if prepared else None

    def match(self, model: str) -> ExperimentConfig | None:
        """The first enabled experiment for requests asking for ``model``, or ``None``."""
        return self._by_model.get(model)

    def assign(
        self, exp: ExperimentConfig, *, key_id: str | None, user: str | None, request_id: str
    ) -> ArmConfig:
        """The arm of ``exp`` this request takes: the same for the same sticky id, always."""
        prepared = self._prepared.get(exp.name)
        if prepared is None or prepared.config is not exp:
            prepared = _Prepared(exp)  # an experiment from elsewhere (a reloaded config)
        if exp.sticky == "key":
            sticky = key_id or request_id
        elif exp.sticky == "user":
            sticky = user or key_id or request_id
        else:
            sticky = request_id
        hasher = prepared.hasher.copy()
        hasher.update(sticky.encode())
        # The top 53 bits make a float in [0, 1) exactly (a double has 53 bits of mantissa).
        unit = (int.from_bytes(hasher.digest(), "big") >> 11) * 2.0**-53
        index = bisect_right(prepared.cumulative, unit * prepared.total)
        return prepared.arms[min(index, len(prepared.arms) - 1)]


# -- report data ------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class ArmReport:
    """One arm's numbers."""

    name: str
    """The arm's name."""
    requests: int
    """Requests assigned to the arm."""
    errors: int
    """Of those, how many ended with a status >= 400."""
    error_rate: Estimate
    """``errors / requests``, Wilson score interval."""
    latency_p50_ms: Estimate
    """Median latency of the successful requests, ms; bootstrap percentile interval."""
    latency_p95_ms: Estimate
    """95th percentile latency of the successful requests, ms; bootstrap percentile interval."""
    cost_usd: Estimate
    """Mean cost per request in USD over the requests with a known cost; t interval."""
    cost_unknown: int
    """Requests without a cost (left out of ``cost_usd``)."""
    feedback: Estimate
    """Mean feedback score over the requests that got one (``n``); t interval."""


@dataclass(frozen=True)
class Comparison:
    """One metric of one arm against the control arm."""

    metric: Metric
    """``error_rate``, ``latency``, ``cost`` or ``feedback``."""
    arm: str
    """The arm compared."""
    control: str
    """The arm it is compared with (the first arm)."""
    arm_value: float | None
    """The arm's error rate, p50 latency (ms), mean cost (USD) or mean feedback."""
    control_value: float | None
    """The same for the control."""
    p_value: float | None
    """Two-sided p-value; ``None`` when either arm has too little data to test."""
    significant: bool
    """Whether ``p_value < 1 - confidence``."""
    higher: bool | None
    """Whether the arm's values are higher than the control's (by the test's statistic)."""
    test: str
    """The test used, e.g. ``"Welch's t-test"``."""
    summary: str
    """The outcome in plain words: ``"b: error rate higher than a (12.0% vs 3.1%, p=0.004)"``."""


@dataclass(frozen=True)
class ExperimentReport:
    """What the audit log says about one experiment."""

    name: str
    """The experiment's name."""
    confidence: float
    """Confidence level of the intervals; significance is tested at ``1 - confidence``."""
    arms: tuple[ArmReport, ...]
    """Per arm, the control first."""
    comparisons: tuple[Comparison, ...]
    """Each metric of each other arm against the control, grouped by metric."""
    verdicts: tuple[str, ...]
    """Which differences are significant, in plain words, one line each."""
    unassigned: int
    """Rows of the experiment without an arm (counted nowhere else)."""

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data."""
        return asdict(self)


# -- statistics -------------------------------------------------------------------------------
def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _normal_p(z: float) -> float:
    return 2.0 * (1.0 - NormalDist().cdf(abs(z)))


def _wilson(errors: int, n: int, confidence: float) -> Estimate:
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


def _mean_estimate(x: np.ndarray, confidence: float) -> Estimate:
    n = len(x)
    if n == 0:
        return Estimate(None, None, None, 0)
    mean = float(x.mean())
    if n < 2:
        return Estimate(mean, None, None, n)
    half = _t_quantile(confidence, float(n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n)


def _quantile_estimates(
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


def _proportions(a: int, n1: int, c: int, n2: int) -> tuple[float, str]:
    k, total = a + c, n1 + n2
    if min(n1, n2) * min(k, total - k) / total < 5:  # the smallest expected count
        return _fisher(a, n1, c, n2), "Fisher's exact test"
    pooled = k / total
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return _normal_p((a / n1 - c / n2) / se), "two-proportion z-test"


def _mann_whitney(
    x: np.ndarray, y: np.ndarray, rng: np.random.Generator
) -> tuple[float, str, bool]:
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


def _welch(x: np.ndarray, y: np.ndarray) -> float:
    v1, v2 = float(x.var(ddof=1)) / len(x), float(y.var(ddof=1)) / len(y)
    diff = float(x.mean() - y.mean())
    if v1 + v2 == 0:
        return 1.0 if diff == 0 else 0.0  # no spread at all: any difference is certain
    df = (v1 + v2) ** 2 / (v1 * v1 / (len(x) - 1) + v2 * v2 / (len(y) - 1))
    return _t_p(diff / math.sqrt(v1 + v2), df)


# -- the report -------------------------------------------------------------------------------
@dataclass
class _ArmData:
    requests: int = 0
    errors: int = 0
    cost_unknown: int = 0
    latencies: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


def _format(metric: Metric, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric == "error_rate":
        return f"{value * 100:.1f}%"
    if metric == "latency":
        return f"{value:.0f} ms"
    if metric == "cost":
        return f"${value:.3g}"
    return f"{value:.3g}"


def _format_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _compare(
    metric: Metric,
    arm: tuple[ArmReport, _ArmData],
    control: tuple[ArmReport, _ArmData],
    alpha: float,
    rng: np.random.Generator,
) -> Comparison:
    (report, data), (c_report, c_data) = arm, control
    p: float | None = None
    test, higher = "", None
    if metric == "error_rate":
        values = (report.error_rate.value, c_report.error_rate.value)
        if report.requests and c_report.requests:
            p, test = _proportions(data.errors, data.requests, c_data.errors, c_data.requests)
            higher = data.errors / data.requests > c_data.errors / c_data.requests
    else:
        if metric == "latency":
            values = (report.latency_p50_ms.value, c_report.latency_p50_ms.value)
            x, y = data.latencies, c_data.latencies
        else:
            field = "cost_usd" if metric == "cost" else "feedback"
            values = (getattr(report, field).value, getattr(c_report, field).value)
            x, y = (data.costs, c_data.costs) if metric == "cost" else (data.scores, c_data.scores)
        if len(x) >= 2 and len(y) >= 2:
            xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
            if metric == "latency":
                p, test, higher = _mann_whitney(xs, ys, rng)
            else:
                p, test, higher = _welch(xs, ys), "Welch's t-test", bool(xs.mean() > ys.mean())
    label, who = _LABELS[metric], f"{report.name} vs {c_report.name}"
    significant = p is not None and p < alpha
    if p is None:
        summary = f"{who}: not enough data to compare {label}"
    elif not significant:
        summary = f"{who}: no significant difference in {label} ({_format_p(p)})"
    else:
        shown = " vs ".join(_format(metric, v) for v in values)
        shown = f"p50 {shown}" if metric == "latency" else shown
        way = "higher" if higher else "lower"
        summary = f"{report.name}: {label} {way} than {c_report.name} ({shown}, {_format_p(p)})"
    return Comparison(
        metric, report.name, c_report.name, values[0], values[1], p, significant, higher, test,
        summary,
    )  # fmt: skip


def _verdicts(arms: Sequence[ArmReport], comparisons: Sequence[Comparison]) -> tuple[str, ...]:
    if not arms or not any(a.requests for a in arms):
        return ("no requests recorded for this experiment",)
    if len(arms) < 2:
        return (f"only one arm ({arms[0].name}) has requests: nothing to compare",)
    lines: list[str] = []
    for metric in METRICS:
        group = [c for c in comparisons if c.metric == metric]
        tested = [c for c in group if c.p_value is not None]
        if not tested:
            lines.append(f"not enough data to compare {_LABELS[metric]}")
        elif not any(c.significant for c in tested):
            lines.append(f"no significant difference in {_LABELS[metric]}")
        else:
            lines.extend(c.summary for c in group)
    return tuple(lines)


def build_report(
    name: str,
    rows: Sequence[Mapping[str, Any]],
    feedback: Mapping[str, float],
    *,
    confidence: float = 0.95,
    seed: int = 0,
    arms: Sequence[str] | None = None,
    resamples: int = 2_000,
) -> ExperimentReport:
    """The report of experiment ``name`` from its audit ``rows`` and ``feedback`` scores.

    ``rows`` are audit-log rows (``arm``, ``status``, ``latency_ms``, ``cost_usd``,
    ``request_id``; rows of another experiment are skipped); ``feedback`` maps request ids to
    their mean score. ``arms`` orders the arms (the first is the control) and lists those with
    no requests yet; arms found only in the rows follow, sorted. ``seed`` fixes the bootstrap
    and permutation draws: the same data give the same report.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r}: give a level between 0 and 1, e.g. 0.95")
    if resamples < 100:
        raise ValueError(f"resamples={resamples!r}: use at least 100 (2,000 is the default)")
    data: dict[str, _ArmData] = {arm: _ArmData() for arm in arms or ()}
    unassigned = 0
    for row in rows:
        if row.get("experiment") not in (None, name):
            continue
        arm = row.get("arm")
        if arm is None:
            unassigned += 1
            continue
        d = data.setdefault(str(arm), _ArmData())
        d.requests += 1
        failed = (row.get("status") or 0) >= 400
        d.errors += failed
        if not failed and row.get("latency_ms") is not None:
            d.latencies.append(float(row["latency_ms"]))
        if row.get("cost_usd") is None:
            d.cost_unknown += 1
        else:
            d.costs.append(float(row["cost_usd"]))
        score = feedback.get(str(row.get("request_id")))
        if score is not None:
            d.scores.append(float(score))
    order = list(arms or ()) + sorted(set(data) - set(arms or ()))
    reports: list[tuple[ArmReport, _ArmData]] = []
    for index, arm in enumerate(order):
        d = data[arm]
        rng = np.random.default_rng([seed, index])
        p50, p95 = _quantile_estimates(np.asarray(d.latencies, float), confidence, rng, resamples)
        report = ArmReport(
            arm, d.requests, d.errors, _wilson(d.errors, d.requests, confidence), p50, p95,
            _mean_estimate(np.asarray(d.costs, float), confidence), d.cost_unknown,
            _mean_estimate(np.asarray(d.scores, float), confidence),
        )  # fmt: skip
        reports.append((report, d))
    comparisons = [
        _compare(
            metric, reports[i], reports[0], 1 - confidence, np.random.default_rng([seed, i, j])
        )
        for j, metric in enumerate(METRICS)
        for i in range(1, len(reports))
    ]
    arm_reports = tuple(r for r, _ in reports)
    return ExperimentReport(
        name, confidence, arm_reports, tuple(comparisons), _verdicts(arm_reports, comparisons),
        unassigned,
    )  # fmt: skip


def report_from_audit(
    audit: Any,
    name: str,
    *,
    arms: Sequence[str] | None = None,
    confidence: float = 0.95,
    seed: int = 0,
) -> ExperimentReport:
    """`build_report` over ``audit.query(experiment=name, limit=None)`` and
    ``audit.feedback_scores(experiment=name)`` (an `agency.gateway.audit.AuditLog`)."""
    rows = audit.query(experiment=name, limit=None)
    scores = audit.feedback_scores(experiment=name)
    return build_report(name, rows, scores, confidence=confidence, seed=seed, arms=arms)


def _cell(estimate: Estimate, metric: Metric, n: bool = False) -> Text:
    if estimate.value is None:
        return Text("n/a", style="dim")
    text = Text(_format(metric, estimate.value))
    low, high = estimate.low, estimate.high
    bounds = (
        "n/a" if low is None or high is None else f"{_format(metric, low)}, {_format(metric, high)}"
    )
    text.append(f" [{bounds}]", style="dim")
    if n:
        text.append(f" n={estimate.n}", style="dim")
    return text


def render_report(report: ExperimentReport) -> Group:
    """The report as rich renderables: a table of the arms, one of the tests, the verdicts."""
    level = f"{report.confidence * 100:g}%"
    arms = Table(title=f"experiment {report.name} ({level} intervals)", title_justify="left")
    arms.add_column("arm")
    for column in ("requests", "error rate", "p50 latency", "p95 latency", "cost/request"):
        arms.add_column(column, justify="right")
    arms.add_column("feedback", justify="right")
    for arm in report.arms:
        cost = _cell(arm.cost_usd, "cost")
        if arm.cost_unknown:
            cost.append(f" ({arm.cost_unknown} unknown)", style="dim")
        arms.add_row(
            Text(arm.name), str(arm.requests), _cell(arm.error_rate, "error_rate"),
            _cell(arm.latency_p50_ms, "latency"), _cell(arm.latency_p95_ms, "latency"), cost,
            _cell(arm.feedback, "feedback", n=True),
        )  # fmt: skip
    parts: list[Any] = [arms]
    if report.comparisons:
        tests = Table("arm", "vs", "metric", "test", "p", "significant", title="tests")
        tests.title_justify = "left"
        for c in report.comparisons:
            tests.add_row(
                Text(c.arm), Text(c.control), _LABELS[c.metric], c.test or "-",
                "n/a" if c.p_value is None else f"{c.p_value:.3g}",
                Text("yes", style="bold") if c.significant else "no",
            )  # fmt: skip
        parts.append(tests)
    if report.unassigned:
        parts.append(Text(f"{report.unassigned} rows without an arm were left out", style="dim"))
    found = {c.summary for c in report.comparisons if c.significant}
    parts.extend(Text(line, style="bold" if line in found else "") for line in report.verdicts)
    return Group(*parts)
