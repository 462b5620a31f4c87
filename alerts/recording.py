"""Recording rules: the expensive expressions the dashboards and alerts share.

Names follow the Prometheus convention `level:metric:operations`: the labels kept by the
aggregation, the metric, then the operations newest first (`ratio_rate5m`, `p95_5m`). The functions
that return a name are the public API: alerts and dashboards call them instead of spelling names.
"""

from __future__ import annotations

from exporter import catalog
from exporter.catalog import MetricSpec

from alerts import promql
from alerts.config import AlertsConfig

UPSTREAM_MODEL = (catalog.UPSTREAM, catalog.MODEL)
UPSTREAM_MODEL_CODE = (catalog.UPSTREAM, catalog.MODEL, catalog.CODE)
UPSTREAM_MODEL_TYPE = (catalog.UPSTREAM, catalog.MODEL, catalog.TYPE)
UPSTREAM_API = (catalog.UPSTREAM, catalog.API)
UPSTREAM = (catalog.UPSTREAM,)
JOB = ("job",)

# The histograms whose quantiles are recorded per (upstream, model).
LATENCY_HISTOGRAMS = (
    catalog.REQUEST_DURATION,
    catalog.TIME_TO_FIRST_TOKEN,
    catalog.TIME_PER_OUTPUT_TOKEN,
    catalog.OUTPUT_TOKENS_PER_SECOND,
)

ERRORS = catalog.REQUESTS.name + "_errors"  # share of requests that failed (config.failure_codes)
SLOW = catalog.REQUESTS.name + "_slow"  # share of requests slower than the latency SLO threshold
TTFT_SLOW = catalog.TIME_TO_FIRST_TOKEN.name + "_slow"  # share of streams slower than the TTFT SLO
CACHED_INPUT = f"{catalog.TOKENS.name}_{catalog.TOKEN_CACHED_INPUT}"  # share of input tokens cached
USAGE_MISSING = catalog.USAGE_MISSING.name  # share of successful responses without usage


def name(level: tuple[str, ...], metric: str, operation: str) -> str:
    return f"{'_'.join(level)}:{metric}:{operation}"


def requests_rate(cfg: AlertsConfig) -> str:
    """upstream_model:llm_requests:rate5m, requests per second."""
    return name(UPSTREAM_MODEL, catalog.REQUESTS.name, f"rate{cfg.rate_window}")


def requests_by_code_rate(cfg: AlertsConfig) -> str:
    return name(UPSTREAM_MODEL_CODE, catalog.REQUESTS.name, f"rate{cfg.rate_window}")


def error_ratio(cfg: AlertsConfig, window: str | None = None, level=UPSTREAM_MODEL) -> str:
    """upstream_model:llm_requests_errors:ratio_rate5m; per upstream for the SLO windows."""
    return name(level, ERRORS, f"ratio_rate{window or cfg.rate_window}")


def slow_ratio(window: str) -> str:
    """upstream:llm_requests_slow:ratio_rate1h, the latency SLO's error ratio."""
    return name(UPSTREAM, SLOW, f"ratio_rate{window}")


def ttft_slow_ratio(window: str) -> str:
    """upstream:llm_time_to_first_token_seconds_slow:ratio_rate1h, the TTFT SLO's error ratio."""
    return name(UPSTREAM, TTFT_SLOW, f"ratio_rate{window}")


def upstream_requests_rate(window: str) -> str:
    """upstream:llm_requests:rate1h, requests per second: the burn-rate alerts' traffic floor."""
    return name(UPSTREAM, catalog.REQUESTS.name, f"rate{window}")


def upstream_streams_rate(window: str) -> str:
    """upstream:llm_time_to_first_token_seconds_count:rate1h, streams per second (TTFT SLO floor)."""
    return name(UPSTREAM, f"{catalog.TIME_TO_FIRST_TOKEN.name}_count", f"rate{window}")


def quantile(cfg: AlertsConfig, metric: MetricSpec, q: float) -> str:
    """upstream_model:llm_request_duration_seconds:p95_5m."""
    if q not in cfg.quantiles:
        raise ValueError(f"quantile {q} is not recorded: add it to AlertsConfig.quantiles")
    return name(UPSTREAM_MODEL, metric.name, f"{promql.quantile_name(q)}_{cfg.rate_window}")


def tokens_rate(cfg: AlertsConfig) -> str:
    return name(UPSTREAM_MODEL_TYPE, catalog.TOKENS.name, f"rate{cfg.rate_window}")


def cost_rate(cfg: AlertsConfig) -> str:
    """USD per second per (upstream, model)."""
    return name(UPSTREAM_MODEL, catalog.COST.name, f"rate{cfg.rate_window}")


def cost_rate_total(cfg: AlertsConfig) -> str:
    """USD per second over the cost window, all upstreams of the job together."""
    return name(JOB, catalog.COST.name, f"rate{cfg.cost_window}")


def cache_hit_ratio(cfg: AlertsConfig) -> str:
    return name(UPSTREAM_MODEL, CACHED_INPUT, f"ratio_rate{cfg.rate_window}")


def usage_missing_ratio(cfg: AlertsConfig) -> str:
    return name(UPSTREAM_API, USAGE_MISSING, f"ratio_rate{cfg.rate_window}")


def slo_windows(cfg: AlertsConfig) -> list[str]:
    """Every long and short window of the burn-rate alerts, shortest first."""
    windows = {w for window in cfg.slo_windows for w in (window.long, window.short)}
    return sorted(windows, key=seconds)


def long_windows(cfg: AlertsConfig) -> list[str]:
    """The burn-rate alerts' long windows, over which their traffic floor is counted."""
    return sorted({window.long for window in cfg.slo_windows}, key=seconds)


def seconds(duration: str) -> float:
    """A simple Prometheus duration ("90s", "5m", "1d") in seconds, for ordering windows."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    for unit in sorted(units, key=len, reverse=True):
        if duration.endswith(unit) and duration[: -len(unit)].isdigit():
            return int(duration[: -len(unit)]) * units[unit]
    raise ValueError(f"not a simple Prometheus duration: {duration!r}")


def _record(record: str, expr: str) -> dict:
    return {"record": record, "expr": expr}


def shared_rules(cfg: AlertsConfig) -> list[dict]:
    """Per-model rates, ratios and quantiles over cfg.rate_window."""
    w, sel = cfg.rate_window, cfg.selector
    requests = promql.series(catalog.REQUESTS, sel)
    failed = promql.series(catalog.REQUESTS, sel, f'{catalog.CODE}=~"{cfg.failure_codes}"')
    succeeded = promql.series(catalog.REQUESTS, sel, f'{catalog.CODE}=~"{cfg.success_codes}"')
    tokens = catalog.TOKENS
    rules = [
        _record(requests_rate(cfg), promql.sum_rate(requests, w, UPSTREAM_MODEL)),
        _record(requests_by_code_rate(cfg), promql.sum_rate(requests, w, UPSTREAM_MODEL_CODE)),
        _record(error_ratio(cfg), promql.zero_filled_ratio(
            promql.sum_rate(failed, w, UPSTREAM_MODEL), requests_rate(cfg))),
    ]
    for metric in LATENCY_HISTOGRAMS:
        buckets = promql.sum_rate(
            promql.series(metric, sel, suffix="_bucket"), w, (*UPSTREAM_MODEL, "le"))
        for q in cfg.quantiles:
            rules.append(_record(quantile(cfg, metric, q), f"histogram_quantile({q}, {buckets})"))
    rules += [
        _record(tokens_rate(cfg), promql.sum_rate(promql.series(tokens, sel), w, UPSTREAM_MODEL_TYPE)),
        _record(cache_hit_ratio(cfg), (
            promql.sum_rate(promql.series(tokens, sel, f'{catalog.TYPE}="{catalog.TOKEN_CACHED_INPUT}"'), w, UPSTREAM_MODEL)
            + "\n/\n"
            + promql.sum_rate(promql.series(tokens, sel, f'{catalog.TYPE}="{catalog.TOKEN_INPUT}"'), w, UPSTREAM_MODEL)
        )),
        _record(usage_missing_ratio(cfg), promql.zero_filled_ratio(
            promql.sum_rate(promql.series(catalog.USAGE_MISSING, sel), w, UPSTREAM_API),
            promql.sum_rate(succeeded, w, UPSTREAM_API))),
        _record(cost_rate(cfg), promql.sum_rate(promql.series(catalog.COST, sel), w, UPSTREAM_MODEL)),
        _record(cost_rate_total(cfg), promql.sum_rate(promql.series(catalog.COST, sel), cfg.cost_window, JOB)),
    ]
    return rules


def slo_rules(cfg: AlertsConfig) -> list[dict]:
    """The SLOs' error ratios per upstream over every burn-rate window."""
    sel = cfg.selector
    requests = promql.series(catalog.REQUESTS, sel)
    failed = promql.series(catalog.REQUESTS, sel, f'{catalog.CODE}=~"{cfg.failure_codes}"')
    duration = catalog.REQUEST_DURATION
    fast = promql.series(duration, sel, f'le="{promql.le(cfg.latency_threshold_seconds)}"', suffix="_bucket")
    count = promql.series(duration, sel, suffix="_count")
    rules = []
    for w in slo_windows(cfg):
        total = promql.sum_rate(requests, w, UPSTREAM)
        rules.append(_record(error_ratio(cfg, w, UPSTREAM), promql.zero_filled_ratio(
            promql.sum_rate(failed, w, UPSTREAM), total)))
    for w in slo_windows(cfg):
        rules.append(_record(slow_ratio(w), (
            f"1 - (\n  {promql.sum_rate(fast, w, UPSTREAM)}\n/\n  {promql.sum_rate(count, w, UPSTREAM)}\n)"
        )))
    ttft = catalog.TIME_TO_FIRST_TOKEN
    first_fast = promql.series(ttft, sel, f'le="{promql.le(cfg.ttft_threshold_seconds)}"', suffix="_bucket")
    streams = promql.series(ttft, sel, suffix="_count")
    for w in slo_windows(cfg):
        rules.append(_record(ttft_slow_ratio(w), (
            f"1 - (\n  {promql.sum_rate(first_fast, w, UPSTREAM)}\n/\n  {promql.sum_rate(streams, w, UPSTREAM)}\n)"
        )))
    for w in long_windows(cfg):
        rules.append(_record(upstream_requests_rate(w), promql.sum_rate(requests, w, UPSTREAM)))
        rules.append(_record(upstream_streams_rate(w), promql.sum_rate(streams, w, UPSTREAM)))
    return rules
