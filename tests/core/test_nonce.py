from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chio_middleware.core.canonical import JsonParseError, canonical_json, parse_json
from chio_middleware.core.crypto import PublicKey, SigningKey
from chio_middleware.core.errors import NonceInvalid, ReplayDetected
from chio_middleware.core.models import NonceBinding
from chio_middleware.core.nonce import mint_execution_nonce, verify_execution_nonce
from chio_middleware.core.replay import MemoryReplayStore
from tests.vectors import cases, load

VECTORS = load("chio_http/execution_nonce_v1.json")
KERNEL = PublicKey.from_hex(VECTORS["kernel_pub"])
EXPECTED = NonceBinding(**VECTORS["expected_binding"])
OWN_KEY = SigningKey.from_seed_hex("33" * 32)


def outcome(signed: dict, now: int, store: MemoryReplayStore) -> str:
    try:
        verify_execution_nonce(
            signed,
            expected=EXPECTED,
            now=now,
            trusted_signers=[OWN_KEY.public_key, KERNEL],
            replay_store=store,
        )
    except NonceInvalid as exc:
        return exc.step
    except ReplayDetected:
        return "replay"
    return "ok"


@pytest.mark.parametrize("case", cases("chio_http/execution_nonce_v1.json"))
def test_nonce_vector(case: dict) -> None:
    store = MemoryReplayStore()
    assert outcome(case["signed_nonce"], case["now"], store) == case["result"]
    if case["result"] != "ok":
        assert len(store) == 0


def test_valid_vector_is_single_use() -> None:
    valid = next(c for c in VECTORS["cases"] if c["id"] == "valid")
    store = MemoryReplayStore()
    assert outcome(valid["signed_nonce"], valid["now"], store) == "ok"
    assert outcome(valid["signed_nonce"], valid["now"], store) == "replay"


def test_kernel_seed_matches_kernel_pub() -> None:
    assert SigningKey.from_seed_hex(VECTORS["kernel_seed"]).public_key == KERNEL


def test_untrusted_signer_without_kernel_key() -> None:
    valid = next(c for c in VECTORS["cases"] if c["id"] == "valid")
    with pytest.raises(NonceInvalid) as info:
        verify_execution_nonce(
            valid["signed_nonce"],
            expected=EXPECTED,
            now=valid["now"],
            trusted_signers=[OWN_KEY.public_key],
            replay_store=MemoryReplayStore(),
        )
    assert info.value.step == "signature"


def test_minted_nonce_round_trip_with_uuid7_id() -> None:
    signed = mint_execution_nonce(OWN_KEY, binding=EXPECTED, now=1000, ttl=30)
    assert uuid.UUID(signed.nonce.nonce_id).version == 7
    assert signed.nonce.expires_at == 1030
    store = MemoryReplayStore()
    verify_execution_nonce(
        signed.to_wire(),
        expected=EXPECTED,
        now=1029,
        trusted_signers=[OWN_KEY.public_key],
        replay_store=store,
    )
    with pytest.raises(ReplayDetected):
        verify_execution_nonce(
            signed,
            expected=EXPECTED,
            now=1029,
            trusted_signers=[OWN_KEY.public_key],
            replay_store=store,
        )


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_flipping_any_byte_of_a_signed_nonce_is_rejected(data: st.DataObject) -> None:
    signed = mint_execution_nonce(OWN_KEY, binding=EXPECTED, now=1000).to_wire()
    text = bytearray(canonical_json(signed))
    index = data.draw(st.integers(0, len(text) - 1))
    text[index] ^= data.draw(st.integers(1, 255))
    try:
        tampered = parse_json(bytes(text))
    except JsonParseError:
        return
    with pytest.raises((NonceInvalid, ReplayDetected)):
        verify_execution_nonce(
            tampered,
            expected=EXPECTED,
            now=1000,
            trusted_signers=[OWN_KEY.public_key],
            replay_store=MemoryReplayStore(),
        )


@pytest.mark.parametrize("field", ["capability_id", "tool_server", "tool_name", "parameter_hash"])
def test_changing_any_bound_field_is_rejected(field: str) -> None:
    signed = mint_execution_nonce(OWN_KEY, binding=EXPECTED, now=1000)
    other = EXPECTED.model_copy(update={field: "other"})
    with pytest.raises(NonceInvalid) as info:
        verify_execution_nonce(
            signed,
            expected=other,
            now=1000,
            trusted_signers=[OWN_KEY.public_key],
            replay_store=MemoryReplayStore(),
        )
    assert info.value.step == "binding"
