"""Request targets (issue 12, points 1 and 6): the upstream is the configuration's, always.

Every target aims at a canary: absolute-form, authority-form, asterisk, `@host`, `//host`,
backslashes, percent-encoding, userinfo tricks, spaces, tabs and non-ASCII, listed and generated.
An origin-form target (a path starting with `/`) is proxied to the configured upstream, once and
byte for byte; any other target gets 400 in the API family's error shape and is counted with code
400; a target the HTTP parser refuses never reaches the app and is not counted. Three proxies:
an upstream key sent as `authorization` (openai), one sent as `x-api-key` (anthropic), and none.
The invariants (tests/adversarial/harness.py) check that nothing reached a canary and that the
key reached only the configured upstream.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.adversarial.harness import (
    CASES, ProxyUnderTest, exchange, family_error_shapes, json_shape, new_case_id, proxy_under_test,
    request_bytes,
)
from tests.adversarial.peers import NORMAL_BODY, Peers

CHAT = json.dumps({"model": "adv-target", "messages": [{"role": "user", "content": "hi"}]}).encode()
CANARY = "{canary}"  # replaced by a canary's host:port
OTHER_CANARY = "{canary2}"  # the canary on another port of the proxy's own address
UPSTREAM = "{upstream}"  # the configured upstream's host:port (userinfo tricks)

LISTED_TARGETS = [
    f"http://{CANARY}/v1/chat/completions",
    f"http://{CANARY}/",
    f"https://{CANARY}/x",
    f"HTTP://{CANARY}/x",
    f"http://user:pass@{CANARY}/x",
    f"http://{UPSTREAM}@{CANARY}/x",
    CANARY,
    f"{CANARY}:443",
    f"@{CANARY}/x",
    f"*@{CANARY}/x",
    f"*:x@{CANARY}/v1/messages",
    f"*.{CANARY}/x",
    "*",
    f"//{CANARY}/x",
    f"///{CANARY}/x",
    f"\\\\{CANARY}/x",
    f"/\\{CANARY}/x",
    f"\\{CANARY}/x",
    f"%2f%2f{CANARY}/x",
    f"/%2f{CANARY}/x",
    f"/%40{CANARY}/x",
    f"/x@{CANARY}",
    f"/v1/chat/completions@{CANARY}",
    f"http://{OTHER_CANARY}/x",
    f"//{OTHER_CANARY}/x",
    f"*@{OTHER_CANARY}/x",
    f"@{OTHER_CANARY}/x",
    f"/ {CANARY}/x",
    f"/\t{CANARY}/x",
    f"http://{CANARY}\u00e9/x",
    f"/\u00e9\u4e2d@{CANARY}/x",
    "http://[::ffff:127.0.0.2]:{port}/x",
    f"?@{CANARY}/x",
    "/v1/models?next=http://127.0.0.2/",
    "/v1/models",
]

TARGET_CASES = settings(CASES, max_examples=15)  # three proxies run them
KEYED_OPENAI = {"api_key": True, "kind": "openai"}
KEYED_ANTHROPIC = {"api_key": True, "kind": "anthropic"}
NO_KEY = {"api_key": False}


@pytest.fixture(scope="module", params=[KEYED_OPENAI, KEYED_ANTHROPIC, NO_KEY],
                ids=["key-authorization", "key-x-api-key", "no-key"])
def proxy(peers: Peers, request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[ProxyUnderTest]:
    with proxy_under_test(peers, tmp_path_factory.mktemp("targets"), **request.param) as started:
        yield started


def _fill(template: str, peers: Peers) -> bytes:
    canary, other = peers.canaries
    return (template.replace(CANARY, canary.authority).replace(OTHER_CANARY, other.authority)
            .replace(UPSTREAM, peers.upstream.authority).replace("{port}", str(canary.port))).encode("utf-8")


def attack_target(proxy: ProxyUnderTest, method: str, target: bytes, client_key: str | None = None) -> None:
    """One request with `target`; the properties of point 1 and every invariant."""
    case_id = new_case_id("target")
    headers = [("x-api-key", client_key)] if client_key else []
    body = CHAT if method == "POST" else b""
    with proxy.case() as case:
        if client_key:
            case.keep_secret(client_key)
        response = exchange(proxy.url, request_bytes(method, target, headers, body, case=case_id))
        forwarded = case.forwarded(case_id)
        if response.server_refusal:
            case.expect(0)
            case.require(not forwarded, f"[1 origin] a target the parser refused was forwarded: {target!r}")
        elif target.startswith(b"/"):
            case.expect(1)
            case.require(len(forwarded) == 1, f"[1 origin] origin-form target {target!r} reached the upstream "
                                              f"{len(forwarded)} times, expected once")
            sent = target.split(b"#", 1)[0]
            case.require(all(r.target == sent for r in forwarded),
                         f"[1 origin] origin-form target {target!r} was forwarded as "
                         f"{[r.target for r in forwarded]!r}, not byte for byte")
            case.require(response.status == 200 and response.body == NORMAL_BODY,
                         f"[1 origin] origin-form target {target!r} did not get the upstream's answer: "
                         f"{response.status} {response.body[:200]!r}")
        else:
            case.expect(1, code="400")
            case.require(not forwarded, f"[1 origin] non-origin-form target {target!r} was forwarded to the "
                                        f"upstream as {[r.target for r in forwarded]!r}")
            case.require(response.status == 400, f"[1 origin] non-origin-form target {target!r} got "
                                                  f"{response.status}, expected 400: {response.body[:200]!r}")
            try:
                shape = json_shape(response.json())
            except ValueError:
                shape = None
            case.require(shape in family_error_shapes(),
                         f"[1 origin] the 400 for {target!r} is not an API family's error body: {response.body[:200]!r}")


@pytest.mark.parametrize("template", LISTED_TARGETS)
def test_listed_targets_reach_only_the_configured_upstream(proxy, peers, template):
    attack_target(proxy, "POST" if "v1" in template else "GET", _fill(template, peers))


@pytest.mark.parametrize("method,template", [("CONNECT", CANARY), ("CONNECT", f"{CANARY}:443"), ("OPTIONS", "*"),
                                             ("CONNECT", f"http://{CANARY}/x"), ("GET", f"{CANARY}/x")])
def test_authority_and_asterisk_forms_reach_only_the_configured_upstream(proxy, peers, method, template):
    attack_target(proxy, method, _fill(template, peers))


def test_a_client_key_in_any_key_header_is_not_joined_by_the_upstream_key(proxy):
    """Point 6: authorization, x-api-key, api-key, x-goog-api-key all count as the client's key."""
    for header in ("authorization", "x-api-key", "api-key", "x-goog-api-key", "API-Key", "X-Goog-Api-Key"):
        client_key = f"sk-client-{new_case_id('key')}"
        value = f"Bearer {client_key}" if header == "authorization" else client_key
        case_id = new_case_id("key")
        with proxy.case() as case:
            case.keep_secret(client_key)
            response = exchange(proxy.url, request_bytes("POST", "/v1/chat/completions", [(header, value)], CHAT,
                                                         case=case_id))
            case.expect(1, code="200", tokens={"input": 3, "output": 2})
            case.require(response.status == 200, f"[6 credentials] {header}: got {response.status}")
            forwarded = case.forwarded(case_id)
            case.require(len(forwarded) == 1 and client_key.encode() in forwarded[0].head,
                         f"[6 credentials] the client's {header} did not reach the upstream as sent")


_PREFIXES = ["", "/", "//", "///", "\\", "\\\\", "/\\", "*", "*@", "@", "http://", "https://", "HTTP://",
             "http:/", "http:", "%2f%2f", "/%2f", ".", " ", "\t", "/%09", "/%00"]
_USERINFO = ["", "user@", "u:p@", "{upstream}@", "%40@", "a@b@"]
_HOSTS = [CANARY, OTHER_CANARY, "[::ffff:127.0.0.2]:{port}", "127.0.0.2", "127.1:{port}", "0x7f000002:{port}"]
_PATHS = ["", "/", "/x", "/v1/chat/completions", "/v1/messages", "/../..", "/%2e%2e/x"]
_SUFFIXES = st.one_of(
    st.sampled_from(["", "?q=1", "#frag", "?@127.0.0.2", ";p"]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2fff, exclude_characters="\r\n"), max_size=12),
)
STRUCTURED = st.builds(lambda *parts: "".join(parts), st.sampled_from(_PREFIXES), st.sampled_from(_USERINFO),
                       st.sampled_from(_HOSTS), st.sampled_from(_PATHS), _SUFFIXES)
NOISE = st.builds(lambda prefix, text: prefix + text, st.sampled_from(_PREFIXES),
                  st.text(st.characters(min_codepoint=0x21, max_codepoint=0x10ffff, exclude_categories=("Cs",)),
                          min_size=1, max_size=30))
# Mostly targets built to steer, some plain noise.
TARGETS = st.integers(0, 9).flatmap(lambda n: STRUCTURED if n < 8 else NOISE)


@TARGET_CASES
@given(method=st.sampled_from(["GET", "POST", "OPTIONS", "DELETE"]), template=TARGETS,
       client_key=st.one_of(st.none(), st.just("sk-client-generated-0123456789abcdef")))
def test_generated_targets_reach_only_the_configured_upstream(proxy, peers, method, template, client_key):
    attack_target(proxy, method, _fill(template, peers), client_key)
