"""Signed HttpReceipts (PROTOCOL.md 7): build, sign, verify, header encoding."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import is_, itemgetter
from typing import Any

from pydantic import ValidationError

from .canonical import (
    JsonParseError,
    canonical_json,
    canonical_json_of_fast,
    is_fast_domain,
    parse_json,
)
from .clock import uuid7
from .crypto import KeyFormatError, PublicKey, SignatureInvalid, SigningKey
from .encoding import b64url_decode, b64url_encode
from .models import GuardEvidence, HttpReceipt, Verdict, cached_bytes, keep_bytes

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
    # The signed body is built in its wire form directly: absent members left out, the
    # verdict and evidence as plain dicts (no pydantic serializer on the hot path).
    body: dict[str, Any] = {
        "id": receipt_id or uuid7(),
        "request_id": request_id,
        "route_pattern": route_pattern,
        "method": method.upper(),
        "caller_identity_hash": caller_identity_hash,
        "verdict": verdict_wire(verdict),
        "response_status": response_status,
        "timestamp": timestamp,
        "content_hash": content_hash,
        "policy_hash": policy_hash,
        "kernel_key": key.public_key.hex,
    }
    if session_id is not None:
        body["session_id"] = session_id
    if evidence:
        body["evidence"] = [evidence_wire(item) for item in evidence]
    if capability_id is not None:
        body["capability_id"] = capability_id
    if metadata:
        body["metadata"] = metadata
    signed = _canonical_body(body)
    signature = key.sign(signed)
    # Every value was built here from typed inputs: no second validation on the hot path.
    receipt = _construct(
        body["id"],
        request_id,
        route_pattern,
        body["method"],
        caller_identity_hash,
        session_id,
        verdict,
        list(evidence) or None,
        response_status,
        timestamp,
        content_hash,
        policy_hash,
        capability_id,
        metadata or None,
        body["kernel_key"],
        signature,
        canonical=_with_signature(signed, signature),
    )
    return receipt


#: The members of a receipt's signed body that are strings (``session_id`` and
#: ``capability_id`` when present) and integers: checked by type, so that the body can take
#: the fast encoder without the recursive domain check.
_STRING_MEMBERS = (
    "id",
    "request_id",
    "route_pattern",
    "method",
    "caller_identity_hash",
    "content_hash",
    "policy_hash",
    "kernel_key",
)
#: Those members' values, in one C call, and their types compared by identity, as
#: ``type(value) is str`` would (a generator over them was a tenth of the receipt's work).
_string_members = itemgetter(*_STRING_MEMBERS)
_ALL_STR = (str,) * len(_STRING_MEMBERS)


def _canonical_body(body: dict[str, Any]) -> bytes:
    """``canonical_json(body)`` of a receipt body built by :func:`sign_receipt`.

    The members built here have known types; what came from elsewhere (the metadata, the
    evidence details, the optional ids) is checked for the fast domain, and anything else
    takes the exact encoder, as :func:`canonical_json` would.
    """
    fast = (
        all(map(is_, map(type, _string_members(body)), _ALL_STR))
        and type(body["response_status"]) is int
        and type(body["timestamp"]) is int
        and type(body.get("session_id", "")) is str
        and type(body.get("capability_id", "")) is str
        and is_fast_domain(body["verdict"])
        and all(
            type(item["guard_name"]) is str
            and type(item["verdict"]) is bool
            and type(item.get("details", "")) is str
            for item in body.get("evidence", ())
        )
        and is_fast_domain(body.get("metadata"))
    )
    return canonical_json_of_fast(body) if fast else canonical_json(body)


_RECEIPT_FIELDS = tuple(HttpReceipt.model_fields)
_RECEIPT_FIELDS_SET = frozenset(_RECEIPT_FIELDS)


def _construct(*values: Any, canonical: bytes | None = None) -> HttpReceipt:
    """``HttpReceipt.model_construct`` of every field, in declaration order, without its
    per-call work (defaults, aliases, private attributes: a few microseconds a receipt).

    Sets the four slots pydantic's own ``model_construct`` sets; ``tests/test_perf_paths.py``
    holds the result equal to ``model_construct``'s, slot by slot.
    """
    receipt = HttpReceipt.__new__(HttpReceipt)
    setattr_ = object.__setattr__
    members = dict(zip(_RECEIPT_FIELDS, values, strict=True))
    setattr_(receipt, "__dict__", members)
    setattr_(receipt, "__pydantic_fields_set__", set(_RECEIPT_FIELDS_SET))
    setattr_(receipt, "__pydantic_extra__", None)
    cached = None if canonical is None else (members, canonical)
    setattr_(receipt, "__pydantic_private__", {"_canonical": cached})
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
    """The canonical JSON of the signed receipt (a sink line, the header payload).

    Kept with the member dict it encodes: a copy (a new member dict) is encoded afresh.
    """
    encoded = cached_bytes(receipt, "_canonical", receipt.__dict__)
    if encoded is None:
        encoded = keep_bytes(
            receipt, "_canonical", receipt.__dict__, canonical_json(receipt.to_wire())
        )
    return encoded


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
