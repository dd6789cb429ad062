"""Replay and budget state: the store protocol and the in-memory backend.

A store reserves keys until an absolute expiry (DPoP proof nonces, execution nonce ids),
counts invocations against a cap (``max_invocations``) and runs token buckets (rate
limits). Every operation is atomic. A store that cannot answer raises
:class:`~chio_middleware.core.errors.Unavailable`, which the middleware turns into a 503:
a store failure never becomes an allow.

A reservation may name its ``owner`` (the capability subject): every store then keeps at
most ``subject_quota`` live slots per owner and refuses more with
:class:`~chio_middleware.core.errors.ReservationQuotaExceeded` (429), so that one subject's
flood of proofs cannot fill the store and lock every other subject out. The slots of an
owner are counted per expiry bucket of :data:`QUOTA_BUCKET_SECONDS`: a slot counts against
its owner until its expiry rounded up to the bucket's end (:func:`quota_bucket_end`), so a
check sums a few dozen buckets at most, never the owner's slots one by one. Every backend
counts this way, so all of them give the same answers.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import secrets
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from .errors import (
    RateLimited,
    ReplayDetected,
    ReservationQuotaExceeded,
    StateForgotten,
    StoreFull,
)

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_SUBJECT_QUOTA",
    "QUOTA_BUCKET_SECONDS",
    "AsyncReplayStore",
    "BudgetExceeded",
    "MemoryReplayStore",
    "ReplayStore",
    "ReservationQuotaExceeded",
    "SyncStoreAsAsync",
    "TokenBucket",
    "as_async",
    "budget_exceeded",
    "check_not_forgotten",
    "forgotten_at",
    "quota_bucket_end",
    "quota_exceeded",
    "rate_limited",
    "refill",
    "run_sync",
]

#: Live entries of the in-memory store: 1,510 DPoP requests/s sustained at the default
#: ``proof_ttl`` (a slot lives 331 s), in about 41 MB (``benchmarks/bench_store_memory.py``).
DEFAULT_CAPACITY = 500_000
#: Live replay slots one owner (capability subject) may hold: about 12 DPoP requests/s
#: sustained per subject at the default ``proof_ttl``.
DEFAULT_SUBJECT_QUOTA = 4096
#: Width in seconds of the expiry buckets in which an owner's live slots are counted.
QUOTA_BUCKET_SECONDS = 10


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

    def reserve(self, key: str, *, expires_at: float, now: float, owner: str | None = None) -> None:
        """Record ``key`` until ``expires_at``; raise ``ReplayDetected`` if it is live.

        A refusal counts the presentation, atomically, and the ``ReplayDetected`` carries
        the presentations before it and the first use time (kept as long as the key is).
        With an ``owner``, raise ``ReservationQuotaExceeded`` instead of recording when the
        owner already holds the store's ``subject_quota`` of live slots (a replay is still
        reported as ``ReplayDetected``). A refused reservation records nothing.
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


def quota_bucket_end(expires_at: float) -> int:
    """Until when a slot expiring at ``expires_at`` counts against its owner's quota.

    The end of its :data:`QUOTA_BUCKET_SECONDS` bucket: never before the slot's own expiry,
    at most one bucket width after it.
    """
    end = math.ceil(expires_at / QUOTA_BUCKET_SECONDS) * QUOTA_BUCKET_SECONDS
    return end if end >= expires_at else end + QUOTA_BUCKET_SECONDS  # division rounded down


def quota_exceeded(quota: int, oldest_end: float, now: float) -> ReservationQuotaExceeded:
    """The refusal of an owner at its quota: wait until its oldest bucket ends at ``oldest_end``."""
    return ReservationQuotaExceeded(
        f"this subject already holds {quota} live replay slots (store_subject_quota); retry later",
        retry_after=max(1, math.ceil(oldest_end - now)),
    )


def _check_quota(quota: int, counts: dict[int, int], now: float) -> None:
    """Raise ``ReservationQuotaExceeded`` when the buckets ``counts`` (end -> slots) that are
    still live at ``now`` hold ``quota`` slots or more."""
    live = [(end, count) for end, count in counts.items() if end > now]
    if sum(count for _, count in live) >= quota:
        raise quota_exceeded(quota, min(end for end, _ in live), now)


def budget_exceeded(limit: int, expiry: float, now: float) -> BudgetExceeded:
    """The refusal of a spent budget: wait until its window ends at ``expiry``."""
    return BudgetExceeded(
        f"invocation budget of {limit} is spent", retry_after=max(1, math.ceil(expiry - now))
    )


class AsyncReplayStore(Protocol):
    """The same operations for the ASGI path; the same exceptions."""

    async def reserve(
        self, key: str, *, expires_at: float, now: float, owner: str | None = None
    ) -> None:
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

    async def reserve(
        self, key: str, *, expires_at: float, now: float, owner: str | None = None
    ) -> None:
        """See :meth:`ReplayStore.reserve`."""
        self.store.reserve(key, expires_at=expires_at, now=now, owner=owner)

    async def consume(self, key: str, *, limit: int, expires_at: float, now: float) -> int:
        """See :meth:`ReplayStore.consume`."""
        return self.store.consume(key, limit=limit, expires_at=expires_at, now=now)

    async def take(self, key: str, *, bucket: TokenBucket, now: float) -> None:
        """See :meth:`ReplayStore.take`."""
        self.store.take(key, bucket=bucket, now=now)

    @property
    def forgotten_at(self) -> float | None:
        """See :func:`forgotten_at`."""
        return forgotten_at(self.store)


def forgotten_at(store: object) -> float | None:
    """When ``store`` (sync or async view) was last seen to have lost its state, or ``None``.

    A shared store keeps an epoch marker next to its entries; when the marker disappears or
    changes, the store may have forgotten reservations and budget counts, and its
    ``forgotten_at`` becomes the time that was noticed (when the store's step ran). Proofs, nonces
    and capabilities issued up to that moment are then refused
    (:class:`~chio_middleware.core.errors.StateForgotten`). Stores without a marker (memory,
    which forgets on every restart by design) answer ``None``.
    """
    value = getattr(store, "forgotten_at", None)
    return float(value) if isinstance(value, int | float) else None


def check_not_forgotten(store: object, issued_at: int, *, what: str, guard: str) -> None:
    """Refuse a proof or nonce issued at or before the moment ``store`` was seen to have lost
    its state: its reservation may be among the forgotten ones, so it could be a replay.

    Call it after the reservation (that very call may be the one that noticed the loss).
    Raises :class:`~chio_middleware.core.errors.StateForgotten` (401).
    """
    forgot = forgotten_at(store)
    if forgot is not None and issued_at <= forgot:
        raise StateForgotten(
            f"the replay store lost its state (noticed at {int(forgot)}): this {what} was "
            "issued before and may be a replay; retry with a fresh one",
            guard=guard,
        )


def as_async(store: ReplayStore) -> AsyncReplayStore:
    """The async view of ``store``: its own ``async_view()`` if it has one (a store with a
    native async client), else :class:`SyncStoreAsAsync`."""
    view = getattr(store, "async_view", None)
    if callable(view):
        result: AsyncReplayStore = view()
        return result
    return SyncStoreAsAsync(store)


class _Second:
    """The entries that expire within one whole second, and the values they share.

    A reservation's ``(expiry, first use)`` pair and a budget's expiry are stored as the
    one object its second holds for that value, so the many entries of a busy second share
    a handful of objects (the engine's times are whole seconds) instead of one each.
    """

    __slots__ = ("expiries", "keys", "pairs")

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.expiries: dict[float, float] = {}
        self.pairs: dict[tuple[float, float], tuple[float, float]] = {}


class _Owned:
    """One owner's live slots: per quota bucket end, and their running total."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0


class MemoryReplayStore:
    """One process's store: bounded, thread-safe, never evicts a live entry.

    Reservations live in a dict (key digest -> expiry) and in buckets by whole expiry
    second, whose seconds sit in a heap. Each call first drops the buckets that have
    expired, so reclaiming costs O(1) per entry ever stored and no call scans the whole
    store; the heap holds one item per distinct expiry second, a few hundred at most for
    the default TTLs. When every slot holds a live entry a new reservation is refused with
    :class:`StoreFull` (fail closed, 503) instead of evicting one: evicting would let the
    evicted nonce be replayed.

    Entries are compact, under 100 bytes each, so the default ``capacity`` fits in about
    41 MB: a key is held as its 128-bit keyed BLAKE2b digest (a per-store random key, so
    nobody can aim a collision at another's nonce; a collision could only refuse, never
    admit), and the entries of one second share their ``(expiry, first use)`` objects. Replay
    observations cost nothing until a slot is presented again: only then does it get a
    presentation count (``_seen``), reclaimed with the slot.

    ``subject_quota`` bounds the live slots of each ``owner`` passed to :meth:`reserve`
    (see the module docstring); keep it well below ``capacity``, so that
    ``capacity // subject_quota`` subjects must flood together before anyone gets 503.
    """

    def __init__(
        self, capacity: int = DEFAULT_CAPACITY, *, subject_quota: int = DEFAULT_SUBJECT_QUOTA
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if subject_quota < 1:
            raise ValueError("subject_quota must be at least 1")
        self.capacity = capacity
        self.subject_quota = subject_quota
        self._lock = threading.Lock()
        self._salt = secrets.token_bytes(16)
        #: digest -> (expiry, first use) of each live reservation, the pair shared by the
        #: entries of its second that have the same one.
        self._expiry: dict[int, tuple[float, float]] = {}
        #: digest -> presentations so far, for the live reservations presented again (replay
        #: observations); a reservation never replayed has no entry here.
        self._seen: dict[int, int] = {}
        self._buckets: dict[int, _Second] = {}
        self._seconds: list[int] = []
        self._counters: dict[int, tuple[int, float]] = {}
        self._tokens: dict[str, tuple[float, float]] = {}
        # Per owner: its live slots by quota bucket end; per bucket end, its owners.
        self._owned: dict[str, _Owned] = {}
        self._owners_due: dict[int, list[str]] = {}
        self._quota_ends: list[int] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def _digest(self, key: str) -> int:
        data = key.encode("utf-8", "surrogatepass")
        digest = hashlib.blake2b(data, digest_size=16, key=self._salt).digest()
        return int.from_bytes(digest, "big")

    def _track(self, digest: int, expires_at: float) -> _Second:
        """File ``digest`` under its expiry second, and return that second."""
        second = math.ceil(expires_at)
        bucket = self._buckets.get(second)
        if bucket is None:
            self._buckets[second] = bucket = _Second()
            heapq.heappush(self._seconds, second)
        bucket.keys.append(digest)
        return bucket

    def _reclaim(self, now: float) -> None:
        seconds = self._seconds
        while seconds and seconds[0] <= now:
            for digest in self._buckets.pop(heapq.heappop(seconds)).keys:
                entry = self._expiry.get(digest)
                if entry is not None and entry[0] <= now:
                    del self._expiry[digest]
                    self._seen.pop(digest, None)
                if digest in self._counters and self._counters[digest][1] <= now:
                    del self._counters[digest]
        ends = self._quota_ends
        while ends and ends[0] <= now:
            end = heapq.heappop(ends)
            for owner in self._owners_due.pop(end):
                owned = self._owned.get(owner)
                if owned is None:
                    continue
                owned.total -= owned.counts.pop(end, 0)
                if not owned.counts:
                    del self._owned[owner]

    def _count(self, owner: str, expires_at: float) -> None:
        end = quota_bucket_end(expires_at)
        owned = self._owned.get(owner)
        if owned is None:
            self._owned[owner] = owned = _Owned()
        owned.total += 1
        counts = owned.counts
        if end in counts:
            counts[end] += 1
            return
        counts[end] = 1
        due = self._owners_due.get(end)
        if due is None:
            self._owners_due[end] = due = []
            heapq.heappush(self._quota_ends, end)
        due.append(owner)

    def reserve(self, key: str, *, expires_at: float, now: float, owner: str | None = None) -> None:
        """Record ``key`` until ``expires_at``; raise ``ReplayDetected`` if it is live, and
        ``ReservationQuotaExceeded`` if ``owner`` holds ``subject_quota`` live slots."""
        digest = self._digest(key)
        with self._lock:
            self._reclaim(now)
            entry = self._expiry.get(digest)
            if entry is not None and entry[0] > now:
                presented = self._seen.get(digest, 1)
                self._seen[digest] = presented + 1
                raise ReplayDetected(
                    "this proof or nonce was already used",
                    prior_presentations=presented,
                    first_used_at=entry[1],
                )
            owned = None if owner is None else self._owned.get(owner)
            # Reclaiming has dropped every bucket that ended by ``now``: the total is live.
            if owned is not None and owned.total >= self.subject_quota:
                _check_quota(self.subject_quota, owned.counts, now)
            if entry is None and len(self._expiry) + len(self._counters) >= self.capacity:
                raise StoreFull(
                    "replay store is full of live entries (store_capacity); refusing (fail closed)"
                )
            self._seen.pop(digest, None)  # an expired, unreclaimed slot's observation
            pair = (expires_at, now)
            self._expiry[digest] = self._track(digest, expires_at).pairs.setdefault(pair, pair)
            if owner is not None:
                self._count(owner, expires_at)

    def consume(self, key: str, *, limit: int, expires_at: float, now: float) -> int:
        """Count one use of ``key`` until ``expires_at``; raise ``BudgetExceeded`` when spent."""
        digest = self._digest(key)
        with self._lock:
            self._reclaim(now)
            count, expiry = self._counters.get(digest, (0, expires_at))
            if expiry <= now:  # the window ended (reclaim works in whole seconds)
                count, expiry = 0, expires_at
            if count == 0 and len(self._expiry) + len(self._counters) >= self.capacity:
                raise StoreFull(
                    "replay store is full of live entries (store_capacity); refusing (fail closed)"
                )
            if count >= limit:
                raise budget_exceeded(limit, expiry, now)
            if count == 0:
                expiry = self._track(digest, expiry).expiries.setdefault(expiry, expiry)
            self._counters[digest] = (count + 1, expiry)
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


_T = TypeVar("_T")


def run_sync(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine that never suspends (sync stores, sync guards) to completion."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: _T = done.value
        return result
    coroutine.close()
    raise RuntimeError("an async guard or store suspended on the synchronous path")
