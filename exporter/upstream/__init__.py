"""The upstream seam: what the proxy needs from an HTTP client, and the one error it sees.

Each configured upstream gets one client at start-up (exporter.upstream.clients): the lean
HTTP/1.1 client (exporter.upstream.http1) for plain HTTP reached directly, httpx
(exporter.upstream.httpx_client) for HTTPS, HTTP proxies and URL credentials. docs/benchmarks.md
has the measurements behind that choice. Both read a response as RFC 9112 says, bound what an
upstream sends by the same limits, send a request exactly once and turn every failure into
UpstreamError.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

MAX_HEAD_BYTES = 64 * 1024  # status line and header fields of one response, interim answers included
MAX_HEADERS = 100  # header fields of one response (and, separately, trailer fields)


class UpstreamError(Exception):
    """The upstream could not be reached (connect), was too slow (timeout), broke off (read) or
    answered with something that is not HTTP/1.1 within the limits (protocol).

    error_type is the llm_upstream_errors_total label value (exporter.catalog).
    """

    def __init__(self, error_type: str, cause: BaseException | None = None) -> None:
        super().__init__(f"{error_type}: {type(cause).__name__ if cause else 'error'}")
        self.error_type = error_type
        self.cause = cause


class UpstreamResponse(Protocol):
    """A response whose head is in and whose body has not been read yet; close() it in every case."""

    status: int
    raw_headers: tuple[tuple[bytes, bytes], ...]

    def header(self, name: str) -> str:
        """The value of a header field (any case), "" when absent."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, transfer coding removed, content coding kept (the client's bytes).
        Raises UpstreamError."""
        ...

    async def close(self) -> None:
        """The connection back to its pool after a complete body, else closed."""
        ...


class UpstreamClient(Protocol):
    """Keep-alive connections to one upstream, with that upstream's configured timeouts."""

    async def open(self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes) -> UpstreamResponse:
        """Send the request once, for `target` (a path and query composed by Origin.target), with
        `headers` as given (the client adds only Host and Content-Length); the response once its
        head is in. Raises UpstreamError."""
        ...

    async def close(self) -> None:
        """Close every connection (the app's lifespan ends)."""
        ...
