"""The upstream HTTP client alone: CPU per request of the libraries the proxy could forward with.

Each one POSTs the benchmark's chat request to the bench upstream and reads the body as a
stream (as the proxy does), in this process on uvloop, at 1 and 10 concurrent requests. The
process's CPU time over the requests is the client's cost plus a share of loopback system time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from bench.cases import CHAT_BODY, HEADERS

BODY = CHAT_BODY.encode()


async def _measure(one: Callable[[], Awaitable[None]], requests: int, concurrency: int) -> tuple[float, float]:
    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    await worker(20)  # warm-up: connections, caches
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    return time.perf_counter() - wall, time.process_time() - cpu


async def _httpx(url: str, requests: int, concurrency: int, transport=None) -> tuple[float, float]:
    import httpx

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
    async with httpx.AsyncClient(limits=limits, transport=transport) as client:
        async def one() -> None:
            request = client.build_request("POST", url, headers=HEADERS, content=BODY,
                                           timeout=httpx.Timeout(120, connect=10))
            response = await client.send(request, stream=True)
            try:
                async for _ in response.aiter_raw():
                    pass
            finally:
                await response.aclose()
        return await _measure(one, requests, concurrency)


def _aiohttp_transport():
    """A minimal httpx transport over aiohttp (what the httpx-aiohttp package does)."""
    import aiohttp
    import httpx

    class Stream(httpx.AsyncByteStream):
        def __init__(self, response: aiohttp.ClientResponse) -> None:
            self.response = response

        async def __aiter__(self):
            async for chunk in self.response.content.iter_any():
                yield chunk

        async def aclose(self) -> None:
            self.response.release()

    class Transport(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await self.session.request(
                request.method, str(request.url), data=request.content, allow_redirects=False,
                headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw])
            return httpx.Response(response.status, headers=response.raw_headers, stream=Stream(response))

        async def aclose(self) -> None:
            await self.session.close()

    return Transport()


async def _httpx_aiohttp(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    return await _httpx(url, requests, concurrency, transport=_aiohttp_transport())


async def _aiohttp(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    """aiohttp as the proxy used it for HTTPS and proxied upstreams until httpx took over."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        async def one() -> None:
            response = await session.request("POST", url, data=BODY, headers=HEADERS, allow_redirects=False)
            try:
                while await response.content.readany():
                    pass
            finally:
                response.release()
        return await _measure(one, requests, concurrency)


async def _exporter_client(url: str, requests: int, concurrency: int, lean: bool = True) -> tuple[float, float]:
    """One of the proxy's upstream clients (exporter.upstream): the lean one, else httpx's."""
    from exporter.config import Timeouts
    from exporter.origin import parse_origin
    from exporter.upstream.http1 import Http1Client
    from exporter.upstream.httpx_client import HttpxClient

    parts = urlsplit(url)
    client = (Http1Client if lean else HttpxClient)(parse_origin(f"{parts.scheme}://{parts.netloc}"),
                                                     Timeouts(connect=10, idle=120))
    headers = [(k.encode(), v.encode()) for k, v in HEADERS.items()]

    try:
        return await _measure(lambda: post_through(client, parts.path, headers, BODY), requests, concurrency)
    finally:
        await client.close()


async def post_through(client, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """One POST through an exporter.upstream client, its body read to the end, as the proxy does."""
    response = await client.open("POST", path, headers, body)
    try:
        async for _ in response.chunks():
            pass
    finally:
        await response.close()


async def _exporter_httpx(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    return await _exporter_client(url, requests, concurrency, lean=False)


class RawConnection(asyncio.Protocol):
    """A bare HTTP/1.1 keep-alive connection on asyncio + httptools: the floor, not a candidate."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.done: asyncio.Future | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.done.set_result(None)

    @staticmethod
    async def exchange(idle: list[RawConnection], connect: Callable[[], Awaitable[tuple]], request: bytes) -> None:
        """One request on an idle connection, else a new one; back to `idle` once answered."""
        connection = idle.pop() if idle else (await connect())[1]
        connection.done = asyncio.get_running_loop().create_future()
        connection.transport.write(request)
        await connection.done
        idle.append(connection)


async def _raw(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    """RawConnection on plain HTTP: the floor."""
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    idle: list[RawConnection] = []
    head = (f"POST {parts.path} HTTP/1.1\r\nhost: {parts.netloc}\r\ncontent-length: {len(BODY)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items()) + "\r\n").encode()

    def connect() -> Awaitable[tuple]:
        return loop.create_connection(RawConnection, parts.hostname, parts.port)

    return await _measure(lambda: RawConnection.exchange(idle, connect, head + BODY), requests, concurrency)


CLIENTS = {
    "httpx, default client": _httpx,
    "exporter.upstream.httpx_client (HTTPS and proxied upstreams)": _exporter_httpx,
    "httpx + aiohttp transport": _httpx_aiohttp,
    "aiohttp (the previous HTTPS client)": _aiohttp,
    "exporter.upstream.http1 (plain HTTP upstreams)": _exporter_client,
    "raw asyncio + httptools (floor)": _raw,
}


def compare(upstream_url: str, requests: int, log: Callable[[str], None]) -> list[dict]:
    import uvloop

    url = upstream_url + "/v1/chat/completions"
    rows = []
    for concurrency in (1, 10):
        for name, run in CLIENTS.items():
            try:
                wall, cpu = uvloop.run(run(url, requests, concurrency))
            except ImportError as exc:  # aiohttp is no dependency of the proxy any more (the bench extra)
                log(f"client {name}: skipped ({exc})")
                continue
            done = requests // concurrency * concurrency
            rows.append({"client": name, "concurrency": concurrency, "rps": done / wall, "cpu_us": cpu / done * 1e6})
            log(f"client {name} c={concurrency}: {done / wall:,.0f} req/s, {cpu / done * 1e6:.0f} us CPU/request")
    return rows
