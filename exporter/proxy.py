"""The proxy: forwards one request to its upstream and streams the answer back as it arrives.

Every byte reaches the client unchanged and as soon as the upstream sends it; the usage tap reads
a copy beside the stream. Whatever happens (upstream down, slow, dying mid-stream, client gone),
the request ends in exactly one observation.

A request is three steps around its exporter.exchange.Exchange: admit (read and check the
request, pick its upstream), forward (the exchange with the upstream, the relay with the tap
beside it, the disconnect watcher) and finish (the observation to metrics and observers).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

from starlette.types import Receive, Scope, Send

from exporter import catalog
from exporter.config import Settings, Upstream
from exporter.credentials import KEY_HEADER_NAMES, key_header, request_key
from exporter.exchange import REQUEST_ID_HEADER, Exchange
from exporter.families import OTHER
from exporter.framing import StreamUsageHider
from exporter.labels import ModelLabels
from exporter.metrics import Metrics
from exporter.observation import Observation
from exporter.request_body import Fields, Spans, read_fields, top_level_fields, with_usage_option
from exporter.tap import UsageTap
from exporter.text import safe
from exporter.upstream import UpstreamError, UpstreamResponse
from exporter.upstream.clients import Upstreams

# Hop-by-hop headers (RFC 9110 7.6.1) are the connection's, not the message's.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
    b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
# Encodings the tap can read; others are not offered to the upstream.
READABLE_ENCODINGS = ("gzip", "deflate", "identity")
UPSTREAM_REQUEST_ID_HEADER = b"x-upstream-request-id"

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
        clients: Upstreams,
        metrics: Metrics,
        observers: list[Callable[[Observation], None]],
        identify: Callable[[Observation, list[tuple[bytes, bytes]], dict[str, Any] | None], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clients = clients  # one per upstream (keep-alive pools), started in the app's lifespan
        self.metrics = metrics
        self.models = ModelLabels(settings.max_models, settings.model_patterns)
        self.observers = observers
        self.identify = identify  # fills key_id, user, session_id (exporter.identity)
        # access.client_keys: digest of an allowed key -> its key id (None: the salted hash id)
        self.client_keys = settings.access.client_keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = Exchange(scope, send, self.settings.default_upstream)
        try:
            if await self._admit(exchange, receive):
                await self._forward(exchange, receive)
        finally:
            self._finish(exchange)

    # --- admit: read and check the request, pick its upstream

    async def _admit(self, exchange: Exchange, receive: Receive) -> bool:
        """False when the proxy answered the request itself (400, 401, 408, 413) or the client left."""
        scope = exchange.scope
        if not _origin_form(scope):
            await exchange.answer_error(400, "the request target must be a path that starts with '/'")
            return False
        key_id = None
        if self.client_keys:
            allowed, key_id = self._allowed(request_key(scope["headers"], scope.get("query_string") or b""))
            if not allowed:
                await exchange.answer_error(401, "the proxy does not know this API key")
                return False
        body = await self._receive_body(exchange, receive)
        if body is None:
            return False
        exchange.obs.request_bytes = len(body)
        fields, spans = await read_fields(body) if exchange.family.name != "other" else (None, None)
        self._describe(exchange, fields, key_id)
        self._choose_upstream(exchange, body, fields, spans)
        return True

    async def _receive_body(self, exchange: Exchange, receive: Receive) -> bytes | None:
        """The whole request body within its size and time limits; None when it is not coming."""
        try:
            async with asyncio.timeout(self.settings.request_body_timeout):
                return await _read_body(exchange.scope, receive, self.settings.max_request_bytes)
        except RequestTooLarge:
            await exchange.answer_error(413, "request body is larger than the proxy's limit")
        except TimeoutError:
            await exchange.answer_error(408, "the request body did not arrive within the proxy's time limit")
        except ClientGone:
            exchange.client_left()
        return None

    def _describe(self, exchange: Exchange, fields: Fields | None, key_id: str | None) -> None:
        """The model, the stream flag and the client's identity, as the request states them."""
        obs = exchange.obs
        model = fields.get("model") if fields else None
        model = model or exchange.path_model  # Gemini and Azure deployments name the model in the path
        obs.model = safe(model) if isinstance(model, str) and model else catalog.MODEL_UNKNOWN
        obs.model_label = self.models.label(model if isinstance(model, str) else None)
        stream = fields.get("stream", exchange.family.stream_default) if fields else False
        obs.stream = stream is True
        if self.identify is not None:
            self.identify(obs, exchange.scope["headers"], fields)
        if key_id is not None:
            obs.key_id = key_id  # the configured name of an allowed key

    def _choose_upstream(self, exchange: Exchange, body: bytes, fields: Fields | None, spans: Spans | None) -> None:
        """The model's upstream and the body it gets: an OpenAI stream is asked for its usage."""
        obs = exchange.obs
        upstream = exchange.upstream = self.settings.upstream_for(obs.model)
        obs.upstream = upstream.name
        exchange.body = body
        if (obs.stream and exchange.family.asks_stream_usage and not upstream.reports_stream_usage
                and fields is not None):
            exchange.body, exchange.hide_usage = _ask_for_usage(fields, spans, body)
        exchange.copies = _copies(fields)

    def _allowed(self, credential: bytes | None) -> tuple[bool, str | None]:
        """Whether the client's key is one of access.client_keys, and the key id configured for it."""
        if credential is None:
            return False, None
        digest = hashlib.sha256(credential).digest()
        if digest not in self.client_keys:
            return False, None
        return True, self.client_keys[digest]

    # --- forward: the exchange with the upstream

    async def _forward(self, exchange: Exchange, receive: Receive) -> None:
        """The exchange with the upstream, stopped at once when the client leaves."""
        exchange.task = asyncio.current_task()
        watcher = asyncio.ensure_future(exchange.cancel_on_disconnect(receive))
        in_flight = self.metrics[catalog.IN_FLIGHT].labels(exchange.upstream.name)
        in_flight.inc()
        try:
            await self._within_total_time(exchange)
        except asyncio.CancelledError:
            if not exchange.client_gone:
                raise  # not ours (the server is shutting down): let it through
            exchange.task.uncancel()
        finally:
            watcher.cancel()
            in_flight.dec()

    async def _within_total_time(self, exchange: Exchange) -> None:
        """The relay, cut off at the upstream's total time limit.

        After a failure mid-response the body stays unfinished: uvicorn then closes the
        connection, so the client sees a broken stream instead of a falsely complete one.
        """
        try:
            async with asyncio.timeout(exchange.upstream.timeouts.total):
                await self._relay(exchange)
        except TimeoutError:  # only the total limit: the clients turn their own timeouts into UpstreamError
            if exchange.started:
                exchange.fail(catalog.ERROR_TIMEOUT)
            else:
                await _upstream_failed(exchange, catalog.ERROR_TIMEOUT, None)

    async def _relay(self, exchange: Exchange) -> None:
        """Send the request, then pass the response on chunk by chunk with the tap beside it."""
        try:
            response = await self._open(exchange)
        except UpstreamError as exc:
            await _upstream_failed(exchange, exc.error_type, exc.cause)
            return
        tap = None
        try:
            status = response.status
            if status >= 500 or status == 429:
                exchange.fail(catalog.ERROR_STATUS)
            success = 200 <= status < 300
            tap = UsageTap(
                exchange.family if success else OTHER,  # error bodies carry no usage
                response.header("content-type"),
                response.header("content-encoding"),
                exchange.copies,
            )
            hider = StreamUsageHider() if exchange.hide_usage and success else None
            # A rewritten body has another length; a 204 or 304 has none, whatever the upstream said.
            drop_length = hider is not None or status in (204, 304)
            await exchange.start(status, _client_headers(response.raw_headers, drop_length, exchange.obs.request_id))
            await _pass_on(exchange, response, tap, hider)
        except UpstreamError as exc:
            # timeout: an idle gap longer than the limit; read: the upstream broke off mid-response
            exchange.fail(exc.error_type)
        finally:
            await response.close()
            if tap is not None:
                exchange.learn(tap)
                if tap.inflate_limited:
                    self.metrics.dropped(catalog.DROP_INFLATE_LIMIT)

    async def _open(self, exchange: Exchange) -> UpstreamResponse:
        """The request sent to the upstream; its response once the head is in. Raises UpstreamError."""
        scope, upstream = exchange.scope, exchange.upstream
        return await self.clients[upstream.name].open(
            scope["method"],
            _upstream_target(upstream, scope),
            _upstream_headers(scope["headers"], upstream, identity=exchange.hide_usage,
                              send_key=self._sends_key(upstream, scope)),
            exchange.body,
        )

    def _sends_key(self, upstream: Upstream, scope: Scope) -> bool:
        """Whether the upstream's configured key goes with this request: when the client sent no key
        (in any credential header or a `key=` parameter), or when the client's key is the proxy's
        own (access.client_keys)."""
        if not upstream.api_key:
            return False
        return bool(self.client_keys) or request_key(scope["headers"], scope.get("query_string") or b"") is None

    # --- finish: one observation

    def _finish(self, exchange: Exchange) -> None:
        obs = exchange.done()
        # Cost once per request: the same figure feeds llm_cost_usd_total and the request log.
        obs.cost_usd = self.settings.pricing.cost(obs.model, obs.response_model, obs.usage)
        self.metrics.observe(obs)
        for observer in self.observers:
            observer(obs)


async def _pass_on(
    exchange: Exchange, response: UpstreamResponse, tap: UsageTap, hider: StreamUsageHider | None,
) -> None:
    """The response body to the client as it arrives, every byte the upstream sent fed to the tap."""
    async for chunk in response.chunks():
        tap.feed(chunk)
        if hider is not None:
            chunk = hider.feed(chunk)
            if not chunk:
                continue
        await exchange.send(chunk)
        if tap.ended:
            exchange.complete = True  # the client has the final event: hanging up now (as the SDKs do) is no 499
    tap.close()
    await exchange.end(hider.close() if hider is not None else b"")


async def _upstream_failed(exchange: Exchange, error_type: str, cause: BaseException | None) -> None:
    """502 when the upstream could not be reached or answered malformed HTTP, 504 when it timed out."""
    exchange.fail(error_type)
    name = exchange.upstream.name
    if error_type == catalog.ERROR_TIMEOUT:
        await exchange.answer_error(504, f"upstream {name} timed out")
    elif error_type == catalog.ERROR_PROTOCOL:
        await exchange.answer_error(502, f"upstream {name} sent a malformed HTTP answer")
    else:
        await exchange.answer_error(502, f"upstream {name} could not be reached: {type(cause).__name__}")


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
