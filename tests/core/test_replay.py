from __future__ import annotations

import threading

import pytest

from chio_middleware.core.errors import RateLimited, ReplayDetected, StoreFull, Unavailable
from chio_middleware.core.replay import BudgetExceeded, MemoryReplayStore, ReplayStore, TokenBucket


def test_is_a_replay_store() -> None:
    assert isinstance(MemoryReplayStore(), ReplayStore)


def test_reserve_once_until_expiry_then_reuse() -> None:
    store = MemoryReplayStore()
    store.reserve("k", expires_at=110, now=100)
    with pytest.raises(ReplayDetected):
        store.reserve("k", expires_at=120, now=109.9)
    store.reserve("k", expires_at=130, now=110)  # expired at 110: may be used again
    with pytest.raises(ReplayDetected):
        store.reserve("k", expires_at=140, now=129)


def test_flood_never_evicts_a_live_entry() -> None:
    """The reference's LRU evicts the oldest nonce when flooded; we refuse instead."""
    store = MemoryReplayStore(capacity=100)
    for i in range(100):
        store.reserve(f"n{i}", expires_at=1000, now=100)
    with pytest.raises(StoreFull) as info:
        store.reserve("fresh", expires_at=1000, now=100)
    assert isinstance(info.value, Unavailable) and info.value.status == 503
    with pytest.raises(ReplayDetected):
        store.reserve("n0", expires_at=1000, now=101)  # the first nonce replayed: refused
    assert len(store) == 100


def test_expired_entries_are_reclaimed_without_a_scan() -> None:
    store = MemoryReplayStore(capacity=10)
    for i in range(10):
        store.reserve(f"a{i}", expires_at=100 + i, now=50)
    store.reserve("b", expires_at=300, now=104.5)  # a0..a4 reclaimed by now
    assert len(store) == 6
    assert len(store._seconds) == 6  # one heap item per live expiry second


def test_concurrent_reservations_have_exactly_one_winner() -> None:
    store = MemoryReplayStore()
    winners: list[int] = []
    barrier = threading.Barrier(16)

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            store.reserve("same", expires_at=1000, now=1)
        except ReplayDetected:
            return
        winners.append(i)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1


def test_budget_counts_to_the_limit() -> None:
    store = MemoryReplayStore()
    assert [store.consume("cap", limit=3, expires_at=500, now=100) for _ in range(3)] == [1, 2, 3]
    with pytest.raises(BudgetExceeded) as info:
        store.consume("cap", limit=3, expires_at=500, now=101)
    assert info.value.status == 429 and info.value.retry_after == 399
    assert store.consume("cap", limit=3, expires_at=900, now=500) == 1  # budget window ended


def test_token_bucket() -> None:
    store = MemoryReplayStore()
    bucket = TokenBucket(rate=1.0, burst=2)
    store.take("s", bucket=bucket, now=0)
    store.take("s", bucket=bucket, now=0)
    with pytest.raises(RateLimited) as info:
        store.take("s", bucket=bucket, now=0.5)
    assert info.value.retry_after == 1
    store.take("s", bucket=bucket, now=1.5)
    store.take("other", bucket=bucket, now=1.5)
