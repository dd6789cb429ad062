from __future__ import annotations

import base64

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from chio_middleware.core.encoding import (
    b64url_decode,
    b64url_encode,
    decode_header_object,
    encode_header_object,
)
from chio_middleware.core.errors import HeadersTooLarge, MalformedHeader
from tests.vectors import cases


@pytest.mark.parametrize("case", cases("chio_http/headers_v1.json"))
def test_header_vector(case: dict) -> None:
    if case["result"] == "malformed":
        with pytest.raises(MalformedHeader):
            decode_header_object(case["value"])
    else:
        assert decode_header_object(case["value"]) == case["result"]
        assert decode_header_object(case["value"].encode()) == case["result"]


def test_padded_base64url_is_accepted() -> None:
    padded = base64.urlsafe_b64encode(b'{"ab":1}').decode()
    assert padded.endswith("=")
    assert decode_header_object(padded) == {"ab": 1}
    assert decode_header_object(padded.rstrip("=")) == {"ab": 1}


@pytest.mark.parametrize(
    "value",
    ["e30=x", "e30===", "a", "e3 0", "eyJhIjoxfQ.", "W10", b"\xff{}", '{"a":1}x', "null", "  "],
)
def test_malformed_values(value: str | bytes) -> None:
    with pytest.raises(MalformedHeader):
        decode_header_object(value)


def test_oversize_value_is_431_before_parsing() -> None:
    value = '{"a":"' + "x" * 20000 + '"}'
    with pytest.raises(HeadersTooLarge) as info:
        decode_header_object(value)
    assert info.value.status == 431
    assert decode_header_object(value, max_bytes=30000)["a"] == "x" * 20000


def test_encode_is_unpadded_base64url_of_canonical_json() -> None:
    encoded = encode_header_object({"b": 1, "a": "é"})
    assert "=" not in encoded
    assert base64.urlsafe_b64decode(encoded + "==") == '{"a":"é","b":1}'.encode()
    assert decode_header_object(encoded) == {"a": "é", "b": 1}


def test_non_canonical_base64url_is_refused() -> None:
    # "e30" is {} ; "e31" decodes to the same bytes with unused bits set
    assert decode_header_object("e30") == {}
    with pytest.raises(MalformedHeader):
        decode_header_object("e31")


def test_size_bound_counts_bytes_not_characters() -> None:
    value = '{"a":"' + "é" * 9000 + '"}'
    assert len(value) < 16384 < len(value.encode())
    with pytest.raises(HeadersTooLarge):
        decode_header_object(value)


@given(st.binary(max_size=64))
# Every character that differs between the alphabets, several times: the standard text
# "++++////" is "----____" in base64url.
@example(bytes.fromhex("fbefbeffffff"))
def test_b64url_is_the_standard_librarys_urlsafe_base64_unpadded(data: bytes) -> None:
    text = base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
    assert b64url_encode(data) == text
    assert b64url_decode(text) == data
    assert b64url_decode(base64.urlsafe_b64encode(data).decode("ascii")) == data  # padded


@given(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=12)
    | st.text(max_size=12)
)
@example("abcd====")
@example("ab==\n")
@example("ab+/")
def test_b64url_decode_accepts_exactly_the_canonical_texts(text: str) -> None:
    stripped = text.rstrip("=")
    padding = len(text) - len(stripped)
    try:
        reference = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except ValueError:
        reference = None
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")
    accept = (
        set(text) <= alphabet
        and "=" not in stripped
        and padding <= 2
        and (padding == 0 or len(text) % 4 == 0)
        and len(stripped) % 4 != 1
        and reference is not None
        and base64.urlsafe_b64encode(reference).rstrip(b"=").decode("ascii") == stripped
    )
    if accept:
        assert b64url_decode(text) == reference
    else:
        with pytest.raises(ValueError):
            b64url_decode(text)
