"""Federation handshake (PROTOCOL.md 9): every known-answer case, round trips, tampering."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chio_middleware.core.canonical import canonical_json
from chio_middleware.core.crypto import PublicKey, SigningKey
from chio_middleware.core.errors import FederationInvalid, FederationUntrusted
from chio_middleware.core.federation import (
    FederationPeer,
    HandshakeChallenge,
    MemoryPeerStore,
    PinNotUsable,
    accept_envelope_sync,
    challenge_bytes,
    handshake_nonce_slot,
    parse_envelope,
    parse_peer,
    resolve_pin,
    sign_envelope,
)
from chio_middleware.core.replay import MemoryReplayStore

from .. import vectors

FILE = "chio_http/federation_v1.json"
DATA = vectors.load(FILE)
KERNEL = SigningKey.from_seed_hex(DATA["kernel_seed"])
OTHER = SigningKey.from_seed_hex(DATA["other_seed"])
LOCAL = DATA["local_kernel_id"]
NOW = 1_800_064_000


def _accept(case: dict[str, Any], peers: MemoryPeerStore, nonces: MemoryReplayStore) -> Any:
    return accept_envelope_sync(
        case["envelope"],
        kernel_id=LOCAL,
        now=case["now"],
        anchors={k: PublicKey.from_hex(v) for k, v in case["anchors"].items()},
        peers=peers,
        nonces=nonces,
        rotation_window=DATA["rotation_window"],
        max_skew=DATA["max_handshake_skew"],
    )


def _stores(case: dict[str, Any]) -> tuple[MemoryPeerStore, MemoryReplayStore]:
    peers = MemoryPeerStore()
    for pinned in case["pinned"]:
        peers.put_peer(parse_peer(pinned))
    nonces = MemoryReplayStore()
    for sender, nonce in case["seen_nonces"]:
        envelope = sign_envelope(
            KERNEL, local_kernel_id=sender, remote_kernel_id=LOCAL, nonce=nonce, timestamp=0
        )
        key, _ = handshake_nonce_slot(envelope, DATA["max_handshake_skew"])
        nonces.reserve(key, expires_at=case["now"] + DATA["max_handshake_skew"], now=case["now"])
    return peers, nonces


def test_vector_keys() -> None:
    assert KERNEL.public_key.hex == DATA["kernel_pub"]
    assert OTHER.public_key.hex == DATA["other_pub"]
    assert SigningKey.from_seed_hex(DATA["local_seed"]).public_key.hex == DATA["local_pub"]


@pytest.mark.parametrize("case", vectors.cases(FILE))
def test_challenge_canonical_bytes(case: dict[str, Any]) -> None:
    challenge = parse_envelope(case["envelope"]).challenge
    assert challenge_bytes(challenge) == case["challenge_canonical_json"].encode("utf-8")


@pytest.mark.parametrize("case", vectors.cases(FILE))
def test_accept(case: dict[str, Any]) -> None:
    peers, nonces = _stores(case)
    before = peers.list_peers()
    if case["result"] == "ok":
        peer = _accept(case, peers, nonces)
        assert peer.to_wire() == case["pinned_peer"]
        assert canonical_json(peer.to_wire()) == case["pinned_peer_canonical_json"].encode()
        assert peers.get_peer(peer.kernel_id) == peer
        return
    error = FederationUntrusted if case["result"] in ("untrusted", "unexpected_key") else (
        FederationInvalid
    )
    with pytest.raises(error) as info:
        _accept(case, peers, nonces)
    assert info.value.step == case["result"]
    assert info.value.status == (403 if error is FederationUntrusted else 401)
    assert peers.list_peers() == before  # a refusal pins nothing


@pytest.mark.parametrize("case", vectors.cases(FILE))
def test_refusal_never_burns_the_nonce(case: dict[str, Any]) -> None:
    if case["result"] in ("ok", "replay"):
        return
    peers, nonces = _stores(case)
    with pytest.raises((FederationInvalid, FederationUntrusted)):
        _accept(case, peers, nonces)
    assert len(nonces) == len(case["seen_nonces"])


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c["id"]) for c in DATA["resolve"]]
)
def test_resolve(case: dict[str, Any]) -> None:
    peer = parse_peer(case["peer"]) if case["peer"] is not None else None
    if case["result"] == "ok":
        assert resolve_pin(peer, "kernel.org-a", case["now"]) == peer
        return
    with pytest.raises(PinNotUsable) as info:
        resolve_pin(peer, "kernel.org-a", case["now"])
    assert info.value.result == case["result"]
    assert "kernel.org-a" in str(info.value)


def test_accepted_once_then_replay() -> None:
    case = vectors.load(FILE)["cases"][0]
    peers, nonces = _stores(case)
    _accept(case, peers, nonces)
    with pytest.raises(FederationInvalid) as info:
        _accept(case, peers, nonces)
    assert info.value.step == "replay"


def test_newer_optional_members_are_signed_not_emitted() -> None:
    challenge = HandshakeChallenge.model_validate(
        {
            "schema": "chio.federation-kernel-handshake.v1",
            "localKernelId": "kernel.org-a",
            "remoteKernelId": LOCAL,
            "nonce": "n-x",
            "timestamp": NOW,
            "conformanceTier": "silver",
            "capabilities": {"bits": 3},
        }
    )
    signed = challenge_bytes(challenge)
    assert b'"conformanceTier":"silver"' in signed and b'"capabilities"' in signed
    envelope = {
        "challenge": challenge.to_wire(),
        "declaredPublicKey": KERNEL.public_key.hex,
        "signature": KERNEL.sign(signed),
    }
    peer = accept_envelope_sync(
        envelope,
        kernel_id=LOCAL,
        now=NOW,
        anchors={"kernel.org-a": KERNEL.public_key},
        peers=MemoryPeerStore(),
        nonces=MemoryReplayStore(),
    )
    assert set(peer.to_wire()) == {"kernelId", "publicKey", "establishedAt", "rotationDue"}
    own = sign_envelope(KERNEL, local_kernel_id="a", remote_kernel_id="b", nonce="n", timestamp=1)
    assert set(own.to_wire()["challenge"]) == {
        "schema",
        "localKernelId",
        "remoteKernelId",
        "nonce",
        "timestamp",
    }


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda e: e["challenge"].update(extra=1), id="unknown_challenge_member"),
        pytest.param(lambda e: e.update(extra=1), id="unknown_envelope_member"),
        pytest.param(lambda e: e["challenge"].update(nonce=""), id="empty_nonce"),
        pytest.param(lambda e: e["challenge"].update(nonce="n" * 257), id="long_nonce"),
        pytest.param(lambda e: e["challenge"].update(timestamp="1"), id="string_timestamp"),
        pytest.param(lambda e: e["challenge"].update(timestamp=True), id="bool_timestamp"),
        pytest.param(lambda e: e["challenge"].update(timestamp=-1), id="negative_timestamp"),
        pytest.param(lambda e: e["challenge"].pop("nonce"), id="missing_nonce"),
        pytest.param(lambda e: e.pop("signature"), id="missing_signature"),
    ],
)
def test_malformed_envelopes_are_refused(mutate: Any) -> None:
    envelope = sign_envelope(
        KERNEL, local_kernel_id="kernel.org-a", remote_kernel_id=LOCAL, nonce="n", timestamp=NOW
    ).to_wire()
    mutate(envelope)
    with pytest.raises(FederationInvalid) as info:
        parse_envelope(envelope)
    assert info.value.step == "malformed"


def test_long_nonce_of_256_characters_is_accepted() -> None:
    envelope = sign_envelope(
        KERNEL, local_kernel_id="kernel.org-a", remote_kernel_id=LOCAL, nonce="n" * 256, timestamp=NOW
    )
    assert parse_envelope(envelope.to_wire()) == envelope


_ids = st.text(min_size=1, max_size=40)


@settings(max_examples=50, deadline=None)
@given(sender=_ids, nonce=st.text(min_size=1, max_size=256), offset=st.integers(-300, 300))
def test_signed_envelope_round_trips(sender: str, nonce: str, offset: int) -> None:
    envelope = sign_envelope(
        KERNEL, local_kernel_id=sender, remote_kernel_id=LOCAL, nonce=nonce, timestamp=NOW + offset
    )
    wire = envelope.to_wire()
    assert parse_envelope(wire) == envelope
    peer = accept_envelope_sync(
        wire,
        kernel_id=LOCAL,
        now=NOW,
        anchors={sender: KERNEL.public_key},
        peers=MemoryPeerStore(),
        nonces=MemoryReplayStore(),
    )
    assert peer == FederationPeer(
        kernel_id=sender,
        public_key=KERNEL.public_key.hex,
        established_at=NOW,
        rotation_due=NOW + 43_200,
    )


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_flipping_any_byte_is_refused(data: st.DataObject) -> None:
    envelope = sign_envelope(
        KERNEL, local_kernel_id="kernel.org-a", remote_kernel_id=LOCAL, nonce="n-1", timestamp=NOW
    )
    signed = bytearray(challenge_bytes(envelope.challenge))
    signature = bytearray(bytes.fromhex(envelope.signature))
    target = data.draw(st.sampled_from(["challenge", "signature"]))
    buffer = signed if target == "challenge" else signature
    index = data.draw(st.integers(0, len(buffer) - 1))
    buffer[index] ^= data.draw(st.integers(1, 255))
    try:
        challenge = HandshakeChallenge.model_validate_json(bytes(signed))
    except ValueError:
        return  # no longer a challenge at all: refused before any key is involved
    tampered = {
        "challenge": challenge.to_wire(),
        "declaredPublicKey": envelope.declared_public_key,
        "signature": bytes(signature).hex(),
    }
    peers = MemoryPeerStore()
    with pytest.raises((FederationInvalid, FederationUntrusted)):
        accept_envelope_sync(
            tampered,
            kernel_id=LOCAL,
            now=NOW,
            anchors={"kernel.org-a": KERNEL.public_key},
            peers=peers,
            nonces=MemoryReplayStore(),
        )
    assert peers.list_peers() == []


def test_foreign_key_types_are_refused_by_name() -> None:
    envelope = sign_envelope(
        KERNEL, local_kernel_id="kernel.org-a", remote_kernel_id=LOCAL, nonce="n", timestamp=NOW
    ).to_wire()
    envelope["declaredPublicKey"] = "p256:" + "00" * 33
    with pytest.raises(FederationInvalid, match="p256") as info:
        accept_envelope_sync(
            envelope,
            kernel_id=LOCAL,
            now=NOW,
            anchors={"kernel.org-a": KERNEL.public_key},
            peers=MemoryPeerStore(),
            nonces=MemoryReplayStore(),
        )
    assert info.value.step == "signature"
