"""What the proxy reads from a request body: its top-level JSON fields, within bounded work.

The proxy needs a few small top-level fields (`model`, `stream`, `stream_options`, `user`,
`metadata`), never the prompt. A body up to INLINE_PARSE_BYTES is decoded whole with json.loads,
which is fastest there. A larger one (up to limits.max_request_bytes, 32 MiB by default) would
hold the event loop for a json.loads of hundreds of milliseconds, and decoding it in a thread does
not help: a single C call keeps the GIL. So a larger body is scanned in a worker thread by
`top_level_fields`, pure Python over C byte searches, which hands the GIL back to the event loop
every switch interval: it decodes only the top-level values of at most MAX_FIELD_BYTES and steps
over the rest (the messages) by their brackets and strings.

Whatever the body (not JSON, deeply nested, a list), the result is a dict or None, never an
exception: a body the family cannot read is passed through and counted with model "unknown".
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

INLINE_PARSE_BYTES = 64 * 1024
MAX_FIELD_BYTES = 64 * 1024  # a top-level value larger than this is stepped over, not decoded
MAX_KEY_BYTES = 1024  # a longer key is no field the proxy reads: its value is stepped over
_WHITESPACE = b" \t\r\n"
_SPACE = re.compile(rb"[ \t\r\n]*")
_BRACKET = re.compile(rb"[\[\]{}]")


Fields = dict[str, Any]
Spans = dict[str, tuple[int, int]]


async def read_fields(body: bytes) -> tuple[Fields | None, Spans | None]:
    """The body's top-level fields, None when it is not a JSON object; and for a large body, where
    each value lies (a small one is cheap to scan again when that is needed)."""
    if len(body) <= INLINE_PARSE_BYTES:
        return parse_small(body), None
    scanned = await asyncio.to_thread(top_level_fields, body)
    return scanned if scanned is not None else (None, None)


def parse_small(body: bytes) -> Fields | None:
    if not body:
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the interpreter's limit
        return None
    return value if isinstance(value, dict) else None


def top_level_fields(body: bytes) -> tuple[Fields, Spans] | None:
    """A JSON object's top-level values of at most MAX_FIELD_BYTES, decoded, and every key's value
    span (start, end) in `body`; None when `body` is not shaped like a JSON object.

    The values stepped over are not validated: a body malformed inside its messages still names
    its model (the upstream will answer it with its own error).
    """
    try:
        return _Scanner(body).object()
    except (ValueError, IndexError, RecursionError):
        return None


_SKIPPED = object()


class _Scanner:
    """One pass over a body; every step is a C search or a short Python step between two strings."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def object(self) -> tuple[Fields, Spans]:
        fields: Fields = {}
        spans: Spans = {}
        self._expect(b"{")
        if self._peek() == ord("}"):
            self.pos += 1
        else:
            while True:
                self._skip_whitespace()
                key_start, self.pos = self.pos, self._string_end(self.pos)
                key = self._decoded(key_start, self.pos, MAX_KEY_BYTES)
                self._expect(b":")
                self._skip_whitespace()
                start = self.pos
                self.pos = end = self._value_end(start)
                if isinstance(key, str):
                    spans[key] = (start, end)
                    fields.pop(key, None)  # a repeated key: the last one counts, as in json.loads
                    value = self._decoded(start, end, MAX_FIELD_BYTES)
                    if value is not _SKIPPED:
                        fields[key] = value
                separator = self._peek()
                self.pos += 1
                if separator == ord("}"):
                    break
                if separator != ord(","):
                    raise ValueError("expected , or }")
        self._skip_whitespace()
        if self.pos != len(self.data):
            raise ValueError("data after the object")
        return fields, spans

    def _decoded(self, start: int, end: int, limit: int) -> Any:
        if end - start > limit:
            return _SKIPPED
        try:
            return json.loads(self.data[start:end])
        except (ValueError, RecursionError):
            return _SKIPPED

    def _peek(self) -> int:
        self._skip_whitespace()
        return self.data[self.pos]

    def _expect(self, token: bytes) -> None:
        if self._peek() != token[0]:
            raise ValueError(f"expected {token!r}")
        self.pos += 1

    def _skip_whitespace(self) -> None:
        self.pos = _SPACE.match(self.data, self.pos).end()

    def _string_end(self, start: int) -> int:
        """The index after the string that starts at `start` (its opening quote)."""
        data = self.data
        if data[start] != ord('"'):
            raise ValueError("expected a string")
        pos = start + 1
        while True:
            quote = data.index(b'"', pos)
            backslashes = 0
            while data[quote - 1 - backslashes] == ord("\\"):
                backslashes += 1
            if backslashes % 2 == 0:
                return quote + 1
            pos = quote + 1

    def _value_end(self, start: int) -> int:
        """The index after the value at `start`: a string, an array or object, or a scalar."""
        data = self.data
        first = data[start]
        if first == ord('"'):
            return self._string_end(start)
        if first not in b"[{":  # a number, true, false or null ends at the next , or }
            ends = [i for i in (data.find(b",", start), data.find(b"}", start)) if i >= 0]
            if not ends:
                raise ValueError("unterminated value")
            return start + len(data[start:min(ends)].rstrip(_WHITESPACE))
        # Between two strings, brackets are counted by C searches; strings are stepped over whole.
        depth = 0
        pos = start
        while True:
            quote = data.find(b'"', pos)
            segment_end = quote if quote >= 0 else len(data)
            opened = data.count(b"[", pos, segment_end) + data.count(b"{", pos, segment_end)
            closed = data.count(b"]", pos, segment_end) + data.count(b"}", pos, segment_end)
            if depth + opened - closed <= 0:  # the value closes in this segment: find where
                for bracket in _BRACKET.finditer(data, pos, segment_end):
                    depth += 1 if bracket.group() in (b"[", b"{") else -1
                    if depth == 0:
                        return bracket.end()
            depth += opened - closed
            if quote < 0:
                raise ValueError("unterminated value")
            pos = self._string_end(quote)


def with_usage_option(body: bytes, spans: Spans | None, options: Any) -> bytes:
    """The body with stream_options.include_usage set, the rest of its bytes as the client sent
    them: the option is added after the opening brace, or the stream_options value replaced."""
    merged = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    # ASCII escapes: the client's own options may hold a lone surrogate it sent escaped ("\ud800").
    value = json.dumps(merged, separators=(",", ":")).encode()
    if spans is not None and "stream_options" in spans:
        start, end = spans["stream_options"]
        return body[:start] + value + body[end:]
    brace = body.index(b"{")
    rest = body[brace + 1:]
    separator = b"" if rest.strip(_WHITESPACE).startswith(b"}") else b","
    return body[:brace + 1] + b'"stream_options":' + value + separator + rest
