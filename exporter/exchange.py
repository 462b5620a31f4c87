"""One proxied request: what the proxy learns about it and how far its answer has got.

exporter.proxy admits, forwards and finishes every request around one Exchange. The exchange is
the only writer of the client's status and the error type, and the only sender to the client, so
it knows whether the answer has started and whether it is complete: a client that hangs up
before that gets a 499, after it the hang-up is the normal end.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

from exporter import catalog
from exporter.families import route
from exporter.observation import Observation

if TYPE_CHECKING:
    from exporter.config import Upstream
    from exporter.tap import UsageTap

# A client's X-Request-ID is kept when it looks like an id (a UUID, a trace id...), else one is made.
REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")
CLIENT_CLOSED = int(catalog.CODE_CLIENT_CLOSED)


class Exchange:
    """One request's state, from its receipt to its observation; shared with its disconnect watcher.

    The watcher is a plain asyncio task cancelling this one, not an anyio task group and cancel
    scope: those cost several times more per request on uvloop (docs/benchmarks.md).
    """

    __slots__ = (
        "scope", "family", "path_model", "received", "obs", "upstream", "body", "hide_usage", "copies",
        "task", "started", "complete", "client_gone", "_send",
    )

    def __init__(self, scope: Scope, send: Send, upstream: str) -> None:
        self.received = time.monotonic()
        self.scope = scope
        self._send = send
        self.family, self.path_model = route(scope["method"], scope["path"])
        self.obs = Observation(
            request_id=request_id(scope["headers"]), ts=time.time(), upstream=upstream,
            api=self.family.name, model=catalog.MODEL_UNKNOWN, model_label=catalog.MODEL_UNKNOWN,
            stream=False, request_bytes=0,
        )
        # What the proxy forwards, once the request is admitted.
        self.upstream: Upstream | None = None
        self.body = b""
        self.hide_usage = False  # usage was asked for on the client's behalf: hide it again
        self.copies = 1  # results per prompt (the request's n)
        self.task: asyncio.Task | None = None  # the task serving the request, while it is forwarded
        self.started = False  # the response head was handed to the server
        self.complete = False  # the last body message (or the stream's final event) was handed on
        self.client_gone = False  # the client left before the answer was complete

    def fail(self, error_type: str) -> None:
        """What went wrong (catalog.ERROR_TYPES); a later failure replaces an earlier one."""
        self.obs.error_type = error_type

    def client_left(self) -> bool:
        """The client hung up: a 499 (True), unless it had the whole answer already."""
        if self.complete:
            return False
        self.obs.status_code = CLIENT_CLOSED
        self.client_gone = True
        return True

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """The response head; `status` is the one the client gets."""
        self.obs.status_code = status
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def send(self, chunk: bytes) -> None:
        self.obs.response_bytes += len(chunk)
        await self._send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def end(self, tail: bytes) -> None:
        """The last body message: from here on a disconnect is the normal end, not a 499."""
        self.obs.response_bytes += len(tail)
        self.complete = True
        await self._send({"type": "http.response.body", "body": tail, "more_body": False})

    async def answer_error(self, status: int, message: str) -> None:
        """The proxy's own answer (400, 401, 408, 413, 502, 504) in the API family's error shape."""
        body = json.dumps(self.family.error(status, message)).encode()
        await self.start(status, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                  (REQUEST_ID_HEADER, self.obs.request_id.encode())])
        self.complete = True
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    def learn(self, tap: UsageTap) -> None:
        """What the usage tap read beside the answer, and a stream's time to first content."""
        obs = self.obs
        obs.usage = tap.usage
        obs.response_model = tap.response_model
        if obs.stream and tap.first_content_at is not None:
            obs.ttft_seconds = tap.first_content_at - self.received

    def done(self) -> Observation:
        """The observation, timed up to now."""
        self.obs.duration_seconds = time.monotonic() - self.received
        return self.obs

    async def cancel_on_disconnect(self, receive: Receive) -> None:
        """The disconnect watcher: a client gone mid-answer stops the request at once, which
        closes the upstream request too."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if self.client_left():
                    assert self.task is not None, "the watcher runs while the request is forwarded"
                    self.task.cancel()
                return


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
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
