"""Access control: bearer tokens for /metrics and /api/*, allowed client keys, secrets kept out.

Tokens and keys are made per test run (never committed values) and reach the exporter through
files and environment variables, as in production.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import zlib
from pathlib import Path

import httpx
import pytest

from exporter.config import ConfigError, parse_settings
from tests.exporter_process import serve_cli
from tests.logdb import rows, wait_for_rows, wait_until
from tests.servers import HeaderEcho, free_port, running_exporter, serve

CHAT = {"model": "demo-gpt-mini", "max_tokens": 3, "messages": [{"role": "user", "content": "a b"}]}


def _token() -> str:
    return "tok-" + secrets.token_hex(16)


def _settings(upstream_url: str, tmp_path: Path, access: dict, **upstream) -> object:
    return parse_settings({
        "upstreams": [{"name": "main", "url": upstream_url, **upstream}],
        "db": {"path": str(tmp_path / "log.db")},
        "telemetry": {"flush_interval_seconds": 0.1},
        "access": access,
    })


@pytest.mark.parametrize("source", ["file", "env"])
def test_metrics_and_api_need_a_bearer_token(upstream_url, tmp_path, monkeypatch, source):
    tokens = [_token(), _token()]
    if source == "file":
        (tmp_path / "tokens").write_text("# for Prometheus and the usage API\n" + "\n".join(tokens) + "\n")
        access = {"admin_tokens_file": str(tmp_path / "tokens")}
    else:
        monkeypatch.setenv("TEST_ADMIN_TOKENS", ",".join(tokens))
        access = {"admin_tokens_env": "TEST_ADMIN_TOKENS"}
    with running_exporter(_settings(upstream_url, tmp_path, access)) as exporter:
        for path in ("/metrics", "/api/usage", "/api/requests", "/api/requests/abc"):
            for headers in ({}, {"authorization": "Bearer wrong-token-0123456789"}, {"authorization": tokens[0]},
                            {"authorization": "Basic " + tokens[0]}):
                refused = httpx.get(exporter + path, headers=headers)
                assert refused.status_code == 401, (path, headers)
                assert refused.headers["www-authenticate"].startswith("Bearer")
                assert "error" in refused.json()
            for token in tokens:
                allowed = httpx.get(exporter + path, headers={"authorization": f"Bearer {token}"})
                assert allowed.status_code == (404 if path.endswith("abc") else 200), path
        # Probes stay open, and so do proxied paths under /api/ (Ollama's).
        assert httpx.get(exporter + "/healthz").status_code == 200
        assert httpx.post(exporter + "/api/chat", json={**CHAT, "stream": False}).status_code == 200


@pytest.mark.parametrize("path, shape", [
    ("/v1/chat/completions", lambda e: e["error"]["code"] == "invalid_api_key"),
    ("/v1/messages", lambda e: e["type"] == "error" and e["error"]["type"] == "authentication_error"),
    ("/api/chat", lambda e: isinstance(e["error"], str)),
    ("/completion", lambda e: e["error"]["code"] == 401 and e["error"]["type"] == "authentication_error"),
])
def test_only_allowed_client_keys_reach_the_upstream(tmp_path, monkeypatch, path, shape):
    team_key, bare_key, upstream_key = (_token() for _ in range(3))
    (tmp_path / "clients").write_text(f"team-a {team_key}\n{bare_key}\n")
    monkeypatch.setenv("TEST_UPSTREAM_KEY", upstream_key)
    with serve(HeaderEcho()) as upstream, running_exporter(_settings(
            upstream, tmp_path, {"client_keys_file": str(tmp_path / "clients")},
            api_key_env="TEST_UPSTREAM_KEY")) as exporter:
        for headers in ({}, {"authorization": "Bearer not-an-allowed-key"}, {"x-api-key": "not-an-allowed-key"}):
            refused = httpx.post(exporter + path, json=CHAT, headers=headers)
            assert refused.status_code == 401
            assert shape(refused.json())
        named = httpx.post(exporter + path, json=CHAT, headers={"authorization": f"Bearer {team_key}"})
        bare = httpx.post(exporter + path, json=CHAT, headers={"x-api-key": bare_key})
        assert named.status_code == bare.status_code == 200
        for response in (named, bare):  # the client's key is the proxy's: the upstream gets its own
            sent = dict(response.json()["headers"])
            assert sent["authorization"] == f"Bearer {upstream_key}"
            assert "x-api-key" not in sent
        wait_for_rows(tmp_path / "log.db", 5)
        key_ids = [row["key_id"] for row in rows(tmp_path / "log.db") if row["status_code"] == 200]
        assert key_ids[0] == "team-a"
        assert len(key_ids[1]) == 16 and key_ids[1] != "team-a"  # the salted hash id, never the key
        statuses = [row["status_code"] for row in rows(tmp_path / "log.db")]
        assert statuses == [401, 401, 401, 200, 200]


def test_allowed_keys_go_on_as_sent_when_the_upstream_has_no_key(tmp_path, monkeypatch):
    key = _token()
    monkeypatch.setenv("TEST_CLIENT_KEYS", f"local {key}")
    with serve(HeaderEcho()) as upstream, running_exporter(_settings(
            upstream, tmp_path, {"client_keys_env": "TEST_CLIENT_KEYS"})) as exporter:
        response = httpx.post(exporter + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"})
        assert dict(response.json()["headers"])["authorization"] == f"Bearer {key}"


@pytest.mark.parametrize("access, field", [
    ({"admin_tokens_env": "TEST_UNSET_TOKENS"}, "access.admin_tokens_env"),
    ({"admin_tokens_file": "/nonexistent/tokens"}, "access.admin_tokens_file"),
    ({"admin_tokens_env": "TEST_SHORT_TOKEN"}, "access.admin_tokens_env"),
    ({"client_keys_env": "TEST_BAD_CLIENT_KEYS"}, "access.client_keys_env"),
    ({"secret_headers": ["not a header"]}, "access.secret_headers[0]"),
    ({"tokens": "x"}, "access.tokens"),
])
def test_bad_access_settings_name_the_field(monkeypatch, access, field):
    monkeypatch.delenv("TEST_UNSET_TOKENS", raising=False)
    monkeypatch.setenv("TEST_SHORT_TOKEN", "short")
    monkeypatch.setenv("TEST_BAD_CLIENT_KEYS", "a b c")
    with pytest.raises(ConfigError) as raised:
        parse_settings({"upstreams": [{"name": "a", "url": "http://h"}], "access": access})
    assert str(raised.value).startswith(field + ":")
    assert "\n" not in str(raised.value)


# --- a planted key appears nowhere ---------------------------------------------------------------


def test_a_planted_key_appears_in_no_output(upstream_url, tmp_path):
    client_key = "sk-planted" + secrets.token_hex(16)
    header_secret = "hs-planted" + secrets.token_hex(16)
    upstream_key = "up-planted" + secrets.token_hex(16)
    admin_token = "ad-planted" + secrets.token_hex(16)
    rejected_key = "rk-planted" + secrets.token_hex(16)
    planted = [client_key, header_secret, upstream_key, admin_token, rejected_key]
    (tmp_path / "clients").write_text(f"team-a {client_key}\n")
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({
        "upstreams": [
            {"name": "main", "url": upstream_url, "api_key_env": "PLANTED_UPSTREAM_KEY"},
            {"name": "dead", "url": f"http://127.0.0.1:{free_port()}", "models": ["dead-*"]},
        ],
        "db": {"path": str(tmp_path / "log.db")},
        "limits": {"max_request_bytes": 4000},
        "telemetry": {"flush_interval_seconds": 0.1, "capture_bodies": True, "user_header": "x-user"},
        "access": {"admin_tokens_env": "PLANTED_ADMIN_TOKEN", "client_keys_file": str(tmp_path / "clients"),
                   "secret_headers": ["x-secret-token"]},
    }))
    env = {"PLANTED_UPSTREAM_KEY": upstream_key, "PLANTED_ADMIN_TOKEN": admin_token}
    admin = {"authorization": f"Bearer {admin_token}"}
    with serve_cli("--config", str(config), env=env) as served:
        url = served.url
        # The client's key and the secret header also appear in the body (which is captured).
        body = {**CHAT, "messages": [{"role": "user", "content": f"my key is {client_key} and {header_secret}"}]}
        sent = 0
        for headers in ({"authorization": f"Bearer {client_key}", "x-secret-token": header_secret, "x-user": "u1"},
                        {"x-api-key": client_key, "x-secret-token": header_secret}):
            for path, extra in (("/v1/chat/completions", {}), ("/v1/chat/completions", {"stream": True}),
                                ("/v1/messages", {}), ("/api/chat", {"stream": True}),
                                ("/v1/chat/completions", {"model": "dead-1"}),  # upstream unreachable: 502
                                ("/v1/chat/completions", {"pad": "x" * 5000})):  # too large: 413
                httpx.post(url + path, json={**body, **extra}, headers=headers, timeout=30)
                sent += 1
        for headers in ({"authorization": f"Bearer {rejected_key}"}, {"x-api-key": rejected_key},
                        {"authorization": f"Bearer {admin_token}"}):  # the admin token is no client key
            assert httpx.post(url + "/v1/chat/completions", json=body, headers=headers).status_code == 401
            sent += 1
        assert httpx.get(url + "/metrics", headers={"authorization": f"Bearer {client_key}"}).status_code == 401
        wait_for_rows(tmp_path / "log.db", sent)
        wait_until(lambda: _count(tmp_path / "log.db", "bodies") >= 8, "captured bodies")

        outputs = {"/metrics": httpx.get(url + "/metrics", headers=admin).text,
                   "/api/usage": httpx.get(url + "/api/usage?group_by=key_id", headers=admin).text}
        listing = httpx.get(url + "/api/requests?limit=1000", headers=admin)
        outputs["/api/requests"] = listing.text
        for row in listing.json()["requests"]:
            detail = httpx.get(url + f"/api/requests/{row['request_id']}", headers=admin)
            outputs[f"/api/requests/{row['request_id']}"] = detail.text
        captured = [detail for key, detail in outputs.items() if key.startswith("/api/requests/")
                    and json.loads(detail)["bodies"]]
        assert len(captured) >= 8 and any("[REDACTED]" in detail for detail in captured)
        assert any("key_id" in line and "team-a" in line for line in served.output().splitlines())
    assert served.returncode in (0, -15)
    outputs["stdout and stderr"] = served.output()
    assert len(served.output().splitlines()) >= sent  # the access log went there
    for path in tmp_path.glob("log.db*"):  # the database, and its WAL and shared-memory files if left
        outputs[path.name] = path.read_bytes().decode("latin-1")
    conn = sqlite3.connect(tmp_path / "log.db")
    for request_body, response_body in conn.execute("SELECT request_body, response_body FROM bodies"):
        outputs["captured bodies"] = outputs.get("captured bodies", "") + "".join(
            zlib.decompress(blob).decode("utf-8", "replace") for blob in (request_body, response_body) if blob)
    for row in conn.execute("SELECT * FROM requests"):
        outputs["rows"] = outputs.get("rows", "") + repr(row)
    conn.close()
    for name, text in outputs.items():
        for secret in planted:
            assert secret not in text, f"{secret[:10]}... found in {name}"


def _count(db: Path, table: str) -> int:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()
