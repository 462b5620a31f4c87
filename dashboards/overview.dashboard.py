"""LLM Gateway Overview: is my LLM traffic healthy right now, how fast is it, what does it cost?"""

import sys
from pathlib import Path

# grafanalib's loader executes this file by path, outside any package: make the repo importable.
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from dashboards import common as C  # noqa: E402
from dashboards import queries as Q  # noqa: E402
from exporter import catalog  # noqa: E402

MODEL, UPSTREAM = catalog.MODEL, catalog.UPSTREAM

panels = [
    C.stat(
        "Request rate", "Proxied requests per second, all API families.", C.REQUESTS_PER_SECOND,
        [C.target(Q.rate_sum(catalog.REQUESTS))],
    ),
    C.stat(
        "Error ratio", f"Share of requests that failed. {Q.ERROR_DEFINITION}", C.RATIO,
        [C.target(Q.error_ratio())], thresholds=C.ERROR_RATIO_STEPS,
    ),
    C.stat(
        "Latency p95", "95th percentile of the whole request, from received to last byte sent.",
        C.SECONDS, [C.target(Q.quantile(0.95, catalog.REQUEST_DURATION))],
    ),
    C.stat(
        "Time to first token p95", "Streams only: 95th percentile of the wait for the first generated content.",
        C.SECONDS, [C.target(Q.quantile(0.95, catalog.TIME_TO_FIRST_TOKEN))],
    ),
    C.stat(
        "Cost per hour", "Current spend rate in US dollars per hour, from the pricing table.", C.USD,
        [C.target(Q.per_hour(Q.rate_sum(catalog.COST)))], decimals=2,
    ),
    C.stat(
        "In flight", "Requests being proxied right now.", C.NUMBER,
        [C.target(Q.sum_by(Q.series(catalog.IN_FLIGHT)))],
    ),
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
        "Latency p50 / p95 / p99", "Whole-request latency quantiles, from received to last byte sent.",
        C.SECONDS, C.quantile_targets(catalog.REQUEST_DURATION),
    ),
    C.timeseries(
        "Time to first token p95 by model", "Streams only: how long users wait before text starts to appear.",
        C.SECONDS, C.quantile_targets(catalog.TIME_TO_FIRST_TOKEN, by_labels=[MODEL], qs=[0.95]),
    ),
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
    ),
    C.timeseries(
        "Cost per hour by model", "Spend rate in US dollars per hour, per model.", C.USD,
        [C.target(Q.per_hour(Q.rate_sum(catalog.COST, by_labels=[MODEL])), "{{model}}")], stack=True,
    ),
    C.stat(
        "Upstreams up", "Last periodic probe of each upstream: UP when it answered below 500.",
        C.NO_UNIT, [C.target(Q.aggregate("max", Q.series(catalog.UPSTREAM_UP), UPSTREAM), "{{upstream}}")],
        mappings=C.UP_DOWN_MAPPINGS, thresholds=C.steps((C.RED, None), (C.GREEN, 1)), w=6, h=8,
    ),
    C.timeseries(
        "In flight by upstream", "Requests being proxied right now, per upstream: a queue building up "
        "shows here first.", C.NUMBER,
        [C.target(Q.sum_by(Q.series(catalog.IN_FLIGHT), UPSTREAM), "{{upstream}}")], w=9,
    ),
    C.bargauge(
        "Top models", "The ten most requested models in the selected time range.", C.NUMBER,
        [
            C.target(
                f"topk(10, {Q.sum_by(Q.increase_over_range(Q.series(catalog.REQUESTS)), MODEL)})",
                "{{model}}", instant=True,
            )
        ],
        w=9,
    ),
    C.timeseries(
        "Upstream errors by type", "Failures talking to upstreams per second: connect, timeout, read "
        "(broke off mid-response), status (answered 5xx or 429), protocol (a malformed or oversized answer).", C.PER_SECOND,
        [
            C.target(
                Q.rate_sum(catalog.UPSTREAM_ERRORS, by_labels=[UPSTREAM, catalog.ERROR_TYPE]),
                "{{upstream}} {{error_type}}",
            )
        ],
    ),
    C.timeseries(
        "Requests by API family", "Requests per second by API family (openai_chat, anthropic_messages, "
        "ollama_chat, ...; other: passed through unmeasured).", C.REQUESTS_PER_SECOND,
        [C.target(Q.rate_sum(catalog.REQUESTS, by_labels=[catalog.API]), "{{api}}")], stack=True,
    ),
]

dashboard = C.dashboard(
    "LLM Gateway Overview",
    "llm-overview",
    "How much LLM traffic, how often it fails, how fast it is and what it costs, at a glance.",
    panels,
)
