"""Model Performance: per model, how fast does it answer, how fast does it generate, how often does
it fail, and how well does the prompt cache work?"""

import sys
from pathlib import Path

# grafanalib's loader executes this file by path, outside any package: make the repo importable.
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from dashboards import common as C  # noqa: E402
from dashboards import queries as Q  # noqa: E402
from exporter import catalog  # noqa: E402

MODEL = catalog.MODEL
PER_MODEL = [MODEL]

cached = Q.rate_sum(catalog.TOKENS, Q.token_type(catalog.TOKEN_CACHED_INPUT), by_labels=PER_MODEL)
prompt = Q.rate_sum(catalog.TOKENS, Q.token_type(catalog.TOKEN_INPUT), by_labels=PER_MODEL)

speed = [
    C.timeseries(
        "Latency by model", "Whole-request latency quantiles per model, from received to last byte sent. "
        "The dots are exemplars: single requests, linked to their row in the request log.",
        C.SECONDS, C.quantile_targets(catalog.REQUEST_DURATION, by_labels=PER_MODEL),
    ),
    C.timeseries(
        "Time to first token by model", "Streams only: quantiles of the wait for the first generated "
        "content, per model. Grows with prompt length and queueing on the backend. The dots are "
        "exemplars: single requests, linked to their row in the request log.",
        C.SECONDS, C.quantile_targets(catalog.TIME_TO_FIRST_TOKEN, by_labels=PER_MODEL),
    ),
    C.timeseries(
        "Time per output token by model", "Streams only: (duration - time to first token) / "
        "(output tokens - 1), p50 and p95 per model. The inverse of the streaming speed users see.",
        C.SECONDS, C.quantile_targets(catalog.TIME_PER_OUTPUT_TOKEN, by_labels=PER_MODEL, qs=(0.5, 0.95)),
    ),
    C.timeseries(
        "Output tokens per second by model", "Generation speed per request: the median, and p10 for the "
        "slow tail (low is bad here). The backend's own timing where it reports one.",
        C.NUMBER, C.quantile_targets(catalog.OUTPUT_TOKENS_PER_SECOND, by_labels=PER_MODEL, qs=(0.5, 0.1)),
    ),
]

sizes = [
    C.heatmap(
        "Input tokens per request", "Distribution of prompt sizes (all prompt tokens, cached included): "
        "requests per second in each token-count bucket.", C.NUMBER,
        Q.bucket_rates(catalog.REQUEST_TOKENS, Q.token_type(catalog.TOKEN_INPUT)), w=8,
    ),
    C.heatmap(
        "Output tokens per request", "Distribution of generated lengths: requests per second in each "
        "token-count bucket.", C.NUMBER,
        Q.bucket_rates(catalog.REQUEST_TOKENS, Q.token_type(catalog.TOKEN_OUTPUT)), w=8,
    ),
    C.heatmap(
        "Request duration", "Distribution of whole-request latency: requests per second in each "
        "duration bucket. Two bands usually mean two kinds of traffic (e.g. embeddings and chat).",
        C.SECONDS, Q.bucket_rates(catalog.REQUEST_DURATION), w=8,
    ),
]

health = [
    C.timeseries(
        "Prompt-cache hit ratio by model", "cached_input / input tokens: the share of prompt tokens the "
        "backend served from its prompt cache (0 where it reports none).", C.RATIO,
        [C.target(Q.ratio_or_zero(cached, prompt), "{{model}}")], w=8,
    ),
    C.timeseries(
        "Error ratio by model", f"Share of requests that failed, per model. {Q.ERROR_DEFINITION}", C.RATIO,
        [C.target(Q.error_ratio(MODEL), "{{model}}")], w=8, thresholds=C.ERROR_RATIO_STEPS,
    ),
    C.timeseries(
        "Requests by model", "Requests per second per model, all status codes. \"other\" collects the "
        "names beyond the exporter's model-label limit.", C.REQUESTS_PER_SECOND,
        [C.target(Q.rate_sum(catalog.REQUESTS, by_labels=PER_MODEL), "{{model}}")], w=8, stack=True,
    ),
]

dashboard = C.dashboard(
    "Model Performance",
    C.MODEL_PERFORMANCE_UID,
    "Per model: latency and time-to-first-token quantiles, generation speed, request and output sizes, "
    "prompt-cache hit ratio and error ratio.",
    [
        C.Row("Speed: latency, first token, generation", speed),
        C.Row("Sizes: prompts, outputs, durations", sizes),
        C.Row("Cache, errors and volume", health),
    ],
)
