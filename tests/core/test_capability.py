from __future__ import annotations

import copy

import pytest

from chio_middleware.core.canonical import canonical_json
from chio_middleware.core.capability import (
    CapabilityVerifier,
    capability_time_status,
    parse_capability,
    verify_capability_signature,
    verify_delegation_chain,
)
from chio_middleware.core.crypto import PublicKey, SigningKey
from chio_middleware.core.errors import CapabilityInvalid
from chio_middleware.core.models import CapabilityToken
from tests.vectors import cases, load

VECTORS = load("upstream/capability_v1.json")
ISSUER = SigningKey.from_seed_hex(VECTORS["issuer_seed_hex"])
SUBJECT = SigningKey.from_seed_hex(VECTORS["subject_seed_hex"])


def passes(check, *args, **kwargs) -> bool:  # type: ignore[no-untyped-def]
    try:
        check(*args, **kwargs)
    except CapabilityInvalid:
        return False
    return True


def observed(token: CapabilityToken, now: int, max_depth: int | None) -> dict:
    status = capability_time_status(token, now)
    return {
        "signature_valid": passes(verify_capability_signature, token),
        "delegation_chain_shape_valid": passes(verify_delegation_chain, token, max_depth=max_depth),
        "time_valid": status == "valid",
        "time_status": status,
    }


@pytest.mark.parametrize("case", cases("upstream/capability_v1.json"))
def test_capability_vector(case: dict) -> None:
    token = parse_capability(case["capability"])
    assert observed(token, case["verify_at"], None) == case["expected"]
    if "expected_with_max_delegation_depth" in case:
        assert (
            observed(token, case["verify_at"], case["max_delegation_depth"])
            == case["expected_with_max_delegation_depth"]
        )
    else:
        assert observed(token, case["verify_at"], 4) == case["expected"]


@pytest.mark.parametrize("case", cases("upstream/capability_v1.json"))
def test_reserialising_gives_the_signed_bytes(case: dict) -> None:
    token = parse_capability(case["capability"])
    body = token.signing_body()
    assert canonical_json(body).decode() == case["capability_body_canonical_json"]
    assert token.to_wire() == case["capability"]


def test_vector_seeds() -> None:
    cap = VECTORS["cases"][0]["capability"]
    assert ISSUER.public_key.hex == cap["issuer"]
    assert SUBJECT.public_key.hex == cap["subject"]


def sign_token(body: dict, key: SigningKey = ISSUER, *, with_schema: bool = True) -> dict:
    signed = {**body, "schema": "chio.capability.v1"} if with_schema else dict(body)
    signature = key.sign(canonical_json(signed))
    return {**body, "signature": signature}


BASE = {
    "id": "cap-x",
    "issuer": ISSUER.public_key.hex,
    "subject": SUBJECT.public_key.hex,
    "scope": {"grants": [{"server_id": "srv", "tool_name": "t", "operations": ["invoke"]}]},
    "issued_at": 1000,
    "expires_at": 2000,
}


def test_schema_augmented_and_legacy_signatures_both_verify() -> None:
    verify_capability_signature(parse_capability(sign_token(BASE)))
    verify_capability_signature(parse_capability(sign_token(BASE, with_schema=False)))
    explicit = sign_token({**BASE, "schema": "chio.capability.v1"})
    verify_capability_signature(parse_capability(explicit))


def test_legacy_form_is_refused_when_the_token_has_newer_members() -> None:
    newer = {**BASE, "budget_share_bps": 5000}
    verify_capability_signature(parse_capability(sign_token(newer)))
    with pytest.raises(CapabilityInvalid):
        verify_capability_signature(parse_capability(sign_token(newer, with_schema=False)))


def test_unknown_members_stay_under_the_signature() -> None:
    token = sign_token({**BASE, "future_member": {"x": 1}})
    verify_capability_signature(parse_capability(token))
    tampered = copy.deepcopy(token)
    tampered["future_member"]["x"] = 2
    with pytest.raises(CapabilityInvalid):
        verify_capability_signature(parse_capability(tampered))
    # An unknown member added after signing is not covered: refused.
    with pytest.raises(CapabilityInvalid):
        verify_capability_signature(parse_capability({**sign_token(BASE), "added": 1}))


@pytest.mark.parametrize(
    ("algorithm", "ok"), [("Ed25519", True), ("ed25519", True), ("P256", False)]
)
def test_algorithm_member(algorithm: str, ok: bool) -> None:
    token = {**sign_token(BASE), "algorithm": algorithm}
    assert passes(verify_capability_signature, parse_capability(token)) is ok


@pytest.mark.parametrize("prefix", ["p256:", "p384:", "hybrid:"])
def test_foreign_issuer_keys_are_refused_clearly(prefix: str) -> None:
    token = {**sign_token(BASE), "issuer": prefix + "ab" * 33}
    with pytest.raises(CapabilityInvalid, match="only Ed25519") as info:
        verify_capability_signature(parse_capability(token))
    assert info.value.reason == "unsupported_key_type"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.update(issued_at="1000"),
        lambda t: t.update(expires_at=-1),
        lambda t: t.pop("scope"),
        lambda t: t.update(delegation_chain=None, scope=[]),
        lambda t: t["scope"]["grants"][0].update(operations="invoke"),
    ],
)
def test_malformed_tokens(mutate) -> None:  # type: ignore[no-untyped-def]
    token = copy.deepcopy(sign_token(BASE))
    mutate(token)
    with pytest.raises(CapabilityInvalid) as info:
        parse_capability(token)
    assert info.value.reason == "malformed"


def link(
    delegator: SigningKey, delegatee: PublicKey, timestamp: int, cap_id: str = "parent"
) -> dict:
    body = {
        "capability_id": cap_id,
        "delegator": delegator.public_key.hex,
        "delegatee": delegatee.hex,
        "timestamp": timestamp,
    }
    return {**body, "signature": delegator.sign(canonical_json(body))}


MIDDLE = SigningKey.from_seed_hex("0d" * 32)


def verifier(**kwargs) -> CapabilityVerifier:  # type: ignore[no-untyped-def]
    return CapabilityVerifier(trusted_issuers=[ISSUER.public_key], **kwargs)


def test_verifier_accepts_a_valid_token_and_checks_time_every_use() -> None:
    v = verifier()
    token = sign_token(BASE)
    assert v.verify(token, now=1500).id == "cap-x"
    for now, reason in ((999, "not_yet_valid"), (2000, "expired")):
        with pytest.raises(CapabilityInvalid) as info:
            v.verify(token, now=now)
        assert info.value.reason == reason


def test_verifier_refuses_untrusted_issuers_and_revoked_tokens() -> None:
    other = SigningKey.from_seed_hex("44" * 32)
    untrusted = sign_token({**BASE, "issuer": other.public_key.hex}, key=other)
    with pytest.raises(CapabilityInvalid) as info:
        verifier().verify(untrusted, now=1500)
    assert info.value.reason == "untrusted_issuer"
    with pytest.raises(CapabilityInvalid) as info:
        verifier(revoked=["cap-x"]).verify(sign_token(BASE), now=1500)
    assert info.value.reason == "revoked"


def test_verifier_delegation_rules() -> None:
    good_chain = [
        link(ISSUER, MIDDLE.public_key, 1100),
        link(MIDDLE, SUBJECT.public_key, 1200),
    ]
    verifier().verify(sign_token({**BASE, "delegation_chain": good_chain}), now=1500)
    # Revoking an ancestor revokes the delegated token.
    with pytest.raises(CapabilityInvalid) as info:
        verifier(revoked=["parent"]).verify(
            sign_token({**BASE, "delegation_chain": good_chain}), now=1500
        )
    assert info.value.reason == "revoked"
    bad_chains = {
        "disconnected": [
            link(ISSUER, MIDDLE.public_key, 1100),
            link(ISSUER, SUBJECT.public_key, 1200),
        ],
        "time_reversed": [
            link(ISSUER, MIDDLE.public_key, 1300),
            link(MIDDLE, SUBJECT.public_key, 1200),
        ],
        "wrong_leaf": [link(ISSUER, MIDDLE.public_key, 1100)],
        "too_deep": [link(ISSUER, SUBJECT.public_key, 1100)] * 5,
    }
    for name, chain in bad_chains.items():
        with pytest.raises(CapabilityInvalid) as info:
            verifier().verify(sign_token({**BASE, "delegation_chain": chain}), now=1500)
        assert info.value.reason == "delegation", name


def test_verifier_cache_is_bounded_and_keyed_by_exact_bytes() -> None:
    v = verifier(cache_size=2)
    tokens = [sign_token({**BASE, "id": f"cap-{i}"}) for i in range(5)]
    for token in tokens:
        v.verify(token, now=1500, raw=canonical_json(token))
    assert len(v._cache) == 2
    bad = {**tokens[0], "signature": "00" * 64}
    for _ in range(2):  # cached failures stay failures
        with pytest.raises(CapabilityInvalid):
            v.verify(bad, now=1500, raw=canonical_json(bad))


def test_verify_encoded_decodes_only_on_a_cache_miss() -> None:
    import json

    from chio_middleware.core.errors import MalformedHeader

    v = verifier()
    raw = json.dumps(sign_token(BASE)).encode()
    calls: list[bytes] = []

    def decode(data: bytes) -> dict:
        calls.append(data)
        return json.loads(data)

    for _ in range(3):
        assert v.verify_encoded(raw, now=1500, decode=decode).id == "cap-x"
    assert calls == [raw]

    def refuse(data: bytes) -> dict:
        calls.append(data)
        raise MalformedHeader("bad")

    for _ in range(2):  # a value that does not decode is not cached
        with pytest.raises(MalformedHeader):
            v.verify_encoded(b"junk", now=1500, decode=refuse)
    assert calls[1:] == [b"junk", b"junk"]
