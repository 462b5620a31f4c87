"""The proxy: forwards one request to its upstream and streams the answer back as it arrives.

Every byte reaches the client unchanged and as soon as the upstream sends it; the usage tap reads
a copy beside the stream. Whatever happens (upstream down, slow, dying mid-stream, client gone),
the request ends in exactly one observation.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from exporter import catalog
from exporter.config import Settings, Upstream
from exporter.credentials import KEY_HEADER_NAMES, key_header, request_key
from exporter.families import OTHER, ApiFamily, route
from exporter.framing import StreamUsageHider
from exporter.labels import ModelLabels
from exporter.metrics import Metrics
from exporter.observation import Observation
from exporter.request_body import Fields, Spans, read_fields, top_level_fields, with_usage_option
from exporter.tap import UsageTap
from exporter.text import safe
from exporter.upstream import UpstreamError
from exporter.upstream.clients import Upstreams

# Hop-by-hop headers (RFC 9110 7.6.1) are the connection's, not the message's.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
    b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
# Encodings the tap can read; others are not offered to the upstream.
READABLE_ENCODINGS = ("gzip", "deflate", "identity")
# A client's X-Request-ID is kept when it looks like an id (a UUID, a trace id...), else one is made.
REQUEST_ID_HEADER = b"x-request-id"
UPSTREAM_REQUEST_ID_HEADER = b"x-upstream-request-id"
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")

# Set by the proxy itself on the upstream request (the client library computes the length).
_REQUEST_HEADERS_SET_HERE = frozenset({b"host", b"content-length", b"accept-encoding"})


class RequestTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class Proxy:
    """The ASGI app for every path that is not one of the exporter's own."""

    def __init__(
        self,
        settings: Settings,
        pool: Upstreams,
        metrics: Metrics,
        observers: list[Callable[[Observation], None]],
        identify: Callable[[Observation, list[tuple[bytes, bytes]], dict[str, Any] | None], None] | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool  # the upstreams' clients (keep-alive pools), started in the app's lifespan
        self.metrics = metrics
        self.models = ModelLabels(settings.max_models, settings.model_patterns)
        self.observers = observers
        self.identify = identify  # fills key_id, user, session_id (exporter.identity)
        # access.client_keys: digest of an allowed key -> its key id (None: the salted hash id)
        self.client_keys = settings.access.client_keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = time.monotonic()
        family, path_model = route(scope["method"], scope["path"])
        obs = Observation(
            request_id=_request_id(scope["headers"]), ts=time.time(), upstream=self.settings.default_upstream,
            api=family.name, model=catalog.MODEL_UNKNOWN, model_label=catalog.MODEL_UNKNOWN,
            stream=False, request_bytes=0,
        )
        in_flight = None
        try:
            key_id = None
            if not _origin_form(scope):
                obs.status_code = 400
                await _send_error(send, family, 400, "the request target must be a path that starts with '/'",
                                  obs.request_id)
                return
            if self.client_keys:
                allowed, key_id = self._allowed(request_key(scope["headers"], scope.get("query_string") or b""))
                if not allowed:
                    obs.status_code = 401
                    await _send_error(send, family, 401, "the proxy does not know this API key", obs.request_id)
                    return
            try:
                async with asyncio.timeout(self.settings.request_body_timeout):
                    body = await _read_body(scope, receive, self.settings.max_request_bytes)
            except RequestTooLarge:
                obs.status_code = 413
                await _send_error(send, family, 413, "request body is larger than the proxy's limit",
                                  obs.request_id)
                return
            except TimeoutError:
                obs.status_code = 408
                await _send_error(send, family, 408, "the request body did not arrive within the proxy's time limit",
                                  obs.request_id)
                return
            except ClientGone:
                obs.status_code = int(catalog.CODE_CLIENT_CLOSED)
                return
            obs.request_bytes = len(body)
            fields, spans = await read_fields(body) if family.name != "other" else (None, None)
            model = fields.get("model") if fields else None
            model = model or path_model  # Gemini and Azure deployments name the model in the path
            obs.model = safe(model) if isinstance(model, str) and model else catalog.MODEL_UNKNOWN
            obs.model_label = self.models.label(model if isinstance(model, str) else None)
            stream = fields.get("stream", family.stream_default) if fields else False
            obs.stream = stream is True
            if self.identify is not None:
                self.identify(obs, scope["headers"], fields)
            if key_id is not None:
                obs.key_id = key_id  # the configured name of an allowed key
            upstream = self.settings.upstream_for(obs.model)
            obs.upstream = upstream.name
            hide_usage = False
            if (obs.stream and family.asks_stream_usage and not upstream.reports_stream_usage
                    and fields is not None):
                body, hide_usage = _ask_for_usage(fields, spans, body)
            copies = _copies(fields)

            in_flight = self.metrics[catalog.IN_FLIGHT].labels(upstream.name)
            in_flight.inc()
            exchange = _Exchange(asyncio.current_task())

            async def send_noting_the_end(message: Message) -> None:
                if message["type"] == "http.response.body":
                    if not message.get("more_body", False):
                        exchange.complete = True  # from here on a disconnect is the normal end, not a 499
                else:
                    exchange.started = True
                await send(message)

            watcher = asyncio.ensure_future(_cancel_on_disconnect(receive, exchange, obs))
            try:
                await self._forward(
                    scope, send_noting_the_end, family, upstream, body, hide_usage, copies, obs, received, exchange)
            except asyncio.CancelledError:
                if not exchange.client_gone:
                    raise  # not ours (the server is shutting down): let it through
                exchange.task.uncancel()
            finally:
                watcher.cancel()
        finally:
            if in_flight is not None:
                in_flight.dec()
            obs.duration_seconds = time.monotonic() - received
            self._finish(obs)

    async def _forward(
        self, scope: Scope, send: Send, family: ApiFamily, upstream: Upstream, body: bytes,
        hide_usage: bool, copies: int, obs: Observation, received: float, exchange: _Exchange,
    ) -> None:
        """The exchange with the upstream, cut off at its total time limit."""
        try:
            async with asyncio.timeout(upstream.timeouts.total):
                await self._relay(scope, send, family, upstream, body, hide_usage, copies, obs, received, exchange)
        except TimeoutError:  # only the total limit: the clients turn their own timeouts into UpstreamError
            obs.error_type = catalog.ERROR_TIMEOUT
            if not exchange.started:
                await self._fail(send, family, obs, catalog.ERROR_TIMEOUT, upstream, None)
        # After a failure mid-response the body stays unfinished: uvicorn then closes the
        # connection, so the client sees a broken stream instead of a falsely complete one.

    async def _relay(
        self, scope: Scope, send: Send, family: ApiFamily, upstream: Upstream, body: bytes,
        hide_usage: bool, copies: int, obs: Observation, received: float, exchange: _Exchange,
    ) -> None:
        """Send the request, then pass the response on chunk by chunk with the tap beside it."""
        try:
            response = await self.pool[upstream.name].open(
                scope["method"],
                _upstream_target(upstream, scope),
                _upstream_headers(scope["headers"], upstream, identity=hide_usage,
                                  send_key=self._sends_key(upstream, scope)),
                body,
            )
        except UpstreamError as exc:
            await self._fail(send, family, obs, exc.error_type, upstream, exc.cause)
            return
        tap = None
        try:
            obs.status_code = status = response.status
            if status >= 500 or status == 429:
                obs.error_type = catalog.ERROR_STATUS
            success = 200 <= status < 300
            tap = UsageTap(
                family if success else OTHER,  # error bodies carry no usage
                response.header("content-type"),
                response.header("content-encoding"),
                copies,
            )
            hider = StreamUsageHider() if hide_usage and success else None
            await send({
                "type": "http.response.start",
                "status": status,
                # A rewritten body has another length; a 204 or 304 has none, whatever the upstream said.
                "headers": _client_headers(response.raw_headers, hider is not None or status in (204, 304),
                                           obs.request_id),
            })
            async for chunk in response.chunks():
                tap.feed(chunk)
                if hider is not None:
                    chunk = hider.feed(chunk)
                    if not chunk:
                        continue
                obs.response_bytes += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                # the client has the final event: hanging up now (as the SDKs do) is no 499
                exchange.complete = exchange.complete or tap.ended
            tap.close()
            tail = hider.close() if hider is not None else b""
            obs.response_bytes += len(tail)
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        except UpstreamError as exc:
            # timeout: an idle gap longer than the limit; read: the upstream broke off mid-response
            obs.error_type = exc.error_type
        finally:
            await response.close()
            _take_tap(obs, tap, received)
            if tap is not None and tap.inflate_limited:
                self.metrics.dropped(catalog.DROP_INFLATE_LIMIT)

    async def _fail(
        self, send: Send, family: ApiFamily, obs: Observation, error_type: str,
        upstream: Upstream, exc: BaseException | None,
    ) -> None:
        """502 when the upstream could not be reached or answered malformed HTTP, 504 when it timed out."""
        obs.error_type = error_type
        obs.status_code = 504 if error_type == catalog.ERROR_TIMEOUT else 502
        if obs.status_code == 504:
            message = f"upstream {upstream.name} timed out"
        elif error_type == catalog.ERROR_PROTOCOL:
            message = f"upstream {upstream.name} sent a malformed HTTP answer"
        else:
            message = f"upstream {upstream.name} could not be reached: {type(exc).__name__}"
        await _send_error(send, family, obs.status_code, message, obs.request_id)

    def _sends_key(self, upstream: Upstream, scope: Scope) -> bool:
        """Whether the upstream's configured key goes with this request: when the client sent no key
        (in any credential header or a `key=` parameter), or when the client's key is the proxy's
        own (access.client_keys)."""
        if not upstream.api_key:
            return False
        return bool(self.client_keys) or request_key(scope["headers"], scope.get("query_string") or b"") is None

    def _allowed(self, credential: bytes | None) -> tuple[bool, str | None]:
        """Whether the client's key is one of access.client_keys, and the key id configured for it."""
        if credential is None:
            return False, None
        digest = hashlib.sha256(credential).digest()
        if digest not in self.client_keys:
            return False, None
        return True, self.client_keys[digest]

    def _finish(self, obs: Observation) -> None:
        # Cost once per request: the same figure feeds llm_cost_usd_total and the request log.
        obs.cost_usd = self.settings.pricing.cost(obs.model, obs.response_model, obs.usage)
        self.metrics.observe(obs)
        for observer in self.observers:
            observer(obs)


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID when it is a plausible id (letters, digits and ._:/+=@-, at most
    128), else 128 random bits as hex, like uuid4().hex, without uuid4's os.urandom system call.

    The id names a row of the request log, it guards nothing, so the random module's generator
    (seeded from the OS at start, and again in each forked worker) is enough. A system call on
    the request path is also a point where the request-log writer thread can take the GIL.
    """
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if _VALID_REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return f"{random.getrandbits(128):032x}"


def _take_tap(obs: Observation, tap: UsageTap | None, received: float) -> None:
    if tap is None:
        return
    obs.usage = tap.usage
    obs.response_model = tap.response_model
    if obs.stream and tap.first_content_at is not None:
        obs.ttft_seconds = tap.first_content_at - received


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, read once; RequestTooLarge as soon as it passes `limit`."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise RequestTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _origin_form(scope: Scope) -> bool:
    """Whether the request target is a path (origin-form): absolute-form (`http://host/...`),
    authority-form and `*` are not proxied. exporter.httpserver keeps such a target in raw_path."""
    return (scope.get("raw_path") or scope["path"].encode()).startswith(b"/")


def _ask_for_usage(fields: Fields, spans: Spans | None, body: bytes) -> tuple[bytes, bool]:
    """Ask an OpenAI stream for usage; True when the client had not, so it must be hidden again."""
    options = fields.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return body, False
    if spans is None and "stream_options" in fields:
        scanned = top_level_fields(body)  # a small body: where its stream_options value is
        spans = scanned[1] if scanned is not None else None
    if spans is not None and "stream_options" in spans and "stream_options" not in fields:
        return body, False  # a stream_options too large to read: left as the client sent it
    return with_usage_option(body, spans, options), True


MAX_COPIES = 128


def _copies(fields: Fields | None) -> int:
    """How many results the request asks for per prompt (`n`, llama.cpp's `n_cmpl`); 1 if odd."""
    n = fields.get("n", fields.get("n_cmpl")) if fields else None
    return n if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_COPIES else 1


def _upstream_target(upstream: Upstream, scope: Scope) -> str:
    """The upstream's base path, then the client's path and query exactly as sent."""
    path = scope.get("raw_path") or scope["path"].encode()
    return upstream.origin.target(path.decode("latin-1"), (scope.get("query_string") or b"").decode("latin-1"))


def _not_forwarded(raw: list[tuple[bytes, bytes]], also: frozenset[bytes]) -> frozenset[bytes]:
    """Header names not to pass on: hop-by-hop ones, those the Connection header names, and `also`."""
    named = {token.strip().lower() for name, value in raw if name.lower() == b"connection" for token in value.split(b",")}
    return HOP_BY_HOP | also | named


def _upstream_headers(
    raw: list[tuple[bytes, bytes]], upstream: Upstream, identity: bool, send_key: bool,
) -> list[tuple[bytes, bytes]]:
    """The client's headers minus hop-by-hop ones, with the upstream's key when `send_key` (then
    no credential header of the client's goes on: the upstream's key is the only one it sees)."""
    also = _REQUEST_HEADERS_SET_HERE | (KEY_HEADER_NAMES if send_key else frozenset())
    dropped = _not_forwarded(raw, also)
    headers = [(name, value) for name, value in raw if name not in dropped]
    accepted = [
        token for token in (t.split(b";")[0].strip().decode("latin-1").lower()
                            for name, value in raw if name == b"accept-encoding" for t in value.split(b","))
        if token in READABLE_ENCODINGS
    ]
    # The proxy must read what it rewrites, so a stream it edits comes uncompressed.
    headers.append((b"accept-encoding", b"identity" if identity or not accepted else ", ".join(accepted).encode()))
    if send_key:
        headers.append(key_header(upstream.api_key_header, upstream.api_key))
    return headers


def _client_headers(raw: list[tuple[bytes, bytes]], drop_length: bool, request_id: str) -> list[tuple[bytes, bytes]]:
    """The upstream's headers minus hop-by-hop ones (and Content-Length when `drop_length`), plus
    X-Request-ID with the proxy's request id (an upstream's own different X-Request-ID goes on as
    X-Upstream-Request-ID)."""
    dropped = _not_forwarded(raw, frozenset({b"content-length"}) if drop_length else frozenset())
    own = request_id.encode()
    headers = []
    for name, value in raw:
        lowered = name.lower()
        if lowered in dropped:
            continue
        if lowered == REQUEST_ID_HEADER:
            if value == own:
                continue
            name = UPSTREAM_REQUEST_ID_HEADER
        headers.append((name, value))
    headers.append((REQUEST_ID_HEADER, own))
    return headers


class _Exchange:
    """One request's state shared with its disconnect watcher.

    Plain asyncio rather than an anyio task group and cancel scope: measured on uvloop, those cost
    about 70 us per request against about 15 us for a task, Task.cancel and asyncio.timeout
    (docs/benchmarks.md), a sixth of the proxy's whole CPU time per request at the time.
    """

    __slots__ = ("task", "started", "complete", "client_gone")

    def __init__(self, task: asyncio.Task | None) -> None:
        assert task is not None, "the proxy runs inside a task"
        self.task = task
        self.started = False  # the response headers were handed to the server
        self.complete = False  # the last body message (or the stream's final event) was handed on
        self.client_gone = False  # the watcher cancelled the request because the client left


async def _cancel_on_disconnect(receive: Receive, exchange: _Exchange, obs: Observation) -> None:
    """The client went away: stop at once, which closes the upstream request too."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not exchange.complete:
                obs.status_code = int(catalog.CODE_CLIENT_CLOSED)
                exchange.client_gone = True
                exchange.task.cancel()
            return


async def _send_error(send: Send, family: ApiFamily, status: int, message: str, request_id: str) -> None:
    body = json.dumps(family.error(status, message)).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (REQUEST_ID_HEADER, request_id.encode())],
    })
    await send({"type": "http.response.body", "body": body, "more_body": False})
