"""The usage tap: reads a copy of a response as it streams past, never holding it whole.

It notes when the first generated content arrived, the usage the backend reported and the model
that answered. Streams are framed incrementally (SSE or NDJSON, by the response's content type);
a plain JSON body is decoded at its end, or, when it is too big to keep, its usage is read from
its tail. JSON is decoded only where a cheap byte search says it can matter.
"""

from __future__ import annotations

import json
import time
from typing import Any

from exporter.families import ApiFamily
from exporter.framing import Decoder, InflateLimit, NdjsonFramer, SseFramer
from exporter.observation import Usage
from exporter.text import safe_optional

# A non-streamed body up to this size is decoded whole (json.loads holds the event loop for about
# 2 ms per MiB); beyond it only its tail is kept, where every family puts its usage.
MAX_JSON_BODY_BYTES = 1024 * 1024
TAIL_BYTES = 64 * 1024


class UsageTap:
    def __init__(self, family: ApiFamily, content_type: str, content_encoding: str) -> None:
        self.family = family
        self.usage = Usage()
        self.first_content_at: float | None = None  # time.monotonic() of the first content
        self.response_model: str | None = None
        content_type = content_type.lower()
        if "text/event-stream" in content_type:
            self._framer: SseFramer | NdjsonFramer | None = SseFramer()
        elif "ndjson" in content_type:
            self._framer = NdjsonFramer()
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
            self.usage.merge(usage)

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
            decoded = _loads(body)
            if decoded is None:
                return
            self.response_model = safe_optional(_model_of(decoded))
        else:  # exactly the last TAIL_BYTES, so the result does not depend on how the body was cut
            decoded = _keys_from_tail(body[-TAIL_BYTES:], self.family.usage_keys)
        usage = self.family.usage(decoded)
        if usage is not None:
            self.usage.merge(usage)


def _loads(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the interpreter allows
        return None
    return value if isinstance(value, dict) else None


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
