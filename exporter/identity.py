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

from exporter.credentials import client_key
from exporter.observation import Observation
from exporter.text import safe

KEY_ID_HEX_DIGITS = 16


class ClientIdentity:
    """Fills an observation's key_id, user and session_id from the client's request."""

    def __init__(self, salt: bytes, user_header: str | None = None, session_header: str | None = None) -> None:
        self._salt = salt
        self._user_header = user_header.encode("latin-1") if user_header else None
        self._session_header = session_header.encode("latin-1") if session_header else None

    def key_id(self, credential: bytes) -> str:
        return hmac.new(self._salt, credential, hashlib.sha256).hexdigest()[:KEY_ID_HEX_DIGITS]

    def __call__(self, obs: Observation, headers: list[tuple[bytes, bytes]], request_json: dict[str, Any] | None) -> None:
        header_user = session = None
        for name, value in headers:
            if name == self._user_header:
                header_user = value
            elif name == self._session_header:
                session = value
        if credential := client_key(headers):
            obs.key_id = self.key_id(credential)
        if header_user:
            obs.user = safe(header_user)
        elif request_json is not None:
            obs.user = body_user(request_json)
        if session:
            obs.session_id = safe(session)


def body_user(request_json: dict[str, Any]) -> str | None:
    """OpenAI's `user` (also `safety_identifier`), Anthropic's `metadata.user_id`; client-chosen,
    so made safe and short (exporter.text)."""
    metadata = request_json.get("metadata")
    for value in (
        request_json.get("user"),
        request_json.get("safety_identifier"),
        metadata.get("user_id") if isinstance(metadata, dict) else None,
    ):
        if isinstance(value, str) and value:
            return safe(value)
    return None
