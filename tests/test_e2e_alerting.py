"""End to end: a failing upstream becomes a Slack message and an email, and so does its recovery.

The real chain, all on 127.0.0.1: the demo upstream <- the exporter <- a real Prometheus scraping
and evaluating every second, with the rule files the generators make for short windows, and the
committed prometheus.yml's rule layout -> a real Alertmanager with the generated routes and the
message templates -> a local Slack webhook receiver and an SMTP sink requiring the password from
the secret file. Traffic makes the upstream fail (x-demo-status: 500), then recover.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from alertmanager.config import DEFAULT as ROUTES
from alerts import rules
from alerts.config import DEFAULT
from alerts.runbooks import runbook_url
from exporter.config import parse_settings
from exporter.demo.upstream import create_app as create_demo_upstream
from tests.alerting import (
    IGNORE_PLAIN_AUTH_WARNING, Mailbox, SlackReceiver, alertmanager_config, mail_text,
    prometheus_config, short_windows, slack_receiver, slack_text, smtp_sink, wait_for,
)
from tests.binaries import alertmanager, prometheus
from tests.servers import running_exporter, serve

pytestmark = pytest.mark.filterwarnings(IGNORE_PLAIN_AUTH_WARNING)

UPSTREAM, MODEL = "demo", "demo-gpt-mini"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "are you up"}], "max_tokens": 4}
FAIL = {"x-demo-status": "500"}
PASSWORD = "smtp-secret-from-file"
ALERT = rules.HIGH_ERROR_RATIO


@dataclass
class Stack:
    exporter_url: str
    prometheus_url: str
    slack: SlackReceiver
    mailbox: Mailbox


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    cfg = short_windows(DEFAULT)
    with serve(create_demo_upstream(pacing=False)) as demo_url, \
            slack_receiver() as slack, smtp_sink(PASSWORD) as mailbox:
        settings = parse_settings({
            "upstreams": [{"name": UPSTREAM, "url": demo_url}],
            "probe": {"interval_seconds": 1},
            "db": {"path": str(tmp_path / "telemetry.db")},
        })
        with running_exporter(settings) as exporter_url, \
                alertmanager(alertmanager_config(tmp_path / "am", mailbox, slack), tmp_path / "am") as am_url:
            config = prometheus_config(tmp_path / "prom", cfg, exporter_url, am_url)
            with prometheus(config, tmp_path / "prom") as prometheus_url:
                yield Stack(exporter_url, prometheus_url, slack, mailbox)


def send(stack: Stack, headers: dict[str, str] | None = None, count: int = 3) -> None:
    with httpx.Client(base_url=stack.exporter_url, timeout=30) as client:
        for _ in range(count):
            client.post("/v1/chat/completions", json=CHAT, headers=headers)


def slack_posts(stack: Stack, status: str) -> list[str]:
    """Posts to the critical channel that report our critical alert as `status` (firing or
    resolved). An upstream's alerts share one notification, so the alert's own block says it."""
    block = f"*{ALERT}* | severity: *critical* | {status}"
    return [slack_text(p) for p in stack.slack.posts
            if p.get("channel") == ROUTES.slack_critical_channel and block in slack_text(p)]


def mails(stack: Stack, status: str) -> list[str]:
    block = f"Alert:       {ALERT}\nSeverity:    critical\nStatus:      {status}"
    texts = [mail_text(m).replace("\r\n", "\n") for m in stack.mailbox.messages]
    return [text for text in texts if block in text]


def test_upstream_failure_reaches_slack_and_email_then_recovery_does(stack: Stack):
    link = runbook_url(DEFAULT, ALERT)
    rendered = f"of the requests to model {MODEL} on upstream {UPSTREAM} failed"  # by Prometheus

    # Every request fails: the error ratio is 100%, the critical alert fires and pages.
    failing = lambda: send(stack, FAIL)  # noqa: E731
    slack = wait_for(lambda: slack_posts(stack, "firing"), "Slack page", between=failing)[0]
    mail = wait_for(lambda: mails(stack, "firing"), "on-call email", between=failing)[0]
    for message in (slack, mail):
        assert ALERT in message and "critical" in message and link in message
        assert rendered in message and f"upstream={UPSTREAM}" in message
    assert f"To: {ROUTES.oncall_email}" in mail
    # Its warning twin fired too, but the page inhibits it: the team hears nothing while it pages.
    # (Once the page resolves, a still-firing warning does reach the team: that is intended.)
    assert not [p for p in stack.slack.posts
                if p.get("channel") == ROUTES.slack_warning_channel and ALERT in slack_text(p)]

    # The upstream recovers: the failures leave the window, the alert resolves, both sinks hear it.
    succeeding = lambda: send(stack)  # noqa: E731
    slack = wait_for(lambda: slack_posts(stack, "resolved"), "Slack resolved", between=succeeding)[0]
    mail = wait_for(lambda: mails(stack, "resolved"), "resolved email", between=succeeding)[0]
    for message in (slack, mail):
        assert ALERT in message and "critical" in message and link in message
        assert "resolved" in message
    assert f"To: {ROUTES.oncall_email}" in mail


def query(stack: Stack, expr: str) -> list[dict]:
    response = httpx.get(f"{stack.prometheus_url}/api/v1/query", params={"query": expr}, timeout=10)
    response.raise_for_status()
    return response.json()["data"]["result"]


def scalar(stack: Stack, expr: str) -> float | None:
    result = query(stack, expr)
    return float(result[0]["value"][1]) if result else None


def test_the_first_failure_of_a_model_is_counted_by_prometheus(stack: Stack):
    """The model's first requests succeed; Prometheus then scrapes its failure series at 0, so the
    one failure that follows is an increase. Born at 1, it would be invisible to increase()."""
    failed = f'llm_requests_total{{job="llm-exporter",model="{MODEL}",code="500"}}'
    send(stack, count=2)
    wait_for(lambda: scalar(stack, failed) == 0, "the failure series scraped at 0")
    send(stack, FAIL, count=1)
    wait_for(lambda: scalar(stack, failed) == 1, "the failure scraped")
    counted = scalar(stack, f"sum(increase({failed}[1m]))")
    assert counted is not None and 0.9 <= counted <= 2, counted  # 1, give or take extrapolation
    # And Prometheus 2.x ingested no `_created` series from the OpenMetrics scrapes.
    assert query(stack, '{__name__=~".+_created", job="llm-exporter"}') == []
