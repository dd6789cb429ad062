"""``inspect``: what a header value is, whether it verifies, its times."""

from __future__ import annotations

import json

import pytest

from chio_middleware.core.canonical import canonical_json
from chio_middleware.core.capability import sign_capability
from chio_middleware.core.dpop import DpopBinding, create_dpop_proof
from chio_middleware.core.encoding import encode_header_object
from chio_middleware.core.models import NonceBinding
from chio_middleware.core.nonce import mint_execution_nonce
from chio_middleware.core.receipts import encode_receipt_header, receipt_json
from tests.cli.conftest import run, run_script
from tests.sinks.logmaker import AGENT, BASE_TIME, KERNEL, request_signer

TOKEN = sign_capability(
    KERNEL,
    {
        "id": "cap-9",
        "issuer": KERNEL.public_key.hex,
        "subject": AGENT.public_key.hex,
        "scope": {
            "grants": [
                {
                    "server_id": "notes",
                    "tool_name": "read",
                    "operations": ["invoke"],
                    "constraints": [{"type": "path_prefix", "value": "/workspace/"}],
                    "dpop_required": True,
                }
            ]
        },
        "issued_at": BASE_TIME,
        "expires_at": BASE_TIME + 3600,
    },
).to_wire()
PROOF = create_dpop_proof(
    AGENT,
    binding=DpopBinding("cap-9", "notes", "read", "ab" * 32),
    issued_at=BASE_TIME + 290,
    nonce="n-1",
).to_wire()
NONCE = mint_execution_nonce(
    KERNEL,
    binding=NonceBinding(
        subject_id=AGENT.public_key.hex,
        capability_id="cap-9",
        tool_server="notes",
        tool_name="read",
        parameter_hash="cd" * 32,
    ),
    now=BASE_TIME + 290,
).to_wire()
RECEIPT = request_signer(3)({"chio_log_seq": 4, "chio_log_prev": "ef" * 32})


def fields(out: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        name, _, value = line.partition(":")
        found.setdefault(name, []).append(value.strip())
    return found


def test_a_capability_in_raw_json() -> None:
    result = run("inspect", canonical_json(TOKEN).decode())
    assert result.status == 0
    info = fields(result.out)
    assert info["kind"] == ["capability token (PROTOCOL.md 2)"]
    assert info["signature"] == ["valid (by the issuer)"]
    assert info["issued_at"] == ["2026-01-01T00:00:00Z (5m ago)"]
    assert info["expires_at"] == ["2026-01-01T01:00:00Z (in 55m)"]
    assert info["time"] == ["valid"]
    assert info["grant"] == ['notes/read ops=invoke path_prefix="/workspace/" dpop_required']


def test_an_expired_capability_from_a_header_line_in_base64url() -> None:
    line = f"X-Chio-Capability: {encode_header_object(TOKEN)}"
    result = run("inspect", line, now=BASE_TIME + 7200 + 61)
    assert result.status == 0  # the signature is what the exit status is about
    info = fields(result.out)
    assert info["time"] == ["expired"]
    assert info["expires_at"] == ["2026-01-01T01:00:00Z (1h 1m ago)"]


def test_a_tampered_capability_does_not_verify() -> None:
    tampered = {**TOKEN, "expires_at": TOKEN["expires_at"] + 1}
    result = run("inspect", json.dumps(tampered))
    assert result.status == 1
    assert fields(result.out)["signature"] == ["INVALID (capability signature verification failed)"]


def test_a_dpop_proof() -> None:
    result = run("inspect", encode_header_object(PROOF))
    assert result.status == 0
    info = fields(result.out)
    assert info["kind"] == ["DPoP proof (PROTOCOL.md 3)"]
    assert info["signature"] == ["valid (by its agent_key)"]
    assert info["tool"] == ["notes/read"]
    assert info["issued_at"] == ["2026-01-01T00:04:50Z (10s ago)"]
    assert info["fresh_until"] == [
        "2026-01-01T00:09:50Z (in 4m 50s) with the default 300s TTL (+30s skew)"
    ]
    forged = {**PROOF, "body": {**PROOF["body"], "tool_name": "write"}}
    assert run("inspect", json.dumps(forged)).status == 1


def test_an_execution_nonce_is_checked_only_against_given_keys() -> None:
    value = encode_header_object(NONCE)
    result = run("inspect", value)
    assert result.status == 0
    info = fields(result.out)
    assert info["kind"] == ["execution nonce (PROTOCOL.md 4)"]
    assert info["signature"] == [
        "unchecked (the signer is not named in a nonce: pass --kernel-key)"
    ]
    assert info["expires_at"] == ["2026-01-01T00:05:20Z (in 20s)"]
    result = run("inspect", value, "--kernel-key", KERNEL.public_key.hex)
    assert fields(result.out)["signature"] == [f"valid (by kernel key {KERNEL.public_key.hex})"]
    result = run("inspect", value, "--kernel-key", AGENT.public_key.hex)
    assert result.status == 1
    assert fields(result.out)["signature"] == ["INVALID (not signed by any --kernel-key)"]


def test_a_receipt_header_and_a_log_line() -> None:
    result = run("inspect", f"X-Chio-Receipt: {encode_receipt_header(RECEIPT)}")
    assert result.status == 0
    info = fields(result.out)
    assert info["kind"] == ["HttpReceipt (PROTOCOL.md 7)"]
    assert info["verdict"] == ["deny by PathGuard: path outside prefix (403)"]
    assert info["request"] == ["GET /notes/{id}"]
    assert info["timestamp"] == ["2026-01-01T00:00:03Z (4m 57s ago)"]
    assert info["log"] == [f"seq 4, prev {'ef' * 32}"]
    result = run(
        "inspect", "-", "--kernel-key", AGENT.public_key.hex, stdin=receipt_json(RECEIPT).decode()
    )
    assert result.status == 1
    assert fields(result.out)["signature"] == [
        "INVALID (receipt is signed by a key that is not trusted)"
    ]


def test_json_output_of_the_installed_script() -> None:
    result = run_script("inspect", "--json", encode_receipt_header(RECEIPT))
    assert result.status == 0
    document = json.loads(result.out)
    assert (document["kind"], document["signature"]) == ("receipt", "valid")
    assert document["value"] == RECEIPT.to_wire()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("%%%", "the value is neither JSON nor base64url JSON"),
        ("{not json", "the value does not hold valid JSON"),
        ("[1, 2]", "the value is neither JSON nor base64url JSON"),
        ('{"hello": "world"}', "not a Chio capability, DPoP proof, execution nonce or receipt"),
        (
            '{"issuer": "x", "scope": {}}',
            "malformed capability token (PROTOCOL.md 2): invalid capability token",
        ),
        (
            '{"kernel_key": "x", "verdict": 1}',
            "malformed HttpReceipt (PROTOCOL.md 7): not an HttpReceipt",
        ),
        ("", "the value is empty"),
    ],
)
def test_values_that_are_not_chio_objects(value: str, message: str) -> None:
    result = run("inspect", value)
    assert result.status == 2
    assert result.err.startswith("chio-middleware inspect: error: ")
    assert message in result.err


def test_truncated_value_through_the_installed_script() -> None:
    result = run_script("inspect", encode_header_object(TOKEN)[:-7])
    assert result.status == 2
    assert "chio-middleware inspect: error:" in result.err
    assert "Traceback" not in result.err
