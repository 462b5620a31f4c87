"""What a parser makes of one endpoint's answer: samples of the catalog's backend metrics."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.catalog import MODEL_UNKNOWN, MetricSpec
from exporter.labels import ModelLabels

# Entries of one list in an answer (models, slots, running processes); a longer list is not a
# backend's real state but a hostile or broken answer, and the whole read fails.
MAX_ENTRIES = 1000


class Unreadable(ValueError):
    """The answer is not what the endpoint's format says: the read fails and counts an error."""


@dataclass(frozen=True)
class Sample:
    spec: MetricSpec
    labels: tuple[str, ...]  # the values of spec.labels after `upstream`
    value: float


class Round:
    """One collection round of one upstream: the bounded model labels, and what earlier
    endpoints of the round learned (llama.cpp names its model in /v1/models, not in /slots)."""

    def __init__(self, models: ModelLabels) -> None:
        self._models = models
        self.served_model: str | None = None

    def model(self, name: Any) -> str:
        """The `model` label of a name from a backend: bounded and made safe like the proxy's."""
        return self._models.label(name if isinstance(name, str) else None)

    @property
    def served_label(self) -> str:
        return self.model(self.served_model) if self.served_model else MODEL_UNKNOWN


Parser = Callable[[bytes, Round], list[Sample]]


@dataclass(frozen=True)
class Endpoint:
    """A state endpoint of a kind of backend: its path (the `endpoint` label) and its parser."""

    path: str
    parse: Parser


def json_value(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than Python allows
        raise Unreadable(f"not JSON: {exc}") from None


def json_object(body: bytes) -> dict[str, Any]:
    value = json_value(body)
    if not isinstance(value, dict):
        raise Unreadable("not a JSON object")
    return value


def entries(value: Any, what: str) -> list[Any]:
    """A list from an answer, at most MAX_ENTRIES long (a missing list: empty)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise Unreadable(f"{what} is not a list")
    if len(value) > MAX_ENTRIES:
        raise Unreadable(f"{what} has more than {MAX_ENTRIES} entries")
    return value


def number(value: Any) -> float | None:
    """A finite, non-negative number from an answer (JSON allows huge integers; bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        result = float(value)
    except OverflowError:
        return None
    return result if math.isfinite(result) and result >= 0 else None
