"""Where API keys travel: the one table of credential headers, for every part that handles them.

The proxy adds an upstream's configured key only when the client sent none, the client identity
hashes the client's key into a key id, access control checks it against access.client_keys, and
body capture redacts it. All of them ask this module, so a header known to one is known to all.
No key is ever logged or stored (the access log writes no header, path or query string; the
request log keeps a salted hash prefix, exporter.identity).
"""

from __future__ import annotations

# Headers a client puts its API key in, and the scheme written before the key in each.
KEY_HEADERS: dict[bytes, bytes] = {
    b"authorization": b"Bearer ",  # OpenAI and most compatible servers, Ollama, llama.cpp, vLLM
    b"x-api-key": b"",  # Anthropic
    b"api-key": b"",  # Azure OpenAI
    b"x-goog-api-key": b"",  # Google Gemini (which also takes ?key=: paths and query strings are never logged)
}
KEY_HEADER_NAMES = frozenset(KEY_HEADERS)
# Other request headers whose values are secrets: redacted from captured bodies, never stored.
SECRET_HEADER_NAMES = KEY_HEADER_NAMES | {b"proxy-authorization", b"cookie", b"x-amz-security-token"}
# Captured secrets shorter than this are not redacted: replacing "abc" everywhere would maim bodies.
MIN_REDACTED_CHARS = 8


def key_of(name: bytes, value: bytes) -> bytes | None:
    """The key in one credential header's value: a bearer token without its scheme, or None."""
    value = value.strip()
    if name == b"authorization":
        scheme, _, token = value.partition(b" ")
        value = token.strip() if token else scheme  # "Bearer sk-..." and a bare key alike
    return value or None


def client_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The client's API key: that of the first credential header carrying one, or None."""
    for name, value in headers:
        if name in KEY_HEADER_NAMES and (key := key_of(name, value)):
            return key
    return None


def request_key(headers: list[tuple[bytes, bytes]], query: bytes) -> bytes | None:
    """The client's API key from a credential header, else from a `key=` query parameter (Gemini's)."""
    if (key := client_key(headers)) is not None:
        return key
    for pair in query.split(b"&"):
        name, _, value = pair.partition(b"=")
        if name == b"key" and value:
            return value
    return None


def key_header(header: str, key: str) -> tuple[bytes, bytes]:
    """The header that carries an upstream's configured key: `authorization: Bearer <key>` or the key as is."""
    name = header.lower().encode("latin-1")
    return name, KEY_HEADERS.get(name, b"") + key.encode()


def secret_values(headers: list[tuple[bytes, bytes]], also: frozenset[bytes] = frozenset()) -> list[bytes]:
    """The values of a request's secret headers (and of the header names in `also`), each whole
    and without its scheme, for redaction."""
    found = []
    for name, value in headers:
        if name in SECRET_HEADER_NAMES or name in also:
            value = value.strip()
            found.append(value)
            _, _, token = value.partition(b" ")
            if token.strip():
                found.append(token.strip())
    return [secret for secret in found if len(secret) >= MIN_REDACTED_CHARS]
