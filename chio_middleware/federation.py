"""Federation wiring: settings (and the policy file's ``[federation]``) into core objects.

The protocol is in :mod:`chio_middleware.core.federation` and
:mod:`chio_middleware.core.federation_trust`; the pin stores in
:mod:`chio_middleware.stores.peers`. This module only decides, from :class:`ChioSettings`,
whether federation is on and with which values.
"""

from __future__ import annotations

from collections.abc import Iterable

from .core.crypto import PublicKey
from .core.federation import AsyncPeerStore, PeerStore, SyncPeerStoreAsAsync
from .core.federation_trust import FederationConfig
from .settings import ChioSettings, PolicyFile

__all__ = ["async_peer_view", "federation_config"]


def federation_config(
    settings: ChioSettings,
    policy: PolicyFile | None,
    *,
    static_issuers: Iterable[PublicKey],
    static_nonce_signers: Iterable[PublicKey],
) -> FederationConfig | None:
    """The effective federation settings, or ``None`` when no trust anchor is configured.

    Values of the policy file's ``[federation]`` table win over the settings, as the
    other policy-file values do; anchors of both are merged (settings validation refuses
    one kernel with two keys).
    """
    table = policy.federation if policy is not None else None
    peers = dict(settings.federation_peers)
    kernel_id = settings.kernel_id
    rotation_window = settings.federation_rotation_window
    max_skew = settings.federation_max_skew
    pin_cache_ttl = settings.federation_pin_cache_ttl
    if table is not None:
        peers.update(table.peers)
        kernel_id = table.kernel_id or kernel_id
        rotation_window = table.rotation_window or rotation_window
        max_skew = table.max_skew or max_skew
        pin_cache_ttl = table.pin_cache_ttl if table.pin_cache_ttl is not None else pin_cache_ttl
    if not peers or kernel_id is None:
        return None
    return FederationConfig(
        kernel_id=kernel_id,
        anchors={kernel: PublicKey.from_hex(key) for kernel, key in peers.items()},
        rotation_window=rotation_window,
        max_skew=max_skew,
        pin_cache_ttl=pin_cache_ttl,
        static_issuers=frozenset(static_issuers),
        static_nonce_signers=frozenset(static_nonce_signers),
    )


def async_peer_view(store: PeerStore) -> AsyncPeerStore:
    """The view the ASGI path awaits: network stores in a thread, local ones inline."""
    from .stores.peers import RedisPeerStore, ThreadedPeerStore

    if isinstance(store, RedisPeerStore):
        return ThreadedPeerStore(store)
    return SyncPeerStoreAsAsync(store)
