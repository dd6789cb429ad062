"""On ASGI, a store or sink that has to wait never blocks the event loop.

Another process holds the SQLite database (or the receipt log lock); a request that needs it
is started first, then ``GET /health``, which does not use the store. Both run as tasks of
one event loop: ``/health`` must finish while the first request is still waiting, which is
impossible when the wait blocks the loop. No sleeps: the order of completion is the result.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from chio_middleware.asgi import ChioMiddleware
from chio_middleware.core.clock import FixedClock
from chio_middleware.core.models import HttpReceipt
from chio_middleware.sinks import MemorySink, SinkBusy, must_not_wait
from chio_middleware.sinks.jsonl import JsonlSink
from chio_middleware.stores import open_store

from .harness import NOW, agent_headers, settings, starlette_app
from .test_asgi_raw import http_scope

HOLD_SQLITE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""

HOLD_FLOCK = """
import fcntl, sys
handle = open(sys.argv[1], "a")
fcntl.flock(handle, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


@contextmanager
def held_by_another_process(code: str, target: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process holding a lock on ``target`` until released (its stdin closed)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    try:
        yield holder
    finally:
        release(holder)


def release(holder: subprocess.Popen[bytes]) -> None:
    if holder.stdin is not None and not holder.stdin.closed:
        holder.stdin.close()
        holder.wait(timeout=20)


async def request(mw: ChioMiddleware, method: str, path: str, headers: dict[str, str]) -> Any:
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await mw(http_scope(method, path, list(headers.items())), receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body


async def store_request_then_health(mw: ChioMiddleware, holder: subprocess.Popen[bytes]) -> None:
    waiting = asyncio.create_task(request(mw, "GET", "/notes", agent_headers("GET", "/notes")))
    health = asyncio.create_task(request(mw, "GET", "/health", {}))
    done, _ = await asyncio.wait({waiting, health}, return_when=asyncio.FIRST_COMPLETED)
    assert done == {health}, "GET /health waited for the request blocked on the lock"
    assert health.result()[0] == 200
    release(holder)  # now the waiting request can go on, within its deadline
    status, body = await waiting
    assert status == 200, body


def test_health_is_answered_while_the_sqlite_database_is_locked(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    store = open_store(f"sqlite:///{database}", timeout=20)  # a long wait, never reached
    mw = ChioMiddleware(
        starlette_app(), settings=settings(), clock=FixedClock(NOW), store=store, sink=None
    )
    with held_by_another_process(HOLD_SQLITE, database) as holder:
        asyncio.run(store_request_then_health(mw, holder))
    mw.runtime.close()


def test_health_waits_no_longer_than_the_lock_timeout_for_a_held_log_lock(
    tmp_path: Path,
) -> None:
    log = tmp_path / "receipts.jsonl"
    sink = JsonlSink(log, fsync="never", lock_timeout=0.05)
    mw = ChioMiddleware(starlette_app(), settings=settings(), clock=FixedClock(NOW), sink=sink)
    with held_by_another_process(HOLD_FLOCK, Path(f"{log}.lock")):
        status, body = asyncio.run(request(mw, "GET", "/health", {}))
        assert status == 503 and json.loads(body)["error"] == "chio_unavailable"
    status, body = asyncio.run(request(mw, "GET", "/health", {}))  # by itself once released
    assert status == 200, body
    mw.runtime.close()


def test_a_held_log_lock_is_waited_for_off_the_event_loop(tmp_path: Path) -> None:
    log = tmp_path / "receipts.jsonl"
    sink = JsonlSink(log, fsync="never", lock_timeout=20)  # a long wait, never reached
    mw = ChioMiddleware(starlette_app(), settings=settings(), clock=FixedClock(NOW), sink=sink)

    async def scenario(holder: subprocess.Popen[bytes]) -> None:
        waiting = asyncio.create_task(request(mw, "GET", "/health", {}))
        ticks = 0

        async def loop_is_free() -> None:
            nonlocal ticks
            for _ in range(100):
                await asyncio.sleep(0)
                ticks += 1

        free = asyncio.create_task(loop_is_free())
        done, _ = await asyncio.wait({waiting, free}, return_when=asyncio.FIRST_COMPLETED)
        assert done == {free} and ticks == 100, "the log lock was waited for on the event loop"
        release(holder)
        assert (await waiting)[0] == 200

    with held_by_another_process(HOLD_FLOCK, Path(f"{log}.lock")) as holder:
        asyncio.run(scenario(holder))
    mw.runtime.close()


def test_the_lock_timeout_setting_reaches_the_sink(tmp_path: Path) -> None:
    log = tmp_path / "receipts.jsonl"
    mw = ChioMiddleware(
        starlette_app(),
        settings=settings(receipt_sink=f"jsonl:{log}", receipt_lock_timeout=0.3),
        clock=FixedClock(NOW),
    )
    assert isinstance(mw.runtime.sink, JsonlSink) and mw.runtime.sink.lock_timeout == 0.3
    mw.runtime.close()


def test_uncontended_store_and_sink_calls_stay_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No thread hand-off when nothing waits: the fast path costs what it did."""
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    sink = JsonlSink(tmp_path / "receipts.jsonl", fsync="never")
    mw = ChioMiddleware(
        starlette_app(), settings=settings(), clock=FixedClock(NOW), store=store, sink=sink
    )

    async def no_thread(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a call went to a worker thread although nothing waited")

    monkeypatch.setattr(asyncio, "to_thread", no_thread)
    for _ in range(3):
        status, body = asyncio.run(request(mw, "GET", "/notes", agent_headers("GET", "/notes")))
        assert status == 200, body
    mw.runtime.close()


def test_requests_that_find_the_log_lock_held_go_to_one_worker_thread_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One hop per event loop: the rest wait for it, then record on the loop.

    Eight requests find the log lock held by another process. The first records in a worker
    thread (it waits for the lock there); the others find the sink busy with that worker and
    wait for it off the loop. Once the holder lets go, they record on the loop: one thread
    hand-off in all, where each used to take its own and keep the lock busy for the next.
    """
    log = tmp_path / "receipts.jsonl"
    sink = JsonlSink(log, fsync="never", lock_timeout=20)  # a long wait, never reached
    mw = ChioMiddleware(starlette_app(), settings=settings(), clock=FixedClock(NOW), sink=sink)
    real_to_thread = asyncio.to_thread
    hops = running = most = 0

    async def counted(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        nonlocal hops, running, most
        hops += 1
        running += 1
        most = max(most, running)
        try:
            return await real_to_thread(fn, *args, **kwargs)
        finally:
            running -= 1

    monkeypatch.setattr(asyncio, "to_thread", counted)

    async def scenario(holder: subprocess.Popen[bytes]) -> None:
        waiting = [asyncio.create_task(request(mw, "GET", "/health", {})) for _ in range(8)]
        await ticks(100)  # all eight reach the sink, and none finishes while it is held
        assert not any(task.done() for task in waiting)
        assert hops == 1
        release(holder)
        assert [(await task)[0] for task in waiting] == [200] * 8

    with held_by_another_process(HOLD_FLOCK, Path(f"{log}.lock")) as holder:
        asyncio.run(scenario(holder))
    assert (hops, most) == (1, 1) and mw.worker_hops == 1
    mw.runtime.close()
    assert len(log.read_bytes().splitlines()) == 8


class HeldSink(MemorySink):
    """A sink whose lock someone else holds until ``free`` is set: on the loop (under
    ``without_waiting``) it is busy; in a worker thread the call waits for ``free``, except
    that with ``hang_first`` the first thread call waits for ``unhang`` instead (a write
    stuck on a dead mount) and the others record at once."""

    def __init__(self, *, hang_first: bool = False) -> None:
        super().__init__()
        self.free, self.unhang = threading.Event(), threading.Event()
        self.hang_first = hang_first
        self.thread_calls = 0
        self._calls_lock = threading.Lock()

    def record(self, sign: Any) -> HttpReceipt:
        if must_not_wait():
            if not self.free.is_set():
                raise SinkBusy("held elsewhere")
            return super().record(sign)
        with self._calls_lock:
            self.thread_calls += 1
            first = self.thread_calls == 1
        if self.hang_first and first:
            assert self.unhang.wait(20)
        elif not self.hang_first:
            assert self.free.wait(20)
        return super().record(sign)


async def ticks(count: int = 20) -> None:
    """Let the loop run ``count`` rounds: the tasks started reach where they wait."""
    for _ in range(count):
        await asyncio.sleep(0)


def held_middleware(sink: HeldSink, lock_timeout: float) -> ChioMiddleware:
    return ChioMiddleware(
        starlette_app(),
        settings=settings(receipt_lock_timeout=lock_timeout),
        clock=FixedClock(NOW),
        sink=sink,
    )


def test_a_hop_that_hangs_does_not_hold_up_the_requests_behind_it() -> None:
    """A request waits for the hop in flight at most ``receipt_lock_timeout``, then records
    by itself: the four behind a hung hop are answered while it still hangs (they used to
    wait for it without end)."""
    sink = HeldSink(hang_first=True)
    mw = held_middleware(sink, lock_timeout=0.05)

    async def scenario() -> None:
        first = asyncio.create_task(request(mw, "GET", "/health", {}))
        await ticks()
        assert mw.worker_hops == 1
        others = [asyncio.create_task(request(mw, "GET", "/health", {})) for _ in range(4)]
        done, _ = await asyncio.wait(others, timeout=20)  # a bound on a hang, not a timing
        assert done == set(others) and not first.done()
        assert [task.result()[0] for task in others] == [200] * 4
        sink.unhang.set()
        assert (await first)[0] == 200

    asyncio.run(scenario())
    assert len(sink.receipts) == 5
    mw.runtime.close()


def test_a_client_gone_during_the_hop_leaves_it_to_the_requests_waiting_for_it() -> None:
    """Cancelling the request that owns the hop (its client disconnected) does not cancel
    the hop: the others keep waiting for it instead of starting a second worker thread."""
    sink = HeldSink()
    mw = held_middleware(sink, lock_timeout=20)

    async def scenario() -> None:
        owner = asyncio.create_task(request(mw, "GET", "/health", {}))
        await ticks()
        waiting = [asyncio.create_task(request(mw, "GET", "/health", {})) for _ in range(4)]
        await ticks()
        owner.cancel()
        await ticks(50)
        assert owner.cancelled() and mw.worker_hops == 1
        assert not any(task.done() for task in waiting)
        sink.free.set()
        assert [(await task)[0] for task in waiting] == [200] * 4

    asyncio.run(scenario())
    assert mw.worker_hops == 1 and sink.thread_calls == 1
    assert len(sink.receipts) == 5  # the owner's receipt too: its thread ran to the end
    mw.runtime.close()


def test_each_event_loop_has_its_own_hop() -> None:
    """One middleware on two event loops (two threads): a request waits for its own loop's
    hop, whichever loop started a hop last."""
    sink = HeldSink()
    mw = held_middleware(sink, lock_timeout=20)
    a_first, b_first, a_rest = threading.Event(), threading.Event(), threading.Event()
    answers: list[int] = []

    async def loop_a() -> None:
        tasks = [asyncio.create_task(request(mw, "GET", "/health", {}))]
        await ticks()
        a_first.set()
        assert b_first.wait(20)  # loop B's hop is the later one now
        tasks += [asyncio.create_task(request(mw, "GET", "/health", {})) for _ in range(2)]
        await ticks()
        a_rest.set()
        answers.extend([(await task)[0] for task in tasks])

    async def loop_b() -> None:
        assert a_first.wait(20)
        task = asyncio.create_task(request(mw, "GET", "/health", {}))
        await ticks()
        b_first.set()
        answers.append((await task)[0])

    threads = [threading.Thread(target=asyncio.run, args=(main(),)) for main in (loop_a, loop_b)]
    for thread in threads:
        thread.start()
    assert a_rest.wait(20)
    hops = mw.worker_hops
    sink.free.set()
    for thread in threads:
        thread.join(20)
    assert hops == 2 and answers == [200] * 4
    mw.runtime.close()


def test_the_hop_of_a_loop_closed_with_it_pending_is_forgotten() -> None:
    """A loop closed without its tasks run to the end leaves its hop pending, and its done
    callback never runs: the next hop drops it rather than keep the loop alive."""
    sink = HeldSink()
    mw = held_middleware(sink, lock_timeout=20)
    dead = asyncio.new_event_loop()
    mw._in_flight[dead] = dead.create_future()
    dead.close()

    async def scenario() -> None:
        task = asyncio.create_task(request(mw, "GET", "/health", {}))
        await ticks()
        assert dead not in mw._in_flight and mw.worker_hops == 1
        sink.free.set()
        assert (await task)[0] == 200

    asyncio.run(scenario())
    assert mw._in_flight == {}
    mw.runtime.close()
