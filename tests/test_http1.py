"""The upstream clients (exporter.upstream), the lean HTTP/1.1 one above all, against scripted raw upstreams.

Each upstream here is a real TCP server that answers with exactly the bytes a test gives it, so
the cases a framework would smooth over can be written down: a body that ends with the
connection, an interim 100 response, a keep-alive connection the server closes while it sits in
the pool, an answer nobody asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import string
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter import catalog
from exporter.config import Timeouts, parse_settings
from exporter.origin import parse_origin
from exporter.upstream import UpstreamClient, UpstreamError, http1
from exporter.upstream.clients import client_for
from exporter.upstream.httpx_client import HttpxClient
from tests.faulty import raw_upstream, read_request
from tests.raw_upstream import LocalServer, RawUpstream
from tests.scrape import Scrape
from tests.servers import running_exporter

TIMEOUTS = Timeouts(connect=5, idle=5)
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


async def _fetch(client: UpstreamClient, method: str = "POST", body: bytes = b"{}") -> tuple[int, bytes]:
    response = await client.open(method, "/v1/chat/completions", [(b"content-type", b"application/json")], body)
    try:
        return response.status, b"".join([chunk async for chunk in response.chunks()])
    finally:
        await response.close()


@contextlib.asynccontextmanager
async def started(upstream: RawUpstream) -> AsyncIterator[tuple[UpstreamClient, str]]:
    """The upstream serving and the client for its URL; both closed afterwards."""
    async with upstream as url:
        client = client_for(parse_origin(url), TIMEOUTS)
        try:
            yield client, url
        finally:
            await client.close()


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def test_a_stream_leaves_its_connection_for_the_next_request():
    stream = CHUNKED_HEAD + b"6\r\ndata: \r\n0\r\n\r\n"

    async def scenario() -> None:
        upstream = RawUpstream(lambda n: stream)
        async with started(upstream) as (client, url):
            for _ in range(5):
                assert await _fetch(client) == (200, b"data: ")
        assert upstream.connections == 1 and len(upstream.requests) == 5

    run(scenario())


def test_the_request_goes_out_as_aiohttp_sent_it():
    async def scenario() -> None:
        upstream = RawUpstream(lambda n: b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        async with started(upstream) as (client, url):
            response = await client.open("POST", "/base/v1/chat/completions?x=%2F&y",
                                       [(b"content-type", b"application/json")], b'{"a":1}')
            await response.close()
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
        async with started(upstream) as (client, url):
            assert await _fetch(client) == (200, b'{"n":1}')
            assert await _fetch(client) == (200, b'{"n":2}')
        assert upstream.connections == 2

    run(scenario())


def test_an_interim_100_continue_is_skipped():
    async def scenario() -> None:
        upstream = RawUpstream(lambda n: b"HTTP/1.1 100 Continue\r\n\r\n"
                                         b"HTTP/1.1 201 Created\r\ncontent-length: 3\r\nx-a: b\r\n\r\nyes")
        async with started(upstream) as (client, url):
            response = await client.open("POST", "/x", [], b"{}")
            assert response.status == 201 and response.header("X-A") == "b"
            assert b"".join([c async for c in response.chunks()]) == b"yes"
            await response.close()
            assert await _fetch(client) == (201, b"yes")  # and the connection is still good
        assert upstream.connections == 1

    run(scenario())


def test_no_body_after_204_and_304():
    async def scenario() -> None:
        upstream = RawUpstream(lambda n: b"HTTP/1.1 204 No Content\r\n\r\n" if n % 2 else
                               b"HTTP/1.1 304 Not Modified\r\netag: x\r\n\r\n")
        async with started(upstream) as (client, url):
            assert [await _fetch(client) for _ in range(4)] == [(204, b""), (304, b"")] * 2
        assert upstream.connections == 1

    run(scenario())


def test_a_pooled_connection_the_server_closed_while_idle_is_replaced_before_the_request_is_sent():
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    async def scenario() -> None:
        # The server closes each kept-alive connection after its answer (as a backend's keep-alive
        # timeout does): the pool sees that before writing, so every request goes out once.
        upstream = RawUpstream(lambda n: ok, close_after_answer=True)
        async with started(upstream) as (client, url):
            for round in range(1, 4):
                assert await _fetch(client) == (200, b"ok")
                while upstream.closes < round:
                    await asyncio.sleep(0.01)
        assert upstream.connections == 3 and len(upstream.requests) == 3

    run(scenario())


def test_a_post_whose_pooled_connection_closed_after_reading_it_is_sent_exactly_once():
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    async def scenario() -> None:
        # The second request reaches the server on the reused connection, which then closes
        # without an answer: it may have been processed (and billed), so it is never sent again.
        upstream = RawUpstream(lambda n: None if n == 2 else ok)
        async with started(upstream) as (client, url):
            assert await _fetch(client) == (200, b"ok")
            with pytest.raises(UpstreamError) as failure:
                await _fetch(client)
            assert failure.value.error_type == catalog.ERROR_CONNECT
            assert len(upstream.requests) == 2
            assert await _fetch(client) == (200, b"ok")  # the next request gets a new connection
        assert upstream.connections == 2 and len(upstream.requests) == 3

    run(scenario())


def test_a_new_connection_closed_before_an_answer_is_a_connect_error_and_not_sent_again():
    async def scenario() -> None:
        upstream = RawUpstream(lambda n: None)
        async with started(upstream) as (client, url):
            with pytest.raises(UpstreamError) as failure:
                await _fetch(client)
        assert failure.value.error_type == catalog.ERROR_CONNECT
        assert len(upstream.requests) == 1

    run(scenario())


async def _body_until_error(client: UpstreamClient) -> tuple[list[bytes], str]:
    """The body chunks of one POST that must end in an UpstreamError, and that error's type."""
    response = await client.open("POST", "/x", [], b"{}")
    received = []
    try:
        with pytest.raises(UpstreamError) as failure:
            async for chunk in response.chunks():
                received.append(chunk)
    finally:
        await response.close()
    return received, failure.value.error_type


def test_a_body_cut_short_is_a_read_error():
    async def scenario() -> None:
        upstream = RawUpstream(lambda n: CHUNKED_HEAD + b"6\r\ndata: \r\n", close_after_answer=True)
        async with started(upstream) as (client, url):
            assert await _body_until_error(client) == ([b"data: "], catalog.ERROR_READ)

    run(scenario())


def test_an_answer_nobody_asked_for_closes_the_pooled_connection(monkeypatch):
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    async def scenario() -> None:
        # The first answer carries a second, unasked one behind it (a 408 a server sends before
        # it closes): the next request must not take it for its own.
        upstream = RawUpstream(lambda n: ok + b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n"
                               if n == 1 else ok)
        async with started(upstream) as (client, url):
            assert await _fetch(client) == (200, b"ok")
            await asyncio.sleep(0.1)  # the extra bytes arrive while the connection is pooled
            assert await _fetch(client) == (200, b"ok")
        assert upstream.connections == 2

    run(scenario())


def test_idle_connections_are_closed_after_the_pool_idle_time(monkeypatch):
    monkeypatch.setattr(http1, "IDLE_SECONDS", 0.05)
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    async def scenario() -> None:
        upstream = RawUpstream(lambda n: ok)
        async with started(upstream) as (client, url):
            assert await _fetch(client) == (200, b"ok")
            await asyncio.sleep(0.3)
            assert await _fetch(client) == (200, b"ok")
        assert upstream.connections == 2 and len(upstream.requests) == 2  # closed by us, not found stale

    run(scenario())


def test_a_slow_reader_pauses_the_upstream_socket_and_gets_every_byte(monkeypatch):
    monkeypatch.setattr(http1, "READ_BUFFER_BYTES", 1024)
    piece = b"x" * 4096
    body = b"".join(b"%x\r\n" % len(piece) + piece + b"\r\n" for _ in range(256)) + b"0\r\n\r\n"

    async def scenario() -> None:
        upstream = RawUpstream(lambda n: CHUNKED_HEAD + body)
        async with started(upstream) as (client, url):
            response = await client.open("POST", "/x", [], b"{}")
            sizes = []
            async for chunk in response.chunks():
                sizes.append(len(chunk))
                await asyncio.sleep(0.001)
            await response.close()
        # Unpaused, the whole megabyte would pile up while the reader sleeps and come as one piece;
        # paused, at most one socket read (uvloop reads 256 KiB at a time) waits beyond the limit.
        assert sum(sizes) == 256 * 4096 and max(sizes) <= 256 * 1024 + 1024

    run(scenario())


def test_head_requests_take_the_lean_client_and_https_and_credentials_the_httpx_client():
    async def scenario() -> None:
        upstream = RawUpstream(lambda n: b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n" if n == 1 else OK)
        async with started(upstream) as (client, url):
            response = await client.open("HEAD", "/x", [], b"")
            assert response.status == 200 and response.header("content-length") == "5"
            assert [c async for c in response.chunks()] == []
            await response.close()
            assert isinstance(response, http1.Http1Response)
            assert await _fetch(client) == (200, b"ok")  # no body waited for: the connection is reused
            assert parse_origin(url).direct_plain_http
            for other in ("https://example.invalid/x", url.replace("://", "://user:secret@")):
                assert not parse_origin(other).direct_plain_http
                assert isinstance(client_for(parse_origin(other), TIMEOUTS), HttpxClient)
        assert upstream.connections == 1

    run(scenario())


# --- RFC 9112 framing --------------------------------------------------------------------------

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def _exchange(client: UpstreamClient) -> tuple[int, tuple[tuple[bytes, bytes], ...], bytes]:
    """Status, headers and body of one POST."""
    response = await client.open("POST", "/x", [], b"{}")
    try:
        return response.status, response.raw_headers, b"".join([chunk async for chunk in response.chunks()])
    finally:
        await response.close()


def test_trailer_fields_never_become_headers_nor_change_framing_or_reuse():
    # Head, body and trailers in one write: one read. The trailers try to change the framing
    # (Content-Length, Transfer-Encoding) and the reuse (Connection: close); none of it counts.
    answer = (CHUNKED_HEAD + b"3\r\nabc\r\n0\r\nx-checksum: 1\r\ncontent-length: 99\r\n"
              b"transfer-encoding: gzip\r\nconnection: close\r\n\r\n")

    async def scenario() -> None:
        upstream = RawUpstream(lambda n: answer if n == 1 else OK)
        async with started(upstream) as (client, url):
            status, headers, body = await _exchange(client)
            assert (status, body) == (200, b"abc")
            assert headers == ((b"content-type", b"text/event-stream"), (b"transfer-encoding", b"chunked"))
            assert await _fetch(client) == (200, b"ok")
        assert upstream.connections == 1

    run(scenario())


@pytest.mark.parametrize("framing, body, expected, reused", [
    ([b"transfer-encoding: gzip, chunked"], b"3\r\nabc\r\n0\r\n\r\n", b"abc", True),
    ([b"transfer-encoding: chunked, gzip"], b"3\r\nabc\r\n0\r\n\r\n", b"3\r\nabc\r\n0\r\n\r\n", False),
    ([b"transfer-encoding: gzip"], b"abc", b"abc", False),
    ([b"transfer-encoding: chunked", b"transfer-encoding: gzip"], b"3\r\nabc\r\n", b"3\r\nabc\r\n", False),
    ([b"transfer-encoding: chunked", b"content-length: 3"], b"5\r\nabcde\r\n0\r\n\r\n", b"abcde", False),
    ([b"content-length: 3", b"transfer-encoding: chunked"], b"5\r\nabcde\r\n0\r\n\r\n", b"abcde", False),
    ([b"transfer-encoding: CHUNKED"], b"3;a=1;b=\"x y\"\r\nabc\r\n0;z\r\n\r\n", b"abc", True),
    ([b"content-length: 0"], b"", b"", True),
    ([b"connection: close", b"content-length: 3"], b"abc", b"abc", False),
    ([b"connection: close"], b"abc", b"abc", False),
    ([], b"abc", b"abc", False),
], ids=["gzip-chunked", "chunked-gzip", "gzip-alone", "te-twice", "te-and-cl", "cl-and-te", "extensions",
        "length-0", "close-with-length", "close-until-eof", "nothing-until-eof"])
def test_transfer_encoding_frames_the_body_only_when_chunked_is_final(framing, body, expected, reused):
    answer = b"HTTP/1.1 200 OK\r\n" + b"".join(line + b"\r\n" for line in framing) + b"\r\n" + body

    async def scenario() -> None:
        upstream = RawUpstream(lambda n: answer if n == 1 else OK, close_after_answer=not reused)
        async with started(upstream) as (client, url):
            status, headers, received = await _exchange(client)
            if not reused:
                while upstream.closes < 1:
                    await asyncio.sleep(0.01)
            assert await _fetch(client) == (200, b"ok")
        assert received == expected
        # Transfer-Encoding wins over Content-Length, which is then not passed on.
        assert (b"content-length" in {name for name, _ in headers}) == (
            any(line.startswith(b"content-length") for line in framing)
            and not any(line.startswith(b"transfer-encoding") for line in framing))
        assert upstream.connections == (1 if reused else 2) and len(upstream.requests) == 2

    run(scenario())


def test_http_1_0_answers_end_with_the_connection_unless_kept_alive():
    async def scenario() -> None:
        upstream = RawUpstream(lambda n: b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nold" if n == 1
                               else b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
                               close_after_answer=False)
        upstream.close_after_answer = True
        async with started(upstream) as (client, url):
            assert await _fetch(client) == (200, b"old")
            upstream.close_after_answer = False
            while upstream.closes < 1:
                await asyncio.sleep(0.01)
            assert await _fetch(client) == (200, b"ok")
            assert await _fetch(client) == (200, b"ok")
        assert upstream.connections == 2 and len(upstream.requests) == 3

    run(scenario())


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_by_definition_never_waits_for_its_content_length(status):
    async def scenario() -> None:
        upstream = RawUpstream(lambda n: b"HTTP/1.1 %d X\r\ncontent-length: 5\r\n\r\n" % status if n == 1 else OK)
        async with started(upstream) as (client, url):
            assert await _fetch(client) == (status, b"")  # TIMEOUTS.idle is 5 s: would fail, not pass
            assert await _fetch(client) == (200, b"ok")
        assert upstream.connections == 1

    run(scenario())


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nframes",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.1 099 Low\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 600 High\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/2.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 2x0 OK\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.6\r\n",
    b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok",
    b"HTTP/1.1 200 OK\r\ncontent-length: 3x\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\ncontent-length: -3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\ncontent-length: 3, 4\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nx-folded: a\r\n b\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n3\r\nabc\r\n0\r\nbad trailer\r\n\r\n",
], ids=["101", "101-bare", "status-99", "status-600", "http2", "status-garbage", "not-http", "lf-only",
        "cl-garbage", "cl-negative", "cl-list", "cl-twice", "cl-overflow", "obs-fold", "chunk-size-garbage",
        "trailer-garbage"])
def test_a_malformed_answer_is_a_protocol_error_and_its_connection_is_closed(answer, caplog):
    async def scenario() -> None:
        upstream = RawUpstream(lambda n: answer if n == 1 else OK)
        async with started(upstream) as (client, url):
            with pytest.raises(UpstreamError) as failure:
                await _exchange(client)
            assert failure.value.error_type == catalog.ERROR_PROTOCOL
            while upstream.closes < 1:  # the client closed the connection
                await asyncio.sleep(0.01)
            assert await _fetch(client) == (200, b"ok")
        assert upstream.connections == 2 and len(upstream.requests) == 2

    with caplog.at_level("DEBUG"):
        run(scenario())
    assert not [record for record in caplog.records if record.levelname in ("ERROR", "CRITICAL")]


def test_a_malformed_chunk_mid_body_ends_the_body_with_a_protocol_error():
    async def scenario() -> None:
        upstream = RawUpstream(lambda n: CHUNKED_HEAD + b"6\r\ndata: \r\nzz\r\n",
                               pieces=lambda answer: [answer[:-4], answer[-4:]])
        async with started(upstream) as (client, url):
            assert await _body_until_error(client) == ([b"data: "], catalog.ERROR_PROTOCOL)

    run(scenario())


# --- bounded heads -----------------------------------------------------------------------------

class EndlessUpstream(LocalServer):
    """Answers with `prefix`, then `filler` again and again until the client hangs up (or 256 MiB)."""

    def __init__(self, prefix: bytes, filler: bytes) -> None:
        self.prefix, self.filler = prefix, filler
        self.sent = 0
        self.hung_up = False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        try:
            writer.write(self.prefix)
            while self.sent < 256 * 1024 * 1024:
                writer.write(self.filler)
                await writer.drain()
                self.sent += len(self.filler)
        except ConnectionError:
            self.hung_up = True
        writer.close()


@pytest.mark.parametrize("prefix, filler", [
    (b"HTTP/1.1 200 ", b"O" * 4096),  # a status line that never ends
    (b"HTTP/1.1 200 OK\r\nx-long: ", b"v" * 4096),  # a header value that never ends
    (b"HTTP/1.1 200 OK\r\n", b"x-many: v\r\n" * 400),  # headers that never end
    (b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" * 100),  # interims
    (CHUNKED_HEAD + b"3\r\nabc\r\n0\r\nx-trailer: ", b"t" * 4096),  # a trailer that never ends
    (CHUNKED_HEAD + b"3\r\nabc\r\n0\r\n", b"x-trailer: t\r\n" * 300),  # trailers that never end
    (CHUNKED_HEAD + b"3;", b"e" * 4096),  # a chunk extension that never ends
], ids=["status-line", "header-value", "header-count", "interim-answers", "trailer-value", "trailer-count",
        "chunk-extension"])
def test_an_endless_head_is_cut_at_the_limit_and_its_connection_closed(prefix, filler):
    async def scenario() -> None:
        upstream = EndlessUpstream(prefix, filler)
        async with upstream as url:
            client = client_for(parse_origin(url), TIMEOUTS)
            try:
                with pytest.raises(UpstreamError) as failure:
                    await _exchange(client)
                while not upstream.hung_up:
                    await asyncio.sleep(0.01)
            finally:
                await client.close()
        assert failure.value.error_type == catalog.ERROR_PROTOCOL
        assert upstream.sent < 64 * 1024 * 1024  # the client hung up, long before the cap

    run(scenario())


def test_a_head_of_10000_headers_in_one_piece_is_refused_and_a_head_at_the_limits_is_not():
    many = b"HTTP/1.1 200 OK\r\n" + b"x-h: v\r\n" * 10_000 + b"content-length: 2\r\n\r\nok"
    fields = [b"x-%d: %s" % (i, b"v" * 600) for i in range(http1.MAX_HEADERS - 1)]
    at_limit = b"HTTP/1.1 200 OK\r\n" + b"".join(f + b"\r\n" for f in fields) + b"content-length: 2\r\n\r\nok"
    assert len(at_limit) < http1.MAX_HEAD_BYTES

    async def scenario() -> None:
        upstream = RawUpstream(lambda n: many if n == 1 else at_limit)
        async with started(upstream) as (client, url):
            with pytest.raises(UpstreamError) as failure:
                await _exchange(client)
            assert failure.value.error_type == catalog.ERROR_PROTOCOL
            status, headers, body = await _exchange(client)
            assert (status, len(headers), body) == (200, http1.MAX_HEADERS, b"ok")

    run(scenario())


# --- every valid framing, split anywhere (hypothesis) ------------------------------------------

_TOKEN = st.text(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~", min_size=1, max_size=12)
_VALUE = st.text("".join(map(chr, range(0x21, 0x7F))) + " \t", max_size=40).map(str.strip)
_FIELDS = st.lists(st.tuples(_TOKEN.map(lambda t: "x-" + t), _VALUE), max_size=8)
# Trailers may name anything, framing and connection fields included: they must change nothing.
# (A repeated or non-numeric Content-Length is malformed even there: a protocol error.)
_TRAILERS = st.lists(st.sampled_from([("Content-Length", "99"), ("transfer-encoding", "gzip"), ("connection", "close"),
                                       ("x-sum", "a b")]), max_size=3, unique=True)


def _field(name: str, value: str) -> bytes:
    return f"{name}: {value}\r\n".encode()


@st.composite
def valid_responses(draw) -> tuple[bytes, int, list[tuple[bytes, bytes]], bytes, bool]:
    """(wire bytes, status, headers, body, reusable) of a response RFC 9112 allows."""
    version = draw(st.sampled_from(["1.1", "1.1", "1.0"]))
    status = draw(st.sampled_from([200, 201, 206, 400, 404, 429, 500, 503, 204, 304]))
    framing = "none" if status in (204, 304) else draw(
        st.sampled_from(["length", "chunked", "close"] if version == "1.1" else ["length", "close"]))
    payload = b"" if framing == "none" else draw(st.binary(max_size=3000))
    close = framing == "close" or draw(st.booleans())
    headers = [(name, value) for name, value in draw(_FIELDS)]
    position = draw(st.integers(0, len(headers)))
    own = {"length": [("Content-Length", str(len(payload)))], "chunked": [("Transfer-Encoding", "chunked")],
           "close": [], "none": []}[framing]
    if version == "1.1" and close and framing != "close":
        own.append(("Connection", draw(st.sampled_from(["close", "Close"]))))
    elif version == "1.0" and not close:
        own.append(("Connection", "keep-alive"))
    headers[position:position] = own
    wire = b""
    for _ in range(draw(st.integers(0, 2))):  # interim answers first
        wire += f"HTTP/1.1 {draw(st.sampled_from([100, 103]))} Interim\r\n".encode()
        wire += b"".join(_field(n, v) for n, v in draw(_FIELDS)) + b"\r\n"
    reason = draw(st.sampled_from(["", " OK", " Fine Thanks"]))
    wire += f"HTTP/{version} {status}{reason}\r\n".encode() + b"".join(_field(n, v) for n, v in headers) + b"\r\n"
    if framing == "chunked":
        cuts = sorted(draw(st.lists(st.integers(1, len(payload) - 1), max_size=6, unique=True))) if payload[1:] else []
        for start, end in zip([0, *cuts], [*cuts, len(payload)]) if payload else []:
            size = draw(st.sampled_from(["%x", "%X", "00%x"])) % (end - start)
            extension = draw(st.sampled_from(["", ";a", ";a=b", ';name="v al;ue"', ";x=1;y=2"]))
            wire += f"{size}{extension}\r\n".encode() + payload[start:end] + b"\r\n"
        wire += b"0" + draw(st.sampled_from([b"", b";end"])) + b"\r\n"
        wire += b"".join(_field(n, v) for n, v in draw(_TRAILERS)) + b"\r\n"
    else:
        wire += payload
    expected = [(name.encode(), value.encode()) for name, value in headers]
    return wire, status, expected, payload, not close


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_responses(), st.lists(st.integers(1, 4000), max_size=8))
def test_every_valid_framing_split_anywhere_gives_the_body_headers_and_reuse_it_says(response, cuts):
    wire, status, headers, payload, reusable = response

    def pieces(answer: bytes) -> list[bytes]:
        points = sorted({cut for cut in cuts if cut < len(answer)})
        return [answer[a:b] for a, b in zip([0, *points], [*points, len(answer)])]

    async def scenario() -> None:
        upstream = RawUpstream(lambda n: wire if n == 1 else OK, close_after_answer=not reusable, pieces=pieces)
        async with started(upstream) as (client, url):
            assert await _exchange(client) == (status, tuple(headers), payload)
            upstream.close_after_answer = False
            assert await _fetch(client) == (200, b"ok")
        assert upstream.connections == (1 if reusable else 2)

    run(scenario())


def test_an_answer_split_at_every_byte():
    answer = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nx-a: b c\r\ntransfer-encoding: chunked\r\n\r\n"
              b"3;e=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nx-t: 1\r\n\r\n")

    async def scenario() -> None:
        upstream = RawUpstream(lambda n: answer if n == 1 else OK,
                               pieces=lambda data: [data[i:i + 1] for i in range(len(data))])
        async with started(upstream) as (client, url):
            assert await _exchange(client) == (
                200, ((b"x-a", b"b c"), (b"transfer-encoding", b"chunked")), b"abc0123456789")
            assert await _fetch(client) == (200, b"ok")
        assert upstream.connections == 1

    run(scenario())


# --- through the running proxy -----------------------------------------------------------------

def _hostile_heads(conn: socket.socket) -> None:
    """Per request, by its query: a head that never ends, a head of 10,000 headers, a chunk size
    that is not one after the first event, or a fair answer."""
    while request := read_request(conn):
        target = request.split(b" ", 2)[1]
        if target.endswith(b"?head=endless"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nx-endless: ")
            for _ in range(4096):  # 256 MiB at most: the proxy hangs up long before
                conn.sendall(b"v" * 65536)
        elif target.endswith(b"?head=many"):
            conn.sendall(b"HTTP/1.1 200 OK\r\n" + b"x-h: v\r\n" * 10_000 + b"content-length: 2\r\n\r\n{}")
        elif target.endswith(b"?body=bad-chunk"):
            conn.sendall(CHUNKED_HEAD + b"c\r\ndata: {}\n\n\r\n")
            time.sleep(0.05)  # the client has the status and the first event before the bad chunk
            conn.sendall(b"zz\r\n")
        else:
            conn.sendall(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}')


def test_the_proxy_answers_an_endless_or_crowded_head_with_502_protocol_and_serves_on():
    with raw_upstream(_hostile_heads) as upstream:
        settings = parse_settings({"upstreams": [{"name": "main", "url": upstream}]})
        with running_exporter(settings) as exporter:
            with httpx.Client(base_url=exporter, timeout=60) as client:
                chat = {"model": "m", "messages": []}
                statuses = [client.post(f"/v1/chat/completions{query}", json=chat).status_code
                            for query in ("?head=endless", "?head=many", "")]
                assert statuses == [502, 502, 200]
                with pytest.raises(httpx.RemoteProtocolError):  # a stream already started ends broken
                    with client.stream("POST", "/v1/chat/completions?body=bad-chunk", json=chat) as response:
                        assert response.status_code == 200
                        response.read()
                assert client.post("/v1/chat/completions", json=chat).json() == {"ok": True}
                scrape = Scrape.of(exporter)
    assert scrape.value("llm_upstream_errors_total", error_type="protocol") == 3
    assert scrape.value("llm_upstream_errors_total", error_type="connect") == 0
    assert scrape.value("llm_requests_total", code="502") == 2


# --- the httpx client (HTTPS, HTTP proxies, URL credentials) answers the same ---------------------

@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nx-long: " + b"v" * 100_000 + b"\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\n" + b"x-h: v\r\n" * 10_000 + b"content-length: 2\r\n\r\nok",
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
    b"HTTP/1.1 2x0 OK\r\n\r\n",
    CHUNKED_HEAD + b"6\r\ndata: \r\nzz\r\n",
], ids=["long-header", "10000-headers", "101", "status-garbage", "chunk-size-garbage-mid-body"])
def test_httpx_answers_a_malformed_or_oversized_head_or_body_with_a_protocol_error(answer, monkeypatch):
    async def scenario() -> None:
        # Sent through an HTTP proxy, so httpx serves it; the raw upstream plays the proxy.
        upstream = RawUpstream(lambda n: answer, pieces=lambda data: [data[:-4], data[-4:]])
        async with started(upstream) as (client, url):
            monkeypatch.setenv("HTTP_PROXY", url)
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            with pytest.raises(UpstreamError) as failure:
                await _exchange(client_for(parse_origin("http://llm.example.invalid"), TIMEOUTS))
        assert failure.value.error_type == catalog.ERROR_PROTOCOL
        assert upstream.requests[0].startswith(b"POST http://llm.example.invalid/x HTTP/1.1\r\n")

    run(scenario())
