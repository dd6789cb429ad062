"""Core ChioReceipts (PROTOCOL.md 7.2): the reference's vectors, and the HTTP conversion."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import nacl.signing
import pytest
import rfc8785

from chio_middleware.core.core_receipts import (
    CoreReceiptInvalid,
    is_core_receipt,
    parse_core_receipt,
    sign_core_receipt,
    to_core_receipt,
    verify_core_receipt,
)
from chio_middleware.core.crypto import PublicKey, SigningKey
from chio_middleware.core.models import GuardEvidence, Verdict
from chio_middleware.core.receipts import sign_receipt
from tests.vectors import cases, load

VECTORS = "upstream/receipt_v1.json"


@pytest.mark.parametrize("case", cases(VECTORS))
def test_reference_vector(case: dict[str, Any]) -> None:
    result = verify_core_receipt(case["receipt"]).to_dict()
    result.pop("semantic_error")
    assert result == case["expected"]


@pytest.mark.parametrize("case", cases(VECTORS))
def test_reference_vector_with_its_signer_trusted(case: dict[str, Any]) -> None:
    key = PublicKey.from_hex(case["expected"]["signer_key_hex"])
    result = verify_core_receipt(case["receipt"], trusted_keys={key})
    expected = case["expected"]
    assert result.signer_trusted
    assert result.ok == (
        expected["signature_valid"] and expected["parameter_hash_valid"] and expected["receipt_id_valid"]
    )
    assert result.authorized == (result.ok and expected["result"] == "Authorized")


def test_vectors_were_signed_by_the_documented_seed() -> None:
    seed = load(VECTORS)["signing_key_seed_hex"]
    public = SigningKey.from_seed_hex(seed).public_key.hex
    assert {c["expected"]["signer_key_hex"] for c in load(VECTORS)["cases"]} == {public}


def _allow_vector() -> dict[str, Any]:
    return copy.deepcopy(next(c for c in load(VECTORS)["cases"] if c["id"] == "allow_receipt"))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("timestamp",), 1710000201),
        (("tool_name",), "file_write"),
        (("metadata", "surface"), "other"),
        (("evidence", 0, "verdict"), False),
        (("action", "parameters", "path"), "/etc/passwd"),
    ],
)
def test_any_signed_member_changed_breaks_id_and_signature(path: tuple[Any, ...], value: Any) -> None:
    receipt = _allow_vector()["receipt"]
    target = receipt
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    result = verify_core_receipt(receipt)
    assert not result.receipt_id_valid
    assert not result.signature_valid


def test_a_resigned_forgery_is_valid_but_not_trusted() -> None:
    vector = _allow_vector()["receipt"]
    forger = SigningKey.from_seed_hex("22" * 32)
    body = {k: v for k, v in vector.items() if k != "signature"}
    body["kernel_key"] = forger.public_key.hex
    forged = sign_core_receipt(body, forger)
    trusted = {PublicKey.from_hex(vector["kernel_key"])}
    result = verify_core_receipt(forged, trusted_keys=trusted)
    assert result.signature_valid and result.receipt_id_valid
    assert not result.signer_trusted and not result.ok and not result.authorized


@pytest.mark.parametrize(
    "change",
    [
        {"unsigned_extra": 1},
        {"timestamp": "1710000200"},
        {"receipt_kind": "mediated"},
        {"kernel_key": "p256:" + "00" * 33},
        {"algorithm": "p256"},
    ],
)
def test_malformed_core_receipts_are_refused(change: dict[str, Any]) -> None:
    receipt = {**_allow_vector()["receipt"], **change}
    with pytest.raises(CoreReceiptInvalid):
        verify_core_receipt(receipt)


def test_a_bbs_projection_without_bbs_material_never_verifies() -> None:
    vector = _allow_vector()["receipt"]
    key = SigningKey.from_seed_hex(load(VECTORS)["signing_key_seed_hex"])
    body = {k: v for k, v in vector.items() if k not in ("signature", "id")}
    body["bbs_projection_version"] = "chio.bbs-projection.receipt.v1"
    with pytest.raises(CoreReceiptInvalid, match="bbs_projection_version"):
        sign_core_receipt({**body, "id": ""}, key)
    receipt_id = hashlib.sha256(rfc8785.dumps(body)).hexdigest()
    signature = key.sign(rfc8785.dumps({"id": receipt_id, "body": body}))
    result = verify_core_receipt({**body, "id": receipt_id, "signature": signature})
    assert result.receipt_id_valid and not result.signature_valid
    assert result.semantic_error == "bbs_projection_version requires bbs_signature"


def test_core_and_http_receipts_are_told_apart() -> None:
    assert is_core_receipt(_allow_vector()["receipt"])
    http = load("chio_http/http_receipt_v1.json")["cases"][0]
    assert not is_core_receipt(http.get("receipt", http))


# -- the HttpReceipt -> ChioReceipt conversion, checked against the recipe by hand ----------

SEED = "42" * 32


def _http_receipt(**overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "receipt_id": "019b0000-0000-7000-8000-000000000001",
        "request_id": "019b0000-0000-7000-8000-0000000000aa",
        "route_pattern": "/tools/{name}",
        "method": "POST",
        "caller_identity_hash": "c" * 64,
        "verdict": Verdict.allow(),
        "response_status": 200,
        "timestamp": 1764547200,
        "content_hash": "b" * 64,
        "policy_hash": "a" * 64,
        "evidence": [GuardEvidence(guard_name="CapabilityGuard", verdict=True, details="ok")],
        "capability_id": "cap-1",
        "metadata": {"chio_http_status_scope": "final", "chio_log_seq": 1, "chio_log_prev": ""},
    }
    fields.update(overrides)
    return sign_receipt(SigningKey.from_seed_hex(SEED), **fields)


def _sha(value: Any) -> str:
    return hashlib.sha256(rfc8785.dumps(value)).hexdigest()


def _recipe_export() -> bytes:
    """PROTOCOL.md 7.2 applied by hand to ``_http_receipt()``, with independent tools."""
    signer = nacl.signing.SigningKey(bytes.fromhex(SEED))
    kernel_key = bytes(signer.verify_key).hex()
    parameters = {
        "method": "POST",
        "route": "/tools/{name}",
        "request_id": "019b0000-0000-7000-8000-0000000000aa",
    }
    body: dict[str, Any] = {
        "id": "019b0000-0000-7000-8000-000000000001",
        "timestamp": 1764547200,
        "capability_id": "cap-1",
        "tool_server": "http",
        "tool_name": "POST /tools/{name}",
        "action": {"parameters": parameters, "parameter_hash": _sha(parameters)},
        "decision": {"verdict": "allow"},
        "receipt_kind": "mediated_decision",
        "boundary_class": "prevent",
        "tool_origin": "caller_executed",
        "redaction_mode": "none",
        "content_hash": "b" * 64,
        "policy_hash": "a" * 64,
        "evidence": [{"guard_name": "CapabilityGuard", "verdict": True, "details": "ok"}],
        "metadata": {"chio_http_status_scope": "final", "chio_log_seq": 1, "chio_log_prev": ""},
        "trust_level": "mediated",
        "kernel_key": kernel_key,
    }
    body["content_hash"] = _sha(body)  # sha256_hex(JCS(body)), the HTTP id still in it
    pre_id = body.pop("id")
    body["metadata"]["chio_receipt_signing_nonce"] = pre_id
    receipt_id = _sha(body)
    signature = signer.sign(rfc8785.dumps({"id": receipt_id, "body": body})).signature.hex()
    return rfc8785.dumps({**body, "id": receipt_id, "signature": signature})


def test_conversion_is_byte_for_byte_the_recipe() -> None:
    exported = to_core_receipt(_http_receipt(), SigningKey.from_seed_hex(SEED))
    assert rfc8785.dumps(exported) == _recipe_export()


def test_converted_receipts_verify_as_core_receipts() -> None:
    key = SigningKey.from_seed_hex(SEED)
    deny = _http_receipt(
        verdict=Verdict.deny("no grant", "CapabilityGuard", 403),
        response_status=403,
        capability_id=None,
        evidence=[],
        metadata=None,
    )
    for receipt in (_http_receipt(), deny):
        core = to_core_receipt(receipt, key)
        result = verify_core_receipt(core, trusted_keys={key.public_key})
        assert result.ok and result.signature_valid and result.parameter_hash_valid
        assert core["metadata"]["chio_receipt_signing_nonce"] == receipt.id
    core = to_core_receipt(deny, key)
    assert core["decision"] == {"verdict": "deny", "reason": "no grant", "guard": "CapabilityGuard"}
    assert core["capability_id"] == ""
    assert "evidence" not in core
    assert verify_core_receipt(core).result == "Denied"
    assert parse_core_receipt(core).tool_name == "POST /tools/{name}"


def test_conversion_refuses_a_key_that_did_not_sign_the_receipt() -> None:
    with pytest.raises(CoreReceiptInvalid, match="kernel_key"):
        to_core_receipt(_http_receipt(), SigningKey.from_seed_hex("43" * 32))
