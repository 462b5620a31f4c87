"""Benchmark of the request log's writer: rows per second, batched and unbatched.

Method: fill the queue of a RequestLog (not yet started) with N synthetic observations, then
time start() + close(): close() returns when the writer thread has committed every queued row,
so the time covers the whole drain (row building, multi-row inserts, commits) of a fresh WAL
database on local disk. batch_size 1 is the unbatched case: one transaction per row. Each case
runs REPEATS times on a new database; the median is reported. The cost on the request path,
`observe()`, is timed separately: it only puts the observation on the queue.

    python bench/writer.py [--rows N] [--repeats R] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from exporter.config import Telemetry
from exporter.observation import Observation, Usage
from exporter.requestlog import REQUEST_COLUMNS, RequestLog, connect, insert_rows, migrate, row_of


def observation(i: int) -> Observation:
    return Observation(
        request_id=f"{i:032x}", ts=time.time(), upstream="openai", api="openai_chat", model="gpt-4o-mini",
        model_label="gpt-4o-mini", stream=i % 2 == 0, request_bytes=1200, status_code=200,
        response_model="gpt-4o-mini-2024-07-18", duration_seconds=1.5, ttft_seconds=0.3, response_bytes=4000,
        usage=Usage(input=900, cached_input=256, output=150, reasoning=0), cost_usd=0.000203,
        key_id="0123456789abcdef", user="user-%d" % (i % 50), session_id="session-%d" % (i % 200),
    )


def writer_rows_per_second(rows: int, batch_size: int, directory: Path) -> float:
    telemetry = Telemetry(queue_size=rows + 1, batch_size=batch_size, flush_interval_seconds=1.0)
    log = RequestLog(directory / f"writer-{batch_size}-{time.monotonic_ns()}.db", telemetry)
    for i in range(rows):
        log.observe(observation(i))
    started = time.perf_counter()
    log.start()
    log.close()
    elapsed = time.perf_counter() - started
    assert log.written == rows, (log.written, rows)
    return rows / elapsed


def reference_rows_per_second(rows: int, batch_size: int, directory: Path) -> float:
    """Reference: the same rows and statements in this thread, without the queue and the writer thread."""
    path = directory / f"raw-{time.monotonic_ns()}.db"
    db = connect(path)
    migrate(db)
    db.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    records = [row_of(observation(i)) for i in range(rows)]
    started = time.perf_counter()
    for start in range(0, rows, batch_size):
        conn.execute("BEGIN")
        insert_rows(conn, "requests", REQUEST_COLUMNS, records[start:start + batch_size])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return rows / elapsed


def observe_nanoseconds(rows: int, directory: Path) -> float:
    log = RequestLog(directory / "observe.db", Telemetry(queue_size=rows + 1))
    observations = [observation(i) for i in range(rows)]
    started = time.perf_counter_ns()
    for obs in observations:
        log.observe(obs)
    return (time.perf_counter_ns() - started) / rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows per batched run (default 20000)")
    parser.add_argument("--unbatched-rows", type=int, default=2_000, help="rows per unbatched run (default 2000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory(prefix="llm-exporter-bench-") as tmp:
        directory = Path(tmp)
        for batch_size in (1, 10, 100, 500):
            rows = args.unbatched_rows if batch_size == 1 else args.rows
            runs = [writer_rows_per_second(rows, batch_size, directory) for _ in range(args.repeats)]
            note = {1: " (unbatched)", 500: " (default)"}.get(batch_size, "")
            results.append((f"writer thread, batch_size {batch_size}{note}", rows, statistics.median(runs)))
        runs = [reference_rows_per_second(args.rows, 500, directory) for _ in range(args.repeats)]
        results.append(("reference: the same inserts without queue or thread, 500 per transaction", args.rows, statistics.median(runs)))
        observe_ns = statistics.median(observe_nanoseconds(args.rows, directory) for _ in range(args.repeats))

    machine = (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
               f"SQLite {sqlite3.sqlite_version}")
    if args.markdown:
        print(f"Machine: {machine}\n")
        print("| case | rows | rows/s (median of %d) |" % args.repeats)
        print("|---|---:|---:|")
        for name, rows, rate in results:
            print(f"| {name} | {rows:,} | {rate:,.0f} |")
        print(f"\n`observe()` on the request path: {observe_ns / 1000:.1f} µs per row (median of {args.repeats}).")
    else:
        print(machine)
        for name, rows, rate in results:
            print(f"{name:60s} {rows:>7,} rows  {rate:>10,.0f} rows/s")
        print(f"{'observe() on the request path':60s} {observe_ns / 1000:>18.1f} µs/row")


if __name__ == "__main__":
    sys.exit(main())
