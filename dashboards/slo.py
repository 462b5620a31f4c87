"""The SLOs the alerts page on, as the dashboards read them: objectives, failure codes, the latency
threshold, burn-rate windows, alert and recording-rule names all come from `alerts` (alerts/config.py
`AlertsConfig`, alerts/recording.py), so the Overview's budget stats and the SLOs dashboard show
exactly what the burn-rate alerts compute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from alerts import promql, recording, rules
from alerts.config import DEFAULT as CFG
from alerts.config import BurnRateWindow
from dashboards import queries as Q
from exporter import catalog

UPSTREAM = catalog.UPSTREAM
# The SLO recording rules are per upstream (sum by (upstream)) over CFG.selector.
LEVEL = recording.UPSTREAM
# The longest window the recording rules keep.
LONGEST_RECORDED = recording.slo_windows(CFG)[-1]
# The SLO period, the budget is spent over it (tests/test_dashboards.py checks that the burn-rate
# factors agree with it; compose's Prometheus retention must hold it).
PERIOD = CFG.slo_period
# The burn-rate windows that page (the SRE workbook's 14.4x over 1h and 6x over 6h), fastest first.
PAGING_WINDOWS = [window for window in CFG.slo_windows if window.severity == "critical"]
FAST_BURN: BurnRateWindow = min(PAGING_WINDOWS, key=lambda window: recording.seconds(window.long))
# Burning at 1x spends exactly the budget over the period; the slowest alert (a ticket) fires there.
SUSTAINABLE_BURN = min(window.factor for window in CFG.slo_windows)


def _labels(labels: tuple[str, ...]) -> str:
    return ", ".join(labels[:-1]) + " and " + labels[-1] if len(labels) > 1 else labels[0]


RECORDED_SCOPE = (
    f"Per upstream for the whole deployment: the SLO recording rules select {CFG.selector} and sum "
    f"away {_labels(Q.dropped_filters(LEVEL))}, so the {_labels(Q.dropped_filters(LEVEL))} variables "
    f"do not narrow this panel; upstream does. Empty when Prometheus lacks the rules of "
    f"alerts/generated/recording_rules.yml."
)
PERIOD_SCOPE = (
    f"From the raw metrics over the SLO period ({PERIOD}, this panel's own time range), honouring "
    f"every variable. Compose's Prometheus keeps that long (--storage.tsdb.retention.time); with a "
    f"shorter retention this covers the retained part only."
)


@dataclass(frozen=True)
class Slo:
    name: str  # "Availability"
    objective: float
    statement: str  # what the objective promises
    ratio: Callable[[str], str]  # window -> name of the recording rule with its error ratio
    alert: str  # the burn-rate alert's name
    bad_in_range: str  # PromQL: the share of bad requests over the panel's range ($__range), raw metrics

    def allowed(self) -> str:
        """The error budget as a ratio: the share of requests that may be bad."""
        return f"(1 - {promql.number(self.objective)})"

    def budget_left(self, bad_ratio: str) -> str:
        return f"1 - ({bad_ratio}) / {self.allowed()}"

    def budget_left_in_period(self) -> str:
        """Budget left over the panel's range: give the panel PERIOD as its own time range."""
        return self.budget_left(self.bad_in_range)

    def burn_rate(self, window: str) -> str:
        return f"{Q.recorded(self.ratio(window), LEVEL)} / {self.allowed()}"


def _increase(spec: catalog.MetricSpec, *matchers: str, suffix: str | None = None) -> str:
    return Q.sum_by(Q.increase_over_range(Q.series(spec, *matchers, suffix=suffix)), UPSTREAM)


FAILED = Q.regex(catalog.CODE, CFG.failure_codes)
LATENCY_SECONDS = promql.number(CFG.latency_threshold_seconds)
FAST = Q.eq(Q.LE, promql.le(CFG.latency_threshold_seconds))
DURATION = catalog.REQUEST_DURATION

AVAILABILITY = Slo(
    name="Availability",
    objective=CFG.availability_objective,
    statement=(
        f"{rules.percent(CFG.availability_objective)} of requests do not fail. Failed: code "
        f"{CFG.failure_codes} (any 5xx, including the proxy's 502 and 504, and 429); 499 and other "
        "4xx are not failures."
    ),
    ratio=lambda window: recording.error_ratio(CFG, window, LEVEL),
    alert=rules.ERROR_BUDGET_BURN,
    bad_in_range=Q.ratio_or_zero(_increase(catalog.REQUESTS, FAILED), _increase(catalog.REQUESTS)),
)
LATENCY = Slo(
    name="Latency",
    objective=CFG.latency_objective,
    statement=(
        f"{rules.percent(CFG.latency_objective)} of requests are answered within {LATENCY_SECONDS} s "
        f"(whole request, received to last byte; the {LATENCY_SECONDS} s bucket of {DURATION.name})."
    ),
    ratio=recording.slow_ratio,
    alert=rules.LATENCY_BUDGET_BURN,
    bad_in_range=(
        f"1 - {_increase(DURATION, FAST, suffix='_bucket')} / {_increase(DURATION, suffix='_count')}"
    ),
)
TTFT = catalog.TIME_TO_FIRST_TOKEN
TTFT_SECONDS = promql.number(CFG.ttft_threshold_seconds)
FIRST_FAST = Q.eq(Q.LE, promql.le(CFG.ttft_threshold_seconds))
TIME_TO_FIRST_TOKEN = Slo(
    name="Time to first token",
    objective=CFG.ttft_objective,
    statement=(
        f"{rules.percent(CFG.ttft_objective)} of streams show their first token within {TTFT_SECONDS} s "
        f"(the {TTFT_SECONDS} s bucket of {TTFT.name})."
    ),
    ratio=recording.ttft_slow_ratio,
    alert=rules.TTFT_BUDGET_BURN,
    bad_in_range=f"1 - {_increase(TTFT, FIRST_FAST, suffix='_bucket')} / {_increase(TTFT, suffix='_count')}",
)
SLOS = (AVAILABILITY, TIME_TO_FIRST_TOKEN, LATENCY)
