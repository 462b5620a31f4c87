"""SLOs: how much error budget is left, and how fast is it burning?

The SLOs come from dashboards/slo.py, which takes objectives, windows, alert and recording-rule
names from `alerts`, so this dashboard shows exactly the SLOs the alerts page on.
"""

import sys
from pathlib import Path

# grafanalib's loader executes this file by path, outside any package: make the repo importable.
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from alerts import promql, rules  # noqa: E402
from alerts.config import DEFAULT as CFG  # noqa: E402
from dashboards import common as C  # noqa: E402
from dashboards import queries as Q  # noqa: E402
from dashboards import slo as S  # noqa: E402


def budget_panels(slo: S.Slo) -> list:
    recorded = slo.ratio(S.LONGEST_RECORDED)
    return [
        C.stat(
            f"{slo.name} budget left, {S.PERIOD}",
            f"Share of the {slo.name.lower()} error budget left over the SLO period ({S.PERIOD}), per "
            f"upstream: 1 - (bad share over {S.PERIOD}) / (1 - {promql.number(slo.objective)}). "
            f"SLO: {slo.statement} 100%: nothing bad; 0%: the budget is spent; below 0: the SLO is "
            f"broken. {S.PERIOD_SCOPE}",
            C.RATIO, [C.target(slo.budget_left_in_period(), "{{upstream}}", instant=True)],
            thresholds=C.BUDGET_STEPS, decimals=1, w=6, h=5, time_from=S.PERIOD,
        ),
        C.stat(
            f"{slo.name} budget left at the last {S.LONGEST_RECORDED}'s pace",
            f"Share of the {slo.name.lower()} error budget that would be left if the last "
            f"{S.LONGEST_RECORDED} went on for the whole {S.PERIOD}, per upstream: 1 - (bad share over "
            f"{S.LONGEST_RECORDED}) / (1 - {promql.number(slo.objective)}), from {recorded}, the longest "
            f"window the recording rules keep. SLO: {slo.statement} {S.RECORDED_SCOPE}",
            C.RATIO, [C.target(slo.budget_left(Q.recorded(recorded, S.LEVEL)), "{{upstream}}")],
            thresholds=C.BUDGET_STEPS, decimals=1, w=6, h=5,
        ),
    ]


def burn_panel(slo: S.Slo, window) -> C.G.TimeSeries:
    factor = promql.number(window.factor)
    return C.timeseries(
        f"{slo.name} burn rate, {window.long} and {window.short}",
        f"How fast the {slo.name.lower()} error budget burns, per upstream: the bad share over the "
        f"window divided by the allowed share (1 - {promql.number(slo.objective)}); 1 spends exactly "
        f"the budget over the {S.PERIOD} SLO period. The dashed line is {factor}x: {slo.alert} pages "
        f"({window.severity}) when both the {window.long} and the {window.short} burn rate stay above "
        f"it for {window.for_}. SLO: {slo.statement} {S.RECORDED_SCOPE}",
        C.NUMBER,
        [
            C.target(slo.burn_rate(window.long), "{{upstream}} " + window.long),
            C.target(slo.burn_rate(window.short), "{{upstream}} " + window.short),
        ],
        thresholds=C.steps((C.GREEN, None), (C.RED, window.factor)), threshold_lines=True,
    )


rows = [
    C.Row("Error budget left", [panel for slo in S.SLOS for panel in budget_panels(slo)]),
    *(C.Row(f"{slo.name} burn rates", [burn_panel(slo, window) for window in S.PAGING_WINDOWS]) for slo in S.SLOS),
]

dashboard = C.dashboard(
    "SLOs",
    "llm-slos",
    f"Availability ({rules.percent(CFG.availability_objective)}), time to first token "
    f"({rules.percent(CFG.ttft_objective)} of streams within {S.TTFT_SECONDS} s) and whole-request latency "
    f"({rules.percent(CFG.latency_objective)} within {S.LATENCY_SECONDS} s, a signal, not a page) SLOs per "
    f"upstream: error budget left over the {S.PERIOD} SLO period and burn rates, from the recording rules "
    "of alerts/ (the ones the burn-rate alerts use).",
    rows,
)
