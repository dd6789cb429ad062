"""Federation pins in every store backend, and single-use handshakes across workers."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chio_middleware.core.crypto import SigningKey
from chio_middleware.core.errors import FederationInvalid, Unavailable
from chio_middleware.core.federation import (
    FederationPeer,
    PeerStore,
    SyncPeerStoreAsAsync,
    accept_envelope_sync,
    sign_envelope,
)
from chio_middleware.stores import open_store
from chio_middleware.stores.peers import ThreadedPeerStore, open_peer_store

from . import federation_workers

KERNEL = SigningKey.from_seed_hex("41" * 32)
NOW = 1_800_064_000


def _peer(kernel_id: str, established_at: int = NOW, key: SigningKey = KERNEL) -> FederationPeer:
    return FederationPeer(
        kernel_id=kernel_id,
        public_key=key.public_key.hex,
        established_at=established_at,
        rotation_due=established_at + 43_200,
    )


@pytest.fixture
def peers_of(store_url: Callable[[str], tuple[str, str]]) -> Iterator[Callable[[str], Any]]:
    """Opens pin stores of a backend (same URL and prefix each time); closes them after."""
    opened: list[Any] = []

    def open_(backend: str) -> Any:
        url, prefix = store_url(backend)
        store = open_peer_store(url, key_prefix=prefix)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def test_is_a_peer_store(backend: str, peers_of: Callable[[str], Any]) -> None:
    assert isinstance(peers_of(backend), PeerStore)


def test_put_get_replace_forget_list(backend: str, peers_of: Callable[[str], Any]) -> None:
    store = peers_of(backend)
    assert store.get_peer("kernel.org-a") is None
    assert store.list_peers() == []
    store.put_peer(_peer("kernel.org-b"))
    store.put_peer(_peer("kernel.org-a"))
    assert store.get_peer("kernel.org-a") == _peer("kernel.org-a")
    store.put_peer(_peer("kernel.org-a", NOW + 100))  # a re-pin replaces the older pin
    assert store.get_peer("kernel.org-a") == _peer("kernel.org-a", NOW + 100)
    assert [p.kernel_id for p in store.list_peers()] == ["kernel.org-a", "kernel.org-b"]
    assert store.forget_peer("kernel.org-a") is True
    assert store.forget_peer("kernel.org-a") is False
    assert store.get_peer("kernel.org-a") is None
    assert store.list_peers() == [_peer("kernel.org-b")]


def test_unusual_kernel_ids_round_trip(backend: str, peers_of: Callable[[str], Any]) -> None:
    store = peers_of(backend)
    for kernel_id in ("did:chio:buyer-corp", "k é \u2028 ünïcode", "a:b:c", "%"):
        store.put_peer(_peer(kernel_id))
        assert store.get_peer(kernel_id) == _peer(kernel_id)


def test_async_views_answer_as_the_sync_store(backend: str, peers_of: Callable[[str], Any]) -> None:
    store = peers_of(backend)
    for view in (SyncPeerStoreAsAsync(store), ThreadedPeerStore(store)):
        asyncio.run(view.put_peer(_peer("kernel.org-a", NOW + 7)))
        assert asyncio.run(view.get_peer("kernel.org-a")) == _peer("kernel.org-a", NOW + 7)
        assert store.get_peer("kernel.org-a") == _peer("kernel.org-a", NOW + 7)


def test_two_workers_share_pins(shared_backend: str, peers_of: Callable[[str], Any]) -> None:
    first, second = peers_of(shared_backend), peers_of(shared_backend)
    first.put_peer(_peer("kernel.org-a"))
    assert second.get_peer("kernel.org-a") == _peer("kernel.org-a")
    assert second.forget_peer("kernel.org-a")
    assert first.get_peer("kernel.org-a") is None


def test_key_prefixes_keep_deployments_apart(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    a, b = open_peer_store(url, key_prefix="a:"), open_peer_store(url, key_prefix="b:")
    try:
        a.put_peer(_peer("kernel.org-a"))
        assert b.get_peer("kernel.org-a") is None and b.list_peers() == []
    finally:
        a.close()  # type: ignore[attr-defined]
        b.close()  # type: ignore[attr-defined]


def test_closed_sqlite_store_is_unavailable(peers_of: Callable[[str], Any]) -> None:
    store = peers_of("sqlite")
    store.close()
    with pytest.raises(Unavailable):
        store.get_peer("kernel.org-a")


def test_unreachable_redis_is_unavailable() -> None:
    store = open_peer_store("redis://127.0.0.1:1/0", timeout=0.2)
    with pytest.raises(Unavailable):
        store.get_peer("kernel.org-a")


def test_bad_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown store URL"):
        open_peer_store("ftp://x")
    with pytest.raises(ValueError, match="database number"):
        open_peer_store("redis://127.0.0.1:6379/x")


def _envelope(nonce: str = "n-1") -> dict[str, Any]:
    return sign_envelope(
        KERNEL,
        local_kernel_id="kernel.org-a",
        remote_kernel_id="chio-middleware.test",
        nonce=nonce,
        timestamp=NOW,
    ).to_wire()


def test_two_workers_accept_an_envelope_once(
    shared_backend: str, store_url: Callable[[str], tuple[str, str]], peers_of: Any
) -> None:
    url, prefix = store_url(shared_backend)
    workers = [
        (open_store(url, key_prefix=prefix), open_peer_store(url, key_prefix=prefix))
        for _ in range(2)
    ]
    try:
        outcomes = []
        for nonces, peers in workers:
            try:
                accept_envelope_sync(
                    _envelope(),
                    kernel_id="chio-middleware.test",
                    now=NOW,
                    anchors={"kernel.org-a": KERNEL.public_key},
                    peers=peers,
                    nonces=nonces,
                )
                outcomes.append("pinned")
            except FederationInvalid as exc:
                outcomes.append(exc.step)
        assert outcomes == ["pinned", "replay"]
        assert workers[1][1].get_peer("kernel.org-a") == _peer("kernel.org-a")
    finally:
        for nonces, peers in workers:
            nonces.close()
            peers.close()  # type: ignore[attr-defined]


def test_processes_racing_on_one_envelope_pin_once(
    shared_backend: str, store_url: Callable[[str], tuple[str, str]], peers_of: Any
) -> None:
    peers = peers_of(shared_backend)  # the schema exists before the race
    url, prefix = store_url(shared_backend)
    racers = 4
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(racers)
    results = context.Queue()
    processes = [
        context.Process(
            target=federation_workers.race_accept,
            args=(url, prefix, _envelope("n-race"), KERNEL.public_key.hex, NOW, barrier, results),
        )
        for _ in range(racers)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    assert Counter(outcomes) == {"pinned": 1, "replay": racers - 1}
    assert peers.get_peer("kernel.org-a") == _peer("kernel.org-a")
