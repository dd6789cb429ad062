from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chio_middleware.client import ReceiptVerificationError, verify_response_receipt
from chio_middleware.core.crypto import SigningKey, sha256_hex
from chio_middleware.core.encoding import b64url_encode
from chio_middleware.core.hashing import body_hash, content_hash
from chio_middleware.core.models import HttpReceipt, Verdict
from chio_middleware.core.receipts import encode_receipt_header, receipt_json, sign_receipt
from tests.client.server import KERNEL, NOW, STRANGER

BODY = b'{"title":"t"}'


def make_receipt(key: SigningKey = KERNEL) -> HttpReceipt:
    return sign_receipt(
        key,
        request_id="r1",
        route_pattern="/notes/{id}",
        method="POST",
        caller_identity_hash=sha256_hex(b"c"),
        verdict=Verdict.allow(),
        response_status=200,
        timestamp=NOW,
        content_hash=content_hash("POST", "/notes/a b", {"q": "é"}, body_hash(BODY), "/notes/{id}"),
        policy_hash=sha256_hex(b"p"),
    )


RECEIPT = make_receipt()
HEADERS = {"X-Chio-Receipt": encode_receipt_header(RECEIPT), "X-Chio-Receipt-Id": RECEIPT.id}


def test_valid_receipt_is_returned() -> None:
    assert verify_response_receipt(HEADERS, KERNEL.public_key.hex) == RECEIPT


def test_header_names_are_case_insensitive_for_plain_dicts_and_httpx_headers() -> None:
    lowered = {k.lower(): v for k, v in HEADERS.items()}
    assert verify_response_receipt(lowered, [KERNEL.public_key]) == RECEIPT
    assert verify_response_receipt(httpx.Headers(lowered), KERNEL.public_key) == RECEIPT


@pytest.mark.parametrize(
    "target", ["/notes/a%20b?q=%C3%A9", "/notes/a b?q=é", "https://h.test/notes/a%20b?q=%C3%A9"]
)
def test_receipt_bound_to_the_request(target: str) -> None:
    assert (
        verify_response_receipt(HEADERS, KERNEL.public_key, method="post", target=target, body=BODY)
        == RECEIPT
    )


@pytest.mark.parametrize(
    ("method", "target", "body"),
    [
        ("GET", "/notes/a%20b?q=%C3%A9", BODY),
        ("POST", "/notes/a%20c?q=%C3%A9", BODY),
        ("POST", "/notes/a%20b?q=e", BODY),
        ("POST", "/notes/a%20b?q=%C3%A9", b""),
    ],
)
def test_receipt_for_another_request_is_refused(method: str, target: str, body: bytes) -> None:
    with pytest.raises(ReceiptVerificationError, match="another request"):
        verify_response_receipt(HEADERS, KERNEL.public_key, method=method, target=target, body=body)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"X-Chio-Receipt-Id": RECEIPT.id}, "no X-Chio-Receipt"),
        ({"X-Chio-Receipt": HEADERS["X-Chio-Receipt"]}, "Receipt-Id"),
        ({**HEADERS, "X-Chio-Receipt-Id": RECEIPT.id[:-1] + "x"}, "Receipt-Id"),
        ({**HEADERS, "X-Chio-Receipt": "!!"}, "base64url"),
        ({**HEADERS, "X-Chio-Receipt": b64url_encode(b"[]")}, "HttpReceipt"),
        (
            {
                "X-Chio-Receipt": encode_receipt_header(make_receipt(STRANGER)),
                "X-Chio-Receipt-Id": RECEIPT.id,
            },
            "not trusted",
        ),
    ],
)
def test_bad_headers_are_refused(headers: dict[str, str], message: str) -> None:
    with pytest.raises(ReceiptVerificationError, match=message):
        verify_response_receipt(headers, KERNEL.public_key)


def test_duplicate_receipt_headers_are_refused() -> None:
    headers = httpx.Headers([*HEADERS.items(), ("X-Chio-Receipt", HEADERS["X-Chio-Receipt"])])
    with pytest.raises(ReceiptVerificationError):
        verify_response_receipt(headers, KERNEL.public_key)


def test_method_without_target_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="together"):
        verify_response_receipt(HEADERS, KERNEL.public_key, method="GET")


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_flipping_any_byte_of_the_receipt_is_refused(data: st.DataObject) -> None:
    raw = bytearray(receipt_json(RECEIPT))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    headers = {"X-Chio-Receipt": b64url_encode(bytes(raw)), "X-Chio-Receipt-Id": RECEIPT.id}
    with pytest.raises(ReceiptVerificationError):
        verify_response_receipt(headers, KERNEL.public_key)
