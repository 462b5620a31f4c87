"""A lean HTTP/1.1 client for plain-HTTP upstreams: asyncio protocol + httptools' C parser.

Self-hosted backends (llama.cpp, Ollama, vLLM) sit next to the proxy on plain HTTP, where the
proxy's own time is what a client notices. aiohttp spends 80 to 140 us of CPU on a request and,
after the process has sat idle for a few milliseconds (between a stream's chunks, between a
user's requests), several hundred more: its request path is long and runs from cold caches on a
shared machine. This client does one write per request and one parse per read, and keeps the
time to first byte near a bare TCP relay's (docs/benchmarks.md). TLS, HTTP proxies and HEAD
requests stay with aiohttp (exporter.upstream_client decides which client serves a request).

One connection carries one request at a time; finished connections wait in a LIFO pool per
origin for at most IDLE_SECONDS, below the 5-second keep-alive of uvicorn-based backends, and a
request whose reused connection was closed by the server before any response byte arrived is
sent again once on a new connection (the server never read it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

import httptools

from exporter import catalog
from exporter.upstream_error import UpstreamError

IDLE_SECONDS = 4.0  # a pooled connection older than this is closed instead of reused
# Bytes read from an upstream socket before the proxy has passed them on; beyond it reading
# pauses, so a slow client holds back a fast upstream instead of filling memory (both clients).
READ_BUFFER_BYTES = 256 * 1024


def request_head(method: str, target: str, host: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The request line and headers as aiohttp sends them: Host first, then the given headers,
    Content-Length when there is a body or the method usually has one."""
    lines = [f"{method} {target} HTTP/1.1".encode("latin-1"), b"Host: " + host]
    for name, value in headers:
        lines.append(name + b": " + value)
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: %d" % len(body))
    # No line break can be in a name or value: the client's come parsed by the server, the
    # upstream's key is checked at start-up (exporter.config).
    return b"\r\n".join(lines) + b"\r\n\r\n"


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an upstream; parses responses as they arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.used = False  # has carried a request before: a close before any byte may be a stale keep-alive
        self.pooled = False  # waiting in the pool, between two requests
        self.idle_timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.headers_complete = False
        self.message_complete = False
        self.keep_alive = False
        self.received_any = False
        self.until_close = False  # neither Content-Length nor chunked: the body ends with the connection
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.pooled:  # nothing was asked: an unsolicited answer (a 408 before a close) ends it
            self.transport.close()
            return
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = exc
            self.transport.close()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.headers_complete and self.until_close and exc is None:
            self.message_complete = True
        elif not self.message_complete and self.error is None:
            self.error = exc or ConnectionResetError("the upstream closed the connection")
        self._wake()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.message_complete:  # a second answer to one request: never reuse this connection
            self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.message_complete:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.message_complete:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim response (100 Continue, 103 Early Hints): skip it
            self.headers = []
            return
        self.status = status
        self.headers_complete = True
        lowered = {name.lower(): value for name, value in self.headers}
        chunked = b"chunked" in lowered.get(b"transfer-encoding", b"").lower()
        has_body = status not in (204, 304)
        self.until_close = has_body and not chunked and b"content-length" not in lowered

    def on_body(self, body: bytes) -> None:
        if self.message_complete:
            return
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > READ_BUFFER_BYTES and not self.paused:
            self.paused = True
            self.transport.pause_reading()  # the client reads slower than the upstream sends

    def on_message_complete(self) -> None:
        if self.headers_complete and not self.message_complete:
            self.message_complete = True
            # Asked here: once the callback returns the parser is reset for the next message.
            self.keep_alive = self.parser.should_keep_alive()

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

    def reusable(self) -> bool:
        return self.message_complete and self.keep_alive and not self.lost


class Http1Response:
    """A response whose headers are in and whose body is read with chunks(); close() it always."""

    def __init__(self, pool: Http1Pool, origin: tuple[str, int], connection: _Connection, idle: float) -> None:
        self._pool = pool
        self._origin = origin
        self._connection = connection
        self._idle = idle
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
                raise UpstreamError(catalog.ERROR_READ, connection.error)
            else:
                await connection.wait(self._idle)

    def close(self) -> None:
        """Back to the pool after a complete body; a connection left mid-body is closed instead."""
        connection = self._connection
        if connection.reusable() and not connection.body:
            self._pool.release(self._origin, connection)
        elif not connection.lost:
            connection.transport.close()


class Http1Pool:
    """Keep-alive connections per (host, port), reused last-in first-out."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def open(
        self, origin: tuple[str, int], request_head: bytes, body: bytes, connect_timeout: float, idle: float,
    ) -> Http1Response:
        """Send a request (its head already serialised); the response once its headers are in."""
        data = request_head + body if len(body) < 65_536 else None  # one write for the usual request
        while True:
            connection = self._reused(origin) or await self._connect(origin, connect_timeout)
            if data is not None:
                connection.transport.write(data)
            else:
                connection.transport.writelines((request_head, body))
            try:
                while not connection.headers_complete:
                    if connection.error is not None:
                        raise UpstreamError(catalog.ERROR_READ, connection.error)
                    await connection.wait(idle)
            except UpstreamError as exc:
                connection.transport.close()
                if exc.error_type == catalog.ERROR_TIMEOUT:
                    raise
                if connection.used and not connection.received_any:
                    continue  # a stale keep-alive connection the server had closed: it never saw the request
                raise UpstreamError(catalog.ERROR_CONNECT, exc.cause) from None  # no answer at all
            except BaseException:
                connection.transport.close()  # cancelled: the request is abandoned
                raise
            return Http1Response(self, origin, connection, idle)

    def _reused(self, origin: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.idle_timer is not None:
                connection.idle_timer.cancel()
                connection.idle_timer = None
            if not connection.lost and not connection.transport.is_closing():
                connection.pooled = False
                connection._reset()
                return connection
        return None

    async def _connect(self, origin: tuple[str, int], timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(_Connection, origin[0], origin[1])
        except TimeoutError as exc:
            raise UpstreamError(catalog.ERROR_CONNECT, exc) from None
        except OSError as exc:
            raise UpstreamError(catalog.ERROR_CONNECT, exc) from None
        return connection

    def release(self, origin: tuple[str, int], connection: _Connection) -> None:
        connection.used = connection.pooled = True
        idle = self._idle.setdefault(origin, [])
        connection.idle_timer = asyncio.get_running_loop().call_later(IDLE_SECONDS, self._expire, idle, connection)
        idle.append(connection)

    @staticmethod
    def _expire(idle: list[_Connection], connection: _Connection) -> None:
        idle.remove(connection)
        connection.transport.close()

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                if connection.idle_timer is not None:
                    connection.idle_timer.cancel()
                connection.transport.close()
        self._idle.clear()
