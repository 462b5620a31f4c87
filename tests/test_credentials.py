"""One home for credentials (issue 12, point 6): every key header, the same rules everywhere.

For each header an LLM API carries a key in, through the running proxy against an echo upstream:
the client's own key goes upstream alone, the configured key only when the client sent none, in
the upstream's configured header, and neither key reaches the access log, the request log,
/metrics or the usage API. Keys are made per run, never committed values.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest

from exporter import credentials
from exporter.config import ConfigError, parse_settings
from tests.logdb import rows, wait_for_rows, wait_until
from tests.servers import HeaderEcho, running_exporter, serve

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
KEY_HEADERS = [name.decode() for name in credentials.KEY_HEADERS]
# The upstream kinds and the header each sends its configured key in.
KINDS = {"openai": "authorization", "anthropic": "x-api-key"}


def _key(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(16)}"


def _settings(upstream: str, tmp_path: Path, kind: str, access: dict | None = None):
    return parse_settings({
        "upstreams": [{"name": "main", "url": upstream, "kind": kind, "api_key_env": "TEST_UPSTREAM_KEY"}],
        "db": {"path": str(tmp_path / "log.db")},
        "telemetry": {"flush_interval_seconds": 0.05},
        "access_log": {"path": str(tmp_path / "access.log")},
        "access": access or {},
    })


def _key_headers_seen(response: httpx.Response) -> list[tuple[str, str]]:
    return [(name, value) for name, value in response.json()["headers"] if name.encode() in credentials.KEY_HEADERS]


def _stored_and_logged(exporter: str, tmp_path: Path, requests: int) -> str:
    """Everything the exporter wrote or serves about the requests: logs, database, endpoints."""
    wait_for_rows(tmp_path / "log.db", requests)
    wait_until(lambda: len((tmp_path / "access.log").read_text().splitlines()) >= requests, "access log lines")
    texts = [httpx.get(exporter + path).text for path in ("/metrics", "/api/usage?group_by=key_id", "/api/requests")]
    texts.append((tmp_path / "access.log").read_text())
    texts += [path.read_bytes().decode("latin-1") for path in tmp_path.glob("log.db*")]
    return "\n".join(texts)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("header", KEY_HEADERS)
def test_a_client_key_in_any_key_header_goes_upstream_alone(tmp_path, monkeypatch, kind, header):
    client_key, upstream_key = _key("ck"), _key("uk")
    monkeypatch.setenv("TEST_UPSTREAM_KEY", upstream_key)
    sent_value = f"Bearer {client_key}" if header == "authorization" else client_key
    with serve(HeaderEcho()) as upstream, running_exporter(_settings(upstream, tmp_path, kind)) as exporter:
        response = httpx.post(exporter + "/v1/chat/completions", json=CHAT, headers={header: sent_value})
        assert response.status_code == 200
        assert _key_headers_seen(response) == [(header, sent_value)]  # the client's, and nothing added
        everything = _stored_and_logged(exporter, tmp_path, 1)
    assert client_key not in everything and upstream_key not in everything
    assert len(rows(tmp_path / "log.db")[0]["key_id"]) == 16  # the salted hash id, never the key


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("empty_header", [None, *KEY_HEADERS])
def test_without_a_client_key_the_configured_key_goes_in_the_upstreams_header(tmp_path, monkeypatch, kind,
                                                                             empty_header):
    upstream_key = _key("uk")
    monkeypatch.setenv("TEST_UPSTREAM_KEY", upstream_key)
    headers = {empty_header: ""} if empty_header else {}  # an empty key header is no key
    with serve(HeaderEcho()) as upstream, running_exporter(_settings(upstream, tmp_path, kind)) as exporter:
        response = httpx.post(exporter + "/v1/messages", json=CHAT, headers=headers)
        expected = f"Bearer {upstream_key}" if KINDS[kind] == "authorization" else upstream_key
        assert _key_headers_seen(response) == [(KINDS[kind], expected)]
        everything = _stored_and_logged(exporter, tmp_path, 1)
    assert upstream_key not in everything
    assert rows(tmp_path / "log.db")[0]["key_id"] is None


def test_a_key_in_the_query_string_goes_upstream_and_nowhere_else(tmp_path, monkeypatch):
    """Gemini takes ?key=: it is the client's, passed on, and never logged or stored."""
    query_key = _key("qk")
    monkeypatch.setenv("TEST_UPSTREAM_KEY", _key("uk"))
    with serve(HeaderEcho()) as upstream, running_exporter(_settings(upstream, tmp_path, "openai")) as exporter:
        response = httpx.post(exporter + f"/v1beta/models/gemini:generateContent?key={query_key}", json=CHAT,
                              headers={"x-goog-api-key": _key("gk")})
        assert response.status_code == 200
        assert response.json()["headers"]  # reached the upstream
        everything = _stored_and_logged(exporter, tmp_path, 1)
    assert query_key not in everything


@pytest.mark.parametrize("header", KEY_HEADERS)
def test_access_control_knows_every_key_header_and_replaces_the_key(tmp_path, monkeypatch, header):
    client_key, upstream_key = _key("ck"), _key("uk")
    monkeypatch.setenv("TEST_UPSTREAM_KEY", upstream_key)
    monkeypatch.setenv("TEST_CLIENT_KEYS", f"team-a {client_key}")
    sent_value = f"Bearer {client_key}" if header == "authorization" else client_key
    access = {"client_keys_env": "TEST_CLIENT_KEYS"}
    with serve(HeaderEcho()) as upstream, running_exporter(_settings(upstream, tmp_path, "openai", access)) as exporter:
        refused = httpx.post(exporter + "/v1/chat/completions", json=CHAT, headers={header: _key("wrong")})
        assert refused.status_code == 401
        allowed = httpx.post(exporter + "/v1/chat/completions", json=CHAT, headers={header: sent_value})
        assert allowed.status_code == 200
        # The client's key is the proxy's: the upstream sees its own key only.
        assert _key_headers_seen(allowed) == [("authorization", f"Bearer {upstream_key}")]
        everything = _stored_and_logged(exporter, tmp_path, 2)
    assert client_key not in everything and upstream_key not in everything
    assert [row["key_id"] for row in rows(tmp_path / "log.db")] == [None, "team-a"]


# --- the table itself ----------------------------------------------------------------------------


@pytest.mark.parametrize("headers, key", [
    ([(b"authorization", b"Bearer sk-1")], b"sk-1"),
    ([(b"authorization", b"  sk-bare  ")], b"sk-bare"),
    ([(b"authorization", b""), (b"api-key", b"az-1")], b"az-1"),  # an empty header is no key
    ([(b"x-goog-api-key", b"g-1"), (b"x-api-key", b"a-1")], b"g-1"),  # the first one
    ([(b"x-user", b"u"), (b"cookie", b"c=1")], None),
])
def test_client_key_reads_every_key_header(headers, key):
    assert credentials.client_key(headers) == key


def test_the_configured_key_is_written_as_each_header_expects():
    assert credentials.key_header("authorization", "k") == (b"authorization", b"Bearer k")
    assert credentials.key_header("x-api-key", "k") == (b"x-api-key", b"k")


@pytest.mark.parametrize("header", [*KEY_HEADERS, "Proxy-Authorization", "cookie", "x-amz-security-token"])
def test_a_secret_header_cannot_name_the_user_or_session(header):
    for field in ("user_header", "session_header"):
        with pytest.raises(ConfigError, match=f"telemetry.{field}:"):
            parse_settings({"upstreams": [{"name": "a", "url": "http://h"}], "telemetry": {field: header}})
