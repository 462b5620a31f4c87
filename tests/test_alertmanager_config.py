"""alertmanager/alertmanager.yml: current, valid for amtool, each severity routed where it should."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import alertmanager.__main__ as generator
from alertmanager import routes
from alertmanager.config import DEFAULT
from alerts import rules as r
from alerts.config import DEFAULT as ALERTS
from alerts.rules import EXPORTER_DOWN, HIGH_ERROR_RATIO
from tests.binaries import run_tool

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "alertmanager" / "alertmanager.yml"


def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def receiver(name: str) -> dict:
    return next(r for r in config()["receivers"] if r["name"] == name)


def test_committed_file_is_what_the_generator_writes_now():
    for path, text in generator.generated_files().items():
        assert path.read_text() == text, "run `make generate` (python -m alertmanager) and commit"


def test_amtool_check_config():
    result = run_tool("amtool", "check-config", str(CONFIG))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 templates" in output  # the templates/*.tmpl glob, parsed


@pytest.mark.parametrize(("labels", "receivers"), [
    ({"severity": "critical"}, [routes.ONCALL]),
    ({"severity": "warning"}, [routes.TEAM]),
    ({"severity": "info"}, [routes.NULL]),
    ({}, [routes.TEAM]),  # a missing severity is a bug to see, not a reason for silence
    ({"alertname": r.WATCHDOG, "severity": "none", "upstream": ""}, [routes.WATCHDOG]),
    ({"alertname": r.NOTIFICATIONS_FAILING, "severity": "critical", "upstream": ""}, [routes.ONCALL]),
], ids=["critical", "warning", "info", "no-severity", "watchdog", "alerting-path"])
def test_amtool_routes(labels: dict[str, str], receivers: list[str]):
    merged = {"alertname": HIGH_ERROR_RATIO, "upstream": "openai", **labels}
    args = [f"{k}={v}" for k, v in merged.items() if v]
    result = run_tool("amtool", "config", "routes", "test", f"--config.file={CONFIG}",
                      "--verify.receivers=" + ",".join(receivers), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == receivers


def test_critical_goes_to_the_critical_channel_and_on_call_email():
    oncall = receiver(routes.ONCALL)
    assert [s["channel"] for s in oncall["slack_configs"]] == [DEFAULT.slack_critical_channel]
    assert [e["to"] for e in oncall["email_configs"]] == [DEFAULT.oncall_email]


def test_warning_goes_to_the_warnings_channel_and_team_email():
    team = receiver(routes.TEAM)
    assert [s["channel"] for s in team["slack_configs"]] == [DEFAULT.slack_warning_channel]
    assert [e["to"] for e in team["email_configs"]] == [DEFAULT.team_email]


def test_info_notifies_nobody():
    assert receiver(routes.NULL) == {"name": routes.NULL}


def test_grouping():
    """An upstream's alerts are one group per receiver (one notification per incident); others
    are grouped by name."""
    route = config()["route"]
    assert route["group_by"] == ["alertname"]
    for child in route["routes"]:
        if child["receiver"] in (routes.ONCALL, routes.TEAM):
            assert child["routes"] == [{"matchers": ['upstream=~".+"'], "group_by": ["upstream"]}]


def test_the_watchdog_has_its_own_receiver_and_repeats():
    watchdog = next(c for c in config()["route"]["routes"] if c["receiver"] == routes.WATCHDOG)
    assert watchdog["matchers"] == [f'alertname="{r.WATCHDOG}"']
    assert watchdog["repeat_interval"] == DEFAULT.watchdog_repeat_interval
    assert config()["route"]["routes"][0] == watchdog  # first: before the severity routes
    assert receiver(routes.WATCHDOG) == {"name": routes.WATCHDOG}  # until watchdog_url is set


def test_inhibitions_name_alerts_that_exist():
    names = {rule["alert"] for group in r.alert_groups(ALERTS) for rule in group["rules"]}
    for rule in config()["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            if matcher.startswith("alertname="):
                assert set(matcher.split('"')[1].split("|")) <= names, matcher


def test_every_notifier_sends_resolved():
    for r in config()["receivers"]:
        for notifier in r.get("slack_configs", []) + r.get("email_configs", []):
            assert notifier["send_resolved"] is True


def test_secrets_come_only_from_files():
    text = CONFIG.read_text()
    cfg = config()
    for key in ("slack_api_url:", "api_url:", "auth_password:", "smtp_auth_password:", "hooks.slack.com"):
        assert key not in text
    assert cfg["global"]["smtp_auth_password_file"].startswith("/etc/alertmanager/secrets/")
    for r in cfg["receivers"]:
        for slack in r.get("slack_configs", []):
            assert slack["api_url_file"] == "/etc/alertmanager/secrets/slack_webhook_url"


def test_defaults_point_at_the_local_sinks_of_the_compose_stack():
    assert config()["global"]["smtp_smarthost"] == "mailpit:1025"
    assert config()["global"]["smtp_require_tls"] is False


def test_inhibitions():
    rules = config()["inhibit_rules"]
    assert {"source_matchers": ['severity="critical"'], "target_matchers": ['severity="warning"'],
            "equal": ["alertname", "upstream", "model"]} in rules
    down = next(x for x in rules if x["source_matchers"] == [f'alertname="{r.UPSTREAM_DOWN}"'])
    assert down["equal"] == ["upstream"]
    assert {r.HIGH_ERROR_RATIO, r.ERROR_BUDGET_BURN, r.SLOW_FIRST_TOKEN, r.TTFT_BUDGET_BURN} <= set(
        down["target_matchers"][0].split('"')[1].split("|"))
    model = next(x for x in rules if f'alertname="{r.HIGH_ERROR_RATIO}"' in x["source_matchers"])
    assert model["equal"] == ["upstream", "model"]
    assert {"source_matchers": [f'alertname="{EXPORTER_DOWN}"'],
            "target_matchers": [f'alertname!="{EXPORTER_DOWN}"'], "equal": ["instance"]} in rules


def test_backend_state_alerts_are_inhibited_by_their_upstreams_outage():
    """While an upstream fails its probes, what its backend reports (or cannot) is no news; a
    backend without a model loaded makes its growing queue none either."""
    rules = config()["inhibit_rules"]
    down = next(x for x in rules if x["source_matchers"] == [f'alertname="{r.UPSTREAM_DOWN}"'])
    assert set(routes.BACKEND_STATE_ALERTS) <= set(down["target_matchers"][0].split('"')[1].split("|"))
    assert {"source_matchers": [f'alertname="{r.BACKEND_NO_MODEL}"'],
            "target_matchers": [f'alertname=~"{r.BACKEND_QUEUE_GROWING}"'], "equal": ["upstream"]} in rules


def test_templates_define_what_the_receivers_use():
    templates = "".join(p.read_text() for p in (REPO / "alertmanager" / "templates").glob("*.tmpl"))
    used = set()
    for r in config()["receivers"]:
        for notifier in r.get("slack_configs", []) + r.get("email_configs", []):
            for value in [*notifier.values(), *notifier.get("headers", {}).values()]:
                used.update(re.findall(r'template "([^"]+)"', str(value)))
    assert used
    for name in used:
        assert f'define "{name}"' in templates
