"""vLLM: its /metrics (requests running and waiting, KV-cache usage, prefix-cache tokens), per
`model_name`. Names of vLLM V1 and the older ones (gpu_cache_usage_perc, gpu_prefix_cache_*);
its `*_perc` gauges are fractions from 0 to 1 despite the name."""

from __future__ import annotations

from exporter import catalog
from exporter.backends import promtext
from exporter.backends.reading import Endpoint, Round, Sample, number

SAMPLES: dict[str, catalog.MetricSpec] = {
    "vllm:num_requests_running": catalog.BACKEND_REQUESTS_RUNNING,
    "vllm:num_requests_waiting": catalog.BACKEND_REQUESTS_WAITING,
    "vllm:kv_cache_usage_perc": catalog.BACKEND_KV_CACHE_USAGE,
    "vllm:gpu_cache_usage_perc": catalog.BACKEND_KV_CACHE_USAGE,
    "vllm:prefix_cache_queries_total": catalog.BACKEND_PREFIX_CACHE_QUERIED,
    "vllm:prefix_cache_hits_total": catalog.BACKEND_PREFIX_CACHE_HITS,
    "vllm:gpu_prefix_cache_queries_total": catalog.BACKEND_PREFIX_CACHE_QUERIED,
    "vllm:gpu_prefix_cache_hits_total": catalog.BACKEND_PREFIX_CACHE_HITS,
}
_NAMES = frozenset(SAMPLES)


def parse_metrics(body: bytes, round_: Round) -> list[Sample]:
    found: list[Sample] = []
    served: set[str] = set()
    for sample in promtext.samples(body, _NAMES):
        name = sample.labels.get("model_name")
        if name:
            served.add(name)
        if (value := number(sample.value)) is not None:
            found.append(Sample(SAMPLES[sample.name], (round_.model(name),), value))
    return [Sample(catalog.BACKEND_MODELS_LOADED, (), float(len(served))), *found]


ENDPOINTS = (Endpoint("/metrics", parse_metrics),)
