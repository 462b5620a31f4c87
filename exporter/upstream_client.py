"""The connection pools to the upstreams, behind one small interface.

Plain-HTTP upstreams (self-hosted backends beside the proxy, where its overhead shows) go through
exporter.http1, a lean client on httptools; HTTPS upstreams, upstreams behind an HTTP proxy
(HTTP_PROXY / HTTPS_PROXY) and HEAD requests go through aiohttp, which owns TLS and proxies.

Why not httpx, the client DESIGN.md names: on this project's benchmark (bench/clients.py,
docs/benchmarks.md) one request cost 550 to 900 us of CPU in httpx's client, more with more
concurrent requests (its pool polls every pooled socket for each request), against 80 to 140 us
in aiohttp and 25 to 90 us in exporter.http1. httpx with an aiohttp transport still cost 250 to
350 us: httpx's own request and response models are the difference.

The proxy sees only this module's interface: `UpstreamPool.open()` returns a response with
`status`, `raw_headers`, `header()`, `chunks()` and `close()`, or raises `UpstreamError` with
the `error_type` label value of llm_upstream_errors_total.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from exporter import catalog
from exporter.http1 import MAX_HEADERS, READ_BUFFER_BYTES, Http1Pool, Http1Response, request_head
from exporter.origin import Origin
from exporter.upstream_error import UpstreamError

__all__ = ["RequestTimeouts", "UpstreamError", "UpstreamPool", "UpstreamResponse"]

# Only what the proxy sets is sent: no User-Agent, Accept or Content-Type of aiohttp's own.
_SKIP_AUTO_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})
# aiohttp bounds each line of a head, not the whole: at most MAX_HEADERS lines of this many bytes.
_AIOHTTP_LINE_BYTES = 8190


@dataclass(frozen=True)
class RequestTimeouts:
    connect: float  # seconds to open a connection
    idle: float  # longest wait for the response headers, or between two body chunks


class AiohttpResponse:
    """A response whose body has not been read yet; close() it in every case."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status: int = response.status
        self.raw_headers: tuple[tuple[bytes, bytes], ...] = response.raw_headers
        self._complete = False
        # aiohttp 3.14 never tells a body's reader about a parse error mid-body (bad chunk framing):
        # the read would wait for ever. The connection's end tells it here.
        self._protocol = response.connection.protocol if response.connection is not None else None
        self._closed = self._protocol.closed if self._protocol is not None else None
        if self._closed is not None:
            self._closed.add_done_callback(self._connection_closed)

    def _connection_closed(self, _: object) -> None:
        content = self._response.content
        error = self._protocol.exception()
        if isinstance(error, HttpProcessingError) and not content.is_eof() and content.exception() is None:
            content.set_exception(UpstreamError(catalog.ERROR_PROTOCOL, error))

    def header(self, name: str) -> str:
        return self._response.headers.get(name, "")

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, transfer coding removed, content coding kept (the client's bytes)."""
        read = self._response.content.readany
        try:
            while chunk := await read():
                yield chunk
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamError(catalog.ERROR_TIMEOUT, exc) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(catalog.ERROR_READ, exc) from exc
        self._complete = True

    def close(self) -> None:
        """Back to the pool after a complete body; a connection left mid-body is closed instead."""
        if self._closed is not None:
            self._closed.remove_done_callback(self._connection_closed)
        if self._complete:
            self._response.release()
        else:
            self._response.close()


UpstreamResponse = AiohttpResponse | Http1Response


class UpstreamPool:
    """Keep-alive pools for every upstream, opened in the app's lifespan."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._http1 = Http1Pool()

    async def start(self) -> None:
        # No limit on connections: the proxy never queues a request behind another, the upstream
        # decides how many it serves at once. Keep-alive connections are reused LIFO by aiohttp.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=_SKIP_AUTO_HEADERS,
            read_bufsize=READ_BUFFER_BYTES, timeout=aiohttp.ClientTimeout(total=None),
            max_line_size=_AIOHTTP_LINE_BYTES, max_field_size=_AIOHTTP_LINE_BYTES, max_headers=MAX_HEADERS,
        )

    async def close(self) -> None:
        self._http1.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def open(
        self, method: str, origin: Origin, target: str, headers: list[tuple[bytes, bytes]], body: bytes,
        timeouts: RequestTimeouts,
    ) -> UpstreamResponse:
        """Send the request to `origin` (exporter.origin: parsed from the configuration) for
        `target`, a path and query composed by Origin.target; the response once its headers are
        in. Raises UpstreamError."""
        if self._session is None:
            raise RuntimeError("the upstream pool is started in the app's lifespan")
        if origin.direct_plain_http and method != "HEAD":
            return await self._http1.open(
                (origin.host, origin.port), request_head(method, target, origin.host_header, headers, body), body,
                timeouts.connect, timeouts.idle)
        path, _, query = target.partition("?")  # the client's path holds no "?": the server split it off
        url = URL.build(  # from the origin's parts: the client's path and query go on exactly as sent
            scheme=origin.scheme, user=origin.user, password=origin.password, host=origin.url_host,
            port=origin.port, path=path, query_string=query, encoded=True,
        )
        try:
            response = await self._session.request(
                method,
                url,
                headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers],
                data=body or None,
                allow_redirects=False,
                proxy=origin.http_proxy,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect, sock_read=timeouts.idle),
            )
        except aiohttp.ConnectionTimeoutError as exc:
            raise UpstreamError(catalog.ERROR_CONNECT, exc) from exc
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamError(catalog.ERROR_TIMEOUT, exc) from exc
        except aiohttp.ClientResponseError as exc:  # a head aiohttp could not parse, or over its limits
            raise UpstreamError(catalog.ERROR_PROTOCOL, exc) from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise UpstreamError(catalog.ERROR_CONNECT, exc) from exc
        if response.status == 101 or not 100 <= response.status <= 599:  # a protocol switch, or no status
            response.close()
            raise UpstreamError(catalog.ERROR_PROTOCOL, ValueError(f"status {response.status}"))
        return AiohttpResponse(response)
