"""llm-exporter with its measuring switched off, to price the measuring against a plain relay.

    python -m bench.plain {plain|nolog} serve --upstream URL --port P --db PATH

`plain`: no usage tap, no metrics update, no request log or access log, no identity hashing, and
OpenAI streams are not asked for usage (so nothing is hidden again): the same proxy code path
relaying bytes. `nolog`: everything measured, but the request log (SQLite) and the access log get
nothing, to show what the two logs cost.
The real `llm-exporter serve` (exporter.cli) runs after the patches, with its own server settings.
"""

from __future__ import annotations

import sys

from exporter import cli, proxy
from exporter.accesslog import AccessLog
from exporter.identity import ClientIdentity
from exporter.metrics import Metrics
from exporter.observation import Usage
from exporter.requestlog import RequestLog


class NoTap:
    """Stands in for exporter.tap.UsageTap and learns nothing."""

    def __init__(self, *args: object) -> None:
        self.usage = Usage()
        self.first_content_at = None
        self.response_model = None
        self.ended = False
        self.inflate_limited = False

    def feed(self, chunk: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def main() -> None:
    mode, argv = sys.argv[1], sys.argv[2:]
    if mode == "plain":
        proxy.UsageTap = NoTap  # type: ignore[misc,assignment]
        proxy._ask_for_usage = lambda fields, spans, body: (body, False)  # type: ignore[assignment]
        Metrics.observe = lambda self, obs: None  # type: ignore[method-assign]
        ClientIdentity.__call__ = lambda self, obs, headers, request_json: None  # type: ignore[method-assign]
    if mode in ("plain", "nolog"):
        RequestLog.observe = lambda self, obs: None  # type: ignore[method-assign]
        AccessLog.observe = lambda self, obs: None  # type: ignore[method-assign]
    elif mode != "full":
        raise SystemExit(f"unknown mode {mode!r}: plain, nolog or full")
    cli.main(argv)


if __name__ == "__main__":
    main()
