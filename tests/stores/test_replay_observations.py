"""Replay observations: each backend counts the presentations of a live slot atomically."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
import redis

from chio_middleware.core.errors import ReplayDetected
from chio_middleware.core.replay import MemoryReplayStore, ReplayStore

from .conftest import SHARED_BACKENDS


def _replay(store: Any, key: str, *, now: float) -> ReplayDetected:
    with pytest.raises(ReplayDetected) as caught:
        store.reserve(key, expires_at=now + 100, now=now)
    return caught.value


def test_each_replay_counts_the_presentations_before_it(store: Any) -> None:
    store.reserve("slot", expires_at=1_100.0, now=1_000.0)
    seen = [_replay(store, "slot", now=1_000.0 + i) for i in range(1, 10)]
    assert [r.prior_presentations for r in seen] == list(range(1, 10))
    assert {r.first_used_at for r in seen} == {1_000.0}


def test_a_slot_reused_after_expiry_starts_a_new_observation(store: Any) -> None:
    store.reserve("slot", expires_at=1_010.0, now=1_000.0)
    _replay(store, "slot", now=1_005.0)
    store.reserve("slot", expires_at=1_100.0, now=1_020.0)
    again = _replay(store, "slot", now=1_021.0)
    assert (again.prior_presentations, again.first_used_at) == (1, 1_020.0)


def test_observations_are_per_slot(store: Any) -> None:
    store.reserve("a", expires_at=1_100.0, now=1_000.0)
    store.reserve("b", expires_at=1_100.0, now=1_001.0)
    _replay(store, "a", now=1_002.0)
    b = _replay(store, "b", now=1_003.0)
    assert (b.prior_presentations, b.first_used_at) == (1, 1_001.0)


@pytest.mark.parametrize("backend", SHARED_BACKENDS)
def test_two_stores_on_one_backend_share_the_count(
    backend: str, opened: Callable[..., ReplayStore]
) -> None:
    first, second = opened(backend), opened(backend)
    first.reserve("slot", expires_at=1_100.0, now=1_000.0)
    assert _replay(second, "slot", now=1_001.0).prior_presentations == 1
    assert _replay(first, "slot", now=1_002.0).prior_presentations == 2
    assert _replay(second, "slot", now=1_003.0).prior_presentations == 3


def test_a_replay_flood_does_not_grow_the_memory_store() -> None:
    store = MemoryReplayStore(capacity=16)
    store.reserve("slot", expires_at=2_000.0, now=1_000.0)
    for i in range(20_000):
        _replay(store, "slot", now=1_000.0 + i / 100)
    assert len(store) == 1
    assert len(store._seen) == 1
    assert _replay(store, "slot", now=1_500.0).prior_presentations == 20_001
    for i in range(15):  # the bound still holds for new slots
        store.reserve(f"other-{i}", expires_at=2_000.0, now=1_500.0)
    with pytest.raises(ReplayDetected):
        store.reserve("slot", expires_at=2_000.0, now=1_500.0)
    store.reserve("late", expires_at=3_000.0, now=2_500.0)  # everything expired: reclaimed
    # The flooded slot's count went with it; a slot gets one only when presented again.
    assert len(store._seen) == 0
    assert _replay(store, "late", now=2_501.0).prior_presentations == 1
    assert len(store._seen) == 1


def test_a_replay_flood_adds_nothing_to_sqlite(opened: Callable[..., ReplayStore]) -> None:
    store = opened("sqlite")
    store.reserve("slot", expires_at=2_000.0, now=1_000.0)
    for i in range(500):
        _replay(store, "slot", now=1_000.0 + i)
    rows = sqlite3.connect(store.path).execute(
        "SELECT COUNT(*), MAX(presented) FROM chio_replay_observations"
    )
    assert rows.fetchone() == (1, 501)


def test_a_replay_flood_adds_nothing_to_redis(
    opened: Callable[..., ReplayStore], redis_url: str, redis_prefix: str
) -> None:
    store = opened("redis")
    store.reserve("slot", expires_at=2_000.0, now=1_000.0)
    for i in range(500):
        _replay(store, "slot", now=1_000.0 + i)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = sorted(client.scan_iter(match=redis_prefix + "*"))  # and the epoch marker
        assert keys == [redis_prefix + "epoch", redis_prefix + "replay:slot"]
        assert client.get(redis_prefix + "replay:slot") == "2000.0 1000.0 501"
        assert client.pttl(redis_prefix + "replay:slot") > 0  # KEEPTTL kept the lifetime
    finally:
        client.close()
