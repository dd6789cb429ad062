"""Per-operation cost of the core's hot-path pieces, next to raw PyNaCl, in one run.

Run: ``make bench`` (or ``.venv/bin/python benchmarks/bench_core.py``). Prints microseconds
per operation (best of several repeats) and each cost as a ratio of a raw Ed25519 verify
measured in the same run, so numbers from different machines can be compared.
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable

import nacl.signing
import rfc8785

from chio_middleware.core.canonical import canonical_json, canonical_json_exact
from chio_middleware.core.crypto import SigningKey
from chio_middleware.core.dpop import DpopBinding, create_dpop_proof, verify_dpop_proof
from chio_middleware.core.hashing import request_binding_hash
from chio_middleware.core.models import GuardEvidence, Verdict
from chio_middleware.core.receipts import sign_receipt
from chio_middleware.core.replay import MemoryReplayStore

RECEIPT_LIKE = {
    "id": "0199ca15-0800-7abd-999c-194c0bff2df2",
    "request_id": "0199ca15-0800-7dca-93fe-225b53ef56b4",
    "route_pattern": "/notes/{note_id}",
    "method": "POST",
    "caller_identity_hash": "cf" * 32,
    "verdict": {"verdict": "allow"},
    "evidence": [
        {"guard_name": "CapabilityGuard", "verdict": True, "details": "valid capability"},
        {"guard_name": "DpopGuard", "verdict": True},
    ],
    "response_status": 200,
    "timestamp": 1760032000,
    "content_hash": "76" * 32,
    "policy_hash": "82" * 32,
    "capability_id": "cap-20-dpop",
    "metadata": {"chio_http_status_scope": "final"},
    "kernel_key": "a0" * 32,
}
WITH_FLOATS = {**RECEIPT_LIKE, "metadata": {"latency": 1.25, "ratio": 1e-7, "é": 0.5}}


def per_op_us(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    raw_key = nacl.signing.SigningKey(b"\x22" * 32)
    message = canonical_json(RECEIPT_LIKE)
    raw_sig = raw_key.sign(message).signature
    raw_verify_key = raw_key.verify_key

    agent = SigningKey(b"\x21" * 32)
    kernel = SigningKey(b"\x22" * 32)
    binding = DpopBinding(
        "cap-1", "srv-notes", "write_note", request_binding_hash("POST", "/notes", {}, None)
    )
    proofs = [
        create_dpop_proof(agent, binding=binding, issued_at=1000).to_wire() for _ in range(60000)
    ]
    proof_iter = iter(proofs)
    store = MemoryReplayStore(capacity=100000)

    def dpop_verify() -> None:
        verify_dpop_proof(
            next(proof_iter),
            subject=agent.public_key.hex,
            expected=binding,
            now=1000,
            replay_store=store,
        )

    def receipt_sign() -> None:
        sign_receipt(
            kernel,
            request_id="r",
            route_pattern="/notes",
            method="POST",
            caller_identity_hash="cf" * 32,
            verdict=Verdict.allow(),
            evidence=[GuardEvidence(guard_name="CapabilityGuard", verdict=True)],
            response_status=200,
            timestamp=1000,
            content_hash="76" * 32,
            policy_hash="82" * 32,
        )

    rows = [
        ("raw PyNaCl sign (receipt-sized message)", lambda: raw_key.sign(message), 5000),
        ("raw PyNaCl verify", lambda: raw_verify_key.verify(message, raw_sig), 5000),
        ("canonical_json, fast path (strings/ints)", lambda: canonical_json(RECEIPT_LIKE), 20000),
        (
            "canonical_json, exact path, same value",
            lambda: canonical_json_exact(RECEIPT_LIKE),
            5000,
        ),
        ("canonical_json, value with floats", lambda: canonical_json(WITH_FLOATS), 5000),
        ("rfc8785.dumps (reference), same value", lambda: rfc8785.dumps(RECEIPT_LIKE), 5000),
        (
            "json.dumps sort_keys (lower bound)",
            lambda: json.dumps(RECEIPT_LIKE, sort_keys=True, separators=(",", ":")),
            20000,
        ),
        ("DPoP verification, all 6 steps", dpop_verify, 5000),
        ("HttpReceipt build + sign", receipt_sign, 5000),
    ]
    results = [(name, per_op_us(fn, number)) for name, fn, number in rows]
    baseline = dict(results)["raw PyNaCl verify"]
    print(f"{'operation':45s} {'us/op':>9s} {'x raw verify':>13s}")
    for name, us in results:
        print(f"{name:45s} {us:9.2f} {us / baseline:13.2f}")


if __name__ == "__main__":
    main()
