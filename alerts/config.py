"""The one config object of the alerting and recording rules (the monitoring mixins' `_config`).

Every threshold, selector, window and SLO objective lives here and nowhere else: the rule
generators take an `AlertsConfig` and never read a number of their own. Tests build variants with
`dataclasses.replace` (for example 1-second windows for the end-to-end test) and feed them to the
same generators, so what the tests prove is what ships.

Metric and label names are not configuration: they come from `exporter.catalog`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter import catalog

# critical pages, warning tickets, info is only shown; none is the Watchdog's (its own receiver).
SEVERITIES = ("critical", "warning", "info", "none")


@dataclass(frozen=True)
class Threshold:
    """A value an expression is compared with, and how long it must hold before the alert fires."""

    value: float
    for_: str


@dataclass(frozen=True)
class BurnRateWindow:
    """One multi-window, multi-burn-rate alert (SRE workbook, chapter 5, "Alerting on SLOs").

    The alert fires when the error ratio exceeds `factor` times the error budget over BOTH the long
    window (enough budget is really gone) and the short one (it is still being burnt now, so the
    alert resolves soon after the burning stops).
    """

    severity: str
    long: str
    short: str
    factor: float
    for_: str


# The SRE workbook's recommendation for a 30-day SLO: 14.4x over 1h burns 2% of a 30-day budget,
# 6x over 6h burns 5% (both page); 3x over 1d burns 10%, 1x over 3d burns 10% (both tickets).
# The `for` durations follow the kubernetes-mixin; they only damp single bad evaluations.
SRE_WORKBOOK_WINDOWS = (
    BurnRateWindow("critical", long="1h", short="5m", factor=14.4, for_="2m"),
    BurnRateWindow("critical", long="6h", short="30m", factor=6, for_="15m"),
    BurnRateWindow("warning", long="1d", short="2h", factor=3, for_="1h"),
    BurnRateWindow("warning", long="3d", short="6h", factor=1, for_="3h"),
)


@dataclass(frozen=True)
class AlertsConfig:
    # --- Where the series come from -------------------------------------------------------------
    # Inserted between {} of every raw-metric selector. prometheus/prometheus.yml scrapes every
    # exporter replica under this job name; change both together.
    selector: str = 'job="llm-exporter"'
    # The exporter's service address as clients use it (one static target): its `up` says
    # whether clients can reach any replica.
    service_selector: str = 'job="llm-exporter-service"'
    # The alerting path itself: Prometheus scraping itself, and Alertmanager.
    prometheus_selector: str = 'job="prometheus"'
    alertmanager_selector: str = 'job="alertmanager"'
    # Each alert's runbook_url is this base plus "#" and the anchor of the alert's heading in
    # docs/runbooks.md. The default is the page the exporter itself serves (GET /runbooks) at its
    # default address; teams that host their docs elsewhere set their own base.
    runbook_base_url: str = "http://127.0.0.1:8080/runbooks"
    # Each alert's dashboard_url opens a generated dashboard (dashboards/generated/) in this
    # Grafana, with var-upstream and var-model set from the alert's labels.
    grafana_base_url: str = "http://127.0.0.1:3000"
    # Evaluation interval of the generated rule groups; None keeps Prometheus' global one (15s).
    rule_interval: str | None = None

    # --- Shared recording rules -------------------------------------------------------------------
    # Window of the per-model rates, ratios and quantiles the dashboards and alerts share; it is part
    # of the recorded names (upstream_model:llm_requests:rate5m).
    rate_window: str = "5m"
    # Quantiles recorded for every latency histogram (p50_5m, p95_5m, p99_5m).
    quantiles: tuple[float, ...] = (0.5, 0.95, 0.99)

    # --- What counts as a failed request ------------------------------------------------------------
    # A regex over the `code` label (the status the client got). Failures are what the service
    # owes the client and did not deliver: every 5xx (including the proxy's own "502" when the
    # upstream is unreachable and "504" when it timed out) and "429" (the backend is rate-limiting
    # us: capacity we did not have). Other 4xx are the client's mistakes (bad request, bad key,
    # unknown model) and "499" means the client went away before the answer: neither says the
    # service is unavailable, so both count as served requests.
    failure_codes: str = "5..|429"
    # Regex over `code` for a successful response (the denominator of the usage-missing ratio).
    success_codes: str = "2.."
    # Per (upstream, model), in requests per second: below this rate the ratio and percentile
    # alerts stay silent, so one failed request out of two is not a page. 0.05/s = 3 per minute.
    min_request_rate: float = 0.05

    # --- Availability of the exporter and its upstreams ---------------------------------------------
    exporter_down_for: str = "2m"  # a scraped replica answers no scrape
    exporter_absent_for: str = "5m"  # no replica is discovered at all (DNS finds none)
    # The service address answers no scrape: a dead single replica (which DNS discovery drops at
    # once, so LLMExporterDown never sees it) pages within about two minutes.
    exporter_service_down_for: str = "1m"
    upstream_down_for: str = "2m"  # every replica's health probe of an upstream fails

    # --- The alerting path (the Watchdog covers what these cannot: a dead Prometheus) ---------------
    monitoring_target_down_for: str = "5m"  # Prometheus or Alertmanager answers no scrape
    # Share of Alertmanager's notification attempts that failed, per integration (slack, email).
    notifications_failed_ratio: Threshold = Threshold(0.0, "5m")
    rule_evaluation_failures_for: str = "5m"  # any rule evaluation failure
    alertmanager_discovered_for: str = "5m"  # Prometheus knows no Alertmanager to send alerts to
    # Share of alerts Prometheus failed to send to Alertmanager.
    notification_errors_ratio: Threshold = Threshold(0.01, "5m")
    meta_window: str = "5m"  # rate window of the alerting-path alerts

    # --- Traffic ------------------------------------------------------------------------------------
    # No request to an upstream for no_traffic_for, where it served at least
    # no_traffic_baseline_requests over the last no_traffic_baseline_window.
    no_traffic_for: str = "15m"
    no_traffic_baseline_window: str = "1d"
    no_traffic_baseline_requests: float = 100
    # Requests per second over traffic_window below this share of the same window a week ago
    # (traffic_offset), where a week ago it ran at least min_request_rate.
    traffic_drop_ratio: Threshold = Threshold(0.3, "30m")
    traffic_window: str = "1h"
    traffic_offset: str = "1w"

    # --- Per-model thresholds (over rate_window) ----------------------------------------------------
    error_ratio_warning: Threshold = Threshold(0.05, "10m")
    error_ratio_critical: Threshold = Threshold(0.20, "5m")
    # Whole-request latency measures answer length as much as health: info (dashboards and the
    # Alertmanager UI), never a notification.
    latency_p95_seconds: Threshold = Threshold(60.0, "10m")
    ttft_p95_seconds: Threshold = Threshold(10.0, "10m")
    # Median time per output token above this multiple of its own average over
    # throughput_baseline_window: generation slowed down (a regression, whatever the model's pace).
    tpot_regression_ratio: Threshold = Threshold(2.0, "15m")
    # Median output tokens/s per request below this fraction of its own average over
    # throughput_baseline_window: a relative drop, as speeds differ by orders of magnitude per model.
    throughput_drop_ratio: Threshold = Threshold(0.5, "15m")
    throughput_baseline_window: str = "1d"
    # Share of input tokens served from the prompt cache; only for backends that reported cached
    # tokens at all over cache_reporting_window (the series exist at 0 for every backend).
    cache_hit_ratio_min: Threshold = Threshold(0.2, "1h")
    cache_reporting_window: str = "1d"
    # Successful responses that carried no usage, per (upstream, api).
    usage_missing_ratio_max: Threshold = Threshold(0.1, "15m")

    # --- Per-instance thresholds ---------------------------------------------------------------------
    # Requests in flight per exporter instance and upstream: beyond this, the backend queue or the
    # proxy's connection pool is saturating.
    in_flight_max: Threshold = Threshold(100, "5m")
    # Rows of the request log dropped because the writer fell behind (any drop alerts).
    telemetry_dropped_for: str = "5m"
    # Resident memory per exporter process, from prometheus-client's default process collector.
    memory_metric: str = "process_resident_memory_bytes"
    memory_bytes_max: Threshold = Threshold(1024**3, "15m")

    # --- Backend state (read from the backends by the exporter's collectors) -------------------------
    # No model loaded on an upstream while requests wait for it (in its queue or in the proxy): an
    # on-demand backend (Ollama, llama-swap) loads within seconds to a few minutes, so longer is a
    # model that does not load.
    backend_no_model_for: str = "5m"
    # Requests waiting in a backend's queue: never fewer than this over backend_queue_window, and
    # still growing over it (deriv > 0).
    backend_queue_waiting: Threshold = Threshold(5, "5m")
    backend_queue_window: str = "10m"
    # Share of a backend's KV cache in use: near full, it preempts running requests or queues new ones.
    kv_cache_usage_max: Threshold = Threshold(0.95, "10m")
    # No exporter replica could read a backend state endpoint for this long.
    backend_state_unreadable_for: str = "10m"

    # --- Cost ----------------------------------------------------------------------------------------
    # USD per hour across all upstreams, measured as the rate over cost_window.
    cost_budget_usd_per_hour: Threshold = Threshold(10.0, "15m")
    cost_window: str = "1h"
    # Spend over cost_window above this multiple of the same window a day ago (cost_offset), when
    # it is at least cost_spike_min_usd_per_hour (a spike of cents is no news).
    cost_spike_ratio: Threshold = Threshold(3.0, "30m")
    cost_offset: str = "1d"
    cost_spike_min_usd_per_hour: float = 1.0
    # USD per day. The forecast: the trend (predict_linear) of the hourly spend rate over
    # cost_forecast_lookback, taken half a day ahead (the mean of a linear ramp over the next
    # 24 hours), times 24 hours.
    daily_budget_usd: Threshold = Threshold(200.0, "30m")
    cost_forecast_lookback: str = "6h"

    # --- SLOs (per upstream, over slo_period) -------------------------------------------------------
    # The period an SLO's budget is spent over. The burn-rate factors of slo_windows are the SRE
    # workbook's for 30 days (14.4x over 1h spends 2% of it); Prometheus' retention must hold it.
    slo_period: str = "30d"
    # Availability: share of requests that are not failures (see failure_codes).
    availability_objective: float = 0.995
    # Time to first token: share of streams whose first token came within ttft_threshold_seconds,
    # a bucket boundary of llm_time_to_first_token_seconds (catalog.TTFT_BUCKETS).
    ttft_objective: float = 0.99
    ttft_threshold_seconds: float = 5.0
    # Whole-request latency: share of requests answered within latency_threshold_seconds, a bucket
    # boundary of llm_request_duration_seconds. Its burn-rate alerts are info: a long answer is
    # slow and healthy, so this SLO is a dashboard signal, not a page.
    latency_objective: float = 0.99
    latency_threshold_seconds: float = 40.96
    slo_windows: tuple[BurnRateWindow, ...] = SRE_WORKBOOK_WINDOWS
    # A burn-rate alert needs at least this many requests (streams, for the TTFT SLO) in its long
    # window: one failed request of a quiet upstream is not 14.4 times the budget of anything.
    slo_min_requests: float = 100
    # Evaluation interval of the SLO groups (3-day ranges are not cheap); None keeps the global one.
    slo_rule_interval: str | None = None

    extra_labels: dict[str, str] = field(default_factory=dict)  # added to every alert's labels

    def __post_init__(self) -> None:
        """Fail at generation time, not when Prometheus silently never fires."""
        for name, metric in (("latency_threshold_seconds", catalog.REQUEST_DURATION),
                             ("ttft_threshold_seconds", catalog.TIME_TO_FIRST_TOKEN)):
            buckets = metric.buckets or ()
            if getattr(self, name) not in buckets:
                raise ValueError(
                    f"{name}={getattr(self, name)} is not a bucket boundary of "
                    f"{metric.name}: pick one of {buckets}"
                )
        for name in ("availability_objective", "ttft_objective", "latency_objective"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be between 0 and 1 (0.995 = 99.5%)")
        for window in self.slo_windows:
            if window.severity not in SEVERITIES:
                raise ValueError(f"slo_windows: unknown severity {window.severity!r}")


DEFAULT = AlertsConfig()
