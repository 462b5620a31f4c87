"""The request log: one SQLite row per proxied request, written by a background thread.

The proxy hands each finished observation to `RequestLog.observe`, which only appends it to a
bounded queue (exporter.batching: no disk, no lock, no thread woken): when the queue is full the
row is dropped and llm_telemetry_dropped_total{reason="queue_full"} grows. The writer thread
inserts the queued rows in batches, one transaction per batch: a batch is written as soon as
`batch_size` rows wait, and whatever waits is written every `flush_interval_seconds`. The writer
never dies of what it writes: when a batch fails for one of its rows, the batch is written again
row by row and only the rows the database refuses are dropped (reason bad_row); a batch the
database refuses as a whole (disk full, I/O error) is dropped (write_error); then it goes on.
The same thread runs retention (at start, then every `retention_interval_seconds`). `close()`
writes everything still queued before it returns; the app's lifespan calls it at shutdown.

Schema changes are additive: `migrate` creates what is missing (tables, columns, indexes) in one
IMMEDIATE transaction, so a database made by an older version opens and gains the new columns,
and several workers opening one database at once migrate it exactly once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import sqlite_utils

from exporter.batching import BatchQueue, background_priority
from exporter.capture import CAPTURE, Capture, encode_capture
from exporter.catalog import DROP_BAD_ROW, DROP_QUEUE_FULL, DROP_WRITE_ERROR
from exporter.config import ConfigError, Telemetry
from exporter.observation import Observation

log = logging.getLogger("llm_exporter.requestlog")

SCHEMA_VERSION = 2  # PRAGMA user_version; 1 was the first log (see tests/data/requestlog_v1.sql)
BUSY_TIMEOUT_SECONDS = 30.0  # how long a statement waits for another writer's lock
SHUTDOWN_GIVE_UP_SECONDS = 30.0  # at shutdown, a batch the database keeps refusing is dropped
DAY = 86_400.0
RETENTION_CHUNK = 5_000  # rows deleted per statement, so readers and the writer interleave
# Captured bodies waiting in the queue may hold at most this many bytes; beyond it a request's row
# is still queued but its bodies are skipped, so a stalled disk cannot grow memory by gigabytes.
CAPTURE_QUEUE_BYTES = 64 * 1024 * 1024

# The `requests` table: column -> SQLite type; row_of fills it from an Observation.
REQUEST_COLUMNS: dict[str, str] = {
    "ts": "REAL",  # unix seconds when the request was received
    "request_id": "TEXT",
    "upstream": "TEXT",
    "api": "TEXT",
    "model": "TEXT",  # the requested model, as the client sent it
    "response_model": "TEXT",
    "stream": "INTEGER",
    "status_code": "INTEGER",  # what the client got; 499 when it went away
    "error_type": "TEXT",  # connect, timeout, read, status, protocol
    "duration_seconds": "REAL",
    "ttft_seconds": "REAL",  # streams only
    "input_tokens": "INTEGER",  # token columns are NULL when the backend reported no usage
    "output_tokens": "INTEGER",
    "cached_input_tokens": "INTEGER",
    "cache_write_input_tokens": "INTEGER",
    "reasoning_tokens": "INTEGER",
    "output_tokens_per_second": "REAL",
    "cost_usd": "REAL",  # NULL: tokens were used but the model has no price
    "request_bytes": "INTEGER",
    "response_bytes": "INTEGER",
    "key_id": "TEXT",  # salted hash prefix of the client's API key (exporter.identity)
    "user": "TEXT",
    "session_id": "TEXT",
}
REQUEST_INDEXES: dict[str, tuple[str, ...]] = {
    "idx_requests_ts": ("ts",),
    "idx_requests_request_id": ("request_id",),
    "idx_requests_model_ts": ("model", "ts"),
    "idx_requests_upstream_ts": ("upstream", "ts"),
    "idx_requests_key_id_ts": ("key_id", "ts"),
    "idx_requests_user_ts": ("user", "ts"),
}
# Captured bodies (telemetry.capture_bodies): zlib-compressed, capped, credentials redacted.
BODY_COLUMNS: dict[str, str] = {
    "request_id": "TEXT",
    "ts": "REAL",
    "request_body": "BLOB",
    "request_size": "INTEGER",  # bytes the client sent (the stored body may be cut off)
    "request_truncated": "INTEGER",
    "response_body": "BLOB",
    "response_size": "INTEGER",  # bytes the client got, as encoded on the wire
    "response_truncated": "INTEGER",
    "response_content_type": "TEXT",
}
BODY_INDEXES: dict[str, tuple[str, ...]] = {
    "idx_bodies_request_id": ("request_id",),
    "idx_bodies_ts": ("ts",),
}
_TYPES = {"REAL": float, "TEXT": str, "INTEGER": int, "BLOB": bytes}


def connect(path: str | Path, read_only: bool = False) -> sqlite_utils.Database:
    """A connection in WAL mode that waits for a busy database instead of failing at once."""
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False)
    db = sqlite_utils.Database(conn, execute_plugins=False)
    if read_only:
        db.execute("PRAGMA query_only = 1")
    else:
        db.execute("PRAGMA journal_mode = WAL")
        # In WAL mode NORMAL survives a crash of the process; a power loss may cost the last batches.
        db.execute("PRAGMA synchronous = NORMAL")
    return db


def migrate(db: sqlite_utils.Database, salt: str | None = None) -> bytes:
    """Create or upgrade the schema; the key-id salt: `salt` if given, else the database's own."""
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")  # one migrating process at a time; the others wait, then see it
    try:
        _ensure_table(db, "requests", REQUEST_COLUMNS, REQUEST_INDEXES)
        _ensure_table(db, "bodies", BODY_COLUMNS, BODY_INDEXES)
        db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
        if salt is None:
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('key_salt', ?)", [secrets.token_hex(32)])
            salt = conn.execute("SELECT value FROM meta WHERE key = 'key_salt'").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return salt.encode()


def _ensure_table(db: sqlite_utils.Database, name: str, columns: dict[str, str], indexes: dict[str, tuple[str, ...]]) -> None:
    table = db[name]
    if not table.exists():
        table.create({column: _TYPES[kind] for column, kind in columns.items()})
    else:
        present = {column.lower() for column in table.columns_dict}
        for column, kind in columns.items():
            if column.lower() not in present:
                table.add_column(column, _TYPES[kind])
    for index_name, index_columns in indexes.items():
        table.create_index(index_columns, index_name=index_name, if_not_exists=True)


@contextlib.contextmanager
def write_transaction(db: sqlite_utils.Database) -> Iterator[None]:
    """BEGIN IMMEDIATE: the write lock is taken at the start, waiting up to the busy timeout.

    Several workers write to one database. A deferred transaction that reads first (sqlite-utils
    looks at the table before inserting) and then writes can fail at once with SQLITE_BUSY when
    another worker committed in between, without waiting: in WAL mode its snapshot is stale. An
    immediate one waits its turn instead.
    """
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


ROWS_PER_STATEMENT = 25  # at most; fewer where SQLite allows fewer bound variables


def insert_rows(conn: sqlite3.Connection, table: str, columns: dict[str, str], rows: Iterable[tuple[Any, ...]]) -> None:
    """Insert rows with multi-row INSERT statements of up to ROWS_PER_STATEMENT rows.

    Not executemany: sqlite3 lets go of the GIL for every statement it runs and has to win it
    back from the event loop, which under full load holds it for up to the switch interval
    each time. Row by row the writer fell far behind a busy proxy and the queue overflowed; 25
    rows a statement kept up. Longer statements hold the GIL longer while their rows are built
    and bound, which showed in p99 latency at one client (docs/benchmarks.md has the figures).
    `rows` may be lazy (a map over observations): each statement's rows are then built just
    before it runs, not a whole batch's at once.
    (sqlite-utils' insert_all also builds multi-row statements, but inspects the table on
    every call.)
    """
    width = len(columns)
    per_statement = max(1, min(ROWS_PER_STATEMENT, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width))
    names = ", ".join(f"[{column}]" for column in columns)
    one_row = "(" + ", ".join("?" * width) + ")"
    pending = iter(rows)
    while chunk := list(itertools.islice(pending, per_statement)):
        conn.execute(f"INSERT INTO [{table}] ({names}) VALUES {', '.join([one_row] * len(chunk))}",
                     [value for row in chunk for value in row])


def body_row_of(obs: Observation, capture: Capture, limit: int) -> tuple[Any, ...]:
    """The `bodies` row of one captured request, in BODY_COLUMNS' order."""
    body = encode_capture(obs, capture, limit)
    return tuple(body[column] for column in BODY_COLUMNS)


def row_of(obs: Observation) -> tuple[Any, ...]:
    """The `requests` row of one observation, in REQUEST_COLUMNS' order."""
    usage = obs.usage
    row = {
        "ts": obs.ts,
        "request_id": obs.request_id,
        "upstream": obs.upstream,
        "api": obs.api,
        "model": obs.model,
        "response_model": obs.response_model,
        "stream": int(obs.stream),
        "status_code": obs.status_code,
        "error_type": obs.error_type,
        "duration_seconds": obs.duration_seconds,
        "ttft_seconds": obs.ttft_seconds,
        "input_tokens": usage.input,
        "output_tokens": usage.output,
        "cached_input_tokens": usage.cached_input,
        "cache_write_input_tokens": usage.cache_write_input,
        "reasoning_tokens": usage.reasoning,
        "output_tokens_per_second": obs.output_tokens_per_second,
        "cost_usd": obs.cost_usd,
        "request_bytes": obs.request_bytes,
        "response_bytes": obs.response_bytes,
        "key_id": obs.key_id,
        "user": obs.user,
        "session_id": obs.session_id,
    }
    return tuple(row[column] for column in REQUEST_COLUMNS)


class RequestLog:
    """The queue, the writer thread and retention of one database."""

    def __init__(
        self, path: str | Path, telemetry: Telemetry, on_drop: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = str(path)
        self.telemetry = telemetry
        self._on_drop = on_drop or (lambda reason, count: None)  # (catalog.DROP_REASONS value, rows)
        self._clock = clock
        try:
            db = connect(self.path)
            try:
                self.salt = migrate(db, telemetry.key_salt)
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise ConfigError(f"db.path: cannot open the request log {self.path}: {exc}") from None
        self._queue = self._new_queue()
        self._thread: threading.Thread | None = None
        self.written = 0  # rows committed (the writer thread's count)
        self.dropped = 0  # rows lost: queue full, a row or a batch the database refused
        self.batches = 0
        self.captures_skipped = 0  # bodies not kept because the queue held too many already
        self._capture_bytes = 0  # bytes of captured bodies in the queue
        self._capture_lock = threading.Lock()

    def _new_queue(self) -> BatchQueue[tuple[Observation, Capture | None]]:
        telemetry = self.telemetry
        return BatchQueue(telemetry.queue_size, telemetry.batch_size, telemetry.flush_interval_seconds)

    # --- the request path ---------------------------------------------------------------------

    def observe(self, obs: Observation) -> None:
        """Queue one finished request's row (and its captured bodies); never blocks."""
        capture = CAPTURE.get()
        if capture is not None:
            size = capture.held
            with self._capture_lock:
                if self._capture_bytes + size > CAPTURE_QUEUE_BYTES:
                    self.captures_skipped += 1
                    capture = None
                else:
                    self._capture_bytes += size
        if not self._queue.put((obs, capture)):
            self._release(capture)
            self._drop(1, DROP_QUEUE_FULL)

    def _release(self, capture: Capture | None) -> None:
        if capture is not None:
            with self._capture_lock:
                self._capture_bytes -= capture.held

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="llm-exporter-request-log", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Write everything queued, then stop the writer. Blocks: call it from a worker thread."""
        thread = self._thread
        if thread is None:
            return
        self._queue.close()
        thread.join()
        self._thread = None
        self._queue = self._new_queue()  # a later start() begins afresh

    @property
    def queued(self) -> int:
        return len(self._queue)

    # --- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        background_priority()
        queue = self._queue
        db = connect(self.path)
        try:
            next_retention = 0.0
            while not queue.closed_and_empty:
                if time.monotonic() >= next_retention:
                    self._retention(db)
                    next_retention = time.monotonic() + self.telemetry.retention_interval_seconds
                for batch in queue.batches(idle_timeout=next_retention - time.monotonic()):
                    self._write_or_drop(db, batch, stopping=queue.closing)
        except Exception:  # the writer must not die silently: say so, then stop
            log.exception("request log writer failed; rows from now on are dropped")
            raise
        finally:
            db.close()

    def _write_or_drop(self, db: sqlite_utils.Database, batch: list, stopping: bool) -> None:
        """_write, and whatever it did not foresee costs this batch only, never the thread."""
        try:
            self._write(db, batch, stopping)
        except Exception:
            log.exception("request log: dropped %d rows", len(batch))
            self._drop(len(batch), DROP_WRITE_ERROR)

    def _write(self, db: sqlite_utils.Database, batch: list, stopping: bool) -> None:
        observations = [obs for obs, _ in batch]
        bodies = self._body_rows(batch)
        started = time.monotonic()
        delay = 0.05
        row_by_row = False
        while True:
            try:
                with write_transaction(db):
                    if row_by_row:
                        refused = _insert_each(db.conn, "requests", REQUEST_COLUMNS, map(row_of, observations))
                        refused_bodies = _insert_each(db.conn, "bodies", BODY_COLUMNS, bodies)
                    else:
                        refused = refused_bodies = 0
                        insert_rows(db.conn, "requests", REQUEST_COLUMNS, map(row_of, observations))
                        if bodies:
                            insert_rows(db.conn, "bodies", BODY_COLUMNS, bodies)
                self.written += len(observations) - refused
                self.batches += 1
                if refused or refused_bodies:
                    self._drop(refused + refused_bodies, DROP_BAD_ROW)
                return
            except sqlite3.OperationalError as exc:  # the database's state, not a row's content
                busy = "locked" in str(exc) or "busy" in str(exc)
                if busy and not (stopping and time.monotonic() - started > SHUTDOWN_GIVE_UP_SECONDS):
                    time.sleep(delay)  # another process holds the write lock: wait for it
                    delay = min(delay * 2, 1.0)
                    continue
                log.error("request log: dropped %d rows: %s", len(observations), exc)
            except Exception as exc:  # a value the driver cannot bind, a constraint: some row's fault
                if not row_by_row:
                    row_by_row = True  # the batch again, one row at a time, to keep all the others
                    continue
                log.error("request log: dropped %d rows: %s", len(observations), exc)
            self._drop(len(observations), DROP_WRITE_ERROR)
            return

    def _body_rows(self, batch: list) -> list[tuple[Any, ...]]:
        """The `bodies` rows of a batch's captures; a capture that cannot be encoded is left out."""
        rows = []
        for obs, capture in batch:
            if capture is None:
                continue
            self._release(capture)
            try:
                rows.append(body_row_of(obs, capture, self.telemetry.capture_max_bytes))
            except Exception as exc:
                log.error("request log: dropped the captured bodies of request %s: %s", obs.request_id, exc)
                self._drop(1, DROP_BAD_ROW)
        return rows

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        self._on_drop(reason, count)

    def _retention(self, db: sqlite_utils.Database) -> None:
        now = self._clock()
        try:
            removed = delete_older_than(db, "requests", now - self.telemetry.retention_days * DAY)
            removed_bodies = delete_older_than(db, "bodies", now - self.telemetry.capture_retention_days * DAY)
        except sqlite3.Error as exc:
            log.error("request log: retention failed, will retry: %s", exc)
            return
        if removed or removed_bodies:
            log.info("request log retention: deleted %d rows and %d captured bodies", removed, removed_bodies)


def _insert_each(conn: sqlite3.Connection, table: str, columns: dict[str, str], rows: Iterable[tuple[Any, ...]]) -> int:
    """Insert one row per statement, skipping each row the driver or the database refuses; the
    number refused. An OperationalError (the database's state, not a row's) ends it."""
    refused = 0
    for row in rows:
        try:
            insert_rows(conn, table, columns, [row])
        except sqlite3.OperationalError:
            raise
        except Exception as exc:
            log.error("request log: dropped one row of %s: %s", table, exc)
            refused += 1
    return refused


def delete_older_than(db: sqlite_utils.Database, table: str, cutoff: float) -> int:
    """Delete the rows with ts < cutoff, a chunk per transaction; the number deleted."""
    total = 0
    while True:
        with write_transaction(db):
            cursor = db.execute(
                f"DELETE FROM [{table}] WHERE rowid IN (SELECT rowid FROM [{table}] WHERE ts < ? LIMIT ?)",
                [cutoff, RETENTION_CHUNK],
            )
        total += cursor.rowcount
        if cursor.rowcount < RETENTION_CHUNK:
            return total
