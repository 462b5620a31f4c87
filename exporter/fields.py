"""Typed reads from the config's mappings, shared by the settings (config.py) and the pricing table.

Every error is a ConfigError whose message starts with the field's full path.
"""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A setting is wrong; the message starts with the field's path."""


class Fields:
    """Typed reads from one mapping of the config; every error names the field's full path."""

    def __init__(self, raw: Any, prefix: str, known: set[str]) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(f"{prefix.rstrip('.') or 'config'}: must be a mapping")
        for key in raw:
            if key not in known:
                raise ConfigError(f"{prefix}{key}: unknown setting (known: {', '.join(sorted(known))})")
        self.raw = raw
        self.prefix = prefix

    def get(self, key: str, kind: type, default: Any = None) -> Any:
        value = self.raw.get(key)
        if value is None:
            return default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise ConfigError(f"{self.prefix}{key}: must be {_KIND_NAMES[kind]}, got {value!r}")
        return value

    def required(self, key: str, kind: type) -> Any:
        value = self.get(key, kind)
        if value in (None, ""):
            raise ConfigError(f"{self.prefix}{key}: is required")
        return value

    def positive(self, key: str, kind: type, default: Any) -> Any:
        value = self.get(key, kind, default)
        if value <= 0:
            raise ConfigError(f"{self.prefix}{key}: must be greater than 0, got {value!r}")
        return value

    def strings(self, key: str) -> list[str]:
        values = self.get(key, list, [])
        for i, value in enumerate(values):
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{self.prefix}{key}[{i}]: must be a non-empty string, got {value!r}")
        return values


_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a mapping", bool: "true or false"}
