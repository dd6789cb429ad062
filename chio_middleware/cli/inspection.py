"""``inspect``: decode a Chio header value, say what it is and whether it verifies."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from typing import Any

from ..core.canonical import canonical_json
from ..core.capability import (
    capability_time_status,
    parse_capability,
    verify_capability_signature,
    verify_delegation_chain,
)
from ..core.core_receipts import CoreReceiptInvalid, is_core_receipt, verify_core_receipt
from ..core.crypto import KeyFormatError, PublicKey, SignatureInvalid
from ..core.dpop import DEFAULT_MAX_CLOCK_SKEW, DEFAULT_PROOF_TTL, parse_dpop_proof
from ..core.errors import ChioError
from ..core.nonce import parse_execution_nonce
from ..core.receipts import ReceiptInvalid, parse_receipt, verify_receipt
from ..sinks.jsonl import chain_fields
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    Env,
    format_time,
    parse_public_key,
    read_header_object,
)

__all__ = ["register"]

DESCRIPTION = """\
Decode a Chio value (X-Chio-Capability, X-Chio-DPoP, X-Chio-Execution-Nonce,
X-Chio-Receipt, a line of a receipt log, or a core ChioReceipt of an export; raw JSON or
base64url; a whole "Name: value" header line is fine; - reads stdin) and print what it is,
whether its signature verifies and its times in UTC with the time relative to now.

Signatures: a capability is checked against its issuer, a DPoP proof against its agent key
and a receipt against its kernel_key; an execution nonce does not name its signer, so it is
checked only against --kernel-key. With --kernel-key, a receipt's or nonce's key must be
one of those given. Exit status: 0 verified, 1 a signature does not verify (or is not by an
expected key), 2 the value cannot be decoded.
"""

_HEADER_LINE = re.compile(r"\s*([A-Za-z0-9-]+)\s*:\s*(.*)", re.DOTALL)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``inspect`` command."""
    parser = commands.add_parser(
        "inspect",
        help="decode and check a Chio header value",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("value", metavar="VALUE|-", help="the value, or - to read stdin")
    parser.add_argument(
        "--kernel-key",
        metavar="HEX",
        action="append",
        default=[],
        help="an expected kernel key (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


class _Report:
    """What inspect prints: ordered fields and a verdict on the signature."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.fields: list[tuple[str, str]] = []
        self.signature = "unchecked"
        self.signature_detail = ""

    def add(self, name: str, value: object) -> None:
        self.fields.append((name, str(value)))

    def check(self, verify: Callable[[], str]) -> None:
        """Run ``verify`` (returns what verified it); a ``ValueError`` means invalid."""
        try:
            self.signature_detail = verify()
            self.signature = "valid"
        except (ValueError, ChioError) as exc:
            self.signature = "invalid"
            self.signature_detail = exc.message if isinstance(exc, ChioError) else str(exc)


def _capability(obj: dict[str, Any], report: _Report, now: float) -> None:
    token = parse_capability(obj)

    def verify() -> str:
        verify_capability_signature(token)
        verify_delegation_chain(token)
        links = len(token.delegation_chain or ())
        return f"by the issuer{f', delegation chain of {links} link(s) valid' if links else ''}"

    report.check(verify)
    report.add("id", token.id)
    report.add("issuer", token.issuer)
    report.add("subject", token.subject)
    report.add("issued_at", format_time(token.issued_at, now))
    report.add("expires_at", format_time(token.expires_at, now))
    report.add("time", capability_time_status(token, int(now)).replace("_", " "))
    for grant in token.tool_grants:
        extras = [f"ops={','.join(grant.operations)}"]
        extras += [f"{c.type}={canonical_json(c.value).decode()}" for c in grant.constraints or ()]
        if grant.max_invocations is not None:
            extras.append(f"max_invocations={grant.max_invocations}")
        if grant.dpop_required:
            extras.append("dpop_required")
        report.add("grant", f"{grant.server_id}/{grant.tool_name} {' '.join(extras)}")


def _proof(obj: dict[str, Any], report: _Report, now: float) -> None:
    proof = parse_dpop_proof(obj)
    body = proof.body

    def verify() -> str:
        PublicKey.from_hex(body.agent_key).verify(canonical_json(body.to_wire()), proof.signature)
        return "by its agent_key"

    report.check(verify)
    report.add("schema", body.schema_)
    report.add("agent_key", body.agent_key)
    report.add("capability_id", body.capability_id)
    report.add("tool", f"{body.tool_server}/{body.tool_name}")
    report.add("action_hash", body.action_hash)
    report.add("nonce", body.nonce)
    report.add("issued_at", format_time(body.issued_at, now))
    report.add(
        "fresh_until",
        f"{format_time(body.issued_at + DEFAULT_PROOF_TTL, now)} with the default "
        f"{DEFAULT_PROOF_TTL}s TTL (+{DEFAULT_MAX_CLOCK_SKEW}s skew)",
    )


def _nonce(obj: dict[str, Any], report: _Report, now: float, keys: Sequence[PublicKey]) -> None:
    signed = parse_execution_nonce(obj)
    nonce = signed.nonce
    if keys:

        def verify() -> str:
            message = canonical_json(nonce.to_wire())
            for key in keys:
                try:
                    key.verify(message, signed.signature)
                except (SignatureInvalid, KeyFormatError):
                    continue
                return f"by kernel key {key.hex}"
            raise ValueError("not signed by any --kernel-key")

        report.check(verify)
    else:
        report.signature_detail = "the signer is not named in a nonce: pass --kernel-key"
    bound = nonce.bound_to
    report.add("schema", nonce.schema_)
    report.add("nonce_id", nonce.nonce_id)
    report.add("subject", bound.subject_id)
    report.add("capability_id", bound.capability_id)
    report.add("tool", f"{bound.tool_server}/{bound.tool_name}")
    report.add("parameter_hash", bound.parameter_hash)
    report.add("issued_at", format_time(nonce.issued_at, now))
    report.add("expires_at", format_time(nonce.expires_at, now))
    report.add("time", "valid" if now < nonce.expires_at else "expired")


def _receipt(obj: dict[str, Any], report: _Report, now: float, keys: Sequence[PublicKey]) -> None:
    receipt = parse_receipt(obj)

    def verify() -> str:
        verify_receipt(receipt, trusted_keys=keys or None)
        return "by its kernel_key" + (", an expected key" if keys else "")

    report.check(verify)
    verdict = receipt.verdict
    report.add("id", receipt.id)
    report.add("request_id", receipt.request_id)
    report.add("request", f"{receipt.method} {receipt.route_pattern}")
    report.add("response_status", receipt.response_status)
    if verdict.verdict == "allow":
        report.add("verdict", "allow")
    else:
        report.add("verdict", f"deny by {verdict.guard}: {verdict.reason} ({verdict.http_status})")
    if receipt.capability_id:
        report.add("capability_id", receipt.capability_id)
    report.add("kernel_key", receipt.kernel_key)
    report.add("timestamp", format_time(receipt.timestamp, now))
    for item in receipt.evidence or ():
        outcome = "pass" if item.verdict else "fail"
        report.add(
            "evidence",
            f"{item.guard_name}: {outcome}{f' ({item.details})' if item.details else ''}",
        )
    fields = chain_fields(receipt)
    if fields is not None:
        report.add("log", f"seq {fields[0]}, prev {fields[1] or '(none: first line)'}")


def _core_receipt(
    obj: dict[str, Any], report: _Report, now: float, keys: Sequence[PublicKey]
) -> None:
    result = verify_core_receipt(obj, trusted_keys=keys)

    def verify() -> str:
        if result.semantic_error is not None:
            raise ValueError(f"not signable: {result.semantic_error}")
        if not result.receipt_id_valid:
            raise ValueError("id is not the content address of the receipt body")
        if not result.signature_valid:
            raise ValueError("signature does not verify")
        if keys and not result.signer_trusted:
            raise ValueError("not signed by any --kernel-key")
        return "by its kernel_key, id content-addressed" + (", an expected key" if keys else "")

    report.check(verify)
    decision = obj.get("decision") or {}
    report.add("id", obj["id"])
    report.add("tool", f"{obj['tool_server']}/{obj['tool_name']}")
    report.add("result", result.result)
    if result.decision == "deny":
        report.add("decision", f"deny by {decision.get('guard')}: {decision.get('reason')}")
    else:
        report.add("decision", result.decision)
    report.add("semantics", f"{result.receipt_kind}, {result.boundary_class}, {result.trust_level}")
    report.add("parameter_hash", "valid" if result.parameter_hash_valid else "INVALID")
    if obj.get("capability_id"):
        report.add("capability_id", obj["capability_id"])
    report.add("kernel_key", result.signer_key_hex)
    report.add("timestamp", format_time(obj["timestamp"], now))
    nonce = (obj.get("metadata") or {}).get("chio_receipt_signing_nonce")
    if isinstance(nonce, str):
        report.add("signing_nonce", nonce)
    if not result.parameter_hash_valid:
        report.signature = "invalid"
        report.signature_detail += "; the parameter hash does not match"


_KINDS: dict[str, str] = {
    "capability": "capability token (PROTOCOL.md 2)",
    "dpop_proof": "DPoP proof (PROTOCOL.md 3)",
    "execution_nonce": "execution nonce (PROTOCOL.md 4)",
    "receipt": "HttpReceipt (PROTOCOL.md 7)",
    "core_receipt": "core ChioReceipt (PROTOCOL.md 7.2)",
}


def _kind(obj: dict[str, Any]) -> str:
    if is_core_receipt(obj):
        return "core_receipt"
    if "kernel_key" in obj and "verdict" in obj:
        return "receipt"
    if "issuer" in obj and "scope" in obj:
        return "capability"
    if "body" in obj and "signature" in obj:
        return "dpop_proof"
    if "nonce" in obj and "signature" in obj:
        return "execution_nonce"
    raise CliError("not a Chio capability, DPoP proof, execution nonce or receipt")


def _read_value(value: str, env: Env) -> str:
    text = env.stdin.read() if value == "-" else value
    text = text.strip()
    match = _HEADER_LINE.fullmatch(text)
    if match and not text.startswith("{"):
        text = match.group(2).strip()
    if not text:
        raise CliError("the value is empty")
    return text


def run(args: argparse.Namespace, env: Env) -> int:
    """Decode, classify, verify and print."""
    keys = [parse_public_key(k, "--kernel-key") for k in args.kernel_key]
    obj = read_header_object(_read_value(args.value, env), "the value")
    kind = _kind(obj)
    report = _Report(kind)
    now = env.clock()
    try:
        if kind == "capability":
            _capability(obj, report, now)
        elif kind == "dpop_proof":
            _proof(obj, report, now)
        elif kind == "execution_nonce":
            _nonce(obj, report, now, keys)
        elif kind == "core_receipt":
            _core_receipt(obj, report, now, keys)
        else:
            _receipt(obj, report, now, keys)
    except (ChioError, ReceiptInvalid, CoreReceiptInvalid) as exc:
        message = exc.message if isinstance(exc, ChioError) else str(exc)
        raise CliError(f"malformed {_KINDS[kind]}: {message}") from None
    _print(report, obj, args.json, env)
    return EXIT_FAILED if report.signature == "invalid" else EXIT_OK


def _print(report: _Report, obj: dict[str, Any], as_json: bool, env: Env) -> None:
    if as_json:
        document = {
            "kind": report.kind,
            "signature": report.signature,
            "signature_detail": report.signature_detail,
            "fields": [[name, value] for name, value in report.fields],
            "value": obj,
        }
        env.out(canonical_json(document).decode("utf-8"))
        return
    rows = [("kind", _KINDS[report.kind])]
    detail = f" ({report.signature_detail})" if report.signature_detail else ""
    verdict = "INVALID" if report.signature == "invalid" else report.signature
    rows.append(("signature", f"{verdict}{detail}"))
    rows += report.fields
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        env.out(f"{name + ':':<{width + 1}} {value}")
