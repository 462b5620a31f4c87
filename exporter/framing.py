"""Incremental framing of streamed response bodies: SSE events, NDJSON lines, JSON array elements.

Fed chunks as they arrive, whatever their boundaries; memory stays bounded by the largest event
(at most MAX_EVENT_BYTES), never by the length of the stream. An event larger than that is
skipped, not buffered: events that carry usage or the first token are small. The result never
depends on where the chunks were cut: a line longer than the limit (counted up to its LF) is
skipped, with the whole SSE event it belongs to, whether it arrived in one chunk or in many
(tests/test_framing_properties.py checks this with hypothesis).
"""

from __future__ import annotations

import re
import zlib

MAX_EVENT_BYTES = 1024 * 1024
# Bounds on inflating a compressed response for the tap (Decoder): per chunk, and in total.
# An upstream read is at most 256 KiB, so a legitimate chunk fits with a compression ratio of 16.
MAX_CHUNK_INFLATED = 4 * 1024 * 1024
MAX_INFLATED = 256 * 1024 * 1024


class _Lines:
    """The LF-terminated lines of a byte stream, whatever its chunking.

    A line longer than the limit (counted up to its LF) comes out once as None, whether it
    arrived whole or in pieces, and is never buffered past the limit.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._pending = bytearray()  # the incomplete last line
        self._skipping = False  # the current line passed the limit before its end: drop its rest

    def feed(self, chunk: bytes) -> list[bytes | None]:
        lines: list[bytes | None] = []
        pending = self._pending
        pending += chunk
        start = 0
        limit = self._limit
        while (end := pending.find(b"\n", start)) >= 0:
            if self._skipping:
                self._skipping = False  # the end of a line already reported as too long
            else:
                lines.append(bytes(pending[start:end]) if end - start <= limit else None)
            start = end + 1
        del pending[:start]
        if len(pending) > limit:
            pending.clear()
            if not self._skipping:
                lines.append(None)
            self._skipping = True
        return lines

    def close(self) -> bytes | None:
        """The last line when the stream ended without its LF; None if there is none to keep."""
        rest = bytes(self._pending) if self._pending and not self._skipping else None
        self._pending.clear()
        self._skipping = False
        return rest


class SseFramer:
    """Server-sent events (text/event-stream): yields the data of each complete event.

    Lines end in LF, CRLF or CR alone, as the spec allows (a CRLF split across two chunks is one
    line end); `data:` lines of one event are joined with LF as the spec says; comments and other
    fields are ignored. An event's name is not needed: every family's JSON data names its own type.
    """

    def __init__(self, limit: int = MAX_EVENT_BYTES) -> None:
        self._limit = limit
        self._lines = _Lines(limit)
        self._data: list[bytes] = []  # data lines of the event being read
        self._size = 0
        self._oversized = False  # the current event passed the limit: skip it
        self._after_cr = False  # the last chunk ended in CR: an LF starting the next one belongs to it

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._after_cr or b"\r" in chunk:  # C searches: most streams hold no CR at all
            chunk = self._lf_only(chunk)
        events: list[bytes] = []
        for line in self._lines.feed(chunk):
            if line is None:
                self._oversized = True  # a line too long: its whole event is skipped
            else:
                self._line(line, events)
        return events

    def _lf_only(self, chunk: bytes) -> bytes:
        """CRLF and CR line ends as LF, whatever the chunking."""
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._after_cr = chunk.endswith(b"\r")
        return chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

    def _line(self, line: bytes, events: list[bytes]) -> None:
        if not line:
            if self._data and not self._oversized:
                events.append(b"\n".join(self._data))
            self._data, self._size, self._oversized = [], 0, False
        elif line.startswith(b"data:"):
            value = line[6:] if line.startswith(b"data: ") else line[5:]
            self._size += len(value)
            if self._size > self._limit:
                self._oversized = True
            if not self._oversized:
                self._data.append(value)

    def close(self) -> list[bytes]:
        """A stream may end without the final blank line; its last event still counts."""
        events: list[bytes] = []
        rest = self._lines.close()
        if rest is not None:
            self._line(rest, events)
        self._line(b"", events)
        return events


class NdjsonFramer:
    """Newline-delimited JSON (Ollama): one event per non-empty line."""

    def __init__(self, limit: int = MAX_EVENT_BYTES) -> None:
        self._lines = _Lines(limit)

    def feed(self, chunk: bytes) -> list[bytes]:
        return [event for line in self._lines.feed(chunk) if line is not None and (event := line.strip())]

    def close(self) -> list[bytes]:
        rest = self._lines.close()
        event = rest.strip() if rest is not None else b""
        return [event] if event else []


_JSON_SPECIAL = re.compile(rb'[\[\]{}"\\]')


class JsonArrayFramer:
    """The elements of a JSON array as it streams (Gemini's streamGenerateContent without alt=sse).

    Yields each top-level object of the array (or the one top-level object of a body that is
    not an array) as soon as its closing brace arrives, without decoding anything: only brackets,
    braces, quotes and backslashes are looked at. An element larger than the limit is skipped,
    not buffered; as in the other framers, the result does not depend on the chunking.
    """

    def __init__(self, limit: int = MAX_EVENT_BYTES) -> None:
        self._limit = limit
        self._depth = 0
        self._base: int | None = None  # the depth at which elements start: 1 in an array, 0 if not
        self._in_string = False
        self._escaped = False  # the previous chunk ended in a backslash inside a string
        self._element = bytearray()  # the element being read, up to the end of the last chunk
        self._reading = False  # inside an element
        self._oversized = False  # the current element passed the limit: skip it

    def feed(self, chunk: bytes) -> list[bytes]:
        elements: list[bytes] = []
        start = 0 if self._reading else None  # where the current element starts in this chunk
        skip = 0
        if self._escaped:
            self._escaped, skip = False, 1
        for match in _JSON_SPECIAL.finditer(chunk, skip):
            at = match.start()
            if at < skip:
                continue  # the byte after a backslash
            byte = chunk[at]
            if self._in_string:
                if byte == 0x5C:  # backslash: the next byte is escaped, maybe in the next chunk
                    skip = at + 2
                    self._escaped = skip > len(chunk)
                elif byte == 0x22:
                    self._in_string = False
            elif byte == 0x22:
                self._in_string = True
            elif byte in b"[{":
                if self._base is None:
                    self._base = 1 if byte == 0x5B else 0
                if self._depth == self._base and byte == 0x7B:
                    self._reading, start = True, at
                    self._element.clear()
                    self._oversized = False
                self._depth += 1
            else:  # ] or }
                self._depth = max(self._depth - 1, 0)
                if self._reading and self._depth == self._base:
                    self._append(chunk[start:at + 1])
                    if not self._oversized:
                        elements.append(bytes(self._element))
                    self._reading, start = False, None
                    self._element.clear()
        if self._reading and start is not None:
            self._append(chunk[start:])
        return elements

    def _append(self, data: bytes) -> None:
        if self._oversized:
            return
        if len(self._element) + len(data) > self._limit:
            self._oversized = True
            self._element.clear()
        else:
            self._element += data

    def close(self) -> list[bytes]:
        """An element cut off by the end of the stream is incomplete: nothing to yield."""
        self._element.clear()
        return []


class InflateLimit(Exception):
    """A compressed response inflates past the tap's bounds: its usage is not read."""


class Decoder:
    """Undoes a response's Content-Encoding for the tap's copy; the client gets the bytes as sent.

    Inflation is bounded, so a compression bomb costs the proxy neither memory nor event-loop
    time: one chunk may inflate to at most MAX_CHUNK_INFLATED bytes (a few milliseconds of work),
    a whole response to at most MAX_INFLATED bytes; past either InflateLimit is raised and the
    tap stops reading (the client still gets every byte as sent).
    """

    def __init__(self, content_encoding: str) -> None:
        encoding = content_encoding.strip().lower()
        self._inflated = 0
        if encoding in ("", "identity"):
            self._zlib = None
        elif encoding in ("gzip", "x-gzip", "deflate"):
            # 47 = 32 + 15: zlib detects a gzip or zlib header itself.
            self._zlib = zlib.decompressobj(47)
            self._raw_deflate_fallback = encoding == "deflate"
        else:
            raise ValueError(f"unsupported content-encoding {content_encoding!r}")

    def decode(self, chunk: bytes) -> bytes:
        if self._zlib is None:
            return chunk
        try:
            data = self._zlib.decompress(chunk, MAX_CHUNK_INFLATED + 1)
        except zlib.error:
            # Some servers send "deflate" as a raw deflate stream without the zlib header.
            if self._raw_deflate_fallback and not self._zlib.unused_data:
                self._zlib = zlib.decompressobj(-15)
                self._raw_deflate_fallback = False
                return self.decode(chunk)
            raise
        self._inflated += len(data)
        if len(data) > MAX_CHUNK_INFLATED or self._zlib.unconsumed_tail or self._inflated > MAX_INFLATED:
            raise InflateLimit
        return data


# --- OpenAI: hide the usage the proxy asked for ------------------------------------------------

_EVENT_END = re.compile(rb"\r?\n\r?\n")
_NULL_USAGE = re.compile(rb',\s*"usage"\s*:\s*null|"usage"\s*:\s*null\s*,?')


class StreamUsageHider:
    """Removes from an OpenAI stream what stream_options.include_usage added to it.

    The proxy asks for usage on the client's behalf; a client that had not asked gets the
    stream it would have got: the usage-only chunk (empty `choices`) dropped, and the
    `"usage":null` that every other chunk then carries taken out. Complete events pass on as
    soon as their terminating blank line arrives; only an incomplete event is held back.
    """

    def __init__(self, limit: int = MAX_EVENT_BYTES) -> None:
        self._limit = limit
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk if self._pending else chunk
        end = _last_event_end(data)
        if end < 0:
            if len(data) > self._limit:  # too big to be a usage chunk: let it through
                self._pending = b""
                return data
            self._pending = data
            return b""
        self._pending = data[end:]
        return self._rewrite(data[:end])

    def close(self) -> bytes:
        rest, self._pending = self._pending, b""
        return self._rewrite(rest) if rest else b""

    @staticmethod
    def _rewrite(events: bytes) -> bytes:
        """Every chunk carries `"usage":null`, so this runs on each; it keeps to C-speed byte
        searches, and splits events (in Python) only where the usage-only chunk can be."""
        if b'"usage"' not in events:
            return events
        if b'_tokens"' not in events:  # no usage-only chunk here: only the nulls to take out
            events = events.replace(b',"usage":null', b"")  # OpenAI's own spelling, the common case
            return _NULL_USAGE.sub(b"", events) if b'"usage"' in events else events
        kept = []
        start = 0
        ends = [m.end() for m in _EVENT_END.finditer(events)]
        for end in ends + ([len(events)] if not ends or ends[-1] < len(events) else []):
            event, start = events[start:end], end
            if b'_tokens"' in event and b'"choices":[]' in event.replace(b" ", b""):
                continue  # the usage-only chunk
            kept.append(_NULL_USAGE.sub(b"", event))
        return b"".join(kept)


def _last_event_end(data: bytes) -> int:
    """The index just past the last blank line in `data` (the end of an event), or -1.

    A blank line is two line ends in a row (LF or CRLF each), so it always ends in LF preceded
    by LF or by LF CR: two reverse searches in C instead of a regex scanning every byte, which
    made this the slowest step of a large stream.
    """
    lf_lf = data.rfind(b"\n\n")
    lf_crlf = data.rfind(b"\n\r\n")
    return max(lf_lf + 2 if lf_lf >= 0 else -1, lf_crlf + 3 if lf_crlf >= 0 else -1)
