"""The chained JSONL sink: chain metadata, rotation, locking across processes, fsync policy."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from chio_middleware.core.crypto import sha256_hex
from chio_middleware.core.models import HttpReceipt
from chio_middleware.core.receipts import receipt_json, verify_receipt
from chio_middleware.sinks import ReceiptSink, SinkError, open_sink
from chio_middleware.sinks.jsonl import JsonlSink, log_files, verify_log
from chio_middleware.sinks.jsonl import sink as sink_module
from tests.sinks.logmaker import KERNEL, lines_of, request_signer, write_log

KEYS = [KERNEL.public_key]


def chain_of(path: Path) -> list[tuple[int, str]]:
    """``(seq, prev)`` of every line of every file of the log, oldest first."""
    return [
        (meta["chio_log_seq"], meta["chio_log_prev"])
        for file in log_files(path)
        for meta in (json.loads(line)["metadata"] for line in lines_of(file))
    ]


def chain_of_receipts(path: Path) -> list[tuple[int, str]]:
    """``(seq, prev)`` of the receipt lines of one file, skipping other lines."""
    found = []
    for line in lines_of(path):
        try:
            meta = json.loads(line)["metadata"]
        except ValueError:
            continue
        found.append((meta["chio_log_seq"], meta["chio_log_prev"]))
    return found


def test_each_line_is_the_signed_receipt_with_its_chain_position(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    receipts = write_log(path, 4)
    lines = lines_of(path)
    assert [receipt_json(r) + b"\n" for r in receipts] == lines
    assert chain_of(path) == [
        (1, ""),
        (2, sha256_hex(lines[0][:-1])),
        (3, sha256_hex(lines[1][:-1])),
        (4, sha256_hex(lines[2][:-1])),
    ]
    for receipt in receipts:
        verify_receipt(receipt, trusted_keys=KEYS)  # the chain fields are under the signature
        assert receipt.metadata is not None
        assert receipt.metadata["chio_http_status_scope"] == "final"  # the caller's own kept
    assert verify_log([path], kernel_keys=KEYS).ok


def test_the_sink_satisfies_the_protocol_and_open_sink_builds_it(tmp_path: Path) -> None:
    sink = open_sink(f"jsonl:{tmp_path / 'r.jsonl'}", max_bytes=1000, fsync="never")
    assert isinstance(sink, JsonlSink) and isinstance(sink, ReceiptSink)
    assert (sink.max_bytes, sink.backups, sink.fsync) == (1000, 5, "never")
    sink.close()
    with pytest.raises(TypeError):
        open_sink(f"jsonl:{tmp_path / 'r.jsonl'}", rotate_daily=True)


@pytest.mark.parametrize(
    "options",
    [{"fsync": "sometimes"}, {"max_bytes": -1}, {"backups": -1}, {"fsync_interval": 0}],
)
def test_bad_options_are_refused(tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        JsonlSink(tmp_path / "r.jsonl", **options)


def test_a_new_sink_continues_the_chain_of_an_existing_log(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    write_log(path, 3)
    write_log(path, 2, start=3)
    assert [seq for seq, _ in chain_of(path)] == [1, 2, 3, 4, 5]
    assert verify_log([path], kernel_keys=KEYS).ok


def test_the_tail_state_is_found_whatever_the_read_block_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "receipts.jsonl"
    write_log(path, 3)
    with open(path, "ab") as handle:
        handle.write(b"not a receipt\n\n")
    monkeypatch.setattr(sink_module, "_TAIL_BLOCK", 7)
    write_log(path, 1, start=3)
    assert [seq for seq, _ in chain_of_receipts(path)] == [1, 2, 3, 4]
    report = verify_log([path], kernel_keys=KEYS)
    assert [(p.line, p.kind) for p in report.problems] == [(4, "malformed"), (5, "malformed")]


def test_rotation_starts_a_new_file_that_links_to_the_previous_one(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    write_log(path, 10, max_bytes=3000, backups=5)  # a line is 850 to 1000 bytes
    files = log_files(path)
    assert [f.name for f in files] == [
        "receipts.jsonl.3",
        "receipts.jsonl.2",
        "receipts.jsonl.1",
        "receipts.jsonl",
    ]
    assert all(f.stat().st_size <= 3000 for f in files)
    last_of_first = lines_of(files[0])[-1][:-1]
    first_of_second = json.loads(lines_of(files[1])[0])["metadata"]
    assert first_of_second["chio_log_prev"] == sha256_hex(last_of_first)
    assert [seq for seq, _ in chain_of(path)] == list(range(1, 11))
    report = verify_log(files, kernel_keys=KEYS)
    assert report.ok and (report.first_seq, report.last_seq) == (1, 10)


def test_rotation_keeps_at_most_backups_files(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    write_log(path, 12, max_bytes=1, backups=2)  # one line per file
    files = log_files(path)
    assert [f.name for f in files] == ["receipts.jsonl.2", "receipts.jsonl.1", "receipts.jsonl"]
    assert [seq for seq, _ in chain_of(path)] == [10, 11, 12]
    report = verify_log(files, kernel_keys=KEYS)
    assert report.ok and not report.from_start and report.first_seq == 10


@pytest.mark.parametrize("options", [{"max_bytes": 0}, {"backups": 0}])
def test_no_rotation_when_max_bytes_or_backups_is_zero(
    tmp_path: Path, options: dict[str, int]
) -> None:
    path = tmp_path / "receipts.jsonl"
    write_log(path, 5, **({"max_bytes": 1} | options))
    assert log_files(path) == [path]
    assert len(lines_of(path)) == 5


def test_an_interrupted_write_is_isolated_and_the_chain_skips_it(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    write_log(path, 2)
    with open(path, "ab") as handle:
        handle.write(b'{"id":"half a rec')  # a crash in the middle of a line
    write_log(path, 1, start=2)
    lines = lines_of(path)
    assert lines[2] == b'{"id":"half a rec\n'
    assert json.loads(lines[3])["metadata"]["chio_log_prev"] == sha256_hex(lines[1][:-1])
    report = verify_log([path], kernel_keys=KEYS)
    assert [(p.line, p.kind) for p in report.problems] == [(3, "malformed")]


def test_two_sinks_on_one_file_keep_one_chain(tmp_path: Path) -> None:
    """Another writer (here a second instance) invalidates the cached tail state."""
    path = tmp_path / "receipts.jsonl"
    first, second = JsonlSink(path, max_bytes=2500), JsonlSink(path, max_bytes=2500)
    for index in range(12):
        (first if index % 3 else second).record(request_signer(index))
    first.close()
    second.close()
    assert [seq for seq, _ in chain_of(path)] == list(range(1, 13))
    assert len(log_files(path)) > 2  # both rotated the file the other one had open
    assert verify_log(log_files(path), kernel_keys=KEYS).ok


def test_a_failing_sign_callback_propagates_and_releases_the_lock(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "r.jsonl")

    def broken(extra: Mapping[str, Any]) -> HttpReceipt:
        raise RuntimeError("signer down")

    with pytest.raises(RuntimeError, match="signer down"):
        sink.record(broken)
    sink.record(request_signer(0))
    sink.close()
    assert chain_of(tmp_path / "r.jsonl") == [(1, "")]


def test_cannot_open_is_a_sink_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(SinkError, match="cannot open receipt log"):
        JsonlSink(tmp_path / "file" / "receipts.jsonl")


def test_disk_full_is_a_sink_error_and_leaves_no_partial_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "receipts.jsonl"
    sink = JsonlSink(path, fsync="never")
    sink.record(request_signer(0))
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sink_module.os, "write", half_then_full)
    with pytest.raises(SinkError, match="No space left on device"):
        sink.record(request_signer(1))
    monkeypatch.setattr(sink_module.os, "write", lambda fd, data: real_write(fd, data[:10]))
    with pytest.raises(SinkError, match="short write"):
        sink.record(request_signer(1))
    monkeypatch.setattr(sink_module.os, "write", real_write)
    sink.record(request_signer(1))
    sink.close()
    assert [seq for seq, _ in chain_of(path)] == [1, 2]
    assert verify_log([path], kernel_keys=KEYS).ok


def test_after_close_record_raises_and_close_is_idempotent(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "r.jsonl")
    sink.record(request_signer(0))
    sink.close()
    sink.close()
    with pytest.raises(SinkError, match="closed"):
        sink.record(request_signer(1))


# -- durability


class FsyncSpy:
    """Replaces ``os.fsync`` in the sink module; can hold a call until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, hold: bool = False) -> None:
        self.calls: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        real = os.fsync

        def fsync(fd: int) -> None:
            self.calls.append(fd)
            self.entered.set()
            assert self.release.wait(30)
            real(fd)

        monkeypatch.setattr(sink_module.os, "fsync", fsync)


def test_fsync_always_syncs_before_record_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = FsyncSpy(monkeypatch)
    sink = JsonlSink(tmp_path / "r.jsonl", fsync="always")
    assert sink.blocking  # the ASGI adapter then records from a worker thread
    sink.record(request_signer(0))
    assert len(spy.calls) == 1
    sink.close()


def test_fsync_never_syncs_only_on_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = FsyncSpy(monkeypatch)
    sink = JsonlSink(tmp_path / "r.jsonl", fsync="never")
    sink.record(request_signer(0))
    sink.record(request_signer(1))
    assert spy.calls == []
    sink.flush()
    assert len(spy.calls) == 1
    sink.close()
    assert sink._thread is None


def test_fsync_interval_syncs_in_the_background_without_blocking_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = FsyncSpy(monkeypatch, hold=True)
    sink = JsonlSink(tmp_path / "r.jsonl", fsync="interval", fsync_interval=3600)
    assert not sink.blocking
    sink.record(request_signer(0))
    assert spy.entered.wait(30)  # the daemon thread is inside fsync, stuck on the "disk"
    for index in range(1, 4):
        sink.record(request_signer(index))  # ... and recording goes on regardless
    assert len(spy.calls) == 1
    thread = sink._thread
    assert thread is not None and thread.daemon
    spy.release.set()
    sink.close()  # flushes what the background sync has not covered yet, stops the thread
    assert len(spy.calls) == 2
    assert not thread.is_alive()
    assert len(lines_of(tmp_path / "r.jsonl")) == 4


def test_an_atexit_hook_flushes_and_close_removes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered: list[Any] = []
    monkeypatch.setattr(sink_module.atexit, "register", registered.append)
    monkeypatch.setattr(sink_module.atexit, "unregister", registered.remove)
    spy = FsyncSpy(monkeypatch)
    sink = JsonlSink(tmp_path / "r.jsonl", fsync="never")
    sink.record(request_signer(0))
    [hook] = registered
    hook()
    assert len(spy.calls) == 1
    sink.close()
    assert registered == []


# -- several processes


def _worker(path: str, worker: int, count: int, barrier: Any, options: dict[str, Any]) -> None:
    sink = JsonlSink(path, **options)
    barrier.wait()
    for index in range(count):
        sink.record(request_signer(index, tag=f"w{worker}-"))
    sink.close()


def _assert_every_receipt_once(path: Path, workers: int, count: int) -> None:
    files = log_files(path)
    report = verify_log(files, kernel_keys=KEYS, from_start=True)
    assert report.ok, [str(p) for p in report.problems]
    request_ids = [json.loads(line)["request_id"] for file in files for line in lines_of(file)]
    expected = {f"req-w{w}-{i}" for w in range(workers) for i in range(count)}
    assert sorted(request_ids) == sorted(expected)
    assert report.last_seq == workers * count


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_concurrent_writer_processes_keep_one_valid_chain(tmp_path: Path, method: str) -> None:
    workers, count = 4, 60
    path = tmp_path / "receipts.jsonl"
    context = multiprocessing.get_context(method)
    barrier = context.Barrier(workers)
    options = {"max_bytes": 20_000, "backups": 100, "fsync": "never"}
    processes = [
        context.Process(target=_worker, args=(str(path), w, count, barrier, options))
        for w in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    assert len(log_files(path)) > 3  # rotation happened while several processes wrote
    _assert_every_receipt_once(path, workers, count)


def _forked_worker(sink: JsonlSink, worker: int, count: int, barrier: Any) -> None:
    barrier.wait()
    for index in range(count):
        sink.record(request_signer(index, tag=f"w{worker}-"))
    sink.close()


def test_a_sink_opened_before_fork_is_safe_in_the_children(tmp_path: Path) -> None:
    """Gunicorn's preload: the app (and its sink) exist before the workers are forked."""
    workers, count = 3, 50
    path = tmp_path / "receipts.jsonl"
    # A generous lock deadline: this is about fork safety, not waits (a loaded CI machine
    # may hold three contending writers past the 1 s default).
    sink = JsonlSink(path, max_bytes=30_000, backups=100, lock_timeout=60)
    sink.record(request_signer(0, tag="parent-"))
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(workers)
    processes = [
        context.Process(target=_forked_worker, args=(sink, w, count, barrier))
        for w in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    sink.close()
    files = log_files(path)
    report = verify_log(files, kernel_keys=KEYS, from_start=True)
    assert report.ok, [str(p) for p in report.problems]
    assert report.last_seq == workers * count + 1


def _record_once_in_child(sink: JsonlSink, done: Any) -> None:
    try:
        sink.record(request_signer(1, tag="child-"))
        done.put("ok")
    except Exception as exc:  # the report goes to the parent
        done.put(type(exc).__name__)


def test_a_fork_while_another_thread_holds_the_sink_lock_leaves_the_child_usable(tmp_path: Path) -> None:
    """A fork while the fsync thread held the lock left the child's copy held forever."""
    sink = JsonlSink(tmp_path / "receipts.jsonl", lock_timeout=0.5)
    context = multiprocessing.get_context("fork")
    done = context.Queue()
    with sink._lock:  # as the fsync thread holds it while it syncs
        child = context.Process(target=_record_once_in_child, args=(sink, done))
        child.start()
    child.join(60)
    assert done.get(timeout=60) == "ok"
    sink.close()
