"""The chain verifier: every kind of tampering is caught and named by file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chio_middleware.core.crypto import SigningKey
from chio_middleware.core.receipts import receipt_json
from chio_middleware.sinks.jsonl import (
    ChainVerifier,
    LogFollower,
    LogLine,
    log_files,
    read_log_lines,
    verify_log,
)
from tests.sinks.logmaker import KERNEL, lines_of, request_signer, write_lines, write_log

KEYS = [KERNEL.public_key]
FORGER = SigningKey(bytes(32))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """The lines of a log of 8 receipts written through the sink."""
    path = tmp_path_factory.mktemp("pristine") / "receipts.jsonl"
    write_log(path, 8)
    return lines_of(path)


def findings(path: Path, **options: object) -> list[tuple[int, str, str]]:
    report = verify_log(log_files(path), kernel_keys=KEYS, **options)  # type: ignore[arg-type]
    return [(p.line, p.kind, p.message) for p in report.problems]


def tampered(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "receipts.jsonl"
    write_lines(path, lines)
    return path


def test_an_untouched_log_verifies(tmp_path: Path, pristine: list[bytes]) -> None:
    report = verify_log([tampered(tmp_path, pristine)], kernel_keys=KEYS)
    assert report.ok
    assert (report.lines, report.receipts, report.first_seq, report.last_seq) == (8, 8, 1, 8)
    assert report.verdicts == {"allow": 5, "deny": 3}
    assert report.statuses == {200: 4, 401: 2, 403: 1, 201: 1}
    assert report.kernel_keys == {KERNEL.public_key.hex: 8}


def test_a_deleted_line(tmp_path: Path, pristine: list[bytes]) -> None:
    path = tampered(tmp_path, pristine[:3] + pristine[4:])
    assert findings(path) == [
        (
            4,
            "missing",
            f"receipt seq 4 is missing before this line (after {path}:3): a deleted line",
        )
    ]


def test_several_deleted_lines(tmp_path: Path, pristine: list[bytes]) -> None:
    path = tampered(tmp_path, pristine[:2] + pristine[5:])
    [(line, kind, message)] = findings(path)
    assert (line, kind) == (3, "missing")
    assert message.startswith("3 receipts between seq 3 and 5 are missing")


def test_a_deleted_first_line(tmp_path: Path, pristine: list[bytes]) -> None:
    path = tampered(tmp_path, pristine[1:])
    assert findings(path) == [
        (
            1,
            "missing",
            "receipt seq 1 is missing before this line (at the start of the log): a deleted line",
        )
    ]


def test_a_duplicated_line(tmp_path: Path, pristine: list[bytes]) -> None:
    path = tampered(tmp_path, [*pristine[:4], pristine[3], *pristine[4:]])
    assert findings(path) == [(5, "duplicate", f"duplicate of {path}:4")]


def test_a_replayed_earlier_line(tmp_path: Path, pristine: list[bytes]) -> None:
    path = tampered(tmp_path, [*pristine[:6], pristine[1], *pristine[6:]])
    [(line, kind, message)] = findings(path)
    assert (line, kind) == (7, "duplicate")
    assert message == f"seq 2 comes again after {path}:6 (seq 6): a duplicated or replayed line"


def test_two_swapped_lines(tmp_path: Path, pristine: list[bytes]) -> None:
    path = tampered(tmp_path, [*pristine[:3], pristine[4], pristine[3], *pristine[5:]])
    assert findings(path) == [
        (5, "reordered", f"seq 4 is out of order: it belongs before {path}:4")
    ]


def test_a_line_moved_to_the_end(tmp_path: Path, pristine: list[bytes]) -> None:
    path = tampered(tmp_path, pristine[:1] + pristine[2:] + pristine[1:2])
    assert findings(path) == [
        (8, "reordered", f"seq 2 is out of order: it belongs before {path}:2")
    ]


def test_an_edited_line(tmp_path: Path, pristine: list[bytes]) -> None:
    receipt = json.loads(pristine[2])
    receipt["response_status"] = 200
    receipt["verdict"] = {"verdict": "allow"}
    edited = json.dumps(receipt, separators=(",", ":"), sort_keys=True).encode() + b"\n"
    path = tampered(tmp_path, [*pristine[:2], edited, *pristine[3:]])
    assert findings(path) == [
        (
            3,
            "signature",
            "receipt signature does not verify: the line was modified after it was signed",
        )
    ]


def test_a_reformatted_line(tmp_path: Path, pristine: list[bytes]) -> None:
    spaced = json.dumps(json.loads(pristine[2]), sort_keys=True).encode() + b"\n"
    path = tampered(tmp_path, [*pristine[:2], spaced, *pristine[3:]])
    assert [(line, kind) for line, kind, _ in findings(path)] == [(3, "not_canonical")]


def test_a_line_re_signed_by_another_key(tmp_path: Path, pristine: list[bytes]) -> None:
    """With the kernel key the forgery is named; without it the chain still breaks."""
    meta = json.loads(pristine[2])["metadata"]
    forged = receipt_json(request_signer(2, FORGER, tag="x")(meta)) + b"\n"
    path = tampered(tmp_path, [*pristine[:2], forged, *pristine[3:]])
    [(line, kind, message)] = findings(path)
    assert (line, kind) == (3, "untrusted_key")
    assert FORGER.public_key.hex in message
    report = verify_log([path])
    assert [(p.line, p.kind) for p in report.problems] == [(4, "modified")]
    assert report.problems[0].message == (
        f"chio_log_prev does not match {path}:3 (seq 3): that line was changed after this one "
        "was written, or this line is forged"
    )


def test_an_inserted_forged_line(tmp_path: Path, pristine: list[bytes]) -> None:
    meta = json.loads(pristine[3])["metadata"]
    forged = receipt_json(request_signer(99, FORGER)(meta)) + b"\n"
    path = tampered(tmp_path, [*pristine[:3], forged, *pristine[3:]])
    assert [(line, kind) for line, kind, _ in findings(path)] == [(4, "untrusted_key")]
    report = verify_log([path])  # no key: two lines claim seq 4, the next one decides
    assert [(p.line, p.kind, p.message) for p in report.problems] == [
        (4, "inserted", f"inserted line: seq 4 belongs to {path}:5, which {path}:6 links to")
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"hello\n", "not a receipt: receipt is not JSON"),
        (b'{"a":1}\n', "not a receipt: not an HttpReceipt"),
        (b"\n", "empty line: not a receipt"),
        (b"\xff\xfe\n", "not a receipt: receipt is not JSON"),
    ],
)
def test_a_foreign_line(tmp_path: Path, pristine: list[bytes], line: bytes, message: str) -> None:
    path = tampered(tmp_path, [*pristine[:3], line, *pristine[3:]])
    [(number, kind, text)] = findings(path)
    assert (number, kind) == (4, "malformed")
    assert text.startswith(message)


def test_a_receipt_without_chain_fields(tmp_path: Path, pristine: list[bytes]) -> None:
    plain = receipt_json(request_signer(3)({})) + b"\n"
    path = tampered(tmp_path, [*pristine[:3], plain, *pristine[3:]])
    assert [(line, kind) for line, kind, _ in findings(path)] == [(4, "unchained")]


def test_a_truncated_last_line(tmp_path: Path, pristine: list[bytes]) -> None:
    path = tampered(tmp_path, [*pristine[:7], pristine[7][:100]])
    assert [(line, kind) for line, kind, _ in findings(path)] == [
        (8, "truncated"),
        (8, "malformed"),
    ]
    path = tampered(tmp_path, [*pristine[:7], pristine[7][:-1]])  # only the newline lost
    assert [(line, kind) for line, kind, _ in findings(path)] == [(8, "truncated")]


def test_the_first_line_must_start_the_chain(tmp_path: Path, pristine: list[bytes]) -> None:
    meta = {"chio_log_seq": 1, "chio_log_prev": "ab" * 32}
    odd = receipt_json(request_signer(0)(meta)) + b"\n"
    path = tampered(tmp_path, [odd, *pristine[1:]])
    expected = [(1, "start"), (2, "modified")]  # line 2 follows the original line 1
    assert [(line, kind) for line, kind, _ in findings(path)] == expected
    assert [(line, kind) for line, kind, _ in findings(path, from_start=False)] == expected


def test_tampering_across_rotation(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    write_log(path, 9, max_bytes=3000, backups=5)
    files = log_files(path)
    assert len(files) == 3
    older = lines_of(files[1])
    write_lines(files[1], older[:-1])  # the last line of receipts.jsonl.1
    [problem] = verify_log(files, kernel_keys=KEYS).problems
    assert (problem.path, problem.line, problem.kind) == (str(path), 1, "missing")
    assert f"(after {files[1]}:{len(older) - 1})" in problem.message


def test_a_rotated_log_may_start_mid_chain_unless_from_start(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    write_log(path, 6, max_bytes=1, backups=2)
    assert verify_log(log_files(path), kernel_keys=KEYS).ok
    [(line, kind, _)] = findings(path, from_start=True)
    assert (line, kind) == (1, "missing")


def test_the_streaming_verifier_reports_problems_as_lines_arrive(
    tmp_path: Path, pristine: list[bytes]
) -> None:
    path = tampered(tmp_path, [*pristine[:2], pristine[1], *pristine[2:]])
    verifier = ChainVerifier(kernel_keys=KEYS, from_start=False)
    per_line = [len(verifier.check(line).problems) for line in read_log_lines(path)]
    assert per_line == [0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert verifier.last_seq == 8


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_flipping_any_byte_is_detected(
    tmp_path: Path, pristine: list[bytes], data: st.DataObject
) -> None:
    blob = bytearray(b"".join(pristine))
    position = data.draw(st.integers(0, len(blob) - 1))
    blob[position] ^= data.draw(st.integers(1, 255))
    path = tmp_path / "flipped.jsonl"
    path.write_bytes(bytes(blob))
    assert not verify_log([path], kernel_keys=KEYS).ok


def test_the_follower_reads_each_line_once_across_rotations(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    follower = LogFollower(path)
    assert follower.poll() == []  # no log yet
    seen: list[LogLine] = []
    for start, count in ((0, 2), (2, 3), (5, 9), (14, 1)):  # 9 lines: several rotations
        write_log(path, count, start=start, max_bytes=3000, backups=9)
        seen += follower.poll()
    with open(path, "ab") as handle:
        handle.write(b'{"partial":')  # an unfinished line is held back
    seen += follower.poll()
    follower.close()
    request_ids = [json.loads(line.raw)["request_id"] for line in seen]
    assert request_ids == [f"req-{i}" for i in range(15)]
    verifier = ChainVerifier(kernel_keys=KEYS)
    assert all(not verifier.check(line).problems for line in seen)
