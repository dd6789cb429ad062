"""The JSONL sink's readiness, looked at on every request, and its one sync thread."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog.testing

from chio_middleware.sinks import SinkBusy, SinkError, without_waiting
from chio_middleware.sinks.jsonl import JsonlSink
from chio_middleware.sinks.jsonl import sink as sink_module
from tests.sinks.logmaker import request_signer


def test_ready_looks_at_the_file_system_on_every_call(tmp_path: Path) -> None:
    """A removed directory or a full disk refuses the very next request before its app runs:
    a cached answer (tried for issue 13, and reverted) let every request of the cached second
    act without a receipt."""
    path = tmp_path / "logs" / "receipts.jsonl"
    sink = JsonlSink(path, fsync="never")
    for _ in range(3):
        sink.ready()
    shutil.rmtree(path.parent)
    with pytest.raises(SinkError, match="directory unavailable"):
        sink.ready()
    path.parent.mkdir()
    sink.ready()
    sink.record(request_signer(0))
    sink.close()
    with pytest.raises(SinkError, match="closed"):
        sink.ready()


def test_a_full_disk_refuses_the_next_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = JsonlSink(tmp_path / "receipts.jsonl", fsync="never")
    sink.ready()
    full = SimpleNamespace(f_bavail=(sink_module.MIN_FREE_BYTES - 4096) // 4096, f_frsize=4096)
    monkeypatch.setattr(sink_module, "os", _Os(statvfs=lambda _path: full))
    with pytest.raises(SinkError, match="no free space"):
        sink.ready()
    monkeypatch.undo()
    sink.ready()
    sink.close()


class _Os:
    """``os`` for the sink module, with some calls replaced."""

    def __init__(self, **calls: Any) -> None:
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        return self._calls.get(name) or getattr(os, name)


def test_two_records_that_both_find_no_sync_thread_start_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second record that arrives while the first is starting the sync thread must find it
    started, or wait for the lock: before, the lock was released first, and both started one."""
    sink = JsonlSink(tmp_path / "receipts.jsonl", fsync="interval", fsync_interval=60)
    started: list[threading.Thread] = []
    second: list[object] = []
    raced = threading.Event()

    def thread(*args: Any, **kwargs: Any) -> threading.Thread:
        if not raced.is_set():  # the first record, starting the thread: another arrives
            raced.set()
            racer = threading.Thread(target=lambda: second.append(_try(sink)))
            racer.start()
            racer.join()
        made = threading.Thread(*args, **kwargs)
        started.append(made)
        return made

    monkeypatch.setattr(sink_module, "threading", SimpleNamespace(Thread=thread))
    sink.record(request_signer(0))
    monkeypatch.undo()
    assert len(started) == 1, started
    assert isinstance(second[0], SinkBusy)  # it found the lock held, and did not wait
    sink.close()


def _try(sink: JsonlSink) -> object:
    try:
        return sink.try_record(request_signer(1))
    except SinkBusy as exc:
        return exc


def test_a_sync_thread_that_cannot_start_fails_no_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of threads, the record has written its line: it returns its receipt (a 503 would
    answer for a response whose receipt is in the log), fsyncs it itself (no line waits for
    a thread that never comes), logs once, and each record tries the thread again."""
    path = tmp_path / "receipts.jsonl"
    sink = JsonlSink(path, fsync="interval", fsync_interval=60)

    class NoThread(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    fsyncs: list[int] = []
    monkeypatch.setattr(sink_module, "threading", SimpleNamespace(Thread=NoThread))
    monkeypatch.setattr(sink_module, "os", _Os(fsync=lambda fd: fsyncs.append(os.fsync(fd))))
    with structlog.testing.capture_logs() as events:
        receipts = [sink.record(request_signer(index)) for index in range(5)]
    assert all(receipt.id for receipt in receipts) and len(path.read_bytes().splitlines()) == 5
    assert [e["event"] for e in events] == ["chio_receipt_log_fsync_thread_failed"]
    assert len(fsyncs) == 5 and not sink._dirty  # each line synced by its own record
    # An event loop's record (without_waiting) never waits on the disk: its line waits.
    fsyncs.clear()
    with structlog.testing.capture_logs() as events:
        without_waiting(sink.record, request_signer(5))
    assert fsyncs == [] and sink._dirty and events == []
    sink.record(request_signer(6))  # a record that may wait syncs both lines
    assert len(fsyncs) == 1 and not sink._dirty
    monkeypatch.undo()
    sink.record(request_signer(7))
    assert sink._thread is not None and sink._thread.is_alive()
    sink.close()
