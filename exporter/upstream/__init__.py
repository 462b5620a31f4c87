"""The one error the proxy sees from forwarding, whichever client forwarded."""

from __future__ import annotations


class UpstreamError(Exception):
    """The upstream could not be reached (connect), was too slow (timeout), broke off (read) or
    answered with something that is not HTTP/1.1 within the limits (protocol).

    error_type is the llm_upstream_errors_total label value (exporter.catalog.ERROR_TYPES).
    """

    def __init__(self, error_type: str, cause: BaseException | None = None) -> None:
        super().__init__(f"{error_type}: {type(cause).__name__ if cause else 'error'}")
        self.error_type = error_type
        self.cause = cause
