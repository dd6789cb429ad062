"""orjson, as the runtime installs it, gives the exact RFC 8785 bytes on the fast domain."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chio_middleware import _speedups
from chio_middleware.core import canonical
from chio_middleware.core.canonical import (
    CanonicalJsonError,
    canonical_json,
    canonical_json_exact,
)

ASCII_KEYS = st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=8)
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text()  # every code point but lone surrogates: controls, U+2028, astral planes
)
FAST = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ASCII_KEYS, inner, max_size=4),
    max_leaves=20,
)


@pytest.fixture
def accelerated() -> Any:
    previous = canonical._accelerated
    assert _speedups.install()
    yield canonical._accelerated
    canonical.use_fast_encoder(previous)


@settings(max_examples=500)
@given(FAST)
def test_orjson_is_byte_identical_to_the_exact_encoder_on_the_fast_domain(value: Any) -> None:
    previous = canonical._accelerated
    try:
        assert _speedups.install()
        encode = canonical._accelerated
        assert encode is not None
        assert encode(value) == canonical_json_exact(value)
        assert canonical_json(value) == canonical_json_exact(value)
    finally:
        canonical.use_fast_encoder(previous)


@pytest.mark.usefixtures("accelerated")
def test_what_orjson_refuses_falls_to_the_stdlib_path() -> None:
    for value in ({"n": 2**64}, {"n": -(2**63) - 1}, [2**200], {"deep": [[[[[[1]]]]]]}):
        assert canonical_json(value) == canonical_json_exact(value)
    with pytest.raises(CanonicalJsonError):
        canonical_json({"s": "\ud800"})


@pytest.mark.usefixtures("accelerated")
def test_values_outside_the_fast_domain_still_take_the_exact_path() -> None:
    # Floats and non-ASCII keys never reach the C encoders.
    for value in ({"f": 1e21, "g": 0.1}, {"\U0001f600": 1, "\ufb01": 2}, [1.5e-7]):
        assert canonical_json(value) == canonical_json_exact(value)
