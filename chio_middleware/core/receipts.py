"""Signed HttpReceipts (PROTOCOL.md 7): build, sign, verify, header encoding."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError

from .canonical import JsonParseError, canonical_json, parse_json
from .clock import uuid7
from .crypto import KeyFormatError, PublicKey, SignatureInvalid, SigningKey
from .encoding import b64url_decode, b64url_encode
from .models import GuardEvidence, HttpReceipt, Verdict

__all__ = [
    "ReceiptInvalid",
    "decode_receipt_header",
    "encode_receipt_header",
    "parse_receipt",
    "receipt_json",
    "sign_receipt",
    "verify_receipt",
]


class ReceiptInvalid(ValueError):
    """A receipt that does not parse, does not verify, or is signed by an unexpected key."""


def sign_receipt(
    key: SigningKey,
    *,
    request_id: str,
    route_pattern: str,
    method: str,
    caller_identity_hash: str,
    verdict: Verdict,
    response_status: int,
    timestamp: int,
    content_hash: str,
    policy_hash: str,
    evidence: Sequence[GuardEvidence] = (),
    capability_id: str | None = None,
    session_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    receipt_id: str | None = None,
) -> HttpReceipt:
    """Build an HttpReceipt and sign ``JCS(receipt without signature)`` with ``key``."""
    fields: dict[str, Any] = {
        "id": receipt_id or uuid7(),
        "request_id": request_id,
        "route_pattern": route_pattern,
        "method": method.upper(),
        "caller_identity_hash": caller_identity_hash,
        "session_id": session_id,
        "verdict": verdict,
        "evidence": list(evidence) or None,
        "response_status": response_status,
        "timestamp": timestamp,
        "content_hash": content_hash,
        "policy_hash": policy_hash,
        "capability_id": capability_id,
        "metadata": metadata or None,
        "kernel_key": key.public_key.hex,
    }
    body = {k: v for k, v in fields.items() if v is not None}
    body["verdict"] = verdict_wire(verdict)
    if evidence:
        body["evidence"] = [evidence_wire(item) for item in evidence]
    signed = canonical_json(body)
    signature = key.sign(signed)
    # Every value was built here from typed inputs: no second validation on the hot path.
    receipt = HttpReceipt.model_construct(**fields, signature=signature)
    receipt._canonical = _with_signature(signed, signature)
    return receipt


def verdict_wire(verdict: Verdict) -> dict[str, Any]:
    """``verdict.to_wire()`` without pydantic's serializer (the members are plain values)."""
    wire: dict[str, Any] = {"verdict": verdict.verdict}
    if verdict.reason is not None:
        wire["reason"] = verdict.reason
    if verdict.guard is not None:
        wire["guard"] = verdict.guard
    if verdict.http_status is not None:
        wire["http_status"] = verdict.http_status
    return wire


def evidence_wire(item: GuardEvidence) -> dict[str, Any]:
    """``item.to_wire()`` without pydantic's serializer (one dict per guard per request)."""
    if item.details is None:
        return {"guard_name": item.guard_name, "verdict": item.verdict}
    return {"guard_name": item.guard_name, "verdict": item.verdict, "details": item.details}


def _with_signature(signed: bytes, signature: str) -> bytes:
    """Canonical JSON of the receipt from that of its signed body, without re-encoding.

    Sorted by UTF-16 code units, ``signature`` is the top-level member right before
    ``timestamp`` (always present). The last ``,"timestamp":`` in the text is the top-level
    one: only ``verdict`` follows it, whose members are fixed, and no JSON string can hold
    an unescaped quote.
    """
    at = signed.rfind(b',"timestamp":')
    return b"".join((signed[:at], b',"signature":"', signature.encode("ascii"), b'"', signed[at:]))


def receipt_json(receipt: HttpReceipt) -> bytes:
    """The canonical JSON of the signed receipt (a sink line, the header payload)."""
    if receipt._canonical is None:
        receipt._canonical = canonical_json(receipt.to_wire())
    return receipt._canonical


def parse_receipt(obj: Any) -> HttpReceipt:
    """Parse a receipt object (or JSON text) into the model; raise ``ReceiptInvalid``."""
    if isinstance(obj, HttpReceipt):
        return obj
    if isinstance(obj, bytes | str):
        try:
            obj = parse_json(obj)
        except JsonParseError as exc:
            raise ReceiptInvalid(f"receipt is not JSON: {exc}") from None
    try:
        return HttpReceipt.model_validate(obj)
    except ValidationError as exc:
        raise ReceiptInvalid(f"not an HttpReceipt: {exc.error_count()} field error(s)") from None


def verify_receipt(
    receipt: HttpReceipt | dict[str, Any] | bytes | str,
    *,
    trusted_keys: Iterable[PublicKey] | None = None,
) -> HttpReceipt:
    """Check the signature under the receipt's own ``kernel_key``.

    With ``trusted_keys``, the kernel key must also be one of them (otherwise anyone could
    sign a receipt with a key of their own). Returns the parsed receipt.
    """
    parsed = parse_receipt(receipt)
    try:
        kernel_key = PublicKey.from_hex(parsed.kernel_key)
    except KeyFormatError as exc:
        raise ReceiptInvalid(f"kernel_key: {exc}") from None
    if trusted_keys is not None and kernel_key not in set(trusted_keys):
        raise ReceiptInvalid("receipt is signed by a key that is not trusted")
    try:
        kernel_key.verify(canonical_json(parsed.signing_body()), parsed.signature)
    except (SignatureInvalid, KeyFormatError):
        raise ReceiptInvalid("receipt signature does not verify") from None
    return parsed


def encode_receipt_header(receipt: HttpReceipt) -> str:
    """The ``X-Chio-Receipt`` value: base64url (no padding) of ``JCS(receipt)``."""
    return b64url_encode(receipt_json(receipt))


def decode_receipt_header(value: str) -> HttpReceipt:
    """Parse an ``X-Chio-Receipt`` value (does not verify it: see :func:`verify_receipt`)."""
    try:
        raw = b64url_decode(value.strip())
    except ValueError:
        raise ReceiptInvalid("receipt header is not base64url") from None
    return parse_receipt(raw)
