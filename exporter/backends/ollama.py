"""Ollama: /api/ps (models loaded, their memory and expiry) and /api/tags (models available).

Formats: docs.ollama.com/api/ps and /api/tags. `size` is all the memory a loaded model takes,
`size_vram` the part in GPU memory; `expires_at` is RFC 3339 with up to nanoseconds.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from exporter import catalog
from exporter.backends.reading import Endpoint, Round, Sample, Unreadable, entries, json_object, number

# RFC 3339 with a fraction of up to 9 digits: Python's datetime reads at most 6.
_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)")


def timestamp(value: Any) -> float | None:
    """Unix seconds of an RFC 3339 time, None when it is not one (or before 1970: no expiry)."""
    match = _STAMP.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    try:
        stamp = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone)).timestamp()
    except ValueError:
        return None
    stamp += float(fraction) if fraction else 0.0
    return stamp if stamp > 0 else None


def parse_ps(body: bytes, round_: Round) -> list[Sample]:
    models = entries(json_object(body).get("models"), "models")
    samples = [Sample(catalog.BACKEND_MODELS_LOADED, (), float(len(models)))]
    for entry in models:
        if not isinstance(entry, dict):
            continue
        model = round_.model(entry.get("name") or entry.get("model"))
        for memory, key in ((catalog.MEMORY_TOTAL, "size"), (catalog.MEMORY_VRAM, "size_vram")):
            if (size := number(entry.get(key))) is not None:
                samples.append(Sample(catalog.BACKEND_MODEL_MEMORY, (model, memory), size))
        if (expiry := timestamp(entry.get("expires_at"))) is not None:
            samples.append(Sample(catalog.BACKEND_MODEL_EXPIRY, (model,), expiry))
    return samples


def parse_tags(body: bytes, round_: Round) -> list[Sample]:
    models = json_object(body).get("models")
    if models is not None and not isinstance(models, list):  # only counted: any length
        raise Unreadable("models is not a list")
    return [Sample(catalog.BACKEND_MODELS_AVAILABLE, (), float(len(models or [])))]


ENDPOINTS = (Endpoint("/api/ps", parse_ps), Endpoint("/api/tags", parse_tags))
