"""The pricing table: the shipped defaults, the cost formula, config overrides, config errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from exporter.config import ConfigError, parse_settings
from exporter.observation import Usage
from exporter.pricing import build_pricing, default_pricing, default_rules

UPSTREAMS = {"upstreams": [{"name": "a", "url": "http://h"}]}


def test_every_literal_default_pattern_reaches_its_own_entry():
    """No entry of the shipped table is shadowed by an earlier, more general one."""
    pricing = default_pricing()
    for rule in default_rules():
        for pattern in rule.patterns:
            if not any(c in pattern for c in "*?["):
                assert pricing.rule_for(pattern) is rule, pattern


@pytest.mark.parametrize("model, input, cached, output", [
    ("gpt-4o", 2.50, 1.25, 10.00),
    ("gpt-4o-2024-08-06", 2.50, 1.25, 10.00),
    ("gpt-4o-mini", 0.15, 0.075, 0.60),
    ("GPT-4o-Mini", 0.15, 0.075, 0.60),
    ("o3-mini", 1.10, 0.55, 4.40),
    ("claude-sonnet-4-5-20250929", 3.00, 0.30, 15.00),
    ("claude-3-5-haiku-latest", 0.80, 0.08, 4.00),
    ("gemini-2.5-flash", 0.30, 0.03, 2.50),
    ("text-embedding-3-small", 0.02, 0.02, 0.0),
])
def test_widely_used_models_are_priced(model, input, cached, output):
    price = default_pricing().rule_for(model).price
    assert (price.input, price.cached_input, price.output) == (input, cached, output)


@pytest.mark.parametrize("model", ["llama3.2:1b", "qwen2.5-coder", "gpt-4o-ultra-9000", "mistral-large", "unknown"])
def test_unknown_and_local_models_are_unpriced_not_guessed(model):
    pricing = default_pricing()
    assert pricing.rule_for(model) is None
    assert pricing.cost(model, None, Usage(input=10, output=10)) is None


def test_cost_prices_each_token_type_once():
    pricing = build_pricing([{"model": "m", "input": 3, "cached_input": 0.3, "cache_write_input": 3.75, "output": 15}])
    # input counts every prompt token; cached and cache-write tokens are parts of it.
    usage = Usage(input=1_000, cached_input=600, cache_write_input=100, output=200, reasoning=50)
    expected = (300 * 3 + 600 * 0.3 + 100 * 3.75 + 200 * 15) / 1e6  # reasoning is part of output
    assert pricing.cost("m", None, usage) == pytest.approx(expected, rel=1e-12)
    assert pricing.cost("m", None, Usage()) == 0.0  # no usage reported: nothing to price
    assert pricing.cost("unpriced", None, Usage()) == 0.0


def test_missing_cache_prices_fall_back_to_the_input_price():
    pricing = build_pricing([{"model": "m", "input": 2, "output": 4}], include_defaults=False)
    assert pricing.cost("m", None, Usage(input=10, cached_input=4, cache_write_input=2, output=1)) == \
        pytest.approx((10 * 2 + 1 * 4) / 1e6)


def test_the_config_overrides_and_extends_the_defaults_in_order():
    settings = parse_settings({**UPSTREAMS, "pricing": [
        {"model": "gpt-4o", "input": 1, "output": 2},  # an override
        {"model": ["llama*", "qwen*"], "input": 0, "output": 0},  # local models: free, by choice
        {"model": "*", "input": 9, "output": 9},  # catches the rest, defaults included
    ]})
    pricing = settings.pricing
    assert pricing.rule_for("gpt-4o").price.input == 1
    assert pricing.rule_for("llama3.2:1b").price.output == 0
    assert pricing.cost("qwen2.5", None, Usage(input=100, output=100)) == 0.0
    assert pricing.rule_for("claude-3-haiku-20240307").price.input == 9

    only_config = parse_settings({**UPSTREAMS, "pricing_defaults": False,
                                  "pricing": [{"model": "mine", "input": 1, "output": 1}]}).pricing
    assert only_config.rule_for("gpt-4o") is None and only_config.rule_for("mine") is not None
    assert parse_settings(UPSTREAMS).pricing.rule_for("gpt-4o") is default_pricing().rule_for("gpt-4o")


def test_the_response_model_prices_a_request_without_one():
    pricing = build_pricing([{"model": "served-model", "input": 1, "output": 1}])
    assert pricing.cost("unknown", "served-model", Usage(input=5, output=5)) == pytest.approx(10 / 1e6)


BAD_CONFIGS = [
    ({"pricing": [{"model": "a", "input": 1, "output": 1}, {"model": "b", "input": 1, "output": 1},
                  {"model": "c", "input": "cheap", "output": 1}]}, "pricing[2].input: must be a number"),
    ({"pricing": [{"input": 1, "output": 1}]}, "pricing[0].model: is required"),
    ({"pricing": [{"model": "a", "input": 1}]}, "pricing[0].output: is required"),
    ({"pricing": [{"model": "a", "input": -1, "output": 1}]}, "pricing[0].input: must not be negative"),
    ({"pricing": [{"model": "a", "input": 1, "output": 1, "currency": "EUR"}]}, "pricing[0].currency: unknown"),
    ({"pricing": [{"model": ["a", 3], "input": 1, "output": 1}]}, "pricing[0].model[1]: must be a non-empty"),
    ({"pricing": {"gpt-4o": 1}}, "pricing: must be a list"),
    ({"pricing_defaults": "no"}, "pricing_defaults: must be true or false"),
    ({"telemetry": {"retention_days": 0}}, "telemetry.retention_days: must be greater than 0"),
    ({"telemetry": {"queue_size": "big"}}, "telemetry.queue_size: must be an integer"),
    ({"telemetry": {"batch_size": -5}}, "telemetry.batch_size: must be greater than 0"),
    ({"telemetry": {"flush_interval_seconds": 0}}, "telemetry.flush_interval_seconds: must be greater than 0"),
    ({"telemetry": {"capture_bodies": "yes"}}, "telemetry.capture_bodies: must be true or false"),
    ({"telemetry": {"capture_max_bytes": 0}}, "telemetry.capture_max_bytes: must be greater than 0"),
    ({"telemetry": {"user_header": "x user"}}, "telemetry.user_header: 'x user' is not an HTTP header name"),
    ({"telemetry": {"session_header": "Authorization"}}, "telemetry.session_header: 'Authorization' carries credentials"),
    ({"telemetry": {"key_salt_env": "LLM_EXPORTER_TEST_UNSET_SALT"}}, "telemetry.key_salt_env: environment variable"),
    ({"telemetry": {"retention": 3}}, "telemetry.retention: unknown setting"),
    ({"telemetry": []}, "telemetry: must be a mapping"),
]


@pytest.mark.parametrize("extra, message", BAD_CONFIGS, ids=[m.split(":")[0] for _, m in BAD_CONFIGS])
def test_bad_pricing_and_telemetry_settings_name_the_field(extra, message):
    with pytest.raises(ConfigError) as caught:
        parse_settings({**UPSTREAMS, **extra})
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_bad_price_stops_serve_with_one_line(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("upstreams: [{name: a, url: 'http://h'}]\npricing:\n  - {model: gpt-4o, input: 2.5, output: lots}\n")
    result = subprocess.run([sys.executable, "-m", "exporter", "serve", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "llm-exporter: config error: pricing[0].output: must be a number, got 'lots'"]
