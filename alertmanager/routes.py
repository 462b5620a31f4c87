"""The routing tree, receivers and inhibition rules, generated from the config object.

critical -> Slack critical channel + on-call email; warning -> Slack warnings channel + team email;
info -> nobody (visible in the Alertmanager UI only). An alert without a known severity goes to the
team rather than nowhere: a missing label is a bug to notice, not a reason to stay silent.
"""

from __future__ import annotations

from alerts.rules import EXPORTER_DOWN

from alertmanager.config import AlertmanagerConfig

ONCALL, TEAM, NULL = "oncall", "team", "null"
SEVERITY = "severity"


def slack(channel: str, url_file: str) -> dict:
    return {
        "api_url_file": url_file,
        "channel": channel,
        "send_resolved": True,
        "title": '{{ template "llm.slack.title" . }}',
        "title_link": '{{ template "llm.slack.title_link" . }}',
        "text": '{{ template "llm.slack.text" . }}',
        "color": '{{ template "llm.slack.color" . }}',
        "fallback": '{{ template "llm.title" . }}',
    }


def email(to: str) -> dict:
    return {
        "to": to,
        "send_resolved": True,
        "headers": {"Subject": '{{ template "llm.email.subject" . }}'},
        "html": '{{ template "llm.email.html" . }}',
        "text": '{{ template "llm.email.text" . }}',
    }


def receivers(cfg: AlertmanagerConfig) -> list[dict]:
    return [
        {"name": ONCALL,
         "slack_configs": [slack(cfg.slack_critical_channel, cfg.slack_critical_url_file)],
         "email_configs": [email(cfg.oncall_email)]},
        {"name": TEAM,
         "slack_configs": [slack(cfg.slack_warning_channel, cfg.slack_warning_url_file)],
         "email_configs": [email(cfg.team_email)]},
        {"name": NULL},
    ]


def route(cfg: AlertmanagerConfig) -> dict:
    return {
        "receiver": TEAM,
        "group_by": list(cfg.group_by),
        "group_wait": cfg.group_wait,
        "group_interval": cfg.group_interval,
        "repeat_interval": cfg.repeat_interval,
        "routes": [
            {"receiver": ONCALL, "matchers": [f'{SEVERITY}="critical"'],
             "repeat_interval": cfg.critical_repeat_interval},
            {"receiver": TEAM, "matchers": [f'{SEVERITY}="warning"']},
            {"receiver": NULL, "matchers": [f'{SEVERITY}="info"']},
        ],
    }


def inhibit_rules() -> list[dict]:
    return [
        # The page says it all: no extra ticket for the same problem on the same upstream.
        {"source_matchers": [f'{SEVERITY}="critical"'],
         "target_matchers": [f'{SEVERITY}="warning"'],
         "equal": ["alertname", "upstream"]},
        # An instance that cannot be scraped makes its other alerts noise (or blind).
        {"source_matchers": [f'alertname="{EXPORTER_DOWN}"'],
         "target_matchers": [f'alertname!="{EXPORTER_DOWN}"'],
         "equal": ["instance"]},
    ]


def alertmanager_config(cfg: AlertmanagerConfig) -> dict:
    smtp = {
        "smtp_smarthost": cfg.smtp_smarthost,
        "smtp_from": cfg.smtp_from,
        "smtp_require_tls": cfg.smtp_require_tls,
        "smtp_auth_username": cfg.smtp_auth_username,
        "smtp_auth_password_file": cfg.smtp_auth_password_file,
    }
    return {
        "global": smtp,
        "templates": list(cfg.templates),
        "route": route(cfg),
        "inhibit_rules": inhibit_rules(),
        "receivers": receivers(cfg),
    }
