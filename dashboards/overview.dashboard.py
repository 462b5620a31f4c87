"""LLM Gateway Overview: is anything paging, is the budget burning, are the upstreams up; then how
much traffic, how fast, what it costs.

The first row answers on-call's questions; stat colors switch at the thresholds of the alerts in
alerts/config.py, so a red stat means its alert is (about to be) firing.
"""

import sys
from pathlib import Path

# grafanalib's loader executes this file by path, outside any package: make the repo importable.
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from alerts import promql  # noqa: E402
from dashboards import common as C  # noqa: E402
from dashboards import queries as Q  # noqa: E402
from dashboards import slo as S  # noqa: E402
from exporter import catalog  # noqa: E402

MODEL, UPSTREAM = catalog.MODEL, catalog.UPSTREAM
CFG = Q.ALERTS
FAST_BURN = S.FAST_BURN

on_call = [
    C.alert_list(
        "Alerts firing and pending", "The Prometheus alerts firing or pending now, critical first, "
        "with their labels: what is paging, and what is about to.", w=7, h=8,
    ),
    C.stat(
        "Paging now", "Critical alerts firing now (they page); red from one. The list on the left "
        "names them; the red marks on every graph show when alerts fired.", C.NUMBER,
        [C.target(Q.firing("critical"))], thresholds=C.steps((C.GREEN, None), (C.RED, 1)), w=3, h=8,
    ),
    C.stat(
        f"Availability budget left, {S.PERIOD}",
        f"Share of the availability error budget left over the SLO period ({S.PERIOD}), per upstream. "
        f"SLO: {S.AVAILABILITY.statement} 0% or below: the SLO is broken. {S.PERIOD_SCOPE}",
        C.RATIO, [C.target(S.AVAILABILITY.budget_left_in_period(), "{{upstream}}", instant=True)],
        thresholds=C.BUDGET_STEPS, decimals=1, time_from=S.PERIOD, w=5, h=8,
    ),
    C.stat(
        f"Burn rate, {FAST_BURN.long}",
        f"How fast the availability budget burns now, per upstream: the failed share over "
        f"{FAST_BURN.long} divided by the allowed share. Yellow from {promql.number(S.SUSTAINABLE_BURN)}x "
        f"(faster than the budget lasts), red from {promql.number(FAST_BURN.factor)}x, where "
        f"{S.AVAILABILITY.alert} pages once the {FAST_BURN.short} rate agrees. {S.RECORDED_SCOPE}",
        C.NUMBER, [C.target(S.AVAILABILITY.burn_rate(FAST_BURN.long), "{{upstream}}")],
        thresholds=C.steps((C.GREEN, None), (C.YELLOW, S.SUSTAINABLE_BURN), (C.RED, FAST_BURN.factor)),
        decimals=1, w=4, h=8,
    ),
    C.stat(
        "Upstreams up", "Last periodic probe of each upstream: UP when it answered below 500. A click "
        "opens the upstream's backend state (models loaded, queue, KV cache).",
        C.NO_UNIT, [C.target(Q.aggregate("max", Q.series(catalog.UPSTREAM_UP), UPSTREAM), "{{upstream}}")],
        mappings=C.UP_DOWN_MAPPINGS, thresholds=C.steps((C.RED, None), (C.GREEN, 1)), w=5, h=8,
        links=C.backend_links(),
    ),
]

now = [
    C.stat(
        "Request rate", "Proxied requests per second, all API families.", C.REQUESTS_PER_SECOND,
        [C.target(Q.rate_sum(catalog.REQUESTS))],
    ),
    C.stat(
        "Error ratio", f"Share of requests that failed. {Q.ERROR_DEFINITION} Yellow and red at the "
        f"per-model error-ratio alert's warning and critical thresholds.", C.RATIO,
        [C.target(Q.error_ratio())], thresholds=C.ERROR_RATIO_STEPS,
    ),
    C.stat(
        "Latency p95", "95th percentile of the whole request, from received to last byte sent. Yellow "
        "at the per-model latency alert's threshold.",
        C.SECONDS, [C.target(Q.quantile(0.95, catalog.REQUEST_DURATION))],
        thresholds=C.alert_steps(CFG.latency_p95_seconds),
    ),
    C.stat(
        "Time to first token p95", "Streams only: 95th percentile of the wait for the first generated "
        "content. Yellow at the per-model time-to-first-token alert's threshold.",
        C.SECONDS, [C.target(Q.quantile(0.95, catalog.TIME_TO_FIRST_TOKEN))],
        thresholds=C.alert_steps(CFG.ttft_p95_seconds),
    ),
    C.stat(
        "Cost per hour", "Current spend rate in US dollars per hour, from the pricing table. Yellow at "
        "the cost alert's hourly budget.", C.USD,
        [C.target(Q.per_hour(Q.rate_sum(catalog.COST)))], decimals=2,
        thresholds=C.alert_steps(CFG.cost_budget_usd_per_hour),
    ),
    C.stat(
        "In flight, busiest", "Requests being proxied right now by the busiest exporter instance to one "
        "upstream (the in-flight alert's unit). Yellow at its saturation threshold.", C.NUMBER,
        [C.target(Q.aggregate("max", Q.sum_by(Q.series(catalog.IN_FLIGHT), Q.INSTANCE, UPSTREAM)))],
        thresholds=C.alert_steps(CFG.in_flight_max),
    ),
]

traffic = [
    C.timeseries(
        "Request rate by status code", "Requests per second by the HTTP status the client got "
        "(499: the client went away, 502: upstream unreachable, 504: upstream timed out).",
        C.REQUESTS_PER_SECOND,
        [C.target(Q.rate_sum(catalog.REQUESTS, by_labels=[catalog.CODE]), "{{code}}")], stack=True,
    ),
    C.timeseries(
        "Error ratio by upstream", f"Share of requests that failed, per upstream. {Q.ERROR_DEFINITION}", C.RATIO,
        [C.target(Q.error_ratio(UPSTREAM), "{{upstream}}")], thresholds=C.ERROR_RATIO_STEPS,
    ),
    C.timeseries(
        "Latency p50 / p95 / p99", "Whole-request latency quantiles, from received to last byte sent. "
        "The dots are exemplars: single requests, linked to their row in the request log.",
        C.SECONDS, C.quantile_targets(catalog.REQUEST_DURATION),
    ),
    C.timeseries(
        "Time to first token p95 by model", "Streams only: how long users wait before text starts to "
        "appear. The dots are exemplars (single requests, linked to the request log); a click on a "
        "line opens the model's performance.",
        C.SECONDS, C.quantile_targets(catalog.TIME_TO_FIRST_TOKEN, by_labels=[MODEL], qs=[0.95]),
        links=C.model_links(),
    ),
]

usage = [
    C.timeseries(
        "Tokens per second: input and output", "Prompt tokens sent and tokens generated per second, "
        "as reported by the backends (input includes cached prompt tokens).", C.NUMBER,
        [
            C.target(
                Q.rate_sum(catalog.TOKENS, Q.token_type(catalog.TOKEN_INPUT, catalog.TOKEN_OUTPUT),
                           by_labels=[catalog.TYPE]),
                "{{type}}",
            )
        ],
        w=8,
    ),
    C.timeseries(
        "Cost per hour by model", "Spend rate in US dollars per hour, per model; a click on a line "
        "opens the model's performance.", C.USD,
        [C.target(Q.per_hour(Q.rate_sum(catalog.COST, by_labels=[MODEL])), "{{model}}")], stack=True, w=8,
        links=C.model_links(),
    ),
    C.bargauge(
        "Top models", "The ten most requested models in the selected time range; a click on a bar "
        "opens the model's performance.", C.NUMBER,
        [
            C.target(
                f"topk(10, {Q.sum_by(Q.increase_over_range(Q.series(catalog.REQUESTS)), MODEL)})",
                "{{model}}", instant=True,
            )
        ],
        w=8, links=C.model_links(),
    ),
]

upstreams = [
    C.timeseries(
        "Upstream errors by type", "Failures talking to upstreams per second: connect, timeout, read "
        "(broke off mid-response), status (answered 5xx or 429), protocol (a malformed or oversized answer).", C.PER_SECOND,
        [
            C.target(
                Q.rate_sum(catalog.UPSTREAM_ERRORS, by_labels=[UPSTREAM, catalog.ERROR_TYPE]),
                "{{upstream}} {{error_type}}",
            )
        ],
        w=8,
    ),
    C.timeseries(
        "In flight by upstream", "Requests being proxied right now, per upstream: a queue building up "
        "shows here first.", C.NUMBER,
        [C.target(Q.sum_by(Q.series(catalog.IN_FLIGHT), UPSTREAM), "{{upstream}}")], w=8,
    ),
    C.timeseries(
        "Requests by API family", "Requests per second by API family (openai_chat, anthropic_messages, "
        "ollama_chat, ...; other: passed through unmeasured).", C.REQUESTS_PER_SECOND,
        [C.target(Q.rate_sum(catalog.REQUESTS, by_labels=[catalog.API]), "{{api}}")], stack=True, w=8,
    ),
]

rows = [
    C.Row("On call: paging? burning? upstreams up?", on_call),
    C.Row("Right now", now),
    C.Row("Traffic, errors and latency", traffic),
    C.Row("Tokens and cost", usage, collapsed=True),
    C.Row("Upstreams and API families", upstreams, collapsed=True),
]

dashboard = C.dashboard(
    "LLM Gateway Overview",
    "llm-overview",
    "Is anything paging, is the error budget burning, are the upstreams up; then how much LLM "
    "traffic, how often it fails, how fast it is and what it costs.",
    rows,
    links=[C.dashboard_link("Backends", C.BACKENDS_PATH, "What the backends report: models loaded, "
                            "queue, KV cache, slots, model load time")],
)
