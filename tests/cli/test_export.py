"""``export --format chio-receipt``, and ``verify``/``inspect`` of core receipts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chio_middleware.core.core_receipts import verify_core_receipt
from chio_middleware.core.receipts import parse_receipt
from tests.cli.conftest import run, run_script
from tests.sinks.logmaker import AGENT, KERNEL, lines_of, write_lines, write_log

KERNEL_HEX = KERNEL.public_key.hex


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "receipts.jsonl"
    write_log(path, 6)
    return path


def test_every_exported_receipt_verifies_as_a_core_receipt(
    log: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "core.jsonl"
    result = run(
        "export", "--format", "chio-receipt", "--key", str(keys["kernel"]), str(log), "-o", str(out)
    )
    assert result.status == 0, result.err
    assert result.err.strip() == "exported 6 core receipt(s), refused 0"
    http = [parse_receipt(line) for line in lines_of(log)]
    core = [json.loads(line) for line in lines_of(out)]
    assert len(core) == 6
    for source, receipt in zip(http, core, strict=True):
        check = verify_core_receipt(receipt, trusted_keys={KERNEL.public_key})
        assert check.ok, check
        assert receipt["metadata"]["chio_receipt_signing_nonce"] == source.id
        assert receipt["tool_name"] == f"{source.method} {source.route_pattern}"
        assert check.decision == source.verdict.verdict


def test_verify_recognises_an_export_and_checks_each_line(
    log: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "core.jsonl"
    run("export", "--format", "chio-receipt", "--key", str(keys["kernel"]), str(log), "-o", str(out))
    clean = run("verify", str(out), "--kernel-key", KERNEL_HEX)
    assert clean.status == 0, clean.out
    assert clean.out.splitlines()[0] == f"{out}: OK: 1 file(s), 6 line(s), 6 receipt(s), no chain"
    lines = lines_of(out)
    edited = json.loads(lines[2])
    edited["timestamp"] += 1
    lines[2] = json.dumps(edited).encode() + b"\n"
    write_lines(out, lines)
    broken = run("verify", str(out), "--kernel-key", KERNEL_HEX)
    assert broken.status == 1
    assert f"{out}:3: id is not the content address of the body: modified" in broken.out
    other = run("verify", str(out), "--kernel-key", AGENT.public_key.hex)
    assert other.status == 1 and "not an expected key" in other.out


def test_export_refuses_lines_that_do_not_verify_and_a_foreign_key(
    log: Path, keys: dict[str, Path]
) -> None:
    lines = lines_of(log)
    receipt = json.loads(lines[1])
    receipt["response_status"] = 299
    lines[1] = json.dumps(receipt).encode() + b"\n"
    write_lines(log, lines)
    result = run("export", "--format", "chio-receipt", "--key", str(keys["kernel"]), str(log))
    assert result.status == 1
    assert f"{log}:2: not exported: receipt signature does not verify" in result.err
    assert len(result.out.splitlines()) == 5
    foreign = run("export", "--format", "chio-receipt", "--key", str(keys["agent"]), str(log))
    assert foreign.status == 1 and foreign.out == ""
    assert "refused 6" in foreign.err


def test_inspect_names_a_core_receipt(log: Path, keys: dict[str, Path]) -> None:
    exported = run("export", "--format", "chio-receipt", "--key", str(keys["kernel"]), str(log))
    line = exported.out.splitlines()[0]
    result = run("inspect", line, "--kernel-key", KERNEL_HEX)
    assert result.status == 0, result.out + result.err
    assert "kind:           core ChioReceipt (PROTOCOL.md 7.2)" in result.out
    assert "valid (by its kernel_key, id content-addressed, an expected key)" in result.out
    tampered = json.loads(line)
    tampered["tool_name"] = "DELETE /everything"
    bad = run("inspect", json.dumps(tampered))
    assert bad.status == 1 and "INVALID (id is not the content address" in bad.out


def test_the_installed_script_exports(log: Path, keys: dict[str, Path]) -> None:
    result = run_script("export", "--format", "chio-receipt", "--key", str(keys["kernel"]), str(log))
    assert result.status == 0, result.err
    assert len(result.out.splitlines()) == 6
