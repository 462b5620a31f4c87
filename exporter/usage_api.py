"""GET /api/usage, /api/requests and /api/requests/{request_id}: JSON from the request log.

Queries run in a worker thread on their own read-only connection, so a slow report never holds
up the event loop that streams proxied responses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from exporter import usage_report
from exporter.usage_report import BadParameter


class UsageApi:
    def __init__(self, db_path: str) -> None:
        self.db_path = db_path

    async def usage(self, request: Request) -> Response:
        try:
            filters, group_by = usage_report.usage_query(request.query_params.multi_items())
        except BadParameter as exc:
            return _bad(exc)
        return JSONResponse(await self._run(usage_report.usage, filters, group_by))

    async def requests(self, request: Request) -> Response:
        try:
            filters, limit = usage_report.requests_query(request.query_params.multi_items())
        except BadParameter as exc:
            return _bad(exc)
        return JSONResponse(await self._run(usage_report.recent_requests, filters, limit))

    async def one_request(self, request: Request) -> Response:
        request_id = request.path_params["request_id"]
        found = await self._run(usage_report.one_request, request_id)
        if found is None:
            return JSONResponse({"error": f"request_id: no request {request_id!r} in the log",
                                 "parameter": "request_id"}, status_code=404)
        return JSONResponse(found)

    async def _run(self, query: Callable[..., Any], *args: Any) -> Any:
        def run() -> Any:
            conn = usage_report.open_read_only(self.db_path)
            try:
                return query(conn, *args)
            finally:
                conn.close()

        return await anyio.to_thread.run_sync(run)


def _bad(exc: BadParameter) -> Response:
    return JSONResponse({"error": str(exc), "parameter": exc.parameter}, status_code=400)
