"""The lean HTTP/1.1 client (exporter.http1) through UpstreamPool, against scripted raw upstreams.

Each upstream here is a real TCP server that answers with exactly the bytes a test gives it, so
the cases a framework would smooth over can be written down: a body that ends with the
connection, an interim 100 response, a keep-alive connection the server closes while it sits in
the pool, an answer nobody asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from exporter import catalog, http1
from exporter.origin import parse_origin
from exporter.upstream_client import RequestTimeouts, UpstreamError, UpstreamPool

TIMEOUTS = RequestTimeouts(connect=5, idle=5)
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


class RawUpstream:
    """Answers each request with `answer(n)` (n counts requests over all connections); a None
    answer closes the connection without a word. Counts connections and keeps what it was sent."""

    def __init__(self, answer: Callable[[int], bytes | None], close_after_answer: bool = False) -> None:
        self.answer = answer
        self.close_after_answer = close_after_answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        for writer in self.writers:
            writer.close()
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answer(len(self.requests))
                if answer is None:
                    writer.close()
                    return
                writer.write(answer)
                await writer.drain()
                if self.close_after_answer:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


async def _fetch(pool: UpstreamPool, url: str, method: str = "POST", body: bytes = b"{}") -> tuple[int, bytes]:
    response = await pool.open(method, parse_origin(url), "/v1/chat/completions", [(b"content-type", b"application/json")],
                               body, TIMEOUTS)
    try:
        return response.status, b"".join([chunk async for chunk in response.chunks()])
    finally:
        response.close()


@contextlib.asynccontextmanager
async def started(upstream: RawUpstream) -> AsyncIterator[tuple[UpstreamPool, str]]:
    """The upstream serving and a started pool; both closed afterwards."""
    async with upstream as url:
        pool = UpstreamPool()
        await pool.start()
        try:
            yield pool, url
        finally:
            await pool.close()


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def test_a_stream_leaves_its_connection_for_the_next_request():
    stream = CHUNKED_HEAD + b"6\r\ndata: \r\n0\r\n\r\n"

    async def scenario() -> None:
        upstream = RawUpstream(lambda n: stream)
        async with started(upstream) as (pool, url):
            for _ in range(5):
                assert await _fetch(pool, url) == (200, b"data: ")
        assert upstream.connections == 1 and len(upstream.requests) == 5

    run(scenario())


def test_the_request_goes_out_as_aiohttp_sent_it():
    async def scenario() -> None:
        upstream = RawUpstream(lambda n: b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        async with started(upstream) as (pool, url):
            response = await pool.open("POST", parse_origin(url), "/base/v1/chat/completions?x=%2F&y",
                                       [(b"content-type", b"application/json")], b'{"a":1}', TIMEOUTS)
            response.close()
        port = url.rsplit(":", 1)[1]
        assert upstream.requests == [
            b"POST /base/v1/chat/completions?x=%2F&y HTTP/1.1\r\nHost: 127.0.0.1:" + port.encode()
            + b"\r\ncontent-type: application/json\r\nContent-Length: 7\r\n\r\n" + b'{"a":1}'
        ]

    run(scenario())


def test_a_body_without_length_ends_with_the_connection_and_is_not_reused():
    async def scenario() -> None:
        upstream = RawUpstream(lambda n: b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"n\":%d}" % n,
                               close_after_answer=True)
        async with started(upstream) as (pool, url):
            assert await _fetch(pool, url) == (200, b'{"n":1}')
            assert await _fetch(pool, url) == (200, b'{"n":2}')
        assert upstream.connections == 2

    run(scenario())


def test_an_interim_100_continue_is_skipped():
    async def scenario() -> None:
        upstream = RawUpstream(lambda n: b"HTTP/1.1 100 Continue\r\n\r\n"
                                         b"HTTP/1.1 201 Created\r\ncontent-length: 3\r\nx-a: b\r\n\r\nyes")
        async with started(upstream) as (pool, url):
            response = await pool.open("POST", parse_origin(url), "/x", [], b"{}", TIMEOUTS)
            assert response.status == 201 and response.header("X-A") == "b"
            assert b"".join([c async for c in response.chunks()]) == b"yes"
            response.close()
            assert await _fetch(pool, url) == (201, b"yes")  # and the connection is still good
        assert upstream.connections == 1

    run(scenario())


def test_no_body_after_204_and_304():
    async def scenario() -> None:
        upstream = RawUpstream(lambda n: b"HTTP/1.1 204 No Content\r\n\r\n" if n % 2 else
                               b"HTTP/1.1 304 Not Modified\r\netag: x\r\n\r\n")
        async with started(upstream) as (pool, url):
            assert [await _fetch(pool, url) for _ in range(4)] == [(204, b""), (304, b"")] * 2
        assert upstream.connections == 1

    run(scenario())


def test_a_pooled_connection_the_server_closed_is_replaced_and_the_request_sent_once():
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    async def scenario() -> None:
        # The second request finds the kept-alive connection closed by the server (as a backend's
        # keep-alive timeout does): it must go out again on a new connection, once.
        upstream = RawUpstream(lambda n: None if n == 2 else ok)
        async with started(upstream) as (pool, url):
            assert await _fetch(pool, url) == (200, b"ok")
            assert await _fetch(pool, url) == (200, b"ok")
        assert upstream.connections == 2 and len(upstream.requests) == 3  # 1 answered, 1 dropped, 1 again

    run(scenario())


def test_a_new_connection_closed_before_an_answer_is_a_connect_error_and_not_sent_again():
    async def scenario() -> None:
        upstream = RawUpstream(lambda n: None)
        async with started(upstream) as (pool, url):
            with pytest.raises(UpstreamError) as failure:
                await _fetch(pool, url)
        assert failure.value.error_type == catalog.ERROR_CONNECT
        assert len(upstream.requests) == 1

    run(scenario())


def test_a_body_cut_short_is_a_read_error():
    async def scenario() -> None:
        upstream = RawUpstream(lambda n: CHUNKED_HEAD + b"6\r\ndata: \r\n", close_after_answer=True)
        async with started(upstream) as (pool, url):
            response = await pool.open("POST", parse_origin(url), "/x", [], b"{}", TIMEOUTS)
            received = []
            with pytest.raises(UpstreamError) as failure:
                async for chunk in response.chunks():
                    received.append(chunk)
            response.close()
        assert failure.value.error_type == catalog.ERROR_READ and received == [b"data: "]

    run(scenario())


def test_an_answer_nobody_asked_for_closes_the_pooled_connection(monkeypatch):
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    async def scenario() -> None:
        # The first answer carries a second, unasked one behind it (a 408 a server sends before
        # it closes): the next request must not take it for its own.
        upstream = RawUpstream(lambda n: ok + b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n"
                               if n == 1 else ok)
        async with started(upstream) as (pool, url):
            assert await _fetch(pool, url) == (200, b"ok")
            await asyncio.sleep(0.1)  # the extra bytes arrive while the connection is pooled
            assert await _fetch(pool, url) == (200, b"ok")
        assert upstream.connections == 2

    run(scenario())


def test_idle_connections_are_closed_after_the_pool_idle_time(monkeypatch):
    monkeypatch.setattr(http1, "IDLE_SECONDS", 0.05)
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    async def scenario() -> None:
        upstream = RawUpstream(lambda n: ok)
        async with started(upstream) as (pool, url):
            assert await _fetch(pool, url) == (200, b"ok")
            await asyncio.sleep(0.3)
            assert await _fetch(pool, url) == (200, b"ok")
        assert upstream.connections == 2 and len(upstream.requests) == 2  # closed by us, not found stale

    run(scenario())


def test_a_slow_reader_pauses_the_upstream_socket_and_gets_every_byte(monkeypatch):
    monkeypatch.setattr(http1, "READ_BUFFER_BYTES", 1024)
    piece = b"x" * 4096
    body = b"".join(b"%x\r\n" % len(piece) + piece + b"\r\n" for _ in range(256)) + b"0\r\n\r\n"

    async def scenario() -> None:
        upstream = RawUpstream(lambda n: CHUNKED_HEAD + body)
        async with started(upstream) as (pool, url):
            response = await pool.open("POST", parse_origin(url), "/x", [], b"{}", TIMEOUTS)
            sizes = []
            async for chunk in response.chunks():
                sizes.append(len(chunk))
                await asyncio.sleep(0.001)
            response.close()
        # Unpaused, the whole megabyte would pile up while the reader sleeps and come as one piece;
        # paused, at most one socket read (uvloop reads 256 KiB at a time) waits beyond the limit.
        assert sum(sizes) == 256 * 4096 and max(sizes) <= 256 * 1024 + 1024

    run(scenario())


def test_head_requests_and_https_go_through_aiohttp():
    async def scenario() -> None:
        upstream = RawUpstream(lambda n: b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        async with started(upstream) as (pool, url):
            response = await pool.open("HEAD", parse_origin(url), "/x", [], b"", TIMEOUTS)
            assert response.status == 200 and response.header("content-length") == "5"
            assert [c async for c in response.chunks()] == []
            response.close()
            assert not isinstance(response, http1.Http1Response)
            assert parse_origin(url).direct_plain_http
            assert not parse_origin("https://example.invalid/x").direct_plain_http
            assert not parse_origin(url.replace("://", "://user:secret@")).direct_plain_http

    run(scenario())
