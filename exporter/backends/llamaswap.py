"""llama-swap: /running (the models it has running: {"running": [{"model", "state", ...}]}) and
/v1/models (the models it can start). Formats from llama-swap's proxymanager."""

from __future__ import annotations

from exporter import catalog
from exporter.backends.reading import Endpoint, Round, Sample, entries, json_object


def parse_running(body: bytes, round_: Round) -> list[Sample]:
    running = entries(json_object(body).get("running"), "running")
    ready = [entry for entry in running if isinstance(entry, dict) and entry.get("state", "ready") == "ready"]
    return [Sample(catalog.BACKEND_MODELS_LOADED, (), float(len(ready)))]


def parse_models(body: bytes, round_: Round) -> list[Sample]:
    models = entries(json_object(body).get("data"), "data")
    return [Sample(catalog.BACKEND_MODELS_AVAILABLE, (), float(len(models)))]


ENDPOINTS = (Endpoint("/running", parse_running), Endpoint("/v1/models", parse_models))
