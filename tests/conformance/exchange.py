"""One call made the same way three times: twice straight to llama-server, once through the proxy.

The SDKs are given an httpx transport that keeps the raw bytes of every response body, so the
test compares what the client received, not what the SDK made of it. Fields the server fills
differently on every call (ids, timestamps, timings) are masked, but only those that differ
between the two direct calls: a field the proxy changed and the server does not is never masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx2 as httpx  # the HTTP library of the openai and anthropic SDKs
import openai


@dataclass
class Recorded:
    status: int = 0
    headers: httpx.Headers = field(default_factory=httpx.Headers)
    body: bytearray = field(default_factory=bytearray)


class RecordingTransport(httpx.HTTPTransport):
    """Keeps every response's status, headers and body bytes as they came off the wire."""

    def __init__(self) -> None:
        super().__init__()
        self.responses: list[Recorded] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        recorded = Recorded(response.status_code, response.headers)
        self.responses.append(recorded)
        response.stream = _Tee(response.stream, recorded.body)
        return response


class _Tee(httpx.SyncByteStream):
    def __init__(self, inner: Any, into: bytearray) -> None:
        self._inner, self._into = inner, into

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._into += chunk
            yield chunk

    def close(self) -> None:
        self._inner.close()


@dataclass
class Clients:
    """The two SDKs and a plain httpx client, all recording, against one base URL."""

    base_url: str
    transport: RecordingTransport = field(default_factory=RecordingTransport)

    def __post_init__(self) -> None:
        http = httpx.Client(transport=self.transport, timeout=120)
        self.http = httpx.Client(transport=self.transport, timeout=120, base_url=self.base_url)
        self.openai = openai.OpenAI(base_url=self.base_url + "/v1", api_key="sk-conformance", max_retries=0,
                                    http_client=http)
        self.anthropic = anthropic.Anthropic(base_url=self.base_url, api_key="sk-conformance", max_retries=0,
                                             http_client=http)

    @property
    def last(self) -> Recorded:
        return self.transport.responses[-1]


Call = Callable[[Clients], Any]

# "key": scalar. Values inside strings are not keys: a quote inside a string is escaped.
_PAIR = re.compile(rb'"([A-Za-z_]+)":\s*("(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*|true|false|null)')


def volatile_keys(first: bytes, second: bytes) -> set[bytes]:
    """Keys whose values differ between two answers to the same request."""
    a, b = _PAIR.findall(first), _PAIR.findall(second)
    assert [k for k, _ in a] == [k for k, _ in b], "two direct calls differ in shape, not only in values"
    return {ka for (ka, va), (_, vb) in zip(a, b) if va != vb}


def masked(body: bytes, keys: set[bytes]) -> bytes:
    def mask(match: re.Match[bytes]) -> bytes:
        return match.group(0) if match.group(1) not in keys else b'"' + match.group(1) + b'":*'

    return _PAIR.sub(mask, body)
