"""Reads every configured upstream's state endpoints, on the health probe's schedule.

Bounded like the probe: each read within the probe's time limit, at most MAX_BODY_BYTES of
answer, lists of at most reading.MAX_ENTRIES, model names through the proxy's own bounded
ModelLabels (so both sides label a model alike). A parser's failure is that read's error and
never stops the loop.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from exporter.backends.kinds import COLLECTORS
from exporter.backends.reading import Endpoint, Round, Unreadable
from exporter.backends.state import BackendState
from exporter.credentials import key_header
from exporter.labels import ModelLabels
from exporter.upstream import UpstreamError
from exporter.upstream.clients import Upstreams

if TYPE_CHECKING:
    from exporter.config import Settings, Upstream

MAX_BODY_BYTES = 1024 * 1024
# Statuses meaning "this server does not offer the endpoint" (llama.cpp without --metrics or with
# --no-slots answers 501): no series and no error, rather than an error on every round.
NOT_OFFERED = frozenset({404, 501})

log = logging.getLogger(__name__)


class TooLarge(Exception):
    pass


class BackendCollectors:
    """The loop reading every upstream with `backend_state` on; results go to `state`."""

    def __init__(self, settings: Settings, clients: Upstreams, state: BackendState, models: ModelLabels,
                 timeout: float) -> None:
        self.upstreams = [u for u in settings.upstreams if u.backend_state and u.kind in COLLECTORS]
        self.clients, self.state, self.models = clients, state, models
        self.interval, self.timeout = settings.probe_interval, timeout
        for upstream in self.upstreams:
            state.configure(upstream.name, [endpoint.path for endpoint in COLLECTORS[upstream.kind]])

    async def run_forever(self) -> None:
        while self.upstreams:
            async with anyio.create_task_group() as group:
                for upstream in self.upstreams:
                    group.start_soon(self.read_upstream, upstream)
            await anyio.sleep(self.interval)

    async def read_upstream(self, upstream: Upstream) -> None:
        """One round: the kind's endpoints in order (a later one may use what an earlier one read)."""
        round_ = Round(self.models)
        for endpoint in COLLECTORS[upstream.kind]:
            await self._read(upstream, endpoint, round_)

    async def _read(self, upstream: Upstream, endpoint: Endpoint, round_: Round) -> None:
        status, body = None, None
        with anyio.move_on_after(min(self.timeout, upstream.timeouts.connect + upstream.timeouts.idle)):
            try:
                status, body = await self._fetch(upstream, endpoint.path)
            except (UpstreamError, TooLarge) as exc:
                log.debug("backend state %s %s: %s", upstream.name, endpoint.path, exc)
        if status in NOT_OFFERED:
            self.state.not_offered(upstream.name, endpoint.path)
            return
        if status != 200 or body is None:
            self.state.failed(upstream.name, endpoint.path)
            return
        try:
            samples = endpoint.parse(body, round_)
        except Unreadable as exc:
            log.debug("backend state %s %s: %s", upstream.name, endpoint.path, exc)
            self.state.failed(upstream.name, endpoint.path)
        except Exception:  # a parser's bug must not end the loop: counted like a bad answer
            log.exception("backend state %s %s: parser failed", upstream.name, endpoint.path)
            self.state.failed(upstream.name, endpoint.path)
        else:
            self.state.succeeded(upstream.name, endpoint.path, samples)

    async def _fetch(self, upstream: Upstream, path: str) -> tuple[int, bytes | None]:
        headers = [key_header(upstream.api_key_header, upstream.api_key)] if upstream.api_key else []
        response = await self.clients[upstream.name].open("GET", upstream.origin.target(path), headers, b"")
        try:
            if response.status != 200:
                return response.status, None
            body = bytearray()
            async for chunk in response.chunks():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise TooLarge(f"answer over {MAX_BODY_BYTES} bytes")
            return 200, bytes(body)
        finally:
            await response.close()
