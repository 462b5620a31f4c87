"""Runbook links: every alert points at its own section of docs/runbooks.md."""

from __future__ import annotations

import re

from alerts.config import AlertsConfig


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_url(cfg: AlertsConfig, alertname: str) -> str:
    """The alert's section: its heading in docs/runbooks.md is the alert name itself."""
    return f"{cfg.runbook_base_url}#{github_anchor(alertname)}"
