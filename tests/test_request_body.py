"""Reading a request body's top-level fields: the same answer as json.loads where both answer,
bounded work where json.loads would hold the event loop, and never an exception."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.request_body import MAX_FIELD_BYTES, parse_small, top_level_fields, with_usage_option

PROPERTIES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text())
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=20)
_objects = st.dictionaries(st.text(max_size=12), _json, max_size=8)
_layouts = st.sampled_from([
    {"separators": (",", ":")}, {}, {"indent": 2}, {"indent": "\t", "ensure_ascii": False}, {"ensure_ascii": False},
])


@PROPERTIES
@given(_objects, _layouts)
def test_top_level_fields_equal_json_loads(obj, layout):
    body = json.dumps(obj, **layout).encode()
    fields, spans = top_level_fields(body)
    assert fields == json.loads(body)
    for key, (start, end) in spans.items():
        assert json.loads(body[start:end]) == obj[key]


@PROPERTIES
@given(st.binary(max_size=300) | _objects.map(lambda o: json.dumps(o).encode()[:-1]))
def test_any_bytes_give_fields_or_none_never_an_exception(body):
    assert top_level_fields(body) is None or isinstance(top_level_fields(body)[0], dict)
    assert parse_small(body) is None or isinstance(parse_small(body), dict)


@PROPERTIES
@given(_objects, _layouts, st.one_of(st.none(), st.dictionaries(st.text(max_size=5), _scalars, max_size=3)))
def test_the_usage_option_is_added_and_nothing_else_changes(obj, layout, options):
    if options is not None:
        obj = {**obj, "stream_options": options}
    body = json.dumps(obj, **layout).encode()
    rewritten = with_usage_option(body, top_level_fields(body)[1], obj.get("stream_options"))
    expected = {**obj, "stream_options": {**(options or {}), "include_usage": True}}
    assert json.loads(rewritten) == expected
    if options is None:  # the client's bytes stay as they were around the inserted field
        inserted = b'"stream_options":{"include_usage":true}'
        assert rewritten.replace(inserted + b",", b"", 1).replace(inserted, b"", 1) == body


def test_a_large_body_gives_its_small_fields_and_steps_over_the_rest():
    messages = [{"role": "user", "content": "x]}{[\"\\" * 100}] * 5000
    body = json.dumps({"model": "m", "messages": messages, "stream": True, "big": "y" * (MAX_FIELD_BYTES + 1)}).encode()
    fields, spans = top_level_fields(body)
    assert fields == {"model": "m", "stream": True}  # messages and big are over MAX_FIELD_BYTES
    assert json.loads(body[slice(*spans["messages"])]) == messages


def test_deep_nesting_is_not_json_for_the_family():
    deep = b"[" * 200_000 + b"]" * 200_000
    assert parse_small(deep) is None and top_level_fields(deep) is None
    fields, _ = top_level_fields(b'{"model": "m", "deep": ' + deep + b"}")
    assert fields == {"model": "m"}  # the nested value is stepped over, not decoded
    assert parse_small(b'{"model": "m", "deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}") is None
