"""Cost and Usage: what are we spending, on which models and upstreams, and on which tokens?"""

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
PRICING = "Cost comes from the exporter's pricing table; models without a price add nothing."

spend = Q.sum_by(Q.increase_over_range(Q.series(catalog.COST)))
requests = Q.sum_by(Q.increase_over_range(Q.series(catalog.REQUESTS)))


def cost_per_1k_requests(*by_labels: str) -> str:
    cost = Q.rate_sum(catalog.COST, by_labels=by_labels)
    return f"1000 * {cost} / {Q.rate_sum(catalog.REQUESTS, by_labels=by_labels)}"


spend_stats = [
    C.stat(
        "Spend today", f"US dollars spent since midnight (dashboard time zone). {PRICING}", C.USD,
        [C.target(spend, instant=True)], time_from="now/d", decimals=2, w=6,
    ),
    C.stat(
        "Spend this month", "US dollars spent since the first of the month. With a Prometheus retention "
        "shorter than that (compose's keeps 35 days) this shows the retained part only.", C.USD,
        [C.target(spend, instant=True)], time_from="now/M", decimals=2, w=6,
    ),
    C.stat(
        "Spend in range", f"US dollars spent in the dashboard's time range. {PRICING}", C.USD,
        [C.target(spend, instant=True)], decimals=2, w=6,
    ),
    C.stat(
        "Cost per 1k requests", "Average cost of a thousand requests in the dashboard's time range, "
        "failed ones included.", C.USD, [C.target(f"1000 * {spend} / {requests}", instant=True)],
        decimals=3, w=6,
    ),
]

over_time = [
    C.timeseries(
        "Cost per hour by model", f"Spend rate per model in US dollars per hour; a click on a line "
        f"opens the model's performance. {PRICING}", C.USD,
        [C.target(Q.per_hour(Q.rate_sum(catalog.COST, by_labels=[MODEL])), "{{model}}")], stack=True,
        links=C.model_links(),
    ),
    C.timeseries(
        "Cost per hour by upstream", "Spend rate per upstream (backend or provider account) in US "
        "dollars per hour.", C.USD,
        [C.target(Q.per_hour(Q.rate_sum(catalog.COST, by_labels=[UPSTREAM])), "{{upstream}}")], stack=True,
    ),
    C.timeseries(
        "Tokens per second by type", "input: all prompt tokens (cached_input and cache_write_input are "
        "parts of it); output: generated tokens (reasoning is a part of it). Not stacked: the types "
        "overlap.", C.NUMBER,
        [C.target(Q.rate_sum(catalog.TOKENS, by_labels=[catalog.TYPE]), "{{type}}")],
    ),
    C.timeseries(
        "Cost per 1k requests by model", "What a thousand requests cost per model, failed ones "
        "included: grows with prompt and output length.", C.USD,
        [C.target(cost_per_1k_requests(MODEL), "{{model}}")], links=C.model_links(),
    ),
]

by_model = [
    C.bargauge(
        "Spend by model", "US dollars spent per model in the dashboard's time range; a click on a bar "
        "opens the model's performance.", C.USD,
        [C.target(Q.sum_by(Q.increase_over_range(Q.series(catalog.COST)), MODEL), "{{model}}", instant=True)],
        w=8, links=C.model_links(),
    ),
    C.table(
        "Tokens by model and type", "Tokens used per model and type in the dashboard's time range, "
        "as the backends reported them; a click on a row opens the model's performance.", C.NUMBER,
        [
            C.target(
                Q.sum_by(Q.increase_over_range(Q.series(catalog.TOKENS)), MODEL, catalog.TYPE),
                instant=True, fmt="table",
            )
        ],
        w=16, links=C.model_links(C.ROW_FIRST_FIELD),
        transformations=[
            {
                "id": "groupingToMatrix",
                "options": {"columnField": catalog.TYPE, "rowField": MODEL, "valueField": "Value"},
            }
        ],
    ),
    C.timeseries(
        "Responses without usage", "Successful responses per second that carried no token usage: "
        "their tokens and cost are not counted (no estimates). An OpenAI-compatible backend that "
        "ignores stream_options shows here.", C.PER_SECOND,
        [C.target(Q.rate_sum(catalog.USAGE_MISSING, by_labels=[UPSTREAM, catalog.API]), "{{upstream}} {{api}}")],
    ),
    C.timeseries(
        "Output tokens per second by model", "Generated tokens per second per model: the part of the "
        "traffic that usually costs most.", C.NUMBER,
        [C.target(Q.rate_sum(catalog.TOKENS, Q.token_type(catalog.TOKEN_OUTPUT), by_labels=[MODEL]), "{{model}}")],
        stack=True, links=C.model_links(),
    ),
]

dashboard = C.dashboard(
    "Cost and Usage",
    "llm-cost-usage",
    "Spend today and this month, cost by model and upstream over time, tokens by type.",
    [
        C.Row("Spend", spend_stats),
        C.Row("Spend and tokens over time", over_time),
        C.Row("By model", by_model),
    ],
)
