"""The `model` label, kept bounded: a client must not be able to grow the series count, nor
break the exposition with what it writes (exporter.text makes each name safe and short)."""

from __future__ import annotations

from fnmatch import fnmatchcase

from exporter.catalog import MODEL_OTHER, MODEL_UNKNOWN
from exporter.text import LABEL_CHARS, safe


class ModelLabels:
    """Names matching a configured pattern keep their name; so do the first `limit` others seen.

    Every later name is counted as "other"; a request without a model as "unknown".
    """

    def __init__(self, limit: int, patterns: tuple[str, ...] = ()) -> None:
        self._limit = limit
        self._patterns = patterns
        self._admitted: set[str] = set()
        self._seen: dict[str, str] = {}  # name -> label, for names already decided

    def label(self, model: str | None) -> str:
        if not model:
            return MODEL_UNKNOWN
        model = safe(model, LABEL_CHARS)
        label = self._seen.get(model)
        if label is None:
            label = self._decide(model)
        return label

    def _decide(self, model: str) -> str:
        if any(fnmatchcase(model, pattern) for pattern in self._patterns):
            label = model
        elif len(self._admitted) < self._limit:
            self._admitted.add(model)
            label = model
        else:
            return MODEL_OTHER  # not remembered: the memory of refused names must stay bounded too
        self._seen[model] = label
        return label
