"""Optional body capture through the real app: off by default; when on, bodies are redacted,
capped and compressed in their own table, and readable through /api/requests/{request_id}."""

from __future__ import annotations

import gzip
import json
import zlib

import httpx

from tests.logdb import count, query, rows, settings, wait_for_rows
from tests.servers import running_exporter

KEY = "sk-live-0123456789abcdefghijklmnopqrstuv"
GOOGLE_KEY = "AIza" + "S" * 35
CHAT = {"model": "demo-gpt-mini", "max_tokens": 3, "messages": [{"role": "user", "content": "hello there"}]}


def test_bodies_are_not_captured_by_default(upstream_url, tmp_path):
    db = tmp_path / "log.db"
    with running_exporter(settings(upstream_url, db)) as url:
        httpx.post(url + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {KEY}"})
        wait_for_rows(db, 1)
        request_id = rows(db)[0]["request_id"]
        assert httpx.get(f"{url}/api/requests/{request_id}").json()["bodies"] is None
    assert count(db, "bodies") == 0


def test_captured_bodies_are_redacted_capped_and_compressed(upstream_url, tmp_path):
    db, cap = tmp_path / "log.db", 600
    with running_exporter(settings(upstream_url, db, capture_bodies=True, capture_max_bytes=cap)) as url:
        leaky = {**CHAT, "metadata": {"api_key": "hunter2-not-a-pattern"}, "messages": [
            {"role": "user", "content": f"my key is {KEY} and google's is {GOOGLE_KEY}"}]}
        first = httpx.post(url + "/v1/chat/completions", json=leaky, headers={"authorization": f"Bearer {KEY}"})
        long_body = {**CHAT, "messages": [{"role": "user", "content": "word " * 400}]}
        second = httpx.post(url + "/v1/chat/completions", content=json.dumps(long_body),
                            headers={"x-api-key": KEY, "content-type": "application/json"})
        gzipped = httpx.post(url + "/v1/chat/completions", json={**CHAT, "stream": True},
                             headers={"x-demo-encoding": "gzip", "accept-encoding": "gzip"})
        assert first.status_code == second.status_code == gzipped.status_code == 200
        assert gzipped.headers["content-encoding"] == "gzip"
        wait_for_rows(db, 3)
        wait_for_rows(db, 3, table="bodies")
        ids = [row["request_id"] for row in rows(db)]
        shown = [httpx.get(f"{url}/api/requests/{request_id}").json() for request_id in ids]

    leaky_shown, long_shown, gzip_shown = (s["bodies"] for s in shown)
    assert KEY not in leaky_shown["request"] and GOOGLE_KEY not in leaky_shown["request"]
    assert "hunter2" not in leaky_shown["request"]
    assert leaky_shown["request"].count("[REDACTED]") == 3
    assert json.loads(leaky_shown["request"])["model"] == "demo-gpt-mini"  # still JSON after redaction
    assert leaky_shown["response"] == first.text and not leaky_shown["response_truncated"]

    assert long_shown["request_truncated"] and len(long_shown["request"]) == cap
    assert long_shown["request_size"] == len(json.dumps(long_body)) > cap

    # The gzip stream is stored decoded (so it could be redacted) and capped decoded; the size
    # stays that of the wire.
    assert len(gzipped.text) > cap
    assert gzip_shown["response"] == gzipped.text[:cap] and gzip_shown["response_truncated"]
    assert gzip_shown["response_size"] == shown[2]["request"]["response_bytes"] < len(gzipped.text)
    assert gzip_shown["response_content_type"].startswith("text/event-stream")

    # Stored compressed; neither the database nor its WAL holds a key, in any form.
    for blob, text in zip(query(db, "SELECT request_body FROM bodies ORDER BY ts"), (s["request"] for s in
                                                                                    (leaky_shown, long_shown))):
        assert zlib.decompress(blob[0]).decode() == text
    long_blob = query(db, "SELECT request_body FROM bodies WHERE request_id = ?", [ids[1]])[0][0]
    assert len(long_blob) < cap / 4  # 400 repeated words compress well
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        for secret in (KEY, GOOGLE_KEY, "hunter2"):
            for form in (secret.encode(), gzip.compress(secret.encode())[10:-8]):
                assert form not in data, (path.name, secret)


def test_captures_waiting_in_the_queue_are_bounded_in_bytes(tmp_path, monkeypatch):
    """A stalled writer with captures on: rows still queue, bodies beyond the byte budget are skipped."""
    import time

    from exporter import requestlog
    from exporter.capture import CAPTURE, Capture
    from exporter.config import Telemetry
    from exporter.observation import Observation

    monkeypatch.setattr(requestlog, "CAPTURE_QUEUE_BYTES", 10_000)
    log = requestlog.RequestLog(tmp_path / "log.db", Telemetry(capture_bodies=True))  # not started: stalled
    for i in range(10):
        capture = Capture(limit=5_000)
        capture.add_request(b"x" * 3_000)
        token = CAPTURE.set(capture)
        try:
            log.observe(Observation(request_id=f"r{i}", ts=time.time(), upstream="u", api="openai_chat",
                                    model="m", model_label="m", stream=False, request_bytes=3_000))
        finally:
            CAPTURE.reset(token)
    assert log.captures_skipped == 7 and log.queued == 10  # 3 x 3,000 bytes fit in 10,000
    log.start()
    log.close()
    assert count(tmp_path / "log.db") == 10 and count(tmp_path / "log.db", "bodies") == 3
    assert log._capture_bytes == 0
