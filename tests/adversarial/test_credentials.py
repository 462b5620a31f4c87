"""One home for credentials (issue 12, point 6), with access control and body capture on.

The proxy knows one allowed client key (access.client_keys_env, key id `team-a`) and captures
bodies. Whichever header a client puts its key in (authorization, x-api-key, api-key,
x-goog-api-key, any spelling), the key is recognised by access control and by the client
identity, replaced by the upstream's key on the way out, redacted from the captured bodies, and
never logged or stored (the invariants scan the output and the database files for it). An
unknown key in any of those headers gets 401 and goes nowhere.
"""

from __future__ import annotations

import json

import pytest

from tests.adversarial.harness import CLIENT, ProxyUnderTest, exchange, new_case_id, request_bytes
from tests.adversarial.peers import NORMAL_BODY
from tests.logdb import rows

CLIENT_KEY = "sk-adv-client-" + "5f3a9c0e7b2d4e6f8a1b3c5d7e9f0a2b"
KEY_ID = "team-a"
PROXY_OPTIONS = {
    "access": {"client_keys_env": "ADV_CLIENT_KEYS"},
    "env": {"ADV_CLIENT_KEYS": f"{KEY_ID} {CLIENT_KEY}"},
    "telemetry": {"capture_bodies": True},
    "client_key": CLIENT_KEY,
}
HEADER_FORMS = [
    ("authorization", f"Bearer {CLIENT_KEY}"),
    ("Authorization", f"bearer {CLIENT_KEY}"),
    ("x-api-key", CLIENT_KEY),
    ("X-Api-Key", CLIENT_KEY),
    ("api-key", CLIENT_KEY),
    ("Api-Key", CLIENT_KEY),
    ("x-goog-api-key", CLIENT_KEY),
    ("X-Goog-Api-Key", CLIENT_KEY),
]


def _body() -> bytes:
    """A prompt that quotes the key: capture must redact it wherever it appears."""
    return json.dumps({"model": "adv-credentials",
                       "messages": [{"role": "user", "content": f"my key is {CLIENT_KEY}"}]}).encode()


@pytest.mark.parametrize("header,value", HEADER_FORMS, ids=[h for h, _ in HEADER_FORMS])
def test_a_client_key_in_any_key_header_is_one_credential(proxy: ProxyUnderTest, header, value):
    case_id = new_case_id("credential")
    request_id = new_case_id("rid").replace("-", "")
    body = _body()
    with proxy.case() as case:
        case.keep_secret(CLIENT_KEY)
        response = exchange(proxy.url, request_bytes("POST", "/v1/chat/completions",
                                                     [(header, value), ("x-request-id", request_id)], body,
                                                     case=case_id))
        case.expect(1, code="200", tokens={"input": 3, "output": 2})
        case.require(response.status == 200 and response.body == NORMAL_BODY,
                     f"[6 access] an allowed key in {header} got {response.status}: {response.body[:200]!r}")
        forwarded = case.forwarded(case_id)
        case.require(len(forwarded) == 1, f"[6 credentials] the request reached the upstream {len(forwarded)} times")
        for request in forwarded:
            headers = {name for name, v in request.headers() if CLIENT_KEY.encode() in v}
            case.require(not headers, f"[6 credentials] the proxy's own client key (sent in {header}) went on to "
                                      f"the upstream in {sorted(n.decode() for n in headers)}")
    logged = rows(proxy.db_path, "request_id = ?", [request_id])
    assert logged and logged[0]["key_id"] == KEY_ID, (
        f"[6 identity] a key in {header} was not identified as {KEY_ID!r}: {[r['key_id'] for r in logged]}")
    # Captured bodies are stored compressed: read them decoded, as /api/requests/{id} serves them.
    captured = CLIENT.get(f"{proxy.url}/api/requests/{request_id}").json()
    request_body = (captured.get("bodies") or {}).get("request")
    assert request_body and "my key is" in request_body, f"[6 capture] no captured request body: {captured}"
    assert CLIENT_KEY not in json.dumps(captured), f"[6 capture] the key sent in {header} was stored unredacted"


@pytest.mark.parametrize("header", ["authorization", "x-api-key", "api-key", "x-goog-api-key"])
def test_an_unknown_key_in_any_key_header_gets_401(proxy: ProxyUnderTest, header):
    case_id = new_case_id("unknown-key")
    unknown = "sk-adv-unknown-" + "0123456789abcdef0123456789abcdef"
    value = f"Bearer {unknown}" if header == "authorization" else unknown
    with proxy.case() as case:
        case.keep_secret(unknown)
        response = exchange(proxy.url, request_bytes("POST", "/v1/chat/completions", [(header, value)], _body(),
                                                     case=case_id))
        case.expect(1, code="401")
        case.require(response.status == 401, f"[6 access] an unknown key in {header} got {response.status}")
        case.require(not case.forwarded(case_id), f"[6 access] a request with an unknown key in {header} was forwarded")
