"""``tail``: readable lines, filters, colour, verification, and following across rotation."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from chio_middleware.core.models import HttpReceipt
from chio_middleware.sinks.jsonl import JsonlSink
from tests.cli.conftest import SCRIPT, run
from tests.sinks.logmaker import KERNEL, lines_of, request_signer, write_lines, write_log

KERNEL_HEX = KERNEL.public_key.hex
ROTATE = {"max_bytes": 3000, "backups": 20}  # about three receipts a file


def request_ids(out: str) -> list[str]:
    return [json.loads(line)["receipt"]["request_id"] for line in out.splitlines()]


def script(*steps: Callable[[], object]) -> Callable[[], None]:
    """A ``wait`` for ``tail --follow``: one step per poll, then Ctrl-C."""
    pending = list(steps)

    def wait() -> None:
        if not pending:
            raise KeyboardInterrupt
        pending.pop(0)()

    return wait


@pytest.fixture
def log(tmp_path: Path) -> tuple[Path, list[HttpReceipt]]:
    path = tmp_path / "receipts.jsonl"
    return path, write_log(path, 12)


def test_the_last_ten_receipts_as_readable_lines(log: tuple[Path, list[HttpReceipt]]) -> None:
    path, receipts = log
    result = run("tail", str(path))
    assert result.status == 0
    lines = result.out.splitlines()
    assert len(lines) == 10
    assert lines[-2] == (
        "2026-01-01T00:00:10Z  ALLOW  200  POST   /chio/tools/{server}/{tool}  tool=notes/write  "
        f"cap=cap-1  seq=11  id={receipts[10].id}"
    )
    assert lines[2] == (
        f"2026-01-01T00:00:04Z  ALLOW  201  POST   /notes  cap=cap-1  seq=5  id={receipts[4].id}"
    )
    assert lines[0] == (
        "2026-01-01T00:00:02Z  DENY   401  DELETE /notes/{id}  cap=cap-2  guard=DpopGuard  "
        f'reason="DPoP proof has expired"  seq=3  id={receipts[2].id}'
    )


@pytest.mark.parametrize(("count", "shown"), [("3", 3), ("0", 0), ("all", 12)])
def test_lines_option(log: tuple[Path, list[HttpReceipt]], count: str, shown: int) -> None:
    result = run("tail", "-n", count, "--json", str(log[0]))
    assert request_ids(result.out) == [f"req-{i}" for i in range(12 - shown, 12)]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["verdict=deny"], [2, 3, 7, 8]),
        (["status=4xx"], [2, 3, 7, 8]),
        (["status=401|403,method=get"], [3, 8]),
        (["route=/notes/*", "verdict=allow"], [1, 6, 11]),
        (["tool=notes/write"], [0, 5, 10]),
        (["capability=cap-0,guard=DpopGuard|PathGuard"], [3]),
        (["status=201"], [4, 9]),
    ],
)
def test_filters(
    log: tuple[Path, list[HttpReceipt]], filters: list[str], expected: list[int]
) -> None:
    argv = [arg for spec in filters for arg in ("--filter", spec)]
    result = run("tail", "-n", "all", "--json", *argv, str(log[0]))
    assert result.status == 0
    assert request_ids(result.out) == [f"req-{i}" for i in expected]


def test_a_bad_filter(log: tuple[Path, list[HttpReceipt]]) -> None:
    result = run("tail", "--filter", "colour=red", str(log[0]))
    assert result.status == 2
    assert "--filter 'colour=red': expected KEY=VALUE with KEY one of verdict, status" in result.err


def test_colour_only_on_a_terminal_without_no_color(log: tuple[Path, list[HttpReceipt]]) -> None:
    path = str(log[0])
    assert "\033[1;31mDENY \033[0m" in run("tail", path, tty=True).out
    assert "\033[" not in run("tail", path, tty=True, environ={"NO_COLOR": "1"}).out
    assert "\033[" not in run("tail", path).out
    assert "\033[" not in run("tail", "--no-color", path, tty=True).out


def test_verify_prints_problems_after_their_line(log: tuple[Path, list[HttpReceipt]]) -> None:
    path = log[0]
    lines = lines_of(path)
    write_lines(path, [*lines[:9], lines[8], b"garbage\n", *lines[9:]])
    result = run("tail", "--verify", "--kernel-key", KERNEL_HEX, "-n", "4", str(path))
    assert result.status == 1
    out = result.out.splitlines()
    assert len(out) == 6  # the last 4 receipts (the duplicate is one) and 2 problems
    assert out[0].startswith("2026-01-01T00:00:08Z  DENY   403  GET    /notes/{id}")
    assert out[1] == f"!! {path}:10: duplicate of {path}:9"
    assert out[2] == (
        f"!! {path}:11: not a receipt: receipt is not JSON: invalid JSON: Expecting value: "
        "line 1 column 1 (char 0)"
    )
    assert [line.split("  ")[-2] for line in out[3:]] == ["seq=10", "seq=11", "seq=12"]
    json_out = run("tail", "--verify", "--json", "-n", "2", str(path)).out.splitlines()
    documents = [json.loads(line) for line in json_out]
    assert [(d["line"], d["verified"], len(d["problems"])) for d in documents] == [
        (10, False, 1),
        (11, False, 1),
        (13, True, 0),
        (14, True, 0),
    ]


def test_without_verify_a_foreign_line_is_a_warning(log: tuple[Path, list[HttpReceipt]]) -> None:
    path = log[0]
    write_lines(path, [*lines_of(path), b"garbage\n"])
    result = run("tail", "-n", "1", str(path))
    assert result.status == 0
    assert result.err.startswith(f"warning: {path}:13: not a receipt")
    assert len(result.out.splitlines()) == 1


def test_follow_sees_every_appended_receipt_once_across_rotations(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    write_log(path, 2, **ROTATE)
    worker_a, worker_b = JsonlSink(path, **ROTATE), JsonlSink(path, **ROTATE)

    def append(data: bytes) -> None:
        with open(path, "ab") as raw:
            raw.write(data)

    wait = script(
        lambda: worker_a.record(request_signer(2)),
        lambda: None,  # a poll with nothing new
        lambda: (worker_a.record(request_signer(3)), append(b'{"half')),
        lambda: append(b'":1}\n'),  # the half line completed one poll later: a foreign line
        lambda: [(worker_a, worker_b)[i % 2].record(request_signer(i)) for i in range(4, 13)],
        lambda: worker_b.record(request_signer(13)),
    )
    result = run(
        "tail", "--follow", "--verify", "--kernel-key", KERNEL_HEX, "--json", str(path),
        wait=wait,
    )  # fmt: skip
    worker_a.close()
    worker_b.close()
    assert result.status == 1  # the foreign line
    documents = [json.loads(line) for line in result.out.splitlines()]
    receipts = [d["receipt"]["request_id"] for d in documents if d["receipt"]]
    assert receipts == [f"req-{i}" for i in range(14)]
    assert [d["problems"] for d in documents if d["problems"]] == [
        [{"kind": "malformed", "message": "not a receipt: not an HttpReceipt: 13 field error(s)"}]
    ]
    assert len(list(tmp_path.glob("receipts.jsonl.*"))) > 4  # it did rotate, several times


def test_follow_stops_after_max_receipts_and_waits_for_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "later.jsonl"
    wait = script(
        lambda: None,
        lambda: write_log(path, 2),
        lambda: write_log(path, 3, start=2),
        lambda: pytest.fail("should have stopped"),
    )
    result = run("tail", "-f", "--max-receipts", "4", "--json", str(path), wait=wait)
    assert result.status == 0
    assert f"{path}: no such file yet; waiting for it to appear" in result.err
    assert request_ids(result.out) == ["req-0", "req-1", "req-2", "req-3"]


def test_the_installed_script_follows_until_max_receipts(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    write_log(path, 2, **ROTATE)
    argv = [str(SCRIPT), "tail", "-f", "--json", "--verify", "--max-receipts", "8"]
    with subprocess.Popen(
        [*argv, "--interval", "0.01", str(path)], stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        first = [process.stdout.readline() for _ in range(2)]  # it is following now
        write_log(path, 6, start=2, **ROTATE)  # two rotations, whenever it polls
        rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    assert request_ids("".join(first) + rest) == [f"req-{i}" for i in range(8)]


def test_ctrl_c_ends_the_installed_script_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    write_log(path, 1)
    with subprocess.Popen(
        [str(SCRIPT), "tail", "-f", "--interval", "0.01", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        assert "seq=1" in process.stdout.readline()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0
    assert err == ""


def test_missing_file_or_directory_without_follow(tmp_path: Path) -> None:
    result = run("tail", str(tmp_path / "nope.jsonl"))
    assert (result.status, result.err) == (
        2,
        f"chio-middleware tail: error: {tmp_path / 'nope.jsonl'}: no such file\n",
    )
    assert run("tail", str(tmp_path)).status == 2
    assert run("tail", "-n", "-1", str(tmp_path)).status == 2
    result = run("tail", "-f", "--interval", "-1", str(tmp_path / "nope.jsonl"))
    assert result.status == 2
    assert "--interval: must be between 0 and 3600 seconds: -1" in result.err
