"""The promtool scenarios: for each alert, traffic that must fire it and traffic that must not.

Minute i of a scenario is sample i; rates are per minute. Written for alerts.config.DEFAULT.
The exporter's series appear as a scrape sees them (alerts.series: `requests`,
`exporter_counter`, `histogram`): not before the first request of their labels at minute 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter import catalog

from alerts import recording, rules as r
from alerts.config import DEFAULT
from alerts.series import (
    BASE, JOB, U, M, T, C, counter, exporter_counter, gauge, histogram, requests, series,
)


@dataclass
class Fires:
    """One alert expected to fire: its labels (severity included) and rendered description."""

    labels: dict[str, str]
    description: str


@dataclass
class Check:
    at: str  # eval_time
    alertname: str
    fires: list[Fires] = field(default_factory=list)  # empty: must be silent


@dataclass
class Scenario:
    name: str
    input_series: list[dict]
    checks: list[Check]


LONG = 200  # minutes of steady traffic in the short scenarios


def crit(**labels: str) -> dict[str, str]:
    return {"severity": "critical", **labels}


def warn(**labels: str) -> dict[str, str]:
    return {"severity": "warning", **labels}


def exporter_down() -> Scenario:
    a, b = {**BASE, "instance": "exporter-a:8080"}, {**BASE, "instance": "exporter-b:8080"}
    return Scenario("exporter down; another replica up", [
        series("up", a, gauge((1, 6), (0, 20))),
        series("up", b, gauge((1, 26))),
    ], [
        Check("5m", r.EXPORTER_DOWN),
        Check("7m", r.EXPORTER_DOWN),  # down since minute 6, for 2m not yet over
        Check("10m", r.EXPORTER_DOWN, [Fires(
            crit(**a),
            "Prometheus has failed to scrape exporter-a:8080 of job llm-exporter for 2m (up = 0): "
            "the traffic it proxies is not measured, and it may not be proxying at all.")]),
        Check("10m", r.EXPORTER_ABSENT),
    ])


def exporter_absent() -> Scenario:
    return Scenario("no exporter target left", [
        series("up", BASE, gauge((1, 6), (None, 30))),
        series("up", {"job": "prometheus", "instance": "localhost:9090"}, gauge((1, 36))),
    ], [
        Check("5m", r.EXPORTER_ABSENT),
        Check("12m", r.EXPORTER_ABSENT),  # stale after 5m without samples, then for 5m
        Check("20m", r.EXPORTER_ABSENT, [Fires(
            crit(job=JOB),
            "Prometheus has discovered no target of job llm-exporter for 5m (absent = 1): no "
            "exporter replica is running, or service discovery cannot find it.")]),
    ])


def upstream_down() -> Scenario:
    up = catalog.UPSTREAM_UP.series
    a, b = {**BASE, "instance": "exporter-a:8080"}, {**BASE, "instance": "exporter-b:8080"}
    return Scenario("upstream down on every replica; another down on one replica only", [
        series(up, {**a, U: "openai"}, gauge((1, 6), (0, 20))),
        series(up, {**b, U: "openai"}, gauge((1, 6), (0, 20))),
        series(up, {**a, U: "local"}, gauge((0, 26))),
        series(up, {**b, U: "local"}, gauge((1, 26))),
    ], [
        Check("7m", r.UPSTREAM_DOWN),
        Check("10m", r.UPSTREAM_DOWN, [Fires(
            crit(upstream="openai"),
            "Every exporter's health probe of upstream openai has failed for 2m "
            "(llm_upstream_up = 0): requests routed to it fail.")]),
    ])


def error_ratio() -> Scenario:
    gpt, claude = {U: "openai", M: "gpt-4o"}, {U: "anthropic", M: "claude"}
    client, tiny = {U: "openai", M: "gpt-4o-mini"}, {U: "local", M: "tiny"}
    return Scenario("error ratios: 10% warns, 33% pages, client errors and low traffic do not", [
        requests({**gpt, C: "200"}, (54, LONG)),
        requests({**gpt, C: "500"}, (6, LONG)),
        requests({**claude, C: "200"}, (30, LONG)),
        requests({**claude, C: "429"}, (15, LONG)),
        # Client mistakes and clients that went away are not failures.
        requests({**client, C: "200"}, (20, LONG)),
        requests({**client, C: "404"}, (20, LONG)),
        requests({**client, C: catalog.CODE_CLIENT_CLOSED}, (20, LONG)),
        # Every request fails, but one a minute is below min_request_rate.
        requests({**tiny, C: "502"}, (1, LONG)),
    ], [
        Check("3m", r.HIGH_ERROR_RATIO),
        Check("8m", r.HIGH_ERROR_RATIO, [
            Fires(crit(**claude), CLAUDE_ERRORS.format(threshold="20%", duration="5m")),
        ]),
        Check("15m", r.HIGH_ERROR_RATIO, [
            Fires(crit(**claude), CLAUDE_ERRORS.format(threshold="20%", duration="5m")),
            Fires(warn(**claude), CLAUDE_ERRORS.format(threshold="5%", duration="10m")),
            Fires(warn(**gpt),
                  "10% of the requests to model gpt-4o on upstream openai failed (code 5..|429) "
                  "over the last 5m, above 5% for 10m."),
        ]),
    ])


CLAUDE_ERRORS = ("33.33% of the requests to model claude on upstream anthropic failed "
                 "(code 5..|429) over the last 5m, above {threshold} for {duration}.")


def latency() -> Scenario:
    fast, slow = {U: "local", M: "fast"}, {U: "local", M: "slow"}
    api = {catalog.API: "openai_chat"}
    duration, ttft = catalog.REQUEST_DURATION, catalog.TIME_TO_FIRST_TOKEN
    return Scenario("p95 latency and time to first token above their thresholds for one model", [
        requests({**fast, C: "200"}, (10, LONG)),
        requests({**slow, C: "200"}, (10, LONG)),
        *histogram(duration, {**BASE, **fast, **api}, ({5.0: 10}, LONG)),
        *histogram(duration, {**BASE, **slow, **api}, ({60.0: 10}, LONG)),
        *histogram(ttft, {**BASE, **fast, **api}, ({0.3: 10}, LONG)),
        *histogram(ttft, {**BASE, **slow, **api}, ({15.0: 10}, LONG)),
    ], [
        Check("5m", r.HIGH_LATENCY),
        Check("5m", r.SLOW_FIRST_TOKEN),
        # Both interpolate inside the bucket holding every observation: (40.96, 81.92], (10, 20].
        Check("15m", r.HIGH_LATENCY, [Fires(
            {"severity": "info", **slow},
            "The p95 request duration of model slow on upstream local is 1m 19s over the last 5m, "
            "above 60s for 10m.")]),
        Check("15m", r.SLOW_FIRST_TOKEN, [Fires(
            warn(**slow),
            "The p95 time to first token of model slow on upstream local is 19.5s over the last "
            "5m, above 10s for 10m.")]),
    ])


def throughput() -> Scenario:
    steady, dropping = {U: "local", M: "steady"}, {U: "local", M: "dropping"}
    speed = catalog.OUTPUT_TOKENS_PER_SECOND
    return Scenario("generation speed drops to a fifth of its usual value", [
        requests({**steady, C: "200"}, (10, 120)),
        requests({**dropping, C: "200"}, (10, 120)),
        *histogram(speed, {**BASE, **steady}, ({100.0: 10}, 120)),
        *histogram(speed, {**BASE, **dropping}, ({100.0: 10}, 60), ({20.0: 10}, 60)),
    ], [
        Check("55m", r.THROUGHPUT_DROPPED),
        Check("70m", r.THROUGHPUT_DROPPED),  # dropped, but not yet for 15m
        # The median interpolates inside (10, 20].
        Check("90m", r.THROUGHPUT_DROPPED, [Fires(
            warn(**dropping),
            "The median generation speed of model dropping on upstream local is 15 tokens/s over "
            "the last 5m, below 50% of its average over the last 1d.")]),
    ])


def in_flight() -> Scenario:
    gauge_name = catalog.IN_FLIGHT.series
    a, b = {**BASE, "instance": "exporter-a:8080"}, {**BASE, "instance": "exporter-b:8080"}
    return Scenario("one replica saturated towards one upstream", [
        series(gauge_name, {**a, U: "openai"}, gauge((150, 20))),
        series(gauge_name, {**b, U: "openai"}, gauge((40, 20))),
        series(gauge_name, {**a, U: "local"}, gauge((90, 20))),
    ], [
        Check("3m", r.IN_FLIGHT_SATURATION),
        Check("10m", r.IN_FLIGHT_SATURATION, [Fires(
            warn(instance="exporter-a:8080", upstream="openai"),
            "exporter-a:8080 has 150 requests in flight to upstream openai, more than 100 for 5m: "
            "the backend is queueing or slowing down.")]),
    ])


def cost(per_minute: tuple[float, float], fires: bool) -> Scenario:
    checks = [Check("100m", r.COST_BUDGET)]
    if fires:
        checks = [Check("100m", r.COST_BUDGET, [Fires(
            warn(job=JOB),
            "LLM spend of job llm-exporter runs at 15 USD per hour over the last 1h, above the "
            "budget of 10 USD per hour.")])]
    return Scenario(f"spend {'above' if fires else 'within'} the hourly budget", [
        exporter_counter(catalog.COST, {U: "openai", M: "gpt-4o"}, (per_minute[0], 120)),
        exporter_counter(catalog.COST, {U: "anthropic", M: "claude"}, (per_minute[1], 120)),
    ], checks)


def cache_hits() -> Scenario:
    low, good, none = {U: "openai", M: "low"}, {U: "openai", M: "good"}, {U: "local", M: "none"}

    def tok(labels: dict[str, str], kind: str, per_minute: float) -> dict | None:
        return exporter_counter(catalog.TOKENS, {**labels, T: kind}, (per_minute, 100))

    return Scenario("prompt cache hit ratio low for one model", [
        *(requests({**m, C: "200"}, (10, 100)) for m in (low, good, none)),
        tok(low, catalog.TOKEN_INPUT, 1000), tok(low, catalog.TOKEN_CACHED_INPUT, 100),
        tok(good, catalog.TOKEN_INPUT, 1000), tok(good, catalog.TOKEN_CACHED_INPUT, 500),
        # A backend without a prompt cache reports no cached tokens (its series, if the exporter
        # starts it, stays at 0): nothing to alert on.
        tok(none, catalog.TOKEN_INPUT, 1000), tok(none, catalog.TOKEN_CACHED_INPUT, 0),
    ], [
        Check("30m", r.LOW_CACHE_HIT),
        Check("80m", r.LOW_CACHE_HIT, [Fires(
            {"severity": "info", **low},
            "Only 10% of the input tokens of model low on upstream openai were served from the "
            "prompt cache over the last 5m, below 20% for 1h.")]),
    ])


def usage_missing() -> Scenario:
    ollama = {U: "local", M: "llama3", catalog.API: "ollama_chat"}
    return Scenario("half the successful ollama_chat responses carry no usage", [
        requests({**ollama, C: "200"}, (60, 40)),
        requests({U: "local", M: "llama3", C: "200"}, (60, 40)),  # openai_chat, all with usage
        requests({**ollama, C: "500"}, (60, 40)),  # failures are not in the denominator
        exporter_counter(catalog.USAGE_MISSING, {U: "local", catalog.API: "ollama_chat"}, (30, 40)),
    ], [
        Check("10m", r.USAGE_MISSING),
        Check("25m", r.USAGE_MISSING, [Fires(
            warn(upstream="local", api="ollama_chat"),
            "50% of the successful ollama_chat responses of upstream local carried no token "
            "usage over the last 5m: their tokens and cost are not counted.")]),
    ])


def telemetry_dropped() -> Scenario:
    dropped = catalog.TELEMETRY_DROPPED.series
    a = {**BASE, "instance": "exporter-a:8080", catalog.REASON: catalog.DROP_QUEUE_FULL}
    b = {**BASE, "instance": "exporter-b:8080", catalog.REASON: catalog.DROP_QUEUE_FULL}
    return Scenario("one replica drops request-log rows", [
        series(dropped, a, counter((0, 10), (5, 20))),
        series(dropped, b, counter((0, 30))),
    ], [
        Check("10m", r.TELEMETRY_DROPPING),
        Check("25m", r.TELEMETRY_DROPPING, [Fires(
            warn(**a),
            "exporter-a:8080 lost 25 pieces of telemetry for reason queue_full over the last 5m: "
            "request-log rows (queue_full, bad_row, write_error: /api/usage and /api/requests are "
            "incomplete) or a response's usage (implausible_usage, inflate_limit: its tokens and cost "
            "are not counted).")]),
    ])


def memory() -> Scenario:
    a, b = {**BASE, "instance": "exporter-a:8080"}, {**BASE, "instance": "exporter-b:8080"}
    metric = "process_resident_memory_bytes"
    return Scenario("one replica above the memory threshold", [
        series(metric, a, gauge((200 * 2**20, 10), (2 * 2**30, 30))),
        series(metric, b, gauge((200 * 2**20, 40))),
    ], [
        Check("20m", r.MEMORY_HIGH),
        Check("30m", r.MEMORY_HIGH, [Fires(
            warn(**a),
            "exporter-a:8080 uses 2GiB of resident memory, above 1GiB for 15m.")]),
    ])


def exporter_service_down() -> Scenario:
    service = {"job": "llm-exporter-service", "instance": "exporter:8080"}
    return Scenario("the exporter's service address stops answering", [
        series("up", service, gauge((1, 5), (0, 10))),
    ], [
        Check("5m", r.EXPORTER_SERVICE_DOWN),  # down since minute 5, for 1m not yet over
        Check("7m", r.EXPORTER_SERVICE_DOWN, [Fires(
            crit(**service),
            "Prometheus has failed to scrape the exporter's service address exporter:8080 for 1m "
            "(up = 0): clients using it reach no replica.")]),
    ])


def first_failure_burst() -> Scenario:
    """A burst of failures in one minute, the first of its code: counted only if the series was
    exported at 0 before (else it is born holding the burst, and never increases after it)."""
    bursty = {U: "bursty", M: "gpt-4o"}
    return Scenario("one minute of failures, the first 503s of a model, burns the budget", [
        requests({**bursty, C: "200"}, (100, 60)),
        requests({**bursty, C: "503"}, (0, 29), (600, 1), (0, 30)),
    ], [
        Check("29m", r.ERROR_BUDGET_BURN),
        Check("33m", r.ERROR_BUDGET_BURN, [Fires(
            crit(upstream="bursty", long_window="1h", short_window="5m"),
            BURST)]),
    ])


BURST = ("15.38% of the requests to upstream bursty failed (code 5..|429) over the last 1h: 14.4 "
         "times the error budget of the 99.5% availability SLO, and still above it over the last 5m.")


def quiet_upstream() -> Scenario:
    """One failed request of a few pages nobody: not a ratio alert, not a burn-rate alert."""
    quiet = {U: "quiet", M: "gpt-4o"}
    return Scenario("one failed request on a quiet upstream", [
        requests({**quiet, C: "200"}, (0.2, 120)),
        requests({**quiet, C: "503"}, (0, 59), (1, 1), (0, 60)),
    ], [
        Check(f"{minute}m", name)
        for minute in (61, 63, 65, 70, 90) for name in (r.ERROR_BUDGET_BURN, r.HIGH_ERROR_RATIO)
    ])


def no_traffic() -> Scenario:
    stopped, steady = {U: "stopped", M: "gpt-4o"}, {U: "steady", M: "gpt-4o"}
    return Scenario("traffic to one upstream stops", [
        requests({**stopped, C: "200"}, (10, 100), (0, 40)),
        requests({**steady, C: "200"}, (10, 140)),
    ], [
        Check("110m", r.NO_TRAFFIC),  # 10 minutes without traffic: not yet
        Check("120m", r.NO_TRAFFIC, [Fires(
            warn(upstream="stopped"),
            "Upstream stopped served 994.2 requests over the last 1d and none over the last 15m: "
            "clients cannot reach the proxy, or route elsewhere.")]),
    ])


def tpot_regression() -> Scenario:
    steady, slower = {U: "local", M: "steady"}, {U: "local", M: "slower"}
    tpot = catalog.TIME_PER_OUTPUT_TOKEN
    api = {catalog.API: "openai_chat"}
    return Scenario("time per output token grows to ten times its usual value", [
        requests({**steady, C: "200"}, (10, 120)),
        requests({**slower, C: "200"}, (10, 120)),
        *histogram(tpot, {**BASE, **steady, **api}, ({0.02: 10}, 120)),
        *histogram(tpot, {**BASE, **slower, **api}, ({0.02: 10}, 60), ({0.2: 10}, 60)),
    ], [
        Check("55m", r.TPOT_REGRESSION),
        Check("70m", r.TPOT_REGRESSION),  # slower, but not yet for 15m
        Check("90m", r.TPOT_REGRESSION, [Fires(
            warn(**slower),
            "The median time per output token of model slower on upstream local is 175ms over "
            "the last 5m, above 2 times its average over the last 1d.")]),
    ])


def daily_budget() -> Scenario:
    """Spend that grows by 0.6 USD/h every hour: in the first hour on course for 187 USD over
    the next day (silent), at 6 USD/h after ten hours for 318 USD (fires)."""
    ramp = [(0.01 * hour, 60) for hour in range(1, 11)]
    return Scenario("spend growing towards the daily budget", [
        exporter_counter(catalog.COST, {U: "openai", M: "gpt-4o"}, *ramp, (0.1, 60)),
    ], [
        Check("60m", r.DAILY_BUDGET_FORECAST),
        Check("640m", r.DAILY_BUDGET_FORECAST, [Fires(warn(job=JOB), DAILY)]),
    ])


DAILY = ("At the trend of the last 6h, LLM spend of job llm-exporter over the next 24 hours comes "
         "to 318.3 USD, above the daily budget of 200 USD.")


def alerting_path() -> Scenario:
    prom = {"job": "prometheus", "instance": "localhost:9090"}
    am = {"job": "alertmanager", "instance": "alertmanager:9093"}
    sends = {**prom, "alertmanager": "http://alertmanager:9093/api/v2/alerts"}
    return Scenario("the alerting path fails piece by piece", [
        series("up", prom, gauge((1, 40))),
        series("up", am, gauge((1, 5), (0, 35))),
        series("alertmanager_notifications_total", {**am, "integration": "slack"}, counter((10, 40))),
        series("alertmanager_notifications_failed_total", {**am, "integration": "slack"},
               counter((0, 10), (2, 30))),
        series("alertmanager_notifications_total", {**am, "integration": "email"}, counter((10, 40))),
        series("alertmanager_notifications_failed_total", {**am, "integration": "email"}, counter((0, 40))),
        series("prometheus_rule_evaluation_failures_total", {**prom, "rule_group": "x.yml;llm"},
               counter((0, 10), (1, 30))),
        series("prometheus_notifications_alertmanagers_discovered", prom, gauge((1, 10), (0, 30))),
        series("prometheus_notifications_sent_total", sends, counter((10, 40))),
        series("prometheus_notifications_errors_total", sends, counter((0, 10), (5, 30))),
    ], [
        Check("0m", r.WATCHDOG, [Fires(
            {"severity": "none"},
            "This alert always fires (value 1). Alertmanager sends it to the watchdog receiver, "
            "an external dead man's switch, which raises the alarm when it stops arriving.")]),
        Check("8m", r.MONITORING_TARGET_DOWN),
        Check("12m", r.MONITORING_TARGET_DOWN, [Fires(
            crit(**am),
            "Prometheus has failed to scrape alertmanager:9093 of job alertmanager for 5m (up = 0): "
            "alerts may be evaluated or delivered late, or not at all.")]),
        Check("12m", r.NOTIFICATIONS_FAILING),
        Check("20m", r.NOTIFICATIONS_FAILING, [Fires(
            crit(instance="alertmanager:9093", integration="slack"),
            "20% of the slack notifications of alertmanager:9093 failed over the last 5m: pages "
            "sent that way do not arrive (the other integrations may still work).")]),
        Check("12m", r.RULE_FAILURES),
        Check("20m", r.RULE_FAILURES, [Fires(
            crit(instance="localhost:9090"),
            "localhost:9090 failed 5 rule evaluations over the last 5m: the alerts and recordings "
            "of those rules are missing.")]),
        Check("12m", r.NO_ALERTMANAGER),
        Check("20m", r.NO_ALERTMANAGER, [Fires(
            crit(**prom),
            "localhost:9090 knows 0 Alertmanagers: every alert it fires is dropped.")]),
        Check("12m", r.ALERT_SEND_ERRORS),
        Check("20m", r.ALERT_SEND_ERRORS, [Fires(
            crit(instance="localhost:9090"),
            "50% of the alerts localhost:9090 sent to Alertmanager over the last 5m failed.")]),
    ])


def backend_no_model() -> Scenario:
    loaded, waiting = catalog.BACKEND_MODELS_LOADED.series, catalog.BACKEND_REQUESTS_WAITING.series
    in_flight = catalog.IN_FLIGHT.series
    return Scenario("no model loaded while requests wait in the proxy or in the backend", [
        # Ollama unloads its model and fails to load it again while the proxy holds requests.
        series(loaded, {**BASE, U: "ollama"}, gauge((1, 10), (0, 30))),
        series(in_flight, {**BASE, U: "ollama"}, gauge((3, 40))),
        # vLLM's model is gone while requests wait in its own queue.
        series(loaded, {**BASE, U: "vllm"}, gauge((1, 10), (0, 30))),
        series(waiting, {**BASE, U: "vllm", M: "qwen"}, gauge((2, 40))),
        series(in_flight, {**BASE, U: "vllm"}, gauge((0, 40))),
        # Nothing loaded and nothing waiting: an idle on-demand backend is fine.
        series(loaded, {**BASE, U: "idle"}, gauge((0, 40))),
        series(in_flight, {**BASE, U: "idle"}, gauge((0, 40))),
    ], [
        Check("12m", r.BACKEND_NO_MODEL),  # unloaded since minute 10, for 5m not yet over
        Check("20m", r.BACKEND_NO_MODEL, [
            Fires(crit(upstream=upstream),
                  f"Upstream {upstream} reports 0 models loaded while requests wait for it (in its "
                  "queue or in the proxy), for 5m: they hang or fail until a model loads.")
            for upstream in ("ollama", "vllm")
        ]),
    ])


def backend_queue() -> Scenario:
    waiting = catalog.BACKEND_REQUESTS_WAITING.series
    growing, steady, draining = ({U: "vllm", M: name} for name in ("growing", "steady", "draining"))
    return Scenario("one backend queue keeps growing; a long steady one and a draining one do not", [
        # Empty for 10 minutes, then one more request waiting every minute.
        series(waiting, {**BASE, **growing}, "0+0x9 1+1x40"),
        series(waiting, {**BASE, **steady}, gauge((20, 50))),
        series(waiting, {**BASE, **draining}, "50-1x49"),
    ], [
        Check("22m", r.BACKEND_QUEUE_GROWING),  # growing, but not yet never below 5 for 10m
        Check("40m", r.BACKEND_QUEUE_GROWING, [Fires(
            warn(**growing),
            "Model growing on upstream vllm has 31 requests waiting in the backend's queue, never "
            "fewer than 5 over the last 10m and still growing: the backend cannot keep up with the "
            "traffic.")]),
    ])


def kv_cache() -> Scenario:
    usage = catalog.BACKEND_KV_CACHE_USAGE.series
    full, busy = {U: "vllm", M: "full"}, {U: "vllm", M: "busy"}
    return Scenario("one backend's KV cache stays nearly full", [
        series(usage, {**BASE, **full}, gauge((0.5, 5), (0.98, 30))),
        series(usage, {**BASE, **busy}, gauge((0.9, 35))),
    ], [
        Check("10m", r.BACKEND_KV_CACHE_FULL),  # full since minute 5, for 10m not yet over
        Check("20m", r.BACKEND_KV_CACHE_FULL, [Fires(
            warn(**full),
            "The KV cache of model full on upstream vllm is 98% full, above 95% for 10m: the "
            "backend preempts running requests or queues new ones.")]),
    ])


def backend_unreadable() -> Scenario:
    up = catalog.BACKEND_UP.series
    a, b = {**BASE, "instance": "exporter-a:8080"}, {**BASE, "instance": "exporter-b:8080"}
    ps, slots = {U: "ollama", catalog.ENDPOINT: "/api/ps"}, {U: "llamacpp", catalog.ENDPOINT: "/slots"}
    return Scenario("no replica reads one endpoint; another is unread by one replica only", [
        series(up, {**a, **ps}, gauge((1, 5), (0, 25))),
        series(up, {**b, **ps}, gauge((1, 5), (0, 25))),
        series(up, {**a, **slots}, gauge((0, 30))),
        series(up, {**b, **slots}, gauge((1, 30))),
    ], [
        Check("12m", r.BACKEND_STATE_UNREADABLE),  # unread since minute 5, for 10m not yet over
        Check("20m", r.BACKEND_STATE_UNREADABLE, [Fires(
            warn(**ps),
            "No exporter could read /api/ps of upstream ollama for 10m (llm_backend_up = 0): its "
            "models, queue and KV cache are not shown, and the alerts on them cannot fire.")]),
    ])


def alert_scenarios() -> list[Scenario]:
    return [
        exporter_down(), exporter_service_down(), exporter_absent(), upstream_down(), error_ratio(),
        first_failure_burst(), quiet_upstream(), no_traffic(), latency(), throughput(),
        tpot_regression(), in_flight(), cost((0.2, 0.05), fires=True), cost((0.1, 0.05), fires=False),
        daily_budget(), cache_hits(), usage_missing(), telemetry_dropped(), memory(), alerting_path(),
        backend_no_model(), backend_queue(), kv_cache(), backend_unreadable(),
    ]


# --- A day and a week of history: traffic against last week, cost against yesterday ---------------
DAY, WEEK = 24 * 60, 7 * 24 * 60


def traffic_drop() -> Scenario:
    dropped, steady = {U: "dropped", M: "gpt-4o"}, {U: "steady", M: "gpt-4o"}
    return Scenario("traffic of one upstream falls to a fifth of last week's", [
        requests({**dropped, C: "200"}, (100, WEEK + 60), (20, 120)),
        requests({**steady, C: "200"}, (100, WEEK + 180)),
    ], [
        Check(f"{WEEK + 60}m", r.TRAFFIC_DROP),
        Check(f"{WEEK + 180}m", r.TRAFFIC_DROP, [Fires(
            warn(upstream="dropped"),
            "Upstream dropped receives 20 requests/min over the last 1h, below 30% of the same "
            "1h 1w ago.")]),
    ])


def cost_spike() -> Scenario:
    return Scenario("spend five times the same hour yesterday", [
        exporter_counter(catalog.COST, {U: "openai", M: "gpt-4o"}, (0.02, DAY + 60), (0.1, 120)),
    ], [
        Check(f"{DAY + 60}m", r.COST_SPIKE),
        Check(f"{DAY + 180}m", r.COST_SPIKE, [Fires(
            warn(job=JOB),
            "LLM spend of job llm-exporter runs at 6 USD per hour over the last 1h, more than 3 "
            "times the same 1h 1d ago.")]),
    ])


def history_scenarios() -> list[Scenario]:
    return [traffic_drop(), cost_spike()]


# --- SLO burn rates -------------------------------------------------------------------------------
# Stories run side by side, one upstream each, so the three-day history is replayed once. Every
# upstream gets 1000 requests a minute within the SLO; then, so that all stories end together at
# minute END, a share of its requests fails (availability) or is slow (latency) for the story's
# length. Shares are multiples of each SLO's error budget (0.5% and 1%), so one story tests both.

PER_MINUTE = 1000
SLO_STORIES = (
    # (upstream, share of requests bad as a function of the error budget, minutes it lasts,
    #  the window pairs that must fire at the end). Each story fires exactly its pair.
    ("fast-burn", lambda budget: 0.3, 35, [("1h", "5m")]),
    ("slow-burn", lambda budget: 10 * budget, 260, [("6h", "30m")]),
    ("day-burn", lambda budget: 4 * budget, 1200, [("1d", "2h")]),
    ("days-burn", lambda budget: 2 * budget, 2400, [("3d", "6h")]),
    ("within-budget", lambda budget: budget / 2, None, []),  # bad from the start, never fires
)
LONGEST = max(minutes or 0 for _, _, minutes, _ in SLO_STORIES)
END = 3 * 24 * 60 + LONGEST  # a full 3d window of history before the longest story


def _availability(upstream: str, bad: float, minutes: int) -> list[dict]:
    failed = PER_MINUTE * bad
    labels = {U: upstream, M: "gpt-4o"}
    return [
        requests({**labels, C: "200"}, (PER_MINUTE, END - minutes), (PER_MINUTE - failed, minutes)),
        requests({**labels, C: "503"}, (0, END - minutes), (failed, minutes)),
    ]


def _slow(metric, fast: float, slow: float):
    """A histogram story: `bad` of the requests take `slow` seconds instead of `fast`."""
    def build(upstream: str, bad: float, minutes: int) -> list[dict]:
        late = PER_MINUTE * bad
        return histogram(
            metric, {**BASE, U: upstream, M: "gpt-4o", catalog.API: "openai_chat"},
            ({fast: PER_MINUTE}, END - minutes), ({fast: PER_MINUTE - late, slow: late}, minutes),
        )
    return build


def slo_scenarios() -> list[Scenario]:
    """Every SLO's burn-rate alerts: silent before the stories start, each story's pair at the end."""
    windows = {(w.long, w.short): w for w in DEFAULT.slo_windows}
    input_series, checks = [], []
    for name, slo, budget, build, what, severity in (
        (r.ERROR_BUDGET_BURN, "the 99.5% availability SLO", 1 - DEFAULT.availability_objective,
         _availability, "requests to upstream {} failed (code 5..|429)", None),
        (r.TTFT_BUDGET_BURN, "the time-to-first-token SLO (99% within 5s)", 1 - DEFAULT.ttft_objective,
         _slow(catalog.TIME_TO_FIRST_TOKEN, 1.0, 10.0),
         "streams of upstream {} waited longer than 5s for their first token", None),
        # Whole-request latency is shown, never notified: info at every window.
        (r.LATENCY_BUDGET_BURN, "the latency SLO (99% within 40.96s)", 1 - DEFAULT.latency_objective,
         _slow(catalog.REQUEST_DURATION, 1.0, 60.0), "requests to upstream {} took longer than 40.96s",
         "info"),
    ):
        fires = []
        for upstream, share, minutes, fired in SLO_STORIES:
            bad, minutes = share(budget), minutes or END
            input_series += build(upstream, bad, minutes)
            for long, short in fired:
                window = windows[(long, short)]
                # The long window holds `minutes` of bad traffic; the rest of it was good.
                long_minutes = recording.seconds(long) / 60
                ratio = _percentage(bad * min(minutes, long_minutes) / long_minutes)
                fires.append(Fires(
                    {"severity": severity or window.severity, U: upstream, "long_window": long,
                     "short_window": short},
                    f"{ratio} of the {what.format(upstream)} over the last {long}: "
                    f"{window.factor:g} times the error budget of {slo}, and still above it over "
                    f"the last {short}."))
        checks += [Check(f"{END - LONGEST}m", name), Check(f"{END}m", name, fires)]
    return [Scenario("burn-rate stories, one per upstream, ending together", input_series, checks)]


def _percentage(ratio: float) -> str:
    """What Prometheus' humanizePercentage prints: 4 significant digits, trailing zeros dropped."""
    return f"{ratio * 100:.4g}%"
