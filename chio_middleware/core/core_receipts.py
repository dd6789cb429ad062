"""Core ChioReceipts (PROTOCOL.md 7.2): verify them, and convert HttpReceipts into them.

A core receipt is the reference kernel's ``ChioReceipt`` (chio-core-types): a tool call's
record, with a content-addressed ``id`` and a signature over ``JCS({"id", "body"})``, where
``body`` is the receipt without ``id``, ``signature``, ``algorithm`` and ``bbs_signature``
and ``id = sha256_hex(JCS(body))``. It differs from an HttpReceipt (PROTOCOL.md 7), whose
id is a UUIDv7 and whose signature covers the receipt itself.

:func:`verify_core_receipt` answers as the reference's binding helper does: the signature
counts only when the receipt's semantics are signable (the kind, boundary, observation
outcome, decision and trust level agree) and its id is the content address; an
authorisation needs, besides, a valid parameter hash and a trusted signer.
:func:`to_core_receipt` is chio-http-core's ``to_chio_receipt_with_keypair``: the HTTP
request becomes the tool call ``http`` / ``"<METHOD> <route>"``, the HttpReceipt id becomes
the signing nonce, and the result is signed with the middleware's own key.

Stricter than the reference in one way: a member the reference does not define is refused
(the reference drops it silently, so it would sit beside the receipt unsigned).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from .canonical import CanonicalJsonError, JsonParseError, canonical_json, parse_json
from .crypto import KeyFormatError, PublicKey, SignatureInvalid, SigningKey, sha256_hex
from .models import U64, HttpReceipt

__all__ = [
    "HTTP_TOOL_SERVER",
    "SIGNING_NONCE_KEY",
    "CoreReceiptInvalid",
    "CoreReceiptVerification",
    "core_receipt_id",
    "core_receipt_json",
    "is_core_receipt",
    "parse_core_receipt",
    "semantic_error",
    "sign_core_receipt",
    "to_core_receipt",
    "verify_core_receipt",
]

#: The tool server every converted HttpReceipt names.
HTTP_TOOL_SERVER = "http"
#: The metadata member that binds the pre-signing id into the content address.
SIGNING_NONCE_KEY = "chio_receipt_signing_nonce"

ReceiptKind = Literal["mediated_decision", "trace_observation", "advisory_evaluation"]
BoundaryClass = Literal["prevent", "detect_only", "advisory_only", "cannot_see"]
ObservationOutcome = Literal["observed", "evaluated", "dropped"]
ToolOrigin = Literal[
    "caller_executed", "host_executed_provider_reported", "host_executed_unmediated"
]
RedactionMode = Literal["none", "summary", "redacted"]
TrustLevel = Literal["mediated", "verified", "advisory"]

_EXPECTED_TRUST: dict[str, str] = {
    "mediated_decision": "mediated",
    "trace_observation": "verified",
    "advisory_evaluation": "advisory",
}


class CoreReceiptInvalid(ValueError):
    """A value that is not a core ChioReceipt, or a receipt that cannot be signed."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")


class _Action(_Model):
    parameters: JsonValue
    parameter_hash: str


class _Decision(_Model):
    verdict: Literal["allow", "deny", "cancelled", "incomplete"]
    reason: str | None = None
    guard: str | None = None


class _Evidence(_Model):
    guard_name: str
    verdict: bool
    details: str | None = None


class _Actor(_Model):
    actor_id: str
    actor_kind: str | None = None


class _CoreReceipt(_Model):
    """The reference's ``ChioReceipt`` members (chio-core-types ``receipt::body``)."""

    id: str
    timestamp: U64
    capability_id: str
    tool_server: str
    tool_name: str
    action: _Action
    decision: _Decision | None = None
    receipt_kind: ReceiptKind
    boundary_class: BoundaryClass
    observation_outcome: ObservationOutcome | None = None
    tool_origin: ToolOrigin
    redaction_mode: RedactionMode
    actor_chain: list[_Actor] = Field(default_factory=list)
    content_hash: str
    policy_hash: str
    evidence: list[_Evidence] = Field(default_factory=list)
    metadata: JsonValue = None
    trust_level: TrustLevel
    tenant_id: str | None = None
    bbs_projection_version: str | None = None
    kernel_key: str
    bbs_signature: dict[str, JsonValue] | None = None
    algorithm: str | None = None
    signature: str


@dataclass(frozen=True, slots=True)
class CoreReceiptVerification:
    """What a verifier concludes about a core receipt (the reference binding's fields)."""

    signature_valid: bool
    parameter_hash_valid: bool
    receipt_id_valid: bool
    decision: str
    receipt_kind: str
    boundary_class: str
    trust_level: str
    result: str
    authorized: bool
    signer_key_hex: str
    signer_trusted: bool
    ok: bool
    #: Why the receipt's semantics are not signable, or ``None`` when they are.
    semantic_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON object."""
        return asdict(self)


def is_core_receipt(obj: Mapping[str, Any]) -> bool:
    """Whether a JSON object has the shape of a core receipt rather than an HttpReceipt."""
    return "action" in obj and "tool_server" in obj and "kernel_key" in obj and "verdict" not in obj


def parse_core_receipt(obj: Any) -> _CoreReceipt:
    """Parse a core receipt (object or JSON text); raise :class:`CoreReceiptInvalid`."""
    if isinstance(obj, bytes | str):
        try:
            obj = parse_json(obj)
        except JsonParseError as exc:
            raise CoreReceiptInvalid(f"core receipt is not JSON: {exc}") from None
    try:
        receipt = _CoreReceipt.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "receipt"
        raise CoreReceiptInvalid(
            f"not a core ChioReceipt: {exc.error_count()} field error(s), first at {where}: "
            f"{first['msg']}"
        ) from None
    try:
        PublicKey.from_hex(receipt.kernel_key)
    except KeyFormatError as exc:
        raise CoreReceiptInvalid(f"kernel_key: {exc}") from None
    if receipt.algorithm not in (None, "ed25519"):
        raise CoreReceiptInvalid(f"signature algorithm {receipt.algorithm!r} is not supported")
    if receipt.bbs_signature is not None:
        raise CoreReceiptInvalid("receipts with BBS selective-disclosure material: not supported")
    return receipt


def _id_input(receipt: _CoreReceipt) -> dict[str, Any]:
    """``ChioReceiptIdInput`` as the reference serialises it (absent and empty omitted)."""
    body: dict[str, Any] = {
        "timestamp": receipt.timestamp,
        "capability_id": receipt.capability_id,
        "tool_server": receipt.tool_server,
        "tool_name": receipt.tool_name,
        "action": {
            "parameters": receipt.action.parameters,
            "parameter_hash": receipt.action.parameter_hash,
        },
        "receipt_kind": receipt.receipt_kind,
        "boundary_class": receipt.boundary_class,
        "tool_origin": receipt.tool_origin,
        "redaction_mode": receipt.redaction_mode,
        "content_hash": receipt.content_hash,
        "policy_hash": receipt.policy_hash,
        "trust_level": receipt.trust_level,
        "kernel_key": PublicKey.from_hex(receipt.kernel_key).hex,
    }
    if receipt.decision is not None:
        body["decision"] = receipt.decision.model_dump(exclude_none=True)
    if receipt.observation_outcome is not None:
        body["observation_outcome"] = receipt.observation_outcome
    if receipt.actor_chain:
        body["actor_chain"] = [actor.model_dump(exclude_none=True) for actor in receipt.actor_chain]
    if receipt.evidence:
        body["evidence"] = [item.model_dump(exclude_none=True) for item in receipt.evidence]
    if receipt.metadata is not None:
        body["metadata"] = receipt.metadata
    if receipt.tenant_id is not None:
        body["tenant_id"] = receipt.tenant_id
    if receipt.bbs_projection_version is not None:
        body["bbs_projection_version"] = receipt.bbs_projection_version
    return body


def core_receipt_id(body: Mapping[str, Any]) -> str:
    """The content address of a receipt body: ``sha256_hex(JCS(body without "id"))``."""
    return sha256_hex(canonical_json({k: v for k, v in body.items() if k != "id"}))


def semantic_error(
    receipt_kind: str,
    boundary_class: str,
    observation_outcome: str | None,
    decision: Mapping[str, Any] | None,
    trust_level: str,
) -> str | None:
    """Why these semantics cannot be signed (the reference's rules), or ``None``."""
    if boundary_class == "cannot_see":
        return f"{receipt_kind} receipts cannot use cannot_see as a signed runtime boundary"
    if receipt_kind == "mediated_decision":
        if boundary_class != "prevent" or observation_outcome is not None or decision is None:
            return (
                "mediated_decision receipts require a prevent boundary, no observation "
                "outcome, and a decision"
            )
    else:
        boundary = "detect_only" if receipt_kind == "trace_observation" else "advisory_only"
        if decision is not None:
            return f"{receipt_kind} receipts must not carry an authorization decision"
        if boundary_class != boundary or observation_outcome is None:
            return f"{receipt_kind} receipts require {boundary} boundary and observation outcome"
    expected = _EXPECTED_TRUST[receipt_kind]
    if trust_level != expected:
        return f"{receipt_kind} receipts require trust_level {expected}"
    return None


def _result_label(kind: str, boundary: str, decision: str) -> str:
    """The reference binding's label (it does not look at the observation outcome)."""
    if kind == "mediated_decision" and boundary == "prevent" and decision == "allow":
        return "Authorized"
    if kind == "trace_observation":
        return "Observed"
    if kind == "advisory_evaluation":
        return "Advisory"
    labels = {"allow": "Allowed", "deny": "Denied", "cancelled": "Cancelled"}
    return labels.get(decision, "Incomplete" if decision == "incomplete" else "Invalid")


def verify_core_receipt(
    obj: Any, *, trusted_keys: Collection[PublicKey] = ()
) -> CoreReceiptVerification:
    """Verify a core receipt; raise :class:`CoreReceiptInvalid` only when it does not parse.

    ``signature_valid`` requires signable semantics, the content-addressed id and a valid
    Ed25519 signature by ``kernel_key``; ``authorized`` (and ``ok``) also require the
    parameter hash and a signer among ``trusted_keys``.
    """
    receipt = parse_core_receipt(obj)
    body = _id_input(receipt)
    receipt_id_valid = sha256_hex(canonical_json(body)) == receipt.id
    decision = receipt.decision.model_dump(exclude_none=True) if receipt.decision else None
    problem = semantic_error(
        receipt.receipt_kind,
        receipt.boundary_class,
        receipt.observation_outcome,
        decision,
        receipt.trust_level,
    )
    if problem is None and receipt.bbs_projection_version is not None:
        problem = "bbs_projection_version requires bbs_signature"  # which is not supported
    kernel_key = PublicKey.from_hex(receipt.kernel_key)
    signature_valid = False
    if problem is None and receipt_id_valid:
        try:
            kernel_key.verify(canonical_json({"id": receipt.id, "body": body}), receipt.signature)
            signature_valid = True
        except (SignatureInvalid, KeyFormatError):
            signature_valid = False
    try:
        expected_hash = sha256_hex(canonical_json(receipt.action.parameters))
    except CanonicalJsonError:
        expected_hash = ""
    parameter_hash_valid = expected_hash == receipt.action.parameter_hash
    signer_trusted = kernel_key in set(trusted_keys)
    decision_kind = receipt.decision.verdict if receipt.decision is not None else "none"
    semantic_authorized = (
        receipt.receipt_kind == "mediated_decision"
        and receipt.boundary_class == "prevent"
        and receipt.observation_outcome is None
        and decision_kind == "allow"
    )
    ok = signature_valid and parameter_hash_valid and receipt_id_valid and signer_trusted
    return CoreReceiptVerification(
        signature_valid=signature_valid,
        parameter_hash_valid=parameter_hash_valid,
        receipt_id_valid=receipt_id_valid,
        decision=decision_kind,
        receipt_kind=receipt.receipt_kind,
        boundary_class=receipt.boundary_class,
        trust_level=receipt.trust_level,
        result=_result_label(receipt.receipt_kind, receipt.boundary_class, decision_kind),
        authorized=semantic_authorized and ok,
        signer_key_hex=kernel_key.hex,
        signer_trusted=signer_trusted,
        ok=ok,
        semantic_error=problem,
    )


def sign_core_receipt(body: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """Sign a receipt body as the reference's ``ChioReceipt::sign`` does.

    ``body`` holds every member but ``signature``; its ``id`` is the pre-signing id. In
    order: the semantics must be signable, ``kernel_key`` must be ``key``'s, the trimmed
    pre-signing id (when not empty) is bound as ``metadata.chio_receipt_signing_nonce``
    (a metadata value that is not an object is kept under ``original_metadata``), then the
    id becomes the content address and the signature covers ``JCS({"id", "body"})``.
    """
    problem = semantic_error(
        str(body.get("receipt_kind")),
        str(body.get("boundary_class")),
        body.get("observation_outcome"),
        body.get("decision"),
        str(body.get("trust_level")),
    )
    if problem is None and body.get("bbs_projection_version") is not None:
        problem = "bbs_projection_version requires bbs_signature"  # which is not supported
    if problem is not None:
        raise CoreReceiptInvalid(f"cannot sign: {problem}")
    try:
        kernel_key = PublicKey.from_hex(str(body.get("kernel_key")))
    except KeyFormatError as exc:
        raise CoreReceiptInvalid(f"kernel_key: {exc}") from None
    if kernel_key != key.public_key:
        raise CoreReceiptInvalid(
            f"the signing key ({key.public_key.hex}) is not the receipt's kernel_key "
            f"({kernel_key.hex})"
        )
    signing_body = {k: v for k, v in body.items() if k != "id"}
    nonce = str(body.get("id", "")).strip()
    if nonce:
        metadata = signing_body.get("metadata")
        if metadata is None:
            bound: dict[str, Any] = {}
        elif isinstance(metadata, Mapping):
            bound = dict(metadata)
        else:
            bound = {"original_metadata": metadata}
        bound[SIGNING_NONCE_KEY] = nonce
        signing_body["metadata"] = bound
    receipt_id = sha256_hex(canonical_json(signing_body))
    signature = key.sign(canonical_json({"id": receipt_id, "body": signing_body}))
    return {**signing_body, "id": receipt_id, "signature": signature}


def _decision(receipt: HttpReceipt) -> dict[str, Any]:
    verdict = receipt.verdict
    if verdict.verdict == "allow":
        return {"verdict": "allow"}
    return {"verdict": "deny", "reason": verdict.reason or "", "guard": verdict.guard or ""}


def to_core_receipt(receipt: HttpReceipt, key: SigningKey) -> dict[str, Any]:
    """Convert an HttpReceipt into a signed core receipt (PROTOCOL.md 7.2).

    chio-http-core's ``to_chio_receipt_with_keypair``: ``key`` must be the key that signed
    the HttpReceipt (its ``kernel_key``), as the reference requires.
    """
    wire = receipt.to_wire()
    parameters = {
        "method": receipt.method,
        "route": receipt.route_pattern,
        "request_id": receipt.request_id,
    }
    body: dict[str, Any] = {
        "id": receipt.id,
        "timestamp": receipt.timestamp,
        "capability_id": receipt.capability_id or "",
        "tool_server": HTTP_TOOL_SERVER,
        "tool_name": f"{receipt.method} {receipt.route_pattern}",
        "action": {
            "parameters": parameters,
            "parameter_hash": sha256_hex(canonical_json(parameters)),
        },
        "decision": _decision(receipt),
        "receipt_kind": "mediated_decision",
        "boundary_class": "prevent",
        "tool_origin": "caller_executed",
        "redaction_mode": "none",
        "content_hash": receipt.content_hash,
        "policy_hash": receipt.policy_hash,
        "trust_level": "mediated",
        "kernel_key": receipt.kernel_key,
    }
    if "evidence" in wire:
        body["evidence"] = wire["evidence"]
    if "metadata" in wire:
        body["metadata"] = wire["metadata"]
    try:
        body["kernel_key"] = PublicKey.from_hex(receipt.kernel_key).hex
    except KeyFormatError as exc:
        raise CoreReceiptInvalid(f"kernel_key: {exc}") from None
    body["content_hash"] = sha256_hex(canonical_json(body))
    return sign_core_receipt(body, key)


def core_receipt_json(receipt: Mapping[str, Any]) -> bytes:
    """The canonical JSON of a signed core receipt (one line of an export)."""
    return canonical_json(dict(receipt))
