"""Samples of a backend's own Prometheus exposition (vLLM, llama.cpp --metrics), read with
prometheus-client's parser.

Only the lines of the wanted samples are parsed: the collectors run on the event loop, and a
backend's whole exposition (vLLM's histograms per model) would take the parser tens to hundreds
of milliseconds (about 0.3 s per MiB), during which no request moves. Picking the lines by their
first bytes is a C-speed scan; a broken line of a sample we do not read no longer matters.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample as PromSample

from exporter.backends.reading import Unreadable


def samples(body: bytes, names: frozenset[str]) -> Iterator[PromSample]:
    """The samples whose names are in `names`; an unparseable line of theirs fails the read."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable("not UTF-8") from None
    prefixes = tuple(names)
    wanted = "".join(line + "\n" for line in text.split("\n") if line.startswith(prefixes))
    try:
        for family in text_string_to_metric_families(wanted):
            for sample in family.samples:
                if sample.name in names:
                    yield sample
    except (ValueError, TypeError, IndexError) as exc:
        raise Unreadable(f"not the Prometheus text format: {exc}") from None
