"""Dashboard links: each alert's dashboard_url opens the generated dashboard that shows its problem.

The uid is read from the generated JSON (dashboards/generated/<name>.json), so a renamed uid is
picked up by `make generate` (dashboards first, then alerts). The variables are the alert's own
labels, escaped by Prometheus' template engine (`urlquery`); the promtool tests render the same
URL in Python (`quote_plus`, what Go's urlquery does) to pin it.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from urllib.parse import quote_plus

from exporter import catalog

from alerts.config import AlertsConfig

GENERATED = Path(__file__).resolve().parent.parent / "dashboards" / "generated"

# Dashboards by the file name of their generated JSON.
OVERVIEW = "overview"
MODEL_PERFORMANCE = "model_performance"
COST_USAGE = "cost_usage"
SLOS = "slos"
EXPORTER_RESOURCES = "exporter_resources"
BACKENDS = "backends"

# The alert labels a dashboard variable of the same name is set from, in URL order.
VARIABLES = (catalog.UPSTREAM, catalog.MODEL)


@cache
def uid(dashboard: str) -> str:
    return json.loads((GENERATED / f"{dashboard}.json").read_text())["uid"]


def dashboard_url(cfg: AlertsConfig, dashboard: str, labels: tuple[str, ...],
                  values: dict[str, str] | None = None) -> str:
    """The dashboard with var-<label> for each of `labels`: a template, or rendered from `values`."""
    query = []
    for label in VARIABLES:
        if label in labels:
            value = quote_plus(values[label]) if values is not None else f"{{{{ $labels.{label} | urlquery }}}}"
            query.append(f"var-{label}={value}")
    url = f"{cfg.grafana_base_url}/d/{uid(dashboard)}"
    return url + ("?" + "&".join(query) if query else "")


def rendered(url: str, labels: dict[str, str]) -> str:
    """A dashboard_url as Prometheus renders it for an alert with `labels`."""
    return re.sub(r"\{\{ \$labels\.(\w+) \| urlquery \}\}",
                  lambda m: quote_plus(labels.get(m[1], "")), url)
