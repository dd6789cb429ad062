"""Auditing a real run: tail --follow across rotation, and verify against tampering."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.middleware.harness import agent_headers

from .servers import KERNEL, notes_capability, running
from .test_workers import send

CLI = str(Path(sys.executable).parent / "chio-middleware")
ROTATING = {"CHIO_RECEIPT_MAX_BYTES": "4096", "CHIO_RECEIPT_BACKUPS": "50"}


def make_traffic(url: str, count: int) -> list[str]:
    """``count`` requests of several kinds; the receipt ids the responses carried."""
    now = int(time.time())
    cap = notes_capability(now)
    ids = []
    for index in range(count):
        if index % 3 == 0:
            status, info = send(url, "GET", "/health", {})
        elif index % 3 == 1:
            status, info = send(
                url, "GET", "/notes", agent_headers("GET", "/notes", cap=cap, issued_at=now)
            )
        else:
            status, info = send(
                url, "POST", "/notes", {"content-type": "application/json"}, b'{"title":"x"}'
            )
        assert status in (200, 401), (status, info)
        ids.append(info["receipt"])
    return ids


def test_tail_follows_a_running_example_across_rotation(tmp_path: Path) -> None:
    with running("uvicorn", tmp_path, extra_env=ROTATING) as server:
        first = make_traffic(server.url, 1)
        tail = subprocess.Popen(
            [
                CLI,
                "tail",
                "--follow",
                "--verify",
                "--json",
                "-n",
                "all",
                "--kernel-key",
                KERNEL.public_key.hex,
                "--max-receipts",
                "25",
                "--interval",
                "0.05",
                str(server.receipts),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert tail.stdout is not None
        head = tail.stdout.readline()  # blocks until tail has read the log: it now follows it
        ids = first + make_traffic(server.url, 24)
        out, err = tail.communicate(timeout=120)
    assert tail.returncode == 0, err.decode()
    events = [json.loads(line) for line in [head, *out.splitlines()]]
    seen = [event["receipt"]["id"] for event in events]
    assert sorted(seen) == sorted(ids) and len(set(seen)) == 25  # each receipt exactly once
    assert all(event["verified"] and not event["problems"] for event in events)
    assert [event["receipt"]["metadata"]["chio_log_seq"] for event in events] == list(range(1, 26))
    rotated = sorted(
        p.name for p in tmp_path.glob("receipts.jsonl.*") if not p.name.endswith(".lock")
    )
    assert rotated, "the log should have rotated during the run"


def tamper(log_dir: Path, kind: str) -> tuple[Path, int]:
    """Damage the current log file of a copy; return the file and the 1-based line to blame."""
    path = log_dir / "receipts.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 3
    if kind == "delete":
        del lines[1]
        blamed = 2
    elif kind == "duplicate":
        lines.insert(2, lines[1])
        blamed = 3
    elif kind == "swap":
        lines[1], lines[2] = lines[2], lines[1]
        blamed = 3  # reported as "line 3 belongs before line 2"
    else:  # edit: a denial rewritten as an allow
        receipt = json.loads(lines[1])
        receipt["response_status"] = 299
        lines[1] = json.dumps(receipt, separators=(",", ":")).encode() + b"\n"
        blamed = 2
    path.write_bytes(b"".join(lines))
    return path, blamed


@pytest.fixture(scope="module")
def real_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("run")
    with running("gunicorn", state, workers=2, extra_env=ROTATING) as server:
        make_traffic(server.url, 15)
    return state


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "verify", str(path), "--kernel-key", KERNEL.public_key.hex],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_verify_accepts_the_untouched_log(real_log: Path) -> None:
    result = verify(real_log / "receipts.jsonl")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout and "15 receipt(s)" in result.stdout


@pytest.mark.parametrize("kind", ["delete", "duplicate", "swap", "edit"])
def test_verify_names_the_tampered_line(real_log: Path, tmp_path: Path, kind: str) -> None:
    copy = tmp_path / "log"
    shutil.copytree(real_log, copy)
    path, line = tamper(copy, kind)
    result = verify(path)
    assert result.returncode == 1, result.stdout
    assert f"receipts.jsonl:{line}:" in result.stdout, result.stdout
