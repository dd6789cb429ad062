from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chio_middleware.core.canonical import JsonParseError, canonical_json, parse_json
from chio_middleware.core.crypto import PublicKey, SigningKey
from chio_middleware.core.models import GuardEvidence, HttpReceipt, Verdict
from chio_middleware.core.receipts import (
    ReceiptInvalid,
    decode_receipt_header,
    encode_receipt_header,
    sign_receipt,
    verify_receipt,
)
from tests.vectors import cases, load

VECTORS = load("chio_http/http_receipt_v1.json")
KERNEL = SigningKey.from_seed_hex(VECTORS["kernel_seed"])


@pytest.mark.parametrize("case", cases("chio_http/http_receipt_v1.json"))
def test_receipt_vector(case: dict) -> None:
    receipt = case["receipt"]
    parsed = HttpReceipt.model_validate(receipt)
    assert canonical_json(parsed.signing_body()).decode() == case["canonical_body"]
    assert encode_receipt_header(parsed) == case["header"]
    assert decode_receipt_header(case["header"]) == parsed
    if case["valid"]:
        verify_receipt(receipt, trusted_keys=[PublicKey.from_hex(VECTORS["kernel_pub"])])
    else:
        with pytest.raises(ReceiptInvalid):
            verify_receipt(receipt)


@pytest.mark.parametrize("case", [c for c in VECTORS["cases"] if c["valid"]], ids=lambda c: c["id"])
def test_our_signer_produces_the_vector_bytes(case: dict) -> None:
    r = case["receipt"]
    ours = sign_receipt(
        KERNEL,
        receipt_id=r["id"],
        request_id=r["request_id"],
        route_pattern=r["route_pattern"],
        method=r["method"],
        caller_identity_hash=r["caller_identity_hash"],
        verdict=Verdict.model_validate(r["verdict"]),
        evidence=[GuardEvidence.model_validate(e) for e in r["evidence"]],
        response_status=r["response_status"],
        timestamp=r["timestamp"],
        content_hash=r["content_hash"],
        policy_hash=r["policy_hash"],
        capability_id=r.get("capability_id"),
        metadata=r.get("metadata"),
    )
    assert canonical_json(ours.signing_body()).decode() == case["canonical_body"]
    assert ours.signature == r["signature"]  # Ed25519 is deterministic
    assert encode_receipt_header(ours) == case["header"]


def make() -> HttpReceipt:
    return sign_receipt(
        KERNEL,
        request_id="req",
        route_pattern="/notes",
        method="post",
        caller_identity_hash="ab" * 32,
        verdict=Verdict.deny("nope", "CapabilityGuard", 401),
        evidence=[GuardEvidence(guard_name="CapabilityGuard", verdict=False)],
        response_status=401,
        timestamp=1000,
        content_hash="cd" * 32,
        policy_hash="ef" * 32,
    )


def test_fresh_receipt_shape() -> None:
    receipt = make()
    assert uuid.UUID(receipt.id).version == 7
    assert receipt.method == "POST"
    wire = receipt.to_wire()
    for absent in ("capability_id", "session_id", "metadata"):
        assert absent not in wire
    assert "null" not in canonical_json(wire).decode()
    verify_receipt(receipt, trusted_keys=[KERNEL.public_key])


def test_untrusted_kernel_key_is_refused() -> None:
    with pytest.raises(ReceiptInvalid, match="not trusted"):
        verify_receipt(make(), trusted_keys=[SigningKey.from_seed_hex("55" * 32).public_key])


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_flipping_any_byte_of_a_receipt_is_detected(data: st.DataObject) -> None:
    text = bytearray(canonical_json(make().to_wire()))
    index = data.draw(st.integers(0, len(text) - 1))
    text[index] ^= data.draw(st.integers(1, 255))
    try:
        tampered = parse_json(bytes(text))
    except JsonParseError:
        return
    with pytest.raises(ReceiptInvalid):
        verify_receipt(tampered, trusted_keys=[KERNEL.public_key])


@pytest.mark.parametrize("bad", ["", "!!!", "e30", "bnVsbA"])
def test_bad_receipt_headers(bad: str) -> None:
    with pytest.raises(ReceiptInvalid):
        decode_receipt_header(bad)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.text(max_size=12), st.text(max_size=12) | st.integers(), max_size=4),
    st.text(max_size=40),
)
def test_cached_receipt_bytes_equal_a_fresh_canonicalisation(metadata: dict, reason: str) -> None:
    from chio_middleware.core.receipts import receipt_json

    metadata["timestamp"] = 5  # a nested member of the same name must not confuse the splice
    receipt = sign_receipt(
        KERNEL,
        request_id="r",
        route_pattern="/x",
        method="GET",
        caller_identity_hash="ab" * 32,
        verdict=Verdict.deny(reason + ',"timestamp":1', "G", 403),
        response_status=403,
        timestamp=7,
        content_hash="cd" * 32,
        policy_hash="ef" * 32,
        session_id="s",
        metadata=metadata,
    )
    assert receipt_json(receipt) == canonical_json(receipt.to_wire())
    verify_receipt(receipt_json(receipt), trusted_keys=[KERNEL.public_key])
