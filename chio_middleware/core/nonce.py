"""Single-use execution nonces (PROTOCOL.md 4).

Verification order: schema, expiry, binding, signature (own key or a trusted kernel key),
single use. A nonce id is reserved until its ``expires_at``, after which step 2 refuses it
anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from .canonical import canonical_json
from .clock import uuid7
from .crypto import KeyFormatError, PublicKey, SignatureInvalid, SigningKey
from .errors import NonceInvalid
from .models import NONCE_SCHEMA, ExecutionNonce, NonceBinding, SignedExecutionNonce
from .replay import ReplayStore, check_not_forgotten

__all__ = [
    "DEFAULT_NONCE_TTL",
    "check_execution_nonce",
    "mint_execution_nonce",
    "nonce_replay_key",
    "parse_execution_nonce",
    "verify_execution_nonce",
]

DEFAULT_NONCE_TTL = 30


def mint_execution_nonce(
    key: SigningKey, *, binding: NonceBinding, now: int, ttl: int = DEFAULT_NONCE_TTL
) -> SignedExecutionNonce:
    """Mint a nonce (UUIDv7 id) bound to ``binding``, valid for ``ttl`` seconds."""
    nonce = ExecutionNonce(
        schema_=NONCE_SCHEMA,
        nonce_id=uuid7(now * 1000),
        issued_at=now,
        expires_at=now + ttl,
        bound_to=binding,
    )
    return SignedExecutionNonce(nonce=nonce, signature=key.sign(canonical_json(nonce.to_wire())))


def parse_execution_nonce(obj: Any) -> SignedExecutionNonce:
    """Parse a signed nonce object; a wrong shape is ``NonceInvalid(step="malformed")``."""
    if isinstance(obj, SignedExecutionNonce):
        return obj
    try:
        return SignedExecutionNonce.model_validate(obj)
    except ValidationError:
        raise NonceInvalid("execution nonce is malformed", step="malformed") from None


def _same_subject(bound: str, expected: str) -> bool:
    try:
        return PublicKey.from_hex(bound) == PublicKey.from_hex(expected)
    except KeyFormatError:
        return False


def check_execution_nonce(
    signed: SignedExecutionNonce,
    *,
    expected: NonceBinding,
    now: int,
    trusted_signers: Iterable[PublicKey],
) -> None:
    """Run the checks before single use: schema, expiry, binding, signature."""
    nonce = signed.nonce
    if nonce.schema_ != NONCE_SCHEMA:
        raise NonceInvalid("execution nonce has an unknown schema", step="schema")
    if not now < nonce.expires_at:
        raise NonceInvalid("execution nonce has expired", step="expired")
    bound = nonce.bound_to
    if not _same_subject(bound.subject_id, expected.subject_id):
        raise NonceInvalid("execution nonce is bound to another subject", step="binding")
    for field in ("capability_id", "tool_server", "tool_name", "parameter_hash"):
        if getattr(bound, field) != getattr(expected, field):
            raise NonceInvalid(f"execution nonce is bound to another {field}", step="binding")
    message = canonical_json(nonce.to_wire())
    for signer in trusted_signers:
        try:
            signer.verify(message, signed.signature)
        except (SignatureInvalid, KeyFormatError):
            continue
        return
    raise NonceInvalid("execution nonce is not signed by a trusted key", step="signature")


def verify_execution_nonce(
    signed: SignedExecutionNonce | dict[str, Any],
    *,
    expected: NonceBinding,
    now: int,
    trusted_signers: Iterable[PublicKey],
    replay_store: ReplayStore,
) -> SignedExecutionNonce:
    """All checks of PROTOCOL.md 4, then reserve the nonce id until it expires (refused with
    ``StateForgotten`` when the store lost its state after the nonce was issued)."""
    parsed = parse_execution_nonce(signed)
    check_execution_nonce(parsed, expected=expected, now=now, trusted_signers=trusted_signers)
    replay_store.reserve(nonce_replay_key(parsed), expires_at=parsed.nonce.expires_at, now=now)
    check_not_forgotten(
        replay_store, parsed.nonce.issued_at, what="execution nonce", guard="ExecutionNonceGuard"
    )
    return parsed


def nonce_replay_key(signed: SignedExecutionNonce) -> str:
    """The store key that makes a nonce single-use."""
    return "nonce:" + signed.nonce.nonce_id
