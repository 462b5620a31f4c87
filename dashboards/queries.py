"""PromQL building blocks shared by every dashboard.

One selector, one error definition and one rate window for all panels, so the dashboards cannot
drift apart, and every metric and label name comes from the exporter's catalog. The queries use
the raw catalog metrics, so they work on a Prometheus without our rules; only the SLO panels read
recording rules (`recorded`), whose names, objectives and windows come from `alerts`.
"""

from __future__ import annotations

from collections.abc import Iterable

from alerts.config import DEFAULT as ALERTS
from exporter import catalog
from exporter.catalog import MetricSpec

# Labels Prometheus adds to every scraped series (not part of the catalog).
JOB = "job"
INSTANCE = "instance"
# The bucket boundary label of histogram series.
LE = "le"
# Prometheus' series of its own alerting rules, and the label the rules grade alerts with.
ALERTS_SERIES = "ALERTS"
SEVERITY = "severity"
# Every alert firing now, whatever it is about: "is anything paging?" has no job or model.
FIRING_ALERTS = ALERTS_SERIES + '{alertstate="firing"}'
# prometheus-client's process collector: when the process started (unix seconds).
PROCESS_START = "process_start_time_seconds"

# The dashboard variables that filter the catalog metrics, in the order they chain.
FILTER_LABELS = (JOB, INSTANCE, catalog.UPSTREAM, catalog.MODEL)

# Grafana's rate window: at least four scrape intervals, so a rate always has enough samples.
RATE_INTERVAL = "$__rate_interval"
# The dashboard's whole time range, for totals ("spend in the selected range").
RANGE = "$__range"

# What counts as an error in every error ratio. 5xx includes 502 (upstream unreachable) and 504
# (upstream timed out); 429 means the client got no answer because of a rate limit. Not errors:
# 499 (the client went away) and the other 4xx (the client's own mistake). The same regex as the
# alerts' and the availability SLO's (one definition, in alerts/config.py).
ERROR_CODES = ALERTS.failure_codes
ERROR_DEFINITION = (
    "5xx (incl. 502 upstream unreachable, 504 upstream timed out) and 429 count as errors; "
    "499 (client went away) and other 4xx do not."
)


def var(label: str) -> str:
    """The dashboard variable named after `label` (variables are named like their labels)."""
    return "$" + label


def eq(label: str, value: str) -> str:
    return f'{label}="{value}"'


def regex(label: str, pattern: str) -> str:
    return f'{label}=~"{pattern}"'


def _selector(labels: Iterable[str], matchers: Iterable[str], filters: Iterable[str]) -> str:
    wanted = [regex(label, var(label)) for label in filters if label in labels]
    all_matchers = [*wanted, *matchers]
    return "{" + ", ".join(all_matchers) + "}" if all_matchers else ""


def series(
    spec: MetricSpec, *matchers: str, suffix: str | None = None, filters: Iterable[str] = FILTER_LABELS
) -> str:
    """`spec`'s series filtered by every dashboard variable (of `filters`) whose label it carries.

    `suffix` picks a histogram/summary series ("_bucket", "_sum", "_count"); by default a counter
    gets its "_total". `filters` is narrowed only by the variables' own queries, which may not
    depend on themselves.
    """
    name = spec.series if suffix is None else spec.name + suffix
    return name + _selector((JOB, INSTANCE, *spec.labels), matchers, filters)


def recorded(name: str, level: tuple[str, ...]) -> str:
    """A recording rule's series (name from `alerts.recording`), filtered by the dashboard variables
    whose labels its aggregation keeps (`level`, e.g. recording.UPSTREAM); see `dropped_filters`."""
    if not name.startswith("_".join(level) + ":"):
        raise ValueError(f"{name} is not recorded at level {level}")
    return name + _selector(level, (), FILTER_LABELS)


def dropped_filters(level: tuple[str, ...]) -> tuple[str, ...]:
    """The dashboard variables a recording rule of `level` aggregates away: it cannot honour them."""
    return tuple(label for label in FILTER_LABELS if label not in level)


def target_series(name: str, *matchers: str) -> str:
    """A series that is not in the catalog (process_*, up, scrape_*): filtered by job and instance."""
    return name + _selector((JOB, INSTANCE), matchers, FILTER_LABELS)


def firing(severity: str) -> str:
    """How many alerts of `severity` fire now; 0, not "No data", when none does."""
    return f'count({ALERTS_SERIES}{{alertstate="firing", {SEVERITY}="{severity}"}}) or vector(0)'


def exporter_starts() -> str:
    """Each exporter process's start time in milliseconds, with the version it runs: an annotation
    that takes the value as its time marks every restart, new replica and new version."""
    start = target_series(PROCESS_START)
    build = series(catalog.BUILD_INFO)
    joined = f"{start} * on ({JOB}, {INSTANCE}) group_left ({catalog.VERSION}) {build}"
    return f"{aggregate('max', joined, JOB, INSTANCE, catalog.VERSION)} * 1000"


def aggregate(operator: str, expr: str, *labels: str) -> str:
    """`sum by (a, b) (expr)`, or `sum(expr)` without labels."""
    return f"{operator} by ({', '.join(labels)}) ({expr})" if labels else f"{operator}({expr})"


def sum_by(expr: str, *labels: str) -> str:
    return aggregate("sum", expr, *labels)


def rate(selector: str) -> str:
    return f"rate({selector}[{RATE_INTERVAL}])"


def increase_over_range(selector: str) -> str:
    """The increase over the whole dashboard range: totals for stats and tables."""
    return f"increase({selector}[{RANGE}])"


def rate_sum(spec: MetricSpec, *matchers: str, by_labels: Iterable[str] = (), suffix: str | None = None) -> str:
    """`sum by (...) (rate(series[$__rate_interval]))`: the per-second rate, summed."""
    return sum_by(rate(series(spec, *matchers, suffix=suffix)), *by_labels)


def ratio_or_zero(numerator: str, denominator: str) -> str:
    """numerator / denominator, showing 0 (not "No data") where the numerator has no series.

    A counter series appears only once it has been incremented, so a healthy model has no 5xx
    series at all; `or denominator * 0` fills in a zero for it.
    """
    return f"({numerator} or {denominator} * 0) / {denominator}"


def error_ratio(*by_labels: str) -> str:
    """Share of requests that failed (see ERROR_CODES), by `by_labels`."""
    errors = rate_sum(catalog.REQUESTS, regex(catalog.CODE, ERROR_CODES), by_labels=by_labels)
    total = rate_sum(catalog.REQUESTS, by_labels=by_labels)
    return ratio_or_zero(errors, total)


def quantile(q: float, spec: MetricSpec, *matchers: str, by_labels: Iterable[str] = ()) -> str:
    """The q-quantile of a catalog histogram over the rate window."""
    buckets = rate_sum(spec, *matchers, by_labels=(LE, *by_labels), suffix="_bucket")
    return f"histogram_quantile({q}, {buckets})"


def bucket_rates(spec: MetricSpec, *matchers: str) -> str:
    """Per-bucket rates of a catalog histogram, for a heatmap (target format "heatmap")."""
    return rate_sum(spec, *matchers, by_labels=(LE,), suffix="_bucket")


def mean(spec: MetricSpec, *matchers: str, by_labels: Iterable[str] = ()) -> str:
    """Mean observation of a histogram or summary over the rate window: rate(_sum) / rate(_count)."""
    total = rate_sum(spec, *matchers, by_labels=by_labels, suffix="_sum")
    count = rate_sum(spec, *matchers, by_labels=by_labels, suffix="_count")
    return f"{total} / {count}"


def per_hour(expr: str) -> str:
    return f"{expr} * 3600"


def token_type(*types: str) -> str:
    """A matcher for the `type` label of the token metrics."""
    return eq(catalog.TYPE, types[0]) if len(types) == 1 else regex(catalog.TYPE, "|".join(types))
