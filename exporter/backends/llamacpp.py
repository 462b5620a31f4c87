"""llama.cpp's server: /v1/models (the model it serves), /slots (slots busy and in all, context
size) and /metrics when started with --metrics (requests processing and deferred; KV-cache usage
in versions that still export it). /slots and /metrics do not name the model: /v1/models,
read first in each round, does (model "unknown" when it did not answer). Without --metrics (or with --no-slots) the server answers 501,
which means "not offered" (see exporter.backends.collector)."""

from __future__ import annotations

from exporter import catalog
from exporter.backends import promtext
from exporter.backends.reading import Endpoint, Round, Sample, entries, json_object, json_value, number

SAMPLES: dict[str, catalog.MetricSpec] = {
    "llamacpp:requests_processing": catalog.BACKEND_REQUESTS_RUNNING,
    "llamacpp:requests_deferred": catalog.BACKEND_REQUESTS_WAITING,
    "llamacpp:kv_cache_usage_ratio": catalog.BACKEND_KV_CACHE_USAGE,
}
_NAMES = frozenset(SAMPLES)


def parse_models(body: bytes, round_: Round) -> list[Sample]:
    models = entries(json_object(body).get("data"), "data")
    first = models[0] if models and isinstance(models[0], dict) else {}
    round_.served_model = first.get("id") if isinstance(first.get("id"), str) else None
    return [Sample(catalog.BACKEND_MODELS_LOADED, (), float(len(models)))]


def parse_slots(body: bytes, round_: Round) -> list[Sample]:
    slots = [slot for slot in entries(json_value(body), "slots") if isinstance(slot, dict)]
    model = (round_.served_label,)
    samples = [
        Sample(catalog.BACKEND_SLOTS, model, float(len(slots))),
        Sample(catalog.BACKEND_SLOTS_BUSY, model, float(sum(slot.get("is_processing") is True for slot in slots))),
    ]
    contexts = [n for slot in slots if (n := number(slot.get("n_ctx"))) is not None]
    if contexts:
        samples.append(Sample(catalog.BACKEND_CONTEXT_SIZE, model, max(contexts)))
    return samples


def parse_metrics(body: bytes, round_: Round) -> list[Sample]:
    model = (round_.served_label,)
    return [Sample(SAMPLES[sample.name], model, value)
            for sample in promtext.samples(body, _NAMES) if (value := number(sample.value)) is not None]


ENDPOINTS = (Endpoint("/v1/models", parse_models), Endpoint("/slots", parse_slots),
             Endpoint("/metrics", parse_metrics))
