"""The connection pool to the upstreams: aiohttp underneath, a small interface on top.

Why aiohttp and not httpx: on this project's benchmark (bench/clients.py, docs/benchmarks.md) one
request cost 550 to 900 us of CPU in httpx's client, more with more concurrent requests (its
pool polls every pooled socket for each request), against 80 to 140 us in aiohttp, whose HTTP
parser is in C and whose pool is a plain list. httpx with an aiohttp transport still cost 250 to
350 us: httpx's own request and response models are the difference.

The proxy sees only this module's types, so the library underneath can change again without
touching the proxy: `UpstreamPool.open()` returns an `UpstreamResponse` or raises `UpstreamError`
with the `error_type` label value of llm_upstream_errors_total.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from exporter import catalog

# Only what the proxy sets is sent: no User-Agent, Accept or Content-Type of aiohttp's own.
_SKIP_AUTO_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})
# Bytes the pool reads from an upstream socket before the proxy has passed them on; beyond it
# reading pauses, so a slow client holds back a fast upstream instead of filling memory.
READ_BUFFER_BYTES = 256 * 1024


class UpstreamError(Exception):
    """The upstream could not be reached (connect), was too slow (timeout) or broke off (read)."""

    def __init__(self, error_type: str, cause: BaseException | None = None) -> None:
        super().__init__(f"{error_type}: {type(cause).__name__ if cause else 'error'}")
        self.error_type = error_type
        self.cause = cause


@dataclass(frozen=True)
class RequestTimeouts:
    connect: float  # seconds to open a connection
    idle: float  # longest wait for the response headers, or between two body chunks


class UpstreamResponse:
    """A response whose body has not been read yet; close() it in every case."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status: int = response.status
        self.raw_headers: tuple[tuple[bytes, bytes], ...] = response.raw_headers
        self._complete = False

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
        if self._complete:
            self._response.release()
        else:
            self._response.close()


class UpstreamPool:
    """One keep-alive pool for every upstream, opened in the app's lifespan."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[str, str | None] = {}

    async def start(self) -> None:
        # No limit on connections: the proxy never queues a request behind another, the upstream
        # decides how many it serves at once. Keep-alive connections are reused LIFO by aiohttp.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=_SKIP_AUTO_HEADERS,
            read_bufsize=READ_BUFFER_BYTES, timeout=aiohttp.ClientTimeout(total=None),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def open(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes, timeouts: RequestTimeouts,
    ) -> UpstreamResponse:
        """Send the request; the response once its headers are in. Raises UpstreamError."""
        if self._session is None:
            raise RuntimeError("the upstream pool is started in the app's lifespan")
        try:
            response = await self._session.request(
                method,
                URL(url, encoded=True),  # the client's path and query go on exactly as sent
                headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers],
                data=body or None,
                allow_redirects=False,
                proxy=self._proxy_for(url),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect, sock_read=timeouts.idle),
            )
        except aiohttp.ConnectionTimeoutError as exc:
            raise UpstreamError(catalog.ERROR_CONNECT, exc) from exc
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamError(catalog.ERROR_TIMEOUT, exc) from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise UpstreamError(catalog.ERROR_CONNECT, exc) from exc
        return UpstreamResponse(response)

    def _proxy_for(self, url: str) -> str | None:
        """HTTP(S)_PROXY / NO_PROXY from the environment, looked up once per origin (as httpx did)."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._proxies:
            proxy = urllib.request.getproxies_environment().get(parts.scheme)
            bypass = proxy and urllib.request.proxy_bypass_environment(parts.hostname or "")
            self._proxies[origin] = None if not proxy or bypass else proxy
        return self._proxies[origin]
