"""The SQLite replay and budget store: every worker process of one host shares one file.

Guarantees:

- Every operation is one ``BEGIN IMMEDIATE`` transaction: it takes the database's write lock
  before it reads, so a read-decide-write can never interleave with another process's (no
  lost update, no two winners of one reservation), and no transaction has to upgrade a read
  lock (the case where SQLite gives up with ``SQLITE_BUSY`` without waiting).
- The journal is WAL with ``synchronous=NORMAL``: a crashed process loses nothing; a power
  failure or OS crash may lose the last transactions (reservations of the last moments),
  which is still far better than the in-memory store, which loses everything on restart.
- Waits are bounded by ``timeout`` (``store_timeout``): the per-process lock and the
  database's write lock together. The connection never waits inside SQLite
  (``busy_timeout`` 0): a busy database is retried with short pauses until the deadline, so
  the async view (ASGI) can try each operation once on the event loop and, only when it
  would wait, finish it in a worker thread: a locked database delays the requests that need
  the store, never the event loop. A database that stays locked, a full disk or an I/O error
  raises :class:`~chio_middleware.core.errors.Unavailable` (503, fail closed).
- Amnesia detection: the table ``chio_epoch`` holds the store's epoch marker, read in every
  operation's transaction (:class:`~chio_middleware.stores._common.EpochWatch`). A database
  file deleted or replaced under a running process is noticed by its inode at the next
  operation: the store reopens the path, finds no marker, and records that it forgot.
- Decisions compare stored times with the caller's ``now`` only. Each operation also deletes
  at most :data:`PRUNE_BATCH` rows of its table that expired more than
  :data:`~chio_middleware.stores._common.EXPIRY_GRACE` seconds ago (through an index on the
  expiry), so the file stays bounded by the live entries without ever scanning it.
- Per-owner quota (``subject_quota``): a reservation that names its ``owner`` adds one to
  the owner's row for its quota bucket (``chio_quota``: owner, bucket end, count), in the
  same transaction; the check sums the owner's live buckets through the primary key, a few
  dozen rows at most (see :mod:`chio_middleware.core.replay`), never the owner's slots.
- Safe across ``fork`` (``gunicorn --preload``): no connection crosses a fork. The store
  closes its connection just before the process forks (between transactions) and both
  processes reopen one at their next call; see https://sqlite.org/howtocorrupt.html (2.6).

Limits: one host only (SQLite locking over network file systems is unreliable and WAL needs
shared memory); writes are serialised, a few tens of thousands per second on local disks.
The async view is :class:`AsyncSqliteView`: an uncontended transaction on a local file takes
microseconds, far less than a thread hand-off would cost, so it runs on the loop unless it
would wait.
"""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import suppress
from typing import TypeVar

from ..core.errors import ReplayDetected, Unavailable
from ..core.replay import DEFAULT_SUBJECT_QUOTA, TokenBucket, quota_bucket_end, quota_exceeded
from ._common import (
    EXPIRY_GRACE,
    EpochWatch,
    budget_exceeded,
    new_epoch,
    rate_limited,
    refill,
    stamp_floor,
)

__all__ = ["OPEN_TIMEOUT", "PRUNE_BATCH", "AsyncSqliteView", "SqliteReplayStore"]

T = TypeVar("T")
_Op = Callable[[sqlite3.Connection], T]


class _WouldWait(Exception):
    """The operation would wait (a lock, a reconnect): retry it off the event loop."""


#: The most expired rows one operation deletes from its table.
PRUNE_BATCH = 32
#: Seconds opening a store may wait while other processes open the same file.
OPEN_TIMEOUT = 5.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS chio_reservations"
    " (key TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS chio_reservations_expiry ON chio_reservations (expires_at)",
    "CREATE TABLE IF NOT EXISTS chio_budgets"
    " (key TEXT PRIMARY KEY, count INTEGER NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS chio_budgets_expiry ON chio_budgets (expires_at)",
    # ``expires_at`` of a bucket is when it is full again: from then on it holds no state.
    "CREATE TABLE IF NOT EXISTS chio_buckets (key TEXT PRIMARY KEY, tokens REAL NOT NULL,"
    " stamp REAL NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS chio_buckets_expiry ON chio_buckets (expires_at)",
    # Live slots per owner and quota bucket; ``expires_at`` is the bucket's end.
    "CREATE TABLE IF NOT EXISTS chio_quota (owner TEXT NOT NULL, expires_at INTEGER NOT NULL,"
    " count INTEGER NOT NULL, PRIMARY KEY (owner, expires_at)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS chio_quota_expiry ON chio_quota (expires_at)",
    # Replay observations: how often a live reservation was presented, and since when.
    "CREATE TABLE IF NOT EXISTS chio_replay_observations (key TEXT PRIMARY KEY,"
    " first_used REAL NOT NULL, presented INTEGER NOT NULL, expires_at REAL NOT NULL)"
    " WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS chio_replay_observations_expiry"
    " ON chio_replay_observations (expires_at)",
    # The epoch marker: one row; ``forgot_at`` is when a process noticed the store had lost
    # the state it knew (NULL for a store that never did).
    "CREATE TABLE IF NOT EXISTS chio_epoch (id INTEGER PRIMARY KEY CHECK (id = 1),"
    " epoch TEXT NOT NULL, forgot_at REAL)",
)

_RESERVE = (
    "INSERT INTO chio_reservations (key, expires_at) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at"
    " WHERE chio_reservations.expires_at <= ?"
)
_OWNED = (
    "SELECT COALESCE(SUM(count), 0), MIN(expires_at) FROM chio_quota"
    " WHERE owner = ? AND expires_at > ?"
)
_PRUNE_QUOTA = (
    "DELETE FROM chio_quota WHERE (owner, expires_at) IN (SELECT owner, expires_at"
    " FROM chio_quota WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)"
)
_COUNT = (
    "INSERT INTO chio_quota (owner, expires_at, count) VALUES (?, ?, 1)"
    " ON CONFLICT (owner, expires_at) DO UPDATE SET count = count + 1"
)


class SqliteReplayStore:
    """A replay and budget store in one SQLite file, shared by every process of a host."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        key_prefix: str = "chio:",
        timeout: float = 0.25,
        subject_quota: int = DEFAULT_SUBJECT_QUOTA,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")
        if subject_quota < 1:
            raise ValueError("subject_quota must be at least 1")
        self.path = os.path.abspath(path)
        self.key_prefix = key_prefix
        self.timeout = timeout
        self.subject_quota = subject_quota
        self._lock = threading.Lock()
        self._locked_for_fork = False
        self._closed = False
        self._epoch = EpochWatch(f"sqlite:///{self.path}")
        self._file_id: tuple[int, int] | None = None
        # A connection that could not be closed before a fork (another thread held it past
        # OPEN_TIMEOUT): the child keeps it referenced, so it is never used nor closed there.
        self._inherited: list[sqlite3.Connection] = []
        self._view: AsyncSqliteView | None = None
        try:
            self._conn: sqlite3.Connection | None = self._connect(max(timeout, OPEN_TIMEOUT))
        except sqlite3.Error as exc:
            raise ValueError(f"cannot open the SQLite replay store {self.path!r}: {exc}") from None
        _close_around_forks(self)

    @property
    def forgotten_at(self) -> float | None:
        """When this store was seen to have lost its state (see ``EpochWatch``), or ``None``."""
        return self._epoch.forgotten_at

    def async_view(self) -> AsyncSqliteView:
        """The ASGI view: each operation on the loop unless it would wait (module docs)."""
        if self._view is None:
            self._view = AsyncSqliteView(self)
        return self._view

    def _connect(self, patience: float) -> sqlite3.Connection:
        """A configured connection; opening may wait up to ``patience`` seconds for locks."""
        conn = sqlite3.connect(
            self.path, timeout=patience, isolation_level=None, check_same_thread=False
        )
        try:
            _enable_wal(conn, deadline=time.monotonic() + patience)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            marker = self._marker(conn, 0.0) if self._epoch.known is None else None
            conn.execute("COMMIT")
            # Never wait inside SQLite: _run retries a busy database until its deadline.
            conn.execute("PRAGMA busy_timeout = 0")
            st = os.stat(self.path)
        except BaseException:
            conn.close()
            raise
        self._file_id = (st.st_dev, st.st_ino)
        if marker is not None:
            self._epoch.observe(*marker)
        return conn

    def _marker(self, conn: sqlite3.Connection, now: float) -> tuple[str, float | None]:
        """Read (or recreate) the epoch marker inside the current transaction."""
        known = self._epoch.known
        row = conn.execute("SELECT epoch, forgot_at FROM chio_epoch WHERE id = 1").fetchone()
        if row is None:
            # Read inside the transaction: the moment the step runs, on the callers' clock.
            forgot = stamp_floor(now)[0] if known is not None else None
            epoch = new_epoch()
            conn.execute(
                "INSERT INTO chio_epoch (id, epoch, forgot_at) VALUES (1, ?, ?)", (epoch, forgot)
            )
            return epoch, forgot
        epoch, forgot = str(row[0]), (float(row[1]) if row[1] is not None else None)
        if known is not None and epoch != known and forgot is None:
            forgot = stamp_floor(now)[0]
            conn.execute("UPDATE chio_epoch SET forgot_at = ? WHERE id = 1", (forgot,))
        return epoch, forgot

    def _before_fork(self) -> None:
        self._locked_for_fork = self._lock.acquire(timeout=OPEN_TIMEOUT)
        if self._locked_for_fork and self._conn is not None:
            with suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def _after_fork_in_parent(self) -> None:
        if self._locked_for_fork:
            self._locked_for_fork = False
            self._lock.release()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._locked_for_fork = False
        if self._conn is not None:
            self._inherited.append(self._conn)
            self._conn = None

    def _connection(self, *, wait: bool) -> sqlite3.Connection:
        """The open connection, reopened when it is gone or the file was replaced."""
        conn = self._conn
        if conn is not None:
            try:
                st = os.stat(self.path)
                replaced = (st.st_dev, st.st_ino) != self._file_id
            except FileNotFoundError:
                replaced = True
            if not replaced:
                return conn
            # The file was deleted or replaced: this connection holds what others no longer
            # see. Reopen the path; the missing marker then tells that state was lost.
            with suppress(sqlite3.Error):
                conn.close()
            self._conn = None
        if not wait:
            raise _WouldWait
        self._conn = conn = self._connect(self.timeout)
        return conn

    def _run(
        self, op: _Op[T], *, now: float | None, wait: bool = True, deadline: float | None = None
    ) -> T:
        """Run ``op`` in one ``BEGIN IMMEDIATE`` transaction with the epoch check (skipped
        when ``now`` is ``None``: state that is not replay state, such as federation pins).

        Waits until ``deadline`` (default: ``timeout`` from now) for the process lock and the
        database lock, retrying a busy database with short pauses; ``wait=False`` raises
        ``_WouldWait`` instead of waiting. Any SQLite error becomes ``Unavailable``.
        """
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        if wait:
            locked = self._lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
        else:
            locked = self._lock.acquire(False)
        if not locked:
            if not wait:
                raise _WouldWait
            raise Unavailable("replay store unavailable: SQLite store busy (store_timeout)")
        try:
            pause = 0.0005
            while True:
                if self._closed:
                    raise Unavailable("replay store unavailable: the store is closed")
                try:
                    conn = self._connection(wait=wait)
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        marker = self._marker(conn, now) if now is not None else None
                        result = op(conn)
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._abandon_transaction()
                    if not _is_busy(exc):
                        raise Unavailable(f"replay store unavailable: {exc}") from None
                    if not wait:
                        raise _WouldWait from None
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise Unavailable(
                            "replay store unavailable: the SQLite database is locked for "
                            "longer than store_timeout"
                        ) from None
                    time.sleep(min(pause, left))
                    pause = min(pause * 2, 0.005)
                    continue
                if marker is not None:
                    self._epoch.observe(*marker)
                return result
        finally:
            self._lock.release()

    def _abandon_transaction(self) -> None:
        # After an error the transaction may still be open (a failed COMMIT or ROLLBACK);
        # leaving it open would hold the write lock and wedge every later call.
        conn = self._conn
        if conn is not None and conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                conn.close()
                self._conn = None

    @staticmethod
    def _prune(conn: sqlite3.Connection, table: str, now: float) -> None:
        conn.execute(
            f"DELETE FROM {table} WHERE key IN (SELECT key FROM {table}"  # noqa: S608 (constant)
            " WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)",
            (now - EXPIRY_GRACE, PRUNE_BATCH),
        )

    def reserve(self, key: str, *, expires_at: float, now: float, owner: str | None = None) -> None:
        """Record ``key`` until ``expires_at``; raise ``ReplayDetected`` if it is live, and
        ``ReservationQuotaExceeded`` if ``owner`` holds ``subject_quota`` live slots."""
        self._reserve(key, expires_at=expires_at, now=now, owner=owner)

    def _reserve(
        self,
        key: str,
        *,
        expires_at: float,
        now: float,
        owner: str | None = None,
        wait: bool = True,
        deadline: float | None = None,
    ) -> None:
        key = self.key_prefix + key

        def op(conn: sqlite3.Connection) -> tuple[bool, tuple[float, int] | None]:
            self._prune(conn, "chio_reservations", now)
            self._prune(conn, "chio_replay_observations", now)
            if conn.execute(_RESERVE, (key, expires_at, now)).rowcount == 1:
                if owner is not None:
                    conn.execute(_PRUNE_QUOTA, (now - EXPIRY_GRACE, PRUNE_BATCH))
                    holder = self.key_prefix + owner
                    held, oldest = conn.execute(_OWNED, (holder, now)).fetchone()
                    if held >= self.subject_quota:  # raising rolls the reservation back
                        raise quota_exceeded(self.subject_quota, float(oldest), now)
                    conn.execute(_COUNT, (holder, quota_bucket_end(expires_at)))
                conn.execute(
                    "INSERT OR REPLACE INTO chio_replay_observations"
                    " (key, first_used, presented, expires_at) VALUES (?, ?, 1, ?)",
                    (key, now, expires_at),
                )
                return True, None
            row = conn.execute(
                "UPDATE chio_replay_observations SET presented = presented + 1"
                " WHERE key = ? RETURNING first_used, presented - 1",
                (key,),
            ).fetchone()
            return False, None if row is None else (float(row[0]), int(row[1]))

        fresh, observed = self._run(op, now=now, wait=wait, deadline=deadline)
        if not fresh:
            raise ReplayDetected(
                "this proof or nonce was already used",
                prior_presentations=None if observed is None else observed[1],
                first_used_at=None if observed is None else observed[0],
            )

    def consume(self, key: str, *, limit: int, expires_at: float, now: float) -> int:
        """Count one use of ``key`` until ``expires_at``; raise ``BudgetExceeded`` when spent."""
        return self._consume(key, limit=limit, expires_at=expires_at, now=now)

    def _consume(
        self,
        key: str,
        *,
        limit: int,
        expires_at: float,
        now: float,
        wait: bool = True,
        deadline: float | None = None,
    ) -> int:
        key = self.key_prefix + key

        def op(conn: sqlite3.Connection) -> tuple[int, float]:
            self._prune(conn, "chio_budgets", now)
            row = conn.execute(
                "SELECT count, expires_at FROM chio_budgets WHERE key = ?", (key,)
            ).fetchone()
            count, expiry = (
                (int(row[0]), float(row[1])) if row and row[1] > now else (0, expires_at)
            )
            if count < limit:
                conn.execute(
                    "INSERT OR REPLACE INTO chio_budgets (key, count, expires_at) VALUES (?, ?, ?)",
                    (key, count + 1, expiry),
                )
            return count, expiry

        count, expiry = self._run(op, now=now, wait=wait, deadline=deadline)
        if count >= limit:
            raise budget_exceeded(limit, expiry, now)
        return count + 1

    def take(self, key: str, *, bucket: TokenBucket, now: float) -> None:
        """Take one token from ``key``'s bucket; raise ``RateLimited`` with the wait when empty."""
        self._take(key, bucket=bucket, now=now)

    def _take(
        self,
        key: str,
        *,
        bucket: TokenBucket,
        now: float,
        wait: bool = True,
        deadline: float | None = None,
    ) -> None:
        key = self.key_prefix + key

        def op(conn: sqlite3.Connection) -> float:
            self._prune(conn, "chio_buckets", now)
            row = conn.execute(
                "SELECT tokens, stamp FROM chio_buckets WHERE key = ?", (key,)
            ).fetchone()
            tokens, stamp = (float(row[0]), float(row[1])) if row else (float(bucket.burst), now)
            tokens = refill(tokens, stamp, bucket, now)
            left = tokens - 1.0 if tokens >= 1.0 else tokens
            conn.execute(
                "INSERT OR REPLACE INTO chio_buckets (key, tokens, stamp, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (key, left, now, _full_at(left, bucket, now)),
            )
            return tokens

        tokens = self._run(op, now=now, wait=wait, deadline=deadline)
        if tokens < 1.0:
            raise rate_limited(tokens, bucket)

    def close(self) -> None:
        """Close the connection; later operations raise ``Unavailable``."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class AsyncSqliteView:
    """The async (ASGI) view of a :class:`SqliteReplayStore`: same file, same answers.

    Each operation first runs on the event loop without waiting; only when it would wait
    (the database or the process lock is held, a reconnect is due) does it run again in a
    worker thread, within the same ``store_timeout`` deadline. So a locked database delays
    the requests that use the store, and nothing else the event loop serves.
    """

    def __init__(self, store: SqliteReplayStore) -> None:
        self.store = store

    @property
    def forgotten_at(self) -> float | None:
        """See :attr:`SqliteReplayStore.forgotten_at`."""
        return self.store.forgotten_at

    async def reserve(
        self, key: str, *, expires_at: float, now: float, owner: str | None = None
    ) -> None:
        """See :meth:`SqliteReplayStore.reserve`."""
        deadline = time.monotonic() + self.store.timeout
        try:
            self.store._reserve(key, expires_at=expires_at, now=now, owner=owner, wait=False)
        except _WouldWait:
            await asyncio.to_thread(
                self.store._reserve,
                key,
                expires_at=expires_at,
                now=now,
                owner=owner,
                deadline=deadline,
            )

    async def consume(self, key: str, *, limit: int, expires_at: float, now: float) -> int:
        """See :meth:`SqliteReplayStore.consume`."""
        deadline = time.monotonic() + self.store.timeout
        try:
            return self.store._consume(key, limit=limit, expires_at=expires_at, now=now, wait=False)
        except _WouldWait:
            return await asyncio.to_thread(
                self.store._consume,
                key,
                limit=limit,
                expires_at=expires_at,
                now=now,
                deadline=deadline,
            )

    async def take(self, key: str, *, bucket: TokenBucket, now: float) -> None:
        """See :meth:`SqliteReplayStore.take`."""
        deadline = time.monotonic() + self.store.timeout
        try:
            self.store._take(key, bucket=bucket, now=now, wait=False)
        except _WouldWait:
            await asyncio.to_thread(
                self.store._take, key, bucket=bucket, now=now, deadline=deadline
            )


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _enable_wal(conn: sqlite3.Connection, *, deadline: float) -> None:
    """Switch ``conn``'s database to WAL, retrying until ``deadline`` while others do too.

    SQLite answers a journal-mode switch that races another connection's with SQLITE_BUSY at
    once, without waiting on ``busy_timeout``; workers starting together meet exactly that.
    """
    pause = 0.001
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            break
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"WAL journal mode refused (got {mode})")


def _full_at(tokens: float, bucket: TokenBucket, now: float) -> float:
    """When a bucket holding ``tokens`` is full again (never, if it does not refill)."""
    if tokens >= bucket.burst:
        return now
    return now + (bucket.burst - tokens) / bucket.rate if bucket.rate > 0 else math.inf


def _close_around_forks(store: SqliteReplayStore) -> None:
    # Weak references: registering must not keep every store ever opened alive.
    ref = weakref.ref(store)

    def before() -> None:
        alive = ref()
        if alive is not None:
            alive._before_fork()

    def after_in_parent() -> None:
        alive = ref()
        if alive is not None:
            alive._after_fork_in_parent()

    def after_in_child() -> None:
        alive = ref()
        if alive is not None:
            alive._after_fork_in_child()

    os.register_at_fork(
        before=before, after_in_parent=after_in_parent, after_in_child=after_in_child
    )
