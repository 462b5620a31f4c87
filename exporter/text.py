"""Strings from clients and upstreams, made safe where they enter a label, a row or a log line.

A model name, a user or a response model is whatever a client or an upstream chose to send. One
lone surrogate (JSON allows "\\ud800") cannot be encoded as UTF-8, so it used to break every later
scrape of /metrics and the request log's writer. Here every such string becomes valid Unicode
without control characters, and short: lone surrogates and control characters (C0, DEL, C1 and
the line and paragraph separators, which end lines in some readers) are replaced by U+FFFD,
invalid UTF-8 is decoded the same way, and the length is capped. The result is accepted by both
Prometheus exposition formats, SQLite, JSON and the access log. The common case, a short
printable ASCII name, costs a length check and two C-level scans and returns the string itself.
"""

from __future__ import annotations

import re

LABEL_CHARS = 128  # a metric label value: every series repeats it in every scrape
FIELD_CHARS = 256  # a request-log column or an access-log field
REPLACEMENT = "\ufffd"

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def safe(value: str | bytes, limit: int = FIELD_CHARS) -> str:
    """`value` as at most `limit` characters of valid, printable Unicode (bytes decoded as UTF-8)."""
    if isinstance(value, (bytes, bytearray)):
        # A UTF-8 character is at most 4 bytes: nothing past limit * 4 bytes can survive the cap.
        value = bytes(value[:limit * 4]).decode("utf-8", "replace")
    if len(value) <= limit and value.isascii() and value.isprintable():
        return value
    return _UNSAFE.sub(REPLACEMENT, value[:limit])


def safe_optional(value: str | bytes | None, limit: int = FIELD_CHARS) -> str | None:
    """safe(value), and None for None."""
    return None if value is None else safe(value, limit)
