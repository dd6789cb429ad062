"""Reading a receipt log: its files in order, their lines, and following it as it grows."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LogFollower", "LogLine", "log_files", "read_log_lines", "rotation_index"]

_ROTATED = re.compile(r"\.(\d+)$")


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a log file: where it is, its bytes without the newline, whether it ended."""

    path: str
    number: int
    raw: bytes
    complete: bool = True

    @property
    def where(self) -> str:
        """``file:line``."""
        return f"{self.path}:{self.number}"


def rotation_index(path: str | os.PathLike[str]) -> int | None:
    """``N`` for a rotated file ``<log>.N``, ``None`` for a current log file."""
    match = _ROTATED.search(os.fspath(path))
    return int(match.group(1)) if match else None


def log_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files of the log at ``path``, oldest first: ``path.N`` ... ``path.1``, ``path``."""
    base = Path(path)
    rotated: list[Path] = []
    index = 1
    while (candidate := Path(f"{base}.{index}")).exists():
        rotated.append(candidate)
        index += 1
    return [*reversed(rotated), *([base] if base.exists() else [])]


def read_log_lines(path: str | os.PathLike[str]) -> Iterator[LogLine]:
    """The lines of one file; a last line without newline has ``complete=False``."""
    name = os.fspath(path)
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            complete = raw.endswith(b"\n")
            yield LogLine(name, number, raw[:-1] if complete else raw, complete)


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


class LogFollower:
    """Reads a log as it grows, across rotation, like ``tail -F``.

    Each :meth:`poll` returns the complete lines appended since the previous one, starting
    with the whole current file. When the log was rotated since the last poll, the rest of
    the old file comes first, then any file rotated after it that was never read (found by
    inode among ``<log>.1``, ``<log>.2`` ...), then the new file; so every line is returned
    once even when several rotations happen between two polls. The caller decides when to
    poll (``tail --follow`` sleeps; tests call it at the points they choose).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd = -1
        self._id = (0, 0)
        self._position = 0
        self._number = 0
        self._partial = b""

    def poll(self) -> list[LogLine]:
        """The lines that became complete since the last call (see the class docs)."""
        if self._fd < 0 and not self._open():
            return []
        lines = self._drain()
        st = _stat(self.path)
        if st is not None and (st.st_dev, st.st_ino) == self._id:
            if st.st_size < self._position:  # truncated in place: start again
                os.lseek(self._fd, 0, os.SEEK_SET)
                self._position = self._number = 0
                self._partial = b""
                lines += self._drain()
            return lines
        lines += self._drain()  # what was written before the rotation
        if self._partial:
            self._number += 1
            lines.append(LogLine(self.path, self._number, self._partial, complete=False))
        old_id = self._id
        self.close()
        for missed in self._rotated_after(old_id):
            lines += read_log_lines(missed)
        if self._open():
            lines += self._drain()
        return lines

    def close(self) -> None:
        """Close the current file (a later :meth:`poll` reopens the log from its start)."""
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def _open(self) -> bool:
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        st = os.fstat(self._fd)
        self._id = (st.st_dev, st.st_ino)
        self._position = self._number = 0
        self._partial = b""
        return True

    def _drain(self) -> list[LogLine]:
        chunks = [self._partial]
        while chunk := os.read(self._fd, 1 << 16):
            chunks.append(chunk)
            self._position += len(chunk)
        *complete, self._partial = b"".join(chunks).split(b"\n")
        first = self._number + 1
        self._number += len(complete)
        return [LogLine(self.path, first + i, raw) for i, raw in enumerate(complete)]

    def _rotated_after(self, file_id: tuple[int, int]) -> list[str]:
        """The rotated files newer than the one with ``file_id``, oldest first."""
        newer: list[str] = []
        index = 1
        while (st := _stat(name := f"{self.path}.{index}")) is not None:
            if (st.st_dev, st.st_ino) == file_id:
                return list(reversed(newer))
            newer.append(name)
            index += 1
        return []  # the old file is gone: which files are newer cannot be known
