"""The routing tree, receivers and inhibition rules, generated from the config object.

critical -> Slack critical channel + on-call email; warning -> Slack warnings channel + team email;
info -> nobody (visible in the Alertmanager UI only); the Watchdog -> its dead man's switch. An
alert without a known severity goes to the team rather than nowhere: a missing label is a bug to
notice, not a reason to stay silent.
"""

from __future__ import annotations

from alerts import rules as r

from alertmanager.config import AlertmanagerConfig

ONCALL, TEAM, NULL, WATCHDOG = "oncall", "team", "null", "watchdog"
SEVERITY = "severity"

# What an upstream outage also fires on the same upstream: LLMUpstreamDown says it all.
UPSTREAM_OUTAGE_ECHOES = (
    r.HIGH_ERROR_RATIO, r.ERROR_BUDGET_BURN, r.SLOW_FIRST_TOKEN, r.TTFT_BUDGET_BURN,
    r.TPOT_REGRESSION, r.THROUGHPUT_DROPPED,
)
# What the backend reports about itself is moot while the upstream fails its probes: the reads
# fail with it, and a queue or cache read before the outage is old news.
BACKEND_STATE_ALERTS = (
    r.BACKEND_NO_MODEL, r.BACKEND_QUEUE_GROWING, r.BACKEND_KV_CACHE_FULL, r.BACKEND_STATE_UNREADABLE,
)
# What a backend with no model loaded also fires on the same upstream: its queue grows.
NO_MODEL_ECHOES = (r.BACKEND_QUEUE_GROWING,)
# What a model failing outright also fires for the same model (not for its neighbours).
MODEL_FAILURE_ECHOES = (r.SLOW_FIRST_TOKEN, r.TPOT_REGRESSION, r.THROUGHPUT_DROPPED, r.LOW_CACHE_HIT)
# What no reachable exporter also fires.
SERVICE_DOWN_ECHOES = (r.EXPORTER_DOWN, r.EXPORTER_ABSENT, r.NO_TRAFFIC, r.TRAFFIC_DROP)


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
        {"name": WATCHDOG, **({"webhook_configs": [{"url": cfg.watchdog_url, "send_resolved": False}]}
                              if cfg.watchdog_url else {})},
    ]


def route(cfg: AlertmanagerConfig) -> dict:
    def by_upstream() -> list[dict]:
        return [{"matchers": ['upstream=~".+"'], "group_by": list(cfg.upstream_group_by)}]

    return {
        "receiver": TEAM,
        "group_by": list(cfg.group_by),
        "group_wait": cfg.group_wait,
        "group_interval": cfg.group_interval,
        "repeat_interval": cfg.repeat_interval,
        "routes": [
            {"receiver": WATCHDOG, "matchers": [f'alertname="{r.WATCHDOG}"'],
             "group_wait": "0s", "group_interval": cfg.watchdog_repeat_interval,
             "repeat_interval": cfg.watchdog_repeat_interval},
            {"receiver": ONCALL, "matchers": [f'{SEVERITY}="critical"'],
             "repeat_interval": cfg.critical_repeat_interval, "routes": by_upstream()},
            {"receiver": TEAM, "matchers": [f'{SEVERITY}="warning"'], "routes": by_upstream()},
            {"receiver": NULL, "matchers": [f'{SEVERITY}="info"']},
        ],
    }


def _names(alertnames: tuple[str, ...]) -> str:
    return "alertname=~\"" + "|".join(alertnames) + "\""


def inhibit_rules() -> list[dict]:
    return [
        # The page says it all: no ticket for the same alert on the same upstream and model
        # (missing labels count as equal, so per-upstream alerts compare by upstream). Never
        # across models: one model failing says nothing about its neighbours.
        {"source_matchers": [f'{SEVERITY}="critical"'],
         "target_matchers": [f'{SEVERITY}="warning"'],
         "equal": ["alertname", "upstream", "model"]},
        # An upstream that fails its probes makes its failing requests, burning budget, slow
        # streams and unreadable backend state a consequence, not news: one page for the outage.
        {"source_matchers": [f'alertname="{r.UPSTREAM_DOWN}"'],
         "target_matchers": [_names((*UPSTREAM_OUTAGE_ECHOES, *BACKEND_STATE_ALERTS))],
         "equal": ["upstream"]},
        # No model loaded: the queue behind it grows as a consequence.
        {"source_matchers": [f'alertname="{r.BACKEND_NO_MODEL}"'],
         "target_matchers": [_names(NO_MODEL_ECHOES)],
         "equal": ["upstream"]},
        # A model failing most of its requests: its slow or sparse answers are the same incident.
        {"source_matchers": [f'alertname="{r.HIGH_ERROR_RATIO}"', f'{SEVERITY}="critical"'],
         "target_matchers": [_names(MODEL_FAILURE_ECHOES)],
         "equal": ["upstream", "model"]},
        # An instance that cannot be scraped makes its other alerts noise (or blind).
        {"source_matchers": [f'alertname="{r.EXPORTER_DOWN}"'],
         "target_matchers": [f'alertname!="{r.EXPORTER_DOWN}"'],
         "equal": ["instance"]},
        # No replica answers: that every replica is gone, and traffic with it, follows.
        {"source_matchers": [f'alertname="{r.EXPORTER_SERVICE_DOWN}"'],
         "target_matchers": [_names(SERVICE_DOWN_ECHOES)]},
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
