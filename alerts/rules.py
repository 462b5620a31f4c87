"""Alerting rules. Every rule's numbers come from the config object, its names from the catalog.

Each alert carries severity (critical pages, warning tickets, info is only shown), a static
summary, a description naming the labels and the humanized value, and a runbook_url to its own
section of docs/runbooks.md and a dashboard_url to the generated dashboard that shows it. Ratio
and percentile alerts need a minimum request rate, burn-rate alerts a minimum number of requests,
so that two requests cannot page anybody.
"""

from __future__ import annotations

from exporter import catalog

from alerts import links, promql, recording
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
TTFT_BUDGET_BURN = "LLMTimeToFirstTokenBudgetBurn"
TPOT_REGRESSION = "LLMTimePerOutputTokenRegression"
EXPORTER_SERVICE_DOWN = "LLMExporterServiceDown"
NO_TRAFFIC = "LLMNoTraffic"
TRAFFIC_DROP = "LLMTrafficBelowLastWeek"
COST_SPIKE = "LLMCostAboveYesterday"
DAILY_BUDGET_FORECAST = "LLMDailyBudgetForecast"
# Backend state, read from the backends themselves.
BACKEND_NO_MODEL = "LLMBackendNoModelLoaded"
BACKEND_QUEUE_GROWING = "LLMBackendQueueGrowing"
BACKEND_KV_CACHE_FULL = "LLMBackendKVCacheNearFull"
BACKEND_STATE_UNREADABLE = "LLMBackendStateUnreadable"
# The alerting path.
WATCHDOG = "Watchdog"
MONITORING_TARGET_DOWN = "LLMMonitoringTargetDown"
NOTIFICATIONS_FAILING = "LLMAlertmanagerNotificationsFailing"
RULE_FAILURES = "LLMPrometheusRuleEvaluationFailures"
NO_ALERTMANAGER = "LLMPrometheusAlertmanagerMissing"
ALERT_SEND_ERRORS = "LLMPrometheusAlertSendErrors"

UPSTREAM, MODEL, API = catalog.UPSTREAM, catalog.MODEL, catalog.API
BY_MODEL, BY_UPSTREAM, NONE = (UPSTREAM, MODEL), (UPSTREAM,), ()


def alert(
    cfg: AlertsConfig,
    name: str,
    severity: str,
    expr: str,
    for_: str,
    summary: str,
    description: str,
    dashboard: str,
    scope: tuple[str, ...],
    labels: dict[str, str] | None = None,
) -> dict:
    """One rule in Prometheus' format, with the annotations every alert must carry.

    `scope` names the labels (upstream, model) the alert keeps: its dashboard link sets them.
    """
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, **(labels or {}), **cfg.extra_labels},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": runbook_url(cfg, name),
            "dashboard_url": links.dashboard_url(cfg, dashboard, scope),
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
    service_up = promql.series("up", cfg.service_selector)
    upstream_up = promql.series(catalog.UPSTREAM_UP, cfg.selector)
    resources = links.EXPORTER_RESOURCES
    return [
        alert(
            cfg, EXPORTER_DOWN, "critical", f"{up} == 0", cfg.exporter_down_for,
            "An llm-exporter instance cannot be scraped.",
            "Prometheus has failed to scrape {{ $labels.instance }} of job {{ $labels.job }} "
            f"for {cfg.exporter_down_for} (up = {{{{ $value | humanize }}}}): the traffic it proxies "
            "is not measured, and it may not be proxying at all.",
            resources, NONE,
        ),
        alert(
            cfg, EXPORTER_SERVICE_DOWN, "critical", f"{service_up} == 0", cfg.exporter_service_down_for,
            "The llm-exporter service address does not answer.",
            "Prometheus has failed to scrape the exporter's service address {{ $labels.instance }} "
            f"for {cfg.exporter_service_down_for} (up = {{{{ $value | humanize }}}}): clients "
            "using it reach no replica.",
            resources, NONE,
        ),
        alert(
            cfg, EXPORTER_ABSENT, "critical", f"absent({up})", cfg.exporter_absent_for,
            "No llm-exporter instance is being scraped.",
            "Prometheus has discovered no target of job {{ $labels.job }} for "
            f"{cfg.exporter_absent_for} (absent = {{{{ $value | humanize }}}}): no exporter replica "
            "is running, or service discovery cannot find it.",
            resources, NONE,
        ),
        alert(
            cfg, UPSTREAM_DOWN, "critical",
            f"max by ({UPSTREAM}) ({upstream_up}) == 0", cfg.upstream_down_for,
            "An LLM upstream fails its health probes.",
            "Every exporter's health probe of " + where(model=False) + " has failed for "
            f"{cfg.upstream_down_for} (llm_upstream_up = {{{{ $value | humanize }}}}): requests "
            "routed to it fail.",
            links.OVERVIEW, BY_UPSTREAM,
        ),
    ]


def alerting_path_alerts(cfg: AlertsConfig) -> list[dict]:
    """The alerts that say the alerts themselves may not arrive (a dead Prometheus: the Watchdog)."""
    w = cfg.meta_window
    am, prom = cfg.alertmanager_selector, cfg.prometheus_selector
    failed, sent = cfg.notifications_failed_ratio, cfg.notification_errors_ratio
    by_integration = ("instance", "integration")
    return [
        alert(
            cfg, WATCHDOG, "none", "vector(1)", "0m",
            "Always firing: proves that the alerting pipeline works end to end.",
            "This alert always fires (value {{ $value | humanize }}). Alertmanager sends it to "
            "the watchdog receiver, an external dead man's switch, which raises the alarm when "
            "it stops arriving.",
            links.OVERVIEW, NONE,
        ),
        alert(
            cfg, MONITORING_TARGET_DOWN, "critical",
            f"up{{{prom}}} == 0 or up{{{am}}} == 0", cfg.monitoring_target_down_for,
            "Prometheus or Alertmanager cannot be scraped.",
            "Prometheus has failed to scrape {{ $labels.instance }} of job {{ $labels.job }} for "
            f"{cfg.monitoring_target_down_for} (up = {{{{ $value | humanize }}}}): alerts may be "
            "evaluated or delivered late, or not at all.",
            links.EXPORTER_RESOURCES, NONE,
        ),
        alert(
            cfg, NOTIFICATIONS_FAILING, "critical",
            f"{promql.sum_rate(promql.series('alertmanager_notifications_failed_total', am), w, by_integration)}\n/\n"
            f"{promql.sum_rate(promql.series('alertmanager_notifications_total', am), w, by_integration)}\n"
            f"> {promql.number(failed.value)}",
            failed.for_,
            "Alertmanager fails to deliver notifications.",
            "{{ $value | humanizePercentage }} of the {{ $labels.integration }} notifications of "
            f"{{{{ $labels.instance }}}} failed over the last {w}: pages sent that way do not "
            "arrive (the other integrations may still work).",
            links.OVERVIEW, NONE,
        ),
        alert(
            cfg, RULE_FAILURES, "critical",
            f"sum by (instance) (increase({promql.series('prometheus_rule_evaluation_failures_total', prom)}[{w}])) > 0",
            cfg.rule_evaluation_failures_for,
            "Prometheus fails to evaluate rules.",
            "{{ $labels.instance }} failed {{ $value | humanize }} rule evaluations over the last "
            f"{w}: the alerts and recordings of those rules are missing.",
            links.OVERVIEW, NONE,
        ),
        alert(
            cfg, NO_ALERTMANAGER, "critical",
            f"{promql.series('prometheus_notifications_alertmanagers_discovered', prom)} < 1",
            cfg.alertmanager_discovered_for,
            "Prometheus has no Alertmanager to send alerts to.",
            "{{ $labels.instance }} knows {{ $value | humanize }} Alertmanagers: every alert it "
            "fires is dropped.",
            links.OVERVIEW, NONE,
        ),
        alert(
            cfg, ALERT_SEND_ERRORS, "critical",
            f"{promql.sum_rate(promql.series('prometheus_notifications_errors_total', prom), w, ('instance',))}\n/\n"
            f"{promql.sum_rate(promql.series('prometheus_notifications_sent_total', prom), w, ('instance',))}\n"
            f"> {promql.number(sent.value)}",
            sent.for_,
            "Prometheus fails to send alerts to Alertmanager.",
            "{{ $value | humanizePercentage }} of the alerts {{ $labels.instance }} sent to "
            f"Alertmanager over the last {w} failed.",
            links.OVERVIEW, NONE,
        ),
    ]


def traffic_alerts(cfg: AlertsConfig) -> list[dict]:
    requests = promql.series(catalog.REQUESTS, cfg.selector)
    drop, window, offset = cfg.traffic_drop_ratio, cfg.traffic_window, cfg.traffic_offset
    now = promql.sum_rate(requests, window, BY_UPSTREAM)
    before = f"sum by ({UPSTREAM}) (rate({requests}[{window}] offset {offset}))"
    return [
        alert(
            cfg, NO_TRAFFIC, "warning",
            f"sum by ({UPSTREAM}) (increase({requests}[{cfg.no_traffic_baseline_window}]))\n"
            f">= {promql.number(cfg.no_traffic_baseline_requests)}\n"
            f"unless on ({UPSTREAM})\n{promql.sum_rate(requests, cfg.no_traffic_for, BY_UPSTREAM)} > 0",
            "0m",
            "An upstream that had traffic receives none.",
            where(model=False).capitalize() + " served {{ $value | humanize }} requests over the "
            f"last {cfg.no_traffic_baseline_window} and none over the last {cfg.no_traffic_for}: "
            "clients cannot reach the proxy, or route elsewhere.",
            links.OVERVIEW, BY_UPSTREAM,
        ),
        alert(
            cfg, TRAFFIC_DROP, "warning",
            f"{now} * 60\n< {promql.number(drop.value)} * {before} * 60\n"
            f"and on ({UPSTREAM})\n{before} >= {promql.number(cfg.min_request_rate)}",
            drop.for_,
            "An upstream gets far less traffic than a week ago.",
            where(model=False).capitalize() + " receives {{ $value | humanize }} requests/min over "
            f"the last {window}, below {percent(drop.value)} of the same {window} {offset} ago.",
            links.OVERVIEW, BY_UPSTREAM,
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
        links.MODEL_PERFORMANCE, BY_MODEL,
    )


def performance_alerts(cfg: AlertsConfig) -> list[dict]:
    w = cfg.rate_window
    latency, ttft, drop = cfg.latency_p95_seconds, cfg.ttft_p95_seconds, cfg.throughput_drop_ratio
    tpot_ratio = cfg.tpot_regression_ratio
    speed = recording.quantile(cfg, catalog.OUTPUT_TOKENS_PER_SECOND, 0.5)
    tpot = recording.quantile(cfg, catalog.TIME_PER_OUTPUT_TOKEN, 0.5)
    baseline = cfg.throughput_baseline_window
    return [
        alert(
            cfg, HIGH_LATENCY, "info",
            with_traffic(cfg, f"{recording.quantile(cfg, catalog.REQUEST_DURATION, 0.95)} > "
                              f"{promql.number(latency.value)}"),
            latency.for_,
            "LLM requests to a model are slow.",
            "The p95 request duration of " + where() + " is {{ $value | humanizeDuration }} over "
            f"the last {w}, above {promql.number(latency.value)}s for {latency.for_}.",
            links.MODEL_PERFORMANCE, BY_MODEL,
        ),
        alert(
            cfg, SLOW_FIRST_TOKEN, "warning",
            with_traffic(cfg, f"{recording.quantile(cfg, catalog.TIME_TO_FIRST_TOKEN, 0.95)} > "
                              f"{promql.number(ttft.value)}"),
            ttft.for_,
            "Streams of a model are slow to produce their first token.",
            "The p95 time to first token of " + where() + " is {{ $value | humanizeDuration }} "
            f"over the last {w}, above {promql.number(ttft.value)}s for {ttft.for_}.",
            links.MODEL_PERFORMANCE, BY_MODEL,
        ),
        alert(
            cfg, TPOT_REGRESSION, "warning",
            with_traffic(cfg, f"{tpot}\n> {promql.number(tpot_ratio.value)} * "
                              f"avg_over_time({tpot}[{baseline}])"),
            tpot_ratio.for_,
            "A model takes much longer per output token than usual.",
            "The median time per output token of " + where() + " is {{ $value | humanizeDuration }} "
            f"over the last {w}, above {promql.number(tpot_ratio.value)} times its average over "
            f"the last {baseline}.",
            links.MODEL_PERFORMANCE, BY_MODEL,
        ),
        alert(
            cfg, THROUGHPUT_DROPPED, "warning",
            with_traffic(cfg, f"{speed}\n< {promql.number(drop.value)} * "
                              f"avg_over_time({speed}[{baseline}])"),
            drop.for_,
            "A model generates output tokens much slower than usual.",
            "The median generation speed of " + where() + " is {{ $value | humanize }} tokens/s "
            f"over the last {w}, below {percent(drop.value)} of its average over the last "
            f"{baseline}.",
            links.MODEL_PERFORMANCE, BY_MODEL,
        ),
    ]


def capacity_and_cost_alerts(cfg: AlertsConfig) -> list[dict]:
    in_flight, budget, memory = cfg.in_flight_max, cfg.cost_budget_usd_per_hour, cfg.memory_bytes_max
    cache, missing = cfg.cache_hit_ratio_min, cfg.usage_missing_ratio_max
    spike, daily = cfg.cost_spike_ratio, cfg.daily_budget_usd
    in_flight_series = promql.series(catalog.IN_FLIGHT, cfg.selector)
    dropped = promql.series(catalog.TELEMETRY_DROPPED, cfg.selector)
    cached = promql.series(catalog.TOKENS, cfg.selector, f'{catalog.TYPE}="{catalog.TOKEN_CACHED_INPUT}"')
    hourly = recording.cost_rate_total(cfg)
    return [
        alert(
            cfg, IN_FLIGHT_SATURATION, "warning",
            f"sum by (instance, {UPSTREAM}) ({in_flight_series}) > {promql.number(in_flight.value)}",
            in_flight.for_,
            "An exporter has many requests in flight to one upstream.",
            "{{ $labels.instance }} has {{ $value | humanize }} requests in flight to "
            + where(model=False) + f", more than {promql.number(in_flight.value)} for "
            f"{in_flight.for_}: the backend is queueing or slowing down.",
            links.EXPORTER_RESOURCES, BY_UPSTREAM,
        ),
        alert(
            cfg, COST_BUDGET, "warning",
            f"{hourly} * 3600 > {promql.number(budget.value)}", budget.for_,
            "LLM spend is above the hourly budget.",
            "LLM spend of job {{ $labels.job }} runs at {{ $value | humanize }} USD per hour over "
            f"the last {cfg.cost_window}, above the budget of {promql.number(budget.value)} USD "
            "per hour.",
            links.COST_USAGE, NONE,
        ),
        alert(
            cfg, COST_SPIKE, "warning",
            f"{hourly} * 3600\n> {promql.number(spike.value)} * ({hourly} offset {cfg.cost_offset}) * 3600\n"
            f"and\n{hourly} * 3600 >= {promql.number(cfg.cost_spike_min_usd_per_hour)}",
            spike.for_,
            "LLM spend is far above the same hour yesterday.",
            "LLM spend of job {{ $labels.job }} runs at {{ $value | humanize }} USD per hour over "
            f"the last {cfg.cost_window}, more than {promql.number(spike.value)} times the same "
            f"{cfg.cost_window} {cfg.cost_offset} ago.",
            links.COST_USAGE, NONE,
        ),
        alert(
            cfg, DAILY_BUDGET_FORECAST, "warning",
            f"predict_linear({hourly}[{cfg.cost_forecast_lookback}], 43200) * 86400\n"
            f"> {promql.number(daily.value)}",
            daily.for_,
            "LLM spend is on course to exceed the daily budget.",
            "At the trend of the last " + cfg.cost_forecast_lookback + ", LLM spend of job "
            "{{ $labels.job }} over the next 24 hours comes to {{ $value | humanize }} USD, above "
            f"the daily budget of {promql.number(daily.value)} USD.",
            links.COST_USAGE, NONE,
        ),
        alert(
            cfg, LOW_CACHE_HIT, "info",
            with_traffic(cfg, f"{recording.cache_hit_ratio(cfg)} < {promql.number(cache.value)}\n"
                              f"and on ({UPSTREAM}, {MODEL})\n"
                              f"sum by ({UPSTREAM}, {MODEL}) (increase({cached}[{cfg.cache_reporting_window}])) > 0"),
            cache.for_,
            "Few prompt tokens of a model are served from the prompt cache.",
            "Only {{ $value | humanizePercentage }} of the input tokens of " + where() + " were "
            f"served from the prompt cache over the last {cfg.rate_window}, below "
            f"{percent(cache.value)} for {cache.for_}.",
            links.MODEL_PERFORMANCE, BY_MODEL,
        ),
        alert(
            cfg, USAGE_MISSING, "warning",
            f"{recording.usage_missing_ratio(cfg)} > {promql.number(missing.value)}", missing.for_,
            "Successful responses carry no token usage.",
            "{{ $value | humanizePercentage }} of the successful {{ $labels.api }} responses of "
            + where(model=False) + f" carried no token usage over the last {cfg.rate_window}: "
            "their tokens and cost are not counted.",
            links.COST_USAGE, BY_UPSTREAM,
        ),
        alert(
            cfg, TELEMETRY_DROPPING, "warning",
            f"increase({dropped}[{cfg.rate_window}]) > 0", cfg.telemetry_dropped_for,
            "The exporter loses telemetry.",
            "{{ $labels.instance }} lost {{ $value | humanize }} pieces of telemetry for reason "
            f"{{{{ $labels.reason }}}} over the last {cfg.rate_window}: request-log rows (queue_full, "
            "bad_row, write_error: /api/usage and /api/requests are incomplete) or a response's "
            "usage (implausible_usage, inflate_limit: its tokens and cost are not counted).",
            links.EXPORTER_RESOURCES, NONE,
        ),
        alert(
            cfg, MEMORY_HIGH, "warning",
            f"{promql.series(cfg.memory_metric, cfg.selector)} > {promql.number(memory.value)}",
            memory.for_,
            "An exporter process uses a lot of memory.",
            "{{ $labels.instance }} uses {{ $value | humanize1024 }}B of resident memory, above "
            f"{bytes_iec(memory.value)} for {memory.for_}.",
            links.EXPORTER_RESOURCES, NONE,
        ),
    ]


def backend_alerts(cfg: AlertsConfig) -> list[dict]:
    """What the backends report about themselves. Every exporter replica reads the same backend, so
    replicas are combined with max (they repeat one value), never summed."""
    loaded = promql.series(catalog.BACKEND_MODELS_LOADED, cfg.selector)
    waiting = promql.series(catalog.BACKEND_REQUESTS_WAITING, cfg.selector)
    in_flight = promql.series(catalog.IN_FLIGHT, cfg.selector)
    kv_cache = promql.series(catalog.BACKEND_KV_CACHE_USAGE, cfg.selector)
    backend_up = promql.series(catalog.BACKEND_UP, cfg.selector)
    queue, window, kv = cfg.backend_queue_waiting, cfg.backend_queue_window, cfg.kv_cache_usage_max
    per_model = f"max by ({UPSTREAM}, {MODEL})"
    return [
        alert(
            cfg, BACKEND_NO_MODEL, "critical",
            f"max by ({UPSTREAM}) ({loaded}) == 0\nand on ({UPSTREAM})\n(\n"
            f"  max by ({UPSTREAM}) ({waiting}) > 0\nor\n  sum by ({UPSTREAM}) ({in_flight}) > 0\n)",
            cfg.backend_no_model_for,
            "A backend has no model loaded while requests wait for it.",
            where(model=False).capitalize() + " reports {{ $value | humanize }} models loaded while "
            f"requests wait for it (in its queue or in the proxy), for {cfg.backend_no_model_for}: "
            "they hang or fail until a model loads.",
            links.BACKENDS, BY_UPSTREAM,
        ),
        alert(
            cfg, BACKEND_QUEUE_GROWING, "warning",
            f"{per_model} ({waiting})\nand on ({UPSTREAM}, {MODEL})\n"
            f"{per_model} (min_over_time({waiting}[{window}])) >= {promql.number(queue.value)}\n"
            f"and on ({UPSTREAM}, {MODEL})\n{per_model} (deriv({waiting}[{window}])) > 0",
            queue.for_,
            "Requests queue up in a backend faster than it serves them.",
            where().capitalize() + " has {{ $value | humanize }} requests waiting in the backend's "
            f"queue, never fewer than {promql.number(queue.value)} over the last {window} and still "
            "growing: the backend cannot keep up with the traffic.",
            links.BACKENDS, BY_MODEL,
        ),
        alert(
            cfg, BACKEND_KV_CACHE_FULL, "warning",
            f"{per_model} ({kv_cache}) > {promql.number(kv.value)}", kv.for_,
            "A backend's KV cache is nearly full.",
            "The KV cache of " + where() + " is {{ $value | humanizePercentage }} full, above "
            f"{percent(kv.value)} for {kv.for_}: the backend preempts running requests or queues "
            "new ones.",
            links.BACKENDS, BY_MODEL,
        ),
        alert(
            cfg, BACKEND_STATE_UNREADABLE, "warning",
            f"max by ({UPSTREAM}, {catalog.ENDPOINT}) ({backend_up}) == 0",
            cfg.backend_state_unreadable_for,
            "The exporter cannot read a backend's state.",
            "No exporter could read {{ $labels.endpoint }} of " + where(model=False) + " for "
            f"{cfg.backend_state_unreadable_for} ({catalog.BACKEND_UP.name} = {{{{ $value | humanize }}}}): its "
            "models, queue and KV cache are not shown, and the alerts on them cannot fire.",
            links.BACKENDS, BY_UPSTREAM,
        ),
    ]


def burn_rate_alerts(cfg: AlertsConfig) -> list[dict]:
    """The SRE workbook's multi-window, multi-burn-rate alerts, for availability, time to first
    token and (info only) whole-request latency, each with a traffic floor in its long window."""
    minimum = promql.number(cfg.slo_min_requests)
    ttft = promql.number(cfg.ttft_threshold_seconds)
    latency = promql.number(cfg.latency_threshold_seconds)
    objectives = (
        (ERROR_BUDGET_BURN, cfg.availability_objective,
         lambda w: recording.error_ratio(cfg, w, recording.UPSTREAM), recording.upstream_requests_rate,
         "availability", f"{percent(cfg.availability_objective)} availability SLO",
         "requests to", "failed (code " + cfg.failure_codes + ")", None),
        (TTFT_BUDGET_BURN, cfg.ttft_objective, recording.ttft_slow_ratio, recording.upstream_streams_rate,
         "time-to-first-token", f"time-to-first-token SLO ({percent(cfg.ttft_objective)} within {ttft}s)",
         "streams of", f"waited longer than {ttft}s for their first token", None),
        (LATENCY_BUDGET_BURN, cfg.latency_objective, recording.slow_ratio, recording.upstream_requests_rate,
         "latency", f"latency SLO ({percent(cfg.latency_objective)} within {latency}s)",
         "requests to", f"took longer than {latency}s", "info"),
    )
    rules = []
    for name, objective, ratio, volume, kind, slo, whose, what, severity in objectives:
        for window in cfg.slo_windows:
            threshold = f"({promql.number(window.factor)} * (1 - {promql.number(objective)}))"
            speed = "fast" if window.severity == "critical" else "steadily"
            seconds = promql.number(recording.seconds(window.long))
            rules.append(alert(
                cfg, name, severity or window.severity,
                f"{ratio(window.long)} > {threshold}\nand\n{ratio(window.short)} > {threshold}\n"
                f"and on ({UPSTREAM})\n{volume(window.long)} * {seconds} >= {minimum}",
                window.for_,
                f"An upstream is burning its {kind} error budget {speed}.",
                "{{ $value | humanizePercentage }} of the " + whose + " " + where(model=False)
                + f" {what} over the last {window.long}: {promql.number(window.factor)} times "
                f"the error budget of the {slo}, and still above it over the last {window.short}.",
                links.SLOS, BY_UPSTREAM,
                labels={"long_window": window.long, "short_window": window.short},
            ))
    return rules


def alert_groups(cfg: AlertsConfig) -> list[dict]:
    groups = [
        {"name": "llm-exporter.alerts", "rules": [
            *availability_alerts(cfg),
            *traffic_alerts(cfg),
            error_ratio_alert(cfg, "critical", cfg.error_ratio_critical),
            error_ratio_alert(cfg, "warning", cfg.error_ratio_warning),
            *performance_alerts(cfg),
            *capacity_and_cost_alerts(cfg),
            *backend_alerts(cfg),
        ]},
        {"name": "llm-exporter-alerting-path.alerts", "rules": alerting_path_alerts(cfg)},
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
