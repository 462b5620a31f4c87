"""The httpx client (exporter.upstream.httpx_client) for HTTPS, proxied and credentialed upstreams.

Against scripted raw upstreams over TLS (a self-signed certificate made at run time, trusted
through SSL_CERT_FILE), through an HTTP CONNECT proxy, and through the running proxy. The error types are the lean client's, case by case.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bench.tls import self_signed, server_context
from exporter import catalog
from exporter.config import Timeouts, parse_settings
from exporter.origin import parse_origin
from exporter.upstream import UpstreamClient, UpstreamError, http1
from exporter.upstream.clients import client_for
from exporter.upstream.httpx_client import HttpxClient, upstream_error
from tests.faulty import SSE_HEAD, chunked, raw_upstream, read_request
from tests.raw_upstream import LocalServer, RawUpstream
from tests.scrape import Scrape
from tests.servers import free_port, running_exporter

TIMEOUTS = Timeouts(connect=5, idle=5)
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def trusted(certificate, monkeypatch) -> tuple[Path, Path]:
    """The certificate, trusted as the system's CAs would be (OpenSSL reads SSL_CERT_FILE)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    return certificate


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


@contextlib.asynccontextmanager
async def started(upstream: RawUpstream, url_of=lambda url: url, timeouts: Timeouts = TIMEOUTS,
                  ) -> AsyncIterator[UpstreamClient]:
    async with upstream as url:
        client = client_for(parse_origin(url_of(url)), timeouts)
        try:
            yield client
        finally:
            await client.close()


async def _exchange(client: UpstreamClient, method: str = "POST", target: str = "/x",
                    headers: list[tuple[bytes, bytes]] | None = None, body: bytes = b"{}"):
    response = await client.open(method, target, headers or [], body)
    try:
        return response.status, response.raw_headers, b"".join([chunk async for chunk in response.chunks()])
    finally:
        await response.close()


def test_the_request_goes_out_with_the_proxys_headers_only_and_the_body_comes_back_as_sent(trusted):
    gzipped = bytes.fromhex("1f8b08000000000000ff4b4c4a0600c241243503000000")  # "abc", gzip
    answer = (b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(gzipped)) + gzipped

    async def scenario() -> None:
        upstream = RawUpstream(lambda n: answer, tls=server_context(*trusted))
        async with started(upstream) as client:
            assert isinstance(client, HttpxClient)
            for _ in range(3):
                status, _, body = await _exchange(client, target="/base/v1/../x/%7e?q='{|}'&x=%2F",
                                                  headers=[(b"content-type", b"application/json")], body=b'{"a":1}')
                assert (status, body) == (200, gzipped)  # not decompressed
        port = upstream.url.rsplit(":", 1)[1].encode()
        assert upstream.requests == [
            b"POST /base/v1/../x/%7e?q='{|}'&x=%2F HTTP/1.1\r\nHost: 127.0.0.1:" + port
            + b"\r\ncontent-type: application/json\r\nContent-Length: 7\r\n\r\n" + b'{"a":1}'
        ] * 3
        assert upstream.connections == 1  # kept alive

    run(scenario())


def test_redirects_and_cookies_go_back_untouched_and_url_credentials_become_basic_auth(trusted):
    redirect = b"HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\nset-cookie: s=1; Path=/\r\ncontent-length: 0\r\n\r\n"

    async def scenario() -> None:
        upstream = RawUpstream(lambda n: redirect, tls=server_context(*trusted))
        async with started(upstream, lambda url: url.replace("://", "://us%40er:p%3Ass@")) as client:
            for _ in range(2):
                status, headers, _ = await _exchange(client)
                assert status == 302 and (b"location", b"/elsewhere") in headers
        assert len(upstream.requests) == 2  # the redirect was not followed
        assert all(b"cookie:" not in request.lower() for request in upstream.requests)
        credentials = base64.b64encode(b"us@er:p:ss")
        assert all(b"\r\nAuthorization: Basic " + credentials + b"\r\n" in request for request in upstream.requests)

    run(scenario())


@pytest.mark.parametrize("tls", [False, True], ids=["lean", "httpx"])
def test_an_answer_to_head_has_no_body_whatever_its_length_says(tls, trusted):
    async def scenario() -> None:
        head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"
        upstream = RawUpstream(lambda n: head if n == 1 else OK, tls=server_context(*trusted) if tls else None)
        async with started(upstream) as client:
            assert await _exchange(client, "HEAD", body=b"") == (200, ((b"content-length", b"5"),), b"")
            assert (await _exchange(client))[2] == b"ok"
        assert upstream.connections == 1

    run(scenario())


# --- one error map: the same error types from both clients -----------------------------------

ERROR_CASES = {
    "closed-without-answer": (lambda n: None, catalog.ERROR_CONNECT),
    "status-garbage": (lambda n: b"HTTP/1.1 2x0 OK\r\n\r\n", catalog.ERROR_PROTOCOL),
    "status-600": (lambda n: b"HTTP/1.1 600 High\r\ncontent-length: 2\r\n\r\nok", catalog.ERROR_PROTOCOL),
    "101": (lambda n: b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n",
            catalog.ERROR_PROTOCOL),
    "1000-headers": (lambda n: b"HTTP/1.1 200 OK\r\n" + b"x-h: v\r\n" * 1000 + b"content-length: 2\r\n\r\nok",
                     catalog.ERROR_PROTOCOL),
    "70-KiB-header": (lambda n: b"HTTP/1.1 200 OK\r\nx-long: " + b"v" * 70_000 + b"\r\ncontent-length: 2\r\n\r\nok",
                      catalog.ERROR_PROTOCOL),
    "chunk-size-garbage": (lambda n: CHUNKED_HEAD + b"6\r\ndata: \r\nzz\r\n", catalog.ERROR_PROTOCOL),
    "body-cut-short": (lambda n: CHUNKED_HEAD + b"6\r\ndata: \r\n", catalog.ERROR_READ),
    "length-cut-short": (lambda n: b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nabc", catalog.ERROR_READ),
    "no-head-in-time": (lambda n: b"", catalog.ERROR_TIMEOUT),
    "body-stalls": (lambda n: CHUNKED_HEAD + b"6\r\ndata: \r\n", catalog.ERROR_TIMEOUT),
}
_CLOSING = {"body-cut-short", "length-cut-short"}


async def _error_type(client: UpstreamClient) -> str | None:
    try:
        await _exchange(client)
    except UpstreamError as exc:
        return exc.error_type
    return None


@pytest.mark.parametrize("case", ERROR_CASES)
@pytest.mark.parametrize("tls", [False, True], ids=["lean", "httpx"])
def test_both_clients_give_the_same_error_type(case, tls, trusted):
    answer, expected = ERROR_CASES[case]

    async def scenario() -> str | None:
        upstream = RawUpstream(answer, close_after_answer=case in _CLOSING,
                               pieces=lambda data: [data[:-4], data[-4:]] if len(data) > 4 else [data],
                               tls=server_context(*trusted) if tls else None)
        async with started(upstream, timeouts=Timeouts(connect=5, idle=0.5)) as client:
            assert isinstance(client, HttpxClient if tls else http1.Http1Client)
            return await _error_type(client)

    assert run(scenario()) == expected


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_refused_connection_is_a_connect_error(scheme, trusted):
    async def scenario() -> str | None:
        client = client_for(parse_origin(f"{scheme}://127.0.0.1:{free_port()}"), TIMEOUTS)
        try:
            return await _error_type(client)
        finally:
            await client.close()

    assert run(scenario()) == catalog.ERROR_CONNECT


def test_a_certificate_nobody_trusts_is_a_connect_error(certificate, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)

    async def scenario() -> str | None:
        async with started(RawUpstream(lambda n: OK, tls=server_context(*certificate))) as client:
            return await _error_type(client)

    assert run(scenario()) == catalog.ERROR_CONNECT


@pytest.mark.parametrize("exc, before_head, in_body", [
    (httpx.ConnectTimeout("t"), catalog.ERROR_CONNECT, catalog.ERROR_CONNECT),
    (httpx.ReadTimeout("t"), catalog.ERROR_TIMEOUT, catalog.ERROR_TIMEOUT),
    (httpx.WriteTimeout("t"), catalog.ERROR_TIMEOUT, catalog.ERROR_TIMEOUT),
    (httpx.ConnectError("refused"), catalog.ERROR_CONNECT, catalog.ERROR_READ),
    (httpx.ProxyError("407"), catalog.ERROR_CONNECT, catalog.ERROR_READ),
    (httpx.ReadError("reset"), catalog.ERROR_CONNECT, catalog.ERROR_READ),
    (httpx.WriteError("broken pipe"), catalog.ERROR_CONNECT, catalog.ERROR_READ),
    (httpx.LocalProtocolError("bad header"), catalog.ERROR_CONNECT, catalog.ERROR_READ),
    (httpx.RemoteProtocolError("Server disconnected without sending a response."),
     catalog.ERROR_CONNECT, catalog.ERROR_READ),
    (httpx.RemoteProtocolError("peer closed connection without sending complete message body: incomplete chunked read"),
     catalog.ERROR_CONNECT, catalog.ERROR_READ),
    (httpx.RemoteProtocolError("peer unexpectedly closed connection"), catalog.ERROR_CONNECT, catalog.ERROR_READ),
    (httpx.RemoteProtocolError("illegal chunk header"), catalog.ERROR_PROTOCOL, catalog.ERROR_PROTOCOL),
    (httpx.RemoteProtocolError("Receive buffer too long"), catalog.ERROR_PROTOCOL, catalog.ERROR_PROTOCOL),
], ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None)
def test_the_error_map(exc, before_head, in_body):
    assert upstream_error(exc, body_started=False).error_type == before_head
    assert upstream_error(exc, body_started=True).error_type == in_body


# --- through an HTTP proxy ---------------------------------------------------------------------

class ConnectProxy(LocalServer):
    """An HTTP proxy that serves CONNECT only (as HTTPS goes through a proxy); records the targets."""

    def __init__(self) -> None:
        self.targets: list[bytes] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method, target, _ = (await reader.readuntil(b"\r\n\r\n")).split(b" ", 2)
        self.targets.append(target)
        host, _, port = target.rpartition(b":")
        upstream_reader, upstream_writer = await asyncio.open_connection(host.decode(), int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()


def test_https_goes_through_the_configured_proxy(trusted, monkeypatch):
    async def scenario() -> None:
        proxy = ConnectProxy()
        upstream = RawUpstream(lambda n: OK, tls=server_context(*trusted))
        async with proxy as proxy_url, upstream as url:
            monkeypatch.setenv("HTTPS_PROXY", proxy_url)
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            origin = parse_origin(url)
            assert origin.http_proxy == proxy_url
            client = client_for(origin, TIMEOUTS)
            try:
                assert (await _exchange(client))[2] == b"ok"
                assert (await _exchange(client))[2] == b"ok"
            finally:
                await client.close()
        assert proxy.targets == [url.removeprefix("https://").encode()]  # one tunnel, kept alive
        assert upstream.requests[0].startswith(b"POST /x HTTP/1.1\r\n")

    run(scenario())


# --- through the running proxy -----------------------------------------------------------------

_EVENTS = (b'data: {"id":"c1","object":"chat.completion.chunk","model":"demo-gpt-mini",'
           b'"choices":[{"index":0,"delta":{"content":"a b"}}]}\n\n'
           b'data: {"id":"c1","object":"chat.completion.chunk","model":"demo-gpt-mini","choices":[],'
           b'"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}\n\n'
           b"data: [DONE]\n\n")


def _tls_stream(context: ssl.SSLContext):
    """A behaviour for tests.faulty.raw_upstream: TLS, then one SSE stream per request, kept alive."""
    def behaviour(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            while read_request(tls):
                tls.sendall(SSE_HEAD + b"".join(chunked(event + b"\n\n") for event in _EVENTS.split(b"\n\n")[:-1])
                            + b"0\r\n\r\n")
    return behaviour


def test_the_proxy_relays_an_https_upstream_byte_for_byte_and_counts_its_tokens(trusted):
    chat = {"model": "demo-gpt-mini", "max_tokens": 4, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "a b c"}]}
    with raw_upstream(_tls_stream(server_context(*trusted))) as upstream:
        settings = parse_settings({"upstreams": [{"name": "main", "url": upstream.replace("http://", "https://")}]})
        with running_exporter(settings) as exporter:
            with httpx.Client(base_url=exporter, timeout=30) as client:
                replies = [client.post("/v1/chat/completions", json=chat) for _ in range(2)]
            scrape = Scrape.of(exporter)
    assert [(reply.status_code, reply.content) for reply in replies] == [(200, _EVENTS)] * 2
    assert scrape.value("llm_tokens_total", type="output") == 8
    assert scrape.value("llm_upstream_errors_total") == 0
