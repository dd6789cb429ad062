"""DPoP proof of possession over HTTP (PROTOCOL.md 3).

Verification runs six steps in a fixed order and the first failure wins; the replay slot
is taken last, so a proof that fails any other step never burns one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .canonical import CanonicalJsonError, canonical_json, canonical_json_of_fast
from .crypto import KeyFormatError, PublicKey, SignatureInvalid, SigningKey, UnsupportedKeyType
from .errors import DpopInvalid
from .models import DPOP_SCHEMA, DpopProof, DpopProofBody, cached_bytes, keep_bytes
from .replay import ReplayStore, check_not_forgotten

__all__ = [
    "DEFAULT_MAX_CLOCK_SKEW",
    "DEFAULT_PROOF_TTL",
    "DpopBinding",
    "check_dpop_proof",
    "create_dpop_proof",
    "dpop_replay_slot",
    "parse_dpop_proof",
    "verify_dpop_proof",
]

DEFAULT_PROOF_TTL = 300
DEFAULT_MAX_CLOCK_SKEW = 30


@dataclass(frozen=True, slots=True)
class DpopBinding:
    """What a proof must be bound to: the capability, the tool and the request hash."""

    capability_id: str
    tool_server: str
    tool_name: str
    action_hash: str


def parse_dpop_proof(obj: Any) -> DpopProof:
    """Parse a proof object; unknown members or wrong types raise ``DpopInvalid`` (malformed)."""
    if isinstance(obj, DpopProof):
        return obj
    try:
        proof = DpopProof.model_validate(obj)
    except ValidationError:
        raise DpopInvalid("DPoP proof is malformed", step="malformed") from None
    # Every member of the body is required, none is dropped from the wire form and unknown
    # ones are refused: a validated body object with exactly the wire names is the body's
    # wire form, encoded as it is (no serializer call per request).
    body = obj.get("body") if type(obj) is dict else None
    if type(body) is dict and body.keys() == _BODY_WIRE_NAMES:
        # Validated: the wire names, strict strings and a u64, so in the fast domain. Stored
        # with the body model it encodes (a copy of the proof with another body never
        # reuses them).
        try:
            signed = canonical_json_of_fast(body)
        except CanonicalJsonError:  # e.g. a lone surrogate given from Python, not the wire
            raise DpopInvalid("DPoP proof is malformed", step="malformed") from None
        keep_bytes(proof, "_signed", proof.body, signed)
    return proof


_BODY_WIRE_NAMES = frozenset(
    field.alias or name for name, field in DpopProofBody.model_fields.items()
)


def _signed_bytes(proof: DpopProof) -> bytes:
    """The bytes the agent key signed: ``JCS(body)``."""
    signed = cached_bytes(proof, "_signed", proof.body)
    if signed is None:
        signed = keep_bytes(proof, "_signed", proof.body, canonical_json(proof.body.to_wire()))
    return signed


def check_dpop_proof(
    proof: DpopProof,
    *,
    subject: str,
    expected: DpopBinding,
    now: int,
    proof_ttl: int = DEFAULT_PROOF_TTL,
    max_clock_skew: int = DEFAULT_MAX_CLOCK_SKEW,
) -> PublicKey:
    """Run steps 1-5 (schema, sender constraint, binding, freshness, signature).

    ``subject`` is the capability's subject key. Returns the verified agent key.
    """
    body = proof.body
    # 1. schema
    if body.schema_ != DPOP_SCHEMA:
        raise DpopInvalid("DPoP proof has an unknown schema", step="schema")
    # 2. sender constraint: the proof's key is the capability subject (compared as bytes)
    try:
        agent_key = PublicKey.from_hex(body.agent_key)
    except UnsupportedKeyType as exc:
        raise DpopInvalid(f"DPoP agent key: {exc}", step="sender_constraint") from None
    except KeyFormatError:
        raise DpopInvalid("DPoP agent key is not a valid key", step="sender_constraint") from None
    try:
        subject_key = PublicKey.from_hex(subject)
    except KeyFormatError:
        raise DpopInvalid(
            "capability subject is not a valid key", step="sender_constraint"
        ) from None
    if agent_key != subject_key:
        raise DpopInvalid("DPoP key is not the capability subject", step="sender_constraint")
    # 3. binding
    for field in ("capability_id", "tool_server", "tool_name", "action_hash"):
        if getattr(body, field) != getattr(expected, field):
            raise DpopInvalid(f"DPoP proof is bound to another {field}", step="binding")
    # 4. freshness: the future bound first, so huge values cannot matter further down
    issued_at = body.issued_at
    if issued_at > now + max_clock_skew:
        raise DpopInvalid("DPoP proof is issued in the future", step="freshness")
    if issued_at + proof_ttl < now or issued_at < now - (proof_ttl + max_clock_skew):
        raise DpopInvalid("DPoP proof has expired", step="freshness")
    # 5. signature
    try:
        agent_key.verify(_signed_bytes(proof), proof.signature)
    except (SignatureInvalid, KeyFormatError):
        raise DpopInvalid("DPoP proof signature does not verify", step="signature") from None
    return agent_key


def dpop_replay_slot(
    proof: DpopProof,
    *,
    proof_ttl: int = DEFAULT_PROOF_TTL,
    max_clock_skew: int = DEFAULT_MAX_CLOCK_SKEW,
) -> tuple[str, int]:
    """The replay key of step 6, ``(nonce, capability_id)``, and when it may be forgotten.

    The slot outlives every instant at which step 4 would still accept the proof.
    """
    # Two validated strings: in the fast domain (a model built without validation could
    # hold anything: the exact encoder then).
    pair = [proof.body.nonce, proof.body.capability_id]
    fast = type(pair[0]) is str and type(pair[1]) is str
    key = "dpop:" + (canonical_json_of_fast if fast else canonical_json)(pair).decode("utf-8")
    return key, proof.body.issued_at + proof_ttl + max_clock_skew + 1


def verify_dpop_proof(
    proof: DpopProof | dict[str, Any],
    *,
    subject: str,
    expected: DpopBinding,
    now: int,
    replay_store: ReplayStore,
    proof_ttl: int = DEFAULT_PROOF_TTL,
    max_clock_skew: int = DEFAULT_MAX_CLOCK_SKEW,
) -> PublicKey:
    """All six steps of PROTOCOL.md 3 in order; raise the first failure.

    Raises ``DpopInvalid`` (steps 1-5, or a malformed proof), ``ReplayDetected`` (step 6),
    ``StateForgotten`` when the store lost its state after the proof was issued, or
    ``Unavailable`` when the store cannot answer.
    """
    parsed = parse_dpop_proof(proof)
    agent_key = check_dpop_proof(
        parsed,
        subject=subject,
        expected=expected,
        now=now,
        proof_ttl=proof_ttl,
        max_clock_skew=max_clock_skew,
    )
    key, expires_at = dpop_replay_slot(parsed, proof_ttl=proof_ttl, max_clock_skew=max_clock_skew)
    replay_store.reserve(key, expires_at=expires_at, now=now)
    check_not_forgotten(replay_store, parsed.body.issued_at, what="DPoP proof", guard="DpopGuard")
    return agent_key


def create_dpop_proof(
    agent_key: SigningKey,
    *,
    binding: DpopBinding,
    issued_at: int,
    nonce: str | None = None,
) -> DpopProof:
    """Make a proof for ``binding`` signed by ``agent_key`` (what an agent client sends)."""
    body = DpopProofBody(
        schema_=DPOP_SCHEMA,
        capability_id=binding.capability_id,
        tool_server=binding.tool_server,
        tool_name=binding.tool_name,
        action_hash=binding.action_hash,
        nonce=nonce if nonce is not None else os.urandom(16).hex(),
        issued_at=issued_at,
        agent_key=agent_key.public_key.hex,
    )
    return DpopProof(body=body, signature=agent_key.sign(canonical_json(body.to_wire())))
