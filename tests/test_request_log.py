"""The request log through the real app under uvicorn against the demo upstream.

One row per request with the observation's numbers, cost computed once for the metric and the
row, key ids instead of keys, WAL, migrations, retention, a full queue, shutdown and SIGTERM,
and 2,000 requests from 50 concurrent clients. Expected tokens follow the demo upstream's token
rules (a token is a word, cached input is the conversation prefix, output is max_tokens).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from exporter.catalog import TOKEN_TYPES
from exporter.config import Telemetry
from exporter.observation import Observation, Usage
from exporter.requestlog import SCHEMA_VERSION, RequestLog, connect, migrate
from tests.logdb import DEMO_PRICES, count, query, rows, settings, wait_for_rows, wait_until
from tests.scrape import Scrape
from tests.servers import free_port, running_exporter, wait_ready

V1_FIXTURE = Path(__file__).parent / "data" / "requestlog_v1.sql"
REQUIRED_COLUMNS = (
    "ts request_id upstream api model response_model stream status_code error_type duration_seconds "
    "ttft_seconds input_tokens output_tokens cached_input_tokens cache_write_input_tokens reasoning_tokens "
    "output_tokens_per_second cost_usd request_bytes response_bytes key_id user session_id"
).split()
CHAT = {"model": "demo-gpt-mini", "max_tokens": 3, "messages": [
    {"role": "system", "content": "be brief"}, {"role": "user", "content": "one two three"}]}
ANTHROPIC = {"model": "demo-claude", "max_tokens": 4, "system": "s t", "messages": [
    {"role": "user", "content": "a b c"}, {"role": "assistant", "content": "d"},
    {"role": "user", "content": [{"type": "text", "text": "e f", "cache_control": {"type": "ephemeral"}}]}]}


def _cost(input=0, cached_input=0, cache_write_input=0, output=0) -> float:
    uncached = input - cached_input - cache_write_input
    return (uncached * DEMO_PRICES["input"] + cached_input * DEMO_PRICES["cached_input"]
            + cache_write_input * DEMO_PRICES["cache_write_input"] + output * DEMO_PRICES["output"]) / 1e6


# (name, path, body, headers, expected row values)
CASES = [
    ("chat", "/v1/chat/completions", CHAT, {}, dict(
        api="openai_chat", stream=0, status_code=200, error_type=None, input_tokens=5, cached_input_tokens=2,
        output_tokens=3, cost_usd=_cost(input=5, cached_input=2, output=3))),
    ("chat-stream", "/v1/chat/completions", {**CHAT, "stream": True}, {}, dict(
        api="openai_chat", stream=1, status_code=200, error_type=None, input_tokens=5, cached_input_tokens=2,
        output_tokens=3, cost_usd=_cost(input=5, cached_input=2, output=3))),
    ("anthropic-stream", "/v1/messages", {**ANTHROPIC, "stream": True}, {}, dict(
        api="anthropic_messages", stream=1, status_code=200, input_tokens=8, cached_input_tokens=6,
        cache_write_input_tokens=2, output_tokens=4,
        cost_usd=_cost(input=8, cached_input=6, cache_write_input=2, output=4))),
    ("ollama-unpriced", "/api/generate",
     {"model": "llama3.2:1b", "prompt": "a b c d e", "options": {"num_predict": 3}, "stream": False}, {}, dict(
        api="ollama_generate", stream=0, status_code=200, input_tokens=5, output_tokens=3,
        output_tokens_per_second=50.0, cost_usd=None)),
    ("embeddings", "/v1/embeddings", {"model": "demo-embed", "input": ["a b", "c d e"]}, {}, dict(
        api="openai_embeddings", stream=0, status_code=200, input_tokens=5, output_tokens=None,
        cost_usd=_cost(input=5))),
    ("upstream-500", "/v1/chat/completions", CHAT, {"x-demo-status": "500"}, dict(
        api="openai_chat", status_code=500, error_type="status", input_tokens=None, output_tokens=None,
        cost_usd=0.0, ttft_seconds=None)),
    ("no-usage", "/v1/chat/completions", CHAT, {"x-demo-no-usage": "1"}, dict(
        api="openai_chat", status_code=200, input_tokens=None, output_tokens=None, cost_usd=0.0)),
]


def test_every_request_leaves_one_row_with_its_numbers(upstream_url, tmp_path):
    db = tmp_path / "log.db"
    sent = []
    with running_exporter(settings(upstream_url, db)) as url:
        for name, path, body, headers, _ in CASES:
            content = json.dumps(body).encode()
            before = time.time()
            response = httpx.post(url + path, content=content, headers={"content-type": "application/json", **headers})
            sent.append((before, time.time(), len(content), response))
        wait_for_rows(db, len(CASES))
        scrape = Scrape.of(url)

    logged = rows(db)
    assert len(logged) == len(CASES)
    for (name, path, body, headers, expected), (before, after, size, response), row in zip(CASES, sent, logged):
        for column, value in expected.items():
            if isinstance(value, float):
                assert row[column] == pytest.approx(value, rel=1e-9), (name, column)
            else:
                assert row[column] == value, (name, column)
        assert row["model"] == body["model"] and row["upstream"] == "default", name
        assert row["status_code"] == response.status_code, name
        if response.status_code == 200:
            assert row["response_model"] == body["model"], name
        assert before <= row["ts"] <= after, name
        assert row["request_bytes"] == size and row["response_bytes"] == len(response.content), name
        assert 0 < row["duration_seconds"] < after - before + 1, name
        assert (row["ttft_seconds"] is not None) == (row["stream"] == 1 and response.status_code == 200), name
        assert len(row["request_id"]) == 32, name
    # Cost is computed once: llm_cost_usd_total per model equals the rows' sum.
    for model in ("demo-gpt-mini", "demo-claude", "demo-embed"):
        logged_cost = sum(r["cost_usd"] or 0 for r in logged if r["model"] == model)
        assert scrape.value("llm_cost_usd_total", model=model) == pytest.approx(logged_cost, rel=1e-9), model
    assert scrape.value("llm_cost_usd_total", model="llama3.2:1b") == 0


def test_schema_has_the_columns_indexes_and_wal_mode(upstream_url, tmp_path):
    db = tmp_path / "log.db"
    with running_exporter(settings(upstream_url, db)):
        pass
    columns = [name for _, name, *_ in query(db, "PRAGMA table_info(requests)")]
    assert set(REQUIRED_COLUMNS) <= set(columns)
    # The observation's field names are the log's column names (usage fields with a _tokens suffix).
    observation_fields = set(Observation.__dataclass_fields__) - {"usage", "model_label"}
    usage_fields = {f"{name}_tokens" for name in Usage.__dataclass_fields__
                    if name not in ("output_tokens_per_second", "implausible", "load_seconds")}  # a rate, a flag, a time
    assert observation_fields | usage_fields | {"output_tokens_per_second"} == set(columns)
    assert query(db, "PRAGMA journal_mode")[0][0] == "wal"
    assert query(db, "PRAGMA user_version")[0][0] == SCHEMA_VERSION
    indexed = {tuple(c for _, _, c in query(db, f"PRAGMA index_info([{name}])"))
               for _, name, *_ in query(db, "PRAGMA index_list(requests)")}
    for needed in [("ts",), ("request_id",), ("model", "ts"), ("upstream", "ts"), ("key_id", "ts"), ("user", "ts")]:
        assert needed in indexed
    # The usage queries use the ts index rather than scanning the table.
    plan = " ".join(str(r) for r in query(db, "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM requests WHERE ts >= 5"))
    assert "idx_requests_ts" in plan


def test_key_ids_users_and_sessions_never_store_the_key(upstream_url, tmp_path, monkeypatch):
    db = tmp_path / "log.db"
    key_a, key_b = "sk-test-AAAA-1234567890abcdef", "sk-ant-test-BBBB-0987654321"
    options = dict(user_header="X-End-User", session_header="X-Session-Id")
    with running_exporter(settings(upstream_url, db, **options)) as url:
        chat = url + "/v1/chat/completions"
        httpx.post(chat, json={**CHAT, "user": "alice"}, headers={"authorization": f"Bearer {key_a}"})
        httpx.post(chat, json={**CHAT, "user": "alice"},
                   headers={"authorization": f"Bearer {key_a}", "x-end-user": "bob", "x-session-id": "s-1"})
        httpx.post(url + "/v1/messages", json={**ANTHROPIC, "metadata": {"user_id": "carol"}},
                   headers={"x-api-key": key_b, "x-session-id": "s-2"})
        httpx.post(chat, json=CHAT)
        wait_for_rows(db, 4)
    first, second, third, fourth = rows(db)
    salt = query(db, "SELECT value FROM meta WHERE key = 'key_salt'")[0][0].encode()

    def key_id(key: str) -> str:
        return hmac.new(salt, key.encode(), hashlib.sha256).hexdigest()[:16]

    assert first["key_id"] == second["key_id"] == key_id(key_a)
    assert third["key_id"] == key_id(key_b) != first["key_id"]
    assert fourth["key_id"] is None
    assert [r["user"] for r in (first, second, third, fourth)] == ["alice", "bob", "carol", None]
    assert [r["session_id"] for r in (first, second, third, fourth)] == [None, "s-1", "s-2", None]
    for path in tmp_path.iterdir():  # the database and its WAL: no trace of either key
        data = path.read_bytes()
        for secret in (key_a, key_b, "AAAA-1234567890abcdef", "BBBB-0987654321"):
            assert secret.encode() not in data, (path.name, secret)

    # The per-database salt survives a restart: the same key keeps its id in the same database.
    with running_exporter(settings(upstream_url, db)) as url:
        httpx.post(url + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key_a}"})
        wait_for_rows(db, 5)
    assert rows(db)[-1]["key_id"] == key_id(key_a)
    # Another database has another salt; a configured salt gives the same id everywhere.
    ids = []
    monkeypatch.setenv("LLM_EXPORTER_TEST_SALT", "a-shared-salt-of-some-length")
    for name, salted in (("other.db", {}), ("shared1.db", {"key_salt_env": "LLM_EXPORTER_TEST_SALT"}),
                         ("shared2.db", {"key_salt_env": "LLM_EXPORTER_TEST_SALT"})):
        with running_exporter(settings(upstream_url, tmp_path / name, **salted)) as url:
            httpx.post(url + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key_a}"})
            wait_for_rows(tmp_path / name, 1)
        ids.append(rows(tmp_path / name)[0]["key_id"])
    assert ids[0] != key_id(key_a)
    assert ids[1] == ids[2] != key_id(key_a)


def test_a_database_of_the_v1_schema_migrates_and_keeps_its_rows(upstream_url, tmp_path):
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.executescript(V1_FIXTURE.read_text())
    conn.close()
    old_columns = [name for _, name, *_ in query(db, "PRAGMA table_info(requests)")]
    assert "key_id" not in old_columns and query(db, "PRAGMA user_version")[0][0] == 1

    with running_exporter(settings(upstream_url, db, retention_days=365_000)) as url:
        response = httpx.post(url + "/v1/chat/completions", json={**CHAT, "user": "dave"})
        assert response.status_code == 200
        wait_for_rows(db, 4)
        usage = httpx.get(url + "/api/usage", params={"group_by": "upstream"}).json()

    columns = [name for _, name, *_ in query(db, "PRAGMA table_info(requests)")]
    assert columns[:len(old_columns)] == old_columns  # old columns kept, in place
    assert set(REQUIRED_COLUMNS) <= set(columns)
    assert query(db, "PRAGMA user_version")[0][0] == SCHEMA_VERSION
    old_rows = rows(db, "request_id LIKE 'v1-%'")
    assert [(r["request_id"], r["input_tokens"], r["cost_usd"]) for r in old_rows] == [
        ("v1-a", 100, 0.00045), ("v1-b", 200, 0.0009), ("v1-c", None, None)]
    assert all(r["key_id"] is None and r["cached_input_tokens"] is None for r in old_rows)
    new = rows(db, "request_id NOT LIKE 'v1-%'")[0]
    assert (new["user"], new["cached_input_tokens"], new["output_tokens"]) == ("dave", 2, 3)
    # The old rows answer usage questions alongside the new ones.
    assert usage["total"]["requests"] == 4
    assert usage["total"]["tokens"]["input"] == 100 + 200 + 5
    by_upstream = {g["group"]: g for g in usage["groups"]}
    assert by_upstream["local"]["errors"] == 1 and by_upstream["default"]["requests"] == 3


DAY = 86_400


def _seed(db: Path, ages_in_days: dict[str, float], table: str = "requests") -> None:
    """Rows (or captured bodies) of the given ages, in a database of the current schema."""
    database = connect(db)
    migrate(database)
    now = time.time()
    with database.atomic():
        database[table].insert_all([{"request_id": rid, "ts": now - age * DAY} for rid, age in ages_in_days.items()])
    database.close()


def test_retention_deletes_exactly_the_old_rows_on_a_schedule(upstream_url, tmp_path):
    db = tmp_path / "log.db"
    _seed(db, {"old-40d": 40, "old-30.5d": 30.5, "keep-29.5d": 29.5, "keep-1d": 1, "keep-now": 0})
    _seed(db, {"old-body-8d": 8, "keep-body-6d": 6, "keep-body-now": 0}, table="bodies")
    options = dict(retention_days=30, capture_retention_days=7, retention_interval_seconds=0.2)
    with running_exporter(settings(upstream_url, db, **options)):
        wait_until(lambda: count(db) == 3 and count(db, "bodies") == 2, "retention at start")
        assert {r[0] for r in query(db, "SELECT request_id FROM requests")} == {"keep-29.5d", "keep-1d", "keep-now"}
        assert {r[0] for r in query(db, "SELECT request_id FROM bodies")} == {"keep-body-6d", "keep-body-now"}
        # A row that becomes old while the exporter runs goes at a later run of the schedule.
        _seed(db, {"late-old-31d": 31, "late-keep-2d": 2})
        wait_until(lambda: count(db) == 4, "retention on its schedule")
    assert {r[0] for r in query(db, "SELECT request_id FROM requests")} == {
        "keep-29.5d", "keep-1d", "keep-now", "late-keep-2d"}


def test_a_full_queue_drops_rows_counts_them_and_never_holds_up_requests(upstream_url, tmp_path):
    db = tmp_path / "log.db"
    with running_exporter(settings(upstream_url, db, queue_size=2, batch_size=1, flush_interval_seconds=0.05)) as url:
        blocker = sqlite3.connect(db, timeout=60, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # the writer cannot write until this ends
        try:
            statuses = [httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=30).status_code for _ in range(10)]
            assert statuses == [200] * 10  # answered while the database was locked
            dropped = Scrape.of(url).value("llm_telemetry_dropped_total", reason="queue_full")
            # At most queue_size rows wait in the queue and batch_size in the writer's hands.
            assert 10 - 2 - 1 <= dropped <= 10
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        wait_for_rows(db, 10 - int(dropped))
        assert Scrape.of(url).value("llm_telemetry_dropped_total") == dropped


def test_lifespan_shutdown_writes_every_queued_row(upstream_url, tmp_path):
    db = tmp_path / "log.db"
    # Batches close only at 100,000 rows or after an hour: only the shutdown can write these rows.
    with running_exporter(settings(upstream_url, db, batch_size=100_000, flush_interval_seconds=3600)) as url:
        for i in range(25):
            assert httpx.post(url + "/v1/chat/completions", json={**CHAT, "stream": i % 2 == 0}).status_code == 200
        assert count(db) == 0
    assert count(db) == 25


def test_sigterm_right_after_the_last_response_loses_no_row(upstream_url, tmp_path):
    db, port = tmp_path / "log.db", free_port()
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({
        "upstreams": [{"name": "default", "url": upstream_url}],
        "db": {"path": str(db)},
        "telemetry": {"batch_size": 100_000, "flush_interval_seconds": 3600},
    }))
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)

        async def traffic() -> list[int]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                async def one(i: int) -> int:
                    body = {**CHAT, "stream": i % 3 == 0, "max_tokens": 1 + i % 5}
                    return (await client.post("/v1/chat/completions", json=body)).status_code
                return await asyncio.gather(*(one(i) for i in range(40)))

        statuses = asyncio.run(traffic())
    finally:
        process.send_signal(signal.SIGTERM)  # at once, with every row still queued
        output, _ = process.communicate(timeout=60)
    assert statuses == [200] * 40
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output and "Traceback" not in output
    assert count(db) == 40
    assert query(db, "SELECT SUM(output_tokens) FROM requests")[0][0] == sum(1 + i % 5 for i in range(40))




MIX = [
    ("/v1/chat/completions", {**CHAT, "max_tokens": 2}),
    ("/v1/chat/completions", {**CHAT, "stream": True}),
    ("/v1/chat/completions", {**CHAT, "model": "demo-reasoner", "max_tokens": 8, "stream": True}),
    ("/v1/messages", ANTHROPIC),
    ("/v1/messages", {**ANTHROPIC, "stream": True}),
    ("/v1/responses", {"model": "demo-reasoner", "instructions": "be kind", "max_output_tokens": 4,
                       "input": [{"role": "user", "content": "x y z"}], "stream": True}),
    ("/api/chat", {"model": "llama3.2:1b", "options": {"num_predict": 4}, "messages": [{"role": "user", "content": "a b c"}]}),
    ("/v1/embeddings", {"model": "demo-embed", "input": "a b c d"}),
]


def test_2000_requests_from_50_concurrent_clients_give_2000_rows_that_sum_to_the_counters(upstream_url, tmp_path):
    db, total, clients = tmp_path / "log.db", 2000, 50
    with running_exporter(settings(upstream_url, db, flush_interval_seconds=0.2)) as url:

        async def client(worker: int) -> list[int]:
            statuses = []
            async with httpx.AsyncClient(base_url=url, timeout=120) as http:
                for i in range(worker, total, clients):
                    path, body = MIX[i % len(MIX)]
                    response = await http.post(path, json=body, headers={"authorization": f"Bearer key-{worker % 7}"})
                    statuses.append(response.status_code)
            return statuses

        async def traffic() -> list[int]:
            return [s for statuses in await asyncio.gather(*(client(w) for w in range(clients))) for s in statuses]

        statuses = asyncio.run(traffic())
        assert statuses == [200] * total
        wait_for_rows(db, total)
        scrape = Scrape.of(url)

    assert query(db, "SELECT COUNT(DISTINCT request_id), COUNT(DISTINCT key_id) FROM requests")[0] == (total, 7)
    assert scrape.value("llm_requests_total") == total
    assert scrape.value("llm_telemetry_dropped_total") == 0
    for token_type in TOKEN_TYPES:
        column = f"{token_type}_tokens"
        assert query(db, f"SELECT COALESCE(SUM({column}), 0) FROM requests")[0][0] == \
            scrape.value("llm_tokens_total", type=token_type), token_type
        for model, logged in query(db, f"SELECT model, COALESCE(SUM({column}), 0) FROM requests GROUP BY model"):
            assert logged == scrape.value("llm_tokens_total", type=token_type, model=model), (token_type, model)
    logged_cost = query(db, "SELECT SUM(cost_usd) FROM requests")[0][0]
    assert logged_cost == pytest.approx(scrape.value("llm_cost_usd_total"), rel=1e-9)


# --- the writer on its own (no HTTP): batches by count and by time ---------------------------------


def _observation(i: int) -> Observation:
    return Observation(request_id=f"r{i}", ts=time.time(), upstream="u", api="openai_chat", model="m",
                       model_label="m", stream=False, request_bytes=10, status_code=200,
                       usage=Usage(input=i, output=1))


def test_the_writer_batches_by_count_and_by_time(tmp_path):
    by_count = RequestLog(tmp_path / "count.db", Telemetry(batch_size=10, flush_interval_seconds=3600))
    by_count.start()
    try:
        for i in range(25):
            by_count.observe(_observation(i))
        # Two full batches are written; five rows wait for a batch that closes only by count.
        wait_until(lambda: by_count.written == 20, "two batches of ten")
        assert by_count.batches == 2 and count(tmp_path / "count.db") == 20
    finally:
        by_count.close()
    assert by_count.written == 25 and by_count.batches == 3 and count(tmp_path / "count.db") == 25

    by_time = RequestLog(tmp_path / "time.db", Telemetry(batch_size=1000, flush_interval_seconds=0.2))
    by_time.start()
    try:
        for i in range(3):
            by_time.observe(_observation(i))
        wait_until(lambda: by_time.written == 3, "a batch closed by time")  # far below batch_size
        assert count(tmp_path / "time.db") == 3
    finally:
        by_time.close()


def test_observe_never_blocks_and_counts_what_it_drops(tmp_path):
    drops = []
    log = RequestLog(tmp_path / "log.db", Telemetry(queue_size=5), on_drop=lambda *drop: drops.append(drop))
    # Not started: nothing drains the queue, so the sixth row on is dropped, each counted.
    done = threading.Event()

    def flood() -> None:
        for i in range(12):
            log.observe(_observation(i))
        done.set()

    threading.Thread(target=flood, daemon=True).start()
    assert done.wait(60)
    assert log.dropped == 7 and drops == [("queue_full", 1)] * 7 and log.queued == 5
    log.start()
    log.close()
    assert count(tmp_path / "log.db") == 5


def test_a_bad_database_path_stops_start_up_naming_the_field(tmp_path):
    from exporter.config import ConfigError

    (tmp_path / "dir.db").mkdir()
    with pytest.raises(ConfigError, match=r"^db\.path: cannot open"):
        RequestLog(tmp_path / "dir.db", Telemetry())
    with pytest.raises(ConfigError, match=r"^db\.path: cannot open"):
        RequestLog(tmp_path / "missing" / "log.db", Telemetry())


def test_rows_go_in_many_per_statement_so_a_busy_event_loop_cannot_starve_the_writer(tmp_path):
    # Each statement hands the GIL back and forth with the event loop; row by row (executemany)
    # the writer fell behind a saturated proxy and rows were dropped.
    from exporter.requestlog import REQUEST_COLUMNS, ROWS_PER_STATEMENT, insert_rows, row_of

    db = connect(tmp_path / "log.db")
    migrate(db)
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    rows = [row_of(_observation(i)) for i in range(10 * ROWS_PER_STATEMENT + 1)]
    insert_rows(db.conn, "requests", REQUEST_COLUMNS, rows)
    db.conn.set_trace_callback(None)
    inserts = [s for s in statements if s.startswith("INSERT")]
    assert len(inserts) == 11
    stored = db.conn.execute(f"SELECT {', '.join(f'[{c}]' for c in REQUEST_COLUMNS)} FROM requests ORDER BY rowid")
    assert [tuple(row) for row in stored] == rows
    db.close()
