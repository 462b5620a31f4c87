"""GET /api/usage, GET /api/requests and `llm-exporter usage`, through the real app under uvicorn.

Most tests read a log seeded with known rows, so every number (percentiles included) is exact;
one drives real traffic and checks the API against the metrics.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from exporter.requestlog import REQUEST_COLUMNS, connect, migrate
from tests.logdb import settings, wait_for_rows
from tests.scrape import Scrape
from tests.servers import running_exporter

NOW = time.time()
BASE = NOW - 3 * 86_400  # inside the default 30-day retention
OLD = BASE - 10 * 86_400


def _row(i: int, **values) -> dict:
    return {"ts": BASE + i * 600, "request_id": f"req-{i:02d}", "stream": 0, "status_code": 200,
            "error_type": None, **values}


GPT = dict(upstream="openai", api="openai_chat", model="gpt-4o", response_model="gpt-4o-2024-08-06",
           key_id="k1", user="alice")
LLAMA = dict(upstream="local", api="ollama_chat", model="llama3", response_model="llama3", user="bob")
SEED = [
    _row(0, **GPT, duration_seconds=1.0, input_tokens=100, cached_input_tokens=50, output_tokens=10, cost_usd=0.001),
    _row(1, **GPT, duration_seconds=2.0, input_tokens=100, output_tokens=10, cost_usd=0.001,
         stream=1, ttft_seconds=0.5),
    _row(2, **GPT, duration_seconds=3.0, input_tokens=100, cached_input_tokens=50, output_tokens=10, cost_usd=0.001,
         stream=1, ttft_seconds=1.5, reasoning_tokens=4),
    _row(3, **GPT, duration_seconds=4.0, input_tokens=100, output_tokens=10, cost_usd=0.001),
    _row(4, **{**GPT, "key_id": "k2"}, status_code=500, error_type="status", duration_seconds=0.1, cost_usd=0.0),
    _row(5, **LLAMA, duration_seconds=10.0, input_tokens=5, output_tokens=7),
    _row(6, **LLAMA, duration_seconds=30.0, input_tokens=5, output_tokens=7),
    _row(7, **LLAMA, duration_seconds=20.0, input_tokens=5, output_tokens=7),
    _row(8, **LLAMA, status_code=499, duration_seconds=5.0, cost_usd=0.0),
    _row(9, **LLAMA, error_type="read", duration_seconds=6.0, stream=1, cost_usd=0.0),
    {**_row(10, **GPT, duration_seconds=9.0, input_tokens=1000, output_tokens=100, cost_usd=0.5), "ts": OLD},
]


@pytest.fixture
def seeded(upstream_url, tmp_path):
    db = tmp_path / "log.db"
    database = connect(db)
    migrate(database)
    database["requests"].insert_all(SEED)
    database.close()
    with running_exporter(settings(upstream_url, db)) as url:
        yield url, db


def _usage(url: str, **params) -> dict:
    response = httpx.get(url + "/api/usage", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_usage_by_model_gives_every_number(seeded):
    url, _ = seeded
    report = _usage(url, since=str(BASE - 1), group_by="model")
    assert report["group_by"] == "model" and report["filters"]["since"] == BASE - 1
    gpt, llama = report["groups"]  # the most expensive first
    assert gpt == {
        "group": "gpt-4o", "requests": 5, "errors": 1,
        "tokens": {"input": 400, "cached_input": 100, "cache_write_input": 0, "output": 40, "reasoning": 4},
        "cost_usd": pytest.approx(0.004), "unpriced_requests": 0, "unpriced_models": [],
        # Nearest rank over the successful durations 1, 2, 3, 4 (the 500 is left out).
        "latency_seconds": {"p50": 2.0, "p95": 4.0}, "mean_ttft_seconds": 1.0,
    }
    assert llama == {
        "group": "llama3", "requests": 5, "errors": 2,  # the 499 and the stream broken off after its 200
        "tokens": {"input": 15, "cached_input": 0, "cache_write_input": 0, "output": 21, "reasoning": 0},
        "cost_usd": 0.0, "unpriced_requests": 3, "unpriced_models": ["llama3"],
        "latency_seconds": {"p50": 20.0, "p95": 30.0}, "mean_ttft_seconds": None,
    }
    total = report["total"]
    assert (total["requests"], total["errors"], total["tokens"]["input"]) == (10, 3, 415)
    assert total["latency_seconds"] == {"p50": 4.0, "p95": 30.0}  # ranks 4 and 7 of 1 2 3 4 10 20 30
    assert total["unpriced_models"] == ["llama3"] and total["cost_usd"] == pytest.approx(0.004)


@pytest.mark.parametrize("group_by, expected", [
    ("upstream", {"openai": 5, "local": 5}),
    ("api", {"openai_chat": 5, "ollama_chat": 5}),
    ("key_id", {"k1": 4, "k2": 1, None: 5}),
    ("user", {"alice": 5, "bob": 5}),
    ("day", None),
])
def test_usage_groups_by_every_dimension(seeded, group_by, expected):
    url, _ = seeded
    report = _usage(url, since=str(BASE - 1), group_by=group_by)
    groups = {g["group"]: g["requests"] for g in report["groups"]}
    if group_by == "day":
        days = {}
        for row in SEED[:10]:
            day = datetime.fromtimestamp(row["ts"], timezone.utc).strftime("%Y-%m-%d")
            days[day] = days.get(day, 0) + 1
        expected = days
        assert [g["group"] for g in report["groups"]] == sorted(days)  # days in order
    assert groups == expected
    assert sum(groups.values()) == report["total"]["requests"] == 10


@pytest.mark.parametrize("params, requests", [
    ({}, 11),  # no since: the whole log
    ({"since": "7d"}, 10),
    ({"since": "30d"}, 11),
    ({"since": datetime.fromtimestamp(BASE - 60, timezone.utc).isoformat()}, 10),
    ({"until": str(BASE - 1)}, 1),
    ({"since": str(BASE - 1), "until": str(BASE + 3 * 600)}, 3),
    ({"model": "llama3"}, 5),
    ({"model": "gpt-4o,llama3", "since": "7d"}, 10),
    ({"upstream": "openai"}, 6),
    ({"upstream": "openai", "model": "llama3"}, 0),
    ({"api": "ollama_chat"}, 5),
    ({"user": "alice", "since": "7d"}, 5),
])
def test_usage_filters(seeded, params, requests):
    url, _ = seeded
    assert _usage(url, **params)["total"]["requests"] == requests


def test_usage_with_no_rows_is_a_total_of_zeros(seeded):
    url, _ = seeded
    report = _usage(url, model="nothing", group_by="model")
    assert report["groups"] == [] and report["total"]["requests"] == 0
    assert report["total"]["latency_seconds"] == {"p50": None, "p95": None}


def test_requests_lists_the_newest_rows_first_with_filters(seeded):
    url, _ = seeded
    everything = httpx.get(url + "/api/requests").json()
    assert everything["count"] == 11 and everything["limit"] == 100
    assert [r["request_id"] for r in everything["requests"]] == [f"req-{i:02d}" for i in (9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 10)]
    first = everything["requests"][0]
    assert list(first) == list(REQUEST_COLUMNS) and first["stream"] is True and first["error_type"] == "read"

    def ids(**params) -> list[str]:
        response = httpx.get(url + "/api/requests", params=params)
        assert response.status_code == 200, response.text
        return [r["request_id"] for r in response.json()["requests"]]

    assert ids(limit="3") == ["req-09", "req-08", "req-07"]
    assert ids(errors="true") == ["req-09", "req-08", "req-04"]
    assert len(ids(errors="false")) == 8
    assert ids(status="499,500") == ["req-08", "req-04"]
    assert ids(key_id="k2") == ["req-04"]
    assert ids(user="alice", since="7d", limit="2") == ["req-04", "req-03"]
    assert ids(until=str(BASE)) == ["req-10"]
    one = httpx.get(url + "/api/requests/req-04").json()
    assert one["request"]["status_code"] == 500 and one["bodies"] is None


@pytest.mark.parametrize("path, query, parameter", [
    ("/api/usage", "since=yesterday", "since"),
    ("/api/usage", "until=soon", "until"),
    ("/api/usage", "since=1h&until=2h", "until"),
    ("/api/usage", "since=1h&since=2h", "since"),
    ("/api/usage", "group_by=colour", "group_by"),
    ("/api/usage", "groupby=model", "groupby"),
    ("/api/usage", "limit=5", "limit"),
    ("/api/usage", "model=", "model"),
    ("/api/requests", "limit=0", "limit"),
    ("/api/requests", "limit=5000", "limit"),
    ("/api/requests", "limit=ten", "limit"),
    ("/api/requests", "status=abc", "status"),
    ("/api/requests", "status=700", "status"),
    ("/api/requests", "errors=maybe", "errors"),
    ("/api/requests", "group_by=model", "group_by"),
    ("/api/requests", "since=-5", "since"),
])
def test_bad_parameters_get_a_400_naming_the_parameter(seeded, path, query, parameter):
    url, _ = seeded
    response = httpx.get(f"{url}{path}?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["parameter"] == parameter and body["error"].startswith(parameter + ": ")


def test_an_unknown_request_id_is_a_404(seeded):
    url, _ = seeded
    response = httpx.get(url + "/api/requests/no-such-id")
    assert response.status_code == 404 and response.json()["parameter"] == "request_id"


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", "usage", *args],
                          capture_output=True, text=True, timeout=60, cwd=cwd)


def _number(cell: str) -> float | None:
    return None if cell == "-" else float(cell.replace(",", ""))


@pytest.mark.parametrize("by", ["model", "upstream", "day", "user"])
def test_the_cli_prints_the_same_numbers_as_the_api(seeded, by):
    url, db = seeded
    since = str(BASE - 1)
    api = _usage(url, since=since, group_by=by)
    result = _cli("--db", str(db), "--since", since, "--by", by)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines[2].split()
    assert header[0] == by.upper() and header[1:4] == ["REQUESTS", "ERRORS", "INPUT"]
    table = {line.split()[0]: line.split()[1:] for line in lines[3:] if line and not line.startswith(("-", "Unpriced"))}
    assert set(table) == {str(g["group"]) for g in api["groups"]} | {"TOTAL"}
    for group in [*api["groups"], {**api["total"], "group": "TOTAL"}]:
        cells = [_number(c) for c in table[str(group["group"])]]
        tokens = group["tokens"]
        assert cells[:7] == [group["requests"], group["errors"], tokens["input"], tokens["cached_input"],
                             tokens["cache_write_input"], tokens["output"], tokens["reasoning"]]
        assert cells[7] == pytest.approx(group["cost_usd"], abs=5e-7)
        for cell, value in zip(cells[8:], (group["latency_seconds"]["p50"], group["latency_seconds"]["p95"],
                                           group["mean_ttft_seconds"])):
            assert cell == (None if value is None else pytest.approx(value, abs=5e-4))
    assert "Unpriced models" in result.stdout and "llama3" in lines[-1]

    as_json = _cli("--db", str(db), "--since", since, "--by", by, "--json")
    assert json.loads(as_json.stdout) == api


def test_the_cli_defaults_to_the_last_24_hours_by_model(upstream_url, tmp_path):
    db = tmp_path / "llm-exporter.db"
    with running_exporter(settings(upstream_url, db)) as url:
        for _ in range(3):
            httpx.post(url + "/v1/chat/completions",
                       json={"model": "demo-gpt-mini", "max_tokens": 2, "messages": [{"role": "user", "content": "a"}]})
        wait_for_rows(db, 3)
    result = _cli(cwd=tmp_path)  # llm-exporter.db in the working directory, since 24h, by model
    assert result.returncode == 0, result.stderr
    row = next(line.split() for line in result.stdout.splitlines() if line.startswith("demo-gpt-mini"))
    assert row[1:3] == ["3", "0"] and row[6] == "6"  # requests, errors ... output tokens


@pytest.mark.parametrize("args, words", [
    (["--db", "/nonexistent/log.db"], "no request log at /nonexistent/log.db"),
    (["--since", "last week"], "--since: 'last week' is not a time"),
    (["--by", "colour"], "invalid choice"),
])
def test_cli_errors_are_one_line(seeded, args, words):
    _, db = seeded
    result = _cli(*(["--db", str(db)] if "--db" not in args else []), *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr


def test_usage_of_live_traffic_matches_the_metrics(upstream_url, tmp_path):
    db = tmp_path / "log.db"
    with running_exporter(settings(upstream_url, db)) as url:
        chat = {"model": "demo-gpt-mini", "max_tokens": 4, "messages": [
            {"role": "system", "content": "s"}, {"role": "user", "content": "a b c"}]}
        for i in range(6):
            httpx.post(url + "/v1/chat/completions", json={**chat, "stream": i % 2 == 0})
        httpx.post(url + "/v1/chat/completions", json=chat, headers={"x-demo-status": "503"})
        httpx.post(url + "/api/generate", json={"model": "llama3.2:1b", "prompt": "x y", "stream": False})
        wait_for_rows(db, 8)
        report = _usage(url, group_by="model")
        scrape = Scrape.of(url)
    total = report["total"]
    assert total["requests"] == scrape.value("llm_requests_total") == 8
    assert total["errors"] == 1
    for token_type, value in total["tokens"].items():
        assert value == scrape.value("llm_tokens_total", type=token_type), token_type
    assert total["cost_usd"] == pytest.approx(scrape.value("llm_cost_usd_total"), rel=1e-9)
    assert total["unpriced_models"] == ["llama3.2:1b"]
    assert total["mean_ttft_seconds"] > 0
    by_model = {g["group"]: g for g in report["groups"]}
    assert by_model["demo-gpt-mini"]["requests"] == 7 and by_model["demo-gpt-mini"]["tokens"]["output"] == 24


def test_cli_on_a_file_that_is_not_a_database_says_so_in_one_line(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("not a database, just notes\n")
    result = _cli("--db", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"llm-exporter: cannot read the request log {path}: file is not a database"]
