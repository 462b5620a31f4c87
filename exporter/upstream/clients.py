"""Which client serves which upstream: chosen once per upstream, when the app starts.

The lean HTTP/1.1 client for plain HTTP reached directly (self-hosted backends beside the proxy,
where its own time shows), httpx for the rest (HTTPS, HTTP proxies, URL credentials, non-ASCII
host names), which a cloud API's latency dwarfs. docs/benchmarks.md has the measurements.
"""

from __future__ import annotations

from collections.abc import Iterable

from exporter.config import Timeouts, Upstream
from exporter.origin import Origin
from exporter.upstream import UpstreamClient
from exporter.upstream.http1 import Http1Client
from exporter.upstream.httpx_client import HttpxClient


def client_for(origin: Origin, timeouts: Timeouts) -> UpstreamClient:
    """The client for one upstream's origin, with its configured timeouts."""
    if origin.direct_plain_http:
        return Http1Client(origin, timeouts)
    return HttpxClient(origin, timeouts)


class Upstreams:
    """One client per configured upstream, by name; started and closed in the app's lifespan."""

    def __init__(self, upstreams: Iterable[Upstream]) -> None:
        self._upstreams = tuple(upstreams)
        self._clients: dict[str, UpstreamClient] = {}

    def start(self) -> None:
        self._clients = {upstream.name: client_for(upstream.origin, upstream.timeouts) for upstream in self._upstreams}

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()

    def __getitem__(self, name: str) -> UpstreamClient:
        client = self._clients.get(name)
        if client is None:
            raise RuntimeError(f"no client for upstream {name!r}: the clients start in the app's lifespan")
        return client
