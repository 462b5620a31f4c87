"""Samples of a backend's own Prometheus exposition (vLLM, llama.cpp --metrics), read with
prometheus-client's parser."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample as PromSample

from exporter.backends.reading import Unreadable


def samples(body: bytes, names: frozenset[str]) -> Iterator[PromSample]:
    """The samples whose names are in `names`; an unparseable text fails the read."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable("not UTF-8") from None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in names:
                    yield sample
    except (ValueError, TypeError, IndexError) as exc:
        raise Unreadable(f"not the Prometheus text format: {exc}") from None
