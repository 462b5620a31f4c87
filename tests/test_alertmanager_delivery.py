"""The generated alertmanager.yml in a real Alertmanager: alerts posted to its API reach the Slack
receiver and the mailbox by severity, rendered by our templates, inhibited as configured, and their
resolution is announced. Secrets (webhook URL, SMTP password) come from files only.

Alerts are posted the way Prometheus posts them, with the annotations the generated rules carry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from alertmanager.config import DEFAULT as ROUTES
from alerts import links, rules
from alerts.config import DEFAULT
from alerts.runbooks import runbook_url
from tests.alerting import (
    IGNORE_PLAIN_AUTH_WARNING, Mailbox, SlackReceiver, alertmanager_alerts, alertmanager_config, mail_text, slack_receiver,
    slack_text, smtp_sink, wait_for,
)
from tests.binaries import alertmanager

PASSWORD = "from-the-secret-file"
pytestmark = pytest.mark.filterwarnings(IGNORE_PLAIN_AUTH_WARNING)


@dataclass
class Stack:
    url: str
    slack: SlackReceiver
    mailbox: Mailbox


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:
    with slack_receiver() as slack, smtp_sink(PASSWORD) as mailbox:
        config = alertmanager_config(tmp_path, mailbox, slack)
        with alertmanager(config, tmp_path / "alertmanager") as url:
            yield Stack(url, slack, mailbox)


def alert(name: str, severity: str, ends: bool = False, **labels: str) -> dict:
    now = dt.datetime.now(dt.timezone.utc)
    scope = tuple(label for label in links.VARIABLES if label in labels)
    body = {
        "labels": {"alertname": name, "severity": severity, **labels},
        "annotations": {
            "summary": f"{name} summary.",
            "description": f"{name} on {labels.get('upstream', labels.get('instance'))} is at 42%.",
            "runbook_url": runbook_url(DEFAULT, name),
            "dashboard_url": links.dashboard_url(DEFAULT, links.MODEL_PERFORMANCE, scope, values=labels),
        },
        # Starting now, so group_wait applies: Alertmanager flushes a new group at once when an
        # alert started longer than group_wait ago, racing the inhibitor's view of its sources.
        "startsAt": now.isoformat(),
        "generatorURL": f"http://prometheus.test/graph?g0.expr={name}",
    }
    if ends:
        body["endsAt"] = now.isoformat()
    return body


def post(stack: Stack, *alerts: dict) -> None:
    httpx.post(f"{stack.url}/api/v2/alerts", json=list(alerts), timeout=10).raise_for_status()


def slack_posts(stack: Stack, *needles: str, channel: str | None = None) -> list[str]:
    """Texts of the Slack posts (to `channel`, if given) that contain every needle."""
    texts = [slack_text(p) for p in stack.slack.posts if channel in (None, p.get("channel"))]
    return [t for t in texts if all(n in t for n in needles)]


def mails(stack: Stack, *needles: str) -> list[str]:
    texts = [mail_text(m) for m in stack.mailbox.messages]
    return [t for t in texts if all(n in t for n in needles)]


def alert_state(stack: Stack, name: str, **labels: str) -> dict | None:
    for a in alertmanager_alerts(stack.url):
        if a["labels"]["alertname"] == name and labels.items() <= a["labels"].items():
            return a
    return None


def test_critical_pages_slack_and_on_call_then_resolves(stack: Stack):
    page = alert(rules.HIGH_ERROR_RATIO, "critical", upstream="openai", model="gpt-4o")
    post(stack, page)
    link = runbook_url(DEFAULT, rules.HIGH_ERROR_RATIO)

    [slack] = wait_for(lambda: slack_posts(stack, "FIRING", rules.HIGH_ERROR_RATIO,
                                           channel=ROUTES.slack_critical_channel), "Slack page")
    assert "critical" in slack and link in slack and "upstream openai" in slack
    assert "is at 42%" in slack and "model=gpt-4o" in slack  # description and labels

    [mail] = wait_for(lambda: mails(stack, "FIRING", rules.HIGH_ERROR_RATIO), "on-call email")
    assert f"To: {ROUTES.oncall_email}" in mail
    assert "critical" in mail and link in mail and "is at 42%" in mail

    post(stack, alert(rules.HIGH_ERROR_RATIO, "critical", ends=True, upstream="openai", model="gpt-4o"))
    wait_for(lambda: slack_posts(stack, "RESOLVED", rules.HIGH_ERROR_RATIO,
                                 channel=ROUTES.slack_critical_channel), "Slack resolved")
    wait_for(lambda: mails(stack, "RESOLVED", rules.HIGH_ERROR_RATIO, ROUTES.oncall_email), "resolved email")


def test_warning_goes_to_the_team(stack: Stack):
    post(stack, alert(rules.SLOW_FIRST_TOKEN, "warning", upstream="local", model="llama3"))
    [slack] = wait_for(lambda: slack_posts(stack, rules.SLOW_FIRST_TOKEN, channel=ROUTES.slack_warning_channel),
                       "Slack warning")
    assert "warning" in slack and runbook_url(DEFAULT, rules.SLOW_FIRST_TOKEN) in slack
    [mail] = wait_for(lambda: mails(stack, rules.SLOW_FIRST_TOKEN), "team email")
    assert f"To: {ROUTES.team_email}" in mail


def test_notifications_link_the_dashboard_the_expression_and_a_silence(stack: Stack):
    post(stack, alert(rules.HIGH_ERROR_RATIO, "critical", upstream="local", model="llama3:8b"))
    dashboard = (f"{DEFAULT.grafana_base_url}/d/{links.uid(links.MODEL_PERFORMANCE)}"
                 "?var-upstream=local&var-model=llama3%3A8b")
    expression = f"http://prometheus.test/graph?g0.expr={rules.HIGH_ERROR_RATIO}"
    [slack] = wait_for(lambda: slack_posts(stack, rules.HIGH_ERROR_RATIO), "Slack page")
    [mail] = wait_for(lambda: mails(stack, rules.HIGH_ERROR_RATIO), "on-call email")
    for message in (slack, mail):
        assert dashboard in message and expression in message
        # Alertmanager's own external URL, a new silence matching the notification's labels.
        assert f"{stack.url}/#/silences/new?filter=%7B" in message
        assert "alertname%3D%22LLMHighErrorRatio%22" in message and "upstream%3D%22local%22" in message


def test_info_notifies_nobody(stack: Stack):
    post(stack, alert(rules.LOW_CACHE_HIT, "info", upstream="openai", model="gpt-4o"))
    state = wait_for(lambda: alert_state(stack, rules.LOW_CACHE_HIT), "info alert received")
    assert [r["name"] for r in state["receivers"]] == ["null"]


def test_critical_inhibits_the_warning_of_the_same_alert_and_model_only(stack: Stack):
    post(stack, alert(rules.HIGH_ERROR_RATIO, "critical", upstream="openai", model="gpt-4o"))
    wait_for(lambda: alert_state(stack, rules.HIGH_ERROR_RATIO, severity="critical"), "critical received")
    post(stack,
         alert(rules.HIGH_ERROR_RATIO, "warning", upstream="openai", model="gpt-4o"),
         alert(rules.HIGH_ERROR_RATIO, "warning", upstream="openai", model="gpt-4o-mini"),
         alert(rules.HIGH_ERROR_RATIO, "warning", upstream="local", model="llama3"))
    inhibited = wait_for(
        lambda: (a := alert_state(stack, rules.HIGH_ERROR_RATIO, severity="warning", model="gpt-4o"))
        and a["status"]["inhibitedBy"] and a, "warning inhibited")
    assert inhibited["status"]["state"] == "suppressed"
    # Another model of the same upstream, and another upstream, are news: they reach the team.
    [team] = wait_for(lambda: slack_posts(stack, rules.HIGH_ERROR_RATIO, "model=gpt-4o-mini",
                                          channel=ROUTES.slack_warning_channel), "other model's warning")
    assert "model=gpt-4o " not in team  # the labels line of the inhibited warning
    wait_for(lambda: slack_posts(stack, rules.HIGH_ERROR_RATIO, "upstream local",
                                 channel=ROUTES.slack_warning_channel), "other upstream's warning")


def test_exporter_down_inhibits_the_other_alerts_of_its_instance(stack: Stack):
    post(stack, alert(rules.EXPORTER_DOWN, "critical", instance="exporter-a:8080", job="llm-exporter"))
    wait_for(lambda: alert_state(stack, rules.EXPORTER_DOWN), "exporter down received")
    post(stack,
         alert(rules.TELEMETRY_DROPPING, "warning", instance="exporter-a:8080", job="llm-exporter"),
         alert(rules.TELEMETRY_DROPPING, "warning", instance="exporter-b:8080", job="llm-exporter"))
    same = wait_for(
        lambda: (a := alert_state(stack, rules.TELEMETRY_DROPPING, instance="exporter-a:8080"))
        and a["status"]["inhibitedBy"] and a, "same instance inhibited")
    assert same["status"]["state"] == "suppressed"
    other = wait_for(lambda: alert_state(stack, rules.TELEMETRY_DROPPING, instance="exporter-b:8080"),
                     "other instance received")
    assert other["status"]["inhibitedBy"] == []
    down = alert_state(stack, rules.EXPORTER_DOWN)
    assert down["status"]["inhibitedBy"] == []


def test_one_upstream_outage_is_one_notification(stack: Stack):
    """The upstream goes down: its models' error ratios (both severities), the burn-rate pair and
    the slow first tokens fire too. One page arrives, one Slack post and one email, and nothing
    reaches the team; another upstream's alerts are untouched."""
    down = alert(rules.UPSTREAM_DOWN, "critical", upstream="openai")
    post(stack, down)
    wait_for(lambda: slack_posts(stack, rules.UPSTREAM_DOWN), "the outage's page")
    window = {"long_window": "1h", "short_window": "5m"}
    echoes = [
        *(alert(rules.HIGH_ERROR_RATIO, severity, upstream="openai", model=model)
          for severity in ("critical", "warning") for model in ("gpt-4o", "gpt-4o-mini")),
        alert(rules.ERROR_BUDGET_BURN, "critical", upstream="openai", **window),
        alert(rules.ERROR_BUDGET_BURN, "warning", upstream="openai", long_window="1d", short_window="2h"),
        alert(rules.TTFT_BUDGET_BURN, "critical", upstream="openai", **window),
        alert(rules.SLOW_FIRST_TOKEN, "warning", upstream="openai", model="gpt-4o"),
    ]
    post(stack, *echoes)
    wait_for(lambda: all((a := alert_state(stack, e["labels"]["alertname"], **e["labels"]))
                         and a["status"]["inhibitedBy"] for e in echoes), "every echo inhibited")
    # A control alert of another upstream, posted after the echoes: once its page has arrived,
    # Alertmanager has flushed (group_interval 1s) everything it was going to send for them.
    post(stack, alert(rules.HIGH_ERROR_RATIO, "critical", upstream="local", model="llama3"))
    wait_for(lambda: slack_posts(stack, "upstream local"), "the other upstream's page")
    wait_for(lambda: mails(stack, "upstream local"), "the other upstream's email")
    openai = [p for p in stack.slack.posts if "upstream openai" in slack_text(p)]
    assert len(openai) == 1 and rules.UPSTREAM_DOWN in slack_text(openai[0])
    assert len(mails(stack, "upstream openai")) == 1
    assert not [p for p in stack.slack.posts if p.get("channel") == ROUTES.slack_warning_channel]


def test_one_failing_upstream_pages_once_for_all_its_alerts(stack: Stack):
    """No probe failure: its models fail and its budget burns. Grouped by upstream, the first
    notification carries every alert, and the warnings are inhibited by their criticals."""
    window = {"long_window": "1h", "short_window": "5m"}
    post(stack,
         *(alert(rules.HIGH_ERROR_RATIO, severity, upstream="openai", model=model)
           for severity in ("critical", "warning") for model in ("gpt-4o", "gpt-4o-mini")),
         alert(rules.ERROR_BUDGET_BURN, "critical", upstream="openai", **window),
         alert(rules.ERROR_BUDGET_BURN, "warning", upstream="openai", long_window="1d", short_window="2h"))
    [page] = wait_for(lambda: slack_posts(stack, "upstream openai"), "the page")
    assert page.count(rules.HIGH_ERROR_RATIO) >= 2 and rules.ERROR_BUDGET_BURN in page
    post(stack, alert(rules.HIGH_ERROR_RATIO, "critical", upstream="local", model="llama3"))
    wait_for(lambda: slack_posts(stack, "upstream local"), "the control page")
    assert len(slack_posts(stack, "upstream openai")) == 1
    assert not [p for p in stack.slack.posts if p.get("channel") == ROUTES.slack_warning_channel]


def test_the_watchdog_pings_its_own_receiver_again_and_again(stack: Stack):
    post(stack, alert(rules.WATCHDOG, "none"))
    wait_for(lambda: len(stack.slack.pings) >= 2, "two pings of the dead man's switch")
    assert all(ping["commonLabels"]["alertname"] == rules.WATCHDOG for ping in stack.slack.pings)
    post(stack, alert(rules.HIGH_ERROR_RATIO, "critical", upstream="local", model="llama3"))
    wait_for(lambda: slack_posts(stack, "upstream local"), "a page after the pings")
    assert slack_posts(stack, rules.WATCHDOG) == [] and mails(stack, rules.WATCHDOG) == []
