"""Recovery from the faults of issue 12, measured under a real uvicorn server.

Run: ``.venv/bin/python benchmarks/bench_faults.py`` (needs ``redis-server`` on the PATH; it
starts its own on a free port, without persistence). Prints, side by side:

- ``GET /health`` latency with the SQLite database free and while another process holds it
  locked and store requests keep waiting on it (ratio locked / free);
- ``GET /health`` latency while another process holds the receipt log lock (bounded by
  ``receipt_lock_timeout``);
- the time from the fault's end to the first 200: Redis restarted (empty), the receipt log
  directory recreated, the log lock released.

Every loop is bounded in count and time and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.servers import notes_capability, running
from tests.e2e.test_faults import HOLD_FLOCK, HOLD_SQLITE, hold, release
from tests.e2e.test_redis_fault import free_port, redis_server
from tests.e2e.test_workers import send
from tests.middleware.harness import agent_headers


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def latencies(url: str, count: int) -> list[float]:
    return [timed(lambda: send(url, "GET", "/health", {})) for _ in range(count)]


def until_ok(call: Callable[[], int], limit: float = 10.0) -> float:
    """Seconds until ``call`` answers 200 (bounded by ``limit``)."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        if call() == 200:
            return time.perf_counter() - start
    raise RuntimeError("no recovery within the limit")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def sqlite_lock(root: Path) -> None:
    database = root / "state.db"
    env = {"CHIO_REPLAY_STORE": f"sqlite:///{database}"}
    now = int(time.time())
    cap = notes_capability(now)
    with running("uvicorn", root, workers=1, extra_env=env) as server:
        latencies(server.url, 5)  # warm up
        free = latencies(server.url, 40)
        holder = hold(HOLD_SQLITE, database)
        stop = threading.Event()
        store_statuses: list[int] = []

        def store_traffic() -> None:
            for _ in range(200):
                if stop.is_set():
                    return
                headers = agent_headers("GET", "/notes", cap=cap, issued_at=int(time.time()))
                store_statuses.append(send(server.url, "GET", "/notes", headers)[0])

        threads = [threading.Thread(target=store_traffic) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:  # for 1.5 s, while the store requests keep waiting for the lock
            locked: list[float] = []
            start = time.perf_counter()
            while time.perf_counter() - start < 1.5 and len(locked) < 400:
                locked.append(timed(lambda: send(server.url, "GET", "/health", {})))
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            release(holder)
        recovery = until_ok(
            lambda: send(
                server.url,
                "GET",
                "/notes",
                agent_headers("GET", "/notes", cap=cap, issued_at=int(time.time())),
            )[0]
        )
    p50_free, p50_locked = statistics.median(free), statistics.median(locked)
    print("GET /health while another process holds the SQLite database (store_timeout 0.25 s)")
    print(f"  free    p50 {ms(p50_free)}  max {ms(max(free))}")
    print(f"  locked  p50 {ms(p50_locked)}  max {ms(max(locked))}  ({p50_locked / p50_free:.2f}x)")
    print(f"  store requests meanwhile: {store_statuses.count(503)} x 503 of {len(store_statuses)}")
    print(f"  first 200 on a store route after the lock is released: {ms(recovery)}")


def log_lock(root: Path) -> None:
    env = {"CHIO_RECEIPT_LOCK_TIMEOUT": "0.2"}
    with running("uvicorn", root, workers=2, extra_env=env) as server:
        latencies(server.url, 5)
        free = latencies(server.url, 20)
        holder = hold(HOLD_FLOCK, server.receipts.with_name("receipts.jsonl.lock"))
        try:
            held = latencies(server.url, 10)
        finally:
            release(holder)
        recovery = until_ok(lambda: send(server.url, "GET", "/health", {})[0])
    print("GET /health while another process holds the receipt log lock (lock timeout 0.2 s)")
    print(f"  free    p50 {ms(statistics.median(free))}")
    print(f"  held    p50 {ms(statistics.median(held))}  max {ms(max(held))}  (503 each)")
    print(f"  first 200 after the lock is released: {ms(recovery)}")


def log_directory(root: Path) -> None:
    logs = root / "logs"
    logs.mkdir()
    env = {"CHIO_RECEIPT_SINK": f"jsonl:{logs / 'receipts.jsonl'}"}
    with running("uvicorn", root, workers=2, extra_env=env) as server:
        latencies(server.url, 5)
        shutil.rmtree(logs)
        outage = [send(server.url, "GET", "/health", {})[0] for _ in range(20)]
        logs.mkdir()
        recovery = until_ok(lambda: send(server.url, "GET", "/health", {})[0])
    print("receipt log directory removed, then recreated")
    print(f"  during the outage: {outage.count(503)} x 503 of {len(outage)}, none unanswered")
    print(f"  first 200 after the directory is back: {ms(recovery)}")


def redis_restart(root: Path) -> None:
    port = free_port()
    env = {"CHIO_REPLAY_STORE": f"redis://127.0.0.1:{port}/0"}
    now = int(time.time())
    cap = notes_capability(now)
    proofs = [agent_headers("GET", "/notes", cap=cap, issued_at=now) for _ in range(30)]
    with running("uvicorn", root, workers=2, extra_env=env) as server:
        with redis_server(port, root):
            accepted_before = [send(server.url, "GET", "/notes", h)[0] for h in proofs]
        down = [send(server.url, "GET", "/notes", proofs[0])[0] for _ in range(5)]
        with redis_server(port, root):
            ready = time.perf_counter()
            replays = [send(server.url, "GET", "/notes", h)[0] for h in proofs]
            fresh = until_ok(
                lambda: send(
                    server.url,
                    "GET",
                    "/notes",
                    agent_headers("GET", "/notes", cap=cap, issued_at=int(time.time()) + 2),
                )[0]
            )
            first_fresh = time.perf_counter() - ready
    print("Redis stopped, then restarted empty (no persistence), 2 workers")
    print(f"  before: {accepted_before.count(200)} of 30 proofs accepted")
    print(f"  while down: {down.count(503)} x 503 of {len(down)}")
    print(f"  after: {replays.count(200)} of the 30 earlier proofs accepted again")
    print(
        f"  first 200 with a fresh proof after Redis is up: {ms(first_fresh)} ({ms(fresh)} "
        "after the replays)"
    )


def main() -> None:
    for scenario in (sqlite_lock, log_lock, log_directory, redis_restart):
        with tempfile.TemporaryDirectory() as root:
            scenario(Path(root))
        print()


if __name__ == "__main__":
    main()
