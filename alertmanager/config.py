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
    # Alerts about an upstream are grouped by upstream: its outage (down, failing models, burning
    # budget) is one notification, updated as alerts join or resolve. Other alerts by name.
    group_by: tuple[str, ...] = ("alertname",)
    upstream_group_by: tuple[str, ...] = ("upstream",)
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

    # --- Watchdog (dead man's switch) -------------------------------------------------------------
    # The always-firing Watchdog goes to its own receiver, a webhook of an external dead man's
    # switch (healthchecks.io, Opsgenie heartbeat, PagerDuty/Cronitor...) that alarms when the
    # pings stop. None: the receiver notifies nobody until you set the URL (Alertmanager 0.25
    # reads webhook URLs from the config only, not from a file).
    watchdog_url: str | None = None
    watchdog_repeat_interval: str = "1m"  # a ping about every minute (group_interval apart)

    # --- Templates -------------------------------------------------------------------------------
    # Relative paths resolve against alertmanager.yml's directory (/etc/alertmanager in compose).
    templates: tuple[str, ...] = ("templates/*.tmpl",)


DEFAULT = AlertmanagerConfig()
