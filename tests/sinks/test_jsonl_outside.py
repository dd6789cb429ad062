"""The JSONL sink and ``verify`` when other programs act on the log: logrotate (``create``
with ``dateext``, ``copytruncate``), a manual ``mv``, a process that holds the log lock."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from chio_middleware.cli.verify import group_logs
from chio_middleware.core.models import HttpReceipt
from chio_middleware.sinks import SinkBusy, SinkError, without_waiting
from chio_middleware.sinks.jsonl import JsonlSink, verify_log
from chio_middleware.sinks.jsonl import sink as sink_module
from tests.cli.conftest import run
from tests.sinks.logmaker import KERNEL, lines_of, request_signer

KEYS = [KERNEL.public_key]


def seqs(path: Path) -> list[int]:
    return [json.loads(line)["metadata"]["chio_log_seq"] for line in lines_of(path)]


def record(sink: JsonlSink, count: int, start: int) -> None:
    for index in range(start, start + count):
        sink.record(request_signer(index))


def sink_synced_by_hand(
    path: Path, monkeypatch: pytest.MonkeyPatch, **options: Any
) -> JsonlSink:
    """A sink under ``fsync="interval"`` whose syncs run only where the test calls them."""
    sink = JsonlSink(path, fsync="interval", fsync_interval=3600, **options)
    monkeypatch.setattr(sink, "_ensure_sync_thread", lambda: None)
    return sink


def verified(*files: Path) -> Any:
    """The CLI's verdict on the files given in a scrambled order."""
    groups = group_logs([str(f) for f in reversed(files)])
    assert list(groups.values()) == [[str(f) for f in files]], "not ordered by the chain"
    [ordered] = groups.values()
    return verify_log(ordered, kernel_keys=KEYS, from_start=True)


def test_a_rename_behind_the_sinks_back_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    dated = tmp_path / "receipts.jsonl-20261201"
    sink = JsonlSink(path, fsync="never")
    record(sink, 3, 0)
    path.rename(dated)  # logrotate's dateext, then `create` (or nothing: the sink creates it)
    path.touch()
    record(sink, 2, 3)
    sink.close()
    assert (seqs(dated), seqs(path)) == ([1, 2, 3], [4, 5])
    report = verified(dated, path)
    assert report.ok, report.problems
    result = run("verify", str(path), str(dated), "--kernel-key", KERNEL.public_key.hex)
    assert result.status == 0, result.out
    assert "OK: 2 file(s), 5 line(s), 5 receipt(s), seq 1-5" in result.out


def test_every_worker_follows_a_rename_into_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    moved = tmp_path / "old-receipts.jsonl"
    first, second = JsonlSink(path, fsync="never"), JsonlSink(path, fsync="never")
    record(first, 2, 0)
    record(second, 1, 2)
    path.rename(moved)  # a manual mv, no new file
    record(second, 1, 3)
    record(first, 2, 4)
    first.close()
    second.close()
    assert (seqs(moved), seqs(path)) == ([1, 2, 3], [4, 5, 6])
    assert verified(moved, path).ok


def test_copytruncate_continues_the_chain_and_shows_what_it_lost(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    copy = tmp_path / "receipts.jsonl-20261201"
    sink = JsonlSink(path, fsync="never")
    record(sink, 3, 0)
    shutil.copyfile(path, copy)
    with open(path, "r+b") as handle:
        handle.truncate(0)
    record(sink, 2, 3)
    assert (seqs(copy), seqs(path)) == ([1, 2, 3], [4, 5])
    assert verified(copy, path).ok
    # A receipt written between logrotate's copy and its truncation is lost: verify says so.
    shutil.copyfile(path, copy := tmp_path / "receipts.jsonl-20261202")
    record(sink, 1, 5)
    with open(path, "r+b") as handle:
        handle.truncate(0)
    record(sink, 1, 6)
    sink.close()
    assert seqs(path) == [7]
    files = group_logs([str(path), str(tmp_path / "receipts.jsonl-20261201"), str(copy)])
    [ordered] = files.values()
    report = verify_log(ordered, kernel_keys=KEYS, from_start=True)
    assert [p.kind for p in report.problems] == ["missing"]
    assert "seq 6 is missing" in report.problems[0].message


def test_a_sink_starting_after_a_dated_rotation_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    dated = tmp_path / "receipts.jsonl-20261201"
    sink = JsonlSink(path, fsync="never")
    record(sink, 3, 0)
    sink.close()
    path.rename(dated)
    path.touch()  # logrotate `create`
    sink = JsonlSink(path, fsync="never")
    record(sink, 1, 3)
    sink.close()
    assert seqs(path) == [4]
    assert verified(dated, path).ok


def test_verify_orders_files_by_the_chain_not_by_their_names(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    sink = JsonlSink(path, max_bytes=2500, backups=3, fsync="never")
    record(sink, 8, 0)
    sink.close()
    one, two = Path(f"{path}.1"), Path(f"{path}.2")
    assert one.exists() and two.exists()
    one.rename(tmp_path / "swap")
    two.rename(one)
    (tmp_path / "swap").rename(two)  # .1 is now older than .2
    [files] = group_logs([str(path)]).values()
    assert str(one) in files and str(two) in files
    assert files.index(str(one)) < files.index(str(two))  # by the chain, not by the names
    firsts = [seqs(Path(f))[0] for f in files]
    assert firsts == sorted(firsts)
    assert verify_log(files, kernel_keys=KEYS, from_start=True).ok


@pytest.fixture
def lock_holder(tmp_path: Path) -> Iterator[Path]:
    """Another process holding ``<log>.lock`` until the test ends."""
    path = tmp_path / "receipts.jsonl"
    JsonlSink(path, fsync="never").close()  # the lock file exists
    code = (
        "import fcntl, sys\n"
        f"handle = open({str(path) + '.lock'!r}, 'a')\n"
        "fcntl.flock(handle, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    try:
        yield path
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=20)


def test_a_held_log_lock_fails_the_record_after_the_deadline(lock_holder: Path) -> None:
    sink = JsonlSink(lock_holder, fsync="never", lock_timeout=0.05)
    signed: list[int] = []

    def sign(extra: Mapping[str, Any]) -> HttpReceipt:
        signed.append(1)
        return request_signer(0)(extra)

    with pytest.raises(SinkBusy):
        sink.try_record(sign)  # never waits
    with pytest.raises(SinkBusy):
        without_waiting(sink.record, sign)  # what the ASGI adapter does on the event loop
    with pytest.raises(SinkError, match="receipt_lock_timeout"):
        sink.record(sign)
    assert signed == []  # nothing was signed for a line that was never written
    sink.close()


def test_a_sync_in_progress_never_makes_an_event_loop_record_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fsync thread holds nothing a record needs. Its dup releases the GIL; when it did
    so under the recording lock, a record on an event loop found that lock held for up to a
    GIL switch interval and went to a worker thread, and those hops fed each other. Here
    the sync is stopped inside its dup while records run under ``without_waiting``."""
    path = tmp_path / "receipts.jsonl"
    sink = JsonlSink(path, fsync="interval", fsync_interval=3600)
    record(sink, 1, 0)  # unsynced now
    in_dup, go_on = threading.Event(), threading.Event()
    real_dup = os.dup

    def held_dup(fd: int) -> int:
        in_dup.set()
        assert go_on.wait(20)
        return real_dup(fd)

    monkeypatch.setattr(os, "dup", held_dup)
    syncing = threading.Thread(target=sink.flush)
    syncing.start()
    try:
        assert in_dup.wait(20)
        for index in range(1, 4):
            without_waiting(sink.record, request_signer(index))  # SinkBusy if it would wait
    finally:
        go_on.set()
        syncing.join(20)
    monkeypatch.setattr(os, "dup", real_dup)
    sink.close()
    assert seqs(path) == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("cause", "pause_at"),
    [("rename", "_open_log"), ("rename", "_last_link_in"), ("rotation", "_open_log")],
)
def test_a_flush_while_a_record_changes_files_covers_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cause: str, pause_at: str
) -> None:
    """A sync does not wait for a record, so a ``flush`` from another thread can run while
    a record is moving to a new file (the log renamed behind the sink's back, or rotated).
    Paused at each point of that move outside the descriptor lock, a flush must return
    with the old file's unsynced line fsynced: adopting the new file and retiring the old
    one are one step for it."""
    path = tmp_path / "receipts.jsonl"
    sink = sink_synced_by_hand(path, monkeypatch, max_bytes=1 if cause == "rotation" else 0)
    synced: list[int] = []
    real_fsync = os.fsync

    def noting_fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append(os.fstat(fd).st_ino)

    monkeypatch.setattr(os, "fsync", noting_fsync)
    record(sink, 1, 0)  # unsynced
    old_inode = path.stat().st_ino
    if cause == "rename":
        path.rename(tmp_path / "receipts.jsonl-old")
    at_flush_return: list[list[int]] = []

    def flush_elsewhere() -> None:
        def flush() -> None:
            sink.flush()
            at_flush_return.append(list(synced))

        flusher = threading.Thread(target=flush)
        flusher.start()
        flusher.join(20)

    if pause_at == "_open_log":
        real_open_log = sink._open_log

        def open_then_flush() -> int:
            new = real_open_log()
            flush_elsewhere()
            return new

        monkeypatch.setattr(sink, "_open_log", open_then_flush)
    else:
        real_last_link = sink_module._last_link_in

        def read_then_flush(fd: int, size: int) -> Any:
            if not at_flush_return:
                flush_elsewhere()
            return real_last_link(fd, size)

        monkeypatch.setattr(sink_module, "_last_link_in", read_then_flush)
    record(sink, 1, 1)  # moves to the new file, with a flush in the middle
    assert at_flush_return and old_inode in at_flush_return[0]
    monkeypatch.undo()
    sink.close()
    assert seqs(path) == [2]


def test_a_record_during_a_sync_that_had_nothing_to_do_is_synced_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync that finds nothing unsynced must not clear the mark a record sets meanwhile
    (the record takes no lock the sync holds). Here a record runs at the point where the
    sync has read the mark: it stands in for a thread switch there."""
    path = tmp_path / "receipts.jsonl"
    sink = sink_synced_by_hand(path, monkeypatch)
    synced: list[int] = []  # the size of the log at each fsync
    real_fsync = os.fsync

    def noting_fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", noting_fsync)
    record(sink, 1, 0)
    sink.flush()  # nothing unsynced now

    class RecordWhileRead(list[int]):
        def __bool__(self) -> bool:  # read by the sync just after the mark
            writer = threading.Thread(target=record, args=(sink, 1, 1))
            writer.start()
            writer.join(20)
            return False

    sink._retired = RecordWhileRead()
    sink._sync()
    sink.close()  # a flush: the line written during the sync is synced by it at the latest
    assert synced[-1] == path.stat().st_size and seqs(path) == [1, 2]


def test_flush_returns_only_after_a_sync_under_way_has_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``flush`` promises everything recorded so far is on disk. When the sync thread has
    just taken the unsynced lines and is still in its fsync, flush finds nothing to do of its
    own, and must wait for that fsync rather than return first."""
    path = tmp_path / "receipts.jsonl"
    sink = sink_synced_by_hand(path, monkeypatch)
    record(sink, 1, 0)
    order: list[str] = []
    in_fsync, flush_waits = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        if threading.current_thread().name == "sync":
            in_fsync.set()
            assert flush_waits.wait(20)  # until flush is waiting for it
        real_fsync(fd)
        order.append(f"fsync by {threading.current_thread().name}")

    monkeypatch.setattr(os, "fsync", slow_fsync)
    real_wait_for = sink._synced.wait_for

    def noting_wait_for(predicate: Any, timeout: float | None = None) -> bool:
        flush_waits.set()
        return real_wait_for(predicate, timeout)

    monkeypatch.setattr(sink._synced, "wait_for", noting_wait_for)
    syncing = threading.Thread(target=sink._sync, name="sync")
    syncing.start()
    assert in_fsync.wait(20)
    sink.flush()
    order.append("flush returned")
    syncing.join(20)
    assert order == ["fsync by sync", "flush returned"]
    sink.close()


def test_an_fsync_that_fails_leaves_the_other_files_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two files renamed behind the sink's back wait for the next sync with the current
    one; the first one's fsync fails (EIO): the others are still fsynced, and flush reports
    the failure."""
    path = tmp_path / "receipts.jsonl"
    sink = sink_synced_by_hand(path, monkeypatch)
    inodes = []
    for index in range(2):
        record(sink, 1, index)
        inodes.append(path.stat().st_ino)
        path.rename(tmp_path / f"receipts.jsonl-{index}")
    record(sink, 1, 2)  # reopens: both renamed files are retired, unsynced
    inodes.append(path.stat().st_ino)
    synced: list[int] = []
    real_fsync = os.fsync

    def failing_first(fd: int) -> None:
        inode = os.fstat(fd).st_ino
        if inode == inodes[0]:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)
        synced.append(inode)

    monkeypatch.setattr(os, "fsync", failing_first)
    with pytest.raises(SinkError, match="Input/output error"):
        sink.flush()
    assert sorted(synced) == sorted(inodes[1:])
    monkeypatch.setattr(os, "fsync", real_fsync)
    sink.close()


def test_a_record_that_fails_after_retiring_a_file_still_wakes_the_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record reopens a renamed log (retiring the old descriptor, unsynced), then its
    write fails: the old file's fsync is due now, not at the next record or at close."""
    path = tmp_path / "receipts.jsonl"
    sink = sink_synced_by_hand(path, monkeypatch)
    record(sink, 1, 0)
    sink.flush()
    sink._wake.clear()
    path.rename(tmp_path / "receipts.jsonl-old")
    real_write = os.write

    def failing_write(fd: int, data: Any) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(SinkError):
        record(sink, 1, 1)
    monkeypatch.setattr(os, "write", real_write)
    assert sink._retired and sink._wake.is_set()
    sink.close()


def test_flush_waits_for_the_syncs_before_it_not_for_those_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync that starts while a flush is in its own fsync (a later line, another thread)
    is not the flush's to wait for: here it cannot finish until the flush has returned."""
    path = tmp_path / "receipts.jsonl"
    sink = sink_synced_by_hand(path, monkeypatch)
    record(sink, 1, 0)
    later_in_fsync, flush_returned = threading.Event(), threading.Event()
    real_fsync = os.fsync
    later = threading.Thread(target=sink._sync, name="later")
    waited: list[bool] = []

    def ordered_fsync(fd: int) -> None:
        name = threading.current_thread().name
        if name == "flusher":  # the flush's own fsync: a later line and its sync start now
            record(sink, 1, 1)
            later.start()
            assert later_in_fsync.wait(20)
        elif name == "later":
            later_in_fsync.set()
            waited.append(flush_returned.wait(20))  # False: the flush waited for this one
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", ordered_fsync)

    def flush() -> None:
        sink.flush()
        flush_returned.set()

    flusher = threading.Thread(target=flush, name="flusher")
    flusher.start()
    flusher.join(20)
    later.join(20)
    assert waited == [True] and not later.is_alive()
    monkeypatch.setattr(os, "fsync", real_fsync)
    sink.close()


def test_flush_gives_up_on_an_fsync_that_hangs_with_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync thread's fsync hangs (a dead disk): a flush waits for it at most
    FLUSH_WAIT_S, then reports that it could not make the lines durable."""
    monkeypatch.setattr(sink_module, "FLUSH_WAIT_S", 0.05)
    path = tmp_path / "receipts.jsonl"
    sink = sink_synced_by_hand(path, monkeypatch)
    record(sink, 1, 0)
    hanging, unhang = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def hung_fsync(fd: int) -> None:
        if threading.current_thread().name == "hung":
            hanging.set()
            assert unhang.wait(20)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", hung_fsync)
    hung = threading.Thread(target=sink._sync, name="hung")
    hung.start()
    assert hanging.wait(20)
    with pytest.raises(SinkError, match="an fsync under way took more than"):
        sink.flush()
    unhang.set()
    hung.join(20)
    sink.close()


def test_a_closed_sink_starts_no_sync_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() whose flush failed leaves lines unsynced; the records refused after it do
    not start a sync thread each."""
    path = tmp_path / "receipts.jsonl"
    sink = JsonlSink(path, fsync="interval", fsync_interval=3600)
    record(sink, 1, 0)
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(SinkError):
        sink.close()
    monkeypatch.setattr(os, "fsync", real_fsync)
    started: list[int] = []
    monkeypatch.setattr(sink, "_ensure_sync_thread", lambda: started.append(1))
    for index in range(1, 4):
        with pytest.raises(SinkError, match="closed"):
            record(sink, 1, index)
    assert started == []


@pytest.mark.parametrize("busy_for", [1, 3, None])
def test_a_record_that_must_not_wait_retries_a_briefly_held_log_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busy_for: int | None
) -> None:
    """Another process's append holds the flock for tens of microseconds: under
    ``without_waiting`` the record tries again (spinning, never sleeping) for up to
    ``SPIN_S`` before ``SinkBusy``. Here the flock is refused ``busy_for`` times (every time
    for ``None``); the spin is set long for the first cases, so the outcome does not depend
    on how fast this machine is."""
    path = tmp_path / "receipts.jsonl"
    sink = JsonlSink(path, fsync="never")
    record(sink, 1, 0)
    monkeypatch.setattr(sink_module, "SPIN_S", 20.0 if busy_for is not None else 0.0)
    refusals: list[int] = []
    real_flock = fcntl.flock

    def busy_flock(fd: int, operation: int) -> None:
        if operation & fcntl.LOCK_EX and (busy_for is None or len(refusals) < busy_for):
            refusals.append(operation)
            raise BlockingIOError(errno.EWOULDBLOCK, "Resource temporarily unavailable")
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", busy_flock)
    slept: list[float] = []
    monkeypatch.setattr(sink_module.time, "sleep", slept.append)
    if busy_for is None:
        with pytest.raises(SinkBusy):
            without_waiting(sink.record, request_signer(1))
    else:
        without_waiting(sink.record, request_signer(1))
        assert len(refusals) == busy_for
    assert slept == []
    monkeypatch.undo()
    sink.close()
    assert seqs(path) == ([1] if busy_for is None else [1, 2])


def test_the_lock_file_is_recreated_when_removed(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    sink = JsonlSink(path, fsync="never")
    record(sink, 1, 0)
    Path(f"{path}.lock").unlink()
    other = JsonlSink(path, fsync="never")
    record(sink, 1, 1)
    record(other, 1, 2)
    assert Path(f"{path}.lock").exists()
    sink.close()
    other.close()
    assert seqs(path) == [1, 2, 3]


def test_a_record_reopens_only_what_was_renamed_replaced_or_rotated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sink tells its own files from the path's by the identities it took when it opened
    them: steady records open nothing, and each rename, replacement or rotation makes exactly
    the one reopen that follows the path."""
    path = tmp_path / "receipts.jsonl"
    lock = Path(f"{path}.lock")
    opened: list[str] = []
    real_open = os.open

    def counting_open(name: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:  # the files it writes (it also reads older logs for links)
            opened.append(Path(name).name)
        return real_open(name, flags, *args, **kwargs)

    sink = JsonlSink(path, fsync="never")
    monkeypatch.setattr(os, "open", counting_open)
    record(sink, 5, 0)
    assert opened == []
    path.rename(tmp_path / "receipts.jsonl-20261201")
    record(sink, 3, 5)
    assert opened == ["receipts.jsonl"]  # once, by the first record after the rename

    replacement = tmp_path / "other.lock"
    replacement.touch()
    os.replace(replacement, lock)
    opened.clear()
    record(sink, 2, 8)
    assert opened == ["receipts.jsonl.lock"]
    holder = real_open(lock, os.O_RDWR)  # the file the path names now is the one locked
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(SinkBusy):
            sink.try_record(request_signer(10))
    finally:
        os.close(holder)
    sink.close()
    assert seqs(path) == list(range(6, 11))

    opened.clear()
    small = JsonlSink(tmp_path / "small.jsonl", fsync="never", max_bytes=1, backups=3)
    opened.clear()
    record(small, 4, 0)  # every record after the first rotates: one open each, no more
    assert opened == ["small.jsonl"] * 3
    small.close()


def test_bad_lock_timeout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lock_timeout"):
        JsonlSink(tmp_path / "r.jsonl", lock_timeout=0)
