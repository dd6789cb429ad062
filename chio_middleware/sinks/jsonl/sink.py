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

Durability (``fsync``): ``"always"`` fsyncs before :meth:`JsonlSink.record` returns;
``"interval"`` (default) leaves it to a daemon thread that fsyncs at most every
``fsync_interval`` seconds while there are unsynced lines, so a caller (an ASGI event loop)
never waits on the disk; ``"never"`` leaves it to the OS. :meth:`JsonlSink.flush` fsyncs
now under every policy, :meth:`JsonlSink.close` flushes and stops the thread, and an
``atexit`` hook flushes, so a clean shutdown loses nothing. Any ``OSError`` (disk full,
permission) becomes :class:`~chio_middleware.sinks.SinkError`: the middleware fails closed.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ...core.canonical import JsonParseError, parse_json
from ...core.crypto import sha256_hex
from ...core.models import HttpReceipt
from ...core.receipts import receipt_json
from ...logs import get_logger
from .. import SignReceipt, SinkError
from .chain import PREV_KEY, SEQ_KEY

__all__ = ["FSYNC_POLICIES", "JsonlSink"]

FSYNC_POLICIES = ("always", "interval", "never")

_log = get_logger()
_TAIL_BLOCK = 64 * 1024


@dataclass(frozen=True, slots=True)
class _TailState:
    seq: int
    prev: str
    file_id: tuple[int, int, int]  # (device, inode, size) of the log after our last write


#: Below this much free space on the log's file system, ``ready()`` refuses new requests.
MIN_FREE_BYTES = 1 << 20


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
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        if max_bytes < 0 or backups < 0:
            raise ValueError("max_bytes and backups must not be negative")
        if not fsync_interval > 0:
            raise ValueError("fsync_interval must be positive")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        #: ``record`` waits on the disk: the ASGI adapter then runs it in a worker thread.
        self.blocking = fsync == "always"
        self._lock = threading.Lock()
        self._closed = False
        self._dirty = False
        self._retired: list[int] = []  # descriptors of rotated files still to fsync and close
        self._state: _TailState | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._fd = -1
        self._lock_fd = -1
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open_descriptors()
        except OSError as exc:
            raise SinkError(f"cannot open receipt log {self.path}: {exc.strerror}") from exc
        atexit.register(self._flush_at_exit)

    # -- recording

    def ready(self) -> None:
        """Raise ``SinkError`` when a receipt could not be written now (before the app runs).

        Catches a closed sink, a log that cannot be opened and a full disk: the failures
        that would otherwise show only when the response starts, after the app has run.
        """
        if self._closed:
            raise SinkError("receipt sink is closed")
        try:
            stats = os.statvfs(self.path.parent)
        except OSError as exc:
            raise SinkError(f"receipt log directory unavailable: {exc.strerror}") from None
        if stats.f_bavail * stats.f_frsize < MIN_FREE_BYTES:
            raise SinkError("no free space left for the receipt log")

    def record(self, sign: SignReceipt) -> HttpReceipt:
        """Sign the receipt with the next chain position and append its line (module docs)."""
        with self._lock:
            if self._closed:
                raise SinkError("receipt sink is closed")
            try:
                if self._pid != os.getpid():
                    self._reopen_after_fork()
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
                try:
                    receipt = self._append(sign)
                finally:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                if self.fsync == "always":
                    os.fsync(self._fd)
                    self._dirty = False
            except OSError as exc:
                raise SinkError(f"cannot append to {self.path}: {exc.strerror}") from exc
        if self.fsync == "interval":
            self._ensure_sync_thread()
            self._wake.set()
        return receipt

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
        self._state = _TailState(
            state.seq + 1, sha256_hex(line), (st.st_dev, st.st_ino, size + written)
        )
        return receipt

    def _current_stat(self) -> os.stat_result:
        """The stat of ``path``, reopening when another process rotated or removed it."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        mine = os.fstat(self._fd)
        if st is None or (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
            self._retire(self._fd)
            self._fd = self._open_log()
            st = os.fstat(self._fd)
        return st

    def _read_state(self, st: os.stat_result) -> _TailState:
        """Find the last chained line: in the current file, else in the newest backup."""
        link = _last_link_in(self._fd, st.st_size)
        index = 1
        while link is None and index <= max(self.backups, 1):
            try:
                fd = os.open(f"{self.path}.{index}", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                break
            try:
                link = _last_link_in(fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)
            index += 1
        seq, prev = link if link is not None else (0, "")
        return _TailState(seq, prev, _file_id(st))

    def _rotate(self) -> os.stat_result:
        """Shift the backups, move the log to ``.1`` and open a fresh file."""
        for index in range(self.backups - 1, 0, -1):
            source = f"{self.path}.{index}"
            if os.path.exists(source):
                os.replace(source, f"{self.path}.{index + 1}")
        os.replace(self.path, f"{self.path}.1")
        self._retire(self._fd)
        self._fd = self._open_log()
        if self.fsync == "always":
            self._fsync_directory()
        return os.fstat(self._fd)

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
        return os.open(self.path, flags, 0o644)

    def _open_descriptors(self) -> None:
        self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._fd = self._open_log()

    def _reopen_after_fork(self) -> None:
        """In a forked child: own descriptors (a shared flock excludes nothing), no thread."""
        for fd in (self._fd, self._lock_fd, *self._retired):
            os.close(fd)
        self._retired = []
        self._thread = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pid = os.getpid()
        self._open_descriptors()

    def _retire(self, fd: int) -> None:
        """Hand a rotated file's descriptor to the next sync (or close it now)."""
        if self.fsync == "always":
            os.fsync(fd)
        if self.fsync == "interval" and self._dirty:
            self._retired.append(fd)
        else:
            os.close(fd)

    def _fsync_directory(self) -> None:
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- durability

    def _ensure_sync_thread(self) -> None:
        thread = self._thread
        if thread is None or not thread.is_alive():
            thread = threading.Thread(
                target=self._sync_loop, name="chio-receipt-fsync", daemon=True
            )
            self._thread = thread
            thread.start()

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
        """fsync what was written so far; the disk wait happens outside the lock."""
        with self._lock:
            if self._fd < 0 or self._pid != os.getpid():
                return
            retired, self._retired = self._retired, []
            current = os.dup(self._fd) if self._dirty or retired else -1
            self._dirty = False
        try:
            for fd in (*retired, current):
                if fd >= 0:
                    os.fsync(fd)
        except OSError:
            with self._lock:
                self._dirty = True
            raise
        finally:
            for fd in (*retired, current):
                if fd >= 0:
                    os.close(fd)

    def flush(self) -> None:
        """fsync everything recorded so far, now (whatever the policy)."""
        try:
            self._sync()
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
                    for fd in (self._fd, self._lock_fd):
                        os.close(fd)
                self._fd = self._lock_fd = -1
