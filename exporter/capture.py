"""Optional body capture (telemetry.capture_bodies, off by default).

`CapturingApp` wraps the proxy: it copies the request body the client sent and the response body
the client got, each up to a cap, into a `Capture` kept in a context variable for the duration
of the request, where the request log's observer picks it up with the observation. Everything
costly (decoding gzip, redacting, compressing) happens later in the writer thread.

Redaction is best effort and runs before anything is stored: the credentials the request's own
headers carried (every secret header exporter.credentials knows, and access.secret_headers) are
replaced wherever they occur in either body, as are the values of JSON keys
that name credentials (api_key, authorization, password, secret, access_token, ...) and strings
shaped like well-known API keys (sk-..., Bearer ..., AIza..., AKIA..., ghp_..., xox?-...).
Headers are never stored.
"""

from __future__ import annotations

import re
import zlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exporter.credentials import secret_values
from exporter.text import safe

if TYPE_CHECKING:
    from exporter.observation import Observation

CAPTURE: ContextVar[Capture | None] = ContextVar("llm_exporter_capture", default=None)
REDACTED = b"[REDACTED]"
# Extra bytes kept past the cap so a secret straddling the cut is still whole when redacted.
REDACTION_MARGIN = 512
COMPRESSION_LEVEL = 6

_SECRET_KEYS = (
    rb"api[_-]?key|apikey|x-api-key|authorization|proxy-authorization|password|passwd|secret|"
    rb"client[_-]?secret|access[_-]?token|refresh[_-]?token|id[_-]?token|auth[_-]?token|token|"
    rb"private[_-]?key|credentials?"
)
_SECRET_JSON_VALUE = re.compile(rb'("(?:' + _SECRET_KEYS + rb')"\s*:\s*)"(?:[^"\\]|\\.)*"', re.IGNORECASE)
_SECRET_SHAPES = re.compile(
    rb"sk-[A-Za-z0-9_-]{16,}"  # OpenAI, Anthropic (sk-ant-...), many compatible servers
    rb"|(?<=[Bb]earer )[A-Za-z0-9._~+/=-]{12,}"
    rb"|AIza[0-9A-Za-z_-]{30,}"  # Google
    rb"|AKIA[0-9A-Z]{16}"  # AWS access key id
    rb"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub
    rb"|xox[abprs]-[A-Za-z0-9-]{10,}"  # Slack
)


@dataclass
class Capture:
    limit: int
    secrets: list[bytes] = field(default_factory=list)
    request: bytearray = field(default_factory=bytearray)
    request_size: int = 0
    response: bytearray = field(default_factory=bytearray)
    response_size: int = 0
    response_content_type: str | None = None
    response_encoding: str = ""

    @property
    def held(self) -> int:
        """Bytes this capture keeps in memory."""
        return len(self.request) + len(self.response)

    def add_request(self, chunk: bytes) -> None:
        self.request_size += len(chunk)
        room = self.limit + REDACTION_MARGIN - len(self.request)
        if room > 0:
            self.request += chunk[:room]

    def add_response(self, chunk: bytes) -> None:
        self.response_size += len(chunk)
        room = self.limit + REDACTION_MARGIN - len(self.response)
        if room > 0:
            self.response += chunk[:room]


class CapturingApp:
    """ASGI middleware around the proxy that fills a Capture per HTTP request."""

    def __init__(self, app: ASGIApp, limit: int, secret_headers: tuple[str, ...] = ()) -> None:
        self.app = app
        self.limit = limit
        self.secret_headers = frozenset(name.encode("latin-1") for name in secret_headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        capture = Capture(self.limit, secrets=secret_values(scope["headers"], self.secret_headers))

        async def capturing_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                capture.add_request(message.get("body", b""))
            return message

        async def capturing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", []):
                    name = name.lower()
                    if name == b"content-type":
                        capture.response_content_type = safe(value)
                    elif name == b"content-encoding":
                        capture.response_encoding = value.decode("latin-1").strip().lower()
            elif message["type"] == "http.response.body":
                capture.add_response(message.get("body", b""))
            await send(message)

        token = CAPTURE.set(capture)
        try:
            await self.app(scope, capturing_receive, capturing_send)
        finally:
            CAPTURE.reset(token)


def redact(data: bytes, secrets: list[bytes]) -> bytes:
    for secret in sorted(secrets, key=len, reverse=True):
        data = data.replace(secret, REDACTED)
    data = _SECRET_JSON_VALUE.sub(rb'\1"[REDACTED]"', data)
    return _SECRET_SHAPES.sub(REDACTED, data)


def _decoded(data: bytes, encoding: str, limit: int) -> bytes:
    """The response as text bytes: gzip / deflate undone (bounded), so it can be redacted."""
    if encoding not in ("gzip", "x-gzip", "deflate"):
        return data
    for wbits in (47, -15):  # gzip or zlib by header, then raw deflate
        try:
            return zlib.decompressobj(wbits).decompress(data, limit)
        except zlib.error:
            continue
    return data  # not decodable: kept as sent


def _stored(data: bytes, size: int, limit: int, secrets: list[bytes]) -> tuple[bytes, int]:
    clean = redact(bytes(data), secrets)
    truncated = size > limit or len(clean) > limit
    return zlib.compress(clean[:limit], COMPRESSION_LEVEL), int(truncated)


def encode_capture(obs: Observation, capture: Capture, limit: int) -> dict[str, Any]:
    """The `bodies` row of one capture (runs in the writer thread)."""
    request_body, request_truncated = _stored(capture.request, capture.request_size, limit, capture.secrets)
    response = _decoded(bytes(capture.response), capture.response_encoding, limit + REDACTION_MARGIN)
    response_truncated_on_wire = capture.response_size > len(capture.response)
    response_body, response_truncated = _stored(response, len(response), limit, capture.secrets)
    return {
        "request_id": obs.request_id,
        "ts": obs.ts,
        "request_body": request_body,
        "request_size": capture.request_size,
        "request_truncated": request_truncated,
        "response_body": response_body,
        "response_size": capture.response_size,
        "response_truncated": int(response_truncated or response_truncated_on_wire),
        "response_content_type": capture.response_content_type,
    }


def decode_body(blob: bytes | None) -> str | None:
    """A stored body as text, for /api/requests/{id}."""
    if blob is None:
        return None
    return zlib.decompress(blob).decode("utf-8", "replace")
