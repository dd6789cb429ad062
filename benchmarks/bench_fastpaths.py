"""Each fast path of issue 13 beside the code it replaced, timed in the same run.

Run: ``.venv/bin/python benchmarks/bench_fastpaths.py``. The "before" column runs the
replaced code (kept here verbatim, or the public function that still does it); the
"after" column the code the request path now runs. Per operation, median of 7 repeats.
For the whole request, ``benchmarks/compare.py --before <rev>`` measures the table of two
revisions alternately in one run.
"""

from __future__ import annotations

import binascii
import logging
import statistics
import sys
import timeit
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chio_middleware.core.clock import uuid7
from chio_middleware.core.crypto import sha256_hex
from chio_middleware.core.hashing import (
    binding_json,
    content_hash,
    content_hash_from_binding,
    request_binding_hash,
)
from chio_middleware.core.models import GuardEvidence, Verdict
from chio_middleware.core.receipts import evidence_wire, verdict_wire
from chio_middleware.logs import get_logger

NUMBER = 20000


def per_op_us(fn: Callable[[], object], number: int = NUMBER) -> float:
    return statistics.median(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def old_uuid7_format(value: int) -> str:
    return str(uuid.UUID(int=value))


def main() -> None:
    rows: list[tuple[str, float, float]] = []
    value = uuid.UUID(uuid7(1_760_000_000_000)).int
    h = f"{value:032x}"
    rows.append((
        "uuid7 string form",
        per_op_us(lambda: old_uuid7_format(value)),
        per_op_us(lambda: f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"),
    ))
    evidence = [
        GuardEvidence(guard_name="CapabilityGuard", verdict=True, details="valid capability token presented"),
        GuardEvidence(guard_name="RateLimitGuard", verdict=True, details="within limit"),
        GuardEvidence(guard_name="DpopGuard", verdict=True),
    ]
    verdict = Verdict.allow()
    rows.append((
        "receipt verdict + 3 evidence wire forms",
        per_op_us(lambda: (verdict.to_wire(), [e.to_wire() for e in evidence])),
        per_op_us(lambda: (verdict_wire(verdict), [evidence_wire(e) for e in evidence])),
    ))
    constant = GuardEvidence(guard_name="CapabilityGuard", verdict=True, details="valid capability token presented")
    rows.append((
        "constant evidence (capability, DPoP) per request",
        per_op_us(lambda: (
            GuardEvidence(guard_name="CapabilityGuard", verdict=True, details="valid capability token presented"),
            GuardEvidence(guard_name="DpopGuard", verdict=True),
        )),
        per_op_us(lambda: (constant, constant)),
    ))
    args = ("POST", "/notes", {}, "ab" * 32)
    rows.append((
        "binding hash + content hash",
        per_op_us(lambda: (request_binding_hash(*args), content_hash(*args, "/notes"))),
        per_op_us(lambda: (lambda b: (sha256_hex(b), content_hash_from_binding(b, "/notes")))(binding_json(*args))),
    ))
    logging.getLogger("chio_middleware").setLevel(logging.WARNING)
    log = get_logger()
    std = logging.getLogger("chio_middleware")
    context = {
        "verdict": "allow", "status": 201, "code": None, "guard": None, "method": "POST",
        "route": "/notes", "capability_id": "cap-1", "receipt_id": "r", "request_id": "q",
    }
    rows.append((
        "decision log line, level WARNING",
        per_op_us(lambda: log.info("chio_decision", tool="srv-notes/write_note", **context)),
        per_op_us(lambda: std.isEnabledFor(logging.DEBUG)),
    ))
    receipt_like = {
        "id": uuid7(), "request_id": uuid7(), "route_pattern": "/notes", "method": "POST",
        "caller_identity_hash": "cf" * 32, "verdict": {"verdict": "allow"},
        "evidence": [evidence_wire(e) for e in evidence], "response_status": 201,
        "timestamp": 1760000000, "content_hash": "76" * 32, "policy_hash": "82" * 32,
        "capability_id": "cap-1", "kernel_key": "a0" * 32,
        "metadata": {"chio_http_status_scope": "final", "chio_tool_name": "write_note",
                     "chio_tool_server": "srv-notes"},
    }
    from chio_middleware.core.canonical import canonical_json

    try:
        import orjson
    except ImportError:
        orjson = None
    if orjson is not None:
        assert orjson.dumps(receipt_like, option=orjson.OPT_SORT_KEYS) == canonical_json(receipt_like)
        rows.append((
            "receipt canonical JSON: stdlib C encoder -> orjson",
            per_op_us(lambda: canonical_json(receipt_like)),
            per_op_us(lambda: orjson.dumps(receipt_like, option=orjson.OPT_SORT_KEYS)),
        ))
    rows.extend(_session_two_rows(receipt_like))
    print(f"{'fast path':50s} {'before us':>10s} {'after us':>9s} {'saved us':>9s}")
    for name, before, after in rows:
        print(f"{name:50s} {before:10.2f} {after:9.2f} {before - after:9.2f}")


def old_b64url_decode(text: str) -> bytes:
    """base64url decoding as it was: a regex over the text, then a re-encoding to refuse
    unused bits."""
    import base64
    import re

    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ValueError("not base64url")
    stripped = text.rstrip("=")
    if len(stripped) % 4 == 1:
        raise ValueError("impossible base64url length")
    if "=" in text and len(text) % 4:
        raise ValueError("bad base64url padding")
    try:
        data = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != stripped:
        raise ValueError("non-canonical base64url (unused bits set)")
    return data


_STD_TO_URL = bytes.maketrans(b"+/", b"-_")


def old_b64url_encode(data: bytes) -> str:
    """The encoder before the third pass: ``translate`` looks up every byte."""
    return binascii.b2a_base64(data, newline=False).translate(_STD_TO_URL).rstrip(b"=").decode("ascii")


def _session_two_rows(receipt_like: dict[str, object]) -> list[tuple[str, float, float]]:
    """The fast paths of the second pass (receipt model, proof bytes, base64url, token
    restrictions)."""
    from chio_middleware import _speedups
    from chio_middleware.core import receipts
    from chio_middleware.core.canonical import canonical_json, canonical_json_of_fast
    from chio_middleware.core.dpop import DpopBinding, create_dpop_proof, parse_dpop_proof
    from chio_middleware.core.encoding import b64url_decode, b64url_encode, encode_header_object
    from chio_middleware.core.models import HttpReceipt
    from chio_middleware.core.restrictions import check_token_restrictions
    from tests.middleware.harness import AGENT, capability

    _speedups.install()
    rows: list[tuple[str, float, float]] = []
    fields = {**receipt_like, "signature": "00" * 64, "session_id": None}
    fields["verdict"] = Verdict.allow()
    fields["evidence"] = None
    values = [fields[name] for name in HttpReceipt.model_fields]
    rows.append((
        "receipt model: model_construct -> four slots",
        per_op_us(lambda: HttpReceipt.model_construct(**fields)),  # type: ignore[arg-type]
        per_op_us(lambda: receipts._construct(*values)),
    ))
    proof = create_dpop_proof(
        AGENT, binding=DpopBinding("cap-1", "srv-notes", "write_note", "ab" * 32), issued_at=1
    )
    wire = proof.to_wire()
    parsed = parse_dpop_proof(wire)
    rows.append((
        "DPoP signed bytes: serializer -> validated body",
        per_op_us(lambda: canonical_json(parsed.body.to_wire())),
        per_op_us(lambda: canonical_json_of_fast(wire["body"])),
    ))
    header = encode_header_object(wire)
    assert old_b64url_decode(header) == b64url_decode(header)
    rows.append((
        "base64url decode of a proof header (646 chars)",
        per_op_us(lambda: old_b64url_decode(header)),
        per_op_us(lambda: b64url_decode(header)),
    ))
    receipt_bytes = canonical_json({**receipt_like, "signature": "00" * 64})
    assert old_b64url_encode(receipt_bytes) == b64url_encode(receipt_bytes)
    rows.append((
        f"base64url encode of a receipt ({len(receipt_bytes)} bytes)",
        per_op_us(lambda: old_b64url_encode(receipt_bytes)),
        per_op_us(lambda: b64url_encode(receipt_bytes)),
    ))
    token = capability()
    held = {id(token): token}
    rows.append((
        "token restriction check per request -> per token",
        per_op_us(lambda: check_token_restrictions(token)),
        per_op_us(lambda: held.get(id(token)) is token),
    ))
    return rows


if __name__ == "__main__":
    main()
