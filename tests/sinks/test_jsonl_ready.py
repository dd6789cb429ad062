"""The JSONL sink's readiness from cached state, and its one sync thread.

``ready()`` runs before every protected request. It reads the file system (``statvfs``) on
the first call, then at most every ``READY_RECHECK_S`` while there is plenty of space, and
on every call when space runs low, after a failed look and after a failed record. A clock of
the test's own stands in for ``time.monotonic``: nothing here waits.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from chio_middleware.sinks import SinkBusy, SinkError
from chio_middleware.sinks.jsonl import JsonlSink
from chio_middleware.sinks.jsonl import sink as sink_module
from tests.sinks.logmaker import request_signer


class _Clock:
    """``time`` for the sink module, with a ``monotonic`` the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class _Disk:
    """``os`` for the sink module, with ``statvfs`` counted and its free space chosen."""

    def __init__(self) -> None:
        self.looks = 0
        self.free: int | None = None  # None: the real file system's

    def statvfs(self, path: str) -> Any:
        self.looks += 1
        real = os.statvfs(path)
        if self.free is None:
            return real
        return SimpleNamespace(f_bavail=self.free // 4096, f_frsize=4096)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


@pytest.fixture
def rigged(monkeypatch: pytest.MonkeyPatch) -> tuple[_Clock, _Disk]:
    clock, disk = _Clock(), _Disk()
    monkeypatch.setattr(sink_module, "time", clock)
    monkeypatch.setattr(sink_module, "os", disk)
    return clock, disk


def test_plenty_of_space_is_looked_at_once_per_interval(
    tmp_path: Path, rigged: tuple[_Clock, _Disk]
) -> None:
    clock, disk = rigged
    disk.free = 100 * sink_module.PLENTY_FREE_BYTES
    sink = JsonlSink(tmp_path / "receipts.jsonl", fsync="never")
    for _ in range(100):
        sink.ready()
    assert disk.looks == 1  # was one statvfs per request
    clock.now += sink_module.READY_RECHECK_S / 2
    sink.ready()
    assert disk.looks == 1
    clock.now += sink_module.READY_RECHECK_S
    sink.ready()
    assert disk.looks == 2  # the interval passed: it looks again
    sink.close()
    with pytest.raises(SinkError, match="closed"):  # a closed sink is never ready, cached or not
        sink.ready()


@pytest.mark.parametrize(
    "free",
    [
        sink_module.MIN_FREE_BYTES,
        sink_module.MIN_FREE_BYTES * 2,
        sink_module.PLENTY_FREE_BYTES - 1,
    ],
)
def test_low_space_is_looked_at_on_every_call_and_a_full_disk_refuses_at_once(
    tmp_path: Path, rigged: tuple[_Clock, _Disk], free: int
) -> None:
    _clock, disk = rigged
    disk.free = free
    sink = JsonlSink(tmp_path / "receipts.jsonl", fsync="never")
    for looks in range(1, 6):
        sink.ready()
        assert disk.looks == looks
    disk.free = sink_module.MIN_FREE_BYTES - 4096  # the disk fills up
    with pytest.raises(SinkError, match="no free space"):
        sink.ready()
    with pytest.raises(SinkError, match="no free space"):  # a failed look is not cached
        sink.ready()
    disk.free = free
    sink.ready()
    sink.close()


def test_a_failed_record_makes_ready_look_again_within_the_interval(
    tmp_path: Path, rigged: tuple[_Clock, _Disk]
) -> None:
    _clock, disk = rigged
    path = tmp_path / "logs" / "receipts.jsonl"
    sink = JsonlSink(path, fsync="never")
    sink.ready()
    sink.record(request_signer(0))
    shutil.rmtree(path.parent)  # removed between two looks
    sink.ready()  # trusted from the last look: the record below is what finds out
    assert disk.looks == 1
    with pytest.raises(SinkError):
        sink.record(request_signer(1))
    for _ in range(3):  # from then on every request is refused before the app runs
        with pytest.raises(SinkError, match="directory unavailable"):
            sink.ready()
    assert disk.looks == 4
    path.parent.mkdir()
    sink.ready()
    sink.record(request_signer(2))
    sink.close()
    assert len(path.read_bytes().splitlines()) == 1


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
