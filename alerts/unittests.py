"""promtool unit tests for every alert, written as data so series names come from the catalog.

Each scenario (alerts.scenarios) feeds input series (alerts.series) to the generated rule files and
states, at chosen times, which alerts fire with which labels and which rendered description (the
templated part is what the test pins; summary and runbook_url are the rule's own). Every alert has
a case where it fires and one where it stays silent. Scenarios are written for the DEFAULT config:
if a threshold changes, the expected descriptions there change with it on purpose.
"""

from __future__ import annotations

from alerts import links, rules, scenarios
from alerts.config import AlertsConfig
from alerts.scenarios import Check, Scenario


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
        annotations = dict(rule["annotations"], description=fire.description,
                           dashboard_url=links.rendered(rule["annotations"]["dashboard_url"], fire.labels))
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
            {"name": s.name, "interval": "1m", "input_series": [i for i in s.input_series if i],
             "alert_rule_test": [_alert_test(cfg, c) for c in s.checks]}
            for s in scenarios
        ],
    }


def test_files(cfg: AlertsConfig) -> dict[str, dict]:
    return {
        "alerts_test.yml": test_file(cfg, scenarios.alert_scenarios()),
        # Days of history: evaluating every 5m (samples stay 1m apart) keeps promtool fast.
        "slo_test.yml": test_file(cfg, scenarios.slo_scenarios(), evaluation_interval="5m"),
        "history_test.yml": test_file(cfg, scenarios.history_scenarios(), evaluation_interval="5m"),
    }
