"""Memory and per-operation cost of the in-memory replay store at its sizing target.

Run: ``make bench`` (or ``.venv/bin/python benchmarks/bench_store_memory.py``). The target
(issue 8, finding 7): 1,000 DPoP requests/s sustained at the default ``proof_ttl``, each
proof holding its slot for ``proof_ttl + max_clock_skew + 1`` = 331 s, so 331,000 live
entries, in at most 150 MB. The script fills one store exactly as that traffic would
(realistic ``dpop:["<nonce>","<capability id>"]`` keys from 100 subjects, expiries spread
over 331 seconds, each reservation naming its subject as owner), reports the memory the
store holds (tracemalloc, measured around the fill only: the key strings themselves are
the request's, not the store's; times in whole seconds, as the engine passes them), and then the cost of a reservation on an empty store, on
the full store, and on the full store in steady state (the clock advancing 1 ms per
reservation, so every call also reclaims the slots that expired), in one run.
"""

from __future__ import annotations

import gc
import os
import sys
import timeit
import tracemalloc
import uuid
from collections.abc import Callable, Iterator

from chio_middleware.core.canonical import canonical_json
from chio_middleware.core.dpop import DEFAULT_MAX_CLOCK_SKEW, DEFAULT_PROOF_TTL
from chio_middleware.core.replay import DEFAULT_CAPACITY, MemoryReplayStore

RATE = 1_000  # DPoP requests per second
SLOT_LIFETIME = DEFAULT_PROOF_TTL + DEFAULT_MAX_CLOCK_SKEW + 1
LIVE = RATE * SLOT_LIFETIME  # 331,000
SUBJECTS = 100
BUDGET_MB = 150
T0 = 1_760_000_000
TIMED = 20_000  # reservations per timing run


def slot_keys(count: int) -> Iterator[str]:
    """DPoP replay keys as dpop_replay_slot() builds them: a 32-hex nonce and a UUID id."""
    capability_ids = [str(uuid.uuid4()) for _ in range(SUBJECTS)]
    for index in range(count):
        nonce = os.urandom(16).hex()
        cap = capability_ids[index % SUBJECTS]
        yield "dpop:" + canonical_json([nonce, cap]).decode("utf-8")


OWNERS = [os.urandom(32).hex() for _ in range(SUBJECTS)]


def fill(store: MemoryReplayStore, keys: list[str]) -> int:
    """Reserve ``keys`` as 1,000 requests/s would, over SLOT_LIFETIME s; return the end time."""
    now = T0
    for index, key in enumerate(keys):
        now = T0 + index // RATE  # whole seconds, as the engine passes them
        store.reserve(key, expires_at=now + SLOT_LIFETIME, now=now, owner=OWNERS[index % SUBJECTS])
    return now


def string_keyed_layout(keys: list[str]) -> int:
    """Bytes of the layout this store had before: each key string itself in a dict (to a
    float expiry of its own) and in a per-second list. For scale only."""
    copies = [key.encode().decode() for key in keys]  # fresh strings the store would own
    gc.collect()
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    held: dict[str, float] = {}
    seconds: dict[int, list[str]] = {}
    for index, key in enumerate(copies):
        expiry = float(T0 + index // RATE + SLOT_LIFETIME)
        held[key] = expiry
        seconds.setdefault(int(expiry), []).append(key)
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    strings = sum(sys.getsizeof(key) for key in copies)
    return after - before + strings


def per_op_us(make: Callable[[], Callable[[], None]]) -> float:
    """Best of five runs of TIMED calls, each run on a fresh setup, in microseconds."""
    best = float("inf")
    for _ in range(5):
        fn = make()
        best = min(best, timeit.timeit(fn, number=TIMED))
    return best / TIMED * 1e6


def main() -> None:
    subject_quota = LIVE  # the subjects here are honest: no quota refusal in the fill
    keys = list(slot_keys(LIVE))
    gc.collect()
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    store = MemoryReplayStore(LIVE + 12 * TIMED, subject_quota=subject_quota)
    end = fill(store, keys)
    gc.collect()
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    used = after - before
    assert len(store) == LIVE
    plain = string_keyed_layout(keys)
    del keys

    def fresh_keys() -> Iterator[str]:
        return iter(list(slot_keys(TIMED)))  # made before the timing starts

    def on_empty() -> Callable[[], None]:
        empty = MemoryReplayStore(subject_quota=subject_quota)
        pending = fresh_keys()
        return lambda: empty.reserve(
            next(pending), expires_at=T0 + SLOT_LIFETIME, now=T0, owner=OWNERS[0]
        )

    def on_full() -> Callable[[], None]:
        pending = fresh_keys()
        return lambda: store.reserve(
            next(pending), expires_at=end + SLOT_LIFETIME, now=end, owner=OWNERS[1]
        )

    clock = [float(end)]

    def on_full_steady() -> Callable[[], None]:
        pending = fresh_keys()

        def reserve() -> None:
            clock[0] += 1 / RATE
            now = int(clock[0])
            store.reserve(next(pending), expires_at=now + SLOT_LIFETIME, now=now, owner=OWNERS[2])

        return reserve

    empty_us = per_op_us(on_empty)
    full_us = per_op_us(on_full)
    steady_us = per_op_us(on_full_steady)

    mb = used / 2**20
    print(
        f"memory store: {LIVE:,} live DPoP slots ({RATE:,} requests/s x {SLOT_LIFETIME} s, "
        f"{SUBJECTS} subjects)"
    )
    print(
        f"  memory held  {mb:8.1f} MB   ({used / LIVE:.0f} bytes/entry; budget {BUDGET_MB} MB: "
        f"{'within' if mb <= BUDGET_MB else 'OVER'})"
    )
    print(
        f"  for scale: key strings in a dict with a float each, as before: "
        f"{plain / 2**20:.1f} MB ({plain / LIVE:.0f} bytes/entry)"
    )
    print(
        f"  default store_capacity {DEFAULT_CAPACITY:,} entries = "
        f"{DEFAULT_CAPACITY // SLOT_LIFETIME:,} DPoP requests/s sustained, "
        f"about {used / LIVE * DEFAULT_CAPACITY / 2**20:.0f} MB when full"
    )
    print(f"{'reserve (with owner quota)':45s} {'us/op':>9s} {'x empty':>9s}")
    for name, us in (
        ("empty store", empty_us),
        (f"full store ({LIVE:,} live)", full_us),
        ("full store, steady state (reclaiming)", steady_us),
    ):
        print(f"{name:45s} {us:9.2f} {us / empty_us:9.2f}")


if __name__ == "__main__":
    main()
