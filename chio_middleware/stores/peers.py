"""Federation pins (PROTOCOL.md 9) in the configured store, shared by every worker and host.

:func:`open_peer_store` opens the pin store beside the replay store a URL names:

- ``memory://``: :class:`~chio_middleware.core.federation.MemoryPeerStore`, one process;
- ``sqlite:///...``: :class:`SqlitePeerStore`, the table ``chio_federation_peers`` of the
  same file (the replay store's transactions, locking and fork safety);
- ``redis://...``: :class:`RedisPeerStore`, the hash ``<key_prefix>federation:peers``.

Each pin is stored as the canonical JSON of its FederationPeer; a write replaces the
kernel's older pin (last writer wins: every writer has passed the handshake with the same
key). Handshake nonces are reservations in the replay store itself (``federation:...``
keys), so their single use is as strong as DPoP's. Failures raise
:class:`~chio_middleware.core.errors.Unavailable` (fail closed). On the ASGI path the
network backend runs in a worker thread (:class:`ThreadedPeerStore`); lookups are rare
there, since the engine caches fresh pins.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from typing import Any

from ..core.canonical import canonical_json, parse_json
from ..core.errors import Unavailable
from ..core.federation import FederationPeer, MemoryPeerStore, PeerStore, parse_peer
from ._common import redact_url, redis_missing
from .sqlite import SqliteReplayStore

__all__ = ["RedisPeerStore", "SqlitePeerStore", "ThreadedPeerStore", "open_peer_store"]

_PEERS_TABLE = (
    "CREATE TABLE IF NOT EXISTS chio_federation_peers"
    " (kernel_id TEXT PRIMARY KEY, peer TEXT NOT NULL) WITHOUT ROWID"
)


def _decode(text: str | bytes) -> FederationPeer:
    try:
        return parse_peer(parse_json(text))
    except ValueError:
        raise Unavailable("federation pin store holds a malformed pin; refusing") from None


class SqlitePeerStore(SqliteReplayStore):
    """Pins in the SQLite file every worker of the host shares (a replay store as well)."""

    def __init__(
        self, path: str | os.PathLike[str], *, key_prefix: str = "chio:", timeout: float = 0.25
    ) -> None:
        super().__init__(path, key_prefix=key_prefix, timeout=timeout)

    def _connect(self, patience: float) -> sqlite3.Connection:
        conn = super()._connect(patience)
        try:
            conn.execute(_PEERS_TABLE)
        except BaseException:
            conn.close()
            raise
        return conn

    def get_peer(self, kernel_id: str) -> FederationPeer | None:
        """The pin of ``kernel_id`` or ``None``."""

        def op(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT peer FROM chio_federation_peers WHERE kernel_id = ?",
                (self.key_prefix + kernel_id,),
            ).fetchone()
            return None if row is None else str(row[0])

        found = self._run(op, now=None)
        return None if found is None else _decode(found)

    def put_peer(self, peer: FederationPeer) -> None:
        """Pin ``peer``, replacing an older pin."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO chio_federation_peers (kernel_id, peer) VALUES (?, ?)",
                (self.key_prefix + peer.kernel_id, canonical_json(peer.to_wire()).decode()),
            )

        self._run(op, now=None)

    def forget_peer(self, kernel_id: str) -> bool:
        """Remove a pin; ``True`` when there was one."""

        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "DELETE FROM chio_federation_peers WHERE kernel_id = ?",
                (self.key_prefix + kernel_id,),
            )
            return bool(cursor.rowcount == 1)

        return self._run(op, now=None)

    def list_peers(self) -> list[FederationPeer]:
        """Every pin under this store's key prefix, sorted by kernel id."""

        def op(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT peer FROM chio_federation_peers WHERE substr(kernel_id, 1, ?) = ?"
                " ORDER BY kernel_id",
                (len(self.key_prefix), self.key_prefix),
            ).fetchall()
            return [str(peer) for (peer,) in rows]

        return [_decode(peer) for peer in self._run(op, now=None)]


class RedisPeerStore:
    """Pins in one Redis hash, shared by every host; the sync client."""

    def __init__(self, url: str, *, key_prefix: str = "chio:", timeout: float = 0.25) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        from .redis import _check_options, _pool_options

        _check_options(url, timeout, 4)
        self.key = f"{key_prefix}federation:peers"
        try:
            pool = redis.BlockingConnectionPool.from_url(
                url, retry=Retry(NoBackoff(), 0), **_pool_options(timeout, 4)
            )
        except ValueError as exc:
            raise ValueError(f"invalid Redis URL {redact_url(url)!r}: {exc}") from None
        self._client = redis.Redis.from_pool(pool)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self._client, name)(self.key, *args)
        except self._errors as exc:
            raise Unavailable(f"federation pin store unavailable: {type(exc).__name__}") from None

    def get_peer(self, kernel_id: str) -> FederationPeer | None:
        """The pin of ``kernel_id`` or ``None``."""
        value = self._call("hget", kernel_id)
        return None if value is None else _decode(value)

    def put_peer(self, peer: FederationPeer) -> None:
        """Pin ``peer``, replacing an older pin."""
        self._call("hset", peer.kernel_id, canonical_json(peer.to_wire()))

    def forget_peer(self, kernel_id: str) -> bool:
        """Remove a pin; ``True`` when there was one."""
        return int(self._call("hdel", kernel_id)) == 1

    def list_peers(self) -> list[FederationPeer]:
        """Every pin, sorted by kernel id."""
        pins = self._call("hgetall")
        return sorted((_decode(v) for v in pins.values()), key=lambda p: p.kernel_id)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


class ThreadedPeerStore:
    """The async view of a network peer store: each call in a worker thread."""

    def __init__(self, store: PeerStore) -> None:
        self.store = store

    async def get_peer(self, kernel_id: str) -> FederationPeer | None:
        """See :meth:`~chio_middleware.core.federation.PeerStore.get_peer`."""
        return await asyncio.to_thread(self.store.get_peer, kernel_id)

    async def put_peer(self, peer: FederationPeer) -> None:
        """See :meth:`~chio_middleware.core.federation.PeerStore.put_peer`."""
        await asyncio.to_thread(self.store.put_peer, peer)


def open_peer_store(url: str, *, key_prefix: str = "chio:", timeout: float = 0.25) -> PeerStore:
    """Open the pin store beside the replay store ``url``; ``ValueError`` for a bad URL."""
    from . import sqlite_path

    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if url == "memory://":
        return MemoryPeerStore()
    if scheme == "sqlite":
        return SqlitePeerStore(sqlite_path(url), key_prefix=key_prefix, timeout=timeout)
    if scheme in ("redis", "rediss"):
        try:
            return RedisPeerStore(url, key_prefix=key_prefix, timeout=timeout)
        except ModuleNotFoundError as exc:
            raise redis_missing(exc, url, "store") from None
    raise ValueError(f"unknown store URL {redact_url(url)!r}")
