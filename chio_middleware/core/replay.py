"""Replay and budget state: the store protocol and the in-memory backend.

A store reserves keys until an absolute expiry (DPoP proof nonces, execution nonce ids),
counts invocations against a cap (``max_invocations``) and runs token buckets (rate
limits). Every operation is atomic. A store that cannot answer raises
:class:`~chio_middleware.core.errors.Unavailable`, which the middleware turns into a 503:
a store failure never becomes an allow.
"""

from __future__ import annotations

import heapq
import math
import threading
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .errors import RateLimited, ReplayDetected, StoreFull

__all__ = [
    "AsyncReplayStore",
    "BudgetExceeded",
    "MemoryReplayStore",
    "ReplayStore",
    "SyncStoreAsAsync",
    "TokenBucket",
    "as_async",
    "budget_exceeded",
    "rate_limited",
    "refill",
]

DEFAULT_CAPACITY = 8192


class BudgetExceeded(RateLimited):
    """An invocation budget is spent."""

    guard = "InvocationBudgetGuard"


@dataclass(frozen=True)
class TokenBucket:
    """A token bucket: ``burst`` tokens, refilled at ``rate`` tokens per second."""

    rate: float
    burst: int


@runtime_checkable
class ReplayStore(Protocol):
    """Shared replay and budget state. Times are Unix seconds."""

    def reserve(self, key: str, *, expires_at: float, now: float) -> None:
        """Record ``key`` until ``expires_at``; raise ``ReplayDetected`` if it is live.

        A refusal counts the presentation, atomically, and the ``ReplayDetected`` carries
        the presentations before it and the first use time (kept as long as the key is).
        """

    def consume(self, key: str, *, limit: int, expires_at: float, now: float) -> int:
        """Count one use of ``key``; raise ``BudgetExceeded`` past ``limit``; return the count."""

    def take(self, key: str, *, bucket: TokenBucket, now: float) -> None:
        """Take a token from ``key``'s bucket; raise ``RateLimited`` when it is empty."""

    def close(self) -> None:
        """Release connections and files."""


def refill(tokens: float, stamp: float, bucket: TokenBucket, now: float) -> float:
    """The tokens in a bucket that held ``tokens`` at ``stamp``, refilled up to ``now``."""
    return min(float(bucket.burst), tokens + max(0.0, now - stamp) * bucket.rate)


def rate_limited(tokens: float, bucket: TokenBucket) -> RateLimited:
    """The refusal of a bucket holding ``tokens`` (< 1): wait until one whole token is back."""
    return RateLimited("rate limit reached", retry_after=math.ceil((1.0 - tokens) / bucket.rate))


def budget_exceeded(limit: int, expiry: float, now: float) -> BudgetExceeded:
    """The refusal of a spent budget: wait until its window ends at ``expiry``."""
    return BudgetExceeded(
        f"invocation budget of {limit} is spent", retry_after=max(1, math.ceil(expiry - now))
    )


class AsyncReplayStore(Protocol):
    """The same operations for the ASGI path; the same exceptions."""

    async def reserve(self, key: str, *, expires_at: float, now: float) -> None:
        """See :meth:`ReplayStore.reserve`."""

    async def consume(self, key: str, *, limit: int, expires_at: float, now: float) -> int:
        """See :meth:`ReplayStore.consume`."""

    async def take(self, key: str, *, bucket: TokenBucket, now: float) -> None:
        """See :meth:`ReplayStore.take`."""


class SyncStoreAsAsync:
    """Runs a sync store's operations inline behind the async interface.

    For stores whose operations never wait on the network (memory; the WSGI path, where
    nothing is awaited for real). The pipeline is written once, as coroutines.
    """

    def __init__(self, store: ReplayStore) -> None:
        self.store = store

    async def reserve(self, key: str, *, expires_at: float, now: float) -> None:
        """See :meth:`ReplayStore.reserve`."""
        self.store.reserve(key, expires_at=expires_at, now=now)

    async def consume(self, key: str, *, limit: int, expires_at: float, now: float) -> int:
        """See :meth:`ReplayStore.consume`."""
        return self.store.consume(key, limit=limit, expires_at=expires_at, now=now)

    async def take(self, key: str, *, bucket: TokenBucket, now: float) -> None:
        """See :meth:`ReplayStore.take`."""
        self.store.take(key, bucket=bucket, now=now)


def as_async(store: ReplayStore) -> AsyncReplayStore:
    """The async view of ``store``: its own ``async_view()`` if it has one (a store with a
    native async client), else :class:`SyncStoreAsAsync`."""
    view = getattr(store, "async_view", None)
    if callable(view):
        result: AsyncReplayStore = view()
        return result
    return SyncStoreAsAsync(store)


class MemoryReplayStore:
    """One process's store: bounded, thread-safe, never evicts a live entry.

    Reservations live in a dict (key -> expiry) and in buckets by whole expiry second,
    whose seconds sit in a heap. Each call first drops the buckets that have expired, so
    reclaiming costs O(1) per entry ever stored and no call scans the whole store; the heap
    holds one item per distinct expiry second, a few hundred at most for the default TTLs.
    When every slot holds a live entry a new reservation is refused with
    :class:`StoreFull` (fail closed, 503) instead of evicting one: evicting would let the
    evicted nonce be replayed.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}
        #: key -> (first use, presentations) of each live reservation: replay observations.
        self._seen: dict[str, tuple[float, int]] = {}
        self._buckets: dict[int, list[str]] = {}
        self._seconds: list[int] = []
        self._counters: dict[str, tuple[int, float]] = {}
        self._tokens: dict[str, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._expiry)

    def _track(self, key: str, expires_at: float) -> None:
        second = math.ceil(expires_at)
        bucket = self._buckets.get(second)
        if bucket is None:
            self._buckets[second] = bucket = []
            heapq.heappush(self._seconds, second)
        bucket.append(key)

    def _reclaim(self, now: float) -> None:
        seconds = self._seconds
        while seconds and seconds[0] <= now:
            for key in self._buckets.pop(heapq.heappop(seconds)):
                expiry = self._expiry.get(key)
                if expiry is not None and expiry <= now:
                    del self._expiry[key]
                    self._seen.pop(key, None)
                if key in self._counters and self._counters[key][1] <= now:
                    del self._counters[key]

    def reserve(self, key: str, *, expires_at: float, now: float) -> None:
        """Record ``key`` until ``expires_at``; raise ``ReplayDetected`` if it is live."""
        with self._lock:
            self._reclaim(now)
            expiry = self._expiry.get(key)
            if expiry is not None and expiry > now:
                first, presented = self._seen.get(key, (now, 1))
                self._seen[key] = (first, presented + 1)
                raise ReplayDetected(
                    "this proof or nonce was already used",
                    prior_presentations=presented,
                    first_used_at=first,
                )
            if expiry is None and len(self._expiry) + len(self._counters) >= self.capacity:
                raise StoreFull("replay store is full of live entries; refusing (fail closed)")
            self._expiry[key] = expires_at
            self._seen[key] = (now, 1)
            self._track(key, expires_at)

    def consume(self, key: str, *, limit: int, expires_at: float, now: float) -> int:
        """Count one use of ``key`` until ``expires_at``; raise ``BudgetExceeded`` when spent."""
        with self._lock:
            self._reclaim(now)
            count, expiry = self._counters.get(key, (0, expires_at))
            if expiry <= now:  # the window ended (reclaim works in whole seconds)
                count, expiry = 0, expires_at
            if count == 0 and len(self._expiry) + len(self._counters) >= self.capacity:
                raise StoreFull("replay store is full of live entries; refusing (fail closed)")
            if count >= limit:
                raise budget_exceeded(limit, expiry, now)
            if count == 0:
                self._track(key, expiry)
            self._counters[key] = (count + 1, expiry)
            return count + 1

    def take(self, key: str, *, bucket: TokenBucket, now: float) -> None:
        """Take one token from ``key``'s bucket; raise ``RateLimited`` with the wait when empty."""
        with self._lock:
            tokens, stamp = self._tokens.get(key, (float(bucket.burst), now))
            tokens = refill(tokens, stamp, bucket, now)
            if tokens < 1.0:
                self._tokens[key] = (tokens, now)
                raise rate_limited(tokens, bucket)
            if key not in self._tokens and len(self._tokens) >= self.capacity:
                self._drop_full_buckets(bucket, now)
                if len(self._tokens) >= self.capacity:
                    raise StoreFull("rate-limit table is full; refusing (fail closed)")
            self._tokens[key] = (tokens - 1.0, now)

    def _drop_full_buckets(self, bucket: TokenBucket, now: float) -> None:
        # A bucket that has refilled completely carries no state worth keeping. This scan
        # only runs when the table is full, which takes ``capacity`` distinct subjects.
        for key, (tokens, stamp) in list(self._tokens.items()):
            if tokens + (now - stamp) * bucket.rate >= bucket.burst:
                del self._tokens[key]

    def close(self) -> None:
        """Nothing to release."""
