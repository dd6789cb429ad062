"""``verify``: reports of receipt logs, every problem named by file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chio_middleware.sinks.jsonl import chain
from tests.cli.conftest import run, run_script
from tests.sinks.logmaker import AGENT, KERNEL, lines_of, write_lines, write_log

KERNEL_HEX = KERNEL.public_key.hex


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """A log of 12 receipts in three files."""
    path = tmp_path / "receipts.jsonl"
    write_log(path, 12, max_bytes=4000, backups=5)
    assert len(list(tmp_path.glob("receipts.jsonl.*"))) == 3  # .1, .2 and the .lock sidecar
    return path


def test_a_clean_log(log: Path) -> None:
    result = run("verify", str(log), "--kernel-key", KERNEL_HEX)
    assert result.status == 0
    assert result.out.splitlines() == [
        f"{log}: OK: 3 file(s), 12 line(s), 12 receipt(s), seq 1-12",
        "  verdicts: allow 8, deny 4",
        "  statuses: 200 6, 201 2, 401 2, 403 2",
        f"  kernel keys: {KERNEL_HEX} 12",
    ]
    assert result.err == ""


def test_the_installed_script_on_a_shell_glob_including_the_lock_file(log: Path) -> None:
    files = sorted(str(p) for p in log.parent.glob("receipts.jsonl*"))
    result = run_script("verify", *files, "--kernel-key", KERNEL_HEX)
    assert result.status == 0, result.out + result.err
    assert result.out.startswith(f"{log}: OK: 3 file(s), 12 line(s)")


def test_without_kernel_key_says_what_was_not_checked(log: Path) -> None:
    result = run("verify", str(log))
    assert result.status == 0
    assert "no --kernel-key given" in result.err


def test_tampering_in_a_rotated_file_is_named(log: Path) -> None:
    rotated = Path(f"{log}.1")
    lines = lines_of(rotated)
    receipt = json.loads(lines[1])
    receipt["response_status"] = 204
    lines[1] = json.dumps(receipt, separators=(",", ":"), sort_keys=True).encode() + b"\n"
    lines.insert(0, lines[0])
    write_lines(rotated, lines)
    result = run("verify", str(log), "--kernel-key", KERNEL_HEX)
    assert result.status == 1
    out = result.out.splitlines()
    assert out[0] == f"{log}: FAILED: 3 file(s), 13 line(s), 13 receipt(s), seq 1-12"
    assert out[1:3] == [
        f"  {rotated}:2: duplicate of {rotated}:1",
        f"  {rotated}:3: receipt signature does not verify: the line was modified after it was signed",
    ]
    assert out[-1] == "  problems: duplicate 1, signature 1"


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (
            "delete",
            "{f}:3: receipt seq 7 is missing before this line (after {f}:2): a deleted line",
        ),
        ("duplicate", "{f}:3: duplicate of {f}:2"),
        ("swap", "{f}:3: seq 6 is out of order: it belongs before {f}:2"),
        (
            "edit",
            "{f}:2: receipt signature does not verify: the line was modified after it was signed",
        ),
        ("foreign", "{f}:2: not a receipt: not an HttpReceipt: 13 field error(s)"),
        ("truncate", "{f}:4: no newline at the end of the line: an interrupted write"),
    ],
)
def test_each_kind_of_tampering_is_named(log: Path, tamper: str, expected: str) -> None:
    target = Path(f"{log}.1")  # seq 5 to 8
    lines = lines_of(target)
    if tamper == "delete":
        del lines[2]
    elif tamper == "duplicate":
        lines.insert(2, lines[1])
    elif tamper == "swap":
        lines[1], lines[2] = lines[2], lines[1]
    elif tamper == "edit":
        lines[1] = lines[1].replace(b'"request_id":"req-', b'"request_id":"REQ-')
    elif tamper == "foreign":
        lines.insert(1, b'{"note":"added by hand"}\n')
    else:
        lines[-1] = lines[-1][:-1]
    write_lines(target, lines)
    result = run("verify", str(log), "--kernel-key", KERNEL_HEX)
    assert result.status == 1
    assert f"  {expected.format(f=target)}" in result.out.splitlines()


def test_an_unexpected_kernel_key(log: Path) -> None:
    result = run("verify", str(log), "--kernel-key", AGENT.public_key.hex)
    assert result.status == 1
    assert f"signed by {KERNEL_HEX}, not an expected kernel key" in result.out
    assert "problems: untrusted_key 12" in result.out
    assert (
        run(
            "verify", str(log), "--kernel-key", AGENT.public_key.hex, "--kernel-key", KERNEL_HEX
        ).status
        == 0
    )


def test_from_start_refuses_a_log_whose_beginning_was_rotated_away(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    write_log(path, 5, max_bytes=1, backups=2)
    result = run("verify", str(path))
    assert result.status == 0
    assert "  note: starts at seq 3; older receipts were rotated away" in result.out
    result = run("verify", str(path), "--from-start")
    assert result.status == 1
    assert f"{path}.2:1: 2 receipts between seq 1 and 2 are missing" in result.out


def test_json_output(log: Path) -> None:
    lines = lines_of(log)
    write_lines(log, lines[:1] + lines[2:])
    result = run("verify", "--json", str(log))
    assert result.status == 1
    document = json.loads(result.out)
    assert document["ok"] is False
    assert document["statuses"] == {"200": 6, "201": 1, "401": 2, "403": 2}
    assert document["problems"] == [
        {
            "file": str(log),
            "line": 2,
            "kind": "missing",
            "message": f"receipt seq 10 is missing before this line (after {log}:1): a deleted line",
        }
    ]


def test_several_logs_each_get_a_report(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_log(first, 2)
    write_log(second, 3)
    write_lines(second, lines_of(second)[1:])
    result = run("verify", str(first), str(second))
    assert result.status == 1
    assert f"{first}: OK: 1 file(s), 2 line(s)" in result.out
    assert f"{second}: FAILED: 1 file(s), 2 line(s)" in result.out


def test_an_empty_log_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.touch()
    result = run("verify", str(path))
    assert result.status == 0
    assert result.out.startswith(f"{path}: OK: 1 file(s), 0 line(s), 0 receipt(s), no chain")


def test_bad_input(tmp_path: Path, log: Path) -> None:
    result = run_script("verify", str(tmp_path / "missing.jsonl"))
    assert (result.status, result.err) == (
        2,
        f"chio-middleware verify: error: {tmp_path / 'missing.jsonl'}: no such file\n",
    )
    result = run("verify", str(tmp_path))
    assert result.status == 2
    assert "is a directory" in result.err
    result = run("verify", str(log), "--kernel-key", "abc")
    assert result.status == 2
    assert "--kernel-key: public key must be 64 hex characters, got 3" in result.err
    result = run("verify")
    assert result.status == 2
    assert "the following arguments are required: FILE" in result.err


def test_an_unreadable_file(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(chain, "read_log_lines", refuse)
    result = run("verify", str(log))
    assert result.status == 2
    assert result.err == f"chio-middleware verify: error: {log}.2: Permission denied\n"
