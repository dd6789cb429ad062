from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chio_middleware.core.canonical import canonical_json
from chio_middleware.core.crypto import SigningKey
from chio_middleware.core.dpop import (
    DpopBinding,
    create_dpop_proof,
    verify_dpop_proof,
)
from chio_middleware.core.errors import DpopInvalid, ReplayDetected
from chio_middleware.core.hashing import body_hash, request_binding_hash
from chio_middleware.core.replay import MemoryReplayStore
from tests.vectors import cases, load

VECTORS = load("chio_http/dpop_v1.json")
EXPECTED = DpopBinding(**VECTORS["expected_binding"])
SUBJECT = VECTORS["capability"]["subject"]


def outcome(proof: dict, now: int, store: MemoryReplayStore) -> str:
    try:
        verify_dpop_proof(proof, subject=SUBJECT, expected=EXPECTED, now=now, replay_store=store)
    except DpopInvalid as exc:
        return exc.step
    except ReplayDetected:
        return "replay"
    return "ok"


@pytest.mark.parametrize("case", cases("chio_http/dpop_v1.json"))
def test_dpop_vector(case: dict) -> None:
    store = MemoryReplayStore()
    assert outcome(case["proof"], case["now"], store) == case["result"]
    if case["result"] != "ok":
        # An invalid proof never takes a replay slot.
        assert len(store) == 0


def test_replay_of_the_valid_vector_is_refused() -> None:
    valid = next(c for c in load("chio_http/dpop_v1.json")["cases"] if c["id"] == "valid")
    store = MemoryReplayStore()
    assert outcome(valid["proof"], valid["now"], store) == "ok"
    assert outcome(valid["proof"], valid["now"], store) == "replay"
    assert outcome(valid["proof"], valid["now"] + 100, store) == "replay"


def test_vector_request_gives_the_expected_action_hash() -> None:
    import base64

    from chio_middleware.core.request import split_target

    request = VECTORS["request"]
    body = base64.b64decode(request["body_b64"])
    path, query = split_target(request["url"])
    assert (
        request_binding_hash(request["method"], path, query, body_hash(body))
        == EXPECTED.action_hash
    )


def test_agent_seed_matches_subject_and_creates_the_vector_proof() -> None:
    agent = SigningKey.from_seed_hex(VECTORS["agent_seed"])
    assert agent.public_key.hex == SUBJECT
    valid = next(c for c in VECTORS["cases"] if c["id"] == "valid")
    proof = create_dpop_proof(agent, binding=EXPECTED, issued_at=1760032000, nonce="n-ok")
    assert proof.to_wire() == valid["proof"]


AGENT = SigningKey.from_seed_hex("21" * 32)
BINDING = DpopBinding("cap-1", "srv", "tool", "ab" * 32)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_flipping_any_byte_of_a_signed_proof_is_rejected(data: st.DataObject) -> None:
    proof = create_dpop_proof(AGENT, binding=BINDING, issued_at=1000, nonce="n")
    wire = proof.to_wire()
    text = bytearray(canonical_json(wire))
    index = data.draw(st.integers(0, len(text) - 1))
    text[index] ^= data.draw(st.integers(1, 255))
    store = MemoryReplayStore()
    from chio_middleware.core.canonical import JsonParseError, parse_json

    try:
        tampered = parse_json(bytes(text))
    except JsonParseError:
        return  # no longer JSON: refused before verification
    if tampered == wire:
        return  # the flip hit insignificant bytes only (impossible for canonical text)
    with pytest.raises((DpopInvalid, ReplayDetected)):
        verify_dpop_proof(
            tampered, subject=AGENT.public_key.hex, expected=BINDING, now=1000, replay_store=store
        )


@pytest.mark.parametrize("field", ["capability_id", "tool_server", "tool_name", "action_hash"])
def test_changing_any_bound_field_is_rejected(field: str) -> None:
    proof = create_dpop_proof(AGENT, binding=BINDING, issued_at=1000)
    other = dataclasses.replace(BINDING, **{field: getattr(BINDING, field) + "x"})
    with pytest.raises(DpopInvalid) as info:
        verify_dpop_proof(
            proof,
            subject=AGENT.public_key.hex,
            expected=other,
            now=1000,
            replay_store=MemoryReplayStore(),
        )
    assert info.value.step == "binding"


def test_round_trip_and_fresh_nonces() -> None:
    store = MemoryReplayStore()
    for _ in range(3):
        proof = create_dpop_proof(AGENT, binding=BINDING, issued_at=1000)
        verify_dpop_proof(
            proof,
            subject="0x" + AGENT.public_key.hex.upper(),
            expected=BINDING,
            now=1010,
            replay_store=store,
        )
    assert len(store) == 3


def test_foreign_agent_key_type_is_refused() -> None:
    proof = create_dpop_proof(AGENT, binding=BINDING, issued_at=1000).to_wire()
    proof["body"]["agent_key"] = "p256:" + "ab" * 33
    with pytest.raises(DpopInvalid, match="only Ed25519"):
        verify_dpop_proof(
            proof,
            subject=AGENT.public_key.hex,
            expected=BINDING,
            now=1000,
            replay_store=MemoryReplayStore(),
        )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p.update(extra=1),
        lambda p: p["body"].update(issued_at="1000"),
        lambda p: p["body"].update(issued_at=-1),
        lambda p: p["body"].pop("nonce"),
        lambda p: p.pop("signature"),
    ],
)
def test_malformed_proofs(mutate) -> None:  # type: ignore[no-untyped-def]
    proof = create_dpop_proof(AGENT, binding=BINDING, issued_at=1000).to_wire()
    mutate(proof)
    with pytest.raises(DpopInvalid) as info:
        verify_dpop_proof(
            proof,
            subject=AGENT.public_key.hex,
            expected=BINDING,
            now=1000,
            replay_store=MemoryReplayStore(),
        )
    assert info.value.step == "malformed"
