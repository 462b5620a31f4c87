"""/metrics rendered fast: the same bytes as prometheus-client's encoders, a fraction of the time.

At 100 models x every API family the catalog has tens of thousands of series, and
prometheus-client's own encoders take long over them (docs/benchmarks.md, text and OpenMetrics,
which Prometheus asks for): `collect()` builds a Sample tuple and a label dict per line, then every
label name is validated and every value escaped again on every scrape. Here the label part of each
line is built once per child (label values never change) and values are read from the children
directly, so a scrape costs about one string format per line. The bytes are the library's own:
tests/test_exposition.py compares them.

Only the catalog's metric objects take this path, and only in single-process mode (multiprocess
mode reads the workers' files through prometheus-client). If a prometheus-client release changes
the internals read here (`_metrics`, `_value`, `_buckets` and their `_exemplar`, `_sum`, `_count`,
`_created`), the renderer notices at start and every metric goes through the library's encoder
instead.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import prometheus_client.metrics
from prometheus_client import Counter, Gauge, Histogram, Summary
from prometheus_client.exposition import generate_latest as text_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.utils import floatToGoString

_EOF = "# EOF\n"


def _number(value: float) -> str:
    """floatToGoString, with Python's repr where the two agree (finite values below 1e6)."""
    if -math.inf < value < 1e6:
        return repr(value)
    return floatToGoString(value)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    """The {...} part of a line: labels sorted by name, as both of the library's encoders write."""
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in sorted(pairs))
    return "{" + inner + "}" if inner else ""


class _Only:
    """A registry-like view of one collector, for the library's encoders."""

    def __init__(self, collector) -> None:
        self._collector = collector

    def collect(self):
        return self._collector.collect()


def _created_enabled() -> bool:
    return getattr(prometheus_client.metrics, "_use_created", True)


class _Family:
    """One catalog metric: its header lines and, per child, the label strings of its lines."""

    def __init__(self, metric) -> None:
        self.metric = metric
        described = metric.describe()[0]
        self.name, self.kind = described.name, described.type
        self.labelnames: tuple[str, ...] = tuple(metric._labelnames)
        # Header lines from the library itself, so help texts are escaped exactly as it does.
        empty = _Headers(described)
        self.text_header = text_latest(empty).decode()
        self.om_header = openmetrics_latest(empty).decode().removesuffix(_EOF)
        self.text_created_header = (f"# HELP {self.name}_created {_escape_help(described.documentation)}\n"
                                    f"# TYPE {self.name}_created gauge\n")
        self.bounds: list[str] = ([floatToGoString(b) for b in metric._upper_bounds]
                                  if self.kind == "histogram" else [])
        self._cache: dict[tuple[str, ...], tuple[str, list[str], str]] = {}

    def children(self) -> list[tuple[tuple[str, ...], object]]:
        if not self.labelnames:
            return [((), self.metric)]
        with self.metric._lock:
            return list(self.metric._metrics.items())

    def parts(self, values: tuple[str, ...], child) -> tuple[str, list[str], str]:
        """(label string, label strings of the buckets with `le`, created value) of one child."""
        cached = self._cache.get(values)
        if cached is None:
            pairs = list(zip(self.labelnames, values))
            buckets = [_labels(pairs + [("le", bound)]) for bound in self.bounds]
            created = floatToGoString(child._created) if hasattr(child, "_created") else ""
            cached = self._cache[values] = (_labels(pairs), buckets, created)
        return cached

    def render(self, out: list[str], openmetrics: bool) -> None:
        name, kind = self.name, self.kind
        use_created = _created_enabled() and kind != "gauge"
        out.append(self.om_header if openmetrics else self.text_header)
        created_lines: list[str] = []
        for values, child in self.children():
            labels, bucket_labels, created = self.parts(values, child)
            if kind == "counter":
                out.append(f"{name}_total{labels} {_number(child._value.get())}\n")
            elif kind == "gauge":
                out.append(f"{name}{labels} {_number(child._value.get())}\n")
            elif kind == "histogram":
                total = 0.0
                for bucket, bucket_label in zip(child._buckets, bucket_labels):
                    total += bucket.get()
                    exemplar = bucket._exemplar if openmetrics else None
                    tail = _exemplar(exemplar) if exemplar else ""
                    out.append(f"{name}_bucket{bucket_label} {_number(total)}{tail}\n")
                out.append(f"{name}_count{labels} {_number(total)}\n")
                if child._upper_bounds[0] >= 0:
                    out.append(f"{name}_sum{labels} {_number(child._sum.get())}\n")
            else:  # summary
                out.append(f"{name}_count{labels} {_number(child._count.get())}\n")
                out.append(f"{name}_sum{labels} {_number(child._sum.get())}\n")
            if use_created:
                line = f"{name}_created{labels} {created}\n"
                (out if openmetrics else created_lines).append(line)
        if created_lines:  # the text format puts them in a gauge family of their own, at the end
            out.append(self.text_created_header)
            out += created_lines


def _exemplar(exemplar) -> str:
    """` # {labels} value timestamp` after a bucket line (OpenMetrics only), as the library writes it."""
    labels = ",".join(f'{name}="{_escape(value)}"' for name, value in sorted(exemplar.labels.items()))
    stamp = "" if exemplar.timestamp is None else f" {exemplar.timestamp}"
    return f" # {{{labels}}} {floatToGoString(exemplar.value)}{stamp}"


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


class _Headers:
    """A collector yielding a metric family without samples: the library renders its header."""

    def __init__(self, described) -> None:
        self._described = described

    def collect(self):
        family = type(self._described)(self._described.name, self._described.documentation,
                                       self._described.type, self._described.unit)
        return [family]


class Renderer:
    """Renders a list of collectors in registration order; the catalog's metrics take the fast path."""

    def __init__(self, collectors: list) -> None:
        self._parts: list[_Family | _Only] = []
        for collector in collectors:
            fast = isinstance(collector, (Counter, Gauge, Histogram, Summary)) and _supported(collector)
            self._parts.append(_Family(collector) if fast else _Only(collector))

    def render(self, openmetrics: bool) -> bytes:
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, _Family):
                part.render(out, openmetrics)
            elif openmetrics:
                out.append(openmetrics_latest(part).decode().removesuffix(_EOF))
            else:
                out.append(text_latest(part).decode())
        if openmetrics:
            out.append(_EOF)
        return "".join(out).encode()


def _supported(metric) -> bool:
    """The internals this module reads are there (else the library's encoder is used)."""
    return _INTERNALS_OK and not metric.describe()[0].unit


def _probe_internals() -> bool:
    """Check once, on throwaway metrics, that prometheus-client still has what render() reads.

    Not in multiprocess mode: there the renderer is not used, and the throwaway metrics' values
    would be written to the shared files and scraped as a `probe` metric.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return False
    try:
        counter = Counter("probe", "probe", ["a"], registry=None)
        gauge = Gauge("probe", "probe", ["a"], registry=None)
        histogram = Histogram("probe", "probe", ["a"], registry=None, buckets=(1.0,))
        summary = Summary("probe", "probe", ["a"], registry=None)
        children = [m.labels("x") for m in (counter, gauge, histogram, summary)]
        return (
            all(hasattr(m, "_metrics") and hasattr(m, "_lock") and hasattr(m, "_labelnames")
                for m in (counter, gauge, histogram, summary))
            and hasattr(children[0], "_value") and hasattr(children[1], "_value")
            and all(hasattr(children[2], a) for a in ("_buckets", "_sum", "_upper_bounds"))
            and hasattr(children[2]._buckets[0], "_exemplar")
            and hasattr(histogram, "_upper_bounds")
            and all(hasattr(children[3], a) for a in ("_count", "_sum"))
        )
    except Exception:
        return False


_INTERNALS_OK = _probe_internals()
