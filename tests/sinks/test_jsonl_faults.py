"""Descriptor ownership of the JSONL sink under every failure of open/write/fsync/rotate/reopen.

The sink is driven through a scenario that writes, rotates, is renamed behind its back,
pretends to be a forked child, flushes and closes. A fake ``os`` layer (the real one, with
book-keeping) fails one chosen call at a time, for every call the scenario makes. After each
failure the test opens a foreign file, which takes the lowest free descriptor number: the
number a sink that closed a descriptor and kept it would use next. It asserts that the sink
never touches a descriptor it does not own (never closes one twice), that the foreign files
stay open and unchanged, and that the sink records again as soon as the fault is gone.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chio_middleware.sinks import SinkError
from chio_middleware.sinks.jsonl import JsonlSink
from chio_middleware.sinks.jsonl import sink as sink_module
from tests.sinks.logmaker import request_signer

_FD_CALLS = ("write", "fsync", "close", "ftruncate", "pread", "fstat", "dup")
_PATH_CALLS = ("open", "stat", "replace", "statvfs")
FOREIGN = b"foreign bytes\n"


class FaultyOs:
    """``os`` with the descriptors the sink owns tracked, and one chosen call failing."""

    def __init__(self, fail: tuple[str, int] | None = None) -> None:
        self.owned: set[int] = set()
        self.violations: list[str] = []
        self.calls: Counter[str] = Counter()
        self.fail = fail
        self.path = os.path

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def _count(self, name: str) -> None:
        self.calls[name] += 1
        if self.fail == (name, self.calls[name]):
            code = errno.ENOSPC if name == "write" else errno.EIO
            raise OSError(code, f"injected failure of {name} #{self.calls[name]}")

    def _check(self, name: str, fd: int) -> None:
        if fd not in self.owned:
            self.violations.append(f"{name}({fd}) on a descriptor the sink does not own")

    def open(self, path: Any, flags: int, mode: int = 0o777) -> int:
        self._count("open")
        fd = os.open(path, flags, mode)
        self.owned.add(fd)
        return fd

    def dup(self, fd: int) -> int:
        self._check("dup", fd)
        self._count("dup")
        new = os.dup(fd)
        self.owned.add(new)
        return new

    def close(self, fd: int) -> None:
        self._check("close", fd)
        self.owned.discard(fd)
        os.close(fd)
        self._count("close")  # a failed close has still released the number (Linux)

    def _fd_call(self, name: str) -> Callable[..., Any]:
        def call(fd: int, *args: Any) -> Any:
            self._check(name, fd)
            self._count(name)
            return getattr(os, name)(fd, *args)

        return call

    def _path_call(self, name: str) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            self._count(name)
            return getattr(os, name)(*args)

        return call

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in _FD_CALLS:
            if name not in ("close", "dup"):
                setattr(self, name, self._fd_call(name))
        for name in _PATH_CALLS:
            if name != "open":
                setattr(self, name, self._path_call(name))
        monkeypatch.setattr(sink_module, "os", self)
        fake_fcntl = type("fcntl", (), {})()
        for attr in ("LOCK_EX", "LOCK_UN", "LOCK_NB", "LOCK_SH"):
            setattr(fake_fcntl, attr, getattr(fcntl, attr))

        def flock(fd: int, operation: int) -> None:
            self._check("flock", fd)
            self._count("flock")
            fcntl.flock(fd, operation)

        fake_fcntl.flock = flock
        monkeypatch.setattr(sink_module, "fcntl", fake_fcntl)


class Scenario:
    """Writes through a sink with rotation, an external rename, a fork and a flush."""

    def __init__(self, root: Path, fsync: str) -> None:
        self.root = root
        self.path = root / "logs" / "receipts.jsonl"
        self.fsync = fsync
        self.foreign: list[tuple[int, Path]] = []
        self.failures = 0
        self.index = 0

    def _foreign(self) -> None:
        """Open a file the sink must never touch, on the lowest free number."""
        name = self.root / f"foreign-{len(self.foreign)}"
        name.write_bytes(FOREIGN)
        self.foreign.append((os.open(name, os.O_RDWR), name))

    def _try(self, step: Callable[[], object]) -> bool:
        try:
            step()
        except (SinkError, OSError):
            self.failures += 1
            self._foreign()
            return False
        return True

    def record(self, sink: JsonlSink) -> bool:
        self.index += 1
        return self._try(lambda: sink.record(request_signer(self.index)))

    def run(self) -> JsonlSink:
        sink = JsonlSink(self.path, max_bytes=2500, backups=2, fsync=self.fsync)
        sink._ensure_sync_thread = lambda: None  # type: ignore[method-assign]  # flush by hand
        for _ in range(4):
            self.record(sink)
        os.rename(self.path, self.root / "logs" / "receipts.jsonl-moved")
        for _ in range(2):
            self.record(sink)
        self._try(sink.flush)
        sink._pid = -1  # as in a forked child: the next record reopens every descriptor
        for _ in range(4):
            self.record(sink)
        self._try(sink.flush)
        return sink


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: str, fail: Any) -> FaultyOs:
    fake = FaultyOs(fail)
    fake.install(monkeypatch)
    scenario = Scenario(tmp_path, fsync)
    try:
        sink = scenario.run()
    except (SinkError, OSError):  # only opening may fail outright
        assert fail is not None and fake.calls["open"] <= 2
        return fake
    fake.fail = None  # the fault is gone: the sink must record again by itself
    assert scenario.record(sink), "the sink did not recover once the fault was gone"
    sink.close()
    assert not fake.violations, fake.violations
    assert not fake.owned, f"descriptors left open after close: {fake.owned}"
    for fd, name in scenario.foreign:
        os.fstat(fd)  # still open: the sink never closed it
        os.close(fd)
        assert name.read_bytes() == FOREIGN, f"the sink wrote into {name}"
    return fake


def _baseline(fsync: str) -> Counter[str]:
    patch = pytest.MonkeyPatch()
    try:
        root = Path(os.environ.get("TMPDIR", "/tmp")) / f"chio-baseline-{os.getpid()}-{fsync}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        fake = _run(root, patch, fsync, None)
        shutil.rmtree(root)
        return fake.calls
    finally:
        patch.undo()


def _points() -> list[Any]:
    points = []
    for fsync in ("always", "interval"):
        for name, count in sorted(_baseline(fsync).items()):
            points.extend(
                pytest.param(fsync, (name, n), id=f"{fsync}-{name}-{n}")
                for n in range(1, count + 1)
            )
    return points


def test_the_scenario_rotates_renames_reopens_and_syncs() -> None:
    calls = _baseline("interval")
    assert calls["replace"] >= 2 and calls["fsync"] >= 2 and calls["open"] >= 6


@pytest.mark.parametrize(("fsync", "fail"), _points())
def test_no_failure_makes_the_sink_touch_a_descriptor_it_does_not_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: str, fail: tuple[str, int]
) -> None:
    _run(tmp_path, monkeypatch, fsync, fail)


def test_a_removed_directory_answers_errors_then_recovers_when_it_is_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "logs" / "receipts.jsonl"
    sink = JsonlSink(path, fsync="never")
    sink.record(request_signer(0))
    shutil.rmtree(path.parent)
    foreign = []
    for index in range(1, 4):
        with pytest.raises(SinkError):
            sink.ready()
        with pytest.raises(SinkError):
            sink.record(request_signer(index))
        name = tmp_path / f"foreign-{index}"
        name.write_bytes(FOREIGN)
        foreign.append((os.open(name, os.O_RDWR), name))
    path.parent.mkdir()
    sink.ready()
    sink.record(request_signer(9))  # by itself, no restart
    sink.close()
    for fd, name in foreign:
        os.fstat(fd)
        os.close(fd)
        assert name.read_bytes() == FOREIGN
    assert len(path.read_bytes().splitlines()) == 1
