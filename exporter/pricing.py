"""Cost accounting: a pricing table in USD per million tokens, matched by model name patterns.

The table is the config's `pricing:` entries, tried first and in order, then the shipped table of
widely used models (exporter/data/pricing.yaml, unless `pricing_defaults: false`). A model that
no entry matches is unpriced: its cost is None (0 in every sum, and named as unpriced in
/api/usage), never guessed from a similar name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import translate
from functools import cache
from importlib import resources
from typing import Any

import yaml

from exporter.fields import ConfigError, Fields
from exporter.observation import Usage

PER_TOKENS = 1_000_000  # prices are per million tokens
PRICE_FIELDS = ("input", "cached_input", "cache_write_input", "output")
_MATCH_CACHE_SIZE = 4096


@dataclass(frozen=True)
class Price:
    """USD per million tokens of each token type. Reasoning tokens are output tokens."""

    input: float
    output: float
    cached_input: float  # prompt tokens read from the cache; the input price where none is known
    cache_write_input: float  # prompt tokens written to the cache; likewise

    def cost(self, usage: Usage) -> float:
        cached = usage.cached_input or 0
        written = usage.cache_write_input or 0
        uncached = max((usage.input or 0) - cached - written, 0)
        return (
            uncached * self.input
            + cached * self.cached_input
            + written * self.cache_write_input
            + (usage.output or 0) * self.output
        ) / PER_TOKENS


@dataclass(frozen=True)
class PriceRule:
    patterns: tuple[str, ...]  # glob patterns, matched case-insensitively against the model name
    price: Price


class Pricing:
    """The ordered rules; the first rule with a pattern matching the model gives its price."""

    def __init__(self, rules: tuple[PriceRule, ...] | list[PriceRule]) -> None:
        self.rules = tuple(rules)
        self._compiled = [
            (re.compile("|".join(translate(p.lower()) for p in rule.patterns)), rule) for rule in self.rules
        ]
        self._matches: dict[str, PriceRule | None] = {}

    def rule_for(self, model: str | None) -> PriceRule | None:
        if not model:
            return None
        try:
            return self._matches[model]
        except KeyError:
            pass
        name = model.lower()
        found = next((rule for regex, rule in self._compiled if regex.match(name)), None)
        if len(self._matches) >= _MATCH_CACHE_SIZE:  # client-chosen names: keep the memory bounded
            self._matches.clear()
        self._matches[model] = found
        return found

    def cost(self, model: str | None, response_model: str | None, usage: Usage) -> float | None:
        """USD for one request; 0.0 when no tokens were used, None when tokens were used unpriced.

        The requested model is priced first; the model the response names is the fallback (a
        client asking llama.cpp for no model in particular still gets the served model's price).
        """
        if not any((usage.input, usage.output, usage.cached_input, usage.cache_write_input)):
            return 0.0
        rule = self.rule_for(model) or self.rule_for(response_model)
        return rule.price.cost(usage) if rule is not None else None

    def __repr__(self) -> str:
        return f"Pricing({len(self.rules)} rules)"


def parse_price_rules(entries: Any, path: str) -> list[PriceRule]:
    """Price rules from a list of `{model, input, cached_input, cache_write_input, output}`."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: must be a list of price entries")
    rules = []
    for i, entry in enumerate(entries):
        where = f"{path}[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a mapping with model, input and output")
        fields = Fields(entry, where + ".", {"model", *PRICE_FIELDS})
        patterns = entry.get("model")
        if isinstance(patterns, str):
            patterns = [patterns]
        if not patterns:
            raise ConfigError(f"{where}.model: is required (a glob pattern or a list of them)")
        if not isinstance(patterns, list):
            raise ConfigError(f"{where}.model: must be a glob pattern or a list of them, got {patterns!r}")
        for j, pattern in enumerate(patterns):
            if not isinstance(pattern, str) or not pattern:
                raise ConfigError(f"{where}.model[{j}]: must be a non-empty string, got {pattern!r}")
        prices = {}
        for name in PRICE_FIELDS:
            value = fields.get(name, float, None)
            if value is None and name in ("input", "output"):
                raise ConfigError(f"{where}.{name}: is required (USD per million tokens; 0 for free)")
            if value is not None and value < 0:
                raise ConfigError(f"{where}.{name}: must not be negative, got {value!r}")
            prices[name] = value
        price = Price(
            input=prices["input"],
            output=prices["output"],
            cached_input=prices["input"] if prices["cached_input"] is None else prices["cached_input"],
            cache_write_input=prices["input"] if prices["cache_write_input"] is None else prices["cache_write_input"],
        )
        rules.append(PriceRule(tuple(patterns), price))
    return rules


@cache
def default_rules() -> tuple[PriceRule, ...]:
    """The shipped table (exporter/data/pricing.yaml), read once."""
    text = resources.files("exporter").joinpath("data/pricing.yaml").read_text()
    raw = yaml.safe_load(text)
    return tuple(parse_price_rules(raw["models"], "pricing.yaml models"))


def build_pricing(config_entries: Any = None, include_defaults: bool = True) -> Pricing:
    rules = parse_price_rules(config_entries, "pricing")
    if include_defaults:
        rules.extend(default_rules())
    return Pricing(rules)


@cache
def default_pricing() -> Pricing:
    return build_pricing()
