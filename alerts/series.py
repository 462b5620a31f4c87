"""Input series for the promtool unit tests, written as a real scrape of the exporter sees them.

Series notation: promtool's expanding notation, one sample per minute ("0+5x3" = 0 5 10 15).

Sample 0 comes before any traffic; a series appears when the exporter first exports it, holding
everything counted by then. When that is depends on the exporter itself, so it is asked
(`exported_at_first_request`): the real metrics object counts one request and is scraped. A
counter it creates at 0 for every new (upstream, model, api) is born with the first request of its
labels and counts its own first increment; one created by its first increment is born holding it,
and rate() never sees that increment.
"""

from __future__ import annotations

from functools import cache

from prometheus_client.parser import text_string_to_metric_families

from exporter import catalog
from exporter.catalog import MetricSpec
from exporter.metrics import Metrics
from exporter.observation import Observation, Usage

from alerts import promql

JOB = "llm-exporter"
BASE = {"job": JOB, "instance": "exporter:8080"}
U, M, A, C, T = catalog.UPSTREAM, catalog.MODEL, catalog.API, catalog.CODE, catalog.TYPE
CHAT = "openai_chat"


def counter(*segments: tuple[float, int]) -> str:
    """A counter starting at 0; each (increase per minute, minutes) segment adds that many samples.

    For series that are not the exporter's (Prometheus' and Alertmanager's own counters); the
    exporter's go through `exported`.
    """
    return born(0, _increments(segments))


def _increments(segments) -> list[float]:
    """Per sample, what the minute before it added: sample 0 (before any traffic) adds nothing."""
    out = [0.0]
    for step, minutes in segments:
        out += [step] * max(minutes, 0)
    return out


def born(birth: int, increments: list[float]) -> str:
    """No sample before `birth`, then the running total of `increments` (runs of equal steps)."""
    total = sum(increments[: birth + 1])
    parts = [f"_x{birth}"] if birth else []
    parts.append(_n(total))
    i = birth + 1
    while i < len(increments):
        step, run = increments[i], 1
        while i + run < len(increments) and increments[i + run] == step:
            run += 1
        parts.append(_n(total + step) if run == 1 else f"{_n(total + step)}+{_n(step)}x{run - 1}")
        total += step * run
        i += run
    return " ".join(parts)


@cache
def exported_at_first_request(metric: MetricSpec, labels: tuple[tuple[str, str], ...]) -> bool:
    """Does the exporter export this series once a request of its upstream, model and api has
    been seen? Asked of the real metrics: one request (a 200 with usage, no cost, not a stream),
    then a scrape."""
    values = dict(labels)
    probe = Metrics()
    probe.observe(Observation(
        request_id="probe", ts=0.0, upstream=values.get(U, "u"), api=values.get(A, CHAT),
        model="probe", model_label=values.get(M, "m"), stream=False, request_bytes=1,
        status_code=200, duration_seconds=1.0, usage=Usage(input=1, output=1),
    ))
    name = metric.series if metric.kind == "counter" else metric.name + "_count"
    own = {k: v for k, v in values.items() if k in metric.labels}
    text = probe.exposition(None)[0].decode()
    return any(sample.name == name and sample.labels.items() >= own.items()
               for family in text_string_to_metric_families(text) for sample in family.samples)


def _birth(metric: MetricSpec, labels: dict[str, str], increments: list[float],
           first_request: int) -> int | None:
    """The sample a scrape first sees the series at: the first request of its labels if the
    exporter exports it from then on, else its own first increment (None: never)."""
    own_first = next((i for i, step in enumerate(increments) if step), None)
    if not exported_at_first_request(metric, tuple(sorted(labels.items()))):
        return own_first
    if own_first is not None and own_first < first_request:
        raise ValueError(f"{metric.name}{labels}: increments before the first request at {first_request}")
    return first_request


def exported(metric: MetricSpec, labels: dict[str, str], segments, first_request: int = 1) -> dict | None:
    """A counter of the exporter as scraped; None when a scrape never sees it."""
    increments = _increments(segments)
    birth = _birth(metric, labels, increments, first_request)
    return None if birth is None else series(metric.series, labels, born(birth, increments))


def gauge(*segments: tuple[float, int]) -> str:
    """A gauge holding each (value, minutes) segment; None for minutes without a sample."""
    return " ".join(
        (f"_x{minutes}" if value is None else f"{_n(value)}+0x{minutes - 1}")
        for value, minutes in segments
    )


def _n(value: float) -> str:
    return f"{value:.12g}"


def series(name: str, labels: dict[str, str], values: str) -> dict:
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{label_text}}}", "values": values}


def histogram(metric: MetricSpec, labels: dict[str, str],
              *segments: tuple[dict[float, float], int], first_request: int = 1) -> list[dict]:
    """Bucket, count and sum series of a catalog histogram fed per minute with {value: count}.

    All of them are born together (one child), when the exporter first exports the histogram."""
    increments = _increments((sum(p.values()), m) for p, m in segments)
    birth = _birth(metric, labels, increments, first_request)
    if birth is None:
        return []
    bounds = [*(metric.buckets or ()), float("inf")]
    out = []
    for bound in bounds:
        le = "+Inf" if bound == float("inf") else promql.le(bound)
        steps = [(sum(n for v, n in per_minute.items() if v <= bound), minutes)
                 for per_minute, minutes in segments]
        out.append(series(metric.name + "_bucket", {**labels, "le": le}, born(birth, _increments(steps))))
    out.append(series(metric.name + "_count", labels, born(birth, increments)))
    out.append(series(metric.name + "_sum", labels, born(
        birth, _increments((sum(v * n for v, n in p.items()), m) for p, m in segments))))
    return out


def requests(labels: dict[str, str], *segments: tuple[float, int], first_request: int = 1) -> dict | None:
    """llm_requests_total of one code, its (upstream, model, api) first requested at `first_request`."""
    return exported(catalog.REQUESTS, {**BASE, A: CHAT, **labels}, segments, first_request)


def exporter_counter(metric: MetricSpec, labels: dict[str, str], *segments: tuple[float, int],
                     first_request: int = 1) -> dict | None:
    """Any other counter of the exporter (tokens, cost, usage missing), as scraped."""
    return exported(metric, {**BASE, **labels}, segments, first_request)
