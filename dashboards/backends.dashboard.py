"""Backends: what the backends behind the proxy report about themselves. Can their state be read,
which models are loaded and how much memory they take, how long the queue is next to the proxy's
own in-flight count, how full the KV cache is, how busy the llama.cpp slots are, how long models
take to load.

Every exporter replica reads the same backend, so replicas are combined with max (they repeat one
value), never summed; the proxy's in-flight count is summed (each replica proxies its own requests).
"""

import sys
from pathlib import Path

# grafanalib's loader executes this file by path, outside any package: make the repo importable.
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from dashboards import common as C  # noqa: E402
from dashboards import queries as Q  # noqa: E402
from exporter import catalog  # noqa: E402

MODEL, UPSTREAM, ENDPOINT, MEMORY = catalog.MODEL, catalog.UPSTREAM, catalog.ENDPOINT, catalog.MEMORY
CFG = Q.ALERTS
PER_MODEL = (UPSTREAM, MODEL)
BY_MODEL_LEGEND = "{{upstream}} {{model}}"


def reported(spec: catalog.MetricSpec, *labels: str) -> str:
    """A backend gauge as the backend reports it: the replicas' one value (max), by `labels`."""
    return Q.aggregate("max", Q.series(spec), *labels)


def per_upstream(spec: catalog.MetricSpec) -> str:
    """A per-model backend gauge summed over the upstream's models (each model counted once)."""
    return Q.sum_by(reported(spec, *PER_MODEL), UPSTREAM)


state = [
    C.stat(
        "Backend state readable", "The last read of each backend state endpoint by the exporter "
        "(Ollama /api/ps and /api/tags, llama.cpp /v1/models, /slots and /metrics, vLLM /metrics, "
        "llama-swap /running and /v1/models): DOWN when no exporter replica could read it. A backend "
        "that cannot be read has no series on the rest of this dashboard (absent, never zero).", C.NO_UNIT,
        [C.target(reported(catalog.BACKEND_UP, UPSTREAM, ENDPOINT), "{{upstream}} {{endpoint}}")],
        mappings=C.UP_DOWN_MAPPINGS, thresholds=C.steps((C.RED, None), (C.GREEN, 1)), w=8, h=6,
    ),
    C.stat(
        "Models loaded", "Models each backend has loaded right now (Ollama /api/ps, llama-swap "
        "/running; llama.cpp and vLLM: the models they serve). Yellow at 0: an on-demand backend "
        "loads at the next request; with requests waiting that is the no-model alert.", C.NUMBER,
        [C.target(reported(catalog.BACKEND_MODELS_LOADED, UPSTREAM), "{{upstream}}")],
        thresholds=C.steps((C.YELLOW, None), (C.GREEN, 1)), w=5, h=6,
    ),
    C.stat(
        "Models available", "Models each backend can load (Ollama /api/tags, llama-swap /v1/models).",
        C.NUMBER,
        [C.target(reported(catalog.BACKEND_MODELS_AVAILABLE, UPSTREAM), "{{upstream}}")], w=4, h=6,
    ),
    C.timeseries(
        "Backend state read errors", "Failed reads of backend state endpoints per second, per "
        "upstream and endpoint: no answer, an error status, or an unreadable body.", C.PER_SECOND,
        [C.target(Q.rate_sum(catalog.BACKEND_SCRAPE_ERRORS, by_labels=[UPSTREAM, ENDPOINT]),
                  "{{upstream}} {{endpoint}}")],
        w=7, h=6,
    ),
]

queue = [
    C.timeseries(
        "Backend running and waiting, proxy in flight", "Per upstream: requests the backend is "
        "processing and those waiting in its queue (vLLM, llama.cpp --metrics), next to the "
        "requests the proxy has in flight to it. In flight well above running plus waiting: the "
        "wait is before the backend (connection limits, a model loading).", C.NUMBER,
        [
            C.target(per_upstream(catalog.BACKEND_REQUESTS_RUNNING), "{{upstream}} running (backend)"),
            C.target(per_upstream(catalog.BACKEND_REQUESTS_WAITING), "{{upstream}} waiting (backend)"),
            C.target(Q.sum_by(Q.series(catalog.IN_FLIGHT), UPSTREAM), "{{upstream}} in flight (proxy)"),
        ],
    ),
    C.timeseries(
        "Requests waiting by model", "Requests queued in the backend per model. The dashed line is the "
        "queue alert's floor: it fires when the queue never drops below it over "
        f"{CFG.backend_queue_window} and still grows.", C.NUMBER,
        [C.target(reported(catalog.BACKEND_REQUESTS_WAITING, *PER_MODEL), BY_MODEL_LEGEND)],
        thresholds=C.alert_steps(CFG.backend_queue_waiting), threshold_lines=True, links=C.model_links(),
    ),
]

memory = [
    C.timeseries(
        "Model memory", "Memory each loaded model takes, total and the part in GPU memory (vram), "
        "as the backend reports it (Ollama /api/ps size and size_vram).", C.BYTES,
        [C.target(reported(catalog.BACKEND_MODEL_MEMORY, *PER_MODEL, MEMORY),
                  "{{upstream}} {{model}} {{memory}}")],
        w=8, links=C.model_links(),
    ),
    C.timeseries(
        "KV cache usage", "Share of each backend's KV cache in use (vLLM, llama.cpp). Near full, the "
        "backend preempts running requests or queues new ones; the dashed line is the KV-cache "
        "alert's threshold.", C.RATIO,
        [C.target(reported(catalog.BACKEND_KV_CACHE_USAGE, *PER_MODEL), BY_MODEL_LEGEND)],
        thresholds=C.alert_steps(CFG.kv_cache_usage_max), threshold_lines=True, w=8, links=C.model_links(),
    ),
    C.timeseries(
        "Prefix-cache hit ratio", "Share of the prompt tokens the backend looked up in its prefix "
        "cache that it found there (vLLM prefix_cache_hits / prefix_cache_queries).", C.RATIO,
        [C.target(
            f"{Q.rate_sum(catalog.BACKEND_PREFIX_CACHE_HITS, by_labels=PER_MODEL)}\n/\n"
            f"{Q.rate_sum(catalog.BACKEND_PREFIX_CACHE_QUERIED, by_labels=PER_MODEL)}",
            BY_MODEL_LEGEND,
        )],
        w=8, links=C.model_links(),
    ),
]

slots = [
    C.timeseries(
        "Slots busy and total", "llama.cpp server slots processing a request, and all its slots: "
        "all busy means new requests wait for a slot.", C.NUMBER,
        [
            C.target(reported(catalog.BACKEND_SLOTS_BUSY, *PER_MODEL), "{{upstream}} {{model}} busy"),
            C.target(reported(catalog.BACKEND_SLOTS, *PER_MODEL), "{{upstream}} {{model}} total"),
        ],
        w=10, links=C.model_links(),
    ),
    C.stat(
        "Context size per slot", "Tokens of context one llama.cpp slot holds (its n_ctx): a prompt and "
        "answer longer than this are cut or refused.", C.NUMBER,
        [C.target(reported(catalog.BACKEND_CONTEXT_SIZE, *PER_MODEL), BY_MODEL_LEGEND)], w=7,
    ),
    C.stat(
        "Idle model unloads in", "Time until the backend unloads each idle loaded model (Ollama "
        "expires_at); the next request after that waits for a load.", C.SECONDS,
        [C.target(f"{reported(catalog.BACKEND_MODEL_EXPIRY, *PER_MODEL)} - time()", BY_MODEL_LEGEND)], w=7,
    ),
]

loading = [
    C.timeseries(
        "Model load time by model", "p50 and p95 of the time the backend reports it spent loading the "
        "model for a request (Ollama load_duration): cold starts after an unload or a model switch.",
        C.SECONDS, C.quantile_targets(catalog.MODEL_LOAD_DURATION, by_labels=[MODEL], qs=(0.5, 0.95)),
        links=C.model_links(),
    ),
    C.heatmap(
        "Model load time distribution", "Distribution of the reported load times: requests per second in each "
        "duration bucket. A band far above the rest is cold loads from disk.", C.SECONDS,
        Q.bucket_rates(catalog.MODEL_LOAD_DURATION),
    ),
]

dashboard = C.dashboard(
    "Backends",
    C.BACKENDS_UID,
    "What the backends report about themselves: state readable, models loaded and their memory, "
    "backend queue next to the proxy's in-flight, KV cache, llama.cpp slots, model load times.",
    [
        C.Row("Backend state: readable? models loaded?", state),
        C.Row("Queue: backend running and waiting, proxy in flight", queue),
        C.Row("Memory and caches", memory),
        C.Row("llama.cpp slots and model expiry", slots),
        C.Row("Model load time", loading),
    ],
)
