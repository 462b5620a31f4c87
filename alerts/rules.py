"""Alerting rules. Every rule's numbers come from the config object, its names from the catalog.

Each alert carries severity (critical pages, warning tickets, info is only shown), a static
summary, a description naming the labels and the humanized value, and a runbook_url to its own
section of docs/runbooks.md. Ratio and percentile alerts need a minimum request rate, so that two
requests cannot page anybody.
"""

from __future__ import annotations

from exporter import catalog

from alerts import promql, recording
from alerts.config import AlertsConfig, Threshold
from alerts.runbooks import runbook_url

# Alert names, used by the Alertmanager routes (inhibition) and the tests.
EXPORTER_DOWN = "LLMExporterDown"
EXPORTER_ABSENT = "LLMExporterAbsent"
UPSTREAM_DOWN = "LLMUpstreamDown"
HIGH_ERROR_RATIO = "LLMHighErrorRatio"
HIGH_LATENCY = "LLMHighRequestLatency"
SLOW_FIRST_TOKEN = "LLMSlowTimeToFirstToken"
THROUGHPUT_DROPPED = "LLMOutputThroughputDropped"
IN_FLIGHT_SATURATION = "LLMInFlightSaturation"
COST_BUDGET = "LLMCostBudgetExceeded"
LOW_CACHE_HIT = "LLMLowPromptCacheHitRatio"
TELEMETRY_DROPPING = "LLMTelemetryDropping"
MEMORY_HIGH = "LLMExporterMemoryHigh"
USAGE_MISSING = "LLMUsageMissing"
ERROR_BUDGET_BURN = "LLMErrorBudgetBurn"
LATENCY_BUDGET_BURN = "LLMLatencyBudgetBurn"

UPSTREAM, MODEL, API = catalog.UPSTREAM, catalog.MODEL, catalog.API


def alert(
    cfg: AlertsConfig,
    name: str,
    severity: str,
    expr: str,
    for_: str,
    summary: str,
    description: str,
    labels: dict[str, str] | None = None,
) -> dict:
    """One rule in Prometheus' format, with the annotations every alert must carry."""
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, **(labels or {}), **cfg.extra_labels},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": runbook_url(cfg, name),
        },
    }


def percent(ratio: float) -> str:
    return f"{ratio * 100:g}%"


def bytes_iec(value: float) -> str:
    """1073741824 -> "1GiB", the unit humanize1024 prints at alert time."""
    for unit in ("", "Ki", "Mi", "Gi", "Ti"):
        if value < 1024 or unit == "Ti":
            return f"{value:g}{unit}B"
        value /= 1024
    raise AssertionError


def with_traffic(cfg: AlertsConfig, expr: str) -> str:
    """Keep `expr` (per upstream and model) only where the request rate is worth alerting on."""
    return (
        f"{expr}\nand on ({UPSTREAM}, {MODEL})\n"
        f"{recording.requests_rate(cfg)} >= {promql.number(cfg.min_request_rate)}"
    )


def where(model: bool = True) -> str:
    """The usual place an alert names: model M on upstream U."""
    if model:
        return "model {{ $labels.model }} on upstream {{ $labels.upstream }}"
    return "upstream {{ $labels.upstream }}"


def availability_alerts(cfg: AlertsConfig) -> list[dict]:
    up = promql.series("up", cfg.selector)
    upstream_up = promql.series(catalog.UPSTREAM_UP, cfg.selector)
    return [
        alert(
            cfg, EXPORTER_DOWN, "critical", f"{up} == 0", cfg.exporter_down_for,
            "An llm-exporter instance cannot be scraped.",
            "Prometheus has failed to scrape {{ $labels.instance }} of job {{ $labels.job }} "
            f"for {cfg.exporter_down_for} (up = {{{{ $value | humanize }}}}): the traffic it proxies "
            "is not measured, and it may not be proxying at all.",
        ),
        alert(
            cfg, EXPORTER_ABSENT, "critical", f"absent({up})", cfg.exporter_absent_for,
            "No llm-exporter instance is being scraped.",
            "Prometheus has discovered no target of job {{ $labels.job }} for "
            f"{cfg.exporter_absent_for} (absent = {{{{ $value | humanize }}}}): no exporter replica "
            "is running, or service discovery cannot find it.",
        ),
        alert(
            cfg, UPSTREAM_DOWN, "critical",
            f"max by ({UPSTREAM}) ({upstream_up}) == 0", cfg.upstream_down_for,
            "An LLM upstream fails its health probes.",
            "Every exporter's health probe of " + where(model=False) + " has failed for "
            f"{cfg.upstream_down_for} (llm_upstream_up = {{{{ $value | humanize }}}}): requests "
            "routed to it fail.",
        ),
    ]


def error_ratio_alert(cfg: AlertsConfig, severity: str, threshold: Threshold) -> dict:
    return alert(
        cfg, HIGH_ERROR_RATIO, severity,
        with_traffic(cfg, f"{recording.error_ratio(cfg)} > {promql.number(threshold.value)}"),
        threshold.for_,
        "An LLM model is failing a large share of its requests.",
        "{{ $value | humanizePercentage }} of the requests to " + where() + " failed "
        f"(code {cfg.failure_codes}) over the last {cfg.rate_window}, above "
        f"{percent(threshold.value)} for {threshold.for_}.",
    )


def performance_alerts(cfg: AlertsConfig) -> list[dict]:
    w = cfg.rate_window
    latency, ttft, drop = cfg.latency_p95_seconds, cfg.ttft_p95_seconds, cfg.throughput_drop_ratio
    speed = recording.quantile(cfg, catalog.OUTPUT_TOKENS_PER_SECOND, 0.5)
    return [
        alert(
            cfg, HIGH_LATENCY, "warning",
            with_traffic(cfg, f"{recording.quantile(cfg, catalog.REQUEST_DURATION, 0.95)} > "
                              f"{promql.number(latency.value)}"),
            latency.for_,
            "LLM requests to a model are slow.",
            "The p95 request duration of " + where() + " is {{ $value | humanizeDuration }} over "
            f"the last {w}, above {promql.number(latency.value)}s for {latency.for_}.",
        ),
        alert(
            cfg, SLOW_FIRST_TOKEN, "warning",
            with_traffic(cfg, f"{recording.quantile(cfg, catalog.TIME_TO_FIRST_TOKEN, 0.95)} > "
                              f"{promql.number(ttft.value)}"),
            ttft.for_,
            "Streams of a model are slow to produce their first token.",
            "The p95 time to first token of " + where() + " is {{ $value | humanizeDuration }} "
            f"over the last {w}, above {promql.number(ttft.value)}s for {ttft.for_}.",
        ),
        alert(
            cfg, THROUGHPUT_DROPPED, "warning",
            with_traffic(cfg, f"{speed}\n< {promql.number(drop.value)} * "
                              f"avg_over_time({speed}[{cfg.throughput_baseline_window}])"),
            drop.for_,
            "A model generates output tokens much slower than usual.",
            "The median generation speed of " + where() + " is {{ $value | humanize }} tokens/s "
            f"over the last {w}, below {percent(drop.value)} of its average over the last "
            f"{cfg.throughput_baseline_window}.",
        ),
    ]


def capacity_and_cost_alerts(cfg: AlertsConfig) -> list[dict]:
    in_flight, budget, memory = cfg.in_flight_max, cfg.cost_budget_usd_per_hour, cfg.memory_bytes_max
    cache, missing = cfg.cache_hit_ratio_min, cfg.usage_missing_ratio_max
    in_flight_series = promql.series(catalog.IN_FLIGHT, cfg.selector)
    dropped = promql.series(catalog.TELEMETRY_DROPPED, cfg.selector)
    return [
        alert(
            cfg, IN_FLIGHT_SATURATION, "warning",
            f"sum by (instance, {UPSTREAM}) ({in_flight_series}) > {promql.number(in_flight.value)}",
            in_flight.for_,
            "An exporter has many requests in flight to one upstream.",
            "{{ $labels.instance }} has {{ $value | humanize }} requests in flight to "
            + where(model=False) + f", more than {promql.number(in_flight.value)} for "
            f"{in_flight.for_}: the backend is queueing or slowing down.",
        ),
        alert(
            cfg, COST_BUDGET, "warning",
            f"{recording.cost_rate_total(cfg)} * 3600 > {promql.number(budget.value)}", budget.for_,
            "LLM spend is above the hourly budget.",
            "LLM spend of job {{ $labels.job }} runs at {{ $value | humanize }} USD per hour over "
            f"the last {cfg.cost_window}, above the budget of {promql.number(budget.value)} USD "
            "per hour.",
        ),
        alert(
            cfg, LOW_CACHE_HIT, "info",
            with_traffic(cfg, f"{recording.cache_hit_ratio(cfg)} < {promql.number(cache.value)}"),
            cache.for_,
            "Few prompt tokens of a model are served from the prompt cache.",
            "Only {{ $value | humanizePercentage }} of the input tokens of " + where() + " were "
            f"served from the prompt cache over the last {cfg.rate_window}, below "
            f"{percent(cache.value)} for {cache.for_}.",
        ),
        alert(
            cfg, USAGE_MISSING, "warning",
            f"{recording.usage_missing_ratio(cfg)} > {promql.number(missing.value)}", missing.for_,
            "Successful responses carry no token usage.",
            "{{ $value | humanizePercentage }} of the successful {{ $labels.api }} responses of "
            + where(model=False) + f" carried no token usage over the last {cfg.rate_window}: "
            "their tokens and cost are not counted.",
        ),
        alert(
            cfg, TELEMETRY_DROPPING, "warning",
            f"increase({dropped}[{cfg.rate_window}]) > 0", cfg.telemetry_dropped_for,
            "The exporter drops rows of its request log.",
            "{{ $labels.instance }} dropped {{ $value | humanize }} request-log rows over the "
            f"last {cfg.rate_window}: the SQLite writer cannot keep up, so /api/usage and "
            "/api/requests are incomplete (metrics are not affected).",
        ),
        alert(
            cfg, MEMORY_HIGH, "warning",
            f"{promql.series(cfg.memory_metric, cfg.selector)} > {promql.number(memory.value)}",
            memory.for_,
            "An exporter process uses a lot of memory.",
            "{{ $labels.instance }} uses {{ $value | humanize1024 }}B of resident memory, above "
            f"{bytes_iec(memory.value)} for {memory.for_}.",
        ),
    ]


def burn_rate_alerts(cfg: AlertsConfig) -> list[dict]:
    """The SRE workbook's multi-window, multi-burn-rate alerts, for availability and latency."""
    objectives = (
        (ERROR_BUDGET_BURN, cfg.availability_objective, lambda w: recording.error_ratio(cfg, w, recording.UPSTREAM),
         "availability", f"{percent(cfg.availability_objective)} availability SLO",
         "failed (code " + cfg.failure_codes + ")"),
        (LATENCY_BUDGET_BURN, cfg.latency_objective, recording.slow_ratio,
         "latency", f"latency SLO ({percent(cfg.latency_objective)} within "
                    f"{promql.number(cfg.latency_threshold_seconds)}s)",
         f"took longer than {promql.number(cfg.latency_threshold_seconds)}s"),
    )
    rules = []
    for name, objective, ratio, kind, slo, what in objectives:
        for window in cfg.slo_windows:
            threshold = f"({promql.number(window.factor)} * (1 - {promql.number(objective)}))"
            speed = "fast" if window.severity == "critical" else "steadily"
            rules.append(alert(
                cfg, name, window.severity,
                f"{ratio(window.long)} > {threshold}\nand\n{ratio(window.short)} > {threshold}",
                window.for_,
                f"An upstream is burning its {kind} error budget {speed}.",
                "{{ $value | humanizePercentage }} of the requests to " + where(model=False)
                + f" {what} over the last {window.long}: {promql.number(window.factor)} times "
                f"the error budget of the {slo}, and still above it over the last {window.short}.",
                labels={"long_window": window.long, "short_window": window.short},
            ))
    return rules


def alert_groups(cfg: AlertsConfig) -> list[dict]:
    groups = [
        {"name": "llm-exporter.alerts", "rules": [
            *availability_alerts(cfg),
            error_ratio_alert(cfg, "critical", cfg.error_ratio_critical),
            error_ratio_alert(cfg, "warning", cfg.error_ratio_warning),
            *performance_alerts(cfg),
            *capacity_and_cost_alerts(cfg),
        ]},
        {"name": "llm-exporter-slo.alerts", "rules": burn_rate_alerts(cfg)},
    ]
    return [_with_interval(g, cfg.slo_rule_interval if "slo" in g["name"] else cfg.rule_interval)
            for g in groups]


def recording_groups(cfg: AlertsConfig) -> list[dict]:
    groups = [
        {"name": "llm-exporter.rules", "rules": recording.shared_rules(cfg)},
        {"name": "llm-exporter-slo.rules", "rules": recording.slo_rules(cfg)},
    ]
    return [_with_interval(g, cfg.slo_rule_interval if "slo" in g["name"] else cfg.rule_interval)
            for g in groups]


def _with_interval(group: dict, interval: str | None) -> dict:
    if interval is None:
        return group
    return {"name": group["name"], "interval": interval, "rules": group["rules"]}


def rule_files(cfg: AlertsConfig) -> dict[str, dict]:
    """File name -> content of every rule file Prometheus loads."""
    return {
        "recording_rules.yml": {"groups": recording_groups(cfg)},
        "alerting_rules.yml": {"groups": alert_groups(cfg)},
    }
