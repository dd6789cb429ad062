"""The store conformance suite: every backend, sync and async, answers as MemoryReplayStore.

Times are passed explicitly (the caller's clock is authoritative): nothing sleeps.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chio_middleware.core.errors import (
    ChioError,
    RateLimited,
    ReplayDetected,
    ReservationQuotaExceeded,
)
from chio_middleware.core.replay import (
    QUOTA_BUCKET_SECONDS,
    AsyncReplayStore,
    BudgetExceeded,
    MemoryReplayStore,
    ReplayStore,
    TokenBucket,
    as_async,
)

from . import workers
from .conftest import AsyncDriven

RACERS = 16


def test_is_a_replay_store(backend: str, opened: Callable[..., ReplayStore]) -> None:
    assert isinstance(opened(backend), ReplayStore)


# -- reservations -------------------------------------------------------------------------


def test_reserve_once(store: Any) -> None:
    store.reserve("nonce", expires_at=110, now=100)
    with pytest.raises(ReplayDetected) as info:
        store.reserve("nonce", expires_at=120, now=100)
    assert info.value.status == 401 and info.value.code == "chio_replay_detected"
    store.reserve("other", expires_at=110, now=100)


def test_reserve_refused_until_expiry_then_reusable(store: Any) -> None:
    store.reserve("k", expires_at=110, now=100)
    with pytest.raises(ReplayDetected):
        store.reserve("k", expires_at=120, now=109.9)
    store.reserve("k", expires_at=130, now=110)  # expired at 110 by the caller's clock
    with pytest.raises(ReplayDetected):
        store.reserve("k", expires_at=140, now=129)
    store.reserve("k", expires_at=140, now=130.5)


def test_refused_reservation_keeps_the_first_expiry(store: Any) -> None:
    store.reserve("k", expires_at=110, now=100)
    with pytest.raises(ReplayDetected):
        store.reserve("k", expires_at=500, now=105)  # must not extend the entry
    store.reserve("k", expires_at=120, now=110)


def test_reservations_budgets_and_buckets_are_separate(store: Any) -> None:
    store.reserve("same", expires_at=110, now=100)
    assert store.consume("same", limit=1, expires_at=110, now=100) == 1
    store.take("same", bucket=TokenBucket(rate=1.0, burst=1), now=100)


# -- budgets ------------------------------------------------------------------------------


def test_budget_counts_to_the_limit_then_refuses(store: Any) -> None:
    assert [store.consume("cap", limit=3, expires_at=500, now=100) for _ in range(3)] == [1, 2, 3]
    with pytest.raises(BudgetExceeded) as info:
        store.consume("cap", limit=3, expires_at=500, now=101)
    assert info.value.status == 429 and info.value.retry_after == 399
    with pytest.raises(BudgetExceeded) as info:
        store.consume("cap", limit=3, expires_at=900, now=499.5)  # the first window holds
    assert info.value.retry_after == 1
    assert store.consume("cap", limit=3, expires_at=900, now=500) == 1  # window ended


def test_zero_budget_refuses_at_once(store: Any) -> None:
    with pytest.raises(BudgetExceeded) as info:
        store.consume("none", limit=0, expires_at=130, now=100)
    assert info.value.retry_after == 30


def test_budgets_are_per_key(store: Any) -> None:
    assert store.consume("a", limit=1, expires_at=500, now=100) == 1
    assert store.consume("b", limit=1, expires_at=500, now=100) == 1
    with pytest.raises(BudgetExceeded):
        store.consume("a", limit=1, expires_at=500, now=100)


def test_budget_window_ends_at_a_fractional_expiry(store: Any) -> None:
    assert store.consume("f", limit=1, expires_at=500.5, now=100) == 1
    assert store.consume("f", limit=1, expires_at=900, now=500.7) == 1


# -- token buckets ------------------------------------------------------------------------


def test_token_bucket_burst_refill_and_retry_after(store: Any) -> None:
    bucket = TokenBucket(rate=1.0, burst=2)
    store.take("s", bucket=bucket, now=0)
    store.take("s", bucket=bucket, now=0)
    with pytest.raises(RateLimited) as info:
        store.take("s", bucket=bucket, now=0.5)
    assert info.value.status == 429 and info.value.retry_after == 1
    assert not isinstance(info.value, BudgetExceeded)
    store.take("s", bucket=bucket, now=1.5)  # 0.5 + 1.0 refilled
    store.take("other", bucket=bucket, now=1.5)


def test_token_bucket_slow_rate_retry_after(store: Any) -> None:
    bucket = TokenBucket(rate=0.1, burst=1)
    store.take("slow", bucket=bucket, now=1000)
    with pytest.raises(RateLimited) as info:
        store.take("slow", bucket=bucket, now=1002.5)  # 0.25 tokens: 7.5 s to go
    assert info.value.retry_after == 8
    store.take("slow", bucket=bucket, now=1010)


def test_token_bucket_never_exceeds_burst(store: Any) -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    for _ in range(3):
        store.take("b", bucket=bucket, now=10_000)  # a long idle time refills only to 3
    with pytest.raises(RateLimited):
        store.take("b", bucket=bucket, now=10_000)


# -- races --------------------------------------------------------------------------------


def _race_threads(target: Callable[[], Any]) -> list[Any]:
    barrier = threading.Barrier(RACERS)
    outcomes: list[Any] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait(timeout=60)
        try:
            outcome: Any = target()
        except ChioError as exc:
            outcome = type(exc).__name__
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=run) for _ in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_threads_racing_on_one_reservation_have_one_winner(
    backend: str, opened: Callable[..., ReplayStore]
) -> None:
    store = opened(backend, timeout=workers.RACE_TIMEOUT)
    outcomes = _race_threads(lambda: store.reserve("the-nonce", expires_at=1_000, now=1))
    assert Counter(outcomes) == {None: 1, "ReplayDetected": RACERS - 1}


def test_threads_with_their_own_stores_have_one_winner(
    shared_backend: str, opened: Callable[..., ReplayStore]
) -> None:
    stores = iter([opened(shared_backend, timeout=workers.RACE_TIMEOUT) for _ in range(RACERS)])
    lock = threading.Lock()

    def attempt() -> None:
        with lock:
            mine = next(stores)
        mine.reserve("the-nonce", expires_at=1_000, now=1)

    assert Counter(_race_threads(attempt)) == {None: 1, "ReplayDetected": RACERS - 1}


def test_threads_spending_one_budget_get_exactly_the_limit(
    backend: str, opened: Callable[..., ReplayStore]
) -> None:
    store = opened(backend, timeout=workers.RACE_TIMEOUT)
    limit = 5

    def spend_three() -> list[int | str]:
        spent: list[int | str] = []
        for _ in range(3):
            try:
                spent.append(store.consume("budget", limit=limit, expires_at=1_000, now=1))
            except BudgetExceeded:
                spent.append("spent")
        return spent

    outcomes = [item for spent in _race_threads(spend_three) for item in spent]
    assert sorted(o for o in outcomes if isinstance(o, int)) == list(range(1, limit + 1))
    assert outcomes.count("spent") == 3 * RACERS - limit


def test_threads_draining_one_bucket_get_exactly_the_burst(
    backend: str, opened: Callable[..., ReplayStore]
) -> None:
    store = opened(backend, timeout=workers.RACE_TIMEOUT)
    bucket = TokenBucket(rate=0.5, burst=4)
    outcomes = _race_threads(lambda: store.take("bucket", bucket=bucket, now=50))
    assert Counter(outcomes) == {None: 4, "RateLimited": RACERS - 4}


def test_async_tasks_racing_have_one_winner_and_spend_exactly_the_limit(
    backend: str, opened: Callable[..., ReplayStore]
) -> None:
    store = opened(backend, timeout=workers.RACE_TIMEOUT)

    async def race(view: AsyncReplayStore) -> tuple[list[Any], list[Any]]:
        reservations = await asyncio.gather(
            *(view.reserve("nonce", expires_at=1_000, now=1) for _ in range(RACERS)),
            return_exceptions=True,
        )
        counts = await asyncio.gather(
            *(view.consume("budget", limit=7, expires_at=1_000, now=1) for _ in range(RACERS)),
            return_exceptions=True,
        )
        aclose = getattr(view, "aclose", None)
        if aclose is not None:
            await aclose()
        return reservations, counts

    reservations, counts = asyncio.run(race(as_async(store)))
    assert reservations.count(None) == 1
    assert all(isinstance(r, ReplayDetected) for r in reservations if r is not None)
    assert sorted(c for c in counts if isinstance(c, int)) == list(range(1, 8))
    assert sum(isinstance(c, BudgetExceeded) for c in counts) == RACERS - 7


def _race_processes(target: Callable[..., None], *args: Any, racers: int = 8) -> list[Any]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(racers)
    results = context.Queue()
    processes = [
        context.Process(target=target, args=(*args, barrier, results)) for _ in range(racers)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    return outcomes


def test_processes_racing_on_one_reservation_have_one_winner(
    shared_backend: str, opened: Callable[..., ReplayStore], store_url: Any
) -> None:
    opened(shared_backend)  # created (and its schema made) before the race, closed after it
    url, prefix = store_url(shared_backend)
    outcomes = _race_processes(workers.race_reserve, url, prefix)
    assert Counter(outcomes) == {"won": 1, "lost": 7}


def test_processes_spending_one_budget_get_exactly_the_limit(
    shared_backend: str, opened: Callable[..., ReplayStore], store_url: Any
) -> None:
    store = opened(shared_backend)
    url, prefix = store_url(shared_backend)
    outcomes = _race_processes(workers.race_consume, url, prefix, 13, 4)
    flat = [item for spent in outcomes for item in spent]
    assert sorted(o for o in flat if isinstance(o, int)) == list(range(1, 14))
    assert flat.count("spent") == 8 * 4 - 13
    with pytest.raises(BudgetExceeded):  # and the parent sees the spent budget too
        store.consume("the-budget", limit=13, expires_at=1_000, now=1)


def test_processes_opening_a_new_sqlite_file_together_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'state.db'}"
    (tmp_path / "fresh").mkdir()
    outcomes = _race_processes(workers.race_reserve, url, "chio:", racers=12)
    assert Counter(outcomes) == {"won": 1, "lost": 11}


# -- every backend against the reference, operation by operation --------------------------

_TIMES = st.integers(min_value=0, max_value=24).map(lambda quarters: quarters / 4)
_OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "consume", "take"]),
        st.sampled_from(["a", "b"]),
        _TIMES,  # time passing before the call
        st.integers(min_value=0, max_value=8),  # lifetime, or budget limit
    ),
    max_size=30,
)
_BUCKET = TokenBucket(rate=0.75, burst=2)


def _call(store: Any, name: str, key: str, now: float, number: int) -> Any:
    if name == "reserve":
        return store.reserve(key, expires_at=now + number / 2, now=now)
    if name == "consume":
        # Whole-second budget expiries: see test_budget_window_ends_at_a_fractional_expiry.
        return store.consume(key, limit=number % 4, expires_at=float(int(now) + number), now=now)
    return store.take(key, bucket=_BUCKET, now=now)


def _apply(store: Any, namespace: str, operations: list[tuple[str, str, float, int]]) -> list[Any]:
    now = 1_000.0
    outcomes: list[tuple[str, Any]] = []
    for name, key, elapsed, number in operations:
        now += elapsed
        try:
            outcomes.append(("ok", _call(store, name, namespace + key, now, number)))
        except RateLimited as exc:  # BudgetExceeded included
            outcomes.append((type(exc).__name__, exc.retry_after))
        except ReplayDetected as exc:  # with the same replay observation everywhere
            outcomes.append(("ReplayDetected", (exc.prior_presentations, exc.first_used_at)))
        except ChioError as exc:
            outcomes.append((type(exc).__name__, None))
    return outcomes


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=_OPERATIONS)
def test_every_backend_answers_as_the_memory_store(
    store: Any, operations: list[tuple[str, str, float, int]]
) -> None:
    namespace = f"{uuid.uuid4().hex}:"  # the store outlives one example: fresh keys each time
    expected = _apply(MemoryReplayStore(), namespace, operations)
    assert _apply(store, namespace, operations) == expected


# -- the per-owner quota of live slots ------------------------------------------------------

QUOTA = 3
ALICE, BOB = "a1" * 32, "b0" * 32  # owners are capability subjects' hex keys


@pytest.fixture(params=["sync", "async"])
def quota_store(
    request: pytest.FixtureRequest, backend: str, opened: Callable[..., ReplayStore]
) -> Iterator[Any]:
    """A store of each backend with ``subject_quota=QUOTA``, sync and async."""
    sync_store = opened(backend, subject_quota=QUOTA)
    if request.param == "sync":
        yield sync_store
        return
    driven = AsyncDriven(sync_store)
    yield driven
    driven.close()


def test_owner_past_its_quota_is_refused_with_429_until_its_oldest_slot_ends(
    quota_store: Any,
) -> None:
    assert QUOTA_BUCKET_SECONDS == 10  # the bucket ends below are multiples of 10
    quota_store.reserve("p1", expires_at=125, now=100, owner=ALICE)  # counts until 130
    quota_store.reserve("p2", expires_at=141, now=100, owner=ALICE)  # until 150
    quota_store.reserve("p3", expires_at=150, now=100, owner=ALICE)  # until 150
    with pytest.raises(ReservationQuotaExceeded) as info:
        quota_store.reserve("p4", expires_at=200, now=100.5, owner=ALICE)
    error = info.value
    assert isinstance(error, RateLimited) and error.status == 429
    assert error.code == "chio_rate_limited" and error.retry_after == 30  # 130 - 100.5
    assert "store_subject_quota" in error.message
    # The slot p1 has expired at 125, but it counts until its bucket ends at 130.
    with pytest.raises(ReservationQuotaExceeded) as info:
        quota_store.reserve("p4", expires_at=200, now=129.5, owner=ALICE)
    assert info.value.retry_after == 1
    quota_store.reserve("p4", expires_at=200, now=130, owner=ALICE)
    with pytest.raises(ReservationQuotaExceeded) as info:
        quota_store.reserve("p5", expires_at=200, now=131, owner=ALICE)
    assert info.value.retry_after == 19  # the next oldest bucket ends at 150


def test_retry_after_is_the_wait_for_the_owners_oldest_slot_not_the_refused_one(
    quota_store: Any,
) -> None:
    for index in range(QUOTA):
        quota_store.reserve(f"long-{index}", expires_at=390, now=100, owner=ALICE)  # until 390
    with pytest.raises(ReservationQuotaExceeded) as info:
        quota_store.reserve("short", expires_at=105, now=100, owner=ALICE)  # would end at 110
    assert info.value.retry_after == 290


def test_one_owner_at_its_quota_leaves_every_other_owner_served(quota_store: Any) -> None:
    for index in range(QUOTA):
        quota_store.reserve(f"alice-{index}", expires_at=400, now=100, owner=ALICE)
    for index in range(20):  # the flood goes on: every further slot refused, never recorded
        with pytest.raises(ReservationQuotaExceeded):
            quota_store.reserve(f"flood-{index}", expires_at=400, now=100, owner=ALICE)
    for index in range(QUOTA):
        quota_store.reserve(f"bob-{index}", expires_at=400, now=100, owner=BOB)
    quota_store.reserve("no-owner", expires_at=400, now=100)  # no owner: no quota
    with pytest.raises(ReservationQuotaExceeded):
        quota_store.reserve("bob-more", expires_at=400, now=100, owner=BOB)


def test_a_refused_reservation_records_nothing(quota_store: Any) -> None:
    for index in range(QUOTA):
        quota_store.reserve(f"k{index}", expires_at=400, now=100, owner=ALICE)
    with pytest.raises(ReservationQuotaExceeded):
        quota_store.reserve("refused", expires_at=400, now=100, owner=ALICE)
    quota_store.reserve("refused", expires_at=400, now=101, owner=BOB)  # not a replay
    with pytest.raises(ReplayDetected):
        quota_store.reserve("refused", expires_at=400, now=102, owner=BOB)


def test_a_replay_is_reported_as_a_replay_at_the_quota(quota_store: Any) -> None:
    for index in range(QUOTA):
        quota_store.reserve(f"k{index}", expires_at=400, now=100, owner=ALICE)
    with pytest.raises(ReplayDetected) as info:
        quota_store.reserve("k0", expires_at=400, now=101, owner=ALICE)
    assert (info.value.prior_presentations, info.value.first_used_at) == (1, 100)
    with pytest.raises(ReplayDetected) as info:  # whoever presents it
        quota_store.reserve("k0", expires_at=400, now=101, owner=BOB)
    assert info.value.prior_presentations == 2


def test_replays_and_slots_without_an_owner_do_not_count(quota_store: Any) -> None:
    quota_store.reserve("shared", expires_at=400, now=100)
    for _ in range(5):
        with pytest.raises(ReplayDetected):
            quota_store.reserve("shared", expires_at=400, now=100, owner=ALICE)
    for index in range(QUOTA):
        quota_store.reserve(f"k{index}", expires_at=400, now=100, owner=ALICE)


def test_quota_frees_as_buckets_end_and_reused_keys_count_anew(quota_store: Any) -> None:
    for index in range(QUOTA):
        quota_store.reserve(f"k{index}", expires_at=105, now=100, owner=ALICE)  # until 110
    # Every slot and its bucket have ended: the same keys may be reserved again.
    for index in range(QUOTA):
        quota_store.reserve(f"k{index}", expires_at=200, now=110, owner=ALICE)
    with pytest.raises(ReservationQuotaExceeded) as info:
        quota_store.reserve("k9", expires_at=200, now=111, owner=ALICE)
    assert info.value.retry_after == 89


def test_threads_racing_for_one_quota_get_exactly_the_quota(
    backend: str, opened: Callable[..., ReplayStore]
) -> None:
    store = opened(backend, timeout=workers.RACE_TIMEOUT, subject_quota=QUOTA)
    keys = iter(range(RACERS))
    lock = threading.Lock()

    def attempt() -> None:
        with lock:
            key = f"slot-{next(keys)}"
        store.reserve(key, expires_at=1_000, now=1, owner=ALICE)

    outcomes = _race_threads(attempt)
    assert Counter(outcomes) == {None: QUOTA, "ReservationQuotaExceeded": RACERS - QUOTA}


def test_threads_with_their_own_stores_share_one_quota(
    shared_backend: str, opened: Callable[..., ReplayStore]
) -> None:
    stores = iter(
        [
            opened(shared_backend, timeout=workers.RACE_TIMEOUT, subject_quota=QUOTA)
            for _ in range(RACERS)
        ]
    )
    lock = threading.Lock()
    counter = iter(range(RACERS))

    def attempt() -> None:
        with lock:
            mine, key = next(stores), f"slot-{next(counter)}"
        mine.reserve(key, expires_at=1_000, now=1, owner=ALICE)

    outcomes = _race_threads(attempt)
    assert Counter(outcomes) == {None: QUOTA, "ReservationQuotaExceeded": RACERS - QUOTA}


_OWNED_OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from([f"k{index}" for index in range(12)]),
        st.sampled_from([ALICE, ALICE, BOB, None]),
        st.integers(min_value=0, max_value=16).map(lambda quarters: quarters / 4),
        st.integers(min_value=1, max_value=120),  # lifetime in quarter seconds
    ),
    min_size=6,
    max_size=40,
)


def _apply_owned(
    store: Any, namespace: str, operations: list[tuple[str, str | None, float, int]]
) -> list[Any]:
    now = 1_000.0
    outcomes: list[tuple[str, Any]] = []
    for key, owner, elapsed, lifetime in operations:
        now += elapsed
        try:
            store.reserve(
                namespace + key,
                expires_at=now + lifetime / 4,
                now=now,
                owner=None if owner is None else namespace + owner,
            )
            outcomes.append(("ok", None))
        except RateLimited as exc:
            outcomes.append((type(exc).__name__, exc.retry_after))
        except ChioError as exc:
            outcomes.append((type(exc).__name__, None))
    return outcomes


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=_OWNED_OPERATIONS)
def test_every_backend_keeps_quotas_as_the_memory_store(
    quota_store: Any, operations: list[tuple[str, str | None, float, int]]
) -> None:
    namespace = f"{uuid.uuid4().hex}:"
    expected = _apply_owned(MemoryReplayStore(subject_quota=QUOTA), namespace, operations)
    assert _apply_owned(quota_store, namespace, operations) == expected
