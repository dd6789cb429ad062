"""Replay and budget stores behind :class:`~chio_middleware.core.replay.ReplayStore`.

Pick the backend by how far the state must be shared:

- ``memory://``: :class:`~chio_middleware.core.replay.MemoryReplayStore`, one process,
  bounded by ``capacity``.
- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``:
  :class:`~chio_middleware.stores.sqlite.SqliteReplayStore`, every worker of one host.
  SQLAlchemy's convention: after ``sqlite:///`` comes the path as given, so a fourth slash
  makes it absolute; a relative path is resolved against the working directory at opening.
- ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://...`` (TLS):
  :class:`~chio_middleware.stores.redis.RedisReplayStore`, every host; needs the ``redis``
  extra. Query options (``?max_connections=...``) are passed to redis-py.

``sqlite://`` without a path and ``sqlite:///:memory:`` are refused: a private in-memory
database is not shared, which is what ``memory://`` already offers. Every backend gives the
same answers for the same calls, the per-owner quota of live slots included (the
conformance suite in ``tests/stores`` runs on all three); the caller's ``now`` decides
what has expired, never a backend's clock. A store that errors or times out raises
:class:`~chio_middleware.core.errors.Unavailable` (503).

The shared backends keep an epoch marker and expose ``forgotten_at``: the moment they were
seen to have lost their state (:class:`~chio_middleware.stores._common.EpochWatch`), after
which the middleware refuses the proofs, nonces and budgets that may have been forgotten.
"""

from __future__ import annotations

from ..core.replay import DEFAULT_CAPACITY, DEFAULT_SUBJECT_QUOTA, MemoryReplayStore, ReplayStore
from ._common import redact_url, redis_missing
from .sqlite import SqliteReplayStore

__all__ = ["SqliteReplayStore", "open_store", "sqlite_path"]

_ACCEPTED = (
    "memory://, sqlite:///relative/path.db, sqlite:////absolute/path.db, "
    "redis://host:port/db or rediss://host:port/db"
)


def sqlite_path(url: str) -> str:
    """The file a ``sqlite:///...`` URL names (SQLAlchemy's convention); ``ValueError`` if none."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite:/// URL: {redact_url(url)!r}; use {_ACCEPTED}")
    path = url[len("sqlite:///") :]
    if not path or path == ":memory:" or "?" in path or "#" in path or "\x00" in path:
        raise ValueError(
            f"unsupported SQLite store URL {redact_url(url)!r}: give a file path, as in "
            "sqlite:///relative/path.db or sqlite:////absolute/path.db (no query, no :memory:)"
        )
    return path


def open_store(
    url: str,
    *,
    key_prefix: str = "chio:",
    timeout: float = 0.25,
    capacity: int = DEFAULT_CAPACITY,
    subject_quota: int = DEFAULT_SUBJECT_QUOTA,
) -> ReplayStore:
    """Open the store ``url`` names; ``capacity`` bounds ``memory://`` only.

    ``key_prefix`` starts every key of the shared backends; ``timeout`` (seconds) bounds
    their waits; ``subject_quota`` bounds the live slots of each owner in every backend.
    Raises ``ValueError`` naming the URL (its password redacted) when the URL is not one of
    the forms above.
    """
    if not timeout > 0:
        raise ValueError(f"store timeout must be a positive number of seconds, not {timeout!r}")
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if url == "memory://":
        return MemoryReplayStore(capacity, subject_quota=subject_quota)
    if scheme == "sqlite":
        return SqliteReplayStore(
            sqlite_path(url), key_prefix=key_prefix, timeout=timeout, subject_quota=subject_quota
        )
    if scheme in ("redis", "rediss"):
        try:
            from .redis import RedisReplayStore
        except ModuleNotFoundError as exc:
            raise redis_missing(exc, url, "replay store") from None
        return RedisReplayStore(
            url, key_prefix=key_prefix, timeout=timeout, subject_quota=subject_quota
        )
    raise ValueError(f"unknown replay store URL {redact_url(url)!r}: use {_ACCEPTED}")
