"""The ASGI application: the exporter's own endpoints, and the proxy for every other path."""

from __future__ import annotations

import contextlib
import hmac
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Lifespan, Receive, Scope, Send

from exporter import catalog
from exporter.accesslog import AccessLog
from exporter.backends.collector import BackendCollectors
from exporter.capture import CapturingApp
from exporter.config import Settings, load_settings, secret_digest
from exporter.identity import ClientIdentity
from exporter.metrics import Metrics, mark_worker_dead, multiprocess_dir
from exporter.observation import Observation
from exporter.proxy import Proxy
from exporter.requestlog import RequestLog
from exporter.runbooks import runbooks
from exporter.upstream import UpstreamError
from exporter.upstream.clients import Upstreams
from exporter.usage_api import UsageApi

PROBE_TIMEOUT_SECONDS = 5.0
PROCESS_METRICS_INTERVAL_SECONDS = 5.0  # multiprocess mode: how often a worker writes its process metrics
# `llm-exporter serve --workers N` passes its command-line settings to the workers here (JSON).
WORKER_ARGS_ENV = "LLM_EXPORTER_WORKER_ARGS"


class Exporter:
    """The state shared by the endpoints: settings, metrics, the upstreams' clients, the request log."""

    def __init__(self, settings: Settings, observers: list[Callable[[Observation], None]] | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        for upstream in settings.upstreams:
            self.metrics.start_upstream(upstream.name)
        self.clients = Upstreams(settings.upstreams)
        self.clients_started = False
        self.probed = False  # every upstream probed once: /readyz turns 200
        telemetry = settings.telemetry
        self.request_log = RequestLog(settings.db_path, telemetry, on_drop=self.metrics.dropped)
        identity = ClientIdentity(self.request_log.salt, telemetry.user_header, telemetry.session_header)
        self.access_log = AccessLog(settings.access_log)
        own_observers = [self.request_log.observe]
        if settings.access_log.enabled:
            own_observers.append(self.access_log.observe)
        self.proxy = Proxy(settings, self.clients, self.metrics, [*own_observers, *(observers or [])],
                           identify=identity)
        self.usage_api = UsageApi(settings.db_path)
        self.backends = BackendCollectors(settings, self.clients, self.metrics.backend_state, self.proxy.models,
                                          PROBE_TIMEOUT_SECONDS)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # One client per upstream, with its configured timeouts (exporter.upstream.clients).
        self.request_log.start()
        if self.settings.access_log.enabled:
            self.access_log.start()
        try:
            self.clients.start()
            self.clients_started = True
            try:
                async with anyio.create_task_group() as group:
                    group.start_soon(self._probe_forever)
                    group.start_soon(self.backends.run_forever)
                    if multiprocess_dir():
                        group.start_soon(self._process_metrics_forever)
                    yield
                    group.cancel_scope.cancel()
            finally:
                self.clients_started = False
                await self.clients.close()
        finally:
            # Every request has finished by now: write all queued rows before the process exits.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.request_log.close)
                await anyio.to_thread.run_sync(self.access_log.close)
            mark_worker_dead()  # multiprocess mode: this worker's in-flight gauge stops counting

    async def _process_metrics_forever(self) -> None:
        while True:
            self.metrics.refresh_process_metrics()
            await anyio.sleep(PROCESS_METRICS_INTERVAL_SECONDS)

    async def _probe_forever(self) -> None:
        """llm_upstream_up: 1 while an upstream answers its probe path with a status below 500."""
        while True:
            async with anyio.create_task_group() as group:
                for upstream in self.settings.upstreams:
                    group.start_soon(self._probe, upstream)
            self.probed = True
            await anyio.sleep(self.settings.probe_interval)

    async def _probe(self, upstream) -> None:
        up = False
        with anyio.move_on_after(PROBE_TIMEOUT_SECONDS):  # and the upstream's own connect and idle limits
            try:
                response = await self.clients[upstream.name].open(
                    "GET", upstream.origin.target(upstream.probe_path), [], b"")
                await response.close()
                up = response.status < 500
            except UpstreamError:
                pass
        self.metrics[catalog.UPSTREAM_UP].labels(upstream.name).set(1 if up else 0)

    def guarded(self, endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """The endpoint behind access.admin_tokens: a bearer token from that list, else 401."""
        tokens = self.settings.access.admin_tokens
        if not tokens:
            return endpoint

        async def check(request: Request) -> Response:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            digest = secret_digest(token.strip()) if scheme.lower() == "bearer" else b""
            # Digests of equal length compared in constant time; a set lookup would be as safe.
            if not any(hmac.compare_digest(digest, known) for known in tokens):
                return JSONResponse({"error": "a valid bearer token is required (access.admin_tokens)"},
                                    status_code=401, headers={"www-authenticate": 'Bearer realm="llm-exporter"'})
            return await endpoint(request)

        return check

    async def metrics_endpoint(self, request: Request) -> Response:
        body, content_type = self.metrics.exposition(request.headers.get("accept"))
        return Response(body, headers={"content-type": content_type})

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if not self.clients_started or not self.probed:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ready"})


class ExporterApp(Starlette):
    """Starlette for the exporter's own endpoints, `proxied` for every other HTTP request.

    The one dispatch: a path is the exporter's own when one of its routes matches it, else it
    goes straight to the proxy. Starlette's error and exception middleware wrap every `send` in
    two closures and its router tries each route's pattern in turn; the proxy handles its own
    errors, so for proxied requests those layers would only cost time.
    """

    def __init__(self, routes: list[Route], lifespan: Lifespan, proxied: ASGIApp) -> None:
        super().__init__(routes=routes, lifespan=lifespan)
        self.proxied = proxied
        self._own_paths = frozenset(route.path for route in routes if not route.param_convertors)
        self._own_patterns = tuple(route.path_regex for route in routes if route.param_convertors)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._is_own(scope["path"]):
            await self.proxied(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    def _is_own(self, path: str) -> bool:
        return path in self._own_paths or any(pattern.match(path) for pattern in self._own_patterns)


def create_app(settings: Settings, observers: list[Callable[[Observation], None]] | None = None) -> Starlette:
    """The exporter as an ASGI app; `observers` also get every finished request's observation."""
    exporter = Exporter(settings, observers)
    guarded = exporter.guarded
    proxied: ASGIApp = exporter.proxy
    if settings.telemetry.capture_bodies:
        proxied = CapturingApp(exporter.proxy, settings.telemetry.capture_max_bytes, settings.access.secret_headers)
    app = ExporterApp(
        routes=[
            Route("/metrics", guarded(exporter.metrics_endpoint), methods=["GET"]),
            Route("/healthz", exporter.healthz, methods=["GET"]),
            Route("/readyz", exporter.readyz, methods=["GET"]),
            Route("/runbooks", runbooks, methods=["GET"]),
            Route("/api/usage", guarded(exporter.usage_api.usage), methods=["GET"]),
            Route("/api/requests", guarded(exporter.usage_api.requests), methods=["GET"]),
            Route("/api/requests/{request_id}", guarded(exporter.usage_api.one_request), methods=["GET"]),
        ],
        lifespan=exporter.lifespan,
        proxied=proxied,
    )
    app.state.exporter = exporter
    return app


def create_app_from_env() -> Starlette:
    """The app of one worker of `llm-exporter serve --workers N` (uvicorn imports it by name).

    The parent process validated the same settings before starting the workers, so this only
    repeats that work: the config file, the --upstream and --db flags from WORKER_ARGS_ENV.
    """
    args = json.loads(os.environ[WORKER_ARGS_ENV])
    return create_app(load_settings(args.get("config"), args.get("upstream"), args.get("db")))
