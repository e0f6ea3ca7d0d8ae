"""Call statistics per provider and per role: what happened, how fast, at what cost.

`Stats` counts attempts. The resilience layer calls `Stats.record` once per attempt against one
provider (a first try, a retry of the same provider or a fallback to the next candidate) with
its outcome, latency, token usage and cost. `Stats.snapshot` returns plain dicts:

    {"providers": {name: row}, "roles": {role: row}, "total": row}

where every row has

    requests, successes, failures            attempts, and how they ended (ints)
    failures_by_kind                         {kind: count}; kinds come from `failure_kind`
    retries, fallbacks                       attempts flagged ``retry`` / ``fallback``
    input_tokens, output_tokens,             summed from LangChain ``UsageMetadata``
    cached_tokens, reasoning_tokens          (``input_token_details.cache_read``,
                                              ``output_token_details.reasoning``)
    cost                                     summed cost (float; 0.0 when never given)
    latency_p50_ms, latency_p95_ms           over the last ``max_latency_samples`` latencies
                                              passed for this key; None with no sample
    last_success_age_s, last_failure_age_s   seconds since the last success / failure
                                              (by the injected clock); None if none yet

and each provider row also carries the fields of ``set_state_provider(fn)``'s ``fn(name)``
(breaker state, limiter levels, ...). A state field whose name collides with a counter is
renamed ``state_<name>``, so counters are never overwritten; a state function that raises
yields ``state_error`` instead of breaking the snapshot.

Percentiles use the nearest-rank method on the sorted samples: ``pXX`` is the smallest sample
with at least XX% of the samples at or below it (always an observed latency; with one sample,
that sample). Samples sit in a bounded deque per key, so memory stays flat and old latencies
age out.

`record` is on every call's path, so it only does arithmetic under one `threading.Lock`
(a few microseconds); sorting, state calls and formatting happen in `snapshot` and the views
(`to_pandas`, `__rich__` for rich consoles, `_repr_html_` for Jupyter), outside the lock.
pandas and rich are imported only by the views that use them; pandas is optional.
"""

from __future__ import annotations

import html
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import agency.errors as errors

if TYPE_CHECKING:
    import pandas
    import rich.table

__all__ = ["DEFAULT_MAX_LATENCY_SAMPLES", "Stats", "failure_kind"]

DEFAULT_MAX_LATENCY_SAMPLES = 2048
"""Latencies kept per provider, per role and in total (the most recent ones)."""

_P50 = 50
_P95 = 95
_MS_PER_S = 1000.0
_UNKNOWN_KIND = "unknown"
"""Failure kind of ``ok=False`` recorded without an exception."""

# Short names of the agency error classes. Looked up along the MRO, so a subclass of
# RateLimited defined elsewhere still counts as "rate_limited"; the most specific class wins
# (CircuitOpen before its base ProviderUnavailable).
_KINDS: dict[type[BaseException], str] = {
    errors.RateLimited: "rate_limited",
    errors.CircuitOpen: "circuit_open",
    errors.ProviderUnavailable: "unavailable",
    errors.Timeout: "timeout",
    errors.ConnectionFailed: "connection",
    errors.MalformedResponse: "malformed",
    errors.ContextWindowExceeded: "context_window",
    errors.ContentFiltered: "content_filter",
    errors.BadRequest: "bad_request",
    errors.AuthenticationError: "auth",
    errors.PermissionDenied: "permission_denied",
    errors.ModelNotFound: "model_not_found",
    errors.BudgetExceeded: "budget_exceeded",
    errors.AllProvidersFailed: "all_providers_failed",
}
_kind_cache: dict[type[BaseException], str] = {}
_ACRONYM = re.compile(r"([A-Z]+)([A-Z][a-z])")
_WORD = re.compile(r"([a-z0-9])([A-Z])")

_COUNTERS = (
    "requests",
    "successes",
    "failures",
    "failures_by_kind",
    "retries",
    "fallbacks",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost",
    "latency_p50_ms",
    "latency_p95_ms",
    "last_success_age_s",
    "last_failure_age_s",
)
"""Field names of a row, in display order (also the names state fields must not take)."""

# Columns of the rich and HTML tables: (header, row key).
_TABLE_COLUMNS = (
    ("requests", "requests"),
    ("ok", "successes"),
    ("failed", "failures"),
    ("failures by kind", "failures_by_kind"),
    ("retries", "retries"),
    ("fallbacks", "fallbacks"),
    ("tokens in", "input_tokens"),
    ("tokens out", "output_tokens"),
    ("cached", "cached_tokens"),
    ("cost", "cost"),
    ("p50 ms", "latency_p50_ms"),
    ("p95 ms", "latency_p95_ms"),
)


def _snake(name: str) -> str:
    return _WORD.sub(r"\1_\2", _ACRONYM.sub(r"\1_\2", name)).lower()


def failure_kind(error: BaseException | type[BaseException]) -> str:
    """Short snake-case name of a failure: ``RateLimited`` -> ``"rate_limited"``,
    ``ProviderUnavailable`` -> ``"unavailable"``, ``Timeout`` -> ``"timeout"``, ...; a class
    outside `agency.errors` (and not derived from one) -> its name in snake case
    (``httpx.ReadError`` -> ``"read_error"``)."""
    cls = error if isinstance(error, type) else type(error)
    kind = _kind_cache.get(cls)
    if kind is None:
        kind = next((_KINDS[base] for base in cls.__mro__ if base in _KINDS), None)
        kind = kind or _snake(cls.__name__)
        _kind_cache[cls] = kind  # a benign race: every thread computes the same value
    return kind


def _nearest_rank(ordered: list[float], percent: int) -> float:
    """The nearest-rank percentile of non-empty ``ordered`` (sorted ascending)."""
    rank = max(math.ceil(percent / 100 * len(ordered)), 1)
    return ordered[rank - 1]


class _Row:
    """Running totals of one key (a provider, a role, or everything)."""

    __slots__ = (
        "cached_tokens",
        "cost",
        "failures",
        "failures_by_kind",
        "fallbacks",
        "input_tokens",
        "last_failure",
        "last_success",
        "latencies",
        "output_tokens",
        "reasoning_tokens",
        "requests",
        "retries",
        "successes",
    )

    def __init__(self, max_samples: int) -> None:
        self.requests = self.successes = self.failures = self.retries = self.fallbacks = 0
        self.input_tokens = self.output_tokens = self.cached_tokens = self.reasoning_tokens = 0
        self.cost = 0.0
        self.failures_by_kind: dict[str, int] = {}
        self.latencies: deque[float] = deque(maxlen=max_samples)
        self.last_success: float | None = None
        self.last_failure: float | None = None

    def add(
        self,
        now: float,
        kind: str | None,
        latency_s: float | None,
        tokens: tuple[int, int, int, int],
        cost: float,
        retry: bool,
        fallback: bool,
    ) -> None:
        self.requests += 1
        if kind is None:
            self.successes += 1
            self.last_success = now
        else:
            self.failures += 1
            self.failures_by_kind[kind] = self.failures_by_kind.get(kind, 0) + 1
            self.last_failure = now
        self.retries += retry
        self.fallbacks += fallback
        self.input_tokens += tokens[0]
        self.output_tokens += tokens[1]
        self.cached_tokens += tokens[2]
        self.reasoning_tokens += tokens[3]
        self.cost += cost
        if latency_s is not None:
            self.latencies.append(latency_s)

    def copy(self) -> _Row:
        """A detached copy (taken under the lock, formatted outside it)."""
        other = _Row(self.latencies.maxlen or DEFAULT_MAX_LATENCY_SAMPLES)
        for name in self.__slots__:
            setattr(other, name, getattr(self, name))
        other.failures_by_kind = dict(self.failures_by_kind)
        other.latencies = deque(self.latencies, maxlen=self.latencies.maxlen)
        return other

    def as_dict(self, now: float) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "requests": self.requests,
            "successes": self.successes,
            "failures": self.failures,
            "failures_by_kind": dict(self.failures_by_kind),
            "retries": self.retries,
            "fallbacks": self.fallbacks,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost": float(self.cost),
            "latency_p50_ms": _nearest_rank(ordered, _P50) * _MS_PER_S if ordered else None,
            "latency_p95_ms": _nearest_rank(ordered, _P95) * _MS_PER_S if ordered else None,
            "last_success_age_s": None if self.last_success is None else now - self.last_success,
            "last_failure_age_s": None if self.last_failure is None else now - self.last_failure,
        }


def _tokens(usage: Mapping[str, Any] | None) -> tuple[int, int, int, int]:
    """(input, output, cache_read, reasoning) of a LangChain ``UsageMetadata`` mapping."""
    if not usage:
        return (0, 0, 0, 0)
    read = (usage.get("input_token_details") or {}).get("cache_read") or 0
    reasoning = (usage.get("output_token_details") or {}).get("reasoning") or 0
    return (
        int(usage.get("input_tokens") or 0),
        int(usage.get("output_tokens") or 0),
        int(read),
        int(reasoning),
    )


def _cell(key: str, value: Any) -> str:
    """Text of one table cell."""
    if value is None:
        return "-"
    if key == "failures_by_kind":
        return ", ".join(f"{kind} {count}" for kind, count in value.items()) or "-"
    if key == "cost":
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _state_text(row: Mapping[str, Any]) -> str:
    """The state fields of a provider row as ``key=value`` pairs."""
    return " ".join(f"{key}={value}" for key, value in row.items() if key not in _COUNTERS)


class Stats:
    """Thread-safe counters of provider calls, per provider, per role and in total.

    ``clock`` (seconds, monotonic) dates successes and failures for the ``*_age_s`` fields;
    ``max_latency_samples`` bounds the latencies kept per key.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_latency_samples: int = DEFAULT_MAX_LATENCY_SAMPLES,
        sink: Callable[..., None] | None = None,
    ) -> None:
        if max_latency_samples < 1:
            raise ValueError(f"max_latency_samples must be >= 1, got {max_latency_samples}")
        self._clock = clock
        self._max_samples = max_latency_samples
        self._lock = threading.Lock()
        self._state: Callable[[str], Mapping[str, Any]] | None = None
        # The fleet's counters (agency.resilience.shared): fed per attempt, read by snapshot.
        self._sink = sink
        self._fleet: Callable[[list[str]], Mapping[str, Any]] | None = None
        self._providers: dict[str, _Row] = {}
        self._roles: dict[str, _Row] = {}
        self._total = _Row(max_latency_samples)

    def record(
        self,
        *,
        provider: str,
        role: str | None = None,
        ok: bool,
        error: BaseException | None = None,
        latency_s: float | None = None,
        usage: Mapping[str, Any] | None = None,
        cost: float | None = None,
        retry: bool = False,
        fallback: bool = False,
    ) -> None:
        """Count one attempt against ``provider`` (and ``role``, when given).

        ``ok=False`` counts a failure of kind ``failure_kind(error)`` (``"unknown"`` without
        an error); ``retry`` marks a retry of the same provider, ``fallback`` an attempt made
        because an earlier candidate failed. ``usage`` is LangChain's ``UsageMetadata``.
        """
        if ok and error is not None:
            raise ValueError("record(ok=True) takes no error")
        kind = None if ok else (_UNKNOWN_KIND if error is None else failure_kind(error))
        tokens = _tokens(usage)
        spent = float(cost) if cost else 0.0
        now = self._clock()
        with self._lock:
            row = self._providers.get(provider)
            if row is None:
                row = self._providers[provider] = _Row(self._max_samples)
            row.add(now, kind, latency_s, tokens, spent, retry, fallback)
            if role is not None:
                row = self._roles.get(role)
                if row is None:
                    row = self._roles[role] = _Row(self._max_samples)
                row.add(now, kind, latency_s, tokens, spent, retry, fallback)
            self._total.add(now, kind, latency_s, tokens, spent, retry, fallback)
        if self._sink is not None:
            self._sink(provider, ok=ok, usage=usage, cost=cost)

    def set_state_provider(self, fn: Callable[[str], Mapping[str, Any]] | None) -> None:
        """Merge ``fn(provider_name)`` (e.g. a breaker's snapshot) into each provider row of
        `snapshot`; None removes it."""
        self._state = fn

    def set_fleet(self, fn: Callable[[list[str]], Mapping[str, Any]] | None) -> None:
        """Add ``"fleet": fn(provider_names)`` (every process's counters, from a shared state
        store) to `snapshot`; None removes it."""
        self._fleet = fn

    def snapshot(self) -> dict[str, Any]:
        """``{"providers": {name: row}, "roles": {role: row}, "total": row}`` (see the module
        docstring for the row fields); plain, JSON-friendly values."""
        with self._lock:
            providers = {name: row.copy() for name, row in self._providers.items()}
            roles = {name: row.copy() for name, row in self._roles.items()}
            total = self._total.copy()
        now = self._clock()
        state = self._state
        provider_rows = {}
        for name, row in providers.items():
            fields = row.as_dict(now)
            if state is not None:
                fields.update(_state_fields(state, name))
            provider_rows[name] = fields
        out: dict[str, Any] = {
            "providers": provider_rows,
            "roles": {name: row.as_dict(now) for name, row in roles.items()},
            "total": total.as_dict(now),
        }
        if self._fleet is not None:
            out["fleet"] = dict(self._fleet(sorted(provider_rows)))
        return out

    def reset(self) -> None:
        """Forget every count and latency (the state provider stays)."""
        with self._lock:
            self._providers = {}
            self._roles = {}
            self._total = _Row(self._max_samples)

    # -- views -------------------------------------------------------------------------

    def to_pandas(self, by: Literal["provider", "role"] = "provider") -> pandas.DataFrame:
        """One row per provider (or role), indexed by name; ``failures_by_kind`` becomes one
        ``failures_<kind>`` column per kind. Needs pandas (not a dependency of agency)."""
        if by not in ("provider", "role"):
            raise ValueError(f"by must be 'provider' or 'role', got {by!r}")
        try:
            import pandas
        except ImportError as exc:
            raise ImportError(
                "Stats.to_pandas needs pandas, which agency does not install: "
                "pip install pandas (or use Stats.snapshot() for plain dicts)"
            ) from exc
        rows = self.snapshot()["providers" if by == "provider" else "roles"]
        kinds = sorted({kind for row in rows.values() for kind in row["failures_by_kind"]})
        records = []
        for row in rows.values():
            flat = {key: value for key, value in row.items() if key != "failures_by_kind"}
            flat.update(
                {f"failures_{kind}": row["failures_by_kind"].get(kind, 0) for kind in kinds}
            )
            records.append(flat)
        frame = pandas.DataFrame(records, index=pandas.Index(list(rows), name=by))
        return frame

    def __rich__(self) -> rich.table.Table:
        """A rich table: providers (with their state), then roles, then the total."""
        from rich.table import Table

        snap = self.snapshot()
        table = Table(title="agency stats")
        table.add_column("name", style="bold")
        for header, _ in _TABLE_COLUMNS:
            table.add_column(header, justify="left" if header.startswith("failures") else "right")
        table.add_column("state")
        for section in ("providers", "roles"):
            for name, row in snap[section].items():
                cells = [_cell(key, row[key]) for _, key in _TABLE_COLUMNS]
                state = _state_text(row) if section == "providers" else ""
                table.add_row(name, *cells, state)
            if snap[section]:
                table.add_section()
        total = snap["total"]
        table.add_row("total", *[_cell(key, total[key]) for _, key in _TABLE_COLUMNS], "")
        return table

    def _repr_html_(self) -> str:
        """A plain HTML table for Jupyter (every value escaped)."""
        snap = self.snapshot()
        esc = html.escape
        head = "".join(f"<th>{esc(h)}</th>" for h in ("", *(h for h, _ in _TABLE_COLUMNS)))
        lines = ["<table>", f"<thead><tr>{head}<th>state</th></tr></thead>", "<tbody>"]
        sections: list[tuple[str, Mapping[str, Mapping[str, Any]]]] = [
            ("provider", snap["providers"]),
            ("role", snap["roles"]),
            ("", {"total": snap["total"]}),
        ]
        for kind, rows in sections:
            for name, row in rows.items():
                label = f"{kind} {name}" if kind else name
                cells = "".join(f"<td>{esc(_cell(k, row[k]))}</td>" for _, k in _TABLE_COLUMNS)
                state = _state_text(row) if kind == "provider" else ""
                lines.append(f"<tr><th>{esc(label)}</th>{cells}<td>{esc(state)}</td></tr>")
        lines += ["</tbody>", "</table>"]
        return "\n".join(lines)

    def __repr__(self) -> str:
        with self._lock:
            providers, requests = len(self._providers), self._total.requests
        return f"Stats(providers={providers}, requests={requests})"


def _state_fields(state: Callable[[str], Mapping[str, Any]], name: str) -> dict[str, Any]:
    """``state(name)`` with counter-colliding keys renamed ``state_<key>``; a raising state
    function gives ``{"state_error": ...}`` (a dashboard must not die with a breaker)."""
    try:
        fields = dict(state(name))
    except Exception as exc:
        return {"state_error": f"{type(exc).__name__}: {exc}"}
    return {(f"state_{key}" if key in _COUNTERS else key): value for key, value in fields.items()}
