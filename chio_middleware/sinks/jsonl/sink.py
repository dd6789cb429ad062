"""The writer of the chained receipt log (format: :mod:`chio_middleware.sinks.jsonl`).

Rotation is by size, like ``logging.handlers.RotatingFileHandler``: before a line would
take ``receipts.jsonl`` past ``max_bytes``, ``.N-1`` becomes ``.N`` ... ``receipts.jsonl``
becomes ``.1`` (the oldest, ``.backups``, is overwritten) and a new file starts; the chain
continues into it. Rotation never happens when ``max_bytes`` or ``backups`` is 0.

Concurrency: threads of one process and workers in several processes may share one log.
A writer holds the sink's thread lock and an exclusive ``fcntl.flock`` on the sidecar file
``<path>.lock`` while it reads the tail state, signs, appends and rotates. The lock lives on
a sidecar, not on the log, because rotation renames the log: a lock on the log's inode
would stop guarding the file that is current. The tail state (last seq and line hash) is
cached and re-read only when the log's device, inode or size differ from what our own last
write left (another worker wrote or rotated). Each line is appended with one ``os.write``
on an ``O_APPEND`` descriptor. A process forked from one that opened the sink reopens its
descriptors on first use, so it never shares the parent's flock.

Descriptors: every descriptor the sink holds is owned by exactly one place (the current
log, the lock file, or the list of rotated files waiting for their last fsync), and a
reopen opens the new descriptor before it retires the old one: when the reopen fails (the
directory was removed, made read-only, the disk is full) the sink keeps the descriptor it
had, the record fails (503) and the next record tries again, so service resumes by itself
as soon as the path is writable again. A number is closed once, and never used after.

Bounded waits: a writer waits at most ``lock_timeout`` seconds for the thread lock and the
``flock`` together (``receipt_lock_timeout``); past it the record raises ``SinkError`` (503),
so a process that holds ``<path>.lock`` cannot stall the service. Under
:func:`~chio_middleware.sinks.without_waiting` (and in :meth:`JsonlSink.try_record`) it
waits no longer than another process's append takes (it retries the ``flock`` for up to
``SPIN_S``, 100 us, never sleeping), then raises :class:`~chio_middleware.sinks.SinkBusy`
instead, and the ASGI adapter
then waits in a worker thread, never on the event loop (one at a time per loop while it is
quick: ``ChioMiddleware._hop``). The fsync thread never holds the lock a record takes (see
``JsonlSink.__init__``).

Rotation by others: a log renamed behind the sink's back (logrotate's ``create`` with
``dateext``, a manual ``mv``) is noticed by its inode; the sink opens a new file at
``path`` and its first line links to the last line of the renamed file, read through the
descriptor the sink still holds on it, wherever it went. A log truncated in place
(``copytruncate``) is noticed by its size; the next line continues from the last line this
process wrote, so receipts lost between logrotate's copy and its truncation show as a gap in
``verify``. A sink that starts on an empty log looks for the chain's end in ``<path>.1`` ...
and in the newest files named ``<path>*`` (logrotate's dated files); the highest seq wins.

Durability (``fsync``): ``"always"`` fsyncs before :meth:`JsonlSink.record` returns;
``"interval"`` (default) leaves it to a daemon thread that fsyncs at most every
``fsync_interval`` seconds while there are unsynced lines, so a caller (an ASGI event loop)
never waits on the disk; ``"never"`` leaves it to the OS. :meth:`JsonlSink.flush` fsyncs
now under every policy (and waits, at most ``FLUSH_WAIT_S``, for an fsync the thread has
under way), :meth:`JsonlSink.close` flushes and stops the thread, and an
``atexit`` hook flushes, so a clean shutdown loses nothing. Any ``OSError`` (disk full,
permission) becomes :class:`~chio_middleware.sinks.SinkError`: the middleware fails closed.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import os
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ...core.canonical import JsonParseError, parse_json
from ...core.crypto import sha256_hex
from ...core.models import HttpReceipt
from ...core.receipts import receipt_json
from ...logs import get_logger
from .. import SignReceipt, SinkBusy, SinkError, must_not_wait
from .chain import PREV_KEY, SEQ_KEY

__all__ = ["FSYNC_POLICIES", "JsonlSink"]

FSYNC_POLICIES = ("always", "interval", "never")

_log = get_logger()
_TAIL_BLOCK = 64 * 1024
#: Newest files named ``<log>*`` a starting sink reads for the chain's end.
_SIBLINGS_READ = 3


@dataclass(frozen=True, slots=True)
class _TailState:
    seq: int
    prev: str  # the hash of the last line: the next line's chio_log_prev
    file_id: tuple[int, int, int]  # (device, inode, size) of the log after our last write


#: Below this much free space on the log's file system, ``ready()`` refuses new requests.
MIN_FREE_BYTES = 1 << 20
#: How long ``flush`` waits for an fsync another thread has under way (a disk that hangs).
FLUSH_WAIT_S = 30.0
#: How long a record that must not wait (``without_waiting``, ``try_record``) retries the
#: log's ``flock`` held by another process before ``SinkBusy``: a spin, never a sleep.
SPIN_S = 100e-6


def _file_id(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_dev, st.st_ino, st.st_size


def _reverse_lines(fd: int, size: int) -> Iterator[bytes]:
    """A file's pieces between newlines, last first (first: what follows the last newline)."""
    end = size
    carry = b""  # the end of a line whose start lies in an earlier block
    while end > 0:
        start = max(0, end - _TAIL_BLOCK)
        pieces = (os.pread(fd, end - start, start) + carry).split(b"\n")
        end = start
        carry = pieces[0]
        yield from reversed(pieces[1:])
    yield carry


def _last_link_in(fd: int, size: int) -> tuple[int, str] | None:
    """The seq and hash of the last chained receipt line of an open file."""
    pieces = _reverse_lines(fd, size)
    next(pieces)  # after the last newline: empty, or an interrupted write (never chained)
    for line in pieces:
        try:
            obj = parse_json(line)
        except JsonParseError:
            continue
        metadata = obj.get("metadata") if isinstance(obj, dict) else None
        seq = metadata.get(SEQ_KEY) if isinstance(metadata, dict) else None
        if type(seq) is int and seq >= 1:
            return seq, sha256_hex(line)
    return None


_SINKS: weakref.WeakSet[JsonlSink] = weakref.WeakSet()


def _reset_locks_in_child() -> None:
    for sink in list(_SINKS):
        sink._after_fork_in_child()


class JsonlSink:
    """Appends each receipt as a chained line of canonical JSON to ``path`` (module docs)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 50 * 2**20,
        backups: int = 5,
        fsync: str = "interval",
        fsync_interval: float = 1.0,
        lock_timeout: float = 1.0,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        if max_bytes < 0 or backups < 0:
            raise ValueError("max_bytes and backups must not be negative")
        if not fsync_interval > 0:
            raise ValueError("fsync_interval must be positive")
        if not lock_timeout > 0:
            raise ValueError("lock_timeout must be a positive number of seconds")
        self._path = Path(path)
        # The names the per-receipt calls pass to ``os``, formatted once: pathlib's formatting
        # was about a quarter of the sink's own bytecodes per receipt.
        self._name = os.fspath(self._path)
        self._dir_name = os.fspath(self._path.parent)
        self._lock_name = f"{self._name}.lock"
        self.max_bytes = max_bytes
        self.backups = backups
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.lock_timeout = lock_timeout
        #: ``record`` waits on the disk: the ASGI adapter then runs it in a worker thread.
        self.blocking = fsync == "always"
        self._lock = threading.Lock()  # held by a record, for its whole chained append
        # The sync thread takes only this one, never ``_lock``, and holds it for a dup: it
        # guards the descriptors' lifetime (``_fd`` and ``_retired`` are closed under it),
        # which the per-receipt path never changes. Were the thread to take ``_lock``, an
        # event loop's record would find it held for as long as the thread waits for the
        # GIL (up to a switch interval, 5 ms), and would record in a worker thread: hops
        # that fed each other (43 % of the receipts of a uvicorn load run).
        self._fd_lock = threading.Lock()
        self._tickets = 0  # the number of the next sync
        self._running: set[int] = set()  # numbers of the syncs that have not finished
        self._synced = threading.Condition(self._fd_lock)  # notified as each one finishes
        self._closed = False
        self._dirty = False  # set after each write; cleared by a sync before its fsync
        self._retired: list[int] = []  # descriptors of rotated files still to fsync and close
        self._state: _TailState | None = None
        self._carry: tuple[int, str] | None = None  # last link of a file renamed behind us
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_failed = False  # the last start of the sync thread failed (logged once)
        self._inline_sync_failed = False  # the last fsync a record made itself failed (logged)
        self._pid = os.getpid()
        self._fd = -1  # the current log; -1 when a reopen failed (retried at the next record)
        self._fd_id: tuple[int, int] | None = None  # (device, inode) of _fd, fixed while open
        self._lock_fd = -1
        self._lock_id = (0, 0)  # (device, inode) of the lock file _lock_fd holds
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open_descriptors()
        except OSError as exc:
            self._release_all()
            raise SinkError(f"cannot open receipt log {self.path}: {exc.strerror}") from exc
        atexit.register(self._flush_at_exit)
        _SINKS.add(self)

    @property
    def path(self) -> Path:
        """The log's path (fixed at construction: the names the writes use derive from it)."""
        return self._path

    def _after_fork_in_child(self) -> None:
        # A fork while another thread (the fsync thread) held the lock would leave the
        # child's copy held forever, so every receipt of that worker would time out.
        self._lock = threading.Lock()
        self._fd_lock = threading.Lock()
        self._running = set()  # the parent's syncs are not the child's
        self._synced = threading.Condition(self._fd_lock)

    # -- recording

    def ready(self) -> None:
        """Raise ``SinkError`` when a receipt could not be written now (before the app runs).

        Catches a closed sink, a log directory that is gone and a full disk: the failures
        that would otherwise show only when the response starts, after the app has run.
        It looks at the file system on every call (one ``statvfs``, about 1.6 us): a cached
        answer would let the requests of the cached interval act without a receipt (issue
        13 suggested a timer; an outside review measured 20 concurrent requests run by the
        app after the directory was removed, with one second of cache).
        """
        if self._closed:
            raise SinkError("receipt sink is closed")
        try:
            stats = os.statvfs(self._dir_name)
        except OSError as exc:
            raise SinkError(f"receipt log directory unavailable: {exc.strerror}") from None
        if stats.f_bavail * stats.f_frsize < MIN_FREE_BYTES:
            raise SinkError("no free space left for the receipt log")

    def record(self, sign: SignReceipt) -> HttpReceipt:
        """Sign the receipt with the next chain position and append its line (module docs).

        Waits at most ``lock_timeout`` seconds for the log lock, then raises ``SinkError``;
        under :func:`~chio_middleware.sinks.without_waiting` it never waits (``SinkBusy``).
        """
        if must_not_wait():
            return self.try_record(sign)
        return self._record(sign, wait=True)

    def try_record(self, sign: SignReceipt) -> HttpReceipt:
        """:meth:`record` without waiting (beyond ``SPIN_S`` for another process's append):
        ``SinkBusy`` (nothing signed) when it would wait."""
        if self.blocking:
            raise SinkBusy("fsync=always waits on the disk")
        return self._record(sign, wait=False)

    def _record(self, sign: SignReceipt, *, wait: bool) -> HttpReceipt:
        deadline = time.monotonic() + self.lock_timeout
        locked = (
            self._lock.acquire(timeout=self.lock_timeout) if wait else self._lock.acquire(False)
        )
        if not locked:
            if not wait:
                raise SinkBusy("another thread is writing")
            raise SinkError(self._lock_timeout_message("another thread of this process"))
        try:
            if self._closed:
                raise SinkError("receipt sink is closed")
            try:
                if self._pid != os.getpid():
                    self._reopen_after_fork()
                self._lock_log(deadline, wait=wait)
                try:
                    receipt = self._append(sign)
                finally:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                if self.fsync == "always":
                    os.fsync(self._fd)
                    self._dirty = False
            except OSError as exc:
                raise SinkError(f"cannot append to {self.path}: {exc.strerror}") from exc
        finally:
            try:
                # Also when the record failed: a file it retired before failing (a rotation,
                # a reopen) waits for this sync, not for the next record. Under the lock:
                # two records that both found no thread would start two.
                if self.fsync == "interval" and not self._closed and (self._dirty or self._retired):
                    self._ensure_sync_thread()
                    # Already set: the sync thread has not cleared it yet; it clears it before
                    # it syncs, and this line is written by then, so that sync covers it.
                    # Setting it again costs a lock.
                    if not self._wake.is_set():
                        self._wake.set()
            finally:
                self._lock.release()
        return receipt

    def _lock_timeout_message(self, holder: str) -> str:
        return (
            f"the receipt log {self.path} is locked by {holder} for longer than "
            f"receipt_lock_timeout ({self.lock_timeout} s)"
        )

    def _lock_log(self, deadline: float, *, wait: bool) -> None:
        """Hold the ``flock`` of the lock file ``<path>.lock`` names now, until ``deadline``."""
        pause = 0.0002
        # A lock file we hold is locked first and checked after: the check below finds it
        # removed or replaced, so a stat before the flock would only repeat it.
        check = self._lock_fd < 0
        spin_until: float | None = None
        while True:
            if check:
                self._ensure_lock_file()
            check = True
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    # Another process's append holds the lock for tens of microseconds:
                    # try again for up to SPIN_S before giving up (SinkBusy: a worker
                    # thread). With two uvicorn workers sharing a log, 34 % of receipts
                    # went to a worker thread without this, 1 % with it, and requests/s
                    # rose by a third (BENCHMARKS.md, "Receipts in worker threads").
                    now = time.perf_counter()
                    if spin_until is None:
                        spin_until = now + SPIN_S
                    if now < spin_until:
                        check = False
                        continue
                    raise SinkBusy("another process holds the log lock") from None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SinkError(self._lock_timeout_message("another process")) from None
                time.sleep(min(pause, left))
                pause = min(pause * 2, 0.002)
                continue
            if self._lock_id == _identity(self._lock_name):
                return
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)  # replaced while we waited: lock the new

    def _ensure_lock_file(self) -> None:
        """Hold the lock file the path names (it may have been removed or replaced)."""
        if self._lock_fd >= 0 and self._lock_id == _identity(self._lock_name):
            return
        new = os.open(self._lock_name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        old, self._lock_fd = self._lock_fd, new
        st = os.fstat(new)
        self._lock_id = (st.st_dev, st.st_ino)
        if old >= 0:
            self._release(old)

    def _append(self, sign: SignReceipt) -> HttpReceipt:
        st = self._current_stat()
        size = st.st_size
        state = self._state
        terminated = True  # our own last write ended with a newline
        if state is None or state.file_id != _file_id(st):
            state = self._read_state(st)
            terminated = not size or os.pread(self._fd, 1, size - 1) == b"\n"
        receipt = sign({SEQ_KEY: state.seq + 1, PREV_KEY: state.prev})
        line = receipt_json(receipt)
        # After an interrupted write, a newline first so that our line stands alone.
        data = line + b"\n" if terminated else b"\n" + line + b"\n"
        if self.max_bytes and self.backups and size and size + len(data) > self.max_bytes:
            st = self._rotate()
            size, data = 0, line + b"\n"
        try:
            written = os.write(self._fd, data)
        except OSError:
            self._undo_partial(size)
            raise
        if written != len(data):
            self._undo_partial(size)
            raise OSError(28, "short write (disk full?)")
        self._dirty = True
        self._carry = None
        self._state = _TailState(
            state.seq + 1, sha256_hex(line), (st.st_dev, st.st_ino, size + written)
        )
        return receipt

    def _current_stat(self) -> os.stat_result:
        """The stat of ``path``, reopening when it is not the file we hold (renamed, removed,
        or never reopened after a failure)."""
        try:
            st: os.stat_result | None = os.stat(self._name)
        except FileNotFoundError:
            st = None
        # An open descriptor's device and inode never change: they are taken once, when the
        # descriptor becomes the current log, not from an fstat per receipt.
        if self._fd >= 0 and st is not None and (st.st_dev, st.st_ino) == self._fd_id:
            return st
        new = self._open_log()  # on failure the old descriptor stays ours, and stays open
        old = self._fd
        try:
            if old >= 0:  # where the chain ended, in the file that was renamed behind our back
                self._carry = _last_link_in(old, os.fstat(old).st_size) or self._carry
        finally:
            self._swap_log(new)
        return self._log_stat()

    def _read_state(self, st: os.stat_result) -> _TailState:
        """Find the last chained line: in the current file, else the highest seq known."""
        link = _last_link_in(self._fd, st.st_size)
        if link is None:
            known = [self._carry, *self._backup_links()]
            if self._state is not None:  # truncated in place: our own last line
                known.append((self._state.seq, self._state.prev))
            link = max((k for k in known if k is not None), default=None)
        seq, prev = link if link is not None else (0, "")
        return _TailState(seq, prev, _file_id(st))

    def _backup_links(self) -> list[tuple[int, str] | None]:
        """The last links of ``<path>.1`` ... and of the newest other files named ``<path>*``."""
        names = []
        index = 1
        while index <= max(self.backups, 1) and os.path.exists(f"{self.path}.{index}"):
            names.append(f"{self.path}.{index}")
            index += 1
        try:
            siblings = [
                entry
                for entry in os.scandir(self.path.parent)
                if entry.name.startswith(self.path.name)
                and entry.path not in names
                and entry.name not in (self.path.name, f"{self.path.name}.lock")
                and entry.is_file()
            ]
            siblings.sort(key=lambda entry: entry.stat().st_mtime, reverse=True)
        except OSError:
            siblings = []
        names.extend(entry.path for entry in siblings[:_SIBLINGS_READ])
        links = []
        for name in names:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                links.append(_last_link_in(fd, os.fstat(fd).st_size))
            finally:
                self._release(fd)
        return links

    def _rotate(self) -> os.stat_result:
        """Shift the backups, move the log to ``.1`` and open a fresh file."""
        for index in range(self.backups - 1, 0, -1):
            source = f"{self.path}.{index}"
            if os.path.exists(source):
                os.replace(source, f"{self.path}.{index + 1}")
        os.replace(self.path, f"{self.path}.1")
        # If this open fails, our descriptor is the file now at ``.1``: the next record
        # finds ``path`` missing, reopens, and links to that file's last line.
        new = self._open_log()
        self._swap_log(new)
        if self.fsync == "always":
            self._fsync_directory()
        return self._log_stat()

    def _undo_partial(self, size: int) -> None:
        """Cut a failed append back to ``size`` so no partial line stays (best effort)."""
        try:
            os.ftruncate(self._fd, size)
        except OSError:
            _log.warning("chio_receipt_log_truncate_failed", path=str(self.path))
        self._state = None

    # -- descriptors

    def _open_log(self) -> int:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        return os.open(self._name, flags, 0o644)

    def _adopt_log(self, new: int) -> int:
        """Make ``new`` the current log; the descriptor it replaces is returned, to retire."""
        old, self._fd, self._fd_id = self._fd, new, None
        return old

    def _log_stat(self) -> os.stat_result:
        """fstat the current log, and remember its identity (see ``_current_stat``)."""
        st = os.fstat(self._fd)
        self._fd_id = (st.st_dev, st.st_ino)
        return st

    def _open_descriptors(self) -> None:
        self._ensure_lock_file()
        old = self._adopt_log(self._open_log())
        if old >= 0:  # both callers hold none; should one not, it is not leaked
            self._release(old)
        self._log_stat()

    def _reopen_after_fork(self) -> None:
        """In a forked child: own descriptors (a shared flock excludes nothing), no thread."""
        self._release_all()
        self._thread = None
        self._thread_failed = self._inline_sync_failed = False  # the child logs its own
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pid = os.getpid()
        self._open_descriptors()  # on failure: nothing held; the next record opens again

    def _release_all(self) -> None:
        """Close every descriptor held, after forgetting it (so none is closed twice)."""
        with self._fd_lock:
            held = [self._fd, self._lock_fd, *self._retired]
            self._fd = self._lock_fd = -1
            self._fd_id = None
            self._lock_id = (0, 0)
            self._retired = []
            for fd in held:
                if fd >= 0:
                    self._release(fd)

    def _release(self, fd: int) -> None:
        """Close a descriptor no field refers to any more; the number is freed either way."""
        try:
            os.close(fd)
        except OSError as exc:
            _log.warning("chio_receipt_log_close_failed", path=str(self.path), error=exc.strerror)

    def _swap_log(self, new: int) -> None:
        """Make ``new`` the current log and retire the one it replaces, as one step for a
        sync (both under ``_fd_lock``): a sync between the two would take the new file as
        all there is to fsync, and a ``flush`` would return with the old file's last lines
        unsynced."""
        with self._fd_lock:  # a sync may be taking its dup (never a disk wait)
            old = self._adopt_log(new)
            if old < 0:
                return
            if self.fsync == "interval":
                self._retired.append(old)  # the next sync fsyncs and closes it
                return
            try:
                if self.fsync == "always":
                    os.fsync(old)
            finally:
                self._release(old)

    def _fsync_directory(self) -> None:
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            self._release(fd)

    # -- durability

    def _ensure_sync_thread(self) -> None:
        """Start the sync thread unless it runs (called with ``_lock`` held).

        A thread that cannot start (``RuntimeError``: the process is out of threads) does
        not fail the record, whose line is written (a 503 would answer for a response whose
        receipt is in the log): a record that may wait fsyncs itself instead, as under
        ``fsync="always"``; one that must not (an event loop's, ``without_waiting``) leaves
        its line to the next record that may, to ``flush`` or to exit. The first failure is
        logged, and each record tries the thread again.
        """
        thread = self._thread
        if thread is None or not thread.is_alive():
            thread = threading.Thread(
                target=self._sync_loop, name="chio-receipt-fsync", daemon=True
            )
            try:
                thread.start()
            except RuntimeError as exc:
                self._thread = None
                self._sync_without_thread(exc)
                return
            self._thread_failed = False
            self._thread = thread

    def _sync_without_thread(self, exc: RuntimeError) -> None:
        """What a record does when the sync thread cannot start (``_ensure_sync_thread``)."""
        if not self._thread_failed:
            _log.warning(
                "chio_receipt_log_fsync_thread_failed",
                path=str(self.path),
                error=str(exc),
                message=(
                    "each receipt is fsynced by the record that may wait (WSGI, a worker "
                    "thread), else by the next such record, flush or exit"
                ),
            )
        self._thread_failed = True
        if must_not_wait():  # an event loop's record: the disk wait is not for it
            return
        try:
            self._sync()
        except OSError as sync_error:
            if not self._inline_sync_failed:  # once, as the thread logs once a round
                _log.warning(
                    "chio_receipt_log_fsync_failed", path=str(self.path), error=sync_error.strerror
                )
            self._inline_sync_failed = True
            return
        self._inline_sync_failed = False

    def _sync_loop(self) -> None:
        while True:
            self._wake.wait()
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                self._sync()
            except OSError as exc:
                _log.warning(
                    "chio_receipt_log_fsync_failed", path=str(self.path), error=exc.strerror
                )
            if self._stop.wait(self.fsync_interval):
                return

    def _sync(self) -> None:
        """fsync what was written so far; the disk wait happens outside any lock.

        Takes ``_fd_lock`` only (see ``__init__``). ``_dirty`` needs no lock: a record sets
        it after its write, and this clears it only once it holds a dup of the current log,
        before the fsync. A write before the clear is in that file (a record that adopts
        another file retires the old one under ``_fd_lock`` before it writes), so the fsync
        covers it; a write after it sets it again for the next sync. Cleared without a dup,
        it could swallow a record's ``True`` set since it was read.
        """
        self._sync_now(wait_for_others=False)

    def _sync_now(self, *, wait_for_others: bool) -> None:
        """``_sync``; with ``wait_for_others``, returns only once the syncs that were under
        way when it began (the sync thread's) have finished too, or raises ``OSError``
        (ETIMEDOUT) after ``FLUSH_WAIT_S``: what ``flush`` promises. Each descriptor is
        fsynced even when another's fsync failed; the first error is raised after."""
        errors: list[OSError] = []
        with self._fd_lock:
            if self._pid != os.getpid():
                return
            ticket = self._tickets
            self._tickets += 1
            current = -1
            if self._fd >= 0 and (self._dirty or self._retired):
                current = os.dup(self._fd)
                self._dirty = False
            retired, self._retired = self._retired, []  # from here on, ours to close
            self._running.add(ticket)  # last: nothing above leaves it behind
        try:  # nothing between: an interrupt there would leave the ticket running
            for fd in (*retired, current):
                if fd >= 0:
                    try:
                        os.fsync(fd)
                    except OSError as exc:
                        errors.append(exc)
        finally:
            for fd in (*retired, current):
                if fd >= 0:
                    self._release(fd)
            with self._synced:
                self._running.discard(ticket)
                self._synced.notify_all()
        if errors:
            self._dirty = True
            raise errors[0]
        if wait_for_others:
            with self._synced:
                if not self._synced.wait_for(
                    lambda: min(self._running, default=ticket + 1) > ticket, FLUSH_WAIT_S
                ):
                    raise OSError(
                        errno.ETIMEDOUT, f"an fsync under way took more than {FLUSH_WAIT_S:g} s"
                    )

    def flush(self) -> None:
        """fsync everything recorded so far, now (whatever the policy)."""
        try:
            self._sync_now(wait_for_others=True)
        except OSError as exc:
            raise SinkError(f"cannot fsync {self.path}: {exc.strerror}") from exc

    def _flush_at_exit(self) -> None:
        try:
            self.flush()
        except SinkError as exc:
            _log.warning("chio_receipt_log_flush_failed", path=str(self.path), error=str(exc))

    def close(self) -> None:
        """Flush, stop the sync thread and close; later ``record`` calls raise ``SinkError``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join()
        atexit.unregister(self._flush_at_exit)
        try:
            self.flush()
        finally:
            with self._lock:
                if self._pid == os.getpid():
                    self._release_all()
                self._fd = self._lock_fd = -1
                self._fd_id = None


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of ``path``, ``None`` when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


os.register_at_fork(after_in_child=_reset_locks_in_child)
