"""The SQLite backend beyond the conformance suite: WAL, pruning, locks, fork."""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from chio_middleware.core.errors import ReplayDetected, Unavailable
from chio_middleware.core.replay import TokenBucket, as_async
from chio_middleware.stores import open_store
from chio_middleware.stores._common import EXPIRY_GRACE
from chio_middleware.stores.sqlite import PRUNE_BATCH, AsyncSqliteView, SqliteReplayStore

from . import workers


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "chio-state.db"


@pytest.fixture
def store(path: Path) -> Iterator[SqliteReplayStore]:
    opened = SqliteReplayStore(path)
    yield opened
    opened.close()


def _rows(path: Path, table: str) -> int:
    with closing(sqlite3.connect(path)) as conn:
        (count,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(count)


def test_open_store_builds_a_sqlite_store_in_wal_mode(path: Path) -> None:
    store = open_store(f"sqlite:///{path}", timeout=0.5)
    try:
        assert isinstance(store, SqliteReplayStore)
        assert store.path == str(path) and store.timeout == 0.5
        # On the loop unless it would wait (then in a thread): see test_sqlite_waits.py.
        assert isinstance(as_async(store), AsyncSqliteView)
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        store.close()


def test_reservations_are_pruned_a_batch_at_a_time_after_the_grace(
    store: SqliteReplayStore, path: Path
) -> None:
    for i in range(PRUNE_BATCH * 2 + 5):
        store.reserve(f"old{i}", expires_at=100, now=50)
    store.reserve("recent", expires_at=150, now=50)
    # Expired, but within the grace: kept (a caller whose clock lags may still check them).
    store.reserve("probe0", expires_at=10_000, now=100 + EXPIRY_GRACE - 1)
    assert _rows(path, "chio_reservations") == PRUNE_BATCH * 2 + 5 + 2
    store.reserve("probe1", expires_at=10_000, now=100 + EXPIRY_GRACE)
    assert _rows(path, "chio_reservations") == PRUNE_BATCH + 5 + 3
    store.reserve("probe2", expires_at=10_000, now=100 + EXPIRY_GRACE)
    store.reserve("probe3", expires_at=10_000, now=100 + EXPIRY_GRACE)
    assert _rows(path, "chio_reservations") == 1 + 4  # "recent" and the probes
    with pytest.raises(ReplayDetected):
        store.reserve("probe0", expires_at=10_000, now=200)


def test_budgets_and_buckets_are_pruned_too(store: SqliteReplayStore, path: Path) -> None:
    bucket = TokenBucket(rate=1.0, burst=3)
    for i in range(10):
        store.consume(f"cap{i}", limit=1, expires_at=100, now=50)
        store.take(f"agent{i}", bucket=bucket, now=50)  # full again at 51
    later = 100 + EXPIRY_GRACE
    store.consume("probe", limit=1, expires_at=later + 10, now=later)
    store.take("probe", bucket=bucket, now=later)
    assert _rows(path, "chio_budgets") == 1
    assert _rows(path, "chio_buckets") == 1


def test_a_locked_database_is_unavailable_then_recovers(path: Path) -> None:
    store = SqliteReplayStore(path, timeout=0.01)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        with pytest.raises(Unavailable) as info:
            store.reserve("k", expires_at=200, now=100)
        assert info.value.status == 503 and "locked" in info.value.message
        with pytest.raises(Unavailable):
            store.consume("k", limit=1, expires_at=200, now=100)
        blocker.execute("ROLLBACK")
        store.reserve("k", expires_at=200, now=100)  # nothing wedged
        assert store.consume("k", limit=1, expires_at=200, now=100) == 1
    finally:
        blocker.close()
        store.close()


def test_a_closed_store_is_unavailable(path: Path) -> None:
    store = SqliteReplayStore(path)
    store.close()
    with pytest.raises(Unavailable, match="closed"):
        store.reserve("k", expires_at=200, now=100)


def test_stores_on_one_file_share_state_and_prefixes_separate_it(path: Path) -> None:
    first, second = SqliteReplayStore(path), SqliteReplayStore(path)
    other = SqliteReplayStore(path, key_prefix="other-app:")
    try:
        first.reserve("k", expires_at=200, now=100)
        with pytest.raises(ReplayDetected):
            second.reserve("k", expires_at=200, now=100)
        other.reserve("k", expires_at=200, now=100)
    finally:
        for store in (first, second, other):
            store.close()


def test_no_connection_crosses_a_fork(store: SqliteReplayStore) -> None:
    store.reserve("parent-key", expires_at=1_000, now=1)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=workers.use_inherited_store, args=(store, results))
    child.start()
    outcomes = results.get(timeout=120)
    child.join(timeout=120)
    assert outcomes == ["inherited connections: 0", "parent-key refused", "child-key reserved"]
    with pytest.raises(ReplayDetected):  # the parent sees the child's reservation
        store.reserve("child-key", expires_at=1_000, now=1)
    store.reserve("parent-2", expires_at=1_000, now=1)  # and its own connection still works


def test_an_unopenable_path_fails_at_start_up_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "state.db"
    with pytest.raises(ValueError, match="no-such-dir"):
        open_store(f"sqlite:///{missing}")
