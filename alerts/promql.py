"""Small PromQL builders, so every rule spells selectors, rates and ratios the same way."""

from __future__ import annotations

from prometheus_client.utils import floatToGoString

from exporter.catalog import MetricSpec


def selector(*matchers: str) -> str:
    """`{a="b",c=~"d"}` from matcher strings, skipping empty ones."""
    return "{" + ",".join(m for m in matchers if m) + "}"


def series(metric: MetricSpec | str, *matchers: str, suffix: str = "") -> str:
    """A metric's series name (counters get _total) followed by its selector."""
    name = metric if isinstance(metric, str) else metric.series
    return name + suffix + selector(*matchers)


def by(labels: tuple[str, ...]) -> str:
    return "by (" + ", ".join(labels) + ")"


def sum_rate(vector: str, window: str, labels: tuple[str, ...]) -> str:
    return f"sum {by(labels)} (rate({vector}[{window}]))"


def zero_filled_ratio(numerator: str, denominator: str) -> str:
    """numerator / denominator, and 0 (not "no data") where the numerator has no series yet.

    A counter of failures only exists after the first failure; without the fill a dashboard shows
    a gap instead of 0% and a ratio alert cannot tell "no failures" from "no traffic".
    """
    return f"(\n  {numerator}\nor\n  0 * {denominator}\n)\n/\n{denominator}"


def le(bound: float) -> str:
    """A bucket boundary exactly as prometheus-client writes it into the `le` label."""
    return floatToGoString(bound)


def quantile_name(q: float) -> str:
    """0.95 -> "p95", 0.5 -> "p50", 0.999 -> "p999" (record names cannot hold a dot)."""
    return "p" + f"{q * 100:g}".replace(".", "")


def number(value: float) -> str:
    """A threshold as PromQL and descriptions show it: 0.05, 100, 1073741824 (no 1e+09)."""
    return f"{value:.12g}" if abs(value) < 1e12 else repr(value)
