from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chio_middleware.core.errors import (
    RateLimited,
    ReplayDetected,
    ReservationQuotaExceeded,
    StoreFull,
    Unavailable,
)
from chio_middleware.core.replay import (
    QUOTA_BUCKET_SECONDS,
    BudgetExceeded,
    MemoryReplayStore,
    ReplayStore,
    TokenBucket,
    quota_bucket_end,
)


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


def test_a_flooding_subject_is_refused_with_429_and_cannot_fill_the_store() -> None:
    store = MemoryReplayStore(capacity=10, subject_quota=4)
    refused = 0
    for i in range(100):
        try:
            store.reserve(f"alice-{i}", expires_at=1000, now=100, owner="alice")
        except ReservationQuotaExceeded as exc:
            assert exc.status == 429 and exc.retry_after == 900
            refused += 1
    assert refused == 96 and len(store) == 4
    for i in range(4):
        store.reserve(f"bob-{i}", expires_at=1000, now=100, owner="bob")
    store.reserve("carol-0", expires_at=1000, now=100, owner="carol")
    store.reserve("carol-1", expires_at=1000, now=100, owner="carol")
    # Only capacity // subject_quota subjects flooding together fill it; then 503, no eviction.
    with pytest.raises(StoreFull):
        store.reserve("carol-2", expires_at=1000, now=100, owner="carol")


def test_quota_state_is_reclaimed_with_the_slots() -> None:
    store = MemoryReplayStore(capacity=100, subject_quota=5)
    for i in range(5):
        store.reserve(f"a{i}", expires_at=105 + 10 * i, now=100, owner="alice")
    with pytest.raises(ReservationQuotaExceeded):
        store.reserve("late", expires_at=300, now=101, owner="alice")
    store.reserve("b", expires_at=300, now=200)  # every slot of alice has ended
    assert store._owned == {} and store._owners_due == {} and store._quota_ends == []
    assert len(store) == 1


def test_keys_are_held_as_fixed_size_digests() -> None:
    store = MemoryReplayStore()
    key = "dpop:" + '["' + "ab" * 16 + '","' + "c" * 4000 + '"]'
    store.reserve(key, expires_at=200, now=100)
    (held,) = store._expiry
    assert isinstance(held, int) and held.bit_length() <= 128
    with pytest.raises(ReplayDetected):
        store.reserve(key, expires_at=200, now=101)
    store.reserve(key[:-3] + 'd"]', expires_at=200, now=101)  # another key: another slot
    assert len(store) == 2


@given(st.floats(min_value=0, max_value=1e11, allow_nan=False))
def test_a_slot_counts_until_its_bucket_ends_never_before_its_own_expiry(expiry: float) -> None:
    end = quota_bucket_end(expiry)
    assert end % QUOTA_BUCKET_SECONDS == 0
    assert expiry <= end <= expiry + QUOTA_BUCKET_SECONDS
