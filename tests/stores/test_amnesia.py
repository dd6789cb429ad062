"""Amnesia detection: a shared store that loses its state is noticed through its epoch marker.

Redis: a throwaway ``redis-server`` of the test's own (own port, no persistence) is restarted
or flushed mid-run; SQLite: the database file is deleted under the running store. In every
case ``forgotten_at`` becomes the caller's ``now`` of the first operation after the loss, every
process learns it from the marker (including one that starts afterwards), and a store that
never lost anything reports ``None``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import structlog.testing

from chio_middleware.core.errors import ReplayDetected
from chio_middleware.core.replay import ReplayStore, forgotten_at
from chio_middleware.stores import open_store
from tests.e2e.test_redis_fault import free_port, redis_server

from .conftest import AsyncDriven


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    yield free_port(), tmp_path


def _use(store: ReplayStore, now: float) -> None:
    store.reserve(f"k{now}", expires_at=now + 100, now=now)


def test_a_redis_restart_without_persistence_is_noticed(private_redis: tuple[int, Path]) -> None:
    port, workdir = private_redis
    url = f"redis://127.0.0.1:{port}/0"
    with redis_server(port, workdir):
        first, second = open_store(url, timeout=2), open_store(url, timeout=2)
        first.reserve("proof", expires_at=500, now=100)
        second.consume("budget", limit=1, expires_at=500, now=100)
        assert forgotten_at(first) is None and forgotten_at(second) is None
    with redis_server(port, workdir):  # the same port, empty: everything was forgotten
        first.reserve("proof", expires_at=500, now=120)  # accepted: Redis forgot it...
        assert forgotten_at(first) == 120  # ...and the store knows
        _use(second, 130)
        assert forgotten_at(second) == 120  # learnt from the marker, not its own clock
        late = open_store(url, timeout=2)  # a worker started after the loss
        _use(late, 140)
        assert forgotten_at(late) == 120
        with pytest.raises(ReplayDetected):  # the new epoch works as usual
            second.reserve("proof", expires_at=500, now=150)
        for store in (first, second, late):
            store.close()


def test_a_flushall_is_noticed_by_the_async_view_too(private_redis: tuple[int, Path]) -> None:
    port, workdir = private_redis
    url = f"redis://127.0.0.1:{port}/0"
    with redis_server(port, workdir):
        store = open_store(url, timeout=2)
        driven = AsyncDriven(store)
        driven.reserve("proof", expires_at=500, now=100)
        client = redis.Redis(port=port)
        client.flushall()  # our own throwaway server
        client.close()
        driven.reserve("other", expires_at=500, now=110)
        assert forgotten_at(driven.view) == 110 == forgotten_at(store)  # one knowledge
        driven.close()
        store.close()


def test_a_fresh_store_has_not_forgotten(private_redis: tuple[int, Path], tmp_path: Path) -> None:
    port, workdir = private_redis
    with redis_server(port, workdir):
        store = open_store(f"redis://127.0.0.1:{port}/0", timeout=2)
        _use(store, 100)
        assert forgotten_at(store) is None
        store.close()
    sqlite_store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    _use(sqlite_store, 100)
    assert forgotten_at(sqlite_store) is None
    sqlite_store.close()


def test_a_deleted_sqlite_file_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store, other = open_store(f"sqlite:///{path}"), open_store(f"sqlite:///{path}")
    store.reserve("proof", expires_at=500, now=100)
    _use(other, 101)
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if name.exists():
            os.unlink(name)
    store.reserve("proof", expires_at=500, now=120)  # a new, empty file: forgotten...
    assert forgotten_at(store) == 120  # ...and noticed
    _use(other, 130)
    assert forgotten_at(other) == 120
    with pytest.raises(ReplayDetected):  # both use the new file
        other.reserve("proof", expires_at=500, now=140)
    late = open_store(f"sqlite:///{path}")
    assert forgotten_at(late) == 120
    for each in (store, other, late):
        each.close()


def test_a_deleted_sqlite_file_alone_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = open_store(f"sqlite:///{path}")
    store.reserve("proof", expires_at=500, now=100)
    os.unlink(path)  # the -wal and -shm files stay behind
    store.reserve("again", expires_at=500, now=120)
    assert forgotten_at(store) == 120
    store.close()


def test_the_loss_is_logged_loudly_once_per_process(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = open_store(f"sqlite:///{path}")
    _use(store, 100)
    os.unlink(path)
    with structlog.testing.capture_logs() as events:
        for now in range(120, 130):
            _use(store, now)
    forgotten = [e for e in events if e["event"] == "chio_replay_store_forgot_its_state"]
    assert len(forgotten) == 1
    assert forgotten[0]["log_level"] == "error" and forgotten[0]["forgotten_at"] == 120
    store.close()
