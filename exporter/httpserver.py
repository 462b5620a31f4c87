"""uvicorn's HTTP/1.1 protocol with a bound on the request head (limits.max_header_bytes).

uvicorn's httptools protocol keeps reading a request line or header for as long as a client sends
one: an endless header grows the process's memory without bound. h11 has a limit of its own
(uvicorn's h11_max_incomplete_event_size); this subclass applies the same number to httptools,
which `llm-exporter serve` uses for speed: a request whose head (request line and headers) is
larger, or still incomplete after that many bytes, gets 431 Request Header Fields Too Large and
the connection is closed; nothing of it reaches the app.

The limit travels in uvicorn's Config (h11_max_incomplete_event_size), so the class itself is
plain and importable by name, as uvicorn's worker processes need.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("uvicorn.error")

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # uvicorn without httptools: h11 enforces the limit itself
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

DEFAULT_HEAD_LIMIT = 64 * 1024
_MESSAGE = b"request line and headers are larger than the server's limit"
_RESPONSE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: " + str(len(_MESSAGE)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _MESSAGE
)


class _HeadTooLarge(Exception):
    """Raised from the parser's callback to stop parsing a request whose head is too large."""


if HttpToolsProtocol is not None:

    class BoundedHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc,valid-type]
        """httptools, with requests whose head passes the limit refused with 431."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._head_limit = self.config.h11_max_incomplete_event_size or DEFAULT_HEAD_LIMIT
            self._reading_head = True  # between messages and until a message's headers are complete
            self._head_bytes = 0
            self._refused = False
            self._head_too_large = False

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._reading_head:
                self._head_bytes += len(data)
            super().data_received(data)  # a complete head over the limit: see send_400_response
            # A head still incomplete after this many bytes: refused before it grows any further.
            # (Checked after parsing: a read that holds a whole head and part of a body is fine.)
            if self._reading_head and self._head_bytes > self._head_limit:
                self._refuse()

        def _refuse(self) -> None:
            self._refused = True
            if not self.transport.is_closing():
                logger.warning("Request head larger than %d bytes refused with 431.", self._head_limit)
                self.transport.write(_RESPONSE)
                self.transport.close()

        def on_headers_complete(self) -> None:
            self._reading_head = False
            # The head's size: request target and headers (what a read count cannot tell apart
            # from the body bytes that came in the same read).
            size = len(self.url)
            for name, value in self.headers:
                size += len(name) + len(value) + 4
            if size > self._head_limit:
                self._head_too_large = True
                raise _HeadTooLarge  # httptools stops parsing; uvicorn answers with send_400_response
            super().on_headers_complete()

        def send_400_response(self, msg: str) -> None:
            if self._head_too_large:
                self._refuse()
            else:
                super().send_400_response(msg)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._reading_head = True
            self._head_bytes = 0


def http_protocol():
    """The protocol class for uvicorn.Config(http=...): bounded httptools, else h11."""
    return BoundedHttpToolsProtocol if HttpToolsProtocol is not None else "h11"
