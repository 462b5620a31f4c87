"""The usage tap: reads a copy of a response as it streams past, never holding it whole.

It notes when the first generated content arrived, the usage the backend reported and the model
that answered. Streams are framed incrementally (SSE or NDJSON by the response's content type, a
streamed JSON array where the family says so); a plain JSON body is decoded at its end, or, when
it is too big to keep, its usage is read from its tail. JSON is decoded only where a cheap byte
search says it can matter.

A response may carry several usage reports: one result's reports supersede each other (they
count up), different results' reports add up (a prompt list, n > 1; a JSON array of results).
With n > 1 (`copies`) every copy's report counts the shared prompt again, while the backend
read it once: when several results report, the prompt counts are divided by n.
"""

from __future__ import annotations

import json
import time
from typing import Any

from exporter.families import ApiFamily
from exporter.framing import Decoder, InflateLimit, JsonArrayFramer, NdjsonFramer, SseFramer
from exporter.observation import Usage
from exporter.text import safe_optional

# A non-streamed body up to this size is decoded whole (json.loads holds the event loop for as long
# as the body is big); beyond it only its tail is kept, where every family puts its usage.
MAX_JSON_BODY_BYTES = 1024 * 1024
TAIL_BYTES = 64 * 1024
# Results tracked one by one; reports of further results are added as they come.
MAX_RESULTS = 1024


class UsageTap:
    def __init__(self, family: ApiFamily, content_type: str, content_encoding: str, copies: int = 1) -> None:
        self.family = family
        self._copies = copies  # results per prompt (the request's n)
        self._untracked_reports = 0
        self._results: dict[int, Usage] = {}  # the latest report of each result
        self._untracked = Usage()  # reports of results of their own, and past MAX_RESULTS
        self.first_content_at: float | None = None  # time.monotonic() of the first content
        self.response_model: str | None = None
        self.ended = False  # the stream's final event went past
        content_type = content_type.lower()
        if "text/event-stream" in content_type:
            self._framer: SseFramer | NdjsonFramer | JsonArrayFramer | None = SseFramer()
        elif "ndjson" in content_type:
            self._framer = NdjsonFramer()
        elif family.json_array_stream and "json" in content_type:
            self._framer = JsonArrayFramer()
        else:
            self._framer = None
        self._json_body = self._framer is None and "json" in content_type
        self._body = bytearray()
        self._body_overflowed = False
        try:
            self._decoder: Decoder | None = Decoder(content_encoding)
        except ValueError:
            self._decoder = None  # an encoding we cannot read: pass through, count no usage
        self._broken = False
        self.inflate_limited = False  # a compressed body inflated past framing's bounds: usage not read

    @property
    def usage(self) -> Usage:
        """Every result's usage added up."""
        total = Usage()
        for usage in (*self._results.values(), self._untracked):
            total.add(usage)
        if self._copies > 1 and len(self._results) + self._untracked_reports > 1:
            for name in ("input", "cached_input", "cache_write_input"):
                if (count := getattr(total, name)) is not None:
                    setattr(total, name, round(count / self._copies))
        return total

    def _report(self, event: dict[str, Any], usage: Usage) -> None:
        result = self.family.result_of(event)
        if result is None or (result not in self._results and len(self._results) >= MAX_RESULTS):
            self._untracked.add(usage)
            self._untracked_reports += 1
        elif result in self._results:
            self._results[result].merge(usage)
        else:
            self._results[result] = usage

    def feed(self, chunk: bytes) -> None:
        if self._decoder is None or self._broken or not chunk:
            return
        try:
            data = self._decoder.decode(chunk)
            if self._framer is not None:
                for event in self._framer.feed(data):
                    self._event(event)
            elif self._json_body:
                self._collect(data)
        except InflateLimit:
            self.inflate_limited = True
            self._broken = True
        except Exception:  # a corrupt encoding or odd JSON must never break the client's stream
            self._broken = True

    def close(self) -> None:
        """The response ended: read what is left."""
        if self._decoder is None or self._broken:
            return
        try:
            if self._framer is not None:
                for event in self._framer.close():
                    self._event(event)
            elif self._json_body and self._body:
                self._read_body()
        except Exception:
            self._broken = True

    # --- streams ---

    def _event(self, data: bytes) -> None:
        family = self.family
        if family.ends_stream(data):
            self.ended = True
        carries_usage = any(marker in data for marker in family.usage_markers)
        if not carries_usage and self.first_content_at is not None:
            return  # the hot path: nothing left to learn from this event
        event = _loads(data)
        if event is None:
            return
        if self.response_model is None:
            self.response_model = safe_optional(_model_of(event))
        if self.first_content_at is None and family.has_content(event):
            self.first_content_at = time.monotonic()
        if carries_usage and (usage := family.usage(event)) is not None:
            self._report(event, usage)

    # --- whole JSON bodies ---

    def _collect(self, data: bytes) -> None:
        body = self._body
        body += data
        if len(body) > MAX_JSON_BODY_BYTES:
            del body[:-TAIL_BYTES]
            self._body_overflowed = True
        elif self._body_overflowed and len(body) > 2 * TAIL_BYTES:
            del body[:-TAIL_BYTES]

    def _read_body(self) -> None:
        body = bytes(self._body)
        self._body.clear()
        if not self._body_overflowed:
            # llama.cpp answers a prompt list with a JSON array, one object per result
            results = [r for r in _loads_any(body) if isinstance(r, dict)]
            if not results:
                return
            self.response_model = safe_optional(_model_of(results[0]))
        else:  # exactly the last TAIL_BYTES, so the result does not depend on how the body was cut
            results = [_keys_from_tail(body[-TAIL_BYTES:], self.family.usage_keys)]
        for result in results:
            if (usage := self.family.usage(result)) is not None:
                self._report(result, usage)


def _decoded(data: bytes) -> Any:
    """The JSON value, or None: not JSON, or nested deeper than the interpreter allows."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def _loads(data: bytes) -> dict[str, Any] | None:
    value = _decoded(data)
    return value if isinstance(value, dict) else None


def _loads_any(data: bytes) -> list[Any]:
    """A JSON body as a list of values: an array's elements, or the one value."""
    value = _decoded(data)
    return value if isinstance(value, list) else [value]


def _model_of(body: dict[str, Any]) -> str | None:
    """The answering model: top level (OpenAI, Ollama, llama.cpp) or inside message/response."""
    for holder in (body, body.get("message"), body.get("response")):
        if isinstance(holder, dict) and isinstance(holder.get("model"), str):
            return holder["model"]
    return None


def _keys_from_tail(tail: bytes, keys: tuple[str, ...]) -> dict[str, Any]:
    """Top-level values read from the end of a JSON body too big to keep.

    A key in quotes followed by a colon can only be a key: inside JSON strings quotes are
    escaped. The last occurrence is taken, since usage closes the bodies of every family.
    """
    found: dict[str, Any] = {}
    decoder = json.JSONDecoder()
    text = tail.decode("utf-8", errors="replace")
    for key in keys:
        at = text.rfind(f'"{key}":')
        if at < 0:
            continue
        start = at + len(key) + 3
        while start < len(text) and text[start] in " \t\r\n":
            start += 1
        try:
            found[key], _ = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            continue
    return found
