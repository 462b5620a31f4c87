"""promtool unit tests for every alert, written as data so series names come from the catalog.

Each scenario feeds input series to the generated rule files and states, at chosen times, which
alerts fire with which labels and which rendered description (the templated part is what the test
pins; summary and runbook_url are the rule's own). Every alert has a case where it fires and one
where it stays silent. Scenarios are written for the DEFAULT config: if a threshold changes, the
expected descriptions here change with it on purpose.

Series notation: promtool's expanding notation, one sample per minute ("0+5x3" = 0 5 10 15).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter import catalog
from exporter.catalog import MetricSpec

from alerts import promql, rules
from alerts.config import AlertsConfig

JOB = "llm-exporter"
BASE = {"job": JOB, "instance": "exporter:8080"}
U, M, A, C, T = catalog.UPSTREAM, catalog.MODEL, catalog.API, catalog.CODE, catalog.TYPE
CHAT = "openai_chat"


# --- Series values ------------------------------------------------------------------------------

def counter(*segments: tuple[float, int]) -> str:
    """A counter starting at 0; each (increase per minute, minutes) segment adds that many samples."""
    parts, value = ["0"], 0.0
    for step, minutes in segments:
        if minutes <= 0:
            continue
        start = value + step
        parts.append(f"{_n(start)}+{_n(step)}x{minutes - 1}")
        value = start + step * (minutes - 1)
    return " ".join(parts)


def gauge(*segments: tuple[float, int]) -> str:
    """A gauge holding each (value, minutes) segment; None for minutes without a sample."""
    return " ".join(
        (f"_x{minutes}" if value is None else f"{_n(value)}+0x{minutes - 1}")
        for value, minutes in segments
    )


def _n(value: float) -> str:
    return f"{value:.12g}"


def series(name: str, labels: dict[str, str], values: str) -> dict:
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{label_text}}}", "values": values}


def histogram(metric: MetricSpec, labels: dict[str, str],
              *segments: tuple[dict[float, float], int]) -> list[dict]:
    """Bucket, count and sum series of a catalog histogram fed per minute with {value: count}."""
    bounds = [*(metric.buckets or ()), float("inf")]
    out = []
    for bound in bounds:
        le = "+Inf" if bound == float("inf") else promql.le(bound)
        steps = [(sum(n for v, n in per_minute.items() if v <= bound), minutes)
                 for per_minute, minutes in segments]
        out.append(series(metric.name + "_bucket", {**labels, "le": le}, counter(*steps)))
    out.append(series(metric.name + "_count", labels,
                      counter(*((sum(p.values()), m) for p, m in segments))))
    out.append(series(metric.name + "_sum", labels,
                      counter(*((sum(v * n for v, n in p.items()), m) for p, m in segments))))
    return out


def requests(labels: dict[str, str], *segments: tuple[float, int]) -> dict:
    return series(catalog.REQUESTS.series, {**BASE, A: CHAT, **labels}, counter(*segments))


# --- Expectations ---------------------------------------------------------------------------------

@dataclass
class Fires:
    """One alert expected to fire: its labels (severity included) and rendered description."""

    labels: dict[str, str]
    description: str


@dataclass
class Check:
    at: str  # eval_time
    alertname: str
    fires: list[Fires] = field(default_factory=list)  # empty: must be silent


@dataclass
class Scenario:
    name: str
    input_series: list[dict]
    checks: list[Check]


def _rule_for(cfg: AlertsConfig, alertname: str, labels: dict[str, str]) -> dict:
    """The generated rule an expected alert comes from (same name, its labels a subset)."""
    for group in rules.alert_groups(cfg):
        for rule in group["rules"]:
            if rule["alert"] == alertname and rule["labels"].items() <= labels.items():
                return rule
    raise LookupError(f"no rule {alertname} with labels {labels}")


def _alert_test(cfg: AlertsConfig, check: Check) -> dict:
    expected = []
    for fire in check.fires:
        rule = _rule_for(cfg, check.alertname, fire.labels)
        annotations = dict(rule["annotations"], description=fire.description)
        expected.append({"exp_labels": fire.labels, "exp_annotations": annotations})
    return {"eval_time": check.at, "alertname": check.alertname, "exp_alerts": expected}


def test_file(cfg: AlertsConfig, scenarios: list[Scenario], evaluation_interval: str = "1m") -> dict:
    groups = [g["name"] for g in rules.recording_groups(cfg) + rules.alert_groups(cfg)]
    return {
        "rule_files": [f"../generated/{name}" for name in rules.rule_files(cfg)],
        "evaluation_interval": evaluation_interval,
        # Recording rules first, so an alert at time t reads the ratios recorded at t.
        "group_eval_order": groups,
        "tests": [
            {"name": s.name, "interval": "1m", "input_series": s.input_series,
             "alert_rule_test": [_alert_test(cfg, c) for c in s.checks]}
            for s in scenarios
        ],
    }


def test_files(cfg: AlertsConfig) -> dict[str, dict]:
    from alerts import scenarios

    return {
        "alerts_test.yml": test_file(cfg, scenarios.alert_scenarios()),
        # Days of history: evaluating every 5m (samples stay 1m apart) keeps promtool fast.
        "slo_test.yml": test_file(cfg, scenarios.slo_scenarios(), evaluation_interval="5m"),
    }
