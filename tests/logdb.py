"""Read a request log database from tests, and wait for the writer without timing assertions."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exporter.config import parse_settings

# Prices for the demo upstream's models in tests (USD per million tokens).
DEMO_PRICES = {"input": 1.0, "cached_input": 0.5, "cache_write_input": 2.0, "output": 4.0}
WAIT_SECONDS = 60  # generous: the machine is shared and small


def settings(upstream_url: str, db_path: Path | str, *, pricing: list | None = None, **telemetry: Any):
    """Settings as a config file would give them: one upstream, a database, telemetry options."""
    raw: dict[str, Any] = {
        "upstreams": [{"name": "default", "url": upstream_url}],
        "db": {"path": str(db_path)},
        "pricing": pricing if pricing is not None else [{"model": "demo-*", **DEMO_PRICES}],
        "telemetry": {"flush_interval_seconds": 0.1, **telemetry},
    }
    return parse_settings(raw)


def query(db_path: Path | str, sql: str, params: list | tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(str(db_path), timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def rows(db_path: Path | str, where: str = "1", params: list | tuple = ()) -> list[dict[str, Any]]:
    conn = sqlite3.connect(str(db_path), timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(f"SELECT * FROM requests WHERE {where} ORDER BY ts, rowid", params)]
    finally:
        conn.close()


def count(db_path: Path | str, table: str = "requests") -> int:
    return query(db_path, f"SELECT COUNT(*) FROM {table}")[0][0]


def wait_until(condition: Callable[[], bool], what: str, seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {seconds}s waiting for {what}")
        time.sleep(0.05)


def wait_for_rows(db_path: Path | str, expected: int, table: str = "requests") -> None:
    wait_until(lambda: count(db_path, table) >= expected, f"{expected} rows in {table}")
    assert count(db_path, table) == expected
