"""The ASGI application: the exporter's own endpoints, and the proxy for every other path."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import anyio
import anyio.to_thread
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from exporter.capture import CapturingApp
from exporter.config import Settings
from exporter.identity import ClientIdentity
from exporter.metrics import Metrics
from exporter.observation import Observation
from exporter.proxy import Proxy
from exporter.requestlog import RequestLog
from exporter.usage_api import UsageApi

PROBE_TIMEOUT_SECONDS = 5.0


class Exporter:
    """The state shared by the endpoints: settings, metrics, the upstream pool, the request log."""

    def __init__(self, settings: Settings, observers: list[Callable[[Observation], None]] | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.client: httpx.AsyncClient | None = None
        self.probed = False  # every upstream probed once: /readyz turns 200
        telemetry = settings.telemetry
        self.request_log = RequestLog(settings.db_path, telemetry, on_drop=self.metrics.telemetry_dropped.inc)
        identity = ClientIdentity(self.request_log.salt, telemetry.user_header, telemetry.session_header)
        self.proxy = Proxy(settings, self._client, self.metrics, [self.request_log.observe, *(observers or [])],
                           identify=identity)
        self.usage_api = UsageApi(settings.db_path)

    def _client(self) -> httpx.AsyncClient:
        if self.client is None:
            raise RuntimeError("the upstream client is created in the app's lifespan")
        return self.client

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # One pooled client for all upstreams; timeouts are set per request from the upstream's config.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
        self.request_log.start()
        try:
            async with httpx.AsyncClient(limits=limits, follow_redirects=False) as client:
                self.client = client
                async with anyio.create_task_group() as group:
                    group.start_soon(self._probe_forever)
                    yield
                    group.cancel_scope.cancel()
                self.client = None
        finally:
            # Every request has finished by now: write all queued rows before the process exits.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.request_log.close)

    async def _probe_forever(self) -> None:
        """llm_upstream_up: 1 while an upstream answers its probe path with a status below 500."""
        while True:
            async with anyio.create_task_group() as group:
                for upstream in self.settings.upstreams:
                    group.start_soon(self._probe, upstream)
            self.probed = True
            await anyio.sleep(self.settings.probe_interval)

    async def _probe(self, upstream) -> None:
        timeout = min(PROBE_TIMEOUT_SECONDS, upstream.timeouts.connect + upstream.timeouts.idle)
        try:
            response = await self._client().get(upstream.url + upstream.probe_path, timeout=timeout)
            up = response.status_code < 500
        except httpx.HTTPError:
            up = False
        self.metrics.upstream_up.labels(upstream.name).set(1 if up else 0)

    async def metrics_endpoint(self, request: Request) -> Response:
        body, content_type = self.metrics.exposition(request.headers.get("accept"))
        return Response(body, headers={"content-type": content_type})

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if self.client is None or not self.probed:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ready"})


def create_app(settings: Settings, observers: list[Callable[[Observation], None]] | None = None) -> Starlette:
    """The exporter as an ASGI app; `observers` also get every finished request's observation."""
    exporter = Exporter(settings, observers)
    app = Starlette(
        routes=[
            Route("/metrics", exporter.metrics_endpoint, methods=["GET"]),
            Route("/healthz", exporter.healthz, methods=["GET"]),
            Route("/readyz", exporter.readyz, methods=["GET"]),
            Route("/api/usage", exporter.usage_api.usage, methods=["GET"]),
            Route("/api/requests", exporter.usage_api.requests, methods=["GET"]),
            Route("/api/requests/{request_id}", exporter.usage_api.one_request, methods=["GET"]),
        ],
        lifespan=exporter.lifespan,
    )
    app.router.default = exporter.proxy  # every other path is proxied
    if settings.telemetry.capture_bodies:
        app.router.default = CapturingApp(exporter.proxy, settings.telemetry.capture_max_bytes)
    app.state.exporter = exporter
    return app
