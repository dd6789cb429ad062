"""Replay store scale: the cost of one reservation with 0, 10k and 100k live entries.

Run: ``.venv/bin/python benchmarks/bench_stores.py [--sizes 0,10000,100000] [--n 2000]``.
Backends: memory, SQLite (a temporary file) and Redis (``BENCH_REDIS_URL``, default
database 15 of 127.0.0.1:6379, under a unique key prefix whose keys are deleted at the
end; the benchmark never flushes a database). Each level has its own store, filled
first; batches of fresh keys then alternate between the levels; the ratio is the median per-reservation time at that
level over the median with an empty store. Last, the memory store's footprint per live
entry (tracemalloc) and what that means for the sustained rate at the default proof TTL.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chio_middleware.core.dpop import DEFAULT_MAX_CLOCK_SKEW, DEFAULT_PROOF_TTL
from chio_middleware.core.replay import MemoryReplayStore, ReplayStore
from chio_middleware.settings import ChioSettings
from chio_middleware.stores import open_store

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
NOW = 1_760_000_000.0
EXPIRES = NOW + DEFAULT_PROOF_TTL + DEFAULT_MAX_CLOCK_SKEW


def fill(store: ReplayStore, start: int, stop: int, tag: str) -> None:
    for index in range(start, stop):
        store.reserve(f"fill:{tag}:{index}", expires_at=EXPIRES, now=NOW)


def batch_us(store: ReplayStore, n: int, tag: str) -> float:
    keys = [f"probe:{tag}:{uuid.uuid4().hex}" for _ in range(n)]
    reserve = store.reserve
    start = time.perf_counter()
    for key in keys:
        reserve(key, expires_at=EXPIRES, now=NOW)
    return (time.perf_counter() - start) / n * 1e6


def scale(stores: list[ReplayStore], sizes: list[int], n: int, batches: int) -> list[float]:
    """One store per level, filled first; then batches alternate between the levels."""
    tag = uuid.uuid4().hex[:8]
    for store, size in zip(stores, sizes, strict=True):
        fill(store, 0, size, tag)
    samples: list[list[float]] = [[] for _ in sizes]
    for batch in range(batches):
        order = list(range(len(sizes)))
        order = order[batch % len(order):] + order[: batch % len(order)]
        for level in order:
            samples[level].append(batch_us(stores[level], n, tag))
    return [statistics.median(level) for level in samples]


def memory_per_entry(count: int) -> float:
    tracemalloc.start()
    store = MemoryReplayStore(capacity=count + 1)
    before = tracemalloc.get_traced_memory()[0]
    fill(store, 0, count, "m")
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="0,10000,100000")
    parser.add_argument("--n", type=int, default=1000, help="reservations per batch")
    parser.add_argument("--batches", type=int, default=9)
    parser.add_argument("--skip-redis", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    probes = args.n * args.batches * len(sizes)
    rows = []
    with tempfile.TemporaryDirectory(prefix="chio-stores-") as tmp:
        backends: list[tuple[str, str, str]] = [
            ("memory", "memory://", "chio:"),
            ("sqlite", f"sqlite:///{Path(tmp) / 'state.db'}", "chio:"),
        ]
        if not args.skip_redis:
            backends.append(("redis", REDIS_URL, f"chio-bench:{uuid.uuid4().hex}:"))
        for name, url, prefix in backends:
            stores, urls = [], []
            for level in range(len(sizes)):
                level_url = url.replace("state.db", f"state-{level}.db")
                level_prefix = f"{prefix}{level}:"
                urls.append((level_url, level_prefix))
                stores.append(open_store(level_url, key_prefix=level_prefix, timeout=5,
                                         capacity=max(sizes) + probes + 1))
            try:
                rows.append((name, scale(stores, sizes, args.n, args.batches)))
            finally:
                for store in stores:
                    store.close()
                if name == "redis":
                    for level_url, level_prefix in urls:
                        _delete_redis_keys(level_url, level_prefix)
    print(f"reservation cost (us, median of {args.batches} batches of {args.n} fresh keys)\n")
    print(f"{'store':8s} " + " ".join(f"{f'{s:,} live':>14s}" for s in sizes) + "   ratio to empty")
    for name, medians in rows:
        ratios = " ".join(f"{m / medians[0]:.2f}x" for m in medians[1:])
        print(f"{name:8s} " + " ".join(f"{m:14.1f}" for m in medians) + f"   {ratios}")
    worst = max(m / medians[0] for _, medians in rows for m in medians[1:])
    print(f"\ntarget: 100k live entries <= 1.1x of empty: worst ratio {worst:.2f}x "
          f"({'met' if worst <= 1.1 else 'NOT met'})")
    per_entry = memory_per_entry(100_000)
    live = 1000 * (DEFAULT_PROOF_TTL + DEFAULT_MAX_CLOCK_SKEW)
    default_capacity = ChioSettings.model_fields["store_capacity"].default
    print(
        f"\nmemory store: {per_entry:.0f} bytes per live entry (tracemalloc, 100k entries); "
        f"1,000 DPoP req/s at the default proof TTL ({DEFAULT_PROOF_TTL} s + {DEFAULT_MAX_CLOCK_SKEW} s skew) "
        f"keeps {live:,} live entries = {live * per_entry / 2**20:.0f} MiB; the default "
        f"store_capacity ({default_capacity:,}) holds "
        f"{default_capacity / (DEFAULT_PROOF_TTL + DEFAULT_MAX_CLOCK_SKEW):,.0f} req/s sustained "
        f"({'met' if default_capacity >= live else 'NOT met: raise store_capacity to ' + format(live, ',')})"
    )


def _delete_redis_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    with contextlib.closing(client):
        batch = []
        for key in client.scan_iter(match=prefix + "*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)


if __name__ == "__main__":
    main()
