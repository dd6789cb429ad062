"""Process entry points of the federation races (importable by spawned children)."""

from __future__ import annotations

from typing import Any

from chio_middleware.core.crypto import PublicKey
from chio_middleware.core.errors import FederationInvalid, Unavailable
from chio_middleware.core.federation import accept_envelope_sync
from chio_middleware.stores import open_store
from chio_middleware.stores.peers import open_peer_store

RACE_TIMEOUT = 10.0


def race_accept(
    url: str, prefix: str, envelope: dict[str, Any], anchor: str, now: int,
    barrier: Any, results: Any,
) -> None:
    """Open both stores as a worker does, wait for every racer, accept one envelope, report."""
    nonces = open_store(url, key_prefix=prefix, timeout=RACE_TIMEOUT)
    peers = open_peer_store(url, key_prefix=prefix, timeout=RACE_TIMEOUT)
    try:
        barrier.wait(timeout=60)
        try:
            accept_envelope_sync(
                envelope,
                kernel_id="chio-middleware.test",
                now=now,
                anchors={"kernel.org-a": PublicKey.from_hex(anchor)},
                peers=peers,
                nonces=nonces,
            )
        except FederationInvalid as exc:
            results.put(exc.step)
        except Unavailable as exc:
            results.put(f"unavailable: {exc}")
        else:
            results.put("pinned")
    finally:
        nonces.close()
        peers.close()  # type: ignore[attr-defined]
