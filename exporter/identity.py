"""Who sent a request: a key id (never the key), the end user and the session, for the log.

`key_id` is the first 16 hex digits of HMAC-SHA256(salt, credential). The salt comes from the
environment variable named by `telemetry.key_salt_env` when one is configured (so several
databases or exporters give the same key the same id), else from a random salt created once per
database and kept in its `meta` table. Without the salt the id cannot be tested against guessed
keys; with it, still only a known key can be recognised, never recovered.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from exporter.observation import Observation

KEY_ID_HEX_DIGITS = 16
MAX_NAME_CHARS = 200  # user and session values are client-chosen: keep them short
# Headers a client puts its API key in (OpenAI and most others, Anthropic, Azure, Google).
KEY_HEADERS = (b"authorization", b"x-api-key", b"api-key", b"x-goog-api-key")


class ClientIdentity:
    """Fills an observation's key_id, user and session_id from the client's request."""

    def __init__(self, salt: bytes, user_header: str | None = None, session_header: str | None = None) -> None:
        self._salt = salt
        self._user_header = user_header.encode("latin-1") if user_header else None
        self._session_header = session_header.encode("latin-1") if session_header else None

    def key_id(self, credential: bytes) -> str:
        return hmac.new(self._salt, credential, hashlib.sha256).hexdigest()[:KEY_ID_HEX_DIGITS]

    def __call__(self, obs: Observation, headers: list[tuple[bytes, bytes]], request_json: dict[str, Any] | None) -> None:
        credential = header_user = session = None
        for name, value in headers:
            if credential is None and name in KEY_HEADERS:
                credential = _credential(name, value)
            elif name == self._user_header:
                header_user = value
            elif name == self._session_header:
                session = value
        if credential:
            obs.key_id = self.key_id(credential)
        if header_user:
            obs.user = _short(header_user.decode("utf-8", "replace"))
        elif request_json is not None:
            obs.user = body_user(request_json)
        if session:
            obs.session_id = _short(session.decode("utf-8", "replace"))


def body_user(request_json: dict[str, Any]) -> str | None:
    """OpenAI's `user` (also `safety_identifier`), Anthropic's `metadata.user_id`."""
    for value in (
        request_json.get("user"),
        request_json.get("safety_identifier"),
        (request_json.get("metadata") or {}).get("user_id") if isinstance(request_json.get("metadata"), dict) else None,
    ):
        if isinstance(value, str) and value:
            return _short(value)
    return None


def find_credential(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The API key of the first credential header (a bearer token without its scheme), or None."""
    for name, value in headers:
        if name in KEY_HEADERS:
            return _credential(name, value)
    return None


def _credential(name: bytes, value: bytes) -> bytes | None:
    value = value.strip()
    if name == b"authorization":
        scheme, _, token = value.partition(b" ")
        value = token.strip() if token else scheme  # "Bearer sk-..." and a bare key alike
    return value or None


def _short(value: str) -> str:
    return value[:MAX_NAME_CHARS]
