from __future__ import annotations

import json
import math

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from chio_middleware.core.canonical import (
    CanonicalJsonError,
    JsonParseError,
    canonical_json,
    canonical_json_exact,
    parse_json,
)
from tests.vectors import cases


@pytest.mark.parametrize("case", cases("upstream/canonical_v1.json"))
def test_upstream_canonical_vector(case: dict) -> None:
    value = json.loads(case["input_json"])
    expected = case["canonical_json"].encode("utf-8")
    assert canonical_json(value) == expected
    assert canonical_json_exact(value) == expected


def test_all_23_upstream_cases_are_present() -> None:
    assert len(cases("upstream/canonical_v1.json")) == 23


# RFC 8785's domain: JSON values whose numbers are IEEE doubles and whose integers are
# within +-2^53 (beyond that rfc8785 refuses, and Chio keeps them exact: tested above).
_SAFE_INT = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
_FLOAT = st.floats(allow_nan=False, allow_infinity=False)
_TEXT = st.text(st.characters(exclude_categories=("Cs",)))
_JSON = st.recursive(
    st.none() | st.booleans() | _SAFE_INT | _FLOAT | _TEXT,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_TEXT, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(_JSON)
def test_matches_rfc8785_on_its_domain(value: object) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)
    assert canonical_json_exact(value) == rfc8785.dumps(value)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(), st.integers(-(2**53) + 1, 2**53 - 1) | _TEXT))
def test_fast_and_exact_paths_agree(value: dict) -> None:
    try:
        exact = canonical_json_exact(value)
    except CanonicalJsonError:
        with pytest.raises(CanonicalJsonError):
            canonical_json(value)
        return
    assert canonical_json(value) == exact


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1e21, b"1e+21"),
        (1e20, b"100000000000000000000"),
        (1e-6, b"0.000001"),
        (1e-7, b"1e-7"),
        (-1.5e-9, b"-1.5e-9"),
        (123.456, b"123.456"),
        (2**64 - 1, b"18446744073709551615"),
        (-(2**63), b"-9223372036854775808"),
        (2**53 + 1, b"9007199254740993"),
        ({"\U00010000": 1, "\ue000": 2, "a": 3}, '{"a":3,"\U00010000":1,"\ue000":2}'.encode()),
        ("\x00\x1f\x7f\u0080\u009f", b'"\\u0000\\u001f\x7f\xc2\x80\xc2\x9f"'),
    ],
)
def test_number_and_string_forms(value: object, expected: bytes) -> None:
    assert canonical_json(value) == expected


@pytest.mark.parametrize(
    "bad", [math.nan, math.inf, -math.inf, {"a": [math.nan]}, {1: 2}, b"x", {"s": {1}}]
)
def test_refuses_values_without_a_canonical_form(bad: object) -> None:
    with pytest.raises(CanonicalJsonError):
        canonical_json(bad)


def test_refuses_lone_surrogates() -> None:
    with pytest.raises(CanonicalJsonError):
        canonical_json({"a": "\ud800"})
    with pytest.raises(CanonicalJsonError):
        canonical_json({"\ud800": 1.5})


@pytest.mark.parametrize(
    "text",
    [
        '{"a":1,"a":2}',
        '{"a":NaN}',
        '{"a":Infinity}',
        "[1e999]",
        '{"a":',
        "\ufeff{}",
        b'{"a":"\xff"}',
    ],
)
def test_parse_json_is_strict(text: str | bytes) -> None:
    with pytest.raises(JsonParseError):
        parse_json(text)


def test_parse_json_keeps_big_integers_exact() -> None:
    assert parse_json("[18446744073709551615, 9007199254740993]") == [2**64 - 1, 2**53 + 1]
