"""httpx for HTTPS upstreams, upstreams behind an HTTP proxy and upstreams with URL credentials.

A maintained library owns TLS and proxies here. It costs more CPU per request than aiohttp did,
and adds little time beside a cloud API's hundreds of milliseconds (docs/benchmarks.md, "Upstream
clients against a cloud-like HTTPS upstream").
It is set up to relay, not to browse: the client's bytes go on unchanged (aiter_raw, no
decompression), only the headers the proxy passes are sent (plus Host and Content-Length), no
redirect is followed, no cookie is kept, the request target goes out exactly as composed (not
normalised), and the number of connections is the upstream's to limit.

h11 bounds a response head at 100 KiB while it reads it; the head is then held to the limits the
lean client applies (MAX_HEADERS fields, MAX_HEAD_BYTES). One table maps httpx's exceptions to
UpstreamError.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import unquote

import httpx

from exporter import catalog
from exporter.config import Timeouts
from exporter.origin import Origin
from exporter.upstream import MAX_HEAD_BYTES, MAX_HEADERS, UpstreamError

KEEPALIVE_SECONDS = 30.0  # an idle TLS connection is worth keeping: its handshake costs a round trip or two

# (exception, error type before the response head is in, error type while the body is read), most
# specific first. Any other TransportError (connect, TLS, proxy, reset, a closed connection, a
# request h11 refuses to send) is `connect` before the head, as with the lean client: no answer
# came; `read` after it: the upstream broke off.
_ERROR_MAP: tuple[tuple[type[Exception], str, str], ...] = (
    (httpx.ConnectTimeout, catalog.ERROR_CONNECT, catalog.ERROR_CONNECT),
    (httpx.TimeoutException, catalog.ERROR_TIMEOUT, catalog.ERROR_TIMEOUT),  # read, write (pool: none)
    (httpx.RemoteProtocolError, catalog.ERROR_PROTOCOL, catalog.ERROR_PROTOCOL),
)
# httpcore and h11 tell a connection closed too early from a malformed answer only by the message
# of their RemoteProtocolError.
_CLOSED_EARLY = ("Server disconnected", "peer closed connection", "peer unexpectedly closed")


def upstream_error(exc: httpx.TransportError, body_started: bool) -> UpstreamError:
    """The UpstreamError for an httpx failure before the head is in, or while the body is read."""
    closed_early = isinstance(exc, httpx.RemoteProtocolError) and str(exc).startswith(_CLOSED_EARLY)
    for kind, before_head, in_body in _ERROR_MAP:
        if isinstance(exc, kind) and not closed_early:
            return UpstreamError(in_body if body_started else before_head, exc)
    return UpstreamError(catalog.ERROR_READ if body_started else catalog.ERROR_CONNECT, exc)


def _refused(response: httpx.Response) -> str | None:
    """Why a response head is refused (a protocol error), or None."""
    if response.status_code == 101 or not 100 <= response.status_code <= 599:
        return f"status {response.status_code}"
    headers = response.headers.raw
    if len(headers) > MAX_HEADERS or sum(len(name) + len(value) + 4 for name, value in headers) > MAX_HEAD_BYTES:
        return f"a head over {MAX_HEADERS} fields or {MAX_HEAD_BYTES} bytes"
    return None


def _basic_auth(origin: Origin) -> httpx.BasicAuth | None:
    """The URL's credentials, percent-decoded; they replace any Authorization header sent."""
    if origin.user is None:
        return None
    return httpx.BasicAuth(unquote(origin.user), unquote(origin.password or ""))


class _ExactTarget(httpx.URL):
    """The origin's URL with the request target exactly as composed (exporter.origin).

    httpx would remove dot segments from a path ("/base/../x" is "/x": out of the base path) and
    quote characters; its "target" extension would also become an HTTPS proxy's CONNECT target.
    httpx's transport takes the target from raw_path, so that is where it is set.
    """

    def __init__(self, origin: httpx.URL, target: bytes) -> None:
        super().__init__(origin)
        self._target = target

    @property
    def raw_path(self) -> bytes:
        return self._target


class HttpxResponse:
    """An UpstreamResponse over an httpx streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status: int = response.status_code
        self.raw_headers: tuple[tuple[bytes, bytes], ...] = tuple(response.headers.raw)

    def header(self, name: str) -> str:
        return self._response.headers.get(name, "")

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, transfer coding removed, content coding kept (the client's bytes)."""
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.TransportError as exc:
            raise upstream_error(exc, body_started=True) from exc

    async def close(self) -> None:
        """Back to the pool after a complete body; a connection left mid-body is closed instead."""
        await self._response.aclose()


class HttpxClient:
    """An UpstreamClient for one origin through httpx: keep-alive, HTTP/1.1, its own pool."""

    def __init__(self, origin: Origin, timeouts: Timeouts) -> None:
        self._url = httpx.URL(scheme=origin.scheme, host=origin.host, port=origin.port)
        self._host = origin.host_header
        # The configured limits as they are: connect, then the longest wait for the upstream
        # (its head, each piece of its body, each write). No pool wait: the pool has no limit.
        self._timeout = httpx.Timeout(connect=timeouts.connect, read=timeouts.idle, write=timeouts.idle, pool=None)
        self._client = httpx.AsyncClient(
            auth=_basic_auth(origin),
            proxy=origin.http_proxy,
            verify=ssl.create_default_context(),  # the system's CAs, not certifi's
            follow_redirects=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None,
                                keepalive_expiry=KEEPALIVE_SECONDS),
            cookies=CookieJar(DefaultCookiePolicy(allowed_domains=())),  # keeps none
            trust_env=False,  # the proxy comes from the origin, parsed once at start-up
        )

    async def open(self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes) -> HttpxResponse:
        # Built here, not with build_request: that would add httpx's default User-Agent, Accept,
        # Accept-Encoding and Connection.
        request = httpx.Request(method, self._url, headers=[(b"Host", self._host), *headers], content=body or None,
                                extensions={"timeout": self._timeout.as_dict()})
        request.url = _ExactTarget(self._url, target.encode("latin-1"))
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise upstream_error(exc, body_started=False) from exc
        refused = _refused(response)
        if refused is not None:
            await response.aclose()
            raise UpstreamError(catalog.ERROR_PROTOCOL, ValueError(refused))
        return HttpxResponse(response)

    async def close(self) -> None:
        await self._client.aclose()
