"""The one config object of the Alertmanager routes: receivers, addresses, timings, secret files.

Defaults point at the compose stack's local sinks (mailpit for email, a local receiver behind the
Slack webhook URL), so `docker compose up` delivers somewhere visible without any real account.
Secrets are only ever file paths: the files live in secrets/, mounted at /etc/alertmanager/secrets.
"""

from __future__ import annotations

from dataclasses import dataclass

SECRETS = "/etc/alertmanager/secrets"


@dataclass(frozen=True)
class AlertmanagerConfig:
    # --- Grouping and timing ---------------------------------------------------------------------
    # One notification per alert name and upstream: a failing upstream pages once, not per model.
    group_by: tuple[str, ...] = ("alertname", "upstream")
    group_wait: str = "30s"  # collect the first alerts of a new group before notifying
    group_interval: str = "5m"  # wait before notifying about changes (new alerts, resolved) in a group
    repeat_interval: str = "4h"  # re-send a still-firing warning group
    critical_repeat_interval: str = "1h"  # re-send a still-firing critical group

    # --- Email (SMTP) ----------------------------------------------------------------------------
    smtp_smarthost: str = "mailpit:1025"
    smtp_from: str = "alertmanager@llm-exporter.local"
    # The local mailpit speaks plain SMTP; set True for a real relay (STARTTLS).
    smtp_require_tls: bool = False
    smtp_auth_username: str = "alertmanager"
    # Read only when the server offers AUTH (mailpit by default does not).
    smtp_auth_password_file: str = f"{SECRETS}/smtp_password"
    oncall_email: str = "oncall@llm-exporter.local"  # critical
    team_email: str = "team@llm-exporter.local"  # warning

    # --- Slack -----------------------------------------------------------------------------------
    # A Slack incoming webhook posts to the channel it was created for, so each channel may have its
    # own webhook file. Both default to one file whose content, in compose, is the URL of the local
    # receiver that stands in for Slack.
    slack_critical_channel: str = "#llm-alerts-critical"
    slack_critical_url_file: str = f"{SECRETS}/slack_webhook_url"
    slack_warning_channel: str = "#llm-alerts"
    slack_warning_url_file: str = f"{SECRETS}/slack_webhook_url"

    # --- Templates -------------------------------------------------------------------------------
    # Relative paths resolve against alertmanager.yml's directory (/etc/alertmanager in compose).
    templates: tuple[str, ...] = ("templates/*.tmpl",)


DEFAULT = AlertmanagerConfig()
