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
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import accumulate
from typing import Any, Literal

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text

from agency.gateway._stats import (
    Estimate,
    mann_whitney,
    mean_estimate,
    proportions,
    quantile_estimates,
    welch,
    wilson,
)
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
            p, test = proportions(data.errors, data.requests, c_data.errors, c_data.requests)
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
                p, test, higher = mann_whitney(xs, ys, rng)
            else:
                p, test, higher = welch(xs, ys), "Welch's t-test", bool(xs.mean() > ys.mean())
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
        p50, p95 = quantile_estimates(np.asarray(d.latencies, float), confidence, rng, resamples)
        report = ArmReport(
            arm, d.requests, d.errors, wilson(d.errors, d.requests, confidence), p50, p95,
            mean_estimate(np.asarray(d.costs, float), confidence), d.cost_unknown,
            mean_estimate(np.asarray(d.scores, float), confidence),
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
