"""The JSON access log (one line per proxied request) and X-Request-ID, through the real app."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from exporter.config import parse_settings
from tests.logdb import rows, wait_for_rows, wait_until
from tests.servers import free_port, lifespan_of_a_plain_app, running_exporter, serve

CHAT = {"model": "demo-gpt-mini", "max_tokens": 4, "messages": [{"role": "user", "content": "a b c"}]}


def _settings(upstream_url: str, tmp_path: Path, **access_log):
    return parse_settings({
        "upstreams": [{"name": "main", "url": upstream_url}, {"name": "dead", "url": f"http://127.0.0.1:{free_port()}",
                                                             "models": ["dead-*"]}],
        "db": {"path": str(tmp_path / "log.db")},
        "telemetry": {"flush_interval_seconds": 0.1},
        "limits": {"max_request_bytes": 2000},
        "access_log": {"path": str(tmp_path / "access.log"), **access_log},
    })


def _lines(path: Path, expected: int) -> list[dict]:
    wait_until(lambda: path.exists() and len(path.read_text().splitlines()) >= expected, f"{expected} log lines")
    lines = path.read_text().splitlines()
    assert len(lines) == expected, lines
    return [json.loads(line) for line in lines]


def test_one_json_line_per_request_with_the_request_id_returned(upstream_url, tmp_path):
    with running_exporter(_settings(upstream_url, tmp_path)) as exporter:
        given = httpx.post(exporter + "/v1/chat/completions", json=CHAT, headers={"x-request-id": "client-id-1"})
        made = httpx.post(exporter + "/v1/chat/completions", json={**CHAT, "stream": True})
        invalid = httpx.post(exporter + "/api/chat", json={**CHAT, "model": 'quote"and\\slash', "stream": False},
                             headers={"x-request-id": "has spaces and \"quotes\""})
        too_long = httpx.post(exporter + "/v1/embeddings", json={"model": "e", "input": "a"},
                              headers={"x-request-id": "a" * 129})
        large = httpx.post(exporter + "/v1/messages", json={**CHAT, "pad": "x" * 3000})
        unreachable = httpx.post(exporter + "/v1/chat/completions", json={**CHAT, "model": "dead-1"})
        responses = [given, made, invalid, too_long, large, unreachable]
        assert [r.status_code for r in responses] == [200, 200, 200, 200, 413, 502]
        ids = [r.headers["x-request-id"] for r in responses]
        assert ids[0] == "client-id-1"
        assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids[1:]), ids
        assert len(set(ids)) == len(ids)

        lines = {line["request_id"]: line for line in _lines(tmp_path / "access.log", len(responses))}
        assert set(lines) == set(ids)
        first = lines["client-id-1"]
        assert first["upstream"] == "main" and first["api"] == "openai_chat" and first["model"] == "demo-gpt-mini"
        assert first["status"] == 200 and first["error_type"] is None and first["stream"] is False
        assert first["input_tokens"] == 3 and first["output_tokens"] == 4 and first["cached_input_tokens"] == 0
        assert first["duration_seconds"] > 0 and first["ttft_seconds"] is None
        assert lines[ids[1]]["stream"] is True and lines[ids[1]]["ttft_seconds"] is not None
        assert lines[ids[2]]["model"] == 'quote"and\\slash' and lines[ids[2]]["api"] == "ollama_chat"
        assert lines[ids[4]]["status"] == 413 and lines[ids[4]]["input_tokens"] is None
        assert lines[ids[5]]["status"] == 502 and lines[ids[5]]["error_type"] == "connect"
        assert lines[ids[5]]["upstream"] == "dead"

        # The request log names each request by the same id.
        wait_for_rows(tmp_path / "log.db", len(responses))
        assert {row["request_id"] for row in rows(tmp_path / "log.db")} == set(ids)
        assert httpx.get(exporter + "/api/requests/client-id-1").json()["request"]["status_code"] == 200


def test_the_access_log_can_be_switched_off(upstream_url, tmp_path):
    with running_exporter(_settings(upstream_url, tmp_path, enabled=False)) as exporter:
        assert httpx.post(exporter + "/v1/chat/completions", json=CHAT).headers["x-request-id"]
        wait_for_rows(tmp_path / "log.db", 1)
    assert not (tmp_path / "access.log").exists() or (tmp_path / "access.log").read_text() == ""


class _UpstreamWithItsOwnId:
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await lifespan_of_a_plain_app(receive, send)
            return
        while (await receive()).get("more_body"):
            pass
        echoed = dict(scope["headers"]).get(b"x-request-id", b"req_upstream")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"x-request-id", echoed)]})
        await send({"type": "http.response.body", "body": b'{"usage":{"prompt_tokens":1,"completion_tokens":1}}'})


@pytest.mark.parametrize("sent, returned, upstream_id", [
    (None, None, "req_upstream"),  # the upstream's own id is kept as X-Upstream-Request-ID
    ("mine-1", "mine-1", None),  # an upstream echoing the client's id: one header
])
def test_an_upstream_request_id_is_kept_beside_the_proxys(tmp_path, sent, returned, upstream_id):
    with serve(_UpstreamWithItsOwnId()) as upstream, running_exporter(_settings(upstream, tmp_path)) as exporter:
        response = httpx.post(exporter + "/v1/chat/completions", json=CHAT,
                              headers={"x-request-id": sent} if sent else {})
        assert response.headers.get_list("x-request-id") == [returned or response.headers["x-request-id"]]
        assert response.headers.get("x-upstream-request-id") == upstream_id
