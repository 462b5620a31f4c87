"""SLOs: how much error budget is left, and how fast is it burning?

Objectives, failure codes, the latency threshold, burn-rate windows and factors, alert names and
recording-rule names all come from `alerts` (alerts/config.py `AlertsConfig`, alerts/recording.py),
so this dashboard shows exactly the SLOs the alerts page on.
"""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# grafanalib's loader executes this file by path, outside any package: make the repo importable.
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from alerts import promql, recording, rules  # noqa: E402
from alerts.config import DEFAULT as CFG  # noqa: E402
from dashboards import common as C  # noqa: E402
from dashboards import queries as Q  # noqa: E402
from exporter import catalog  # noqa: E402

UPSTREAM = catalog.UPSTREAM
# The SLO recording rules are per upstream (sum by (upstream)) over CFG.selector.
LEVEL = recording.UPSTREAM
# The error budget is read over the longest window the recording rules keep.
BUDGET_WINDOW = recording.slo_windows(CFG)[-1]
# The burn-rate windows that page (the SRE workbook's 14.4x over 1h and 6x over 6h).
PAGING_WINDOWS = [window for window in CFG.slo_windows if window.severity == "critical"]


def _labels(labels: tuple[str, ...]) -> str:
    return ", ".join(labels[:-1]) + " and " + labels[-1] if len(labels) > 1 else labels[0]


RECORDED_SCOPE = (
    f"Per upstream for the whole deployment: the SLO recording rules select {CFG.selector} and sum "
    f"away {_labels(Q.dropped_filters(LEVEL))}, so the {_labels(Q.dropped_filters(LEVEL))} variables "
    f"do not narrow this panel; upstream does. Empty when Prometheus lacks the rules of "
    f"alerts/generated/recording_rules.yml."
)
RANGE_SCOPE = (
    "From the raw metrics over the dashboard's time range, honouring every variable. Set the range "
    "to the SLO period (30 days) to read the real budget; Prometheus keeps 15 days by default, and "
    "with a shorter retention this covers the retained part only."
)


@dataclass(frozen=True)
class Slo:
    name: str  # "Availability"
    objective: float
    statement: str  # what the objective promises
    ratio: Callable[[str], str]  # window -> name of the recording rule with its error ratio
    alert: str  # the burn-rate alert's name
    bad_in_range: str  # PromQL: the share of bad requests over the dashboard's range, raw metrics

    def allowed(self) -> str:
        """The error budget as a ratio: the share of requests that may be bad."""
        return f"(1 - {promql.number(self.objective)})"

    def budget_left(self, bad_ratio: str) -> str:
        return f"1 - ({bad_ratio}) / {self.allowed()}"

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
SLOS = (AVAILABILITY, LATENCY)


def budget_panels(slo: Slo) -> list:
    recorded = slo.ratio(BUDGET_WINDOW)
    return [
        C.stat(
            f"{slo.name} budget left, last {BUDGET_WINDOW}",
            f"Share of the {slo.name.lower()} error budget left over the last {BUDGET_WINDOW}, per "
            f"upstream: 1 - (bad share over {BUDGET_WINDOW}) / (1 - {promql.number(slo.objective)}). "
            f"SLO: {slo.statement} {BUDGET_WINDOW} is the longest window the recording rules keep "
            f"({recorded}), not the 30-day SLO period: this is the budget that would be left if the "
            f"last {BUDGET_WINDOW} went on for the whole period. 100%: nothing bad; 0%: bad at exactly "
            f"the allowed rate; below 0: over budget. {RECORDED_SCOPE}",
            C.RATIO, [C.target(slo.budget_left(Q.recorded(recorded, LEVEL)), "{{upstream}}")],
            thresholds=C.BUDGET_STEPS, decimals=1, w=6, h=5,
        ),
        C.stat(
            f"{slo.name} budget left in range",
            f"Share of the {slo.name.lower()} error budget left in the dashboard's time range, per "
            f"upstream: 1 - (bad share in range) / (1 - {promql.number(slo.objective)}). "
            f"SLO: {slo.statement} {RANGE_SCOPE}",
            C.RATIO, [C.target(slo.budget_left(slo.bad_in_range), "{{upstream}}", instant=True)],
            thresholds=C.BUDGET_STEPS, decimals=1, w=6, h=5,
        ),
    ]


def burn_panel(slo: Slo, window) -> C.G.TimeSeries:
    factor = promql.number(window.factor)
    return C.timeseries(
        f"{slo.name} burn rate, {window.long} and {window.short}",
        f"How fast the {slo.name.lower()} error budget burns, per upstream: the bad share over the "
        f"window divided by the allowed share (1 - {promql.number(slo.objective)}); 1 spends exactly "
        f"the budget over the SLO period. The dashed line is {factor}x: {slo.alert} pages "
        f"({window.severity}) when both the {window.long} and the {window.short} burn rate stay above "
        f"it for {window.for_}. SLO: {slo.statement} {RECORDED_SCOPE}",
        C.NUMBER,
        [
            C.target(slo.burn_rate(window.long), "{{upstream}} " + window.long),
            C.target(slo.burn_rate(window.short), "{{upstream}} " + window.short),
        ],
        thresholds=C.steps((C.GREEN, None), (C.RED, window.factor)), threshold_lines=True,
    )


panels = [
    *budget_panels(AVAILABILITY),
    *budget_panels(LATENCY),
    *(burn_panel(slo, window) for slo in SLOS for window in PAGING_WINDOWS),
]

dashboard = C.dashboard(
    "SLOs",
    "llm-slos",
    f"Availability ({rules.percent(CFG.availability_objective)}) and latency "
    f"({rules.percent(CFG.latency_objective)} within {LATENCY_SECONDS} s) SLOs per upstream: error "
    "budget left and burn rates, from the recording rules of alerts/ (the ones the burn-rate alerts use).",
    panels,
)
