"""uvicorn's HTTP/1.1 protocol with bounds on the request head: its size and its time.

uvicorn's httptools protocol keeps reading a request line or header for as long as a client sends
one: an endless header grows the process's memory without bound. h11 has a limit of its own
(uvicorn's h11_max_incomplete_event_size); this subclass applies the same number to httptools,
which `llm-exporter serve` uses for speed: a request whose head (request line and headers) is
larger, or still incomplete after that many bytes, gets 431 Request Header Fields Too Large and
the connection is closed; nothing of it reaches the app.

A head must also be complete within limits.request_head_timeout_seconds of its first byte (or of
the connection's start): a client sending a byte a second, or nothing, gets 408 Request Timeout
and the connection is closed, so slow clients cannot hold the server's file descriptors for long.
(uvicorn closes connections idle between two requests after its keep-alive timeout.)

A request target that is not a path (absolute-form `http://host/p`, which httptools reduces to
`/p`, authority-form, `*`) is kept whole in the scope's raw_path, so the proxy refuses it
(exporter.proxy) whichever parser read it.

The limits travel in uvicorn's Config (h11_max_incomplete_event_size, and an attribute
`request_head_timeout` set by `configure`), so the class itself is plain and importable by name,
as uvicorn's worker processes need.
"""

from __future__ import annotations

import asyncio
import logging

import httptools

logger = logging.getLogger("uvicorn.error")

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # uvicorn without httptools: h11 enforces the limit itself
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

DEFAULT_HEAD_LIMIT = 64 * 1024
DEFAULT_HEAD_TIMEOUT = 10.0


def _refusal(status: bytes, message: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(message)).encode() + b"\r\nconnection: close\r\n\r\n" + message
    )


_TOO_LARGE = _refusal(b"431 Request Header Fields Too Large", b"request line and headers are larger than the server's limit")
_TOO_SLOW = _refusal(b"408 Request Timeout", b"request line and headers did not arrive within the server's time limit")


def configure(config, head_limit: int, head_timeout: float) -> None:
    """Put the head limits into a uvicorn Config (it is pickled into worker processes)."""
    config.h11_max_incomplete_event_size = head_limit
    config.request_head_timeout = head_timeout


class _HeadTooLarge(Exception):
    """Raised from the parser's callback to stop parsing a request whose head is too large."""


if HttpToolsProtocol is not None:

    class BoundedHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc,valid-type]
        """httptools, with requests whose head passes the limit refused with 431."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._head_limit = self.config.h11_max_incomplete_event_size or DEFAULT_HEAD_LIMIT
            self._head_timeout = getattr(self.config, "request_head_timeout", DEFAULT_HEAD_TIMEOUT)
            self._head_timer: asyncio.TimerHandle | None = None
            self._reading_head = True  # between messages and until a message's headers are complete
            self._head_bytes = 0
            self._refused = False
            self._head_too_large = False

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._start_head_timer()  # a connection that never sends a byte is timed out too

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._reading_head:
                self._head_bytes += len(data)
                self._start_head_timer()
            super().data_received(data)  # a complete head over the limit: see send_400_response
            # A head still incomplete after this many bytes: refused before it grows any further.
            # (Checked after parsing: a read that holds a whole head and part of a body is fine.)
            if self._reading_head and self._head_bytes > self._head_limit:
                self._refuse(_TOO_LARGE, "Request head larger than %d bytes refused with 431.", self._head_limit)

        def _start_head_timer(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

        def _stop_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self._reading_head and self._head_bytes:
                self._refuse(_TOO_SLOW, "Request head not complete after %.0f s: refused with 408.", self._head_timeout)
            elif self._reading_head and self.cycle is None:  # never sent a byte: close quietly
                self._refused = True
                self.transport.close()

        def _refuse(self, response: bytes, message: str, *args: object) -> None:
            self._refused = True
            self._stop_head_timer()
            if not self.transport.is_closing():
                logger.warning(message, *args)
                self.transport.write(response)
                self.transport.close()

        def on_headers_complete(self) -> None:
            self._reading_head = False
            self._stop_head_timer()
            # The head's size: request target and headers (what a read count cannot tell apart
            # from the body bytes that came in the same read).
            size = len(self.url)
            for name, value in self.headers:
                size += len(name) + len(value) + 4
            if size > self._head_limit:
                self._head_too_large = True
                raise _HeadTooLarge  # httptools stops parsing; uvicorn answers with send_400_response
            target = self.url
            if not target.startswith(b"/"):  # not origin-form: the proxy answers 400 (and counts it)
                try:
                    httptools.parse_url(target)  # absolute-form: its path names the API family
                except httptools.HttpParserInvalidURLError:
                    self.url = b"/"  # authority-form and the like: uvicorn would refuse it uncounted
            super().on_headers_complete()
            if not target.startswith(b"/") and self.scope.get("raw_path") is not None:
                self.scope["raw_path"] = target

        def send_400_response(self, msg: str) -> None:
            if self._head_too_large:
                self._refuse(_TOO_LARGE, "Request head larger than %d bytes refused with 431.", self._head_limit)
            else:
                super().send_400_response(msg)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._reading_head = True
            self._head_bytes = 0


def http_protocol():
    """The protocol class for uvicorn.Config(http=...): bounded httptools, else h11."""
    return BoundedHttpToolsProtocol if HttpToolsProtocol is not None else "h11"
