"""Runbook links: every alert points at its own section of docs/runbooks.md."""

from __future__ import annotations

from exporter.runbooks import github_anchor

from alerts.config import AlertsConfig

__all__ = ["github_anchor", "runbook_url"]


def runbook_url(cfg: AlertsConfig, alertname: str) -> str:
    """The alert's section: its heading in docs/runbooks.md is the alert name itself."""
    return f"{cfg.runbook_base_url}#{github_anchor(alertname)}"
