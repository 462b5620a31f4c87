"""A lean HTTP/1.1 client for plain-HTTP upstreams: asyncio protocol + httptools' C parser.

Self-hosted backends (llama.cpp, Ollama, vLLM) sit next to the proxy on plain HTTP, where the
proxy's own time is what a client notices. This client does one write per request and one parse
per read, and keeps the time to first byte near a bare TCP relay's (docs/benchmarks.md has the
figures against aiohttp and httpx). One Http1Client serves one upstream for every method; TLS,
HTTP proxies and URL credentials go to exporter.upstream.httpx_client instead.

One connection carries one request at a time; finished connections wait in a LIFO pool for at
most IDLE_SECONDS, below the 5-second keep-alive of uvicorn-based backends.

A request is sent exactly once. A pooled connection is taken only when it is provably still
idle and open: not lost or closing, and the kernel reports nothing readable on its socket (no
EOF, reset or stray byte); otherwise it is closed and the next one, or a new connection, is
tried, before anything is written. Once the request is written it may have reached the upstream
(an LLM call is billed when it arrives), so any failure after that is the caller's 502 and the
request is never sent again: `connect` when no byte of an answer came, else `read`, `timeout`
or `protocol`. A server closing a kept-alive connection in the instant between that check and
the write costs one 502, never a second call.

Responses are read as RFC 9112 says: 1xx interim answers are skipped and 101 is refused; an
answer to HEAD, 204 and 304 have no body whatever their framing headers say; Transfer-Encoding
wins over Content-Length (the connection is then not reused and Content-Length is not passed
on), and it frames the body only when chunked is the final coding, else the body ends with the
connection; trailer fields are read and dropped, and never change framing or reuse. Everything
the upstream sends is bounded: MAX_HEAD_BYTES and MAX_HEADERS per head (and again for the
trailer section), MAX_HEAD_BYTES for any run of bytes that completes nothing (a line that never
ends), READ_BUFFER_BYTES for body not yet passed on. A malformed or oversized answer is
UpstreamError(protocol) and its connection is closed.
"""

from __future__ import annotations

import asyncio
import select
from collections import deque
from collections.abc import AsyncIterator

import httptools

from exporter import catalog
from exporter.config import Timeouts
from exporter.origin import Origin
from exporter.upstream import MAX_HEAD_BYTES, MAX_HEADERS, UpstreamError

IDLE_SECONDS = 4.0  # a pooled connection older than this is closed instead of reused
# Bytes read from an upstream socket before the proxy has passed them on; beyond it reading
# pauses, so a slow client holds back a fast upstream instead of filling memory.
READ_BUFFER_BYTES = 256 * 1024
# Anything readable on an idle pooled socket (EOF, reset, a stray byte) makes it unfit to reuse.
_STALE = select.POLLIN | select.POLLPRI | select.POLLRDHUP | select.POLLHUP | select.POLLERR

# How the body of a response ends (RFC 9112 6.3).
_NO_BODY, _LENGTH, _CHUNKED, _CLOSE = range(4)


class ProtocolViolation(Exception):
    """The upstream's answer is not HTTP/1.1 the client accepts (the cause of an error `protocol`)."""


def request_head(method: str, target: str, host: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The request line and headers: Host first, then the given headers, Content-Length when
    there is a body or the method usually has one."""
    lines = [f"{method} {target} HTTP/1.1".encode("latin-1"), b"Host: " + host]
    for name, value in headers:
        lines.append(name + b": " + value)
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: %d" % len(body))
    # No line break can be in a name or value: the client's come parsed by the server, the
    # upstream's key is checked at start-up (exporter.config).
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _framing(status: int, headers: list[tuple[bytes, bytes]]) -> tuple[int, bool]:
    """How the body ends, and whether both Transfer-Encoding and Content-Length were sent."""
    codings: list[bytes] = []
    length = False
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            codings.extend(coding.strip().lower() for coding in value.split(b","))
        elif lowered == b"content-length":
            length = True
    if status in (204, 304):
        return _NO_BODY, False
    if codings:
        return (_CHUNKED if codings[-1] == b"chunked" else _CLOSE), length
    return (_LENGTH if length else _CLOSE), False


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an upstream; parses responses as they arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.pooled = False  # waiting in the pool, between two requests
        self.idle_timer: asyncio.TimerHandle | None = None
        self.poller = select.poll()
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        # Transfer-Encoding with Content-Length (in the head or a trailer) is no parse error:
        # Transfer-Encoding wins, as RFC 9112 6.3 says, and the head's Content-Length is dropped.
        self.parser.set_dangerous_leniencies(lenient_chunked_length=True)
        self.headers: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.headers_complete = False
        self.message_complete = False
        self.keep_alive = False
        self.received_any = False
        self.head_only = False  # the request was HEAD: its answer has no body (RFC 9112 6.3)
        self.framing = _NO_BODY
        self.chunk_seen = False  # the parser has framed a chunk: it reads the body as chunked too
        self.fields = 0  # header (then trailer) fields so far, and their bytes
        self.field_bytes = 0
        self.stalled = 0  # bytes read since the parser last completed a head, a body piece or the message
        self.progress = False
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.error: UpstreamError | None = None
        self.waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.poller.register(transport.get_extra_info("socket").fileno(), _STALE)

    def data_received(self, data: bytes) -> None:
        if self.pooled or self.message_complete:  # nothing asked, or the answer is whole: never parsed
            self.keep_alive = False
            self.transport.close()
            return
        self.received_any = True
        self.progress = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._refuse(exc.__context__ if isinstance(exc.__context__, ProtocolViolation) else exc)
        else:
            self.stalled = 0 if self.progress else self.stalled + len(data)
            if self.stalled > MAX_HEAD_BYTES:
                self._refuse(ProtocolViolation(f"over {MAX_HEAD_BYTES} bytes without the end of a line"))
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.message_complete or self.error is not None:
            pass
        elif self.headers_complete and self.framing == _CLOSE and exc is None:
            self.message_complete = True
        else:
            cause = exc or ConnectionResetError("the upstream closed the connection")
            self.error = UpstreamError(catalog.ERROR_READ, cause)
        self._wake()

    def _refuse(self, cause: BaseException) -> None:
        self.error = UpstreamError(catalog.ERROR_PROTOCOL, cause)
        self.keep_alive = False
        self.transport.close()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.message_complete:  # a second answer to one request: never reuse this connection
            self.keep_alive = False

    def on_status(self, status: bytes) -> None:
        self._count(0, len(status) + 15)  # "HTTP/1.1 200 " and CRLF around the reason phrase

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(1, len(name) + len(value) + 4)
        if not self.headers_complete:  # else a trailer field: read and dropped
            self.headers.append((name, value.rstrip(b" \t")))

    def _count(self, fields: int, size: int) -> None:
        self.fields += fields
        self.field_bytes += size
        if self.fields > MAX_HEADERS or self.field_bytes > MAX_HEAD_BYTES:
            raise ProtocolViolation(f"a head over {MAX_HEADERS} fields or {MAX_HEAD_BYTES} bytes")

    def on_headers_complete(self) -> None:
        if self.headers_complete:
            return
        status = self.parser.get_status_code()
        if status == 101 or not 100 <= status <= 599:  # a protocol switch nobody asked for, or no status
            raise ProtocolViolation(f"status {status}")
        if status < 200:  # an interim response (100 Continue, 103 Early Hints): skip it
            self.headers = []
            return
        if not self.parser.get_http_version().startswith("1."):
            raise ProtocolViolation(f"HTTP/{self.parser.get_http_version()}")
        self.status = status
        self.headers_complete = self.progress = True
        self.fields = self.field_bytes = 0  # trailers get a budget of their own
        # Asked now: trailer fields must not change it later.
        self.keep_alive = self.parser.should_keep_alive()
        self.framing, both = _framing(status, self.headers)
        if both:  # RFC 9112 6.3: Transfer-Encoding wins, Content-Length is dropped, no reuse
            self.keep_alive = False
            self.headers = [(name, value) for name, value in self.headers if name.lower() != b"content-length"]
        if self.head_only:  # complete now; the parser, which cannot be told, is replaced before reuse
            self.framing = _NO_BODY
            self.message_complete = True

    def on_chunk_header(self) -> None:
        if self.framing != _CHUNKED:  # the parser reads chunks where these rules read none
            raise ProtocolViolation("Transfer-Encoding the parser reads otherwise")
        self.chunk_seen = True

    def on_body(self, body: bytes) -> None:
        if self.message_complete:  # bytes after an answer to HEAD: never reuse this connection
            self.keep_alive = False
            return
        if self.framing == _CHUNKED and not self.chunk_seen:
            raise ProtocolViolation("Transfer-Encoding the parser reads otherwise")
        self.progress = True
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > READ_BUFFER_BYTES and not self.paused:
            self.paused = True
            self.transport.pause_reading()  # the client reads slower than the upstream sends

    def on_message_complete(self) -> None:
        if self.headers_complete and not self.message_complete:
            self.message_complete = self.progress = True

    # the reader's side

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, idle: float) -> None:
        """Until more has arrived or the connection ended; UpstreamError(timeout) after `idle` seconds."""
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(idle):
                await self.waiter
        except TimeoutError as exc:
            raise UpstreamError(catalog.ERROR_TIMEOUT, exc) from None
        finally:
            self.waiter = None

    def take(self) -> bytes | None:
        """The body bytes received so far, or None when there are none."""
        if not self.body:
            return None
        chunk = self.body.popleft() if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        self.buffered = 0
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        return chunk

    def failure(self) -> UpstreamError:
        """The error that ended this response, raised afresh."""
        return UpstreamError(self.error.error_type, self.error.cause)

    def reusable(self) -> bool:
        return self.message_complete and self.keep_alive and not self.lost

    def idle_and_open(self) -> bool:
        """Fit to carry a request: open, and nothing (EOF, reset, a byte) waiting on its socket."""
        return not self.lost and not self.transport.is_closing() and not self.poller.poll(0)


class Http1Response:
    """A response whose headers are in and whose body is read with chunks(); close() it always."""

    def __init__(self, client: Http1Client, connection: _Connection) -> None:
        self._client = client
        self._connection = connection
        self.status: int = connection.status
        self.raw_headers: tuple[tuple[bytes, bytes], ...] = tuple(connection.headers)

    def header(self, name: str) -> str:
        wanted = name.lower().encode("latin-1")
        for key, value in self.raw_headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return ""

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, transfer coding removed, content coding kept."""
        connection = self._connection
        while True:
            chunk = connection.take()
            if chunk is not None:
                yield chunk
            elif connection.message_complete:
                return
            elif connection.error is not None:
                raise connection.failure()
            else:
                await connection.wait(self._client.idle)

    async def close(self) -> None:
        """Back to the pool after a complete body; a connection left mid-body is closed instead."""
        connection = self._connection
        if connection.reusable() and not connection.body:
            self._client.release(connection)
        elif not connection.lost:
            connection.transport.close()


class Http1Client:
    """An UpstreamClient for one plain-HTTP origin: keep-alive connections reused last-in first-out."""

    def __init__(self, origin: Origin, timeouts: Timeouts) -> None:
        self._address = (origin.host, origin.port)
        self._host = origin.host_header
        self._connect_timeout = timeouts.connect
        self.idle = timeouts.idle  # longest wait for the head, or between two pieces of the body
        self._pooled: list[_Connection] = []

    async def open(self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Http1Response:
        """Send a request, once; the response once its headers are in."""
        head = request_head(method, target, self._host, headers, body)
        connection = self._reused() or await self._connect()
        connection.head_only = method == "HEAD"
        # From here on the request may reach the upstream: whatever happens, it is not sent again.
        if len(body) < 65_536:
            connection.transport.write(head + body)  # one write for the usual request
        else:
            connection.transport.writelines((head, body))
        try:
            while not connection.headers_complete:
                if connection.error is not None:
                    raise connection.failure()
                await connection.wait(self.idle)
        except UpstreamError as exc:
            connection.transport.close()
            if exc.error_type == catalog.ERROR_READ:  # the connection ended before the head did:
                # no answer at all is a connect error, an answer cut inside its head a malformed one
                kind = catalog.ERROR_PROTOCOL if connection.received_any else catalog.ERROR_CONNECT
                raise UpstreamError(kind, exc.cause) from None
            raise
        except BaseException:
            connection.transport.close()  # cancelled: the request is abandoned
            raise
        return Http1Response(self, connection)

    def _reused(self) -> _Connection | None:
        pooled = self._pooled
        while pooled:
            connection = pooled.pop()
            if connection.idle_timer is not None:
                connection.idle_timer.cancel()
                connection.idle_timer = None
            if connection.idle_and_open():
                connection.pooled = False
                connection._reset()
                return connection
            connection.transport.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(_Connection, *self._address)
        except (TimeoutError, OSError) as exc:
            raise UpstreamError(catalog.ERROR_CONNECT, exc) from None
        return connection

    def release(self, connection: _Connection) -> None:
        connection.pooled = True
        connection.idle_timer = asyncio.get_running_loop().call_later(IDLE_SECONDS, self._expire, connection)
        self._pooled.append(connection)

    def _expire(self, connection: _Connection) -> None:
        self._pooled.remove(connection)
        connection.transport.close()

    async def close(self) -> None:
        for connection in self._pooled:
            if connection.idle_timer is not None:
                connection.idle_timer.cancel()
            connection.transport.close()
        self._pooled.clear()
